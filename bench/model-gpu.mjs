// The model runner on the GPU: batch-1 decode of a Mamba-2.8B-shaped model (d_model 2560, 64 layers,
// random weights saved as a checkpoint) through the fused decode step, in bfloat16 and W4A16, against
// the floor (weight bytes / 4.2 TB/s), and prefill of 2048 tokens through the runner against decoding
// them one by one. Before anything is timed it checks the CUDA results against the CPU backend on small
// cases: the linear kernels (gemv, tensor-core GEMM), the decode step of a 2-layer model of the same
// widths (bfloat16 and W4A16), and the runner's forward on a tiny checkpoint.
//
// Each timed row is the median of --repeats runs of --steps calls between two synchronize()s, after warm-up.
// The runner's own decode (MambaModel.generate, greedy, batch 1) is timed from its per-token callbacks, for
// each mode: what a user of the package gets, host round trips and sampling included. The decode rows cover
// the step's variants (SSMKIT_CUDA_GRAPH, SSMKIT_CUDA_DECODE_FUSED, SSMKIT_CUDA_PDL, SSMKIT_CUDA_GEMV_UNITS:
// gemv blocks per SM, by default those resident at once; SSMKIT_CUDA_GEMV_ALIGN=0: split-K ranges that may
// cross panel boundaries; the first row is the default), then the default with
// the device sampler in the step (greedy, and sampled with top-p). The peer column is cuBLAS through PyTorch
// when --peers names the JSON lines of shared/device/peers.py (the decode row's peer: 64 x cuBLAS GEMVs of
// in_proj and out_proj, the step's two large layers alone), else the issue's anchor.
//
// --layers N writes (or reuses, with --dir) a checkpoint of the shape's widths with N layers instead of
// the shape's own count: a short model to profile one layer's kernels with.
//
// node bench/model-gpu.mjs [--shape mamba-2.8b] [--modes bfloat16,w4a16 (or w8a8, w4a8)] [--prompt 2048] [--steps 50]
//                          [--repeats 5] [--dir <checkpoint folder: reused, or written and kept>]
//                          [--layers <N: the checkpoint's layer count; default the shape's>]
//                          [--peers <peers.jsonl>]
//                          [--no-prefill] [--no-micro] [--only-default: the default decode row alone]

import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const ssm = require(path.join(root, 'dist/cjs/index.js'));
const nn = require(path.join(root, 'dist/cjs/ops/nn.js'));
const benchLib = require(path.join(root, 'dist/cjs/models/bench.js'));
const { Checkpoint } = require(path.join(root, 'dist/cjs/models/checkpoint.js'));
const { normalizeConfig, parseConfigJson } = require(path.join(root, 'dist/cjs/models/config.js'));
const { FloatLinear } = require(path.join(root, 'dist/cjs/models/linear.js'));
const { QuantLinear, hadamardLength } = require(path.join(root, 'dist/cjs/models/quantized.js'));
const { MambaModel, Tensor, backend, synchronizeSync } = ssm;

const { values: args } = parseArgs({
  options: {
    shape: { type: 'string', default: 'mamba-2.8b' },
    modes: { type: 'string', default: 'bfloat16,w4a16' },
    prompt: { type: 'string', default: '2048' },
    steps: { type: 'string', default: '50' },
    repeats: { type: 'string', default: '5' },
    dir: { type: 'string' },
    layers: { type: 'string' },
    peers: { type: 'string' },
    'no-prefill': { type: 'boolean', default: false },
    'no-micro': { type: 'boolean', default: false },
    'only-default': { type: 'boolean', default: false },
  },
});

const BW = 4.2e12; // bytes per second: the floor's bandwidth
const DEV = 'cuda:0';
const modes = args.modes.split(',');
/** The quantize option of a mode ('w8a8', 'w4a8', 'w4a16'; activations of the 8-bit ones scaled per token), or undefined. */
const quantOf = (mode) => (['w8a8', 'w4a8', 'w4a16'].includes(mode) ? mode : undefined);
const promptLen = Number(args.prompt);
const steps = Number(args.steps);
const repeats = Number(args.repeats);
const rows = []; // the table: { row, ours, floor, peer }
const log = (...a) => console.error(...a);
const now = () => Number(process.hrtime.bigint()) / 1e6;

