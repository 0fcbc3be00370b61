// CUDA-specific checks of the FFT convolution family: every op and option on the CUDA backend against
// the float64 references and against our CPU backend, with the device memory the outputs land in
// poisoned with NaN first, on the shapes that stress the kernels' index arithmetic: lengths around
// every FFT size the kernels switch at (n = nextpow2(L + Lk - 1): direct up to 32, fused 64..16384,
// two halves at 32768, four-step 2^16..2^21, radix-16 passes beyond), odd lengths (tails of the packed
// pairs), size-1 dimensions, seqlen 1 and many rows.
// The family's own tests (fft_conv, s4d_kernel, ssm_conv) also run on cuda:0 through testDevices().
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromNumbers } from '../dist/cjs/dtype.js';
import {
  backend,
  fftConv,
  fftConvSync,
  s4dKernel,
  s4dKernelSync,
  ssmConv,
  ssmConvSync,
  synchronizeSync,
  Tensor,
} from '../dist/cjs/index.js';
import { type FftConvRefArgs, fftConvRefAt, randomModes, s4dKernelRef, ssmRecurrenceRef } from './ref/fft';
import {
  assertClose,
  DTYPES_FLOAT,
  type FloatDType,
  goldenCases,
  loadGolden,
  Rng,
  randTensor,
  type Tolerance,
  toF64,
} from './util';

const DEVICE = 'cuda:0';
const info = backend();
const NO_CUDA = info.name !== 'cuda';
const SKIP_REASON = `needs the CUDA backend (loaded: ${info.name}${info.fallbackReason ? `, ${info.fallbackReason}` : ''})`;

// Against the float64 reference; the CPU backend is held to the same table (both are float32 inside,
// and 16-bit outputs may differ by one rounding).
const TOL: Record<FloatDType, Tolerance> = {
  float32: { rtol: 2e-5, atol: 2e-5 },
  float16: { rtol: 1e-3, atol: 1e-3 },
  bfloat16: { rtol: 8e-3, atol: 8e-3 },
};
const SSM_TOL: Record<FloatDType, Tolerance> = {
  float32: { rtol: 5e-5, atol: 2e-5 },
  float16: { rtol: 1e-3, atol: 1e-3 },
  bfloat16: { rtol: 8e-3, atol: 8e-3 },
};
const STATE_TOL: Tolerance = { rtol: 5e-5, atol: 2e-5 };
const S4D_TOL: Tolerance = { rtol: 5e-6, atol: 1e-6 };

/**
 * Fills and frees device buffers of `shape` with NaN, so that the next allocations of that size (the
 * op's outputs, from the same stream-ordered pool) most likely start as NaN: an element the kernels
 * do not write then shows up as NaN where the reference is finite.
 */
function poison(shape: number[], dtype: FloatDType | 'float32', copies = 3): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const nan = new Tensor(dtype, fromNumbers(dtype, new Float64Array(n).fill(Number.NaN)) as never, shape);
  const held = Array.from({ length: copies }, () => nan.toSync(DEVICE));
  synchronizeSync(DEVICE);
  for (const t of held.reverse()) t.dispose();
}

/** Sets an environment variable for the enclosing describe's tests and restores it after them. */
function envForSuite(name: string, value: string): void {
  let before: string | undefined;
  beforeAll(() => {
    before = process.env[name];
    process.env[name] = value;
  });
  afterAll(() => {
    if (before === undefined) delete process.env[name];
    else process.env[name] = before;
  });
}

/** Asserts that no element is NaN where the reference is finite (an unwritten, poisoned output). */
function assertWritten(got: ArrayLike<number>, ref: ArrayLike<number>, label: string): void {
  for (let i = 0; i < ref.length; i++) {
    if (Number.isNaN(got[i]) && Number.isFinite(ref[i] as number)) {
      expect.fail(`${label}: element ${i} is NaN (never written?) where the reference is ${ref[i]}`);
    }
  }
}

interface ConvCase {
  dtype: FloatDType;
  batch: number;
  H: number;
  L: number;
  Lk: number;
  D?: boolean;
  gelu?: boolean;
  pregate?: boolean;
  postgate?: boolean;
  bidirectional?: boolean;
  /** u's values are standard normal times this (default 1); outputs are compared divided by it. */
  uScale?: number;
  seed: number;
}

