/**
 * Plain TypeScript versions of the scan family's ops (SPEC.md signatures, the options the model runner
 * uses), CPU tensors only. The runner uses them only where the loaded addon lacks the native op; they
 * are correct for any length and slow.
 */
import { fromNumbers, toFloat32 } from '../dtype';
import { SsmkitError } from '../errors';
import { Tensor } from '../tensor';

function f32(t: Tensor): Float32Array {
  if (t.device !== 'cpu') throw new SsmkitError('model: the scan family ops are not in this build', 'ERR_SSMKIT_UNSUPPORTED');
  return toFloat32(t.dtype, t.dataSync() as never);
}

function make(dtype: Tensor['dtype'], values: Float32Array, shape: readonly number[]): Tensor {
  return new Tensor(dtype, fromNumbers(dtype, values) as never, shape);
}

const silu = (v: number) => v / (1 + Math.exp(-v));
const softplus = (v: number) => (v <= 20 ? Math.log1p(Math.exp(v)) : v);

interface ConvOptions {
  bias?: Tensor;
  activation?: 'silu' | null;
  initialStates?: Tensor;
  returnFinalStates?: boolean;
}

/** x (b, dim, L), weight (dim, w), states (b, dim, w - 1). */
export function causalConv1dFallback(x: Tensor, weight: Tensor, o: ConvOptions): { out: Tensor; finalStates?: Tensor } {
  const [b, dim, L] = x.shape as [number, number, number];
  const w = weight.shape[1] as number;
  const xv = f32(x);
  const wv = f32(weight);
  const bv = o.bias ? f32(o.bias) : undefined;
  const init = o.initialStates ? f32(o.initialStates) : undefined;
  const out = new Float32Array(xv.length);
  const fin = new Float32Array(b * dim * (w - 1));
  const at = (bb: number, c: number, t: number): number => {
    if (t >= 0) return xv[(bb * dim + c) * L + t] as number;
    const s = w - 1 + t;
    return s >= 0 && init ? (init[(bb * dim + c) * (w - 1) + s] as number) : 0;
  };
  for (let bb = 0; bb < b; bb++) {
    for (let c = 0; c < dim; c++) {
      for (let t = 0; t < L; t++) {
        let s = bv ? (bv[c] as number) : 0;
        for (let j = 0; j < w; j++) s += (wv[c * w + j] as number) * at(bb, c, t - (w - 1) + j);
        out[(bb * dim + c) * L + t] = o.activation === 'silu' ? silu(s) : s;
      }
      for (let j = 0; j < w - 1; j++) fin[(bb * dim + c) * (w - 1) + j] = at(bb, c, L - (w - 1) + j);
    }
  }
  return {
    out: make(x.dtype, out, x.shape),
    ...(o.returnFinalStates ? { finalStates: make('float32', fin, [b, dim, w - 1]) } : {}),
  };
}

/** x (b, dim, L) new tokens; convState (b, dim, stateLen) updated in place. */
export function causalConv1dUpdateFallback(
  x: Tensor,
  convState: Tensor,
  weight: Tensor,
  o: { bias?: Tensor; activation?: 'silu' | null },
): Tensor {
  const [b, dim, L] = x.shape as [number, number, number];
  const w = weight.shape[1] as number;
  const sl = convState.shape[2] as number;
  const xv = f32(x);
  const wv = f32(weight);
  const bv = o.bias ? f32(o.bias) : undefined;
  const st = convState.dataSync() as Float32Array;
  const out = new Float32Array(xv.length);
  for (let bb = 0; bb < b; bb++) {
    for (let c = 0; c < dim; c++) {
      const s0 = (bb * dim + c) * sl;
      for (let t = 0; t < L; t++) {
        const xin = xv[(bb * dim + c) * L + t] as number;
        let s = bv ? (bv[c] as number) : 0;
        for (let j = 0; j < w - 1; j++) s += (wv[c * w + j] as number) * (st[s0 + sl - (w - 1) + j] as number);
        s += (wv[c * w + w - 1] as number) * xin;
        out[(bb * dim + c) * L + t] = o.activation === 'silu' ? silu(s) : s;
        for (let j = 0; j < sl - 1; j++) st[s0 + j] = st[s0 + j + 1] as number;
        st[s0 + sl - 1] = xin;
      }
    }
  }
  return make(x.dtype, out, x.shape);
}

