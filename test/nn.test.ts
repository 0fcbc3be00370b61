// The model building blocks (lib/ops/nn.ts) against their float64 references, on every backend
// present, every SIMD path of the linear kernel (child processes with SSMKIT_SIMD set), and their
// argument errors.
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Tensor } from '../dist/cjs/index.js';
import {
  dtLimit,
  dtLimitSync,
  embedding,
  embeddingSync,
  gatedRmsNorm,
  gatedRmsNormSync,
  linear,
  linearSync,
  packLinear,
  packLinearSync,
  rmsNorm,
  rmsNormSync,
  sample,
  sampleSync,
  transposeSplit,
  transposeSplitSync,
} from '../dist/cjs/ops/nn.js';
import { refSample } from './ref/model';
import { columnsRef, dtLimitRef, gatedRmsNormRef, linearRef, rmsNormRef, transposeRef } from './ref/nn';
import { assertClose, assertEqual, DTYPES_FLOAT, Rng, randTensor, testDevices, toF64 } from './util';

/** Why the nn ops cannot run on `device` in this build (no kernels there yet), or undefined. */
function kernelGap(device: string): string | undefined {
  if (device === 'cpu') return undefined;
  try {
    rmsNormSync(new Tensor('float32', [1, 2], [1, 2]).toSync(device), new Tensor('float32', [1, 1], [2]).toSync(device));
    return undefined;
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_SSMKIT_NOT_COMPILED') return (e as Error).message;
    throw e;
  }
}

// Keyed by the output's dtype: the math is float32 over inputs already rounded to their dtype.
const TOL = {
  float32: { rtol: 1e-4, atol: 1e-4 },
  float16: { rtol: 2e-3, atol: 2e-3 },
  bfloat16: { rtol: 1.6e-2, atol: 1.6e-2 },
};

/** The float64 values of w as the packed panels hold them (bfloat16 panels round). */
function panelValues(w: Float64Array, dtype: 'float32' | 'bfloat16'): Float64Array {
  if (dtype === 'float32') return Float64Array.from(w, (v) => Math.fround(v));
  return toF64(new Tensor('float32', Float32Array.from(w), [w.length]).cast('bfloat16'));
}

