// quantize and dequantize against their references (exact: q and the scales are defined by float32
// arithmetic that the reference reproduces), on every backend present: every granularity, both bit
// widths, every float dtype, odd lengths and size-1 dimensions, static scales, the fused Hadamard
// rotation, round half to even, the int4 packing, and bad input.
import { describe, expect, it } from 'vitest';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../dist/cjs/dtype.js';
import { dequantize, dequantizeSync, hadamardSync, memory, quantize, quantizeSync, Tensor } from '../dist/cjs/index.js';
import { quantizeRef } from './ref/quant';
import { assertClose, assertEqual, DTYPES_FLOAT, type FloatDType, Rng, randTensor, testDevices, toF64 } from './util';

// dequantize = q * scale in float32, then rounded to the output dtype: exact in float32, one rounding
// in the 16-bit formats.
const TOL = {
  float32: { rtol: 0, atol: 0 },
  float16: { rtol: 1e-3, atol: 1e-7 },
  bfloat16: { rtol: 8e-3, atol: 1e-30 },
};

/** How a float32 scale is stored in a scale tensor of `dtype`. */
const roundTo = (dtype: FloatDType) => (v: number) =>
  dtype === 'float16' ? f16ToF32(f32ToF16(v)) : dtype === 'bfloat16' ? bf16ToF32(f32ToBf16(v)) : Math.fround(v);

const SHAPES: readonly (readonly number[])[] = [[1], [7], [1, 1], [3, 17], [4, 64], [2, 3, 40], [5, 1, 96], [1, 300]];

