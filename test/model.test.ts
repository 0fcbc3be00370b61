// MambaModel against the golden checkpoints (test/golden/models.json: logits, greedy continuation and
// step logits made by mamba_ssm / transformers), against the float64 reference model on random
// checkpoints this test writes (biases, untied heads, n_groups > 1, dt limits, sharded files), and its
// sampling, streaming, abort and error behaviour.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSafetensorsSync, MambaModel, memory, saveSafetensors, Tensor } from '../dist/cjs/index.js';
import { rmsNormSync } from '../dist/cjs/ops/nn.js';
import { emptyState, type RefConfig, type RefWeights, refForward, refGreedy } from './ref/model';
import { assertClose, GOLDEN_DIR, Rng, testDevices, toF64 } from './util';

/** Why the model runner cannot run on `device` in this build (a kernel it needs is missing), or undefined. */
function runnerGap(device: string): string | undefined {
  if (device === 'cpu') return undefined;
  try {
    rmsNormSync(new Tensor('float32', [1, 2], [1, 2]).toSync(device), new Tensor('float32', [1, 1], [2]).toSync(device));
    return undefined;
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_SSMKIT_NOT_COMPILED') return (e as Error).message;
    throw e;
  }
}

// Logits against float64 / the reference implementations, keyed by the model's dtype.
const TOL = {
  float32: { rtol: 1e-3, atol: 1e-3 },
  // bfloat16 weights and activations: judged by relative L2 error of the logits instead of elementwise.
  bfloat16: { relL2: 0.06 },
};

interface GoldenModel {
  dir: string;
  config: string;
}

const goldenModels = JSON.parse(fs.readFileSync(path.join(GOLDEN_DIR, 'models.json'), 'utf8')) as GoldenModel[];

function relL2(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < e.length; i++) {
    num += ((a[i] as number) - (e[i] as number)) ** 2;
    den += (e[i] as number) ** 2;
  }
  return Math.sqrt(num / den);
}

function ids2d(t: Tensor): number[][] {
  const [b, l] = t.shape as [number, number];
  const v = t.dataSync() as Int32Array;
  return Array.from({ length: b }, (_, i) => Array.from(v.subarray(i * l, (i + 1) * l)));
}

