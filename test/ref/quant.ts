// Float64 references of the quantization family: plain loops, no cleverness.

/** Walsh-Hadamard transform (Sylvester order) of each row. x: (rows, n) -> (rows, n). */
export function hadamardRef(x: Float64Array, rows: number, n: number, scale: number): Float64Array {
  const out = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < n; j++) {
        // H[i][j] = (-1)^popcount(i & j) in Sylvester order.
        let b = i & j;
        let parity = 0;
        while (b) {
          parity ^= b & 1;
          b >>>= 1;
        }
        s += (parity ? -1 : 1) * (x[r * n + j] as number);
      }
      out[r * n + i] = s * scale;
    }
  }
  return out;
}
