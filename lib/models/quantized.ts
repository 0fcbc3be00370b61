/**
 * Quantized linear layers after Quamba (W8A8) and Quamba2 (W4A8, W4A16), on the quantization family's
 * ops. Weights are quantized once at load: int8 per output channel (w8a8), int4 per group of 128 along
 * K (w4a8, w4a16; per channel where 128 does not divide K), then packed for the GEMM kernels. Activations
 * (w8a8, w4a8) are quantized to int8 with one static scale per layer, calibrated on a batch of token ids
 * the caller passes (absmax / 127 of the layer's input over it), or per token at run time without one.
 * out_proj's input carries the SSM's outliers, so it is rotated by an orthonormal Hadamard transform
 * first and its weight by the same transform along K (x W^T = (x H)(W H)^T), where K allows one.
 * The projections quantized: in_proj, out_proj and (Mamba) x_proj; dt_proj (rank 48..160, on the path of
 * the softplus), the norms, the embedding and the LM head stay in the model's float dtype.
 */

import { type DecodeLinear, LINEAR_KIND, splitColumns, transposeSplit } from '../ops/nn';
import { gemmW4A8, gemmW4A16, gemmW8A8, hadamard, type PackedWeight, packWeights, quantize } from '../ops/quant';
import { Tensor } from '../tensor';
import type { Checkpoint } from './checkpoint';
import type { LinearCall, LinearLayer } from './linear';
import type { MambaModel, ModelDType } from './mamba';

export type QuantizeMode = 'w8a8' | 'w4a8' | 'w4a16';

/** The group of k values one int4 weight scale covers (Quamba2's 128). */
export const QUANT_GROUP = 128;

/** Whether the Hadamard kernels take rows of length n (m * 2^k, m in 1, 12, 20, 28, 40). */
export function hadamardLength(n: number): boolean {
  for (const m of [1, 12, 20, 28, 40]) {
    if (n % m !== 0) continue;
    const q = n / m;
    if ((q & (q - 1)) === 0) return true;
  }
  return false;
}

/** x `[batch, K, seqlen]` -> `[batch, seqlen, K]`, or x itself when it is already token-major. */
async function tokenMajor(x: Tensor, call: LinearCall): Promise<Tensor> {
  if (!call.xTransposed) return x;
  return (await transposeSplit(x, [x.shape[1] as number]))[0] as Tensor;
}

/** A linear layer with int8 or int4 weights. */
export class QuantLinear implements LinearLayer {
  readonly mode: QuantizeMode;
  readonly outFeatures: number;
  readonly inFeatures: number;
  readonly rotate: boolean;
  #w: PackedWeight;
  #wScale: Tensor; // w8a8 (N) float32; int4 (N, K / group) in the model's dtype
  #groupSize: number;
  #bias: Tensor | undefined; // (N) float32
  #actScale: Tensor | undefined; // () float32 static activation scale (w8a8, w4a8)

  private constructor(
    mode: QuantizeMode,
    w: PackedWeight,
    wScale: Tensor,
    groupSize: number,
    bias: Tensor | undefined,
    actScale: Tensor | undefined,
    rotate: boolean,
  ) {
    this.mode = mode;
    this.#w = w;
    this.#wScale = wScale;
    this.#groupSize = groupSize;
    this.#bias = bias;
    this.#actScale = actScale;
    this.rotate = rotate;
    [this.outFeatures, this.inFeatures] = w.shape;
  }

