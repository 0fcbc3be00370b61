// float16/bfloat16 conversions: every bit pattern round-trips, halfway cases round to even, the golden
// files' 16-bit tensors round-trip exactly, and the native kernels' conversions agree with ours.
import { describe, expect, it } from 'vitest';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, packInt4, unpackInt4 } from '../dist/cjs/dtype.js';
import { hadamardSync, Tensor } from '../dist/cjs/index.js';
import { goldenCases, loadGolden } from './util';

const f32 = (x: number) => Math.fround(x);

describe('bfloat16', () => {
  it('round-trips every bit pattern (NaN stays NaN)', () => {
    for (let h = 0; h < 65536; h++) {
      const x = bf16ToF32(h);
      if (Number.isNaN(x)) expect(Number.isNaN(bf16ToF32(f32ToBf16(x)))).toBe(true);
      else expect(f32ToBf16(x)).toBe(h);
    }
  });
  it('rounds half to even', () => {
    // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: even is 1. 1 + 3*2^-8 is halfway to 1 + 2^-6.
    expect(f32ToBf16(1 + 2 ** -8)).toBe(0x3f80);
    expect(f32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(f32ToBf16(f32(1 + 2 ** -8 + 2 ** -20))).toBe(0x3f81);
    expect(f32ToBf16(3.4e38 * 10)).toBe(0x7f80);
    expect(f32ToBf16(-0)).toBe(0x8000);
  });
});

describe('float16', () => {
  it('round-trips every bit pattern (NaN stays NaN)', () => {
    for (let h = 0; h < 65536; h++) {
      const x = f16ToF32(h);
      if (Number.isNaN(x)) expect(Number.isNaN(f16ToF32(f32ToF16(x)))).toBe(true);
      else expect(f32ToF16(x)).toBe(h);
    }
  });
  it('rounds half to even, to subnormals and to infinity', () => {
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00);
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(f32ToF16(65504)).toBe(0x7bff);
    expect(f32ToF16(65519.99)).toBe(0x7bff);
    expect(f32ToF16(65520)).toBe(0x7c00);
    expect(f32ToF16(2 ** -24)).toBe(0x0001);
    expect(f32ToF16(2 ** -25)).toBe(0x0000);
    expect(f32ToF16(3 * 2 ** -25)).toBe(0x0002);
    expect(f32ToF16(-(2 ** -14))).toBe(0x8400);
    expect(f32ToF16(f32(2 ** -14 - 2 ** -25))).toBe(0x0400);
  });
  it('agrees with an exhaustive float64 nearest-even search on random float32 values', () => {
    let s = 12345;
    for (let i = 0; i < 20000; i++) {
      s = (s * 1103515245 + 12345) >>> 0;
      const x = f32((s / 2 ** 32 - 0.5) * 2 ** ((s % 40) - 20));
      const h = f32ToF16(x);
      const y = f16ToF32(h);
      // Neighbours one ulp either side must be no closer (ties go to the even mantissa).
      for (const n of [h - 1, h + 1]) {
        if ((n & 0x7c00) === 0x7c00 || n < 0 || ((n ^ h) & 0x8000) !== 0) continue;
        const dn = Math.abs(f16ToF32(n) - x);
        const dh = Math.abs(y - x);
        expect(dh < dn || (dh === dn && (h & 1) === 0)).toBe(true);
      }
    }
  });
});

describe('native conversions agree', () => {
  it.each(['float16', 'bfloat16'] as const)('%s bits -> float32 -> bits in C++ (hadamard of length 1)', (dtype) => {
    const bits = new Uint16Array(65536).map((_, i) => i);
    const out = hadamardSync(new Tensor(dtype, bits, [65536, 1])).dataSync() as Uint16Array;
    const decode = dtype === 'float16' ? f16ToF32 : bf16ToF32;
    for (let h = 0; h < 65536; h++) {
      if (Number.isNaN(decode(h))) expect(Number.isNaN(decode(out[h] as number))).toBe(true);
      else expect(out[h]).toBe(h);
    }
  });
});

describe('golden 16-bit tensors', () => {
  it('round-trip exactly through float32', () => {
    let checked = 0;
    for (const op of ['selectiveScan', 'gemmW4A16']) {
      for (const c of goldenCases(op)) {
        for (const [name, t] of Object.entries(loadGolden(c.file))) {
          if (t.dtype !== 'float16' && t.dtype !== 'bfloat16') continue;
          const back = t.cast('float32').cast(t.dtype).dataSync();
          expect(Array.from(back as Uint16Array), `${c.file}:${name}`).toEqual(Array.from(t.dataSync() as Uint16Array));
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThan(5);
  });
});

describe('int4 packing', () => {
  it('packs low nibble first, two per byte, rows padded', () => {
    const v = [-8, 7, -1, 0, 3, 1, 2, -3, -5];
    const p = packInt4(v, 3);
    expect(Array.from(p)).toEqual([0x78, 0x0f, 0x30, 0x01, 0xd2, 0x0b]);
    expect(Array.from(unpackInt4(p, 3))).toEqual(v);
  });
});