describe.each(testDevices())('nn on %s', (device) => {
  const gap = kernelGap(device);
  if (gap) {
    it.skip(`skipped: ${gap}`, () => {});
    return;
  }
  // [M, K, N]: odd sizes, size-1 dims, N not a multiple of the 32-column panel, M past one 12-row block.
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [1, 64, 70],
    [3, 17, 33],
    [13, 100, 65],
    [37, 300, 96],
    [2, 5, 1],
  ];
  for (const dtype of DTYPES_FLOAT) {
    for (const wdtype of ['float32', 'bfloat16'] as const) {
      it(`linear x ${dtype}, w ${wdtype}`, async () => {
        for (const [m, k, n] of shapes) {
          const rng = new Rng(m * 1000 + k * 10 + n);
          const x = randTensor([m, k], dtype, () => rng.normal());
          const w = randTensor([n, k], 'float32', () => rng.normal() / Math.sqrt(k));
          const bias = randTensor([n], 'float32', () => rng.normal());
          const pw = await packLinear(await w.t.to(device), { dtype: wdtype });
          expect(pw.panels.shape).toEqual([Math.ceil(n / 32), wdtype === 'bfloat16' ? k + (k % 2) : k, 32]);
          const ref = linearRef(x.v, panelValues(w.v, wdtype), m, k, n, bias.v);
          const xd = await x.t.to(device);
          const out = (await linear(xd, pw, { bias: await bias.t.to(device) })) as Tensor;
          expect(out.dtype).toBe(dtype);
          expect(out.shape).toEqual([m, n]);
          assertClose(toF64(out.toSync('cpu')), ref, TOL[dtype], `linear [${m}, ${k}, ${n}] ${dtype}/${wdtype}`);
          const sync = linearSync(xd, pw, { bias: await bias.t.to(device), outDtype: 'float32' }) as Tensor;
          expect(sync.dtype).toBe('float32');
          assertClose(toF64(sync.toSync('cpu')), ref, TOL.float32, `linearSync [${m}, ${k}, ${n}]`);
        }
      });
    }
  }

  it('linear splits, transposed inputs and outputs', async () => {
    const rng = new Rng(7);
    const [batch, len, k] = [3, 5, 40];
    const split = [7, 33, 1, 20];
    const n = split.reduce((a, b) => a + b, 0);
    const x = randTensor([batch, len, k], 'float32', () => rng.normal());
    const w = randTensor([n, k], 'float32', () => rng.normal());
    const pw = packLinearSync(await w.t.to(device));
    const ref = linearRef(x.v, panelValues(w.v, 'float32'), batch * len, k, n);
    const outs = (await linear(await x.t.to(device), pw, {
      split: split.map((cols, i) => ({ cols, transposed: i % 2 === 1 })),
    })) as Tensor[];
    let c0 = 0;
    split.forEach((cols, i) => {
      const o = outs[i] as Tensor;
      const part = columnsRef(ref, batch * len, n, c0, cols); // (batch, len, cols)
      if (i % 2 === 1) {
        expect(o.shape).toEqual([batch, cols, len]);
        assertClose(toF64(o.toSync('cpu')), transposeRef(part, batch, len, cols), TOL.float32, `split ${i} transposed`);
      } else {
        expect(o.shape).toEqual([batch, len, cols]);
        assertClose(toF64(o.toSync('cpu')), part, TOL.float32, `split ${i}`);
      }
      c0 += cols;
    });
    // x in the scan layout (batch, K, len) gives the same rows.
    const xt = new Tensor('float32', Float32Array.from(transposeRef(x.v, batch, len, k)), [batch, k, len]);
    const fromT = linearSync(await xt.to(device), pw, { xTransposed: true }) as Tensor;
    expect(fromT.shape).toEqual([batch, len, n]);
    assertClose(toF64(fromT.toSync('cpu')), ref, TOL.float32, 'xTransposed');
  });

  it('linear with K = 0 writes the bias', async () => {
    const w = packLinearSync(await new Tensor('float32', new Float32Array(0), [3, 0]).to(device));
    const x = await new Tensor('float32', new Float32Array(0), [2, 0]).to(device);
    const out = linearSync(x, w, { bias: await new Tensor('float32', [1, 2, 3], [3]).to(device) }) as Tensor;
    assertEqual(toF64(out.toSync('cpu')), [1, 2, 3, 1, 2, 3], 'bias only');
  });

  for (const dtype of DTYPES_FLOAT) {
    it(`rmsNorm ${dtype}`, async () => {
      for (const [rows, d] of [
        [1, 1],
        [3, 64],
        [7, 129],
      ] as const) {
        const rng = new Rng(rows * 31 + d);
        const x = randTensor([rows, d], dtype, () => rng.normal());
        const res = randTensor([rows, d], 'float32', () => rng.normal());
        const w = randTensor([d], 'float32', () => 1 + 0.1 * rng.normal());
        const ref = rmsNormRef(x.v, res.v, w.v, rows, d, 1e-5);
        const resD = await res.t.to(device);
        const out = await rmsNorm(await x.t.to(device), await w.t.to(device), { residual: resD, residualOut: resD });
        expect(out.dtype).toBe(dtype);
        assertClose(toF64(out.toSync('cpu')), ref.out, TOL[dtype], `rmsNorm [${rows}, ${d}]`);
        assertClose(toF64(resD.toSync('cpu')), ref.sum, TOL.float32, 'residual updated in place');
        const plain = rmsNormSync(await x.t.to(device), await w.t.to(device), { eps: 1e-3, outDtype: 'float32' });
        assertClose(toF64(plain.toSync('cpu')), rmsNormRef(x.v, undefined, w.v, rows, d, 1e-3).out, TOL[dtype], 'no residual');
      }
    });
  }

  it('rmsNorm lastToken normalizes the last row of each batch', async () => {
    const rng = new Rng(3);
    const [b, len, d] = [3, 4, 16];
    const x = randTensor([b, len, d], 'float32', () => rng.normal());
    const w = randTensor([d], 'float32', () => rng.normal());
    const out = rmsNormSync(await x.t.to(device), await w.t.to(device), { lastToken: true });
    expect(out.shape).toEqual([b, d]);
    const last = new Float64Array(b * d);
    for (let i = 0; i < b; i++) last.set(x.v.subarray(((i + 1) * len - 1) * d, (i + 1) * len * d), i * d);
    assertClose(toF64(out.toSync('cpu')), rmsNormRef(last, undefined, w.v, b, d, 1e-5).out, TOL.float32, 'lastToken');
  });

  for (const dtype of DTYPES_FLOAT) {
    it(`gatedRmsNorm ${dtype}`, async () => {
      for (const [rows, d, groups] of [
        [1, 8, 1],
        [5, 96, 4],
        [2, 30, 3],
      ] as const) {
        const rng = new Rng(rows + d + groups);
        const y = randTensor([rows, d], dtype, () => rng.normal());
        const z = randTensor([rows, d], dtype, () => rng.normal());
        const w = randTensor([d], 'float32', () => rng.normal());
        const out = await gatedRmsNorm(await y.t.to(device), await z.t.to(device), await w.t.to(device), { groups });
        assertClose(
          toF64(out.toSync('cpu')),
          gatedRmsNormRef(y.v, z.v, w.v, rows, d, groups, 1e-5),
          TOL[dtype],
          `gated [${rows}, ${d}] / ${groups}`,
        );
        const ungated = gatedRmsNormSync(await y.t.to(device), undefined, await w.t.to(device), { groups, eps: 1e-2 });
        assertClose(
          toF64(ungated.toSync('cpu')),
          gatedRmsNormRef(y.v, undefined, w.v, rows, d, groups, 1e-2),
          TOL[dtype],
          'no gate',
        );
      }
    });
  }

  it('embedding from a table and from packed panels', async () => {
    const rng = new Rng(11);
    const [vocab, d] = [70, 12];
    const table = randTensor([vocab, d], 'float32', () => rng.normal());
    const ids = new Tensor('int32', [0, 69, 33, 32, 31, 5], [2, 3]);
    const want = new Float64Array(6 * d);
    (ids.dataSync() as Int32Array).forEach((id, i) => {
      want.set(table.v.subarray(id * d, (id + 1) * d), i * d);
    });
    const fromTable = await embedding(await ids.to(device), await table.t.to(device));
    expect(fromTable.shape).toEqual([2, 3, d]);
    assertEqual(toF64(fromTable.toSync('cpu')), want, 'table');
    const packed = packLinearSync(await table.t.to(device));
    assertEqual(toF64(embeddingSync(await ids.to(device), packed).toSync('cpu')), want, 'packed');
    const bf = embeddingSync(await ids.to(device), packed, { outDtype: 'bfloat16' });
    assertClose(toF64(bf.toSync('cpu')), want, TOL.bfloat16, 'bfloat16 out');
  });

  it('transposeSplit', async () => {
    const rng = new Rng(5);
    const [b, r, c] = [2, 9, 4];
    const x = randTensor([b, r, c], 'bfloat16', () => rng.normal());
    const outs = await transposeSplit(await x.t.to(device), [2, 0, 7]);
    expect(outs.map((o) => o.shape)).toEqual([
      [b, c, 2],
      [b, c, 0],
      [b, c, 7],
    ]);
    const t = transposeRef(x.v, b, r, c); // (b, c, r)
    let r0 = 0;
    [2, 0, 7].forEach((rows, i) => {
      assertEqual(toF64((outs[i] as Tensor).toSync('cpu')), columnsRef(t, b * c, r, r0, rows), `part ${i}`);
      r0 += rows;
    });
    const flat = transposeSplitSync(await x.t.reshape([b, r * c, 1]).to(device), [r * c]);
    assertEqual(toF64((flat[0] as Tensor).toSync('cpu')), x.v, 'c = 1 is a copy');
  });

  it('dtLimit', async () => {
    const rng = new Rng(9);
    const dt = randTensor([5, 6], 'float32', () => 10 * rng.normal());
    const bias = randTensor([6], 'float32', () => rng.normal());
    const out = await dtLimit(await dt.t.to(device), { bias: await bias.t.to(device), lo: 0.01, hi: 2 });
    assertClose(toF64(out.toSync('cpu')), dtLimitRef(dt.v, bias.v, 6, 0.01, 2), TOL.float32, 'dtLimit');
    const open = dtLimitSync(await dt.t.to(device));
    assertClose(toF64(open.toSync('cpu')), dtLimitRef(dt.v, undefined, 6, 0, Number.POSITIVE_INFINITY), TOL.float32, 'no limit');
  });
});