  /**
   * Quantizes W `[N, K]` (cast to the model's dtype first, so that int4 scales take it) and packs it.
   * actScale: the static int8 scale of the input, if calibrated.
   */
  static async create(
    w: Tensor,
    bias: Tensor | undefined,
    mode: QuantizeMode,
    opts: { dtype: ModelDType; rotate: boolean; actScale?: number },
  ): Promise<QuantLinear> {
    const k = w.shape[1] as number;
    const wd = w.dtype === opts.dtype ? w : w.cast(opts.dtype);
    const bits = mode === 'w8a8' ? 8 : 4;
    const groupSize = bits === 8 ? k : k % QUANT_GROUP === 0 ? QUANT_GROUP : k;
    const { q, scale } = await quantize(wd, {
      bits,
      ...(bits === 8 ? { granularity: 'channel' as const } : { granularity: 'group' as const, groupSize }),
      hadamard: opts.rotate,
    });
    if (wd !== w) wd.dispose();
    const packed = await packWeights(q, bits === 4 ? { bits, groupSize } : { bits });
    q.dispose();
    const actScale = opts.actScale === undefined ? undefined : new Tensor('float32', new Float32Array([opts.actScale]), []);
    return new QuantLinear(mode, packed, scale, groupSize, bias, actScale, opts.rotate);
  }

  get weightBytes(): number {
    const n = this.outFeatures;
    const k = this.inFeatures;
    const scaleBytes = this.#wScale.size * (this.#wScale.dtype === 'float32' ? 4 : 2);
    return (this.mode === 'w8a8' ? n * k : (n * k) / 2) + scaleBytes;
  }

