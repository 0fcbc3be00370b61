// Float64 reference of the Mamba and Mamba-2 language models (mamba_ssm's math): plain loops over one
// sequence at a time, no cleverness. Weights are the checkpoint's tensors by Hugging Face name, as
// float64 arrays; shapes are in the comments.

export interface RefConfig {
  modelType: 'mamba' | 'mamba2';
  dModel: number;
  nLayer: number;
  vocab: number;
  dInner: number;
  dState: number;
  dConv: number;
  eps: number;
  // mamba
  dtRank?: number;
  // mamba2
  nHeads?: number;
  headDim?: number;
  nGroups?: number;
  dtMin?: number;
  dtMax?: number;
  tied: boolean;
}

export type RefWeights = Record<string, Float64Array>;

/** Per-sequence recurrent state after a prefix: conv windows and SSM states of every layer. */
export interface RefState {
  // conv[l]: (convDim, dConv - 1) the last inputs of the conv, oldest first
  conv: Float64Array[];
  // ssm[l]: mamba (dInner, dState); mamba2 (nHeads, headDim, dState)
  ssm: Float64Array[];
}

const silu = (v: number) => v / (1 + Math.exp(-v));
const softplus = (v: number) => (v <= 20 ? Math.log1p(Math.exp(v)) : v);

function w(ws: RefWeights, name: string): Float64Array {
  const t = ws[name];
  if (t === undefined) throw new Error(`reference model: missing weight ${name}`);
  return t;
}

/** y (n) = W (n, k) @ x (k) + b (n). */
function matvec(W: Float64Array, x: ArrayLike<number>, n: number, k: number, b?: Float64Array): Float64Array {
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = b ? (b[i] as number) : 0;
    for (let j = 0; j < k; j++) s += (W[i * k + j] as number) * (x[j] as number);
    y[i] = s;
  }
  return y;
}

/** x (d) / rms(x) * weight (d). */
function rmsnorm(x: Float64Array, weight: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const r = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * r * (weight[i] as number));
}

export function emptyState(cfg: RefConfig): RefState {
  const convDim = cfg.modelType === 'mamba' ? cfg.dInner : cfg.dInner + 2 * (cfg.nGroups ?? 1) * cfg.dState;
  const ssmSize = cfg.modelType === 'mamba' ? cfg.dInner * cfg.dState : cfg.dInner * cfg.dState;
  return {
    conv: Array.from({ length: cfg.nLayer }, () => new Float64Array(convDim * (cfg.dConv - 1))),
    ssm: Array.from({ length: cfg.nLayer }, () => new Float64Array(ssmSize)),
  };
}

