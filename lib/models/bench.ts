/**
 * What `ssmkit bench` and bench/model.mjs share: model shapes of the published Mamba checkpoints,
 * random checkpoints of those shapes written to a folder (sharded, as Hugging Face does), and the
 * timing of prefill and batch-1 decode.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { synchronize } from '../device';
import { encodeSafetensors } from '../safetensors';
import { Tensor } from '../tensor';
import type { MambaModel } from './mamba';

/** Hugging Face config.json fields of the published model sizes. */
export const MODEL_SHAPES: Readonly<Record<string, Record<string, unknown>>> = {
  'mamba-130m': { model_type: 'mamba', hidden_size: 768, num_hidden_layers: 24, time_step_rank: 48 },
  'mamba-370m': { model_type: 'mamba', hidden_size: 1024, num_hidden_layers: 48, time_step_rank: 64 },
  'mamba-1.4b': { model_type: 'mamba', hidden_size: 2048, num_hidden_layers: 48, time_step_rank: 128 },
  'mamba-2.8b': { model_type: 'mamba', hidden_size: 2560, num_hidden_layers: 64, time_step_rank: 160 },
  'mamba2-130m': { model_type: 'mamba2', hidden_size: 768, num_hidden_layers: 24, num_heads: 24, head_dim: 64 },
  'mamba2-2.7b': { model_type: 'mamba2', hidden_size: 2560, num_hidden_layers: 64, num_heads: 80, head_dim: 64 },
};

/** The full config.json of a shape: the published models' common fields filled in. */
export function shapeConfig(shape: string, dtype: 'float32' | 'bfloat16'): Record<string, unknown> {
  const s = MODEL_SHAPES[shape];
  if (s === undefined) throw new RangeError(`bench: unknown shape ${shape}; one of ${Object.keys(MODEL_SHAPES).join(', ')}`);
  const common = {
    vocab_size: 50280,
    expand: 2,
    conv_kernel: 4,
    layer_norm_epsilon: 1e-5,
    use_bias: false,
    use_conv_bias: true,
    residual_in_fp32: true,
    tie_word_embeddings: true,
    hidden_act: 'silu',
    dtype,
  };
  if (s.model_type === 'mamba') return { ...common, state_size: 16, ...s };
  return { ...common, state_size: 128, n_groups: 1, chunk_size: 256, ...s };
}

/** A fast seeded generator of roughly normal values (sum of uniforms), for random weights. */
function filler(seed: number): (scale: number, offset: number) => number {
  let s = seed >>> 0 || 1;
  const u = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  return (scale, offset) => offset + scale * (u() + u() + u() - 1.5) * 2;
}

/**
 * Writes `config.json` and random weights of a config to `dir`, in shards of at most `shardBytes`
 * (with `model.safetensors.index.json`). Weights are scaled like a trained model's (1/sqrt(fan-in)).
 */