const be = backend();
console.log(
  `machine: ${os.hostname()}, ${os.cpus().length} cores; backend ${be.name} ${be.device ?? ''} cc ${be.computeCapability ?? '-'}`,
);
if (be.name !== 'cuda') {
  console.log(`skipped: the CUDA backend did not load (${be.fallbackReason ?? 'no reason given'})`);
  process.exit(0);
}

// ---- peers ---------------------------------------------------------------------------------------------

const peers = [];
if (args.peers) {
  for (const line of fs.readFileSync(args.peers, 'utf8').split('\n')) {
    if (line.trim().startsWith('{')) peers.push(JSON.parse(line));
  }
}
function peerUs(kind, M, K, N) {
  const p = peers.find((e) => e.kind === kind && e.M === M && e.K === K && e.N === N && e.us !== undefined);
  return p?.us;
}

// ---- helpers -------------------------------------------------------------------------------------------

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Median over repeats of the per-call time (ms) of `fn` called `n` times between synchronizations. */
function timeIt(fn, n, reps, warm = 5) {
  for (let i = 0; i < warm; i++) fn(i);
  synchronizeSync(DEV);
  const t = [];
  for (let r = 0; r < reps; r++) {
    const t0 = now();
    for (let i = 0; i < n; i++) fn(i);
    synchronizeSync(DEV);
    t.push((now() - t0) / n);
  }
  return median(t);
}