function convName(c: ConvCase): string {
  const flags = ['D', 'gelu', 'pregate', 'postgate', 'bidirectional'].filter((f) => c[f as keyof ConvCase]);
  return `${c.dtype} [${c.batch}, ${c.H}, ${c.L}] Lk ${c.Lk}${flags.length ? ` ${flags.join(' ')}` : ''}`;
}

/** Output positions checked against the direct float64 sum: all of a short row, samples of a long one. */
function positions(L: number, rng: Rng): number[] {
  if (L <= 1200) return Array.from({ length: L }, (_, i) => i);
  const s = new Set<number>();
  for (let i = 0; i < 40; i++) {
    s.add(i);
    s.add(L - 1 - i);
    s.add(Math.floor(L / 2) - 20 + i);
  }
  for (let i = 0; i < 100; i++) s.add(rng.int(0, L - 1));
  return [...s].sort((a, b) => a - b);
}

async function runConv(c: ConvCase, sync = false): Promise<void> {
  const rng = new Rng(c.seed);
  const { dtype, batch, H, L, Lk } = c;
  const kScale = 1 / Math.sqrt(Lk * (c.bidirectional ? 2 : 1));
  const uScale = c.uScale ?? 1;
  const u = randTensor([batch, H, L], dtype, () => rng.normal() * uScale);
  const k = randTensor(c.bidirectional ? [H, 2, Lk] : [H, Lk], 'float32', () => rng.normal() * kScale);
  const D = c.D ? randTensor([H], 'float32', () => rng.normal()) : undefined;
  const pre = c.pregate ? randTensor([batch, H, L], dtype, () => rng.normal()) : undefined;
  const post = c.postgate ? randTensor([batch, H, L], dtype, () => rng.normal()) : undefined;
  const opts = (device: string) => ({
    D: D?.t.toSync(device),
    gelu: c.gelu,
    pregate: pre?.t.toSync(device),
    postgate: post?.t.toSync(device),
    bidirectional: c.bidirectional,
  });
  const ud = u.t.toSync(DEVICE);
  const kd = k.t.toSync(DEVICE);
  const od = opts(DEVICE);
  poison([batch, H, L], dtype);
  const out = sync ? fftConvSync(ud, kd, od) : await fftConv(ud, kd, od);
  expect(out.device).toBe(DEVICE);
  expect(out.dtype).toBe(dtype);
  expect(out.shape).toEqual([batch, H, L]);
  const got = toF64(out.toSync('cpu')).map((x) => x / uScale);
  const cpu = toF64(fftConvSync(u.t, k.t, opts('cpu'))).map((x) => x / uScale);
  const label = `fftConv ${convName(c)}${c.uScale ? ` u x ${c.uScale}` : ''}${sync ? ' (sync)' : ''}`;
  assertWritten(got, cpu, label);
  assertClose(got, cpu, TOL[dtype], `${label}: cuda vs cpu`);
  const ref: FftConvRefArgs = {
    u: u.v,
    k: k.v,
    batch,
    H,
    L,
    Lk,
    D: D?.v,
    pregate: pre?.v,
    postgate: post?.v,
    gelu: c.gelu,
    bidirectional: c.bidirectional,
  };
  const pos = positions(L, rng);
  const rows = Math.min(batch * H, 6);
  const a: number[] = [];
  const e: number[] = [];
  for (let i = 0; i < rows; i++) {
    const r = Math.floor((i * (batch * H - 1)) / Math.max(1, rows - 1));
    for (const t of pos) {
      a.push(got[r * L + t] as number);
      e.push(fftConvRefAt(ref, r, t) / uScale);
    }
  }
  assertClose(a, e, TOL[dtype], `${label}: cuda vs float64`);
  for (const t of [ud, kd, out, ...Object.values(od)]) {
    if (t instanceof Tensor) t.dispose();
  }
}

