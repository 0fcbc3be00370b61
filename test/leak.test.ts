// Memory: create -> op -> dispose cycles over every op bring memory() back to its baseline exactly and
// keep the resident set flat. (`npm run stress` runs 10,000 cycles; this runs 1,000.)
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
});