interface ScanOptions {
  D?: Tensor;
  z?: Tensor;
  deltaBias?: Tensor;
  deltaSoftplus?: boolean;
  initialState?: Tensor;
  returnLastState?: boolean;
}

/** u, delta, z (b, dim, L); A (dim, n); B, C (b, g, n, L); state (b, dim, n). */
export function selectiveScanFallback(
  u: Tensor,
  delta: Tensor,
  A: Tensor,
  B: Tensor,
  C: Tensor,
  o: ScanOptions,
): { out: Tensor; lastState?: Tensor } {
  const [b, dim, L] = u.shape as [number, number, number];
  const n = A.shape[1] as number;
  const g = B.shape[1] as number;
  const uv = f32(u);
  const dv = f32(delta);
  const av = f32(A);
  const bv = f32(B);
  const cv = f32(C);
  const Dv = o.D ? f32(o.D) : undefined;
  const zv = o.z ? f32(o.z) : undefined;
  const db = o.deltaBias ? f32(o.deltaBias) : undefined;
  const state = o.initialState ? f32(o.initialState) : new Float32Array(b * dim * n);
  const out = new Float32Array(uv.length);
  for (let bb = 0; bb < b; bb++) {
    for (let c = 0; c < dim; c++) {
      const grp = Math.floor(c / (dim / g));
      const h = state.subarray((bb * dim + c) * n, (bb * dim + c + 1) * n);
      for (let t = 0; t < L; t++) {
        const i = (bb * dim + c) * L + t;
        let d = (dv[i] as number) + (db ? (db[c] as number) : 0);
        if (o.deltaSoftplus) d = softplus(d);
        const x = uv[i] as number;
        let y = 0;
        for (let k = 0; k < n; k++) {
          const bi = ((bb * g + grp) * n + k) * L + t;
          const hv = Math.exp(d * (av[c * n + k] as number)) * (h[k] as number) + d * (bv[bi] as number) * x;
          h[k] = hv;
          y += hv * (cv[bi] as number);
        }
        if (Dv) y += (Dv[c] as number) * x;
        if (zv) y *= silu(zv[i] as number);
        out[i] = y;
      }
    }
  }
  return {
    out: make(u.dtype, out, u.shape),
    ...(o.returnLastState ? { lastState: new Tensor('float32', state, [b, dim, n]) } : {}),
  };
}

interface SsdOptions {
  D?: Tensor;
  z?: Tensor;
  dtBias?: Tensor;
  dtSoftplus?: boolean;
  initialStates?: Tensor;
  returnFinalStates?: boolean;
  chunkSize?: number;
}

