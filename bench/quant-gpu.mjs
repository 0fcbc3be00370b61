// GPU benchmark of the quantization family (native/cuda/gemm.cu, and hadamard from quant.cu) at the
// rows of issue 8: W8A8 at 2048 x 2560 x 10240 and 8192^3, W8A8 decode (M = 1, 4, 16) at 2560 x 10240,
// W4A16 bf16 at M = 1 and 4 (2560 x 10240), M = 16 (8192^2) and the decode step's out_proj (5120 ->
// 2560) and x_proj (5120 -> 192), W4A8 at M = 2048 and 8192^3 (against our W8A8), 1 and 16 (without
// groups, and with groups of 128 as the model runner's W4A8 layers), and
// hadamard over 8 x 2048 tokens x 5120 against a device copy of the same bytes. --decode runs the
// checks and the rows of M <= 16 only.
//
// Every kernel path is first checked against the CPU backend on small cases (and one of more 128 x 256
// tiles than the H200 has SMs); then each row is timed with synchronizeSync() around N enqueued calls
// after warm-up, the median of several repeats. Rows
// whose weights fit in the L2 (50 MiB) rotate among enough weight copies to read them from memory.
// Times are per call as the host sees them: when a kernel is shorter than the host's enqueue cost
// (validation, the output's allocation, the launch: a few microseconds), that cost is what shows; the
// "host" line measures it on a tiny call. The decode rows (M <= 16) also give the device time per call,
// on plain and on packed weights: calls queued behind a few milliseconds of big GEMMs, so that the
// device runs them back to back, minus the big GEMMs alone; and one call alone (synchronize, call,
// synchronize), the latency a decode step sees.
//
// The peers are PyTorch's (cuBLAS, cuBLASLt int8, tinygemm), timed by ../shared/device/peers.py on the
// same card: pass its output with --peers FILE (JSON lines); without it the issue's numbers are shown.
//
// On sm_90 the W8A8 and W4A8 rows with M > 64 take the wgmma kernels (W4A8 the transposed one, its int4
// weights widened to 16 w in the consumers' registers as wgmma's A operand, one kernel a call, no x row
// sums (k <= 131071), one k-tile's wgmmas in flight behind
// the next, 16-bit outputs through the copy engine; SSMKIT_CUDA_W4S_MODE=1 (all wgmmas waited for each
// k-tile) and SSMKIT_CUDA_W4S_BULK=0 (outputs stored by the threads) take the earlier forms (gemm.cu);
// SSMKIT_CUDA_W4A8_SWAP=0 takes W8A8's kernel, whose producer
// widens the int4 weights to int8 in shared memory from a ring of int4 stages that the copy engine fills
// ahead, or with SSMKIT_CUDA_W4A8_RING=0 from its own registers; the title line names each knob set);
// SSMKIT_CUDA_WGMMA=0 times the
// mma.sync tiled kernel instead. --only NAMES (comma-separated:
// w8a8, w8a8-decode, w4a16, w4a8, hadamard) times only those rows; --decode only the rows of M <= 16
// (the same as --only w8a8-decode,w4a16,w4a8 without W4A8's M > 64 row); the checks always run.
// On sm_90 plain W8A8 rows of whole 128-k steps at 8 <= M <= 16 take the stream path (gemm.cu);
// SSMKIT_CUDA_STREAM=0 leaves them to the pair path (the title line says so). Rows of whole 128-k steps take
// the pair path where it measured faster: W4A16 at M = 1, W8A8 plain up to M = 16 and packed at M = 1,
// W4A8 up to M = 16 (plain and packed, groups or none);
// SSMKIT_CUDA_PAIR=0 leaves them to the paths below (the title line says so). On sm_90 W4A16 rows of
// whole 128-k steps at 1 <= M <= 16 whose 64-column groups fill one wave (M = 16 at 8192^2) take the group
// path first; SSMKIT_CUDA_GROUP=0 leaves them to the pair path and the ring (the title line says so). On sm_90 the other decode
// rows of W4A16 (M <= 16) and packed W8A8 (2 <= M <= 16) whose grid has a block an SM take the ring path;
// SSMKIT_CUDA_RING=0 leaves them to the CUDA-core GEMV (M <= 4, 16 for W8A8) and the tensor-core decode
// kernel, and SSMKIT_CUDA_GEMV=0 then sends M <= 4 (16 for W8A8) to the decode kernel as well, to
// compare them on the same rows (the title line says which ran). These rows'
// device times are bounded by the host's enqueue of each call (they say so): for the kernels alone,
// `ncu --clock-control none -k regex:"gemm_(pair|group|ring|gemv|packed)" --metrics gpu__time_duration.sum node
// bench/profile-gpu.mjs decode` runs the same shapes.
//
// --profile w8a8|w4a8 makes three calls at 2048 x 2560 x 10240 and exits (for Nsight, skipping two).
//
// Run on the GPU machine: node bench/quant-gpu.mjs [--peers peers.jsonl] [--quick] [--only NAMES] [--decode]
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const s = require('../dist/cjs/index.js');
const quick = process.argv.includes('--quick');
const onlyArg = process.argv.indexOf('--only');
const only = onlyArg > 0 ? new Set(process.argv[onlyArg + 1].split(',')) : null;
const decodeOnly = process.argv.includes('--decode'); // only the rows of M <= 16
const wanted = (name) => (decodeOnly ? name !== 'w8a8' && name !== 'hadamard' : only === null || only.has(name));
const DEV = 'cuda:0';
const BW = 4.2e12; // bytes/s: the copy bandwidth measured on the H200 (read + write)
const INT8_PEAK = 1979e12; // dense int8 ops/s of the H100/H200 SXM tensor cores (datasheet)