describe.skipIf(NO_CUDA)(`fftConv on CUDA (${NO_CUDA ? SKIP_REASON : info.device})`, () => {
  // Lengths around every switch of the fused kernel (n = nextpow2(L + Lk - 1): 32 is the direct path,
  // 64..32768 fused with 2 to 4 passes, beyond it the multi-pass path), odd ones for the packed tails.
  const lengths = [1, 2, 3, 16, 17, 31, 32, 33, 63, 64, 65, 127, 255, 256, 257, 511, 513, 1000, 1023, 1025, 2047];
  const lengthsLong = [4095, 4097, 8191, 8192, 16383, 16384, 16385, 20000];
  const flagSets: Omit<ConvCase, 'dtype' | 'batch' | 'H' | 'L' | 'Lk' | 'seed'>[] = [
    {},
    { D: true },
    { gelu: true, D: true },
    { pregate: true },
    { postgate: true },
    { pregate: true, postgate: true, gelu: true },
    { bidirectional: true },
    { bidirectional: true, D: true, gelu: true, pregate: true, postgate: true },
  ];
  let seed = 1;
  describe('every dtype x length, rotating option sets and filter lengths', () => {
    for (const dtype of DTYPES_FLOAT) {
      for (const L of lengths) {
        const flags = flagSets[seed % flagSets.length];
        const Lk = [L, Math.max(1, Math.ceil(L / 3)), Math.min(L, 5)][seed % 3] as number;
        const c: ConvCase = { dtype, batch: 2, H: 3, L, Lk, ...flags, seed: seed++ };
        it(convName(c), () => runConv(c));
      }
    }
  });

  describe('every dtype x option set on a fused length with a tail (L = 1001)', () => {
    for (const dtype of DTYPES_FLOAT) {
      for (const flags of flagSets) {
        const c: ConvCase = { dtype, batch: 2, H: 3, L: 1001, Lk: 1001, ...flags, seed: seed++ };
        it(convName(c), () => runConv(c));
      }
    }
  });

  describe('long rows: the largest fused sizes and the multi-pass path', () => {
    for (const L of lengthsLong) {
      for (const dtype of ['float32', 'bfloat16'] as const) {
        const flags = flagSets[seed % flagSets.length];
        const c: ConvCase = { dtype, batch: 1, H: 2, L, Lk: L, ...flags, seed: seed++ };
        it(convName(c), () => runConv(c));
      }
    }
    const c: ConvCase = { dtype: 'float16', batch: 1, H: 2, L: 70001, Lk: 3001, D: true, bidirectional: true, seed: 77 };
    it(convName(c), () => runConv(c));
    const d: ConvCase = { dtype: 'float32', batch: 1, H: 1, L: 65536, Lk: 65536, D: true, gelu: true, seed: 78 };
    it(convName(d), () => runConv(d));
    // n = 2^21 (four-step's largest) and 2^22 (radix-16 passes).
    const e: ConvCase = { dtype: 'bfloat16', batch: 1, H: 2, L: 1048576, Lk: 5, pregate: true, postgate: true, seed: 79 };
    it(convName(e), () => runConv(e));
    const f: ConvCase = { dtype: 'float32', batch: 1, H: 1, L: 2097152, Lk: 3, D: true, bidirectional: true, seed: 80 };
    it(convName(f), () => runConv(f));
  });

  describe('every kernel variant of the long rows in float16, odd H, batch 1 and batch > 1', () => {
    const cases: ConvCase[] = [
      // m = 4096: three radix-16 passes, the mirror groups on lanes l and l ^ 16; m = 8192: four passes
      // (16 values a thread). Batch > 1 with H > 1: the rows of one filter run next to each other.
      { dtype: 'float16', batch: 3, H: 3, L: 3001, Lk: 3001, D: true, gelu: true, pregate: true, postgate: true, seed: 300 },
      {
        dtype: 'bfloat16',
        batch: 2,
        H: 5,
        L: 4096,
        Lk: 4096,
        bidirectional: true,
        D: true,
        gelu: true,
        postgate: true,
        seed: 309,
      },
      { dtype: 'float32', batch: 3, H: 7, L: 2500, Lk: 1700, pregate: true, seed: 310 },
      { dtype: 'float16', batch: 1, H: 5, L: 8000, Lk: 8000, bidirectional: true, postgate: true, seed: 301 },
      { dtype: 'bfloat16', batch: 2, H: 3, L: 6000, Lk: 17, D: true, pregate: true, seed: 302 },
      // m = 16384 as two 8192-point halves (L <= m), and the 16384-point kernel (L > m, short filter).
      { dtype: 'float16', batch: 2, H: 1, L: 12001, Lk: 12001, D: true, gelu: true, pregate: true, seed: 303 },
      { dtype: 'float16', batch: 3, H: 2, L: 16000, Lk: 9000, D: true, pregate: true, seed: 311 },
      { dtype: 'float32', batch: 1, H: 3, L: 20000, Lk: 5000, bidirectional: true, D: true, postgate: true, seed: 304 },
      { dtype: 'bfloat16', batch: 1, H: 1, L: 30001, Lk: 2, gelu: true, seed: 305 },
      // Four-step rows of 512, 1024 and 2048 points (2, 3 and 3 passes; 128 and 4096 above).
      { dtype: 'float16', batch: 1, H: 1, L: 150001, Lk: 3, D: true, postgate: true, seed: 306 },
      { dtype: 'float32', batch: 1, H: 1, L: 300000, Lk: 7, bidirectional: true, gelu: true, seed: 307 },
      { dtype: 'bfloat16', batch: 1, H: 1, L: 600001, Lk: 2, pregate: true, D: true, seed: 308 },
    ];
    for (const c of cases) it(convName(c), () => runConv(c));
  });

  // bfloat16 rows of n = 2048, 8192 and 32768 run on the tensor cores (fft_conv_tc_kernel, fft_conv_tcr_kernel):
  // rows of L <= n / 2 take one k step and half the output tiles, longer ones all; rows filter-major
  // (batch > 1, H > 1, row counts that are not multiples of four); odd L (pairs loaded one by one); each
  // row scaled into float16's range (u of 1e30 and 1e-30, whose products would overflow or flush in
  // float16 unscaled).
  describe('bfloat16 rows of n = 2048, 8192 and 32768 (the tensor-core kernels)', () => {
    const cases: ConvCase[] = [
      { dtype: 'bfloat16', batch: 3, H: 5, L: 1024, Lk: 1024, D: true, gelu: true, pregate: true, postgate: true, seed: 500 },
      { dtype: 'bfloat16', batch: 1, H: 3, L: 2000, Lk: 40, D: true, seed: 501 },
      { dtype: 'bfloat16', batch: 2, H: 3, L: 1500, Lk: 549, bidirectional: true, D: true, seed: 502 },
      { dtype: 'bfloat16', batch: 1, H: 7, L: 1025, Lk: 3, postgate: true, seed: 503 },
      { dtype: 'bfloat16', batch: 2, H: 9, L: 700, Lk: 700, D: true, seed: 504 },
      { dtype: 'bfloat16', batch: 2, H: 2, L: 1024, Lk: 1024, D: true, uScale: 1e30, seed: 505 },
      { dtype: 'bfloat16', batch: 2, H: 2, L: 1800, Lk: 200, D: true, uScale: 1e-30, seed: 506 },
      { dtype: 'bfloat16', batch: 3, H: 5, L: 4096, Lk: 4096, D: true, gelu: true, pregate: true, postgate: true, seed: 507 },
      { dtype: 'bfloat16', batch: 1, H: 3, L: 8000, Lk: 50, D: true, seed: 508 },
      { dtype: 'bfloat16', batch: 2, H: 3, L: 4095, Lk: 4095, bidirectional: true, postgate: true, seed: 509 },
      { dtype: 'bfloat16', batch: 1, H: 2, L: 3000, Lk: 3000, D: true, uScale: 1e30, seed: 510 },
      { dtype: 'bfloat16', batch: 2, H: 1, L: 5000, Lk: 900, D: true, uScale: 1e-30, seed: 511 },
      { dtype: 'bfloat16', batch: 2, H: 3, L: 16384, Lk: 16384, D: true, gelu: true, pregate: true, postgate: true, seed: 512 },
      { dtype: 'bfloat16', batch: 1, H: 2, L: 20000, Lk: 100, bidirectional: true, D: true, seed: 513 },
      { dtype: 'bfloat16', batch: 3, H: 1, L: 9001, Lk: 9001, D: true, uScale: 1e30, seed: 514 },
    ];
    for (const c of cases) it(`${convName(c)}${c.uScale ? ` u x ${c.uScale}` : ''}`, () => runConv(c));
  });

  describe('size-1 dimensions, seqlen 1, many rows', () => {
    const cases: ConvCase[] = [
      { dtype: 'float32', batch: 1, H: 1, L: 1, Lk: 1, D: true, seed: 90 },
      { dtype: 'bfloat16', batch: 5, H: 1, L: 1, Lk: 1, gelu: true, postgate: true, seed: 91 },
      { dtype: 'float16', batch: 1, H: 7, L: 2, Lk: 2, bidirectional: true, seed: 92 },
      { dtype: 'float32', batch: 1, H: 1, L: 4096, Lk: 1, D: true, seed: 93 },
      { dtype: 'float32', batch: 3, H: 1, L: 300, Lk: 300, pregate: true, seed: 94 },
      // More rows than a block holds many times over, for the row tails of multi-row blocks.
      { dtype: 'bfloat16', batch: 1, H: 20001, L: 40, Lk: 40, D: true, seed: 95 },
      { dtype: 'float32', batch: 3, H: 4099, L: 9, Lk: 9, gelu: true, seed: 96 },
      { dtype: 'float16', batch: 2, H: 1001, L: 200, Lk: 200, postgate: true, seed: 97 },
    ];
    for (const c of cases) it(convName(c), () => runConv(c));
  });

  it('the sync entry point on a fused and a multi-pass size', async () => {
    await runConv({ dtype: 'bfloat16', batch: 2, H: 3, L: 3000, Lk: 3000, D: true, gelu: true, seed: 200 }, true);
    await runConv({ dtype: 'float32', batch: 1, H: 1, L: 17000, Lk: 17000, D: true, seed: 201 }, true);
  });

  // The conv kernels start while the filters' kernel still runs (programmatic dependent launch on
  // sm_90) and must read the spectra only once it has finished. Calls queued back to back with their
  // own filters take the spectra's scratch from the same pool, so a spectrum read too early would be
  // the previous call's (or whatever the pool held) and the output the wrong filter's.
  it('calls queued back to back, each with its own filter (fused, four-pass and split kernels)', () => {
    const shapes: [number, number, number][] = [
      [2, 768, 1000],
      [1, 256, 3000],
      [1, 64, 12001],
    ];
    for (const [batch, H, L] of shapes) {
      const rng = new Rng(400 + L);
      const calls = Array.from({ length: 4 }, () => ({
        u: randTensor([batch, H, L], 'bfloat16', () => rng.normal()),
        k: randTensor([H, L], 'float32', () => rng.normal() / Math.sqrt(L)),
        D: randTensor([H], 'float32', () => rng.normal()),
      }));
      const dev = calls.map((c) => ({ u: c.u.t.toSync(DEVICE), k: c.k.t.toSync(DEVICE), D: c.D.t.toSync(DEVICE) }));
      synchronizeSync(DEVICE);
      const outs = dev.map((c) => fftConvSync(c.u, c.k, { D: c.D }));
      calls.forEach((c, i) => {
        const got = toF64((outs[i] as Tensor).toSync('cpu'));
        const cpu = toF64(fftConvSync(c.u.t, c.k.t, { D: c.D.t }));
        assertWritten(got, cpu, `call ${i}`);
        assertClose(got, cpu, TOL.bfloat16, `call ${i} of ${calls.length}, [${batch}, ${H}, ${L}]: cuda vs cpu`);
      });
      for (const t of [...outs, ...dev.flatMap((c) => [c.u, c.k, c.D])]) t.dispose();
    }
  });

  for (const g of goldenCases('fftConv')) {
    it(`golden ${g.file}`, async () => {
      const t = loadGolden(g.file);
      const on = (x: Tensor | undefined) => x?.toSync(DEVICE);
      const u = t.u as Tensor;
      poison([...u.shape], 'float32');
      const out = await fftConv(on(u) as Tensor, on(t.k) as Tensor, {
        D: on(t.D),
        pregate: on(t.pregate),
        postgate: on(t.postgate),
        gelu: g.options.gelu as boolean | undefined,
        bidirectional: g.options.bidirectional as boolean | undefined,
      });
      const got = toF64(out.toSync('cpu'));
      const want = toF64(t.out as Tensor);
      assertWritten(got, want, g.file);
      assertClose(got, want, TOL.float32, g.file);
    });
  }
});

