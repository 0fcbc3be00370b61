// causalConv1d and causalConv1dUpdate against their float64 references and the golden cases, on every
// backend present. The grid follows Dao-AILab/causal-conv1d's tests (seqlens as below, widths 2..4
// widened to 2..8, with and without bias and silu, initial/final states, seqIdx, every dtype): every
// (seqlen, dtype) pair runs once with the width cycling and the flags drawn from a seeded generator.
import { describe, expect, it } from 'vitest';
import {
  causalConv1d,
  causalConv1dSync,
  causalConv1dUpdate,
  causalConv1dUpdateSync,
  type DType,
  Tensor,
} from '../dist/cjs/index.js';
import { type CausalConv1dRefArgs, type ConvUpdateRefArgs, causalConv1dRef, causalConv1dUpdateRef } from './ref/scan';
import { assertClose, DTYPES_FLOAT, type FloatDType, goldenCases, loadGolden, Rng, randTensor, testDevices, toF64 } from './util';

const TOL = {
  float32: { rtol: 6e-4, atol: 2e-3 },
  float16: { rtol: 3e-3, atol: 5e-3 },
  bfloat16: { rtol: 3e-2, atol: 5e-2 },
};

const SEQLENS = [1, 2, 8, 16, 32, 64, 128, 129, 130, 256, 372, 512, 784, 1024, 1134, 2048, 2049, 4096];

interface ConvCase {
  batch: number;
  dim: number;
  seqlen: number;
  width: number;
  dtype: FloatDType;
  weightDtype: DType;
  bias: boolean;
  silu: boolean;
  initialStates: boolean;
  seqIdx: boolean;
}

function label(c: ConvCase): string {
  const flags = (['bias', 'silu', 'initialStates', 'seqIdx'] as const).filter((k) => c[k]).join(',');
  return `${c.dtype} [${c.batch}, ${c.dim}, ${c.seqlen}] width ${c.width} weight ${c.weightDtype} {${flags}}`;
}

function makeCase(c: ConvCase, seed: number) {
  const rng = new Rng(seed);
  const { batch, dim, seqlen: L, width: K } = c;
  const normal = () => rng.normal();
  const x = randTensor([batch, dim, L], c.dtype, normal);
  const w = randTensor([dim, K], c.weightDtype, normal);
  const bias = c.bias ? randTensor([dim], c.weightDtype, normal) : undefined;
  const init = c.initialStates ? randTensor([batch, dim, K - 1], 'float32', normal) : undefined;
  let seq: Int32Array | undefined;
  if (c.seqIdx) {
    seq = new Int32Array(batch * L);
    for (let b = 0; b < batch; b++) {
      let id = rng.int(0, 3);
      for (let t = 0; t < L; t++) {
        if (t > 0 && rng.uniform() < 4 / L) id++;
        seq[b * L + t] = id;
      }
    }
  }
  const ref: CausalConv1dRefArgs = {
    batch,
    dim,
    seqlen: L,
    width: K,
    x: x.v,
    weight: w.v,
    bias: bias?.v,
    silu: c.silu,
    initialStates: init?.v,
    seqIdx: seq,
  };
  const opts = {
    bias: bias?.t,
    activation: c.silu ? ('silu' as const) : null,
    initialStates: init?.t,
    seqIdx: seq ? new Tensor('int32', seq, [batch, L]) : undefined,
    returnFinalStates: true,
  };
  return { x: x.t, weight: w.t, opts, ref };
}

