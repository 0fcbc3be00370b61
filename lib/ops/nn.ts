/**
 * Model building blocks that the model runner composes with the op families: the float linear layer
 * over packed weight panels, RMSNorm with the float32 residual, Mamba-2's gated group RMSNorm, the
 * embedding lookup, the transposing split between token-major and channel-major layouts, and dt's
 * softplus with limits. Internal to the package (the model runner is their user); each op has an async
 * form (CPU work on the pool) and a Sync form, and validates its arguments first like every other op.
 */

import { native } from '../backend';
import { type DType, FLOAT_DTYPES, shapeSize } from '../dtype';
import { fromNative, rangeError, typeError } from '../errors';
import { Tensor } from '../tensor';
import {
  boolOption,
  commonDevice,
  enumOption,
  expectShape,
  intOption,
  maxArgs,
  numberOption,
  options,
  optTensor,
  tensorArg,
} from '../validate';
import { callAsync, callSync } from './run';

/** Output columns per packed weight panel (native/include/ssmkit/nn.h kLinearPanel). */
export const LINEAR_PANEL = 32;
/** Most outputs one linear call or one transposeSplit call writes. */
export const MAX_SPLIT = 6;

type FloatDType = 'float32' | 'float16' | 'bfloat16';
const PACKED_DTYPES: readonly DType[] = ['float32', 'bfloat16'];

/** A linear layer's weight W `[outFeatures, inFeatures]` packed into panels for the linear kernel. */
export class PackedLinear {
  /**
   * `[ceil(outFeatures / 32), Kx, 32]` float32 | bfloat16: panel p holds columns 32p.. of W^T (bfloat16
   * in pairs of k, Kx = inFeatures rounded up to even; float32 Kx = inFeatures).
   */
  readonly panels: Tensor;
  readonly outFeatures: number;
  readonly inFeatures: number;
  /** @internal */
  constructor(panels: Tensor, outFeatures: number, inFeatures: number) {
    this.panels = panels;
    this.outFeatures = outFeatures;
    this.inFeatures = inFeatures;
  }
  get dtype(): DType {
    return this.panels.dtype;
  }
  get device(): string {
    return this.panels.device;
  }
  dispose(): void {
    this.panels.dispose();
  }
}

function packedArg(op: string, arg: string, v: unknown): PackedLinear {
  if (!(v instanceof PackedLinear)) throw typeError(op, arg, 'a PackedLinear (from packLinear)', v);
  tensorArg(op, `${arg}.panels`, v.panels, PACKED_DTYPES, 3);
  return v;
}

// ---- packLinear -------------------------------------------------------------------------------------

export interface PackLinearOptions {
  /** Panel dtype (default: float32 for float32 weights, else bfloat16). */
  dtype?: 'float32' | 'bfloat16';
}

function preparePack(op: string, w: unknown, opts: unknown) {
  const t = tensorArg(op, 'w', w, FLOAT_DTYPES, 2);
  const o = options<PackLinearOptions>(op, opts, ['dtype']);
  const dtype = enumOption(
    op,
    'options.dtype',
    o.dtype,
    ['float32', 'bfloat16'] as const,
    t.dtype === 'float32' ? 'float32' : 'bfloat16',
  );
  const [n, k] = t.shape as [number, number];
  const device = commonDevice(op, [['w', t]]);
  // bfloat16 panels hold k in pairs: K rounds up to even.
  const kx = dtype === 'bfloat16' ? k + (k % 2) : k;
  const out = Tensor._alloc(op, dtype, [Math.ceil(n / LINEAR_PANEL), kx, LINEAR_PANEL], device);
  return { out, n, k, args: { w: t._native(op, 'w'), out: out._native(op, 'out') } };
}

/**
 * Packs a linear layer's weight for {@link linear}: W `[N, K]` -> panels `[ceil(N / 32), K, 32]`
 * (bfloat16: K rounded up to even, k in pairs).
 * @param w `[outFeatures, inFeatures]` float32 | float16 | bfloat16.
 * @throws TypeError for a wrong dtype; RangeError for a wrong rank.
 * @example
 * const w = await packLinear(weight, { dtype: 'bfloat16' });
 */
export async function packLinear(w: Tensor, opts: PackLinearOptions = {}): Promise<PackedLinear> {
  maxArgs('packLinear', arguments.length, 2);
  const { out, n, k, args } = preparePack('packLinear', w, opts);
  await callAsync('packLinear', args, [out]);
  return new PackedLinear(out, n, k);
}

/**
 * {@link packLinear} on the calling thread.
 * @example
 * const w = packLinearSync(weight);
 */
export function packLinearSync(w: Tensor, opts: PackLinearOptions = {}): PackedLinear {
  maxArgs('packLinearSync', arguments.length, 2);
  const { out, n, k, args } = preparePack('packLinearSync', w, opts);
  callSync('packLinear', args, [out]);
  return new PackedLinear(out, n, k);
}

// ---- linear -----------------------------------------------------------------------------------------

/** One output of {@link linear}: the next `cols` columns of x @ W^T + bias. */
export interface LinearSplit {
  cols: number;
  /** Write it as `[batch, cols, seqlen]` (the scan layout) instead of `[..., cols]`. */
  transposed?: boolean;
  /** Output dtype (default: x's dtype, or options.outDtype). */
  dtype?: FloatDType;
}

