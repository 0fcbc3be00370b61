// ssdScan (Mamba-2) against its float64 reference and the golden cases, on every backend present.
//
// Sampled from the peers' grid (mamba_ssm's test_chunk_scan / test_mamba_chunk_scan_combined: the
// seqlens below, dstate {1, ..., 256}, headdim, groups {1, 2}, every dtype, chunk sizes): every
// (seqlen, dtype) pair runs once with dstate, headdim, heads, groups, chunk size and the flags (D per
// head or per channel, z, dtBias, softplus, initial/final states, seqIdx) drawn from a seeded generator,
// sized so that the float64 reference stays quick; every flag combination then runs at one small shape.
import { describe, expect, it } from 'vitest';
import { selectiveStateUpdateSync, ssdScan, ssdScanSync, Tensor } from '../dist/cjs/index.js';
import { type SsdScanRefArgs, ssdScanRef } from './ref/scan';
import {
  assertClose,
  DTYPES_FLOAT,
  type FloatDType,
  goldenCases,
  loadGolden,
  Rng,
  randTensor,
  testDevices,
  toF64,
  withEnv,
} from './util';

const TOL = {
  float32: { rtol: 6e-4, atol: 2e-3 },
  float16: { rtol: 3e-3, atol: 5e-3 },
  bfloat16: { rtol: 3e-2, atol: 5e-2 },
};

const SEQLENS = [1, 8, 16, 32, 64, 128, 256, 372, 512, 784, 1024, 1134, 2048, 2049, 4096];
const DSTATES = [1, 4, 8, 16, 64, 256];

interface SsdCase {
  batch: number;
  seqlen: number;
  nheads: number;
  headdim: number;
  groups: number;
  dstate: number;
  dtype: FloatDType;
  chunkSize: number;
  D: 'none' | 'head' | 'channel';
  z: boolean;
  dtBias: boolean;
  softplus: boolean;
  initialStates: boolean;
  seqIdx: boolean;
}

function label(c: SsdCase): string {
  const flags: string[] = (['z', 'dtBias', 'softplus', 'initialStates', 'seqIdx'] as const).filter((k) => c[k]);
  if (c.D !== 'none') flags.unshift(`D per ${c.D}`);
  return (
    `${c.dtype} [${c.batch}, ${c.seqlen}, ${c.nheads}, ${c.headdim}] dstate ${c.dstate} groups ${c.groups} ` +
    `chunk ${c.chunkSize} {${flags.join(',')}}`
  );
}

function makeSeqIdx(rng: Rng, batch: number, seqlen: number): Int32Array {
  const v = new Int32Array(batch * seqlen);
  for (let b = 0; b < batch; b++) {
    let id = 0;
    for (let t = 0; t < seqlen; t++) {
      if (t > 0 && rng.uniform() < 3 / seqlen) id++;
      v[b * seqlen + t] = id;
    }
  }
  return v;
}

function makeCase(c: SsdCase, seed: number) {
  const rng = new Rng(seed);
  const { batch, seqlen: L, nheads: H, headdim: P, groups: G, dstate: N, dtype } = c;
  const normal = () => rng.normal();
  const x = randTensor([batch, L, H, P], dtype, normal);
  // As mamba_ssm's tests: dt around softplus^-1 of [0.001, 0.1] with a bias, A in [-1, -16].
  const dt = randTensor([batch, L, H], dtype, c.softplus ? () => rng.normal() - 3 : () => 0.1 * rng.uniform());
  const A = randTensor([H], 'float32', () => -1 - 15 * rng.uniform());
  const B = randTensor([batch, L, G, N], dtype, normal);
  const C = randTensor([batch, L, G, N], dtype, normal);
  const D = c.D === 'none' ? undefined : randTensor(c.D === 'head' ? [H] : [H, P], 'float32', normal);
  const z = c.z ? randTensor([batch, L, H, P], dtype, normal) : undefined;
  const dtBias = c.dtBias ? randTensor([H], 'float32', () => rng.uniform() - 1) : undefined;
  const init = c.initialStates ? randTensor([batch, H, P, N], 'float32', normal) : undefined;
  const seq = c.seqIdx ? makeSeqIdx(rng, batch, L) : undefined;
  const ref: SsdScanRefArgs = {
    batch,
    seqlen: L,
    nheads: H,
    headdim: P,
    groups: G,
    dstate: N,
    x: x.v,
    dt: dt.v,
    A: A.v,
    B: B.v,
    C: C.v,
    D: D?.v,
    dPerChannel: c.D === 'channel',
    z: z?.v,
    dtBias: dtBias?.v,
    dtSoftplus: c.softplus,
    initialStates: init?.v,
    seqIdx: seq,
  };
  const opts = {
    chunkSize: c.chunkSize,
    D: D?.t,
    z: z?.t,
    dtBias: dtBias?.t,
    dtSoftplus: c.softplus,
    initialStates: init?.t,
    seqIdx: seq ? new Tensor('int32', seq, [batch, L]) : undefined,
    returnFinalStates: true,
  };
  return { args: [x.t, dt.t, A.t, B.t, C.t] as [Tensor, Tensor, Tensor, Tensor, Tensor], opts, ref };
}

