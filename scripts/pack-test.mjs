// The install a user without a compiler gets: `npm pack` (which builds the prebuilt binaries), then the
// tarball installed with --ignore-scripts into an empty folder, with a PATH that holds only node and
// npm, and both `require('ssmkit')` and `import('ssmkit')` made to load the CPU binary and run an op.
// Prints "N passed, N failed" and exits non-zero on any failure.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const work = mkdtempSync(join(tmpdir(), 'ssmkit-pack-'));
const results = [];
const check = (name, fn) => {
  try {
    fn();
    results.push([name, true]);
    console.log(`ok   ${name}`);
  } catch (e) {
    results.push([name, false]);
    console.log(`FAIL ${name}\n${e.stdout ?? ''}${e.stderr ?? ''}${e.message}`);
  }
};

try {
  const out = execFileSync('npm', ['pack', '--pack-destination', work], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const tgz = join(work, out.trim().split('\n').pop());
  const listing = execFileSync('tar', ['tzf', tgz], { encoding: 'utf8' });
  check('tarball holds the CPU prebuilt binary and the ESM/CJS entry points', () => {
    for (const f of ['package/dist/cjs/index.js', 'package/dist/esm/index.mjs', 'package/dist/cjs/index.d.ts']) {
      if (!listing.includes(f)) throw new Error(`missing ${f}`);
    }
    if (!/package\/prebuilds\/linux-x64\/[^/]+\.node/.test(listing)) throw new Error('no prebuilds/linux-x64/*.node');
  });

  // A PATH with node and npm only: no cc, c++, g++, make, python3, nvcc.
  const bin = join(work, 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  const npmCli = execFileSync('sh', ['-c', 'readlink -f "$(command -v npm)"'], { encoding: 'utf8' }).trim();
  symlinkSync(npmCli, join(bin, 'npm'));
  const env = { ...process.env, PATH: bin };
  for (const k of Object.keys(env)) if (k.startsWith('npm_')) delete env[k];
  check('no compiler on the PATH', () => {
    for (const c of ['cc', 'gcc', 'g++', 'c++', 'clang', 'make', 'python3', 'nvcc']) {
      const found = readdirSync(bin).includes(c);
      if (found) throw new Error(`${c} is on the PATH`);
    }
  });

  const app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  check('npm install --ignore-scripts <tarball>', () => {
    execFileSync(join(bin, 'npm'), ['install', '--ignore-scripts', '--no-audit', '--no-fund', tgz], {
      cwd: app,
      env,
      encoding: 'utf8',
      stdio: 'pipe',
    });
  });

  const probe = `
    const s = MOD;
    const b = s.backend();
    if (!b.bindingPath.includes('prebuilds')) throw new Error('loaded ' + b.bindingPath);
    const x = new s.Tensor('float32', new Float32Array([1, 2, 3, 4]), [1, 4]);
    const y = Array.from(s.hadamardSync(x).dataSync());
    if (y.join() !== '10,-2,-4,0') throw new Error('hadamard gave ' + y);
    console.log(b.name, b.simd, b.bindingPath);`;
  check("require('ssmkit')", () => {
    const o = execFileSync(join(bin, 'node'), ['-e', probe.replace('MOD', "require('ssmkit')")], {
      cwd: app,
      env: { ...env, SSMKIT_BACKEND: 'cpu' },
      encoding: 'utf8',
    });
    process.stdout.write(`     ${o}`);
  });
  check("import('ssmkit')", () => {
    const code = `import('ssmkit').then((m) => { ${probe.replace('MOD', 'm')} })`;
    const o = execFileSync(
      join(bin, 'node'),
      ['--input-type=module', '-e', `${code}.catch((e) => { console.error(e); process.exit(1); })`],
      {
        cwd: app,
        env: { ...env, SSMKIT_BACKEND: 'cpu' },
        encoding: 'utf8',
      },
    );
    process.stdout.write(`     ${o}`);
  });
  check('named ESM imports and types resolve', () => {
    writeFileSync(
      join(app, 'named.mjs'),
      "import { Tensor, backend, hadamard } from 'ssmkit';\nif (typeof Tensor !== 'function' || typeof hadamard !== 'function') process.exit(1);\nconsole.log(backend().name);\n",
    );
    execFileSync(join(bin, 'node'), ['named.mjs'], { cwd: app, env, encoding: 'utf8' });
  });
} finally {
  rmSync(work, { recursive: true, force: true });
}

const passed = results.filter((r) => r[1]).length;
const failed = results.length - passed;
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
