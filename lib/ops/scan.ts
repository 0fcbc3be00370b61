/**
 * The selective-scan family (Mamba, Mamba-2): selectiveScan, selectiveStateUpdate, ssdScan,
 * causalConv1d and causalConv1dUpdate. Float inputs may be float32, float16 or bfloat16 (each on its
 * own); the math runs in float32; outputs take the main input's dtype; states are float32.
 *
 * Packed sequences: where `seqIdx` (int32, non-decreasing along each row) changes, the state restarts
 * from zero, so each sequence is processed as if alone. An initial state belongs to the sequence at
 * step 0; a final state is that of the sequence at the last step.
 */
import { type DType, FLOAT_DTYPES } from '../dtype';
import { rangeError } from '../errors';
import { Tensor } from '../tensor';
import {
  boolOption,
  commonDevice,
  enumOption,
  expectShape,
  intOption,
  maxArgs,
  options,
  optTensor,
  tensorArg,
} from '../validate';
import { callAsync, callSync } from './run';

const F32: readonly DType[] = ['float32'];
const I32: readonly DType[] = ['int32'];

function shapeStr(t: Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

// ---------------------------------------------------------------------------------------------------
// selectiveScan

export interface SelectiveScanOptions {
  /** `[dim]` float32: skip connection, `y += D * u`. */
  D?: Tensor;
  /** `[batch, dim, seqlen]`: gate, `out = y * silu(z)`. */
  z?: Tensor;
  /** `[dim]` float32, added to delta before the softplus. */
  deltaBias?: Tensor;
  /** Apply softplus to `delta + deltaBias` (default false). */
  deltaSoftplus?: boolean;
  /** `[batch, dim, dstate]` float32 (default zeros). */
  initialState?: Tensor;
  /** Also return the state after the last step (default false). */
  returnLastState?: boolean;
  /** `[batch, seqlen]` int32, non-decreasing: packed sequences, the state resets where it changes. */
  seqIdx?: Tensor;
}

export interface SelectiveScanResult {
  /** `[batch, dim, seqlen]`, u's dtype. */
  out: Tensor;
  /** `[batch, dim, dstate]` float32, when `returnLastState`. */
  lastState?: Tensor;
}

const SCAN_KEYS = ['D', 'z', 'deltaBias', 'deltaSoftplus', 'initialState', 'returnLastState', 'seqIdx'] as const;

function prepareSelectiveScan(op: string, u: unknown, delta: unknown, A: unknown, B: unknown, C: unknown, opts: unknown) {
  const o = options<SelectiveScanOptions>(op, opts, SCAN_KEYS);
  const ut = tensorArg(op, 'u', u, FLOAT_DTYPES, 3);
  const [batch, dim, seqlen] = ut.shape as [number, number, number];
  if (seqlen < 1) throw rangeError(op, 'u', 'seqlen >= 1 in [batch, dim, seqlen]', shapeStr(ut));
  const dt = tensorArg(op, 'delta', delta, FLOAT_DTYPES, 3);
  expectShape(op, 'delta', dt, ut.shape, "u's shape");
  const At = tensorArg(op, 'A', A, F32, 2);
  const dstate = At.shape[1] as number;
  expectShape(op, 'A', At, [dim, dstate], 'dim, dstate');
  if (dstate < 1) throw rangeError(op, 'A', 'dstate >= 1 in [dim, dstate]', shapeStr(At));
  const bc = (name: 'B' | 'C', v: unknown): [Tensor, number] => {
    const t = tensorArg(op, name, v, FLOAT_DTYPES, [2, 3, 4]);
    if (t.shape.length === 2) {
      expectShape(op, name, t, [dim, dstate], 'dim, dstate: constant');
      return [t, 0];
    }
    if (t.shape.length === 3) {
      expectShape(op, name, t, [batch, dstate, seqlen], 'batch, dstate, seqlen: variable');
      return [t, 1];
    }
    const groups = t.shape[1] as number;
    expectShape(op, name, t, [batch, groups, dstate, seqlen], 'batch, groups, dstate, seqlen: variable');
    if (groups < 1 || dim % groups !== 0) {
      throw rangeError(op, name, `a number of groups that divides dim ${dim}`, `${groups} groups`);
    }
    return [t, groups];
  };
  const [Bt, groupsB] = bc('B', B);
  const [Ct, groupsC] = bc('C', C);
  if (groupsB > 0 && groupsC > 0 && groupsB !== groupsC) {
    throw rangeError(op, 'C', `the groups of B (${groupsB})`, `${groupsC} groups`);
  }
  const D = optTensor(op, 'options.D', o.D, F32, 1);
  if (D) expectShape(op, 'options.D', D, [dim], 'dim');
  const z = optTensor(op, 'options.z', o.z, FLOAT_DTYPES, 3);
  if (z) expectShape(op, 'options.z', z, ut.shape, "u's shape");
  const deltaBias = optTensor(op, 'options.deltaBias', o.deltaBias, F32, 1);
  if (deltaBias) expectShape(op, 'options.deltaBias', deltaBias, [dim], 'dim');
  const init = optTensor(op, 'options.initialState', o.initialState, F32, 3);
  if (init) expectShape(op, 'options.initialState', init, [batch, dim, dstate], 'batch, dim, dstate');
  const seqIdx = optTensor(op, 'options.seqIdx', o.seqIdx, I32, 2);
  if (seqIdx) expectShape(op, 'options.seqIdx', seqIdx, [batch, seqlen], 'batch, seqlen');
  const deltaSoftplus = boolOption(op, 'options.deltaSoftplus', o.deltaSoftplus, false);
  const returnLastState = boolOption(op, 'options.returnLastState', o.returnLastState, false);
  const device = commonDevice(op, [
    ['u', ut],
    ['delta', dt],
    ['A', At],
    ['B', Bt],
    ['C', Ct],
    ['options.D', D],
    ['options.z', z],
    ['options.deltaBias', deltaBias],
    ['options.initialState', init],
    ['options.seqIdx', seqIdx],
  ]);
  const out = Tensor._alloc(op, ut.dtype, ut.shape, device);
  const lastState = returnLastState ? Tensor._alloc(op, 'float32', [batch, dim, dstate], device) : undefined;
  const args = {
    u: ut._native(op, 'u'),
    delta: dt._native(op, 'delta'),
    A: At._native(op, 'A'),
    B: Bt._native(op, 'B'),
    C: Ct._native(op, 'C'),
    D: D?._native(op, 'options.D'),
    z: z?._native(op, 'options.z'),
    deltaBias: deltaBias?._native(op, 'options.deltaBias'),
    initialState: init?._native(op, 'options.initialState'),
    seqIdx: seqIdx?._native(op, 'options.seqIdx'),
    out: out._native(op, 'out'),
    lastState: lastState?._native(op, 'lastState'),
    deltaSoftplus,
  };
  const result: SelectiveScanResult = lastState ? { out, lastState } : { out };
  return { args, result, outs: [out, lastState] };
}

/**
 * The Mamba selective scan (S6), as mamba_ssm's `selective_scan_fn`:
 * `dt = softplus(delta + deltaBias)` (softplus when asked), `h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t`,
 * `y_t = <h_t, C_t> + D u_t`, `out = y * silu(z)` when z is given.
 * @param u `[batch, dim, seqlen]` float32 | float16 | bfloat16, seqlen >= 1.
 * @param delta `[batch, dim, seqlen]` float32 | float16 | bfloat16.
 * @param A `[dim, dstate]` float32.
 * @param B `[dim, dstate]` (constant) or `[batch, groups, dstate, seqlen]` (variable; channel d uses group
 *   `floor(d / (dim / groups))`; `[batch, dstate, seqlen]` is taken as one group). Any float dtype.
 * @param C as B; when both are variable they have the same groups.
 * @param opts D, z, deltaBias, deltaSoftplus (false), initialState (zeros), returnLastState (false), seqIdx.
 * @returns `{ out }` `[batch, dim, seqlen]` in u's dtype, plus `lastState` `[batch, dim, dstate]` float32
 *   when asked.
 * @throws TypeError for a wrong dtype or option type; RangeError for a wrong shape or a decreasing seqIdx.
 * @example
 * const { out, lastState } = await selectiveScan(u, delta, A, B, C, { D, z, deltaBias, deltaSoftplus: true, returnLastState: true });
 */
export async function selectiveScan(
  u: Tensor,
  delta: Tensor,
  A: Tensor,
  B: Tensor,
  C: Tensor,
  opts: SelectiveScanOptions = {},
): Promise<SelectiveScanResult> {
  maxArgs('selectiveScan', arguments.length, 6);
  const { args, result, outs } = prepareSelectiveScan('selectiveScan', u, delta, A, B, C, opts);
  await callAsync('selectiveScan', args, outs);
  return result;
}

/**
 * {@link selectiveScan} on the calling thread.
 * @example
 * const { out } = selectiveScanSync(u, delta, A, B, C, { deltaSoftplus: true });
 */
export function selectiveScanSync(
  u: Tensor,
  delta: Tensor,
  A: Tensor,
  B: Tensor,
  C: Tensor,
  opts: SelectiveScanOptions = {},
): SelectiveScanResult {
  maxArgs('selectiveScanSync', arguments.length, 6);
  const { args, result, outs } = prepareSelectiveScan('selectiveScanSync', u, delta, A, B, C, opts);
  callSync('selectiveScan', args, outs);
  return result;
}

// ---------------------------------------------------------------------------------------------------
// selectiveStateUpdate

export interface SelectiveStateUpdateOptions {
  /** Mamba-1: `[dim]`; multi-head: `[nheads]`. float32. */
  D?: Tensor;
  /** x's shape: gate, `out = y * silu(z)`. */
  z?: Tensor;
  /** Mamba-1: `[dim]`; multi-head: `[nheads]`. float32, added to dt before the softplus. */
  dtBias?: Tensor;
  /** Apply softplus to `dt + dtBias` (default false). */
  dtSoftplus?: boolean;
  /** `[batch]` int32: row i updates state row `stateBatchIndices[i]`; a negative index is padding. */
  stateBatchIndices?: Tensor;
}

const UPDATE_KEYS = ['D', 'z', 'dtBias', 'dtSoftplus', 'stateBatchIndices'] as const;

function prepareStateUpdate(
  op: string,
  state: unknown,
  x: unknown,
  dt: unknown,
  A: unknown,
  B: unknown,
  C: unknown,
  opts: unknown,
) {
  const o = options<SelectiveStateUpdateOptions>(op, opts, UPDATE_KEYS);
  const st = tensorArg(op, 'state', state, F32, [3, 4]);
  const multihead = st.shape.length === 4;
  const stateBatch = st.shape[0] as number;
  const nheads = st.shape[1] as number;
  const headdim = multihead ? (st.shape[2] as number) : 1;
  const dstate = st.shape[st.shape.length - 1] as number;
  if (dstate < 1) throw rangeError(op, 'state', 'dstate >= 1 in its last dimension', shapeStr(st));
  const xt = tensorArg(op, 'x', x, FLOAT_DTYPES, multihead ? 3 : 2);
  const batch = xt.shape[0] as number;
  const perHead = [batch, nheads];
  expectShape(
    op,
    'x',
    xt,
    multihead ? [batch, nheads, headdim] : [batch, nheads],
    multihead ? 'batch, nheads, headdim' : 'batch, dim',
  );
  const dtt = tensorArg(op, 'dt', dt, FLOAT_DTYPES, 2);
  expectShape(op, 'dt', dtt, perHead, multihead ? 'batch, nheads' : 'batch, dim');
  const At = tensorArg(op, 'A', A, F32, multihead ? 1 : 2);
  expectShape(op, 'A', At, multihead ? [nheads] : [nheads, dstate], multihead ? 'nheads' : 'dim, dstate');
  let groups = 1;
  const bc = (name: 'B' | 'C', v: unknown): Tensor => {
    const t = tensorArg(op, name, v, FLOAT_DTYPES, multihead ? 3 : 2);
    if (!multihead) {
      expectShape(op, name, t, [batch, dstate], 'batch, dstate');
      return t;
    }
    const g = t.shape[1] as number;
    expectShape(op, name, t, [batch, g, dstate], 'batch, groups, dstate');
    if (g < 1 || nheads % g !== 0) throw rangeError(op, name, `a number of groups that divides nheads ${nheads}`, `${g} groups`);
    if (name === 'C' && g !== groups) throw rangeError(op, 'C', `the groups of B (${groups})`, `${g} groups`);
    groups = g;
    return t;
  };
  const Bt = bc('B', B);
  const Ct = bc('C', C);
  const D = optTensor(op, 'options.D', o.D, F32, 1);
  if (D) expectShape(op, 'options.D', D, [nheads], multihead ? 'nheads' : 'dim');
  const z = optTensor(op, 'options.z', o.z, FLOAT_DTYPES, xt.shape.length);
  if (z) expectShape(op, 'options.z', z, xt.shape, "x's shape");
  const dtBias = optTensor(op, 'options.dtBias', o.dtBias, F32, 1);
  if (dtBias) expectShape(op, 'options.dtBias', dtBias, [nheads], multihead ? 'nheads' : 'dim');
  const idx = optTensor(op, 'options.stateBatchIndices', o.stateBatchIndices, I32, 1);
  if (idx) expectShape(op, 'options.stateBatchIndices', idx, [batch], 'batch');
  else if (stateBatch !== batch) {
    throw rangeError(op, 'state', `a batch of ${batch} (x's) without options.stateBatchIndices`, shapeStr(st));
  }
  const dtSoftplus = boolOption(op, 'options.dtSoftplus', o.dtSoftplus, false);
  const device = commonDevice(op, [
    ['state', st],
    ['x', xt],
    ['dt', dtt],
    ['A', At],
    ['B', Bt],
    ['C', Ct],
    ['options.D', D],
    ['options.z', z],
    ['options.dtBias', dtBias],
    ['options.stateBatchIndices', idx],
  ]);
  const out = Tensor._alloc(op, xt.dtype, xt.shape, device);
  const args = {
    state: st._native(op, 'state'),
    x: xt._native(op, 'x'),
    dt: dtt._native(op, 'dt'),
    A: At._native(op, 'A'),
    B: Bt._native(op, 'B'),
    C: Ct._native(op, 'C'),
    D: D?._native(op, 'options.D'),
    z: z?._native(op, 'options.z'),
    dtBias: dtBias?._native(op, 'options.dtBias'),
    stateBatchIndices: idx?._native(op, 'options.stateBatchIndices'),
    out: out._native(op, 'out'),
    dtSoftplus,
  };
  return { args, out };
}

/**
 * One decode step of the selective scan; `state` is updated in place (mamba_ssm's
 * `selective_state_update`). The form follows state's rank.
 * - Mamba-1: state `[batch, dim, dstate]`; x, dt, z `[batch, dim]`; A `[dim, dstate]`; B, C
 *   `[batch, dstate]`; D, dtBias `[dim]`.
 * - Multi-head (Mamba-2): state `[batch, nheads, headdim, dstate]`; x, z `[batch, nheads, headdim]`; dt
 *   `[batch, nheads]`; A, D, dtBias `[nheads]`; B, C `[batch, groups, dstate]` (head h uses group
 *   `floor(h / (nheads / groups))`).
 *
 * With stateBatchIndices `[batch]` int32, row i uses state row `stateBatchIndices[i]` (state's batch may
 * then be larger); a negative index is padding: its output is 0 and no state is touched.
 * @returns out, x's shape and dtype.
 * @throws TypeError for a wrong dtype or option type; RangeError for a wrong shape, or indices out of
 *   range or repeated.
 * @example
 * const y = await selectiveStateUpdate(state, x, dt, A, B, C, { D, z, dtBias, dtSoftplus: true });
 */
export async function selectiveStateUpdate(
  state: Tensor,
  x: Tensor,
  dt: Tensor,
  A: Tensor,
  B: Tensor,
  C: Tensor,
  opts: SelectiveStateUpdateOptions = {},
): Promise<Tensor> {
  maxArgs('selectiveStateUpdate', arguments.length, 7);
  const { args, out } = prepareStateUpdate('selectiveStateUpdate', state, x, dt, A, B, C, opts);
  await callAsync('selectiveStateUpdate', args, [out]);
  return out;
}

/**
 * {@link selectiveStateUpdate} on the calling thread.
 * @example
 * const y = selectiveStateUpdateSync(state, x, dt, A, B, C, { dtSoftplus: true });
 */
export function selectiveStateUpdateSync(
  state: Tensor,
  x: Tensor,
  dt: Tensor,
  A: Tensor,
  B: Tensor,
  C: Tensor,
  opts: SelectiveStateUpdateOptions = {},
): Tensor {
  maxArgs('selectiveStateUpdateSync', arguments.length, 7);
  const { args, out } = prepareStateUpdate('selectiveStateUpdateSync', state, x, dt, A, B, C, opts);
  callSync('selectiveStateUpdate', args, [out]);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// ssdScan

export interface SsdScanOptions {
  /** Chunk length of the reference's chunked algorithm (default 256). The CPU kernel evaluates the
   * recurrence exactly, so results do not depend on it. */
  chunkSize?: number;
  /** `[nheads]` or `[nheads, headdim]` float32: `y += D * x`. */
  D?: Tensor;
  /** x's shape: gate, `out = y * silu(z)`. */
  z?: Tensor;
  /** `[nheads]` float32, added to dt before the softplus. */
  dtBias?: Tensor;
  /** Apply softplus to `dt + dtBias` (default false). */
  dtSoftplus?: boolean;
  /** `[batch, nheads, headdim, dstate]` float32 (default zeros). */
  initialStates?: Tensor;
  /** `[batch, seqlen]` int32, non-decreasing: packed sequences, the state resets where it changes. */
  seqIdx?: Tensor;
  /** Also return the states after the last step (default false). */
  returnFinalStates?: boolean;
}

export interface SsdScanResult {
  /** `[batch, seqlen, nheads, headdim]`, x's dtype. */
  out: Tensor;
  /** `[batch, nheads, headdim, dstate]` float32, when `returnFinalStates`. */
  finalStates?: Tensor;
}

const SSD_KEYS = ['chunkSize', 'D', 'z', 'dtBias', 'dtSoftplus', 'initialStates', 'seqIdx', 'returnFinalStates'] as const;

function prepareSsdScan(op: string, x: unknown, dt: unknown, A: unknown, B: unknown, C: unknown, opts: unknown) {
  const o = options<SsdScanOptions>(op, opts, SSD_KEYS);
  const xt = tensorArg(op, 'x', x, FLOAT_DTYPES, 4);
  const [batch, seqlen, nheads, headdim] = xt.shape as [number, number, number, number];
  if (seqlen < 1) throw rangeError(op, 'x', 'seqlen >= 1 in [batch, seqlen, nheads, headdim]', shapeStr(xt));
  const dtt = tensorArg(op, 'dt', dt, FLOAT_DTYPES, 3);
  expectShape(op, 'dt', dtt, [batch, seqlen, nheads], 'batch, seqlen, nheads');
  const At = tensorArg(op, 'A', A, F32, 1);
  expectShape(op, 'A', At, [nheads], 'nheads');
  const Bt = tensorArg(op, 'B', B, FLOAT_DTYPES, 4);
  const groups = Bt.shape[2] as number;
  const dstate = Bt.shape[3] as number;
  expectShape(op, 'B', Bt, [batch, seqlen, groups, dstate], 'batch, seqlen, groups, dstate');
  if (groups < 1 || nheads % groups !== 0) {
    throw rangeError(op, 'B', `a number of groups that divides nheads ${nheads}`, `${groups} groups`);
  }
  if (dstate < 1) throw rangeError(op, 'B', 'dstate >= 1 in [batch, seqlen, groups, dstate]', shapeStr(Bt));
  const Ct = tensorArg(op, 'C', C, FLOAT_DTYPES, 4);
  expectShape(op, 'C', Ct, Bt.shape, "B's shape");
  const chunkSize = intOption(op, 'options.chunkSize', o.chunkSize, 256, 1, 2 ** 31 - 1);
  const D = optTensor(op, 'options.D', o.D, F32, [1, 2]);
  if (D) {
    if (D.shape.length === 1) expectShape(op, 'options.D', D, [nheads], 'nheads');
    else expectShape(op, 'options.D', D, [nheads, headdim], 'nheads, headdim');
  }
  const z = optTensor(op, 'options.z', o.z, FLOAT_DTYPES, 4);
  if (z) expectShape(op, 'options.z', z, xt.shape, "x's shape");
  const dtBias = optTensor(op, 'options.dtBias', o.dtBias, F32, 1);
  if (dtBias) expectShape(op, 'options.dtBias', dtBias, [nheads], 'nheads');
  const init = optTensor(op, 'options.initialStates', o.initialStates, F32, 4);
  if (init) expectShape(op, 'options.initialStates', init, [batch, nheads, headdim, dstate], 'batch, nheads, headdim, dstate');
  const seqIdx = optTensor(op, 'options.seqIdx', o.seqIdx, I32, 2);
  if (seqIdx) expectShape(op, 'options.seqIdx', seqIdx, [batch, seqlen], 'batch, seqlen');
  const dtSoftplus = boolOption(op, 'options.dtSoftplus', o.dtSoftplus, false);
  const returnFinalStates = boolOption(op, 'options.returnFinalStates', o.returnFinalStates, false);
  const device = commonDevice(op, [
    ['x', xt],
    ['dt', dtt],
    ['A', At],
    ['B', Bt],
    ['C', Ct],
    ['options.D', D],
    ['options.z', z],
    ['options.dtBias', dtBias],
    ['options.initialStates', init],
    ['options.seqIdx', seqIdx],
  ]);
  const out = Tensor._alloc(op, xt.dtype, xt.shape, device);
  const finalStates = returnFinalStates ? Tensor._alloc(op, 'float32', [batch, nheads, headdim, dstate], device) : undefined;
  const args = {
    x: xt._native(op, 'x'),
    dt: dtt._native(op, 'dt'),
    A: At._native(op, 'A'),
    B: Bt._native(op, 'B'),
    C: Ct._native(op, 'C'),
    D: D?._native(op, 'options.D'),
    z: z?._native(op, 'options.z'),
    dtBias: dtBias?._native(op, 'options.dtBias'),
    initialStates: init?._native(op, 'options.initialStates'),
    seqIdx: seqIdx?._native(op, 'options.seqIdx'),
    out: out._native(op, 'out'),
    finalStates: finalStates?._native(op, 'finalStates'),
    chunkSize,
    dtSoftplus,
  };
  const result: SsdScanResult = finalStates ? { out, finalStates } : { out };
  return { args, result, outs: [out, finalStates] };
}

/**
 * The Mamba-2 SSD scan, as mamba_ssm's `mamba_chunk_scan_combined`: per head h,
 * `dt = max(softplus(dt + dtBias), 0)` (softplus when asked; the clamp is the reference's default
 * dt_limit), `h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t B_t^T`, `y_t = h_t C_t + D x_t`,
 * `out = y * silu(z)` when z is given. Head h uses group `floor(h / (nheads / groups))`. Any seqlen.
 * @param x `[batch, seqlen, nheads, headdim]` float32 | float16 | bfloat16.
 * @param dt `[batch, seqlen, nheads]`.
 * @param A `[nheads]` float32.
 * @param B `[batch, seqlen, groups, dstate]`.
 * @param C `[batch, seqlen, groups, dstate]`.
 * @param opts chunkSize (256), D, z, dtBias, dtSoftplus (false), initialStates (zeros), seqIdx,
 *   returnFinalStates (false).
 * @returns `{ out }` `[batch, seqlen, nheads, headdim]` in x's dtype, plus `finalStates`
 *   `[batch, nheads, headdim, dstate]` float32 when asked.
 * @throws TypeError for a wrong dtype or option type; RangeError for a wrong shape or a decreasing seqIdx.
 * @example
 * const { out, finalStates } = await ssdScan(x, dt, A, B, C, { D, z, dtBias, dtSoftplus: true, returnFinalStates: true });
 */
export async function ssdScan(
  x: Tensor,
  dt: Tensor,
  A: Tensor,
  B: Tensor,
  C: Tensor,
  opts: SsdScanOptions = {},
): Promise<SsdScanResult> {
  maxArgs('ssdScan', arguments.length, 6);
  const { args, result, outs } = prepareSsdScan('ssdScan', x, dt, A, B, C, opts);
  await callAsync('ssdScan', args, outs);
  return result;
}

/**
 * {@link ssdScan} on the calling thread.
 * @example
 * const { out } = ssdScanSync(x, dt, A, B, C, { dtSoftplus: true });
 */
export function ssdScanSync(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, opts: SsdScanOptions = {}): SsdScanResult {
  maxArgs('ssdScanSync', arguments.length, 6);
  const { args, result, outs } = prepareSsdScan('ssdScanSync', x, dt, A, B, C, opts);
  callSync('ssdScan', args, outs);
  return result;
}

// ---------------------------------------------------------------------------------------------------
// causalConv1d, causalConv1dUpdate

/** `'silu'` (alias `'swish'`) or none. */
export type ConvActivation = null | 'silu' | 'swish';
const ACTIVATIONS: readonly ConvActivation[] = [null, 'silu', 'swish'];

export interface CausalConv1dOptions {
  /** `[dim]`. */
  bias?: Tensor;
  /** null (default) or 'silu'. */
  activation?: ConvActivation;
  /** `[batch, dim, width - 1]` float32: the inputs before step 0 (default zeros). */
  initialStates?: Tensor;
  /** Also return the last width - 1 inputs (default false). */
  returnFinalStates?: boolean;
  /** `[batch, seqlen]` int32, non-decreasing: packed sequences, no tap crosses a change. */
  seqIdx?: Tensor;
}

export interface CausalConv1dResult {
  /** `[batch, dim, seqlen]`, x's dtype. */
  out: Tensor;
  /** `[batch, dim, width - 1]` float32, when `returnFinalStates`. */
  finalStates?: Tensor;
}

const CONV_KEYS = ['bias', 'activation', 'initialStates', 'returnFinalStates', 'seqIdx'] as const;

function weightArg(op: string, weight: unknown, dim: number): [Tensor, number] {
  const w = tensorArg(op, 'weight', weight, FLOAT_DTYPES, 2);
  const width = w.shape[1] as number;
  expectShape(op, 'weight', w, [dim, width], 'dim, width');
  if (width < 1) throw rangeError(op, 'weight', 'width >= 1 in [dim, width]', shapeStr(w));
  return [w, width];
}

function prepareCausalConv1d(op: string, x: unknown, weight: unknown, opts: unknown) {
  const o = options<CausalConv1dOptions>(op, opts, CONV_KEYS);
  const xt = tensorArg(op, 'x', x, FLOAT_DTYPES, 3);
  const [batch, dim, seqlen] = xt.shape as [number, number, number];
  if (seqlen < 1) throw rangeError(op, 'x', 'seqlen >= 1 in [batch, dim, seqlen]', shapeStr(xt));
  const [w, width] = weightArg(op, weight, dim);
  const bias = optTensor(op, 'options.bias', o.bias, FLOAT_DTYPES, 1);
  if (bias) expectShape(op, 'options.bias', bias, [dim], 'dim');
  const activation = enumOption(op, 'options.activation', o.activation, ACTIVATIONS, null);
  const init = optTensor(op, 'options.initialStates', o.initialStates, F32, 3);
  if (init) expectShape(op, 'options.initialStates', init, [batch, dim, width - 1], 'batch, dim, width - 1');
  const seqIdx = optTensor(op, 'options.seqIdx', o.seqIdx, I32, 2);
  if (seqIdx) expectShape(op, 'options.seqIdx', seqIdx, [batch, seqlen], 'batch, seqlen');
  const returnFinalStates = boolOption(op, 'options.returnFinalStates', o.returnFinalStates, false);
  const device = commonDevice(op, [
    ['x', xt],
    ['weight', w],
    ['options.bias', bias],
    ['options.initialStates', init],
    ['options.seqIdx', seqIdx],
  ]);
  const out = Tensor._alloc(op, xt.dtype, xt.shape, device);
  const finalStates = returnFinalStates ? Tensor._alloc(op, 'float32', [batch, dim, width - 1], device) : undefined;
  const args = {
    x: xt._native(op, 'x'),
    weight: w._native(op, 'weight'),
    bias: bias?._native(op, 'options.bias'),
    initialStates: init?._native(op, 'options.initialStates'),
    seqIdx: seqIdx?._native(op, 'options.seqIdx'),
    out: out._native(op, 'out'),
    finalStates: finalStates?._native(op, 'finalStates'),
    silu: activation !== null,
  };
  const result: CausalConv1dResult = finalStates ? { out, finalStates } : { out };
  return { args, result, outs: [out, finalStates] };
}

/**
 * Depthwise causal 1-D convolution, as Dao-AILab's `causal_conv1d_fn`:
 * `out_t = act(bias + sum_k weight[k] x_{t - width + 1 + k})`, with the inputs before step 0 taken from
 * initialStates (zeros by default).
 * @param x `[batch, dim, seqlen]` float32 | float16 | bfloat16, seqlen >= 1.
 * @param weight `[dim, width]`, any float dtype, width >= 1 (2..8 in Mamba).
 * @param opts bias, activation (null | 'silu'), initialStates, returnFinalStates (false), seqIdx.
 * @returns `{ out }` `[batch, dim, seqlen]` in x's dtype, plus `finalStates` `[batch, dim, width - 1]`
 *   float32 when asked (with seqIdx, the inputs of the last sequence, zeros before its start).
 * @throws TypeError for a wrong dtype or option type; RangeError for a wrong shape, an unknown
 *   activation or a decreasing seqIdx.
 * @example
 * const { out } = await causalConv1d(x, weight, { bias, activation: 'silu' });
 */
export async function causalConv1d(x: Tensor, weight: Tensor, opts: CausalConv1dOptions = {}): Promise<CausalConv1dResult> {
  maxArgs('causalConv1d', arguments.length, 3);
  const { args, result, outs } = prepareCausalConv1d('causalConv1d', x, weight, opts);
  await callAsync('causalConv1d', args, outs);
  return result;
}

/**
 * {@link causalConv1d} on the calling thread.
 * @example
 * const { out } = causalConv1dSync(x, weight, { activation: 'silu' });
 */
export function causalConv1dSync(x: Tensor, weight: Tensor, opts: CausalConv1dOptions = {}): CausalConv1dResult {
  maxArgs('causalConv1dSync', arguments.length, 3);
  const { args, result, outs } = prepareCausalConv1d('causalConv1dSync', x, weight, opts);
  callSync('causalConv1d', args, outs);
  return result;
}

export interface CausalConv1dUpdateOptions {
  /** `[dim]`. */
  bias?: Tensor;
  /** null (default) or 'silu'. */
  activation?: ConvActivation;
  /** `[batch]` int32: row i uses convState row `convStateIndices[i]`; a negative index is padding. */
  convStateIndices?: Tensor;
}

const CONV_UPDATE_KEYS = ['bias', 'activation', 'convStateIndices'] as const;

function prepareConvUpdate(op: string, x: unknown, convState: unknown, weight: unknown, opts: unknown) {
  const o = options<CausalConv1dUpdateOptions>(op, opts, CONV_UPDATE_KEYS);
  const xt = tensorArg(op, 'x', x, FLOAT_DTYPES, [2, 3]);
  const [batch, dim] = xt.shape as [number, number];
  const seqlen = xt.shape.length === 3 ? (xt.shape[2] as number) : 1;
  if (seqlen < 1) throw rangeError(op, 'x', 'seqlen >= 1 in [batch, dim, seqlen]', shapeStr(xt));
  const st = tensorArg(op, 'convState', convState, F32, 3);
  const [w, width] = weightArg(op, weight, dim);
  const stateLen = st.shape[2] as number;
  expectShape(op, 'convState', st, [st.shape[0] as number, dim, stateLen], 'batch, dim, stateLen');
  if (stateLen < width - 1) {
    throw rangeError(op, 'convState', `stateLen >= width - 1 = ${width - 1} in [batch, dim, stateLen]`, shapeStr(st));
  }
  const bias = optTensor(op, 'options.bias', o.bias, FLOAT_DTYPES, 1);
  if (bias) expectShape(op, 'options.bias', bias, [dim], 'dim');
  const activation = enumOption(op, 'options.activation', o.activation, ACTIVATIONS, null);
  const idx = optTensor(op, 'options.convStateIndices', o.convStateIndices, I32, 1);
  if (idx) expectShape(op, 'options.convStateIndices', idx, [batch], 'batch');
  else if (st.shape[0] !== batch) {
    throw rangeError(op, 'convState', `a batch of ${batch} (x's) without options.convStateIndices`, shapeStr(st));
  }
  const device = commonDevice(op, [
    ['x', xt],
    ['convState', st],
    ['weight', w],
    ['options.bias', bias],
    ['options.convStateIndices', idx],
  ]);
  const out = Tensor._alloc(op, xt.dtype, xt.shape, device);
  const args = {
    x: xt._native(op, 'x'),
    convState: st._native(op, 'convState'),
    weight: w._native(op, 'weight'),
    bias: bias?._native(op, 'options.bias'),
    convStateIndices: idx?._native(op, 'options.convStateIndices'),
    out: out._native(op, 'out'),
    silu: activation !== null,
  };
  return { args, out };
}

/**
 * Streaming causal convolution, as Dao-AILab's `causal_conv1d_update`: convolves the `seqlen` new steps
 * of x after the last width - 1 entries of convState, then shifts them into convState (in place).
 * @param x `[batch, dim, seqlen]` (or `[batch, dim]` for one step) float32 | float16 | bfloat16.
 * @param convState `[batch, dim, stateLen]` float32, stateLen >= width - 1; updated in place.
 * @param weight `[dim, width]`, any float dtype.
 * @param opts bias, activation (null | 'silu'), convStateIndices (`[batch]` int32; row i uses state row
 *   `convStateIndices[i]`, a negative index is padding: output 0, no state touched).
 * @returns out, x's shape and dtype.
 * @throws TypeError for a wrong dtype or option type; RangeError for a wrong shape, or indices out of
 *   range or repeated.
 * @example
 * const y = await causalConv1dUpdate(xStep, convState, weight, { bias, activation: 'silu' });
 */
export async function causalConv1dUpdate(
  x: Tensor,
  convState: Tensor,
  weight: Tensor,
  opts: CausalConv1dUpdateOptions = {},
): Promise<Tensor> {
  maxArgs('causalConv1dUpdate', arguments.length, 4);
  const { args, out } = prepareConvUpdate('causalConv1dUpdate', x, convState, weight, opts);
  await callAsync('causalConv1dUpdate', args, [out]);
  return out;
}

/**
 * {@link causalConv1dUpdate} on the calling thread.
 * @example
 * const y = causalConv1dUpdateSync(xStep, convState, weight, { activation: 'silu' });
 */
export function causalConv1dUpdateSync(
  x: Tensor,
  convState: Tensor,
  weight: Tensor,
  opts: CausalConv1dUpdateOptions = {},
): Tensor {
  maxArgs('causalConv1dUpdateSync', arguments.length, 4);
  const { args, out } = prepareConvUpdate('causalConv1dUpdateSync', x, convState, weight, opts);
  callSync('causalConv1dUpdate', args, [out]);
  return out;
}