async function runCase(c: ConvCase, seed: number, device: string, sync: boolean): Promise<void> {
  const m = makeCase(c, seed);
  const dev = async (t: Tensor | undefined) => (t === undefined || device === 'cpu' ? t : t.to(device));
  const opts = {
    ...m.opts,
    bias: await dev(m.opts.bias),
    initialStates: await dev(m.opts.initialStates),
    seqIdx: await dev(m.opts.seqIdx),
  };
  const x = (await dev(m.x)) as Tensor;
  const w = (await dev(m.weight)) as Tensor;
  const res = sync ? causalConv1dSync(x, w, opts) : await causalConv1d(x, w, opts);
  expect(res.out.dtype).toBe(c.dtype);
  const want = causalConv1dRef(m.ref);
  assertClose(toF64(res.out.toSync('cpu')), want.out, TOL[c.dtype], `out ${label(c)}`);
  assertClose(toF64((res.finalStates as Tensor).toSync('cpu')), want.finalStates, TOL[c.dtype], `finalStates ${label(c)}`);
}

function gridCases(): ConvCase[] {
  const cases: ConvCase[] = [];
  let k = 0;
  for (const seqlen of SEQLENS) {
    for (const dtype of DTYPES_FLOAT) {
      const rng = new Rng(5000 + k);
      const width = 2 + (k % 7);
      k++;
      cases.push({
        batch: rng.int(1, 2),
        dim: [1, 7, 64][rng.int(0, 2)] as number,
        seqlen,
        width,
        dtype,
        weightDtype: rng.uniform() < 0.5 ? 'float32' : dtype,
        bias: rng.uniform() < 0.5,
        silu: rng.uniform() < 0.5,
        initialStates: rng.uniform() < 0.5,
        seqIdx: rng.uniform() < 0.3,
      });
    }
  }
  return cases;
}

interface UpdateCase {
  batch: number;
  dim: number;
  seqlen: number;
  width: number;
  stateLen: number;
  dtype: FloatDType;
  bias: boolean;
  silu: boolean;
  indices: boolean;
  rank2: boolean;
}

function updateLabel(c: UpdateCase): string {
  const flags = (['bias', 'silu', 'indices', 'rank2'] as const).filter((k) => c[k]).join(',');
  return `update ${c.dtype} [${c.batch}, ${c.dim}, ${c.seqlen}] width ${c.width} stateLen ${c.stateLen} {${flags}}`;
}

function runUpdateCase(c: UpdateCase, seed: number, sync: boolean): Promise<void> | void {
  const rng = new Rng(seed);
  const { batch, dim, seqlen: L, width: K, stateLen: S } = c;
  const normal = () => rng.normal();
  const stateBatch = c.indices ? batch + 3 : batch;
  let idx: Int32Array | undefined;
  if (c.indices) {
    idx = new Int32Array(batch);
    for (let b = 0; b < batch; b++) idx[b] = (b * 2 + 1) % stateBatch;
    if (batch > 1) idx[batch - 1] = -1;
  }
  const x = randTensor(c.rank2 ? [batch, dim] : [batch, dim, L], c.dtype, normal);
  const state = randTensor([stateBatch, dim, S], 'float32', normal);
  const w = randTensor([dim, K], 'float32', normal);
  const bias = c.bias ? randTensor([dim], 'float32', normal) : undefined;
  const ref: ConvUpdateRefArgs = {
    batch,
    dim,
    seqlen: L,
    width: K,
    stateLen: S,
    x: x.v,
    convState: state.v,
    weight: w.v,
    bias: bias?.v,
    silu: c.silu,
    convStateIndices: idx,
  };
  const opts = {
    bias: bias?.t,
    activation: c.silu ? ('silu' as const) : null,
    convStateIndices: idx ? new Tensor('int32', idx, [batch]) : undefined,
  };
  const check = (out: Tensor) => {
    expect(out.shape).toEqual(x.t.shape);
    const want = causalConv1dUpdateRef(ref);
    assertClose(toF64(out), want.out, TOL[c.dtype], `out ${updateLabel(c)}`);
    assertClose(toF64(state.t), want.convState, TOL.float32, `convState ${updateLabel(c)}`);
  };
  if (sync) return check(causalConv1dUpdateSync(x.t, state.t, w.t, opts));
  return causalConv1dUpdate(x.t, state.t, w.t, opts).then(check);
}