describe.skipIf(NO_CUDA)(`s4dKernel on CUDA (${NO_CUDA ? SKIP_REASON : info.device})`, () => {
  for (const [H, n2, L] of [
    [1, 1, 1],
    [3, 4, 31],
    [2, 32, 33],
    [5, 64, 1000],
    [1, 3, 4097],
    [4, 16, 70000],
  ] as const) {
    it(`[${H}, ${n2}] L ${L}`, async () => {
      const rng = new Rng(H * 1000 + n2 * 10 + L);
      const { logDt, A, C } = randomModes(rng, H, n2, L % 2 ? 'long' : 'mixed');
      const on = (t: Tensor) => t.toSync(DEVICE);
      poison([H, L], 'float32');
      const k = await s4dKernel(on(logDt.t), on(A.t), on(C.t), L);
      expect(k.shape).toEqual([H, L]);
      const got = toF64(k.toSync('cpu'));
      const ref = s4dKernelRef(logDt.v, A.v, C.v, H, n2, L);
      assertWritten(got, ref, 's4dKernel');
      assertClose(got, ref, S4D_TOL, `s4dKernel [${H}, ${n2}] L ${L}: cuda vs float64`);
      const cpu = toF64(s4dKernelSync(logDt.t, A.t, C.t, L));
      assertClose(got, cpu, S4D_TOL, `s4dKernel [${H}, ${n2}] L ${L}: cuda vs cpu`);
    });
  }

  for (const g of goldenCases('s4dKernel')) {
    it(`golden ${g.file}`, () => {
      const t = loadGolden(g.file);
      const on = (x: Tensor) => x.toSync(DEVICE);
      const k = s4dKernelSync(on(t.logDt as Tensor), on(t.A as Tensor), on(t.C as Tensor), g.options.L as number);
      assertClose(toF64(k.toSync('cpu')), toF64(t.k as Tensor), S4D_TOL, g.file);
    });
  }
});

