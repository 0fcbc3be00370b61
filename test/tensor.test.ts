// Tensor: construction, validation, views, casts, copies, disposal and memory accounting.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { memory, Tensor } from '../dist/cjs/index.js';

describe('Tensor', () => {
  it('wraps the TypedArray without copying', () => {
    const a = new Float32Array([1, 2, 3, 4, 5, 6]);
    const t = new Tensor('float32', a, [2, 3]);
    expect(t.dataSync()).toBe(a);
    expect(t.shape).toEqual([2, 3]);
    expect(t.size).toBe(6);
    expect(t.device).toBe('cpu');
    expect(Object.isFrozen(t.shape)).toBe(true);
  });

  it('converts number[] values for every dtype', () => {
    expect(Array.from(new Tensor('bfloat16', [1, -2.5], [2]).dataSync())).toEqual([0x3f80, 0xc020]);
    expect(Array.from(new Tensor('float16', [1, 65504], [2]).dataSync())).toEqual([0x3c00, 0x7bff]);
    expect(Array.from(new Tensor('int4', [1, -1, 7], [1, 3]).dataSync())).toEqual([0xf1, 0x07]);
    expect(Array.from(new Tensor('int32', [5, -7], [2]).dataSync())).toEqual([5, -7]);
    expect(Array.from(new Tensor('float64', [0.1], [1]).dataSync())).toEqual([0.1]);
  });

  it('rejects bad dtypes, data and shapes with named errors', () => {
    expect(() => new Tensor('float8' as never, [1], [1])).toThrow(TypeError);
    expect(() => new Tensor('float8' as never, [1], [1])).toThrow(/Tensor: dtype/);
    expect(() => new Tensor('float32', new Int32Array(2) as never, [2])).toThrow(/Tensor: data: expected a Float32Array/);
    expect(() => new Tensor('float32', new Float32Array(3), [2, 2])).toThrow(RangeError);
    expect(() => new Tensor('float32', new Float32Array(4), [2, -2])).toThrow(/Tensor: shape/);
    expect(() => new Tensor('float32', new Float32Array(4), [2, 2.5])).toThrow(RangeError);
    expect(() => new Tensor('int8', [300], [1])).toThrow(/data\[0\]/);
    expect(() => new Tensor('int4', new Uint8Array(3), [1, 3])).toThrow(/length 2/);
    expect(() => new Tensor('float32', 'abc' as never, [3])).toThrow(TypeError);
    expect(() => new Tensor('float32', new Float32Array(1), [1, 1, 1, 1, 1, 1, 1, 1, 1])).toThrow(/at most 8/);
  });

  it('reshapes without copying, infers -1, and keeps int4 packing', () => {
    const t = new Tensor('float32', new Float32Array(12), [3, 4]);
    const r = t.reshape([2, -1]);
    expect(r.shape).toEqual([2, 6]);
    expect(r.dataSync()).toBe(t.dataSync());
    expect(() => t.reshape([5, -1])).toThrow(RangeError);
    expect(() => t.reshape([7])).toThrow(/12 elements/);
    const q = new Tensor('int4', new Uint8Array(6), [3, 4]);
    expect(q.reshape([6, 2]).shape).toEqual([6, 2]);
    expect(() => q.reshape([4, 3])).toThrow(/int4/);
  });

  it('casts between float dtypes, rounding to nearest even', () => {
    const t = new Tensor('float32', [1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -0.1], [4]);
    expect(Array.from(t.cast('bfloat16').dataSync())).toEqual([0x3f80, 0x3f80, 0x3f82, 0xbdcd]);
    expect(Array.from(t.cast('float64').dataSync())).toEqual(Array.from(t.dataSync()));
    expect(Array.from(t.cast('float16').cast('float32').dataSync())).toEqual([1, 1.00390625, 1.01171875, -0.0999755859375]);
    expect(() => new Tensor('int8', [1], [1]).cast('float32')).toThrow(TypeError);
    expect(() => t.cast('int8' as never)).toThrow(/cast: dtype/);
  });

  it('copies with to()/toSync() and returns data through data()', async () => {
    const t = new Tensor('int32', [1, 2, 3], [3]);
    const c = await t.to('cpu');
    expect(c).not.toBe(t);
    expect(Array.from(await c.data())).toEqual([1, 2, 3]);
    c.dataSync()[0] = 9;
    expect(t.dataSync()[0]).toBe(1);
    expect(Array.from(t.toSync('cpu').dataSync())).toEqual([1, 2, 3]);
    expect(() => t.toSync('gpu')).toThrow(RangeError);
  });

  it('disposes idempotently; use after dispose throws TypeError', () => {
    const t = new Tensor('float32', [1, 2], [2]);
    const before = memory();
    t.dispose();
    t.dispose();
    expect(t.isDisposed).toBe(true);
    expect(memory().liveTensors).toBe(before.liveTensors - 1);
    expect(memory().hostBytes).toBe(before.hostBytes - 8);
    expect(() => t.dataSync()).toThrow(TypeError);
    expect(() => t.reshape([2])).toThrow(/disposed/);
    const u = new Tensor('float32', [1], [1]);
    u[Symbol.dispose]();
    expect(u.isDisposed).toBe(true);
  });

  it('keeps storage alive until the last view is disposed', () => {
    const base = memory().hostBytes;
    const t = new Tensor('float32', new Float32Array(10), [10]);
    const v = t.reshape([2, 5]);
    t.dispose();
    expect(memory().hostBytes).toBe(base + 40);
    expect(v.dataSync().length).toBe(10);
    v.dispose();
    expect(memory().hostBytes).toBe(base);
  });

  it('zeros/empty make tensors of the requested dtype', () => {
    const z = Tensor.zeros([2, 3], 'bfloat16');
    expect(z.dtype).toBe('bfloat16');
    expect(z.dataSync()).toBeInstanceOf(Uint16Array);
    expect(Tensor.empty([4, 5], 'int4').dataSync().length).toBe(12);
    expect(() => Tensor.zeros([2], 'float32', 'cuda:7')).toThrow(/not available/);
  });

  it('frees tensors dropped without dispose after GC (FinalizationRegistry)', () => {
    const script = `
      const { Tensor, memory } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'cjs', 'index.js'))});
      const base = memory();
      (function () { for (let i = 0; i < 1000; i++) new Tensor('float32', new Float32Array(256), [256]); })();
      const mid = memory();
      const tick = () => new Promise((r) => setTimeout(r, 10));
      (async () => {
        for (let i = 0; i < 20 && memory().liveTensors > base.liveTensors; i++) { global.gc(); await tick(); }
        console.log(JSON.stringify({ base, mid, end: memory() }));
      })();`;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const { base, mid, end } = JSON.parse(r.stdout);
    expect(mid.liveTensors).toBe(base.liveTensors + 1000);
    expect(end.liveTensors).toBe(base.liveTensors);
    expect(end.hostBytes).toBe(base.hostBytes);
  });
});
