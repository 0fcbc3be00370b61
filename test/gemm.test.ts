// The quantized GEMMs (gemmW8A8, gemmW4A8, gemmW4A16) and packWeights against plain references and
// the golden cases. Integer products are checked exactly: with unit scales and float32 output, out is
// the int32 accumulator itself (every value below 2^24 is exact in float32). Shapes include M = 1,
// odd K and N, K not a multiple of the kernels' steps (4 or 8), N not a multiple of their panels (16)
// or groups (64), leading dimensions, and weights given plain, as uint8 bytes, and packed. Mamba-sized
// shapes (K = 2560) are checked on a random sample of 256 outputs, which keeps the float64 reference
// cheap while every tile of the kernel still runs.
import { describe, expect, it } from 'vitest';
import { packInt4 } from '../dist/cjs/dtype.js';
import {
  gemmW4A8,
  gemmW4A8Sync,
  gemmW4A16,
  gemmW4A16Sync,
  gemmW8A8,
  gemmW8A8Sync,
  memory,
  PackedWeight,
  packWeights,
  packWeightsSync,
  Tensor,
} from '../dist/cjs/index.js';
import { intGemmRef, intGemmScaledRef, w4a16Ref } from './ref/quant';
import { assertClose, assertEqual, DTYPES_FLOAT, goldenCases, loadGolden, Rng, randTensor, testDevices, toF64 } from './util';

// Scaled outputs: float32 holds the exact product to one rounding (plus the fused epilogue); the 16-bit
// formats round once more. atol is relative to the largest |reference| of the case.
const TOL_INT = {
  float32: { rtol: 1e-6, atol: 1e-6 },
  float16: { rtol: 1e-3, atol: 1e-4 },
  bfloat16: { rtol: 8e-3, atol: 1e-3 },
};
// W4A16 accumulates K products in float32 (x rounded to its dtype first); atol relative to the largest
// sum of |terms| of the case.
const TOL_W4A16 = {
  float32: { rtol: 1e-5, atol: 2e-6 },
  float16: { rtol: 1e-3, atol: 2e-4 },
  bfloat16: { rtol: 8e-3, atol: 2e-3 },
};

function ints(n: number, lo: number, hi: number, rng: Rng): Int8Array {
  const a = new Int8Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.int(lo, hi);
  return a;
}

const int4Tensor = (v: Int8Array, n: number, k: number) => new Tensor('int4', packInt4(v, k), [n, k]);
const uint8Bytes = (v: Int8Array, n: number, k: number) => new Tensor('uint8', packInt4(v, k), [n, Math.ceil(k / 2)]);
const maxAbs = (v: ArrayLike<number>) => Array.from(v).reduce((m, x) => Math.max(m, Math.abs(x)), 1e-30);
const scaled = (tol: { rtol: number; atol: number }, mag: number) => ({ rtol: tol.rtol, atol: tol.atol * mag });

const SHAPES: readonly [number, number, number][] = [
  [1, 1, 1],
  [1, 96, 256],
  [3, 5, 7],
  [2, 16, 8],
  [7, 33, 100],
  [6, 64, 64],
  [13, 130, 513],
  [37, 96, 256],
  [50, 17, 3],
  [2, 200, 1000],
  [97, 70, 36],
  [1030, 20, 40], // more rows than one pass of the kernel takes (1024)
];

