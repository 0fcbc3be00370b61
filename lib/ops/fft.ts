/**
 * The FFT convolution family (H3's FlashConv): fftConv, the S4D kernel, and ssmConv, the diagonal SSM
 * run by FFT convolutions inside blocks with the state passed between blocks.
 */
import { FLOAT_DTYPES } from '../dtype';
import { rangeError, typeError } from '../errors';
import { Tensor } from '../tensor';
import { boolOption, commonDevice, expectShape, intOption, maxArgs, options, optTensor, tensorArg } from '../validate';
import { callAsync, callSync } from './run';

const F32: readonly ['float32'] = ['float32'];

export interface FftConvOptions {
  /** `[H]` float32: adds `D * v` (the skip connection) before the activation. */
  D?: Tensor;
  /** Applies gelu (erf form) to `conv + D v` (default false). */
  gelu?: boolean;
  /** `[batch, H, L]` in u's dtype: the convolution sees `v = u * pregate`. */
  pregate?: Tensor;
  /** `[batch, H, L]` in u's dtype: multiplies the result. */
  postgate?: Tensor;
  /**
   * k is `[H, 2, Lk]`: `k[:, 0]` runs causally and `k[:, 1]` anti-causally
   * (`y_t += sum_{s >= t} k[h, 1, s - t] v_s`, H3's `k_rev`), and the two are added (default false).
   */
  bidirectional?: boolean;
}

function prepareFftConv(op: string, u: unknown, k: unknown, opts: unknown) {
  const ut = tensorArg(op, 'u', u, FLOAT_DTYPES, 3);
  const o = options<FftConvOptions>(op, opts, ['D', 'gelu', 'pregate', 'postgate', 'bidirectional']);
  const bidirectional = boolOption(op, 'options.bidirectional', o.bidirectional, false);
  const gelu = boolOption(op, 'options.gelu', o.gelu, false);
  const [batch, H, L] = ut.shape as [number, number, number];
  if (L < 1) throw rangeError(op, 'u', 'a sequence length L >= 1', `shape [${ut.shape.join(', ')}]`);
  const kt = tensorArg(op, 'k', k, F32, bidirectional ? 3 : 2);
  const Lk = kt.shape[kt.shape.length - 1] as number;
  const kShape = bidirectional ? [H, 2, Lk] : [H, Lk];
  expectShape(op, 'k', kt, kShape, bidirectional ? '(H, 2, Lk) with bidirectional' : '(H, Lk)');
  if (Lk < 1 || Lk > L) throw rangeError(op, 'k', `a filter length Lk in 1..${L} (L)`, `Lk ${Lk}`);
  const D = optTensor(op, 'options.D', o.D, F32, 1);
  if (D) expectShape(op, 'options.D', D, [H], '(H)');
  const gates: Record<string, Tensor | undefined> = {};
  for (const name of ['pregate', 'postgate'] as const) {
    const g = optTensor(op, `options.${name}`, o[name], FLOAT_DTYPES, 3);
    if (g && g.dtype !== ut.dtype) throw typeError(op, `options.${name}`, `dtype ${ut.dtype} (u's dtype)`, g.dtype);
    if (g) expectShape(op, `options.${name}`, g, [batch, H, L], '(batch, H, L)');
    gates[name] = g;
  }
  const device = commonDevice(op, [
    ['u', ut],
    ['k', kt],
    ['options.D', D],
    ['options.pregate', gates.pregate],
    ['options.postgate', gates.postgate],
  ]);
  const out = Tensor._alloc(op, ut.dtype, ut.shape, device);
  const args = {
    u: ut._native(op, 'u'),
    k: kt._native(op, 'k'),
    D: D?._native(op, 'options.D'),
    pregate: gates.pregate?._native(op, 'options.pregate'),
    postgate: gates.postgate?._native(op, 'options.postgate'),
    out: out._native(op, 'out'),
    gelu,
    bidirectional,
  };
  return { out, args };
}

/**
 * H3's FFT convolution (FlashConv): `v = pregate ? u * pregate : u`; `y = causal_conv(v, k) + D * v`
 * with `y_t = sum_{s <= t} k_{t-s} v_s`; `y = gelu(y)` (erf form) when asked; `out = postgate ? y *
 * postgate : y`. Filters shorter than L are zero-padded; any L >= 1. Math in float32, except bfloat16
 * rows of FFT length 2048, 8192 and 32768 (`nextpow2(L + Lk - 1)`) on CUDA: their transforms run on
 * the tensor cores with float16 operands (relative error ~1e-3, about one bfloat16 rounding;
 * `SSMKIT_CUDA_FFT_TC=0` keeps them in float32).
 * @param u `[batch, H, L]` float32 | float16 | bfloat16.
 * @param k `[H, Lk]` float32 with `1 <= Lk <= L` (`[H, 2, Lk]` when `bidirectional`).
 * @returns `[batch, H, L]` in u's dtype.
 * @throws TypeError for a wrong dtype or option type; RangeError for a wrong shape or value.
 * @example
 * const out = await fftConv(u, k, { D, gelu: true });
 */
