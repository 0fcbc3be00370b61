// GPU benchmark of the FFT convolution family: fftConv on the rows of issue 7 (bfloat16 and float32),
// timed on the CUDA backend against the memory floor and the PyTorch peer (rfft/irfft through cuFFT,
// H3's reference semantics) measured by ../shared/device/peers.py on the same card; plus ssmConv and
// s4dKernel for information. Every op is checked against the CPU backend before anything is timed.
//
//   node bench/fft-gpu.mjs [--peers peers.jsonl] [--quick] [--shapes 8x768x4096,...] [--dtypes bfloat16,...]
//   node bench/fft-gpu.mjs --profile BxHxL   (two bfloat16 calls of that shape and nothing else, for Nsight)
//
// --peers: the JSON lines that `python3 peers.py fftconv` printed in the same run (kind fftconv_torch);
// without it the peer column shows the anchors measured on this H200 when the issue was filed.
// --shapes / --dtypes: time only those rows of the table (BxHxL) and dtypes, after the same checks, and
// skip the batch split, ssmConv and s4dKernel lines (a short run).
// m = 1024 (8 x 768 x 1024) has three kernels, chosen at every call: bfloat16 rows take the tensor-core
// kernel unless SSMKIT_CUDA_FFT_TC=0; otherwise SSMKIT_CUDA_FFT_WIDE picks (0: 16 values a thread; 1:
// 32 x 32; unset: 32 x 32 for float32 only). All are checked, and timed in alternation after the table
// (A/B: bfloat16 SSMKIT_CUDA_FFT_TC=1 against 0, float32 SSMKIT_CUDA_FFT_WIDE=1 against 0).
import fs from 'node:fs';
import { backend, fftConvSync, s4dKernelSync, ssmConvSync, synchronizeSync, Tensor } from '../dist/esm/index.mjs';

const DEVICE = 'cuda:0';
const BANDWIDTH = 4.2e12; // bytes/s: the copy ceiling measured on the H200 (issue 7's floor column)
const FP32_PEAK = 67e12; // FLOP/s, the datasheet's fp32 rate
const quick = process.argv.includes('--quick');
const peersArg = process.argv.indexOf('--peers');
function listArg(name) {
  const i = process.argv.indexOf(name);
  return i < 0 ? null : process.argv[i + 1].split(',');
}
const onlyShapes = listArg('--shapes');
const onlyDtypes = listArg('--dtypes');

// PyTorch's rfft/irfft convolution on this H200 when issue 7 was filed (us): [float32, bfloat16].
const ANCHORS = {
  '8x768x1024': [338, 448],
  '8x768x4096': [924, 1124],
  '2x768x16384': [1170, 1354],
  '1x768x65536': [3795, 4152],
};

function loadPeers() {
  const peers = new Map();
  if (peersArg < 0) return peers;
  for (const line of fs.readFileSync(process.argv[peersArg + 1], 'utf8').split('\n')) {
    if (!line.trim().startsWith('{')) continue;
    const p = JSON.parse(line);
    if (p.kind !== 'fftconv_torch') continue;
    const dtype = String(p.dtype).includes('bfloat16') ? 'bfloat16' : 'float32';
    peers.set(`${p.B}x${p.H}x${p.L} ${dtype}`, p.us);
  }
  return peers;
}

let seed = 2024;
function normal() {
  seed = (seed * 1103515245 + 12345) >>> 0;
  const u1 = (seed + 1) / 4294967297;
  seed = (seed * 1103515245 + 12345) >>> 0;
  const u2 = seed / 4294967296;
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}
function randn(shape, scale = 1) {
  const n = shape.reduce((a, b) => a * b, 1);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = normal() * scale;
  return new Tensor('float32', a, shape);
}
const on = (t, dtype = 'float32') => (dtype === 'float32' ? t : t.cast(dtype)).toSync(DEVICE);

function relL2(a, b) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}
function f32(t) {
  return t.dtype === 'float32' ? t.toSync('cpu').dataSync() : t.cast('float32').toSync('cpu').dataSync();
}
function check(label, got, want, tol) {
  const got32 = f32(got);
  const want32 = f32(want);
  let nan = 0;
  for (let i = 0; i < got32.length; i++) if (Number.isNaN(got32[i])) nan++;
  const err = relL2(got32, want32);
  const ok = nan === 0 && err <= tol;
  console.log(`check ${ok ? 'ok  ' : 'FAIL'} ${label}: relative L2 vs cpu ${err.toExponential(2)}${nan ? `, ${nan} NaN` : ''}`);
  if (!ok) process.exitCode = 1;
  return ok;
}

