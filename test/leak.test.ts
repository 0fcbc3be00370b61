// Memory: create -> op -> dispose cycles over every op bring memory() back to its baseline exactly and
// keep the resident set flat (`npm run stress` runs 10,000 cycles; this runs 1,000), and disposed tensors
// hold on to nothing.
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import * as s from '../dist/cjs/index.js';
// @ts-expect-error plain ESM helper without types
import { buildCall, opNames } from './fuzz/run-case.mjs';

type Call = { args: unknown[]; inPlace: number[] };
const fn = (name: string) => (s as unknown as Record<string, (...a: unknown[]) => unknown>)[name] as (...a: unknown[]) => unknown;

function disposeAll(v: unknown): void {
  if (v instanceof s.Tensor || (v && typeof (v as { dispose?: unknown }).dispose === 'function'))
    (v as { dispose(): void }).dispose();
  else if (Array.isArray(v)) v.forEach(disposeAll);
  else if (v && typeof v === 'object') Object.values(v).forEach(disposeAll);
}

describe('memory', () => {
  it('1,000 create -> op -> dispose cycles return memory() to baseline', async () => {
    const ops: string[] = opNames(s);
    const base = s.memory();
    const rss0 = process.memoryUsage().rss;
    for (let i = 0; i < 1000; i++) {
      const op = ops[i % ops.length] as string;
      const { args } = buildCall(s, op, i) as Call;
      const r = i % 2 ? fn(`${op}Sync`)(...args) : await fn(op)(...args);
      disposeAll(r);
      disposeAll(args);
      if (i === 99) expect(s.memory()).toEqual(base);
    }
    expect(s.memory()).toEqual(base);
    // Generous: V8's heap may grow by a few MB; a native leak of the op data would be far more.
    expect(process.memoryUsage().rss - rss0).toBeLessThan(64 * 1024 * 1024);
  });

  it('disposed tensors hold on to nothing: 20,000 x 4 KiB host tensors created and disposed keep the resident set flat', () => {
    // A disposed tensor's array must be collectable at once: V8 keeps a FinalizationRegistry's held value
    // for a while after unregister(), so an entry that held the storage kept every array with it.
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const round = () => {
      for (let i = 0; i < 5000; i++) new s.Tensor('float32', new Float32Array(1024), [1024]).dispose();
    };
    round();
    gc();
    const rss0 = process.memoryUsage().rss;
    for (let r = 0; r < 4; r++) round();
    gc();
    // 20,000 arrays of 4 KiB are 80 MiB: an entry that held the storage grew the resident set by 64 MiB;
    // now it grows by 4-11 MiB (V8's heap).
    const grown = process.memoryUsage().rss - rss0;
    expect(grown, `resident set grew by ${(grown / 2 ** 20).toFixed(1)} MiB`).toBeLessThan(32 * 1024 * 1024);
  });
});
