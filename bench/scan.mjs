// Benchmarks of the selective-scan family on the CPU: selectiveScan (Mamba-1 prefill) in state updates
// per second against a plain JavaScript loop and the scalar path of the same kernel, decode-step
// latency of selectiveStateUpdate for a Mamba-2.8B-shaped layer, ssdScan for a Mamba-2-2.7B-shaped layer,
// and causalConv1d against the memory floor. Every result is checked against a float64 reference before
// anything is timed. Run `npm run build:ts` first, then `node bench/scan.mjs` (SSMKIT_SIMD caps the path).
//
// ggml's ssm_scan is quoted from the figures measured on this machine's class (it cannot be built here):
// 363 million state updates per second (dim 512, dstate 16, seqlen 2048, 2 threads, recurrence and C
// readout only, scalar expf) and a dim-5120 decode step in 225 us.
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import { fileURLToPath } from 'node:url';
import * as s from '../dist/esm/index.mjs';

const { Tensor } = s;
const GGML_UPDATES_PER_S = 363e6;
const GGML_DECODE_US = 225;

// --------------------------------------------------------------------------------------------------
// Inputs and timing helpers

let seed = 12345;
function uniform() {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const normal = () => Math.sqrt(-2 * Math.log(Math.max(uniform(), 1e-12))) * Math.cos(2 * Math.PI * uniform());

function f32(shape, f = normal) {
  const n = shape.reduce((a, b) => a * b, 1);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = f();
  return new Tensor('float32', a, shape);
}

/** Median and best of `reps` timed calls after `warm` untimed ones, in milliseconds. */
function time(fn, reps = 15, warm = 2) {
  for (let i = 0; i < warm; i++) fn();
  const ts = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  ts.sort((a, b) => a - b);
  return { median: ts[Math.floor(reps / 2)], best: ts[0] };
}

function check(label, got, want, rtol, atol) {
  let bad = -1;
  let maxErr = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    maxErr = Math.max(maxErr, err);
    if (!(err <= atol + rtol * Math.abs(want[i])) && bad < 0) bad = i;
  }
  if (bad >= 0) {
    throw new Error(`${label}: mismatch at ${bad}: got ${got[bad]}, expected ${want[bad]} (max abs error ${maxErr})`);
  }
  return maxErr;
}

const softplus = (x) => (x <= 20 ? Math.log1p(Math.exp(x)) : x);
const silu = (x) => x / (1 + Math.exp(-x));

// --------------------------------------------------------------------------------------------------
// The Mamba-1 scan: the bench shape, a plain JavaScript loop, and the float64 reference.

const SCAN = { batch: 1, dim: 512, dstate: 16, seqlen: 2048 };

function scanInputs({ batch, dim, dstate: N, seqlen: L }) {
  seed = 777;
  return {
    u: f32([batch, dim, L]),
    delta: f32([batch, dim, L], () => 0.5 * uniform()),
    A: f32([dim, N], () => -Math.exp(0.5 * normal())),
    B: f32([batch, 1, N, L]),
    C: f32([batch, 1, N, L]),
    D: f32([dim]),
    z: f32([batch, dim, L]),
    deltaBias: f32([dim], () => 0.5 * uniform()),
  };
}

/**
 * The straightforward loop: per channel, per step, per state: exp, update, readout. With `full`, every
 * option of the bench (deltaBias, softplus, D, z); without, the recurrence and C readout only.
 */
function jsScan(t, { batch, dim, dstate: N, seqlen: L }, full) {
  const u = t.u.dataSync();
  const delta = t.delta.dataSync();
  const A = t.A.dataSync();
  const B = t.B.dataSync();
  const C = t.C.dataSync();
  const D = t.D.dataSync();
  const z = t.z.dataSync();
  const bias = t.deltaBias.dataSync();
  const out = new Float64Array(batch * dim * L);
  const h = new Float64Array(N);
  for (let b = 0; b < batch; b++) {
    for (let d = 0; d < dim; d++) {
      h.fill(0);
      for (let k = 0; k < L; k++) {
        const i = (b * dim + d) * L + k;
        const dt = full ? softplus(delta[i] + bias[d]) : delta[i];
        const du = dt * u[i];
        let y = 0;
        for (let n = 0; n < N; n++) {
          h[n] = Math.exp(dt * A[d * N + n]) * h[n] + du * B[(b * N + n) * L + k];
          y += h[n] * C[(b * N + n) * L + k];
        }
        out[i] = full ? (y + D[d] * u[i]) * silu(z[i]) : y;
      }
    }
  }
  return out;
}