interface SsmCase {
  dtype: FloatDType;
  batch: number;
  H: number;
  L: number;
  n2: number;
  blockSize?: number;
  D?: boolean;
  initialState?: boolean;
  returnLastState?: boolean;
  memory: 'mixed' | 'long';
  seed: number;
}

// Two rows of three channels in blocks of blockSize, with D and the states in and out (the blocked rows
// of the fused kernels).
function blockedSsmCase(dtype: FloatDType, L: number, blockSize: number, seed: number): SsmCase {
  return {
    dtype,
    batch: 2,
    H: 3,
    L,
    n2: 8,
    blockSize,
    D: true,
    initialState: true,
    returnLastState: true,
    memory: 'mixed',
    seed,
  };
}

async function runSsm(c: SsmCase): Promise<void> {
  const rng = new Rng(c.seed);
  const { dtype, batch, H, L, n2 } = c;
  const { logDt, A, C } = randomModes(rng, H, n2, c.memory);
  const u = randTensor([batch, H, L], dtype, () => rng.normal());
  const D = c.D ? randTensor([H], 'float32', () => rng.normal()) : undefined;
  const init = c.initialState ? randTensor([batch, H, n2, 2], 'float32', () => rng.normal()) : undefined;
  const opts = (device: string) => ({
    D: D?.t.toSync(device),
    initialState: init?.t.toSync(device),
    returnLastState: c.returnLastState,
    blockSize: c.blockSize,
  });
  const on = (t: Tensor) => t.toSync(DEVICE);
  poison([batch, H, L], dtype);
  poison([batch, H, n2, 2], 'float32');
  const res = await ssmConv(on(u.t), on(logDt.t), on(A.t), on(C.t), opts(DEVICE));
  const label = `ssmConv ${dtype} [${batch}, ${H}, ${L}] N/2 ${n2} block ${c.blockSize ?? 'default'} ${c.memory}${
    c.D ? ' D' : ''
  }${c.initialState ? ' initialState' : ''}${c.returnLastState ? ' lastState' : ''}`;
  expect(res.out.dtype).toBe(dtype);
  expect(res.lastState === undefined).toBe(!c.returnLastState);
  const got = toF64(res.out.toSync('cpu'));
  const ref = ssmRecurrenceRef(u.v, logDt.v, A.v, C.v, batch, H, L, n2, D?.v, init?.v);
  assertWritten(got, ref.out, label);
  assertClose(got, ref.out, SSM_TOL[dtype], `${label}: cuda vs float64`);
  const cpu = ssmConvSync(u.t, logDt.t, A.t, C.t, opts('cpu'));
  assertClose(got, toF64(cpu.out), SSM_TOL[dtype], `${label}: cuda vs cpu`);
  if (c.returnLastState) {
    const state = toF64((res.lastState as Tensor).toSync('cpu'));
    assertWritten(state, ref.lastState, `${label} lastState`);
    assertClose(state, ref.lastState, STATE_TOL, `${label} lastState: cuda vs float64`);
    assertClose(state, toF64(cpu.lastState as Tensor), STATE_TOL, `${label} lastState: cuda vs cpu`);
  }
}

