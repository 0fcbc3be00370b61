// How op arguments reach the addon: lib/ops/run.ts passes them positionally, op(async, v0, d0, v1, d1,
// ...) in the order of the key list the native function carries (`keys`; a host tensor's descriptor
// [meta, data] spread over vi and di), and falls back to the object form
// op(args, async) for a function without one. Both forms must give the same bits, and every key lib/
// passes must be in the op's key list (a key missing from it would be dropped without a word).
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../dist/cjs/backend.js';
import {
  causalConv1d,
  causalConv1dSync,
  hadamard,
  hadamardSync,
  quantize,
  quantizeSync,
  selectiveScan,
  selectiveScanSync,
  selectiveStateUpdate,
  selectiveStateUpdateSync,
  Tensor,
} from '../dist/cjs/index.js';
import { assertEqual, Rng, randTensor, toF64 } from './util';

type NativeOp = ((...values: unknown[]) => unknown) & { keys?: readonly string[] };
const addon = native() as Record<string, NativeOp>;

// Replaces addon[op] by a function without `keys` (so run.ts calls it by name) that records the keys of
// each call's object and passes the object on to the real function.
const restore: (() => void)[] = [];
function byName(op: string): string[][] {
  const real = addon[op] as NativeOp;
  const seen: string[][] = [];
  addon[op] = (args: unknown, async: unknown) => {
    seen.push(Object.keys(args as object));
    return real(args, async);
  };
  restore.push(() => {
    addon[op] = real;
  });
  return seen;
}
afterEach(() => {
  for (const r of restore.splice(0)) r();
});

it('every op function with a key list has a frozen list of distinct strings, at most 16', () => {
  let withKeys = 0;
  for (const [name, fn] of Object.entries(addon)) {
    if (typeof fn !== 'function' || fn.keys === undefined) continue;
    withKeys++;
    expect(Object.isFrozen(fn.keys), name).toBe(true);
    expect(fn.keys.length, name).toBeLessThanOrEqual(16);
    expect(new Set(fn.keys).size, name).toBe(fn.keys.length);
    for (const k of fn.keys) expect(typeof k, name).toBe('string');
  }
  // scan 5, quant 7, fft 3, nn 10
  expect(withKeys).toBe(25);
});

const rng = new Rng(20261129);
const rand = (shape: number[]) => randTensor(shape, 'float32', () => rng.normal()).t;
const copy = (t: Tensor) => new Tensor('float32', Float32Array.from(toF64(t)), [...t.shape]);
const bits = (t: Tensor | undefined) => (t === undefined ? new Float64Array(0) : toF64(t));

// Each case runs the op sync and async, positionally and by name; `outs` picks the tensors to compare.
interface Case {
  op: string;
  sync: () => Tensor[];
  async: () => Promise<Tensor[]>;
}
const batch = 2;
const dim = 5;
const dstate = 3;
const seqlen = 7;
const A = rand([dim, dstate]);
const D = rand([dim]);
const cases: Case[] = [
  (() => {
    const state = () => rand([batch, dim, dstate]);
    const s0 = state();
    const x = rand([batch, dim]);
    const dt = rand([batch, dim]);
    const B = rand([batch, dstate]);
    const C = rand([batch, dstate]);
    const z = rand([batch, dim]);
    const dtBias = rand([dim]);
    const opts = { D, z, dtBias, dtSoftplus: true };
    // Each run updates its own copy of the state; the updated state is compared too.
    return {
      op: 'selectiveStateUpdate',
      sync: () => {
        const st = copy(s0);
        return [selectiveStateUpdateSync(st, x, dt, A, B, C, opts), st];
      },
      async: async () => {
        const st = copy(s0);
        return [await selectiveStateUpdate(st, x, dt, A, B, C, opts), st];
      },
    };
  })(),
  (() => {
    const u = rand([batch, dim, seqlen]);
    const delta = rand([batch, dim, seqlen]);
    const B = rand([batch, dstate, seqlen]);
    const C = rand([batch, dstate, seqlen]);
    const z = rand([batch, dim, seqlen]);
    const deltaBias = rand([dim]);
    const opts = { D, z, deltaBias, deltaSoftplus: true, returnLastState: true };
    return {
      op: 'selectiveScan',
      sync: () => {
        const r = selectiveScanSync(u, delta, A, B, C, opts);
        return [r.out, r.lastState as Tensor];
      },
      async: async () => {
        const r = await selectiveScan(u, delta, A, B, C, opts);
        return [r.out, r.lastState as Tensor];
      },
    };
  })(),
  (() => {
    const x = rand([batch, dim, seqlen]);
    const weight = rand([dim, 4]);
    const opts = { bias: rand([dim]), activation: 'silu' as const, returnFinalStates: true };
    return {
      op: 'causalConv1d',
      sync: () => {
        const r = causalConv1dSync(x, weight, opts);
        return [r.out, r.finalStates as Tensor];
      },
      async: async () => {
        const r = await causalConv1d(x, weight, opts);
        return [r.out, r.finalStates as Tensor];
      },
    };
  })(),
  (() => {
    const x = rand([3, 16]);
    return {
      op: 'hadamard',
      sync: () => [hadamardSync(x, { scale: 0.25 })],
      async: async () => [await hadamard(x, { scale: 0.25 })],
    };
  })(),
  (() => {
    const x = rand([3, 32]);
    const opts = { bits: 4 as const, granularity: 'group' as const, groupSize: 16, hadamard: true };
    return {
      op: 'quantize',
      sync: () => {
        const r = quantizeSync(x, opts);
        return [r.q, r.scale];
      },
      async: async () => {
        const r = await quantize(x, opts);
        return [r.q, r.scale];
      },
    };
  })(),
];

