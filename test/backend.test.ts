// The loader, the thread count, SSMKIT_BACKEND, and the calling convention: async ops leave the event
// loop free while they run, and their errors arrive as the documented classes.
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  backend,
  getNumThreads,
  hadamard,
  hadamardSync,
  SsmkitError,
  setNumThreads,
  synchronize,
  synchronizeSync,
  Tensor,
} from '../dist/cjs/index.js';
import { callAsync, callSync } from '../dist/cjs/ops/run.js';
import { Rng, randTensor } from './util';

const INDEX = path.join(__dirname, '..', 'dist', 'cjs', 'index.js');
const runNode = (code: string, env: Record<string, string> = {}) =>
  spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', env: { ...process.env, ...env } });

describe('backend', () => {
  it('reports what loaded', () => {
    const b = backend();
    expect(['cpu', 'cuda']).toContain(b.name);
    expect(b.bindingPath).toMatch(/\.node$/);
    expect(b.threads).toBeGreaterThanOrEqual(1);
    expect(['scalar', 'avx2', 'avx512', 'avx512vnni']).toContain(b.simd);
    if (b.name === 'cpu') expect(typeof b.fallbackReason === 'string' || b.fallbackReason === undefined).toBe(true);
    else expect(b.device).toBeTruthy();
  });

  it('SSMKIT_BACKEND=cpu forces the CPU addon', () => {
    const r = runNode(`console.log(JSON.stringify(require(${JSON.stringify(INDEX)}).backend()))`, { SSMKIT_BACKEND: 'cpu' });
    expect(r.status, r.stderr).toBe(0);
    const b = JSON.parse(r.stdout);
    expect(b.name).toBe('cpu');
    expect(b.fallbackReason).toBeUndefined();
  });

  it('SSMKIT_BACKEND=bogus is a RangeError; =cuda without a GPU is SsmkitError', () => {
    const r = runNode(`try { require(${JSON.stringify(INDEX)}).backend() } catch (e) { console.log(e.name + ' ' + e.code) }`, {
      SSMKIT_BACKEND: 'bogus',
    });
    expect(r.stdout.trim()).toBe('RangeError ERR_SSMKIT_SHAPE');
    if (backend().name === 'cpu') {
      const c = runNode(`try { require(${JSON.stringify(INDEX)}).backend() } catch (e) { console.log(e.name + ' ' + e.code) }`, {
        SSMKIT_BACKEND: 'cuda',
      });
      expect(c.stdout.trim()).toBe('SsmkitError ERR_SSMKIT_NO_CUDA');
    }
  });

  it('SSMKIT_SIMD caps the SIMD path', () => {
    for (const level of ['scalar', 'avx2']) {
      const r = runNode(`console.log(require(${JSON.stringify(INDEX)}).backend().simd)`, { SSMKIT_SIMD: level });
      expect(['scalar', level]).toContain(r.stdout.trim());
    }
  });

  it('SSMKIT_CPU_SPIN_US changes only how idle pool threads wait: the same results, bad values ignored', () => {
    // Two threads, so that the pool's helper and the caller both wait for each other between the ops.
    const code = `const s = require(${JSON.stringify(INDEX)}); s.setNumThreads(2);
      const x = new s.Tensor('float32', Float32Array.from({ length: 64 * 512 }, (_, i) => Math.sin(i)), [64, 512]);
      let y = x; for (let i = 0; i < 20; i++) y = s.hadamardSync(y, { scale: 1 / Math.sqrt(512) });
      console.log(JSON.stringify(Array.from(y.dataSync().slice(0, 64))));`;
    const outs = ['', '0', '1000', 'abc', '-5'].map((v) => {
      const r = runNode(code, { SSMKIT_CPU_SPIN_US: v });
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.trim();
    });
    expect(outs[0]).toMatch(/^\[/);
    for (const o of outs) expect(o).toBe(outs[0]);
  });

  it('setNumThreads/getNumThreads, validated; results do not depend on the thread count', () => {
    const n = getNumThreads();
    const rng = new Rng(3);
    const { t } = randTensor([64, 256], 'float32', () => rng.normal());
    setNumThreads(1);
    expect(getNumThreads()).toBe(1);
    const one = hadamardSync(t).dataSync();
    setNumThreads(3);
    const three = hadamardSync(t).dataSync();
    setNumThreads(n);
    expect(Array.from(three)).toEqual(Array.from(one));
    expect(() => setNumThreads(0)).toThrow(RangeError);
    expect(() => setNumThreads(1.5)).toThrow(/setNumThreads: n/);
    expect(() => setNumThreads('2' as never)).toThrow(TypeError);
  });

  it('synchronize on the CPU resolves', async () => {
    await synchronize('cpu');
    synchronizeSync('cpu');
    await expect(synchronize('tpu')).rejects.toThrow(RangeError);
  });
});

describe('calling convention', () => {
  it('validates before any work and names op and argument', async () => {
    await expect(hadamard(new Tensor('int8', [1, 2], [2]))).rejects.toThrow(/hadamard: x: expected dtype/);
    await expect(hadamard(new Tensor('float32', [1, 2, 3], [3]))).rejects.toThrow(RangeError);
    await expect(hadamard(new Tensor('float32', [1, 2], [2]), { scale: 'x' as never })).rejects.toThrow(/options.scale/);
    await expect(hadamard(new Tensor('float32', [1, 2], [2]), { scal: 1 } as never)).rejects.toThrow(/options.scal/);
    await expect(hadamard(null as never)).rejects.toThrow(TypeError);
    await expect((hadamard as (...a: unknown[]) => Promise<unknown>)(new Tensor('float32', [1, 2], [2]), {}, 3)).rejects.toThrow(
      /arguments/,
    );
    expect(() => hadamardSync({} as never)).toThrow(/hadamardSync: x/);
  });

  it('leaves the input unchanged', async () => {
    const a = new Float32Array([1, 2, 3, 4]);
    await hadamard(new Tensor('float32', a, [4]));
    expect(Array.from(a)).toEqual([1, 2, 3, 4]);
  });

  it('keeps the event loop free while 200 ms CPU ops run (5 ms interval, p99 delay < 20 ms)', async () => {
    const rng = new Rng(11);
    // Two kernel threads on any machine, so that a 200 ms op has about the same size everywhere: on a
    // many-core machine a 200 ms op would need a tensor of gigabytes, whose zero-filled output
    // allocation (on the calling thread, before the op starts) is a cost of its own. One on a machine of
    // two cores, so that the JS thread keeps a core of its own: with three busy threads on two cores the
    // OS scheduler alone delays a timer by 20 ms at times, whatever the op does.
    const threads = getNumThreads();
    setNumThreads(Math.max(1, Math.min(2, availableParallelism() - 1)));
    // Size the op so that it takes at least 200 ms here, whatever the SIMD path.
    let rows = 64;
    let ms = 0;
    let x = randTensor([rows, 4096], 'float32', () => rng.normal()).t;
    for (;;) {
      const t0 = performance.now();
      hadamardSync(x).dispose();
      ms = performance.now() - t0;
      if (ms >= 200) break;
      rows = Math.ceil(rows * Math.min(8, (250 / Math.max(ms, 1)) * 1.2));
      x.dispose();
      x = new Tensor('float32', new Float32Array(rows * 4096).fill(0.5), [rows, 4096]);
    }
    const gaps: number[] = [];
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      gaps.push(now - last - 5);
      last = now;
    }, 5);
    // Five calls in a row: ~200 timer gaps, so that the 99th percentile is the third-largest gap, not the
    // largest (a single stall of a virtual machine's own).
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) (await hadamard(x)).dispose();
    const elapsed = performance.now() - t0;
    clearInterval(timer);
    gaps.sort((a, b) => a - b);
    const p99 = gaps[Math.min(gaps.length - 1, Math.floor(gaps.length * 0.99))] as number;
    expect(elapsed).toBeGreaterThanOrEqual(750);
    expect(gaps.length).toBeGreaterThan(elapsed / 5 / 3);
    setNumThreads(threads);
    expect(p99).toBeLessThan(20);
    x.dispose();
  });

  it('native failures arrive as the mapped class with a code, and dispose the outputs', async () => {
    // Straight to the native layer, past the TypeScript checks: the kernel's own status must surface.
    const x = new Tensor('float32', [1, 2, 3], [3]);
    const out = Tensor.empty([3], 'float32');
    const args = { x: x._native('t', 'x'), out: out._native('t', 'out'), scale: 1 };
    const err = await callAsync('hadamard', args, [out]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RangeError);
    expect((err as { code: string }).code).toBe('ERR_SSMKIT_VALUE');
    expect((err as Error).message).toMatch(/^hadamard: x:/);
    expect(out.isDisposed).toBe(true);
    const out2 = Tensor.empty([3], 'float32');
    expect(() => callSync('hadamard', { ...args, out: out2._native('t', 'out') }, [out2])).toThrow(RangeError);
    const e = new SsmkitError('m', 'ERR_X');
    expect(e.name).toBe('SsmkitError');
  });
});
