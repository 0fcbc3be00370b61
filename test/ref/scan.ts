// Float64 references of the selective-scan family: plain loops, no cleverness. Shapes are row-major.

type Num = ArrayLike<number>;

export function softplusRef(x: number): number {
  return x <= 20 ? Math.log1p(Math.exp(x)) : x;
}

export function siluRef(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** True where step t of batch row b starts a new sequence (the state restarts from zero). */
function resets(seqIdx: Num | undefined, b: number, t: number, seqlen: number): boolean {
  return seqIdx !== undefined && t > 0 && seqIdx[b * seqlen + t] !== seqIdx[b * seqlen + t - 1];
}

export interface SelectiveScanRefArgs {
  batch: number;
  dim: number;
  seqlen: number;
  dstate: number;
  u: Num; // (batch, dim, seqlen)
  delta: Num; // (batch, dim, seqlen)
  A: Num; // (dim, dstate)
  B: Num; // (dim, dstate) when groupsB = 0, else (batch, groupsB, dstate, seqlen)
  C: Num; // (dim, dstate) when groupsC = 0, else (batch, groupsC, dstate, seqlen)
  groupsB: number;
  groupsC: number;
  D?: Num; // (dim)
  z?: Num; // (batch, dim, seqlen)
  deltaBias?: Num; // (dim)
  deltaSoftplus?: boolean;
  initialState?: Num; // (batch, dim, dstate)
  seqIdx?: Num; // (batch, seqlen)
}

/** out (batch, dim, seqlen), lastState (batch, dim, dstate). */
export function selectiveScanRef(a: SelectiveScanRefArgs): { out: Float64Array; lastState: Float64Array } {
  const { batch, dim, seqlen: L, dstate: N } = a;
  const out = new Float64Array(batch * dim * L);
  const last = new Float64Array(batch * dim * N);
  const h = new Float64Array(N);
  for (let b = 0; b < batch; b++) {
    for (let d = 0; d < dim; d++) {
      for (let n = 0; n < N; n++) h[n] = a.initialState ? (a.initialState[(b * dim + d) * N + n] as number) : 0;
      const gb = a.groupsB > 0 ? Math.floor(d / (dim / a.groupsB)) : 0;
      const gc = a.groupsC > 0 ? Math.floor(d / (dim / a.groupsC)) : 0;
      for (let t = 0; t < L; t++) {
        if (resets(a.seqIdx, b, t, L)) h.fill(0);
        const i = (b * dim + d) * L + t;
        let dt = (a.delta[i] as number) + (a.deltaBias ? (a.deltaBias[d] as number) : 0);
        if (a.deltaSoftplus) dt = softplusRef(dt);
        const u = a.u[i] as number;
        let y = 0;
        for (let n = 0; n < N; n++) {
          const bv = a.groupsB > 0 ? a.B[((b * a.groupsB + gb) * N + n) * L + t] : a.B[d * N + n];
          const cv = a.groupsC > 0 ? a.C[((b * a.groupsC + gc) * N + n) * L + t] : a.C[d * N + n];
          h[n] = Math.exp(dt * (a.A[d * N + n] as number)) * (h[n] as number) + dt * (bv as number) * u;
          y += (h[n] as number) * (cv as number);
        }
        if (a.D) y += (a.D[d] as number) * u;
        if (a.z) y *= siluRef(a.z[i] as number);
        out[i] = y;
      }
      for (let n = 0; n < N; n++) last[(b * dim + d) * N + n] = h[n] as number;
    }
  }
  return { out, lastState: last };
}

export interface StateUpdateRefArgs {
  batch: number;
  nheads: number; // Mamba-1 form: dim
  headdim: number; // Mamba-1 form: 1
  dstate: number;
  multihead: boolean;
  groups: number; // Mamba-1 form: 1
  state: Num; // (stateBatch, nheads, headdim, dstate); not modified
  x: Num; // (batch, nheads, headdim)
  dt: Num; // Mamba-1: (batch, dim); multi-head: (batch, nheads)
  A: Num; // Mamba-1: (dim, dstate); multi-head: (nheads)
  B: Num; // (batch, groups, dstate)
  C: Num; // (batch, groups, dstate)
  D?: Num; // (nheads)
  z?: Num; // like x
  dtBias?: Num; // (nheads)
  dtSoftplus?: boolean;
  stateBatchIndices?: Num; // (batch)
}

/** One decode step: out like x, and the state after it (a copy). */
export function selectiveStateUpdateRef(a: StateUpdateRefArgs): { out: Float64Array; state: Float64Array } {
  const { batch, nheads: H, headdim: P, dstate: N, groups: G } = a;
  const state = Float64Array.from(a.state);
  const out = new Float64Array(batch * H * P);
  for (let b = 0; b < batch; b++) {
    const sb = a.stateBatchIndices ? (a.stateBatchIndices[b] as number) : b;
    if (sb < 0) continue;
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / G));
      let dt = (a.dt[b * H + h] as number) + (a.dtBias ? (a.dtBias[h] as number) : 0);
      if (a.dtSoftplus) dt = softplusRef(dt);
      for (let p = 0; p < P; p++) {
        const xi = (b * H + h) * P + p;
        const x = a.x[xi] as number;
        let y = 0;
        for (let n = 0; n < N; n++) {
          const A = a.multihead ? (a.A[h] as number) : (a.A[h * N + n] as number);
          const si = ((sb * H + h) * P + p) * N + n;
          const s = Math.exp(dt * A) * (state[si] as number) + dt * (a.B[(b * G + g) * N + n] as number) * x;
          state[si] = s;
          y += s * (a.C[(b * G + g) * N + n] as number);
        }
        if (a.D) y += (a.D[h] as number) * x;
        if (a.z) y *= siluRef(a.z[xi] as number);
        out[xi] = y;
      }
    }
  }
  return { out, state };
}

