// Rounds of 64 async ops in flight (results equal to one-by-one runs), while a 5 ms interval measures
// the event-loop delay. Exits non-zero on a mismatch or a p99 delay of 20 ms or more.
import { createRequire } from 'node:module';
import { buildCall, digest, opNames } from '../test/fuzz/run-case.mjs';

const require = createRequire(import.meta.url);
const s = require('../dist/cjs/index.js');
const rounds = Number(process.argv[2] ?? 20);
const ops = opNames(s);
const gaps = [];
let last = performance.now();
const timer = setInterval(() => {
  const now = performance.now();
  gaps.push(now - last - 5);
  last = now;
}, 5);
let mismatches = 0;
for (let r = 0; r < rounds; r++) {
  const jobs = Array.from({ length: 64 }, (_, i) => ({ op: ops[(i + r) % ops.length], seed: r * 64 + i }));
  const expected = jobs.map(({ op, seed }) => {
    const { args, inPlace } = buildCall(s, op, seed);
    return digest(s, s[`${op}Sync`](...args), args, inPlace);
  });
  last = performance.now();
  const got = await Promise.all(
    jobs.map(async ({ op, seed }) => {
      const { args, inPlace } = buildCall(s, op, seed);
      return digest(s, await s[op](...args), args, inPlace);
    }),
  );
  mismatches += got.filter((g, i) => g !== expected[i]).length;
}
clearInterval(timer);
gaps.sort((a, b) => a - b);
const p99 = gaps[Math.floor(gaps.length * 0.99)] ?? 0;
console.log(`${rounds} rounds of 64 ops in flight: ${mismatches} mismatches; event-loop delay p99 ${p99.toFixed(1)} ms over ${gaps.length} ticks`);
process.exit(mismatches === 0 && p99 < 20 ? 0 : 1);