/** x (b, L, h, p); dt (b, L, h); A (h); B, C (b, L, g, n); states (b, h, p, n). */
export function ssdScanFallback(
  x: Tensor,
  dt: Tensor,
  A: Tensor,
  B: Tensor,
  C: Tensor,
  o: SsdOptions,
): { out: Tensor; finalStates?: Tensor } {
  const [b, L, nh, hd] = x.shape as [number, number, number, number];
  const g = B.shape[2] as number;
  const n = B.shape[3] as number;
  const xv = f32(x);
  const dtv = f32(dt);
  const av = f32(A);
  const bv = f32(B);
  const cv = f32(C);
  const Dv = o.D ? f32(o.D) : undefined;
  const zv = o.z ? f32(o.z) : undefined;
  const db = o.dtBias ? f32(o.dtBias) : undefined;
  const state = o.initialStates ? f32(o.initialStates) : new Float32Array(b * nh * hd * n);
  const out = new Float32Array(xv.length);
  for (let bb = 0; bb < b; bb++) {
    for (let h = 0; h < nh; h++) {
      const grp = Math.floor(h / (nh / g));
      for (let t = 0; t < L; t++) {
        let d = (dtv[(bb * L + t) * nh + h] as number) + (db ? (db[h] as number) : 0);
        if (o.dtSoftplus) d = softplus(d);
        const dA = Math.exp(d * (av[h] as number));
        const bo = ((bb * L + t) * g + grp) * n;
        for (let p = 0; p < hd; p++) {
          const xi = ((bb * L + t) * nh + h) * hd + p;
          const xval = xv[xi] as number;
          const s0 = ((bb * nh + h) * hd + p) * n;
          let y = 0;
          for (let k = 0; k < n; k++) {
            const hv = dA * (state[s0 + k] as number) + d * xval * (bv[bo + k] as number);
            state[s0 + k] = hv;
            y += hv * (cv[bo + k] as number);
          }
          if (Dv) y += (Dv[h] as number) * xval;
          if (zv) y *= silu(zv[xi] as number);
          out[xi] = y;
        }
      }
    }
  }
  return {
    out: make(x.dtype, out, x.shape),
    ...(o.returnFinalStates ? { finalStates: new Tensor('float32', state, [b, nh, hd, n]) } : {}),
  };
}

interface UpdateOptions {
  D?: Tensor;
  z?: Tensor;
  dtBias?: Tensor;
  dtSoftplus?: boolean;
}

/**
 * One decode step, updating state in place. Mamba-1 form: state (b, dim, n), x, dt, z (b, dim),
 * A (dim, n), B, C (b, n). Multi-head form: state (b, h, p, n), x, z (b, h, p), dt (b, h), A (h),
 * B, C (b, g, n).
 */
export function selectiveStateUpdateFallback(
  state: Tensor,
  x: Tensor,
  dt: Tensor,
  A: Tensor,
  B: Tensor,
  C: Tensor,
  o: UpdateOptions,
): Tensor {
  const st = state.dataSync() as Float32Array;
  const xv = f32(x);
  const dtv = f32(dt);
  const av = f32(A);
  const bv = f32(B);
  const cv = f32(C);
  const Dv = o.D ? f32(o.D) : undefined;
  const zv = o.z ? f32(o.z) : undefined;
  const db = o.dtBias ? f32(o.dtBias) : undefined;
  const out = new Float32Array(xv.length);
  const heads = state.shape.length === 4;
  const b = state.shape[0] as number;
  const nh = state.shape[1] as number;
  const hd = heads ? (state.shape[2] as number) : 1;
  const n = state.shape[state.shape.length - 1] as number;
  const g = heads ? (B.shape[1] as number) : 1;
  for (let bb = 0; bb < b; bb++) {
    for (let h = 0; h < nh; h++) {
      const grp = Math.floor(h / (nh / g));
      let d = (dtv[bb * nh + h] as number) + (db ? (db[h] as number) : 0);
      if (o.dtSoftplus) d = softplus(d);
      for (let p = 0; p < hd; p++) {
        const xi = (bb * nh + h) * hd + p;
        const xval = xv[xi] as number;
        const s0 = xi * n;
        let y = 0;
        for (let k = 0; k < n; k++) {
          const a = heads ? (av[h] as number) : (av[h * n + k] as number);
          const bi = (bb * g + grp) * n + k;
          const hv = Math.exp(d * a) * (st[s0 + k] as number) + d * (bv[bi] as number) * xval;
          st[s0 + k] = hv;
          y += hv * (cv[bi] as number);
        }
        if (Dv) y += (Dv[h] as number) * xval;
        if (zv) y *= silu(zv[xi] as number);
        out[xi] = y;
      }
    }
  }
  return make(x.dtype, out, x.shape);
}