/** The reference config and float64 weights of a checkpoint folder. */
function refOf(dir: string): { cfg: RefConfig; ws: RefWeights } {
  const c = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8').replace(/\bInfinity\b/g, '1e999'));
  const files = fs.existsSync(path.join(dir, 'model.safetensors'))
    ? ['model.safetensors']
    : [...new Set(Object.values(JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8')).weight_map))];
  const ws: RefWeights = {};
  for (const f of files) for (const [k, v] of Object.entries(loadSafetensorsSync(path.join(dir, f as string)))) ws[k] = toF64(v);
  const mamba2 = c.model_type === 'mamba2';
  const limit = (c.time_step_limit ?? [0, Number.POSITIVE_INFINITY]) as [number, number];
  return {
    cfg: {
      modelType: c.model_type,
      dModel: c.hidden_size,
      nLayer: c.num_hidden_layers,
      vocab: c.vocab_size,
      dInner: c.intermediate_size ?? c.expand * c.hidden_size,
      dState: c.state_size,
      dConv: c.conv_kernel,
      eps: c.layer_norm_epsilon,
      dtRank: c.time_step_rank,
      nHeads: c.num_heads,
      headDim: c.head_dim,
      nGroups: c.n_groups,
      dtMin: limit[0],
      dtMax: limit[1],
      tied: c.tie_word_embeddings ?? !mamba2,
    },
    ws,
  };
}

// ---- golden checkpoints -------------------------------------------------------------------------------

describe.each(testDevices())('golden models on %s', (device) => {
  const gap = runnerGap(device);
  if (gap) {
    it.skip(`skipped: ${gap}`, () => {});
    return;
  }
  for (const g of goldenModels) {
    const dir = path.join(GOLDEN_DIR, g.dir);
    const expected = loadSafetensorsSync(path.join(dir, 'expected.safetensors'));
    const inputIds = ids2d(expected.input_ids as Tensor);
    const generated = ids2d(expected.generated_ids as Tensor)[0] as number[];
    const prompt = inputIds[0] as number[];
    const newTokens = generated.slice(prompt.length);
    const stepLogits = toF64(expected.step_logits as Tensor);
    const vocab = (expected.logits as Tensor).shape[2] as number;

    it(`${g.dir}: float32 logits, greedy tokens and step logits`, async () => {
      const model = await MambaModel.load(dir, { device, dtype: 'float32' });
      expect(model.config.modelType).toBe(g.config);
      const { logits, state } = await model.forward(inputIds);
      expect(logits.shape).toEqual((expected.logits as Tensor).shape);
      assertClose(toF64(logits.toSync('cpu')), toF64(expected.logits as Tensor), TOL.float32, `${g.dir} logits`);
      state.dispose();

      const { tokens } = await model.generate([prompt], { maxNewTokens: newTokens.length });
      expect(tokens).toEqual([newTokens]);

      // Step logits: prefill, then feed the generated tokens back one at a time through the decode path.
      const r = await model.forward([prompt]);
      const lastRow = toF64(r.logits.toSync('cpu')).subarray((prompt.length - 1) * vocab);
      assertClose(lastRow, stepLogits.subarray(0, vocab), TOL.float32, `${g.dir} step 0`);
      for (let i = 1; i < newTokens.length; i++) {
        const s = await model.forward([[newTokens[i - 1] as number]], { state: r.state });
        expect(s.state).toBe(r.state);
        assertClose(
          toF64(s.logits.toSync('cpu')),
          stepLogits.subarray(i * vocab, (i + 1) * vocab),
          TOL.float32,
          `${g.dir} step ${i}`,
        );
      }
      model.dispose();
    });

    it(`${g.dir}: bfloat16 logits`, async () => {
      const model = await MambaModel.load(dir, { device, dtype: 'bfloat16' });
      const { logits } = await model.forward(inputIds);
      expect(relL2(toF64(logits.toSync('cpu')), toF64(expected.logits as Tensor))).toBeLessThan(TOL.bfloat16.relL2);
      const { tokens } = await model.generate([prompt], { maxNewTokens: 4 });
      expect(tokens[0]).toHaveLength(4);
      model.dispose();
    });
  }
});

// ---- random checkpoints against the float64 reference -------------------------------------------------

let tmp = '';
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ssmkit-model-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface ModelJson {
  model_type: string;
  hidden_size: number;
  intermediate_size?: number;
  expand: number;
  state_size: number;
  conv_kernel: number;
  vocab_size: number;
  num_hidden_layers: number;
  num_heads: number;
  n_groups: number;
  time_step_rank: number;
  use_bias?: boolean;
  use_conv_bias?: boolean;
  tie_word_embeddings?: boolean;
  dtype?: string;
}

/** Writes config.json and random weights (one file, or `shards` files plus the index) into a new folder. */
async function writeModel(name: string, config: Record<string, unknown>, seed: number, shards = 1): Promise<string> {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const rng = new Rng(seed);
  const c = config as unknown as ModelJson;
  const d = c.hidden_size;
  const di = c.intermediate_size ?? c.expand * d;
  const ds = c.state_size;
  const w = c.conv_kernel;
  const mamba2 = c.model_type === 'mamba2';
  const tensors: Record<string, Tensor> = {};
  const rand = (shape: number[], scale: number, offset = 0) =>
    new Tensor(
      'float32',
      Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => offset + scale * rng.normal()),
      shape,
    );
  tensors['backbone.embeddings.weight'] = rand([c.vocab_size, d], 1);
  tensors['backbone.norm_f.weight'] = rand([d], 0.1, 1);
  if (c.tie_word_embeddings === false) tensors['lm_head.weight'] = rand([c.vocab_size, d], 1 / Math.sqrt(d));
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `backbone.layers.${l}`;
    tensors[`${p}.norm.weight`] = rand([d], 0.1, 1);
    const m = `${p}.mixer`;
    const convDim = mamba2 ? di + 2 * c.n_groups * ds : di;
    const inOut = mamba2 ? 2 * di + 2 * c.n_groups * ds + c.num_heads : 2 * di;
    tensors[`${m}.in_proj.weight`] = rand([inOut, d], 1 / Math.sqrt(d));
    tensors[`${m}.out_proj.weight`] = rand([d, di], 1 / Math.sqrt(di));
    if (c.use_bias) {
      tensors[`${m}.in_proj.bias`] = rand([inOut], 0.1);
      tensors[`${m}.out_proj.bias`] = rand([d], 0.1);
    }
    tensors[`${m}.conv1d.weight`] = rand([convDim, 1, w], 0.5);
    if (c.use_conv_bias !== false) tensors[`${m}.conv1d.bias`] = rand([convDim], 0.1);
    if (mamba2) {
      const nh = c.num_heads;
      tensors[`${m}.A_log`] = new Tensor(
        'float32',
        Float32Array.from({ length: nh }, (_, i) => Math.log(1 + i)),
        [nh],
      );
      tensors[`${m}.D`] = rand([nh], 0.5, 1);
      tensors[`${m}.dt_bias`] = rand([nh], 0.5, -2);
      tensors[`${m}.norm.weight`] = rand([di], 0.1, 1);
    } else {
      const r = c.time_step_rank;
      tensors[`${m}.x_proj.weight`] = rand([r + 2 * ds, di], 1 / Math.sqrt(di));
      tensors[`${m}.dt_proj.weight`] = rand([di, r], 1 / Math.sqrt(r));
      tensors[`${m}.dt_proj.bias`] = rand([di], 0.5, -3);
      tensors[`${m}.A_log`] = new Tensor(
        'float32',
        Float32Array.from({ length: di * ds }, (_, i) => Math.log(1 + (i % ds))),
        [di, ds],
      );
      tensors[`${m}.D`] = rand([di], 0.5, 1);
    }
  }
  // A bfloat16 checkpoint for one of them: the loader widens or keeps it.
  if (c.dtype === 'bfloat16') for (const k of Object.keys(tensors)) tensors[k] = (tensors[k] as Tensor).cast('bfloat16');
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2).replace('"__inf__"', 'Infinity'));
  if (shards === 1) {
    await saveSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  } else {
    const names = Object.keys(tensors).sort();
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < shards; s++) {
      const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
      const part: Record<string, Tensor> = {};
      names.forEach((n, i) => {
        if (i % shards === s) {
          part[n] = tensors[n] as Tensor;
          weightMap[n] = file;
        }
      });
      await saveSafetensors(path.join(dir, file), part, { format: 'pt' });
    }
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  }
  return dir;
}

