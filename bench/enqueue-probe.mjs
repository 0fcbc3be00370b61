// Where the host's time goes when decode calls are queued behind big GEMMs: the enqueue time of 4 and 16
// W8A8 8192 x 4096 x 8192 calls (numeric scales) against their device time, then of 200 one-row 2560 x 10240
// calls behind them (each call's host time, p50 / p90 / max), and the same 200 calls alone. A call that
// waits for the device shows as an enqueue as long as the work before it.
//   node bench/enqueue-probe.mjs   (on a CUDA machine, after npm run build:ts)
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const s = require('../dist/cjs/index.js');
const DEV = 'cuda:0';
const rnd = (n) => {
  const a = new Int8Array(n);
  for (let i = 0; i < n; i++) a[i] = ((i * 37 + 11) % 255) - 127;
  return a;
};
const i8 = (n, k) => new s.Tensor('int8', rnd(n * k), [n, k]).toSync(DEV);
const now = () => Number(process.hrtime.bigint()) / 1e3;
const a = i8(8192, 4096),
  w = i8(8192, 4096);
const x = i8(1, 2560),
  ws = Array.from({ length: 8 }, () => i8(10240, 2560));
const big = () => s.gemmW8A8Sync(a, w, 1, 1, { outDtype: 'bfloat16' }).dispose();
const small = (i) => s.gemmW8A8Sync(x, ws[i % 8], 1, 1, { outDtype: 'bfloat16' }).dispose();
for (let i = 0; i < 3; i++) {
  big();
  small(i);
}
s.synchronizeSync(DEV);
for (const count of [4, 16]) {
  s.synchronizeSync(DEV);
  let t0 = now();
  for (let i = 0; i < count; i++) big();
  const e1 = now() - t0;
  s.synchronizeSync(DEV);
  const d1 = now() - t0;
  console.log(`busy ${count}: enqueue ${e1.toFixed(0)} us, until done ${d1.toFixed(0)} us`);
  const per = [];
  t0 = now();
  for (let i = 0; i < count; i++) big();
  const t1 = now();
  for (let i = 0; i < 200; i++) {
    const a0 = now();
    small(i);
    per.push(now() - a0);
  }
  const e2 = now() - t1;
  s.synchronizeSync(DEV);
  const d2 = now() - t0;
  per.sort((p, q) => p - q);
  console.log(
    `  then 200 small: enqueue ${e2.toFixed(0)} us (p50 ${per[100].toFixed(1)}, p90 ${per[180].toFixed(1)}, max ${per[199].toFixed(1)}), all done ${d2.toFixed(0)} us -> (${d2.toFixed(0)} - ${d1.toFixed(0)}) / 200 = ${((d2 - d1) / 200).toFixed(2)} us a call`,
  );
}
s.synchronizeSync(DEV);
const t0 = now();
for (let i = 0; i < 200; i++) small(i);
const e3 = now() - t0;
s.synchronizeSync(DEV);
console.log(`200 small alone: enqueue ${e3.toFixed(0)} us, done ${(now() - t0).toFixed(0)} us`);