export interface LinearOptions {
  /** `[N]` float32. */
  bias?: Tensor;
  /** x comes as `[batch, K, seqlen]` (the scan layout) instead of `[..., K]`. */
  xTransposed?: boolean;
  /** Split the N output columns into these outputs, in order; their cols must add up to N. */
  split?: readonly LinearSplit[];
  /** Output dtype when not split (default: x's dtype). */
  outDtype?: FloatDType;
}

/** Allocates the outputs of a column split of `[...lead, n]` and their native descriptors. */
function splitOutputs(
  op: string,
  split: readonly LinearSplit[],
  n: number,
  lead: readonly number[],
  outDtype: FloatDType,
  device: number,
  xShape: readonly number[],
): { outs: Tensor[]; outputs: object[] } {
  const seqlen = lead.length >= 2 ? (lead[lead.length - 1] as number) : 1;
  const outs: Tensor[] = [];
  const outputs: object[] = [];
  let col0 = 0;
  try {
    for (let i = 0; i < split.length; i++) {
      const s = split[i] as LinearSplit;
      const name = `options.split[${i}]`;
      if (typeof s !== 'object' || s === null) throw typeError(op, name, 'an object { cols, transposed?, dtype? }', s);
      const cols = intOption(op, `${name}.cols`, s.cols, -1, 0, n);
      if (cols < 0) throw typeError(op, `${name}.cols`, 'a number of columns', s.cols);
      const transposed = boolOption(op, `${name}.transposed`, s.transposed, false);
      const dtype = enumOption(op, `${name}.dtype`, s.dtype, FLOAT_DTYPES as readonly FloatDType[], outDtype);
      if (transposed && lead.length !== 2) {
        throw rangeError(op, name, 'x of [batch, seqlen, K] (or transposed) for a transposed output', `[${xShape.join(', ')}]`);
      }
      const shape = transposed ? [lead[0] as number, cols, seqlen] : [...lead, cols];
      const out = Tensor._alloc(op, dtype, shape, device);
      outs.push(out);
      outputs.push({ out: out._native(op, name), col0, cols, transposed });
      col0 += cols;
    }
    if (col0 !== n) throw rangeError(op, 'options.split', `column counts adding up to ${n}`, `${col0}`);
  } catch (e) {
    for (const t of outs) t.dispose();
    throw e;
  }
  return { outs, outputs };
}

function splitOption(op: string, v: unknown, n: number, outDtype: FloatDType): readonly LinearSplit[] {
  if (v === undefined) return [{ cols: n, dtype: outDtype }];
  if (!Array.isArray(v)) throw typeError(op, 'options.split', 'an array of { cols, transposed?, dtype? }', v);
  if (v.length < 1 || v.length > MAX_SPLIT) throw rangeError(op, 'options.split', `1 to ${MAX_SPLIT} outputs`, `${v.length}`);
  return v;
}

function prepareLinear(op: string, x: unknown, w: unknown, opts: unknown) {
  const o = options<LinearOptions>(op, opts, ['bias', 'xTransposed', 'split', 'outDtype']);
  const xTransposed = boolOption(op, 'options.xTransposed', o.xTransposed, false);
  const xt = tensorArg(op, 'x', x, FLOAT_DTYPES, xTransposed ? 3 : undefined);
  const pw = packedArg(op, 'w', w);
  const n = pw.outFeatures;
  const k = pw.inFeatures;
  if (xt.shape.length < 1) throw rangeError(op, 'x', 'at least 1 dimension', 'a scalar');
  const xk = xTransposed ? xt.shape[1] : xt.shape[xt.shape.length - 1];
  if (xk !== k) throw rangeError(op, 'x', `${k} input features (w is [${n}, ${k}])`, `[${xt.shape.join(', ')}]`);
  const bias = optTensor(op, 'options.bias', o.bias, ['float32'], 1);
  if (bias) expectShape(op, 'options.bias', bias, [n], 'outFeatures');
  const outDtype = enumOption(op, 'options.outDtype', o.outDtype, FLOAT_DTYPES as readonly FloatDType[], xt.dtype as FloatDType);
  const split = splitOption(op, o.split, n, outDtype);
  // Rows: x [..., K] -> lead dims; x [batch, K, seqlen] -> [batch, seqlen].
  const lead = xTransposed ? [xt.shape[0] as number, xt.shape[2] as number] : xt.shape.slice(0, -1);
  const m = shapeSize(lead);
  const seqlen = lead.length >= 2 ? (lead[lead.length - 1] as number) : 1;
  const device = commonDevice(op, [
    ['x', xt],
    ['w', pw.panels],
    ['options.bias', bias],
  ]);
  const { outs, outputs } = splitOutputs(op, split, n, lead, outDtype, device, xt.shape);
  const args = {
    x: xt._native(op, 'x'),
    w: pw.panels._native(op, 'w'),
    bias: bias?._native(op, 'options.bias'),
    m,
    k,
    n,
    seqlen,
    xTransposed,
    outputs,
  };
  return { outs, args, single: o.split === undefined };
}

/**
 * The linear layer `x @ W^T + bias` over packed weights, in float32 math; optionally split into
 * several outputs by columns, each in the token-major or the scan (channel-major) layout.
 * @param x `[..., K]` (or `[batch, K, seqlen]` with xTransposed) float32 | float16 | bfloat16.
 * @param w from {@link packLinear}, `[N, K]`.
 * @returns `[..., N]` (x's dtype or outDtype), or with `split` one tensor per split.
 * @throws TypeError for a wrong dtype or option; RangeError for mismatched shapes.
 * @example
 * const [x, z] = await linear(h, inProj, { split: [{ cols: 1536 }, { cols: 1536 }] }) as Tensor[];
 */
