// Every SIMD path of the scan family's CPU kernels against the float64 references. The addon reads
// SSMKIT_SIMD once per process, so each path runs in a child node process with the cap set: the parent
// writes each case's inputs to a safetensors file, the child runs the op on them and writes its
// outputs, and the parent compares. The cases sample each op's code paths (vector tails, state sizes that
// fit in registers and ones that do not, every dtype, every option) rather than the full grids, which
// the other test files run on the default path.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backend, type DType, encodeSafetensors, loadSafetensorsSync, Tensor } from '../dist/cjs/index.js';
import { causalConv1dRef, causalConv1dUpdateRef, selectiveScanRef, selectiveStateUpdateRef, ssdScanRef } from './ref/scan';
import { assertClose, type FloatDType, Rng, randTensor, toF64 } from './util';

const TOL = {
  float32: { rtol: 6e-4, atol: 2e-3 },
  float16: { rtol: 3e-3, atol: 5e-3 },
  bfloat16: { rtol: 3e-2, atol: 5e-2 },
};

interface SimdCase {
  name: string;
  op: string;
  dtype: FloatDType;
  positional: [string, Tensor][];
  options: Record<string, unknown>;
  optTensors: [string, Tensor][];
  /** Inputs the op updates in place, saved by the child after the call. */
  mutated: string[];
  expected: Record<string, Float64Array>;
}

const rng = new Rng(2024);
const normal = () => rng.normal();
const f32 = (shape: number[], f = normal) => randTensor(shape, 'float32', f);

function seqIdx(batch: number, seqlen: number): { t: Tensor; v: Int32Array } {
  const v = new Int32Array(batch * seqlen);
  for (let b = 0; b < batch; b++) {
    let id = 0;
    for (let t = 0; t < seqlen; t++) {
      if (t > 0 && rng.uniform() < 4 / seqlen) id++;
      v[b * seqlen + t] = id;
    }
  }
  return { t: new Tensor('int32', v, [batch, seqlen]), v };
}

function scanCase(
  dtype: FloatDType,
  batch: number,
  dim: number,
  L: number,
  N: number,
  varB: boolean,
  varC: boolean,
  groups: number,
): SimdCase {
  const u = randTensor([batch, dim, L], dtype, normal);
  const delta = randTensor([batch, dim, L], dtype, () => rng.uniform());
  const A = f32([dim, N], () => -rng.uniform());
  const B = varB ? randTensor([batch, groups, N, L], dtype, normal) : f32([dim, N]);
  const C = varC ? randTensor([batch, groups, N, L], dtype, normal) : f32([dim, N]);
  const D = f32([dim]);
  const z = randTensor([batch, dim, L], dtype, normal);
  const bias = f32([dim], () => rng.uniform() - 0.5);
  const init = f32([batch, dim, N]);
  const seq = seqIdx(batch, L);
  const ref = selectiveScanRef({
    batch,
    dim,
    seqlen: L,
    dstate: N,
    u: u.v,
    delta: delta.v,
    A: A.v,
    B: B.v,
    C: C.v,
    groupsB: varB ? groups : 0,
    groupsC: varC ? groups : 0,
    D: D.v,
    z: z.v,
    deltaBias: bias.v,
    deltaSoftplus: true,
    initialState: init.v,
    seqIdx: seq.v,
  });
  return {
    name: `selectiveScan ${dtype} [${batch}, ${dim}, ${L}] dstate ${N} B ${varB ? 'var' : 'const'} C ${varC ? 'var' : 'const'}`,
    op: 'selectiveScan',
    dtype,
    positional: [
      ['u', u.t],
      ['delta', delta.t],
      ['A', A.t],
      ['B', B.t],
      ['C', C.t],
    ],
    options: { deltaSoftplus: true, returnLastState: true },
    optTensors: [
      ['D', D.t],
      ['z', z.t],
      ['deltaBias', bias.t],
      ['initialState', init.t],
      ['seqIdx', seq.t],
    ],
    mutated: [],
    expected: { out: ref.out, lastState: ref.lastState },
  };
}

