/**
 * MambaModel: a Hugging Face Mamba or Mamba-2 causal LM, loaded from its folder and run with the
 * package's ops. Prefill runs the whole prompt through the scan ops (selectiveScan / ssdScan and
 * causalConv1d, states returned), prompts of equal length as one batch. Decode runs one token per
 * sequence per step through selectiveStateUpdate and causalConv1dUpdate on states kept per sequence,
 * as one native call per step (the fused decode step, nn.h: on CUDA captured into a graph from its
 * second call on), or op by op where the backend has no fused step. Every op is
 * awaited, so CPU work stays off the event loop. Activations between ops are in the model's dtype; the
 * residual stream is float32 when the config says residual_in_fp32; logits are float32.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native } from '../backend';
import { rangeError, SsmkitError, typeError } from '../errors';
import {
  createDecodePlan,
  type DecodeLinear,
  type DecodePlan,
  decodeStep,
  dtLimit,
  embedding,
  gatedRmsNorm,
  type PackedLinear,
  rmsNorm,
  sample,
  transposeSplit,
} from '../ops/nn';
import { causalConv1d, causalConv1dUpdate, selectiveScan, selectiveStateUpdate, ssdScan } from '../ops/scan';
import { Tensor } from '../tensor';
import { enumOption, options } from '../validate';
import { Checkpoint } from './checkpoint';
import { type MambaConfig, normalizeConfig, parseConfigJson } from './config';
import { FloatLinear, type LinearLayer } from './linear';
import { type QuantizeMode, quantizeModelLinears } from './quantized';
import { SeededRandom } from './sampling';
import { copyRows, MambaState } from './state';

export type ModelDType = 'float32' | 'bfloat16';

export interface LoadOptions {
  /** 'cpu' (default) or 'cuda:N'. */
  device?: string;
  /** Weights and activations (default: bfloat16 for a bfloat16 checkpoint, else float32). */
  dtype?: ModelDType;
  /** Quantize in_proj, out_proj and (Mamba) x_proj at load, after Quamba / Quamba2 (see ./quantized). */
  quantize?: QuantizeMode;
  /** Token ids run through the float model to calibrate static activation scales (w8a8, w4a8). */
  calibration?: number[][];
}

export interface ForwardOptions {
  /** Continue from this state (updated in place and returned); default: a fresh state. */
  state?: MambaState;
}

export interface ForwardResult {
  /** `[batch, seqlen, vocab]` float32 (rows past a shorter sequence's end are zero). */
  logits: Tensor;
  state: MambaState;
}

/** What {@link MambaModel.generate}'s onToken receives for each new token. */
export interface TokenEvent {
  /** Index of the prompt in the batch. */
  sequence: number;
  token: number;
  /** 0 for the first new token. */
  step: number;
}

export interface GenerateOptions {
  maxNewTokens: number;
  /** 0 (default) is greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Seed of the sampler (default: random). */
  seed?: number;
  signal?: AbortSignal;
  onToken?: (event: TokenEvent) => void;
}

export interface GenerateResult {
  /** The new tokens of each prompt. */
  tokens: number[][];
}

interface Layer {
  norm: Tensor; // (d) float32
  inProj: LinearLayer;
  conv: Tensor; // (convDim, convKernel) float32
  convBias?: Tensor; // (convDim) float32
  xProj?: LinearLayer; // mamba: (dtRank + 2 dState, dInner)
  dtProj?: LinearLayer; // mamba: (dInner, dtRank), its bias goes to the scan as deltaBias
  dtBias: Tensor; // mamba (dInner), mamba2 (nHeads) float32
  A: Tensor; // mamba (dInner, dState), mamba2 (nHeads) float32: -exp(A_log)
  D: Tensor; // mamba (dInner), mamba2 (nHeads) float32
  gatedNorm?: Tensor; // mamba2 (dInner) float32
  outProj: LinearLayer;
}

const OP = 'MambaModel.load';

function disposeAll(...ts: (Tensor | undefined | Tensor[])[]): void {
  for (const t of ts) {
    if (Array.isArray(t)) for (const u of t) u.dispose();
    else t?.dispose();
  }
}

async function one(p: Promise<Tensor[]>): Promise<Tensor> {
  return (await p)[0] as Tensor;
}

function f32(t: Tensor): Tensor {
  if (t.dtype === 'float32') return t;
  const c = t.cast('float32');
  t.dispose();
  return c;
}

/**
 * A Mamba (`model_type: "mamba"`) or Mamba-2 (`"mamba2"`) causal language model.
 * @example
 * const model = await MambaModel.load('./mamba-130m-hf', { dtype: 'bfloat16' });
 * const { tokens } = await model.generate([[1, 2, 3]], { maxNewTokens: 16 });
 */
export class MambaModel {
  readonly config: MambaConfig;
  readonly dtype: ModelDType;
  readonly device: string;
  readonly quantize: QuantizeMode | undefined;
  #layers: Layer[];
  #normF: Tensor;
  #head: LinearLayer;
  #embed: Tensor | PackedLinear;
  #disposed = false;
  // The fused decode step's native plan: built on first use; null where it cannot run.
  #plan: DecodePlan | null | undefined;
  #fused = true;
  // Generation prefills prompts longer than this in chunks (bounded activations, same result).
  #prefillChunk = 2048;

  private constructor(
    config: MambaConfig,
    dtype: ModelDType,
    device: string,
    quantize: QuantizeMode | undefined,
    layers: Layer[],
    normF: Tensor,
    head: LinearLayer,
    embed: Tensor | PackedLinear,
  ) {
    this.config = config;
    this.dtype = dtype;
    this.device = device;
    this.quantize = quantize;
    this.#layers = layers;
    this.#normF = normF;
    this.#head = head;
    this.#embed = embed;
  }