// No CUDA kernels for quantize and dequantize yet: on a CUDA backend only the CPU runs them.
describe.each(testDevices())('quantize on %s', (device) => {
  for (const dtype of DTYPES_FLOAT) {
    for (const bits of [8, 4] as const) {
      for (const granularity of ['tensor', 'token', 'channel', 'group'] as const) {
        it(`${dtype} int${bits} ${granularity}`, async () => {
          for (const shape of SHAPES) {
            const len = shape[shape.length - 1] as number;
            const groupSize = granularity === 'group' ? ([8, 4, 3, 1].find((g) => len % g === 0) as number) : 0;
            const rng = new Rng(shape.reduce((a, b) => a * 31 + b, bits));
            const { t, v } = randTensor([...shape], dtype, () => rng.normal() * 3);
            const x = await t.to(device);
            const opts = granularity === 'group' ? { bits, granularity, groupSize } : { bits, granularity };
            const { q, scale } = await quantize(x, opts);
            expect(q.dtype).toBe(bits === 4 ? 'int4' : 'int8');
            expect(q.shape).toEqual(shape);
            expect(scale.dtype).toBe(granularity === 'group' ? dtype : 'float32');
            const ref = quantizeRef(v, shape, bits, granularity, groupSize, roundTo(scale.dtype as FloatDType));
            const label = `${dtype} int${bits} ${granularity} [${shape}]`;
            assertEqual(toF64(scale.toSync('cpu')), ref.scale, `${label} scale`);
            assertEqual(toF64(q.toSync('cpu')), ref.q, `${label} q`);
            // dequantize inverts it: q * scale, with the granularity inferred from the scale's shape
            // (2-D token and channel scales coincide), and with it given.
            for (const outDtype of DTYPES_FLOAT) {
              const back = await dequantize(q, scale, { outDtype });
              const want = new Float64Array(ref.q.length);
              const len2 = len;
              const per0 = ref.q.length / (shape[0] as number);
              for (let i = 0; i < want.length; i++) {
                const line = Math.floor(i / len2);
                const s =
                  granularity === 'tensor'
                    ? 0
                    : granularity === 'token'
                      ? line
                      : granularity === 'channel'
                        ? Math.floor(i / per0)
                        : line * (len2 / groupSize) + Math.floor((i % len2) / groupSize);
                want[i] = Math.fround((ref.q[i] as number) * (ref.scale[s] as number));
              }
              assertClose(toF64(back.toSync('cpu')), want, TOL[outDtype], `${label} dequantize ${outDtype}`);
              const given = dequantizeSync(
                q,
                scale,
                granularity === 'group' ? { granularity, groupSize, outDtype } : { granularity, outDtype },
              );
              assertClose(toF64(given.toSync('cpu')), want, TOL[outDtype], `${label} dequantize granularity given`);
            }
          }
        });
      }
    }
  }

  it('rounds half to even and clamps', async () => {
    const vals = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, 200, -200, 3.5, -3.49];
    const x = await new Tensor('float32', vals, [vals.length]).to(device);
    const q8 = quantizeSync(x, { scale: 1 }).q;
    expect(Array.from(toF64(q8.toSync('cpu')))).toEqual([0, 2, 2, 0, -2, -2, 126, 127, 127, -127, 4, -3]);
    const q4 = quantizeSync(x, { bits: 4, scale: 1 }).q;
    expect(Array.from(toF64(q4.toSync('cpu')))).toEqual([0, 2, 2, 0, -2, -2, 7, 7, 7, -8, 4, -3]);
    // int4 storage: two per byte, low nibble = even index, two's complement.
    const packed = new Tensor('float32', [1, -2, 7, -8, 3], [5]);
    const p = quantizeSync(await packed.to(device), { bits: 4, scale: 1 })
      .q.toSync('cpu')
      .dataSync() as Uint8Array;
    expect(Array.from(p)).toEqual([0xe1, 0x87, 0x03]);
    // Empty rows and all-zero rows get scale 1 (and q 0).
    expect(Array.from(toF64(quantizeSync(await Tensor.zeros([2, 0]).to(device)).scale.toSync('cpu')))).toEqual([1]);
    expect(
      Array.from(toF64(quantizeSync(await Tensor.zeros([3, 0]).to(device), { granularity: 'token' }).scale.toSync('cpu'))),
    ).toEqual([1, 1, 1]);
    const z = quantizeSync(await Tensor.zeros([2, 3]).to(device), { granularity: 'token' });
    expect(Array.from(toF64(z.scale.toSync('cpu')))).toEqual([1, 1]);
  });

  it('uses a static scale as given', async () => {
    const rng = new Rng(11);
    const { t, v } = randTensor([6, 20], 'bfloat16', () => rng.normal());
    const x = await t.to(device);
    const tokenScale = await new Tensor('float32', [0.01, 0.02, 0.03, 0.04, 0.05, 0.06], [6]).to(device);
    const r = await quantize(x, { granularity: 'token', scale: tokenScale });
    expect(r.scale).toBe(tokenScale);
    const ref = quantizeRef(v, [6, 20], 8, 'token', 0, Math.fround, toF64(tokenScale.toSync('cpu')));
    assertEqual(toF64(r.q.toSync('cpu')), ref.q, 'static token');
    const s = await quantize(x, { bits: 4, scale: 0.25 });
    expect(s.scale.shape).toEqual([]);
    assertEqual(
      toF64(s.q.toSync('cpu')),
      quantizeRef(v, [6, 20], 4, 'tensor', 0, Math.fround, Float64Array.of(0.25)).q,
      'static tensor',
    );
    const gs = await new Tensor('float16', new Uint16Array(6 * 5).fill(f32ToF16(0.1)), [6, 5]).to(device);
    const g = await quantize(x, { granularity: 'group', groupSize: 4, scale: gs });
    const refG = quantizeRef(v, [6, 20], 8, 'group', 4, Math.fround, new Float64Array(30).fill(f16ToF32(f32ToF16(0.1))));
    assertEqual(toF64(g.q.toSync('cpu')), refG.q, 'static group');
  });

  // dequantize's numeric scale is the call's own scalar: the result of a scalar tensor, and nothing of it
  // left alive after the call, whether it returns or throws.
  it('dequantize with a numeric scale leaves no tensor behind', async () => {
    const q = await new Tensor('int8', Int8Array.from([-127, -3, 0, 5, 127, 64]), [2, 3]).to(device);
    const one = await new Tensor('float32', [0.5], []).to(device);
    // Values on the host, the copy made for them disposed.
    const host = (t: Tensor) => {
      const c = t.toSync('cpu');
      const v = toF64(c);
      if (c !== t) c.dispose();
      t.dispose();
      return v;
    };
    const want = host(await dequantize(q, one));
    const live = memory().liveTensors;
    const a = await dequantize(q, 0.5);
    const b = dequantizeSync(q, 0.5);
    expect(memory().liveTensors).toBe(live + 2);
    assertEqual(host(a), want, 'async');
    assertEqual(host(b), want, 'sync');
    await expect(dequantize(q, 0.5, { granularity: 'token' })).rejects.toThrow(RangeError);
    expect(() => dequantizeSync(q, 0.5, { granularity: 'token' })).toThrow(RangeError);
    expect(memory().liveTensors).toBe(live);
    q.dispose();
    one.dispose();
  });

  // The fused rotation equals hadamard(x, 1 / sqrt(n)) then quantize, bit for bit in float32.
  for (const [shape, granularity] of [
    [[4, 64], 'token'],
    [[3, 96], 'tensor'],
    [[5, 40], 'channel'],
    [[2, 1536], 'group'],
    [[1, 5120], 'token'],
  ] as const) {
    it(`fuses the Hadamard rotation: [${shape}] ${granularity}`, async () => {
      const rng = new Rng(shape[1]);
      const { t } = randTensor([...shape], 'float32', () => rng.normal());
      const x = await t.to(device);
      const opts = { granularity, bits: 8 as const, ...(granularity === 'group' ? { groupSize: 128 } : {}) };
      const fused = await quantize(x, { ...opts, hadamard: true });
      const rotated = hadamardSync(x, { scale: 1 / Math.sqrt(shape[1]) });
      const chained = quantizeSync(rotated, opts);
      assertEqual(toF64(fused.scale.toSync('cpu')), toF64(chained.scale.toSync('cpu')), 'scale');
      assertEqual(toF64(fused.q.toSync('cpu')), toF64(chained.q.toSync('cpu')), 'q');
    });
  }

  it('rejects bad input', async () => {
    const x = await new Tensor('float32', new Float32Array(24), [4, 6]).to(device);
    const cases: [() => unknown, ErrorConstructor, RegExp][] = [
      [() => quantizeSync(new Tensor('int8', new Int8Array(4), [4])), TypeError, /quantizeSync: x: expected dtype/],
      [() => quantizeSync(new Tensor('float32', [1], [])), RangeError, /quantizeSync: x: expected at least 1 dimension/],
      [() => quantizeSync(x, { bits: 3 as never }), RangeError, /quantizeSync: options.bits/],
      [() => quantizeSync(x, { bits: '8' as never }), TypeError, /quantizeSync: options.bits/],
      [() => quantizeSync(x, { granularity: 'row' as never }), RangeError, /quantizeSync: options.granularity/],
      [() => quantizeSync(x, { granularity: 'group', groupSize: 4 }), RangeError, /quantizeSync: options.groupSize/],
      [() => quantizeSync(x, { granularity: 'group' }), RangeError, /quantizeSync: options.groupSize/],
      [() => quantizeSync(x, { granularity: 'token', groupSize: 2 }), RangeError, /quantizeSync: options.groupSize/],
      [() => quantizeSync(x, { granularity: 'group', groupSize: 2.5 }), RangeError, /quantizeSync: options.groupSize/],
      [() => quantizeSync(x, { hadamard: true }), RangeError, /quantizeSync: x: .*options.hadamard/],
      [() => quantizeSync(x, { hadamard: 1 as never }), TypeError, /quantizeSync: options.hadamard/],
      [() => quantizeSync(x, { scale: -1 }), RangeError, /quantizeSync: options.scale/],
      [() => quantizeSync(x, { granularity: 'token', scale: 1 }), TypeError, /quantizeSync: options.scale/],
      [
        () => quantizeSync(x, { granularity: 'token', scale: Tensor.zeros([3]) }),
        RangeError,
        /quantizeSync: options.scale: expected shape \[4\]/,
      ],
      [() => quantizeSync(x, { scale: new Tensor('int8', [1], [1]) }), TypeError, /quantizeSync: options.scale/],
      [() => quantizeSync(x, { bogus: 1 } as never), TypeError, /quantizeSync: options.bogus/],
      [() => dequantizeSync(x, 1), TypeError, /dequantizeSync: q: expected dtype int8 \| int4/],
      [() => dequantizeSync(quantizeSync(x).q, Tensor.zeros([5])), RangeError, /dequantizeSync: scale: expected a scale shape/],
      [
        () => dequantizeSync(quantizeSync(x).q, Tensor.zeros([4]), { granularity: 'group' }),
        RangeError,
        /dequantizeSync: options.groupSize/,
      ],
      [() => dequantizeSync(quantizeSync(x).q, 1, { outDtype: 'int8' as never }), RangeError, /dequantizeSync: options.outDtype/],
      [
        () => dequantizeSync(quantizeSync(x).q, 1, { granularity: 'token' }),
        RangeError,
        /dequantizeSync: scale: expected shape \[4\]/,
      ],
      [() => dequantizeSync(quantizeSync(x).q, new Tensor('int32', [1], [1])), TypeError, /dequantizeSync: scale/],
    ];
    for (const [f, cls, msg] of cases) {
      expect(f).toThrow(cls);
      expect(f).toThrow(msg);
    }
    await expect(quantize(x, { bits: 5 as never })).rejects.toThrow(RangeError);
    await expect(dequantize(x as never, 1)).rejects.toThrow(TypeError);
  });
});
