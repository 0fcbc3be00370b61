// CUDA-specific checks of the quantization family (native/cuda/gemm.cu, quant.cu): every GEMM path
// (skinny for m <= 64, the packed decode path for packed weights at m <= 64, tiled above: wgmma for W8A8
// and ungrouped W4A8 on sm_90, mma.sync elsewhere and with SSMKIT_CUDA_WGMMA=0; simt for shapes the
// vector paths do not take), split k, tails of every tile, size-1 dimensions, every dtype and option, against the integer
// and float64 references and against our CPU backend, with outputs poisoned before each run;
// packWeights, quantize, dequantize and hadamard (many rows a block) bit for bit against the CPU; the
// golden files on CUDA. The family's own tests also run on every device in testDevices(), so this file
// keeps to what is particular to the CUDA kernels.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { packInt4 } from '../dist/cjs/dtype.js';
import {
  backend,
  dequantize,
  gemmW4A8,
  gemmW4A16,
  gemmW8A8,
  gemmW8A8Sync,
  hadamard,
  MambaModel,
  type PackedWeight,
  packWeights,
  quantize,
  quantizeSync,
  saveSafetensors,
  Tensor,
} from '../dist/cjs/index.js';
import { intGemmRef, intGemmScaledRef, w4a16Ref } from './ref/quant';
import {
  assertClose,
  assertEqual,
  DTYPES_FLOAT,
  type FloatDType,
  goldenCases,
  loadGolden,
  Rng,
  randTensor,
  toF64,
  withEnv,
} from './util';

const CUDA = backend().name === 'cuda';
const SKIP = CUDA ? '' : ` (skipped: the CUDA backend did not load: ${backend().fallbackReason ?? 'no GPU'})`;
const DEV = 'cuda:0';

// Scaled integer GEMMs: one rounding of the exact product plus the fused epilogue (float32), one more in
// the 16-bit formats; atol relative to the largest |reference|. W4A16 sums K float32 products; atol
// relative to the largest sum of |terms|.
const TOL_INT = {
  float32: { rtol: 1e-6, atol: 1e-6 },
  float16: { rtol: 1e-3, atol: 1e-4 },
  bfloat16: { rtol: 8e-3, atol: 1e-3 },
};
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
const maxAbs = (v: ArrayLike<number>) => Array.from(v).reduce((m, x) => Math.max(m, Math.abs(x)), 1e-30);
const scaled = (tol: { rtol: number; atol: number }, mag: number) => ({ rtol: tol.rtol, atol: tol.atol * mag });
const int4Tensor = (v: Int8Array, n: number, k: number) => new Tensor('int4', packInt4(v, k), [n, k]);
// The two GEMMs of int8 activations, with their weights' value range.
const A8_GEMMS = [
  { bits: 8, op: 'gemmW8A8', run: gemmW8A8, lo: -128, hi: 127 },
  { bits: 4, op: 'gemmW4A8', run: gemmW4A8, lo: -8, hi: 7 },
] as const;
const weights = (bits: 8 | 4, v: Int8Array, n: number, k: number) =>
  bits === 8 ? new Tensor('int8', v, [n, k]) : int4Tensor(v, n, k);

/**
 * Leaves blocks of 0xff bytes (NaN in float32, float16 and bfloat16) in the device's stream-ordered
 * pool, so that the output an op allocates next starts as NaN rather than zeros: an element the kernel
 * never writes then fails every comparison with a finite reference.
 */
function poison(bytes: number): void {
  for (const size of [bytes, 2 * bytes]) {
    const n = Math.max(16, size);
    new Tensor('uint8', new Uint8Array(n).fill(0xff), [n]).toSync(DEV).dispose();
  }
}

/** The same values on the CPU and on the device. */
async function both(t: Tensor): Promise<[Tensor, Tensor]> {
  return [t, await t.to(DEV)];
}

