// The long reliability suite (`npm run stress`): thousands of malformed calls in child processes, a
// sanitizer (AddressSanitizer + LeakSanitizer) build running them again, 10,000 create -> op -> dispose
// cycles with the resident set measured, tensors dropped without dispose, 64-deep concurrency rounds and
// the event-loop delay under load. Prints one line per check, then "N passed, N failed".
// Options: --quick (fewer calls), --no-asan.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.argv.includes('--quick');
const results = [];
const record = (name, ok, detail) => {
  results.push(ok);
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${detail}`);
};

function node(args, env = {}, timeoutMs = 600_000) {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { cwd: root, env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err = (err + d).slice(-20000)));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, err });
    });
  });
}

// What a sanitizer run reports that concerns ssmkit. Reports go to files (ASAN_OPTIONS log_path: stderr
// is cut), one per process. A memory error counts whatever its stack; a leak counts when its allocation
// stack passes through the addon (frames of ssmkit.node). Node exits without tearing V8 down, so
// LeakSanitizer also lists V8's own compiler and heap pages, none of which have an ssmkit frame.
function sanitizerFindings(dir) {
  const found = [];
  if (!existsSync(dir)) return found;
  for (const f of readdirSync(dir)) {
    const text = readFileSync(join(dir, f), 'utf8');
    const memoryError = text.match(/ERROR: AddressSanitizer: [^\n]*/);
    if (memoryError) found.push(`${f}: ${memoryError[0]}`);
    for (const block of text.split(/\n(?=(?:Direct|Indirect) leak of )/)) {
      if (/^(?:Direct|Indirect) leak of /.test(block) && block.includes('ssmkit')) found.push(`${f}: ${block.slice(0, 400)}`);
    }
  }
  return found;
}

async function fuzz(label, seeds, calls, env) {
  let tally = { calls: 0, ok: 0, TypeError: 0, RangeError: 0, SsmkitError: 0 };
  let crashes = 0;
  const failures = [];
  const queue = [...seeds];
  const workers = Array.from({ length: Math.max(1, Math.min(2, cpus().length)) }, async () => {
    while (queue.length) {
      const seed = queue.shift();
      const logs = env.SANITIZER_LOGS ? join(env.SANITIZER_LOGS, String(seed)) : '';
      if (logs) mkdirSync(logs, { recursive: true });
      const childEnv = logs ? { ...env, ASAN_OPTIONS: `${env.ASAN_OPTIONS}:log_path=${join(logs, 'asan')}` } : env;
      const r = await node([join(root, 'test/fuzz/driver.mjs'), String(seed), String(calls)], childEnv);
      const line = r.out.trim().split('\n').pop();
      if (r.code !== 0 || !line?.startsWith('{')) {
        crashes++;
        const last = r.err.trim().split('\n').slice(-3).join(' | ');
        failures.push(`seed ${seed}: exit ${r.code} signal ${r.signal}; last: ${last}`);
        continue;
      }
      const j = JSON.parse(line);
      for (const k of Object.keys(tally)) tally[k] += j[k];
      for (const f of j.failures) failures.push(`seed ${seed}: ${JSON.stringify(f)}`);
      if (env.SANITIZER_LOGS) {
        for (const f of sanitizerFindings(join(env.SANITIZER_LOGS, String(seed)))) failures.push(`seed ${seed}: ${f}`);
      }
    }
  });
  await Promise.all(workers);
  record(
    label,
    failures.length === 0,
    `${tally.calls} calls: ${tally.ok} ran, ${tally.TypeError} TypeError, ${tally.RangeError} RangeError, ${tally.SsmkitError} SsmkitError; ${crashes} crashes, ${failures.length} failures${failures.length ? `\n  ${failures.slice(0, 5).join('\n  ')}` : ''}`,
  );
}

const seeds = Array.from({ length: quick ? 4 : 16 }, (_, i) => 100 + i);
const calls = quick ? 500 : 1500;

// 1. Malformed calls against the normal build.
await fuzz('malformed calls', seeds, calls, {});

// 2. The same under AddressSanitizer/LeakSanitizer with a sanitizer build of the CPU addon.
if (!process.argv.includes('--no-asan')) {
  const asanDir = join(root, 'build-asan');
  let lib = '';
  try {
    lib = execFileSync('gcc', ['-print-file-name=libasan.so'], { encoding: 'utf8' }).trim();
    execFileSync(
      process.execPath,
      [join(root, 'node_modules/cmake-js/bin/cmake-js'), 'compile', '--out', asanDir, '--CDSSMKIT_CPU_ONLY=ON', '--CDCMAKE_CXX_FLAGS=-fsanitize=address -fno-omit-frame-pointer -g'],
      { cwd: root, stdio: 'ignore' },
    );
  } catch (e) {
    record('sanitizer build', false, String(e.message).split('\n')[0]);
  }
  const binding = join(asanDir, 'Release', 'ssmkit.node');
  if (lib && existsSync(binding)) {
    const logs = mkdtempSync(join(tmpdir(), 'ssmkit-asan-'));
    const env = { LD_PRELOAD: lib, SSMKIT_BINDING: binding, ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0', LSAN_OPTIONS: 'report_objects=0:exitcode=0', SANITIZER_LOGS: logs };
    // Check that the sanitizer is really there before trusting a clean run.
    const probe = await node(['-e', "process.stdout.write(require('fs').readFileSync('/proc/self/maps','utf8').includes('libasan') ? 'asan' : 'none')"], env);
    record('sanitizer loaded', probe.out === 'asan', probe.out);
    await fuzz('malformed calls under AddressSanitizer + LeakSanitizer', seeds.slice(0, quick ? 2 : 6), calls, env);
    const cycLogs = join(logs, 'cycles');
    mkdirSync(cycLogs);
    const cyc = await node([join(root, 'stress/cycles.mjs'), '2000', '--no-rss'], { ...env, ASAN_OPTIONS: `${env.ASAN_OPTIONS}:log_path=${join(cycLogs, 'asan')}` });
    const found = sanitizerFindings(cycLogs);
    record(
      'create -> op -> dispose cycles under AddressSanitizer + LeakSanitizer',
      cyc.code === 0 && found.length === 0,
      `${cyc.out.trim() || cyc.err.slice(-400)}; ${found.length} sanitizer findings in ssmkit${found.length ? `\n  ${found.slice(0, 3).join('\n  ')}` : ''}`,
    );
    rmSync(logs, { recursive: true, force: true });
  }
}

// 3. 10,000 cycles: memory() back to baseline, RSS flat; tensors dropped without dispose freed by GC.
{
  const r = await node(['--expose-gc', join(root, 'stress/cycles.mjs'), quick ? '2000' : '10000']);
  record('create -> op -> dispose cycles', r.code === 0, r.out.trim() || r.err.slice(-400));
}

// 4. Concurrency and the event loop under load.
{
  const r = await node([join(root, 'stress/load.mjs'), quick ? '5' : '20']);
  record('concurrency and event-loop delay', r.code === 0, r.out.trim() || r.err.slice(-400));
}

const passed = results.filter(Boolean).length;
console.log(`${passed} passed, ${results.length - passed} failed`);
process.exit(results.every(Boolean) ? 0 : 1);