export async function writeRandomCheckpoint(
  dir: string,
  config: Record<string, unknown>,
  opts: { seed?: number; shardBytes?: number } = {},
): Promise<void> {
  const c = config as Record<string, number>;
  const dtype = config.dtype === 'bfloat16' ? 'bfloat16' : 'float32';
  const rnd = filler(opts.seed ?? 1);
  const d = c.hidden_size as number;
  const di = (c.expand as number) * d;
  const ds = c.state_size as number;
  const mamba2 = config.model_type === 'mamba2';
  const ng = mamba2 ? (c.n_groups as number) : 1;
  const nh = mamba2 ? (c.num_heads as number) : 0;
  const convDim = mamba2 ? di + 2 * ng * ds : di;
  // name -> shape, scale, offset; A_log is filled with log(1..n).
  // Embeddings at 0.02 (the published models' init) keep the tied head's logits O(1), as trained ones are.
  const specs: [string, number[], number, number][] = [['backbone.embeddings.weight', [c.vocab_size as number, d], 0.02, 0]];
  for (let l = 0; l < (c.num_hidden_layers as number); l++) {
    const m = `backbone.layers.${l}.mixer`;
    specs.push([`backbone.layers.${l}.norm.weight`, [d], 0.1, 1]);
    specs.push([`${m}.in_proj.weight`, [mamba2 ? 2 * di + 2 * ng * ds + nh : 2 * di, d], 1 / Math.sqrt(d), 0]);
    specs.push([`${m}.conv1d.weight`, [convDim, 1, c.conv_kernel as number], 0.5, 0]);
    specs.push([`${m}.conv1d.bias`, [convDim], 0.1, 0]);
    if (mamba2) {
      specs.push([`${m}.dt_bias`, [nh], 0.5, -3]);
      specs.push([`${m}.A_log`, [nh], 0, 0]);
      specs.push([`${m}.D`, [nh], 0.5, 1]);
      specs.push([`${m}.norm.weight`, [di], 0.1, 1]);
    } else {
      const r = c.time_step_rank as number;
      specs.push([`${m}.x_proj.weight`, [r + 2 * ds, di], 1 / Math.sqrt(di), 0]);
      specs.push([`${m}.dt_proj.weight`, [di, r], 1 / Math.sqrt(r), 0]);
      specs.push([`${m}.dt_proj.bias`, [di], 0.5, -4]);
      specs.push([`${m}.A_log`, [di, ds], 0, 0]);
      specs.push([`${m}.D`, [di], 0.5, 1]);
    }
    specs.push([`${m}.out_proj.weight`, [d, di], 1 / Math.sqrt(di), 0]);
  }
  specs.push(['backbone.norm_f.weight', [d], 0.1, 1]);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const shardBytes = opts.shardBytes ?? 2 ** 30;
  const elem = dtype === 'bfloat16' ? 2 : 4;
  const shards: [string, number[], number, number][][] = [[]];
  let bytes = 0;
  for (const s of specs) {
    const n = s[1].reduce((a, b) => a * b, 1) * elem;
    if (bytes > 0 && bytes + n > shardBytes) {
      shards.push([]);
      bytes = 0;
    }
    (shards[shards.length - 1] as [string, number[], number, number][]).push(s);
    bytes += n;
  }
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < shards.length; i++) {
    const file =
      shards.length === 1
        ? 'model.safetensors'
        : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    const tensors: Record<string, Tensor> = {};
    for (const [name, shape, scale, offset] of shards[i] as [string, number[], number, number][]) {
      const n = shape.reduce((a, b) => a * b, 1);
      const v = new Float32Array(n);
      if (name.endsWith('A_log')) {
        const last = shape[shape.length - 1] as number;
        for (let j = 0; j < n; j++) v[j] = Math.log(1 + (mamba2 ? j : j % last));
      } else {
        for (let j = 0; j < n; j++) v[j] = rnd(scale, offset);
      }
      const t = new Tensor('float32', v, shape);
      tensors[name] = dtype === 'bfloat16' ? t.cast('bfloat16') : t;
      weightMap[name] = file;
    }
    fs.writeFileSync(path.join(dir, file), await encodeSafetensors(tensors, { format: 'pt' }));
    for (const t of Object.values(tensors)) t.dispose();
  }
  if (shards.length > 1) {
    fs.writeFileSync(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: weightMap }, null, 1),
    );
  }
}

export interface SpeedResult {
  promptTokens: number;
  /** Prefill throughput (generate with one new token), tokens per second (batch x prompt tokens / time). */
  prefillTokensPerSecond: number;
  /** Milliseconds per decode step (one new token for each sequence of the batch). */
  decodeMsPerToken: number;
  decodeTokensPerSecond: number;
  /** Weight bytes one decode step streams / its time, GB/s. */
  decodeGBps: number;
}

/**
 * Times prefill of `prompt` tokens and `tokens` decode steps (after `warmup` untimed ones), batch
 * `batch`, best of `repeats` runs each.
 */
export async function timeModel(
  model: MambaModel,
  opts: { prompt: number; tokens: number; batch?: number; repeats?: number },
): Promise<SpeedResult> {
  const batch = opts.batch ?? 1;
  const repeats = opts.repeats ?? 2;
  const vocab = model.config.vocabSize;
  const prompt = Array.from({ length: batch }, (_, b) =>
    Array.from({ length: opts.prompt }, (_, i) => (b * 7919 + i * 104729) % vocab),
  );
  const device = model.device;
  const now = () => Number(process.hrtime.bigint()) / 1e6;
  // Prefill as generation runs it: the prompt through the scan, the next token's logits only, and the
  // pick of the first new token.
  let prefill = Number.POSITIVE_INFINITY;
  for (let r = 0; r < repeats; r++) {
    const t0 = now();
    await model.generate(prompt, { maxNewTokens: 1 });
    await synchronize(device);
    prefill = Math.min(prefill, now() - t0);
  }
  let decode = Number.POSITIVE_INFINITY;
  for (let r = 0; r < repeats; r++) {
    const { logits, state } = await model.forward(prompt.map((p) => p.slice(0, 4)));
    logits.dispose();
    for (let i = 0; i < 2; i++)
      (
        await model.forward(
          prompt.map(() => [i + 1]),
          { state },
        )
      ).logits.dispose();
    await synchronize(device);
    const t0 = now();
    for (let i = 0; i < opts.tokens; i++) {
      const r1 = await model.forward(
        prompt.map(() => [(i * 31) % vocab]),
        { state },
      );
      // What generate does each step: the logits come back to the host for sampling.
      await r1.logits.data();
      r1.logits.dispose();
    }
    decode = Math.min(decode, (now() - t0) / opts.tokens);
    state.dispose();
  }
  return {
    promptTokens: opts.prompt,
    prefillTokensPerSecond: (batch * opts.prompt) / (prefill / 1000),
    decodeMsPerToken: decode,
    decodeTokensPerSecond: (batch * 1000) / decode,
    decodeGBps: model.weightBytes / (decode / 1000) / 1e9,
  };
}