describe.skipIf(NO_CUDA)(`ssmConv on CUDA (${NO_CUDA ? SKIP_REASON : info.device})`, () => {
  const cases: SsmCase[] = [];
  let seed = 500;
  const blocks = [undefined, 1, 17, 256, 1000, 4096, 20000];
  for (const dtype of DTYPES_FLOAT) {
    for (const L of [1, 2, 33, 1000, 5001]) {
      const i = cases.length;
      cases.push({
        dtype,
        batch: 1 + (i % 2),
        H: [1, 3, 2][i % 3] as number,
        L,
        n2: [1, 4, 32, 3][i % 4] as number,
        blockSize: blocks[i % blocks.length],
        D: i % 2 === 0,
        initialState: i % 3 !== 1,
        returnLastState: i % 4 !== 2,
        memory: i % 2 ? 'long' : 'mixed',
        seed: seed++,
      });
    }
  }
  cases.push({
    dtype: 'float32',
    batch: 2,
    H: 2,
    L: 40000,
    n2: 16,
    blockSize: 2048,
    D: true,
    initialState: true,
    returnLastState: true,
    memory: 'long',
    seed: seed++,
  });
  cases.push({ dtype: 'bfloat16', batch: 1, H: 1, L: 16385, n2: 64, D: true, returnLastState: true, memory: 'long', seed });
  // Blocks of the fused kernels whose rows sit side by side and synchronize row by row (m = 512 within
  // a warp, 1024 and 2048 by a named barrier a row), with rows of different lengths in one block (each
  // sequence's last, short segment) and odd lengths (no paired loads).
  for (const [L, blockSize, dtype] of [
    [5001, 333, 'float32'],
    [5001, 1000, 'bfloat16'],
    [4501, 1500, 'float16'],
  ] as const) {
    cases.push(blockedSsmCase(dtype, L, blockSize, ++seed));
  }
  for (const c of cases) {
    it(`${c.dtype} [${c.batch}, ${c.H}, ${c.L}] N/2 ${c.n2} block ${c.blockSize ?? 'default'}`, () => runSsm(c));
  }
});

