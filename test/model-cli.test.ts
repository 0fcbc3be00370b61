// The `ssmkit` command (dist/cjs/cli.js, package.json's bin): generate on the golden checkpoints gives
// the golden greedy continuation with a progress line; inspect prints backend(); bad input exits 1.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadSafetensorsSync, type Tensor } from '../dist/cjs/index.js';
import { GOLDEN_DIR } from './util';

const root = path.join(__dirname, '..');
const cli = path.join(root, 'dist', 'cjs', 'cli.js');

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, SSMKIT_BACKEND: 'cpu' },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('ssmkit CLI', () => {
  it('generate: the golden greedy continuation, one line per prompt, progress on stderr', () => {
    const dir = path.join(GOLDEN_DIR, 'mamba2-tiny');
    const e = loadSafetensorsSync(path.join(dir, 'expected.safetensors'));
    const gen = Array.from((e.generated_ids as Tensor).dataSync() as Int32Array);
    const prompt = gen.slice(0, 24);
    const r = run('generate', dir, '--prompt-ids', prompt.join(','), '--prompt-ids', '1,2', '--max-new-tokens', '16');
    expect(r.code, r.err).toBe(0);
    const lines = r.out.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe(gen.slice(24).join(','));
    expect(lines[1]?.split(',')).toHaveLength(16);
    expect(r.err).toMatch(/16\/16 tokens x 2 sequences, [\d.]+ tokens\/s/);
  });

  it('inspect prints the backend', () => {
    const r = run('inspect');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).name).toBe('cpu');
  });

  it('help, and errors exit 1 with a message', () => {
    expect(run('--help').out).toContain('ssmkit generate <model-dir>');
    const bad = run('frobnicate');
    expect(bad.code).toBe(1);
    expect(bad.err).toContain('unknown command "frobnicate"');
    const noIds = run('generate', path.join(GOLDEN_DIR, 'mamba-tiny'));
    expect(noIds.code).toBe(1);
    expect(noIds.err).toContain('--prompt-ids');
    const badIds = run('generate', path.join(GOLDEN_DIR, 'mamba-tiny'), '--prompt-ids', '1,x');
    expect(badIds.code).toBe(1);
    expect(badIds.err).toContain('--prompt-ids');
    const noDir = run('generate', path.join(GOLDEN_DIR, 'missing'), '--prompt-ids', '1');
    expect(noDir.code).toBe(1);
    expect(noDir.err).toContain('config.json');
  });

  it('bench runs a small published shape end to end', () => {
    const r = run('bench', '--shape', 'mamba2-130m', '--prompt', '8', '--tokens', '2');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/decode: [\d.]+ ms\/token/);
    expect(r.out).toMatch(/prefill 8 tokens: \d+ tokens\/s/);
  });
});