describe.skipIf(!CUDA)(`quantized GEMMs on CUDA${SKIP}`, () => {
  // [m, n, k]: the path plain int8 weights take is in the comment (aligned k: % 16 for int8 weights, % 32
  // for int4; aligned plain weights take the gemv path up to 4 rows, packed int8 up to 16; aligned int4
  // weights then the decode path up to 64).
  const SHAPES: readonly [number, number, number, string][] = [
    [1, 1, 32, 'gemv, one column'],
    [1, 300, 2560, 'gemv, decode, split k'],
    [3, 40, 8192, 'gemv, one column group, many splits'],
    [5, 129, 96, 'skinny (packed: gemv), n tail past a 64-column group'],
    [16, 1030, 512, 'skinny (packed: gemv), 16 rows'],
    [17, 64, 160, 'skinny, two m slices'],
    [64, 200, 1024, 'skinny, four m slices'],
    [65, 130, 96, 'tiled, m and n tails'],
    [129, 1, 64, 'tiled, one column'],
    [300, 258, 608, 'tiled, k tail inside a stage'],
    [256, 256, 2560, 'tiled, whole tiles'],
    [200, 520, 400, 'tiled (wgmma on sm_90a), k tail of 16 in the last 128-k tile, n tail of 8'],
    [130, 264, 2176, 'tiled, 17 k-tiles of 128 (the 4 stages wrap four times), m tail of 2'],
    [7, 33, 100, 'simt (k not aligned)'],
    [70, 17, 48, 'simt (k % 32 != 0 for int4; tiled for int8)'],
    [1, 5, 1, 'simt, k = 1'],
  ];

  for (const { bits, op, run, lo, hi } of A8_GEMMS) {
    it(`${op}: exact int32 products on every path`, async () => {
      for (const [m, n, k, path] of SHAPES) {
        const rng = new Rng(m * 7919 + n * 31 + k + bits);
        const a = ints(m * k, -128, 127, rng);
        const w = ints(n * k, lo, hi, rng);
        const ref = intGemmRef(a, w, m, n, k);
        const at = await new Tensor('int8', a, [m, k]).to(DEV);
        const wt = await weights(bits, w, n, k).to(DEV);
        poison(m * n * 4);
        const out = await run(at, wt, 1, 1);
        expect(out.device).toBe(DEV);
        assertEqual(toF64(out), ref, `${op} [${m}, ${n}, ${k}] ${path}`);
        // Again: the split-k tile counters must have been left at zero.
        poison(m * n * 4);
        assertEqual(toF64(await run(at, wt, 1, 1)), ref, `${op} [${m}, ${n}, ${k}] ${path}, second run`);
      }
    });

    it(`${op}: scales, bias and every output dtype match the CPU bit for bit`, async () => {
      for (const [m, n, k, path] of SHAPES) {
        const rng = new Rng(m + 3 * n + 7 * k + bits);
        const a = ints(m * k, -127, 127, rng);
        const w = ints(n * k, lo, hi, rng);
        const [ac, ag] = await both(new Tensor('int8', a, [m, k]));
        const [wc, wg] = await both(weights(bits, w, n, k));
        for (const scaleDtype of DTYPES_FLOAT) {
          const as = randTensor([m], scaleDtype, () => 0.001 + rng.uniform() * 0.01);
          const ws = randTensor([n], scaleDtype, () => 0.001 + rng.uniform() * 0.01);
          const bias = randTensor([n], scaleDtype, () => rng.normal());
          const [asc, asg] = await both(as.t);
          const [wsc, wsg] = await both(ws.t);
          const [bc, bg] = await both(bias.t);
          for (const outDtype of DTYPES_FLOAT) {
            const label = `${op} [${m}, ${n}, ${k}] ${path} scales ${scaleDtype} out ${outDtype}`;
            const cpu = await run(ac, wc, asc, wsc, { bias: bc, outDtype });
            poison(m * n * 4);
            const gpu = await run(ag, wg, asg, wsg, { bias: bg, outDtype });
            expect(gpu.dtype).toBe(outDtype);
            assertEqual(toF64(gpu), toF64(cpu), label);
            const ref = intGemmScaledRef(a, w, m, n, k, as.v, ws.v, bias.v);
            assertClose(toF64(gpu), ref, scaled(TOL_INT[outDtype], maxAbs(ref)), `${label} vs float64`);
          }
        }
        // Scalar scales and no bias.
        const cpu = await run(ac, wc, 0.5, 0.25);
        poison(m * n * 4);
        assertEqual(toF64(await run(ag, wg, 0.5, 0.25)), toF64(cpu), `${op} [${m}, ${n}, ${k}] scalar scales`);
      }
    });

    it(`${op}: packed weights on CUDA (packWeights' bytes equal the CPU's)`, async () => {
      for (const [m, n, k] of [
        [1, 1, 1],
        [2, 70, 37],
        [9, 130, 256],
        [100, 65, 96],
      ] as const) {
        const rng = new Rng(m * n * k + bits);
        const a = ints(m * k, -127, 127, rng);
        const w = ints(n * k, lo, hi, rng);
        const wt = weights(bits, w, n, k);
        const pc = await packWeights(wt);
        const pg = await packWeights(await wt.to(DEV));
        expect(pg.device).toBe(DEV);
        assertEqual(pg._data.dataSync() as Uint8Array, pc._data.dataSync() as Uint8Array, `packWeights int${bits} [${n}, ${k}]`);
        const at = await new Tensor('int8', a, [m, k]).to(DEV);
        poison(m * n * 4);
        assertEqual(toF64(await run(at, pg, 1, 1)), intGemmRef(a, w, m, n, k), `${op} packed [${m}, ${n}, ${k}]`);
        pc.dispose();
        pg.dispose();
      }
    });
  }

  // The wgmma path on sm_90 runs persistent blocks (one an SM) that walk the 128 x 256 tiles in turn, its
  // producer loading stages ahead across tile boundaries: more tiles than SMs (blocks of two, three and
  // four tiles, whose epilogue factors alternate between two buffers), k-tile counts (128 k each) that
  // are not a multiple of the 4 stages, so that the stages' phases run across tiles, m, n and k tails of
  // the last tiles (k % 32 == 0, so that int4 takes it too), odd n (single stores), and fewer tiles than
  // SMs with many k-tiles; tiles wholly inside an output whose rows are 16-byte aligned (n = 2600, 6000,
  // 520) leave through each warp's staging rows in shared memory, the others (n = 4100, 4097, and every
  // edge tile) from the fragment's registers; small k keeps the CPU reference short. Other devices run
  // the same shapes on the mma.sync tiled path. Against the CPU backend bit for bit (scales, bias,
  // bfloat16 out), a sample of the exact int32 sums against the integer reference, and a second run. By
  // default W4A8 runs them on the transposed kernel (256 x 128 tiles of out^T, the int4 weights widened in
  // the consumers' registers as wgmma's A operand, 16-bit outputs leaving through the copy engine, edge
  // tiles too, where the output's rows are 16-byte aligned, the rest from the threads;
  // SSMKIT_CUDA_W4S_MODE=1 and SSMKIT_CUDA_W4S_BULK=0 take its earlier forms, see gemm.cu);
  // SSMKIT_CUDA_W4A8_SWAP=0 takes the 128 x 256 kernel, whose W4A8 runs with 3 int8 stages and a ring of 4
  // int4 stages that the copy engine fills ahead (SSMKIT_CUDA_W4A8_RING=0: the register producer and 4
  // int8 stages).
  const PERSISTENT: readonly [number, number, number, string][] = [
    [1090, 4100, 160, '9 x 17 = 153 tiles, 2 k-tiles, k tail 32, m tail 66, n tail 4'],
    [2100, 2600, 96, '17 x 11 = 187 tiles, one k-tile of 96'],
    [1500, 4097, 96, '12 x 17 = 204 tiles, odd n'],
    [2100, 6000, 32, '17 x 24 = 408 tiles (three or four a block), one k-tile of 32'],
    [300, 520, 2592, '3 x 3 = 9 tiles, 21 k-tiles'],
    [1100, 4100, 416, '9 x 17 = 153 tiles, 4 k-tiles (k tail 32): the int4 ring wraps across tiles'],
  ];
  for (const { bits, op, run, lo, hi } of A8_GEMMS) {
    it(`${op}: large tiled shapes (persistent wgmma blocks on sm_90), the CPU's bits`, async () => {
      for (const [m, n, k, what] of PERSISTENT) {
        const rng = new Rng(m * 3 + n * 5 + k * 7 + bits);
        const a = ints(m * k, -128, 127, rng);
        const w = ints(n * k, lo, hi, rng);
        const [ac, ag] = await both(new Tensor('int8', a, [m, k]));
        const [wc, wg] = await both(weights(bits, w, n, k));
        const label = `${op} [${m}, ${n}, ${k}] ${what}`;
        // Every output against the CPU (scales, bias and bfloat16 rounding make a wrong sum show).
        const as = randTensor([m], 'float32', () => 0.001 + rng.uniform() * 0.01);
        const ws = randTensor([n], 'bfloat16', () => 0.001 + rng.uniform() * 0.01);
        const bias = randTensor([n], 'float16', () => rng.normal());
        const [asc, asg] = await both(as.t);
        const [wsc, wsg] = await both(ws.t);
        const [bc, bg] = await both(bias.t);
        const cpu = toF64(await run(ac, wc, asc, wsc, { bias: bc, outDtype: 'bfloat16' }));
        poison(m * n * 4);
        assertEqual(toF64(await run(ag, wg, asg, wsg, { bias: bg, outDtype: 'bfloat16' })), cpu, `${label} vs CPU`);
        // Exact int32 at unit scales: a sample against the integer reference (the last rows and
        // columns first), and the whole output again in a second run.
        poison(m * n * 4);
        const exact = toF64(await run(ag, wg, 1, 1));
        const got: number[] = [];
        const want: number[] = [];
        for (let s = 0; s < 256; s++) {
          const i = s < 8 ? m - 1 - s : rng.int(0, m - 1);
          const j = s < 16 ? n - 1 - (s % 8) : rng.int(0, n - 1);
          got.push(exact[i * n + j] as number);
          want.push(intGemmRef(a.subarray(i * k, (i + 1) * k), w.subarray(j * k, (j + 1) * k), 1, 1, k)[0] as number);
        }
        assertEqual(got, want, `${label}, sampled vs the integer reference`);
        poison(m * n * 4);
        assertEqual(toF64(await run(ag, wg, 1, 1)), exact, `${label}, second run`);
        for (const t of [ac, ag, wc, wg, asc, asg, wsc, wsg, bc, bg]) t.dispose();
      }
    });
  }

  // The packed decode path (m <= 64, weights as packWeights lays them out): rows of the m16 tile past m,
  // k tails inside a packed step and a round, columns past n inside a panel, a 64-column group and a
  // block of four groups, absent panels of the last group, split k.
  const PACKED: readonly [number, number, number][] = [
    [1, 1, 1],
    [1, 5, 3],
    [1, 300, 2560],
    [2, 70, 37],
    [2, 64, 64],
    [3, 40, 8192],
    [5, 129, 100],
    [16, 1030, 512],
    [16, 257, 33],
    [17, 64, 160],
    [33, 190, 72],
    [64, 200, 1024],
    [1, 4097, 96],
  ];
  for (const { bits, op, run, lo, hi } of A8_GEMMS) {
    it(`${op}: the packed decode path, exact int32 and the CPU's bits`, async () => {
      for (const [m, n, k] of PACKED) {
        const rng = new Rng(m * 131 + n * 7 + k * 3 + bits);
        const a = ints(m * k, -128, 127, rng);
        const w = ints(n * k, lo, hi, rng);
        const at = await new Tensor('int8', a, [m, k]).to(DEV);
        const wc = weights(bits, w, n, k);
        const pg = await packWeights(await wc.to(DEV));
        const ref = intGemmRef(a, w, m, n, k);
        for (const pass of ['first', 'second']) {
          poison(m * n * 4);
          assertEqual(toF64(await run(at, pg, 1, 1)), ref, `${op} packed [${m}, ${n}, ${k}], ${pass} run`);
        }
        const as = randTensor([m], 'float32', () => 0.001 + rng.uniform() * 0.01);
        const ws = randTensor([n], 'bfloat16', () => 0.001 + rng.uniform() * 0.01);
        const bias = randTensor([n], 'float16', () => rng.normal());
        const [asc, asg] = await both(as.t);
        const [wsc, wsg] = await both(ws.t);
        const [bc, bg] = await both(bias.t);
        for (const outDtype of DTYPES_FLOAT) {
          const label = `${op} packed [${m}, ${n}, ${k}] out ${outDtype}`;
          const cpu = await run(new Tensor('int8', a, [m, k]), wc, asc, wsc, { bias: bc, outDtype });
          poison(m * n * 4);
          const gpu = await run(at, pg, asg, wsg, { bias: bg, outDtype });
          expect(gpu.dtype).toBe(outDtype);
          assertEqual(toF64(gpu), toF64(cpu), label);
          poison(m * n * 4);
          assertEqual(
            toF64(await run(at, pg, 0.5, wsg, { outDtype })),
            toF64(await run(new Tensor('int8', a, [m, k]), wc, 0.5, wsc, { outDtype })),
            `${label}, scalar a scale, no bias`,
          );
        }
        pg.dispose();
      }
    });
  }

  it('gemmW4A8: group-wise scales on the packed decode paths (gemv: groups of 32 and more; the mma kernel: 128 and more; the rest unpacked)', async () => {
    for (const [m, n, k, gs] of [
      [1, 300, 2560, 128],
      [1, 130, 512, 32],
      [2, 65, 320, 64],
      [4, 40, 8192, 128],
      [3, 200, 1536, 384],
      [1, 100, 20000, 160],
      [16, 129, 512, 64],
      [3, 40, 1024, 32],
      [17, 70, 256, 256],
      [2, 33, 96, 32],
      [64, 65, 320, 160],
      [5, 200, 1536, 384],
    ] as const) {
      const c = await w4a8GroupCase(m * n + k * 5 + gs, [m, n, k, gs], -127, 'float16', 'float32');
      const { ref, ac, ag, wc, wg, pg, asc, asg, wsc, wsg, bc, bg } = c;
      for (const outDtype of DTYPES_FLOAT) {
        const label = `gemmW4A8 packed [${m}, ${n}, ${k}] groupSize ${gs} ${outDtype}`;
        poison(m * n * 4);
        const gpu = toF64(await gemmW4A8(ag, pg, asg, wsg, { bias: bg, groupSize: gs, outDtype }));
        const tol = scaled(TOL_INT[outDtype], maxAbs(ref));
        assertClose(gpu, ref, tol, label);
        assertClose(gpu, toF64(await gemmW4A8(ac, wc, asc, wsc, { bias: bc, groupSize: gs, outDtype })), tol, `${label} vs CPU`);
        poison(m * n * 4);
        assertEqual(toF64(await gemmW4A8(ag, pg, asg, wsg, { bias: bg, groupSize: gs, outDtype })), gpu, `${label}, second run`);
        // Plain int4 weights at k % 32 == 0 take the same decode kernel: the same bits.
        if (m <= 64 && k % 32 === 0) {
          poison(m * n * 4);
          assertEqual(toF64(await gemmW4A8(ag, wg, asg, wsg, { bias: bg, groupSize: gs, outDtype })), gpu, `${label} vs plain`);
        }
      }
      c.dispose();
    }
  });

  it('gemmW4A8: group-wise scales on every path', async () => {
    // [m, n, k, groupSize]: skinny takes groups of 128 (its k-step), tiled groups of 64; the rest is simt.
    for (const [m, n, k, gs] of [
      [1, 300, 2560, 128],
      [3, 40, 1024, 256],
      [16, 129, 512, 64],
      [5, 70, 128, 16],
      [100, 130, 512, 64],
      [70, 64, 768, 256],
      [80, 33, 96, 32],
      [9, 20, 64, 8],
    ] as const) {
      const rng = new Rng(m * n + k + gs);
      const a = ints(m * k, -127, 127, rng);
      const w = ints(n * k, -8, 7, rng);
      const as = randTensor([m], 'float32', () => 0.01 + rng.uniform());
      const ws = randTensor([n, k / gs], 'bfloat16', () => 0.01 + rng.uniform());
      const bias = randTensor([n], 'float32', () => rng.normal());
      const ref = intGemmScaledRef(a, w, m, n, k, as.v, ws.v, bias.v, gs);
      const [ac, ag] = await both(new Tensor('int8', a, [m, k]));
      const [wc, wg] = await both(int4Tensor(w, n, k));
      const [asc, asg] = await both(as.t);
      const [wsc, wsg] = await both(ws.t);
      const [bc, bg] = await both(bias.t);
      for (const outDtype of DTYPES_FLOAT) {
        const label = `gemmW4A8 [${m}, ${n}, ${k}] groupSize ${gs} ${outDtype}`;
        poison(m * n * 4);
        const gpu = toF64(await gemmW4A8(ag, wg, asg, wsg, { bias: bg, groupSize: gs, outDtype }));
        const tol = scaled(TOL_INT[outDtype], maxAbs(ref));
        assertClose(gpu, ref, tol, label);
        assertClose(gpu, toF64(await gemmW4A8(ac, wc, asc, wsc, { bias: bc, groupSize: gs, outDtype })), tol, `${label} vs CPU`);
      }
    }
  });

  for (const dtype of DTYPES_FLOAT) {
    it(`gemmW4A16 ${dtype} on every path`, async () => {
      // [m, n, k, groupSize]: float32 x always takes the simt path.
      for (const [m, n, k, gs] of [
        [1, 1, 128, 128],
        [1, 300, 2560, 128],
        [1, 130, 512, 512],
        [4, 40, 8192, 128],
        [16, 129, 1024, 256],
        [17, 64, 256, 64],
        [64, 100, 160, 160],
        [65, 130, 512, 64],
        [200, 72, 384, 128],
        [129, 9, 96, 96],
        [5, 33, 264, 8],
        [3, 17, 37, 37],
        [2, 70, 72, 72],
        [16, 257, 512, 32],
        [1, 4097, 64, 64],
        [33, 190, 96, 32],
        [2, 130, 1280, 256],
        [16, 64, 1184, 1184],
        // One column tile split 64 ways: the last block sums 64 partials of 4096 outputs in batches.
        [16, 100, 8192, 128],
      ] as const) {
        const rng = new Rng(m * 7 + n * 11 + k + gs);
        const x = randTensor([m, k], dtype, () => rng.normal());
        const w = ints(n * k, -8, 7, rng);
        const sc = randTensor([n, k / gs], dtype, () => 0.01 + rng.uniform() * 0.1);
        const bias = randTensor([n], dtype, () => rng.normal());
        const ref = w4a16Ref(x.v, w, sc.v, m, n, k, gs, bias.v);
        const absRef = w4a16Ref(x.v.map(Math.abs), w.map(Math.abs), sc.v, m, n, k, gs);
        const [xc, xg] = await both(x.t);
        const [wc, wg] = await both(int4Tensor(w, n, k));
        const [sc_, sg] = await both(sc.t);
        const [bc, bg] = await both(bias.t);
        for (const outDtype of DTYPES_FLOAT) {
          const label = `gemmW4A16 ${dtype} [${m}, ${n}, ${k}] groupSize ${gs} out ${outDtype}`;
          const tol = scaled(TOL_W4A16[outDtype === 'float32' ? dtype : outDtype], maxAbs(absRef));
          poison(m * n * 4);
          const gpu = await gemmW4A16(xg, wg, sg, { groupSize: gs, bias: bg, outDtype });
          expect(gpu.dtype).toBe(outDtype);
          assertClose(toF64(gpu), ref, tol, label);
          const cpu = await gemmW4A16(xc, wc, sc_, { groupSize: gs, bias: bc, outDtype });
          assertClose(toF64(gpu), toF64(cpu), tol, `${label} vs CPU`);
        }
        // Packed on the device: 16-bit x with m <= 64, no groups or groups of a multiple of 128 take the
        // decode path on the packed bytes (another summation order than the tiled and simt kernels:
        // against the references), as do plain weights there when k % 32 == 0 (then packed and plain
        // give the same bits); the rest unpacks them and runs the plain kernels (the same bits).
        const pg = await packWeights(wg, { groupSize: gs });
        const direct = dtype !== 'float32' && m <= 64 && (gs === k || gs % 128 === 0);
        for (const outDtype of DTYPES_FLOAT) {
          const label = `gemmW4A16 ${dtype} [${m}, ${n}, ${k}] groupSize ${gs} packed out ${outDtype}`;
          poison(m * n * 4);
          const packed = toF64(await gemmW4A16(xg, pg, sg, { groupSize: gs, bias: bg, outDtype }));
          const plain = toF64(await gemmW4A16(xg, wg, sg, { groupSize: gs, bias: bg, outDtype }));
          if (direct && k % 32 !== 0) {
            const tol = scaled(TOL_W4A16[outDtype === 'float32' ? dtype : outDtype], maxAbs(absRef));
            assertClose(packed, ref, tol, label);
            assertClose(packed, plain, tol, `${label} vs plain`);
          } else {
            assertEqual(packed, plain, label);
          }
          poison(m * n * 4);
          const again = toF64(await gemmW4A16(xg, pg, sg, { groupSize: gs, bias: bg, outDtype }));
          assertEqual(again, packed, `${label}, second run (deterministic)`);
        }
        pg.dispose();
      }
    });
  }

  // 256 rows take the wgmma paths on sm_90 (W4A8 on the transposed kernel: its sums of 16 w x at their
  // largest, 16 x 8 x 128 x k).
  it('the extremes of int8 and int4 stay exact on every path', async () => {
    for (const [m, k] of [
      [1, 1024],
      [100, 1024],
      [3, 1000],
      [256, 4096],
      [256, 4128],
    ] as const) {
      const a = await new Tensor('int8', new Int8Array(m * k).fill(-128), [m, k]).to(DEV);
      const w8 = await new Tensor('int8', new Int8Array(3 * k).fill(-128), [3, k]).to(DEV);
      const w4 = await int4Tensor(new Int8Array(3 * k).fill(-8), 3, k).to(DEV);
      expect(Array.from(toF64(gemmW8A8Sync(a, w8, 1, 1)))).toEqual(new Array(3 * m).fill(k * 128 * 128));
      expect(Array.from(toF64(await gemmW4A8(a, w4, 1, 1)))).toEqual(new Array(3 * m).fill(k * 128 * 8));
    }
  });

  // On sm_90 the transposed W4A8 kernel sums 16 w x in int32 (16 x 8 x 128 k at most) and takes k up to
  // 131071; longer rows go to the kernel that sums (w + 8) x. Both sides of that bound, at the extremes.
  it('gemmW4A8 at the extremes on both sides of the longest k of the transposed kernel', async () => {
    for (const k of [131040, 131104]) {
      const m = 256;
      const a = await new Tensor('int8', new Int8Array(m * k).fill(-128), [m, k]).to(DEV);
      const w4 = await int4Tensor(new Int8Array(3 * k).fill(-8), 3, k).to(DEV);
      const mixed = new Int8Array(3 * k).map((_, i) => (i % 2 ? 7 : -8));
      const w4m = await int4Tensor(mixed, 3, k).to(DEV);
      expect(Array.from(toF64(await gemmW4A8(a, w4, 1, 1)))).toEqual(new Array(3 * m).fill(k * 128 * 8));
      // Alternating -8 and 7: each pair of k adds -128 x (-8 + 7) = 128.
      expect(Array.from(toF64(await gemmW4A8(a, w4m, 1, 1)))).toEqual(new Array(3 * m).fill((k / 2) * 128));
      for (const t of [a, w4, w4m]) t.dispose();
    }
  });

  for (const c of [...goldenCases('gemmW8A8'), ...goldenCases('gemmW4A8'), ...goldenCases('gemmW4A16')]) {
    it(`golden ${c.file}`, async () => {
      const g = loadGolden(c.file);
      const gs = c.options.groupSize as number | undefined;
      const want = toF64(g.out as Tensor);
      const dev = async (t: Tensor | undefined) => (t === undefined ? undefined : t.to(DEV));
      const wInt = Int8Array.from(toF64(g.wInt ?? (g.w as Tensor)));
      const [n, k] = (g.wInt ?? (g.w as Tensor)).shape as [number, number];
      if (c.op === 'gemmW4A16') {
        const x = (await dev(g.x)) as Tensor;
        const absRef = w4a16Ref(
          toF64(g.x as Tensor).map(Math.abs),
          wInt.map(Math.abs),
          toF64(g.scales as Tensor),
          x.shape[0] as number,
          n,
          k,
          gs ?? 128,
        );
        const tol = scaled(TOL_W4A16.float16, maxAbs(absRef));
        const scales = (await dev(g.scales)) as Tensor;
        for (const w of [await dev(g.w), await packWeights(await int4Tensor(wInt, n, k).to(DEV))]) {
          poison(want.length * 4);
          const out = await gemmW4A16(x, w as Tensor | PackedWeight, scales, { groupSize: gs });
          assertClose(toF64(out), want, tol, c.file);
        }
        return;
      }
      const run = c.op === 'gemmW8A8' ? gemmW8A8 : gemmW4A8;
      const a = (await dev(g.a)) as Tensor;
      const bias = await dev(g.bias);
      const [as, ws] = [(await dev(g.aScale)) as Tensor, (await dev(g.wScale)) as Tensor];
      const tol = scaled(TOL_INT.float32, maxAbs(want));
      const plain = (await dev(g.w)) as Tensor;
      for (const w of [plain, await packWeights(c.op === 'gemmW8A8' ? plain : await int4Tensor(wInt, n, k).to(DEV))]) {
        poison(want.length * 4);
        assertClose(toF64(await run(a, w, as, ws, bias ? { bias } : {})), want, tol, c.file);
        if (g.acc) assertEqual(toF64(await run(a, w, 1, 1)), toF64(g.acc as Tensor), `${c.file} acc`);
      }
    });
  }
});

