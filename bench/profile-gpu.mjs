// Nsight driver for the CUDA kernels measured in bench/RESULTS.md: runs one op twice at its bench shape
// and exits, so that `ncu --clock-control none --set full -k regex:NAME -c N node bench/profile-gpu.mjs
// MODE` profiles exactly those launches. MODE: scan (selectiveScan bf16 b8 d5120 L2048 N16, variable B/C,
// z, D, softplus), scan1 (the same at batch 1, L16384), ssd (ssdScan bf16 b8 L2048 80x64 N128 chunk
// 256, z, D), fft1k (fftConv bf16 8 x 768 x 1024, D), fft4k (8 x 768 x 4096), fft16k (2 x 768 x 16384),
// fft64k (1 x 768 x 65536), w4a16 (gemmW4A16 M=1
// 2560 x 10240 groups of 128, packed), w4a16m16 (M=16 8192 x 8192), decode (quant-gpu.mjs --decode's packed
// rows: W4A16 M=1 2560 x 10240, M=4, M=16 8192 x 8192, M=1 5120 x 2560 and 5120 x 192; W8A8 M=1, 4 and 16 at
// 2560 x 10240; then plain weights: W4A16 M=1 2560 x 10240, W8A8 M=1, 4, 8, 9 and 16), decode-k (W4A16 M=1 at 10240 columns, k = 256 .. 5120), hadamard (bf16 16384 x 5120),
// group (packed W4A16 rows at 8192 columns: M = 1, 2, 4, 8, 16 at k = 8192, then 16 at k = 2560 and 16384;
// M = 4 and 16 at 2560 x 10240), group-plain (the same rows with plain weights),
// gemv (linear, one bfloat16 row on bfloat16 panels, at Mamba-2.8B's decode widths: in_proj 2560 -> 10240,
// out_proj 5120 -> 2560, x_proj 5120 -> 192, dt_proj 160 -> 5120).
// Run on the GPU machine with SSMKIT_BACKEND=cuda.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const s = require('../dist/cjs/index.js');
const nn = require('../dist/cjs/ops/nn.js');
const dev = 'cuda:0';
let seed = 1;
const r = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
function t(shape, dtype, f = r) {
  const n = shape.reduce((a, b) => a * b, 1);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = f();
  const d = new s.Tensor('float32', a, shape).toSync(dev);
  return dtype === 'float32' ? d : d.cast(dtype);
}
// Random int4 weights (n, k), packed in groups of 128 unless plain, and one W4A16 call (m, k) x (n, k)^T
// twice.
function int4(n, k, plain = false) {
  const bytes = new Uint8Array((n * k) / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (Math.random() * 256) | 0;
  const w = new s.Tensor('int4', bytes, [n, k]).toSync(dev);
  return plain ? w : s.packWeightsSync(w, { groupSize: 128 });
}
function w4a16Row(m, k, n, plain = false) {
  const x = t([m, k], 'bfloat16');
  const w = int4(n, k, plain);
  const sc = t([n, k / 128], 'bfloat16', () => 0.01 + Math.abs(r()) * 0.05);
  rep(() => s.gemmW4A16Sync(x, w, sc, { groupSize: 128 }).dispose());
}
const mode = process.argv[2];
const FFT_SHAPES = { fft1k: [8, 768, 1024], fft4k: [8, 768, 4096], fft16k: [2, 768, 16384], fft64k: [1, 768, 65536] };
const rep = (f) => {
  for (let i = 0; i < 2; i++) f();
  s.synchronizeSync(dev);
};
if (mode === 'scan' || mode === 'scan1') {
  const [b, d, L, N] = mode === 'scan' ? [8, 5120, 2048, 16] : [1, 5120, 16384, 16];
  const u = t([b, d, L], 'bfloat16'),
    dl = t([b, d, L], 'bfloat16', () => r() * 0.5 - 1);
  const A = t([d, N], 'float32', () => -1 - Math.abs(r()) * 8),
    B = t([b, 1, N, L], 'bfloat16'),
    C = t([b, 1, N, L], 'bfloat16');
  const D = t([d], 'float32'),
    z = t([b, d, L], 'bfloat16'),
    db = t([d], 'float32');
  rep(() => s.selectiveScanSync(u, dl, A, B, C, { D, z, deltaBias: db, deltaSoftplus: true }).out.dispose());
} else if (mode === 'ssd') {
  const [b, L, H, P, N] = [8, 2048, 80, 64, 128];
  const x = t([b, L, H, P], 'bfloat16'),
    dt = t([b, L, H], 'bfloat16', () => Math.abs(r()) * 0.1),
    A = t([H], 'float32', () => -Math.abs(r()) - 0.5);
  const B = t([b, L, 1, N], 'bfloat16'),
    C = t([b, L, 1, N], 'bfloat16'),
    z = t([b, L, H, P], 'bfloat16'),
    D = t([H], 'float32');
  rep(() => s.ssdScanSync(x, dt, A, B, C, { chunkSize: 256, D, z }).out.dispose());
} else if (mode in FFT_SHAPES) {
  const [b, H, L] = FFT_SHAPES[mode];
  const u = t([b, H, L], 'bfloat16'),
    k = t([H, L], 'float32', () => r() * 0.01),
    D = t([H], 'float32');
  rep(() => s.fftConvSync(u, k, { D }).dispose());
} else if (mode === 'w4a16' || mode === 'w4a16m16') {
  const [M, K, N] = mode === 'w4a16' ? [1, 2560, 10240] : [16, 8192, 8192];
  w4a16Row(M, K, N);
} else if (mode === 'decode') {
  for (const [M, K, N] of [
    [1, 2560, 10240],
    [4, 2560, 10240],
    [16, 8192, 8192],
    [1, 5120, 2560],
    [1, 5120, 192],
  ]) {
    w4a16Row(M, K, N);
  }
  const [K, N] = [2560, 10240];
  const bytes = new Int8Array(N * K);
  for (let i = 0; i < bytes.length; i++) bytes[i] = ((Math.random() * 256) | 0) - 128;
  const w8 = s.packWeightsSync(new s.Tensor('int8', bytes, [N, K]).toSync(dev));
  for (const M of [1, 4, 16]) {
    const a = new s.Tensor('int8', bytes.subarray(0, M * K), [M, K]).toSync(dev);
    rep(() => s.gemmW8A8Sync(a, w8, 0.01, 0.01, { outDtype: 'bfloat16' }).dispose());
  }
  // Plain weights: W4A16 at one row, W8A8 at 1, 4, 8, 9 and 16.
  const w4 = new Uint8Array((N * K) / 2);
  for (let i = 0; i < w4.length; i++) w4[i] = (Math.random() * 256) | 0;
  const w4p = new s.Tensor('int4', w4, [N, K]).toSync(dev);
  const x1 = t([1, K], 'bfloat16');
  const sc1 = t([N, K / 128], 'bfloat16', () => 0.01 + Math.abs(r()) * 0.05);
  rep(() => s.gemmW4A16Sync(x1, w4p, sc1, { groupSize: 128 }).dispose());
  const w8p = new s.Tensor('int8', bytes, [N, K]).toSync(dev);
  for (const M of [1, 4, 8, 9, 16]) {
    const a = new s.Tensor('int8', bytes.subarray(0, M * K), [M, K]).toSync(dev);
    rep(() => s.gemmW8A8Sync(a, w8p, 0.01, 0.01, { outDtype: 'bfloat16' }).dispose());
  }
} else if (mode === 'group' || mode === 'group-plain') {
  // Packed (group-plain: plain) W4A16 rows at 8192 x 8192 (128 groups of 64 columns: the group path's one
  // wave on the H200): M = 1, 2, 4, 8 and 16, then 16 rows at k = 2560 and 16384; then 4 and 16 rows at
  // 2560 x 10240 (160 groups: two waves, taken only with SSMKIT_CUDA_GROUP=2).
  const plain = mode === 'group-plain';
  for (const M of [1, 2, 4, 8, 16]) w4a16Row(M, 8192, 8192, plain);
  w4a16Row(16, 2560, 8192, plain);
  w4a16Row(16, 16384, 8192, plain);
  w4a16Row(4, 2560, 10240, plain);
  w4a16Row(16, 2560, 10240, plain);
} else if (mode === 'gemv') {
  for (const [K, N] of [
    [2560, 10240],
    [5120, 2560],
    [5120, 192],
    [160, 5120],
  ]) {
    const x = t([1, K], 'bfloat16');
    const w = nn.packLinearSync(
      t([N, K], 'float32', () => r() * 0.02),
      { dtype: 'bfloat16' },
    );
    rep(() => nn.linearSync(x, w).dispose());
  }
} else if (mode === 'decode-k') {
  // The fixed cost of a decode-row launch: W4A16 M=1 at 10240 columns over k = 256 .. 5120 (the time at
  // k -> 0 is what the launch, the staging and the reduction cost apart from the weight stream).
  for (const K of [256, 512, 1024, 2560, 5120]) w4a16Row(1, K, 10240);
} else if (mode === 'hadamard') {
  const x = t([8 * 2048, 5120], 'bfloat16');
  rep(() => s.hadamardSync(x, { scale: 1 / Math.sqrt(5120) }).dispose());
} else {
  throw new Error(
    `profile-gpu: unknown mode ${mode} (scan, scan1, ssd, fft1k, fft4k, fft16k, fft64k, w4a16, w4a16m16, decode, decode-k, hadamard, group, group-plain, gemv)`,
  );
}
