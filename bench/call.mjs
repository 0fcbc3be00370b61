// The host cost of one op call: a tiny selectiveStateUpdate (batch 1, dim 16, dstate 16: the kernel is
// a few hundred floats, so what is timed is the call itself) and a tiny hadamard, through fooSync and
// foo, and the parts of a call timed one by one: the JS argument checks and output allocation
// (Tensor._alloc with its FinalizationRegistry entries, and dispose), the descriptors (_native), the
// native call on prepared arguments (reading the descriptors, the kernel; an async call also keeps the
// arrays alive), passed positionally as lib/ops/run.ts does and by name for comparison, and
// for foo the promise and the trip through the thread pool. On the CUDA backend the same ops run on
// cuda:0 (enqueued only: the device work of a tiny op is a few microseconds and overlaps).
//
// Run: npm run build:ts && node bench/call.mjs [--quick] [--device cuda:0]
import { createRequire } from 'node:module';
import * as os from 'node:os';

const require = createRequire(import.meta.url);
const s = require('../dist/cjs/index.js');
const { native } = require('../dist/cjs/backend.js');
const { Tensor } = s;
const quick = process.argv.includes('--quick');
const di = process.argv.indexOf('--device');
const device = di > 0 ? process.argv[di + 1] : s.backend().name === 'cuda' ? 'cuda:0' : 'cpu';
const dev = device === 'cpu' ? -1 : Number(device.split(':')[1] ?? 0);

const b = s.backend();
console.log(
  `machine: ${os.cpus()[0]?.model} x${os.cpus().length}, node ${process.version}, backend ${b.name}` +
    `${b.device ? ` (${b.device})` : ''}, simd ${b.simd}, threads ${b.threads}; ops on ${device}`,
);

const f32 = (n, f) =>
  new Tensor(
    'float32',
    Float32Array.from({ length: n }, (_, i) => f(i)),
    [n],
  );
const on = (t) => (device === 'cpu' ? t : t.toSync(device));
const dim = 16;
const dstate = 16;
const state = on(f32(dim * dstate, () => 0).reshape([1, dim, dstate]));
const x = on(f32(dim, (i) => Math.sin(i)).reshape([1, dim]));
const dt = on(f32(dim, () => 0.1).reshape([1, dim]));
const A = on(f32(dim * dstate, (i) => -1 - (i % 7)).reshape([dim, dstate]));
const B = on(f32(dstate, (i) => Math.cos(i)).reshape([1, dstate]));
const C = on(f32(dstate, (i) => Math.sin(2 * i)).reshape([1, dstate]));
const D = on(f32(dim, () => 1));
const h = on(f32(16, (i) => i).reshape([1, 16]));

// The result first: one step against a plain reference (A, B, C, D as built above, state zero).
{
  const ref = new Float64Array(dim);
  const xs = x.toSync('cpu').dataSync();
  for (let d = 0; d < dim; d++) {
    let y = 0;
    for (let n = 0; n < dstate; n++) {
      const a = -1 - ((d * dstate + n) % 7);
      const hstate = 0 * Math.exp(0.1 * a) + 0.1 * Math.cos(n) * xs[d];
      y += hstate * Math.sin(2 * n);
    }
    ref[d] = y + xs[d];
  }
  const st = state.toSync('cpu');
  const got = s.selectiveStateUpdateSync(st.toSync(device), x, dt, A, B, C, { D }).toSync('cpu').dataSync();
  for (let d = 0; d < dim; d++) {
    if (Math.abs(got[d] - ref[d]) > 1e-5 * (1 + Math.abs(ref[d]))) {
      throw new Error(`selectiveStateUpdate: index ${d}: got ${got[d]}, expected ${ref[d]}`);
    }
  }
  console.log('result matches the reference; timing');
}