describe.skipIf(!CUDA)(`quantize and dequantize on CUDA match the CPU bit for bit${SKIP}`, () => {
  // Lengths for the rotation: 2^k, and 12, 20, 28, 40 times 2^k (40 and 20 with and without a power of
  // two; 2560, 5120 and 10240 = 40 * 64, 128 and 256 as in Mamba, where a block of 256 threads splits
  // H_40's rows four ways, two ways and not at all; 10240 is also past the rows held in registers).
  const HADAMARD_LENGTHS = [1, 2, 64, 12, 48, 20, 40, 28, 112, 320, 2560, 5120, 10240];
  const SHAPES: readonly (readonly number[])[] = [
    [1],
    [7],
    [1, 1],
    [3, 17],
    [4, 64],
    [2, 3, 40],
    [5, 1, 96],
    [1, 300],
    [33, 1000],
    // The longest row a block of 256 threads holds in registers (one scale a row), and one value more.
    [2, 8192],
    [2, 8193],
  ];

  const compare = async (x: Tensor, opts: Parameters<typeof quantize>[1], label: string) => {
    const cpu = await quantize(x, opts);
    const xg = await x.to(DEV);
    poison(x.size * 4);
    const gpu = await quantize(xg, opts);
    expect(gpu.q.device).toBe(DEV);
    expect(gpu.q.dtype).toBe(cpu.q.dtype);
    expect(gpu.scale.dtype).toBe(cpu.scale.dtype);
    assertEqual(toF64(gpu.scale), toF64(cpu.scale), `${label} scale`);
    assertEqual(toF64(gpu.q), toF64(cpu.q), `${label} q`);
    for (const outDtype of DTYPES_FLOAT) {
      poison(x.size * 4);
      const back = await dequantize(gpu.q, gpu.scale, { outDtype });
      assertEqual(toF64(back), toF64(await dequantize(cpu.q, cpu.scale, { outDtype })), `${label} dequantize ${outDtype}`);
    }
  };

  for (const dtype of DTYPES_FLOAT) {
    for (const bits of [8, 4] as const) {
      it(`${dtype} int${bits}: every granularity, static scales`, async () => {
        for (const shape of SHAPES) {
          const len = shape[shape.length - 1] as number;
          const rng = new Rng(shape.reduce((a, b) => a * 31 + b, bits));
          const { t } = randTensor([...shape], dtype, () => rng.normal() * 3);
          for (const granularity of ['tensor', 'token', 'channel', 'group'] as const) {
            const groupSizes = granularity === 'group' ? [1, 3, 8, len].filter((g) => len % g === 0) : [0];
            for (const groupSize of groupSizes) {
              const opts = granularity === 'group' ? { bits, granularity, groupSize } : { bits, granularity };
              await compare(t, opts, `${dtype} int${bits} ${granularity} ${groupSize || ''} [${shape}]`);
            }
          }
          // Static (calibrated) scales: a number, and a token scale tensor on the device.
          await compare(t, { bits, scale: 0.05 }, `${dtype} int${bits} static [${shape}]`);
          const s = quantizeSync(t, { bits, granularity: 'token' }).scale;
          const cpu = quantizeSync(t, { bits, granularity: 'token', scale: s });
          const gpu = await quantize(await t.to(DEV), { bits, granularity: 'token', scale: await s.to(DEV) });
          assertEqual(toF64(gpu.q), toF64(cpu.q), `${dtype} int${bits} static token [${shape}] q`);
        }
      });
    }

    it(`${dtype}: the fused Hadamard rotation`, async () => {
      for (const len of HADAMARD_LENGTHS) {
        const rng = new Rng(len * 3 + 1);
        const { t } = randTensor([3, len], dtype, () => rng.normal());
        for (const bits of [8, 4] as const) {
          for (const granularity of ['tensor', 'token', 'channel'] as const) {
            await compare(t, { bits, granularity, hadamard: true }, `${dtype} int${bits} ${granularity} hadamard ${len}`);
          }
          const gs = len % 8 === 0 ? 8 : 1;
          await compare(t, { bits, granularity: 'group', groupSize: gs, hadamard: true }, `${dtype} group hadamard ${len}`);
        }
      }
    });

    // 40 p with p = 64, 128, 256 (one scale a row: dynamic token scales or static scales) take the H_40
    // kernel with the quantizer in its epilogue: blocks of four row groups up to 16 rows, of one beyond.
    it(`${dtype}: the fused Hadamard rotation at the Mamba widths, few and many rows, static scales`, async () => {
      for (const len of [2560, 5120, 10240]) {
        for (const rows of [1, 16, 17]) {
          const rng = new Rng(len + rows);
          const { t } = randTensor([rows, len], dtype, () => rng.normal() * 2);
          for (const bits of [8, 4] as const) {
            const label = `${dtype} int${bits} [${rows}, ${len}] hadamard`;
            await compare(t, { bits, granularity: 'token', hadamard: true }, `${label} token`);
            await compare(t, { bits, scale: 0.03, hadamard: true }, `${label} static tensor`);
            const s = quantizeSync(t, { bits, granularity: 'token', hadamard: true }).scale;
            const cpu = quantizeSync(t, { bits, granularity: 'token', scale: s, hadamard: true });
            const gpu = await quantize(await t.to(DEV), { bits, granularity: 'token', scale: await s.to(DEV), hadamard: true });
            assertEqual(toF64(gpu.q), toF64(cpu.q), `${label} static token q`);
          }
        }
        // Static channel scales: one a group of 8 rows (dimension 0 of a 3-d tensor).
        const rng = new Rng(len);
        const { t } = randTensor([2, 8, len], dtype, () => rng.normal() * 2);
        for (const bits of [8, 4] as const) {
          const s = quantizeSync(t, { bits, granularity: 'channel', hadamard: true }).scale;
          const cpu = quantizeSync(t, { bits, granularity: 'channel', scale: s, hadamard: true });
          const gpu = await quantize(await t.to(DEV), { bits, granularity: 'channel', scale: await s.to(DEV), hadamard: true });
          assertEqual(toF64(gpu.q), toF64(cpu.q), `${dtype} int${bits} [2, 8, ${len}] hadamard static channel q`);
        }
      }
    });
  }

  it('round half to even, NaN, infinities and zeros', async () => {
    const vals = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -127.5, 0, -0, Number.NaN, 1e30, -1e30];
    const x = new Tensor('float32', new Float32Array(vals), [2, 7]);
    for (const bits of [8, 4] as const) {
      await compare(x, { bits, scale: 1 }, `int${bits} ties`);
      await compare(new Tensor('float32', new Float32Array(14), [2, 7]), { bits, granularity: 'token' }, `int${bits} zeros`);
    }
  });
});