function withEnv(vars, f) {
  const prev = {};
  for (const [k, v] of Object.entries(vars)) {
    prev[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return f();
  } finally {
    for (const [k, v] of Object.entries(prev)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

function toF64(t) {
  const h = t.device === 'cpu' ? t : t.toSync('cpu');
  return Float64Array.from(h.dtype === 'float32' ? h.dataSync() : h.cast('float32').dataSync());
}

function relL2(a, e) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < e.length; i++) {
    num += (a[i] - e[i]) ** 2;
    den += e[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

function check(label, err, limit) {
  const ok = err <= limit;
  console.log(`check ${label}: relative L2 error ${err.toExponential(2)} (limit ${limit}) ${ok ? 'ok' : 'FAILED'}`);
  if (!ok) {
    console.log('results do not match: no timings');
    process.exit(1);
  }
}

let seed = 12345;
function rnd() {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed / 2 ** 32 - 0.5;
}
function randHost(shape, scale, offset = 0) {
  const n = shape.reduce((a, b) => a * b, 1);
  return new Tensor(
    'float32',
    Float32Array.from({ length: n }, () => offset + scale * 2 * (rnd() + rnd() + rnd())),
    shape,
  );
}

// ---- a decode model from a checkpoint ------------------------------------------------------------------

/**
 * The model of a checkpoint folder as the fused decode step reads it, on `device`: float linear layers
 * packed in `dtype` panels, or (quantize) in_proj, out_proj and Mamba's x_proj as int4 groups of 128
 * (out_proj rotated where K allows), as MambaModel.load would.
 */
async function loadDecodeModel(dir, device, dtype, quantize) {
  const c = normalizeConfig(parseConfigJson(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')));
  const ck = await Checkpoint.open(dir);
  const keep = [];
  const onDev = async (t) => {
    const f = t.dtype === 'float32' ? t : t.cast('float32');
    if (f !== t) t.dispose();
    const d = await f.to(device);
    f.dispose();
    keep.push(d);
    return d;
  };
  const negExp = async (t) => {
    const v = t.dtype === 'float32' ? t : t.cast('float32');
    const a = v.dataSync();
    const out = new Float32Array(a.length).map((_, i) => -Math.exp(a[i]));
    return onDev(new Tensor('float32', out, t.shape));
  };
  const linear = async (name, n, k, q, rotate) => {
    const w = await ck.read(`${name}.weight`);
    const bias = ck.has(`${name}.bias`) ? await onDev(await ck.read(`${name}.bias`)) : undefined;
    let lin;
    if (q) {
      lin = await QuantLinear.create(w, bias, q, { dtype, rotate: rotate === true });
      await lin.to(device);
    } else {
      const wd = await w.to(device);
      lin = await FloatLinear.create(wd, bias, dtype);
      wd.dispose();
    }
    w.dispose();
    keep.push(lin);
    if (lin.outFeatures !== n || lin.inFeatures !== k) throw new Error(`${name}: unexpected shape`);
    return lin;
  };
  const d = c.hiddenSize;
  const di = c.intermediateSize;
  const mamba2 = c.modelType === 'mamba2';
  const gds = c.nGroups * c.stateSize;
  const convDim = mamba2 ? di + 2 * gds : di;
  const layers = [];
  let weightBytes = 0;
  for (let l = 0; l < c.numLayers; l++) {
    const p = `backbone.layers.${l}`;
    const m = `${p}.mixer`;
    const inN = mamba2 ? 2 * di + 2 * gds + c.numHeads : 2 * di;
    const inProj = await linear(`${m}.in_proj`, inN, d, quantize);
    const outProj = await linear(`${m}.out_proj`, d, di, quantize, quantize !== undefined && hadamardLength(di));
    const conv = await onDev(await ck.read(`${m}.conv1d.weight`));
    const layer = {
      norm: await onDev(await ck.read(`${p}.norm.weight`)),
      inProj: inProj.decodeLinear(),
      outProj: outProj.decodeLinear(),
      conv: conv.reshape([convDim, c.convKernel]),
      ...(ck.has(`${m}.conv1d.bias`) ? { convBias: await onDev(await ck.read(`${m}.conv1d.bias`)) } : {}),
      A: await negExp(await ck.read(`${m}.A_log`)),
      D: await onDev(await ck.read(`${m}.D`)),
    };
    weightBytes += inProj.weightBytes + outProj.weightBytes;
    if (mamba2) {
      layer.dtBias = await onDev(await ck.read(`${m}.dt_bias`));
      layer.gatedNorm = await onDev(await ck.read(`${m}.norm.weight`));
    } else {
      const xProj = await linear(`${m}.x_proj`, c.timeStepRank + 2 * c.stateSize, di, quantize);
      const dtw = await ck.read(`${m}.dt_proj.weight`);
      const dtd = await dtw.to(device);
      dtw.dispose();
      const dtProj = await FloatLinear.create(dtd, undefined, dtype);
      dtd.dispose();
      keep.push(dtProj);
      layer.xProj = xProj.decodeLinear();
      layer.dtProj = dtProj.decodeLinear();
      layer.dtBias = await onDev(await ck.read(`${m}.dt_proj.bias`));
      weightBytes += xProj.weightBytes + dtProj.weightBytes;
    }
    layers.push(layer);
  }
  const embName = ck.has('backbone.embeddings.weight') ? 'backbone.embeddings.weight' : 'backbone.embedding.weight';
  const tied = c.tieWordEmbeddings || !ck.has('lm_head.weight');
  const head = await linear(tied ? embName.replace(/\.weight$/, '') : 'lm_head', c.vocabSize, d, undefined);
  weightBytes += head.weightBytes;
  let embed;
  if (tied) {
    embed = head.packed.panels;
  } else {
    const e = await ck.read(embName);
    const ec = e.dtype === dtype ? e : e.cast(dtype);
    embed = await ec.to(device);
    keep.push(embed);
  }
  const [lo, hi] = c.timeStepLimit;
  const model = {
    mamba2,
    act: dtype,
    residualFp32: c.residualInFp32,
    dModel: d,
    dInner: di,
    dState: c.stateSize,
    dtRank: c.timeStepRank,
    nheads: c.numHeads,
    headdim: c.headDim,
    ngroups: c.nGroups,
    convWidth: c.convKernel,
    vocab: c.vocabSize,
    eps: c.eps,
    ...(mamba2 && (lo !== 0 || hi !== Number.POSITIVE_INFINITY) ? { dtLimit: [lo, hi] } : {}),
    layers,
    normF: await onDev(await ck.read('backbone.norm_f.weight')),
    head: head.decodeLinear(),
    embed,
    embedPacked: tied,
  };
  const states = (batch) => {
    const conv = [];
    const ssmS = [];
    for (let l = 0; l < c.numLayers; l++) {
      conv.push(Tensor.zeros([batch, convDim, c.convKernel - 1], 'float32', device));
      ssmS.push(Tensor.zeros(mamba2 ? [batch, c.numHeads, c.headDim, c.stateSize] : [batch, di, c.stateSize], 'float32', device));
    }
    return { conv, ssm: ssmS };
  };
  return {
    config: c,
    plan: nn.createDecodePlan(model),
    states,
    weightBytes,
    dispose: () => {
      for (const t of keep) t.dispose();
    },
  };
}

/** Logits of `stepsN` decode steps of batch 1 (the same ids on both devices). */
// A decode row: run() times the step (ms a token), shown against the weight-bytes floor; a failure
// takes the row's place. Returns the time, or undefined when it failed.
function decodeRow(row, floorMs, peer, run) {
  try {
    const ms = run();
    rows.push({
      row,
      ours: `${ms.toFixed(3)} ms/token`,
      floor: `${floorMs.toFixed(3)} ms`,
      frac: `${((floorMs / ms) * 100).toFixed(0)}% (${(ms / floorMs).toFixed(2)}x)`,
      peer,
    });
    log(rows[rows.length - 1]);
    return ms;
  } catch (e) {
    rows.push({ row, ours: `failed: ${e.message}`, floor: '', frac: '', peer: '' });
    log(e);
    return undefined;
  }
}

function decodeLogits(dm, device, ids) {
  const st = dm.states(1);
  const bound = nn.bindDecodeStates(st.conv, st.ssm);
  const out = [];
  for (const id of ids) {
    const idT = new Tensor('int32', [id], [1]);
    const idD = device === 'cpu' ? idT : idT.toSync(device);
    const lg = Tensor.empty([1, dm.config.vocabSize], 'float32', device);
    nn.decodeStepSync(dm.plan, bound, idD, lg);
    out.push(toF64(lg));
    lg.dispose();
  }
  for (const t of [...st.conv, ...st.ssm]) t.dispose();
  return out;
}

// ---- checks -----------------------------------------------------------------------------------------

log('checking results against the CPU backend');
// The linear kernels at the step's shapes (gemv, split-K) and prefill's (tensor-core GEMM).
for (const [m, k, n] of [
  [1, 2560, 10240],
  [1, 5120, 2560],
  [3, 5120, 192],
  [300, 2560, 1024],
  [300, 160, 5120],
]) {
  const x = randHost([m, k], 1).cast('bfloat16');
  const w = randHost([n, k], 1 / Math.sqrt(k));
  const pc = nn.packLinearSync(w, { dtype: 'bfloat16' });
  const pd = nn.packLinearSync(w.toSync(DEV), { dtype: 'bfloat16' });
  const want = toF64(nn.linearSync(x, pc, { outDtype: 'float32' }));
  const got = toF64(nn.linearSync(x.toSync(DEV), pd, { outDtype: 'float32' }));
  check(`linear [${m}, ${k}, ${n}] bfloat16`, relL2(got, want), 1e-5);
}

const shapeCfg = benchLib.shapeConfig(args.shape, 'bfloat16');
if (args.layers !== undefined) {
  const n = Number(args.layers);
  if (!Number.isInteger(n) || n < 1) {
    console.log(`--layers: expected a positive integer, got ${args.layers}`);
    process.exit(2);
  }
  shapeCfg.num_hidden_layers = n;
}
const smallDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssmkit-gpu-small-'));
{
  // A 2-layer model of the shape's widths and a small vocabulary: the decode step on both backends.
  await benchLib.writeRandomCheckpoint(smallDir, { ...shapeCfg, num_hidden_layers: 2, vocab_size: 1000 }, { seed: 3 });
  const ids = [1, 17, 256, 999, 5];
  for (const mode of modes) {
    const q = quantOf(mode);
    let dmC;
    let dmD;
    try {
      dmC = await loadDecodeModel(smallDir, 'cpu', 'bfloat16', q);
      dmD = await loadDecodeModel(smallDir, DEV, 'bfloat16', q);
      const a = decodeLogits(dmC, 'cpu', ids);
      const b = decodeLogits(dmD, DEV, ids);
      for (let i = 0; i < ids.length; i++) check(`decode step ${mode} (2 layers) step ${i}`, relL2(b[i], a[i]), 3e-2);
    } catch (e) {
      if (e.code !== 'ERR_SSMKIT_NOT_COMPILED') throw e;
      console.log(`check decode step ${mode}: skipped (${e.message})`);
    } finally {
      dmC?.dispose();
      dmD?.dispose();
    }
  }
  // The runner itself (op by op on CUDA) against the CPU.
  const cpu = await MambaModel.load(smallDir, { dtype: 'bfloat16' });
  const gpu = await MambaModel.load(smallDir, { dtype: 'bfloat16', device: DEV });
  const prompt = [Array.from({ length: 37 }, (_, i) => (i * 31) % 1000)];
  const lc = toF64((await cpu.forward(prompt)).logits);
  const lg = toF64((await gpu.forward(prompt)).logits);
  check('MambaModel.forward bfloat16 (2 layers, 37 tokens)', relL2(lg, lc), 3e-2);
  cpu.dispose();
  gpu.dispose();
  // The runner's decode steps (the fused step on both backends) after a prefill, in every mode. The
  // prompt is longer than 64 tokens, so that the prefill runs the GEMM kernels rather than the decode
  // paths the steps run (shorter prompts are covered by test/model-quant.test.ts).
  const longPrompt = [Array.from({ length: 80 }, (_, i) => (i * 31) % 1000)];
  for (const mode of modes) {
    const q = quantOf(mode) ? { quantize: mode } : {};
    const mc = await MambaModel.load(smallDir, { dtype: 'bfloat16', ...q });
    const md = await MambaModel.load(smallDir, { dtype: 'bfloat16', device: DEV, ...q });
    const sc = (await mc.forward(longPrompt)).state;
    const sd = (await md.forward(longPrompt)).state;
    for (const [i, t] of [7, 300, 999, 42].entries()) {
      const a = toF64((await mc.forward([[t]], { state: sc })).logits);
      const b = toF64((await md.forward([[t]], { state: sd })).logits);
      check(`MambaModel decode ${mode} (2 layers, fused: ${md._fused}) step ${i}`, relL2(b, a), 3e-2);
    }
    sc.dispose();
    sd.dispose();
    mc.dispose();
    md.dispose();
  }
}
console.log('all results match, starting benchmarks');

// ---- the checkpoint ---------------------------------------------------------------------------------

// --dir: a folder that holds the checkpoint from an earlier run, or gets it (and keeps it) now.
const dir = args.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), `ssmkit-${args.shape}-${shapeCfg.num_hidden_layers}L-`));
if (!fs.existsSync(path.join(dir, 'config.json'))) {
  const t0 = now();
  await benchLib.writeRandomCheckpoint(dir, shapeCfg, { seed: 1 });
  log(`wrote ${args.shape} (${shapeCfg.num_hidden_layers} layers, bfloat16) to ${dir} in ${((now() - t0) / 1000).toFixed(1)} s`);
} else if (args.layers !== undefined) {
  const have = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).num_hidden_layers;
  if (have !== shapeCfg.num_hidden_layers) {
    console.log(`--layers ${args.layers}: ${dir} holds a checkpoint of ${have} layers`);
    process.exit(2);
  }
}

// ---- decode --------------------------------------------------------------------------------------------

const VARIANTS = [
  ['graph, fused, PDL (default)', {}],
  ['graph, fused, no PDL', { SSMKIT_CUDA_PDL: '0' }],
  ['graph, composed (family kernels)', { SSMKIT_CUDA_DECODE_FUSED: '0' }],
  ['no graph, fused', { SSMKIT_CUDA_GRAPH: '0' }],
  ['graph, fused, PDL, 2 gemv blocks/SM', { SSMKIT_CUDA_GEMV_UNITS: '2' }],
  ['graph, fused, PDL, 8 gemv blocks/SM', { SSMKIT_CUDA_GEMV_UNITS: '8' }],
  ['graph, fused, PDL, gemv ranges across panels', { SSMKIT_CUDA_GEMV_ALIGN: '0' }],
];

let decodeBf16Ms;
for (const mode of modes) {
  const q = quantOf(mode);
  const t0 = now();
  let dm;
  try {
    dm = await loadDecodeModel(dir, DEV, 'bfloat16', q);
  } catch (e) {
    log(e);
    rows.push({ row: `decode ${args.shape} ${mode} batch 1`, ours: `skipped: ${e.message}`, floor: '', frac: '', peer: '' });
    continue;
  }
  log(`loaded ${mode} in ${((now() - t0) / 1000).toFixed(1)} s (${(dm.weightBytes / 1e9).toFixed(2)} GB of weights)`);
  const floorMs = (dm.weightBytes / BW) * 1e3;
  const c = dm.config;
  let peer;
  if (mode === 'w4a16') {
    const a = peerUs('w4a16_tinygemm', 1, c.hiddenSize, 2 * c.intermediateSize);
    const b = peerUs('w4a16_tinygemm', 1, c.intermediateSize, c.hiddenSize);
    peer =
      a !== undefined && b !== undefined
        ? `${((c.numLayers * (a + b)) / 1e3).toFixed(3)} ms (${c.numLayers} x tinygemm in/out_proj)`
        : 'issue anchor: floor 0.4 ms, aim 1.5x';
  } else if (q) {
    peer = '- (no aim in the issue; the W4A16 and bfloat16 rows are its rows)';
  } else {
    const a = peerUs('mm_bf16_decode', 1, c.hiddenSize, 2 * c.intermediateSize);
    const b = peerUs('mm_bf16_decode', 1, c.intermediateSize, c.hiddenSize);
    peer =
      a !== undefined && b !== undefined
        ? `${((c.numLayers * (a + b)) / 1e3).toFixed(3)} ms (${c.numLayers} x cuBLAS in/out_proj)`
        : 'issue anchor: floor 1.3 ms, aim 1.5x';
  }
  const ids = new Tensor('int32', [42], [1]).toSync(DEV);
  const logits = Tensor.empty([1, c.vocabSize], 'float32', DEV);
  const variants = q ? VARIANTS.slice(0, 2) : VARIANTS;
  for (const [name, env] of args['only-default'] ? variants.slice(0, 1) : variants) {
    const ms = decodeRow(`decode ${args.shape} ${mode} batch 1: ${name}`, floorMs, peer, () =>
      withEnv(env, () => {
        const st = dm.states(1);
        const bound = nn.bindDecodeStates(st.conv, st.ssm);
        const t = timeIt(() => nn.decodeStepSync(dm.plan, bound, ids, logits), steps, repeats);
        for (const x of [...st.conv, ...st.ssm]) x.dispose();
        return t;
      }),
    );
    if (ms !== undefined && !q && name.includes('default')) decodeBf16Ms = ms;
  }
  // The default variant with the device sampler in the step (tokens and draws on the host, so each
  // step also waits for its token): against the default row, the sampler's cost and one round trip.
  if (!args['only-default']) {
    const draws = new Tensor('float64', [0.5], [1]);
    for (const [name, sampling] of [
      ['greedy sampler in the step', { temperature: 0 }],
      ['sampler in the step (T 0.8, top-p 0.95)', { temperature: 0.8, topP: 0.95, draws }],
    ]) {
      decodeRow(`decode ${args.shape} ${mode} batch 1: graph, fused, PDL, ${name}`, floorMs, peer, () => {
        const st = dm.states(1);
        const bound = nn.bindDecodeStates(st.conv, st.ssm);
        const t = timeIt(() => nn.decodeStepSync(dm.plan, bound, ids, logits, sampling)?.dispose(), steps, repeats);
        for (const x of [...st.conv, ...st.ssm]) x.dispose();
        return t;
      });
    }
    draws.dispose();
  }
  ids.dispose();
  logits.dispose();
  dm.dispose();
}

// ---- prefill through the runner ------------------------------------------------------------------------

if (!args['no-prefill']) {
  const t0 = now();
  const model = await MambaModel.load(dir, { dtype: 'bfloat16', device: DEV });
  log(`MambaModel.load ${args.shape} bfloat16 on ${DEV} in ${((now() - t0) / 1000).toFixed(1)} s`);
  const vocab = model.config.vocabSize;
  const prompt = [Array.from({ length: promptLen }, (_, i) => (i * 104729) % vocab)];
  // As generation runs it: the prompt through the scan, the last token's logits, the first pick.
  const times = [];
  for (let r = 0; r < Math.min(repeats, 3) + 1; r++) {
    const s = now();
    await model.generate(prompt, { maxNewTokens: 1 });
    synchronizeSync(DEV);
    if (r > 0) times.push(now() - s);
  }
  const ms = median(times);
  const perToken = ms / promptLen;
  const flops = (2 * model.weightBytes * promptLen) / 2; // bf16 weights: 2 FLOPs per weight per token
  rows.push({
    row: `prefill ${promptLen} tokens ${args.shape} bfloat16 (MambaModel.generate, 1 new token)`,
    ours: `${ms.toFixed(1)} ms (${(perToken * 1e3).toFixed(1)} us/token)`,
    floor: `${((flops / 990e12) * 1e3).toFixed(1)} ms (linear FLOPs / 990 TFLOP/s)`,
    frac: `${((flops / 990e12 / (ms / 1e3)) * 100).toFixed(0)}%`,
    peer:
      decodeBf16Ms !== undefined
        ? `decode one by one: ${(decodeBf16Ms * 1e3).toFixed(0)} us/token = ${(decodeBf16Ms / perToken).toFixed(1)}x slower (aim >= 10x)`
        : 'aim: >= 10x faster per token than decode',
  });
  log(rows[rows.length - 1]);
  // The runner's own decode on this device (op by op unless it runs the fused step there).
  {
    const { state } = await model.forward([prompt[0].slice(0, 8)]);
    const s = now();
    const n = 8;
    for (let i = 0; i < n; i++) {
      const r = await model.forward([[(i * 31) % vocab]], { state });
      await r.logits.data();
      r.logits.dispose();
    }
    const per = (now() - s) / n;
    rows.push({
      row: `decode ${args.shape} bfloat16 batch 1 through MambaModel.forward (fused: ${model._fused})`,
      ours: `${per.toFixed(3)} ms/token`,
      floor: `${((model.weightBytes / BW) * 1e3).toFixed(3)} ms`,
      frac: `${((model.weightBytes / BW / (per / 1e3)) * 100).toFixed(0)}%`,
      peer: 'the fused step above',
    });
    log(rows[rows.length - 1]);
    state.dispose();
  }
  model.dispose();
}

// ---- decode through the runner: MambaModel.generate --------------------------------------------------

for (const mode of modes) {
  const q = quantOf(mode);
  let model;
  try {
    const t0 = now();
    model = await MambaModel.load(dir, { dtype: 'bfloat16', device: DEV, ...(q ? { quantize: q } : {}) });
    log(`MambaModel.load ${args.shape} ${mode} on ${DEV} in ${((now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    log(e);
    rows.push({
      row: `decode ${args.shape} ${mode} through MambaModel.generate`,
      ours: `skipped: ${e.message}`,
      floor: '',
      frac: '',
      peer: '',
    });
    continue;
  }
  const vocab = model.config.vocabSize;
  // Longer than 64 tokens, for the reason given at the checks above.
  const prompt = [Array.from({ length: 80 }, (_, i) => (i * 7919) % vocab)];
  // Every generate call starts from new states: its first step runs uncaptured, the second captures the
  // graph. The rate is taken over the steps after those, median of the repeats.
  const n = Math.max(8, steps);
  const skip = 3;
  const per = [];
  for (let r = 0; r < Math.min(repeats, 3); r++) {
    const stamps = [];
    await model.generate(prompt, { maxNewTokens: n + skip + 1, onToken: () => stamps.push(now()) });
    per.push((stamps[stamps.length - 1] - stamps[skip]) / (stamps.length - 1 - skip));
  }
  const ms = median(per);
  const floorMs = (model.weightBytes / BW) * 1e3;
  rows.push({
    row: `decode ${args.shape} ${mode} batch 1 through MambaModel.generate (greedy, fused: ${model._fused})`,
    ours: `${ms.toFixed(3)} ms/token (${(1e3 / ms).toFixed(0)} tokens/s)`,
    floor: `${floorMs.toFixed(3)} ms`,
    frac: `${((floorMs / ms) * 100).toFixed(0)}% (${(ms / floorMs).toFixed(2)}x)`,
    peer: 'the fused step above (nn.decodeStepSync)',
  });
  log(rows[rows.length - 1]);
  model.dispose();
}

// ---- the linear kernels alone ---------------------------------------------------------------------------

if (!args['no-micro']) {
  const c = normalizeConfig(shapeCfg);
  const d = c.hiddenSize;
  const di = c.intermediateSize;
  const shapes = [
    [1, d, 2 * di, 'in_proj'],
    [1, di, d, 'out_proj'],
    [1, di, c.timeStepRank + 2 * c.stateSize, 'x_proj'],
    [1, c.timeStepRank, di, 'dt_proj'],
    [1, d, c.vocabSize, 'lm_head'],
    [16, d, 2 * di, 'in_proj batch 16'],
    [promptLen, d, 2 * di, 'in_proj prefill'],
    [promptLen, di, d, 'out_proj prefill'],
  ];
  for (const [m, k, n, name] of shapes) {
    // Several weight copies, rotated, so that repeated calls stream from memory, not L2.
    const copies = Math.min(40, Math.max(1, Math.ceil(200e6 / (n * k * 2))));
    const ws = Array.from({ length: copies }, () =>
      nn.packLinearSync(
        randHost([n, k], 1 / Math.sqrt(k))
          .cast('bfloat16')
          .toSync(DEV),
        { dtype: 'bfloat16' },
      ),
    );
    const x = randHost([m, k], 1).cast('bfloat16').toSync(DEV);
    // Outputs are freed in stream order as soon as they are enqueued.
    const ms = timeIt((i) => nn.linearSync(x, ws[i % ws.length]).dispose(), m <= 64 ? 200 : 20, repeats);
    const bytes = n * k * 2 + m * (k + n) * 2;
    const flops = 2 * m * n * k;
    const floorMs = Math.max(bytes / BW, flops / 990e12) * 1e3;
    const p = peerUs(m === 1 || m === 16 ? 'mm_bf16_decode' : 'mm_bf16', m, k, n);
    rows.push({
      row: `linear ${name} [${m}, ${k}, ${n}] bfloat16`,
      ours: `${(ms * 1e3).toFixed(1)} us (${m <= 64 ? `${(bytes / (ms / 1e3) / 1e12).toFixed(2)} TB/s` : `${(flops / (ms / 1e3) / 1e12).toFixed(0)} TFLOP/s`})`,
      floor: `${(floorMs * 1e3).toFixed(1)} us`,
      frac: `${((floorMs / ms) * 100).toFixed(0)}%`,
      peer: p !== undefined ? `cuBLAS ${p.toFixed(1)} us` : '-',
    });
    log(rows[rows.length - 1]);
    for (const w of ws) w.dispose();
    x.dispose();
  }
}

// ---- the table ---------------------------------------------------------------------------------------

console.log('');
console.log(`| row | ours | floor | floor / ours | peer |`);
console.log(`|---|---|---|---|---|`);
for (const r of rows) console.log(`| ${r.row} | ${r.ours} | ${r.floor} | ${r.frac} | ${r.peer} |`);
if (!args.dir) fs.rmSync(dir, { recursive: true, force: true });
fs.rmSync(smallDir, { recursive: true, force: true });