  async forward(x: Tensor, call: LinearCall = {}): Promise<Tensor[]> {
    const xt = await tokenMajor(x, call);
    const k = this.inFeatures;
    const lead = xt.shape.slice(0, -1);
    const m = xt.size / k;
    const x2 = xt.reshape([m, k]);
    const outDtype = call.outDtype ?? (x.dtype as 'float32');
    const bias = this.#bias ? { bias: this.#bias } : {};
    let out: Tensor;
    if (this.mode === 'w4a16') {
      const xr = this.rotate ? await hadamard(x2, { scale: 1 / Math.sqrt(k) }) : x2;
      out = await gemmW4A16(xr, this.#w, this.#wScale, { groupSize: this.#groupSize, outDtype, ...bias });
      if (xr !== x2) xr.dispose();
    } else {
      const a = await quantize(x2, {
        bits: 8,
        hadamard: this.rotate,
        ...(this.#actScale ? { scale: this.#actScale } : { granularity: 'token' as const }),
      });
      out =
        this.mode === 'w8a8'
          ? await gemmW8A8(a.q, this.#w, a.scale, this.#wScale, { outDtype, ...bias })
          : await gemmW4A8(a.q, this.#w, a.scale, this.#wScale, { groupSize: this.#groupSize, outDtype, ...bias });
      a.q.dispose();
      if (a.scale !== this.#actScale) a.scale.dispose();
    }
    x2.dispose();
    if (xt !== x) xt.dispose();
    const shaped = out.reshape([...lead, this.outFeatures]);
    out.dispose();
    const split = call.split;
    if (split === undefined || (split.length === 1 && !split[0]?.transposed && (split[0]?.dtype ?? outDtype) === outDtype)) {
      return [shaped];
    }
    const parts = await splitColumns(shaped, split);
    shaped.dispose();
    return parts;
  }

  decodeLinear(): DecodeLinear {
    return {
      kind: LINEAR_KIND[this.mode],
      w: this.#w._data,
      ...(this.#bias ? { bias: this.#bias } : {}),
      wScale: this.#wScale,
      ...(this.#actScale ? { actScale: this.#actScale } : {}),
      n: this.outFeatures,
      k: this.inFeatures,
      groupSize: this.#groupSize,
      rotate: this.rotate,
    };
  }

  async to(device: string): Promise<void> {
    if (this.#w.device === device) return;
    // PackedWeight has no copy of its own: move its bytes and rebuild it around them.
    const data = await this.#w._data.to(device);
    const move = async (t: Tensor | undefined) => {
      if (t === undefined) return undefined;
      const m = await t.to(device);
      t.dispose();
      return m;
    };
    const Packed = this.#w.constructor as new (
      bits: 8 | 4,
      shape: readonly [number, number],
      gs: number | undefined,
      d: Tensor,
    ) => PackedWeight;
    const moved = new Packed(this.#w.bits, this.#w.shape, this.#w.groupSize, data);
    this.#w.dispose();
    this.#w = moved;
    this.#wScale = (await move(this.#wScale)) as Tensor;
    this.#bias = await move(this.#bias);
    this.#actScale = await move(this.#actScale);
  }

  dispose(): void {
    this.#w.dispose();
    this.#wScale.dispose();
    this.#bias?.dispose();
    this.#actScale?.dispose();
  }
}

/** Records the absmax of a linear layer's (rotated) input while the float model runs. */
class Recorder implements LinearLayer {
  amax = 0;
  constructor(
    readonly inner: LinearLayer,
    readonly rotate: boolean,
  ) {}
  get outFeatures(): number {
    return this.inner.outFeatures;
  }
  get inFeatures(): number {
    return this.inner.inFeatures;
  }
  get weightBytes(): number {
    return this.inner.weightBytes;
  }
  async forward(x: Tensor, call: LinearCall = {}): Promise<Tensor[]> {
    let seen = x;
    if (this.rotate) {
      const xt = await tokenMajor(x, call);
      seen = await hadamard(xt, { scale: 1 / Math.sqrt(this.inFeatures) });
      if (xt !== x) xt.dispose();
    }
    const host = seen.device === 'cpu' ? seen : await seen.to('cpu');
    const v = (host.dtype === 'float32' ? host : host.cast('float32')).dataSync() as Float32Array;
    for (const e of v) this.amax = Math.max(this.amax, Math.abs(e));
    if (host !== seen) host.dispose();
    if (seen !== x) seen.dispose();
    return this.inner.forward(x, call);
  }
  decodeLinear(): undefined {
    return undefined;
  }
  async to(device: string): Promise<void> {
    await this.inner.to(device);
  }
  dispose(): void {
    this.inner.dispose();
  }
}

const CKPT_NAME = { inProj: 'in_proj', xProj: 'x_proj', dtProj: 'dt_proj', outProj: 'out_proj' } as const;

/**
 * Replaces the model's in_proj, x_proj and out_proj layers by quantized ones, reading their float
 * weights again from the checkpoint. With calibration (w8a8, w4a8) the float model first runs on it
 * to fix each layer's static activation scale.
 */
export async function quantizeModelLinears(
  model: MambaModel,
  ckpt: Checkpoint,
  mode: QuantizeMode,
  calibration: number[][] | undefined,
): Promise<void> {
  const targets = model._linears().filter((l) => l.name !== 'dtProj');
  const rotateOf = (name: string, k: number) => name === 'outProj' && hadamardLength(k);
  const scales = new Map<string, number>();
  if (calibration && mode !== 'w4a16') {
    const recorders = targets.map((t) => {
      const r = new Recorder(t.linear, rotateOf(t.name, t.linear.inFeatures));
      model._setLinear(t.layer, t.name, r);
      return { ...t, r };
    });
    try {
      const { logits, state } = await model.forward(calibration);
      logits.dispose();
      state.dispose();
    } finally {
      for (const t of recorders) {
        model._setLinear(t.layer, t.name, t.linear);
        scales.set(`${t.layer}.${t.name}`, t.r.amax > 0 ? t.r.amax / 127 : 1);
      }
    }
  }
  for (const t of targets) {
    const prefix = `backbone.layers.${t.layer}.mixer.${CKPT_NAME[t.name]}`;
    const w = await ckpt.read(`${prefix}.weight`);
    const bias = ckpt.has(`${prefix}.bias`) ? await ckpt.read(`${prefix}.bias`) : undefined;
    const bias32 = bias && bias.dtype !== 'float32' ? bias.cast('float32') : bias;
    if (bias32 !== bias) bias?.dispose();
    const actScale = scales.get(`${t.layer}.${t.name}`);
    const q = await QuantLinear.create(w, bias32, mode, {
      dtype: model.dtype,
      rotate: rotateOf(t.name, w.shape[1] as number),
      ...(actScale !== undefined ? { actScale } : {}),
    });
    w.dispose();
    model._setLinear(t.layer, t.name, q, mode);
    t.linear.dispose();
  }
}
