// Benchmark of the selective-scan family on the CUDA backend: the rows of issue 6 (selectiveScan bf16 and
// float32 at batch 8 x dim 5120 x seqlen 2048 and at batch 1 x seqlen 16384, dstate 16; ssdScan bf16 at
// Mamba-2 2.7B's shape; the Mamba-1 decode step at batch 1, 64, 256) plus causalConv1d at the scan's
// shape. It first checks every op against the CPU backend on small random inputs, then times each row:
// synchronize, N calls, synchronize, the median over repeats of the time per call. The floor is the bytes
// every input and output must move once, at 4.2 TB/s. The peer is the anchor measured on this H200 with
// mamba_ssm (its CUDA scan, its Triton SSD and state-update kernels; peers.py does not time these), as
// the issue gives it. Each scan row is timed again with the Mamba-1 kernel's knobs forced side by side:
// the states per thread whose exp2 runs on the FMA pipe (SSMKIT_CUDA_SCAN_POLY=0/1/2: where the MUFU and
// issue limits cross), one thread of 16 states a channel instead of two of 8 (SSMKIT_CUDA_SCAN_LANES=1),
// the number of time chunks (SSMKIT_CUDA_SCAN_CHUNKS: the time-parallel variant,
// chosen by a cost model), the two-thread 8-state kernel's typed form on and off (SSMKIT_CUDA_SCAN_TYPED=1/0,
// alternated) and the previous generic kernel (SSMKIT_CUDA_SCAN_STATES=8/16), and the SSD
// row with the tensor-core kernel's earlier and lean forms and the sequential kernel too
// (SSMKIT_CUDA_SSD=scalar, lean, exact), and each decode row with the state update's forms forced (SSMKIT_CUDA_UPDATE_TILE=1|4|8: batch
// elements a thread) and without programmatic dependent launch (SSMKIT_CUDA_UPDATE_PDL=0). Usage:
// node bench/scan-gpu.mjs [--quick] [--only scan|ssd|update|conv] [--batch 1|64|256] (one op's rows, one
// decode batch, e.g. under a profiler).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const {
  backend,
  causalConv1dSync,
  selectiveScanSync,
  selectiveStateUpdate,
  selectiveStateUpdateSync,
  ssdScanSync,
  synchronize,
  synchronizeSync,
  Tensor,
} = require('../dist/cjs/index.js');

const QUICK = process.argv.includes('--quick');
const ONLY = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
if (ONLY !== undefined && !['scan', 'ssd', 'update', 'conv'].includes(ONLY)) {
  console.error(`scan-gpu: --only takes scan, ssd, update or conv, got ${ONLY}`);
  process.exit(1);
}
const want = (op) => ONLY === undefined || ONLY === op;
// --batch N: only the decode row of that batch (1, 64 or 256), e.g. under a profiler.
const BATCH = process.argv.includes('--batch') ? Number(process.argv[process.argv.indexOf('--batch') + 1]) : undefined;
const BW = 4.2e12; // bytes/s, the copy bandwidth measured on this H200 (peers.py copy)
const ESIZE = { float32: 4, bfloat16: 2, float16: 2 };

const info = backend();
if (info.name !== 'cuda') {
  console.error(`scan-gpu: needs the CUDA backend, got ${info.name}${info.fallbackReason ? ` (${info.fallbackReason})` : ''}`);
  process.exit(1);
}
const DEV = 'cuda:0';
console.log(`machine: ${info.device} (sm ${info.computeCapability}), node ${process.version}`);

// ------------------------------------------------------------------------------------------------------
// Random inputs (never zeros), made as float32 on the host and cast on the device.