/** A case's arguments and tensor options moved to `device` (as they are on the CPU). */
async function onDevice(m: ReturnType<typeof makeCase>, device: string) {
  const dev = async (t: Tensor | undefined) => (t === undefined || device === 'cpu' ? t : t.to(device));
  const args = (await Promise.all(m.args.map(dev))) as [Tensor, Tensor, Tensor, Tensor, Tensor];
  const opts = {
    ...m.opts,
    D: await dev(m.opts.D),
    z: await dev(m.opts.z),
    dtBias: await dev(m.opts.dtBias),
    initialStates: await dev(m.opts.initialStates),
    seqIdx: await dev(m.opts.seqIdx),
  };
  return { args, opts };
}

async function runCase(c: SsdCase, seed: number, device: string, sync: boolean): Promise<void> {
  const m = makeCase(c, seed);
  const { args, opts } = await onDevice(m, device);
  const res = sync ? ssdScanSync(...args, opts) : await ssdScan(...args, opts);
  expect(res.out.dtype).toBe(c.dtype);
  expect(res.out.shape).toEqual([c.batch, c.seqlen, c.nheads, c.headdim]);
  const want = ssdScanRef(m.ref);
  assertClose(toF64(res.out.toSync('cpu')), want.out, TOL[c.dtype], `out ${label(c)}`);
  assertClose(toF64((res.finalStates as Tensor).toSync('cpu')), want.finalStates, TOL[c.dtype], `finalStates ${label(c)}`);
}

function gridCases(): SsdCase[] {
  const cases: SsdCase[] = [];
  let k = 0;
  for (const seqlen of SEQLENS) {
    for (const dtype of DTYPES_FLOAT) {
      const rng = new Rng(2000 + k);
      const dstate = DSTATES[k % DSTATES.length] as number;
      k++;
      const groups = rng.int(1, 2);
      const nheads = groups * rng.int(1, 2);
      // Keep the reference's work (seqlen * nheads * headdim * dstate) near a few million steps.
      const budget = Math.max(1, Math.floor(3e6 / (seqlen * nheads * dstate)));
      const headdim = Math.max(1, Math.min([1, 8, 16, 33, 64][rng.int(0, 4)] as number, budget));
      cases.push({
        batch: rng.int(1, 2),
        seqlen,
        nheads,
        headdim,
        groups,
        dstate,
        dtype,
        chunkSize: [32, 64, 256][rng.int(0, 2)] as number,
        D: (['none', 'head', 'channel'] as const)[rng.int(0, 2)] as SsdCase['D'],
        z: rng.uniform() < 0.5,
        dtBias: rng.uniform() < 0.5,
        softplus: rng.uniform() < 0.5,
        initialStates: rng.uniform() < 0.5,
        seqIdx: rng.uniform() < 0.3,
      });
    }
  }
  return cases;
}

