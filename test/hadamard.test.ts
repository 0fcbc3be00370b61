// hadamard against its float64 reference and the golden cases, on every backend present: powers of two
// (Sylvester order) and 12, 20, 28, 40 times a power of two (Dao-AILab's fast-hadamard-transform order).
import { describe, expect, it } from 'vitest';
import { backend, hadamard, hadamardSync, Tensor } from '../dist/cjs/index.js';
import { hadamardRef } from './ref/quant';
import { assertClose, assertEqual, DTYPES_FLOAT, goldenCases, loadGolden, Rng, randTensor, testDevices, toF64 } from './util';

const TOL = {
  float32: { rtol: 1e-5, atol: 1e-5 },
  float16: { rtol: 2e-3, atol: 2e-3 },
  bfloat16: { rtol: 1.6e-2, atol: 1.6e-2 },
};

// The forced SIMD path (SSMKIT_SIMD) must be the one in force: test/quant-simd.test.ts reruns this file
// under each.
it('runs the SIMD path SSMKIT_SIMD asks for', () => {
  const want = process.env.SSMKIT_SIMD;
  if (want) expect(backend().simd).toBe(want === 'vnni' ? 'avx512vnni' : want);
});

describe.each(testDevices())('hadamard on %s', (device) => {
  for (const dtype of DTYPES_FLOAT) {
    for (const [rows, n] of [
      [1, 1],
      [3, 2],
      [5, 64],
      [2, 1024],
      [1, 8192],
      [2, 12],
      [3, 24],
      [1, 20],
      [2, 40],
      [1, 112],
      [2, 320],
      [1, 1536],
      [1, 5120],
    ] as const) {
      it(`${dtype} [${rows}, ${n}]`, async () => {
        const rng = new Rng(rows * 7919 + n);
        const { t, v } = randTensor([rows, n], dtype, () => rng.normal());
        const x = await t.to(device);
        const scale = 1 / Math.sqrt(n);
        const out = await hadamard(x, { scale });
        expect(out.dtype).toBe(dtype);
        expect(out.shape).toEqual([rows, n]);
        const ref = hadamardRef(v, rows, n, scale);
        assertClose(toF64(out.toSync('cpu')), ref, TOL[dtype], `hadamard ${dtype} [${rows}, ${n}]`);
        assertClose(toF64(hadamardSync(x, { scale }).toSync('cpu')), ref, TOL[dtype], 'hadamardSync');
      });
    }
  }

  it('keeps leading dimensions and defaults scale to 1', async () => {
    const rng = new Rng(3);
    const { t, v } = randTensor([2, 3, 28], 'float32', () => rng.normal());
    const out = await hadamard(await t.to(device));
    expect(out.shape).toEqual([2, 3, 28]);
    assertClose(toF64(out.toSync('cpu')), hadamardRef(v, 6, 28, 1), TOL.float32, 'rank 3');
  });

  // Transforming the identity gives H^T; H^T H = n I holds only for a true Hadamard matrix, which checks
  // the sign tables independently of the reference.
  for (const n of [12, 20, 28, 40, 48, 80]) {
    it(`H of order ${n} is orthogonal`, async () => {
      const eye = new Float32Array(n * n);
      for (let i = 0; i < n; i++) eye[i * n + i] = 1;
      const h = toF64((await hadamard(await new Tensor('float32', eye, [n, n]).to(device))).toSync('cpu'));
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let k = 0; k < n; k++) s += (h[i * n + k] as number) * (h[j * n + k] as number);
          if (s !== (i === j ? n : 0)) expect.fail(`(H^T H)[${i}][${j}] = ${s}`);
        }
      }
    });
  }

  for (const c of goldenCases('hadamard')) {
    it(`golden ${c.file}`, async () => {
      const g = loadGolden(c.file);
      const x = await (g.x as Tensor).to(device);
      const out = await hadamard(x, { scale: c.options.scale as number });
      assertClose(toF64(out.toSync('cpu')), toF64(g.out as Tensor), TOL.float32, c.file);
    });
  }

  it('rejects bad input', async () => {
    const x = (n: number) => new Tensor('float32', new Float32Array(n), [1, n]).toSync(device);
    for (const n of [3, 6, 36, 44, 60, 100]) {
      expect(() => hadamardSync(x(n))).toThrow(RangeError);
      expect(() => hadamardSync(x(n))).toThrow(/hadamardSync: x: expected a last dimension of 2\^k/);
    }
    await expect(hadamard(x(6))).rejects.toThrow(RangeError);
    expect(() => hadamardSync(new Tensor('int8', new Int8Array(4), [4]))).toThrow(TypeError);
    expect(() => hadamardSync(new Tensor('int8', new Int8Array(4), [4]))).toThrow(/hadamardSync: x:/);
    expect(() => hadamardSync(x(4), { scale: 'a' as never })).toThrow(/hadamardSync: options.scale/);
    expect(() => hadamardSync(x(4), { scale: Number.NaN })).toThrow(RangeError);
    expect(() => hadamardSync(x(4), { scales: 1 } as never)).toThrow(TypeError);
  });
});

// The CUDA H_40 kernel for 64 <= p <= 256 (n = 2560, 5120, 10240) against the CPU bit for bit, beside
// its neighbours on the general kernel (p = 32 and 512), scale 1 and another; more rows than that
// kernel's grid (8192 blocks) loop inside its blocks. Up to 16 rows it runs blocks of 4p threads (one
// phase-1 pass, 5 rows of H_40 a thread), more rows blocks of p (each p in both forms below). With p
// threads its phase 1 runs a second pass on the first p / 4 threads: whole warps for p = 128 and 256,
// half of warp 0 for p = 64 (n = 2560, whose other lanes compute and store nothing); with 4p the single
// pass ends inside warp 2 for p = 64 likewise. The shared-memory layout differs for p = 64 (no rotation)
// and p >= 128.
describe.skipIf(backend().name !== 'cuda')('hadamard H_40 x p on CUDA matches the CPU bit for bit', () => {
  const SHAPES: readonly (readonly [number, number])[] = [
    [3, 2560],
    [20, 2560],
    [1, 5120],
    [37, 5120],
    [5, 10240],
    [17, 10240],
    [7, 1280],
    [2, 20480],
  ];
  const check = (dtype: (typeof DTYPES_FLOAT)[number], rows: number, n: number, scale: number) => {
    const rng = new Rng(rows * 131 + n);
    // Values over a wide range of magnitudes, so that any change of the summation order shows.
    const { t } = randTensor([rows, n], dtype, () => rng.normal() * 2 ** Math.floor(8 * rng.uniform()));
    const cpu = hadamardSync(t, { scale });
    const xg = t.toSync('cuda:0');
    const gpu = hadamardSync(xg, { scale });
    assertEqual(toF64(gpu.toSync('cpu')), toF64(cpu), `hadamard ${dtype} [${rows}, ${n}] scale ${scale}`);
    for (const x of [xg, gpu, cpu]) x.dispose();
  };
  for (const dtype of DTYPES_FLOAT) {
    it(`${dtype}: p = 32 ... 512`, () => {
      for (const [rows, n] of SHAPES) {
        check(dtype, rows, n, 1 / Math.sqrt(n));
        check(dtype, rows, n, 1);
      }
    });
  }
  it('bfloat16: 8300 rows of 2560 (rows loop inside the blocks)', () => {
    check('bfloat16', 8300, 2560, 0.37);
  });
});
