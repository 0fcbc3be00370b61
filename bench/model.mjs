// Model runner bench: prefill and batch-1 decode of a random checkpoint with a published model's
// shape (default Mamba-130M: d_model 768, 24 layers), written to a temp folder, on the backend that
// loads (CPU here; the same script on the GPU machine for the Mamba-2.8B shape). Before timing it
// checks the runner against the float64 reference model (test/ref/model.ts) on a 2-layer checkpoint of
// the same widths, and the full model's decode path against its prefill path; it reports each dtype /
// quantized mode's accuracy cost (mean KL and logit error against float32) next to its speed. The
// decode floor is weight bytes / bandwidth (4.2 TB/s on the H200; on the CPU the GEMV bandwidth
// measured in this run), and the peer is onnxruntime's MatMul over the same float32 weights (the
// decode step's linear layers alone, which bound it).
//
// node bench/model.mjs [--shape mamba-130m] [--modes float32,bfloat16,w8a8,w4a8,w4a16] [--prompt 512]
//                      [--tokens 32] [--device cpu|cuda:0] [--no-peer]

import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { requirePeer } from './peers.mjs';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const ssm = require(path.join(root, 'dist/cjs/index.js'));
const nn = require(path.join(root, 'dist/cjs/ops/nn.js'));
const bench = require(path.join(root, 'dist/cjs/models/bench.js'));
const { MambaModel, Tensor, backend, synchronize } = ssm;

const { values: args } = parseArgs({
  options: {
    shape: { type: 'string', default: 'mamba-130m' },
    modes: { type: 'string' },
    prompt: { type: 'string' },
    tokens: { type: 'string', default: '32' },
    device: { type: 'string' },
    'no-peer': { type: 'boolean', default: false },
  },
});
const be = backend();
const device = args.device ?? (be.name === 'cuda' ? 'cuda:0' : 'cpu');
const onGpu = device.startsWith('cuda');
const modes = (args.modes ?? (onGpu ? 'bfloat16,w4a16' : 'float32,bfloat16,w8a8,w4a8,w4a16')).split(',');
// float32 first, when it runs: it is the reference of the others' accuracy.
modes.sort((a, b) => (b === 'float32') - (a === 'float32'));
const promptLen = Number(args.prompt ?? (onGpu ? 2048 : 512));
const tokens = Number(args.tokens);