function updateCase(
  dtype: FloatDType,
  multihead: boolean,
  batch: number,
  H: number,
  P: number,
  N: number,
  groups: number,
): SimdCase {
  const stateBatch = batch + 1;
  const idx = Int32Array.from({ length: batch }, (_, i) => (i + 1) % stateBatch);
  if (batch > 1) idx[0] = -1;
  const xShape = multihead ? [batch, H, P] : [batch, H];
  const state = f32(multihead ? [stateBatch, H, P, N] : [stateBatch, H, N]);
  const x = randTensor(xShape, dtype, normal);
  const dt = randTensor([batch, H], dtype, normal);
  const A = f32(multihead ? [H] : [H, N], () => -rng.uniform() - 1);
  const B = randTensor(multihead ? [batch, groups, N] : [batch, N], dtype, normal);
  const C = randTensor(multihead ? [batch, groups, N] : [batch, N], dtype, normal);
  const D = f32([H]);
  const z = randTensor(xShape, dtype, normal);
  const bias = f32([H], () => rng.uniform() - 2);
  const ref = selectiveStateUpdateRef({
    batch,
    nheads: H,
    headdim: multihead ? P : 1,
    dstate: N,
    multihead,
    groups: multihead ? groups : 1,
    state: state.v,
    x: x.v,
    dt: dt.v,
    A: A.v,
    B: B.v,
    C: C.v,
    D: D.v,
    z: z.v,
    dtBias: bias.v,
    dtSoftplus: true,
    stateBatchIndices: idx,
  });
  return {
    name: `selectiveStateUpdate ${multihead ? 'multi-head' : 'Mamba-1'} ${dtype} [${batch}, ${H}, ${multihead ? P : ''}, ${N}]`,
    op: 'selectiveStateUpdate',
    dtype,
    positional: [
      ['state', state.t],
      ['x', x.t],
      ['dt', dt.t],
      ['A', A.t],
      ['B', B.t],
      ['C', C.t],
    ],
    options: { dtSoftplus: true },
    optTensors: [
      ['D', D.t],
      ['z', z.t],
      ['dtBias', bias.t],
      ['stateBatchIndices', new Tensor('int32', idx, [batch])],
    ],
    mutated: ['state'],
    expected: { out: ref.out, state: ref.state },
  };
}

function ssdCase(
  dtype: FloatDType,
  batch: number,
  L: number,
  H: number,
  P: number,
  G: number,
  N: number,
  dPerChannel: boolean,
): SimdCase {
  const x = randTensor([batch, L, H, P], dtype, normal);
  const dt = randTensor([batch, L, H], dtype, () => rng.normal() - 2);
  const A = f32([H], () => -1 - 8 * rng.uniform());
  const B = randTensor([batch, L, G, N], dtype, normal);
  const C = randTensor([batch, L, G, N], dtype, normal);
  const D = f32(dPerChannel ? [H, P] : [H]);
  const z = randTensor([batch, L, H, P], dtype, normal);
  const bias = f32([H], () => rng.uniform());
  const init = f32([batch, H, P, N]);
  const seq = seqIdx(batch, L);
  const ref = ssdScanRef({
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
    D: D.v,
    dPerChannel,
    z: z.v,
    dtBias: bias.v,
    dtSoftplus: true,
    initialStates: init.v,
    seqIdx: seq.v,
  });
  return {
    name: `ssdScan ${dtype} [${batch}, ${L}, ${H}, ${P}] dstate ${N} groups ${G}`,
    op: 'ssdScan',
    dtype,
    positional: [
      ['x', x.t],
      ['dt', dt.t],
      ['A', A.t],
      ['B', B.t],
      ['C', C.t],
    ],
    options: { dtSoftplus: true, returnFinalStates: true, chunkSize: 32 },
    optTensors: [
      ['D', D.t],
      ['z', z.t],
      ['dtBias', bias.t],
      ['initialStates', init.t],
      ['seqIdx', seq.t],
    ],
    mutated: [],
    expected: { out: ref.out, finalStates: ref.finalStates },
  };
}

function convCase(dtype: FloatDType, batch: number, dim: number, L: number, K: number, wDtype: DType): SimdCase {
  const x = randTensor([batch, dim, L], dtype, normal);
  const w = randTensor([dim, K], wDtype, normal);
  const bias = randTensor([dim], wDtype, normal);
  const init = f32([batch, dim, K - 1]);
  const seq = seqIdx(batch, L);
  const ref = causalConv1dRef({
    batch,
    dim,
    seqlen: L,
    width: K,
    x: x.v,
    weight: w.v,
    bias: bias.v,
    silu: true,
    initialStates: init.v,
    seqIdx: seq.v,
  });
  return {
    name: `causalConv1d ${dtype} [${batch}, ${dim}, ${L}] width ${K}`,
    op: 'causalConv1d',
    dtype,
    positional: [
      ['x', x.t],
      ['weight', w.t],
    ],
    options: { activation: 'silu', returnFinalStates: true },
    optTensors: [
      ['bias', bias.t],
      ['initialStates', init.t],
      ['seqIdx', seq.t],
    ],
    mutated: [],
    expected: { out: ref.out, finalStates: ref.finalStates },
  };
}

function convUpdateCase(dtype: FloatDType, batch: number, dim: number, L: number, K: number, S: number): SimdCase {
  const x = randTensor([batch, dim, L], dtype, normal);
  const state = f32([batch + 1, dim, S]);
  const w = f32([dim, K]);
  const bias = f32([dim]);
  const idx = Int32Array.from({ length: batch }, (_, i) => batch - i);
  const ref = causalConv1dUpdateRef({
    batch,
    dim,
    seqlen: L,
    width: K,
    stateLen: S,
    x: x.v,
    convState: state.v,
    weight: w.v,
    bias: bias.v,
    silu: true,
    convStateIndices: idx,
  });
  return {
    name: `causalConv1dUpdate ${dtype} [${batch}, ${dim}, ${L}] width ${K} stateLen ${S}`,
    op: 'causalConv1dUpdate',
    dtype,
    positional: [
      ['x', x.t],
      ['convState', state.t],
      ['weight', w.t],
    ],
    options: { activation: 'silu' },
    optTensors: [
      ['bias', bias.t],
      ['convStateIndices', new Tensor('int32', idx, [batch])],
    ],
    mutated: ['convState'],
    expected: { out: ref.out, convState: ref.convState },
  };
}

