// Checks (--check) or rewrites (--fix) the formatting of every C++/CUDA source under native/ with the
// clang-format binary that the clang-format npm package ships.
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const bin = join(dirname(require.resolve('clang-format/package.json')), 'bin', `linux_x64`, 'clang-format');
const fix = process.argv.includes('--fix');

function walk(dir, out) {
  for (const f of readdirSync(dir)) {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (/\.(cc|h|cu|cuh)$/.test(f)) out.push(p);
  }
  return out;
}

const files = walk(join(root, 'native'), []);
if (fix) {
  execFileSync(bin, ['-i', '--style=file', ...files], { cwd: root, stdio: 'inherit' });
} else {
  try {
    execFileSync(bin, ['--dry-run', '--Werror', '--style=file', ...files], { cwd: root, stdio: 'inherit' });
  } catch {
    console.error('clang-format: run `npm run format` to fix the files above');
    process.exit(1);
  }
}
