// ssmConv against the float64 SSM recurrence (an independent route: no convolution at all), against
// fftConv(u, s4dKernel(...)) up to L = 1M, and its scratch memory, on every backend present.
//
// The grid is L x dtype x (H, batch) over L in {1, 2, 17, 255, 256, 1000, 1024, 4096, 8192, 16384},
// every dtype, H {1, 3, 8} and batch {1, 2}; each cell takes the next mode count, block size and
// option set, so that every option meets every dtype and shape. Block sizes that would cut a row into more
// than 300 blocks are replaced by the default to keep the file fast; short rows cover the small blocks.
import { describe, expect, it } from 'vitest';
import { native } from '../dist/cjs/backend.js';
import { fftConvSync, getNumThreads, s4dKernelSync, setNumThreads, ssmConv, ssmConvSync, Tensor } from '../dist/cjs/index.js';
import { randomModes, ssmRecurrenceRef } from './ref/fft';
import {
  assertClose,
  assertEqual,
  DTYPES_FLOAT,
  type FloatDType,
  Rng,
  randTensor,
  type Tolerance,
  testDevices,
  toF64,
} from './util';

const TOL: Record<FloatDType, Tolerance> = {
  float32: { rtol: 5e-5, atol: 2e-5 },
  float16: { rtol: 1e-3, atol: 1e-3 },
  bfloat16: { rtol: 8e-3, atol: 8e-3 },
};
// lastState is float32 whatever u's dtype; u's rounding is already in the reference's inputs.
const STATE_TOL: Tolerance = { rtol: 5e-5, atol: 2e-5 };
// ssmConv and fftConv(u, s4dKernel(...)) are two float32 computations of one thing; their difference is
// measured against the output's scale (atol is multiplied by the reference's RMS).
const EQUIV_TOL: Tolerance = { rtol: 1e-4, atol: 5e-5 };

const LENGTHS = [1, 2, 17, 255, 256, 1000, 1024, 4096, 8192, 16384];
const SHAPES = [
  [1, 1],
  [3, 2],
  [8, 1],
  [1, 2],
  [3, 1],
  [8, 2],
] as const; // [H, batch]
const MODES = [1, 4, 32, 64, 3];
const BLOCKS = [undefined, 1, 7, 100, 256, 1000, 4096, 2048, 64];

interface OptionSet {
  name: string;
  D?: boolean;
  initialState?: boolean;
  returnLastState?: boolean;
}
const OPTION_SETS: OptionSet[] = [
  { name: 'plain' },
  { name: 'D', D: true },
  { name: 'returnLastState', returnLastState: true },
  { name: 'initialState', initialState: true },
  { name: 'D initialState returnLastState', D: true, initialState: true, returnLastState: true },
];

interface Case {
  dtype: FloatDType;
  L: number;
  H: number;
  batch: number;
  n2: number;
  blockSize?: number;
  set: OptionSet;
  seed: number;
}

async function runCase(device: string, c: Case): Promise<void> {
  const { dtype, L, H, batch, n2, set } = c;
  const rng = new Rng(c.seed);
  const { logDt, A, C } = randomModes(rng, H, n2, c.seed % 2 ? 'long' : 'mixed');
  const u = randTensor([batch, H, L], dtype, () => rng.normal());
  const D = set.D ? randTensor([H], 'float32', () => rng.normal()) : undefined;
  const init = set.initialState ? randTensor([batch, H, n2, 2], 'float32', () => rng.normal()) : undefined;
  const on = (t: Tensor) => t.toSync(device);
  const opts = {
    D: D ? on(D.t) : undefined,
    initialState: init ? on(init.t) : undefined,
    returnLastState: set.returnLastState,
    blockSize: c.blockSize,
  };
  const args = [on(u.t), on(logDt.t), on(A.t), on(C.t)] as const;
  const res = await ssmConv(...args, opts);
  const resSync = ssmConvSync(...args, opts);
  expect(res.out.dtype).toBe(dtype);
  expect(res.out.shape).toEqual([batch, H, L]);
  expect(res.lastState === undefined).toBe(!set.returnLastState);
  const ref = ssmRecurrenceRef(u.v, logDt.v, A.v, C.v, batch, H, L, n2, D?.v, init?.v);
  const label = `ssmConv ${dtype} [${batch}, ${H}, ${L}] N/2 ${n2} block ${c.blockSize ?? 'default'} ${set.name}`;
  assertClose(toF64(res.out.toSync('cpu')), ref.out, TOL[dtype], label);
  assertClose(toF64(resSync.out.toSync('cpu')), ref.out, TOL[dtype], `${label} (sync)`);
  if (set.returnLastState) {
    expect(res.lastState?.shape).toEqual([batch, H, n2, 2]);
    expect(res.lastState?.dtype).toBe('float32');
    assertClose(toF64((res.lastState as Tensor).toSync('cpu')), ref.lastState, STATE_TOL, `${label} lastState`);
  }
}