/** One mixer step for one token: hn (dModel) -> out (dModel), updating the layer's state. */
function mixerStep(cfg: RefConfig, ws: RefWeights, l: number, hn: Float64Array, st: RefState): Float64Array {
  const p = `backbone.layers.${l}.mixer.`;
  const { dModel, dInner, dState, dConv } = cfg;
  const inB = ws[`${p}in_proj.bias`];
  const outB = ws[`${p}out_proj.bias`];
  const convB = ws[`${p}conv1d.bias`];
  const convW = w(ws, `${p}conv1d.weight`); // (convDim, 1, dConv)
  const conv = st.conv[l] as Float64Array; // (convDim, dConv - 1)
  const ssm = st.ssm[l] as Float64Array;
  const causalConv = (xin: Float64Array): Float64Array => {
    const cd = xin.length;
    const out = new Float64Array(cd);
    for (let c = 0; c < cd; c++) {
      let s = convB ? (convB[c] as number) : 0;
      for (let j = 0; j < dConv - 1; j++) s += (convW[c * dConv + j] as number) * (conv[c * (dConv - 1) + j] as number);
      s += (convW[c * dConv + dConv - 1] as number) * (xin[c] as number);
      out[c] = silu(s);
      for (let j = 0; j < dConv - 2; j++) conv[c * (dConv - 1) + j] = conv[c * (dConv - 1) + j + 1] as number;
      if (dConv > 1) conv[c * (dConv - 1) + dConv - 2] = xin[c] as number;
    }
    return out;
  };
  if (cfg.modelType === 'mamba') {
    const r = cfg.dtRank as number;
    const xz = matvec(w(ws, `${p}in_proj.weight`), hn, 2 * dInner, dModel, inB); // (2 dInner)
    const x = causalConv(xz.subarray(0, dInner));
    const z = xz.subarray(dInner);
    const xdbl = matvec(w(ws, `${p}x_proj.weight`), x, r + 2 * dState, dInner); // (r + 2 dState)
    const dt = matvec(w(ws, `${p}dt_proj.weight`), xdbl.subarray(0, r), dInner, r, w(ws, `${p}dt_proj.bias`));
    const B = xdbl.subarray(r, r + dState);
    const C = xdbl.subarray(r + dState);
    const Alog = w(ws, `${p}A_log`); // (dInner, dState)
    const D = w(ws, `${p}D`); // (dInner)
    const y = new Float64Array(dInner);
    for (let c = 0; c < dInner; c++) {
      const d = softplus(dt[c] as number);
      let s = 0;
      for (let n = 0; n < dState; n++) {
        const A = -Math.exp(Alog[c * dState + n] as number);
        const h = Math.exp(d * A) * (ssm[c * dState + n] as number) + d * (B[n] as number) * (x[c] as number);
        ssm[c * dState + n] = h;
        s += h * (C[n] as number);
      }
      y[c] = (s + (D[c] as number) * (x[c] as number)) * silu(z[c] as number);
    }
    return matvec(w(ws, `${p}out_proj.weight`), y, dModel, dInner, outB);
  }
  const nh = cfg.nHeads as number;
  const hd = cfg.headDim as number;
  const g = cfg.nGroups as number;
  const convDim = dInner + 2 * g * dState;
  const proj = matvec(w(ws, `${p}in_proj.weight`), hn, 2 * dInner + 2 * g * dState + nh, dModel, inB);
  const z = proj.subarray(0, dInner);
  const xBC = causalConv(proj.subarray(dInner, dInner + convDim));
  const dtRaw = proj.subarray(dInner + convDim);
  const x = xBC.subarray(0, dInner); // (nh, hd)
  const B = xBC.subarray(dInner, dInner + g * dState); // (g, dState)
  const C = xBC.subarray(dInner + g * dState); // (g, dState)
  const Alog = w(ws, `${p}A_log`); // (nh)
  const D = w(ws, `${p}D`); // (nh)
  const dtBias = w(ws, `${p}dt_bias`); // (nh)
  const y = new Float64Array(dInner);
  for (let h = 0; h < nh; h++) {
    const grp = Math.floor(h / (nh / g));
    let d = softplus((dtRaw[h] as number) + (dtBias[h] as number));
    d = Math.min(Math.max(d, cfg.dtMin ?? 0), cfg.dtMax ?? Number.POSITIVE_INFINITY);
    const dA = Math.exp(d * -Math.exp(Alog[h] as number));
    for (let q = 0; q < hd; q++) {
      const xv = x[h * hd + q] as number;
      let s = 0;
      for (let n = 0; n < dState; n++) {
        const i = (h * hd + q) * dState + n;
        const v = dA * (ssm[i] as number) + d * xv * (B[grp * dState + n] as number);
        ssm[i] = v;
        s += v * (C[grp * dState + n] as number);
      }
      y[h * hd + q] = s + (D[h] as number) * xv;
    }
  }
  // Gated RMSNorm, each of the g groups on its own.
  const normW = w(ws, `${p}norm.weight`);
  const gs = dInner / g;
  const gated = y.map((v, i) => v * silu(z[i] as number));
  const out = new Float64Array(dInner);
  for (let k = 0; k < g; k++) {
    let ss = 0;
    for (let i = k * gs; i < (k + 1) * gs; i++) ss += (gated[i] as number) ** 2;
    const r = 1 / Math.sqrt(ss / gs + cfg.eps);
    for (let i = k * gs; i < (k + 1) * gs; i++) out[i] = (gated[i] as number) * r * (normW[i] as number);
  }
  return matvec(w(ws, `${p}out_proj.weight`), out, dModel, dInner, outB);
}