export async function linear(x: Tensor, w: PackedLinear, opts: LinearOptions = {}): Promise<Tensor | Tensor[]> {
  maxArgs('linear', arguments.length, 3);
  const { outs, args, single } = prepareLinear('linear', x, w, opts);
  await callAsync('linear', args, outs);
  return single ? (outs[0] as Tensor) : outs;
}

/**
 * {@link linear} on the calling thread.
 * @example
 * const logits = linearSync(h, lmHead, { outDtype: 'float32' }) as Tensor;
 */
export function linearSync(x: Tensor, w: PackedLinear, opts: LinearOptions = {}): Tensor | Tensor[] {
  maxArgs('linearSync', arguments.length, 3);
  const { outs, args, single } = prepareLinear('linearSync', x, w, opts);
  callSync('linear', args, outs);
  return single ? (outs[0] as Tensor) : outs;
}

// ---- splitColumns -----------------------------------------------------------------------------------

function prepareSplitColumns(op: string, x: unknown, split: unknown) {
  const xt = tensorArg(op, 'x', x, FLOAT_DTYPES);
  if (xt.shape.length < 1) throw rangeError(op, 'x', 'at least 1 dimension', 'a scalar');
  const n = xt.shape[xt.shape.length - 1] as number;
  const parts = splitOption(op, split, n, xt.dtype as FloatDType);
  const lead = xt.shape.slice(0, -1);
  const device = commonDevice(op, [['x', xt]]);
  const { outs, outputs } = splitOutputs(op, parts, n, lead, xt.dtype as FloatDType, device, xt.shape);
  const seqlen = lead.length >= 2 ? (lead[lead.length - 1] as number) : 1;
  return { outs, args: { x: xt._native(op, 'x'), m: shapeSize(lead), n, seqlen, outputs } };
}

/**
 * Splits x `[..., N]` by columns into outputs laid out as {@link linear} writes them (each token-major
 * or, for x `[batch, seqlen, N]`, transposed to `[batch, cols, seqlen]`).
 * @param x `[..., N]` float32 | float16 | bfloat16.
 * @param split the outputs, in order; their cols add up to N.
 * @throws TypeError for a wrong dtype; RangeError for splits that do not add up.
 * @example
 * const [z, xs] = await splitColumns(y, [{ cols: 64 }, { cols: 64, transposed: true }]);
 */
export async function splitColumns(x: Tensor, split: readonly LinearSplit[]): Promise<Tensor[]> {
  maxArgs('splitColumns', arguments.length, 2);
  const { outs, args } = prepareSplitColumns('splitColumns', x, split);
  await callAsync('splitColumns', args, outs);
  return outs;
}

/**
 * {@link splitColumns} on the calling thread.
 * @example
 * const [a, b] = splitColumnsSync(y, [{ cols: 2 }, { cols: 3 }]);
 */
export function splitColumnsSync(x: Tensor, split: readonly LinearSplit[]): Tensor[] {
  maxArgs('splitColumnsSync', arguments.length, 2);
  const { outs, args } = prepareSplitColumns('splitColumnsSync', x, split);
  callSync('splitColumns', args, outs);
  return outs;
}

// ---- rmsNorm ----------------------------------------------------------------------------------------

export interface RmsNormOptions {
  /** Added to x first (float32 math); same shape as x. */
  residual?: Tensor;
  /** Receives x + residual (may be `residual` itself, updated in place); same shape as x. */
  residualOut?: Tensor;
  /** Default 1e-5. */
  eps?: number;
  /** x is `[batch, seqlen, d]`: normalize only each batch's last token, out `[batch, d]`. */
  lastToken?: boolean;
  /** Default: x's dtype. */
  outDtype?: FloatDType;
}

function prepareRmsNorm(op: string, x: unknown, weight: unknown, opts: unknown) {
  const o = options<RmsNormOptions>(op, opts, ['residual', 'residualOut', 'eps', 'lastToken', 'outDtype']);
  const xt = tensorArg(op, 'x', x, FLOAT_DTYPES);
  if (xt.shape.length < 1) throw rangeError(op, 'x', 'at least 1 dimension', 'a scalar');
  const d = xt.shape[xt.shape.length - 1] as number;
  const wt = tensorArg(op, 'weight', weight, ['float32', 'bfloat16'], 1);
  expectShape(op, 'weight', wt, [d], 'x.shape[-1]');
  const residual = optTensor(op, 'options.residual', o.residual, FLOAT_DTYPES);
  if (residual) expectShape(op, 'options.residual', residual, xt.shape, 'x.shape');
  const residualOut = optTensor(op, 'options.residualOut', o.residualOut, FLOAT_DTYPES);
  if (residualOut) expectShape(op, 'options.residualOut', residualOut, xt.shape, 'x.shape');
  const eps = numberOption(op, 'options.eps', o.eps, 1e-5);
  if (eps < 0) throw rangeError(op, 'options.eps', 'a non-negative number', `${eps}`);
  const lastToken = boolOption(op, 'options.lastToken', o.lastToken, false);
  const outDtype = enumOption(op, 'options.outDtype', o.outDtype, FLOAT_DTYPES as readonly FloatDType[], xt.dtype as FloatDType);
  if (lastToken && xt.shape.length !== 3)
    throw rangeError(op, 'x', '[batch, seqlen, d] with lastToken', `[${xt.shape.join(', ')}]`);
  if (lastToken && residualOut) throw rangeError(op, 'options.residualOut', 'no residualOut with lastToken', 'one');
  const rows = shapeSize(xt.shape.slice(0, -1));
  const device = commonDevice(op, [
    ['x', xt],
    ['weight', wt],
    ['options.residual', residual],
    ['options.residualOut', residualOut],
  ]);
  const shape = lastToken ? [xt.shape[0] as number, d] : xt.shape;
  const out = Tensor._alloc(op, outDtype, shape, device);
  const args = {
    x: xt._native(op, 'x'),
    residual: residual?._native(op, 'options.residual'),
    residualOut: residualOut?._native(op, 'options.residualOut'),
    weight: wt._native(op, 'weight'),
    out: out._native(op, 'out'),
    rows,
    d,
    lastOf: lastToken ? (xt.shape[1] as number) : 0,
    eps,
  };
  return { out, args };
}