const MAMBA_BIASED = {
  model_type: 'mamba',
  hidden_size: 24,
  intermediate_size: 40,
  state_size: 5,
  num_hidden_layers: 3,
  vocab_size: 67,
  conv_kernel: 3,
  time_step_rank: 3,
  use_bias: true,
  use_conv_bias: false,
  tie_word_embeddings: false,
  layer_norm_epsilon: 1e-5,
  residual_in_fp32: true,
};

const MAMBA2_GROUPS = {
  model_type: 'mamba2',
  hidden_size: 32,
  expand: 2,
  num_heads: 8,
  head_dim: 8,
  n_groups: 2,
  state_size: 6,
  num_hidden_layers: 2,
  vocab_size: 45,
  conv_kernel: 4,
  chunk_size: 8,
  use_bias: false,
  use_conv_bias: true,
  tie_word_embeddings: true,
  layer_norm_epsilon: 1e-5,
  time_step_limit: [0.01, 0.5],
};

describe.each(testDevices())('random models on %s', (device) => {
  const gap = runnerGap(device);
  if (gap) {
    it.skip(`skipped: ${gap}`, () => {});
    return;
  }
  for (const [name, config, shards] of [
    ['mamba-biased', MAMBA_BIASED, 1],
    ['mamba2-groups', MAMBA2_GROUPS, 1],
    ['mamba2-sharded', { ...MAMBA2_GROUPS, n_groups: 4, time_step_limit: [0, '__inf__'], tie_word_embeddings: false }, 3],
    ['mamba-bf16-ckpt', { ...MAMBA_BIASED, dtype: 'bfloat16', tie_word_embeddings: true, use_bias: false }, 2],
  ] as const) {
    it(`${name}: forward, continuation and ragged batches against the reference`, async () => {
      const dir = await writeModel(`${name}-${device}`, config as Record<string, unknown>, name.length * 97);
      if (shards > 1) {
        // the same weights, sharded
        const sharded = await writeModel(
          `${name}-${device}-sharded`,
          config as Record<string, unknown>,
          name.length * 97,
          shards,
        );
        expect(fs.existsSync(path.join(sharded, 'model.safetensors.index.json'))).toBe(true);
        const a = await MambaModel.load(dir, { device, dtype: 'float32' });
        const b = await MambaModel.load(sharded, { device, dtype: 'float32' });
        const la = toF64((await a.forward([[1, 2, 3]])).logits.toSync('cpu'));
        const lb = toF64((await b.forward([[1, 2, 3]])).logits.toSync('cpu'));
        expect(Array.from(lb)).toEqual(Array.from(la));
      }
      const { cfg, ws } = refOf(dir);
      const model = await MambaModel.load(dir, { device, dtype: 'float32' });
      const rng = new Rng(3);
      const seq = (n: number) => Array.from({ length: n }, () => rng.int(0, cfg.vocab - 1));
      const a = seq(13);
      const b = seq(13);
      // Equal lengths: one batch.
      const full = await model.forward([a, b]);
      const refA = refForward(cfg, ws, a, emptyState(cfg));
      const refB = refForward(cfg, ws, b, emptyState(cfg));
      const got = toF64(full.logits.toSync('cpu'));
      assertClose(got.subarray(0, refA.length), refA, TOL.float32, `${name} logits[0]`);
      assertClose(got.subarray(refA.length), refB, TOL.float32, `${name} logits[1]`);
      // Continuation: 5 tokens, then 1 (decode path), then 7 (prefill from a state) = the 13 at once.
      const r1 = await model.forward([a.slice(0, 5), b.slice(0, 5)]);
      await model.forward([[a[5] as number], [b[5] as number]], { state: r1.state });
      const r3 = await model.forward([a.slice(6), b.slice(6)], { state: r1.state });
      const tail = toF64(r3.logits.toSync('cpu'));
      const v = cfg.vocab;
      assertClose(tail.subarray(0, 7 * v), refA.subarray(6 * v), TOL.float32, `${name} continued[0]`);
      assertClose(tail.subarray(7 * v), refB.subarray(6 * v), TOL.float32, `${name} continued[1]`);
      // Ragged: rows past a sequence's end are zero; each sequence matches on its own.
      const short = seq(4);
      const rag = await model.forward([a, short, b]);
      expect(rag.logits.shape).toEqual([3, 13, v]);
      const rg = toF64(rag.logits.toSync('cpu'));
      assertClose(rg.subarray(13 * v, 17 * v), refForward(cfg, ws, short, emptyState(cfg)), TOL.float32, `${name} ragged short`);
      expect(rg.subarray(17 * v, 26 * v).every((x) => x === 0)).toBe(true);
      assertClose(rg.subarray(26 * v), refB, TOL.float32, `${name} ragged b`);
      // A prompt prefilled in chunks (state passed between them) generates what it does in one piece.
      const whole = await model.generate([a, b], { maxNewTokens: 4 });
      model._setPrefillChunk(4);
      expect((await model.generate([a, b], { maxNewTokens: 4 })).tokens, `${name} chunked prefill`).toEqual(whole.tokens);
      model._setPrefillChunk(2048);
      // Greedy generation of a ragged batch equals each prompt alone, and the reference.
      const prompts = [a.slice(0, 9), short, b];
      const gen = await model.generate(prompts, { maxNewTokens: 6 });
      prompts.forEach((p, i) => {
        expect(gen.tokens[i], `${name} prompt ${i}`).toEqual(refGreedy(cfg, ws, p, 6).tokens);
      });
      model.dispose();
    });
  }
});

