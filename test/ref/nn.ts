// Float64 references of the model building blocks: plain loops, no cleverness.

/** out (M, N) = x (M, K) @ w (N, K)^T + bias (N). */
export function linearRef(x: Float64Array, w: Float64Array, m: number, k: number, n: number, bias?: Float64Array): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = bias ? (bias[j] as number) : 0;
      for (let kk = 0; kk < k; kk++) s += (x[i * k + kk] as number) * (w[j * k + kk] as number);
      out[i * n + j] = s;
    }
  }
  return out;
}

/** (batch, r, c) -> (batch, c, r). */
export function transposeRef(x: Float64Array, batch: number, r: number, c: number): Float64Array {
  const out = new Float64Array(batch * r * c);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < r; i++) {
      for (let j = 0; j < c; j++) out[(b * c + j) * r + i] = x[(b * r + i) * c + j] as number;
    }
  }
  return out;
}

/** Columns [c0, c0 + cols) of x (rows, n) -> (rows, cols). */
export function columnsRef(x: Float64Array, rows: number, n: number, c0: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) out[i * cols + j] = x[i * n + c0 + j] as number;
  }
  return out;
}

/** r = x + residual; out = r / sqrt(mean(r^2) + eps) * w, per row of d. Returns both. */
export function rmsNormRef(
  x: Float64Array,
  residual: Float64Array | undefined,
  w: Float64Array,
  rows: number,
  d: number,
  eps: number,
): { out: Float64Array; sum: Float64Array } {
  const out = new Float64Array(rows * d);
  const sum = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < d; i++) {
      const v = (x[r * d + i] as number) + (residual ? (residual[r * d + i] as number) : 0);
      sum[r * d + i] = v;
      ss += v * v;
    }
    const rstd = 1 / Math.sqrt(ss / d + eps);
    for (let i = 0; i < d; i++) out[r * d + i] = (sum[r * d + i] as number) * rstd * (w[i] as number);
  }
  return { out, sum };
}

/** g = y * silu(z); each group of d / groups channels normalized on its own; times w. (rows, d). */
export function gatedRmsNormRef(
  y: Float64Array,
  z: Float64Array | undefined,
  w: Float64Array,
  rows: number,
  d: number,
  groups: number,
  eps: number,
): Float64Array {
  const out = new Float64Array(rows * d);
  const gs = d / groups;
  for (let r = 0; r < rows; r++) {
    const g = new Float64Array(d);
    for (let i = 0; i < d; i++) {
      const zv = z ? (z[r * d + i] as number) : 0;
      g[i] = (y[r * d + i] as number) * (z ? zv / (1 + Math.exp(-zv)) : 1);
    }
    for (let k = 0; k < groups; k++) {
      let ss = 0;
      for (let i = k * gs; i < (k + 1) * gs; i++) ss += (g[i] as number) ** 2;
      const rstd = 1 / Math.sqrt(ss / gs + eps);
      for (let i = k * gs; i < (k + 1) * gs; i++) out[r * d + i] = (g[i] as number) * rstd * (w[i] as number);
    }
  }
  return out;
}

/** clamp(softplus(dt + bias), lo, hi), dt (rows, heads). */
export function dtLimitRef(
  dt: Float64Array,
  bias: Float64Array | undefined,
  heads: number,
  lo: number,
  hi: number,
): Float64Array {
  return dt.map((v, i) => {
    const x = v + (bias ? (bias[i % heads] as number) : 0);
    const s = x <= 20 ? Math.log1p(Math.exp(x)) : x;
    return Math.min(Math.max(s, lo), hi);
  });
}