const CASES: SimdCase[] = [
  scanCase('float32', 2, 20, 67, 16, true, true, 2),
  scanCase('bfloat16', 1, 18, 40, 5, false, true, 1),
  scanCase('float16', 2, 7, 33, 40, true, false, 1),
  scanCase('float32', 1, 3, 50, 64, true, true, 1),
  scanCase('float32', 1, 2, 20, 1, false, false, 1),
  scanCase('bfloat16', 1, 4, 19, 300, true, true, 1),
  updateCase('float16', false, 3, 37, 1, 16, 1),
  updateCase('float32', false, 2, 70, 1, 21, 1),
  updateCase('bfloat16', true, 2, 4, 10, 20, 2),
  updateCase('float32', true, 1, 2, 3, 1, 1),
  ssdCase('float32', 1, 70, 4, 24, 2, 20, false),
  ssdCase('bfloat16', 2, 33, 2, 64, 1, 128, true),
  ssdCase('float16', 1, 9, 3, 5, 3, 3, true),
  convCase('float32', 2, 5, 50, 4, 'float32'),
  convCase('bfloat16', 1, 3, 17, 8, 'bfloat16'),
  convCase('float16', 1, 2, 3, 5, 'float32'),
  convUpdateCase('float32', 2, 6, 3, 4, 5),
  convUpdateCase('bfloat16', 3, 19, 1, 2, 1),
];

// Runs every case file in argv[1] with the addon of argv[2]; writes <case>.out.safetensors and prints
// the SIMD path in force.
const CHILD = `
const fs = require('node:fs');
const path = require('node:path');
const [dir, dist] = process.argv.slice(1);
const s = require(dist);
(async () => {
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.json'))) {
    const meta = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
    const t = s.loadSafetensorsSync(path.join(dir, meta.file));
    const opts = { ...meta.options };
    for (const n of meta.optTensors) opts[n] = t['opt.' + n];
    const r = s[meta.op + 'Sync'](...meta.positional.map((n) => t[n]), opts);
    const outs = r instanceof s.Tensor ? { out: r } : { ...r };
    for (const n of meta.mutated) outs[n] = t[n];
    fs.writeFileSync(path.join(dir, meta.file.replace('.in.', '.out.')), await s.encodeSafetensors(outs));
  }
  process.stdout.write(s.backend().simd);
})().catch((e) => { console.error(e); process.exit(1); });
`;

let dir = '';

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssmkit-scan-simd-'));
  for (const [i, c] of CASES.entries()) {
    const tensors: Record<string, Tensor> = {};
    for (const [n, t] of c.positional) tensors[n] = t;
    for (const [n, t] of c.optTensors) tensors[`opt.${n}`] = t;
    const file = `case${i}.in.safetensors`;
    fs.writeFileSync(path.join(dir, file), await encodeSafetensors(tensors));
    const meta = {
      file,
      op: c.op,
      positional: c.positional.map(([n]) => n),
      options: c.options,
      optTensors: c.optTensors.map(([n]) => n),
      mutated: c.mutated,
    };
    fs.writeFileSync(path.join(dir, `case${i}.json`), JSON.stringify(meta));
  }
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const LEVELS = ['scalar', 'avx2', 'avx512'] as const;
const RANK: Record<string, number> = { scalar: 0, avx2: 1, avx512: 2, avx512vnni: 3 };

describe.each(LEVELS)('SSMKIT_SIMD=%s', (level) => {
  const outs: Record<string, Tensor>[] = [];
  let simd = '';

  beforeAll(() => {
    for (const f of fs.readdirSync(dir).filter((n) => n.includes('.out.'))) fs.rmSync(path.join(dir, f));
    const dist = path.join(__dirname, '..', 'dist', 'cjs', 'index.js');
    const r = spawnSync(process.execPath, ['-e', CHILD, dir, dist], {
      env: { ...process.env, SSMKIT_SIMD: level, SSMKIT_BACKEND: 'cpu' },
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
    simd = r.stdout.trim();
    for (let i = 0; i < CASES.length; i++) outs.push(loadSafetensorsSync(path.join(dir, `case${i}.out.safetensors`)));
  });

  it('runs the requested path, or the best this CPU has below it', () => {
    const best = RANK[backend().simd] as number;
    expect(RANK[simd]).toBe(Math.min(RANK[level] as number, best));
  });

  CASES.forEach((c, i) => {
    it(c.name, () => {
      for (const [name, want] of Object.entries(c.expected)) {
        const got = outs[i]?.[name] as Tensor;
        assertClose(toF64(got), want, TOL[c.dtype], `${level} ${c.name} ${name}`);
      }
    });
  });
});