export interface SsdScanRefArgs {
  batch: number;
  seqlen: number;
  nheads: number;
  headdim: number;
  groups: number;
  dstate: number;
  x: Num; // (batch, seqlen, nheads, headdim)
  dt: Num; // (batch, seqlen, nheads)
  A: Num; // (nheads)
  B: Num; // (batch, seqlen, groups, dstate)
  C: Num; // (batch, seqlen, groups, dstate)
  D?: Num; // (nheads) or (nheads, headdim) when dPerChannel
  dPerChannel?: boolean;
  z?: Num; // like x
  dtBias?: Num; // (nheads)
  dtSoftplus?: boolean;
  initialStates?: Num; // (batch, nheads, headdim, dstate)
  seqIdx?: Num; // (batch, seqlen)
}

/** out like x, finalStates (batch, nheads, headdim, dstate). dt is clamped at 0 as mamba_ssm's default dt_limit. */
export function ssdScanRef(a: SsdScanRefArgs): { out: Float64Array; finalStates: Float64Array } {
  const { batch, seqlen: L, nheads: H, headdim: P, groups: G, dstate: N } = a;
  const out = new Float64Array(batch * L * H * P);
  const fin = new Float64Array(batch * H * P * N);
  const s = new Float64Array(P * N);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / G));
      for (let i = 0; i < P * N; i++) s[i] = a.initialStates ? (a.initialStates[(b * H + h) * P * N + i] as number) : 0;
      for (let t = 0; t < L; t++) {
        if (resets(a.seqIdx, b, t, L)) s.fill(0);
        let dt = (a.dt[(b * L + t) * H + h] as number) + (a.dtBias ? (a.dtBias[h] as number) : 0);
        if (a.dtSoftplus) dt = softplusRef(dt);
        dt = Math.max(dt, 0);
        const decay = Math.exp(dt * (a.A[h] as number));
        const bc = ((b * L + t) * G + g) * N;
        for (let p = 0; p < P; p++) {
          const xi = ((b * L + t) * H + h) * P + p;
          const x = a.x[xi] as number;
          let y = 0;
          for (let n = 0; n < N; n++) {
            const v = decay * (s[p * N + n] as number) + dt * x * (a.B[bc + n] as number);
            s[p * N + n] = v;
            y += v * (a.C[bc + n] as number);
          }
          if (a.D) y += (a.dPerChannel ? (a.D[h * P + p] as number) : (a.D[h] as number)) * x;
          if (a.z) y *= siluRef(a.z[xi] as number);
          out[xi] = y;
        }
      }
      for (let i = 0; i < P * N; i++) fin[(b * H + h) * P * N + i] = s[i] as number;
    }
  }
  return { out, finalStates: fin };
}

