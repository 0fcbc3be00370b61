// Float64 references of the quantization family: plain loops, no cleverness. Where an op is defined by
// float32 arithmetic (the scale amax / 127, the quotient x / scale before rounding), the reference
// rounds that one step to float32 with Math.fround, so that integer results can be compared exactly.

/** H_m sign patterns ('-' = -1) of Dao-AILab's fast-hadamard-transform, rows i, columns j. */
export const HADAMARD_SIGNS: Readonly<Record<number, readonly string[]>> = {
  12: [
    '+-++++++++++',
    '--+-+-+-+-+-',
    '+++-++----++',
    '+---+--+-++-',
    '+++++-++----',
    '+-+---+--+-+',
    '++--+++-++--',
    '+--++---+--+',
    '++----+++-++',
    '+--+-++---+-',
    '++++----+++-',
    '+-+--+-++---',
  ],
  20: [
    '+----+----++--++-++-',
    '-+----+---+++---+-++',
    '--+----+---+++-+-+-+',
    '---+----+---+++++-+-',
    '----+----++--++-++-+',
    '-+++++-----+--+++--+',
    '+-+++-+---+-+--+++--',
    '++-++--+---+-+--+++-',
    '+++-+---+---+-+--+++',
    '++++-----++--+-+--++',
    '--++-+-++-+-----++++',
    '---++-+-++-+---+-+++',
    '+---++-+-+--+--++-++',
    '++---++-+----+-+++-+',
    '-++---++-+----+++++-',
    '-+--+--++-+----+----',
    '+-+-----++-+----+---',
    '-+-+-+---+--+----+--',
    '--+-+++------+----+-',
    '+--+--++------+----+',
  ],
  28: [
    '+------++----++-+--+-+--++--',
    '-+-----+++-----+-+--+-+--++-',
    '--+-----+++---+-+-+----+--++',
    '---+-----+++---+-+-+-+--+--+',
    '----+-----+++---+-+-+++--+--',
    '-----+-----++++--+-+--++--+-',
    '------++----++-+--+-+--++--+',
    '--++++-+-------++--+++-+--+-',
    '---++++-+-----+-++--+-+-+--+',
    '+---+++--+----++-++--+-+-+--',
    '++---++---+----++-++--+-+-+-',
    '+++---+----+----++-++--+-+-+',
    '++++--------+-+--++-++--+-+-',
    '-++++--------+++--++--+--+-+',
    '-+-++-++--++--+--------++++-',
    '+-+-++--+--++--+--------++++',
    '-+-+-++--+--++--+----+---+++',
    '+-+-+-++--+--+---+---++---++',
    '++-+-+-++--+------+--+++---+',
    '-++-+-+-++--+------+-++++---',
    '+-++-+---++--+------+-++++--',
    '-++--++-+-++-+++----++------',
    '+-++--++-+-++-+++-----+-----',
    '++-++---+-+-++-+++-----+----',
    '-++-++-+-+-+-+--+++-----+---',
    '--++-++++-+-+----+++-----+--',
    '+--++-+-++-+-+----+++-----+-',
    '++--++-+-++-+-+----++------+',
  ],
  40: [
    '+-------------------+-------------------',
    '++-++----+-+-++++--+++-++----+-+-++++--+',
    '+++-++----+-+-++++--+++-++----+-+-++++--',
    '+-++-++----+-+-++++-+-++-++----+-+-++++-',
    '+--++-++----+-+-+++++--++-++----+-+-++++',
    '++--++-++----+-+-+++++--++-++----+-+-+++',
    '+++--++-++----+-+-+++++--++-++----+-+-++',
    '++++--++-++----+-+-+++++--++-++----+-+-+',
    '+++++--++-++----+-+-+++++--++-++----+-+-',
    '+-++++--++-++----+-++-++++--++-++----+-+',
    '++-++++--++-++----+-++-++++--++-++----+-',
    '+-+-++++--++-++----++-+-++++--++-++----+',
    '++-+-++++--++-++----++-+-++++--++-++----',
    '+-+-+-++++--++-++---+-+-+-++++--++-++---',
    '+--+-+-++++--++-++--+--+-+-++++--++-++--',
    '+---+-+-++++--++-++-+---+-+-++++--++-++-',
    '+----+-+-++++--++-+++----+-+-++++--++-++',
    '++----+-+-++++--++-+++----+-+-++++--++-+',
    '+++----+-+-++++--++-+++----+-+-++++--++-',
    '+-++----+-+-++++--+++-++----+-+-++++--++',
    '+--------------------+++++++++++++++++++',
    '++-++----+-+-++++--+--+--++++-+-+----++-',
    '+++-++----+-+-++++-----+--++++-+-+----++',
    '+-++-++----+-+-++++--+--+--++++-+-+----+',
    '+--++-++----+-+-++++-++--+--++++-+-+----',
    '++--++-++----+-+-+++--++--+--++++-+-+---',
    '+++--++-++----+-+-++---++--+--++++-+-+--',
    '++++--++-++----+-+-+----++--+--++++-+-+-',
    '+++++--++-++----+-+------++--+--++++-+-+',
    '+-++++--++-++----+-+-+----++--+--++++-+-',
    '++-++++--++-++----+---+----++--+--++++-+',
    '+-+-++++--++-++----+-+-+----++--+--++++-',
    '++-+-++++--++-++------+-+----++--+--++++',
    '+-+-+-++++--++-++----+-+-+----++--+--+++',
    '+--+-+-++++--++-++---++-+-+----++--+--++',
    '+---+-+-++++--++-++--+++-+-+----++--+--+',
    '+----+-+-++++--++-++-++++-+-+----++--+--',
    '++----+-+-++++--++-+--++++-+-+----++--+-',
    '+++----+-+-++++--++----++++-+-+----++--+',
    '+-++----+-+-++++--++-+--++++-+-+----++--',
  ],
};