describe.each(cases)('$op', (c) => {
  it('gives the same bits positionally and by name, sync and async', async () => {
    const positional = c.sync();
    const positionalAsync = await c.async();
    const seen = byName(c.op);
    const named = c.sync();
    const namedAsync = await c.async();
    expect(seen.length).toBe(2);
    for (let i = 0; i < positional.length; i++) {
      const want = bits(positional[i]);
      expect(want.length).toBeGreaterThan(0);
      assertEqual(bits(positionalAsync[i]), want, `${c.op} async output ${i}`);
      assertEqual(bits(named[i]), want, `${c.op} by name output ${i}`);
      assertEqual(bits(namedAsync[i]), want, `${c.op} async by name output ${i}`);
    }
    for (const t of [...positional, ...positionalAsync, ...named, ...namedAsync]) t.dispose();
  });

  it("passes only keys in the op's key list", () => {
    const keys = (addon[c.op] as NativeOp).keys ?? [];
    const seen = byName(c.op);
    for (const t of c.sync()) t.dispose();
    expect(seen.length).toBe(1);
    for (const k of seen[0] as string[]) expect(keys, `${c.op} passes ${k}`).toContain(k);
  });
});

it('a positional call with its trailing values left out reads them as absent', () => {
  const x = rand([2, 8]);
  const full = hadamardSync(x);
  const out = hadamardSync(x, { scale: 3 });
  // hadamard(async, xMeta, xData, outMeta, outData): no scale, so the default 1.
  const keys = (addon.hadamard as NativeOp).keys as readonly string[];
  expect(keys.slice(0, 2)).toEqual(['x', 'out']);
  const [xMeta, xData] = x._native('hadamard', 'x') as unknown[];
  const [outMeta, outData] = out._native('hadamard', 'out') as unknown[];
  addon.hadamard?.(false, xMeta, xData, outMeta, outData);
  assertEqual(toF64(out), toF64(full), 'hadamard without scale');
  for (const t of [x, full, out]) t.dispose();
});

it('a positional host tensor without its data, or a malformed descriptor, is a RangeError naming op and argument', () => {
  const x = rand([2, 8]);
  const out = hadamardSync(x);
  const [xMeta, xData] = x._native('hadamard', 'x') as unknown[];
  const [outMeta, outData] = out._native('hadamard', 'out') as unknown[];
  expect(() => addon.hadamard?.(false, xMeta, undefined, outMeta, outData)).toThrow(
    /hadamard: x: host data must be a TypedArray/,
  );
  expect(() => addon.hadamard?.(false, xMeta, xData, [outData, outMeta], undefined)).toThrow(
    /hadamard: out: internal tensor descriptor expected/,
  );
  expect(() => addon.hadamard?.(false, xMeta, xData, 7, undefined)).toThrow(RangeError);
  for (const t of [x, out]) t.dispose();
});
