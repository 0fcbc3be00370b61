// Malformed-call generator: mutates one valid call of each public op (cases.mjs) at a time, seeded, and
// checks that every call either works or throws TypeError / RangeError / SsmkitError whose message names
// the op, that no input is modified (in-place state aside) and that nothing hangs or crashes. Runs in a
// child process of test/malformed.test.ts (a crash there is a failure, not a lost run).
// Usage: node driver.mjs <seed> <calls> [op,op,...]   Prints one JSON line: the tally and any failures.
import { createRequire } from 'node:module';
import { opCases } from './cases.mjs';

const require = createRequire(import.meta.url);
const s = require('../../dist/cjs/index.js');

const seed = Number(process.argv[2] ?? 1);
const calls = Number(process.argv[3] ?? 100);
const only = process.argv[4] ? process.argv[4].split(',') : undefined;

let state = seed >>> 0;
const rnd = () => {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = (a) => a[Math.floor(rnd() * a.length)];

const DTYPES = ['float32', 'float16', 'bfloat16', 'int8', 'uint8', 'int32', 'int4', 'float64'];
const BAD_VALUES = [null, 3, 'x', {}, [1, 2], new Float32Array(4), true, () => 1, Symbol('s'), 10n];
const BAD_NUMBERS = [1.5, -1, 0, 1e12, 2 ** 31, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY, -0.5, 'x', true, {}, null];

const isTensor = (v) => v instanceof s.Tensor;

/** Every tensor slot of a call: [holder, key] pairs (positional args or option entries). */
function tensorSlots(args) {
  const slots = [];
  args.forEach((a, i) => {
    if (isTensor(a)) slots.push([args, i]);
    else if (a && typeof a === 'object' && !Array.isArray(a) && !ArrayBuffer.isView(a)) {
      for (const k of Object.keys(a)) if (isTensor(a[k])) slots.push([a, k]);
    }
  });
  return slots;
}

function tensorLike(t, dtype, shape) {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = Array.from({ length: n }, () => (dtype === 'int4' ? Math.floor(rnd() * 16) - 8 : dtype.startsWith('float') || dtype === 'bfloat16' ? rnd() - 0.5 : Math.floor(rnd() * 100)));
  return new s.Tensor(dtype, v, shape);
}

/** A copy of t whose TypedArray starts one element into a larger buffer (unaligned for SIMD). */
function misaligned(t) {
  const src = t.dataSync();
  const C = src.constructor;
  const buf = new ArrayBuffer((src.length + 1) * C.BYTES_PER_ELEMENT);
  const arr = new C(buf, C.BYTES_PER_ELEMENT, src.length);
  arr.set(src);
  return new s.Tensor(t.dtype, arr, t.shape);
}

const MUTATIONS = {
  wrongDtype(args) {
    const slots = tensorSlots(args);
    if (!slots.length) return 'none';
    const [h, k] = pick(slots);
    const dt = pick(DTYPES.filter((d) => d !== h[k].dtype));
    h[k] = tensorLike(h[k], dt, [...h[k].shape]);
    return `${String(k)} -> ${dt}`;
  },
  wrongRank(args) {
    const slots = tensorSlots(args);
    if (!slots.length) return 'none';
    const [h, k] = pick(slots);
    const shape = rnd() < 0.5 ? [1, ...h[k].shape] : h[k].shape.slice(0, -1);
    h[k] = tensorLike(h[k], h[k].dtype, shape);
    return `${String(k)} -> [${shape}]`;
  },
  badDim(args) {
    const slots = tensorSlots(args);
    if (!slots.length) return 'none';
    const [h, k] = pick(slots);
    const shape = [...h[k].shape];
    if (!shape.length) return 'none';
    const i = Math.floor(rnd() * shape.length);
    shape[i] = pick([0, shape[i] + 1, shape[i] * 2 + 1]);
    h[k] = tensorLike(h[k], h[k].dtype, shape);
    return `${String(k)} -> [${shape}]`;
  },
  disposed(args) {
    const slots = tensorSlots(args);
    if (!slots.length) return 'none';
    const [h, k] = pick(slots);
    h[k].dispose();
    return `${String(k)} disposed`;
  },
  detached(args) {
    const slots = tensorSlots(args);
    if (!slots.length) return 'none';
    const [h, k] = pick(slots);
    const a = h[k].dataSync();
    structuredClone(a.buffer, { transfer: [a.buffer] });
    return `${String(k)} detached`;
  },
  misaligned(args) {
    for (const [h, k] of tensorSlots(args)) if (rnd() < 0.6) h[k] = misaligned(h[k]);
    return 'views at an element offset';
  },
  nanInf(args) {
    const slots = tensorSlots(args).filter(([h, k]) => h[k].dtype === 'float32');
    if (!slots.length) return 'none';
    const [h, k] = pick(slots);
    const d = h[k].dataSync();
    for (let i = 0; i < d.length; i++) if (rnd() < 0.3) d[i] = pick([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 3e38]);
    return `${String(k)} NaN/Inf`;
  },
  notTensor(args) {
    const slots = tensorSlots(args);
    if (!slots.length) return 'none';
    const [h, k] = pick(slots);
    const v = pick(BAD_VALUES);
    h[k] = v;
    return `${String(k)} -> ${typeof v}`;
  },
  missing(args) {
    const n = Math.floor(rnd() * args.length);
    args.length = n;
    return `only ${n} arguments`;
  },
  extra(args) {
    if (!(args.length && typeof args[args.length - 1] === 'object' && !isTensor(args[args.length - 1]))) args.push({});
    args.push(pick(BAD_VALUES));
    return 'one extra argument';
  },
  badOption(args) {
    const last = args[args.length - 1];
    if (last && typeof last === 'object' && !isTensor(last) && !ArrayBuffer.isView(last)) {
      const keys = Object.keys(last);
      const r = rnd();
      if (r < 0.15) {
        args[args.length - 1] = pick([7, 'x', [1], true]);
        return 'options not an object';
      }
      if (r < 0.3 || !keys.length) {
        last[pick(['unknownOption', 'Dd', 'scale2'])] = 1;
        return 'unknown option';
      }
      const k = pick(keys);
      last[k] = pick(BAD_NUMBERS);
      return `options.${k} -> ${String(last[k])}`;
    }
    // Ops whose last positional is a number (s4dKernel's L).
    if (typeof last === 'number') {
      args[args.length - 1] = pick(BAD_NUMBERS.concat([2 ** 40, 2 ** 31, 2 ** 62]));
      return `last -> ${String(args[args.length - 1])}`;
    }
    return 'none';
  },
};

function snapshot(args, inPlace) {
  const snaps = [];
  for (const [h, k] of tensorSlots(args)) {
    if (h === args && inPlace.includes(k)) continue;
    const t = h[k];
    if (t.isDisposed) continue;
    let bytes;
    try {
      const d = t.dataSync();
      bytes = Buffer.from(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    } catch {
      continue; // detached
    }
    snaps.push([t, bytes, String(k)]);
  }
  return snaps;
}

function disposeResult(r) {
  if (isTensor(r)) r.dispose();
  else if (r && typeof r === 'object') for (const v of Object.values(r)) if (isTensor(v)) v.dispose();
}

const tally = { calls: 0, ok: 0, TypeError: 0, RangeError: 0, SsmkitError: 0 };
const failures = [];
const cases = opCases(s, rnd).filter((c) => !only || only.includes(c.op));
for (const c of cases) {
  if (typeof s[c.op] !== 'function' || typeof s[`${c.op}Sync`] !== 'function') failures.push({ op: c.op, what: 'op is not exported' });
}

for (let i = 0; i < calls && !failures.length; i++) {
  const c = cases[i % cases.length];
  if (typeof s[c.op] !== 'function') continue;
  const args = c.args();
  const mname = pick(Object.keys(MUTATIONS));
  const what = MUTATIONS[mname](args);
  const sync = rnd() < 0.5;
  const name = sync ? `${c.op}Sync` : c.op;
  const snaps = snapshot(args, c.inPlace);
  process.stderr.write(`${i} ${name} ${mname}: ${what}\n`);
  tally.calls++;
  try {
    const r = sync ? s[name](...args) : await s[name](...args);
    disposeResult(r);
    tally.ok++;
  } catch (e) {
    const cls = e instanceof s.SsmkitError ? 'SsmkitError' : e instanceof TypeError ? 'TypeError' : e instanceof RangeError ? 'RangeError' : 'other';
    if (cls === 'other') failures.push({ i, op: name, mutation: mname, what, error: `${e?.name}: ${e?.message}` });
    else if (!String(e.message).startsWith(`${name}: `) && !String(e.message).startsWith(`${c.op}: `)) {
      failures.push({ i, op: name, mutation: mname, what, error: `message does not name the op: ${e.message}` });
    } else tally[cls]++;
  }
  for (const [t, bytes, k] of snaps) {
    if (t.isDisposed) continue;
    let now;
    try {
      const d = t.dataSync();
      now = Buffer.from(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    } catch {
      continue;
    }
    if (!now.equals(bytes)) failures.push({ i, op: name, mutation: mname, what, error: `input ${k} was modified` });
  }
}
console.log(JSON.stringify({ seed, ...tally, failures }));
