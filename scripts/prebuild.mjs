// Runs before `npm pack`: builds the prebuilt binaries that ship in the tarball. prebuildify makes the
// CPU addon (prebuilds/<platform>-<arch>/*.node, found by node-gyp-build); where nvcc exists, cmake-js
// builds the CUDA variant into prebuilds/<platform>-<arch>/cuda/ssmkit.node, a folder node-gyp-build
// does not look into, so only lib/backend.ts picks it. SSMKIT_SKIP_CUDA=1 skips the CUDA variant.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });
const has = (cmd) => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

const target = `${process.platform}-${process.arch}`;
rmSync(join(root, 'prebuilds', target), { recursive: true, force: true });
// The N-API binary serves every Node version from the one it is built with; building it against the
// running Node lets node-gyp use local headers (npm_config_nodedir) where they are configured.
run(process.execPath, [require.resolve('prebuildify/bin.js'), '--napi', '--strip', '--target', process.versions.node]);

if (process.env.SSMKIT_SKIP_CUDA !== '1' && process.platform === 'linux' && has('nvcc')) {
  run(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), 'compile', '--out', 'build-cuda']);
  const dir = join(root, 'prebuilds', target, 'cuda');
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(root, 'build-cuda', 'Release', 'ssmkit.node'), join(dir, 'ssmkit.node'));
  if (has('strip')) run('strip', ['--strip-unneeded', join(dir, 'ssmkit.node')]);
} else {
  console.log('prebuild: no nvcc (or SSMKIT_SKIP_CUDA=1): the CUDA variant is not included');
}