/**
 * RMSNorm with the float32 residual: `r = x + residual`; `out = r / sqrt(mean(r^2) + eps) * weight`.
 * @param x `[..., d]` float32 | float16 | bfloat16.
 * @param weight `[d]` float32 | bfloat16.
 * @returns `[..., d]` (or `[batch, d]` with lastToken), x's dtype or outDtype.
 * @throws TypeError for a wrong dtype; RangeError for mismatched shapes.
 * @example
 * const h = await rmsNorm(x, w, { residual: r, residualOut: r });
 */
export async function rmsNorm(x: Tensor, weight: Tensor, opts: RmsNormOptions = {}): Promise<Tensor> {
  maxArgs('rmsNorm', arguments.length, 3);
  const { out, args } = prepareRmsNorm('rmsNorm', x, weight, opts);
  await callAsync('rmsNorm', args, [out]);
  return out;
}

/**
 * {@link rmsNorm} on the calling thread.
 * @example
 * const h = rmsNormSync(x, w);
 */
export function rmsNormSync(x: Tensor, weight: Tensor, opts: RmsNormOptions = {}): Tensor {
  maxArgs('rmsNormSync', arguments.length, 3);
  const { out, args } = prepareRmsNorm('rmsNormSync', x, weight, opts);
  callSync('rmsNorm', args, [out]);
  return out;
}

// ---- gatedRmsNorm -----------------------------------------------------------------------------------

export interface GatedRmsNormOptions {
  /** Number of channel groups normalized separately (default 1); must divide d. */
  groups?: number;
  /** Default 1e-5. */
  eps?: number;
}

function prepareGated(op: string, y: unknown, z: unknown, weight: unknown, opts: unknown) {
  const o = options<GatedRmsNormOptions>(op, opts, ['groups', 'eps']);
  const yt = tensorArg(op, 'y', y, FLOAT_DTYPES);
  if (yt.shape.length < 1) throw rangeError(op, 'y', 'at least 1 dimension', 'a scalar');
  const d = yt.shape[yt.shape.length - 1] as number;
  const zt = z === undefined ? undefined : tensorArg(op, 'z', z, FLOAT_DTYPES);
  if (zt) expectShape(op, 'z', zt, yt.shape, 'y.shape');
  const wt = tensorArg(op, 'weight', weight, ['float32', 'bfloat16'], 1);
  expectShape(op, 'weight', wt, [d], 'y.shape[-1]');
  const groups = intOption(op, 'options.groups', o.groups, 1, 1, Math.max(1, d));
  if (d % groups !== 0) throw rangeError(op, 'options.groups', `a divisor of ${d}`, `${groups}`);
  const eps = numberOption(op, 'options.eps', o.eps, 1e-5);
  if (eps < 0) throw rangeError(op, 'options.eps', 'a non-negative number', `${eps}`);
  const device = commonDevice(op, [
    ['y', yt],
    ['z', zt],
    ['weight', wt],
  ]);
  const out = Tensor._alloc(op, yt.dtype, yt.shape, device);
  const args = {
    y: yt._native(op, 'y'),
    z: zt?._native(op, 'z'),
    weight: wt._native(op, 'weight'),
    out: out._native(op, 'out'),
    rows: shapeSize(yt.shape.slice(0, -1)),
    d,
    groups,
    eps,
  };
  return { out, args };
}

/**
 * Mamba-2's gated RMSNorm (mamba_ssm's RMSNormGated, norm_before_gate = false): `g = y * silu(z)`,
 * each of `groups` channel groups normalized on its own, times weight.
 * @param y `[..., d]` float32 | float16 | bfloat16.
 * @param z `[..., d]` or undefined (no gate).
 * @param weight `[d]` float32 | bfloat16.
 * @returns `[..., d]`, y's dtype.
 * @throws TypeError for a wrong dtype; RangeError for mismatched shapes or groups not dividing d.
 * @example
 * const out = await gatedRmsNorm(y, z, w, { groups: 8 });
 */
export async function gatedRmsNorm(
  y: Tensor,
  z: Tensor | undefined,
  weight: Tensor,
  opts: GatedRmsNormOptions = {},
): Promise<Tensor> {
  maxArgs('gatedRmsNorm', arguments.length, 4);
  const { out, args } = prepareGated('gatedRmsNorm', y, z, weight, opts);
  await callAsync('gatedRmsNorm', args, [out]);
  return out;
}

/**
 * {@link gatedRmsNorm} on the calling thread.
 * @example
 * const out = gatedRmsNormSync(y, z, w);
 */
