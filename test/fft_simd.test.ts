// Every SIMD path of the FFT convolution family: the family's test files run again in child processes
// with SSMKIT_SIMD capping the level (this process already ran them on the best level of the CPU).
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backend } from '../dist/cjs/index.js';

const root = path.join(__dirname, '..');
const vitest = path.join(path.dirname(require.resolve('vitest/package.json')), 'vitest.mjs');
const FILES = ['test/fft_conv.test.ts', 'test/s4d_kernel.test.ts', 'test/ssm_conv.test.ts'];

// The family's kernels differ for scalar, avx2 and avx512 (avx512vnni runs the avx512 ones). The plain
// run covered the best level of this CPU; the children cover the levels below it.
const KERNEL_LEVEL: Record<string, number> = { scalar: 0, avx2: 1, avx512: 2, avx512vnni: 2 };
const LEVELS = ['scalar', 'avx2', 'avx512'].filter(
  (level) => (KERNEL_LEVEL[level] as number) < (KERNEL_LEVEL[backend().simd] ?? 0),
);

function simdUnder(level: string): string {
  const r = spawnSync(process.execPath, ['-p', "require('./dist/cjs/index.js').backend().simd"], {
    cwd: root,
    env: { ...process.env, SSMKIT_SIMD: level },
    encoding: 'utf8',
  });
  return r.stdout.trim();
}

describe('fft family on every SIMD level', () => {
  if (LEVELS.length === 0) it.skip('this CPU has only the scalar level, which the plain run covered', () => {});
  for (const level of LEVELS) {
    it(`SSMKIT_SIMD=${level}`, () => {
      expect(simdUnder(level)).toBe(level);
      const r = spawnSync(process.execPath, [vitest, 'run', ...FILES], {
        cwd: root,
        env: { ...process.env, SSMKIT_SIMD: level },
        encoding: 'utf8',
      });
      expect(r.status, `${r.stdout}\n${r.stderr}`.slice(-4000)).toBe(0);
    });
  }
});
