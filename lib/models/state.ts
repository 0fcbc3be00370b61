/**
 * The recurrent state of a batch of sequences: per layer, the causal conv's last inputs and the SSM
 * state, both float32 with the sequences along the first dimension; and row copies between states
 * (assembling a batch from prompts prefilled in groups, or taking sequences out of one).
 */
import { native } from '../backend';
import { byteLength, shapeSize } from '../dtype';
import { fromNative, rangeError } from '../errors';
import { bindDecodeStates, type DecodeStates } from '../ops/nn';
import { Tensor } from '../tensor';

/**
 * The state {@link MambaModel.forward} returns and continues from: one row per sequence. Dispose it
 * when done (it holds device memory on a GPU).
 * @example
 * const { state } = await model.forward([[1, 2, 3]]);
 * const { logits } = await model.forward([[4]], { state }); // one decode step; state is updated
 * state.dispose();
 */
export class MambaState {
  /** Sequences in the batch. */
  readonly batch: number;
  /** Per layer `[batch, convDim, convKernel - 1]` float32: the conv's most recent inputs, oldest first. */
  readonly conv: Tensor[];
  /**
   * Per layer float32 SSM states: Mamba `[batch, intermediateSize, stateSize]`, Mamba-2
   * `[batch, numHeads, headDim, stateSize]`.
   */
  readonly ssm: Tensor[];
  #binding: DecodeStates | undefined;
  /** @internal */
  constructor(batch: number, conv: Tensor[], ssm: Tensor[]) {
    this.batch = batch;
    this.conv = conv;
    this.ssm = ssm;
  }

  /** Zero states for `batch` sequences. */
  static zeros(
    batch: number,
    layers: number,
    convShape: readonly number[],
    ssmShape: readonly number[],
    device: string,
  ): MambaState {
    const conv: Tensor[] = [];
    const ssm: Tensor[] = [];
    for (let l = 0; l < layers; l++) {
      conv.push(Tensor.zeros([batch, ...convShape], 'float32', device));
      ssm.push(Tensor.zeros([batch, ...ssmShape], 'float32', device));
    }
    return new MambaState(batch, conv, ssm);
  }

  /** @internal The native binding of the states for the fused decode step (rebuilt after _set). */
  _decodeStates(): DecodeStates {
    this.#binding ??= bindDecodeStates(this.conv, this.ssm);
    return this.#binding;
  }

  /** Replaces layer l's tensors (the old ones are disposed). @internal */
  _set(l: number, conv: Tensor | undefined, ssm: Tensor | undefined): void {
    this.#binding = undefined;
    if (conv !== undefined && conv !== this.conv[l]) {
      this.conv[l]?.dispose();
      this.conv[l] = conv;
    }
    if (ssm !== undefined && ssm !== this.ssm[l]) {
      this.ssm[l]?.dispose();
      this.ssm[l] = ssm;
    }
  }

  /** A new state holding sequences `rows` of this one, in that order. */
  select(rows: readonly number[]): MambaState {
    const pick = (t: Tensor) => {
      const out = Tensor.empty([rows.length, ...t.shape.slice(1)], 'float32', t.device);
      rows.forEach((r, i) => {
        copyRows(out, i, t, r, 1);
      });
      return out;
    };
    return new MambaState(rows.length, this.conv.map(pick), this.ssm.map(pick));
  }

  /** Frees every tensor; idempotent. */
  dispose(): void {
    this.#binding = undefined;
    for (const t of this.conv) t.dispose();
    for (const t of this.ssm) t.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Copies `rows` rows (along the first dimension) of src from srcRow into dst at dstRow. */
export function copyRows(dst: Tensor, dstRow: number, src: Tensor, srcRow: number, rows: number): void {
  const rowShape = src.shape.slice(1);
  if (dst.dtype !== src.dtype || dst.device !== src.device || shapeSize(dst.shape.slice(1)) !== shapeSize(rowShape)) {
    throw rangeError('copyRows', 'src', `rows like ${dst.toString()}`, src.toString());
  }
  const rowBytes = byteLength(src.dtype, rowShape);
  if (dst.device === 'cpu') {
    const da = dst.dataSync();
    const sa = src.dataSync();
    new Uint8Array(da.buffer, da.byteOffset + dstRow * rowBytes, rows * rowBytes).set(
      new Uint8Array(sa.buffer, sa.byteOffset + srcRow * rowBytes, rows * rowBytes),
    );
    return;
  }
  try {
    native().copyOnDevice(
      dst._deviceIndex,
      dst._deviceAddress + BigInt(dstRow * rowBytes),
      src._deviceAddress + BigInt(srcRow * rowBytes),
      rows * rowBytes,
    );
  } catch (e) {
    throw fromNative(e);
  }
}