if (s.backend().name !== 'cuda') {
  console.error(`quant-gpu: the CUDA backend did not load (${s.backend().fallbackReason ?? 'unknown reason'})`);
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------------
// Peers: peers.py lines, or the issue's numbers.

const ISSUE = {
  'w8a8 2048x2560x10240': ['torch._int_mm 181 us (int32 out); bf16 cuBLAS 166 us', 181],
  'w8a8 8192x8192x8192': ['torch._int_mm 1227 us', 1227],
  'w8a8 1x2560x10240': ['bf16 cuBLAS ~30 us', 30],
  'w8a8 16x2560x10240': ['bf16 cuBLAS ~30 us', 30],
  'w4a16 1x2560x10240': ['bf16 cuBLAS 30 us; tinygemm 23 us', 23],
  'w4a16 16x8192x8192': ['bf16 cuBLAS 48 us; tinygemm 91 us', 48],
  'w4a8 2048x2560x10240': ['our W8A8 (row above)', undefined],
};
const peers = {};
const peersArg = process.argv.indexOf('--peers');
if (peersArg > 0) {
  for (const line of readFileSync(process.argv[peersArg + 1], 'utf8').split('\n')) {
    if (!line.trim().startsWith('{')) continue;
    const r = JSON.parse(line);
    if (r.us === undefined) continue;
    peers[`${r.kind} ${r.M}x${r.K}x${r.N}`] = r.us;
    if (r.kind === 'copy') peers.copy = r;
  }
}
function peerOf(key, M, K, N) {
  const shape = `${M}x${K}x${N}`;
  const found = [];
  for (const kind of ['int_mm_int8', 'mm_bf16', 'mm_bf16_decode', 'w4a16_tinygemm']) {
    const us = peers[`${kind} ${shape}`];
    if (us !== undefined) found.push([`${kind} ${us.toFixed(1)} us`, us]);
  }
  if (found.length > 0) {
    const best = Math.min(...found.map((f) => f[1]));
    return [`${found.map((f) => f[0]).join('; ')} (peers.py)`, best];
  }
  return ISSUE[key] ? [`${ISSUE[key][0]} (issue)`, ISSUE[key][1]] : ['-', undefined];
}

// ---------------------------------------------------------------------------------------------------
// Helpers

let seed = 0x2545f491;
function rnd() {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const ints = (n, lo, hi) => {
  const a = new Int8Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + Math.floor(rnd() * (hi - lo + 1));
  return a;
};
const f32 = (n, lo, hi) => {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + rnd() * (hi - lo);
  return a;
};
const randomBytes = (n) => {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i += 4) {
    const v = Math.floor(rnd() * 4294967296);
    a[i] = v & 255;
    a[i + 1] = (v >>> 8) & 255;
    a[i + 2] = (v >>> 16) & 255;
    a[i + 3] = v >>> 24;
  }
  return a;
};
const dev = (t) => t.toSync(DEV);
const int8Dev = (n, k) => dev(new s.Tensor('int8', ints(n * k, -127, 127), [n, k]));
const int4Dev = (n, k) => dev(new s.Tensor('int4', randomBytes(n * Math.ceil(k / 2)), [n, k]));
const floatDev = (shape, dtype, lo = -1, hi = 1) =>
  dev(
    new s.Tensor(
      'float32',
      f32(
        shape.reduce((a, b) => a * b, 1),
        lo,
        hi,
      ),
      shape,
    ).cast(dtype),
  );

function maxRelErr(got, want) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Number(got[i]) - Number(want[i]);
    if (Number.isNaN(d)) return Number.POSITIVE_INFINITY;
    num += d * d;
    den += Number(want[i]) ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}