/**
 * Runs tokens through the model from `state` (updated in place), one token at a time; returns the
 * logits of every token, (tokens.length, vocab).
 */
export function refForward(cfg: RefConfig, ws: RefWeights, tokens: readonly number[], state: RefState): Float64Array {
  const { dModel, vocab } = cfg;
  const emb = w(ws, 'backbone.embeddings.weight'); // (vocab, dModel)
  const head = cfg.tied ? emb : w(ws, 'lm_head.weight'); // (vocab, dModel)
  const logits = new Float64Array(tokens.length * vocab);
  tokens.forEach((tok, t) => {
    let h: Float64Array = emb.slice(tok * dModel, (tok + 1) * dModel);
    let residual = new Float64Array(dModel);
    for (let l = 0; l < cfg.nLayer; l++) {
      residual = residual.map((v, i) => v + (h[i] as number));
      const hn = rmsnorm(residual, w(ws, `backbone.layers.${l}.norm.weight`), cfg.eps);
      h = mixerStep(cfg, ws, l, hn, state);
    }
    residual = residual.map((v, i) => v + (h[i] as number));
    const hn = rmsnorm(residual, w(ws, 'backbone.norm_f.weight'), cfg.eps);
    logits.set(matvec(head, hn, vocab, dModel), t * vocab);
  });
  return logits;
}

/** Greedy continuation: the argmax of each step's logits, fed back; returns the new tokens and their logits. */
export function refGreedy(
  cfg: RefConfig,
  ws: RefWeights,
  prompt: readonly number[],
  steps: number,
): { tokens: number[]; stepLogits: Float64Array[] } {
  const st = emptyState(cfg);
  let last: Float64Array = refForward(cfg, ws, prompt, st).slice((prompt.length - 1) * cfg.vocab);
  const tokens: number[] = [];
  const stepLogits: Float64Array[] = [];
  for (let i = 0; i < steps; i++) {
    stepLogits.push(last);
    let best = 0;
    for (let v = 1; v < cfg.vocab; v++) if ((last[v] as number) > (last[best] as number)) best = v;
    tokens.push(best);
    if (i + 1 < steps) last = refForward(cfg, ws, [best], st);
  }
  return { tokens, stepLogits };
}

/**
 * The token that a uniform draw u picks from logits (vocab): argmax at temperature 0 (first on ties);
 * else p = softmax(logits / T) and the first token whose cumulative mass exceeds u times the total,
 * in index order without filters; with them, the topK most likely kept (ties by index), then the
 * smallest prefix holding topP of their mass, accumulated in that (descending) order.
 */
export function refSample(logits: ArrayLike<number>, u: number, temperature: number, topK = 0, topP = 1): number {
  const v = logits.length;
  let best = 0;
  for (let i = 1; i < v; i++) if ((logits[i] as number) > (logits[best] as number)) best = i;
  if (temperature === 0) return best;
  const max = logits[best] as number;
  const p = Array.from({ length: v }, (_, i) => Math.exp(((logits[i] as number) - max) / temperature));
  if (topK === 0 && topP >= 1) {
    // No filter: the cumulative mass in index order.
    let x = u * p.reduce((a, b) => a + b, 0);
    for (let i = 0; i < v; i++) {
      x -= p[i] as number;
      if (x < 0) return i;
    }
    return v - 1;
  }
  const order = p.map((_, i) => i).sort((a, b) => (p[b] as number) - (p[a] as number) || a - b);
  const kept = order.slice(0, topK > 0 ? topK : v);
  let mass = kept.reduce((s, i) => s + (p[i] as number), 0);
  let n = kept.length;
  if (topP < 1) {
    let cum = 0;
    n = 0;
    for (const i of kept) {
      cum += p[i] as number;
      n++;
      if (cum >= topP * mass) break;
    }
    mass = cum;
  }
  let x = u * mass;
  for (let j = 0; j < n; j++) {
    x -= p[kept[j] as number] as number;
    if (x < 0) return kept[j] as number;
  }
  return kept[n - 1] as number;
}