// The model runner captures its decode step (the quantized layers' GEMM calls included) into a CUDA graph
// and launches it once per token. A Mamba checkpoint wide enough that every quantized projection splits
// k (in_proj 2048 x 512, x_proj 64 x 1024, out_proj 512 x 1024: the split-k workspace is in the graph),
// in bfloat16 so that W4A16 takes the tensor-core decode path; an untied head keeps the greedy tokens
// varied. A long prompt (prefill on the tiled path)
// leaves the workspace small, so the capture needs its own; a short one (prefill on the decode path)
// grows it first. Every graph is launched several times; its tokens must equal the uncaptured step's.
describe.skipIf(!CUDA)(`hadamard on CUDA matches the CPU bit for bit${SKIP}`, () => {
  // [rows, n]: enough rows that the staged kernel's blocks loop over several (one wave is at most a
  // few hundred blocks), for each H_m, the m = 1 shared-memory path (p > 256), the fallback (p < 8),
  // and rows too long for the stage beside buf in float32 (read straight from global memory).
  const SHAPES: readonly (readonly [number, number, string])[] = [
    [1500, 5120, 'H_40 x 128, staged'],
    [2000, 320, 'H_40 x 8, staged'],
    [1200, 1536, 'H_12 x 128, staged'],
    [900, 1792, 'H_28 x 64, staged'],
    [1100, 1024, 'm = 1, p = 1024 through shared memory, staged'],
    [3000, 40, 'H_40 x 1, fallback'],
    [700, 256, 'm = 1 in registers'],
    [3, 32768, 'the longest row (float32: unstaged)'],
  ];
  for (const dtype of DTYPES_FLOAT) {
    it(`${dtype}: every path, many rows`, async () => {
      for (const [rows, n, path] of SHAPES) {
        const rng = new Rng(rows * 31 + n);
        const { t } = randTensor([rows, n], dtype, () => rng.normal());
        const scale = 1 / Math.sqrt(n);
        const cpu = await hadamard(t, { scale });
        const xg = await t.to(DEV);
        poison(rows * n * 4);
        const gpu = await hadamard(xg, { scale });
        expect(gpu.device).toBe(DEV);
        assertEqual(toF64(gpu), toF64(cpu), `hadamard ${dtype} [${rows}, ${n}] ${path}`);
        for (const x of [xg, gpu, cpu]) x.dispose();
      }
    });
  }
});