const N = quick ? 5_000 : 40_000;
const REPS = quick ? 3 : 7;
// The fastest and the median of REPS runs of N calls, in microseconds a call: on a shared machine the
// fastest run is the one the other processes disturbed least, the closest to what a call costs.
const report = (name, runs) => {
  runs.sort((p, q) => p - q);
  console.log(`${name.padEnd(58)} ${runs[0].toFixed(2).padStart(7)} us/call (median ${runs[runs.length >> 1].toFixed(2)})`);
  return runs[0];
};
function timeSync(name, fn) {
  for (let i = 0; i < N / 10; i++) fn();
  const runs = [];
  for (let r = 0; r < REPS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) fn();
    runs.push(Number(process.hrtime.bigint() - t0) / 1e3 / N);
  }
  return report(name, runs);
}
async function timeAsync(name, fn, inFlight = 1) {
  const n = Math.floor(N / 4);
  for (let i = 0; i < n / 10; i++) await fn();
  const runs = [];
  for (let r = 0; r < REPS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i += inFlight) {
      if (inFlight === 1) await fn();
      else await Promise.all(Array.from({ length: inFlight }, fn));
    }
    runs.push(Number(process.hrtime.bigint() - t0) / 1e3 / n);
  }
  return report(name, runs);
}

const upd = () => s.selectiveStateUpdateSync(state, x, dt, A, B, C, { D }).dispose();
timeSync('selectiveStateUpdateSync + dispose', upd);
timeSync('hadamardSync + dispose', () => s.hadamardSync(h).dispose());
console.log('parts of selectiveStateUpdateSync:');
timeSync('  Tensor._alloc + dispose (output, FinalizationRegistry)', () =>
  Tensor._alloc('op', 'float32', [1, dim], dev).dispose(),
);
timeSync('  Tensor._alloc + _native + dispose', () => {
  const t = Tensor._alloc('op', 'float32', [1, dim], dev);
  t._native('op', 'out');
  t.dispose();
});
timeSync('  _native of the 8 inputs (descriptors cached)', () => {
  for (const t of [state, x, dt, A, B, C, D]) t._native('op', 'a');
});
const out = Tensor._alloc('op', 'float32', [1, dim], dev);
const args = {
  state: state._native('op', 'state'),
  x: x._native('op', 'x'),
  dt: dt._native('op', 'dt'),
  A: A._native('op', 'A'),
  B: B._native('op', 'B'),
  C: C._native('op', 'C'),
  D: D._native('op', 'D'),
  out: out._native('op', 'out'),
  dtSoftplus: false,
};
const nat = native();
// What lib/ops/run.ts passes: after the async flag, two places a key in the order of the function's key
// list, a host tensor's descriptor [meta, data] spread over both, any other value in the first.
const positional = (fn, named, async) => [
  async,
  ...fn.keys.flatMap((k) => {
    const v = named[k];
    return Array.isArray(v) && v[0] instanceof Float64Array ? [v[0], v[1]] : [v, undefined];
  }),
];
const updPos = positional(nat.selectiveStateUpdate, args, false);
const hArgs = { x: h._native('o', 'x'), out: args.out, scale: 1 };
const hPos = positional(nat.hadamard, hArgs, false);
timeSync('  native call on prepared arguments (read, kernel)', () => nat.selectiveStateUpdate(...updPos));
timeSync('  the same by name, op({...}, false)', () => nat.selectiveStateUpdate(args, false));
timeSync('  native hadamard on prepared arguments', () => nat.hadamard(...hPos));
timeSync('  the same by name', () => nat.hadamard(hArgs, false));
timeSync('  native getNumThreads (the floor of a Node-API call)', () => nat.getNumThreads());
await timeAsync('selectiveStateUpdate + dispose, one at a time', async () =>
  (await s.selectiveStateUpdate(state, x, dt, A, B, C, { D })).dispose(),
);
const updPosAsync = positional(nat.selectiveStateUpdate, args, true);
await timeAsync('  native call async on prepared arguments, one at a time', () => nat.selectiveStateUpdate(...updPosAsync));
await timeAsync(
  'selectiveStateUpdate + dispose, 64 in flight',
  async () => (await s.selectiveStateUpdate(state, x, dt, A, B, C, { D })).dispose(),
  64,
);
if (dev >= 0) s.synchronizeSync(device);