  /**
   * Loads a Hugging Face folder: `config.json` plus `model.safetensors` or a sharded checkpoint
   * (`model.safetensors.index.json`). Weights are packed for the linear kernels (and quantized when
   * asked) one tensor at a time.
   * @param dir the folder.
   * @param opts device (default 'cpu'), dtype ('float32' | 'bfloat16'), quantize ('w8a8' | 'w4a8' |
   *   'w4a16'), calibration (token ids for static activation scales).
   * @throws TypeError / RangeError for bad options; SsmkitError ERR_SSMKIT_CONFIG for a bad config
   *   field, ERR_SSMKIT_FORMAT for missing or mis-shaped weights.
   * @example
   * const model = await MambaModel.load('./mamba2-130m', { quantize: 'w4a16' });
   */
  static async load(dir: string, opts: LoadOptions = {}): Promise<MambaModel> {
    if (typeof dir !== 'string') throw typeError(OP, 'dir', 'a folder path', dir);
    const o = options<LoadOptions>(OP, opts, ['device', 'dtype', 'quantize', 'calibration']);
    const device = o.device ?? 'cpu';
    if (typeof device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(device)) {
      throw rangeError(OP, 'options.device', "'cpu' or 'cuda:N'", typeof device === 'string' ? JSON.stringify(device) : device);
    }
    const dtypeOpt = enumOption(OP, 'options.dtype', o.dtype, ['float32', 'bfloat16'] as const, undefined as never);
    const quantize = enumOption(OP, 'options.quantize', o.quantize, ['w8a8', 'w4a8', 'w4a16'] as const, undefined as never);
    const calibration = o.calibration === undefined ? undefined : checkIds(OP, 'options.calibration', o.calibration);
    const cfgPath = path.join(dir, 'config.json');
    if (!fs.existsSync(cfgPath)) {
      throw new SsmkitError(`${OP}: ${dir}: no config.json (expected a Hugging Face model folder)`, 'ERR_SSMKIT_CONFIG');
    }
    const config = normalizeConfig(parseConfigJson(await fs.promises.readFile(cfgPath, 'utf8')));
    if (calibration) {
      for (const [i, seq] of calibration.entries()) {
        for (const id of seq) {
          if (id >= config.vocabSize)
            throw rangeError(OP, `options.calibration[${i}]`, `token ids below ${config.vocabSize}`, `${id}`);
        }
      }
    }
    const dtype: ModelDType = dtypeOpt ?? (config.checkpointDtype === 'bfloat16' ? 'bfloat16' : 'float32');
    const ckpt = await Checkpoint.open(dir);
    const model = await loadWeights(config, ckpt, dtype);
    if (quantize) {
      try {
        await quantizeModelLinears(model, ckpt, quantize, calibration);
      } catch (e) {
        model.dispose();
        throw e;
      }
    }
    if (device !== 'cpu') {
      await model.#to(device);
      await model.#probe();
    }
    return model;
  }

  /** @internal Assembles a model from loaded parts. */
  static _create(
    config: MambaConfig,
    dtype: ModelDType,
    layers: Layer[],
    normF: Tensor,
    head: LinearLayer,
    embed: Tensor | PackedLinear,
  ): MambaModel {
    return new MambaModel(config, dtype, 'cpu', undefined, layers, normF, head, embed);
  }