export async function fftConv(u: Tensor, k: Tensor, opts: FftConvOptions = {}): Promise<Tensor> {
  maxArgs('fftConv', arguments.length, 3);
  const { out, args } = prepareFftConv('fftConv', u, k, opts);
  await callAsync('fftConv', args, [out]);
  return out;
}

/**
 * {@link fftConv} on the calling thread.
 * @example
 * const out = fftConvSync(u, k, { pregate: q, postgate: v });
 */
export function fftConvSync(u: Tensor, k: Tensor, opts: FftConvOptions = {}): Tensor {
  maxArgs('fftConvSync', arguments.length, 3);
  const { out, args } = prepareFftConv('fftConvSync', u, k, opts);
  callSync('fftConv', args, [out]);
  return out;
}

/** The S4D modes shared by s4dKernel and ssmConv: logDt `[H]`, A and C `[H, N/2, 2]` float32. */
function checkModes(op: string, logDt: unknown, A: unknown, C: unknown, H?: number) {
  const lt = tensorArg(op, 'logDt', logDt, F32, 1);
  const h = H ?? (lt.shape[0] as number);
  expectShape(op, 'logDt', lt, [h], '(H)');
  const At = tensorArg(op, 'A', A, F32, 3);
  const n2 = At.shape[1] as number;
  expectShape(op, 'A', At, [h, n2, 2], '(H, N/2, 2), complex as (re, im)');
  const Ct = tensorArg(op, 'C', C, F32, 3);
  expectShape(op, 'C', Ct, [h, n2, 2], '(H, N/2, 2), complex as (re, im)');
  return { lt, At, Ct, H: h, n2 };
}

const MAX_L = 2 ** 31 - 1;

function prepareS4dKernel(op: string, logDt: unknown, A: unknown, C: unknown, L: unknown) {
  const { lt, At, Ct, H } = checkModes(op, logDt, A, C);
  if (typeof L !== 'number') throw typeError(op, 'L', `an integer in 1..${MAX_L}`, L);
  const len = intOption(op, 'L', L, 1, 1, MAX_L);
  const device = commonDevice(op, [
    ['logDt', lt],
    ['A', At],
    ['C', Ct],
  ]);
  const k = Tensor._alloc(op, 'float32', [H, len], device);
  const args = { logDt: lt._native(op, 'logDt'), A: At._native(op, 'A'), C: Ct._native(op, 'C'), k: k._native(op, 'k') };
  return { k, args };
}

/**
 * The S4D Vandermonde kernel with zero-order hold: `k[h, l] = 2 Re sum_n C_n (exp(dt A_n) - 1) / A_n *
 * exp(dt A_n l)`, `dt = exp(logDt[h])` (near `A_n = 0` the factor takes its limit `dt`). Mode
 * coefficients in float64, the sum over modes in float32.
 * @param logDt `[H]` float32.
 * @param A `[H, N/2, 2]` float32, complex as (re, im).
 * @param C `[H, N/2, 2]` float32, complex as (re, im).
 * @param L kernel length, an integer >= 1.
 * @returns k `[H, L]` float32.
 * @throws TypeError for a wrong dtype; RangeError for a wrong shape or L.
 * @example
 * const k = await s4dKernel(logDt, A, C, 4096);
 */
export async function s4dKernel(logDt: Tensor, A: Tensor, C: Tensor, L: number): Promise<Tensor> {
  maxArgs('s4dKernel', arguments.length, 4);
  const { k, args } = prepareS4dKernel('s4dKernel', logDt, A, C, L);
  await callAsync('s4dKernel', args, [k]);
  return k;
}

/**
 * {@link s4dKernel} on the calling thread.
 * @example
 * const k = s4dKernelSync(logDt, A, C, 1024);
 */
export function s4dKernelSync(logDt: Tensor, A: Tensor, C: Tensor, L: number): Tensor {
  maxArgs('s4dKernelSync', arguments.length, 4);
  const { k, args } = prepareS4dKernel('s4dKernelSync', logDt, A, C, L);
  callSync('s4dKernel', args, [k]);
  return k;
}

export interface SsmConvOptions {
  /** `[H]` float32: adds `D * u`. */
  D?: Tensor;
  /**
   * Samples per block (default: 2048, or L when shorter). Inside a block the output is an FFT
   * convolution with the blockSize-tap kernel; the SSM state carries everything before it.
   */
  blockSize?: number;
  /** `[batch, H, N/2, 2]` float32: the state before the first sample (default zeros). */
  initialState?: Tensor;
  /** Also return the state after the last sample (default false). */
  returnLastState?: boolean;
}

