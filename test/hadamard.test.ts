// hadamard against its float64 reference and the golden cases, on every backend present.
import { describe, expect, it } from 'vitest';
import { hadamard, hadamardSync, type Tensor } from '../dist/cjs/index.js';
import { hadamardRef } from './ref/quant';
import { assertClose, DTYPES_FLOAT, goldenCases, loadGolden, Rng, randTensor, testDevices, toF64 } from './util';

const TOL = {
  float32: { rtol: 1e-5, atol: 1e-5 },
  float16: { rtol: 2e-3, atol: 2e-3 },
  bfloat16: { rtol: 1.6e-2, atol: 1.6e-2 },
};

describe.each(testDevices())('hadamard on %s', (device) => {
  for (const dtype of DTYPES_FLOAT) {
    for (const [rows, n] of [
      [1, 1],
      [3, 2],
      [5, 64],
      [2, 1024],
      [1, 8192],
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

  for (const c of goldenCases('hadamard')) {
    it(`golden ${c.file}`, async () => {
      const g = loadGolden(c.file);
      const x = await (g.x as Tensor).to(device);
      const out = await hadamard(x, { scale: c.options.scale as number });
      assertClose(toF64(out.toSync('cpu')), toF64(g.out as Tensor), TOL.float32, c.file);
    });
  }
});