describe('sample', () => {
  // Native picks against the float64 reference, with the same draws: the argmax, plain temperature,
  // top-k, top-p, both, over flat and peaked rows (a draw within float rounding of a boundary between
  // two tokens could legitimately differ; with these seeds none is).
  it('matches the reference for every filter', () => {
    const rng = new Rng(21);
    const rows = 24;
    const vocab = 3001;
    for (const [temperature, topK, topP, spread] of [
      [0, 0, 1, 3],
      [1, 0, 1, 3],
      [0.7, 40, 1, 3],
      [1.3, 0, 0.9, 3],
      [1, 50, 0.8, 8],
      [2, 0, 0.5, 0.01],
      [1, 1, 1, 3],
      [1, 0, 1e-6, 3],
    ] as const) {
      const logits = new Float32Array(rows * vocab).map(() => spread * rng.normal());
      const draws = new Float64Array(rows).map(() => rng.uniform());
      const lt = new Tensor('float32', logits, [rows, vocab]);
      const got = sampleSync(lt, {
        temperature,
        topK,
        topP,
        draws: new Tensor('float64', draws, [rows]),
      }).dataSync() as Int32Array;
      for (let r = 0; r < rows; r++) {
        const want = refSample(logits.subarray(r * vocab, (r + 1) * vocab), draws[r] as number, temperature, topK, topP);
        expect(got[r], `T ${temperature} k ${topK} p ${topP} row ${r}`).toBe(want);
      }
    }
  });

  it('orders logits closer than the probabilities resolve by logit', () => {
    // exp(-1e-8) rounds to 1 in float32: in each row two probabilities are 1, yet one logit is the larger,
    // so top-k 1 keeps that token (the argmax), as the reference and the CUDA sampler do, before or after
    // the other in index order; top-p 0.3 keeps it alone too.
    const lt = new Tensor('float32', [-1e-8, 0, -5, -5, -1e-8, 0], [2, 3]);
    const draws = new Tensor('float64', [0.9, 0.9], [2]);
    for (const opts of [{ topK: 1 }, { topP: 0.3 }]) {
      const got = Array.from(sampleSync(lt, { temperature: 1, draws, ...opts }).dataSync() as Int32Array);
      expect(got, JSON.stringify(opts)).toEqual([1, 2]);
    }
  });

  it('draws distribute as the softmax', async () => {
    const vocab = 5;
    const logits = new Tensor('float32', [0, 1, 2, 0.5, -1], [1, vocab]);
    const counts = new Array(vocab).fill(0);
    const rng = new Rng(8);
    for (let i = 0; i < 2000; i++) {
      const t = await sample(logits, { temperature: 1, draws: new Tensor('float64', [rng.uniform()], [1]) });
      counts[(t.dataSync() as Int32Array)[0] as number]++;
    }
    const z = [0, 1, 2, 0.5, -1].reduce((a, l) => a + Math.exp(l), 0);
    counts.forEach((c, i) => {
      const p = Math.exp([0, 1, 2, 0.5, -1][i] as number) / z;
      expect(Math.abs(c / 2000 - p)).toBeLessThan(4 * Math.sqrt((p * (1 - p)) / 2000));
    });
  });

  it('checks its arguments', () => {
    const lt = new Tensor('float32', [1, 2, 3, 4], [2, 2]);
    expect(() => sampleSync(lt, { temperature: 1 })).toThrow(/sampleSync: options.draws/);
    expect(() => sampleSync(lt, { temperature: -1 })).toThrow(RangeError);
    expect(() => sampleSync(lt, { topP: 0 })).toThrow(/options.topP/);
    expect(() => sampleSync(lt, { temperature: 1, draws: new Tensor('float64', [0.5], [1]) })).toThrow(/options.draws/);
    expect(() => sampleSync(new Tensor('float16', [1, 2], [1, 2]))).toThrow(TypeError);
    expect(Array.from(sampleSync(lt).dataSync() as Int32Array)).toEqual([1, 1]);
  });
});