/** The float64 reference model of test/ref/model.ts, transpiled with the project's TypeScript. */
function loadReference() {
  const ts = require('typescript');
  const src = fs.readFileSync(path.join(root, 'test/ref/model.ts'), 'utf8');
  const js = ts.transpileModule(src, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  const mod = { exports: {} };
  new Function('module', 'exports', 'require', js)(mod, mod.exports, require);
  return mod.exports;
}

function toF64(t) {
  const host = t.device === 'cpu' ? t : t.toSync('cpu');
  return Float64Array.from(host.dtype === 'float32' ? host.dataSync() : host.cast('float32').dataSync());
}

function maxAbsErr(a, e) {
  let m = 0;
  let scale = 0;
  for (let i = 0; i < e.length; i++) {
    m = Math.max(m, Math.abs(a[i] - e[i]));
    scale = Math.max(scale, Math.abs(e[i]));
  }
  return { max: m, scale };
}

/** Mean KL(p || q) over rows of logits (rows, vocab), and the relative L2 error of q's logits. */
function klAndErr(pLogits, qLogits, vocab) {
  const rows = pLogits.length / vocab;
  let kl = 0;
  let num = 0;
  let den = 0;
  for (let r = 0; r < rows; r++) {
    const p = pLogits.subarray(r * vocab, (r + 1) * vocab);
    const q = qLogits.subarray(r * vocab, (r + 1) * vocab);
    const lse = (x) => {
      let m = -Infinity;
      for (const v of x) m = Math.max(m, v);
      let s = 0;
      for (const v of x) s += Math.exp(v - m);
      return m + Math.log(s);
    };
    const lp = lse(p);
    const lq = lse(q);
    for (let i = 0; i < vocab; i++) {
      const pi = Math.exp(p[i] - lp);
      kl += pi * (p[i] - lp - (q[i] - lq));
      num += (p[i] - q[i]) ** 2;
      den += p[i] ** 2;
    }
  }
  return { kl: kl / rows, relErr: Math.sqrt(num / den) };
}

// ---- minimal ONNX writer for the peer: MatMul nodes over float32 initializers ----------------------

function varint(n) {
  const out = [];
  let v = BigInt(n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return Buffer.from(out);
}
const field = (num, wire) => varint((num << 3) | wire);
const pbInt = (num, v) => Buffer.concat([field(num, 0), varint(v)]);
const pbBytes = (num, b) => Buffer.concat([field(num, 2), varint(b.length), b]);
const pbStr = (num, s) => pbBytes(num, Buffer.from(s, 'utf8'));

function valueInfo(name, dims) {
  const shape = Buffer.concat(dims.map((d) => pbBytes(1, pbInt(1, d))));
  const tensorType = Buffer.concat([pbInt(1, 1), pbBytes(2, shape)]);
  return Buffer.concat([pbStr(1, name), pbBytes(2, pbBytes(1, tensorType))]);
}

/** An ONNX model computing y_i = x_{in_i} @ W_i for each weight W_i (K, N) float32. */
function onnxMatMuls(inputs, mats) {
  const nodes = [];
  const inits = [];
  const outs = [];
  mats.forEach((m, i) => {
    const w = `w${i}`;
    const y = `y${i}`;
    inits.push(
      Buffer.concat([
        pbInt(1, m.k),
        pbInt(1, m.n),
        pbInt(2, 1),
        pbStr(8, w),
        pbBytes(9, Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength)),
      ]),
    );
    nodes.push(Buffer.concat([pbStr(1, m.input), pbStr(1, w), pbStr(2, y), pbStr(3, `mm${i}`), pbStr(4, 'MatMul')]));
    outs.push(valueInfo(y, [1, m.n]));
  });
  const graph = Buffer.concat([
    ...nodes.map((n) => pbBytes(1, n)),
    pbStr(2, 'linears'),
    ...inits.map((t) => pbBytes(5, t)),
    ...inputs.map(([name, k]) => pbBytes(11, valueInfo(name, [1, k]))),
    ...outs.map((o) => pbBytes(12, o)),
  ]);
  return Buffer.concat([pbInt(1, 8), pbBytes(8, Buffer.concat([pbStr(1, ''), pbInt(2, 17)])), pbBytes(7, graph)]);
}

// ---- the run ----------------------------------------------------------------------------------------

const now = () => Number(process.hrtime.bigint()) / 1e6;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ssmkit-model-bench-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const machine = onGpu
  ? `${be.device} (compute ${be.computeCapability})`
  : `${os.cpus()[0]?.model ?? 'cpu'}, ${be.threads} threads, SIMD ${be.simd}`;
console.log(`machine: ${machine}; backend ${be.name}; node ${process.version}`);

const shape = args.shape;
const config = bench.shapeConfig(shape, 'bfloat16');
const small = { ...config, num_hidden_layers: 2 };
const fullDir = path.join(tmp, shape);
const smallDir = path.join(tmp, `${shape}-2-layers`);
let t0 = now();
await bench.writeRandomCheckpoint(fullDir, config, { seed: 7 });
await bench.writeRandomCheckpoint(smallDir, small, { seed: 7 });
console.log(
  `random ${shape} checkpoint (bfloat16, ${config.num_hidden_layers} layers) written in ${((now() - t0) / 1000).toFixed(1)} s`,
);

// 1. The runner against the float64 reference on 2 layers of the same widths.
let runnable = true;
try {
  await MambaModel.load(smallDir, { dtype: 'float32', device }).then((m) => m.dispose());
} catch (e) {
  if (e.code !== 'ERR_SSMKIT_NOT_COMPILED') throw e;
  // A build without the runner's kernels on this device: say so, and measure only what can run.
  runnable = false;
  console.log(`model runner not run on ${device}: ${e.message}`);
}
if (runnable) {
  const ref = loadReference();
  const model = await MambaModel.load(smallDir, { dtype: 'float32', device });
  const files = fs.readdirSync(smallDir).filter((f) => f.endsWith('.safetensors'));
  const ws = {};
  for (const f of files) for (const [k, v] of Object.entries(await ssm.loadSafetensors(path.join(smallDir, f)))) ws[k] = toF64(v);
  const c = model.config;
  const cfg = {
    modelType: c.modelType,
    dModel: c.hiddenSize,
    nLayer: c.numLayers,
    vocab: c.vocabSize,
    dInner: c.intermediateSize,
    dState: c.stateSize,
    dConv: c.convKernel,
    eps: c.eps,
    dtRank: c.timeStepRank,
    nHeads: c.numHeads,
    headDim: c.headDim,
    nGroups: c.nGroups,
    tied: c.tieWordEmbeddings,
  };
  const prompt = [11, 2024, 77, 5];
  const want = ref.refForward(cfg, ws, prompt, ref.emptyState(cfg));
  const { logits } = await model.forward([prompt]);
  const { max, scale } = maxAbsErr(toF64(logits), want);
  if (!(max <= 1e-3 * Math.max(1, scale))) {
    console.error(`FAIL: 2-layer ${shape} logits differ from the float64 reference by ${max} (scale ${scale})`);
    process.exit(1);
  }
  console.log(
    `check: 2-layer ${shape} float32 logits match the float64 reference (max abs error ${max.toExponential(2)}, |logit| <= ${scale.toFixed(1)})`,
  );
  model.dispose();
}

// 2. Per mode: decode path == prefill path, accuracy against float32, then speed.
const results = [];
let refLogits;
let refMode;
const accPrompt = Array.from({ length: 48 }, (_, i) => (i * 7919 + 13) % config.vocab_size);
for (const mode of runnable ? modes : []) {
  const quantize = mode.startsWith('w') ? mode : undefined;
  const dtype = quantize ? 'bfloat16' : mode;
  let model;
  t0 = now();
  try {
    model = await MambaModel.load(fullDir, {
      dtype,
      device,
      ...(quantize ? { quantize, calibration: [accPrompt.slice(0, 32).map((t) => (t * 3) % config.vocab_size)] } : {}),
    });
  } catch (e) {
    console.log(`${mode}: not run (${e.message})`);
    continue;
  }
  const loadS = (now() - t0) / 1000;
  const vocab = model.config.vocabSize;
  // decode path vs prefill path on the same 6 tokens
  const p6 = accPrompt.slice(0, 6);
  const pre = await model.forward([p6]);
  const last = toF64(pre.logits).subarray(5 * vocab);
  const st = await model.forward([p6.slice(0, 1)]);
  let stepLogits;
  for (let i = 1; i < 6; i++) stepLogits = (await model.forward([[p6[i]]], { state: st.state })).logits;
  const dec = maxAbsErr(toF64(stepLogits), last);
  const tol = dtype === 'float32' && !quantize ? 1e-3 : 0.1;
  if (!(dec.max <= tol * Math.max(1, dec.scale))) {
    console.error(`FAIL: ${mode}: decode-path logits differ from prefill-path logits by ${dec.max} (scale ${dec.scale})`);
    process.exit(1);
  }
  const { logits } = await model.forward([accPrompt]);
  const lg = toF64(logits);
  // The reference of the accuracy columns: float32 when it runs, else the first mode.
  if (refLogits === undefined) {
    refLogits = lg;
    refMode = mode;
  }
  const acc = mode !== refMode ? klAndErr(refLogits, lg, vocab) : undefined;
  const speed = await bench.timeModel(model, { prompt: promptLen, tokens, repeats: 2 });
  // The same prompt decoded token by token, to compare with prefill per token.
  results.push({ mode, loadS, weightMB: model.weightBytes / 1e6, speed, acc, decodeCheck: dec.max });
  console.log(
    `${mode}: loaded in ${loadS.toFixed(1)} s; decode-path check max error ${dec.max.toExponential(2)}; ` +
      `prefill ${promptLen}: ${speed.prefillTokensPerSecond.toFixed(0)} tok/s; decode ${speed.decodeMsPerToken.toFixed(2)} ms/token` +
      (acc ? `; vs float32: mean KL ${acc.kl.toExponential(2)}, logit rel. L2 error ${acc.relErr.toExponential(2)}` : ''),
  );
  model.dispose();
}

// 3. The floor and the peer. On a shared machine every number moves with the load, so ours and the
// peer's run interleaved, five rounds, best of each.
let bandwidth;
let bwSource;
let peer;
const best = async (rounds, fns) => {
  const out = fns.map(() => Infinity);
  for (let r = 0; r < rounds; r++) {
    for (const [i, fn] of fns.entries()) {
      const t = now();
      await fn();
      out[i] = Math.min(out[i], now() - t);
    }
  }
  return out;
};
if (onGpu) {
  bandwidth = 4.2e12;
  bwSource = 'H200 HBM3e, 4.2 TB/s';
} else {
  // GEMV bandwidth: one 256 MB float32 weight, one input row, ours and onnxruntime's; the better one
  // is the floor's bandwidth.
  const n = 8192;
  const w = new Float32Array(n * n);
  for (let i = 0; i < w.length; i++) w[i] = ((i * 2654435761) % 1000) / 1000 - 0.5;
  const packed = nn.packLinearSync(new Tensor('float32', w, [n, n]));
  const x = new Tensor('float32', new Float32Array(n).fill(0.5), [1, n]);
  const gemvOurs = () => nn.linear(x, packed);
  let ort;
  let gemvOrt;
  if (!args['no-peer']) {
    try {
      ort = requirePeer('onnxruntime-node');
    } catch (e) {
      bwSource = `onnxruntime peer not run (${e.message.split('\n')[0]}); `;
    }
  }
  const session = (inputs, mats) =>
    ort.InferenceSession.create(onnxMatMuls(inputs, mats), {
      intraOpNumThreads: be.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      // Its pool threads would otherwise spin after each run and take the cores from the next timing.
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    });
  if (ort) {
    const wt = new Float32Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) wt[j * n + i] = w[i * n + j];
    const sess = await session([['x', n]], [{ input: 'x', k: n, n, data: wt }]);
    const feeds = { x: new ort.Tensor('float32', new Float32Array(n).fill(0.5), [1, n]) };
    gemvOrt = () => sess.run(feeds);
  }
  const [oursMs, ortMs] = await best(5, gemvOrt ? [gemvOurs, gemvOrt] : [gemvOurs]);
  packed.dispose();
  const oursBw = (n * n * 4) / (oursMs / 1000);
  bandwidth = oursBw;
  bwSource = `${bwSource ?? ''}ssmkit linear GEMV over 256 MB: ${(oursBw / 1e9).toFixed(1)} GB/s`;
  if (ortMs !== undefined) {
    const ortBw = (n * n * 4) / (ortMs / 1000);
    bwSource += `; onnxruntime MatMul: ${(ortBw / 1e9).toFixed(1)} GB/s`;
    bandwidth = Math.max(bandwidth, ortBw);
  }
  // The decode step's float32 linear layers (in_proj, x_proj, dt_proj, out_proj of every layer and the
  // LM head): onnxruntime's MatMuls, ssmkit's linear op over the same shapes, and ssmkit's whole
  // float32 decode step, interleaved.
  const c = bench.shapeConfig(shape, 'float32');
  if (ort && c.model_type === 'mamba' && modes.includes('float32')) {
    const d = c.hidden_size;
    const di = 2 * d;
    const r = c.time_step_rank;
    const ds = c.state_size;
    const shapes = [];
    for (let l = 0; l < c.num_hidden_layers; l++)
      shapes.push(['xd', d, 2 * di], ['xi', di, r + 2 * ds], ['xr', r, di], ['xi', di, d]);
    shapes.push(['xd', d, c.vocab_size]);
    const bytes = shapes.reduce((a, [, k, n2]) => a + k * n2 * 4, 0);
    if (bytes < 1.8e9) {
      // Different values in every matrix: onnxruntime's optimizer shares identical initializers, and
      // would then stream one matrix from cache where the model streams all of them from memory.
      const rnd = (len, seed) => Float32Array.from({ length: len }, (_, i) => (((i + seed * 7919) * 40503) % 997) / 997 - 0.5);
      const sess = await session(
        [
          ['xd', d],
          ['xi', di],
          ['xr', r],
        ],
        shapes.map(([input, k, n2], j) => ({ input, k, n: n2, data: rnd(k * n2, j) })),
      );
      const feeds = {
        xd: new ort.Tensor('float32', new Float32Array(d).fill(0.1), [1, d]),
        xi: new ort.Tensor('float32', new Float32Array(di).fill(0.1), [1, di]),
        xr: new ort.Tensor('float32', new Float32Array(r).fill(0.1), [1, r]),
      };
      const ours = shapes.map(([input, k, n2], j) => ({
        w: nn.packLinearSync(new Tensor('float32', rnd(k * n2, j), [n2, k])),
        x: new Tensor('float32', new Float32Array(k).fill(0.1), [1, k]),
        input,
      }));
      const model = await MambaModel.load(fullDir, { dtype: 'float32', device });
      const { state } = await model.forward([[1, 2, 3, 4]]);
      const [ortLin, oursLin, oursStep] = await best(5, [
        () => sess.run(feeds),
        async () => {
          for (const o of ours) await nn.linear(o.x, o.w);
        },
        async () => {
          const res = await model.forward([[7]], { state });
          res.logits.dispose();
        },
      ]);
      peer = { ortLin, oursLin, oursStep, mb: bytes / 1e6 };
      model.dispose();
    }
  }
}