describe.skipIf(!CUDA)(`quantized GEMMs captured into the decode step's CUDA graph${SKIP}`, () => {
  it('w8a8, w4a8 and w4a16: a captured step launches again and again, with the uncaptured tokens', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssmkit-quant-capture-'));
    const [d, di, ds, r, vocab] = [512, 1024, 16, 32, 256];
    const rng = new Rng(2026);
    const t = (shape: number[], f: () => number) =>
      new Tensor('float32', Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, f), shape);
    const m = 'backbone.layers.0.mixer';
    const tensors: Record<string, Tensor> = {
      'backbone.embeddings.weight': t([vocab, d], () => rng.normal()),
      'backbone.norm_f.weight': t([d], () => 1 + 0.1 * rng.normal()),
      'backbone.layers.0.norm.weight': t([d], () => 1 + 0.1 * rng.normal()),
      [`${m}.in_proj.weight`]: t([2 * di, d], () => rng.normal() / Math.sqrt(d)),
      [`${m}.out_proj.weight`]: t([d, di], () => rng.normal() / Math.sqrt(di)),
      [`${m}.conv1d.weight`]: t([di, 1, 4], () => 0.5 * rng.normal()),
      [`${m}.conv1d.bias`]: t([di], () => 0.1 * rng.normal()),
      [`${m}.x_proj.weight`]: t([r + 2 * ds, di], () => rng.normal() / Math.sqrt(di)),
      [`${m}.dt_proj.weight`]: t([di, r], () => rng.normal() / Math.sqrt(r)),
      [`${m}.dt_proj.bias`]: t([di], () => -3 + 0.5 * rng.normal()),
      [`${m}.A_log`]: t([di, ds], () => Math.log(1 + 4 * rng.uniform())),
      [`${m}.D`]: t([di], () => 1 + 0.5 * rng.normal()),
      'lm_head.weight': t([vocab, d], () => rng.normal()),
    };
    const config = {
      model_type: 'mamba',
      hidden_size: d,
      intermediate_size: di,
      state_size: ds,
      num_hidden_layers: 1,
      vocab_size: vocab,
      time_step_rank: r,
      conv_kernel: 4,
      use_bias: false,
      use_conv_bias: true,
      residual_in_fp32: true,
      layer_norm_epsilon: 1e-5,
      tie_word_embeddings: false,
    };
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    await saveSafetensors(path.join(dir, 'model.safetensors'), tensors);
    const long = Array.from({ length: 80 }, (_, i) => (i * 37 + 11) % vocab);
    try {
      for (const quantize of ['w8a8', 'w4a8', 'w4a16'] as const) {
        const model = await MambaModel.load(dir, { device: DEV, dtype: 'bfloat16', quantize });
        for (const prompts of [
          [long],
          [[5, 17, 99]],
          [
            [1, 2],
            [3, 4],
            [5, 6],
          ],
        ]) {
          const label = `${quantize}, ${prompts.length} prompt(s) of ${(prompts[0] as number[]).length}`;
          const captured = await model.generate(prompts, { maxNewTokens: 8 });
          const again = await model.generate(prompts, { maxNewTokens: 8 });
          const uncaptured = await withEnv({ SSMKIT_CUDA_GRAPH: '0' }, () => model.generate(prompts, { maxNewTokens: 8 }));
          expect(captured.tokens, label).toEqual(uncaptured.tokens);
          expect(again.tokens, `${label}, the graph again`).toEqual(uncaptured.tokens);
          expect((captured.tokens[0] as number[]).length, label).toBe(8);
        }
        model.dispose();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

// The CUDA-core GEMV of the decode path (m <= 4: one row, or up to four; up to 16 for W8A8): packed
// weights of every kind and plain rows of whole chunks (16 k of int8, 32 k of int4), against the integer
// and float64 references; packed and plain weights give the same bits. Shapes: k tails inside a chunk and a
// step, columns past n inside a 64-column group and absent panels of the last one, one column, k = 1,
// split k forced by the staged x budget (k = 20000 at one row, 8192 at four), x staged value by value,
// blocks of more chunks than their threads keep in flight, and the decode shapes of a Mamba-2.8B layer
// (in_proj at one row for the integer kinds only: its float64 references take seconds).
describe.skipIf(!CUDA)(`the CUDA-core GEMV of the decode path (m <= 4, or 16)${SKIP}`, () => {
  const GEMV: readonly [number, number, number][] = [
    [1, 1, 1],
    [1, 64, 32],
    [1, 65, 33],
    [2, 100, 544],
    [3, 4097, 96],
    [4, 200, 2560],
    [1, 192, 5120],
    [1, 300, 20000],
    [4, 40, 8192],
    [2, 17, 1000],
    // out_proj of a Mamba-2.8B layer at three rows (split k; x staged by 16-byte loads).
    [3, 2560, 5120],
    // One row: x staged value by value (k % 8 != 0), more chunks a block than its threads keep in flight
    // (one panel of one column group, k split 64 ways: 48 chunks of int4, 96 of int8), and three splits
    // of 27 chunks (in_proj's blocks, on fewer columns).
    [1, 33, 1001],
    [1, 16, 98304],
    [1, 2560, 2560],
  ];

  // W8A8 takes the GEMV up to m = 16 (W4A8 above 4 rows the tensor-core decode path).
  const GEMV_INT: readonly [number, number, number][] = [
    ...GEMV,
    [5, 129, 100],
    [9, 70, 2560],
    [16, 300, 2560],
    [16, 4097, 64],
    [12, 1, 1],
    [13, 65, 20000],
    // in_proj of a Mamba-2.8B layer at one row: 480 blocks, one wave.
    [1, 10240, 2560],
  ];
  for (const { bits, op, run, lo, hi } of A8_GEMMS) {
    it(`${op}: exact int32, the CPU's bits, packed and plain alike`, async () => {
      for (const [m, n, k] of GEMV_INT) {
        const rng = new Rng(m * 1009 + n * 13 + k * 7 + bits);
        const a = ints(m * k, -128, 127, rng);
        const w = ints(n * k, lo, hi, rng);
        const ref = intGemmRef(a, w, m, n, k);
        const [ac, ag] = await both(new Tensor('int8', a, [m, k]));
        const [wc, wg] = await both(weights(bits, w, n, k));
        const pg = await packWeights(wg);
        const label = `${op} [${m}, ${n}, ${k}]`;
        for (const pass of ['first', 'second']) {
          poison(m * n * 4);
          assertEqual(toF64(await run(ag, pg, 1, 1)), ref, `${label} packed, ${pass} run`);
          poison(m * n * 4);
          assertEqual(toF64(await run(ag, wg, 1, 1)), ref, `${label} plain, ${pass} run`);
        }
        const as = randTensor([m], 'float32', () => 0.001 + rng.uniform() * 0.01);
        const ws = randTensor([n], 'bfloat16', () => 0.001 + rng.uniform() * 0.01);
        const bias = randTensor([n], 'float16', () => rng.normal());
        const [asc, asg] = await both(as.t);
        const [wsc, wsg] = await both(ws.t);
        const [bc, bg] = await both(bias.t);
        for (const outDtype of DTYPES_FLOAT) {
          const cpu = toF64(await run(ac, wc, asc, wsc, { bias: bc, outDtype }));
          poison(m * n * 4);
          assertEqual(toF64(await run(ag, pg, asg, wsg, { bias: bg, outDtype })), cpu, `${label} packed out ${outDtype}`);
        }
        pg.dispose();
      }
    });
  }

  for (const dtype of ['float16', 'bfloat16'] as const) {
    it(`gemmW4A16 ${dtype}: against float64, packed and plain alike`, async () => {
      for (const [m, n, k] of GEMV) {
        for (const gs of [k, 32, 128]) {
          if (k % gs !== 0 || (gs !== k && k % 32 !== 0)) continue;
          const rng = new Rng(m * 17 + n * 5 + k + gs);
          const x = randTensor([m, k], dtype, () => rng.normal());
          const w = ints(n * k, -8, 7, rng);
          const sc = randTensor([n, k / gs], dtype, () => 0.01 + rng.uniform() * 0.1);
          const bias = randTensor([n], dtype, () => rng.normal());
          const ref = w4a16Ref(x.v, w, sc.v, m, n, k, gs, bias.v);
          const absRef = w4a16Ref(x.v.map(Math.abs), w.map(Math.abs), sc.v, m, n, k, gs);
          const xg = await x.t.to(DEV);
          const wg = await int4Tensor(w, n, k).to(DEV);
          const pg = await packWeights(wg, { groupSize: gs });
          const [sg, bg] = [await sc.t.to(DEV), await bias.t.to(DEV)];
          for (const outDtype of DTYPES_FLOAT) {
            const label = `gemmW4A16 ${dtype} [${m}, ${n}, ${k}] groupSize ${gs} out ${outDtype}`;
            const tol = scaled(TOL_W4A16[outDtype === 'float32' ? dtype : outDtype], maxAbs(absRef));
            poison(m * n * 4);
            const packed = toF64(await gemmW4A16(xg, pg, sg, { groupSize: gs, bias: bg, outDtype }));
            assertClose(packed, ref, tol, `${label} packed`);
            poison(m * n * 4);
            assertEqual(
              toF64(await gemmW4A16(xg, pg, sg, { groupSize: gs, bias: bg, outDtype })),
              packed,
              `${label} packed, second run`,
            );
            if (k % 32 === 0) {
              poison(m * n * 4);
              assertEqual(toF64(await gemmW4A16(xg, wg, sg, { groupSize: gs, bias: bg, outDtype })), packed, `${label} plain`);
            }
          }
          pg.dispose();
        }
      }
    });
  }
});

// A grouped W4A8 case of m x n x k with groups of gs: x in [aLo, 127], int4 weights, positive row and group
// scales, a bias; the float64 reference, each operand on the CPU and on the device, the packed weights, and
// dispose() for all of them.
async function w4a8GroupCase(
  seed: number,
  [m, n, k, gs]: readonly [number, number, number, number],
  aLo: number,
  scaleDtype: FloatDType,
  biasDtype: FloatDType,
) {
  const rng = new Rng(seed);
  const a = ints(m * k, aLo, 127, rng);
  const w = ints(n * k, -8, 7, rng);
  const as = randTensor([m], 'float32', () => 0.01 + rng.uniform());
  const ws = randTensor([n, k / gs], scaleDtype, () => 0.01 + rng.uniform());
  const bias = randTensor([n], biasDtype, () => rng.normal());
  const ref = intGemmScaledRef(a, w, m, n, k, as.v, ws.v, bias.v, gs);
  const [ac, ag] = await both(new Tensor('int8', a, [m, k]));
  const [wc, wg] = await both(int4Tensor(w, n, k));
  const pg = await packWeights(wg, { groupSize: gs });
  const [asc, asg] = await both(as.t);
  const [wsc, wsg] = await both(ws.t);
  const [bc, bg] = await both(bias.t);
  const dispose = () => {
    for (const t of [ac, ag, wc, wg, pg, asc, asg, wsc, wsg, bc, bg]) t.dispose();
  };
  return { ref, ac, ag, wc, wg, pg, asc, asg, wsc, wsg, bc, bg, dispose };
}

// W8A8 (bits 8) or W4A8 (bits 4) on the given rows: exact int32 sums, and the CPU's bits with per-row and
// per-column scales, a bias and every output dtype, for plain and packed weights.
async function checkA8Rows(shapes: readonly (readonly [number, number, number])[], bits: 8 | 4 = 8): Promise<void> {
  const { op, run, lo, hi } = A8_GEMMS[bits === 8 ? 0 : 1];
  for (const [m, n, k] of shapes) {
    const rng = new Rng(m * 31 + n + k + bits);
    const a = ints(m * k, -128, 127, rng);
    const w = ints(n * k, lo, hi, rng);
    const ref = intGemmRef(a, w, m, n, k);
    const [ac, ag] = await both(new Tensor('int8', a, [m, k]));
    const [wc, wg] = await both(weights(bits, w, n, k));
    const pg = await packWeights(wg);
    const as = randTensor([m], 'float32', () => 0.001 + rng.uniform() * 0.01);
    const ws = randTensor([n], 'float32', () => 0.001 + rng.uniform() * 0.01);
    const bias = randTensor([n], 'bfloat16', () => rng.normal());
    const [asc, asg] = await both(as.t);
    const [wsc, wsg] = await both(ws.t);
    const [bc, bg] = await both(bias.t);
    for (const [form, wt] of [
      ['plain', wg],
      ['packed', pg],
    ] as const) {
      const label = `${op} [${m}, ${n}, ${k}] ${form}`;
      poison(m * n * 4);
      assertEqual(toF64(await run(ag, wt, 1, 1)), ref, label);
      for (const outDtype of DTYPES_FLOAT) {
        poison(m * n * 4);
        const gpu = await run(ag, wt, asg, wsg, { bias: bg, outDtype });
        const cpu = await run(ac, wc, asc, wsc, { bias: bc, outDtype });
        assertEqual(toF64(gpu), toF64(cpu), `${label} scaled, out ${outDtype}`);
      }
    }
    for (const t of [ac, ag, wc, wg, pg, asc, asg, wsc, wsg, bc, bg]) t.dispose();
  }
}

// W4A16 rows of 16-bit x on the decode paths: plain weights against the float64 reference, packed weights
// giving the plain weights' bits, and a second run the same bits (groups of 128, 256 and the whole row).
async function checkW4A16Rows(shapes: readonly (readonly [number, number, number])[]) {
  for (const dtype of ['bfloat16', 'float16'] as const) {
    for (const [m, n, k] of shapes) {
      for (const gs of [128, 256, k]) {
        if (k % gs !== 0) continue;
        const rng = new Rng(m * 7 + n + k + gs);
        const x = randTensor([m, k], dtype, () => rng.normal());
        const w = ints(n * k, -8, 7, rng);
        const sc = randTensor([n, k / gs], dtype, () => 0.01 + rng.uniform() * 0.1);
        const bias = randTensor([n], dtype, () => rng.normal());
        const ref = w4a16Ref(x.v, w, sc.v, m, n, k, gs, bias.v);
        const absRef = w4a16Ref(x.v.map(Math.abs), w.map(Math.abs), sc.v, m, n, k, gs);
        const tol = scaled(TOL_W4A16.float32, maxAbs(absRef));
        const [xg, wg, sg, bg] = [await x.t.to(DEV), await int4Tensor(w, n, k).to(DEV), await sc.t.to(DEV), await bias.t.to(DEV)];
        const pg = await packWeights(wg, { groupSize: gs });
        const label = `gemmW4A16 ${dtype} [${m}, ${n}, ${k}] groupSize ${gs}`;
        poison(m * n * 4);
        const plain = toF64(await gemmW4A16(xg, wg, sg, { groupSize: gs, bias: bg, outDtype: 'float32' }));
        assertClose(plain, ref, tol, `${label} plain`);
        poison(m * n * 4);
        const packed = toF64(await gemmW4A16(xg, pg, sg, { groupSize: gs, bias: bg, outDtype: 'float32' }));
        assertEqual(packed, plain, `${label} packed`);
        poison(m * n * 4);
        const again = toF64(await gemmW4A16(xg, pg, sg, { groupSize: gs, bias: bg, outDtype: 'float32' }));
        assertEqual(again, packed, `${label}, second run (deterministic)`);
        for (const d of [xg, wg, sg, bg, pg]) d.dispose();
      }
    }
  }
}

// The pair path of the decode rows (W4A16 and packed W8A8 at one row, plain W8A8 and any W4A8 up to 16; k a
// multiple of 128; at least a block of 32 columns for every other SM: n >= 2081 on the H200's 132; the
// other rows of these shapes take the ring): W8A8 and W4A8 exact and the CPU's bits with their scales and
// bias, W4A16 against the reference with plain and packed weights giving the same bits. Shapes: 2088 columns end in a
// group of three panels (the last block's panel pair has one absent) whose last panel is half columns
// past n; one 128-k step (one warp a block); 11 steps over three warps (unequal ranges); one and two
// m16 tiles of rows (8, 9, 16); groups of one step, two steps and the whole row. On sm_90 the stream path
// takes plain W8A8 rows from 8 whose block share fits shared memory.
describe.skipIf(!CUDA)(`the pair path of the quantized decode rows${SKIP}`, () => {
  const SHAPES: readonly [number, number, number][] = [
    [1, 2088, 128],
    [4, 2088, 1408],
    [8, 2560, 2560],
    [9, 2088, 1280],
    [16, 2560, 1408],
    [1, 2560, 5120],
    [1, 10240, 5120],
  ];

  it('gemmW8A8: exact int32 and the CPU bits, plain and packed weights', () => checkA8Rows(SHAPES));

  // W4A8's weights widen to 16 w there (sums shifted back by 4): the extremes of both operands too.
  it('gemmW4A8: exact int32 and the CPU bits, plain and packed weights', async () => {
    await checkA8Rows(SHAPES, 4);
    for (const [m, n, k] of [
      [1, 2088, 4096],
      [16, 2560, 4096],
    ] as const) {
      const a = await new Tensor('int8', new Int8Array(m * k).fill(-128), [m, k]).to(DEV);
      for (const v of [-8, 7]) {
        const w = await int4Tensor(new Int8Array(n * k).fill(v), n, k).to(DEV);
        const pw = await packWeights(w);
        for (const wt of [w, pw]) {
          poison(m * n * 4);
          expect(Array.from(toF64(await gemmW4A8(a, wt, 1, 1)))).toEqual(new Array(m * n).fill(-128 * v * k));
        }
        w.dispose();
        pw.dispose();
      }
      a.dispose();
    }
  });

  // W4A8 with groups there: each warp's int32 sums of a group (exact) times the group's scale into float32
  // totals, so against the reference and the CPU within tolerance; packed weights give the plain weights'
  // bits and a second run the same bits. Groups of one step, two steps (a group split between two warps
  // where a warp's range starts mid-group) and the whole row; scales in every float dtype.
  it('gemmW4A8 with groups: against the reference and the CPU, plain and packed weights giving the same bits', async () => {
    for (const [m, n, k] of SHAPES) {
      for (const gs of [128, 256, k]) {
        if (k % gs !== 0) continue;
        for (const sdt of DTYPES_FLOAT) {
          const c = await w4a8GroupCase(m * 7 + n + k + gs, [m, n, k, gs], -128, sdt, 'bfloat16');
          const { ref, ac, ag, wc, wg, pg, asc, asg, wsc, wsg, bc, bg } = c;
          const label = `gemmW4A8 [${m}, ${n}, ${k}] groupSize ${gs}, ${sdt} scales`;
          const opts = { bias: bg, groupSize: gs, outDtype: 'float32' } as const;
          poison(m * n * 4);
          const gpu = toF64(await gemmW4A8(ag, wg, asg, wsg, opts));
          const tol = scaled(TOL_INT.float32, maxAbs(ref));
          assertClose(gpu, ref, tol, label);
          const cpu = toF64(await gemmW4A8(ac, wc, asc, wsc, { bias: bc, groupSize: gs, outDtype: 'float32' }));
          assertClose(gpu, cpu, tol, `${label} vs CPU`);
          poison(m * n * 4);
          assertEqual(toF64(await gemmW4A8(ag, pg, asg, wsg, opts)), gpu, `${label}, packed`);
          poison(m * n * 4);
          assertEqual(toF64(await gemmW4A8(ag, wg, asg, wsg, opts)), gpu, `${label}, second run`);
          c.dispose();
        }
      }
    }
  });

  it('gemmW4A16: float16 and bfloat16 x against the reference, plain and packed weights giving the same bits', () =>
    checkW4A16Rows(SHAPES));
});

// The stream path (plain W8A8, 8 to 16 rows, k a multiple of 128, on sm_90: a block an SM owns a run of
// whole quads of columns, in sets of 32; a warp one to three 128-k steps): 10240 x 2560 (about 78 columns
// a block, three sets, ~200 KB of rows; 20 steps over 16 warps); fewer quads than SMs (530 columns: the
// last quad half past n; 23 columns: six blocks, the last with three); a partial second set (6000
// columns, 48 a block); four sets (16384 x 1536); three steps a warp (k = 5120); one warp for 128 columns
// (16384 x 128); one and two m16 tiles of rows (8; 9 to 16). Packed weights of the same shapes take the
// pair path or the ring: the same bits.
describe.skipIf(!CUDA)(`the stream path of plain W8A8 rows${SKIP}`, () => {
  it('gemmW8A8: exact int32 and the CPU bits, plain and packed weights', () =>
    checkA8Rows([
      [8, 10240, 2560],
      [8, 530, 256],
      [9, 23, 128],
      [16, 6000, 1024],
      [12, 16384, 1536],
      [16, 10240, 1280],
      [10, 4096, 5120],
      [8, 16384, 128],
    ]));
});

// The group path (W4A16, 16-bit x, 1 to 16 rows, k a multiple of 128, on sm_90 where the 64-column groups
// fill one wave: 99 to 132 groups on the H200's 132 SMs): a block a group, warp w taking the 128-k steps
// w, w + W, ... through a slot of its own, refilled for each next step (one m16 tile of rows: 16 warps;
// two: 8 warps). Shapes: 49 steps (a warp's slot reused up to three times of 16 warps, six of 8), 110
// groups with a last group of 24 columns (two panels, the second half past n) and 11 steps (warps without
// any), one and two m16 tiles of rows (1, 2, 3; 9, 12), 50 steps over 132 groups, one row over 110 groups
// and over 132 groups of 11 steps. Groups of 128, 256 and the whole row: a group's scales from one or two
// steps, or none.
describe.skipIf(!CUDA)(`the group path of W4A16 rows${SKIP}`, () => {
  it('gemmW4A16: float16 and bfloat16 x against the reference, plain and packed weights giving the same bits', () =>
    checkW4A16Rows([
      [2, 6400, 6272],
      [9, 6336, 6272],
      [9, 7000, 1408],
      [12, 6336, 2304],
      [3, 8448, 6400],
      [1, 7000, 2304],
      [1, 8448, 1408],
    ]));
});