describe.each(testDevices())('ssdScan on %s', (device) => {
  // Cases that move their tensors to the device run on every backend; the others use host tensors
  // only and run once.
  const itDev = it;
  const itHost = device === 'cpu' ? it : it.skip;

  describe('peer grid (sampled)', () => {
    gridCases().forEach((c, i) => {
      itDev(label(c), async () => runCase(c, 10 + i, device, i % 3 === 0));
    });
  });

  itDev('every flag combination, [2, 45, 4, 24] dstate 20, 2 groups', async () => {
    let seed = 0;
    for (let f = 0; f < 96; f++) {
      const c: SsdCase = {
        batch: 2,
        seqlen: 45,
        nheads: 4,
        headdim: 24,
        groups: 2,
        dstate: 20,
        dtype: 'float32',
        chunkSize: 16,
        D: (['none', 'head', 'channel'] as const)[f % 3] as SsdCase['D'],
        z: (f & 4) !== 0,
        dtBias: (f & 8) !== 0,
        softplus: (f & 16) !== 0,
        initialStates: (f & 32) !== 0,
        seqIdx: (f & 64) !== 0,
      };
      await runCase(c, seed++, device, f % 2 === 0);
    }
  });

  itDev('Mamba-2 shape: bfloat16 [1, 300, 8, 64] dstate 128', async () => {
    const all = { D: 'head', z: true, dtBias: true, softplus: true, initialStates: true, seqIdx: false } as const;
    await runCase(
      { batch: 1, seqlen: 300, nheads: 8, headdim: 64, groups: 1, dstate: 128, dtype: 'bfloat16', chunkSize: 256, ...all },
      3,
      device,
      false,
    );
  });

  itHost('decays from none to underflow within one block', async () => {
    // Per-step decays exp(dt A) from 1 down to exp(-300) = 0 in float32: the kernel restarts its
    // rescaled runs wherever the running decay would leave float32's comfortable range.
    const rng = new Rng(17);
    const [batch, L, H, P, G, N] = [1, 150, 3, 16, 1, 16];
    const normal = () => rng.normal();
    const x = randTensor([batch, L, H, P], 'float32', normal);
    const dt = randTensor([batch, L, H], 'float32', () => (rng.uniform() < 0.1 ? 0 : 3 * rng.uniform()));
    const A = new Tensor('float32', new Float32Array([-0.01, -30, -100]), [H]);
    const B = randTensor([batch, L, G, N], 'float32', normal);
    const C = randTensor([batch, L, G, N], 'float32', normal);
    const init = randTensor([batch, H, P, N], 'float32', normal);
    const res = ssdScanSync(x.t, dt.t, A, B.t, C.t, { initialStates: init.t, returnFinalStates: true, chunkSize: 64 });
    const want = ssdScanRef({
      batch,
      seqlen: L,
      nheads: H,
      headdim: P,
      groups: G,
      dstate: N,
      x: x.v,
      dt: dt.v,
      A: [-0.01, -30, -100],
      B: B.v,
      C: C.v,
      initialStates: init.v,
    });
    assertClose(toF64(res.out), want.out, TOL.float32, 'out');
    assertClose(toF64(res.finalStates as Tensor), want.finalStates, TOL.float32, 'finalStates');
  });

  itHost('the result does not depend on chunkSize', async () => {
    const c: SsdCase = {
      batch: 1,
      seqlen: 200,
      nheads: 2,
      headdim: 16,
      groups: 1,
      dstate: 16,
      dtype: 'float32',
      chunkSize: 1,
      D: 'head',
      z: true,
      dtBias: true,
      softplus: true,
      initialStates: true,
      seqIdx: true,
    };
    const m = makeCase(c, 8);
    const base = ssdScanSync(...m.args, { ...m.opts, chunkSize: 1 }).out.dataSync();
    for (const chunkSize of [7, 64, 256, 4096]) {
      expect(Array.from(ssdScanSync(...m.args, { ...m.opts, chunkSize }).out.dataSync())).toEqual(Array.from(base));
    }
  });

  itHost('decoding L steps with the multi-head selectiveStateUpdate equals the scan over L', async () => {
    const rng = new Rng(31);
    const [batch, L, H, P, G, N] = [2, 19, 4, 12, 2, 24];
    const normal = () => rng.normal();
    const x = randTensor([batch, L, H, P], 'float32', normal);
    const dt = randTensor([batch, L, H], 'float32', normal);
    const A = randTensor([H], 'float32', () => -rng.uniform() * 4);
    const B = randTensor([batch, L, G, N], 'float32', normal);
    const C = randTensor([batch, L, G, N], 'float32', normal);
    const D = randTensor([H], 'float32', normal);
    const z = randTensor([batch, L, H, P], 'float32', normal);
    const bias = randTensor([H], 'float32', normal);
    const init = randTensor([batch, H, P, N], 'float32', normal);
    const scan = ssdScanSync(x.t, dt.t, A.t, B.t, C.t, {
      D: D.t,
      z: z.t,
      dtBias: bias.t,
      dtSoftplus: true,
      initialStates: init.t,
      returnFinalStates: true,
    });
    const scanOut = toF64(scan.out);
    const state = new Tensor('float32', Float32Array.from(init.v), [batch, H, P, N]);
    const at = (src: Float64Array, t: number, inner: number, shape: number[]) => {
      const a = new Float32Array(batch * inner);
      for (let b = 0; b < batch; b++) for (let i = 0; i < inner; i++) a[b * inner + i] = src[(b * L + t) * inner + i] as number;
      return new Tensor('float32', a, shape);
    };
    for (let t = 0; t < L; t++) {
      const y = selectiveStateUpdateSync(
        state,
        at(x.v, t, H * P, [batch, H, P]),
        at(dt.v, t, H, [batch, H]),
        A.t,
        at(B.v, t, G * N, [batch, G, N]),
        at(C.v, t, G * N, [batch, G, N]),
        { D: D.t, z: at(z.v, t, H * P, [batch, H, P]), dtBias: bias.t, dtSoftplus: true },
      );
      const want = new Float64Array(batch * H * P);
      for (let b = 0; b < batch; b++)
        for (let i = 0; i < H * P; i++) want[b * H * P + i] = scanOut[(b * L + t) * H * P + i] as number;
      assertClose(toF64(y), want, { rtol: 1e-5, atol: 1e-5 }, `step ${t}`);
    }
    assertClose(toF64(state), toF64(scan.finalStates as Tensor), { rtol: 1e-5, atol: 1e-5 }, 'final states');
  });

  itHost('packed seqIdx equals running each sequence alone', async () => {
    const rng = new Rng(12);
    const [H, P, G, N] = [2, 16, 1, 32];
    const lens = [3, 70, 1, 26];
    const L = lens.reduce((a, b) => a + b, 0);
    const normal = () => rng.normal();
    const x = randTensor([1, L, H, P], 'float32', normal);
    const dt = randTensor([1, L, H], 'float32', () => rng.uniform() * 0.2);
    const A = randTensor([H], 'float32', () => -rng.uniform() * 4);
    const B = randTensor([1, L, G, N], 'float32', normal);
    const C = randTensor([1, L, G, N], 'float32', normal);
    const init = randTensor([1, H, P, N], 'float32', normal);
    const ids = new Int32Array(L);
    let pos = 0;
    lens.forEach((n, i) => {
      ids.fill(i, pos, pos + n);
      pos += n;
    });
    const packed = ssdScanSync(x.t, dt.t, A.t, B.t, C.t, {
      initialStates: init.t,
      seqIdx: new Tensor('int32', ids, [1, L]),
      returnFinalStates: true,
    });
    const po = toF64(packed.out);
    const part = (src: Float64Array, inner: number, s: number, n: number, shape: number[]) =>
      new Tensor('float32', Float32Array.from(src.subarray(s * inner, (s + n) * inner)), shape);
    pos = 0;
    lens.forEach((n, i) => {
      const alone = ssdScanSync(
        part(x.v, H * P, pos, n, [1, n, H, P]),
        part(dt.v, H, pos, n, [1, n, H]),
        A.t,
        part(B.v, G * N, pos, n, [1, n, G, N]),
        part(C.v, G * N, pos, n, [1, n, G, N]),
        { initialStates: i === 0 ? init.t : undefined, returnFinalStates: true },
      );
      assertClose(po.subarray(pos * H * P, (pos + n) * H * P), toF64(alone.out), { rtol: 1e-6, atol: 1e-6 }, `sequence ${i}`);
      if (i === lens.length - 1) {
        assertClose(
          toF64(packed.finalStates as Tensor),
          toF64(alone.finalStates as Tensor),
          { rtol: 1e-6, atol: 1e-6 },
          'finalStates',
        );
      }
      pos += n;
    });
  });

  for (const g of goldenCases('ssdScan')) {
    itDev(`golden ${g.file}`, async () => {
      const t = loadGolden(g.file) as Record<string, Tensor>;
      const dev = async (v: Tensor | undefined) => (v === undefined || device === 'cpu' ? v : v.to(device));
      const o = g.options as { chunkSize?: number; returnFinalStates?: boolean };
      const res = await ssdScan(
        (await dev(t.x)) as Tensor,
        (await dev(t.dt)) as Tensor,
        (await dev(t.A)) as Tensor,
        (await dev(t.B)) as Tensor,
        (await dev(t.C)) as Tensor,
        { chunkSize: o.chunkSize, returnFinalStates: o.returnFinalStates ?? false },
      );
      assertClose(toF64(res.out.toSync('cpu')), toF64(t.out as Tensor), TOL.float32, `${g.file} out`);
      assertClose(
        toF64((res.finalStates as Tensor).toSync('cpu')),
        toF64(t.finalStates as Tensor),
        TOL.float32,
        `${g.file} finalStates`,
      );
    });
  }
});

