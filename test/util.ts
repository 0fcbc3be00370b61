/**
 * Test helpers shared by every op's tests: a seeded generator, random tensors whose float64 values are
 * exactly what the op sees (rounded to the dtype), comparison with one tolerance table per op, the
 * golden cases, the devices present, and environment settings scoped to one call.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expect } from 'vitest';
import { bf16ToF32, f16ToF32, fromNumbers, unpackInt4 } from '../dist/cjs/dtype.js';
import { backend, type DType, loadSafetensorsSync, Tensor } from '../dist/cjs/index.js';

export const GOLDEN_DIR = path.join(__dirname, 'golden');

/** A seeded generator (mulberry32) with uniform and normal draws. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  uniform(): number {
    this.#s = (this.#s + 0x6d2b79f5) >>> 0;
    let t = this.#s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal(): number {
    const u = Math.max(this.uniform(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.uniform() * (hi - lo + 1));
  }
}

/** The float64 values a tensor holds (float16/bfloat16 decoded, int4 unpacked). */
export function toF64(t: Tensor): Float64Array {
  const d = t.dataSync() as ArrayLike<number>;
  if (t.dtype === 'bfloat16') return Float64Array.from(d as Uint16Array, bf16ToF32);
  if (t.dtype === 'float16') return Float64Array.from(d as Uint16Array, f16ToF32);
  if (t.dtype === 'int4') return Float64Array.from(unpackInt4(d as Uint8Array, t.shape[t.shape.length - 1] ?? 1));
  return Float64Array.from(d);
}

/** A random CPU tensor of `f()` draws rounded to `dtype`, and the float64 values it holds. */
export function randTensor(shape: number[], dtype: DType, f: () => number): { t: Tensor; v: Float64Array } {
  const n = shape.reduce((a, b) => a * b, 1);
  const raw = new Float64Array(n);
  for (let i = 0; i < n; i++) raw[i] = f();
  const t = new Tensor(dtype, fromNumbers(dtype, raw) as never, shape);
  return { t, v: toF64(t) };
}

export interface Tolerance {
  rtol: number;
  atol: number;
}

/**
 * Asserts |a - e| <= atol + rtol * |e| everywhere (NaN never passes unless both are NaN). On failure
 * the message gives the first mismatching index, both values, the max abs error and relative L2 error.
 */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance, label = ''): void {
  expect(actual.length, `${label}: length`).toBe(expected.length);
  let first = -1;
  let maxAbs = 0;
  let num = 0;
  let den = 0;
  let bad = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i] as number;
    const e = expected[i] as number;
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    const err = Math.abs(a - e);
    if (!(err <= tol.atol + tol.rtol * Math.abs(e))) {
      if (first < 0) first = i;
      bad++;
    }
    if (err > maxAbs || Number.isNaN(err)) maxAbs = Number.isNaN(err) ? Number.NaN : Math.max(maxAbs, err);
    num += (a - e) * (a - e);
    den += e * e;
  }
  if (first >= 0) {
    const relL2 = Math.sqrt(num / Math.max(den, 1e-300));
    expect.fail(
      `${label}: ${bad} of ${expected.length} elements out of tolerance (rtol ${tol.rtol}, atol ${tol.atol}); ` +
        `first at index ${first}: got ${actual[first]}, expected ${expected[first]}; max abs error ${maxAbs}, relative L2 error ${relL2}`,
    );
  }
}

/** Bit-exact equality of two arrays, with the first difference reported. */
export function assertEqual(actual: ArrayLike<number>, expected: ArrayLike<number>, label = ''): void {
  expect(actual.length, `${label}: length`).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i] && !(Number.isNaN(actual[i]) && Number.isNaN(expected[i]))) {
      expect.fail(`${label}: first difference at index ${i}: got ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

export interface GoldenCase {
  file: string;
  op: string;
  options: Record<string, unknown>;
  tensors: Record<string, [string, number[]]>;
  note: string;
}

/** The golden cases of one op, from test/golden/index.json. */
export function goldenCases(op: string): GoldenCase[] {
  const all = JSON.parse(fs.readFileSync(path.join(GOLDEN_DIR, 'index.json'), 'utf8')) as GoldenCase[];
  return all.filter((c) => c.op === op);
}

export function loadGolden(file: string): Record<string, Tensor> {
  return loadSafetensorsSync(path.join(GOLDEN_DIR, file));
}

/** The devices every op test runs on: the CPU, and cuda:0 when the CUDA backend loaded. */
export function testDevices(): string[] {
  return backend().name === 'cuda' ? ['cpu', 'cuda:0'] : ['cpu'];
}

/** The float dtypes that activations take. */
export const DTYPES_FLOAT = ['float32', 'float16', 'bfloat16'] as const;
export type FloatDType = (typeof DTYPES_FLOAT)[number];

/** Sets environment variables (undefined: unset) and returns a function that restores them. */
function setEnv(vars: Record<string, string | undefined>): () => void {
  const prev: Record<string, string | undefined> = {};
  const put = (k: string, v: string | undefined) => {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  };
  for (const [k, v] of Object.entries(vars)) {
    prev[k] = process.env[k];
    put(k, v);
  }
  return () => {
    for (const [k, v] of Object.entries(prev)) put(k, v);
  };
}

/** Runs `f` with environment variables set (undefined: unset), restoring them afterwards. */
export function withEnvSync<T>(vars: Record<string, string | undefined>, f: () => T): T {
  const restore = setEnv(vars);
  try {
    return f();
  } finally {
    restore();
  }
}

/** {@link withEnvSync} for an async `f`: restored once its promise settles. */
export async function withEnv<T>(vars: Record<string, string | undefined>, f: () => Promise<T>): Promise<T> {
  const restore = setEnv(vars);
  try {
    return await f();
  } finally {
    restore();
  }
}
