// Runs one valid call of an op from cases.mjs with a given seed and prints a digest of its outputs; used
// to compare results across threads, workers and orders. Exported for test/concurrency.test.ts.
import { createHash } from 'node:crypto';
import { opCases } from './cases.mjs';

export function makeRng(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A digest of every tensor in an op's result (and of its in-place arguments). */
export function digest(s, result, args, inPlace) {
  const h = createHash('sha256');
  const add = (t) => {
    const d = t.dataSync();
    h.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  };
  const visit = (r) => {
    if (r instanceof s.Tensor) add(r);
    else if (r && typeof r === 'object') for (const k of Object.keys(r).sort()) if (r[k] instanceof s.Tensor) add(r[k]);
  };
  visit(result);
  for (const i of inPlace) add(args[i]);
  return h.digest('hex');
}

/** Builds the call of `op` for `seed`; returns { args, inPlace } with fresh tensors. */
export function buildCall(s, op, seed) {
  const c = opCases(s, makeRng(seed)).find((x) => x.op === op);
  if (!c) throw new Error(`no case for ${op}`);
  return { args: c.args(), inPlace: c.inPlace };
}

export function opNames(s) {
  return opCases(s, makeRng(1)).map((c) => c.op);
}
