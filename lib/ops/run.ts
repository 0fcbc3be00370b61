/**
 * Calls into the native addon for an op: async (a Promise, CPU work on the thread pool) or sync (the
 * calling thread). Outputs the op allocated are disposed when the call fails, so nothing leaks.
 */
import { native } from '../backend';
import { fromNative } from '../errors';
import type { Tensor } from '../tensor';

export function callSync(op: string, args: object, outs: readonly (Tensor | undefined)[]): void {
  try {
    native()[op](args, false);
  } catch (e) {
    for (const t of outs) t?.dispose();
    throw fromNative(e, op);
  }
}

export async function callAsync(op: string, args: object, outs: readonly (Tensor | undefined)[]): Promise<void> {
  try {
    await native()[op](args, true);
  } catch (e) {
    for (const t of outs) t?.dispose();
    throw fromNative(e, op);
  }
}