function rms(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += (x[i] as number) ** 2;
  return Math.sqrt(s / Math.max(1, x.length));
}

/** ssmConv against fftConv(u, s4dKernel(logDt, A, C, L), { D }) on one float32 problem. */
function checkEquivalence(device: string, L: number, H: number, batch: number, n2: number, blockSize?: number) {
  const rng = new Rng(L + n2);
  const { logDt, A, C } = randomModes(rng, H, n2, 'long');
  const u = new Float32Array(batch * H * L);
  for (let i = 0; i < u.length; i++) u[i] = rng.normal();
  const ut = new Tensor('float32', u, [batch, H, L]).toSync(device);
  const D = randTensor([H], 'float32', () => rng.normal()).t.toSync(device);
  const on = (t: Tensor) => t.toSync(device);
  const { out } = ssmConvSync(ut, on(logDt.t), on(A.t), on(C.t), { D, blockSize });
  const k = s4dKernelSync(on(logDt.t), on(A.t), on(C.t), L);
  const expected = fftConvSync(ut, k, { D }).toSync('cpu').dataSync() as Float32Array;
  const scale = rms(expected);
  const tol = { rtol: EQUIV_TOL.rtol, atol: EQUIV_TOL.atol * scale };
  assertClose(out.toSync('cpu').dataSync() as Float32Array, expected, tol, `ssmConv = fftConv(s4dKernel) at L ${L}`);
}

