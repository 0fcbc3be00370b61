/**
 * The scan family's ops as the model runner calls them (SPEC.md signatures), resolved once: the
 * package's own ops when the addon has them, else the plain TypeScript versions in ./fallback.
 */
import { native } from '../backend';
import * as scan from '../ops/scan';
import type { Tensor } from '../tensor';
import {
  causalConv1dFallback,
  causalConv1dUpdateFallback,
  selectiveScanFallback,
  selectiveStateUpdateFallback,
  ssdScanFallback,
} from './fallback';

type Fn = (...args: unknown[]) => unknown;

function pick(name: string, nativeName: string, fallback: Fn): Fn {
  const op = (scan as unknown as Record<string, Fn | undefined>)[name];
  if (op !== undefined && typeof native()[nativeName] === 'function') return op;
  return (...args: unknown[]) => Promise.resolve(fallback(...args));
}

let resolved: Kernels | undefined;

export interface Kernels {
  causalConv1d(x: Tensor, weight: Tensor, o: object): Promise<{ out: Tensor; finalStates?: Tensor }>;
  causalConv1dUpdate(x: Tensor, convState: Tensor, weight: Tensor, o: object): Promise<Tensor>;
  selectiveScan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    o: object,
  ): Promise<{ out: Tensor; lastState?: Tensor }>;
  selectiveStateUpdate(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, o: object): Promise<Tensor>;
  ssdScan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, o: object): Promise<{ out: Tensor; finalStates?: Tensor }>;
}

export function kernels(): Kernels {
  if (resolved) return resolved;
  resolved = {
    causalConv1d: pick('causalConv1d', 'causalConv1d', causalConv1dFallback as Fn),
    causalConv1dUpdate: pick('causalConv1dUpdate', 'causalConv1dUpdate', causalConv1dUpdateFallback as Fn),
    selectiveScan: pick('selectiveScan', 'selectiveScan', selectiveScanFallback as Fn),
    selectiveStateUpdate: pick('selectiveStateUpdate', 'selectiveStateUpdate', selectiveStateUpdateFallback as Fn),
    ssdScan: pick('ssdScan', 'ssdScan', ssdScanFallback as Fn),
  } as unknown as Kernels;
  return resolved;
}
