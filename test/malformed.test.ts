// Bad input, every public op: a seeded generator of malformed calls (test/fuzz/driver.mjs) runs in
// child processes, so that a crash is a failure and not a lost run. Every call must work or throw
// TypeError / RangeError / SsmkitError naming the op, and leave its inputs unchanged. `npm run stress`
// runs many more calls, and again under AddressSanitizer.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

function drive(seed: number, calls: number): Promise<{ code: number | null; signal: string | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [path.join(__dirname, 'fuzz', 'driver.mjs'), String(seed), String(calls)]);
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err = (err + d).slice(-4000)));
    p.on('close', (code, signal) => resolve({ code, signal, out, err }));
  });
}

describe('malformed calls', () => {
  it.each([1, 2, 3, 4])('seed %i: 500 calls, no crash, only documented errors, inputs unchanged', async (seed) => {
    const r = await drive(seed, 500);
    expect(r.signal, `crashed; last calls:\n${r.err.split('\n').slice(-4).join('\n')}`).toBeNull();
    expect(r.code, r.err.slice(-1000)).toBe(0);
    const tally = JSON.parse(r.out.trim().split('\n').pop() as string);
    expect(tally.failures).toEqual([]);
    expect(tally.calls).toBe(500);
    expect(tally.TypeError + tally.RangeError).toBeGreaterThan(200);
  });
});
