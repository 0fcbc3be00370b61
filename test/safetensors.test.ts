// safetensors: every golden file loads; save -> load is bit-exact for every dtype; bad files fail cleanly.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  encodeSafetensors,
  loadSafetensors,
  loadSafetensorsSync,
  SsmkitError,
  saveSafetensors,
  Tensor,
} from '../dist/cjs/index.js';
import { GOLDEN_DIR } from './util';

function goldenFiles(): string[] {
  const out: string[] = [];
  for (const f of fs.readdirSync(GOLDEN_DIR)) {
    const p = path.join(GOLDEN_DIR, f);
    if (f.endsWith('.safetensors')) out.push(p);
    else if (fs.statSync(p).isDirectory()) {
      for (const g of fs.readdirSync(p)) if (g.endsWith('.safetensors')) out.push(path.join(p, g));
    }
  }
  return out;
}

const bytesOf = (t: Tensor) => {
  const d = t.dataSync();
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
};

describe('safetensors', () => {
  const files = goldenFiles();
  it('finds the golden files', () => expect(files.length).toBeGreaterThanOrEqual(26));

  it.each(files.map((f) => [path.relative(GOLDEN_DIR, f), f]))('%s loads and round-trips bit-exactly', async (_, file) => {
    const a = await loadSafetensors(file);
    expect(Object.keys(a).length).toBeGreaterThan(0);
    const raw = fs.readFileSync(file);
    const header = JSON.parse(raw.subarray(8, 8 + Number(raw.readBigUInt64LE(0))).toString('utf8'));
    for (const [name, t] of Object.entries(a)) {
      expect([...t.shape], name).toEqual(header[name].shape);
      const [b, e] = header[name].data_offsets;
      const start = 8 + Number(raw.readBigUInt64LE(0));
      expect(bytesOf(t).equals(raw.subarray(start + b, start + e)), name).toBe(true);
    }
    const back = loadSafetensorsSync(await encodeSafetensors(a));
    for (const [name, t] of Object.entries(a)) {
      expect(back[name]?.dtype).toBe(t.dtype);
      expect(bytesOf(back[name] as Tensor).equals(bytesOf(t)), name).toBe(true);
    }
  });

  it('round-trips every dtype, int4 and metadata through a file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssmkit-st-'));
    const tensors: Record<string, Tensor> = {
      f32: new Tensor('float32', [1.5, Number.NaN, -0, Number.POSITIVE_INFINITY], [2, 2]),
      f16: new Tensor('float16', new Uint16Array([0x7e01, 0x3c00, 0x0001]), [3]),
      bf16: new Tensor('bfloat16', new Uint16Array([0xffff, 0x0080]), [1, 2]),
      i8: new Tensor('int8', [-128, 127, 0], [3]),
      u8: new Tensor('uint8', [255, 0], [2]),
      i32: new Tensor('int32', [-(2 ** 31), 2 ** 31 - 1], [2]),
      f64: new Tensor('float64', [Math.PI], []),
      q4: new Tensor('int4', [-8, 7, 1, 2, 3, -1], [2, 3]),
      empty: new Tensor('float32', new Float32Array(0), [0, 4]),
    };
    const file = path.join(dir, 'all.safetensors');
    await saveSafetensors(file, tensors, { format: 'pt', note: 'x' });
    const back = await loadSafetensors(file);
    for (const [name, t] of Object.entries(tensors)) {
      expect(back[name]?.dtype, name).toBe(t.dtype);
      expect([...(back[name]?.shape ?? [])], name).toEqual([...t.shape]);
      expect(bytesOf(back[name] as Tensor).equals(bytesOf(t)), name).toBe(true);
    }
    const raw = fs.readFileSync(file);
    expect((8 + Number(raw.readBigUInt64LE(0))) % 8).toBe(0);
    fs.rmSync(dir, { recursive: true });
  });

  it('rejects malformed files with a named error and unsupported dtypes with TypeError', async () => {
    await expect(loadSafetensors(new Uint8Array(3))).rejects.toThrow(SsmkitError);
    const h = Buffer.from(JSON.stringify({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 8] } }));
    const bad = Buffer.concat([Buffer.alloc(8), h, Buffer.alloc(8)]);
    bad.writeBigUInt64LE(BigInt(h.length));
    await expect(loadSafetensors(bad)).rejects.toThrow(/data offsets/);
    const h2 = Buffer.from(JSON.stringify({ a: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }));
    const bad2 = Buffer.concat([Buffer.alloc(8), h2, Buffer.alloc(8)]);
    bad2.writeBigUInt64LE(BigInt(h2.length));
    await expect(loadSafetensors(bad2)).rejects.toThrow(TypeError);
    await expect(saveSafetensors('/nonexistent/x', { a: 1 as never })).rejects.toThrow(TypeError);
  });
});
