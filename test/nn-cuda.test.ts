// CUDA-specific checks of the model building blocks (lib/ops/nn.ts): every op on fresh random inputs
// against its float64 reference and against the CPU backend, with outputs poisoned first (the test
// hands the native op its own output tensors, filled with NaN, so an element the kernel leaves unwritten
// fails the comparison), at the shapes that reach each CUDA variant and its tails: the split-K gemv
// (1..64 rows in chunks of 16, K past the staged-x budget), the tensor-core GEMM (bfloat16, K % 8 == 0
// or not, x in the scan layout), the FFMA GEMM (every other dtype pair), row kernels past 48 KiB of
// shared memory, one-block-per-row sampling at vocabularies up to 60000. The fused decode step runs
// small Mamba and Mamba-2 models against the CPU step, captured and uncaptured, fused and composed, with
// and without programmatic dependent launch (the captured and uncaptured runs must agree bit for bit).
// The family's own tests (nn.test.ts, model.test.ts and its golden models) also run on cuda:0.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { native } from '../dist/cjs/backend.js';
import { fromNative } from '../dist/cjs/errors.js';
import { backend, loadSafetensorsSync, MambaModel, Tensor } from '../dist/cjs/index.js';
import { Checkpoint } from '../dist/cjs/models/checkpoint.js';
import { normalizeConfig, parseConfigJson } from '../dist/cjs/models/config.js';
import { FloatLinear } from '../dist/cjs/models/linear.js';
import { hadamardLength, QuantLinear } from '../dist/cjs/models/quantized.js';
import {
  bindDecodeStates,
  createDecodePlan,
  type DecodeModel,
  decodeStepSync,
  dtLimit,
  embedding,
  gatedRmsNorm,
  gatedRmsNormSync,
  LINEAR_KIND,
  linear,
  linearSync,
  type PackedLinear,
  packLinearSync,
  rmsNorm,
  rmsNormSync,
  sampleSync,
  transposeSplit,
} from '../dist/cjs/ops/nn.js';
import { refSample } from './ref/model';
import { columnsRef, dtLimitRef, gatedRmsNormRef, linearRef, rmsNormRef, transposeRef } from './ref/nn';
import {
  assertClose,
  assertEqual,
  DTYPES_FLOAT,
  type FloatDType,
  GOLDEN_DIR,
  Rng,
  randTensor,
  type Tolerance,
  toF64,
  withEnvSync,
} from './util';

const ON_CUDA = backend().name === 'cuda';
const SKIP_REASON = `needs the CUDA backend (this run has backend ${backend().name})`;
const DEV = 'cuda:0';

// Against the float64 reference, keyed by the output dtype (inputs exactly as the op sees them).
const TOL: Record<FloatDType, Tolerance> = {
  float32: { rtol: 1e-4, atol: 1e-4 },
  float16: { rtol: 2e-3, atol: 2e-3 },
  bfloat16: { rtol: 1.6e-2, atol: 1.6e-2 },
};
// Against the CPU backend: both in float32 with other summation orders, then one rounding to the output
// dtype, where a value near a rounding boundary may land one step apart.
const TOL_CPU: Record<FloatDType, Tolerance> = {
  float32: { rtol: 1e-4, atol: 1e-4 },
  float16: { rtol: 2e-3, atol: 2e-3 },
  bfloat16: { rtol: 1.6e-2, atol: 1.6e-2 },
};

/** A device tensor whose every element is NaN (float dtypes) or -12345 (int32). */
function poisoned(shape: number[], dtype: FloatDType | 'int32'): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (n === 0) return Tensor.empty(shape, dtype, DEV);
  let t: Tensor;
  if (dtype === 'float32') t = new Tensor('float32', new Float32Array(n).fill(Number.NaN), [n]);
  else if (dtype === 'int32') t = new Tensor('int32', new Int32Array(n).fill(-12345), [n]);
  else t = new Tensor(dtype, new Uint16Array(n).fill(dtype === 'bfloat16' ? 0x7fc0 : 0x7e00), [n]);
  const d = t.toSync(DEV);
  t.dispose();
  return d.reshape(shape);
}

/** Calls a native op with descriptors the test built (its own, poisoned outputs). */
function call(op: string, args: object): void {
  try {
    native()[op](args, false);
  } catch (e) {
    throw fromNative(e);
  }
}

function nat(t: Tensor): unknown {
  return t._native('test', 'tensor');
}

function host(t: Tensor): Float64Array {
  return toF64(t.device === 'cpu' ? t : t.toSync('cpu'));
}