function popcountParity(b: number): number {
  let parity = 0;
  while (b) {
    parity ^= b & 1;
    b >>>= 1;
  }
  return parity;
}

/**
 * Hadamard transform of each row, times scale. x: (rows, n) -> (rows, n). n = m * p, p a power of two,
 * m in {1, 12, 20, 28, 40} (40 before 20 where both fit): out[i * p + a] = sum_{j, b} H_m[i][j] * H_p[a][b] * x[j * p + b], with
 * H_p[a][b] = (-1)^popcount(a & b) (Sylvester order).
 */
export function hadamardRef(x: Float64Array, rows: number, n: number, scale: number): Float64Array {
  // The first of 1, 12, 40, 20, 28 that leaves a power of two (20 * 2^k, k >= 1, is 40 * 2^(k-1)).
  let m = 1;
  for (const f of [1, 12, 40, 20, 28]) {
    const q = n / f;
    if (Number.isInteger(q) && (q & (q - 1)) === 0) {
      m = f;
      break;
    }
  }
  const p = n / m;
  const hm = (i: number, j: number): number => (m === 1 ? 1 : (HADAMARD_SIGNS[m] as readonly string[])[i]?.[j] === '-' ? -1 : 1);
  const out = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < m; i++) {
      for (let a = 0; a < p; a++) {
        let s = 0;
        for (let j = 0; j < m; j++) {
          for (let b = 0; b < p; b++) {
            s += hm(i, j) * (popcountParity(a & b) ? -1 : 1) * (x[r * n + j * p + b] as number);
          }
        }
        out[r * n + i * p + a] = s * scale;
      }
    }
  }
  return out;
}

/** Round half to even. */
export function rintEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v - Math.trunc(v)) === 0.5 ? 2 * Math.round(v / 2) : r;
}

/** q = clamp(rint(fround(x / s)), lo, hi); NaN -> 0. */
export function quantOne(x: number, s: number, bits: 8 | 4): number {
  const lo = bits === 4 ? -8 : -127;
  const hi = bits === 4 ? 7 : 127;
  let r = rintEven(Math.fround(x / s));
  if (Number.isNaN(r)) r = 0;
  return Math.min(hi, Math.max(lo, r));
}

/** A computed scale: fround(amax / qmax), 1 for amax 0, then `round` (to the scale's dtype). */
export function scaleRef(amax: number, bits: 8 | 4, round: (v: number) => number = Math.fround): number {
  const s = Math.fround(amax / (bits === 4 ? 7 : 127));
  const r = round(s > 0 ? s : 1);
  return r === 0 ? 1 : r;
}