const toF32 = (t) => (t.dtype === 'float32' ? t.dataSync() : t.cast('float32').dataSync());

/**
 * Seconds per call: `reps` repeats of `iters` enqueued calls between two synchronizeSync(), after
 * warm-up; the median repeat. `call(i)` enqueues one call and returns its output (disposed here, so
 * that the stream-ordered pool hands the same block back).
 */
function timeIt(call, targetMs = quick ? 20 : 60, reps = quick ? 5 : 9) {
  for (let i = 0; i < 3; i++) call(i).dispose();
  s.synchronizeSync(DEV);
  let iters = 1;
  for (;;) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iters; i++) call(i).dispose();
    s.synchronizeSync(DEV);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (ms >= targetMs / 4 || iters >= 1 << 16) {
      iters = Math.max(iters, Math.ceil((iters * targetMs) / Math.max(ms, 1e-3)));
      break;
    }
    iters *= 4;
  }
  const runs = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iters; i++) call(i).dispose();
    s.synchronizeSync(DEV);
    runs.push(Number(process.hrtime.bigint() - t0) / 1e9 / iters);
  }
  runs.sort((a, b) => a - b);
  return runs[Math.floor(runs.length / 2)];
}

/**
 * Device seconds per call, free of the host's enqueue cost: the stream is first given `busy(count)` (count
 * big GEMMs, about 0.4 ms each), behind which the host enqueues `n` calls; the calls then run back to back
 * on the device, and (total - busy alone) / n is their device time. The busy work starts at 4 GEMMs and
 * doubles (up to 64) while the host's enqueue of the n calls takes more than 90% of it, so that the device
 * never waits for the host (hidden: false if even 64 did not cover it; the time is then an upper bound).
 * Also the time of one call alone (synchronize, call, synchronize): the latency a decode step sees.
 * Medians of several repeats.
 */