  /** @internal The linear layers, by name, for quantization. */
  _linears(): { layer: number; name: 'inProj' | 'xProj' | 'dtProj' | 'outProj'; linear: LinearLayer }[] {
    const out: { layer: number; name: 'inProj' | 'xProj' | 'dtProj' | 'outProj'; linear: LinearLayer }[] = [];
    this.#layers.forEach((l, i) => {
      out.push({ layer: i, name: 'inProj', linear: l.inProj });
      if (l.xProj) out.push({ layer: i, name: 'xProj', linear: l.xProj });
      if (l.dtProj) out.push({ layer: i, name: 'dtProj', linear: l.dtProj });
      out.push({ layer: i, name: 'outProj', linear: l.outProj });
    });
    return out;
  }

  /** @internal Replaces one linear layer (the caller disposes the old one). */
  _setLinear(layer: number, name: 'inProj' | 'xProj' | 'dtProj' | 'outProj', linear: LinearLayer, quantize?: QuantizeMode): void {
    const l = this.#layers[layer] as Layer;
    l[name] = linear;
    this.#plan = undefined;
    if (quantize) (this as { quantize: QuantizeMode | undefined }).quantize = quantize;
  }

  /** Bytes of weights one decode step streams (the linear layers and the LM head). */
  get weightBytes(): number {
    let n = this.#head.weightBytes;
    for (const l of this.#layers) {
      n += l.inProj.weightBytes + l.outProj.weightBytes + (l.xProj?.weightBytes ?? 0) + (l.dtProj?.weightBytes ?? 0);
    }
    return n;
  }

  async #to(device: string): Promise<void> {
    this.#plan = undefined;
    const move = async (t: Tensor): Promise<Tensor> => {
      const m = await t.to(device);
      t.dispose();
      return m;
    };
    for (const l of this.#layers) {
      for (const lin of [l.inProj, l.xProj, l.dtProj, l.outProj]) await lin?.to(device);
      l.norm = await move(l.norm);
      l.conv = await move(l.conv);
      if (l.convBias) l.convBias = await move(l.convBias);
      l.dtBias = await move(l.dtBias);
      l.A = await move(l.A);
      l.D = await move(l.D);
      if (l.gatedNorm) l.gatedNorm = await move(l.gatedNorm);
    }
    this.#normF = await move(this.#normF);
    await this.#head.to(device);
    if (this.#embed instanceof Tensor) this.#embed = await move(this.#embed);
    else this.#embed = (this.#head as FloatLinear).packed;
    (this as { device: string }).device = device;
  }

  /**
   * @internal Whether decode steps run fused (one native call per token, where the backend has it) or
   * op by op; both give the same results.
   */
  _setFused(on: boolean): void {
    this.#fused = on;
  }

  /** @internal The chunk length of generation's prefill. */
  _setPrefillChunk(tokens: number): void {
    this.#prefillChunk = tokens;
  }

  /** @internal Whether decode steps run fused now. */
  get _fused(): boolean {
    return this.#decodePlan() !== null;
  }

  /** The fused decode step's plan, or null where the weights or the backend cannot run it. */
  #decodePlan(): DecodePlan | null {
    if (!this.#fused) return null;
    if (this.#plan !== undefined) return this.#plan;
    this.#plan = null;
    if (typeof native().decodeStep !== 'function') return null;
    const c = this.config;
    const lin = (l: LinearLayer | undefined): DecodeLinear | undefined => l?.decodeLinear();
    const layers = [];
    for (const l of this.#layers) {
      const inProj = lin(l.inProj);
      const outProj = lin(l.outProj);
      const xProj = lin(l.xProj);
      const dtProj = lin(l.dtProj);
      if (!inProj || !outProj || (c.modelType === 'mamba' && (!xProj || !dtProj))) return null;
      layers.push({
        norm: l.norm,
        inProj,
        outProj,
        ...(xProj ? { xProj } : {}),
        ...(dtProj ? { dtProj } : {}),
        conv: l.conv,
        ...(l.convBias ? { convBias: l.convBias } : {}),
        dtBias: l.dtBias,
        A: l.A,
        D: l.D,
        ...(l.gatedNorm ? { gatedNorm: l.gatedNorm } : {}),
      });
    }
    const head = lin(this.#head);
    if (!head) return null;
    const [lo, hi] = c.timeStepLimit;
    this.#plan = createDecodePlan({
      mamba2: c.modelType === 'mamba2',
      act: this.dtype,
      residualFp32: c.residualInFp32,
      dModel: c.hiddenSize,
      dInner: c.intermediateSize,
      dState: c.stateSize,
      dtRank: c.timeStepRank,
      nheads: c.numHeads,
      headdim: c.headDim,
      ngroups: c.nGroups,
      convWidth: c.convKernel,
      vocab: c.vocabSize,
      eps: c.eps,
      ...(c.modelType === 'mamba2' && (lo !== 0 || hi !== Number.POSITIVE_INFINITY)
        ? { dtLimit: [lo, hi] as [number, number] }
        : {}),
      layers,
      normF: this.#normF,
      head,
      embed: this.#embed instanceof Tensor ? this.#embed : this.#embed.panels,
      embedPacked: !(this.#embed instanceof Tensor),
    });
    return this.#plan;
  }

  /**
   * One prefill and one decode step of a single token on the model's device: every kernel the runner
   * calls runs once, so that a build without one of them fails here, naming it, instead of mid-generation.
   */
  async #probe(): Promise<void> {
    try {
      const { logits, state } = await this.forward([[0, 0]]);
      logits.dispose();
      (await this.forward([[0]], { state })).logits.dispose();
      state.dispose();
    } catch (e) {
      this.dispose();
      const err = e as { code?: string; message?: string };
      if (err.code === 'ERR_SSMKIT_NOT_COMPILED') {
        throw new SsmkitError(
          `${OP}: options.device: ${this.device}: the model runner needs a kernel this build lacks on that device (${err.message})`,
          'ERR_SSMKIT_NOT_COMPILED',
          { cause: e },
        );
      }
      throw e;
    }
  }

  #check(op: string): void {
    if (this.#disposed) throw new TypeError(`${op}: the model has been disposed`);
  }

  #convShape(): number[] {
    const c = this.config;
    const convDim = c.modelType === 'mamba' ? c.intermediateSize : c.intermediateSize + 2 * c.nGroups * c.stateSize;
    return [convDim, c.convKernel - 1];
  }

  #ssmShape(): number[] {
    const c = this.config;
    return c.modelType === 'mamba' ? [c.intermediateSize, c.stateSize] : [c.numHeads, c.headDim, c.stateSize];
  }

  /**
   * A zero state for `batch` sequences (what a fresh forward starts from).
   * @throws RangeError unless batch is a positive integer.
   * @example
   * const state = model.createState(2);
   * const { logits } = await model.forward([[1], [2]], { state });
   */
  createState(batch: number): MambaState {
    this.#check('MambaModel.createState');
    if (!Number.isInteger(batch) || batch < 1)
      throw rangeError('MambaModel.createState', 'batch', 'a positive integer', `${batch}`);
    return MambaState.zeros(batch, this.config.numLayers, this.#convShape(), this.#ssmShape(), this.device);
  }

  /**
   * Runs token ids through the model: the logits of every position and the state after the last
   * token of each sequence. Sequences of different lengths run in groups of equal length.
   * @param inputIds `[batch][seqlen]` token ids.
   * @param opts state: continue from it (it is updated in place and returned).
   * @returns logits `[batch, maxSeqlen, vocab]` float32 and the state.
   * @throws TypeError / RangeError for bad ids or a state of another batch size.
   * @example
   * const { logits, state } = await model.forward([[1, 2, 3]]);
   * const next = await model.forward([[4]], { state });
   */
  async forward(inputIds: number[][], opts: ForwardOptions = {}): Promise<ForwardResult> {
    const op = 'MambaModel.forward';
    this.#check(op);
    const ids = checkIds(op, 'inputIds', inputIds, this.config.vocabSize);
    const o = options<ForwardOptions>(op, opts, ['state']);
    const state = o.state;
    if (state !== undefined) {
      if (!(state instanceof MambaState)) throw typeError(op, 'options.state', 'a MambaState', state);
      if (state.batch !== ids.length)
        throw rangeError(op, 'options.state', `a state of batch ${ids.length}`, `batch ${state.batch}`);
    }
    const B = ids.length;
    const maxLen = Math.max(...ids.map((s) => s.length));
    const groups = groupByLength(ids);
    if (groups.length === 1) {
      if (maxLen === 1 && state) {
        const logits = await this.#step(
          ids.map((s) => s[0] as number),
          state,
        );
        const shaped = logits.reshape([B, 1, this.config.vocabSize]);
        logits.dispose();
        return { logits: shaped, state };
      }
      const r = await this.#prefill(ids, state, false);
      if (state) {
        for (let l = 0; l < this.config.numLayers; l++) state._set(l, r.state.conv[l], r.state.ssm[l]);
        return { logits: r.logits, state };
      }
      return r;
    }
    // Ragged batch: each group of equal length on its own, then logits and states put back in order.
    const vocab = this.config.vocabSize;
    const logits = Tensor.zeros([B, maxLen, vocab], 'float32', this.device);
    const out = state ?? this.createState(B);
    for (const g of groups) {
      const sub = state ? state.select(g.rows) : undefined;
      const r = await this.#prefill(
        g.rows.map((i) => ids[i] as number[]),
        sub,
        false,
      );
      // logits row j of (b_g, len, vocab) -> row `row` of (B, maxLen, vocab), its first len positions
      const len = g.length;
      const dst = logits.reshape([B * maxLen, vocab]);
      const src = r.logits.reshape([g.rows.length * len, vocab]);
      g.rows.forEach((row, j) => {
        copyRows(dst, row * maxLen, src, j * len, len);
        for (let l = 0; l < this.config.numLayers; l++) {
          copyRows(out.conv[l] as Tensor, row, r.state.conv[l] as Tensor, j, 1);
          copyRows(out.ssm[l] as Tensor, row, r.state.ssm[l] as Tensor, j, 1);
        }
      });
      disposeAll(dst, src, r.logits);
      r.state.dispose();
      sub?.dispose();
    }
    return { logits, state: out };
  }

  /**
   * Generates up to maxNewTokens new tokens for each prompt: prefill of every prompt through the scan
   * (prompts of equal length together), then one decode step per token for the whole batch. Greedy
   * at temperature 0, else sampled after top-k / top-p from a seeded generator.
   * @param inputIds `[batch][promptLength]` token ids (prompts may differ in length).
   * @param opts maxNewTokens, temperature (0), topK, topP, seed, signal (rejects with its reason when
   *   aborted), onToken (called for every new token, in order).
   * @returns the new tokens of each prompt.
   * @throws TypeError / RangeError for bad ids or options; the signal's reason when aborted.
   * @example
   * const { tokens } = await model.generate([[1, 2, 3], [4, 5]], { maxNewTokens: 32, temperature: 0.8, topP: 0.9, seed: 1 });
   */
  async generate(inputIds: number[][], opts: GenerateOptions): Promise<GenerateResult> {
    const op = 'MambaModel.generate';
    this.#check(op);
    const ids = checkIds(op, 'inputIds', inputIds, this.config.vocabSize);
    const o = options<GenerateOptions>(op, opts, ['maxNewTokens', 'temperature', 'topK', 'topP', 'seed', 'signal', 'onToken']);
    if (opts === undefined || o.maxNewTokens === undefined)
      throw typeError(op, 'options.maxNewTokens', 'a non-negative integer', undefined);
    const maxNew = intArg(op, 'options.maxNewTokens', o.maxNewTokens, 0, 1e9);
    const temperature = o.temperature ?? 0;
    if (typeof temperature !== 'number') throw typeError(op, 'options.temperature', 'a number >= 0', temperature);
    if (!(temperature >= 0) || !Number.isFinite(temperature))
      throw rangeError(op, 'options.temperature', 'a finite number >= 0', `${temperature}`);
    const topK = o.topK === undefined ? undefined : intArg(op, 'options.topK', o.topK, 1, 1e9);
    if (o.topP !== undefined && typeof o.topP !== 'number') throw typeError(op, 'options.topP', 'a number in (0, 1]', o.topP);
    if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1))
      throw rangeError(op, 'options.topP', 'a number in (0, 1]', `${o.topP}`);
    const seed = o.seed === undefined ? Math.floor(Math.random() * 2 ** 32) : intArg(op, 'options.seed', o.seed, 0, 2 ** 53 - 1);
    const signal = o.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw typeError(op, 'options.signal', 'an AbortSignal', signal);
    const onToken = o.onToken;
    if (onToken !== undefined && typeof onToken !== 'function') throw typeError(op, 'options.onToken', 'a function', onToken);
    if (ids.some((s) => s.length === 0)) throw rangeError(op, 'inputIds', 'non-empty prompts', 'an empty prompt');
    const B = ids.length;
    const vocab = this.config.vocabSize;
    const tokens: number[][] = ids.map(() => []);
    if (maxNew === 0) return { tokens };
    signal?.throwIfAborted();
    const rng = new SeededRandom(seed);
    const sampling = { temperature, ...(topK !== undefined ? { topK } : {}), ...(o.topP !== undefined ? { topP: o.topP } : {}) };
    // One uniform draw per sequence and step from the seeded generator; the native sampler uses it.
    const draws = new Tensor('float64', new Float64Array(B), [B]);
    const drawsFor = () => {
      if (temperature === 0) return {};
      const d = draws.dataSync() as Float64Array;
      for (let b = 0; b < B; b++) d[b] = rng.next();
      return { draws };
    };

    // Prefill: groups of equal length; the next-token logits of each prompt land in `host` (B, vocab).
    const groups = groupByLength(ids);
    let state: MambaState;
    let host: Tensor;
    if (groups.length === 1) {
      const r = await this.#prefill(ids, undefined, true);
      state = r.state;
      host = await r.logits.to('cpu');
      r.logits.dispose();
    } else {
      state = this.createState(B);
      const all = new Float32Array(B * vocab);
      for (const g of groups) {
        const r = await this.#prefill(
          g.rows.map((i) => ids[i] as number[]),
          undefined,
          true,
        );
        const lg = (await r.logits.data()) as Float32Array;
        g.rows.forEach((row, j) => {
          all.set(lg.subarray(j * vocab, (j + 1) * vocab), row * vocab);
          for (let l = 0; l < this.config.numLayers; l++) {
            copyRows(state.conv[l] as Tensor, row, r.state.conv[l] as Tensor, j, 1);
            copyRows(state.ssm[l] as Tensor, row, r.state.ssm[l] as Tensor, j, 1);
          }
        });
        r.logits.dispose();
        r.state.dispose();
      }
      host = new Tensor('float32', all, [B, vocab]);
    }
    let next = await sample(host, { ...sampling, ...drawsFor() });
    host.dispose();
    let buffer: Tensor | undefined;
    // The fused step after this one's picks, enqueued before they are read back (see below).
    let ahead: Promise<Tensor | undefined> | undefined;
    const report = (picked: ArrayLike<number>, step: number) => {
      for (let b = 0; b < B; b++) {
        const tok = picked[b] as number;
        (tokens[b] as number[]).push(tok);
        onToken?.({ sequence: b, token: tok, step });
      }
    };
    try {
      for (let step = 0; step < maxNew; step++) {
        signal?.throwIfAborted();
        const plan = step + 1 < maxNew ? this.#decodePlan() : null;
        if (plan) {
          // One native call a token: the step, then the pick from its logits (written to one reused
          // buffer). The picks stay on the model's device, where the next step takes its ids from: their
          // copy to the host is enqueued first, then the next step, so the device runs that step while
          // this one's tokens come back and onToken sees them.
          if (next.device !== this.device) {
            // The prompt's picks were sampled on the host: the steps after them take their ids on the device.
            const moved = await next.to(this.device);
            next.dispose();
            next = moved;
          }
          const read = next.data();
          buffer ??= Tensor.empty([B, vocab], 'float32', this.device);
          ahead = decodeStep(plan, state._decodeStates(), next, buffer, { ...sampling, ...drawsFor() });
          report((await read) as Int32Array, step);
          const following = (await ahead) as Tensor;
          ahead = undefined;
          next.dispose();
          next = following;
          continue;
        }
        const picked = Array.from((await next.data()) as Int32Array);
        next.dispose();
        report(picked, step);
        if (step + 1 === maxNew) break;
        const logits = await this.#step(picked, state);
        const onHost = logits.device === 'cpu' ? logits : await logits.to('cpu');
        next = await sample(onHost, { ...sampling, ...drawsFor() });
        if (onHost !== logits) onHost.dispose();
        logits.dispose();
      }
    } finally {
      // A step still in flight (onToken threw, or a read failed) finishes before its states go.
      if (ahead !== undefined) (await ahead.catch(() => undefined))?.dispose();
      next.dispose();
      state.dispose();
      buffer?.dispose();
      draws.dispose();
    }
    return { tokens };
  }

  /**
   * Frees the weights; idempotent. Any later call throws.
   * @example
   * model.dispose();
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#plan = null;
    for (const l of this.#layers) {
      for (const lin of [l.inProj, l.xProj, l.dtProj, l.outProj]) lin?.dispose();
      disposeAll(l.norm, l.conv, l.convBias, l.dtBias, l.A, l.D, l.gatedNorm);
    }
    this.#normF.dispose();
    this.#head.dispose();
    if (this.#embed instanceof Tensor) this.#embed.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- the forward passes ---------------------------------------------------------------------

  /** One token per sequence as an int32 tensor `[batch]` on the model's device (the fused step's ids). */
  async #stepIds(tokens: readonly number[]): Promise<Tensor> {
    const t = new Tensor('int32', Int32Array.from(tokens), [tokens.length]);
    if (this.device === 'cpu') return t;
    const d = await t.to(this.device);
    t.dispose();
    return d;
  }

  /** Token ids (batch, seqlen) as an int32 tensor on the model's device. */
  async #ids(ids: readonly (readonly number[])[]): Promise<Tensor> {
    const flat = Int32Array.from(ids.flat());
    const t = new Tensor('int32', flat, [ids.length, (ids[0] as readonly number[]).length]);
    if (this.device === 'cpu') return t;
    const d = await t.to(this.device);
    t.dispose();
    return d;
  }

  /**
   * Prefill of equal-length sequences from `state` (or zeros): logits of every position
   * (batch, seqlen, vocab), or of the last one only (batch, vocab), and the new state.
   */
  async #prefill(
    ids: readonly (readonly number[])[],
    state: MambaState | undefined,
    lastOnly: boolean,
  ): Promise<{ logits: Tensor; state: MambaState }> {
    const L = (ids[0] as readonly number[]).length;
    if (!lastOnly || L <= this.#prefillChunk) {
      return (await this.#prefillRun(ids, state, lastOnly ? 'last' : 'all')) as { logits: Tensor; state: MambaState };
    }
    // A long prompt for generation: chunks of #prefillChunk tokens, each from the state the previous one
    // left, so that the activations stay bounded; only the last chunk computes logits.
    let st = state;
    try {
      for (let t0 = 0; ; t0 += this.#prefillChunk) {
        const t1 = Math.min(L, t0 + this.#prefillChunk);
        const chunk = ids.map((s) => s.slice(t0, t1));
        const r = await this.#prefillRun(chunk, st, t1 === L ? 'last' : 'none');
        if (st !== state) st?.dispose();
        st = r.state;
        if (t1 === L) return r as { logits: Tensor; state: MambaState };
      }
    } catch (e) {
      if (st !== state) st?.dispose();
      throw e;
    }
  }

  /** One prefill pass; logits of every position, of the last one, or none. */
  async #prefillRun(
    ids: readonly (readonly number[])[],
    state: MambaState | undefined,
    logitsOf: 'all' | 'last' | 'none',
  ): Promise<{ logits: Tensor | undefined; state: MambaState }> {
    const c = this.config;
    const B = ids.length;
    const L = (ids[0] as readonly number[]).length;
    const idT = await this.#ids(ids);
    let hidden = await embedding(idT, this.#embed, { outDtype: this.dtype }); // (B, L, d)
    idT.dispose();
    let residual: Tensor | undefined;
    const conv: Tensor[] = [];
    const ssm: Tensor[] = [];
    try {
      for (let l = 0; l < c.numLayers; l++) {
        const lw = this.#layers[l] as Layer;
        const resOut = residual ?? Tensor.empty(hidden.shape, c.residualInFp32 ? 'float32' : this.dtype, this.device);
        const hn = await rmsNorm(hidden, lw.norm, {
          ...(residual ? { residual } : {}),
          residualOut: resOut,
          eps: c.eps,
          outDtype: this.dtype,
        });
        residual = resOut;
        hidden.dispose();
        const r =
          c.modelType === 'mamba'
            ? await this.#mambaPrefill(lw, hn, B, L, state?.conv[l], state?.ssm[l])
            : await this.#mamba2Prefill(lw, hn, B, L, state?.conv[l], state?.ssm[l]);
        hn.dispose();
        hidden = r.out;
        conv.push(r.conv);
        ssm.push(r.ssm);
      }
      if (logitsOf === 'none') return { logits: undefined, state: new MambaState(B, conv, ssm) };
      const hn = await rmsNorm(hidden, this.#normF, {
        ...(residual ? { residual } : {}),
        eps: c.eps,
        lastToken: logitsOf === 'last',
        outDtype: this.dtype,
      });
      const logits = await one(this.#head.forward(hn, { outDtype: 'float32' }));
      hn.dispose();
      return { logits, state: new MambaState(B, conv, ssm) };
    } catch (e) {
      disposeAll(conv, ssm);
      throw e;
    } finally {
      hidden.dispose();
      residual?.dispose();
    }
  }

  async #mambaPrefill(
    lw: Layer,
    hn: Tensor,
    B: number,
    L: number,
    conv0: Tensor | undefined,
    ssm0: Tensor | undefined,
  ): Promise<{ out: Tensor; conv: Tensor; ssm: Tensor }> {
    const c = this.config;
    const di = c.intermediateSize;
    const ds = c.stateSize;
    const r = c.timeStepRank;
    // x, z (B, di, L): the scan layout, written directly by the projection.
    const [x, z] = (await lw.inProj.forward(hn, {
      split: [
        { cols: di, transposed: true },
        { cols: di, transposed: true },
      ],
    })) as [Tensor, Tensor];
    const cv = await causalConv1d(x, lw.conv, {
      ...(lw.convBias ? { bias: lw.convBias } : {}),
      activation: 'silu',
      ...(conv0 ? { initialStates: conv0 } : {}),
      returnFinalStates: true,
    });
    x.dispose();
    const xc = cv.out; // (B, di, L)
    // dtIn (B, L, r); Bm, Cm (B, ds, L)
    const [dtIn, Bm, Cm] = (await (lw.xProj as LinearLayer).forward(xc, {
      xTransposed: true,
      split: [{ cols: r }, { cols: ds, transposed: true }, { cols: ds, transposed: true }],
    })) as [Tensor, Tensor, Tensor];
    const delta = await one((lw.dtProj as LinearLayer).forward(dtIn, { split: [{ cols: di, transposed: true }] })); // (B, di, L)
    dtIn.dispose();
    const Bg = Bm.reshape([B, 1, ds, L]);
    const Cg = Cm.reshape([B, 1, ds, L]);
    const scan = await selectiveScan(xc, delta, lw.A, Bg, Cg, {
      D: lw.D,
      z,
      deltaBias: lw.dtBias,
      deltaSoftplus: true,
      ...(ssm0 ? { initialState: ssm0 } : {}),
      returnLastState: true,
    });
    disposeAll(xc, delta, Bm, Cm, Bg, Cg, z);
    const out = await one(lw.outProj.forward(scan.out, { xTransposed: true })); // (B, L, d)
    scan.out.dispose();
    return { out, conv: cv.finalStates as Tensor, ssm: scan.lastState as Tensor };
  }

  async #mamba2Prefill(
    lw: Layer,
    hn: Tensor,
    B: number,
    L: number,
    conv0: Tensor | undefined,
    ssm0: Tensor | undefined,
  ): Promise<{ out: Tensor; conv: Tensor; ssm: Tensor }> {
    const c = this.config;
    const di = c.intermediateSize;
    const gds = c.nGroups * c.stateSize;
    const nh = c.numHeads;
    // z (B, L, di); xBC (B, convDim, L) for the conv; dt (B, L, nh)
    const [z, xBC, dtRaw] = (await lw.inProj.forward(hn, {
      split: [{ cols: di }, { cols: di + 2 * gds, transposed: true }, { cols: nh }],
    })) as [Tensor, Tensor, Tensor];
    const cv = await causalConv1d(xBC, lw.conv, {
      ...(lw.convBias ? { bias: lw.convBias } : {}),
      activation: 'silu',
      ...(conv0 ? { initialStates: conv0 } : {}),
      returnFinalStates: true,
    });
    xBC.dispose();
    // (B, convDim, L) -> x (B, L, di), B and C (B, L, groups * dState)
    const [xs, Bm, Cm] = (await transposeSplit(cv.out, [di, gds, gds])) as [Tensor, Tensor, Tensor];
    cv.out.dispose();
    const { dt, dtOpts } = await this.#dt(dtRaw, lw);
    const x4 = xs.reshape([B, L, nh, c.headDim]);
    const B4 = Bm.reshape([B, L, c.nGroups, c.stateSize]);
    const C4 = Cm.reshape([B, L, c.nGroups, c.stateSize]);
    const scan = await ssdScan(x4, dt, lw.A, B4, C4, {
      chunkSize: c.chunkSize,
      D: lw.D,
      ...dtOpts,
      ...(ssm0 ? { initialStates: ssm0 } : {}),
      returnFinalStates: true,
    });
    disposeAll(xs, Bm, Cm, x4, B4, C4, dt);
    if (dt !== dtRaw) dtRaw.dispose();
    const y = scan.out.reshape([B, L, di]);
    const yn = await gatedRmsNorm(y, z, lw.gatedNorm as Tensor, { groups: c.nGroups, eps: c.eps });
    disposeAll(y, scan.out, z);
    const out = await one(lw.outProj.forward(yn));
    yn.dispose();
    return { out, conv: cv.finalStates as Tensor, ssm: scan.finalStates as Tensor };
  }

  /** Mamba-2's dt: the scan applies bias and softplus itself unless a finite limit needs the clamp first. */
  async #dt(dtRaw: Tensor, lw: Layer): Promise<{ dt: Tensor; dtOpts: object }> {
    const [lo, hi] = this.config.timeStepLimit;
    if (lo === 0 && hi === Number.POSITIVE_INFINITY) {
      return { dt: dtRaw, dtOpts: { dtBias: lw.dtBias, dtSoftplus: true } };
    }
    const dt = await dtLimit(dtRaw, { bias: lw.dtBias, lo, hi });
    return { dt, dtOpts: {} };
  }

  /** One decode step for a batch of tokens (one per sequence), updating `state` in place: logits (B, vocab). */
  async #step(tokens: readonly number[], state: MambaState): Promise<Tensor> {
    const c = this.config;
    const B = tokens.length;
    const plan = this.#decodePlan();
    if (plan) {
      const ids = await this.#stepIds(tokens);
      const logits = Tensor.empty([B, c.vocabSize], 'float32', this.device);
      await decodeStep(plan, state._decodeStates(), ids, logits);
      ids.dispose();
      return logits;
    }
    const idT = await this.#ids(tokens.map((t) => [t]));
    const ids1 = idT.reshape([B]);
    idT.dispose();
    let hidden = await embedding(ids1, this.#embed, { outDtype: this.dtype }); // (B, d)
    ids1.dispose();
    let residual: Tensor | undefined;
    try {
      for (let l = 0; l < c.numLayers; l++) {
        const lw = this.#layers[l] as Layer;
        const resOut = residual ?? Tensor.empty(hidden.shape, c.residualInFp32 ? 'float32' : this.dtype, this.device);
        const hn = await rmsNorm(hidden, lw.norm, {
          ...(residual ? { residual } : {}),
          residualOut: resOut,
          eps: c.eps,
          outDtype: this.dtype,
        });
        residual = resOut;
        hidden.dispose();
        hidden =
          c.modelType === 'mamba'
            ? await this.#mambaStep(lw, hn, B, state.conv[l] as Tensor, state.ssm[l] as Tensor)
            : await this.#mamba2Step(lw, hn, B, state.conv[l] as Tensor, state.ssm[l] as Tensor);
        hn.dispose();
      }
      const hn = await rmsNorm(hidden, this.#normF, { ...(residual ? { residual } : {}), eps: c.eps, outDtype: this.dtype });
      const logits = await one(this.#head.forward(hn, { outDtype: 'float32' }));
      hn.dispose();
      return logits;
    } finally {
      hidden.dispose();
      residual?.dispose();
    }
  }

  async #mambaStep(lw: Layer, hn: Tensor, B: number, convState: Tensor, ssmState: Tensor): Promise<Tensor> {
    const c = this.config;
    const di = c.intermediateSize;
    const ds = c.stateSize;
    const [x, z] = (await lw.inProj.forward(hn, { split: [{ cols: di }, { cols: di }] })) as [Tensor, Tensor]; // (B, di)
    const x3 = x.reshape([B, di, 1]);
    const xc3 = await causalConv1dUpdate(x3, convState, lw.conv, {
      ...(lw.convBias ? { bias: lw.convBias } : {}),
      activation: 'silu',
    });
    disposeAll(x, x3);
    const xc = xc3.reshape([B, di]);
    xc3.dispose();
    const [dtIn, Bm, Cm] = (await (lw.xProj as LinearLayer).forward(xc, {
      split: [{ cols: c.timeStepRank }, { cols: ds }, { cols: ds }],
    })) as [Tensor, Tensor, Tensor];
    const dt = await one((lw.dtProj as LinearLayer).forward(dtIn));
    dtIn.dispose();
    const y = await selectiveStateUpdate(ssmState, xc, dt, lw.A, Bm, Cm, {
      D: lw.D,
      z,
      dtBias: lw.dtBias,
      dtSoftplus: true,
    });
    disposeAll(xc, dt, Bm, Cm, z);
    const out = await one(lw.outProj.forward(y));
    y.dispose();
    return out;
  }

  async #mamba2Step(lw: Layer, hn: Tensor, B: number, convState: Tensor, ssmState: Tensor): Promise<Tensor> {
    const c = this.config;
    const di = c.intermediateSize;
    const gds = c.nGroups * c.stateSize;
    const nh = c.numHeads;
    const [z, xBC, dtRaw] = (await lw.inProj.forward(hn, { split: [{ cols: di }, { cols: di + 2 * gds }, { cols: nh }] })) as [
      Tensor,
      Tensor,
      Tensor,
    ];
    const xBC3 = xBC.reshape([B, di + 2 * gds, 1]);
    const conv = await causalConv1dUpdate(xBC3, convState, lw.conv, {
      ...(lw.convBias ? { bias: lw.convBias } : {}),
      activation: 'silu',
    });
    disposeAll(xBC, xBC3);
    const [xs, Bm, Cm] = (await transposeSplit(conv, [di, gds, gds])) as [Tensor, Tensor, Tensor]; // (B, 1, *)
    conv.dispose();
    const { dt, dtOpts } = await this.#dt(dtRaw, lw);
    const x3 = xs.reshape([B, nh, c.headDim]);
    const B3 = Bm.reshape([B, c.nGroups, c.stateSize]);
    const C3 = Cm.reshape([B, c.nGroups, c.stateSize]);
    const y = await selectiveStateUpdate(ssmState, x3, dt, lw.A, B3, C3, { D: lw.D, ...dtOpts });
    disposeAll(xs, Bm, Cm, x3, B3, C3, dt);
    if (dt !== dtRaw) dtRaw.dispose();
    const y2 = y.reshape([B, di]);
    const yn = await gatedRmsNorm(y2, z, lw.gatedNorm as Tensor, { groups: c.nGroups, eps: c.eps });
    disposeAll(y, y2, z);
    const out = await one(lw.outProj.forward(yn));
    yn.dispose();
    return out;
  }
}

