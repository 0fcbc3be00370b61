/** The model runner: Hugging Face Mamba and Mamba-2 checkpoints. */
export type { MambaConfig } from './config';
export {
  type ForwardOptions,
  type ForwardResult,
  type GenerateOptions,
  type GenerateResult,
  type LoadOptions,
  MambaModel,
  type ModelDType,
  type TokenEvent,
} from './mamba';
export type { QuantizeMode } from './quantized';
export { MambaState } from './state';
