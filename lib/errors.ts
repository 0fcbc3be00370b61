/**
 * Errors: SsmkitError for backend failures, and the one helper that builds every argument message as
 * "<op>: <argument>: expected <what>, got <what was given>".
 */

/** A backend failure (CUDA error, out of device memory, a missing binary) with a stable `code`. */
export class SsmkitError extends Error {
  readonly code: string;
  constructor(message: string, code: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SsmkitError';
    this.code = code;
  }
}

/** A short description of any value for error messages: `Tensor(float32, [2, 3], cpu)`, `string "x"`. */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'object') {
    const t = v as { dtype?: unknown; shape?: unknown; device?: unknown; constructor?: { name?: string } };
    if (t.constructor?.name === 'Tensor' && Array.isArray(t.shape)) {
      return `Tensor(${String(t.dtype)}, [${(t.shape as number[]).join(', ')}], ${String(t.device)})`;
    }
    if (ArrayBuffer.isView(v)) return `${t.constructor?.name ?? 'TypedArray'}(${(v as unknown as { length: number }).length})`;
    if (Array.isArray(v)) return `Array(${v.length})`;
    return t.constructor?.name ?? 'object';
  }
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  if (typeof v === 'bigint') return `bigint ${v}`;
  if (typeof v === 'function') return 'function';
  return `${typeof v} ${String(v)}`;
}

function message(op: string, arg: string, expected: string, got: string): string {
  return `${op}: ${arg}: expected ${expected}, got ${got}`;
}

export function typeError(op: string, arg: string, expected: string, got: unknown): TypeError {
  const e = new TypeError(message(op, arg, expected, typeof got === 'string' ? got : describe(got)));
  Object.defineProperty(e, 'code', { value: 'ERR_SSMKIT_DTYPE', enumerable: true });
  return e;
}

export function rangeError(op: string, arg: string, expected: string, got: unknown): RangeError {
  const e = new RangeError(message(op, arg, expected, typeof got === 'string' ? got : describe(got)));
  Object.defineProperty(e, 'code', { value: 'ERR_SSMKIT_SHAPE', enumerable: true });
  return e;
}

/**
 * Re-throws an error from the native addon in the caller's context: TypeError and RangeError keep
 * their class, anything else becomes SsmkitError with the native code; the stack is the caller's.
 * With `op`, the message starts with it (runtime calls such as copies do not know which op called them).
 */
export function fromNative(e: unknown, op?: string): Error {
  let out: Error;
  if (e instanceof SsmkitError) {
    out = e;
  } else if (e instanceof TypeError || e instanceof RangeError) {
    Error.captureStackTrace?.(e, fromNative);
    out = e;
  } else {
    const err = e as { message?: string; code?: string };
    out = new SsmkitError(err?.message ?? String(e), err?.code ?? 'ERR_SSMKIT_INTERNAL', { cause: e });
    Error.captureStackTrace?.(out, fromNative);
  }
  if (op !== undefined && !out.message.startsWith(`${op}: `)) out.message = `${op}: ${out.message}`;
  return out;
}