// ---- loading ---------------------------------------------------------------------------------------

function formatError(what: string): SsmkitError {
  return new SsmkitError(`${OP}: ${what}`, 'ERR_SSMKIT_FORMAT');
}

/** Reads a tensor, checking its shape against what the config implies. */
async function readShaped(ckpt: Checkpoint, name: string, shape: readonly number[], from: string): Promise<Tensor> {
  const s = ckpt.shape(name);
  if (s === undefined) throw formatError(`the checkpoint has no tensor ${name} (${from})`);
  const ok = s.length === shape.length && s.every((d, i) => d === shape[i]);
  if (!ok) throw formatError(`${name}: expected shape [${shape.join(', ')}] (${from}), got [${s.join(', ')}]`);
  const t = await ckpt.read(name);
  if (t.dtype !== 'float32' && t.dtype !== 'float16' && t.dtype !== 'bfloat16' && t.dtype !== 'float64') {
    throw formatError(`${name}: expected a float tensor, got ${t.dtype}`);
  }
  return t;
}

async function readOptional(
  ckpt: Checkpoint,
  name: string,
  shape: readonly number[],
  from: string,
  want: boolean,
): Promise<Tensor | undefined> {
  if (!want) {
    if (ckpt.has(name)) throw formatError(`${name} is in the checkpoint but the config says there is no such bias (${from})`);
    return undefined;
  }
  return f32(await readShaped(ckpt, name, shape, from));
}