/**
 * Median microseconds per call of fn() over `repeats` runs of `iters` calls each, after a warm-up;
 * the device is synchronized before and after each run, so the time covers the queued kernels.
 */
function timeDevice(fn, iters, repeats = quick ? 3 : 7) {
  for (let i = 0; i < 3; i++) fn(i);
  synchronizeSync(DEVICE);
  const runs = [];
  for (let r = 0; r < repeats; r++) {
    synchronizeSync(DEVICE);
    const t0 = performance.now();
    for (let i = 0; i < iters; i++) fn(i);
    synchronizeSync(DEVICE);
    runs.push(((performance.now() - t0) * 1e3) / iters);
  }
  runs.sort((a, b) => a - b);
  return { median: runs[Math.floor(runs.length / 2)], min: runs[0], max: runs[runs.length - 1] };
}

function restoreEnv(name, value) {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}

// ---- a profiling driver: two calls of one bfloat16 shape (an Nsight run captures the second) ----

const profileArg = process.argv.indexOf('--profile');
if (profileArg >= 0) {
  const [B, H, L] = process.argv[profileArg + 1].split('x').map(Number);
  const u = on(randn([B, H, L]), 'bfloat16');
  const k = on(randn([H, L], 1 / Math.sqrt(L)));
  const D = on(randn([H]));
  for (let i = 0; i < 2; i++) fftConvSync(u, k, { D }).dispose();
  synchronizeSync(DEVICE);
  console.log(`profiled fftConv bfloat16 [${B}, ${H}, ${L}] twice`);
  process.exit(0);
}

// ---- correctness first ----

const info = backend();
console.log(
  `backend ${info.name}${info.device ? ` (${info.device}, sm ${info.computeCapability})` : ''}; binding ${info.bindingPath}`,
);
if (info.name !== 'cuda') {
  console.log(`no CUDA backend: ${info.fallbackReason ?? 'unknown reason'}; nothing to time`);
  process.exit(1);
}

{
  const H = 4;
  const B = 2;
  // One length per kernel the timed rows take: fused 3 and 4 passes, the two halves of m = 16384
  // (L <= m and L > m), four-step.
  const checks = [
    [1000, 1000],
    [4096, 4096],
    [16000, 16000],
    [20000, 5000],
    [40000, 40000],
  ];
  const wideBefore = process.env.SSMKIT_CUDA_FFT_WIDE;
  const tcBefore = process.env.SSMKIT_CUDA_FFT_TC;
  const variants = [
    [1000, 1000, '0'],
    [1000, 1000, '1'],
    [1025, 1000, '1'],
    [1000, 1000, undefined, '0'],
    [2000, 40, undefined, '1'],
  ];
  for (const [L, Lk, wide, tc] of [...checks, ...variants]) {
    if (wide !== undefined) process.env.SSMKIT_CUDA_FFT_WIDE = wide;
    if (tc !== undefined) process.env.SSMKIT_CUDA_FFT_TC = tc;
    for (const dtype of ['float32', 'float16', 'bfloat16']) {
      const u = randn([B, H, L]);
      const k = randn([H, 2, Lk], 1 / Math.sqrt(2 * Lk));
      const D = randn([H]);
      const g1 = randn([B, H, L]);
      const g2 = randn([B, H, L]);
      const cast = (t) => (dtype === 'float32' ? t : t.cast(dtype));
      const opts = (dev) => ({
        D: dev === 'cpu' ? D : on(D),
        gelu: true,
        pregate: dev === 'cpu' ? cast(g1) : on(g1, dtype),
        postgate: dev === 'cpu' ? cast(g2) : on(g2, dtype),
        bidirectional: true,
      });
      const want = fftConvSync(cast(u), k, opts('cpu'));
      const got = fftConvSync(on(u, dtype), on(k), opts(DEVICE));
      const plan = `${wide === undefined ? '' : ` SSMKIT_CUDA_FFT_WIDE=${wide}`}${tc === undefined ? '' : ` SSMKIT_CUDA_FFT_TC=${tc}`}`;
      check(`fftConv ${dtype} [${B}, ${H}, ${L}] Lk ${Lk} (every option)${plan}`, got, want, dtype === 'float32' ? 1e-5 : 1e-2);
    }
    if (wide !== undefined) restoreEnv('SSMKIT_CUDA_FFT_WIDE', wideBefore);
    if (tc !== undefined) restoreEnv('SSMKIT_CUDA_FFT_TC', tcBefore);
  }
  const N2 = 32;
  const logDt = new Tensor(
    'float32',
    Float32Array.from({ length: H }, () => Math.log(1e-3) + Math.random() * Math.log(100)),
    [H],
  );
  const Aa = new Float32Array(H * N2 * 2);
  for (let i = 0; i < H * N2; i++) {
    Aa[2 * i] = -0.5;
    Aa[2 * i + 1] = Math.PI * (i % N2);
  }
  const A = new Tensor('float32', Aa, [H, N2, 2]);
  const C = randn([H, N2, 2], Math.SQRT1_2);
  check('s4dKernel [4, 32] L 5000', s4dKernelSync(on(logDt), on(A), on(C), 5000), s4dKernelSync(logDt, A, C, 5000), 1e-5);
  const u = randn([B, H, 20000]);
  const x0 = randn([B, H, N2, 2]);
  const want = ssmConvSync(u, logDt, A, C, { initialState: x0, returnLastState: true });
  const got = ssmConvSync(on(u), on(logDt), on(A), on(C), { initialState: on(x0), returnLastState: true });
  check('ssmConv [2, 4, 20000] N/2 32', got.out, want.out, 1e-5);
  check('ssmConv lastState', got.lastState, want.lastState, 1e-5);
}
if (process.exitCode) {
  console.log('results differ from the CPU backend: not timing');
  process.exit(1);
}
console.log('all results match, starting benchmarks');