let seed = 12345;
function rand() {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

function host(shape, f) {
  const n = shape.reduce((a, b) => a * b, 1);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = f(i);
  return new Tensor('float32', a, shape);
}

function onDevice(t, dtype) {
  const d = t.toSync(DEV);
  if (dtype === 'float32') return d;
  const c = d.cast(dtype);
  d.dispose();
  return c;
}

const normal = () => (rand() + rand() + rand() - 1.5) * 2;

function scanInputs(batch, dim, L, N, dtype, device) {
  const put = (t, dt) => (device === 'cpu' ? (dt === 'float32' ? t : t.cast(dt)) : onDevice(t, dt));
  return {
    u: put(host([batch, dim, L], normal), dtype),
    delta: put(
      host([batch, dim, L], () => rand() * 2 - 3),
      dtype,
    ),
    A: put(
      host([dim, N], (i) => -(1 + (i % N)) * (0.5 + rand())),
      'float32',
    ),
    B: put(host([batch, 1, N, L], normal), dtype),
    C: put(host([batch, 1, N, L], normal), dtype),
    D: put(host([dim], normal), 'float32'),
    z: put(host([batch, dim, L], normal), dtype),
    deltaBias: put(
      host([dim], () => rand() - 0.5),
      'float32',
    ),
  };
}

function ssdInputs(batch, L, H, P, G, N, dtype, device) {
  const put = (t, dt) => (device === 'cpu' ? (dt === 'float32' ? t : t.cast(dt)) : onDevice(t, dt));
  return {
    x: put(host([batch, L, H, P], normal), dtype),
    dt: put(
      host([batch, L, H], () => rand() * 2 - 3),
      dtype,
    ),
    A: put(
      host([H], () => -(1 + 15 * rand())),
      'float32',
    ),
    B: put(host([batch, L, G, N], normal), dtype),
    C: put(host([batch, L, G, N], normal), dtype),
    D: put(host([H], normal), 'float32'),
    z: put(host([batch, L, H, P], normal), dtype),
    dtBias: put(
      host([H], () => rand() - 0.5),
      'float32',
    ),
  };
}

function updateInputs(batch, dim, N, dtype, device) {
  const put = (t, dt) => (device === 'cpu' ? (dt === 'float32' ? t : t.cast(dt)) : onDevice(t, dt));
  return {
    state: put(host([batch, dim, N], normal), 'float32'),
    x: put(host([batch, dim], normal), dtype),
    dt: put(
      host([batch, dim], () => rand() * 2 - 3),
      dtype,
    ),
    A: put(
      host([dim, N], (i) => -(1 + (i % N))),
      'float32',
    ),
    B: put(host([batch, N], normal), dtype),
    C: put(host([batch, N], normal), dtype),
    D: put(host([dim], normal), 'float32'),
    z: put(host([batch, dim], normal), dtype),
    dtBias: put(
      host([dim], () => rand() - 0.5),
      'float32',
    ),
  };
}

function dispose(o) {
  for (const t of Object.values(o)) t?.dispose?.();
}

// ------------------------------------------------------------------------------------------------------
// Results first: each op on CUDA against the CPU backend.

/** Runs f with the given environment variables set (undefined: unset), restoring them afterwards. */
function setEnv(vars) {
  const prev = {};
  for (const [k, v] of Object.entries(vars)) {
    prev[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = String(v);
  }
  return prev;
}
function withEnvSync(vars, f) {
  const prev = setEnv(vars);
  try {
    return f();
  } finally {
    setEnv(prev);
  }
}
async function withEnv(vars, f) {
  const prev = setEnv(vars);
  try {
    return await f();
  } finally {
    setEnv(prev);
  }
}

function f64(t) {
  const c = t.device === 'cpu' ? t : t.toSync('cpu');
  const f = c.dtype === 'float32' ? c : c.cast('float32');
  return Float64Array.from(f.dataSync());
}

function compare(label, got, want, tol) {
  const a = f64(got);
  const e = f64(want);
  let bad = -1;
  let max = 0;
  for (let i = 0; i < e.length; i++) {
    const err = Math.abs(a[i] - e[i]);
    if (!(err <= tol + tol * Math.abs(e[i])) && bad < 0) bad = i;
    if (!(err <= max)) max = err;
  }
  if (bad >= 0) {
    console.error(`MISMATCH ${label}: index ${bad}: cuda ${a[bad]}, cpu ${e[bad]}; max abs error ${max}`);
    process.exit(1);
  }
  console.log(`  ok ${label} (max abs error ${max.toExponential(2)})`);
}

function checkAll() {
  console.log('checking CUDA against the CPU backend:');
  for (const dtype of ['bfloat16', 'float32']) {
    const tol = dtype === 'float32' ? 6e-4 : 1.6e-2;
    const [b, d, L, N] = [2, 96, 300, 16];
    const keep = seed;
    const c = scanInputs(b, d, L, N, dtype, 'cpu');
    seed = keep;
    const g = scanInputs(b, d, L, N, dtype, DEV);
    const opts = (x) => ({ D: x.D, z: x.z, deltaBias: x.deltaBias, deltaSoftplus: true, returnLastState: true });
    const rc = selectiveScanSync(c.u, c.delta, c.A, c.B, c.C, opts(c));
    const rg = selectiveScanSync(g.u, g.delta, g.A, g.B, g.C, opts(g));
    compare(`selectiveScan ${dtype}`, rg.out, rc.out, tol);
    compare(`selectiveScan ${dtype} lastState`, rg.lastState, rc.lastState, 6e-4);
    // The time-parallel variant (8 chunks) and each FMA-pipe exp2 count, on a long sequence.
    const k0 = seed;
    const lc = scanInputs(1, 64, 4096, N, dtype, 'cpu');
    seed = k0;
    const lg = scanInputs(1, 64, 4096, N, dtype, DEV);
    const lrc = selectiveScanSync(lc.u, lc.delta, lc.A, lc.B, lc.C, opts(lc));
    for (const [chunks, poly, lanes, typed] of [
      ['8', '0', undefined, '0'],
      ['8', '2', undefined, undefined],
      ['8', '1', '1', undefined],
      [undefined, undefined, '1', undefined],
      [undefined, undefined, undefined, '0'],
      ['8', undefined, undefined, '1'],
      [undefined, undefined, undefined, '1'],
    ]) {
      const env = {
        SSMKIT_CUDA_SCAN_CHUNKS: chunks,
        SSMKIT_CUDA_SCAN_POLY: poly,
        SSMKIT_CUDA_SCAN_LANES: lanes,
        SSMKIT_CUDA_SCAN_TYPED: typed,
      };
      const lrg = withEnvSync(env, () => selectiveScanSync(lg.u, lg.delta, lg.A, lg.B, lg.C, opts(lg)));
      const what = `selectiveScan ${dtype} batch 1 seqlen 4096 chunks ${chunks ?? 'auto'} poly ${poly ?? 'auto'} lanes ${lanes ?? 'auto'} typed ${typed ?? 'auto'}`;
      compare(what, lrg.out, lrc.out, tol);
      compare(`${what} lastState`, lrg.lastState, lrc.lastState, 6e-4);
    }

    const s0 = seed;
    const sc = ssdInputs(2, 200, 4, 64, 1, 128, dtype, 'cpu');
    seed = s0;
    const sg = ssdInputs(2, 200, 4, 64, 1, 128, dtype, DEV);
    const so = (x) => ({ D: x.D, z: x.z, dtBias: x.dtBias, dtSoftplus: true, returnFinalStates: true });
    const qc = ssdScanSync(sc.x, sc.dt, sc.A, sc.B, sc.C, so(sc));
    const qg = ssdScanSync(sg.x, sg.dt, sg.A, sg.B, sg.C, so(sg));
    compare(`ssdScan ${dtype}`, qg.out, qc.out, tol);
    compare(`ssdScan ${dtype} finalStates`, qg.finalStates, qc.finalStates, 1e-4);

    const u0 = seed;
    const uc = updateInputs(3, 200, 16, dtype, 'cpu');
    seed = u0;
    const ug = updateInputs(3, 200, 16, dtype, DEV);
    const uo = (x) => ({ D: x.D, z: x.z, dtBias: x.dtBias, dtSoftplus: true });
    const oc = selectiveStateUpdateSync(uc.state, uc.x, uc.dt, uc.A, uc.B, uc.C, uo(uc));
    const og = selectiveStateUpdateSync(ug.state, ug.x, ug.dt, ug.A, ug.B, ug.C, uo(ug));
    compare(`selectiveStateUpdate ${dtype}`, og, oc, tol);
    compare(`selectiveStateUpdate ${dtype} state`, ug.state, uc.state, 1e-4);
    // Each form of the vector kernel (8, 4 or one batch element a thread), batch 9: tiles with a tail.
    for (const tile of ['8', '4', '1']) {
      const t0 = seed;
      const tc = updateInputs(9, 200, 16, dtype, 'cpu');
      seed = t0;
      const tg = updateInputs(9, 200, 16, dtype, DEV);
      const toc = selectiveStateUpdateSync(tc.state, tc.x, tc.dt, tc.A, tc.B, tc.C, uo(tc));
      const tog = withEnvSync({ SSMKIT_CUDA_UPDATE_TILE: tile }, () =>
        selectiveStateUpdateSync(tg.state, tg.x, tg.dt, tg.A, tg.B, tg.C, uo(tg)),
      );
      compare(`selectiveStateUpdate ${dtype} batch 9 tile ${tile}`, tog, toc, tol);
      compare(`selectiveStateUpdate ${dtype} batch 9 tile ${tile} state`, tg.state, tc.state, 1e-4);
    }

    const w = host([d, 4], normal);
    const wc = dtype === 'float32' ? w : w.cast(dtype);
    const cc = causalConv1dSync(c.u, wc, { bias: c.D, activation: 'silu' });
    const cg = causalConv1dSync(g.u, onDevice(w, dtype), { bias: g.D, activation: 'silu' });
    compare(`causalConv1d ${dtype}`, cg.out, cc.out, tol);
  }
  console.log('all results match, starting benchmarks');
}

// ------------------------------------------------------------------------------------------------------
// Timing.

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Median microseconds per call of `f` (which enqueues work), over `repeats` runs of `iters` calls. */
async function time(f, iters, repeats = QUICK ? 3 : 7) {
  for (let i = 0; i < Math.max(2, iters >> 2); i++) f();
  await synchronize(DEV);
  const per = [];
  for (let r = 0; r < repeats; r++) {
    synchronizeSync(DEV);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iters; i++) f();
    synchronizeSync(DEV);
    per.push(Number(process.hrtime.bigint() - t0) / 1e3 / iters);
  }
  return median(per);
}

const rows = [];
function report(name, us, bytes, peerUs, peerName, note = '') {
  const floor = (bytes / BW) * 1e6;
  const row = { name, us, floor, frac: floor / us, peerUs, peerName, speedup: peerUs / us, gbs: bytes / us / 1e3, note };
  rows.push(row);
  console.log(
    `${name.padEnd(62)} ${us.toFixed(1).padStart(9)} us  ${row.gbs.toFixed(0).padStart(5)} GB/s  floor ${floor.toFixed(1).padStart(7)} us (${(100 * row.frac).toFixed(0).padStart(3)}%)  ` +
      `peer ${peerUs === undefined ? '-' : `${peerUs} us`} ${peerUs === undefined ? '' : `(x${row.speedup.toFixed(2)})`} ${note}`,
  );
}

async function benchScan(label, batch, dim, L, N, dtype, anchor, chunkCounts = []) {
  const g = scanInputs(batch, dim, L, N, dtype, DEV);
  const es = ESIZE[dtype];
  const bytes = 4 * batch * dim * L * es + 2 * batch * N * L * es + dim * N * 4 + 3 * dim * 4;
  const out = [];
  const call = () => {
    const r = selectiveScanSync(g.u, g.delta, g.A, g.B, g.C, { D: g.D, z: g.z, deltaBias: g.deltaBias, deltaSoftplus: true });
    out.push(r.out);
    if (out.length > 4) out.shift().dispose();
  };
  const iters = Math.max(3, Math.round(20000 / ((batch * dim * L) / 1e5)));
  report(label, await time(call, Math.min(iters, 20)), bytes, anchor, 'mamba_ssm CUDA');
  const short = label.split(',').slice(0, 2).join(',');
  const variants = [
    // The typed form of the two-thread 8-state kernel and the run-time-dtype form, alternated (A/B).
    ...[1, 0, 1, 0].map((t) => [{ SSMKIT_CUDA_SCAN_TYPED: t }, `${short}, typed ${t}`, '(SSMKIT_CUDA_SCAN_TYPED)']),
    ...[0, 1, 2].map((p) => [{ SSMKIT_CUDA_SCAN_POLY: p }, `${short}, poly ${p}`, '(FMA-pipe exp2 states forced)']),
    ...[0, 1].map((p) => [
      { SSMKIT_CUDA_SCAN_LANES: 1, SSMKIT_CUDA_SCAN_POLY: p },
      `${short}, 1 x 16 states, poly ${p}`,
      '(one thread of 16 states a channel forced)',
    ]),
    ...chunkCounts.flatMap((k) =>
      [1, 0].map((t) => [
        { SSMKIT_CUDA_SCAN_CHUNKS: k, SSMKIT_CUDA_SCAN_TYPED: t },
        `${short}, ${k} chunks, typed ${t}`,
        '(time chunks forced)',
      ]),
    ),
    ...[16, 8].map((s) => [{ SSMKIT_CUDA_SCAN_STATES: s }, `${short}, generic kernel ${s} states`, '(previous kernel)']),
  ];
  for (const [env, name, note] of variants) {
    const us = await withEnv(env, () => time(call, 5, 3));
    report(`  ${name}`, us, bytes, anchor, 'mamba_ssm CUDA', note);
  }
  for (const t of out) t.dispose();
  dispose(g);
}

async function benchSsd(label, batch, L, H, P, G, N, dtype, anchor) {
  const g = ssdInputs(batch, L, H, P, G, N, dtype, DEV);
  const es = ESIZE[dtype];
  const bytes = 3 * batch * L * H * P * es + 2 * batch * L * G * N * es + batch * L * H * es;
  const out = [];
  const call = () => {
    const r = ssdScanSync(g.x, g.dt, g.A, g.B, g.C, { chunkSize: 256, D: g.D, z: g.z, dtBias: g.dtBias, dtSoftplus: true });
    out.push(r.out);
    if (out.length > 4) out.shift().dispose();
  };
  report(label, await time(call, 5), bytes, anchor, 'mamba_ssm Triton');
  // The tensor-core kernel's other forms (the same bits): the earlier one (scalar fragment loads) and the
  // lean one (each warp computing its own M and x * w; the default is the shared-M form), then the
  // default again.
  for (const [form, what] of [
    ['scalar', 'earlier form'],
    ['lean', 'lean form'],
  ]) {
    await withEnv({ SSMKIT_CUDA_SSD: form }, async () =>
      report(
        `  ssdScan ${dtype}, tensor-core kernel, ${what}`,
        await time(call, 5),
        bytes,
        anchor,
        'mamba_ssm Triton',
        `(SSMKIT_CUDA_SSD=${form})`,
      ),
    );
  }
  report(`  ssdScan ${dtype}, default form again`, await time(call, 5), bytes, anchor, 'mamba_ssm Triton');
  // The sequential float32 kernel that serves other dtypes and shapes, for comparison.
  process.env.SSMKIT_CUDA_SSD = 'exact';
  try {
    report(
      `  ssdScan ${dtype}, sequential kernel`,
      await time(call, 2, 3),
      bytes,
      anchor,
      'mamba_ssm Triton',
      '(SSMKIT_CUDA_SSD=exact)',
    );
  } finally {
    delete process.env.SSMKIT_CUDA_SSD;
  }
  for (const t of out) t.dispose();
  dispose(g);
}

async function benchUpdate(batch, dim, N, dtype, anchor) {
  const g = updateInputs(batch, dim, N, dtype, DEV);
  const es = ESIZE[dtype];
  const bytes = 2 * batch * dim * N * 4 + 4 * batch * dim * es + 2 * batch * N * es + dim * N * 4 + 3 * dim * 4;
  const out = [];
  // A call from Node, launch included: the Promise-returning op, as a decode loop calls it.
  const call = () => {
    out.push(selectiveStateUpdateSync(g.state, g.x, g.dt, g.A, g.B, g.C, { D: g.D, z: g.z, dtBias: g.dtBias, dtSoftplus: true }));
    if (out.length > 64) out.shift().dispose();
  };
  // The JavaScript of a call (validation, the Node-API wrapper) takes a few thousand calls to reach its
  // optimized code: 2000 calls first, so that the first row does not carry that one-time cost (the
  // default row is timed again after the forced forms to show it is gone).
  for (let i = 0; i < 2000; i++) call();
  await synchronize(DEV);
  report(
    `selectiveStateUpdate ${dtype}, batch ${batch}, dim ${dim}, dstate ${N}`,
    await time(call, 200),
    bytes,
    anchor,
    'Triton (from Python)',
  );
  const asyncCall = async () => {
    out.push(
      await selectiveStateUpdate(g.state, g.x, g.dt, g.A, g.B, g.C, { D: g.D, z: g.z, dtBias: g.dtBias, dtSoftplus: true }),
    );
    if (out.length > 64) out.shift().dispose();
  };
  for (let i = 0; i < 1000; i++) await asyncCall();
  await synchronize(DEV);
  const per = [];
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 200; i++) await asyncCall();
    await synchronize(DEV);
    per.push(Number(process.hrtime.bigint() - t0) / 1e3 / 200);
  }
  report(`  same, awaited async calls`, median(per), bytes, anchor, 'Triton (from Python)');
  // Each form of the vector kernel forced (SSMKIT_CUDA_UPDATE_TILE: 1, 4 or 8 batch elements a thread).
  for (const tile of ['1', '4', '8']) {
    await withEnv({ SSMKIT_CUDA_UPDATE_TILE: tile }, async () =>
      report(
        `  same, tile ${tile}`,
        await time(call, 200),
        bytes,
        anchor,
        'Triton (from Python)',
        `(SSMKIT_CUDA_UPDATE_TILE=${tile})`,
      ),
    );
  }
  // The default form launched without programmatic dependent launch (each kernel waits for the one before
  // it to finish before its blocks are dispatched).
  await withEnv({ SSMKIT_CUDA_UPDATE_PDL: '0' }, async () =>
    report(`  same, plain launch`, await time(call, 200), bytes, anchor, 'Triton (from Python)', '(SSMKIT_CUDA_UPDATE_PDL=0)'),
  );
  report(`  same, default form again`, await time(call, 200), bytes, anchor, 'Triton (from Python)');
  for (const t of out) t.dispose();
  dispose(g);
}