describe.each(testDevices())('the fused decode step on %s', (device) => {
  const gap = runnerGap(device);
  if (gap) {
    it.skip(`skipped: ${gap}`, () => {});
    return;
  }
  // One native call per token must give what the op-by-op path gives: the same kernels in the same order.
  for (const [name, config, dtype, quantize] of [
    ['mamba-biased', MAMBA_BIASED, 'float32', undefined],
    ['mamba-bf16', { ...MAMBA_BIASED, tie_word_embeddings: true }, 'bfloat16', undefined],
    ['mamba2-limits', MAMBA2_GROUPS, 'float32', undefined],
    ['mamba2-open', { ...MAMBA2_GROUPS, time_step_limit: [0, '__inf__'], n_groups: 1 }, 'bfloat16', undefined],
    ['mamba-w8a8', { ...MAMBA_BIASED, intermediate_size: 48 }, 'float32', 'w8a8'],
    ['mamba2-w4a16', MAMBA2_GROUPS, 'float32', 'w4a16'],
    ['mamba2-w4a8', MAMBA2_GROUPS, 'bfloat16', 'w4a8'],
  ] as const) {
    it(`${name}: fused and op-by-op decode agree`, async () => {
      const dir = await writeModel(`fused-${name}-${device}`, config as Record<string, unknown>, name.length * 7);
      const model = await MambaModel.load(dir, {
        device,
        dtype,
        ...(quantize ? { quantize, calibration: [[1, 2, 3, 4, 5, 6]] } : {}),
      });
      const prompts = [
        [1, 2, 3, 4, 5],
        [6, 7, 8, 9, 10],
        [11, 12, 13, 14, 15],
      ];
      const run = async (fused: boolean) => {
        model._setFused(fused);
        const r = await model.forward(prompts);
        const out: Float64Array[] = [];
        for (const t of [16, 17, 18])
          out.push(toF64((await model.forward([[t], [t + 1], [t + 2]], { state: r.state })).logits.toSync('cpu')));
        const { tokens } = await model.generate(prompts, { maxNewTokens: 5, temperature: 0.7, seed: 3 });
        return { out, tokens };
      };
      const fused = await run(true);
      expect(model._fused).toBe(true);
      const ops = await run(false);
      expect(model._fused).toBe(false);
      if (device === 'cpu') {
        expect(fused.tokens).toEqual(ops.tokens);
        fused.out.forEach((l, i) => {
          assertClose(l, ops.out[i] as Float64Array, { rtol: 1e-6, atol: 1e-6 }, `${name} step ${i}`);
        });
      } else {
        // On CUDA the fused step folds the small ops into the GEMV epilogues (float layers), which round
        // where the separate kernels do not: the fused step's tolerances against the CPU step
        // (nn-cuda.test.ts). The first new tokens come from the prefill, the same kernels either way.
        expect(fused.tokens.map((t) => t[0])).toEqual(ops.tokens.map((t) => t[0]));
        expect(fused.tokens.map((t) => t.length)).toEqual(ops.tokens.map((t) => t.length));
        fused.out.forEach((l, i) => {
          const label = `${name} step ${i} on ${device}`;
          if (dtype === 'float32' && !quantize) assertClose(l, ops.out[i] as Float64Array, { rtol: 2e-3, atol: 2e-3 }, label);
          else expect(relL2(l, ops.out[i] as Float64Array), label).toBeLessThan(3e-2);
        });
      }
      model.dispose();
    });
  }
});