// The CUDA tensor-core path (bfloat16; headdim and dstate multiples of 8 up to 64 and 128; chunks of 64
// steps; warps split headdim and dstate in halves): the shapes put the edges of those splits in play,
// and the states, which it keeps in float32, are held to float32's tolerance. On a device the
// sequential kernel (SSMKIT_CUDA_SSD=exact) runs the same case for comparison, and the tensor-core
// kernel's earlier form (SSMKIT_CUDA_SSD=scalar), its lean form (SSMKIT_CUDA_SSD=lean) and its shared-M
// form (SSMKIT_CUDA_SSD=shared, the default on sm_90) must give the default's outputs and final states bit
// for bit: all compute the same operations in the same order. So must the sequences cut into time
// segments (SSMKIT_CUDA_SSD_SEGS).

describe.each(testDevices())('ssdScan tensor-core path edges on %s', (device) => {
  const flags = (D: SsdCase['D'], bits: string) => ({
    D,
    z: bits[0] === '1',
    dtBias: bits[1] === '1',
    softplus: bits[2] === '1',
    initialStates: bits[3] === '1',
    seqIdx: bits[4] === '1',
  });
  // [batch, seqlen, nheads, headdim, groups, dstate], D, then z, dtBias, softplus, initialStates, seqIdx.
  const cases: [number, number, number, number, number, number, SsdCase['D'], string][] = [
    // Four chunks and a tail of 44, two groups, every flag.
    [2, 300, 4, 64, 2, 128, 'channel', '11111'],
    // One step past a chunk; headdim 40 (the second half of headdim partly padding); dstate 72.
    [1, 65, 3, 40, 1, 72, 'head', '10110'],
    // Shorter than half a chunk; headdim 24 (the second half all padding); dstate 8.
    [1, 31, 2, 24, 1, 8, 'none', '01101'],
    // Two whole chunks, four groups, dstate 32 (the second half of the padded 64 states empty).
    [2, 128, 8, 16, 4, 32, 'head', '11011'],
    // One step.
    [1, 1, 2, 8, 1, 16, 'channel', '11110'],
    // dstate 64 with no z, no D, no states, no bias; packed sequences.
    [1, 200, 2, 64, 1, 64, 'none', '00001'],
    // dstate 120 and headdim 56: both padded within the last 8-column tile of a half.
    [1, 150, 2, 56, 2, 120, 'head', '10111'],
  ];
  cases.forEach(([batch, seqlen, nheads, headdim, groups, dstate, D, bits], i) => {
    const c: SsdCase = {
      batch,
      seqlen,
      nheads,
      headdim,
      groups,
      dstate,
      dtype: 'bfloat16',
      chunkSize: 256,
      ...flags(D, bits),
    };
    it(label(c), async () => {
      const m = makeCase(c, 500 + i);
      const { args, opts } = await onDevice(m, device);
      const run = (mode: string | undefined) => withEnv({ SSMKIT_CUDA_SSD: mode }, () => ssdScan(...args, opts));
      const res = await run(undefined);
      const out = toF64(res.out.toSync('cpu'));
      const fin = toF64((res.finalStates as Tensor).toSync('cpu'));
      const want = ssdScanRef(m.ref);
      assertClose(out, want.out, TOL.bfloat16, `out ${label(c)}`);
      assertClose(fin, want.finalStates, TOL.float32, `finalStates ${label(c)}`);
      if (device !== 'cpu') {
        // Both kernels compute in float32; the outputs may differ by one bfloat16 rounding step.
        const exact = await run('exact');
        assertClose(out, toF64(exact.out.toSync('cpu')), { rtol: 1.6e-2, atol: 1.6e-2 }, `out vs exact ${label(c)}`);
        assertClose(
          fin,
          toF64((exact.finalStates as Tensor).toSync('cpu')),
          { rtol: 1e-4, atol: 1e-4 },
          `finalStates vs exact ${label(c)}`,
        );
        // The earlier form, the lean form (each warp computing its own M and x * w) and the shared-M form
        // (the default on sm_90) give the same bits as the default.
        for (const form of ['scalar', 'lean', 'shared']) {
          const r = await run(form);
          expect(Array.from(toF64(r.out.toSync('cpu'))), `out ${form} ${label(c)}`).toEqual(Array.from(out));
          expect(Array.from(toF64((r.finalStates as Tensor).toSync('cpu'))), `finalStates ${form} ${label(c)}`).toEqual(
            Array.from(fin),
          );
        }
        // Sequences cut into time segments, each from the state the one before it left: the same operations
        // in the same order, so the same bits.
        for (const env of [{ SSMKIT_CUDA_SSD_SEGS: '2' }, { SSMKIT_CUDA_SSD_SEGS: '3' }]) {
          const r = await withEnv(env, () => ssdScan(...args, opts));
          const what = `${JSON.stringify(env)} ${label(c)}`;
          expect(Array.from(toF64(r.out.toSync('cpu'))), `out ${what}`).toEqual(Array.from(out));
          expect(Array.from(toF64((r.finalStates as Tensor).toSync('cpu'))), `finalStates ${what}`).toEqual(Array.from(fin));
        }
      }
    });
  });
});

