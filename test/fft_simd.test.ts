// Every SIMD path of the FFT convolution family: the family's test files run again in child processes
// with SSMKIT_SIMD capping the level (this process already ran them on the best level of the CPU).
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backend } from '../dist/cjs/index.js';

const root = path.join(__dirname, '..');
const vitest = path.join(path.dirname(require.resolve('vitest/package.json')), 'vitest.mjs');
const FILES = ['test/fft_conv.test.ts', 'test/s4d_kernel.test.ts', 'test/ssm_conv.test.ts'];

// Levels below the best one this CPU has; the best one is what the plain run used.
const LEVELS = ['scalar', 'avx2', 'avx512'].filter((level) => {
  const order = ['scalar', 'avx2', 'avx512', 'avx512vnni'];
  return order.indexOf(level) < order.indexOf(backend().simd);
});

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
