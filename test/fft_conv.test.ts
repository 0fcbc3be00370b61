// fftConv against its float64 reference and the golden cases, on every backend present.
//
// The grid is L x dtype x (H, batch) over L in {1, 2, 17, 255, 256, 1000, 1024, 4096, 8192, 16384},
// every dtype, H {1, 3, 8} and batch {1, 2}; each cell takes the next option set from OPTION_SETS, so
// that every option set (and filter length) meets every dtype, shape and several lengths.
// Rows longer than 1100 are checked at sampled positions (the first and last 64, and 128 drawn at
// random) because the direct reference costs O(L * Lk) per position checked, not per row.
import { describe, expect, it } from 'vitest';
import { fftConv, fftConvSync, getNumThreads, setNumThreads, Tensor } from '../dist/cjs/index.js';
import { type FftConvRefArgs, fftConvRefAt } from './ref/fft';
import {
  assertClose,
  assertEqual,
  DTYPES_FLOAT,
  type FloatDType,
  goldenCases,
  loadGolden,
  Rng,
  randTensor,
  type Tolerance,
  testDevices,
  toF64,
} from './util';

const TOL: Record<FloatDType, Tolerance> = {
  float32: { rtol: 2e-5, atol: 2e-5 },
  float16: { rtol: 1e-3, atol: 1e-3 },
  bfloat16: { rtol: 8e-3, atol: 8e-3 },
};

const LENGTHS = [1, 2, 17, 255, 256, 1000, 1024, 4096, 8192, 16384];
const SHAPES = [
  [1, 1],
  [3, 2],
  [8, 1],
  [1, 2],
  [3, 1],
  [8, 2],
] as const; // [H, batch]

interface OptionSet {
  name: string;
  D?: boolean;
  gelu?: boolean;
  pregate?: boolean;
  postgate?: boolean;
  bidirectional?: boolean;
  /** Filter length from L (default L). */
  lk?: (L: number) => number;
}

const OPTION_SETS: OptionSet[] = [
  { name: 'plain' },
  { name: 'D', D: true },
  { name: 'gelu', gelu: true },
  { name: 'D gelu, Lk = L/3', D: true, gelu: true, lk: (L) => Math.ceil(L / 3) },
  { name: 'pregate', pregate: true },
  { name: 'postgate, Lk = 7', postgate: true, lk: (L) => Math.min(L, 7) },
  { name: 'pregate postgate D', pregate: true, postgate: true, D: true },
  { name: 'bidirectional', bidirectional: true },
  { name: 'bidirectional D gelu, Lk = L/4', bidirectional: true, D: true, gelu: true, lk: (L) => Math.ceil(L / 4) },
  {
    name: 'everything, Lk = 33',
    bidirectional: true,
    D: true,
    gelu: true,
    pregate: true,
    postgate: true,
    lk: (L) => Math.min(L, 33),
  },
];

/** Output positions to check in a row of length L. */
function positions(L: number, rng: Rng): number[] {
  if (L <= 1100) return Array.from({ length: L }, (_, i) => i);
  const s = new Set<number>();
  for (let i = 0; i < 64; i++) {
    s.add(i);
    s.add(L - 1 - i);
  }
  for (let i = 0; i < 128; i++) s.add(rng.int(0, L - 1));
  return [...s].sort((a, b) => a - b);
}

interface Case {
  dtype: FloatDType;
  L: number;
  H: number;
  batch: number;
  set: OptionSet;
  seed: number;
}