describe.each(testDevices())('causalConv1d on %s', (device) => {
  // The scan family has no CUDA kernels yet (a later issue): device tensors are refused.
  const itDev = device === 'cpu' ? it : it.skip;

  describe('peer grid (sampled)', () => {
    gridCases().forEach((c, i) => {
      itDev(label(c), async () => runCase(c, 70 + i, device, i % 2 === 0));
    });
  });

  itDev('every flag combination at widths 1..9, float32 [2, 5, 23]', async () => {
    let seed = 0;
    for (let width = 1; width <= 9; width++) {
      for (let f = 0; f < 16; f++) {
        const c: ConvCase = {
          batch: 2,
          dim: 5,
          seqlen: 23,
          width,
          dtype: 'float32',
          weightDtype: 'float32',
          bias: (f & 1) !== 0,
          silu: (f & 2) !== 0,
          initialStates: (f & 4) !== 0,
          seqIdx: (f & 8) !== 0,
        };
        await runCase(c, seed++, device, f % 2 === 0);
      }
    }
  });

  itDev('outputs of several huge pages (the kernel advises THP for them)', async () => {
    const c: ConvCase = {
      batch: 1,
      dim: 640,
      seqlen: 4100,
      width: 4,
      dtype: 'float32',
      weightDtype: 'float32',
      bias: true,
      silu: true,
      initialStates: true,
      seqIdx: false,
    };
    await runCase(c, 5, device, false);
  });

  itDev('seqlen shorter than the width keeps initial states in the final states', async () => {
    for (const seqIdx of [false, true]) {
      const c: ConvCase = {
        batch: 2,
        dim: 3,
        seqlen: 2,
        width: 6,
        dtype: 'float32',
        weightDtype: 'float32',
        bias: true,
        silu: false,
        initialStates: true,
        seqIdx,
      };
      await runCase(c, 1, device, true);
    }
  });

  itDev('streaming with causalConv1dUpdate equals the convolution over L', async () => {
    const rng = new Rng(77);
    const [batch, dim, L, K] = [2, 9, 17, 4];
    const x = randTensor([batch, dim, L], 'float32', () => rng.normal());
    const w = randTensor([dim, K], 'float32', () => rng.normal());
    const bias = randTensor([dim], 'float32', () => rng.normal());
    const init = randTensor([batch, dim, K - 1], 'float32', () => rng.normal());
    const full = causalConv1dSync(x.t, w.t, { bias: bias.t, activation: 'silu', initialStates: init.t, returnFinalStates: true });
    const fullOut = toF64(full.out);
    const state = new Tensor('float32', Float32Array.from(init.v), [batch, dim, K - 1]);
    // Steps of 1, 3 and 5 new tokens.
    let t = 0;
    for (const n of [1, 3, 5, 1, 7]) {
      const a = new Float32Array(batch * dim * n);
      for (let r = 0; r < batch * dim; r++) for (let i = 0; i < n; i++) a[r * n + i] = x.v[r * L + t + i] as number;
      const y = causalConv1dUpdateSync(new Tensor('float32', a, [batch, dim, n]), state, w.t, {
        bias: bias.t,
        activation: 'silu',
      });
      const want = new Float64Array(batch * dim * n);
      for (let r = 0; r < batch * dim; r++) for (let i = 0; i < n; i++) want[r * n + i] = fullOut[r * L + t + i] as number;
      assertClose(toF64(y), want, { rtol: 1e-6, atol: 1e-6 }, `tokens ${t}..${t + n}`);
      t += n;
    }
    assertClose(toF64(state), toF64(full.finalStates as Tensor), { rtol: 0, atol: 0 }, 'final state');
  });

  itDev('packed seqIdx equals running each sequence alone', async () => {
    const rng = new Rng(3);
    const [dim, K] = [6, 5];
    const lens = [2, 30, 1, 9];
    const L = lens.reduce((a, b) => a + b, 0);
    const x = randTensor([1, dim, L], 'float32', () => rng.normal());
    const w = randTensor([dim, K], 'float32', () => rng.normal());
    const init = randTensor([1, dim, K - 1], 'float32', () => rng.normal());
    const ids = new Int32Array(L);
    let pos = 0;
    lens.forEach((n, i) => {
      ids.fill(i + 4, pos, pos + n);
      pos += n;
    });
    const packed = causalConv1dSync(x.t, w.t, {
      initialStates: init.t,
      seqIdx: new Tensor('int32', ids, [1, L]),
      returnFinalStates: true,
    });
    const po = toF64(packed.out);
    pos = 0;
    lens.forEach((n, i) => {
      const a = new Float32Array(dim * n);
      for (let d = 0; d < dim; d++) for (let t = 0; t < n; t++) a[d * n + t] = x.v[d * L + pos + t] as number;
      const alone = causalConv1dSync(new Tensor('float32', a, [1, dim, n]), w.t, {
        initialStates: i === 0 ? init.t : undefined,
        returnFinalStates: true,
      });
      const got = new Float64Array(dim * n);
      for (let d = 0; d < dim; d++) for (let t = 0; t < n; t++) got[d * n + t] = po[d * L + pos + t] as number;
      assertClose(got, toF64(alone.out), { rtol: 0, atol: 0 }, `sequence ${i}`);
      if (i === lens.length - 1)
        assertClose(toF64(packed.finalStates as Tensor), toF64(alone.finalStates as Tensor), { rtol: 0, atol: 0 }, 'final');
      pos += n;
    });
  });

  describe('causalConv1dUpdate', () => {
    const cases: UpdateCase[] = [];
    let k = 0;
    for (const seqlen of [1, 2, 5, 33]) {
      for (const dtype of DTYPES_FLOAT) {
        const rng = new Rng(9000 + k);
        const width = 2 + (k % 7);
        k++;
        cases.push({
          batch: rng.int(1, 3),
          dim: [1, 16, 70][rng.int(0, 2)] as number,
          seqlen,
          width,
          stateLen: width - 1 + rng.int(0, 1) * rng.int(1, 6),
          dtype,
          bias: rng.uniform() < 0.5,
          silu: rng.uniform() < 0.5,
          indices: rng.uniform() < 0.5,
          rank2: false,
        });
      }
    }
    cases.push({
      batch: 3,
      dim: 20,
      seqlen: 1,
      width: 4,
      stateLen: 3,
      dtype: 'bfloat16',
      bias: true,
      silu: true,
      indices: true,
      rank2: true,
    });
    cases.push({
      batch: 1,
      dim: 5120,
      seqlen: 1,
      width: 4,
      stateLen: 3,
      dtype: 'float32',
      bias: true,
      silu: true,
      indices: false,
      rank2: true,
    });
    cases.forEach((c, i) => {
      itDev(updateLabel(c), async () => runUpdateCase(c, 100 + i, i % 2 === 0));
    });
  });

  for (const g of goldenCases('causalConv1d')) {
    itDev(`golden ${g.file}`, async () => {
      const t = loadGolden(g.file) as Record<string, Tensor>;
      const dev = async (v: Tensor | undefined) => (v === undefined || device === 'cpu' ? v : v.to(device));
      const res = await causalConv1d((await dev(t.x)) as Tensor, (await dev(t.weight)) as Tensor, {
        bias: await dev(t.bias),
        activation: (g.options.activation as 'silu' | null | undefined) ?? null,
      });
      assertClose(toF64(res.out.toSync('cpu')), toF64(t.out as Tensor), TOL.float32, g.file);
    });
  }
});

