/**
 * The quantization family (Quamba, Quamba2, Marlin, fast-hadamard-transform): hadamard, quantize and
 * dequantize, the int8/int4 GEMMs (gemmW8A8, gemmW4A8, gemmW4A16) and packWeights.
 */
import { native } from '../backend';
import { type DType, FLOAT_DTYPES } from '../dtype';
import { describe, rangeError, typeError } from '../errors';
import { Tensor } from '../tensor';
import { boolOption, commonDevice, enumOption, maxArgs, numberOption, options, optTensor, tensorArg } from '../validate';
import { callAsync, callSync } from './run';

type FloatDType = 'float32' | 'float16' | 'bfloat16';
const OUT_DTYPES: readonly FloatDType[] = ['float32', 'float16', 'bfloat16'];

const shapeStr = (s: readonly number[]): string => `[${s.join(', ')}]`;
const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i]);
const lastDim = (t: Tensor): number => (t.shape.length === 0 ? 1 : (t.shape[t.shape.length - 1] as number));

/** n = m * 2^k with m in {1, 12, 20, 28, 40}. */
function hadamardLength(n: number): boolean {
  for (const m of [1, 12, 20, 28, 40]) {
    if (n % m !== 0) continue;
    const q = n / m;
    if (q >= 1 && (q & (q - 1)) === 0) return true;
  }
  return false;
}
function bitsOption(op: string, v: unknown, fallback: 8 | 4): 8 | 4 {
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw typeError(op, 'options.bits', '8 or 4', v);
  if (v !== 8 && v !== 4) throw rangeError(op, 'options.bits', '8 or 4', `${v}`);
  return v;
}

const HADAMARD_LENGTHS = 'a last dimension of 2^k, or 12, 20, 28 or 40 times 2^k';

// ---------------------------------------------------------------------------------------------------
// hadamard

export interface HadamardOptions {
  /** Multiplies the transform (default 1; 1/sqrt(n) makes it orthonormal). */
  scale?: number;
}

function prepareHadamard(op: string, x: unknown, opts: unknown) {
  const t = tensorArg(op, 'x', x, FLOAT_DTYPES);
  const o = options<HadamardOptions>(op, opts, ['scale']);
  const scale = numberOption(op, 'options.scale', o.scale, 1);
  if (!hadamardLength(lastDim(t))) throw rangeError(op, 'x', HADAMARD_LENGTHS, shapeStr(t.shape));
  const device = commonDevice(op, [['x', t]]);
  const out = Tensor._alloc(op, t.dtype, t.shape, device);
  return { out, args: { x: t._native(op, 'x'), out: out._native(op, 'out'), scale } };
}

/**
 * Fast Walsh-Hadamard transform over the last dimension, times `scale`; math in float32, output in x's
 * dtype. n = 2^k uses the Sylvester order; n = m * 2^k with m in {12, 20, 28, 40} (Mamba widths such as
 * 1536, 3072, 5120) computes (H_m kron H_{2^k}) x with the H_m of Dao-AILab's fast-hadamard-transform
 * (its hadamard_transform_12N / 20N / 28N / 40N). 20 * 2^k with k >= 1 equals 40 * 2^(k-1) and uses H_40,
 * as Quamba does.
 * @param x `[..., n]` float32 | float16 | bfloat16.
 * @returns `[..., n]`, x's dtype.
 * @throws TypeError for a wrong dtype; RangeError for an unsupported length.
 * @example
 * const y = await hadamard(x, { scale: 1 / Math.sqrt(x.shape.at(-1)) });
 */
export async function hadamard(x: Tensor, opts: HadamardOptions = {}): Promise<Tensor> {
  maxArgs('hadamard', arguments.length, 2);
  const { out, args } = prepareHadamard('hadamard', x, opts);
  await callAsync('hadamard', args, [out]);
  return out;
}

/**
 * {@link hadamard} on the calling thread.
 * @example
 * const y = hadamardSync(x);
 */