export function gatedRmsNormSync(y: Tensor, z: Tensor | undefined, weight: Tensor, opts: GatedRmsNormOptions = {}): Tensor {
  maxArgs('gatedRmsNormSync', arguments.length, 4);
  const { out, args } = prepareGated('gatedRmsNormSync', y, z, weight, opts);
  callSync('gatedRmsNorm', args, [out]);
  return out;
}

// ---- embedding --------------------------------------------------------------------------------------

export interface EmbeddingOptions {
  /** Output dtype (default: the table's dtype). */
  outDtype?: FloatDType;
}

function prepareEmbedding(op: string, ids: unknown, weight: unknown, opts: unknown) {
  const o = options<EmbeddingOptions>(op, opts, ['outDtype']);
  const it = tensorArg(op, 'ids', ids, ['int32']);
  let table: Tensor;
  let vocab: number;
  let d: number;
  let packed = false;
  if (weight instanceof PackedLinear) {
    packedArg(op, 'weight', weight);
    table = weight.panels;
    vocab = weight.outFeatures;
    d = weight.inFeatures;
    packed = true;
  } else {
    table = tensorArg(op, 'weight', weight, FLOAT_DTYPES, 2);
    [vocab, d] = table.shape as [number, number];
  }
  const outDtype = enumOption(
    op,
    'options.outDtype',
    o.outDtype,
    FLOAT_DTYPES as readonly FloatDType[],
    table.dtype as FloatDType,
  );
  if (it.device === 'cpu') {
    const v = it.dataSync() as Int32Array;
    for (let i = 0; i < v.length; i++) {
      const id = v[i] as number;
      if (id < 0 || id >= vocab) throw rangeError(op, `ids[${i}]`, `a token id in 0..${vocab - 1}`, `${id}`);
    }
  }
  const device = commonDevice(op, [
    ['ids', it],
    ['weight', table],
  ]);
  const out = Tensor._alloc(op, outDtype, [...it.shape, d], device);
  const args = {
    ids: it._native(op, 'ids'),
    weight: table._native(op, 'weight'),
    out: out._native(op, 'out'),
    count: it.size,
    vocab,
    d,
    packed,
  };
  return { out, args };
}

/**
 * Embedding lookup: row `ids[i]` of the table (a `[vocab, d]` tensor, or a tied LM head's
 * {@link PackedLinear}).
 * @param ids `[...]` int32 in 0..vocab-1.
 * @returns `[..., d]`, the table's dtype or outDtype.
 * @throws TypeError for a wrong dtype; RangeError for an id out of range.
 * @example
 * const h = await embedding(new Tensor('int32', [1, 2, 3], [1, 3]), table);
 */
export async function embedding(ids: Tensor, weight: Tensor | PackedLinear, opts: EmbeddingOptions = {}): Promise<Tensor> {
  maxArgs('embedding', arguments.length, 3);
  const { out, args } = prepareEmbedding('embedding', ids, weight, opts);
  await callAsync('embedding', args, [out]);
  return out;
}

/**
 * {@link embedding} on the calling thread.
 * @example
 * const h = embeddingSync(ids, table);
 */
export function embeddingSync(ids: Tensor, weight: Tensor | PackedLinear, opts: EmbeddingOptions = {}): Tensor {
  maxArgs('embeddingSync', arguments.length, 3);
  const { out, args } = prepareEmbedding('embeddingSync', ids, weight, opts);
  callSync('embedding', args, [out]);
  return out;
}

// ---- transposeSplit ---------------------------------------------------------------------------------

function prepareTransposeSplit(op: string, x: unknown, sizes: unknown) {
  const xt = tensorArg(op, 'x', x, FLOAT_DTYPES, 3);
  const [batch, r, c] = xt.shape as [number, number, number];
  if (!Array.isArray(sizes) || sizes.length < 1 || sizes.length > MAX_SPLIT) {
    throw typeError(op, 'sizes', `an array of 1 to ${MAX_SPLIT} row counts`, sizes);
  }
  const device = commonDevice(op, [['x', xt]]);
  const outs: Tensor[] = [];
  const outputs: object[] = [];
  let row0 = 0;
  try {
    for (let i = 0; i < sizes.length; i++) {
      const rows = intOption(op, `sizes[${i}]`, sizes[i], 0, 0, r);
      const out = Tensor._alloc(op, xt.dtype, [batch, c, rows], device);
      outs.push(out);
      outputs.push({ out: out._native(op, `sizes[${i}]`), row0, rows });
      row0 += rows;
    }
    if (row0 !== r) throw rangeError(op, 'sizes', `row counts adding up to x.shape[1] = ${r}`, `${row0}`);
  } catch (e) {
    for (const t of outs) t.dispose();
    throw e;
  }
  return { outs, args: { x: xt._native(op, 'x'), batch, r, c, outputs } };
}

/**
 * Splits x `[batch, r, c]` along r and transposes each part: out_i `[batch, c, sizes[i]]`. With c = 1
 * it is a plain split of the columns of `[batch, r]`.
 * @param x `[batch, r, c]` float32 | float16 | bfloat16.
 * @param sizes row counts adding up to r.
 * @throws TypeError for a wrong dtype; RangeError for sizes that do not add up.
 * @example
 * const [xs, B, C] = await transposeSplit(xBC, [1536, 128, 128]);
 */
