/**
 * ssmkit: state-space-model kernels for Node.js. Tensors, the backend, and the three op families.
 */
export { type BackendInfo, backend, getNumThreads, setNumThreads } from './backend';
export { type Device, emptyCache, synchronize, synchronizeSync } from './device';
export type { ArrayFor, DType } from './dtype';
export { SsmkitError } from './errors';
export * from './models/index';
export * from './ops/fft';
export * from './ops/quant';
export * from './ops/scan';
export { encodeSafetensors, loadSafetensors, loadSafetensorsSync, saveSafetensors } from './safetensors';
export { type MemoryInfo, memory, Tensor } from './tensor';