async function readLinear(
  ckpt: Checkpoint,
  prefix: string,
  n: number,
  k: number,
  withBias: boolean,
  dtype: ModelDType,
  from: string,
): Promise<FloatLinear> {
  const w = await readShaped(ckpt, `${prefix}.weight`, [n, k], from);
  const bias = await readOptional(ckpt, `${prefix}.bias`, [n], from, withBias);
  const lin = await FloatLinear.create(w, bias, dtype);
  w.dispose();
  return lin;
}

/** -exp(A_log) as float32. */
function negExp(t: Tensor): Tensor {
  const v = f32(t);
  const a = v.dataSync() as Float32Array;
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = -Math.exp(a[i] as number);
  v.dispose();
  return new Tensor('float32', out, t.shape);
}

async function loadWeights(c: MambaConfig, ckpt: Checkpoint, dtype: ModelDType): Promise<MambaModel> {
  const d = c.hiddenSize;
  const di = c.intermediateSize;
  const ds = c.stateSize;
  const embName = ckpt.has('backbone.embeddings.weight') ? 'backbone.embeddings.weight' : 'backbone.embedding.weight';
  const layers: Layer[] = [];
  const convDim = c.modelType === 'mamba' ? di : di + 2 * c.nGroups * ds;
  const made: { dispose(): void }[] = [];
  try {
    for (let l = 0; l < c.numLayers; l++) {
      const p = `backbone.layers.${l}`;
      const m = `${p}.mixer`;
      const norm = f32(await readShaped(ckpt, `${p}.norm.weight`, [d], 'hidden_size'));
      made.push(norm);
      const convW = f32(await readShaped(ckpt, `${m}.conv1d.weight`, [convDim, 1, c.convKernel], 'conv width and kernel'));
      const conv = convW.reshape([convDim, c.convKernel]);
      convW.dispose();
      made.push(conv);
      const convBias = await readOptional(ckpt, `${m}.conv1d.bias`, [convDim], 'use_conv_bias', c.useConvBias);
      if (convBias) made.push(convBias);
      if (c.modelType === 'mamba') {
        const inProj = await readLinear(ckpt, `${m}.in_proj`, 2 * di, d, c.useBias, dtype, '2 * intermediate_size, hidden_size');
        made.push(inProj);
        const xProj = await readLinear(
          ckpt,
          `${m}.x_proj`,
          c.timeStepRank + 2 * ds,
          di,
          false,
          dtype,
          'time_step_rank + 2 * state_size',
        );
        made.push(xProj);
        const dtW = await readShaped(ckpt, `${m}.dt_proj.weight`, [di, c.timeStepRank], 'intermediate_size, time_step_rank');
        const dtProj = await FloatLinear.create(dtW, undefined, dtype);
        dtW.dispose();
        made.push(dtProj);
        const dtBias = f32(await readShaped(ckpt, `${m}.dt_proj.bias`, [di], 'intermediate_size'));
        made.push(dtBias);
        const A = negExp(await readShaped(ckpt, `${m}.A_log`, [di, ds], 'intermediate_size, state_size'));
        made.push(A);
        const D = f32(await readShaped(ckpt, `${m}.D`, [di], 'intermediate_size'));
        made.push(D);
        const outProj = await readLinear(ckpt, `${m}.out_proj`, d, di, c.useBias, dtype, 'hidden_size, intermediate_size');
        made.push(outProj);
        layers.push({ norm, inProj, conv, ...(convBias ? { convBias } : {}), xProj, dtProj, dtBias, A, D, outProj });
      } else {
        const nh = c.numHeads;
        const inProj = await readLinear(
          ckpt,
          `${m}.in_proj`,
          2 * di + 2 * c.nGroups * ds + nh,
          d,
          c.useBias,
          dtype,
          '2 * intermediate_size + 2 * n_groups * state_size + num_heads, hidden_size',
        );
        made.push(inProj);
        const dtBias = f32(await readShaped(ckpt, `${m}.dt_bias`, [nh], 'num_heads'));
        made.push(dtBias);
        const A = negExp(await readShaped(ckpt, `${m}.A_log`, [nh], 'num_heads'));
        made.push(A);
        const D = f32(await readShaped(ckpt, `${m}.D`, [nh], 'num_heads'));
        made.push(D);
        const gatedNorm = f32(await readShaped(ckpt, `${m}.norm.weight`, [di], 'intermediate_size'));
        made.push(gatedNorm);
        const outProj = await readLinear(ckpt, `${m}.out_proj`, d, di, c.useBias, dtype, 'hidden_size, intermediate_size');
        made.push(outProj);
        layers.push({ norm, inProj, conv, ...(convBias ? { convBias } : {}), dtBias, A, D, gatedNorm, outProj });
      }
    }
    const normF = f32(await readShaped(ckpt, 'backbone.norm_f.weight', [d], 'hidden_size'));
    made.push(normF);
    const emb = await readShaped(ckpt, embName, [c.vocabSize, d], 'vocab_size, hidden_size');
    let head: FloatLinear;
    let embed: Tensor | PackedLinear;
    if (c.tieWordEmbeddings || !ckpt.has('lm_head.weight')) {
      if (!c.tieWordEmbeddings) throw formatError('the checkpoint has no lm_head.weight and tie_word_embeddings is false');
      head = await FloatLinear.create(emb, undefined, dtype);
      embed = head.packed;
      emb.dispose();
    } else {
      const hw = await readShaped(ckpt, 'lm_head.weight', [c.vocabSize, d], 'vocab_size, hidden_size');
      head = await FloatLinear.create(hw, undefined, dtype);
      hw.dispose();
      embed = emb.dtype === dtype ? emb : emb.cast(dtype);
      if (embed !== emb) emb.dispose();
    }
    return MambaModel._create(c, dtype, layers, normF, head, embed);
  } catch (e) {
    for (const t of made) t.dispose();
    throw e;
  }
}