describe('nn argument errors', () => {
  const w = packLinearSync(new Tensor('float32', new Float32Array(6), [2, 3]));
  const x = new Tensor('float32', new Float32Array(3), [1, 3]);
  const expectError = (fn: () => unknown, cls: typeof TypeError | typeof RangeError, ...words: string[]) => {
    let err: unknown;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(cls);
    for (const word of words) expect((err as Error).message).toContain(word);
  };
  it('linear', () => {
    expectError(() => linearSync(new Tensor('int32', [1, 2, 3], [1, 3]), w), TypeError, 'linearSync', 'x');
    expectError(() => linearSync(new Tensor('float32', [1, 2], [1, 2]), w), RangeError, 'linearSync', 'x', '3 input features');
    expectError(() => linearSync(x, x as never), TypeError, 'linearSync', 'w', 'PackedLinear');
    expectError(() => linearSync(x, w, { split: [{ cols: 1 }] }), RangeError, 'options.split', 'adding up to 2');
    expectError(() => linearSync(x, w, { bias: new Tensor('float32', [1], [1]) }), RangeError, 'options.bias');
    expectError(() => linearSync(x, w, { bias: new Tensor('float64', [1, 2], [2]) }), TypeError, 'options.bias');
    expectError(() => linearSync(x, w, { split: [{ cols: 2, transposed: true }] }), RangeError, 'options.split[0]');
    expectError(() => linearSync(x, w, { foo: 1 } as never), TypeError, 'options.foo');
    return expect(linear(x, w, { outDtype: 'int8' as never })).rejects.toThrow(RangeError);
  });
  it('the others', () => {
    expectError(() => packLinearSync(new Tensor('float32', [1, 2], [2])), RangeError, 'packLinearSync', 'w');
    expectError(() => packLinearSync(x, { dtype: 'float16' as never }), RangeError, 'options.dtype');
    expectError(() => rmsNormSync(x, new Tensor('float32', [1], [1])), RangeError, 'rmsNormSync', 'weight');
    expectError(() => rmsNormSync(x, new Tensor('int8', [1, 1, 1], [3])), TypeError, 'rmsNormSync', 'weight');
    expectError(() => rmsNormSync(x, new Tensor('float32', [1, 1, 1], [3]), { lastToken: true }), RangeError, 'lastToken');
    expectError(
      () => gatedRmsNormSync(x, undefined, new Tensor('float32', [1, 1, 1], [3]), { groups: 2 }),
      RangeError,
      'options.groups',
    );
    expectError(() => gatedRmsNormSync(x, new Tensor('float32', [1], [1]), x), RangeError, 'gatedRmsNormSync', 'z');
    expectError(() => embeddingSync(new Tensor('int32', [2], [1]), w), RangeError, 'embeddingSync', 'ids[0]');
    expectError(() => embeddingSync(new Tensor('float32', [0], [1]), w), TypeError, 'embeddingSync', 'ids');
    expectError(() => transposeSplitSync(x.reshape([1, 1, 3]), [2]), RangeError, 'transposeSplitSync', 'sizes');
    expectError(() => dtLimitSync(x, { lo: 1, hi: 0.5 }), RangeError, 'dtLimitSync', 'options.hi');
  });
});