export async function transposeSplit(x: Tensor, sizes: readonly number[]): Promise<Tensor[]> {
  maxArgs('transposeSplit', arguments.length, 2);
  const { outs, args } = prepareTransposeSplit('transposeSplit', x, sizes);
  await callAsync('transposeSplit', args, outs);
  return outs;
}

/**
 * {@link transposeSplit} on the calling thread.
 * @example
 * const [a, b] = transposeSplitSync(x, [4, 4]);
 */
export function transposeSplitSync(x: Tensor, sizes: readonly number[]): Tensor[] {
  maxArgs('transposeSplitSync', arguments.length, 2);
  const { outs, args } = prepareTransposeSplit('transposeSplitSync', x, sizes);
  callSync('transposeSplit', args, outs);
  return outs;
}

// ---- dtLimit ----------------------------------------------------------------------------------------

export interface DtLimitOptions {
  /** `[heads]` float32, added before the softplus. */
  bias?: Tensor;
  /** Lower clamp (default 0). */
  lo?: number;
  /** Upper clamp (default +Infinity). */
  hi?: number;
}

function prepareDtLimit(op: string, dt: unknown, opts: unknown) {
  const o = options<DtLimitOptions>(op, opts, ['bias', 'lo', 'hi']);
  const t = tensorArg(op, 'dt', dt, FLOAT_DTYPES);
  if (t.shape.length < 1) throw rangeError(op, 'dt', 'at least 1 dimension', 'a scalar');
  const heads = t.shape[t.shape.length - 1] as number;
  const bias = optTensor(op, 'options.bias', o.bias, ['float32'], 1);
  if (bias) expectShape(op, 'options.bias', bias, [heads], 'dt.shape[-1]');
  const lo = o.lo === undefined ? 0 : numberOption(op, 'options.lo', o.lo, 0);
  if (o.hi !== undefined && typeof o.hi !== 'number') throw typeError(op, 'options.hi', 'a number', o.hi);
  const hi = o.hi === undefined || o.hi === Number.POSITIVE_INFINITY ? 3.4e38 : o.hi;
  if (Number.isNaN(hi) || hi < lo) throw rangeError(op, 'options.hi', `a number >= lo (${lo})`, `${o.hi}`);
  const device = commonDevice(op, [
    ['dt', t],
    ['options.bias', bias],
  ]);
  const out = Tensor._alloc(op, t.dtype, t.shape, device);
  const args = {
    dt: t._native(op, 'dt'),
    bias: bias?._native(op, 'options.bias'),
    out: out._native(op, 'out'),
    rows: shapeSize(t.shape.slice(0, -1)),
    heads,
    lo,
    hi,
  };
  return { out, args };
}

/**
 * `clamp(softplus(dt + bias), lo, hi)`: Mamba-2's dt under a finite `time_step_limit`.
 * @param dt `[..., heads]` float32 | float16 | bfloat16.
 * @returns `[..., heads]`, dt's dtype.
 * @throws TypeError for a wrong dtype; RangeError for a bad limit or bias shape.
 * @example
 * const dt2 = await dtLimit(dt, { bias: dtBias, lo: 0, hi: 0.1 });
 */
export async function dtLimit(dt: Tensor, opts: DtLimitOptions = {}): Promise<Tensor> {
  maxArgs('dtLimit', arguments.length, 2);
  const { out, args } = prepareDtLimit('dtLimit', dt, opts);
  await callAsync('dtLimit', args, [out]);
  return out;
}

/**
 * {@link dtLimit} on the calling thread.
 * @example
 * const dt2 = dtLimitSync(dt, { hi: 0.1 });
 */
export function dtLimitSync(dt: Tensor, opts: DtLimitOptions = {}): Tensor {
  maxArgs('dtLimitSync', arguments.length, 2);
  const { out, args } = prepareDtLimit('dtLimitSync', dt, opts);
  callSync('dtLimit', args, [out]);
  return out;
}

// ---- sample -----------------------------------------------------------------------------------------

export interface SampleOptions {
  /** 0 (default): the argmax. */
  temperature?: number;
  /** Keep only the k most likely tokens (default: all). */
  topK?: number;
  /** Keep the smallest set of the most likely tokens holding this much of their mass (default 1: all). */
  topP?: number;
  /** `[rows]` float64 uniform draws in [0, 1), one per row; required when temperature > 0. */
  draws?: Tensor;
}

function sampleArgs(op: string, rows: number, vocab: number, opts: unknown) {
  const o = options<SampleOptions>(op, opts, ['temperature', 'topK', 'topP', 'draws']);
  const temperature = numberOption(op, 'options.temperature', o.temperature, 0);
  if (temperature < 0) throw rangeError(op, 'options.temperature', 'a number >= 0', `${temperature}`);
  const topK = intOption(op, 'options.topK', o.topK, 0, 0, Number.MAX_SAFE_INTEGER);
  const topP = numberOption(op, 'options.topP', o.topP, 1);
  if (!(topP > 0 && topP <= 1)) throw rangeError(op, 'options.topP', 'a number in (0, 1]', `${topP}`);
  const draws = optTensor(op, 'options.draws', o.draws, ['float64'], 1);
  if (temperature > 0) {
    if (draws === undefined) throw typeError(op, 'options.draws', `a float64 Tensor of ${rows} uniform draws`, undefined);
    expectShape(op, 'options.draws', draws, [rows], 'rows');
  }
  return { draws, args: { rows, vocab, temperature, topK, topP } };
}

