/**
 * The seeded generator of the uniform draws that the native sampler (lib/ops/nn.ts sample) turns into
 * tokens: one draw per sequence and step, so that a seed reproduces a run.
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