// ---- timing ----

const peers = loadPeers();
const rows = [];
const shapes = [
  [8, 768, 1024],
  [8, 768, 4096],
  [2, 768, 16384],
  [1, 768, 65536],
];
for (const dtype of ['bfloat16', 'float32']) {
  if (onlyDtypes && !onlyDtypes.includes(dtype)) continue;
  for (const [B, H, L] of shapes) {
    if (onlyShapes && !onlyShapes.includes(`${B}x${H}x${L}`)) continue;
    const es = dtype === 'float32' ? 4 : 2;
    const bytes = 2 * B * H * L * es + H * L * 4;
    // Inputs are rotated so that repeated runs do not find them in the 50 MB L2.
    const sets = bytes < 200e6 ? 4 : 1;
    const us = [];
    for (let s = 0; s < sets; s++) us.push(on(randn([B, H, L]), dtype));
    const k = on(randn([H, L], 1 / Math.sqrt(L)));
    const D = on(randn([H]));
    // ~2 ms a run: long enough that the synchronization around it does not count.
    const iters = Math.max(3, Math.min(200, Math.round(2e9 / bytes)));
    const t = timeDevice((i) => fftConvSync(us[i % sets], k, { D }).dispose(), quick ? Math.max(2, iters >> 2) : iters);
    for (const x of us) x.dispose();
    k.dispose();
    D.dispose();
    const floorBytes = (bytes / BANDWIDTH) * 1e6;
    // FLOPs of the two real FFTs of n = 2L per row, at 5/2 n log2 n each, and the filter's transform.
    const n = 2 * L;
    const flops = 2.5 * n * Math.log2(n) * (2 * B * H + H);
    const floorFlops = (flops / FP32_PEAK) * 1e6;
    const key = `${B}x${H}x${L}`;
    const peer = peers.get(`${key} ${dtype}`) ?? ANCHORS[key]?.[dtype === 'float32' ? 0 : 1];
    const row = {
      shape: `${B} x ${H} x ${L}`,
      dtype,
      us: t.median,
      spread: `${t.min.toFixed(1)}..${t.max.toFixed(1)}`,
      floor: floorBytes,
      floorFlops,
      frac: floorBytes / t.median,
      gbps: bytes / t.median / 1e3,
      peer,
      peerSource: peers.has(`${key} ${dtype}`) ? 'measured' : 'issue anchor',
      speedup: peer ? peer / t.median : undefined,
    };
    rows.push(row);
    console.log(
      `fftConv ${dtype} ${row.shape}: ${row.us.toFixed(1)} us (runs ${row.spread}), ${row.gbps.toFixed(0)} GB/s; ` +
        `floor ${floorBytes.toFixed(1)} us bytes / ${floorFlops.toFixed(1)} us fp32 FLOPs; ` +
        `${(100 * row.frac).toFixed(1)}% of the memory floor; peer ${peer ?? '-'} us (${row.peerSource}), ` +
        `${row.speedup ? `${row.speedup.toFixed(1)}x` : '-'}`,
    );
  }
}