function prepareSample(op: string, logits: unknown, opts: unknown) {
  const lt = tensorArg(op, 'logits', logits, ['float32'], 2);
  if (lt.device !== 'cpu') throw rangeError(op, 'logits', 'a CPU tensor (copy device logits to the host first)', lt.device);
  const [rows, vocab] = lt.shape as [number, number];
  if (vocab < 1) throw rangeError(op, 'logits', 'a vocabulary of at least 1', `[${lt.shape.join(', ')}]`);
  const { draws, args } = sampleArgs(op, rows, vocab, opts);
  const tokens = Tensor._alloc(op, 'int32', [rows], -1);
  return {
    tokens,
    args: {
      ...args,
      logits: lt._native(op, 'logits'),
      draws: draws?._native(op, 'options.draws'),
      tokens: tokens._native(op, 'tokens'),
    },
  };
}

/**
 * The next token of each row of logits: the argmax at temperature 0 (the first on ties, as torch),
 * else a draw from softmax(logits / temperature) kept to the topK most likely tokens and then to the
 * smallest set of those holding topP of their mass (transformers' order), with the given uniform draw.
 * @param logits `[rows, vocab]` float32, on the CPU.
 * @returns `[rows]` int32 token ids.
 * @throws TypeError for a wrong dtype or missing draws; RangeError for bad options or shapes.
 * @example
 * const tokens = await sample(logits, { temperature: 0.8, topP: 0.95, draws });
 */
export async function sample(logits: Tensor, opts: SampleOptions = {}): Promise<Tensor> {
  maxArgs('sample', arguments.length, 2);
  const { tokens, args } = prepareSample('sample', logits, opts);
  await callAsync('sample', args, [tokens]);
  return tokens;
}

/**
 * {@link sample} on the calling thread.
 * @example
 * const next = sampleSync(logits).dataSync()[0];
 */
export function sampleSync(logits: Tensor, opts: SampleOptions = {}): Tensor {
  maxArgs('sampleSync', arguments.length, 2);
  const { tokens, args } = prepareSample('sampleSync', logits, opts);
  callSync('sample', args, [tokens]);
  return tokens;
}

// ---- the fused decode step --------------------------------------------------------------------------

/** How a linear layer holds its weight, as the decode step reads it (nn.h linear_kind). */
export const LINEAR_KIND = { float: 0, w8a8: 1, w4a8: 2, w4a16: 3 } as const;

/** One linear layer for {@link createDecodePlan}. */
export interface DecodeLinear {
  kind: number;
  /** Float panels, or the packed int8/int4 bytes. */
  w: Tensor;
  bias?: Tensor;
  wScale?: Tensor;
  actScale?: Tensor;
  n: number;
  k: number;
  groupSize?: number;
  rotate?: boolean;
}

export interface DecodeLayer {
  norm: Tensor;
  inProj: DecodeLinear;
  xProj?: DecodeLinear;
  dtProj?: DecodeLinear;
  outProj: DecodeLinear;
  conv: Tensor;
  convBias?: Tensor;
  dtBias: Tensor;
  A: Tensor;
  D: Tensor;
  gatedNorm?: Tensor;
}

/** A whole model for the fused decode step (native/include/ssmkit/nn.h mamba_decode_model). */
export interface DecodeModel {
  mamba2: boolean;
  act: 'float32' | 'bfloat16' | 'float16';
  residualFp32: boolean;
  dModel: number;
  dInner: number;
  dState: number;
  dtRank: number;
  nheads: number;
  headdim: number;
  ngroups: number;
  convWidth: number;
  vocab: number;
  eps: number;
  dtLimit?: [number, number];
  layers: DecodeLayer[];
  normF: Tensor;
  head: DecodeLinear;
  embed: Tensor;
  embedPacked: boolean;
}

/** The native plan of a model's decode step: opaque; lives as long as the model's weights. */
export interface DecodePlan {
  readonly _plan: unknown;
  readonly layers: number;
  readonly device: string;
}

/** The native binding of a batch's per-layer states for {@link decodeStep}: opaque. */
export interface DecodeStates {
  readonly _states: unknown;
  readonly batch: number;
}

const DTYPE_CODES = { float32: 0, float16: 1, bfloat16: 2 } as const;

function linearDesc(op: string, name: string, l: DecodeLinear | undefined): object | undefined {
  if (l === undefined) return undefined;
  return {
    kind: l.kind,
    w: l.w._native(op, `${name}.w`),
    bias: l.bias?._native(op, `${name}.bias`),
    wScale: l.wScale?._native(op, `${name}.wScale`),
    actScale: l.actScale?._native(op, `${name}.actScale`),
    n: l.n,
    k: l.k,
    groupSize: l.groupSize ?? 0,
    rotate: l.rotate ?? false,
  };
}

/**
 * Builds the native plan of a model's decode step from its weights (all on one device); the plan keeps
 * them alive until it is dropped.
 * @throws RangeError when the weights are on different devices.
 * @example
 * const plan = createDecodePlan(desc);
 */