// ---- generation options -------------------------------------------------------------------------------

describe('generate', () => {
  const dir = path.join(GOLDEN_DIR, 'mamba-tiny');
  let model: MambaModel;
  beforeAll(async () => {
    model = await MambaModel.load(dir);
  });
  afterAll(() => model.dispose());

  it('is reproducible for a seed; topK 1 is greedy', async () => {
    const opts = { maxNewTokens: 12, temperature: 1.2, topP: 0.95, topK: 40, seed: 42 };
    const a = await model.generate([[5, 6, 7], [8]], opts);
    const b = await model.generate([[5, 6, 7], [8]], opts);
    expect(b.tokens).toEqual(a.tokens);
    const c = await model.generate([[5, 6, 7], [8]], { ...opts, seed: 43 });
    expect(c.tokens).not.toEqual(a.tokens);
    const greedy = await model.generate([[5, 6, 7]], { maxNewTokens: 8 });
    const k1 = await model.generate([[5, 6, 7]], { maxNewTokens: 8, temperature: 5, topK: 1, seed: 1 });
    expect(k1.tokens).toEqual(greedy.tokens);
    const tinyP = await model.generate([[5, 6, 7]], { maxNewTokens: 8, temperature: 1, topP: 1e-9, seed: 2 });
    expect(tinyP.tokens).toEqual(greedy.tokens);
  });

  it('sampled tokens follow the softmax', async () => {
    // One step from one prompt, many seeds: the empirical frequency of the top token matches its probability.
    const { logits } = await model.forward([[9, 10]]);
    const row = toF64(logits).subarray(512);
    const max = Math.max(...row);
    const p = row.map((x) => Math.exp(x - max));
    const z = p.reduce((s, x) => s + x, 0);
    const top = row.indexOf(max);
    let hits = 0;
    const n = 300;
    for (let s = 0; s < n; s++) {
      const { tokens } = await model.generate([[9, 10]], { maxNewTokens: 1, temperature: 1, seed: s });
      if (tokens[0]?.[0] === top) hits++;
    }
    const pTop = (p[top] as number) / z;
    expect(Math.abs(hits / n - pTop)).toBeLessThan(4 * Math.sqrt((pTop * (1 - pTop)) / n) + 0.01);
  });

  it('runs concurrent generations on one model independently', async () => {
    const prompts = [[[5, 6, 7]], [[8, 9]], [[10], [11, 12, 13]]];
    const solo = [];
    for (const p of prompts) solo.push((await model.generate(p, { maxNewTokens: 6, temperature: 0.9, seed: 4 })).tokens);
    const together = await Promise.all(prompts.map((p) => model.generate(p, { maxNewTokens: 6, temperature: 0.9, seed: 4 })));
    expect(together.map((r) => r.tokens)).toEqual(solo);
  });

  it('streams every token through onToken, in order', async () => {
    const events: { sequence: number; token: number; step: number }[] = [];
    const { tokens } = await model.generate(
      [
        [1, 2],
        [3, 4, 5],
      ],
      { maxNewTokens: 5, onToken: (e) => events.push(e) },
    );
    expect(events).toHaveLength(10);
    expect(events.map((e) => e.step)).toEqual([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
    expect(events.filter((e) => e.sequence === 1).map((e) => e.token)).toEqual(tokens[1]);
    expect((await model.generate([[1]], { maxNewTokens: 0 })).tokens).toEqual([[]]);
  });

  it('stops when its signal aborts', async () => {
    const ac = new AbortController();
    let seen = 0;
    const run = model.generate([[1, 2, 3]], {
      maxNewTokens: 1000,
      signal: ac.signal,
      onToken: () => {
        if (++seen === 3) ac.abort();
      },
    });
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(seen).toBe(3);
    await expect(model.generate([[1]], { maxNewTokens: 2, signal: AbortSignal.abort() })).rejects.toMatchObject({
      name: 'AbortError',
    });
  });

  it('rejects with the error onToken throws, with every tensor it made freed', async () => {
    const live = memory().liveTensors;
    const boom = new Error('boom');
    let seen = 0;
    const run = model.generate([[1, 2, 3]], {
      maxNewTokens: 50,
      onToken: () => {
        if (++seen === 4) throw boom;
      },
    });
    await expect(run).rejects.toBe(boom);
    expect(seen).toBe(4);
    expect(memory().liveTensors).toBe(live);
  });

  it('keeps the event loop free while it generates (5 ms interval, p99 delay < 20 ms over the idle p99)', async () => {
    // A model big enough that prefill and each decode step take milliseconds of kernel time.
    const dir = await writeModel(
      'event-loop',
      { ...MAMBA2_GROUPS, hidden_size: 256, num_heads: 16, head_dim: 32, vocab_size: 4096, num_hidden_layers: 4 },
      5,
    );
    const big = await MambaModel.load(dir);
    // The timer's p99 lateness while `work` runs.
    const lateness = async (work: () => Promise<unknown>) => {
      const gaps: number[] = [];
      let last = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        gaps.push(now - last - 5);
        last = now;
      }, 5);
      const t0 = performance.now();
      await work();
      const elapsed = performance.now() - t0;
      clearInterval(timer);
      gaps.sort((a, b) => a - b);
      return { elapsed, count: gaps.length, p99: gaps[Math.min(gaps.length - 1, Math.floor(gaps.length * 0.99))] as number };
    };
    const prompt = Array.from({ length: 256 }, (_, i) => (i * 37) % 4096);
    const busy = await lateness(() =>
      big.generate([prompt, prompt.slice(7)], { maxNewTokens: 40, temperature: 1, topP: 0.9, seed: 1 }),
    );
    // The same span with nothing running: what this (shared) machine's scheduling alone costs the timer.
    const idle = await lateness(() => new Promise((r) => setTimeout(r, busy.elapsed)));
    expect(busy.count).toBeGreaterThan(busy.elapsed / 5 / 3);
    expect(busy.p99).toBeLessThan(20 + idle.p99);
    big.dispose();
  });

  it('leaves no tensor behind: forward, generate and dispose bring memory() back to its baseline', async () => {
    // Tensors that earlier tests dropped are collected first, so that a collection during the test does
    // not take the count below the baseline; the end checks themselves run without collecting.
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    for (let i = 0; i < 10; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    const base = memory();
    for (let i = 0; i < 4; i++) {
      // Both decode paths: fused and op by op.
      model._setFused(i % 2 === 0);
      const r = await model.forward([
        [1, 2, 3],
        [4, 5],
      ]);
      const s = await model.forward([[6], [7]], { state: r.state });
      r.logits.dispose();
      s.logits.dispose();
      r.state.dispose();
      await model.generate([[1, 2, 3], [4]], { maxNewTokens: 4, temperature: 0.5, seed: i });
      await model.generate([[1, 2, 3]], { maxNewTokens: 3 });
    }
    model._setFused(true);
    expect(memory()).toEqual(base);
    const q = await MambaModel.load(path.join(GOLDEN_DIR, 'mamba2-tiny'), { quantize: 'w8a8', calibration: [[1, 2, 3]] });
    await q.generate([[1, 2], [3]], { maxNewTokens: 3 });
    q.dispose();
    expect(memory()).toEqual(base);
  });

  it('rejects bad arguments, naming them', async () => {
    const bad = async (p: Promise<unknown>, cls: typeof TypeError | typeof RangeError, ...words: string[]) => {
      const err = await p.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(cls);
      for (const w of words) expect((err as Error).message).toContain(w);
    };
    await bad(model.generate([[1]], {} as never), TypeError, 'MambaModel.generate', 'options.maxNewTokens');
    await bad(model.generate([[1]], { maxNewTokens: -1 }), RangeError, 'options.maxNewTokens');
    await bad(model.generate([[512]], { maxNewTokens: 1 }), RangeError, 'inputIds[0][0]', '0..511');
    await bad(model.generate([[1.5]], { maxNewTokens: 1 }), RangeError, 'inputIds[0][0]');
    await bad(model.generate([[]], { maxNewTokens: 1 }), RangeError, 'inputIds[0]');
    await bad(model.generate([], { maxNewTokens: 1 }), RangeError, 'inputIds');
    await bad(model.generate('abc' as never, { maxNewTokens: 1 }), TypeError, 'inputIds');
    await bad(model.generate([[1]], { maxNewTokens: 1, temperature: -1 }), RangeError, 'options.temperature');
    await bad(model.generate([[1]], { maxNewTokens: 1, topP: 0 }), RangeError, 'options.topP');
    await bad(model.generate([[1]], { maxNewTokens: 1, topK: 0 }), RangeError, 'options.topK');
    await bad(model.generate([[1]], { maxNewTokens: 1, foo: 1 } as never), TypeError, 'options.foo');
    const st = model.createState(2);
    await bad(model.forward([[1]], { state: st }), RangeError, 'MambaModel.forward', 'options.state', 'batch 1');
    st.dispose();
  });
});

// ---- loading errors -----------------------------------------------------------------------------------

describe('MambaModel.load errors', () => {
  const golden = path.join(GOLDEN_DIR, 'mamba2-tiny');
  const withConfig = (name: string, edit: (c: Record<string, unknown>) => void): string => {
    const dir = path.join(tmp, name);
    fs.mkdirSync(dir, { recursive: true });
    const c = JSON.parse(fs.readFileSync(path.join(golden, 'config.json'), 'utf8'));
    edit(c);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c));
    fs.copyFileSync(path.join(golden, 'model.safetensors'), path.join(dir, 'model.safetensors'));
    return dir;
  };
  const fails = async (dir: string, code: string, ...words: string[]) => {
    const err = (await MambaModel.load(dir).then(
      () => undefined,
      (e: unknown) => e,
    )) as { code?: string; message: string };
    expect(err?.code, err?.message).toBe(code);
    for (const w of words) expect(err.message).toContain(w);
  };
  it('names the config field', async () => {
    await fails(
      withConfig('bad-type', (c) => (c.model_type = 'llama')),
      'ERR_SSMKIT_CONFIG',
      'model_type',
      'llama',
    );
    await fails(
      withConfig('bad-hidden', (c) => delete c.hidden_size),
      'ERR_SSMKIT_CONFIG',
      'hidden_size',
    );
    await fails(
      withConfig('bad-heads', (c) => (c.num_heads = 7)),
      'ERR_SSMKIT_CONFIG',
      'num_heads',
      'head_dim',
    );
    await fails(
      withConfig('bad-groups', (c) => (c.n_groups = 3)),
      'ERR_SSMKIT_CONFIG',
      'n_groups',
    );
    await fails(
      withConfig('bad-act', (c) => (c.hidden_act = 'gelu')),
      'ERR_SSMKIT_CONFIG',
      'hidden_act',
    );
    await fails(
      withConfig('bad-limit', (c) => (c.time_step_limit = [1, 0])),
      'ERR_SSMKIT_CONFIG',
      'time_step_limit',
    );
    await fails(
      withConfig('bad-state', (c) => (c.state_size = 16)),
      'ERR_SSMKIT_FORMAT',
      'conv1d.weight',
      'expected shape',
    );
    await fails(
      withConfig('bad-untied', (c) => (c.tie_word_embeddings = false)),
      'ERR_SSMKIT_FORMAT',
      'lm_head.weight',
    );
    await fails(
      withConfig('bad-bias', (c) => (c.use_conv_bias = false)),
      'ERR_SSMKIT_FORMAT',
      'conv1d.bias',
    );
    await fails(path.join(tmp, 'nowhere'), 'ERR_SSMKIT_CONFIG', 'config.json');
    const noWeights = withConfig('no-weights', () => {});
    fs.rmSync(path.join(noWeights, 'model.safetensors'));
    await fails(noWeights, 'ERR_SSMKIT_FORMAT', 'model.safetensors');
  });
  it('checks its options', async () => {
    await expect(MambaModel.load(golden, { dtype: 'float16' as never })).rejects.toThrow(RangeError);
    await expect(MambaModel.load(golden, { quantize: 'w2' as never })).rejects.toThrow(/options\.quantize/);
    await expect(MambaModel.load(golden, { device: 'gpu' })).rejects.toThrow(/options\.device/);
    await expect(MambaModel.load(golden, { bogus: 1 } as never)).rejects.toThrow(TypeError);
    await expect(MambaModel.load(42 as never)).rejects.toThrow(TypeError);
  });
});