function relL2(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < e.length; i++) {
    const d = (a[i] as number) - (e[i] as number);
    num += d * d;
    den += (e[i] as number) ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

/** The float64 values of w as the packed panels hold them (bfloat16 panels round). */
function panelValues(w: Float64Array, dtype: 'float32' | 'bfloat16'): Float64Array {
  if (dtype === 'float32') return Float64Array.from(w, (v) => Math.fround(v));
  return toF64(new Tensor('float32', Float32Array.from(w), [w.length]).cast('bfloat16'));
}

describe('nn on CUDA', () => {
  if (!ON_CUDA) {
    it.skip(`skipped: ${SKIP_REASON}`, () => {});
    return;
  }
  // ---- packLinear ----------------------------------------------------------------------------------

  it('packLinear on the device writes the CPU panels bit for bit', () => {
    const rng = new Rng(1);
    for (const [n, k] of [
      [1, 1],
      [33, 7],
      [70, 64],
      [5, 129],
    ] as const) {
      for (const wd of DTYPES_FLOAT) {
        const w = randTensor([n, k], wd, () => rng.normal());
        for (const pd of ['float32', 'bfloat16'] as const) {
          const cpu = packLinearSync(w.t, { dtype: pd });
          const dev = packLinearSync(w.t.toSync(DEV), { dtype: pd });
          expect(dev.panels.shape).toEqual(cpu.panels.shape);
          assertEqual(
            Array.from(dev.panels.toSync('cpu').dataSync() as ArrayLike<number>),
            Array.from(cpu.panels.dataSync() as ArrayLike<number>),
            `pack [${n}, ${k}] ${wd} -> ${pd}`,
          );
        }
      }
    }
  });

  // ---- linear --------------------------------------------------------------------------------------

  // [M, K, N, x layout]: the gemv (1..64 rows: MR 1, 2, 4, 8, 16 and several chunks; K past the staged-x
  // budget; N off the 32-column panel), the GEMMs (M > 64: tile tails in M, N and K, K % 8 != 0, K odd),
  // x in the scan layout for both.
  const SHAPES: [number, number, number, boolean][] = [
    [1, 1, 1, false],
    [1, 64, 70, false],
    [1, 2560, 96, false],
    [2, 17, 33, false],
    [3, 300, 65, true],
    [5, 4099, 40, false],
    [8, 100, 31, false],
    [16, 256, 130, false],
    [17, 255, 96, true],
    [64, 130, 33, false],
    [65, 256, 130, false],
    [130, 255, 64, false],
    [130, 256, 96, true],
    [257, 64, 257, false],
    [300, 1, 5, false],
  ];

  for (const xd of DTYPES_FLOAT) {
    for (const wd of ['float32', 'bfloat16'] as const) {
      it(`linear x ${xd}, w ${wd}: reference, CPU, poisoned split outputs`, async () => {
        for (const [m, k, n, xT] of SHAPES) {
          const rng = new Rng(m * 7919 + k * 31 + n);
          const label = `linear [${m}, ${k}, ${n}]${xT ? ' xT' : ''} ${xd}/${wd}`;
          const x = randTensor([m, k], xd, () => rng.normal());
          const w = randTensor([n, k], 'float32', () => rng.normal() / Math.sqrt(k));
          const bias = randTensor([n], 'float32', () => rng.normal());
          const ref = linearRef(x.v, panelValues(w.v, wd), m, k, n, bias.v);
          const pw = packLinearSync(w.t.toSync(DEV), { dtype: wd });
          const pc = packLinearSync(w.t, { dtype: wd });
          const bd = bias.t.toSync(DEV);
          // Public op: token-major x, one output of x's dtype.
          const out = (await linear(x.t.toSync(DEV), pw, { bias: bd })) as Tensor;
          assertClose(host(out), ref, TOL[xd], `${label} vs reference`);
          const cpu = linearSync(x.t, pc, { bias: bias.t }) as Tensor;
          assertClose(host(out), host(cpu), TOL_CPU[xd], `${label} vs CPU`);
          // Native call with poisoned outputs: a float32 and a transposed bfloat16 part (batch = 1 row
          // group of m tokens), from x in the scan layout when asked.
          const c0 = Math.min(n, Math.max(1, Math.floor(n / 3)));
          const o1 = poisoned([m, c0], 'float32');
          const o2 = poisoned([1, n - c0, m], 'bfloat16');
          const xin = xT ? transposeTensor(x, [1, m, k], xd).toSync(DEV) : x.t.toSync(DEV); // (1, K, m) or (m, K)
          call('linear', {
            x: nat(xin),
            w: nat(pw.panels),
            bias: nat(bd),
            m,
            k,
            n,
            seqlen: m,
            xTransposed: xT,
            outputs: [
              { out: nat(o1), col0: 0, cols: c0, transposed: false },
              { out: nat(o2), col0: c0, cols: n - c0, transposed: true },
            ],
          });
          assertClose(host(o1), columnsRef(ref, m, n, 0, c0), TOL.float32, `${label} part 0`);
          assertClose(
            host(o2),
            transposeRef(columnsRef(ref, m, n, c0, n - c0), 1, m, n - c0),
            TOL.bfloat16,
            `${label} part 1 transposed`,
          );
          for (const t of [out, cpu, o1, o2, xin, bd]) t.dispose();
          pw.dispose();
          pc.dispose();
        }
      });
    }
  }

  it('linear: batches in the scan layout across tile boundaries, and K = 0', () => {
    const rng = new Rng(5);
    for (const [batch, len, k, n, wd] of [
      [3, 50, 64, 40, 'bfloat16'],
      [2, 70, 72, 33, 'bfloat16'],
      [5, 3, 40, 17, 'float32'],
      [4, 40, 33, 130, 'float32'],
    ] as const) {
      const m = batch * len;
      const x = randTensor([batch, len, k], 'bfloat16', () => rng.normal());
      const w = randTensor([n, k], 'float32', () => rng.normal() / Math.sqrt(k));
      const ref = linearRef(x.v, panelValues(w.v, wd), m, k, n);
      const pw = packLinearSync(w.t.toSync(DEV), { dtype: wd });
      const xt = transposeTensor(x, [batch, len, k], 'bfloat16').toSync(DEV); // (batch, K, len)
      const out = poisoned([batch, n, len], 'float32');
      call('linear', {
        x: nat(xt),
        w: nat(pw.panels),
        m,
        k,
        n,
        seqlen: len,
        xTransposed: true,
        outputs: [{ out: nat(out), col0: 0, cols: n, transposed: true }],
      });
      assertClose(host(out), transposeRef(ref, batch, len, n), TOL.float32, `scan layout [${batch}, ${len}, ${k}] -> ${n}`);
    }
    const w0 = packLinearSync(new Tensor('float32', new Float32Array(0), [3, 0]).toSync(DEV));
    const x0 = new Tensor('float32', new Float32Array(0), [70, 0]).toSync(DEV);
    const o0 = poisoned([70, 3], 'float32');
    call('linear', {
      x: nat(x0),
      w: nat(w0.panels),
      bias: nat(new Tensor('float32', [1, 2, 3], [3]).toSync(DEV)),
      m: 70,
      k: 0,
      n: 3,
      seqlen: 1,
      xTransposed: false,
      outputs: [{ out: nat(o0), col0: 0, cols: 3, transposed: false }],
    });
    assertEqual(
      host(o0),
      Array.from({ length: 210 }, (_, i) => [1, 2, 3][i % 3] as number),
      'K = 0: the bias',
    );
  });

  it('linear: the split-K result does not depend on the run (deterministic reduction)', () => {
    const rng = new Rng(9);
    const [m, k, n] = [1, 5120, 2560];
    const x = randTensor([m, k], 'bfloat16', () => rng.normal()).t.toSync(DEV);
    const w = packLinearSync(randTensor([n, k], 'bfloat16', () => rng.normal() / 64).t.toSync(DEV));
    const a = host(linearSync(x, w) as Tensor);
    for (let i = 0; i < 3; i++) assertEqual(host(linearSync(x, w) as Tensor), a, `run ${i}`);
    for (const units of ['1', '16']) {
      // Another split of K gives another rounding, within float32 accuracy of the same sums.
      const b = withEnvSync({ SSMKIT_CUDA_GEMV_UNITS: units }, () => host(linearSync(x, w, { outDtype: 'float32' }) as Tensor));
      assertClose(b, a, TOL.bfloat16, `SSMKIT_CUDA_GEMV_UNITS=${units}`);
    }
    // Ranges that cross panel boundaries (80 panels here; by default the grid is a multiple of them).
    const c = withEnvSync({ SSMKIT_CUDA_GEMV_ALIGN: '0' }, () => host(linearSync(x, w, { outDtype: 'float32' }) as Tensor));
    assertClose(c, a, TOL.bfloat16, 'SSMKIT_CUDA_GEMV_ALIGN=0');
  });

  // ---- splitColumns --------------------------------------------------------------------------------

  it('splitColumns: token-major and transposed parts, poisoned', () => {
    const rng = new Rng(3);
    for (const dt of DTYPES_FLOAT) {
      const [batch, len, n] = [3, 37, 70];
      const x = randTensor([batch, len, n], dt, () => rng.normal());
      const parts = [7, 33, 0, 30];
      const outs = parts.map((cols, i) => (i % 2 === 1 ? poisoned([batch, cols, len], dt) : poisoned([batch, len, cols], dt)));
      let c0 = 0;
      const outputs = parts.map((cols, i) => {
        const o = { out: nat(outs[i] as Tensor), col0: c0, cols, transposed: i % 2 === 1 };
        c0 += cols;
        return o;
      });
      call('splitColumns', { x: nat(x.t.toSync(DEV)), m: batch * len, n, seqlen: len, outputs });
      c0 = 0;
      parts.forEach((cols, i) => {
        const part = columnsRef(x.v, batch * len, n, c0, cols);
        const want = i % 2 === 1 ? transposeRef(part, batch, len, cols) : part;
        assertEqual(host(outs[i] as Tensor), want, `splitColumns ${dt} part ${i}`);
        c0 += cols;
      });
    }
  });

  // ---- rmsNorm, gatedRmsNorm -----------------------------------------------------------------------

  for (const dt of DTYPES_FLOAT) {
    it(`rmsNorm ${dt}: residual in place, float32 and ${dt} out, rows past 48 KiB`, async () => {
      for (const [rows, d] of [
        [1, 1],
        [3, 64],
        [7, 129],
        [2, 5000],
        [2, 13001],
      ] as const) {
        const rng = new Rng(rows * 131 + d);
        const x = randTensor([rows, d], dt, () => rng.normal());
        const res = randTensor([rows, d], 'float32', () => rng.normal());
        const w = randTensor([d], 'bfloat16', () => 1 + 0.1 * rng.normal());
        const ref = rmsNormRef(x.v, res.v, w.v, rows, d, 1e-5);
        const label = `rmsNorm [${rows}, ${d}] ${dt}`;
        const resD = res.t.toSync(DEV);
        const out = poisoned([rows, d], 'float32');
        call('rmsNorm', {
          x: nat(x.t.toSync(DEV)),
          residual: nat(resD),
          residualOut: nat(resD),
          weight: nat(w.t.toSync(DEV)),
          out: nat(out),
          rows,
          d,
          lastOf: 0,
          eps: 1e-5,
        });
        assertClose(host(out), ref.out, TOL[dt], `${label} vs reference`);
        assertClose(host(resD), ref.sum, TOL.float32, `${label} residual updated in place`);
        const cpuRes = res.t.toSync('cpu');
        const cpu = rmsNormSync(x.t, w.t, { residual: cpuRes, residualOut: cpuRes, outDtype: 'float32' });
        assertClose(host(out), host(cpu), TOL_CPU.float32, `${label} vs CPU`);
        const own = await rmsNorm(x.t.toSync(DEV), w.t.toSync(DEV), { eps: 1e-3 });
        expect(own.dtype).toBe(dt);
        assertClose(host(own), rmsNormRef(x.v, undefined, w.v, rows, d, 1e-3).out, TOL[dt], `${label} no residual`);
      }
      // lastOf: the last row of each sequence only.
      const rng = new Rng(77);
      const [b, len, d] = [3, 5, 40];
      const x = randTensor([b, len, d], dt, () => rng.normal());
      const w = randTensor([d], 'float32', () => rng.normal());
      const out = poisoned([b, d], dt);
      call('rmsNorm', {
        x: nat(x.t.toSync(DEV)),
        weight: nat(w.t.toSync(DEV)),
        out: nat(out),
        rows: b * len,
        d,
        lastOf: len,
        eps: 1e-5,
      });
      const last = new Float64Array(b * d);
      for (let i = 0; i < b; i++) last.set(x.v.subarray(((i + 1) * len - 1) * d, (i + 1) * len * d), i * d);
      assertClose(host(out), rmsNormRef(last, undefined, w.v, b, d, 1e-5).out, TOL[dt], 'lastOf');
    });

    it(`gatedRmsNorm ${dt}: one block per group and one warp per group, poisoned`, async () => {
      for (const [rows, d, groups] of [
        [1, 8, 1],
        [5, 96, 4],
        [2, 30, 3],
        [3, 640, 8],
        [2, 1000, 40],
        [1, 13000, 2],
      ] as const) {
        const rng = new Rng(rows + d + groups);
        const y = randTensor([rows, d], dt, () => rng.normal());
        const z = randTensor([rows, d], dt, () => rng.normal());
        const w = randTensor([d], 'float32', () => rng.normal());
        const label = `gated [${rows}, ${d}] / ${groups} ${dt}`;
        const out = poisoned([rows, d], dt);
        call('gatedRmsNorm', {
          y: nat(y.t.toSync(DEV)),
          z: nat(z.t.toSync(DEV)),
          weight: nat(w.t.toSync(DEV)),
          out: nat(out),
          rows,
          d,
          groups,
          eps: 1e-5,
        });
        assertClose(host(out), gatedRmsNormRef(y.v, z.v, w.v, rows, d, groups, 1e-5), TOL[dt], label);
        assertClose(host(out), host(gatedRmsNormSync(y.t, z.t, w.t, { groups })), TOL_CPU[dt], `${label} vs CPU`);
        const ungated = await gatedRmsNorm(y.t.toSync(DEV), undefined, w.t.toSync(DEV), { groups, eps: 1e-2 });
        assertClose(host(ungated), gatedRmsNormRef(y.v, undefined, w.v, rows, d, groups, 1e-2), TOL[dt], `${label} no gate`);
      }
    });
  }

  // ---- embedding, transposeSplit, dtLimit ----------------------------------------------------------

  it('embedding: tables and packed panels, every out dtype, ids out of range give NaN', async () => {
    const rng = new Rng(11);
    for (const [vocab, d] of [
      [70, 12],
      [33, 129],
    ] as const) {
      const table = randTensor([vocab, d], 'float32', () => rng.normal());
      const idv = [0, vocab - 1, 33 % vocab, 32, 31, 5, 1];
      const ids = new Tensor('int32', idv, [idv.length]).toSync(DEV);
      const want = new Float64Array(idv.length * d);
      idv.forEach((id, i) => {
        want.set(table.v.subarray(id * d, (id + 1) * d), i * d);
      });
      for (const pd of ['float32', 'bfloat16'] as const) {
        const packed = packLinearSync(table.t.toSync(DEV), { dtype: pd });
        const wantP =
          pd === 'float32' ? want : toF64(new Tensor('float32', Float32Array.from(want), [want.length]).cast('bfloat16'));
        for (const od of DTYPES_FLOAT) {
          const out = poisoned([idv.length, d], od);
          call('embedding', {
            ids: nat(ids),
            weight: nat(packed.panels),
            out: nat(out),
            count: idv.length,
            vocab,
            d,
            packed: true,
          });
          assertClose(host(out), wantP, TOL[od], `packed ${pd} -> ${od}`);
        }
      }
      const fromTable = await embedding(ids, table.t.toSync(DEV));
      assertEqual(host(fromTable), want, 'table');
      const bad = new Tensor('int32', [1, vocab, -1], [3]).toSync(DEV);
      const out = poisoned([3, d], 'float32');
      call('embedding', { ids: nat(bad), weight: nat(table.t.toSync(DEV)), out: nat(out), count: 3, vocab, d, packed: false });
      const got = host(out);
      assertEqual(got.subarray(0, d), table.v.subarray(d, 2 * d), 'in range');
      expect(
        Array.from(got.subarray(d)).every((v) => Number.isNaN(v)),
        'ids out of range',
      ).toBe(true);
    }
  });

  it('transposeSplit: 32x32 tiles with tails, c = 1, empty parts, poisoned', async () => {
    const rng = new Rng(5);
    for (const dt of DTYPES_FLOAT) {
      for (const [b, r, c, sizes] of [
        [2, 9, 4, [2, 0, 7]],
        [3, 70, 45, [33, 32, 5]],
        [1, 300, 1, [100, 200]],
        [2, 64, 64, [64]],
      ] as [number, number, number, number[]][]) {
        const x = randTensor([b, r, c], dt, () => rng.normal());
        const outs = sizes.map((rows) => poisoned([b, c, rows], dt));
        let row0 = 0;
        const outputs = sizes.map((rows, i) => {
          const o = { out: nat(outs[i] as Tensor), row0, rows };
          row0 += rows;
          return o;
        });
        call('transposeSplit', { x: nat(x.t.toSync(DEV)), batch: b, r, c, outputs });
        const t = transposeRef(x.v, b, r, c); // (b, c, r)
        row0 = 0;
        sizes.forEach((rows, i) => {
          if (rows > 0)
            assertEqual(host(outs[i] as Tensor), columnsRef(t, b * c, r, row0, rows), `[${b}, ${r}, ${c}] ${dt} part ${i}`);
          row0 += rows;
        });
      }
    }
    const x = randTensor([2, 9, 4], 'float32', () => rng.normal());
    const [a] = await transposeSplit(x.t.toSync(DEV), [9]);
    assertEqual(host(a as Tensor), transposeRef(x.v, 2, 9, 4), 'public op');
  });

  it('dtLimit: every dtype, with and without bias and limits, NaN kept', async () => {
    const rng = new Rng(9);
    for (const dt of DTYPES_FLOAT) {
      const [rows, heads] = [7, 13];
      const d = randTensor([rows, heads], dt, () => 10 * rng.normal());
      const bias = randTensor([heads], 'float32', () => rng.normal());
      const out = poisoned([rows, heads], dt);
      call('dtLimit', { dt: nat(d.t.toSync(DEV)), bias: nat(bias.t.toSync(DEV)), out: nat(out), rows, heads, lo: 0.01, hi: 2 });
      assertClose(host(out), dtLimitRef(d.v, bias.v, heads, 0.01, 2), TOL[dt], `dtLimit ${dt}`);
      const open = await dtLimit(d.t.toSync(DEV));
      assertClose(host(open), dtLimitRef(d.v, undefined, heads, 0, Number.POSITIVE_INFINITY), TOL[dt], `dtLimit ${dt} open`);
    }
    const nan = await dtLimit(new Tensor('float32', [Number.NaN, 1], [1, 2]).toSync(DEV), { lo: 0, hi: 1 });
    const v = host(nan);
    expect(Number.isNaN(v[0])).toBe(true);
    expect(v[1]).toBeCloseTo(1, 6);
  });

  // ---- sample ------------------------------------------------------------------------------------

  /**
   * The reference's pick, allowing a draw or a top-p mass within rounding of a boundary to move it. A
   * topK of the whole vocabulary filters nothing: the native samplers then walk in index order, as
   * without a topK.
   */
  function refPicks(l: Float32Array, u: number, t: number, topK: number, p: number): Set<number> {
    const k = topK >= l.length ? 0 : topK;
    const s = new Set<number>();
    for (const du of [-1e-6, 0, 1e-6]) {
      for (const dp of p < 1 ? [-1e-6, 0, 1e-6] : [0])
        s.add(refSample(l, Math.min(Math.max(u + du, 0), 1 - 1e-12), t, k, p + dp));
    }
    return s;
  }

  it('sample on the device: argmax, temperature, top-k, top-p, against the reference and the CPU', () => {
    const rng = new Rng(21);
    for (const vocab of [1, 7, 1000, 3001, 50280, 60000]) {
      const rows = vocab > 10000 ? 3 : 9;
      for (const [temperature, topK, topP, spread] of [
        [0, 0, 1, 3],
        [1, 0, 1, 3],
        [0.7, 40, 1, 3],
        [1.3, 0, 0.9, 3],
        [1, 50, 0.8, 8],
        [2, 0, 0.5, 0.01],
        [1, 1, 1, 3],
        [1, 0, 1e-6, 3],
        [0.5, 100000, 0.99, 1],
      ] as const) {
        const logits = new Float32Array(rows * vocab).map(() => spread * rng.normal());
        // Ties, a NaN and -inf in the first row.
        if (vocab >= 7) {
          logits[3] = Number.NaN;
          logits[4] = Number.NEGATIVE_INFINITY;
          logits[5] = logits[6] as number;
        }
        const draws = new Float64Array(rows).map(() => rng.uniform());
        const lt = new Tensor('float32', logits, [rows, vocab]);
        const dw = new Tensor('float64', draws, [rows]);
        const tokens = poisoned([rows], 'int32');
        call('sample', {
          logits: nat(lt.toSync(DEV)),
          draws: nat(dw.toSync(DEV)),
          tokens: nat(tokens),
          rows,
          vocab,
          temperature,
          topK,
          topP,
        });
        const got = tokens.toSync('cpu').dataSync() as Int32Array;
        const cpu = sampleSync(lt, { temperature, topK, topP, draws: dw }).dataSync() as Int32Array;
        for (let r = 0; r < rows; r++) {
          const label = `vocab ${vocab} T ${temperature} k ${topK} p ${topP} row ${r}`;
          const row = logits.subarray(r * vocab, (r + 1) * vocab);
          if (temperature === 0) {
            expect(got[r], label).toBe(cpu[r]);
            continue;
          }
          // The reference has no NaN handling (the kernels treat NaN as probability 0): skip that row.
          if (r === 0 && vocab >= 7) continue;
          expect(
            refPicks(row, draws[r] as number, temperature, topK, topP).has(got[r] as number),
            `${label}: got ${got[r]}`,
          ).toBe(true);
          expect(refPicks(row, draws[r] as number, temperature, topK, topP).has(cpu[r] as number), `${label}: CPU`).toBe(true);
        }
      }
    }
  });

  it('sample on the device: argmax over tied maxima, NaN, -inf and +inf rows, aligned and unaligned rows', () => {
    const rng = new Rng(29);
    // vocab 1001: a 16-byte aligned first row with a tail past the last 4-float vector, then unaligned
    // rows; 50280: every row aligned.
    for (const vocab of [1, 7, 1001, 50280]) {
      const rows = 6;
      const logits = new Float32Array(rows * vocab).map(() => 3 * rng.normal());
      const want: number[] = [];
      const at = (r: number, i: number, v: number) => {
        if (i < vocab) logits[r * vocab + i] = v;
      };
      // Row 0: the max at three places (within one vector, far apart): the first wins.
      for (const i of [vocab - 1, Math.floor(vocab / 2), 17, 18]) at(0, i, 100);
      want.push(vocab > 17 ? 17 : vocab > 1 ? Math.floor(vocab / 2) : 0);
      // Row 1: every logit NaN: 0.
      for (let i = 0; i < vocab; i++) at(1, i, Number.NaN);
      want.push(0);
      // Row 2: every logit -inf: the first.
      for (let i = 0; i < vocab; i++) at(2, i, Number.NEGATIVE_INFINITY);
      want.push(0);
      // Row 3: NaN, then -inf from index 2 on (NaN never wins).
      for (let i = 0; i < vocab; i++) at(3, i, i < 2 ? Number.NaN : Number.NEGATIVE_INFINITY);
      want.push(vocab > 2 ? 2 : 0);
      // Row 4: +inf last and at 5, NaN at 0.
      at(4, 0, Number.NaN);
      at(4, 5, Number.POSITIVE_INFINITY);
      at(4, vocab - 1, Number.POSITIVE_INFINITY);
      want.push(vocab > 5 ? 5 : vocab - 1);
      // Row 5: the max in the last element alone.
      at(5, vocab - 1, 1000);
      want.push(vocab - 1);
      const lt = new Tensor('float32', logits, [rows, vocab]);
      const tokens = poisoned([rows], 'int32');
      call('sample', { logits: nat(lt.toSync(DEV)), tokens: nat(tokens), rows, vocab, temperature: 0, topK: 0, topP: 1 });
      const got = tokens.toSync('cpu').dataSync() as Int32Array;
      const cpu = sampleSync(lt).dataSync() as Int32Array;
      for (let r = 0; r < rows; r++) {
        expect(got[r], `vocab ${vocab} row ${r}`).toBe(want[r]);
        expect(cpu[r], `vocab ${vocab} row ${r}: CPU`).toBe(want[r]);
      }
    }
  });
});

// ---- the fused decode step ------------------------------------------------------------------------------

interface TinyConfig {
  mamba2: boolean;
  act: 'float32' | 'bfloat16';
  residualFp32: boolean;
  dModel: number;
  dInner: number;
  dState: number;
  dtRank: number;
  nheads: number;
  headdim: number;
  ngroups: number;
  convWidth: number;
  vocab: number;
  layers: number;
  dtLimit?: [number, number];
  tied: boolean;
  bias: boolean;
  /** Quantize in_proj, out_proj (rotated where K allows) and Mamba's x_proj, as the runner does. */
  quant?: 'w8a8' | 'w4a8' | 'w4a16';
}

/** (batch, r, c) values of a random tensor -> a tensor (batch, c, r) of `dtype`. */
function transposeTensor(x: { v: Float64Array }, shape: [number, number, number], dtype: FloatDType): Tensor {
  const [b, r, c] = shape;
  const t = transposeRef(x.v, b, r, c);
  return new Tensor('float32', Float32Array.from(t), [b, c, r]).cast(dtype);
}

/** Host weights of a random model, and the same model's DecodeModel on a device. */
class TinyModel {
  readonly cfg: TinyConfig;
  #host: Record<string, Tensor> = {};
  #linears: Record<string, { w: Tensor; bias?: Tensor; n: number; k: number }> = {};

  constructor(cfg: TinyConfig, seed: number) {
    this.cfg = cfg;
    const rng = new Rng(seed);
    const normal =
      (s: number, o = 0) =>
      () =>
        o + s * rng.normal();
    const f32 = (shape: number[], f: () => number) => randTensor(shape, 'float32', f).t;
    const c = cfg;
    const gds = c.ngroups * c.dState;
    const convDim = c.mamba2 ? c.dInner + 2 * gds : c.dInner;
    const inN = c.mamba2 ? 2 * c.dInner + 2 * gds + c.nheads : 2 * c.dInner;
    const lin = (name: string, n: number, k: number, bias: boolean) => {
      this.#linears[name] = { w: f32([n, k], normal(1 / Math.sqrt(k))), ...(bias ? { bias: f32([n], normal(0.1)) } : {}), n, k };
    };
    for (let l = 0; l < c.layers; l++) {
      this.#host[`norm${l}`] = f32([c.dModel], normal(0.1, 1));
      lin(`in${l}`, inN, c.dModel, c.bias);
      lin(`out${l}`, c.dModel, c.dInner, c.bias);
      this.#host[`conv${l}`] = f32([convDim, c.convWidth], normal(0.5));
      this.#host[`convBias${l}`] = f32([convDim], normal(0.1));
      if (!c.mamba2) {
        lin(`x${l}`, c.dtRank + 2 * c.dState, c.dInner, false);
        lin(`dt${l}`, c.dInner, c.dtRank, false);
        this.#host[`dtBias${l}`] = f32([c.dInner], () => -3 + rng.uniform());
        this.#host[`A${l}`] = f32([c.dInner, c.dState], () => -0.5 - 2 * rng.uniform());
        this.#host[`D${l}`] = f32([c.dInner], normal(1));
      } else {
        this.#host[`dtBias${l}`] = f32([c.nheads], () => -3 + rng.uniform());
        this.#host[`A${l}`] = f32([c.nheads], () => -0.5 - 2 * rng.uniform());
        this.#host[`D${l}`] = f32([c.nheads], normal(1));
        this.#host[`gatedNorm${l}`] = f32([c.dInner], normal(0.1, 1));
      }
    }
    this.#host.normF = f32([c.dModel], normal(0.1, 1));
    lin('head', c.vocab, c.dModel, false);
    this.#host.embed = f32([c.vocab, c.dModel], normal(1));
  }

  /** The model's decode descriptor with every weight on `device` (linear layers packed there). */
  async desc(device: string): Promise<{ model: DecodeModel; keep: { dispose(): void }[] }> {
    const c = this.cfg;
    const keep: { dispose(): void }[] = [];
    const on = (t: Tensor) => {
      const d = device === 'cpu' ? t : t.toSync(device);
      if (d !== t) keep.push(d);
      return d;
    };
    const packed: Record<string, PackedLinear> = {};
    const lin = (name: string) => {
      const L = this.#linears[name] as { w: Tensor; bias?: Tensor; n: number; k: number };
      const p = packLinearSync(on(L.w), { dtype: c.act });
      packed[name] = p;
      keep.push(p);
      return { kind: LINEAR_KIND.float, w: p.panels, ...(L.bias ? { bias: on(L.bias) } : {}), n: L.n, k: L.k };
    };
    // Quantized on the host (the CPU quantizers), then moved: both backends see the same weights.
    const qlin = async (name: string, rotate: boolean) => {
      const L = this.#linears[name] as { w: Tensor; bias?: Tensor; n: number; k: number };
      if (!c.quant) return lin(name);
      const q = await QuantLinear.create(L.w, L.bias?.toSync('cpu'), c.quant, { dtype: c.act, rotate });
      if (device !== 'cpu') await q.to(device);
      keep.push(q);
      return q.decodeLinear();
    };
    const h = (name: string) => on(this.#host[name] as Tensor);
    const layers = [];
    for (let l = 0; l < c.layers; l++) {
      layers.push({
        norm: h(`norm${l}`),
        inProj: await qlin(`in${l}`, false),
        outProj: await qlin(`out${l}`, hadamardLength(c.dInner)),
        ...(c.mamba2 ? {} : { xProj: await qlin(`x${l}`, false), dtProj: lin(`dt${l}`) }),
        conv: h(`conv${l}`),
        convBias: h(`convBias${l}`),
        dtBias: h(`dtBias${l}`),
        A: h(`A${l}`),
        D: h(`D${l}`),
        ...(c.mamba2 ? { gatedNorm: h(`gatedNorm${l}`) } : {}),
      });
    }
    const head = lin('head');
    let embed: Tensor;
    if (c.tied) {
      embed = (packed.head as PackedLinear).panels;
    } else {
      const t = (this.#host.embed as Tensor).cast(c.act);
      embed = on(t);
    }
    return {
      model: {
        mamba2: c.mamba2,
        act: c.act,
        residualFp32: c.residualFp32,
        dModel: c.dModel,
        dInner: c.dInner,
        dState: c.dState,
        dtRank: c.dtRank,
        nheads: c.nheads,
        headdim: c.headdim,
        ngroups: c.ngroups,
        convWidth: c.convWidth,
        vocab: c.vocab,
        eps: 1e-5,
        ...(c.dtLimit ? { dtLimit: c.dtLimit } : {}),
        layers,
        normF: h('normF'),
        head,
        embed,
        embedPacked: c.tied,
      },
      keep,
    };
  }

  /** Random initial states (host): conv (B, convDim, W - 1 + extra), ssm per layer. */
  states(batch: number, seed: number, extra = 0): { conv: Tensor[]; ssm: Tensor[] } {
    const c = this.cfg;
    const rng = new Rng(seed);
    const convDim = c.mamba2 ? c.dInner + 2 * c.ngroups * c.dState : c.dInner;
    const conv: Tensor[] = [];
    const ssm: Tensor[] = [];
    for (let l = 0; l < c.layers; l++) {
      conv.push(randTensor([batch, convDim, c.convWidth - 1 + extra], 'float32', () => 0.5 * rng.normal()).t);
      const shape = c.mamba2 ? [batch, c.nheads, c.headdim, c.dState] : [batch, c.dInner, c.dState];
      ssm.push(randTensor(shape, 'float32', () => 0.5 * rng.normal()).t);
    }
    return { conv, ssm };
  }
}

const MAMBA1: TinyConfig = {
  mamba2: false,
  act: 'float32',
  residualFp32: true,
  dModel: 48,
  dInner: 96,
  dState: 16,
  dtRank: 6,
  nheads: 0,
  headdim: 0,
  ngroups: 1,
  convWidth: 4,
  vocab: 100,
  layers: 3,
  tied: false,
  bias: true,
};

const MAMBA2: TinyConfig = {
  mamba2: true,
  act: 'float32',
  residualFp32: true,
  dModel: 64,
  dInner: 128,
  dState: 16,
  dtRank: 0,
  nheads: 8,
  headdim: 16,
  ngroups: 2,
  convWidth: 4,
  vocab: 77,
  layers: 2,
  dtLimit: [0.001, 0.5],
  tied: true,
  bias: false,
};

// The variants of the CUDA step the environment selects; the first is the default.
const VARIANTS: Record<string, Record<string, string | undefined>> = {
  'graph, fused, pdl': {},
  'graph, fused, no pdl': { SSMKIT_CUDA_PDL: '0' },
  'no graph, fused': { SSMKIT_CUDA_GRAPH: '0' },
  'graph, composed': { SSMKIT_CUDA_DECODE_FUSED: '0' },
  'no graph, composed': { SSMKIT_CUDA_GRAPH: '0', SSMKIT_CUDA_DECODE_FUSED: '0' },
  // dt_proj's state update a thread a column instead of eight lanes a column (where d_state is 8 or 16).
  'graph, fused, column update': { SSMKIT_CUDA_SSU_BLOCK: '0' },
};

describe('the fused decode step on CUDA', () => {
  if (!ON_CUDA) {
    it.skip(`skipped: ${SKIP_REASON}`, () => {});
    return;
  }
  for (const [name, cfg] of [
    ['mamba f32', MAMBA1],
    ['mamba bf16 tied, residual bf16', { ...MAMBA1, act: 'bfloat16', tied: true, residualFp32: false, bias: false }],
    ['mamba2 f32 limited dt', MAMBA2],
    ['mamba2 bf16 open dt', { ...MAMBA2, act: 'bfloat16', dtLimit: undefined, ngroups: 1, tied: false }],
    ['mamba2 f32 dstate 20, wide conv state', { ...MAMBA2, dState: 20, convWidth: 3, layers: 1 }],
    // dt_proj's state update: chunks of 8 states and a 4-state tail (12), scalar states (5).
    ['mamba f32 dstate 12', { ...MAMBA1, dState: 12, layers: 2 }],
    ['mamba bf16 dstate 5', { ...MAMBA1, act: 'bfloat16', dState: 5, layers: 1 }],
    // The block-wide update at one state a lane (8); 32 takes a thread a column (the block form has one
    // and two states a lane).
    ['mamba f32 dstate 8', { ...MAMBA1, dState: 8, layers: 1 }],
    ['mamba bf16 dstate 32', { ...MAMBA1, act: 'bfloat16', dState: 32, layers: 1 }],
    // Quantized layers run composed, on the quantization family's GEMMs (captured: on weights the step
    // unpacked once; uncaptured: on the packed ones).
    ['mamba f32 w8a8', { ...MAMBA1, quant: 'w8a8' }],
    ['mamba bf16 w4a8', { ...MAMBA1, act: 'bfloat16', quant: 'w4a8' }],
    ['mamba2 bf16 w4a16', { ...MAMBA2, act: 'bfloat16', quant: 'w4a16' }],
  ] as [string, TinyConfig][]) {
    // Batch 70 runs the composed sequence (the fused one takes at most 64 rows) on the GEMM kernels.
    for (const batch of cfg.quant ? [1, 3] : [1, 3, 20, 70]) {
      it(`${name}, batch ${batch}: every variant against the CPU step; graph and no graph bit for bit`, async () => {
        const tiny = new TinyModel(cfg, name.length * 13 + batch);
        const cpu = await tiny.desc('cpu');
        const dev = await tiny.desc(DEV);
        const planC = createDecodePlan(cpu.model);
        const planD = createDecodePlan(dev.model);
        const extra = name.includes('wide') ? 2 : 0;
        const init = tiny.states(batch, batch * 3 + 1, extra);
        const steps = 4;
        const rng = new Rng(batch * 101);
        const ids = Array.from({ length: steps }, () => Int32Array.from({ length: batch }, () => rng.int(0, cfg.vocab - 1)));
        // The CPU step.
        const cst = { conv: init.conv.map((t) => t.toSync('cpu')), ssm: init.ssm.map((t) => t.toSync('cpu')) };
        const cpuLogits: Float64Array[] = [];
        const bindC = bindDecodeStates(cst.conv, cst.ssm);
        for (const s of ids) {
          const lg = Tensor.empty([batch, cfg.vocab], 'float32');
          decodeStepSync(planC, bindC, new Tensor('int32', s, [batch]), lg);
          cpuLogits.push(host(lg));
        }
        // Quantized activations: an input within rounding of a step boundary may land one int8 step apart.
        const tol = cfg.act === 'float32' && !cfg.quant ? { rtol: 2e-3, atol: 2e-3 } : undefined;
        const results: Record<string, Float64Array[]> = {};
        for (const [variant, env] of Object.entries(VARIANTS)) {
          const dst = { conv: init.conv.map((t) => t.toSync(DEV)), ssm: init.ssm.map((t) => t.toSync(DEV)) };
          const bindD = bindDecodeStates(dst.conv, dst.ssm);
          const got: Float64Array[] = [];
          withEnvSync(env, () => {
            for (const s of ids) {
              const lg = poisoned([batch, cfg.vocab], 'float32');
              decodeStepSync(planD, bindD, new Tensor('int32', s, [batch]).toSync(DEV), lg);
              got.push(host(lg));
            }
          });
          results[variant] = got;
          got.forEach((l, i) => {
            const label = `${name} B ${batch} ${variant} step ${i}`;
            if (tol) assertClose(l, cpuLogits[i] as Float64Array, tol, label);
            else expect(relL2(l, cpuLogits[i] as Float64Array), label).toBeLessThan(3e-2);
          });
          dst.ssm.forEach((t, l) => {
            const label = `${name} B ${batch} ${variant} ssm state ${l}`;
            if (tol) assertClose(host(t), host(cst.ssm[l] as Tensor), tol, label);
            else expect(relL2(host(t), host(cst.ssm[l] as Tensor)), label).toBeLessThan(3e-2);
          });
          dst.conv.forEach((t, l) => {
            const label = `${name} B ${batch} ${variant} conv state ${l}`;
            if (tol) assertClose(host(t), host(cst.conv[l] as Tensor), tol, label);
            else expect(relL2(host(t), host(cst.conv[l] as Tensor)), label).toBeLessThan(2e-2);
          });
        }
        // The same kernels captured or not: identical results.
        const pairs: [string, string][] = [
          ['graph, fused, pdl', 'no graph, fused'],
          ['graph, fused, pdl', 'graph, fused, no pdl'],
          ['graph, composed', 'no graph, composed'],
          ['graph, fused, pdl', 'graph, fused, column update'],
        ];
        for (const [a, b] of pairs) {
          (results[a] as Float64Array[]).forEach((l, i) => {
            assertEqual(l, (results[b] as Float64Array[])[i] as Float64Array, `${name} B ${batch}: ${a} vs ${b} step ${i}`);
          });
        }
        for (const t of [...cpu.keep, ...dev.keep]) t.dispose();
      });
    }
  }

  // Quantized layers at Mamba-2.8B's widths: in_proj has 10240 columns, more than the quantization
  // family's split-K GEMM keeps counters for in its first 256 bytes of workspace, between calls of fewer
  // columns (x_proj, out_proj), with K split over blocks and groups of 128 along K (the tiny models
  // above have one group and no split). Several steps, so that every GEMM runs after the others.
  // 'none' runs the fused step at these widths (2 layers): every gemv's blocks stream equal ranges of
  // rows that cross panel boundaries (in_proj 2-3 blocks a panel, out_proj 7-8), each panel's last block
  // summing the partials and, in out_proj, storing its residual sums of squares, which the next
  // in_proj's and the head's norm prologues add up. 'none, residual bf16': out_proj's norm tail, run by
  // the block that finalizes the last of the panels, blocks finalizing none, one or several of them.
  const WIDE: TinyConfig = {
    ...MAMBA1,
    act: 'bfloat16',
    dModel: 2560,
    dInner: 5120,
    dtRank: 160,
    vocab: 1000,
    layers: 1,
    bias: false,
  };
  for (const quant of ['none', 'none, residual bf16', 'w4a16', 'w8a8', 'w4a8'] as const) {
    it(`mamba bf16 ${quant} at Mamba-2.8B widths, batch 1, 3 and 20: the step against the CPU step, graph and no graph`, async () => {
      const cfg: TinyConfig =
        quant === 'none'
          ? { ...WIDE, layers: 2 }
          : quant === 'none, residual bf16'
            ? { ...WIDE, layers: 2, residualFp32: false }
            : { ...WIDE, quant };
      const tiny = new TinyModel(cfg, quant.length * 31);
      const cpu = await tiny.desc('cpu');
      const dev = await tiny.desc(DEV);
      const planC = createDecodePlan(cpu.model);
      const planD = createDecodePlan(dev.model);
      for (const batch of [1, 3, 20]) {
        const init = tiny.states(batch, batch + 5);
        const rng = new Rng(batch * 7);
        const ids = Array.from({ length: 3 }, () => Int32Array.from({ length: batch }, () => rng.int(0, cfg.vocab - 1)));
        const cst = { conv: init.conv.map((t) => t.toSync('cpu')), ssm: init.ssm.map((t) => t.toSync('cpu')) };
        const bindC = bindDecodeStates(cst.conv, cst.ssm);
        const want: Float64Array[] = [];
        for (const s of ids) {
          const lg = Tensor.empty([batch, cfg.vocab], 'float32');
          decodeStepSync(planC, bindC, new Tensor('int32', s, [batch]), lg);
          want.push(host(lg));
        }
        const results: Record<string, Float64Array[]> = {};
        for (const [variant, env] of Object.entries({
          graph: {},
          'no graph': { SSMKIT_CUDA_GRAPH: '0' },
        } as Record<string, Record<string, string | undefined>>)) {
          const dst = { conv: init.conv.map((t) => t.toSync(DEV)), ssm: init.ssm.map((t) => t.toSync(DEV)) };
          const bindD = bindDecodeStates(dst.conv, dst.ssm);
          const got: Float64Array[] = [];
          withEnvSync(env, () => {
            for (const s of ids) {
              const lg = poisoned([batch, cfg.vocab], 'float32');
              decodeStepSync(planD, bindD, new Tensor('int32', s, [batch]).toSync(DEV), lg);
              got.push(host(lg));
            }
          });
          results[variant] = got;
          got.forEach((l, i) => {
            const err = relL2(l, want[i] as Float64Array);
            expect(err, `${quant} B ${batch} ${variant} step ${i}: relative L2 error ${err}`).toBeLessThan(3e-2);
          });
          dst.ssm.forEach((t, l) => {
            expect(relL2(host(t), host(cst.ssm[l] as Tensor)), `${quant} B ${batch} ${variant} ssm state ${l}`).toBeLessThan(
              3e-2,
            );
          });
          for (const t of [...dst.conv, ...dst.ssm]) t.dispose();
        }
        (results.graph as Float64Array[]).forEach((l, i) => {
          assertEqual(
            l,
            (results['no graph'] as Float64Array[])[i] as Float64Array,
            `${quant} B ${batch}: graph vs no graph step ${i}`,
          );
        });
      }
      for (const t of [...cpu.keep, ...dev.keep]) t.dispose();
    }, 300_000);
  }

  it('sampling in the step: host draws and tokens, greedy and filtered, as the reference picks from its logits', async () => {
    const cfg = { ...MAMBA1, vocab: 3001 };
    const tiny = new TinyModel(cfg, 5);
    const dev = await tiny.desc(DEV);
    const plan = createDecodePlan(dev.model);
    const batch = 4;
    const init = tiny.states(batch, 7);
    const st = bindDecodeStates(
      init.conv.map((t) => t.toSync(DEV)),
      init.ssm.map((t) => t.toSync(DEV)),
    );
    const rng = new Rng(17);
    for (const [temperature, topK, topP] of [
      [0, 0, 1],
      [0.8, 0, 1],
      [1, 20, 0.9],
      [1.2, 0, 0.7],
    ] as const) {
      const ids = new Tensor(
        'int32',
        Int32Array.from({ length: batch }, () => rng.int(0, cfg.vocab - 1)),
        [batch],
      ).toSync(DEV);
      const draws = new Float64Array(batch).map(() => rng.uniform());
      const lg = poisoned([batch, cfg.vocab], 'float32');
      const picked = decodeStepSync(plan, st, ids, lg, {
        temperature,
        topK,
        topP,
        draws: new Tensor('float64', draws, [batch]),
      }) as Tensor;
      expect(picked.device).toBe(DEV);
      const got = picked.dataSync() as Int32Array;
      const l = Float32Array.from(host(lg));
      for (let b = 0; b < batch; b++) {
        const row = l.subarray(b * cfg.vocab, (b + 1) * cfg.vocab);
        const ok = new Set<number>();
        for (const du of [-1e-6, 0, 1e-6]) {
          for (const dp of topP < 1 ? [-1e-6, 0, 1e-6] : [0])
            ok.add(refSample(row, (draws[b] as number) + du, temperature, topK, topP + dp));
        }
        expect(ok.has(got[b] as number), `T ${temperature} k ${topK} p ${topP} row ${b}: got ${got[b]}`).toBe(true);
      }
    }
    for (const t of dev.keep) t.dispose();
  });

  it('checks its arguments: logits on the host, states on the host', async () => {
    const tiny = new TinyModel({ ...MAMBA1, layers: 1 }, 3);
    const dev = await tiny.desc(DEV);
    const plan = createDecodePlan(dev.model);
    const init = tiny.states(1, 1);
    const st = bindDecodeStates(
      init.conv.map((t) => t.toSync(DEV)),
      init.ssm.map((t) => t.toSync(DEV)),
    );
    const ids = new Tensor('int32', [1], [1]).toSync(DEV);
    expect(() => decodeStepSync(plan, st, ids, Tensor.empty([1, MAMBA1.vocab], 'float32'))).toThrow(/logits/);
    const hostStates = bindDecodeStates(init.conv, init.ssm);
    expect(() => decodeStepSync(plan, hostStates, ids, Tensor.empty([1, MAMBA1.vocab], 'float32', DEV))).toThrow(/states/);
    for (const t of dev.keep) t.dispose();
  });
});

// ---- the golden models through the fused step -------------------------------------------------------

/** A checkpoint folder's float32 decode plan on `device`, loaded as MambaModel.load reads it. */
async function goldenPlan(dir: string, device: string): Promise<{ model: DecodeModel; keep: { dispose(): void }[] }> {
  const c = normalizeConfig(parseConfigJson(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')));
  const ck = await Checkpoint.open(dir);
  const keep: { dispose(): void }[] = [];
  const f32 = async (name: string): Promise<Tensor> => {
    const t = await ck.read(name);
    const f = t.dtype === 'float32' ? t : t.cast('float32');
    const d = f.toSync(device);
    keep.push(d);
    return d;
  };
  const negExp = async (name: string): Promise<Tensor> => {
    const t = await ck.read(name);
    const v = (t.dtype === 'float32' ? t : t.cast('float32')).dataSync() as Float32Array;
    const d = new Tensor(
      'float32',
      Float32Array.from(v, (a) => -Math.exp(a)),
      t.shape,
    ).toSync(device);
    keep.push(d);
    return d;
  };
  const lin = async (name: string, withBias = true) => {
    const w = (await ck.read(`${name}.weight`)).toSync(device);
    const bias = withBias && ck.has(`${name}.bias`) ? await f32(`${name}.bias`) : undefined;
    const l = await FloatLinear.create(w, bias, 'float32');
    w.dispose();
    keep.push(l);
    return l;
  };
  const mamba2 = c.modelType === 'mamba2';
  const di = c.intermediateSize;
  const convDim = mamba2 ? di + 2 * c.nGroups * c.stateSize : di;
  const layers = [];
  for (let l = 0; l < c.numLayers; l++) {
    const m = `backbone.layers.${l}.mixer`;
    const conv = await f32(`${m}.conv1d.weight`);
    layers.push({
      norm: await f32(`backbone.layers.${l}.norm.weight`),
      inProj: (await lin(`${m}.in_proj`)).decodeLinear(),
      outProj: (await lin(`${m}.out_proj`)).decodeLinear(),
      ...(mamba2
        ? { dtBias: await f32(`${m}.dt_bias`), gatedNorm: await f32(`${m}.norm.weight`) }
        : {
            xProj: (await lin(`${m}.x_proj`)).decodeLinear(),
            // dt_proj's bias goes to the state update as dtBias.
            dtProj: (await lin(`${m}.dt_proj`, false)).decodeLinear(),
            dtBias: await f32(`${m}.dt_proj.bias`),
          }),
      conv: conv.reshape([convDim, c.convKernel]),
      ...(ck.has(`${m}.conv1d.bias`) ? { convBias: await f32(`${m}.conv1d.bias`) } : {}),
      A: await negExp(`${m}.A_log`),
      D: await f32(`${m}.D`),
    });
  }
  const embName = ck.has('backbone.embeddings.weight') ? 'backbone.embeddings.weight' : 'backbone.embedding.weight';
  const tied = c.tieWordEmbeddings || !ck.has('lm_head.weight');
  const head = await lin(tied ? embName.replace(/\.weight$/, '') : 'lm_head');
  const [lo, hi] = c.timeStepLimit;
  return {
    model: {
      mamba2,
      act: 'float32',
      residualFp32: c.residualInFp32,
      dModel: c.hiddenSize,
      dInner: di,
      dState: c.stateSize,
      dtRank: c.timeStepRank,
      nheads: c.numHeads,
      headdim: c.headDim,
      ngroups: c.nGroups,
      convWidth: c.convKernel,
      vocab: c.vocabSize,
      eps: c.eps,
      ...(mamba2 && (lo !== 0 || hi !== Number.POSITIVE_INFINITY) ? { dtLimit: [lo, hi] as [number, number] } : {}),
      layers,
      normF: await f32('backbone.norm_f.weight'),
      head: head.decodeLinear(),
      embed: tied ? head.packed.panels : await f32(embName),
      embedPacked: tied,
    },
    keep,
  };
}

describe('golden models through the fused step on CUDA', () => {
  if (!ON_CUDA) {
    it.skip(`skipped: ${SKIP_REASON}`, () => {});
    return;
  }
  const models = JSON.parse(fs.readFileSync(path.join(GOLDEN_DIR, 'models.json'), 'utf8')) as { dir: string }[];
  for (const g of models) {
    for (const [variant, env] of Object.entries(VARIANTS)) {
      it(`${g.dir} (${variant}): step logits and greedy tokens of the reference`, async () => {
        const dir = path.join(GOLDEN_DIR, g.dir);
        const expected = loadSafetensorsSync(path.join(dir, 'expected.safetensors'));
        const ids = expected.input_ids as Tensor;
        const len = ids.shape[1] as number;
        const prompt = Array.from((ids.dataSync() as Int32Array).subarray(0, len));
        const generated = Array.from(expected.generated_ids?.dataSync() as Int32Array);
        const newTokens = generated.slice(len);
        const stepLogits = toF64(expected.step_logits as Tensor);
        const vocab = (expected.logits as Tensor).shape[2] as number;
        // Prefill through the runner on CUDA, then the fused step from its state.
        const runner = await MambaModel.load(dir, { device: DEV, dtype: 'float32' });
        const { state } = await runner.forward([prompt]);
        const { model, keep } = await goldenPlan(dir, DEV);
        const plan = createDecodePlan(model);
        const bound = bindDecodeStates(state.conv, state.ssm);
        const tol = { rtol: 1e-3, atol: 1e-3 };
        const picks: number[] = [];
        withEnvSync(env, () => {
          for (let i = 1; i < newTokens.length; i++) {
            const lg = poisoned([1, vocab], 'float32');
            const tok = decodeStepSync(plan, bound, new Tensor('int32', [newTokens[i - 1] as number], [1]).toSync(DEV), lg, {
              temperature: 0,
            }) as Tensor;
            picks.push((tok.dataSync() as Int32Array)[0] as number);
            assertClose(host(lg), stepLogits.subarray(i * vocab, (i + 1) * vocab), tol, `${g.dir} ${variant} step ${i}`);
          }
        });
        expect(picks).toEqual(newTokens.slice(1));
        state.dispose();
        runner.dispose();
        for (const t of keep) t.dispose();
      });
    }
  }
});