export function createDecodePlan(m: DecodeModel): DecodePlan {
  const op = 'createDecodePlan';
  commonDevice(op, [
    ['normF', m.normF],
    ['embed', m.embed],
    ['head', m.head.w],
  ]);
  const args = {
    mamba2: m.mamba2,
    act: DTYPE_CODES[m.act],
    residualFp32: m.residualFp32,
    dModel: m.dModel,
    dInner: m.dInner,
    dState: m.dState,
    dtRank: m.dtRank,
    nheads: m.nheads,
    headdim: m.headdim,
    ngroups: m.ngroups,
    convWidth: m.convWidth,
    vocab: m.vocab,
    eps: m.eps,
    dtLimited: m.dtLimit !== undefined,
    dtLo: m.dtLimit?.[0] ?? 0,
    dtHi: m.dtLimit === undefined || m.dtLimit[1] === Number.POSITIVE_INFINITY ? 3.4e38 : m.dtLimit[1],
    layers: m.layers.map((l, i) => ({
      norm: l.norm._native(op, `layers[${i}].norm`),
      inProj: linearDesc(op, `layers[${i}].inProj`, l.inProj),
      xProj: linearDesc(op, `layers[${i}].xProj`, l.xProj),
      dtProj: linearDesc(op, `layers[${i}].dtProj`, l.dtProj),
      outProj: linearDesc(op, `layers[${i}].outProj`, l.outProj),
      conv: l.conv._native(op, `layers[${i}].conv`),
      convBias: l.convBias?._native(op, `layers[${i}].convBias`),
      dtBias: l.dtBias._native(op, `layers[${i}].dtBias`),
      A: l.A._native(op, `layers[${i}].A`),
      D: l.D._native(op, `layers[${i}].D`),
      gatedNorm: l.gatedNorm?._native(op, `layers[${i}].gatedNorm`),
    })),
    normF: m.normF._native(op, 'normF'),
    head: linearDesc(op, 'head', m.head),
    embed: m.embed._native(op, 'embed'),
    embedPacked: m.embedPacked,
  };
  try {
    return { _plan: native().decodePlan(args), layers: m.layers.length, device: m.normF.device };
  } catch (e) {
    throw fromNative(e);
  }
}

/**
 * Binds a batch's per-layer conv and SSM states for {@link decodeStep}.
 * @example
 * const st = bindDecodeStates(state.conv, state.ssm);
 */
export function bindDecodeStates(conv: readonly Tensor[], ssm: readonly Tensor[]): DecodeStates {
  const op = 'bindDecodeStates';
  if (conv.length !== ssm.length) throw rangeError(op, 'ssm', `${conv.length} tensors (one per layer)`, `${ssm.length}`);
  for (const [i, t] of conv.entries()) tensorArg(op, `conv[${i}]`, t, ['float32'], 3);
  for (const [i, t] of ssm.entries()) tensorArg(op, `ssm[${i}]`, t, ['float32'], [3, 4]);
  const batch = conv[0]?.shape[0] ?? 0;
  try {
    return {
      _states: native().decodeStates(
        conv.map((t, i) => t._native(op, `conv[${i}]`)),
        ssm.map((t, i) => t._native(op, `ssm[${i}]`)),
      ),
      batch,
    };
  } catch (e) {
    throw fromNative(e);
  }
}

function prepareDecodeStep(op: string, plan: DecodePlan, states: DecodeStates, ids: unknown, logits: unknown, opts: unknown) {
  const it = tensorArg(op, 'ids', ids, ['int32'], 1);
  const batch = it.shape[0] as number;
  if (batch !== states.batch) throw rangeError(op, 'ids', `${states.batch} ids (the states' batch)`, `${batch}`);
  const lt = tensorArg(op, 'logits', logits, ['float32'], 2);
  const vocab = lt.shape[1] as number;
  expectShape(op, 'logits', lt, [batch, vocab], 'batch, vocab');
  const args: Record<string, unknown> = {
    plan: plan._plan,
    states: states._states,
    ids: it._native(op, 'ids'),
    logits: lt._native(op, 'logits'),
  };
  let tokens: Tensor | undefined;
  if (opts !== undefined) {
    const s = sampleArgs(op, batch, vocab, opts);
    // On the ids' device: a device step writes its picks without waiting for itself (whoever reads
    // them waits: dataSync, or data() without holding the event loop).
    tokens = Tensor._alloc(op, 'int32', [batch], it._deviceIndex);
    args.sample = { ...s.args, draws: s.draws?._native(op, 'options.draws'), tokens: tokens._native(op, 'tokens') };
  }
  return { args, tokens };
}

/**
 * One decode step of every sequence (one new token each) through the whole model in one native call:
 * the states are updated in place and the next-token logits written to `logits` `[batch, vocab]`;
 * with sampling options it also picks each sequence's next token (as {@link sample}).
 * @returns the picked tokens `[batch]` int32 on the ids' device when sampling options were given.
 * @throws RangeError for ids that do not match the states' batch; errors of the kernels it runs.
 * @example
 * const next = await decodeStep(plan, states, ids, logits, { temperature: 0 });
 */
export async function decodeStep(
  plan: DecodePlan,
  states: DecodeStates,
  ids: Tensor,
  logits: Tensor,
  sampling?: SampleOptions,
): Promise<Tensor | undefined> {
  const { args, tokens } = prepareDecodeStep('decodeStep', plan, states, ids, logits, sampling);
  await callAsync('decodeStep', args, [tokens]);
  return tokens;
}

/**
 * {@link decodeStep} on the calling thread.
 * @example
 * decodeStepSync(plan, states, ids, logits);
 */
export function decodeStepSync(
  plan: DecodePlan,
  states: DecodeStates,
  ids: Tensor,
  logits: Tensor,
  sampling?: SampleOptions,
): Tensor | undefined {
  const { args, tokens } = prepareDecodeStep('decodeStepSync', plan, states, ids, logits, sampling);
  callSync('decodeStep', args, [tokens]);
  return tokens;
}