// No CUDA kernels for these ops yet: on a CUDA backend only the CPU runs them.
describe.each(testDevices())('quantized GEMMs on %s', (device) => {
  const dev = async (t: Tensor) => t.to(device);

  for (const bits of [8, 4] as const) {
    const op = bits === 8 ? 'gemmW8A8' : 'gemmW4A8';
    const run = bits === 8 ? gemmW8A8 : gemmW4A8;
    const runSync = bits === 8 ? gemmW8A8Sync : gemmW4A8Sync;
    const [lo, hi] = bits === 8 ? [-128, 127] : [-8, 7];

    it(`${op}: exact int32 products`, async () => {
      for (const [m, n, k] of SHAPES) {
        const rng = new Rng(m * 1000003 + n * 1009 + k + bits);
        const a = ints(m * k, -128, 127, rng);
        const w = ints(n * k, lo, hi, rng);
        const ref = intGemmRef(a, w, m, n, k);
        const at = await dev(new Tensor('int8', a, [m, k]));
        const forms: [string, Tensor | PackedWeight][] =
          bits === 8
            ? [['int8', await dev(new Tensor('int8', w, [n, k]))]]
            : [
                ['int4', await dev(int4Tensor(w, n, k))],
                ['uint8', await dev(uint8Bytes(w, n, k))],
              ];
        forms.push(['packed', await packWeights(forms[0]?.[1] as Tensor)]);
        for (const [form, wt] of forms) {
          const label = `${op} [${m}, ${n}, ${k}] ${form}`;
          const out = await run(at, wt, 1, 1);
          expect(out.dtype).toBe('float32');
          expect(out.shape).toEqual([m, n]);
          assertEqual(toF64(out), ref, label);
          assertEqual(toF64(runSync(at, wt, 1, 1)), ref, `${label} sync`);
        }
      }
    });

    it(`${op}: the extremes of int8 stay exact`, async () => {
      const k = 1024;
      const a = new Int8Array(2 * k).fill(-128);
      const w = new Int8Array(3 * k).fill(bits === 8 ? -128 : -8);
      const wt = await dev(bits === 8 ? new Tensor('int8', w, [3, k]) : int4Tensor(w, 3, k));
      const out = await run(await dev(new Tensor('int8', a, [2, k])), await packWeights(wt), 1, 1);
      expect(Array.from(toF64(out))).toEqual(new Array(6).fill(k * 128 * (bits === 8 ? 128 : 8)));
    });

    it(`${op}: scales, bias and output dtypes`, async () => {
      for (const [m, n, k] of [
        [1, 40, 64],
        [9, 77, 130],
        [20, 64, 256],
      ] as const) {
        const rng = new Rng(m + n + k);
        const a = ints(m * k, -127, 127, rng);
        const w = ints(n * k, lo, hi, rng);
        const wt = await dev(bits === 8 ? new Tensor('int8', w, [n, k]) : int4Tensor(w, n, k));
        const as = randTensor([m], 'float32', () => 0.001 + rng.uniform() * 0.01);
        const ws = randTensor([n], 'float32', () => 0.001 + rng.uniform() * 0.01);
        const bias = randTensor([n], 'float32', () => rng.normal());
        const at = await dev(new Tensor('int8', a, [m, k]));
        const [ast, wst, biast] = [await dev(as.t), await dev(ws.t), await dev(bias.t)];
        for (const outDtype of DTYPES_FLOAT) {
          const ref = intGemmScaledRef(a, w, m, n, k, as.v, ws.v, bias.v);
          const tol = scaled(TOL_INT[outDtype], maxAbs(ref));
          const out = await run(at, wt, ast, wst, { bias: biast, outDtype });
          expect(out.dtype).toBe(outDtype);
          assertClose(toF64(out), ref, tol, `${op} [${m}, ${n}, ${k}] ${outDtype}`);
        }
        // Scalar scales: a number, [] and [1]; aScale may also take a's leading shape.
        const ref1 = intGemmScaledRef(a, w, m, n, k, [0.5], [0.25], undefined);
        const tol1 = scaled(TOL_INT.float32, maxAbs(ref1));
        assertClose(toF64(await run(at, wt, 0.5, 0.25)), ref1, tol1, 'number scales');
        assertClose(
          toF64(await run(at, wt, await dev(new Tensor('float32', [0.5], [])), await dev(new Tensor('float32', [0.25], [1])))),
          ref1,
          tol1,
          'tensor scales',
        );
      }
      // Leading dimensions: a [2, 3, K] -> out [2, 3, N]; 16-bit scale tensors are read as they are.
      const rng = new Rng(5);
      const a = ints(6 * 32, -127, 127, rng);
      const w = ints(10 * 32, lo, hi, rng);
      const wt = await dev(bits === 8 ? new Tensor('int8', w, [10, 32]) : int4Tensor(w, 10, 32));
      const as = randTensor([2, 3], 'bfloat16', () => rng.uniform());
      const out = await run(await dev(new Tensor('int8', a, [2, 3, 32])), wt, await dev(as.t), 2);
      expect(out.shape).toEqual([2, 3, 10]);
      const ref = intGemmScaledRef(a, w, 6, 10, 32, as.v, [2], undefined);
      assertClose(toF64(out), ref, scaled(TOL_INT.float32, maxAbs(ref)), 'leading dims');
    });

    it(`${op}: Mamba-sized shapes, sampled`, async () => {
      const [m, n, k] = [17, 1030, 2560];
      const rng = new Rng(2560 + bits);
      const a = ints(m * k, -127, 127, rng);
      const w = ints(n * k, lo, hi, rng);
      const wt = await dev(bits === 8 ? new Tensor('int8', w, [n, k]) : int4Tensor(w, n, k));
      const out = toF64(await run(await dev(new Tensor('int8', a, [m, k])), await packWeights(wt), 1, 1));
      const got: number[] = [];
      const want: number[] = [];
      for (let s = 0; s < 256; s++) {
        const i = rng.int(0, m - 1);
        const j = s < 8 ? n - 1 - s : rng.int(0, n - 1);
        got.push(out[i * n + j] as number);
        want.push(intGemmRef(a.subarray(i * k, (i + 1) * k), w.subarray(j * k, (j + 1) * k), 1, 1, k)[0] as number);
      }
      assertEqual(got, want, `${op} [${m}, ${n}, ${k}] sampled`);
    });
  }

  it('gemmW4A8: group-wise weight scales', async () => {
    for (const [m, n, k, gs] of [
      [1, 20, 64, 8],
      [5, 70, 128, 16],
      [13, 33, 256, 64],
      [8, 64, 96, 32],
    ] as const) {
      const rng = new Rng(m * n + gs);
      const a = ints(m * k, -127, 127, rng);
      const w = ints(n * k, -8, 7, rng);
      const as = randTensor([m], 'float32', () => 0.01 + rng.uniform());
      const ws = randTensor([n, k / gs], 'float32', () => 0.01 + rng.uniform());
      const bias = randTensor([n], 'float32', () => rng.normal());
      const ref = intGemmScaledRef(a, w, m, n, k, as.v, ws.v, bias.v, gs);
      const at = await dev(new Tensor('int8', a, [m, k]));
      const [ast, wst, biast] = [await dev(as.t), await dev(ws.t), await dev(bias.t)];
      const mag = maxAbs(ref);
      const w4 = await dev(int4Tensor(w, n, k));
      for (const wt of [w4, await packWeights(w4, { groupSize: gs })]) {
        assertClose(
          toF64(await gemmW4A8(at, wt, ast, wst, { bias: biast, groupSize: gs })),
          ref,
          scaled(TOL_INT.float32, mag),
          `groupSize ${gs}`,
        );
        // Left out, the group size comes from wScale's shape.
        assertClose(
          toF64(gemmW4A8Sync(at, wt, ast, wst, { bias: biast })),
          ref,
          scaled(TOL_INT.float32, mag),
          `groupSize ${gs} inferred`,
        );
      }
    }
  });

  for (const dtype of DTYPES_FLOAT) {
    it(`gemmW4A16 ${dtype}`, async () => {
      for (const [m, n, k, gs] of [
        [1, 1, 8, 8],
        [1, 96, 256, 128],
        [1, 96, 1024, 256], // groups of two 128-k units (the CUDA ring path counts units into groups)
        [3, 70, 1536, 512],
        [1, 130, 512, 64],
        [1, 17, 37, 37],
        [2, 5, 16, 8],
        [3, 64, 128, 32],
        [4, 130, 72, 8],
        [7, 33, 264, 8],
        [13, 70, 520, 520],
        [9, 31, 37, 37],
        [37, 96, 256, 64],
        [100, 20, 384, 128],
        [300, 24, 64, 32], // more rows than one pass of the kernel takes (256)
        [1, 77, 56, 8], // 7 scale groups (4 + 3) and a last column group of 13 columns
        [2, 150, 88, 8], // 11 scale groups, a last column group of 22 columns
      ] as const) {
        const rng = new Rng(m * 7 + n * 11 + k + gs);
        const x = randTensor([m, k], dtype, () => rng.normal());
        const w = ints(n * k, -8, 7, rng);
        const sc = randTensor([n, k / gs], dtype, () => 0.01 + rng.uniform() * 0.1);
        const bias = randTensor([n], dtype, () => rng.normal());
        const ref = w4a16Ref(x.v, w, sc.v, m, n, k, gs, bias.v);
        const absRef = w4a16Ref(x.v.map(Math.abs), w.map(Math.abs), sc.v, m, n, k, gs);
        const tol = scaled(TOL_W4A16[dtype], maxAbs(absRef));
        const xt = await dev(x.t);
        const [sct, biast, w4] = [await dev(sc.t), await dev(bias.t), await dev(int4Tensor(w, n, k))];
        const forms: [string, Tensor | PackedWeight][] = [
          ['int4', w4],
          ['uint8', await dev(uint8Bytes(w, n, k))],
          ['packed', packWeightsSync(w4, { groupSize: gs })],
        ];
        for (const [form, wt] of forms) {
          const label = `gemmW4A16 ${dtype} [${m}, ${n}, ${k}] gs ${gs} ${form}`;
          const out = await gemmW4A16(xt, wt, sct, { groupSize: gs, bias: biast });
          expect(out.dtype).toBe(dtype);
          expect(out.shape).toEqual([m, n]);
          assertClose(toF64(out), ref, tol, label);
        }
        const f32 = gemmW4A16Sync(xt, w4, sct, { groupSize: gs, bias: biast, outDtype: 'float32' });
        expect(f32.dtype).toBe('float32');
        assertClose(toF64(f32), ref, scaled(TOL_W4A16.float32, maxAbs(absRef)), `outDtype float32 ${m}x${n}x${k}`);
      }
    });
  }

  it('gemmW4A16: Mamba-sized shapes, sampled; default groupSize 128', async () => {
    for (const m of [1, 16]) {
      const [n, k] = [1030, 2560];
      const rng = new Rng(m + 99);
      const x = randTensor([m, k], 'bfloat16', () => rng.normal());
      const w = ints(n * k, -8, 7, rng);
      const sc = randTensor([n, k / 128], 'bfloat16', () => 0.01 + rng.uniform() * 0.1);
      const out = toF64(await gemmW4A16(await dev(x.t), await packWeights(await dev(int4Tensor(w, n, k))), await dev(sc.t)));
      const got: number[] = [];
      const want: number[] = [];
      let mag = 0;
      for (let s = 0; s < 256; s++) {
        const i = rng.int(0, m - 1);
        const j = s < 8 ? n - 1 - s : rng.int(0, n - 1);
        const xs = x.v.subarray(i * k, (i + 1) * k);
        const ws = w.subarray(j * k, (j + 1) * k);
        const ss = sc.v.subarray(j * (k / 128), (j + 1) * (k / 128));
        got.push(out[i * n + j] as number);
        want.push(w4a16Ref(xs, ws, ss, 1, 1, k, 128)[0] as number);
        mag = Math.max(mag, w4a16Ref(xs.map(Math.abs), ws.map(Math.abs), ss, 1, 1, k, 128)[0] as number);
      }
      assertClose(got, want, scaled(TOL_W4A16.bfloat16, mag), `gemmW4A16 [${m}, ${n}, ${k}] sampled`);
    }
  });

  // Decode rows, M = 1, 2, 5, 9, 16, 17 (the gemv path's one and several rows, its largest count and one
  // past it; the ring path's one and two n8 tiles), plain and packed weights: k that is not a multiple of
  // 64 bytes of weights a row (k = 1040 int8, 2568 int4), one group per row and groups of 128; 300 columns
  // (a last column group of 44; the GEMV and decode kernels) and 2100 (nine 256-column tiles, enough for
  // the ring path on CUDA, the last group 52 columns wide).
  it('decode rows (M = 1, 2, 5, 9, 16, 17): W8A8 exact, W4A16 against the reference, plain and packed', async () => {
    for (const [n, m] of [300, 2100].flatMap((n) => [1, 2, 5, 9, 16, 17].map((m) => [n, m] as const))) {
      const rng = new Rng(m * 17 + 3);
      const k8 = 1040;
      const a = ints(m * k8, -128, 127, rng);
      const w8 = ints(n * k8, -128, 127, rng);
      const ref8 = intGemmRef(a, w8, m, n, k8);
      const at = await dev(new Tensor('int8', a, [m, k8]));
      const wt = await dev(new Tensor('int8', w8, [n, k8]));
      for (const w of [wt, await packWeights(wt)]) {
        assertEqual(toF64(await gemmW8A8(at, w, 1, 1)), ref8, `gemmW8A8 decode [${m}, ${n}, ${k8}]`);
      }
      for (const [k, gs] of [
        [2568, 2568],
        [1280, 128],
      ] as const) {
        const x = randTensor([m, k], 'bfloat16', () => rng.normal());
        const w = ints(n * k, -8, 7, rng);
        const sc = randTensor([n, k / gs], 'bfloat16', () => 0.01 + rng.uniform() * 0.1);
        const ref = w4a16Ref(x.v, w, sc.v, m, n, k, gs);
        const tol = scaled(TOL_W4A16.float32, maxAbs(w4a16Ref(x.v.map(Math.abs), w.map(Math.abs), sc.v, m, n, k, gs)));
        const [xt, sct, w4] = [await dev(x.t), await dev(sc.t), await dev(int4Tensor(w, n, k))];
        for (const wq of [w4, await packWeights(w4, { groupSize: gs })]) {
          const out = await gemmW4A16(xt, wq, sct, { groupSize: gs, outDtype: 'float32' });
          assertClose(toF64(out), ref, tol, `gemmW4A16 decode [${m}, ${n}, ${k}] gs ${gs}`);
        }
      }
    }
  });

  // Decode (M = 1) with float16 x: activations with outliers (a few values 300 times the rest, as in
  // Mamba's hidden states), checked at float32 output; a group per row (groupSize = K) as well, and
  // groups that are not a whole number of 128-value blocks.
  it('gemmW4A16: float16 / bfloat16 decode with outlier activations', async () => {
    for (const [dtype, n, k, gs] of [
      ['bfloat16', 130, 2560, 128],
      ['bfloat16', 33, 520, 520],
      ['float16', 130, 2560, 128],
      ['float16', 70, 2560, 2560],
      ['float16', 33, 520, 520],
      ['float16', 65, 264, 8],
      ['float16', 40, 272, 136], // groups of 17 steps: blocks of 16 and 1
    ] as const) {
      const rng = new Rng(n + k + gs);
      const x = randTensor([1, k], dtype, () => rng.normal() * (rng.uniform() < 0.01 ? 300 : 1));
      const w = ints(n * k, -8, 7, rng);
      const sc = randTensor([n, k / gs], dtype, () => 0.01 + rng.uniform() * 0.1);
      const ref = w4a16Ref(x.v, w, sc.v, 1, n, k, gs);
      const absRef = w4a16Ref(x.v.map(Math.abs), w.map(Math.abs), sc.v, 1, n, k, gs);
      const w4 = await dev(int4Tensor(w, n, k));
      for (const wt of [w4, await packWeights(w4, { groupSize: gs })]) {
        const out = await gemmW4A16(await dev(x.t), wt, await dev(sc.t), { groupSize: gs, outDtype: 'float32' });
        assertClose(toF64(out), ref, scaled(TOL_W4A16.float32, maxAbs(absRef)), `${dtype} outliers [1, ${n}, ${k}] gs ${gs}`);
      }
    }
  });

  // Bfloat16 x with one block of 128 values of magnitude 2^-109 (below the units of the integer decode
  // kernel, which leaves such calls to the bfloat16 one).
  it('gemmW4A16: bfloat16 decode with a block of tiny activations', async () => {
    const [n, k, gs] = [40, 384, 128];
    const rng = new Rng(17);
    const xb = randTensor([1, k], 'bfloat16', () => rng.normal()).t.dataSync() as Uint16Array;
    for (let i = 128; i < 256; i++) xb[i] = ((xb[i] as number) & 0x807f) | 0x0900; // |x| in [2^-109, 2^-108)
    const xt = new Tensor('bfloat16', xb, [1, k]);
    const xv = toF64(xt);
    const w = ints(n * k, -8, 7, rng);
    const sc = randTensor([n, k / gs], 'bfloat16', () => 0.01 + rng.uniform() * 0.1);
    const ref = w4a16Ref(xv, w, sc.v, 1, n, k, gs);
    const absRef = w4a16Ref(xv.map(Math.abs), w.map(Math.abs), sc.v, 1, n, k, gs);
    const pw = await packWeights(await dev(int4Tensor(w, n, k)));
    const out = await gemmW4A16(await dev(xt), pw, await dev(sc.t), { groupSize: gs, outDtype: 'float32' });
    assertClose(toF64(out), ref, scaled(TOL_W4A16.float32, maxAbs(absRef)), 'bfloat16 tiny x');
    // The tiny block alone: its sums are about 2^-100 and must not vanish.
    const tiny = xb.map((v, i) => (i >= 128 && i < 256 ? v : 0));
    const tv = toF64(new Tensor('bfloat16', tiny, [1, k]));
    const ref2 = w4a16Ref(tv, w, sc.v, 1, n, k, gs);
    const absRef2 = w4a16Ref(tv.map(Math.abs), w.map(Math.abs), sc.v, 1, n, k, gs);
    const out2 = await gemmW4A16(await dev(new Tensor('bfloat16', tiny, [1, k])), pw, await dev(sc.t), {
      groupSize: gs,
      outDtype: 'float32',
    });
    assertClose(toF64(out2), ref2, scaled(TOL_W4A16.float32, maxAbs(absRef2)), 'bfloat16 tiny block alone');
  });

  // Float math: an infinite x gives +-inf where its weight is nonzero and NaN where it is zero (inf * 0);
  // a NaN in x makes every output NaN.
  it('gemmW4A16: float16 / bfloat16 decode with infinities and NaN in x', async () => {
    const [n, k, gs] = [70, 256, 128];
    const rng = new Rng(5);
    const w = ints(n * k, -8, 7, rng);
    for (let j = 0; j < n; j += 5) w[j * k + 3] = 0;
    const w4 = await dev(int4Tensor(w, n, k));
    const pw = await packWeights(w4, { groupSize: gs });
    for (const [dtype, inf, ninf, nan] of [
      ['float16', 0x7c00, 0xfc00, 0x7e00],
      ['bfloat16', 0x7f80, 0xff80, 0x7fc0],
    ] as const) {
      const sc = randTensor([n, k / gs], dtype, () => 0.01 + rng.uniform() * 0.1);
      const base = randTensor([1, k], dtype, () => rng.normal()).t.dataSync() as Uint16Array;
      for (const [bits, at] of [
        [inf, 3],
        [ninf, 3],
        [nan, 200],
      ] as const) {
        const xb = base.slice();
        xb[at] = bits;
        const x = await dev(new Tensor(dtype, xb, [1, k]));
        for (const wt of [w4, pw]) {
          const out = toF64(await gemmW4A16(x, wt, await dev(sc.t), { groupSize: gs, outDtype: 'float32' }));
          for (let j = 0; j < n; j++) {
            const wv = w[j * k + at] as number;
            const want = bits === nan || wv === 0 ? Number.NaN : (bits === inf) === wv > 0 ? Infinity : -Infinity;
            expect(out[j], `${dtype} x[${at}] = ${bits.toString(16)}, column ${j}, weight ${wv}`).toBe(want);
          }
        }
      }
    }
  });

  for (const c of [...goldenCases('gemmW8A8'), ...goldenCases('gemmW4A8'), ...goldenCases('gemmW4A16')]) {
    it(`golden ${c.file}`, async () => {
      const g = loadGolden(c.file);
      const gs = c.options.groupSize as number | undefined;
      const want = toF64(g.out as Tensor);
      if (c.op === 'gemmW4A16') {
        const x = await dev(g.x as Tensor);
        const [n, k] = (g.wInt as Tensor).shape as [number, number];
        const wInt = Int8Array.from(toF64(g.wInt as Tensor));
        const absRef = w4a16Ref(
          toF64(x).map(Math.abs),
          wInt.map(Math.abs),
          toF64(g.scales as Tensor),
          x.shape[0] as number,
          n,
          k,
          gs ?? 128,
        );
        const tol = scaled(TOL_W4A16.float16, maxAbs(absRef));
        // As the golden file stores it (uint8 bytes), as int4, and packed.
        const w4 = await dev(int4Tensor(wInt, n, k));
        const scales = await dev(g.scales as Tensor);
        for (const w of [await dev(g.w as Tensor), w4, await packWeights(w4)]) {
          assertClose(toF64(await gemmW4A16(x, w, scales, { groupSize: gs })), want, tol, c.file);
        }
        return;
      }
      const a = await dev(g.a as Tensor);
      const run = c.op === 'gemmW8A8' ? gemmW8A8 : gemmW4A8;
      const opts = g.bias ? { bias: await dev(g.bias as Tensor) } : {};
      const tol = scaled(TOL_INT.float32, maxAbs(want));
      const gw = await dev(g.w as Tensor);
      const forms: (Tensor | PackedWeight)[] = [
        gw,
        await packWeights(
          c.op === 'gemmW8A8'
            ? gw
            : await dev(int4Tensor(Int8Array.from(toF64(g.wInt as Tensor)), ...((g.wInt as Tensor).shape as [number, number]))),
        ),
      ];
      const [aScale, wScale] = [await dev(g.aScale as Tensor), await dev(g.wScale as Tensor)];
      for (const w of forms) {
        assertClose(toF64(await run(a, w, aScale, wScale, opts)), want, tol, c.file);
        if (g.acc) assertEqual(toF64(await run(a, w, 1, 1)), toF64(g.acc as Tensor), `${c.file} acc`);
      }
    });
  }

  it('runs concurrent calls independently', async () => {
    const rng = new Rng(77);
    const [m, n, k] = [20, 70, 200];
    const w = ints(n * k, -8, 7, rng);
    const w4 = await dev(int4Tensor(w, n, k));
    const pw = await packWeights(w4, { groupSize: 8 });
    const sc = await dev(randTensor([n, k / 8], 'float16', () => 0.05 + rng.uniform() * 0.1).t);
    const xs = await Promise.all([1, 3, m, 1, m].map((rows) => dev(randTensor([rows, k], 'float16', () => rng.normal()).t)));
    const as = await Promise.all([1, m].map((rows) => dev(new Tensor('int8', ints(rows * k, -127, 127, rng), [rows, k]))));
    const calls = [
      ...xs.map((x) => gemmW4A16(x, pw, sc, { outDtype: 'float32' })),
      ...as.map((a) => gemmW4A8(a, w4, 0.5, 2)),
      ...as.map((a) => gemmW4A8(a, pw, 0.5, 2)),
    ];
    const outs = await Promise.all(calls);
    const want = [
      ...xs.map((x) => gemmW4A16Sync(x, pw, sc, { outDtype: 'float32' })),
      ...as.map((a) => gemmW4A8Sync(a, w4, 0.5, 2)),
      ...as.map((a) => gemmW4A8Sync(a, pw, 0.5, 2)),
    ];
    outs.forEach((o, i) => {
      assertEqual(toF64(o), toF64(want[i] as Tensor), `call ${i}`);
    });
  });

  // Scales given as numbers are the call's own scalars: the same results as scalar tensors, and nothing of
  // them left alive after the call, whether it returns or throws (on CUDA they are written on the stream
  // by a kernel, so the call does not wait for the device).
  it('numeric scales: the results of scalar tensors, and no tensor left behind', async () => {
    const rng = new Rng(91);
    const [m, n, k] = [5, 40, 96];
    const a = await dev(new Tensor('int8', ints(m * k, -127, 127, rng), [m, k]));
    const w8 = await dev(new Tensor('int8', ints(n * k, -127, 127, rng), [n, k]));
    const w4 = await dev(int4Tensor(ints(n * k, -8, 7, rng), n, k));
    const sa = await dev(new Tensor('float32', new Float32Array([0.25]), []));
    const sw = await dev(new Tensor('float32', new Float32Array([3]), []));
    const badBias = await dev(new Tensor('float32', new Float32Array(n + 1), [n + 1]));
    for (const [w, run, runSync] of [
      [w8, gemmW8A8, gemmW8A8Sync],
      [w4, gemmW4A8, gemmW4A8Sync],
    ] as const) {
      const want = toF64(await run(a, w, sa, sw));
      const live = memory().liveTensors;
      const got = await run(a, w, 0.25, 3);
      const gotSync = runSync(a, w, 0.25, 3);
      expect(memory().liveTensors).toBe(live + 2);
      assertEqual(toF64(got), want, 'async, numeric scales');
      assertEqual(toF64(gotSync), want, 'sync, numeric scales');
      got.dispose();
      gotSync.dispose();
      await expect(run(a, w, 0.25, 3, { bias: badBias })).rejects.toThrow(RangeError);
      expect(() => runSync(a, w, 0.25, 3, { bias: badBias })).toThrow(RangeError);
      expect(memory().liveTensors).toBe(live);
    }
    for (const t of [a, w8, w4, sa, sw, badBias]) t.dispose();
  });

  it('packWeights: metadata, disposal and bad input', async () => {
    const w8 = new Tensor('int8', new Int8Array(6 * 16), [6, 16]);
    const w4 = new Tensor('int4', new Uint8Array(6 * 8), [6, 16]);
    const p8 = await packWeights(w8);
    expect(p8).toBeInstanceOf(PackedWeight);
    expect(p8.bits).toBe(8);
    expect(p8.shape).toEqual([6, 16]);
    expect(p8.device).toBe('cpu');
    const p4 = packWeightsSync(w4, { bits: 4, groupSize: 8 });
    expect(p4.groupSize).toBe(8);
    const a = new Tensor('int8', new Int8Array(2 * 16), [2, 16]);
    const x = new Tensor('float32', new Float32Array(2 * 16), [2, 16]);
    const sc = Tensor.zeros([6, 2]);
    const cases: [() => unknown, ErrorConstructor, RegExp][] = [
      [() => packWeightsSync(x), TypeError, /packWeightsSync: w: expected dtype int8 \| int4/],
      [() => packWeightsSync(new Tensor('int8', new Int8Array(4), [4])), RangeError, /packWeightsSync: w: expected 2 dimensions/],
      [() => packWeightsSync(w8, { bits: 4 }), RangeError, /packWeightsSync: options.bits/],
      [() => packWeightsSync(w4, { groupSize: 12 }), RangeError, /packWeightsSync: options.groupSize/],
      [() => gemmW8A8Sync(a, p4, 1, 1), TypeError, /gemmW8A8Sync: w: expected a PackedWeight of 8 bits/],
      [() => gemmW4A16Sync(x, p4, sc, { groupSize: 16 }), RangeError, /gemmW4A16Sync: options.groupSize/],
      [
        () => gemmW8A8Sync(new Tensor('int8', new Int8Array(8), [1, 8]), p8, 1, 1),
        RangeError,
        /gemmW8A8Sync: w: expected a PackedWeight with K = 8/,
      ],
    ];
    for (const [f, cls, msg] of cases) {
      expect(f).toThrow(cls);
      expect(f).toThrow(msg);
    }
    expect(gemmW4A16Sync(x, p4, sc, { groupSize: 8 }).shape).toEqual([2, 6]);
    p8.dispose();
    p8.dispose();
    expect(p8.isDisposed).toBe(true);
    expect(() => gemmW8A8Sync(a, p8, 1, 1)).toThrow(/gemmW8A8Sync: w: the packed weight has been disposed/);
  });

  it('rejects bad input', async () => {
    const a = new Tensor('int8', new Int8Array(3 * 16), [3, 16]);
    const w8 = new Tensor('int8', new Int8Array(5 * 16), [5, 16]);
    const w4 = new Tensor('int4', new Uint8Array(5 * 8), [5, 16]);
    const x = new Tensor('float16', new Uint16Array(3 * 16), [3, 16]);
    const sc = new Tensor('float16', new Uint16Array(5 * 2), [5, 2]);
    const cases: [() => unknown, ErrorConstructor, RegExp][] = [
      [() => gemmW8A8Sync(x, w8, 1, 1), TypeError, /gemmW8A8Sync: a: expected dtype int8/],
      [() => gemmW8A8Sync(a, w4, 1, 1), TypeError, /gemmW8A8Sync: w: expected dtype int8/],
      [() => gemmW8A8Sync(a, 'w' as never, 1, 1), TypeError, /gemmW8A8Sync: w: expected a Tensor/],
      [
        () => gemmW8A8Sync(a, new Tensor('int8', new Int8Array(5 * 8), [5, 8]), 1, 1),
        RangeError,
        /gemmW8A8Sync: w: expected shape \[N, 16\]/,
      ],
      [() => gemmW8A8Sync(a, w8, Tensor.zeros([4]), 1), RangeError, /gemmW8A8Sync: aScale/],
      [() => gemmW8A8Sync(a, w8, 1, Tensor.zeros([3])), RangeError, /gemmW8A8Sync: wScale/],
      [() => gemmW8A8Sync(a, w8, 1, new Tensor('int32', [1], [1])), TypeError, /gemmW8A8Sync: wScale/],
      [() => gemmW8A8Sync(a, w8, Number.NaN, 1), RangeError, /gemmW8A8Sync: aScale/],
      [
        () => gemmW8A8Sync(a, w8, 1, 1, { bias: Tensor.zeros([4]) }),
        RangeError,
        /gemmW8A8Sync: options.bias: expected shape \[5\]/,
      ],
      [() => gemmW8A8Sync(a, w8, 1, 1, { outDtype: 'int32' as never }), RangeError, /gemmW8A8Sync: options.outDtype/],
      [() => gemmW8A8Sync(a, w8, 1, 1, { groupSize: 8 } as never), TypeError, /gemmW8A8Sync: options.groupSize/],
      [() => gemmW4A8Sync(a, w4, 1, Tensor.zeros([5, 3])), RangeError, /gemmW4A8Sync: wScale/],
      [() => gemmW4A8Sync(a, w4, 1, Tensor.zeros([5, 4])), RangeError, /gemmW4A8Sync: options.groupSize/],
      [() => gemmW4A8Sync(a, w4, 1, 1, { groupSize: 8 }), RangeError, /gemmW4A8Sync: wScale/],
      [
        () => gemmW4A8Sync(a, new Tensor('uint8', new Uint8Array(5 * 16), [5, 16]), 1, 1),
        RangeError,
        /gemmW4A8Sync: w: expected shape \[N, 8\]/,
      ],
      [() => gemmW4A16Sync(a, w4, sc, { groupSize: 8 }), TypeError, /gemmW4A16Sync: x: expected dtype/],
      [() => gemmW4A16Sync(x, w4, sc), RangeError, /gemmW4A16Sync: options.groupSize/],
      [() => gemmW4A16Sync(x, w4, sc, { groupSize: 4 }), RangeError, /gemmW4A16Sync: options.groupSize/],
      [() => gemmW4A16Sync(x, w4, sc, { groupSize: 16 }), RangeError, /gemmW4A16Sync: scales: expected shape \[5, 1\]/],
      [() => gemmW4A16Sync(x, w4, 1 as never, { groupSize: 8 }), TypeError, /gemmW4A16Sync: scales/],
      [() => gemmW4A16Sync(x, w4, sc, { groupSize: 8, bias: Tensor.zeros([5, 1]) }), RangeError, /gemmW4A16Sync: options.bias/],
      [
        () => gemmW4A16Sync(new Tensor('float32', [1], []), w4, sc, { groupSize: 8 }),
        RangeError,
        /gemmW4A16Sync: x: expected at least 1 dimension/,
      ],
    ];
    for (const [f, cls, msg] of cases) {
      expect(f).toThrow(cls);
      expect(f).toThrow(msg);
    }
    await expect(gemmW8A8(x, w8, 1, 1)).rejects.toThrow(TypeError);
    await expect(gemmW4A16(x, w4, sc)).rejects.toThrow(RangeError);
  });
});
