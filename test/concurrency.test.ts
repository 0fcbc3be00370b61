// Concurrency: 64 async ops in flight give the results the same ops give one by one; the addon loads
// and works in several worker_threads at once beside the main thread; ops with large outputs cost the
// event loop no more than small ones (their storage is allocated and released off the JS thread).
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import * as s from '../dist/cjs/index.js';
// @ts-expect-error plain ESM helper without types
import { buildCall, digest, opNames } from './fuzz/run-case.mjs';

type Call = { args: unknown[]; inPlace: number[] };
const ops: string[] = opNames(s);
const fn = (name: string) => (s as unknown as Record<string, (...a: unknown[]) => unknown>)[name] as (...a: unknown[]) => unknown;

function runSync(op: string, seed: number): string {
  const { args, inPlace } = buildCall(s, op, seed) as Call;
  return digest(s, fn(`${op}Sync`)(...args), args, inPlace);
}

describe('concurrency', () => {
  it('every op of SPEC is exported with its Sync twin', () => {
    for (const op of ops) {
      expect(typeof fn(op), op).toBe('function');
      expect(typeof fn(`${op}Sync`), `${op}Sync`).toBe('function');
    }
  });

  it('64 async ops in flight equal the same ops run one by one', async () => {
    const jobs = Array.from({ length: 64 }, (_, i) => ({ op: ops[i % ops.length] as string, seed: 1000 + i }));
    const expected = jobs.map((j) => runSync(j.op, j.seed));
    const calls = jobs.map((j) => ({ ...j, call: buildCall(s, j.op, j.seed) as Call }));
    const results = await Promise.all(
      calls.map(async ({ op, call }) => digest(s, await fn(op)(...call.args), call.args, call.inPlace)),
    );
    expect(results).toEqual(expected);
  });

  it("an async op's JS-thread time does not grow with its output (64 MiB and 512 MiB outputs, back to back)", async () => {
    // What the JS thread spends in an async call is what the event loop waits for. With V8's own
    // buffers a large output cost it tens of milliseconds a call: the allocation waits for the
    // collection of the earlier, dropped outputs, which unmaps their pages on the JS thread (45-80 ms a
    // GB). Each output here is dropped while the next op runs. One kernel thread leaves the loop a core.
    const threads = s.getNumThreads();
    s.setNumThreads(1);
    const input = (rows: number) => {
      const x = s.Tensor.zeros([rows, 4096], 'float32');
      const xs = x.dataSync() as Float32Array;
      for (let r = 0; r < rows; r += 997) xs[r * 4096] = 1;
      return x;
    };
    const small = input(1 << 12);
    const large = input(1 << 15);
    const times = { small: [] as number[], large: [] as number[] };
    // V8's ArrayBuffer allocator does not hold the outputs' storage (it would count 512 MiB a call).
    const arrayBuffers = () => process.memoryUsage().arrayBuffers;
    const grown: number[] = [];
    try {
      for (let i = 0; i < 6; i++) {
        for (const [name, x] of [
          ['small', small],
          ['large', large],
        ] as const) {
          const held = arrayBuffers();
          const t0 = performance.now();
          const pending = s.hadamard(x, { scale: 1 / 64 });
          times[name].push(performance.now() - t0);
          grown.push(arrayBuffers() - held);
          const y = await pending;
          const ys = y.dataSync() as Float32Array;
          // Row 997 holds a one at its first place: its transform is 1/64 everywhere; row 1 is all zero.
          expect([ys[997 * 4096], ys[997 * 4096 + 4095], ys[4096 + 17]]).toEqual([1 / 64, 1 / 64, 0]);
        }
      }
    } finally {
      s.setNumThreads(threads);
    }
    // A cost that grows with the output is paid by every call, so the fastest call shows it; a loaded
    // machine only adds to some calls. The storage check below does not depend on timing at all.
    const fastest = (v: number[]) => Math.min(...v);
    const msg = `calls (ms): 64 MiB ${times.small.map((t) => t.toFixed(1)).join(', ')}; 512 MiB ${times.large.map((t) => t.toFixed(1)).join(', ')}`;
    expect(fastest(times.large), msg).toBeLessThan(fastest(times.small) + 8);
    expect(fastest(times.large), msg).toBeLessThan(20);
    expect(Math.max(...grown)).toBeLessThan(64 << 20);
    small.dispose();
    large.dispose();
  });

  it('works in four worker threads at once and in the main thread', async () => {
    const script = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(${JSON.stringify(path.join(__dirname, 'fuzz', 'run-case.mjs'))}).then(async (m) => {
        const s = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'cjs', 'index.js'))});
        const out = [];
        for (const op of m.opNames(s)) {
          const { args, inPlace } = m.buildCall(s, op, workerData.seed);
          out.push(m.digest(s, await s[op](...args), args, inPlace));
        }
        parentPort.postMessage(out);
      });`;
    const seeds = [11, 12, 13, 14];
    const workers = seeds.map(
      (seed) =>
        new Promise<string[]>((resolve, reject) => {
          const w = new Worker(script, { eval: true, workerData: { seed } });
          w.once('message', resolve);
          w.once('error', reject);
        }),
    );
    const mainResults = seeds.map((seed) => ops.map((op) => runSync(op, seed)));
    expect(await Promise.all(workers)).toEqual(mainResults);
  });
});
