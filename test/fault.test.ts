// Kernel errors on a CUDA device, raised on purpose through the addon's test hook `_debugFault`
// (native/napi/backend.cc; not part of the API): an op whose launch fails (a non-sticky error) or whose
// kernel faults (a trap, an out-of-bounds store: sticky errors that lose the CUDA context).
// - The failing op rejects with SsmkitError naming the op and the CUDA error.
// - After a non-sticky error the next op works and is not blamed for it, whether the failed call
//   reported its error or left it in CUDA's error slot.
// - A sticky fault runs in a child process (the context is lost for good): with SSMKIT_CUDA_SYNC=1 it is
//   reported on the op that caused it; without, at the next synchronization. Every later CUDA call then
//   fails with SsmkitError naming its op, nothing crashes or hangs, and the process exits normally.
// The CUDA cases skip themselves, with the reason, where the CUDA backend did not load.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { native } from '../dist/cjs/backend.js';
import * as s from '../dist/cjs/index.js';
import { callAsync, callSync } from '../dist/cjs/ops/run.js';

const { backend, hadamard, hadamardSync, SsmkitError, synchronize, Tensor } = s;
const onCuda = backend().name === 'cuda';

// hadamard([1, 2, 3, 4]) in Sylvester order.
const X = [1, 2, 3, 4];
const HX = [10, -2, -4, 0];

describe('the fault hook', () => {
  it('is on the binding and not in the API', async () => {
    expect(typeof native()._debugFault).toBe('function');
    expect('_debugFault' in s).toBe(false);
    const e = await callAsync('_debugFault', { kind: 'no-such-kind', device: 0 }, []).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RangeError);
    expect((e as Error).message).toMatch(/^_debugFault: kind: unknown kind/);
  });

  it.skipIf(onCuda)('fails with SsmkitError where there is no CUDA device (no CUDA backend here)', async () => {
    const e = await callAsync('_debugFault', { kind: 'trap', device: 0 }, []).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SsmkitError);
    expect((e as Error).message).toMatch(/^_debugFault: /);
  });
});