// m = 1024 (n = 2048: L + Lk - 1 in 1025..2048, and ssmConv's blocks of 513..1024) has two kernels,
// chosen at every call by SSMKIT_CUDA_FFT_WIDE: 16 values a thread in 3 passes (0), and 32 x 32 with a
// row a warp, the mirror groups on lanes l and l ^ 16, the inverse as the forward code on the conjugate
// (1); unset, float32 takes the second and the 16-bit dtypes the first. Both run here for every dtype,
// whichever is the default: every dtype x option set, rows that leave a block part empty, long rows
// with short filters and short rows with long ones, many rows, and calls queued back to back.
for (const wide of ['0', '1'] as const) {
  describe.skipIf(NO_CUDA)(`m = 1024 with SSMKIT_CUDA_FFT_WIDE=${wide} on CUDA`, () => {
    envForSuite('SSMKIT_CUDA_FFT_WIDE', wide);
    const flagSets: Omit<ConvCase, 'dtype' | 'batch' | 'H' | 'L' | 'Lk' | 'seed'>[] = [
      {},
      { D: true, gelu: true },
      { pregate: true, postgate: true },
      { bidirectional: true },
      { bidirectional: true, D: true, gelu: true, pregate: true, postgate: true },
    ];
    let seed = 600;
    for (const dtype of DTYPES_FLOAT) {
      for (const flags of flagSets) {
        const c: ConvCase = { dtype, batch: 2, H: 3, L: 1001, Lk: 1001, ...flags, seed: seed++ };
        it(convName(c), () => runConv(c));
      }
    }
    const cases: ConvCase[] = [
      { dtype: 'bfloat16', batch: 1, H: 3, L: 1024, Lk: 1024, D: true, postgate: true, seed: 620 },
      { dtype: 'float32', batch: 3, H: 5, L: 2047, Lk: 1, D: true, gelu: true, seed: 621 },
      { dtype: 'float16', batch: 1, H: 1, L: 1025, Lk: 1000, pregate: true, bidirectional: true, seed: 622 },
      { dtype: 'float32', batch: 2, H: 131, L: 600, Lk: 600, pregate: true, seed: 623 },
      { dtype: 'bfloat16', batch: 1, H: 7, L: 1030, Lk: 3, bidirectional: true, D: true, seed: 624 },
      { dtype: 'float32', batch: 1, H: 2, L: 1536, Lk: 513, postgate: true, gelu: true, seed: 625 },
    ];
    for (const c of cases) it(convName(c), () => runConv(c));
    it('calls queued back to back, each with its own filter', () => {
      const [batch, H, L] = [2, 768, 1000];
      const rng = new Rng(640);
      const calls = Array.from({ length: 3 }, () => ({
        u: randTensor([batch, H, L], 'bfloat16', () => rng.normal()),
        k: randTensor([H, L], 'float32', () => rng.normal() / Math.sqrt(L)),
      }));
      const dev = calls.map((c) => ({ u: c.u.t.toSync(DEVICE), k: c.k.t.toSync(DEVICE) }));
      synchronizeSync(DEVICE);
      const outs = dev.map((c) => fftConvSync(c.u, c.k));
      calls.forEach((c, i) => {
        const got = toF64((outs[i] as Tensor).toSync('cpu'));
        const cpu = toF64(fftConvSync(c.u.t, c.k.t));
        assertWritten(got, cpu, `call ${i}`);
        assertClose(got, cpu, TOL.bfloat16, `call ${i} of ${calls.length}, [${batch}, ${H}, ${L}]: cuda vs cpu`);
      });
      for (const t of [...outs, ...dev.flatMap((c) => [c.u, c.k])]) t.dispose();
    });
    for (const [dtype, blockSize] of [
      ['float32', 1000],
      ['bfloat16', 600],
    ] as const) {
      const c = blockedSsmCase(dtype, 5001, blockSize, seed++);
      it(`ssmConv ${dtype} [2, 3, 5001] N/2 8 block ${blockSize}`, () => runSsm(c));
    }
  });
}