// The runner on the SIMD paths below the one this CPU runs by default (child processes with
// SSMKIT_SIMD capping the level): the golden checkpoints' logits and greedy tokens, in float32 and
// through the fused decode step, and bfloat16 logits.
describe('golden models on every SIMD path', () => {
  const script = `
    const path = require('node:path');
    const { MambaModel, loadSafetensorsSync, backend } = require('./dist/cjs/index.js');
    (async () => {
      const out = { simd: backend().simd, cases: [] };
      for (const dir of ${JSON.stringify(goldenModels.map((g) => g.dir))}) {
        const d = path.join(${JSON.stringify(GOLDEN_DIR)}, dir);
        const e = loadSafetensorsSync(path.join(d, 'expected.safetensors'));
        const ids = Array.from(e.input_ids.dataSync());
        const L = e.input_ids.shape[1];
        const prompts = [ids.slice(0, L), ids.slice(L)];
        const gen = Array.from(e.generated_ids.dataSync()).slice(L);
        for (const dtype of ['float32', 'bfloat16']) {
          const m = await MambaModel.load(d, { dtype });
          const { logits } = await m.forward(prompts);
          const a = logits.dataSync(), x = e.logits.dataSync();
          let maxErr = 0, num = 0, den = 0;
          for (let i = 0; i < x.length; i++) { maxErr = Math.max(maxErr, Math.abs(a[i] - x[i])); num += (a[i] - x[i]) ** 2; den += x[i] ** 2; }
          const { tokens } = await m.generate([prompts[0]], { maxNewTokens: gen.length });
          out.cases.push({ dir, dtype, maxErr, relL2: Math.sqrt(num / den), greedy: tokens[0].join(',') === gen.join(','), fused: m._fused });
          m.dispose();
        }
      }
      console.log(JSON.stringify(out));
    })();`;
  const feats = execFileSync(process.execPath, ['-p', "require('./dist/cjs/index.js').backend().cpuFeatures.join(',')"], {
    cwd: path.join(__dirname, '..'),
    encoding: 'utf8',
  });
  for (const level of ['scalar', 'avx2', 'avx512'] as const) {
    const skip = (level === 'avx2' && !feats.includes('avx2')) || (level === 'avx512' && !feats.includes('avx512bw'));
    it.skipIf(skip)(`SSMKIT_SIMD=${level}`, () => {
      const res = execFileSync(process.execPath, ['-e', script], {
        cwd: path.join(__dirname, '..'),
        env: { ...process.env, SSMKIT_SIMD: level, SSMKIT_BACKEND: 'cpu' },
        encoding: 'utf8',
      });
      const r = JSON.parse(res.trim().split('\n').pop() as string) as {
        simd: string;
        cases: { dir: string; dtype: string; maxErr: number; relL2: number; greedy: boolean; fused: boolean }[];
      };
      expect(r.simd).toBe(level);
      for (const c of r.cases) {
        expect(c.fused, `${c.dir} ${c.dtype}`).toBe(true);
        if (c.dtype === 'float32') {
          expect(c.maxErr, `${c.dir} float32 logits`).toBeLessThan(2e-3);
          expect(c.greedy, `${c.dir} greedy tokens`).toBe(true);
        } else {
          expect(c.relL2, `${c.dir} bfloat16 logits`).toBeLessThan(TOL.bfloat16.relL2);
        }
      }
    });
  }
});
