/**
 * The quantization family (Quamba, Quamba2): hadamard, and the quantizers and int8/int4 GEMMs.
 */
import { FLOAT_DTYPES } from '../dtype';
import { rangeError } from '../errors';
import { Tensor } from '../tensor';
import { commonDevice, maxArgs, numberOption, options, tensorArg } from '../validate';
import { callAsync, callSync } from './run';

export interface HadamardOptions {
  /** Multiplies the transform (default 1; 1/sqrt(n) makes it orthonormal). */
  scale?: number;
}

function prepareHadamard(op: string, x: unknown, opts: unknown) {
  const t = tensorArg(op, 'x', x, FLOAT_DTYPES);
  const o = options<HadamardOptions>(op, opts, ['scale']);
  const scale = numberOption(op, 'options.scale', o.scale, 1);
  const n = t.shape.length === 0 ? 1 : (t.shape[t.shape.length - 1] as number);
  if (n < 1 || (n & (n - 1)) !== 0) {
    throw rangeError(op, 'x', 'a last dimension that is a power of two', `[${t.shape.join(', ')}]`);
  }
  const device = commonDevice(op, [['x', t]]);
  const out = Tensor._alloc(op, t.dtype, t.shape, device);
  return { out, args: { x: t._native(op, 'x'), out: out._native(op, 'out'), scale } };
}

/**
 * Fast Walsh-Hadamard transform (Sylvester order) over the last dimension, times `scale`; math in
 * float32, output in x's dtype.
 * @param x `[..., n]` float32 | float16 | bfloat16, n a power of two.
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