export type Granularity = 'tensor' | 'token' | 'channel' | 'group';

/**
 * quantize of x (values already exact in its dtype), shape `shape`. Returns q (x.shape, as numbers) and
 * the scales in the order quantize stores them. `round` maps a float32 scale to its stored value.
 */
export function quantizeRef(
  x: Float64Array,
  shape: readonly number[],
  bits: 8 | 4,
  g: Granularity,
  groupSize: number,
  round: (v: number) => number = Math.fround,
  staticScale?: Float64Array,
): { q: Float64Array; scale: Float64Array } {
  const len = shape[shape.length - 1] as number;
  const lines = x.length / len;
  // segment of element i: which scale covers it
  const d0 = shape[0] as number;
  const perChannel = x.length / d0;
  const groups = g === 'group' ? len / groupSize : 0;
  const seg = (i: number): number => {
    const line = Math.floor(i / len);
    if (g === 'tensor') return 0;
    if (g === 'token') return line;
    if (g === 'channel') return Math.floor(i / perChannel);
    return line * groups + Math.floor((i % len) / groupSize);
  };
  const nseg = g === 'tensor' ? 1 : g === 'token' ? lines : g === 'channel' ? d0 : lines * groups;
  const amax = new Float64Array(nseg);
  for (let i = 0; i < x.length; i++) {
    const s = seg(i);
    amax[s] = Math.max(amax[s] as number, Math.abs(x[i] as number));
  }
  const scale = staticScale ?? Float64Array.from(amax, (a) => scaleRef(a, bits, round));
  const q = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) q[i] = quantOne(x[i] as number, scale[seg(i)] as number, bits);
  return { q, scale };
}

/** Exact integer product a @ w^T of a (m, k) and w (n, k), group by group: (m, n, groups). */
export function intGemmRef(
  a: ArrayLike<number>,
  w: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
  groupSize = k,
): Float64Array {
  const groups = k === 0 ? 1 : k / groupSize;
  const out = new Float64Array(m * n * groups);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      for (let g = 0; g < groups; g++) {
        let s = 0;
        for (let kk = g * groupSize; kk < (g + 1) * groupSize && kk < k; kk++)
          s += (a[i * k + kk] as number) * (w[j * k + kk] as number);
        out[(i * n + j) * groups + g] = s;
      }
    }
  }
  return out;
}

/**
 * W8A8 / W4A8: out = sum_g acc_g * wScale[n, g] * aScale[m] + bias[n]. a (m, k), w (n, k) integers;
 * aScale (1 or m), wScale (1, n or n * groups), bias (n) or undefined. -> (m, n).
 */
export function intGemmScaledRef(
  a: ArrayLike<number>,
  w: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
  aScale: ArrayLike<number>,
  wScale: ArrayLike<number>,
  bias: ArrayLike<number> | undefined,
  groupSize = k,
): Float64Array {
  const groups = k === 0 ? 1 : k / groupSize;
  const acc = intGemmRef(a, w, m, n, k, groupSize);
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const as = (aScale.length === 1 ? aScale[0] : aScale[i]) as number;
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let g = 0; g < groups; g++) {
        const ws = (wScale.length === 1 ? wScale[0] : wScale[j * groups + g]) as number;
        s += (acc[(i * n + j) * groups + g] as number) * ws;
      }
      out[i * n + j] = s * as + (bias ? (bias[j] as number) : 0);
    }
  }
  return out;
}

/** W4A16: out = x @ (w * scales[:, group])^T + bias. x (m, k), w (n, k), scales (n, k / groupSize). -> (m, n). */
export function w4a16Ref(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  scales: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
  groupSize: number,
  bias?: ArrayLike<number>,
): Float64Array {
  const groups = k / groupSize;
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let kk = 0; kk < k; kk++) {
        s += (x[i * k + kk] as number) * (w[j * k + kk] as number) * (scales[j * groups + Math.floor(kk / groupSize)] as number);
      }
      out[i * n + j] = s + (bias ? (bias[j] as number) : 0);
    }
  }
  return out;
}
