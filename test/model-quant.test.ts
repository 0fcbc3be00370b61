// MambaModel's quantized modes. A checkpoint whose weights are exactly int4 values times a per-row
// scale loses nothing to weight quantization, so w4a16 must equal the float model and w4a8 must differ
// only by the int8 activations; a Mamba-2 checkpoint with a Hadamard-length inner width exercises the
// rotated out_proj, calibration, and the decode path against the prefill path of the same quantized
// model. Random tiny models magnify quantization error, so accuracy bounds here are loose by design;
// bench/model.mjs reports the accuracy cost on a 130M-shaped model.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../dist/cjs/backend.js';
import { MambaModel, saveSafetensors, Tensor } from '../dist/cjs/index.js';
import { QuantLinear } from '../dist/cjs/models/quantized.js';
import { rmsNormSync } from '../dist/cjs/ops/nn.js';
import { assertClose, Rng, testDevices, toF64, withEnv } from './util';

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

type Folds = { norm: number; quant: number; conv: number };

/**
 * The folds the CUDA decode step has taken since `before` (the addon's test hook `_decodeFolds`, not part of the
 * API; the CPU step takes none): its projections enqueued with the norm, x_proj's quantizer or the conv folded.
 */
function foldsSince(before: Folds): Folds {
  const now = native()._decodeFolds() as Folds;
  return { norm: now.norm - before.norm, quant: now.quant - before.quant, conv: now.conv - before.conv };
}

let tmp = '';
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ssmkit-quant-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function relL2(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < e.length; i++) {
    num += ((a[i] as number) - (e[i] as number)) ** 2;
    den += (e[i] as number) ** 2;
  }
  return Math.sqrt(num / den);
}

/** (rows, k) values s_r * q with q integers in -7..7 and a +-7 in every row: exact in int4 per row. */
function int4Exact(rng: Rng, rows: number, k: number): Float32Array {
  const v = new Float32Array(rows * k);
  for (let r = 0; r < rows; r++) {
    const s = 2 ** -rng.int(3, 6);
    for (let j = 0; j < k; j++) v[r * k + j] = s * rng.int(-7, 7);
    v[r * k + rng.int(0, k - 1)] = s * (rng.uniform() < 0.5 ? -7 : 7);
  }
  return v;
}

async function writeModel(name: string, config: Record<string, unknown>, exact: boolean): Promise<string> {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const rng = new Rng(name.length * 131);
  const c = config as Record<string, number>;
  const d = c.hidden_size as number;
  const di = (c.intermediate_size ?? (c.expand as number) * d) as number;
  const ds = c.state_size as number;
  const mamba2 = config.model_type === 'mamba2';
  const nh = c.num_heads ?? 0;
  const ng = c.n_groups ?? 1;
  const t = (shape: number[], f: () => number) =>
    new Tensor('float32', Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, f), shape);
  const lin = (n: number, k: number) =>
    exact ? new Tensor('float32', int4Exact(rng, n, k), [n, k]) : t([n, k], () => rng.normal() / Math.sqrt(k));
  const ts: Record<string, Tensor> = {
    'backbone.embeddings.weight': t([c.vocab_size as number, d], () => rng.normal()),
    'backbone.norm_f.weight': t([d], () => 1 + 0.1 * rng.normal()),
  };
  for (let l = 0; l < (c.num_hidden_layers as number); l++) {
    const m = `backbone.layers.${l}.mixer`;
    const convDim = mamba2 ? di + 2 * ng * ds : di;
    ts[`backbone.layers.${l}.norm.weight`] = t([d], () => 1 + 0.1 * rng.normal());
    ts[`${m}.in_proj.weight`] = lin(mamba2 ? 2 * di + 2 * ng * ds + nh : 2 * di, d);
    ts[`${m}.out_proj.weight`] = lin(d, di);
    ts[`${m}.conv1d.weight`] = t([convDim, 1, 4], () => 0.5 * rng.normal());
    ts[`${m}.conv1d.bias`] = t([convDim], () => 0.1 * rng.normal());
    if (mamba2) {
      ts[`${m}.A_log`] = t([nh], () => Math.log(1 + 4 * rng.uniform()));
      ts[`${m}.D`] = t([nh], () => 1 + 0.5 * rng.normal());
      ts[`${m}.dt_bias`] = t([nh], () => -2 + 0.5 * rng.normal());
      ts[`${m}.norm.weight`] = t([di], () => 1 + 0.1 * rng.normal());
    } else {
      const r = c.time_step_rank as number;
      ts[`${m}.x_proj.weight`] = lin(r + 2 * ds, di);
      ts[`${m}.dt_proj.weight`] = t([di, r], () => rng.normal() / Math.sqrt(r));
      ts[`${m}.dt_proj.bias`] = t([di], () => -3 + 0.5 * rng.normal());
      ts[`${m}.A_log`] = t([di, ds], () => Math.log(1 + 4 * rng.uniform()));
      ts[`${m}.D`] = t([di], () => 1 + 0.5 * rng.normal());
    }
  }
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  await saveSafetensors(path.join(dir, 'model.safetensors'), ts);
  return dir;
}