async function benchConv(batch, dim, L, W, dtype) {
  const x = onDevice(host([batch, dim, L], normal), dtype);
  const w = onDevice(host([dim, W], normal), dtype);
  const bias = onDevice(host([dim], normal), 'float32');
  const es = ESIZE[dtype];
  const bytes = 2 * batch * dim * L * es + dim * W * es + dim * 4;
  const out = [];
  const call = () => {
    out.push(causalConv1dSync(x, w, { bias, activation: 'silu' }).out);
    if (out.length > 4) out.shift().dispose();
  };
  report(
    `causalConv1d ${dtype}, batch ${batch}, dim ${dim}, seqlen ${L}, width ${W}, silu`,
    await time(call, 10),
    bytes,
    undefined,
    '-',
  );
  for (const t of out) t.dispose();
  for (const t of [x, w, bias]) t.dispose();
}

checkAll();
const sl = QUICK ? 512 : 2048;
if (want('scan')) {
  await benchScan(
    `selectiveScan bf16, batch 8, dim 5120, seqlen ${sl}, dstate 16, var B/C, z, D, softplus`,
    8,
    5120,
    sl,
    16,
    'bfloat16',
    1495,
  );
  await benchScan(
    `selectiveScan f32, batch 8, dim 5120, seqlen ${sl}, dstate 16, var B/C, z, D, softplus`,
    8,
    5120,
    sl,
    16,
    'float32',
    2908,
  );
  await benchScan(
    `selectiveScan bf16, batch 1, dim 5120, seqlen ${QUICK ? 4096 : 16384}, dstate 16, var B/C, z, D, softplus`,
    1,
    5120,
    QUICK ? 4096 : 16384,
    16,
    'bfloat16',
    1884,
    [1, 4, 8, 12, 16],
  );
}
if (want('ssd')) {
  await benchSsd(
    `ssdScan bf16, batch 8, seqlen ${sl}, 80 heads x 64, dstate 128, chunk 256, z, D`,
    8,
    sl,
    80,
    64,
    1,
    128,
    'bfloat16',
    1565,
  );
}
if (want('update')) {
  for (const [b, anchor] of [
    [1, 117],
    [64, 178],
    [256, 187],
  ]) {
    if (BATCH === undefined || BATCH === b) await benchUpdate(b, 5120, 16, 'bfloat16', anchor);
  }
}
if (want('conv')) {
  await benchConv(8, 5120, sl, 4, 'bfloat16');
}

console.log('\n| case | ssmkit (us) | floor at 4.2 TB/s (us) | of floor | peer (us) | vs peer |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| ${r.name.trim()} ${r.note} | ${r.us.toFixed(1)} | ${r.floor.toFixed(1)} | ${(100 * r.frac).toFixed(0)}% | ` +
      `${r.peerUs === undefined ? '-' : `${r.peerUs} (${r.peerName}, anchor)`} | ${r.peerUs === undefined ? '-' : `x${r.speedup.toFixed(2)}`} |`,
  );
}
