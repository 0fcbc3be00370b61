// N create -> op -> dispose cycles over every op; then N tensors dropped without dispose. Exits non-zero
// unless memory() returns to its baseline and the resident set stays flat. Prints the figures.
import { createRequire } from 'node:module';
import { buildCall, opNames } from '../test/fuzz/run-case.mjs';

const require = createRequire(import.meta.url);
const s = require('../dist/cjs/index.js');
const n = Number(process.argv[2] ?? 10000);
// Under AddressSanitizer freed memory sits in its quarantine, so the resident set says nothing there.
const checkRss = !process.argv.includes('--no-rss');
const dispose = (v) => {
  if (v instanceof s.Tensor || (v && typeof v.dispose === 'function')) v.dispose();
  else if (Array.isArray(v)) v.forEach(dispose);
  else if (v && typeof v === 'object') Object.values(v).forEach(dispose);
};
const ops = opNames(s);
const base = s.memory();
let rssWarm = 0;
for (let i = 0; i < n; i++) {
  const op = ops[i % ops.length];
  const { args } = buildCall(s, op, i);
  const r = i % 2 ? s[`${op}Sync`](...args) : await s[op](...args);
  dispose(r);
  dispose(args);
  if (i === Math.floor(n / 10)) {
    global.gc?.();
    rssWarm = process.memoryUsage().rss;
  }
}
global.gc?.();
const rssEnd = process.memoryUsage().rss;
const after = s.memory();
const growthMB = (rssEnd - rssWarm) / 2 ** 20;
let ok = JSON.stringify(after) === JSON.stringify(base) && (!checkRss || growthMB < 32);
let line = `${n} cycles: memory() ${JSON.stringify(after)} (baseline ${JSON.stringify(base)}), RSS ${(rssWarm / 2 ** 20).toFixed(1)} -> ${(rssEnd / 2 ** 20).toFixed(1)} MB after warm-up`;
if (global.gc) {
  (() => {
    for (let i = 0; i < n; i++) new s.Tensor('float32', new Float32Array(64), [64]);
  })();
  for (let i = 0; i < 50 && s.memory().liveTensors > base.liveTensors; i++) {
    global.gc();
    await new Promise((r) => setTimeout(r, 5));
  }
  const dropped = s.memory();
  ok = ok && dropped.liveTensors === base.liveTensors && dropped.hostBytes === base.hostBytes;
  line += `; ${n} tensors dropped without dispose: liveTensors back to ${dropped.liveTensors}`;
}
console.log(line);
process.exit(ok ? 0 : 1);
