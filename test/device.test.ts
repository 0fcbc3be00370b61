// CUDA tensors: copies both ways for every dtype, casts on the device, memory accounting, and an
// allocation larger than the card. Runs where the CUDA backend loaded; elsewhere skipped (no GPU).
import { describe, expect, it } from 'vitest';
import { native } from '../dist/cjs/backend.js';
import {
  backend,
  emptyCache,
  hadamardSync,
  memory,
  SsmkitError,
  selectiveStateUpdate,
  synchronize,
  Tensor,
} from '../dist/cjs/index.js';
import { Rng } from './util';

const onCuda = backend().name === 'cuda';

describe.skipIf(!onCuda)('CUDA tensors (skipped: no CUDA backend on this machine)', () => {
  it('reports the device', () => {
    const b = backend();
    expect(b.device).toBeTruthy();
    expect(b.computeCapability).toMatch(/^\d+\.\d+$/);
  });

  it.each(['float32', 'float16', 'bfloat16', 'int8', 'uint8', 'int32', 'int4', 'float64'] as const)(
    '%s round-trips cpu -> cuda -> cpu',
    async (dtype) => {
      const rng = new Rng(dtype.length);
      const shape = [3, 5, 7];
      const cpu = Tensor.zeros(shape, dtype);
      const raw = cpu.dataSync() as unknown as { length: number; [i: number]: number };
      for (let i = 0; i < raw.length; i++) raw[i] = Math.floor(rng.uniform() * 100);
      const g = await cpu.to('cuda:0');
      expect(g.device).toBe('cuda:0');
      const back = await g.data();
      expect(Array.from(back as ArrayLike<number>)).toEqual(Array.from(raw as unknown as ArrayLike<number>));
      expect(Array.from(g.toSync('cpu').dataSync() as ArrayLike<number>)).toEqual(Array.from(back as ArrayLike<number>));
      g.dispose();
    },
  );

  it('casts on the device exactly as on the CPU', async () => {
    const rng = new Rng(5);
    const vals = Array.from({ length: 4099 }, () => rng.normal() * 1000);
    const t = new Tensor('float32', vals, [4099]);
    const g = t.toSync('cuda:0');
    for (const dt of ['float16', 'bfloat16', 'float64'] as const) {
      const c = g.cast(dt);
      expect(Array.from(c.dataSync() as ArrayLike<number>), dt).toEqual(Array.from(t.cast(dt).dataSync() as ArrayLike<number>));
      const back = c.cast('float32');
      expect(Array.from(back.dataSync()), `${dt} back`).toEqual(Array.from(t.cast(dt).cast('float32').dataSync()));
      back.dispose();
      c.dispose();
    }
    g.dispose();
  });

  it('data() reads a tensor as the work enqueued before the call left it: later in-place writes, a dispose and later work do not change it', async () => {
    const rng = new Rng(11);
    const [dim, N] = [64, 16];
    const put = (shape: number[]) => {
      const n = shape.reduce((a, b) => a * b, 1);
      return new Tensor(
        'float32',
        Float32Array.from({ length: n }, () => rng.normal()),
        shape,
      ).toSync('cuda:0');
    };
    // selectiveStateUpdate writes its state in place: 20 steps enqueued after the read must not show in it.
    const state = put([1, dim, N]);
    const want = Array.from(state.toSync('cpu').dataSync());
    const [x, dt, A, B, C] = [put([1, dim]), put([1, dim]), put([dim, N]), put([1, N]), put([1, N])];
    const read = state.data();
    for (let i = 0; i < 20; i++) (await selectiveStateUpdate(state, x, dt, A, B, C, { dtSoftplus: true })).dispose();
    expect(Array.from(await read)).toEqual(want);
    expect(Array.from(state.toSync('cpu').dataSync())).not.toEqual(want);
    // Disposed right after the call: the copy was enqueued before the memory was freed.
    const g = put([3, 1000]);
    const host = Array.from(g.toSync('cpu').dataSync());
    const early = g.data();
    g.dispose();
    expect(Array.from(await early)).toEqual(host);
    // Past the staged size (1 MiB) the copy waits for the stream, as dataSync does.
    const big = put([300_000]);
    expect(Array.from(await big.data())).toEqual(Array.from(big.toSync('cpu').dataSync()));
    for (const t of [state, x, dt, A, B, C, big]) t.dispose();
  });

  it('accounts device bytes and returns them on dispose', async () => {
    const before = memory().deviceBytes;
    const g = Tensor.zeros([1024, 1024], 'float32', 'cuda:0');
    expect(memory().deviceBytes).toBe(before + 4 * 1024 * 1024);
    expect(Array.from((await g.data()).slice(0, 4))).toEqual([0, 0, 0, 0]);
    g.dispose();
    expect(memory().deviceBytes).toBe(before);
    await synchronize('cuda:0');
  });

  it('10,000 create -> op -> dispose cycles return the device memory (cudaMemGetInfo back to baseline)', async () => {
    emptyCache('cuda:0');
    const before = native().deviceMemory(0) as { free: number };
    const bytes0 = memory().deviceBytes;
    const x = new Tensor('float32', new Float32Array(64 * 256).fill(1), [64, 256]);
    for (let i = 0; i < 10_000; i++) {
      const g = x.toSync('cuda:0');
      const y = hadamardSync(g);
      g.dispose();
      y.dispose();
    }
    emptyCache('cuda:0');
    expect(memory().deviceBytes).toBe(bytes0);
    const after = native().deviceMemory(0) as { free: number };
    // emptyCache hands the pool's memory back; allow one 2 MiB granule.
    expect(before.free - after.free).toBeLessThanOrEqual(2 * 1024 * 1024);
  });

  it('an allocation larger than the card is ERR_SSMKIT_CUDA_OOM, and the process goes on', async () => {
    const { total } = native().deviceMemory(0) as { total: number };
    let err: unknown;
    try {
      Tensor.empty([Math.ceil((total * 1.5) / 4)], 'float32', 'cuda:0');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SsmkitError);
    expect((err as SsmkitError).code).toBe('ERR_SSMKIT_CUDA_OOM');
    const t = new Tensor('float32', [1, 2, 3], [3]);
    expect(Array.from(await (await t.to('cuda:0')).data())).toEqual([1, 2, 3]);
  });
});