// m = 32768 and 65536 (L + Lk - 1 in 32769..131072) have two paths, chosen at every call by
// SSMKIT_CUDA_FFT_CLUSTER: a filter and its batch rows in a cluster of eight blocks on sm_90 (1, the
// default where the device runs it), and the four-step path through device scratch (0). Both run here:
// every dtype, both directions with D, the gates and gelu, odd lengths, batch > 1, and more filters than
// clusters at once (each cluster then takes several).
for (const cluster of ['0', '1'] as const) {
  describe.skipIf(NO_CUDA)(`m = 32768 and 65536 with SSMKIT_CUDA_FFT_CLUSTER=${cluster} on CUDA`, () => {
    envForSuite('SSMKIT_CUDA_FFT_CLUSTER', cluster);
    const cases: ConvCase[] = [
      { dtype: 'bfloat16', batch: 2, H: 3, L: 20000, Lk: 20000, D: true, gelu: true, pregate: true, postgate: true, seed: 700 },
      { dtype: 'float32', batch: 2, H: 1, L: 16385, Lk: 16385, bidirectional: true, gelu: true, pregate: true, seed: 701 },
      { dtype: 'float16', batch: 3, H: 2, L: 40000, Lk: 777, postgate: true, seed: 702 },
      { dtype: 'float32', batch: 1, H: 5, L: 65536, Lk: 65536, bidirectional: true, D: true, seed: 703 },
      { dtype: 'bfloat16', batch: 1, H: 9, L: 33001, Lk: 33001, D: true, seed: 704 },
      { dtype: 'bfloat16', batch: 1, H: 70, L: 17000, Lk: 16000, D: true, postgate: true, seed: 705 },
      { dtype: 'float16', batch: 2, H: 40, L: 40000, Lk: 30000, bidirectional: true, gelu: true, seed: 706 },
    ];
    for (const c of cases) it(convName(c), () => runConv(c));
  });
}
