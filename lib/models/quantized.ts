/**
 * Quantized linear layers (Quamba / Quamba2).
 */
import { SsmkitError } from '../errors';
import type { MambaModel } from './mamba';

export type QuantizeMode = 'w8a8' | 'w4a8' | 'w4a16';

export async function quantizeModelLinears(model: MambaModel, mode: QuantizeMode, calibration?: number[][]): Promise<void> {
  void model;
  void calibration;
  throw new SsmkitError(`MambaModel.load: quantize ${mode} is not available yet`, 'ERR_SSMKIT_UNSUPPORTED');
}
