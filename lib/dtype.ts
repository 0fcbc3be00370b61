/**
 * Element types: their names, the codes shared with the native addon, the TypedArray that holds each,
 * and the float16/bfloat16 conversions (round to nearest even, NaN kept quiet).
 */

/** Element type of a {@link Tensor}. float16/bfloat16 hold bit patterns; int4 packs two per byte. */
export type DType = 'float32' | 'float16' | 'bfloat16' | 'int8' | 'uint8' | 'int32' | 'int4' | 'float64';

/** The TypedArray that holds each dtype's storage. */
export interface ArrayMap {
  float32: Float32Array;
  float16: Uint16Array;
  bfloat16: Uint16Array;
  int8: Int8Array;
  uint8: Uint8Array;
  int32: Int32Array;
  int4: Uint8Array;
  float64: Float64Array;
}
export type ArrayFor<D extends DType> = ArrayMap[D];
export type AnyArray = ArrayMap[DType];

export const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'int8', 'uint8', 'int32', 'int4', 'float64'];

/** Codes of native/include/ssmkit/dtype.h. */
export const DTYPE_CODE: Readonly<Record<DType, number>> = {
  float32: 0,
  float16: 1,
  bfloat16: 2,
  int8: 3,
  uint8: 4,
  int32: 5,
  int4: 6,
  float64: 7,
};

export const FLOAT_DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16'];

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

type ArrayCtor = {
  new (n: number): AnyArray;
  new (b: ArrayBufferLike, off: number, n: number): AnyArray;
  BYTES_PER_ELEMENT: number;
};

const CTORS: Readonly<Record<DType, ArrayCtor>> = {
  float32: Float32Array,
  float16: Uint16Array,
  bfloat16: Uint16Array,
  int8: Int8Array,
  uint8: Uint8Array,
  int32: Int32Array,
  int4: Uint8Array,
  float64: Float64Array,
} as unknown as Record<DType, ArrayCtor>;

export function arrayCtor(dtype: DType): ArrayCtor {
  return CTORS[dtype];
}

/** Number of elements of the shape (1 for a scalar). */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Length of the TypedArray that stores a tensor of this dtype and shape (int4: packed bytes). */
export function storageLength(dtype: DType, shape: readonly number[]): number {
  if (dtype !== 'int4' || shape.length === 0) return shapeSize(shape);
  const last = shape[shape.length - 1] as number;
  return shapeSize(shape.slice(0, -1)) * Math.ceil(last / 2);
}

export function byteLength(dtype: DType, shape: readonly number[]): number {
  return storageLength(dtype, shape) * CTORS[dtype].BYTES_PER_ELEMENT;
}

/** A new zero-filled array for a tensor of this dtype and shape. */
export function allocArray<D extends DType>(dtype: D, shape: readonly number[]): ArrayFor<D> {
  return new CTORS[dtype](storageLength(dtype, shape)) as ArrayFor<D>;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function bf16ToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0] as number;
}

export function f32ToBf16(x: number): number {
  f32[0] = x;
  const u = u32[0] as number;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  if (exp === 0) return sign * mant * 2 ** -24;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function f32ToF16(x: number): number {
  f32[0] = x;
  let u = u32[0] as number;
  const sign = (u >>> 16) & 0x8000;
  u &= 0x7fffffff;
  if (u > 0x7f800000) return sign | 0x7e00 | ((u >>> 13) & 0x3ff);
  if (u >= 0x477ff000) return sign | 0x7c00;
  if (u < 0x38800000) {
    if (u < 0x33000000) return sign;
    const e = u >>> 23;
    const m = (u & 0x7fffff) | 0x800000;
    const shift = 126 - e;
    let r = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  u = u + 0xfff + ((u >>> 13) & 1);
  return sign | ((u - 0x38000000) >>> 13);
}

/** Decodes float16/bfloat16 bits, or copies any other float array, into a new Float32Array. */
export function toFloat32(dtype: DType, src: AnyArray): Float32Array {
  const n = src.length;
  const out = new Float32Array(n);
  if (dtype === 'bfloat16') {
    const o = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) o[i] = ((src[i] as number) & 0xffff) << 16;
  } else if (dtype === 'float16') {
    for (let i = 0; i < n; i++) out[i] = f16ToF32(src[i] as number);
  } else {
    for (let i = 0; i < n; i++) out[i] = src[i] as number;
  }
  return out;
}

/** Encodes numbers into a new array of a float dtype (float16/bfloat16 as bits, rounded to nearest even). */
export function fromNumbers(dtype: DType, src: ArrayLike<number>): AnyArray {
  const n = src.length;
  const out = new CTORS[dtype](n);
  if (dtype === 'bfloat16') {
    for (let i = 0; i < n; i++) out[i] = f32ToBf16(src[i] as number);
  } else if (dtype === 'float16') {
    for (let i = 0; i < n; i++) out[i] = f32ToF16(src[i] as number);
  } else {
    for (let i = 0; i < n; i++) out[i] = src[i] as number;
  }
  return out;
}

/** Packs int4 values (-8..7), rows of `last` along the last dimension, two per byte, low nibble first. */
export function packInt4(values: ArrayLike<number>, last: number): Uint8Array {
  const rows = last === 0 ? 0 : values.length / last;
  const rowBytes = Math.ceil(last / 2);
  const out = new Uint8Array(rows * rowBytes);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < last; k++) {
      const v = (values[r * last + k] as number) & 0xf;
      const b = r * rowBytes + (k >> 1);
      out[b] = (out[b] as number) | (k & 1 ? v << 4 : v);
    }
  }
  return out;
}

/** Unpacks int4 storage into an Int8Array of `rows * last` values in -8..7. */
export function unpackInt4(packed: Uint8Array, last: number): Int8Array {
  const rowBytes = Math.ceil(last / 2);
  const rows = rowBytes === 0 ? 0 : packed.length / rowBytes;
  const out = new Int8Array(rows * last);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < last; k++) {
      const b = packed[r * rowBytes + (k >> 1)] as number;
      const nib = k & 1 ? b >> 4 : b & 0xf;
      out[r * last + k] = nib >= 8 ? nib - 16 : nib;
    }
  }
  return out;
}