// intermediate_size 36 is not a Hadamard length (m * 2^k, m in 1, 12, 20, 28, 40): no rotation, so
// int4-exact weights stay exact.
const MAMBA_EXACT = {
  model_type: 'mamba',
  hidden_size: 24,
  intermediate_size: 36,
  state_size: 4,
  num_hidden_layers: 2,
  vocab_size: 50,
  conv_kernel: 4,
  time_step_rank: 2,
  tie_word_embeddings: true,
};

// intermediate_size 64: out_proj's input is rotated.
const MAMBA2_ROT = {
  model_type: 'mamba2',
  hidden_size: 32,
  expand: 2,
  num_heads: 4,
  head_dim: 16,
  n_groups: 2,
  state_size: 8,
  num_hidden_layers: 2,
  vocab_size: 40,
  conv_kernel: 4,
  chunk_size: 16,
  tie_word_embeddings: true,
};

// Mamba-1 with the same rotation; at batch 1 the decode step writes in_proj's and x_proj's outputs
// side by side in place (time_step_rank 4 keeps x_proj's pieces 16-byte aligned in float32).
const MAMBA_ROT = {
  model_type: 'mamba',
  hidden_size: 32,
  intermediate_size: 64,
  state_size: 8,
  num_hidden_layers: 2,
  vocab_size: 40,
  conv_kernel: 4,
  time_step_rank: 4,
  tie_word_embeddings: true,
};

// Wide enough that in_proj (10240 x 256) takes the CUDA ring path, into which the W4A16 decode step folds
// the norm in front of it at batch 1.
const MAMBA_WIDE = {
  model_type: 'mamba',
  hidden_size: 256,
  intermediate_size: 5120,
  state_size: 16,
  num_hidden_layers: 3,
  vocab_size: 64,
  conv_kernel: 4,
  time_step_rank: 16,
  tie_word_embeddings: true,
};

// Mamba-2 at a width whose in_proj (10352 x 256) takes the ring path as well.
const MAMBA2_WIDE = {
  model_type: 'mamba2',
  hidden_size: 256,
  expand: 20,
  num_heads: 80,
  head_dim: 64,
  n_groups: 1,
  state_size: 16,
  num_hidden_layers: 3,
  vocab_size: 64,
  conv_kernel: 4,
  chunk_size: 16,
  tie_word_embeddings: true,
};