// The kernels of m = 1024 in alternation (A/B in one process): bfloat16 SSMKIT_CUDA_FFT_TC=0 and 1 (the
// 16-value plan against the tensor cores), float32 SSMKIT_CUDA_FFT_WIDE=0 and 1.
if (!onlyShapes || onlyShapes.includes('8x768x1024')) {
  const [B, H, L] = [8, 768, 1024];
  for (const dtype of ['bfloat16', 'float32']) {
    if (onlyDtypes && !onlyDtypes.includes(dtype)) continue;
    const knob = dtype === 'bfloat16' ? 'SSMKIT_CUDA_FFT_TC' : 'SSMKIT_CUDA_FFT_WIDE';
    const before = process.env[knob];
    const us = [0, 1, 2, 3].map(() => on(randn([B, H, L]), dtype));
    const k = on(randn([H, L], 1 / Math.sqrt(L)));
    const D = on(randn([H]));
    const got = { 0: [], 1: [] };
    for (let round = 0; round < 3; round++) {
      for (const wide of ['0', '1']) {
        process.env[knob] = wide;
        got[wide].push(timeDevice((i) => fftConvSync(us[i % 4], k, { D }).dispose(), quick ? 20 : 60).median);
      }
    }
    restoreEnv(knob, before);
    for (const x of [...us, k, D]) x.dispose();
    const med = (a) => [...a].sort((x, y) => x - y)[1];
    const parts = Object.entries(got).map(([w, t]) => `=${w} ${med(t).toFixed(1)} us (${t.map((x) => x.toFixed(1)).join(', ')})`);
    console.log(`fftConv ${dtype} 8 x 768 x 1024 A/B, ${knob}: ${parts.join('; ')}`);
  }
}

// The part of a call that does not grow with the batch (the filters' spectra, launches, scratch), for
// information: t(B) = fixed + B * per-row, from batch 1 and 8 at 768 x 1024 bfloat16.
if (!onlyShapes) {
  const H = 768;
  const L = 1024;
  const k = on(randn([H, L], 1 / Math.sqrt(L)));
  const D = on(randn([H]));
  const t = {};
  for (const B of [1, 8]) {
    const us = [0, 1, 2, 3].map(() => on(randn([B, H, L]), 'bfloat16'));
    const iters = quick ? 25 : 100;
    t[B] = timeDevice((i) => fftConvSync(us[i % 4], k, { D }).dispose(), iters).median;
    for (const x of us) x.dispose();
  }
  k.dispose();
  D.dispose();
  const fixed = (8 * t[1] - t[8]) / 7;
  console.log(
    `fftConv bfloat16 [B, 768, 1024]: B = 1 ${t[1].toFixed(1)} us, B = 8 ${t[8].toFixed(1)} us; ` +
      `fixed part ${fixed.toFixed(1)} us a call, ${((t[8] - t[1]) / 7).toFixed(1)} us a batch row`,
  );
}

// ssmConv and s4dKernel, for information (no peer).
if (!onlyShapes) {
  const H = 768;
  const N2 = 32;
  const logDt = on(
    new Tensor(
      'float32',
      Float32Array.from({ length: H }, () => Math.log(1e-3) + Math.random() * Math.log(100)),
      [H],
    ),
  );
  const Aa = new Float32Array(H * N2 * 2);
  for (let i = 0; i < H * N2; i++) {
    Aa[2 * i] = -0.5;
    Aa[2 * i + 1] = Math.PI * (i % N2);
  }
  const A = on(new Tensor('float32', Aa, [H, N2, 2]));
  const C = on(randn([H, N2, 2], Math.SQRT1_2));
  const tk = timeDevice(() => s4dKernelSync(logDt, A, C, 16384).dispose(), quick ? 2 : 10);
  console.log(`s4dKernel [768, 32] L 16384: ${tk.median.toFixed(1)} us`);
  const u = on(randn([2, H, 16384]), 'bfloat16');
  const ts = timeDevice(() => ssmConvSync(u, logDt, A, C, { returnLastState: true }).out.dispose(), quick ? 2 : 10);
  console.log(`ssmConv bfloat16 [2, 768, 16384] N/2 32 (default blocks): ${ts.median.toFixed(1)} us`);
}

console.log(`\nbench/RESULTS.md rows (${info.device}; floor = bytes / 4.2 TB/s; peer = PyTorch rfft/irfft through cuFFT):\n`);
console.log('| op | batch x H x L | dtype | ours (us) | floor (us) | of floor | peer (us) | speedup |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| fftConv | ${r.shape} | ${r.dtype} | ${r.us.toFixed(1)} | ${r.floor.toFixed(1)} | ${(100 * r.frac).toFixed(1)}% | ` +
      `${r.peer ?? '-'}${r.peerSource === 'measured' ? '' : ' (anchor)'} | ${r.speedup ? `${r.speedup.toFixed(1)}x` : '-'} |`,
  );
}
