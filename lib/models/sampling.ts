/**
 * Choosing the next token from one row of logits: greedy (argmax, the first index on ties, as torch
 * does) or sampled after temperature, top-k and top-p (nucleus) filtering, in that order (transformers'
 * order), from a seeded generator so that a seed reproduces a run.
 */

/** A seeded uniform generator (mulberry32): 32 bits of state, good enough to draw tokens. */
export class SeededRandom {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** A uniform draw in [0, 1). */
  next(): number {
    this.#s = (this.#s + 0x6d2b79f5) >>> 0;
    let t = this.#s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

export interface SamplingOptions {
  temperature: number;
  topK?: number;
  topP?: number;
}

/** Index of the largest value (the first one on ties; NaN never wins). */
export function argmax(logits: ArrayLike<number>, offset = 0, length = logits.length): number {
  let best = 0;
  let bestV = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < length; i++) {
    const v = logits[offset + i] as number;
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

/**
 * Picks a token from logits[offset .. offset + vocab). Temperature 0 is greedy. The candidates kept by
 * top-k and top-p are found without sorting the whole vocabulary: only the tokens above a threshold are
 * sorted, and the threshold is lowered until they hold the probability mass top-p needs.
 */
export function sampleToken(
  logits: ArrayLike<number>,
  offset: number,
  vocab: number,
  o: SamplingOptions,
  rng: SeededRandom,
): number {
  if (o.temperature === 0) return argmax(logits, offset, vocab);
  const invT = 1 / o.temperature;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < vocab; i++) max = Math.max(max, logits[offset + i] as number);
  if (max === Number.NEGATIVE_INFINITY || Number.isNaN(max)) return argmax(logits, offset, vocab);
  // Unnormalized probabilities exp((l - max) / T), largest 1.
  const p = new Float64Array(vocab);
  let total = 0;
  for (let i = 0; i < vocab; i++) {
    const v = Math.exp(((logits[offset + i] as number) - max) * invT);
    p[i] = Number.isNaN(v) ? 0 : v;
    total += p[i] as number;
  }
  const topK = o.topK !== undefined && o.topK > 0 ? Math.min(o.topK, vocab) : vocab;
  const topP = o.topP !== undefined && o.topP < 1 ? o.topP : 1;
  let cand: number[];
  if (topK === vocab && topP === 1) {
    let u = rng.next() * total;
    for (let i = 0; i < vocab; i++) {
      u -= p[i] as number;
      if (u < 0) return i;
    }
    return argmax(p);
  }
  // Candidates: the tokens with p >= threshold, sorted descending; lower the threshold until they are
  // at least topK tokens or, without top-k, hold at least topP of the mass (the nucleus lies among them).
  let threshold = 1e-3;
  for (;;) {
    cand = [];
    let mass = 0;
    for (let i = 0; i < vocab; i++) {
      if ((p[i] as number) >= threshold) {
        cand.push(i);
        mass += p[i] as number;
      }
    }
    // With top-k, all k largest must be in (the nucleus is then taken over their mass).
    if (threshold === 0 || cand.length >= topK || (topK === vocab && mass >= topP * total)) break;
    threshold = threshold < 1e-300 ? 0 : threshold / 64;
  }
  cand.sort((a, b) => (p[b] as number) - (p[a] as number) || a - b);
  if (cand.length > topK) cand.length = topK;
  let keptMass = 0;
  for (const i of cand) keptMass += p[i] as number;
  if (topP < 1) {
    // The smallest prefix whose mass (renormalized over the top-k survivors) reaches topP; always one.
    let cum = 0;
    let n = 0;
    for (const i of cand) {
      cum += p[i] as number;
      n++;
      if (cum >= topP * keptMass) break;
    }
    cand.length = Math.max(1, n);
    keptMass = cum;
  }
  let u = rng.next() * keptMass;
  for (const i of cand) {
    u -= p[i] as number;
    if (u < 0) return i;
  }
  return cand[cand.length - 1] as number;
}