describe('causalConv1d argument errors', () => {
  const f32 = (shape: number[], fill = 0.1) =>
    new Tensor('float32', new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill), shape);
  const x = f32([2, 3, 10]);
  const w = f32([3, 4]);
  const st = f32([2, 3, 3]);
  type Call = () => unknown;
  const cases: [string, string, Call, ErrorConstructor, string][] = [
    [
      'causalConv1d',
      'x of int32',
      () => causalConv1dSync(new Tensor('int32', new Int32Array(60), [2, 3, 10]), w),
      TypeError,
      'x',
    ],
    ['causalConv1d', 'x of rank 2', () => causalConv1dSync(f32([3, 10]), w), RangeError, 'x'],
    ['causalConv1d', 'weight of another dim', () => causalConv1dSync(x, f32([4, 4])), RangeError, 'weight'],
    ['causalConv1d', 'weight of width 0', () => causalConv1dSync(x, f32([3, 0])), RangeError, 'weight'],
    ['causalConv1d', 'bias of another length', () => causalConv1dSync(x, w, { bias: f32([4]) }), RangeError, 'options.bias'],
    [
      'causalConv1d',
      "activation 'relu'",
      () => causalConv1dSync(x, w, { activation: 'relu' as never }),
      RangeError,
      'options.activation',
    ],
    [
      'causalConv1d',
      'activation true',
      () => causalConv1dSync(x, w, { activation: true as never }),
      TypeError,
      'options.activation',
    ],
    [
      'causalConv1d',
      'initialStates of width',
      () => causalConv1dSync(x, w, { initialStates: f32([2, 3, 4]) }),
      RangeError,
      'options.initialStates',
    ],
    [
      'causalConv1d',
      'initialStates of bfloat16',
      () => causalConv1dSync(x, w, { initialStates: st.cast('bfloat16') }),
      TypeError,
      'options.initialStates',
    ],
    [
      'causalConv1d',
      'decreasing seqIdx',
      () =>
        causalConv1dSync(x, w, {
          seqIdx: new Tensor(
            'int32',
            Int32Array.from({ length: 20 }, (_, i) => (i === 15 ? 0 : 1)),
            [2, 10],
          ),
        }),
      RangeError,
      'options.seqIdx',
    ],
    [
      'causalConv1dUpdate',
      'convState of float16',
      () => causalConv1dUpdateSync(x, st.cast('float16'), w),
      TypeError,
      'convState',
    ],
    ['causalConv1dUpdate', 'convState too short', () => causalConv1dUpdateSync(x, f32([2, 3, 2]), w), RangeError, 'convState'],
    [
      'causalConv1dUpdate',
      'convState of another batch',
      () => causalConv1dUpdateSync(x, f32([3, 3, 3]), w),
      RangeError,
      'convState',
    ],
    ['causalConv1dUpdate', 'x of rank 4', () => causalConv1dUpdateSync(f32([2, 3, 1, 1]), st, w), RangeError, 'x'],
    [
      'causalConv1dUpdate',
      'an index past the state',
      () => causalConv1dUpdateSync(x, st, w, { convStateIndices: new Tensor('int32', Int32Array.from([0, 2]), [2]) }),
      RangeError,
      'options.convStateIndices',
    ],
    [
      'causalConv1dUpdate',
      'a repeated index',
      () => causalConv1dUpdateSync(x, st, w, { convStateIndices: new Tensor('int32', Int32Array.from([1, 1]), [2]) }),
      RangeError,
      'options.convStateIndices',
    ],
    [
      'causalConv1dUpdate',
      'unknown option',
      () => causalConv1dUpdateSync(x, st, w, { cacheSeqlens: st } as never),
      TypeError,
      'options.cacheSeqlens',
    ],
  ];
  for (const [op, what, call, cls, arg] of cases) {
    it(`${op}: ${what}`, () => {
      let err: unknown;
      try {
        call();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(cls);
      expect((err as Error).message).toContain(op);
      expect((err as Error).message).toContain(`${arg}:`);
    });
  }
});