export interface CausalConv1dRefArgs {
  batch: number;
  dim: number;
  seqlen: number;
  width: number;
  x: Num; // (batch, dim, seqlen)
  weight: Num; // (dim, width)
  bias?: Num; // (dim)
  silu?: boolean;
  initialStates?: Num; // (batch, dim, width - 1)
  seqIdx?: Num; // (batch, seqlen)
}

/**
 * out (batch, dim, seqlen), finalStates (batch, dim, width - 1). Step s < 0 is initialStates[s + width - 1]
 * and belongs to the sequence of step 0; a tap only reads steps of the output step's sequence.
 */
export function causalConv1dRef(a: CausalConv1dRefArgs): { out: Float64Array; finalStates: Float64Array } {
  const { batch, dim, seqlen: L, width: K } = a;
  const out = new Float64Array(batch * dim * L);
  const fin = new Float64Array(batch * dim * (K - 1));
  const seq = (b: number, s: number) => (a.seqIdx ? (a.seqIdx[b * L + Math.max(s, 0)] as number) : 0);
  const value = (b: number, d: number, s: number, owner: number) => {
    if (seq(b, s) !== owner) return 0;
    if (s >= 0) return a.x[(b * dim + d) * L + s] as number;
    return a.initialStates ? (a.initialStates[(b * dim + d) * (K - 1) + s + K - 1] as number) : 0;
  };
  for (let b = 0; b < batch; b++) {
    for (let d = 0; d < dim; d++) {
      for (let t = 0; t < L; t++) {
        let acc = a.bias ? (a.bias[d] as number) : 0;
        for (let k = 0; k < K; k++) acc += (a.weight[d * K + k] as number) * value(b, d, t - K + 1 + k, seq(b, t));
        out[(b * dim + d) * L + t] = a.silu ? siluRef(acc) : acc;
      }
      for (let j = 0; j < K - 1; j++) fin[(b * dim + d) * (K - 1) + j] = value(b, d, L - K + 1 + j, seq(b, L - 1));
    }
  }
  return { out, finalStates: fin };
}

export interface ConvUpdateRefArgs {
  batch: number;
  dim: number;
  seqlen: number;
  width: number;
  stateLen: number;
  x: Num; // (batch, dim, seqlen)
  convState: Num; // (stateBatch, dim, stateLen); not modified
  weight: Num; // (dim, width)
  bias?: Num; // (dim)
  silu?: boolean;
  convStateIndices?: Num; // (batch)
}

/** out (batch, dim, seqlen) and the state after the update (a copy). */
export function causalConv1dUpdateRef(a: ConvUpdateRefArgs): { out: Float64Array; convState: Float64Array } {
  const { batch, dim, seqlen: L, width: K, stateLen: S } = a;
  const state = Float64Array.from(a.convState);
  const out = new Float64Array(batch * dim * L);
  for (let b = 0; b < batch; b++) {
    const sb = a.convStateIndices ? (a.convStateIndices[b] as number) : b;
    if (sb < 0) continue;
    for (let d = 0; d < dim; d++) {
      const row: number[] = [];
      for (let i = 0; i < S; i++) row.push(state[(sb * dim + d) * S + i] as number);
      for (let t = 0; t < L; t++) row.push(a.x[(b * dim + d) * L + t] as number);
      for (let t = 0; t < L; t++) {
        let acc = a.bias ? (a.bias[d] as number) : 0;
        for (let k = 0; k < K; k++) acc += (a.weight[d * K + k] as number) * (row[S + t - K + 1 + k] as number);
        out[(b * dim + d) * L + t] = a.silu ? siluRef(acc) : acc;
      }
      for (let i = 0; i < S; i++) state[(sb * dim + d) * S + i] = row[L + i] as number;
    }
  }
  return { out, convState: state };
}