// The linear kernel has scalar, AVX2 and AVX-512 variants: each path the CPU supports runs the same
// checks in a child process with SSMKIT_SIMD capping the level.
describe('linear on every SIMD path', () => {
  const script = `
    const { Tensor, backend } = require('./dist/cjs/index.js');
    const nn = require('./dist/cjs/ops/nn.js');
    let seed = 1;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
    let worst = 0;
    for (const [m, k, n] of [[1, 7, 5], [5, 64, 70], [12, 33, 32], [13, 100, 97], [40, 257, 64]]) {
      // bfloat16 x against bfloat16 panels takes the dot-product tiles where the CPU has AVX512-BF16.
      for (const [wd, xd] of [['float32', 'float32'], ['bfloat16', 'float32'], ['bfloat16', 'bfloat16']]) {
        const w = new Tensor('float32', Float32Array.from({ length: n * k }, rnd), [n, k]);
        const x = new Tensor('float32', Float32Array.from({ length: m * k }, rnd), [m, k]).cast(xd).cast('float32');
        const wv = (wd === 'bfloat16' ? w.cast('bfloat16').cast('float32') : w).dataSync();
        const y = nn.linearSync(x.cast(xd), nn.packLinearSync(w, { dtype: wd }), { outDtype: 'float32' }).dataSync();
        const xv = x.dataSync();
        for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
          let s = 0;
          for (let q = 0; q < k; q++) s += xv[i * k + q] * wv[j * k + q];
          worst = Math.max(worst, Math.abs(s - y[i * n + j]) / (1 + Math.abs(s)));
        }
      }
    }
    console.log(JSON.stringify({ simd: backend().simd, worst }));`;
  const supported = (() => {
    const feats = execFileSync(process.execPath, ['-p', "require('./dist/cjs/index.js').backend().cpuFeatures.join(',')"], {
      cwd: path.join(__dirname, '..'),
      encoding: 'utf8',
    });
    return { avx2: feats.includes('avx2'), avx512: feats.includes('avx512f') && feats.includes('avx512bw') };
  })();
  for (const level of ['scalar', 'avx2', 'avx512'] as const) {
    const skip = (level === 'avx2' && !supported.avx2) || (level === 'avx512' && !supported.avx512);
    it.skipIf(skip)(`SSMKIT_SIMD=${level}`, () => {
      const out = execFileSync(process.execPath, ['-e', script], {
        cwd: path.join(__dirname, '..'),
        env: { ...process.env, SSMKIT_SIMD: level, SSMKIT_BACKEND: 'cpu' },
        encoding: 'utf8',
      });
      const r = JSON.parse(out.trim().split('\n').pop() as string) as { simd: string; worst: number };
      expect(r.simd).toBe(level);
      expect(r.worst).toBeLessThan(1e-5);
    });
  }
});