describe.skipIf(!onCuda)('CUDA kernel errors (skipped: no CUDA backend on this machine)', () => {
  const check = async (x: InstanceType<typeof Tensor>) => {
    expect(Array.from((await (await hadamard(x)).data()) as Float32Array)).toEqual(HX);
    expect(Array.from(hadamardSync(x).dataSync() as Float32Array)).toEqual(HX);
  };

  it('a launch error rejects its op with SsmkitError naming the op and the error; the next op is not blamed', async () => {
    const x = new Tensor('float32', X, [4]).toSync('cuda:0');
    const e = await callAsync('_debugFault', { kind: 'launch', device: 0 }, []).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SsmkitError);
    expect((e as { code: string }).code).toBe('ERR_SSMKIT_CUDA');
    // The runtime names an oversized block invalid configuration (<<<>>>) or invalid argument
    // (cudaLaunchKernel, CUDA 13).
    expect((e as Error).message).toMatch(
      /^_debugFault: cuda: .*failed: .* \((cudaErrorInvalidConfiguration|cudaErrorInvalidValue)\)/,
    );
    await check(x);
    expect(() => callSync('_debugFault', { kind: 'launch', device: 0 }, [])).toThrow(
      /^_debugFault: cuda: .*(cudaErrorInvalidConfiguration|cudaErrorInvalidValue)/,
    );
    await check(x);
    await synchronize('cuda:0');
    x.dispose();
  });

  it('an error left unreported in the error slot is not blamed on the next op', async () => {
    const x = new Tensor('float32', X, [4]).toSync('cuda:0');
    for (const next of ['async', 'sync'] as const) {
      await callAsync('_debugFault', { kind: 'unchecked-launch', device: 0 }, []);
      if (next === 'async') expect(Array.from((await (await hadamard(x)).data()) as Float32Array)).toEqual(HX);
      else expect(Array.from(hadamardSync(x).dataSync() as Float32Array)).toEqual(HX);
    }
    await synchronize('cuda:0');
    x.dispose();
  });

  // The child: one good op, the fault, then every kind of later call; prints what each did.
  const child = (kind: string, syncEachOp: boolean) => {
    const dist = path.join(__dirname, '..', 'dist', 'cjs');
    const code = `
      const s = require(${JSON.stringify(path.join(dist, 'index.js'))});
      const { callAsync } = require(${JSON.stringify(path.join(dist, 'ops', 'run.js'))});
      const say = (e) => (e instanceof s.SsmkitError ? 'SsmkitError ' + e.code + ': ' : String(e && e.name) + ': ') + e.message;
      const trySync = (f) => { try { f(); return 'returned'; } catch (e) { return say(e); } };
      (async () => {
        const out = {};
        const x = new s.Tensor('float32', ${JSON.stringify(X)}, [4]).toSync('cuda:0');
        out.before = Array.from(await (await s.hadamard(x)).data());
        out.fault = await callAsync('_debugFault', { kind: ${JSON.stringify(kind)}, device: 0 }, []).then(() => 'resolved', say);
        out.synchronize = await s.synchronize('cuda:0').then(() => 'resolved', say);
        out.op = await s.hadamard(x).then(() => 'resolved', say);
        out.opSync = trySync(() => s.hadamardSync(x));
        out.zeros = trySync(() => s.Tensor.zeros([4], 'float32', 'cuda:0'));
        out.to = await new s.Tensor('float32', [1], [1]).to('cuda:0').then(() => 'resolved', say);
        out.data = await x.data().then(() => 'resolved', say);
        x.dispose();
        console.log(JSON.stringify(out));
      })();`;
    const env = { ...process.env, SSMKIT_BACKEND: 'cuda', SSMKIT_CUDA_SYNC: syncEachOp ? '1' : '0' };
    const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', env, timeout: 60_000 });
    // Exits on its own, normally: no signal, no hang (the timeout would kill it), status 0.
    expect(r.signal, r.stderr).toBeNull();
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout.trim().split('\n').pop() as string) as Record<string, unknown>;
  };
  const STICKY = /cudaErrorLaunchFailure|cudaErrorIllegalAddress/;
  const laterFails = (out: Record<string, unknown>) => {
    const cases: [string, RegExp][] = [
      ['synchronize', /^synchronize: /],
      ['op', /^hadamard: /],
      ['opSync', /^hadamard(Sync)?: /],
      ['zeros', /^Tensor\.(empty|zeros): /],
      ['to', /^to: /],
      ['data', /^data: /],
    ];
    for (const [key, op] of cases) {
      const m = /^SsmkitError (ERR_SSMKIT_\w+): (.*)$/s.exec(String(out[key]));
      expect(m, `${key}: ${String(out[key])}`).not.toBeNull();
      expect(m?.[1], `${key}: ${String(out[key])}`).toBe('ERR_SSMKIT_CUDA');
      expect(m?.[2], key).toMatch(op);
      expect(m?.[2], key).toMatch(/cudaError\w+/);
    }
  };

  for (const kind of ['trap', 'illegal-address']) {
    it(`${kind}: with SSMKIT_CUDA_SYNC=1 reported on the op that faulted; every later call fails cleanly`, () => {
      const out = child(kind, true);
      expect(out.before).toEqual(HX);
      expect(out.fault).toMatch(/^SsmkitError ERR_SSMKIT_CUDA: _debugFault: cuda: /);
      expect(out.fault).toMatch(STICKY);
      expect(out.fault).toMatch(/context is lost/);
      laterFails(out);
    });

    it(`${kind}: without SSMKIT_CUDA_SYNC reported at the next synchronization; every later call fails cleanly`, () => {
      const out = child(kind, false);
      expect(out.before).toEqual(HX);
      expect(out.fault).toBe('resolved');
      expect(out.synchronize).toMatch(STICKY);
      laterFails(out);
    });
  }
});