async function runCase(device: string, c: Case): Promise<void> {
  const { dtype, L, H, batch, set } = c;
  const rng = new Rng(c.seed);
  const Lk = set.lk ? set.lk(L) : L;
  const kScale = 1 / Math.sqrt(Lk * (set.bidirectional ? 2 : 1));
  const u = randTensor([batch, H, L], dtype, () => rng.normal());
  const k = randTensor(set.bidirectional ? [H, 2, Lk] : [H, Lk], 'float32', () => rng.normal() * kScale);
  const D = set.D ? randTensor([H], 'float32', () => rng.normal()) : undefined;
  const pre = set.pregate ? randTensor([batch, H, L], dtype, () => rng.normal()) : undefined;
  const post = set.postgate ? randTensor([batch, H, L], dtype, () => rng.normal()) : undefined;
  const dev = async (t: { t: Tensor } | undefined) => (t ? t.t.to(device) : undefined);
  const opts = {
    D: await dev(D),
    gelu: set.gelu,
    pregate: await dev(pre),
    postgate: await dev(post),
    bidirectional: set.bidirectional,
  };
  const ut = await u.t.to(device);
  const kt = await k.t.to(device);
  const out = await fftConv(ut, kt, opts);
  expect(out.dtype).toBe(dtype);
  expect(out.shape).toEqual([batch, H, L]);
  const outSync = fftConvSync(ut, kt, opts);
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
    gelu: set.gelu,
    bidirectional: set.bidirectional,
  };
  const pos = positions(L, rng);
  const got = toF64(out.toSync('cpu'));
  const gotSync = toF64(outSync.toSync('cpu'));
  const a: number[] = [];
  const s: number[] = [];
  const e: number[] = [];
  for (let r = 0; r < batch * H; r++) {
    for (const t of pos) {
      a.push(got[r * L + t] as number);
      s.push(gotSync[r * L + t] as number);
      e.push(fftConvRefAt(ref, r, t));
    }
  }
  const label = `fftConv ${dtype} [${batch}, ${H}, ${L}] Lk ${Lk} ${set.name}`;
  assertClose(a, e, TOL[dtype], label);
  assertClose(s, e, TOL[dtype], `${label} (sync)`);
}

