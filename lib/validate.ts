/**
 * Argument checks shared by every op, run before any native work. Messages name the op, the argument,
 * what was expected and what was given.
 */
import type { DType } from './dtype';
import { describe, rangeError, typeError } from './errors';
import { Tensor } from './tensor';

/** Throws TypeError when an op gets more positional arguments than it takes. */
export function maxArgs(op: string, given: number, max: number): void {
  if (given > max) throw typeError(op, 'arguments', `at most ${max} arguments`, `${given}`);
}

/** A required tensor argument of one of `dtypes` and, when given, `rank` dimensions. */
export function tensorArg(
  op: string,
  arg: string,
  v: unknown,
  dtypes: readonly DType[],
  rank?: number | readonly number[],
): Tensor {
  if (!(v instanceof Tensor)) throw typeError(op, arg, `a Tensor of ${dtypes.join(' | ')}`, v);
  if (v.isDisposed) {
    const e = new TypeError(`${op}: ${arg}: the tensor has been disposed`);
    Object.defineProperty(e, 'code', { value: 'ERR_SSMKIT_DISPOSED', enumerable: true });
    throw e;
  }
  if (!dtypes.includes(v.dtype)) throw typeError(op, arg, `dtype ${dtypes.join(' | ')}`, v.dtype);
  if (rank !== undefined) {
    const ranks = typeof rank === 'number' ? [rank] : rank;
    if (!ranks.includes(v.shape.length)) {
      throw rangeError(op, arg, `${ranks.join(' or ')} dimensions`, `shape [${v.shape.join(', ')}]`);
    }
  }
  return v;
}

/** An optional tensor argument: undefined stays undefined, anything else is checked as tensorArg. */
export function optTensor(
  op: string,
  arg: string,
  v: unknown,
  dtypes: readonly DType[],
  rank?: number | readonly number[],
): Tensor | undefined {
  return v === undefined ? undefined : tensorArg(op, arg, v, dtypes, rank);
}

/** Throws RangeError unless `t` has exactly `shape`; `names` describes the dimensions. */
export function expectShape(op: string, arg: string, t: Tensor, shape: readonly number[], names?: string): void {
  const ok = t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]);
  if (!ok) {
    throw rangeError(op, arg, `shape [${shape.join(', ')}]${names ? ` (${names})` : ''}`, `[${t.shape.join(', ')}]`);
  }
}

/** The one device all present tensors share (-1 for the CPU); RangeError naming the first that differs. */
export function commonDevice(op: string, tensors: ReadonlyArray<readonly [string, Tensor | undefined]>): number {
  let dev: number | undefined;
  let first = '';
  for (const [name, t] of tensors) {
    if (t === undefined) continue;
    if (dev === undefined) {
      dev = t._deviceIndex;
      first = `${name} on ${t.device}`;
    } else if (t._deviceIndex !== dev) {
      throw rangeError(op, name, `a tensor on the same device as ${first}`, t.device);
    }
  }
  return dev ?? -1;
}

/** The options object (undefined -> {}); TypeError for a non-object or an unknown key. */
export function options<T extends object>(op: string, v: unknown, allowed: readonly (keyof T & string)[]): Partial<T> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v) || v instanceof Tensor) {
    throw typeError(op, 'options', 'an options object', v);
  }
  for (const k of Object.keys(v)) {
    if (!(allowed as readonly string[]).includes(k)) {
      throw typeError(op, `options.${k}`, `one of the options ${allowed.join(', ')}`, 'an unknown option');
    }
  }
  return v as Partial<T>;
}

export function intOption(op: string, name: string, v: unknown, fallback: number, min: number, max: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw typeError(op, name, `an integer in ${min}..${max}`, v);
  if (!Number.isInteger(v) || v < min || v > max) throw rangeError(op, name, `an integer in ${min}..${max}`, `${v}`);
  return v;
}

export function numberOption(op: string, name: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw typeError(op, name, 'a finite number', v);
  if (!Number.isFinite(v)) throw rangeError(op, name, 'a finite number', `${v}`);
  return v;
}

export function boolOption(op: string, name: string, v: unknown, fallback: boolean): boolean {
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') throw typeError(op, name, 'a boolean', describe(v));
  return v;
}

export function enumOption<T extends string | null>(op: string, name: string, v: unknown, values: readonly T[], fallback: T): T {
  if (v === undefined) return fallback;
  if (!(values as readonly unknown[]).includes(v)) {
    throw (typeof v === 'string' || v === null ? rangeError : typeError)(
      op,
      name,
      `one of ${values.map((x) => JSON.stringify(x)).join(', ')}`,
      typeof v === 'string' ? JSON.stringify(v) : v,
    );
  }
  return v as T;
}
