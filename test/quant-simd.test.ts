// Every SIMD path of the quantization family on this machine: the family's test files run again in
// child processes with SSMKIT_SIMD forced to each level the CPU has (scalar, avx2, avx512; the default
// run covers the best one), and the paths must agree bit for bit wherever they promise to (everything
// but gemmW4A16, whose float32 sums run in a different order per path).
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backend } from '../dist/cjs/index.js';

const ROOT = path.join(__dirname, '..');
const FILES = ['test/hadamard.test.ts', 'test/quant.test.ts', 'test/gemm.test.ts'];

function levels(): string[] {
  const f = backend().cpuFeatures;
  const out = ['scalar'];
  if (f.includes('avx2') && f.includes('fma') && f.includes('f16c')) out.push('avx2');
  if (['avx512f', 'avx512bw', 'avx512dq', 'avx512vl'].every((x) => f.includes(x))) out.push('avx512');
  if (f.includes('avx512vnni')) out.push('vnni');
  return out;
}

// Deterministic inputs, every bit-exact op, and a digest of each output.
const DIGESTS = `
const s = require(${JSON.stringify(path.join(ROOT, 'dist/cjs/index.js'))});
const crypto = require('node:crypto');
let seed = 12345;
const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
const ints = (n, lo, hi) => Int8Array.from({ length: n }, () => lo + Math.floor(rnd() * (hi - lo + 1)));
const floats = (n, lo, hi) => Float32Array.from({ length: n }, () => lo + rnd() * (hi - lo));
const T = (d, a, sh) => new s.Tensor(d, a, sh);
const h = (t) => { const d = t.dataSync(); return crypto.createHash('sha256').update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)).digest('hex').slice(0, 16); };
const [M, N, K] = [37, 150, 301];
const a = T('int8', ints(M * K, -128, 127), [M, K]);
const w8 = T('int8', ints(N * K, -128, 127), [N, K]);
const w4 = s.packWeightsSync(T('int4', Uint8Array.from({ length: N * 151 }, () => Math.floor(rnd() * 256)), [N, K]));
const as = T('float32', floats(M, 0.001, 0.01), [M]);
const ws = T('float32', floats(N, 0.001, 0.01), [N]);
const bias = T('float32', floats(N, -1, 1), [N]);
const a2 = T('int8', ints(M * 320, -127, 127), [M, 320]);
const w42 = T('int4', Uint8Array.from({ length: N * 160 }, () => Math.floor(rnd() * 256)), [N, 320]);
const x = T('float32', floats(33 * 96, -3, 3), [33, 96]);
const xb = x.cast('bfloat16');
const r = {
  simd: s.backend().simd,
  w8a8: h(s.gemmW8A8Sync(a, w8, as, ws, { bias })),
  w8a8f16: h(s.gemmW8A8Sync(a, s.packWeightsSync(w8), as, ws, { bias, outDtype: 'float16' })),
  w4a8: h(s.gemmW4A8Sync(a, w4, as, ws, { bias, outDtype: 'bfloat16' })),
  w4a8g: h(s.gemmW4A8Sync(a2, w42, as, T('float32', floats(N * 5, 0.001, 0.01), [N, 5]), { bias })),
  qtoken: h(s.quantizeSync(x, { granularity: 'token' }).q),
  qgroup: h(s.quantizeSync(xb, { bits: 4, granularity: 'group', groupSize: 32 }).q),
  qrot: h(s.quantizeSync(x, { hadamard: true }).q),
  deq: h(s.dequantizeSync(s.quantizeSync(xb, { bits: 4, granularity: 'channel' }).q, s.quantizeSync(xb, { bits: 4, granularity: 'channel' }).scale, { outDtype: 'bfloat16' })),
  had: h(s.hadamardSync(T('float32', floats(5 * 1536, -1, 1), [5, 1536]))),
  had2: h(s.hadamardSync(T('float32', floats(3 * 4096, -1, 1), [3, 4096]).cast('float16'))),
};
process.stdout.write(JSON.stringify(r));
`;

function child(args: string[], level: string) {
  return spawnSync(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, SSMKIT_SIMD: level, SSMKIT_BACKEND: 'cpu' },
    encoding: 'utf8',
    timeout: 120_000,
  });
}

describe('quantization family on every SIMD path', () => {
  it('gives bit-identical results on every path', () => {
    const all = levels().map((level) => {
      const r = child(['-e', DIGESTS], level);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Record<string, string>;
    });
    const base = all[all.length - 1] as Record<string, string>;
    for (const r of all) {
      for (const [k, v] of Object.entries(base)) {
        if (k !== 'simd') expect(r[k], `${k} on ${r.simd} vs ${base.simd}`).toBe(v);
      }
    }
  });

  for (const level of levels().filter((l) => l !== 'vnni')) {
    it(`passes the family's tests with SSMKIT_SIMD=${level}`, () => {
      const r = child([path.join(ROOT, 'node_modules/vitest/vitest.mjs'), 'run', ...FILES], level);
      expect(r.status, `${r.stdout}\n${r.stderr}`.slice(-4000)).toBe(0);
    });
  }
});
