// Float64 references of the FFT convolution family: plain loops, no cleverness. fftConv is evaluated
// at chosen output positions (a direct sum per position), so long rows can be sampled; the SSM runs
// its recurrence, an independent route to what ssmConv computes by convolution.
import { type Rng, randTensor, toF64 } from '../util';

/** erf in float64: its Taylor series for |x| < 3, the continued fraction of erfc beyond. */
export function erf(x: number): number {
  const a = Math.abs(x);
  if (a < 3) {
    let term = a;
    let sum = a;
    for (let n = 1; n < 200; n++) {
      term *= (-a * a) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * ((2 / Math.sqrt(Math.PI)) * sum);
  }
  // erfc(a) = exp(-a^2) / sqrt(pi) * 1 / (a + 1/2 / (a + 1 / (a + 3/2 / (a + 2 / ...)))), from the tail up.
  let f = a;
  for (let k = 60; k >= 1; k--) f = a + k / 2 / f;
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

export function gelu(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

export interface FftConvRefArgs {
  u: Float64Array; // (batch, H, L)
  k: Float64Array; // (H, Lk), or (H, 2, Lk) when bidirectional
  batch: number;
  H: number;
  L: number;
  Lk: number;
  D?: Float64Array; // (H,)
  pregate?: Float64Array; // (batch, H, L)
  postgate?: Float64Array; // (batch, H, L)
  gelu?: boolean;
  bidirectional?: boolean;
}

/**
 * fftConv's output at position t of row r = b * H + h:
 * v = u * pregate; y = sum_{s<=t} k0[t-s] v_s (+ sum_{s>=t} k1[s-t] v_s) + D v_t; gelu; * postgate.
 */
export function fftConvRefAt(a: FftConvRefArgs, r: number, t: number): number {
  const { L, Lk, H } = a;
  const h = r % H;
  const v = (s: number) => (a.u[r * L + s] as number) * (a.pregate ? (a.pregate[r * L + s] as number) : 1);
  const kStride = a.bidirectional ? 2 * Lk : Lk;
  let y = 0;
  for (let j = 0; j < Lk && j <= t; j++) y += (a.k[h * kStride + j] as number) * v(t - j);
  if (a.bidirectional) {
    for (let j = 0; j < Lk && t + j < L; j++) y += (a.k[h * kStride + Lk + j] as number) * v(t + j);
  }
  if (a.D) y += (a.D[h] as number) * v(t);
  if (a.gelu) y = gelu(y);
  if (a.postgate) y *= a.postgate[r * L + t] as number;
  return y;
}

/** The S4D modes of channel h: lambda = exp(dt A), B = (lambda - 1) / A (complex as [re, im]). */
function modes(logDt: Float64Array, A: Float64Array, h: number, n2: number) {
  const dt = Math.exp(logDt[h] as number);
  const out: { lr: number; li: number; br: number; bi: number; ar: number; ai: number }[] = [];
  for (let n = 0; n < n2; n++) {
    const ar = A[(h * n2 + n) * 2] as number;
    const ai = A[(h * n2 + n) * 2 + 1] as number;
    const mag = Math.exp(dt * ar);
    const lr = mag * Math.cos(dt * ai);
    const li = mag * Math.sin(dt * ai);
    // (lambda - 1) / A
    const den = ar * ar + ai * ai;
    const br = ((lr - 1) * ar + li * ai) / den;
    const bi = (li * ar - (lr - 1) * ai) / den;
    out.push({ lr, li, br, bi, ar, ai });
  }
  return { dt, modes: out };
}

/** k[h, l] = 2 Re sum_n C_n (exp(dt A_n) - 1) / A_n exp(dt A_n l). logDt (H,), A, C (H, N2, 2) -> (H, L). */
export function s4dKernelRef(logDt: Float64Array, A: Float64Array, C: Float64Array, H: number, n2: number, L: number) {
  const k = new Float64Array(H * L);
  for (let h = 0; h < H; h++) {
    const { dt, modes: md } = modes(logDt, A, h, n2);
    for (let n = 0; n < n2; n++) {
      const { br, bi, ar, ai } = md[n] as (typeof md)[number];
      const cr = C[(h * n2 + n) * 2] as number;
      const ci = C[(h * n2 + n) * 2 + 1] as number;
      // C' = C B
      const pr = cr * br - ci * bi;
      const pi = cr * bi + ci * br;
      for (let l = 0; l < L; l++) {
        const mag = Math.exp(dt * ar * l);
        const er = mag * Math.cos(dt * ai * l);
        const ei = mag * Math.sin(dt * ai * l);
        k[h * L + l] = (k[h * L + l] as number) + 2 * (pr * er - pi * ei);
      }
    }
  }
  return k;
}

/**
 * The diagonal SSM by its recurrence: x_t = lambda x_{t-1} + B u_t, y_t = 2 Re sum_n C_n x_t[n] + D u_t.
 * u (batch, H, L); logDt (H,); A, C (H, N2, 2); D (H,); initialState (batch, H, N2, 2)
 * -> out (batch, H, L), lastState (batch, H, N2, 2).
 */
export function ssmRecurrenceRef(
  u: Float64Array,
  logDt: Float64Array,
  A: Float64Array,
  C: Float64Array,
  batch: number,
  H: number,
  L: number,
  n2: number,
  D?: Float64Array,
  initialState?: Float64Array,
) {
  const out = new Float64Array(batch * H * L);
  const last = new Float64Array(batch * H * n2 * 2);
  for (let h = 0; h < H; h++) {
    const { modes: md } = modes(logDt, A, h, n2);
    for (let b = 0; b < batch; b++) {
      const r = b * H + h;
      const xr = new Float64Array(n2);
      const xi = new Float64Array(n2);
      if (initialState) {
        for (let n = 0; n < n2; n++) {
          xr[n] = initialState[(r * n2 + n) * 2] as number;
          xi[n] = initialState[(r * n2 + n) * 2 + 1] as number;
        }
      }
      for (let t = 0; t < L; t++) {
        const ut = u[r * L + t] as number;
        let y = D ? (D[h] as number) * ut : 0;
        for (let n = 0; n < n2; n++) {
          const { lr, li, br, bi } = md[n] as (typeof md)[number];
          const pr = xr[n] as number;
          const pi = xi[n] as number;
          xr[n] = lr * pr - li * pi + br * ut;
          xi[n] = lr * pi + li * pr + bi * ut;
          const cr = C[(h * n2 + n) * 2] as number;
          const ci = C[(h * n2 + n) * 2 + 1] as number;
          y += 2 * (cr * (xr[n] as number) - ci * (xi[n] as number));
        }
        out[r * L + t] = y;
      }
      for (let n = 0; n < n2; n++) {
        last[(r * n2 + n) * 2] = xr[n] as number;
        last[(r * n2 + n) * 2 + 1] = xi[n] as number;
      }
    }
  }
  return { out, lastState: last };
}

/**
 * S4D-style modes: C complex normal, A = -a + i b with b ~ pi n. 'mixed' memory draws logDt in
 * [log 1e-3, log 1e-1] and a in [0.05, 1.05]; 'long' memory (dt a <= 5e-3, so a state lives for
 * thousands of samples and every block sees its predecessors) draws logDt in [log 1e-3, log 1e-2] and
 * a in [0.01, 0.5].
 */
export function randomModes(rng: Rng, H: number, n2: number, memory: 'mixed' | 'long' = 'mixed') {
  const long = memory === 'long';
  const logDt = randTensor([H], 'float32', () => Math.log(1e-3) + rng.uniform() * Math.log(long ? 10 : 100));
  const A = randTensor([H, n2, 2], 'float32', () => 0);
  const a = A.t.dataSync() as Float32Array;
  for (let h = 0; h < H; h++) {
    for (let n = 0; n < n2; n++) {
      a[(h * n2 + n) * 2] = long ? -(0.01 + 0.49 * rng.uniform()) : -(0.05 + rng.uniform());
      a[(h * n2 + n) * 2 + 1] = Math.PI * n * (0.5 + rng.uniform());
    }
  }
  const C = randTensor([H, n2, 2], 'float32', () => rng.normal() * Math.SQRT1_2);
  return { logDt, A: { t: A.t, v: toF64(A.t) }, C };
}
