/**
 * The model's linear layers behind one interface, so that the runner does not care how a layer's
 * weight is stored: float32/bfloat16 panels through the nn family's linear op, or (see ./quantized)
 * int8/int4 weights through the quantization family's GEMMs.
 */
import { type DecodeLinear, LINEAR_KIND, type LinearSplit, linear, PackedLinear, packLinear } from '../ops/nn';
import type { Tensor } from '../tensor';

export interface LinearCall {
  /** x comes as `[batch, K, seqlen]` instead of `[..., K]`. */
  xTransposed?: boolean;
  /** Outputs by column ranges (default: one output of all N columns). */
  split?: readonly LinearSplit[];
  /** Output dtype (default x's). */
  outDtype?: 'float32' | 'float16' | 'bfloat16';
}

/** One of the model's linear layers: `y = x @ W^T + b`, W `[outFeatures, inFeatures]`. */
export interface LinearLayer {
  readonly outFeatures: number;
  readonly inFeatures: number;
  /** Bytes of weight data one forward pass streams (what bounds decode speed). */
  readonly weightBytes: number;
  forward(x: Tensor, call?: LinearCall): Promise<Tensor[]>;
  /** The layer as the fused decode step reads it, or undefined when it cannot run there. */
  decodeLinear(): DecodeLinear | undefined;
  /** Moves the weights to a device (the layer is updated in place). */
  to(device: string): Promise<void>;
  dispose(): void;
}

/** A float linear layer over packed float32 or bfloat16 panels. */
export class FloatLinear implements LinearLayer {
  #w: PackedLinear;
  #bias: Tensor | undefined;
  readonly outFeatures: number;
  readonly inFeatures: number;

  private constructor(w: PackedLinear, bias: Tensor | undefined) {
    this.#w = w;
    this.#bias = bias;
    this.outFeatures = w.outFeatures;
    this.inFeatures = w.inFeatures;
  }

  /** Packs W `[N, K]` (any float dtype) into `dtype` panels; bias `[N]` float32. */
  static async create(w: Tensor, bias: Tensor | undefined, dtype: 'float32' | 'bfloat16'): Promise<FloatLinear> {
    return new FloatLinear(await packLinear(w, { dtype }), bias);
  }

  /** The packed weight (the tied embedding table reads it too). */
  get packed(): PackedLinear {
    return this.#w;
  }

  get weightBytes(): number {
    return this.outFeatures * this.inFeatures * (this.#w.dtype === 'float32' ? 4 : 2);
  }

  async forward(x: Tensor, call: LinearCall = {}): Promise<Tensor[]> {
    const out = await linear(x, this.#w, {
      ...(this.#bias ? { bias: this.#bias } : {}),
      ...(call.xTransposed ? { xTransposed: true } : {}),
      split: call.split ?? [{ cols: this.outFeatures, ...(call.outDtype ? { dtype: call.outDtype } : {}) }],
    });
    return out as Tensor[];
  }

  decodeLinear(): DecodeLinear {
    return {
      kind: LINEAR_KIND.float,
      w: this.#w.panels,
      ...(this.#bias ? { bias: this.#bias } : {}),
      n: this.outFeatures,
      k: this.inFeatures,
    };
  }

  async to(device: string): Promise<void> {
    if (this.#w.device === device) return;
    const panels = await this.#w.panels.to(device);
    const bias = this.#bias ? await this.#bias.to(device) : undefined;
    this.dispose();
    this.#w = new PackedLinear(panels, this.outFeatures, this.inFeatures);
    this.#bias = bias;
  }

  dispose(): void {
    this.#w.dispose();
    this.#bias?.dispose();
  }
}