function runScan(t, full) {
  const opts = full ? { D: t.D, z: t.z, deltaBias: t.deltaBias, deltaSoftplus: true } : {};
  return s.selectiveScanSync(t.u, t.delta, t.A, t.B, t.C, opts);
}

/** Child mode: time the bench scan on the SIMD path of SSMKIT_SIMD and print JSON. */
function scanChild() {
  const t = scanInputs(SCAN);
  const full = time(() => runScan(t, true), 5, 1);
  const bare = time(() => runScan(t, false), 5, 1);
  process.stdout.write(JSON.stringify({ simd: s.backend().simd, full, bare }));
}

// --------------------------------------------------------------------------------------------------
// Other references (small shapes, checked before timing).

function ssdRef(x, dt, A, B, C, D, z, bias, [batch, L, H, P], [G, N]) {
  const out = new Float64Array(batch * L * H * P);
  const st = new Float64Array(P * N);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < H; h++) {
      st.fill(0);
      const g = Math.floor(h / (H / G));
      for (let t = 0; t < L; t++) {
        const d = Math.max(softplus(dt[(b * L + t) * H + h] + bias[h]), 0);
        const a = Math.exp(d * A[h]);
        const bc = ((b * L + t) * G + g) * N;
        for (let p = 0; p < P; p++) {
          const xi = ((b * L + t) * H + h) * P + p;
          let y = 0;
          for (let n = 0; n < N; n++) {
            st[p * N + n] = a * st[p * N + n] + d * x[xi] * B[bc + n];
            y += st[p * N + n] * C[bc + n];
          }
          out[xi] = (y + D[h] * x[xi]) * silu(z[xi]);
        }
      }
    }
  }
  return out;
}

function convRef(x, w, bias, [batch, dim, L], K) {
  const out = new Float64Array(batch * dim * L);
  for (let r = 0; r < batch * dim; r++) {
    const d = r % dim;
    for (let t = 0; t < L; t++) {
      let acc = bias[d];
      for (let k = 0; k < K; k++) {
        const s0 = t - K + 1 + k;
        if (s0 >= 0) acc += w[d * K + k] * x[r * L + s0];
      }
      out[r * L + t] = silu(acc);
    }
  }
  return out;
}

function decodeRef(state, x, dt, A, B, C, D, z, bias, batch, dim, N) {
  const out = new Float64Array(batch * dim);
  for (let b = 0; b < batch; b++) {
    for (let d = 0; d < dim; d++) {
      const i = b * dim + d;
      const t = softplus(dt[i] + bias[d]);
      let y = 0;
      for (let n = 0; n < N; n++) {
        const v = Math.exp(t * A[d * N + n]) * state[i * N + n] + t * x[i] * B[b * N + n];
        y += v * C[b * N + n];
      }
      out[i] = (y + D[d] * x[i]) * silu(z[i]);
    }
  }
  return out;
}

/** Bytes per second of a large copy (read + write), the floor of memory-bound ops. */
function memoryBandwidth() {
  const n = 32 * 1024 * 1024;
  const a = new Float32Array(n).fill(1);
  const b = new Float32Array(n);
  const t = time(() => b.set(a), 5, 1);
  return (2 * n * 4) / (t.best / 1e3);
}

// --------------------------------------------------------------------------------------------------