console.log(`\nfloor bandwidth: ${bwSource}`);
console.log(
  `shape ${shape} (${config.num_hidden_layers} layers, d_model ${config.hidden_size}, vocab ${config.vocab_size}); device ${device}; prompt ${promptLen}; batch 1`,
);
console.log(
  `| mode | weights MB | prefill tok/s | decode ms/token | decode tok/s | floor ms | x floor | prefill/decode per token | mean KL vs ${refMode} | logit rel. err vs ${refMode} |`,
);
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of results) {
  const floorMs = ((r.weightMB * 1e6) / bandwidth) * 1000;
  console.log(
    `| ${r.mode} | ${r.weightMB.toFixed(0)} | ${r.speed.prefillTokensPerSecond.toFixed(0)} | ${r.speed.decodeMsPerToken.toFixed(2)} | ` +
      `${r.speed.decodeTokensPerSecond.toFixed(1)} | ${floorMs.toFixed(2)} | ${(r.speed.decodeMsPerToken / floorMs).toFixed(2)} | ` +
      `${(r.speed.prefillTokensPerSecond / r.speed.decodeTokensPerSecond).toFixed(1)}x | ` +
      `${r.acc ? r.acc.kl.toExponential(2) : '-'} | ${r.acc ? r.acc.relErr.toExponential(2) : '-'} |`,
  );
}
if (peer !== undefined) {
  console.log(
    `\npeer, the decode step's float32 linear layers (${peer.mb.toFixed(0)} MB), interleaved: onnxruntime-node MatMul ${peer.ortLin.toFixed(2)} ms, ` +
      `ssmkit linear ${peer.oursLin.toFixed(2)} ms (ratio ${(peer.oursLin / peer.ortLin).toFixed(2)}); ssmkit's whole float32 decode step ` +
      `${peer.oursStep.toFixed(2)} ms (ratio ${(peer.oursStep / peer.ortLin).toFixed(2)})`,
  );
}
await synchronize(device);
