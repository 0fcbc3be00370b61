// s4dKernel against its float64 reference and the golden case, on every backend present.
import { describe, expect, it } from 'vitest';
import { s4dKernel, s4dKernelSync, Tensor } from '../dist/cjs/index.js';
import { randomModes, s4dKernelRef } from './ref/fft';
import { assertClose, goldenCases, loadGolden, Rng, type Tolerance, testDevices, toF64 } from './util';

// The output is float32 only; modes are combined in float32 after float64 coefficients.
const TOL: Record<'float32', Tolerance> = { float32: { rtol: 5e-6, atol: 1e-6 } };

describe.each(testDevices())('s4dKernel on %s', (device) => {
  // (H, N/2, L): lengths from 1 to 16384 (odd ones and powers of two), mode counts 1..64.
  for (const [H, n2, L] of [
    [1, 1, 1],
    [3, 4, 2],
    [8, 32, 17],
    [1, 64, 255],
    [3, 32, 1000],
    [2, 3, 4096],
    [1, 32, 16384],
    [8, 16, 8191],
  ] as const) {
    it(`[${H}, ${n2}] L ${L}`, async () => {
      const rng = new Rng(H * 1000 + n2 * 10 + L);
      const { logDt, A, C } = randomModes(rng, H, n2);
      const on = (t: Tensor) => t.toSync(device);
      const k = await s4dKernel(on(logDt.t), on(A.t), on(C.t), L);
      expect(k.dtype).toBe('float32');
      expect(k.shape).toEqual([H, L]);
      const ref = s4dKernelRef(logDt.v, A.v, C.v, H, n2, L);
      assertClose(toF64(k.toSync('cpu')), ref, TOL.float32, `s4dKernel [${H}, ${n2}] L ${L}`);
      const ks = s4dKernelSync(on(logDt.t), on(A.t), on(C.t), L);
      assertClose(toF64(ks.toSync('cpu')), ref, TOL.float32, 's4dKernelSync');
    });
  }

  it('A = 0 takes the limit (exp(dt A) - 1) / A -> dt', () => {
    const dt = 0.01;
    const k = s4dKernelSync(
      new Tensor('float32', [Math.log(dt)], [1]),
      new Tensor('float32', [0, 0], [1, 1, 2]),
      new Tensor('float32', [0.5, 2], [1, 1, 2]),
      5,
    );
    assertClose(toF64(k), new Float64Array(5).fill(2 * 0.5 * dt), TOL.float32, 'A = 0');
  });

  it('no modes give a zero kernel', () => {
    const k = s4dKernelSync(Tensor.zeros([2]), Tensor.zeros([2, 0, 2]), Tensor.zeros([2, 0, 2]), 7);
    expect([...(k.dataSync() as Float32Array)]).toEqual(new Array(14).fill(0));
  });

  for (const c of goldenCases('s4dKernel')) {
    it(`golden ${c.file}`, async () => {
      const g = loadGolden(c.file);
      const on = (t: Tensor | undefined) => (t as Tensor).toSync(device);
      const k = await s4dKernel(on(g.logDt), on(g.A), on(g.C), c.options.L as number);
      assertClose(toF64(k.toSync('cpu')), toF64(g.k as Tensor), TOL.float32, c.file);
    });
  }

  describe('errors', () => {
    const lt = Tensor.zeros([3]);
    const A = Tensor.zeros([3, 4, 2]);
    const C = Tensor.zeros([3, 4, 2]);
    const cases: [string, () => unknown, ErrorConstructor, RegExp][] = [
      ['logDt dtype', () => s4dKernelSync(Tensor.zeros([3], 'float16'), A, C, 8), TypeError, /s4dKernelSync: logDt:/],
      ['logDt shape', () => s4dKernelSync(Tensor.zeros([3, 1]), A, C, 8), RangeError, /s4dKernelSync: logDt:/],
      ['A rank', () => s4dKernelSync(lt, Tensor.zeros([3, 8]), C, 8), RangeError, /s4dKernelSync: A:/],
      ['A complex axis', () => s4dKernelSync(lt, Tensor.zeros([3, 4, 3]), C, 8), RangeError, /s4dKernelSync: A:/],
      ['A channels', () => s4dKernelSync(lt, Tensor.zeros([2, 4, 2]), C, 8), RangeError, /s4dKernelSync: A:/],
      ['C shape', () => s4dKernelSync(lt, A, Tensor.zeros([3, 5, 2]), 8), RangeError, /s4dKernelSync: C:/],
      ['C dtype', () => s4dKernelSync(lt, A, Tensor.zeros([3, 4, 2], 'bfloat16'), 8), TypeError, /s4dKernelSync: C:/],
      ['L zero', () => s4dKernelSync(lt, A, C, 0), RangeError, /s4dKernelSync: L:/],
      ['L fractional', () => s4dKernelSync(lt, A, C, 2.5), RangeError, /s4dKernelSync: L:/],
      ['L missing', () => (s4dKernelSync as (...a: unknown[]) => unknown)(lt, A, C), TypeError, /s4dKernelSync: L:/],
      ['L string', () => s4dKernelSync(lt, A, C, '8' as never), TypeError, /s4dKernelSync: L:/],
    ];
    for (const [name, f, cls, re] of cases) {
      it(name, () => {
        expect(f).toThrow(cls);
        expect(f).toThrow(re);
      });
    }
  });
});
