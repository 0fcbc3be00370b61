// Installs the CPU peers the benchmarks compare against (onnxruntime-node's CPU build, fft.js) into
// bench/.peers, outside the package's dependencies, and returns a require() rooted there.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(here, '.peers');
const PEERS = { 'onnxruntime-node': '1.30.0', 'fft.js': '4.0.4' };

/** require() for a peer package, installing the pinned peers on first use. */
export function requirePeer(name) {
  if (!existsSync(join(dir, 'node_modules', name))) {
    const specs = Object.entries(PEERS).map(([n, v]) => `${n}@${v}`);
    execFileSync('npm', ['install', '--no-save', '--ignore-scripts', '--no-audit', '--no-fund', '--prefix', dir, ...specs], {
      stdio: 'inherit',
    });
  }
  return createRequire(join(dir, 'package.json'))(name);
}