export interface SsmConvResult {
  /** `[batch, H, L]` in u's dtype. */
  out: Tensor;
  /** `[batch, H, N/2, 2]` float32, when `returnLastState`. */
  lastState?: Tensor;
}

function prepareSsmConv(op: string, u: unknown, logDt: unknown, A: unknown, C: unknown, opts: unknown) {
  const ut = tensorArg(op, 'u', u, FLOAT_DTYPES, 3);
  const [batch, H, L] = ut.shape as [number, number, number];
  if (L < 1) throw rangeError(op, 'u', 'a sequence length L >= 1', `shape [${ut.shape.join(', ')}]`);
  const { lt, At, Ct, n2 } = checkModes(op, logDt, A, C, H);
  const o = options<SsmConvOptions>(op, opts, ['D', 'blockSize', 'initialState', 'returnLastState']);
  const D = optTensor(op, 'options.D', o.D, F32, 1);
  if (D) expectShape(op, 'options.D', D, [H], '(H)');
  const blockSize = intOption(op, 'options.blockSize', o.blockSize, 0, 1, 2 ** 24);
  const init = optTensor(op, 'options.initialState', o.initialState, F32, 4);
  if (init) expectShape(op, 'options.initialState', init, [batch, H, n2, 2], '(batch, H, N/2, 2)');
  const returnLastState = boolOption(op, 'options.returnLastState', o.returnLastState, false);
  const device = commonDevice(op, [
    ['u', ut],
    ['logDt', lt],
    ['A', At],
    ['C', Ct],
    ['options.D', D],
    ['options.initialState', init],
  ]);
  const out = Tensor._alloc(op, ut.dtype, ut.shape, device);
  const lastState = returnLastState ? Tensor._alloc(op, 'float32', [batch, H, n2, 2], device) : undefined;
  const args = {
    u: ut._native(op, 'u'),
    logDt: lt._native(op, 'logDt'),
    A: At._native(op, 'A'),
    C: Ct._native(op, 'C'),
    D: D?._native(op, 'options.D'),
    initialState: init?._native(op, 'options.initialState'),
    out: out._native(op, 'out'),
    lastState: lastState?._native(op, 'lastState'),
    blockSize,
  };
  const result: SsmConvResult = lastState ? { out, lastState } : { out };
  return { result, outs: [out, lastState], args };
}

/**
 * The diagonal SSM of {@link s4dKernel} applied to u of any length by FlashConv's state passing: the
 * sequence is cut into blocks; inside a block the output is an FFT convolution with the block-length
 * kernel, and the SSM state (`x_t = exp(dt A) x_{t-1} + (exp(dt A) - 1) / A * u_t`, `y_t = 2 Re sum_n
 * C_n x_t[n]`) carries the past across blocks, so time and memory grow linearly in L. Equals
 * `fftConv(u, s4dKernel(logDt, A, C, L), { D })` with the state starting at `initialState`. The blocks'
 * convolutions are fftConv's (bfloat16 blocks of FFT length 2048, 8192 and 32768 on the tensor cores on
 * CUDA).
 * @param u `[batch, H, L]` float32 | float16 | bfloat16.
 * @param logDt `[H]` float32.
 * @param A `[H, N/2, 2]` float32, complex as (re, im).
 * @param C `[H, N/2, 2]` float32, complex as (re, im).
 * @returns `{ out: [batch, H, L] in u's dtype, lastState?: [batch, H, N/2, 2] float32 }`.
 * @throws TypeError for a wrong dtype or option type; RangeError for a wrong shape or value.
 * @example
 * const { out, lastState } = await ssmConv(u, logDt, A, C, { D, returnLastState: true });
 */
export async function ssmConv(u: Tensor, logDt: Tensor, A: Tensor, C: Tensor, opts: SsmConvOptions = {}): Promise<SsmConvResult> {
  maxArgs('ssmConv', arguments.length, 5);
  const { result, outs, args } = prepareSsmConv('ssmConv', u, logDt, A, C, opts);
  await callAsync('ssmConv', args, outs);
  return result;
}

/**
 * {@link ssmConv} on the calling thread.
 * @example
 * const { out } = ssmConvSync(u, logDt, A, C, { blockSize: 4096 });
 */
export function ssmConvSync(u: Tensor, logDt: Tensor, A: Tensor, C: Tensor, opts: SsmConvOptions = {}): SsmConvResult {
  maxArgs('ssmConvSync', arguments.length, 5);
  const { result, outs, args } = prepareSsmConv('ssmConvSync', u, logDt, A, C, opts);
  callSync('ssmConv', args, outs);
  return result;
}
