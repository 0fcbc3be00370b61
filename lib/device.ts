/**
 * Device names ('cpu', 'cuda:N') and waiting for a device's queued work.
 */
import { cudaDeviceCount, native } from './backend';
import { fromNative, rangeError, SsmkitError, typeError } from './errors';

export type Device = 'cpu' | `cuda:${number}`;

/** Parses 'cpu', 'cuda' (device 0) or 'cuda:N' into a device index (-1 for the CPU). */
export function deviceIndex(op: string, arg: string, device: unknown): number {
  if (typeof device !== 'string') throw typeError(op, arg, "'cpu' or 'cuda:N'", device);
  if (device === 'cpu') return -1;
  const m = /^cuda(?::(\d+))?$/.exec(device);
  if (!m) throw rangeError(op, arg, "'cpu' or 'cuda:N'", JSON.stringify(device));
  const idx = m[1] === undefined ? 0 : Number(m[1]);
  const count = cudaDeviceCount();
  if (idx >= count) {
    throw new SsmkitError(
      `${op}: ${arg}: ${device} is not available (the ${count === 0 ? 'CPU backend is loaded; see backend().fallbackReason' : `machine has ${count} CUDA device(s)`})`,
      'ERR_SSMKIT_NO_CUDA',
    );
  }
  return idx;
}

export function deviceName(idx: number): Device {
  return idx < 0 ? 'cpu' : `cuda:${idx}`;
}

/**
 * Resolves when all work queued on the device has finished (what a benchmark calls before reading the
 * clock). CPU ops are finished when their promise resolves, so for 'cpu' it resolves at once.
 * @param device 'cpu', 'cuda' or 'cuda:N' (default: 'cuda:0' on the CUDA backend, else 'cpu').
 * @throws SsmkitError when the device reports an error.
 * @example
 * await synchronize('cuda:0');
 */
export async function synchronize(device?: string): Promise<void> {
  const idx = deviceIndex('synchronize', 'device', device ?? (cudaDeviceCount() > 0 ? 'cuda:0' : 'cpu'));
  if (idx < 0) return;
  try {
    await native().deviceSynchronize(idx, true);
  } catch (e) {
    throw fromNative(e, 'synchronize');
  }
}

/**
 * {@link synchronize} on the calling thread.
 * @example
 * synchronizeSync();
 */
export function synchronizeSync(device?: string): void {
  const idx = deviceIndex('synchronizeSync', 'device', device ?? (cudaDeviceCount() > 0 ? 'cuda:0' : 'cpu'));
  if (idx < 0) return;
  try {
    native().deviceSynchronize(idx, false);
  } catch (e) {
    throw fromNative(e, 'synchronizeSync');
  }
}

/**
 * Waits for the device's queued work, then hands the memory that disposed tensors left in the
 * allocation pool back to the driver (freed device memory otherwise stays pooled for reuse, as in
 * torch.cuda.empty_cache). A no-op for 'cpu'.
 * @param device 'cpu', 'cuda' or 'cuda:N' (default: 'cuda:0' on the CUDA backend, else 'cpu').
 * @throws SsmkitError when the device reports an error.
 * @example
 * emptyCache('cuda:0');
 */
export function emptyCache(device?: string): void {
  const idx = deviceIndex('emptyCache', 'device', device ?? (cudaDeviceCount() > 0 ? 'cuda:0' : 'cpu'));
  if (idx < 0) return;
  try {
    native().deviceTrim(idx);
  } catch (e) {
    throw fromNative(e, 'emptyCache');
  }
}