describe.each(testDevices())('quantized models on %s', (device) => {
  const gap = runnerGap(device);
  if (gap) {
    it.skip(`skipped: ${gap}`, () => {});
    return;
  }
  const prompts = [
    [3, 14, 15, 9, 26, 5, 35, 8],
    [9, 7, 9, 3, 2, 38, 4, 6],
  ];

  it('int4-exact weights: w4a16 equals float, w4a8 and w8a8 differ by their int8 activations', async () => {
    const dir = await writeModel(`exact-${device}`, MAMBA_EXACT, true);
    const float = await MambaModel.load(dir, { device, dtype: 'float32' });
    const want = toF64((await float.forward(prompts)).logits.toSync('cpu'));
    const w4a16 = await MambaModel.load(dir, { device, dtype: 'float32', quantize: 'w4a16' });
    expect(w4a16.quantize).toBe('w4a16');
    expect(w4a16.weightBytes).toBeLessThan(float.weightBytes);
    assertClose(toF64((await w4a16.forward(prompts)).logits.toSync('cpu')), want, { rtol: 1e-4, atol: 1e-4 }, 'w4a16');
    for (const mode of ['w4a8', 'w8a8'] as const) {
      const q = await MambaModel.load(dir, { device, dtype: 'float32', quantize: mode });
      expect(relL2(toF64((await q.forward(prompts)).logits.toSync('cpu')), want), mode).toBeLessThan(0.05);
      q.dispose();
    }
    float.dispose();
    w4a16.dispose();
  });

  for (const [mode, name, config] of (['w8a8', 'w4a8', 'w4a16'] as const).flatMap((mode) => [
    [mode, 'mamba2', MAMBA2_ROT] as const,
    [mode, 'mamba', MAMBA_ROT] as const,
  ])) {
    it(`${mode}, ${name}: rotated out_proj, calibration, decode path = prefill path`, async () => {
      const dir = await writeModel(`rot-${name}-${device}`, config, false);
      const float = await MambaModel.load(dir, { device, dtype: 'float32' });
      const want = toF64((await float.forward(prompts)).logits.toSync('cpu'));
      for (const calibration of [undefined, [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]]) {
        const q = await MambaModel.load(dir, {
          device,
          dtype: 'float32',
          quantize: mode,
          ...(calibration ? { calibration } : {}),
        });
        const got = toF64((await q.forward(prompts)).logits.toSync('cpu'));
        // int8 weights and activations: about 1% per layer; int4 weights of random Gaussians: about 11%.
        expect(relL2(got, want), `${mode} ${calibration ? 'calibrated' : 'dynamic'}`).toBeLessThan(mode === 'w8a8' ? 0.1 : 0.6);
        // The decode path (state updates) of the quantized model against its own prefill path.
        const p = prompts[0] as number[];
        const r = await q.forward([p.slice(0, 5)]);
        let last: Tensor | undefined;
        for (const tok of p.slice(5)) last = (await q.forward([[tok]], { state: r.state })).logits;
        const v = want.length / prompts.length / p.length;
        assertClose(
          toF64((last as Tensor).toSync('cpu')),
          got.subarray(7 * v, 8 * v),
          { rtol: 2e-3, atol: 2e-3 },
          `${mode} decode`,
        );
        const { tokens } = await q.generate(prompts, { maxNewTokens: 3 });
        expect(tokens.map((t) => t.length)).toEqual([3, 3]);
        q.dispose();
      }
      float.dispose();
    });
  }

  it.each([
    ['mamba', MAMBA_WIDE],
    ['mamba2', MAMBA2_WIDE],
  ] as const)(
    'w4a16 decode at batch 1, %s: norm and conv folded into in_proj = their kernels = prefill, either trigger',
    async (name, config) => {
      const dir = await writeModel(`wide-${name}-${device}`, config, false);
      const p = prompts[0] as number[];
      for (const dtype of ['bfloat16', 'float32'] as const) {
        const q = await MambaModel.load(dir, { device, dtype, quantize: 'w4a16' });
        const prefill = toF64((await q.forward([p])).logits.toSync('cpu'));
        const v = prefill.length / p.length;
        // Five steps: the first runs uncaptured, the second is captured, the rest replay the graph. The fold
        // needs 16-bit x on the CUDA ring path: in float32, and on the CPU, both settings run the norm kernel,
        // and these rows check the decode path against prefill only.
        const steps = (fold: string, conv = '1', late = '1') =>
          withEnv(
            { SSMKIT_CUDA_DECODE_FOLD_NORM: fold, SSMKIT_CUDA_DECODE_FOLD_CONV: conv, SSMKIT_CUDA_LATE_TRIGGER: late },
            async () => {
              const r = await q.forward([p.slice(0, 3)]);
              const out: Float64Array[] = [];
              for (const tok of p.slice(3)) out.push(toF64((await q.forward([[tok]], { state: r.state })).logits.toSync('cpu')));
              return out;
            },
          );
        const before = native()._decodeFolds() as Folds;
        const folded = await steps('1');
        const taken = foldsSince(before);
        const [apart, convApart] = [await steps('0'), await steps('1', '0')];
        // The folds this test compares are taken where they apply (16-bit x on CUDA), and not elsewhere.
        const applies = device !== 'cpu' && dtype === 'bfloat16';
        expect(taken.norm > 0, `${dtype}: norm folded`).toBe(applies);
        expect(taken.conv > 0, `${dtype}: conv folded`).toBe(applies);
        const early = await steps('1', '1', '0');
        for (let i = 0; i < folded.length; i++) {
          const a = folded[i] as Float64Array;
          const want = prefill.subarray((3 + i) * v, (4 + i) * v);
          const tol = dtype === 'float32' ? 2e-3 : 0.03;
          expect(relL2(a, want), `${dtype} step ${i}: folded vs prefill`).toBeLessThan(tol);
          expect(relL2(apart[i] as Float64Array, want), `${dtype} step ${i}: norm kernel vs prefill`).toBeLessThan(tol);
          // The same sums and roundings but for the order of the squares' float64 sum.
          expect(relL2(a, apart[i] as Float64Array), `${dtype} step ${i}: folded vs norm kernel`).toBeLessThan(1e-3);
          // The conv folded into in_proj's epilogue (bfloat16 on the ring path) is the conv kernel's
          // arithmetic in its order: the same bits.
          expect(Array.from(a), `${dtype} step ${i}: conv folded vs conv kernel`).toEqual(
            Array.from(convApart[i] as Float64Array),
          );
          // Where the kernels let the next one launch changes the schedule only.
          expect(Array.from(a), `${dtype} step ${i}: late vs early trigger`).toEqual(Array.from(early[i] as Float64Array));
        }
        q.dispose();
      }
    },
  );

  it.each([
    ['mamba', MAMBA_WIDE],
    ['mamba2', MAMBA2_WIDE],
  ] as const)(
    'w8a8 and w4a8 decode at batch 1, %s: norm and quantizer folded into in_proj, quantizer into x_proj = their kernels, dynamic and calibrated',
    async (name, config) => {
      const dir = await writeModel(`wide-${name}-${device}`, config, false);
      const p = prompts[0] as number[];
      for (const mode of ['w8a8', 'w4a8'] as const) {
        for (const calibration of [undefined, [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]]) {
          const label = `${mode} ${calibration ? 'calibrated' : 'dynamic'}`;
          const q = await MambaModel.load(dir, {
            device,
            dtype: 'bfloat16',
            quantize: mode,
            ...(calibration ? { calibration } : {}),
          });
          const prefill = toF64((await q.forward([p])).logits.toSync('cpu'));
          const v = prefill.length / p.length;
          // Five steps: uncaptured, captured, then replayed. On CUDA the norm's fold takes in_proj's one bfloat16
          // row on the pair path, the quantizer's (Mamba) x_proj's on the GEMV; on the CPU every setting runs the
          // same code.
          const steps = (fold: string, quant = fold) =>
            withEnv({ SSMKIT_CUDA_DECODE_FOLD_NORM: fold, SSMKIT_CUDA_DECODE_FOLD_QUANT: quant }, async () => {
              const r = await q.forward([p.slice(0, 3)]);
              const out: Float64Array[] = [];
              for (const tok of p.slice(3)) out.push(toF64((await q.forward([[tok]], { state: r.state })).logits.toSync('cpu')));
              return out;
            });
          const before = native()._decodeFolds() as Folds;
          const folded = await steps('1');
          const taken = foldsSince(before);
          const [apart, quantApart] = [await steps('0'), await steps('1', '0')];
          // The folds compared below are taken on CUDA (x_proj's quantizer where the model has one), not elsewhere.
          expect(taken.norm > 0, `${label}: norm and quantizer folded`).toBe(device !== 'cpu');
          expect(taken.quant > 0, `${label}: x_proj's quantizer folded`).toBe(device !== 'cpu' && name === 'mamba');
          for (let i = 0; i < folded.length; i++) {
            const a = folded[i] as Float64Array;
            expect(relL2(a, prefill.subarray((3 + i) * v, (4 + i) * v)), `${label} step ${i}: folded vs prefill`).toBeLessThan(
              0.03,
            );
            // The norm's and the quantizer's arithmetic in their order: the same bits, but for the order of the
            // squares' float64 sum, which moves the float32 mean of squares only where it sits within a few
            // float64 ulps of a rounding boundary.
            expect(Array.from(a), `${label} step ${i}: folded vs norm and quantize kernels`).toEqual(
              Array.from(apart[i] as Float64Array),
            );
            // The amax of x_proj's row is a max, the same in any order: the same bits.
            expect(Array.from(a), `${label} step ${i}: x_proj's quantizer folded vs its kernel`).toEqual(
              Array.from(quantApart[i] as Float64Array),
            );
          }
          q.dispose();
        }
      }
    },
  );

  it('a rotated layer computes the same product as an unrotated one', async () => {
    const rng = new Rng(17);
    const [n, k] = [48, 128];
    const w = new Tensor(
      'float32',
      Float32Array.from({ length: n * k }, () => rng.normal()),
      [n, k],
    );
    const x = await new Tensor(
      'float32',
      Float32Array.from({ length: 3 * k }, () => rng.normal()),
      [3, k],
    ).to(device);
    const plain = await QuantLinear.create(w, undefined, 'w8a8', { dtype: 'float32', rotate: false });
    const rot = await QuantLinear.create(w, undefined, 'w8a8', { dtype: 'float32', rotate: true });
    await plain.to(device);
    await rot.to(device);
    const a = toF64(((await plain.forward(x))[0] as Tensor).toSync('cpu'));
    const b = toF64(((await rot.forward(x))[0] as Tensor).toSync('cpu'));
    expect(relL2(b, a)).toBeLessThan(0.03);
  });
});

describe('quantized load errors', () => {
  it('names bad calibration ids', async () => {
    const dir = await writeModel('errors', MAMBA_EXACT, true);
    await expect(MambaModel.load(dir, { quantize: 'w8a8', calibration: [[1, 99]] })).rejects.toThrow(/options\.calibration\[0\]/);
    await expect(MambaModel.load(dir, { quantize: 'w8a8', calibration: [['a']] as never })).rejects.toThrow(TypeError);
  });
});