describe.each(testDevices())('ssmConv on %s', (device) => {
  it('scratch memory does not grow with L (one row, same blocks: 2^17 then 2^20 samples)', () => {
    const rng = new Rng(3);
    const { logDt, A, C } = randomModes(rng, 1, 32);
    const run = (L: number) => {
      const u = new Tensor(
        'float32',
        new Float32Array(L).map(() => rng.normal()),
        [1, 1, L],
      ).toSync(device);
      ssmConvSync(u, logDt.t.toSync(device), A.t.toSync(device), C.t.toSync(device), { returnLastState: true });
    };
    const scratch = () => (native().fftScratchBytes() as [number, number])[0];
    const threads = getNumThreads();
    if (device !== 'cpu') {
      // fftScratchBytes counts the CPU pool only, which holds what this file's CPU tests left there: a
      // device run must not touch it. The device's scratch (the entering states' share of the output,
      // float32 the size of the output, and per-block states) is checked by test/fft-cuda.test.ts.
      const held = scratch();
      run(1 << 17);
      run(1 << 20);
      expect(scratch()).toBe(held);
      return;
    }
    try {
      // One thread: the blocks run in order on the calling thread, so the same buffers serve both
      // lengths exactly. (This test comes first so that the count holds nothing else of this file's.)
      setNumThreads(1);
      run(1 << 17);
      const before = scratch();
      run(1 << 20);
      expect(scratch()).toBe(before);
      // Everything the kernel holds for a row, whatever L: well under one 2^20-sample output (4 MiB).
      expect(before).toBeLessThan(1 << 20);
      // The pool: the blocks of the row go in waves of min(4 x threads, 64) blocks over the threads. The
      // wave's outputs (16 KiB a block at the default 2048-sample block, so up to 64 KiB a thread) are
      // held by the calling thread, and each thread that takes part adds its block buffers (61 KiB
      // measured). 2^17 samples are 64 blocks, a full wave at any thread count, so from there on L may
      // only add the block buffers of threads that joined late, never anything that scales with L (2^20
      // float32 samples are 4 MiB). Both bounds follow the threads in use: 16 of them hold 2.2 MB.
      setNumThreads(threads);
      run(1 << 17);
      const pooled = scratch();
      run(1 << 20);
      const blockBuffers = 80 << 10;
      const waveShare = (4 * 16 + 1) << 10;
      expect(scratch() - pooled).toBeLessThanOrEqual(threads * blockBuffers);
      expect(scratch()).toBeLessThanOrEqual(before + threads * (blockBuffers + waveShare));
    } finally {
      setNumThreads(threads);
    }
  });

  describe('grid: L x dtype x (H, batch) against the recurrence', () => {
    let i = 0;
    for (const L of LENGTHS) {
      for (const dtype of DTYPES_FLOAT) {
        for (const [H, batch] of SHAPES) {
          const n2 = MODES[i % MODES.length] as number;
          let blockSize = BLOCKS[(i * 5) % BLOCKS.length];
          if (blockSize !== undefined && L / blockSize > 300) blockSize = undefined;
          const set = OPTION_SETS[(i * 3) % OPTION_SETS.length] as OptionSet;
          const c: Case = { dtype, L, H, batch, n2, blockSize, set, seed: 7000 + i };
          it(`${dtype} [${batch}, ${H}, ${L}] N/2 ${n2} block ${blockSize ?? 'default'} ${set.name}`, () => runCase(device, c));
          i++;
        }
      }
    }
  });

  describe('every option set and block size at L = 1000, H = 3, batch = 2, N/2 = 16', () => {
    for (const dtype of DTYPES_FLOAT) {
      OPTION_SETS.forEach((set, j) => {
        const blockSize = BLOCKS[j % BLOCKS.length];
        it(`${dtype} ${set.name} block ${blockSize ?? 'default'}`, () =>
          runCase(device, { dtype, L: 1000, H: 3, batch: 2, n2: 16, blockSize, set, seed: 9000 + j }));
      });
    }
    for (const blockSize of [1, 2, 63, 64, 65, 999, 1000, 1001, 1 << 20]) {
      const set = OPTION_SETS[4] as OptionSet;
      it(`float32 block ${blockSize}`, () =>
        runCase(device, { dtype: 'float32', L: 1000, H: 3, batch: 2, n2: 16, blockSize, set, seed: blockSize }));
    }
  });

  describe('fewer rows than threads: blocks in waves across the pool', () => {
    for (const dtype of DTYPES_FLOAT) {
      for (const [L, blockSize] of [
        [5000, 64],
        [4097, 1000],
        [300, 7],
      ] as const) {
        const set = OPTION_SETS[4] as OptionSet;
        it(`${dtype} [1, 1, ${L}] block ${blockSize} ${set.name}`, () =>
          runCase(device, { dtype, L, H: 1, batch: 1, n2: 8, blockSize, set, seed: L + blockSize }));
      }
    }
    it('float32 [1, 1, 3000] block 128, no state returned', () =>
      runCase(device, {
        dtype: 'float32',
        L: 3000,
        H: 1,
        batch: 1,
        n2: 32,
        blockSize: 128,
        set: { name: 'D', D: true },
        seed: 1,
      }));
  });

  it('gives the same bits on one thread and on the pool (one row in waves, long memory, 3 runs)', () => {
    const rng = new Rng(11);
    const L = 300_000;
    const { logDt, A, C } = randomModes(rng, 1, 32, 'long');
    const u = new Tensor(
      'float32',
      new Float32Array(L).map(() => rng.normal()),
      [1, 1, L],
    ).toSync(device);
    const args = [u, logDt.t.toSync(device), A.t.toSync(device), C.t.toSync(device)] as const;
    const opts = { returnLastState: true, blockSize: 1024 };
    const threads = getNumThreads();
    let one: { out: Tensor; lastState?: Tensor };
    try {
      setNumThreads(1);
      one = ssmConvSync(...args, opts);
    } finally {
      setNumThreads(threads);
    }
    for (let run = 0; run < 3; run++) {
      const pooled = ssmConvSync(...args, opts);
      assertEqual(pooled.out.toSync('cpu').dataSync(), one.out.toSync('cpu').dataSync(), `out, run ${run}`);
      assertEqual(
        (pooled.lastState as Tensor).toSync('cpu').dataSync(),
        (one.lastState as Tensor).toSync('cpu').dataSync(),
        `lastState, run ${run}`,
      );
    }
  });

  it('no modes: out = D u, and an empty state', () => {
    const rng = new Rng(2);
    const u = randTensor([2, 1, 3000], 'float32', () => rng.normal());
    const { out, lastState } = ssmConvSync(
      u.t.toSync(device),
      Tensor.zeros([1]).toSync(device),
      Tensor.zeros([1, 0, 2]).toSync(device),
      Tensor.zeros([1, 0, 2]).toSync(device),
      {
        D: new Tensor('float32', [2], [1]).toSync(device),
        blockSize: 100,
        returnLastState: true,
      },
    );
    assertClose(
      toF64(out.toSync('cpu')),
      u.v.map((x) => 2 * x),
      TOL.float32,
      'D u',
    );
    expect(lastState?.shape).toEqual([2, 1, 0, 2]);
  });

  describe('equals fftConv(u, s4dKernel(...), { D })', () => {
    it('L 4096, [2, 3], N/2 32, block 512', () => checkEquivalence(device, 4096, 3, 2, 32, 512));
    it('L 200003, [1, 2], N/2 64, block 3000', () => checkEquivalence(device, 200003, 2, 1, 64, 3000));
    it('L 1000000, one row, N/2 32, default blocks', () => checkEquivalence(device, 1_000_000, 1, 1, 32));
  });

  describe('errors', () => {
    const u = Tensor.zeros([2, 3, 16]);
    const lt = Tensor.zeros([3]);
    const A = Tensor.zeros([3, 4, 2]);
    const C = Tensor.zeros([3, 4, 2]);
    const cases: [string, () => unknown, ErrorConstructor, RegExp][] = [
      ['u dtype', () => ssmConvSync(Tensor.zeros([2, 3, 16], 'int32'), lt, A, C), TypeError, /ssmConvSync: u:/],
      ['u rank', () => ssmConvSync(Tensor.zeros([3, 16]), lt, A, C), RangeError, /ssmConvSync: u:/],
      ['L = 0', () => ssmConvSync(Tensor.zeros([2, 3, 0]), lt, A, C), RangeError, /ssmConvSync: u:/],
      ['logDt H', () => ssmConvSync(u, Tensor.zeros([4]), A, C), RangeError, /ssmConvSync: logDt:/],
      ['A H', () => ssmConvSync(u, lt, Tensor.zeros([2, 4, 2]), C), RangeError, /ssmConvSync: A:/],
      ['C dtype', () => ssmConvSync(u, lt, A, Tensor.zeros([3, 4, 2], 'float16')), TypeError, /ssmConvSync: C:/],
      ['D shape', () => ssmConvSync(u, lt, A, C, { D: Tensor.zeros([4]) }), RangeError, /ssmConvSync: options\.D:/],
      [
        'initialState shape',
        () => ssmConvSync(u, lt, A, C, { initialState: Tensor.zeros([2, 3, 4]) }),
        RangeError,
        /ssmConvSync: options\.initialState:/,
      ],
      [
        'initialState dtype',
        () => ssmConvSync(u, lt, A, C, { initialState: Tensor.zeros([2, 3, 4, 2], 'bfloat16') }),
        TypeError,
        /ssmConvSync: options\.initialState:/,
      ],
      ['blockSize 0', () => ssmConvSync(u, lt, A, C, { blockSize: 0 }), RangeError, /ssmConvSync: options\.blockSize:/],
      [
        'blockSize fractional',
        () => ssmConvSync(u, lt, A, C, { blockSize: 1.5 }),
        RangeError,
        /ssmConvSync: options\.blockSize:/,
      ],
      [
        'returnLastState type',
        () => ssmConvSync(u, lt, A, C, { returnLastState: 'yes' as never }),
        TypeError,
        /ssmConvSync: options\.returnLastState:/,
      ],
      ['unknown option', () => ssmConvSync(u, lt, A, C, { chunk: 4 } as never), TypeError, /ssmConvSync: options\.chunk:/],
    ];
    for (const [name, f, cls, re] of cases) {
      it(name, () => {
        expect(f).toThrow(cls);
        expect(f).toThrow(re);
      });
    }
    it('async rejects with the same errors', async () => {
      await expect(ssmConv(u, lt, A, C, { blockSize: -1 })).rejects.toBeInstanceOf(RangeError);
    });
  });
});