describe.each(testDevices())('fftConv on %s', (device) => {
  describe('grid: L x dtype x (H, batch), rotating option sets', () => {
    let i = 0;
    for (const L of LENGTHS) {
      for (const dtype of DTYPES_FLOAT) {
        for (const [H, batch] of SHAPES) {
          const set = OPTION_SETS[(i * 7) % OPTION_SETS.length] as OptionSet;
          const c: Case = { dtype, L, H, batch, set, seed: 1000 + i };
          it(`${dtype} [${batch}, ${H}, ${L}] ${set.name}`, () => runCase(device, c));
          i++;
        }
      }
    }
  });

  describe('every option set at L = 1000 (not a power of two), H = 3, batch = 2', () => {
    for (const dtype of DTYPES_FLOAT) {
      OPTION_SETS.forEach((set, j) => {
        it(`${dtype} ${set.name}`, () => runCase(device, { dtype, L: 1000, H: 3, batch: 2, set, seed: 5000 + j }));
      });
    }
  });

  describe('short filters on long rows (overlap-save blocks)', () => {
    for (const [L, Lk, bidirectional] of [
      [16384, 1, false],
      [16384, 3, false],
      [16384, 100, true],
      [16383, 1000, false],
      [65537, 2049, true],
      [4097, 4097, false],
    ] as const) {
      const set: OptionSet = { name: `Lk ${Lk}${bidirectional ? ' bidirectional' : ''}`, D: true, bidirectional, lk: () => Lk };
      it(`float32 [2, 3, ${L}] ${set.name}`, () => runCase(device, { dtype: 'float32', L, H: 3, batch: 2, set, seed: L + Lk }));
    }
  });

  describe('one row, short filters: its blocks spread over the pool', () => {
    for (const dtype of DTYPES_FLOAT) {
      const set: OptionSet = { name: 'Lk 1000 D gelu pregate', D: true, gelu: true, pregate: true, lk: () => 1000 };
      it(`${dtype} [1, 1, 200001] ${set.name}`, () => runCase(device, { dtype, L: 200001, H: 1, batch: 1, set, seed: 99 }));
    }
  });

  describe('one long row: each transform spread over the pool', () => {
    for (const dtype of DTYPES_FLOAT) {
      const set = OPTION_SETS[9] as OptionSet;
      const full: OptionSet = { ...set, name: 'everything, Lk = L', lk: (L) => L };
      it(`${dtype} [1, 1, 70001] ${full.name}`, () => runCase(device, { dtype, L: 70001, H: 1, batch: 1, set: full, seed: 77 }));
    }
  });

  it('gives the same bits on one thread and on the pool', () => {
    const rng = new Rng(5);
    const u = randTensor([2, 3, 5000], 'float32', () => rng.normal()).t.toSync(device);
    const k = randTensor([3, 5000], 'float32', () => rng.normal() / 70).t.toSync(device);
    const kShort = randTensor([3, 40], 'float32', () => rng.normal() / 7).t.toSync(device);
    const threads = getNumThreads();
    const uLong = randTensor([1, 1, 100000], 'float32', () => rng.normal()).t.toSync(device);
    const kLong = randTensor([1, 100000], 'float32', () => rng.normal() / 300).t.toSync(device);
    for (const [input, filter] of [
      [u, k],
      [u, kShort],
      [uLong, kLong],
    ] as const) {
      let one: Tensor;
      try {
        setNumThreads(1);
        one = fftConvSync(input, filter, { gelu: true });
      } finally {
        setNumThreads(threads);
      }
      const pooled = fftConvSync(input, filter, { gelu: true });
      assertEqual(pooled.toSync('cpu').dataSync(), one.toSync('cpu').dataSync(), `Lk ${filter.shape[1]}`);
    }
  });

  for (const c of goldenCases('fftConv')) {
    it(`golden ${c.file}`, async () => {
      const g = loadGolden(c.file);
      const on = async (t: Tensor | undefined) => (t ? t.to(device) : undefined);
      const out = await fftConv((await on(g.u)) as Tensor, (await on(g.k)) as Tensor, {
        D: await on(g.D),
        pregate: await on(g.pregate),
        postgate: await on(g.postgate),
        gelu: c.options.gelu as boolean,
      });
      assertClose(toF64(out.toSync('cpu')), toF64(g.out as Tensor), TOL.float32, c.file);
    });
  }

  describe('errors', () => {
    const u = Tensor.zeros([2, 3, 16]);
    const k = Tensor.zeros([3, 16]);
    const cases: [string, () => unknown, ErrorConstructor, RegExp][] = [
      ['u dtype', () => fftConvSync(Tensor.zeros([2, 3, 16], 'int8'), k), TypeError, /fftConv.*: u:/],
      ['u not a tensor', () => fftConvSync([1, 2] as never, k), TypeError, /fftConvSync: u:/],
      ['u rank', () => fftConvSync(Tensor.zeros([3, 16]), k), RangeError, /fftConvSync: u:.*3 dimensions/],
      ['L = 0', () => fftConvSync(Tensor.zeros([2, 3, 0]), Tensor.zeros([3, 0])), RangeError, /fftConvSync: u:/],
      ['k dtype', () => fftConvSync(u, Tensor.zeros([3, 16], 'float16')), TypeError, /fftConvSync: k:/],
      ['k H', () => fftConvSync(u, Tensor.zeros([4, 16])), RangeError, /fftConvSync: k:.*\[3, 16\]/],
      ['k longer than L', () => fftConvSync(u, Tensor.zeros([3, 17])), RangeError, /fftConvSync: k:/],
      ['k rank 3 without bidirectional', () => fftConvSync(u, Tensor.zeros([3, 2, 16])), RangeError, /fftConvSync: k:/],
      ['bidirectional k rank 2', () => fftConvSync(u, k, { bidirectional: true }), RangeError, /fftConvSync: k:.*3 dimensions/],
      ['D shape', () => fftConvSync(u, k, { D: Tensor.zeros([2]) }), RangeError, /fftConvSync: options\.D:/],
      ['D dtype', () => fftConvSync(u, k, { D: Tensor.zeros([3], 'bfloat16') }), TypeError, /fftConvSync: options\.D:/],
      [
        'pregate dtype',
        () => fftConvSync(u, k, { pregate: Tensor.zeros([2, 3, 16], 'float16') }),
        TypeError,
        /fftConvSync: options\.pregate:.*u's dtype/,
      ],
      [
        'postgate shape',
        () => fftConvSync(u, k, { postgate: Tensor.zeros([2, 3, 15]) }),
        RangeError,
        /fftConvSync: options\.postgate:/,
      ],
      ['gelu type', () => fftConvSync(u, k, { gelu: 1 as never }), TypeError, /fftConvSync: options\.gelu:/],
      ['unknown option', () => fftConvSync(u, k, { act: 'gelu' } as never), TypeError, /fftConvSync: options\.act:/],
      ['options type', () => fftConvSync(u, k, 3 as never), TypeError, /fftConvSync: options:/],
      ['too many arguments', () => (fftConvSync as (...a: unknown[]) => unknown)(u, k, {}, 1), TypeError, /fftConvSync/],
    ];
    for (const [name, f, cls, re] of cases) {
      it(name, () => {
        expect(f).toThrow(cls);
        expect(f).toThrow(re);
      });
    }
    it('async rejects with the same errors', async () => {
      await expect(fftConv(u, Tensor.zeros([3, 17]))).rejects.toThrow(/fftConv: k:/);
      await expect(fftConv(u, Tensor.zeros([3, 17]))).rejects.toBeInstanceOf(RangeError);
    });
    it('a disposed input throws', () => {
      const d = Tensor.zeros([1, 1, 4]);
      d.dispose();
      expect(() => fftConvSync(d, Tensor.zeros([1, 4]))).toThrow(/fftConvSync: u: the tensor has been disposed/);
    });
  });
});