function deviceTime(call, busy, n = 200, reps = quick ? 3 : 7) {
  const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
  for (let i = 0; i < 3; i++) call(i).dispose();
  let count = 4;
  let busyAlone;
  let total;
  let enqueueShare;
  for (;;) {
    busyAlone = [];
    total = [];
    enqueueShare = 0;
    for (let r = 0; r < reps; r++) {
      s.synchronizeSync(DEV);
      let t0 = process.hrtime.bigint();
      busy(count);
      s.synchronizeSync(DEV);
      busyAlone.push(Number(process.hrtime.bigint() - t0) / 1e9);
      t0 = process.hrtime.bigint();
      busy(count);
      for (let i = 0; i < n; i++) call(i).dispose();
      const enqueued = Number(process.hrtime.bigint() - t0) / 1e9;
      s.synchronizeSync(DEV);
      const t = Number(process.hrtime.bigint() - t0) / 1e9;
      total.push(t);
      enqueueShare = Math.max(enqueueShare, enqueued / busyAlone[r]);
    }
    if (enqueueShare < 0.9 || count >= 64) break;
    count *= 2;
  }
  const alone = [];
  for (let r = 0; r < (quick ? 10 : 30); r++) {
    s.synchronizeSync(DEV);
    const t0 = process.hrtime.bigint();
    call(r).dispose();
    s.synchronizeSync(DEV);
    alone.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return { device: (median(total) - median(busyAlone)) / n, alone: median(alone), hidden: enqueueShare < 0.9 };
}

/** Device work to queue decode calls behind: `count` W8A8 8192 x 4096 x 8192 GEMMs (~0.4 ms each). */
function makeBusy() {
  const a = int8Dev(8192, 4096);
  const w = int8Dev(8192, 4096);
  const busy = (count) => {
    for (let i = 0; i < count; i++) s.gemmW8A8Sync(a, w, 1, 1, { outDtype: 'bfloat16' }).dispose();
  };
  busy.dispose = () => {
    a.dispose();
    w.dispose();
  };
  return busy;
}
let busyWork;

function reportDevice(label, call, floorUs) {
  const d = deviceTime(call, busyWork);
  const note = d.hidden ? '' : ' (the host did not finish enqueueing behind the busy work: an upper bound)';
  console.log(
    `    ${label}: device ${(d.device * 1e6).toFixed(1)} us per call back to back${note}, ${((floorUs / (d.device * 1e6)) * 100).toFixed(0)}% of the floor; one call alone ${(d.alone * 1e6).toFixed(1)} us`,
  );
  rows.push({ label: `${label}, device time`, us: d.device * 1e6, floorUs, floorWhat: '', peerText: '-', peerUs: undefined });
}

// ---------------------------------------------------------------------------------------------------
// 1. Results first: every path against the CPU backend on small cases.

function checkAgainstCpu() {
  const cases = [];
  const cpu = (t) => t.toSync('cpu');
  // [label, M, K, N, groupSize]: skinny (M <= 64), tiled (M > 64), simt (K unaligned).
  for (const [M, K, N] of [
    [1, 512, 300],
    [3, 2560, 200],
    [16, 1024, 130],
    [100, 640, 200],
    [300, 1152, 520],
    [1100, 656, 4100],
    [7, 100, 33],
  ]) {
    const a = int8Dev(M, K);
    const w8 = int8Dev(N, K);
    const w4 = int4Dev(N, K);
    const as = floatDev([M], 'float32', 0.001, 0.01);
    const ws = floatDev([N], 'float32', 0.001, 0.01);
    const bias = floatDev([N], 'float32');
    for (const [op, w] of [
      ['gemmW8A8', w8],
      ['gemmW4A8', w4],
    ]) {
      const got = s[`${op}Sync`](a, w, as, ws, { bias, outDtype: 'bfloat16' });
      const want = s[`${op}Sync`](cpu(a), cpu(w), cpu(as), cpu(ws), { bias: cpu(bias), outDtype: 'bfloat16' });
      cases.push([`${op} ${M}x${K}x${N}`, maxRelErr(toF32(got), toF32(want)), 0]);
      if (M > 1024) continue; // the multi-tile case checks the wgmma kernel only
      const pw = s.packWeightsSync(w);
      const gotPacked = s[`${op}Sync`](a, pw, as, ws, { bias, outDtype: 'bfloat16' });
      cases.push([`${op} ${M}x${K}x${N} packed`, maxRelErr(toF32(gotPacked), toF32(want)), 0]);
      pw.dispose();
    }
    if (M > 1024) continue;
    if (K % 128 === 0) {
      const wsg = floatDev([N, K / 128], 'float32', 0.001, 0.01);
      const got = s.gemmW4A8Sync(a, w4, as, wsg, { groupSize: 128 });
      const want = s.gemmW4A8Sync(cpu(a), cpu(w4), cpu(as), cpu(wsg), { groupSize: 128 });
      cases.push([`gemmW4A8 ${M}x${K}x${N} groups of 128`, maxRelErr(toF32(got), toF32(want)), 1e-6]);
    }
    for (const dtype of ['bfloat16', 'float16', 'float32']) {
      const gs = K % 128 === 0 ? 128 : K;
      const x = floatDev([M, K], dtype);
      const sc = floatDev([N, K / gs], dtype, 0.01, 0.1);
      const got = s.gemmW4A16Sync(x, w4, sc, { groupSize: gs });
      const want = s.gemmW4A16Sync(cpu(x), cpu(w4), cpu(sc), { groupSize: gs });
      cases.push([`gemmW4A16 ${dtype} ${M}x${K}x${N}`, maxRelErr(toF32(got), toF32(want)), dtype === 'float32' ? 1e-5 : 1e-2]);
      const pw = s.packWeightsSync(w4, { groupSize: gs });
      const gotPacked = s.gemmW4A16Sync(x, pw, sc, { groupSize: gs });
      cases.push([
        `gemmW4A16 ${dtype} ${M}x${K}x${N} packed`,
        maxRelErr(toF32(gotPacked), toF32(want)),
        dtype === 'float32' ? 1e-5 : 1e-2,
      ]);
      pw.dispose();
    }
  }
  // Rows past one wave of blocks (the staged kernel loops over rows): the same bits as the CPU.
  for (const [rows_, n] of [
    [4, 5120],
    [1500, 5120],
  ]) {
    const x = floatDev([rows_, n], 'bfloat16');
    const h = s.hadamardSync(x, { scale: 1 / Math.sqrt(n) });
    const want = s.hadamardSync(cpu(x), { scale: 1 / Math.sqrt(n) });
    cases.push([`hadamard bf16 ${rows_}x${n}`, maxRelErr(toF32(h), toF32(want)), 0]);
    x.dispose();
  }
  let ok = true;
  for (const [label, err, tol] of cases) {
    const pass = err <= tol;
    ok &&= pass;
    console.log(`check ${pass ? 'ok  ' : 'FAIL'} ${label}: relative L2 error vs CPU ${err.toExponential(2)} (tolerance ${tol})`);
  }
  if (!ok) {
    console.error('quant-gpu: results differ from the CPU backend; not timing anything');
    process.exit(1);
  }
  console.log('all results match the CPU backend, starting benchmarks\n');
}

// ---------------------------------------------------------------------------------------------------
// 2. Timing.

const rows = [];
function report(label, us, floorUs, floorWhat, peer) {
  const [peerText, peerUs] = peer;
  rows.push({ label, us, floorUs, floorWhat, peerText, peerUs });
  const frac = ((floorUs / us) * 100).toFixed(0);
  const vs = peerUs ? `; peer / ours = ${(peerUs / us).toFixed(2)}` : '';
  console.log(
    `${label}: ${us.toFixed(1)} us; floor ${floorUs.toFixed(1)} us (${floorWhat}), ${frac}% of it; peer ${peerText}${vs}`,
  );
}

/** Copies of a weight so that the rotation reads more than the L2 holds. */
function copiesFor(bytes, make) {
  const count = Math.max(1, Math.min(16, Math.ceil((200 * 2 ** 20) / bytes)));
  return Array.from({ length: count }, make);
}

function benchW8A8(M, K, N, outDtype = 'bfloat16') {
  const a = int8Dev(M, K);
  const ws = copiesFor(N * K, () => int8Dev(N, K));
  const as = floatDev([M], 'float32', 0.001, 0.01);
  const wsc = floatDev([N], 'float32', 0.001, 0.01);
  const us = timeIt((i) => s.gemmW8A8Sync(a, ws[i % ws.length], as, wsc, { outDtype })) * 1e6;
  const ops = 2 * M * N * K;
  const bytes = M * K + N * K + M * N * (outDtype === 'float32' ? 4 : 2);
  const floor = Math.max(ops / INT8_PEAK, bytes / BW) * 1e6;
  const what =
    ops / INT8_PEAK > bytes / BW
      ? `${(ops / 1e9).toFixed(1)} GOP at ${INT8_PEAK / 1e12} TOPS`
      : `${(bytes / 1e6).toFixed(1)} MB at 4.2 TB/s`;
  report(`W8A8 ${outDtype} out, M x K x N = ${M} x ${K} x ${N}`, us, floor, what, peerOf(`w8a8 ${M}x${K}x${N}`, M, K, N));
  console.log(`    ${((ops / us) * 1e-6).toFixed(0)} TOPS`);
  if (M <= 16) {
    reportDevice(
      `W8A8 M x K x N = ${M} x ${K} x ${N}`,
      (i) => s.gemmW8A8Sync(a, ws[i % ws.length], as, wsc, { outDtype }),
      floor,
    );
    const packed = ws.map((w) => s.packWeightsSync(w));
    reportDevice(
      `W8A8 packed M x K x N = ${M} x ${K} x ${N}`,
      (i) => s.gemmW8A8Sync(a, packed[i % packed.length], as, wsc, { outDtype }),
      floor,
    );
    for (const p of packed) p.dispose();
  }
  for (const t of [a, as, wsc, ...ws]) t.dispose();
  return us;
}

function benchW4A8(M, K, N, w8a8Us, groupSize) {
  const a = int8Dev(M, K);
  const ws = copiesFor((N * K) / 2, () => int4Dev(N, K));
  const as = floatDev([M], 'float32', 0.001, 0.01);
  const wsc = floatDev(groupSize ? [N, K / groupSize] : [N], 'float32', 0.001, 0.01);
  const opts = groupSize ? { outDtype: 'bfloat16', groupSize } : { outDtype: 'bfloat16' };
  const groups = groupSize ? `, groups of ${groupSize}` : '';
  const us = timeIt((i) => s.gemmW4A8Sync(a, ws[i % ws.length], as, wsc, opts)) * 1e6;
  const ops = 2 * M * N * K;
  const floor = Math.max(ops / INT8_PEAK, (M * K + (N * K) / 2 + M * N * 2) / BW) * 1e6;
  const what = M > 64 ? 'int8 tensor-core peak' : 'int4 weight bytes at 4.2 TB/s';
  const peer = w8a8Us === undefined ? ['our W8A8 (not run)', undefined] : [`our W8A8 ${w8a8Us.toFixed(1)} us`, w8a8Us];
  report(`W4A8 bf16 out, M x K x N = ${M} x ${K} x ${N}${groups}`, us, floor, what, peer);
  if (M <= 16) {
    const call = (w) => (i) => s.gemmW4A8Sync(a, w[i % w.length], as, wsc, opts);
    reportDevice(`W4A8 M x K x N = ${M} x ${K} x ${N}${groups}`, call(ws), floor);
    const packed = ws.map((w) => s.packWeightsSync(w, groupSize ? { groupSize } : undefined));
    reportDevice(`W4A8 packed M x K x N = ${M} x ${K} x ${N}${groups}`, call(packed), floor);
    for (const p of packed) p.dispose();
  }
  for (const t of [a, as, wsc, ...ws]) t.dispose();
}

function benchW4A16(M, K, N) {
  const x = floatDev([M, K], 'bfloat16');
  const ws = copiesFor((N * K) / 2, () => int4Dev(N, K));
  const sc = floatDev([N, K / 128], 'bfloat16', 0.01, 0.1);
  const us = timeIt((i) => s.gemmW4A16Sync(x, ws[i % ws.length], sc, { groupSize: 128 })) * 1e6;
  const bytes = (N * K) / 2 + (N * K * 2) / 128 + M * K * 2 + M * N * 2;
  report(
    `W4A16 bf16, M x K x N = ${M} x ${K} x ${N}, groups of 128`,
    us,
    (bytes / BW) * 1e6,
    `${(bytes / 1e6).toFixed(1)} MB at 4.2 TB/s`,
    peerOf(`w4a16 ${M}x${K}x${N}`, M, K, N),
  );
  if (M <= 16) {
    const call = (w) => (i) => s.gemmW4A16Sync(x, w[i % w.length], sc, { groupSize: 128 });
    reportDevice(`W4A16 M x K x N = ${M} x ${K} x ${N}`, call(ws), (bytes / BW) * 1e6);
    const packed = ws.map((w) => s.packWeightsSync(w, { groupSize: 128 }));
    const pus = timeIt(call(packed)) * 1e6;
    console.log(`    W4A16 packed: ${pus.toFixed(1)} us per call as the host sees it`);
    reportDevice(`W4A16 packed M x K x N = ${M} x ${K} x ${N}`, call(packed), (bytes / BW) * 1e6);
    for (const p of packed) p.dispose();
  }
  for (const t of [x, sc, ...ws]) t.dispose();
}

function benchHadamard() {
  const [rows_, n] = [8 * 2048, 5120];
  const x = floatDev([rows_, n], 'bfloat16');
  const bytes = 2 * rows_ * n * 2;
  const copyUs = timeIt(() => x.toSync(DEV)) * 1e6;
  const us = timeIt(() => s.hadamardSync(x, { scale: 1 / Math.sqrt(n) })) * 1e6;
  report(
    `hadamard bf16, 8 x 2048 tokens x ${n}`,
    us,
    (bytes / BW) * 1e6,
    `${(bytes / 1e6).toFixed(0)} MB read + written at 4.2 TB/s`,
    [`device copy of the same bytes ${copyUs.toFixed(1)} us (aim <= 1.5x: ${(1.5 * copyUs).toFixed(1)} us)`, copyUs],
  );
  x.dispose();
}

function benchHost() {
  const a = int8Dev(1, 32);
  const w = int8Dev(8, 32);
  const as = floatDev([1], 'float32');
  const ws = floatDev([8], 'float32');
  const us = timeIt(() => s.gemmW8A8Sync(a, w, as, ws)) * 1e6;
  console.log(
    `host: one tiny gemmW8A8Sync call (1 x 32 x 8) takes ${us.toFixed(1)} us per call; rows near this are host-bound\n`,
  );
}

const b = s.backend();
const gemvOff = process.env.SSMKIT_CUDA_GEMV === '0' ? ', SSMKIT_CUDA_GEMV=0 (M <= 16 on the decode kernel)' : '';
const ringOff =
  (process.env.SSMKIT_CUDA_W4A8_SWAP === '0' ? ', SSMKIT_CUDA_W4A8_SWAP=0 (W4A8 on the W8A8 kernel)' : '') +
  (process.env.SSMKIT_CUDA_W4S_MODE === '1' ? ', SSMKIT_CUDA_W4S_MODE=1 (W4A8 waits for all wgmmas each k-tile)' : '') +
  (process.env.SSMKIT_CUDA_W4S_BULK === '0' ? ', SSMKIT_CUDA_W4S_BULK=0 (W4A8 outputs stored by the threads)' : '') +
  (process.env.SSMKIT_CUDA_W4A8_RING === '0' ? ', SSMKIT_CUDA_W4A8_RING=0 (W4A8 int4 widened from registers)' : '');
const decodeRingOff = process.env.SSMKIT_CUDA_RING === '0' ? ', SSMKIT_CUDA_RING=0 (no ring path for the decode rows)' : '';
const pairOff = process.env.SSMKIT_CUDA_PAIR === '0' ? ', SSMKIT_CUDA_PAIR=0 (no pair path for the decode rows)' : '';
const streamOff = process.env.SSMKIT_CUDA_STREAM === '0' ? ', SSMKIT_CUDA_STREAM=0 (no stream path for plain W8A8 rows)' : '';
const groupOff = process.env.SSMKIT_CUDA_GROUP === '0' ? ', SSMKIT_CUDA_GROUP=0 (no group path for W4A16 rows)' : '';
console.log(
  `ssmkit quant-gpu bench: ${b.device ?? 'cuda'} (sm ${b.computeCapability ?? '?'}), node ${process.version}${gemvOff}${ringOff}${decodeRingOff}${pairOff}${streamOff}${groupOff}`,
);
// --profile w8a8|w4a8: three calls at 2048 x 2560 x 10240 and nothing else, for Nsight (--launch-skip 2).
const profileArg = process.argv.indexOf('--profile');
if (profileArg > 0) {
  const kind = process.argv[profileArg + 1];
  const a = int8Dev(2048, 2560);
  const w = kind === 'w4a8' ? int4Dev(10240, 2560) : int8Dev(10240, 2560);
  const as = floatDev([2048], 'float32', 0.001, 0.01);
  const wsc = floatDev([10240], 'float32', 0.001, 0.01);
  const op = kind === 'w4a8' ? s.gemmW4A8Sync : s.gemmW8A8Sync;
  for (let i = 0; i < 3; i++) op(a, w, as, wsc, { outDtype: 'bfloat16' }).dispose();
  s.synchronizeSync(DEV);
  console.log(`profiled ${kind} 2048 x 2560 x 10240 three times`);
  process.exit(0);
}
checkAgainstCpu();
benchHost();
busyWork = makeBusy();
let w8a8Big;
let w8a8Huge;
let w8a8Decode;
let w8a8Decode16;
if (wanted('w8a8')) {
  w8a8Big = benchW8A8(2048, 2560, 10240);
  benchW8A8(2048, 2560, 10240, 'float32');
  w8a8Huge = benchW8A8(8192, 8192, 8192);
}
if (wanted('w8a8-decode')) {
  w8a8Decode = benchW8A8(1, 2560, 10240);
  benchW8A8(4, 2560, 10240);
  w8a8Decode16 = benchW8A8(16, 2560, 10240);
}
if (wanted('w4a16')) {
  benchW4A16(1, 2560, 10240);
  benchW4A16(4, 2560, 10240);
  benchW4A16(16, 8192, 8192);
  benchW4A16(1, 5120, 2560);
  benchW4A16(1, 5120, 192);
}
if (wanted('w4a8')) {
  if (!decodeOnly) {
    benchW4A8(2048, 2560, 10240, w8a8Big);
    benchW4A8(8192, 8192, 8192, w8a8Huge);
  }
  benchW4A8(1, 2560, 10240, w8a8Decode);
  benchW4A8(16, 2560, 10240, w8a8Decode16);
  // The model runner's W4A8 layers: float32 scales a group of 128.
  benchW4A8(1, 2560, 10240, w8a8Decode, 128);
  benchW4A8(16, 2560, 10240, w8a8Decode16, 128);
}
if (wanted('hadamard')) benchHadamard();
busyWork.dispose();

console.log('\n| case | ours (us) | floor (us) | floor / ours | peer | peer / ours |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  const vs = r.peerUs ? `${(r.peerUs / r.us).toFixed(2)}x` : '-';
  console.log(
    `| ${r.label} | ${r.us.toFixed(1)} | ${r.floorUs.toFixed(1)} | ${((r.floorUs / r.us) * 100).toFixed(0)}% | ${r.peerText} | ${vs} |`,
  );
}