export function hadamardSync(x: Tensor, opts: HadamardOptions = {}): Tensor {
  maxArgs('hadamardSync', arguments.length, 2);
  const { out, args } = prepareHadamard('hadamardSync', x, opts);
  callSync('hadamard', args, [out]);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// quantize / dequantize

export type QuantGranularity = 'tensor' | 'token' | 'channel' | 'group';
const GRANULARITIES: readonly QuantGranularity[] = ['tensor', 'token', 'channel', 'group'];
const GRANULARITY_CODE: Readonly<Record<QuantGranularity, number>> = { tensor: 0, token: 1, channel: 2, group: 3 };

export interface QuantizeOptions {
  /** 8 (int8, clamped to [-127, 127]) or 4 (int4, clamped to [-8, 7]); default 8. */
  bits?: 8 | 4;
  /**
   * One scale for the whole tensor (`'tensor'`, the default), per row of the last dimension (`'token'`),
   * per index of dimension 0 (`'channel'`: a weight's output channel), or per `groupSize` values along
   * the last dimension (`'group'`).
   */
  granularity?: QuantGranularity;
  /** Values per group for `'group'` (default 128); must divide the last dimension. */
  groupSize?: number;
  /** A static (calibrated) scale, shaped as the returned one; a number for `'tensor'`. */
  scale?: Tensor | number;
  /** Rotate each row by `hadamard(x, { scale: 1 / sqrt(n) })` first, fused (Quamba's rotated inputs). */
  hadamard?: boolean;
}

export interface QuantizeResult {
  /** `x.shape`, int8 (bits 8) or int4 (bits 4). */
  q: Tensor;
  /** The scale: computed, or the static one given. */
  scale: Tensor;
}

/** The scale shape of a granularity for a tensor of shape `s`. */
function scaleShape(g: QuantGranularity, s: readonly number[], groupSize: number): number[] {
  switch (g) {
    case 'tensor':
      return [];
    case 'token':
      return s.slice(0, -1);
    case 'channel':
      return [s[0] as number];
    default:
      return [...s.slice(0, -1), (s[s.length - 1] as number) / groupSize];
  }
}

function groupSizeOption(op: string, v: unknown, len: number, fallback: number): number {
  if (v === undefined) {
    if (len % fallback !== 0) {
      throw rangeError(
        op,
        'options.groupSize',
        `a divisor of the last dimension ${len} (default ${fallback} does not divide it)`,
        'undefined',
      );
    }
    return fallback;
  }
  if (typeof v !== 'number') throw typeError(op, 'options.groupSize', 'a positive integer', v);
  if (!Number.isInteger(v) || v < 1 || len % v !== 0) {
    throw rangeError(op, 'options.groupSize', `a positive integer that divides the last dimension ${len}`, `${v}`);
  }
  return v;
}

function prepareQuantize(op: string, x: unknown, opts: unknown) {
  const t = tensorArg(op, 'x', x, FLOAT_DTYPES);
  if (t.shape.length === 0) throw rangeError(op, 'x', 'at least 1 dimension', 'a scalar');
  const o = options<QuantizeOptions>(op, opts, ['bits', 'granularity', 'groupSize', 'scale', 'hadamard']);
  const bits = bitsOption(op, o.bits, 8);
  const granularity = enumOption(op, 'options.granularity', o.granularity, GRANULARITIES, 'tensor');
  const len = lastDim(t);
  if (granularity !== 'group' && o.groupSize !== undefined) {
    throw rangeError(op, 'options.groupSize', "no groupSize unless granularity is 'group'", `${describe(o.groupSize)}`);
  }
  const groupSize = granularity === 'group' ? groupSizeOption(op, o.groupSize, len, 128) : 0;
  const rotate = boolOption(op, 'options.hadamard', o.hadamard, false);
  if (rotate && !hadamardLength(len)) throw rangeError(op, 'x', `${HADAMARD_LENGTHS} for options.hadamard`, shapeStr(t.shape));
  const shape = scaleShape(granularity, t.shape, groupSize);
  let scale: Tensor;
  let isStatic = false;
  if (o.scale === undefined) {
    scale = Tensor._alloc(op, granularity === 'group' ? t.dtype : 'float32', shape, t._deviceIndex);
  } else if (typeof o.scale === 'number') {
    if (granularity !== 'tensor') {
      throw typeError(op, 'options.scale', `a Tensor of shape ${shapeStr(shape)} for granularity '${granularity}'`, 'a number');
    }
    if (!Number.isFinite(o.scale) || o.scale <= 0)
      throw rangeError(op, 'options.scale', 'a positive finite number', `${o.scale}`);
    scale = Tensor._scalar(op, o.scale, t._deviceIndex);
    isStatic = true;
  } else {
    scale = tensorArg(op, 'options.scale', o.scale, FLOAT_DTYPES);
    const ok = granularity === 'tensor' ? scale.size === 1 : sameShape(scale.shape, shape);
    if (!ok) throw rangeError(op, 'options.scale', `shape ${shapeStr(shape)}`, shapeStr(scale.shape));
    isStatic = true;
  }
  const device = commonDevice(op, [
    ['x', t],
    ['options.scale', scale],
  ]);
  const q = Tensor._alloc(op, bits === 4 ? 'int4' : 'int8', t.shape, device);
  // A 1-D tensor's channels are its elements: groups of one value.
  const [g, gs] = granularity === 'channel' && t.shape.length === 1 ? (['group', 1] as const) : [granularity, groupSize];
  const args = {
    x: t._native(op, 'x'),
    q: q._native(op, 'q'),
    scale: scale._native(op, 'scale'),
    bits,
    granularity: GRANULARITY_CODE[g],
    groupSize: gs,
    static: isStatic,
    hadamard: rotate,
  };
  return { q, scale, isStatic, args };
}

/**
 * Symmetric quantization, round half to even: `q = clamp(rint(x / scale), -127, 127)` (8 bits) or
 * `clamp(..., -8, 7)` (4 bits). A computed scale is `amax / 127` (or `amax / 7`) over what it covers,
 * and 1 where that is all zeros; it is float32, except for `'group'`, where it takes x's dtype (the
 * layout gemmW4A16 takes) and q divides by the rounded value, so that dequantize inverts q exactly.
 * With `hadamard: true` the rows are rotated first, in float32.
 * @param x `[..., n]` float32 | float16 | bfloat16.
 * @returns `{ q, scale }`: q `x.shape` int8 | int4; scale `[]` (tensor), `x.shape[:-1]` (token),
 * `[x.shape[0]]` (channel) or `[..., n / groupSize]` (group).
 * @throws TypeError for a wrong dtype or option type; RangeError for a bad shape, groupSize or scale.
 * @example
 * const { q, scale } = await quantize(w, { bits: 4, granularity: 'group', groupSize: 128 });
 */
export async function quantize(x: Tensor, opts: QuantizeOptions = {}): Promise<QuantizeResult> {
  maxArgs('quantize', arguments.length, 2);
  const { q, scale, isStatic, args } = prepareQuantize('quantize', x, opts);
  await callAsync('quantize', args, [q, isStatic ? undefined : scale]);
  return { q, scale };
}

/**
 * {@link quantize} on the calling thread.
 * @example
 * const { q, scale } = quantizeSync(x, { granularity: 'token' });
 */
export function quantizeSync(x: Tensor, opts: QuantizeOptions = {}): QuantizeResult {
  maxArgs('quantizeSync', arguments.length, 2);
  const { q, scale, isStatic, args } = prepareQuantize('quantizeSync', x, opts);
  callSync('quantize', args, [q, isStatic ? undefined : scale]);
  return { q, scale };
}

export interface DequantizeOptions {
  /** How `scale` maps onto q (see {@link QuantizeOptions.granularity}); inferred from its shape if left out. */
  granularity?: QuantGranularity;
  /** Values per group for `'group'`; inferred from the scale's shape if left out. */
  groupSize?: number;
  /** float32 (default), float16 or bfloat16. */
  outDtype?: FloatDType;
}

function inferGranularity(q: Tensor, scale: Tensor): [QuantGranularity, number] | undefined {
  const s = q.shape;
  if (scale.size === 1 && scale.shape.length <= 1) return ['tensor', 0];
  if (sameShape(scale.shape, s.slice(0, -1))) return ['token', 0];
  if (s.length >= 2 && sameShape(scale.shape, [s[0] as number])) return ['channel', 0];
  const len = lastDim(q);
  const groups = scale.shape[scale.shape.length - 1] as number;
  if (
    scale.shape.length === s.length &&
    sameShape(scale.shape.slice(0, -1), s.slice(0, -1)) &&
    groups > 0 &&
    len % groups === 0
  ) {
    return ['group', len / groups];
  }
  return undefined;
}

function prepareDequantize(op: string, q: unknown, scale: unknown, opts: unknown) {
  const qt = tensorArg(op, 'q', q, ['int8', 'int4']);
  if (qt.shape.length === 0) throw rangeError(op, 'q', 'at least 1 dimension', 'a scalar');
  let st: Tensor;
  // A number becomes a scalar of the call's own (temps: disposed after it, or on a throw).
  const temps: Tensor[] = [];
  if (typeof scale === 'number') {
    if (!Number.isFinite(scale)) throw rangeError(op, 'scale', 'a finite number', `${scale}`);
    st = Tensor._scalar(op, scale, qt._deviceIndex);
    temps.push(st);
  } else {
    st = tensorArg(op, 'scale', scale, FLOAT_DTYPES);
  }
  try {
    const o = options<DequantizeOptions>(op, opts, ['granularity', 'groupSize', 'outDtype']);
    const outDtype = enumOption(op, 'options.outDtype', o.outDtype, OUT_DTYPES, 'float32');
    let granularity: QuantGranularity;
    let groupSize = 0;
    if (o.granularity === undefined) {
      const inferred = inferGranularity(qt, st);
      if (inferred === undefined) {
        throw rangeError(op, 'scale', `a scale shape that fits q of shape ${shapeStr(qt.shape)}`, shapeStr(st.shape));
      }
      [granularity, groupSize] = inferred;
      if (o.groupSize !== undefined && o.groupSize !== groupSize) {
        throw rangeError(op, 'options.groupSize', `${groupSize || 'none'} (from the scale's shape)`, `${describe(o.groupSize)}`);
      }
    } else {
      granularity = enumOption(op, 'options.granularity', o.granularity, GRANULARITIES, 'tensor');
      const len = lastDim(qt);
      if (granularity === 'group') {
        const fromShape = st.shape.length > 0 ? len / (st.shape[st.shape.length - 1] as number) : 0;
        groupSize = groupSizeOption(
          op,
          o.groupSize ?? (Number.isInteger(fromShape) && fromShape > 0 ? fromShape : undefined),
          len,
          128,
        );
      } else if (o.groupSize !== undefined) {
        throw rangeError(op, 'options.groupSize', "no groupSize unless granularity is 'group'", `${describe(o.groupSize)}`);
      }
      const want = scaleShape(granularity, qt.shape, groupSize);
      const ok = granularity === 'tensor' ? st.size === 1 : sameShape(st.shape, want);
      if (!ok) throw rangeError(op, 'scale', `shape ${shapeStr(want)} for granularity '${granularity}'`, shapeStr(st.shape));
    }
    if (granularity === 'channel' && qt.shape.length === 1) [granularity, groupSize] = ['group', 1];
    const device = commonDevice(op, [
      ['q', qt],
      ['scale', st],
    ]);
    const out = Tensor._alloc(op, outDtype, qt.shape, device);
    const args = {
      q: qt._native(op, 'q'),
      scale: st._native(op, 'scale'),
      out: out._native(op, 'out'),
      granularity: GRANULARITY_CODE[granularity],
      groupSize,
    };
    return { out, args, temps };
  } catch (e) {
    for (const t of temps) t.dispose();
    throw e;
  }
}

/**
 * The inverse of {@link quantize}: `out = q * scale`, each value with the scale that covers it.
 * @param q `[..., n]` int8 | int4.
 * @param scale float32 | float16 | bfloat16 shaped as quantize returns it, or a number (one scale).
 * @returns `q.shape`, `options.outDtype` (float32 by default).
 * @throws TypeError for a wrong dtype; RangeError for a scale shape that fits no granularity.
 * @example
 * const x = await dequantize(q, scale);
 */
export async function dequantize(q: Tensor, scale: Tensor | number, opts: DequantizeOptions = {}): Promise<Tensor> {
  maxArgs('dequantize', arguments.length, 3);
  const { out, args, temps } = prepareDequantize('dequantize', q, scale, opts);
  try {
    await callAsync('dequantize', args, [out]);
  } finally {
    for (const t of temps) t.dispose();
  }
  return out;
}

/**
 * {@link dequantize} on the calling thread.
 * @example
 * const x = dequantizeSync(q, scale, { outDtype: 'bfloat16' });
 */
export function dequantizeSync(q: Tensor, scale: Tensor | number, opts: DequantizeOptions = {}): Tensor {
  maxArgs('dequantizeSync', arguments.length, 3);
  const { out, args, temps } = prepareDequantize('dequantizeSync', q, scale, opts);
  try {
    callSync('dequantize', args, [out]);
  } finally {
    for (const t of temps) t.dispose();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// packWeights

/**
 * Weights repacked by {@link packWeights} into the layout the GEMM kernels stream; accepted by
 * gemmW8A8 (bits 8), gemmW4A8 and gemmW4A16 (bits 4) in place of `w`. Opaque: its bytes are not a
 * stable format.
 */
export class PackedWeight {
  /** 8 or 4. */
  readonly bits: 8 | 4;
  /** `[N, K]` of the weights it holds. */
  readonly shape: readonly [number, number];
  /** The group size it was packed for, if one was given. */
  readonly groupSize: number | undefined;
  readonly #data: Tensor;

  /** @internal */
  constructor(bits: 8 | 4, shape: readonly [number, number], groupSize: number | undefined, data: Tensor) {
    this.bits = bits;
    this.shape = Object.freeze([shape[0], shape[1]] as [number, number]);
    this.groupSize = groupSize;
    this.#data = data;
  }

  /** Where the packed bytes live. */
  get device(): Tensor['device'] {
    return this.#data.device;
  }

  /** True once dispose() has run. */
  get isDisposed(): boolean {
    return this.#data.isDisposed;
  }

  /** @internal The packed bytes. */
  get _data(): Tensor {
    return this.#data;
  }

  /**
   * Releases the packed bytes; idempotent. Any later use throws.
   * @example
   * pw.dispose();
   */
  dispose(): void {
    this.#data.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `PackedWeight(int${this.bits}, [${this.shape.join(', ')}], ${this.device}${this.isDisposed ? ', disposed' : ''})`;
  }
}

export interface PackWeightsOptions {
  /** 8 for int8 weights, 4 for int4; inferred from w's dtype when left out (and must match it). */
  bits?: 8 | 4;
  /**
   * The group size of the scales the weight will be used with: gemmW4A16 takes it as its default and
   * rejects another; gemmW4A8 rejects other group-wise scales (per-channel scales stay allowed).
   */
  groupSize?: number;
}

/** groupSize must be a multiple of 8 that divides K, or K itself (per-channel). */
function checkGroupSize(op: string, gs: unknown, k: number): number {
  if (typeof gs !== 'number') throw typeError(op, 'options.groupSize', 'a positive integer', gs);
  if (!Number.isInteger(gs) || gs < 1 || (gs !== k && (gs % 8 !== 0 || k % gs !== 0))) {
    throw rangeError(op, 'options.groupSize', `a multiple of 8 that divides K = ${k}, or ${k}`, `${gs}`);
  }
  return gs;
}

function preparePack(op: string, w: unknown, opts: unknown) {
  const t = tensorArg(op, 'w', w, ['int8', 'int4'], 2);
  const o = options<PackWeightsOptions>(op, opts, ['bits', 'groupSize']);
  const fromDtype = t.dtype === 'int8' ? 8 : 4;
  const bits = bitsOption(op, o.bits, fromDtype);
  if (bits !== fromDtype) throw rangeError(op, 'options.bits', `${fromDtype} for ${t.dtype} weights`, `${bits}`);
  const [n, k] = t.shape as [number, number];
  const groupSize = o.groupSize === undefined ? undefined : checkGroupSize(op, o.groupSize, k);
  const device = commonDevice(op, [['w', t]]);
  const bytes = native().packedWeightBytes(n, k, bits) as number;
  const out = Tensor._alloc(op, 'uint8', [bytes], device);
  const packed = new PackedWeight(bits, [n, k], groupSize, out);
  return { packed, out, args: { w: t._native(op, 'w'), out: out._native(op, 'out'), n, k, bits } };
}

/**
 * Repacks weights once into the layout the GEMMs read fastest (columns in panels of 16, k in steps of
 * 4 or 8, stored unsigned for VNNI), so that each later call streams them without repacking.
 * @param w `[N, K]` int8 (for gemmW8A8) or int4 (for gemmW4A8 and gemmW4A16).
 * @returns a {@link PackedWeight}.
 * @throws TypeError for a wrong dtype; RangeError for a bad rank, bits or groupSize.
 * @example
 * const pw = await packWeights(wq, { bits: 4, groupSize: 128 });
 * const y = await gemmW4A16(x, pw, scales, { groupSize: 128 });
 */
export async function packWeights(w: Tensor, opts: PackWeightsOptions = {}): Promise<PackedWeight> {
  maxArgs('packWeights', arguments.length, 2);
  const { packed, out, args } = preparePack('packWeights', w, opts);
  await callAsync('packWeights', args, [out]);
  return packed;
}

/**
 * {@link packWeights} on the calling thread.
 * @example
 * const pw = packWeightsSync(wq);
 */
export function packWeightsSync(w: Tensor, opts: PackWeightsOptions = {}): PackedWeight {
  maxArgs('packWeightsSync', arguments.length, 2);
  const { packed, out, args } = preparePack('packWeightsSync', w, opts);
  callSync('packWeights', args, [out]);
  return packed;
}

// ---------------------------------------------------------------------------------------------------
// The GEMMs

interface WeightArg {
  tensor: Tensor;
  packed: boolean;
  n: number;
  groupSize: number | undefined;
}

/** w as `[N, K]` int8 (bits 8), int4 or uint8 packed bytes `[N, ceil(K / 2)]` (bits 4), or a PackedWeight. */
function weightArg(op: string, w: unknown, bits: 8 | 4, k: number): WeightArg {
  if (w instanceof PackedWeight) {
    if (w.isDisposed) {
      const e = new TypeError(`${op}: w: the packed weight has been disposed`);
      Object.defineProperty(e, 'code', { value: 'ERR_SSMKIT_DISPOSED', enumerable: true });
      throw e;
    }
    if (w.bits !== bits) throw typeError(op, 'w', `a PackedWeight of ${bits} bits`, `one of ${w.bits} bits`);
    if (w.shape[1] !== k) throw rangeError(op, 'w', `a PackedWeight with K = ${k} (a's last dimension)`, shapeStr(w.shape));
    return { tensor: w._data, packed: true, n: w.shape[0], groupSize: w.groupSize };
  }
  const dtypes: DType[] = bits === 8 ? ['int8'] : ['int4', 'uint8'];
  if (!(w instanceof Tensor)) throw typeError(op, 'w', `a Tensor of ${dtypes.join(' | ')} or a PackedWeight`, w);
  const t = tensorArg(op, 'w', w, dtypes, 2);
  const n = t.shape[0] as number;
  const want = t.dtype === 'uint8' ? Math.ceil(k / 2) : k;
  if (t.shape[1] !== want) {
    const what = t.dtype === 'uint8' ? `[N, ${want}] (K = ${k} packed two per byte)` : `[N, ${k}] (K from a's last dimension)`;
    throw rangeError(op, 'w', `shape ${what}`, shapeStr(t.shape));
  }
  // uint8 [N, ceil(K / 2)] holds the same bytes as int4 [N, K]; the kernels read the bytes.
  return { tensor: t, packed: false, n, groupSize: undefined };
}

/** A scale: a number, or a float tensor of one value or of `count` values (shape [count] or `alt`). */
function scaleArg(op: string, arg: string, v: unknown, count: number, alt: readonly number[], device: number): Tensor {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw rangeError(op, arg, 'a finite number', `${v}`);
    return Tensor._scalar(op, v, device);
  }
  const t = tensorArg(op, arg, v, FLOAT_DTYPES);
  const one = t.size === 1 && t.shape.length <= 1;
  if (!one && !sameShape(t.shape, [count]) && !sameShape(t.shape, alt)) {
    throw rangeError(op, arg, `a number, or a shape of [], [1] or [${count}]`, shapeStr(t.shape));
  }
  return t;
}

function activationArg(op: string, arg: string, v: unknown, dtypes: readonly DType[]): { t: Tensor; m: number; k: number } {
  const t = tensorArg(op, arg, v, dtypes);
  if (t.shape.length === 0) throw rangeError(op, arg, 'at least 1 dimension ([M, K])', 'a scalar');
  const k = lastDim(t);
  return { t, m: k === 0 ? 0 : t.size / k, k };
}

export interface GemmW8A8Options {
  /** `[N]` float, added after scaling. */
  bias?: Tensor;
  /** float32 (default), float16 or bfloat16. */
  outDtype?: FloatDType;
}

export interface GemmW4A8Options extends GemmW8A8Options {
  /** Values of k per weight scale when wScale is `[N, K / groupSize]` (inferred from it if left out). */
  groupSize?: number;
}

function prepareIntGemm(
  op: string,
  kind: 'gemmW8A8' | 'gemmW4A8',
  a: unknown,
  w: unknown,
  aScale: unknown,
  wScale: unknown,
  opts: unknown,
) {
  const bits = kind === 'gemmW8A8' ? 8 : 4;
  const { t: at, m, k } = activationArg(op, 'a', a, ['int8']);
  const wa = weightArg(op, w, bits, k);
  const n = wa.n;
  const allowed: (keyof GemmW4A8Options)[] = kind === 'gemmW8A8' ? ['bias', 'outDtype'] : ['bias', 'outDtype', 'groupSize'];
  const o = options<GemmW4A8Options>(op, opts, allowed);
  const outDtype = enumOption(op, 'options.outDtype', o.outDtype, OUT_DTYPES, 'float32');
  const dev = at._deviceIndex;
  // Scales given as numbers become scalars of the call's own (temps: disposed after it, or on a throw).
  const temps: Tensor[] = [];
  const scalar = (arg: string, v: unknown, count: number, alt: readonly number[]): Tensor => {
    const t = scaleArg(op, arg, v, count, alt, dev);
    if (typeof v === 'number') temps.push(t);
    return t;
  };
  try {
    const as = scalar('aScale', aScale, m, at.shape.slice(0, -1));
    let ws: Tensor;
    let groupSize = 0;
    if (kind === 'gemmW4A8' && wScale instanceof Tensor && wScale.shape.length === 2 && (wScale.shape[1] as number) > 1) {
      ws = tensorArg(op, 'wScale', wScale, FLOAT_DTYPES);
      const groups = ws.shape[1] as number;
      if (ws.shape[0] !== n) throw rangeError(op, 'wScale', `shape [${n}, K / groupSize]`, shapeStr(ws.shape));
      groupSize = o.groupSize === undefined ? k / groups : checkGroupSize(op, o.groupSize, k);
      if (!Number.isInteger(groupSize) || groups * groupSize !== k) {
        throw rangeError(op, 'wScale', `shape [${n}, ${k} / groupSize]`, shapeStr(ws.shape));
      }
      checkGroupSize(op, groupSize, k);
    } else {
      ws = scalar('wScale', wScale, n, [n, 1]);
      if (o.groupSize !== undefined && checkGroupSize(op, o.groupSize, k) !== k) {
        throw rangeError(
          op,
          'wScale',
          `shape [${n}, ${k / (o.groupSize as number)}] for options.groupSize ${o.groupSize}`,
          shapeStr(ws.shape),
        );
      }
    }
    if (wa.groupSize !== undefined && groupSize !== 0 && groupSize !== wa.groupSize) {
      throw rangeError(op, 'options.groupSize', `${wa.groupSize} (the PackedWeight's)`, `${groupSize || k}`);
    }
    const bias = optTensor(op, 'options.bias', o.bias, FLOAT_DTYPES);
    if (bias !== undefined && !sameShape(bias.shape, [n]))
      throw rangeError(op, 'options.bias', `shape [${n}]`, shapeStr(bias.shape));
    const device = commonDevice(op, [
      ['a', at],
      ['w', wa.tensor],
      ['aScale', as],
      ['wScale', ws],
      ['options.bias', bias],
    ]);
    const out = Tensor._alloc(op, outDtype, [...at.shape.slice(0, -1), n], device);
    const args = {
      a: at._native(op, 'a'),
      w: wa.tensor._native(op, 'w'),
      aScale: as._native(op, 'aScale'),
      wScale: ws._native(op, 'wScale'),
      bias: bias?._native(op, 'options.bias'),
      out: out._native(op, 'out'),
      m,
      n,
      k,
      groupSize,
      packed: wa.packed,
    };
    return { out, args, temps };
  } catch (e) {
    for (const t of temps) t.dispose();
    throw e;
  }
}

/**
 * int8 x int8 GEMM with exact int32 accumulation and the dequantization fused:
 * `out = (a @ w^T) * aScale * wScale + bias`.
 * @param a `[M, K]` int8 (or `[..., K]`).
 * @param w `[N, K]` int8, or a {@link PackedWeight} of 8 bits.
 * @param aScale a number, `[]`/`[1]` or `[M]` float (per token).
 * @param wScale a number, `[]`/`[1]` or `[N]` float (per channel).
 * @returns `[M, N]` in `options.outDtype` (float32 by default).
 * @throws TypeError for a wrong dtype; RangeError for mismatched shapes.
 * @example
 * const y = await gemmW8A8(aq, await packWeights(wq), aScale, wScale, { bias });
 */
export async function gemmW8A8(
  a: Tensor,
  w: Tensor | PackedWeight,
  aScale: Tensor | number,
  wScale: Tensor | number,
  opts: GemmW8A8Options = {},
): Promise<Tensor> {
  maxArgs('gemmW8A8', arguments.length, 5);
  const { out, args, temps } = prepareIntGemm('gemmW8A8', 'gemmW8A8', a, w, aScale, wScale, opts);
  try {
    await callAsync('gemmW8A8', args, [out]);
  } finally {
    for (const t of temps) t.dispose();
  }
  return out;
}

/**
 * {@link gemmW8A8} on the calling thread.
 * @example
 * const y = gemmW8A8Sync(aq, wq, aScale, wScale);
 */
export function gemmW8A8Sync(
  a: Tensor,
  w: Tensor | PackedWeight,
  aScale: Tensor | number,
  wScale: Tensor | number,
  opts: GemmW8A8Options = {},
): Tensor {
  maxArgs('gemmW8A8Sync', arguments.length, 5);
  const { out, args, temps } = prepareIntGemm('gemmW8A8Sync', 'gemmW8A8', a, w, aScale, wScale, opts);
  try {
    callSync('gemmW8A8', args, [out]);
  } finally {
    for (const t of temps) t.dispose();
  }
  return out;
}

/**
 * int8 activations x int4 weights, each group's products exact in int32:
 * `out = sum_g (a @ w^T)_g * wScale[:, g] * aScale + bias` (one group of K for per-channel weights).
 * @param a `[M, K]` int8 (or `[..., K]`).
 * @param w `[N, K]` int4 (or its bytes as uint8 `[N, ceil(K / 2)]`), or a {@link PackedWeight} of 4 bits.
 * @param aScale a number, `[]`/`[1]` or `[M]` float.
 * @param wScale a number, `[N]` (per channel) or `[N, K / groupSize]` float.
 * @returns `[M, N]` in `options.outDtype` (float32 by default).
 * @throws TypeError for a wrong dtype; RangeError for mismatched shapes or a bad groupSize.
 * @example
 * const y = await gemmW4A8(aq, pw, aScale, wScale);
 */
export async function gemmW4A8(
  a: Tensor,
  w: Tensor | PackedWeight,
  aScale: Tensor | number,
  wScale: Tensor | number,
  opts: GemmW4A8Options = {},
): Promise<Tensor> {
  maxArgs('gemmW4A8', arguments.length, 5);
  const { out, args, temps } = prepareIntGemm('gemmW4A8', 'gemmW4A8', a, w, aScale, wScale, opts);
  try {
    await callAsync('gemmW4A8', args, [out]);
  } finally {
    for (const t of temps) t.dispose();
  }
  return out;
}

/**
 * {@link gemmW4A8} on the calling thread.
 * @example
 * const y = gemmW4A8Sync(aq, wq, aScale, wScale, { outDtype: 'bfloat16' });
 */
export function gemmW4A8Sync(
  a: Tensor,
  w: Tensor | PackedWeight,
  aScale: Tensor | number,
  wScale: Tensor | number,
  opts: GemmW4A8Options = {},
): Tensor {
  maxArgs('gemmW4A8Sync', arguments.length, 5);
  const { out, args, temps } = prepareIntGemm('gemmW4A8Sync', 'gemmW4A8', a, w, aScale, wScale, opts);
  try {
    callSync('gemmW4A8', args, [out]);
  } finally {
    for (const t of temps) t.dispose();
  }
  return out;
}

export interface GemmW4A16Options {
  /** Values of k per scale (default 128): a multiple of 8 that divides K, or K. */
  groupSize?: number;
  /** `[N]` float, added at the end. */
  bias?: Tensor;
  /** The output dtype; x's dtype by default. */
  outDtype?: FloatDType;
}

function prepareW4A16(op: string, x: unknown, w: unknown, scales: unknown, opts: unknown) {
  const { t: xt, m, k } = activationArg(op, 'x', x, FLOAT_DTYPES);
  const wa = weightArg(op, w, 4, k);
  const n = wa.n;
  const o = options<GemmW4A16Options>(op, opts, ['groupSize', 'bias', 'outDtype']);
  const groupSize = checkGroupSize(op, o.groupSize ?? wa.groupSize ?? 128, k);
  if (wa.groupSize !== undefined && groupSize !== wa.groupSize) {
    throw rangeError(op, 'options.groupSize', `${wa.groupSize} (the PackedWeight's)`, `${groupSize}`);
  }
  const st = tensorArg(op, 'scales', scales, FLOAT_DTYPES);
  if (!sameShape(st.shape, [n, k / groupSize])) {
    throw rangeError(op, 'scales', `shape [${n}, ${k / groupSize}] ([N, K / groupSize])`, shapeStr(st.shape));
  }
  const outDtype = enumOption(op, 'options.outDtype', o.outDtype, OUT_DTYPES, xt.dtype as FloatDType);
  const bias = optTensor(op, 'options.bias', o.bias, FLOAT_DTYPES);
  if (bias !== undefined && !sameShape(bias.shape, [n]))
    throw rangeError(op, 'options.bias', `shape [${n}]`, shapeStr(bias.shape));
  const device = commonDevice(op, [
    ['x', xt],
    ['w', wa.tensor],
    ['scales', st],
    ['options.bias', bias],
  ]);
  const out = Tensor._alloc(op, outDtype, [...xt.shape.slice(0, -1), n], device);
  const args = {
    x: xt._native(op, 'x'),
    w: wa.tensor._native(op, 'w'),
    scales: st._native(op, 'scales'),
    bias: bias?._native(op, 'options.bias'),
    out: out._native(op, 'out'),
    m,
    n,
    k,
    groupSize,
    packed: wa.packed,
  };
  return { out, args };
}

/**
 * Float activations x int4 weights with group scales (Marlin's W4A16), in float32 arithmetic:
 * `out = x @ (w * scales[:, group])^T + bias`.
 * @param x `[M, K]` float32 | float16 | bfloat16 (or `[..., K]`).
 * @param w `[N, K]` int4 (or its bytes as uint8 `[N, ceil(K / 2)]`), or a {@link PackedWeight} of 4 bits.
 * @param scales `[N, K / groupSize]` float (x's dtype, typically).
 * @returns `[M, N]` in x's dtype (or `options.outDtype`).
 * @throws TypeError for a wrong dtype; RangeError for mismatched shapes or a bad groupSize.
 * @example
 * const y = await gemmW4A16(x, pw, scales, { groupSize: 128 });
 */
export async function gemmW4A16(
  x: Tensor,
  w: Tensor | PackedWeight,
  scales: Tensor,
  opts: GemmW4A16Options = {},
): Promise<Tensor> {
  maxArgs('gemmW4A16', arguments.length, 4);
  const { out, args } = prepareW4A16('gemmW4A16', x, w, scales, opts);
  await callAsync('gemmW4A16', args, [out]);
  return out;
}

/**
 * {@link gemmW4A16} on the calling thread.
 * @example
 * const y = gemmW4A16Sync(x, wq, scales);
 */
export function gemmW4A16Sync(x: Tensor, w: Tensor | PackedWeight, scales: Tensor, opts: GemmW4A16Options = {}): Tensor {
  maxArgs('gemmW4A16Sync', arguments.length, 4);
  const { out, args } = prepareW4A16('gemmW4A16Sync', x, w, scales, opts);
  callSync('gemmW4A16', args, [out]);
  return out;
}