// ---- argument checks -------------------------------------------------------------------------------

function intArg(op: string, name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number') throw typeError(op, name, `an integer in ${min}..${max}`, v);
  if (!Number.isInteger(v) || v < min || v > max) throw rangeError(op, name, `an integer in ${min}..${max}`, `${v}`);
  return v;
}

/** Checks `[batch][seqlen]` token ids: arrays of integers in 0..vocab-1, at least one sequence. */
function checkIds(op: string, name: string, ids: unknown, vocab = Number.MAX_SAFE_INTEGER): number[][] {
  if (!Array.isArray(ids)) throw typeError(op, name, 'an array of token id arrays (number[][])', ids);
  if (ids.length === 0) throw rangeError(op, name, 'at least one sequence', 'an empty batch');
  ids.forEach((seq, b) => {
    if (!Array.isArray(seq)) throw typeError(op, `${name}[${b}]`, 'an array of token ids', seq);
    if (seq.length === 0) throw rangeError(op, `${name}[${b}]`, 'at least one token', 'an empty sequence');
    seq.forEach((id, t) => {
      if (typeof id !== 'number') throw typeError(op, `${name}[${b}][${t}]`, 'a token id', id);
      if (!Number.isInteger(id) || id < 0 || id >= vocab)
        throw rangeError(op, `${name}[${b}][${t}]`, `a token id in 0..${vocab - 1}`, `${id}`);
    });
  });
  return ids as number[][];
}

/** Sequence indices grouped by length (in order of first appearance). */
function groupByLength(ids: readonly (readonly number[])[]): { length: number; rows: number[] }[] {
  const groups = new Map<number, number[]>();
  ids.forEach((s, i) => {
    const g = groups.get(s.length);
    if (g) g.push(i);
    else groups.set(s.length, [i]);
  });
  return [...groups.entries()].map(([length, rows]) => ({ length, rows }));
}