function main() {
  const be = s.backend();
  const threads = s.getNumThreads();
  const cpus = os.cpus();
  console.log(
    `machine: ${cpus[0]?.model} (${cpus.length} cores), SIMD path ${be.simd}, ${threads} threads, node ${process.version}`,
  );
  const bw = memoryBandwidth();
  console.log(`memory copy bandwidth: ${(bw / 1e9).toFixed(1)} GB/s (read + write)`);

  // Checks before timing.
  const t = scanInputs(SCAN);
  const updates = SCAN.batch * SCAN.dim * SCAN.seqlen * SCAN.dstate;
  const jsFullT0 = process.hrtime.bigint();
  const want = jsScan(t, SCAN, true);
  const jsFullMs = Number(process.hrtime.bigint() - jsFullT0) / 1e6;
  check('selectiveScan (every option)', runScan(t, true).out.dataSync(), want, 6e-4, 2e-3);
  check('selectiveScan (bare)', runScan(t, false).out.dataSync(), jsScan(t, SCAN, false), 6e-4, 2e-3);

  seed = 99;
  const dm = 5120;
  const N = 16;
  const decodeArgs = (batch) => {
    const state = f32([batch, dm, N]);
    const args = [
      f32([batch, dm]),
      f32([batch, dm]),
      f32([dm, N], () => -Math.exp(0.5 * normal())),
      f32([batch, N]),
      f32([batch, N]),
    ];
    const opts = { D: f32([dm]), z: f32([batch, dm]), dtBias: f32([dm], () => uniform() - 4), dtSoftplus: true };
    return { state, args, opts };
  };
  for (const batch of [1, 16]) {
    const a = decodeArgs(batch);
    const w = decodeRef(
      a.state.dataSync(),
      ...a.args.map((x) => x.dataSync()),
      a.opts.D.dataSync(),
      a.opts.z.dataSync(),
      a.opts.dtBias.dataSync(),
      batch,
      dm,
      N,
    );
    check(
      `selectiveStateUpdate batch ${batch}`,
      s.selectiveStateUpdateSync(a.state, ...a.args, a.opts).dataSync(),
      w,
      6e-4,
      2e-3,
    );
  }

  const SSD = { batch: 1, seqlen: 512, nheads: 80, headdim: 64, groups: 1, dstate: 128 };
  seed = 5;
  const ssdT = {
    x: f32([SSD.batch, SSD.seqlen, SSD.nheads, SSD.headdim]),
    dt: f32([SSD.batch, SSD.seqlen, SSD.nheads], () => normal() - 3),
    A: f32([SSD.nheads], () => -1 - 15 * uniform()),
    B: f32([SSD.batch, SSD.seqlen, SSD.groups, SSD.dstate]),
    C: f32([SSD.batch, SSD.seqlen, SSD.groups, SSD.dstate]),
    D: f32([SSD.nheads]),
    z: f32([SSD.batch, SSD.seqlen, SSD.nheads, SSD.headdim]),
    dtBias: f32([SSD.nheads], () => uniform()),
  };
  const ssdOpts = { D: ssdT.D, z: ssdT.z, dtBias: ssdT.dtBias, dtSoftplus: true };
  const runSsd = () => s.ssdScanSync(ssdT.x, ssdT.dt, ssdT.A, ssdT.B, ssdT.C, ssdOpts);
  {
    // Check the first 8 heads' worth through a smaller call of the same data layout.
    const small = [1, 64, 8, 64];
    seed = 6;
    const x = f32(small);
    const dt = f32([1, 64, 8], () => normal() - 3);
    const A = f32([8], () => -1 - 15 * uniform());
    const B = f32([1, 64, 1, 128]);
    const C = f32([1, 64, 1, 128]);
    const D = f32([8]);
    const z = f32(small);
    const bias = f32([8], () => uniform());
    const got = s.ssdScanSync(x, dt, A, B, C, { D, z, dtBias: bias, dtSoftplus: true }).out.dataSync();
    const r = ssdRef(...[x, dt, A, B, C, D, z, bias].map((v) => v.dataSync()), small, [1, 128]);
    check('ssdScan', got, r, 6e-4, 2e-3);
  }

  const CONV = { batch: 1, dim: 5120, seqlen: 2048, width: 4 };
  seed = 8;
  const convX = f32([CONV.batch, CONV.dim, CONV.seqlen]);
  const convW = f32([CONV.dim, CONV.width]);
  const convB = f32([CONV.dim]);
  const runConv = () => s.causalConv1dSync(convX, convW, { bias: convB, activation: 'silu' });
  check(
    'causalConv1d',
    runConv().out.dataSync(),
    convRef(convX.dataSync(), convW.dataSync(), convB.dataSync(), [1, 5120, 2048], 4),
    6e-4,
    2e-3,
  );
  console.log('all results match, starting benchmarks\n');

  // selectiveScan.
  const shape = `batch ${SCAN.batch}, dim ${SCAN.dim}, dstate ${SCAN.dstate}, seqlen ${SCAN.seqlen}`;
  console.log(`selectiveScan float32, ${shape} (${(updates / 1e6).toFixed(1)}M state updates)`);
  const rate = (ms) => `${(updates / (ms / 1e3) / 1e9).toFixed(2)} G updates/s`;
  const report = (label, tm) =>
    console.log(`  ${label.padEnd(46)} ${tm.median.toFixed(2).padStart(8)} ms (best ${tm.best.toFixed(2)})  ${rate(tm.median)}`);
  const full = time(() => runScan(t, true));
  const bare = time(() => runScan(t, false));
  report(`every option, ${threads} threads`, full);
  report(`recurrence + C readout only, ${threads} threads`, bare);
  s.setNumThreads(1);
  const full1 = time(() => runScan(t, true));
  const bare1 = time(() => runScan(t, false));
  s.setNumThreads(threads);
  report('every option, 1 thread', full1);
  report('recurrence + C readout only, 1 thread', bare1);
  const tb = {
    ...t,
    u: t.u.cast('bfloat16'),
    delta: t.delta.cast('bfloat16'),
    B: t.B.cast('bfloat16'),
    C: t.C.cast('bfloat16'),
    z: t.z.cast('bfloat16'),
  };
  report(
    `every option, bfloat16 inputs, ${threads} threads`,
    time(() => runScan(tb, true)),
  );
  const memBytes = SCAN.batch * SCAN.dim * SCAN.seqlen * 4 * 4 + 2 * SCAN.batch * SCAN.dstate * SCAN.seqlen * 4;
  console.log(
    `  memory floor (u, delta, z, out, B, C once): ${((memBytes / bw) * 1e3).toFixed(2)} ms; the scan is compute-bound (one exp per update)`,
  );

  // Peers measured in this run: the other SIMD paths of this kernel (child processes, SSMKIT_SIMD caps the
  // path at load) and a plain JS loop.
  const paths = {};
  for (const level of ['avx2', 'scalar']) {
    const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--scan-child'], {
      env: { ...process.env, SSMKIT_SIMD: level },
      encoding: 'utf8',
    });
    if (child.status !== 0) throw new Error(`${level} child failed: ${child.stderr}`);
    paths[level] = JSON.parse(child.stdout);
    report(`${paths[level].simd} path (SSMKIT_SIMD=${level}), every option`, paths[level].full);
    report(`${paths[level].simd} path (SSMKIT_SIMD=${level}), bare`, paths[level].bare);
  }
  const scalar = paths.scalar;
  const jsBare = time(() => jsScan(t, SCAN, false), 3, 1);
  report('plain JS loop, 1 thread, every option (once)', { median: jsFullMs, best: jsFullMs });
  report('plain JS loop, 1 thread, recurrence + readout only', jsBare);
  const ggmlMs = (updates / GGML_UPDATES_PER_S) * 1e3;
  console.log(`  ggml ssm_scan (quoted, not measured here)       ${ggmlMs.toFixed(2).padStart(8)} ms  ${rate(ggmlMs)}`);
  console.log(
    `  ratios: every option vs ggml bare ${(ggmlMs / full.median).toFixed(1)}x, bare vs ggml ${(ggmlMs / bare.median).toFixed(1)}x, ` +
      `vs scalar path ${(scalar.full.median / full.median).toFixed(1)}x (every option) ${(scalar.bare.median / bare.median).toFixed(1)}x (bare), ` +
      `vs plain JS ${(jsBare.median / bare.median).toFixed(0)}x (bare)`,
  );

  // Decode steps.
  console.log(
    `\nselectiveStateUpdate float32, Mamba-1 form, dim ${dm}, dstate ${N}, every option (one decode step, call included)`,
  );
  for (const batch of [1, 16]) {
    const a = decodeArgs(batch);
    const reps = batch === 1 ? 2001 : 301;
    const tm = time(() => s.selectiveStateUpdateSync(a.state, ...a.args, a.opts), reps, 200);
    const us = tm.median * 1e3;
    const bytes = batch * dm * N * 4 * 2 + dm * N * 4;
    console.log(
      `  batch ${String(batch).padEnd(3)} ${us.toFixed(1).padStart(8)} us (best ${(tm.best * 1e3).toFixed(1)})  ` +
        `${((batch * dm * N) / (tm.median / 1e3) / 1e9).toFixed(2)} G updates/s; DRAM floor ${((bytes / bw) * 1e6).toFixed(1)} us` +
        (batch === 1 ? `; ggml ${GGML_DECODE_US} us (quoted): ${(GGML_DECODE_US / us).toFixed(1)}x` : ''),
    );
  }
  {
    const [H, P, NS] = [80, 64, 128];
    seed = 3;
    const state = f32([1, H, P, NS]);
    const args = [f32([1, H, P]), f32([1, H]), f32([H], () => -1 - uniform()), f32([1, 1, NS]), f32([1, 1, NS])];
    const opts = { D: f32([H]), z: f32([1, H, P]), dtBias: f32([H]), dtSoftplus: true };
    const tm = time(() => s.selectiveStateUpdateSync(state, ...args, opts), 501, 50);
    const bytes = H * P * NS * 4 * 2;
    console.log(
      `  multi-head form, nheads ${H}, headdim ${P}, dstate ${NS}, batch 1: ${(tm.median * 1e3).toFixed(1)} us (best ${(tm.best * 1e3).toFixed(1)}); ` +
        `DRAM floor ${((bytes / bw) * 1e6).toFixed(1)} us`,
    );
  }

  // ssdScan.
  const ssdUpdates = SSD.batch * SSD.seqlen * SSD.nheads * SSD.headdim * SSD.dstate;
  console.log(
    `\nssdScan float32, batch ${SSD.batch}, seqlen ${SSD.seqlen}, nheads ${SSD.nheads}, headdim ${SSD.headdim}, dstate ${SSD.dstate}, every option`,
  );
  const ssdT1 = time(runSsd, 5, 1);
  console.log(
    `  ${threads} threads: ${ssdT1.median.toFixed(1)} ms (best ${ssdT1.best.toFixed(1)})  ${(ssdUpdates / (ssdT1.median / 1e3) / 1e9).toFixed(2)} G updates/s`,
  );

  // causalConv1d.
  const convBytes = CONV.batch * CONV.dim * CONV.seqlen * 4 * 2;
  console.log(
    `\ncausalConv1d float32, batch ${CONV.batch}, dim ${CONV.dim}, seqlen ${CONV.seqlen}, width ${CONV.width}, bias + silu`,
  );
  const ct = time(runConv);
  console.log(
    `  ${threads} threads: ${ct.median.toFixed(2)} ms (best ${ct.best.toFixed(2)})  ${(convBytes / (ct.median / 1e3) / 1e9).toFixed(1)} GB/s; ` +
      `floor ${((convBytes / bw) * 1e3).toFixed(2)} ms (${(((convBytes / bw) * 1e3) / ct.median).toFixed(2)} of it)`,
  );
  {
    seed = 4;
    const xs = f32([1, 5120, 1]);
    const st = f32([1, 5120, 3]);
    const tm = time(() => s.causalConv1dUpdateSync(xs, st, convW, { bias: convB, activation: 'silu' }), 2001, 200);
    console.log(
      `  causalConv1dUpdate, one step, batch 1: ${(tm.median * 1e3).toFixed(1)} us (best ${(tm.best * 1e3).toFixed(1)})`,
    );
  }
}

if (process.argv.includes('--scan-child')) scanChild();
else main();