describe('ssdScan argument errors', () => {
  const f32 = (shape: number[], fill = 0.1) =>
    new Tensor('float32', new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill), shape);
  // batch 1, seqlen 6, 4 heads of 3, 2 groups, dstate 5.
  const x = f32([1, 6, 4, 3]);
  const dt = f32([1, 6, 4]);
  const A = f32([4], -1);
  const B = f32([1, 6, 2, 5]);
  const C = f32([1, 6, 2, 5]);
  type Call = () => unknown;
  const cases: [string, Call, ErrorConstructor, string][] = [
    ['x of int32', () => ssdScanSync(new Tensor('int32', new Int32Array(72), [1, 6, 4, 3]), dt, A, B, C), TypeError, 'x'],
    ['x of rank 3', () => ssdScanSync(f32([6, 4, 3]), dt, A, B, C), RangeError, 'x'],
    ['dt of another shape', () => ssdScanSync(x, f32([1, 6, 3]), A, B, C), RangeError, 'dt'],
    ['A per channel', () => ssdScanSync(x, dt, f32([4, 3]), B, C), RangeError, 'A'],
    ['B with 3 groups of 4 heads', () => ssdScanSync(x, dt, A, f32([1, 6, 3, 5]), f32([1, 6, 3, 5])), RangeError, 'B'],
    ['C of another dstate', () => ssdScanSync(x, dt, A, B, f32([1, 6, 2, 4])), RangeError, 'C'],
    ['chunkSize 0', () => ssdScanSync(x, dt, A, B, C, { chunkSize: 0 }), RangeError, 'options.chunkSize'],
    ['chunkSize of string', () => ssdScanSync(x, dt, A, B, C, { chunkSize: '64' as never }), TypeError, 'options.chunkSize'],
    ['D of shape [4, 2]', () => ssdScanSync(x, dt, A, B, C, { D: f32([4, 2]) }), RangeError, 'options.D'],
    ['z of another shape', () => ssdScanSync(x, dt, A, B, C, { z: f32([1, 6, 4, 2]) }), RangeError, 'options.z'],
    [
      'initialStates of float16',
      () => ssdScanSync(x, dt, A, B, C, { initialStates: f32([1, 4, 3, 5]).cast('float16') }),
      TypeError,
      'options.initialStates',
    ],
    [
      'decreasing seqIdx',
      () => ssdScanSync(x, dt, A, B, C, { seqIdx: new Tensor('int32', Int32Array.from([0, 1, 1, 0, 2, 2]), [1, 6]) }),
      RangeError,
      'options.seqIdx',
    ],
    ['unknown option', () => ssdScanSync(x, dt, A, B, C, { chunk_size: 64 } as never), TypeError, 'options.chunk_size'],
  ];
  for (const [what, call, cls, arg] of cases) {
    it(what, () => {
      let err: unknown;
      try {
        call();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(cls);
      expect((err as Error).message).toContain('ssdScan');
      expect((err as Error).message).toContain(`${arg}:`);
    });
  }
});
