// Concurrency: 64 async ops in flight give the results the same ops give one by one; the addon loads
// and works in several worker_threads at once beside the main thread.
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
