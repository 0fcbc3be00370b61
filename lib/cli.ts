#!/usr/bin/env node
/**
 * The `ssmkit` command: `generate` from a Hugging Face Mamba folder (token ids in, token ids out, a
 * progress line with tokens/s on stderr), `bench` (prefill and decode speed of a random checkpoint of a
 * published model's shape), and `inspect` (what backend loaded and why).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { backend } from './backend';
import { MODEL_SHAPES, shapeConfig, timeModel, writeRandomCheckpoint } from './models/bench';
import { MambaModel } from './models/mamba';

const HELP = `Usage:
  ssmkit generate <model-dir> --prompt-ids 1,2,3 [--prompt-ids 4,5 ...] [--max-new-tokens 32]
                  [--temperature 0] [--top-k K] [--top-p P] [--seed S]
                  [--dtype float32|bfloat16] [--device cpu|cuda:0] [--quantize w8a8|w4a8|w4a16]
  ssmkit bench    [--shape ${Object.keys(MODEL_SHAPES).join('|')}] [--dtype bfloat16|float32]
                  [--quantize w8a8|w4a8|w4a16] [--device cpu|cuda:0] [--prompt 128] [--tokens 32] [--batch 1]
  ssmkit inspect  print the backend that loaded (JSON)

generate prints the new token ids of each prompt (one line per prompt, comma-separated) on stdout and a
progress line (tokens/s) on stderr.`;

function num(name: string, v: string | undefined, fallback?: number): number | undefined {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new RangeError(`ssmkit: --${name}: expected a number, got ${JSON.stringify(v)}`);
  return n;
}

function parseIds(v: string): number[] {
  const ids = v.split(/[\s,]+/).filter((s) => s.length > 0);
  return ids.map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0)
      throw new RangeError(`ssmkit: --prompt-ids: expected comma-separated token ids, got ${JSON.stringify(s)}`);
    return n;
  });
}

async function generate(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'prompt-ids': { type: 'string', multiple: true },
      'max-new-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-k': { type: 'string' },
      'top-p': { type: 'string' },
      seed: { type: 'string' },
      dtype: { type: 'string' },
      device: { type: 'string' },
      quantize: { type: 'string' },
    },
  });
  const dir = positionals[0];
  if (dir === undefined || positionals.length > 1) throw new RangeError('ssmkit generate: expected one model folder');
  const prompts = (values['prompt-ids'] ?? []).map(parseIds);
  if (prompts.length === 0) throw new RangeError('ssmkit generate: --prompt-ids is required (comma-separated token ids)');
  const maxNewTokens = num('max-new-tokens', values['max-new-tokens'], 32) as number;
  const t0 = performance.now();
  const model = await MambaModel.load(dir, {
    ...(values.dtype !== undefined ? { dtype: values.dtype as 'float32' } : {}),
    ...(values.device !== undefined ? { device: values.device } : {}),
    ...(values.quantize !== undefined ? { quantize: values.quantize as 'w8a8' } : {}),
  });
  const loadMs = performance.now() - t0;
  const B = prompts.length;
  let done = 0;
  let first = 0;
  const tty = process.stderr.isTTY;
  const progress = (final: boolean) => {
    const steps = Math.floor(done / B);
    const secs = (performance.now() - first) / 1000;
    const rate = steps > 1 && secs > 0 ? ((steps - 1) * B) / secs : 0;
    const line = `${steps}/${maxNewTokens} tokens x ${B} sequence${B > 1 ? 's' : ''}, ${rate.toFixed(1)} tokens/s`;
    if (tty) process.stderr.write(`\r${line}${final ? '\n' : ''}`);
    else if (final) process.stderr.write(`${line}\n`);
  };
  const t1 = performance.now();
  const { tokens } = await model.generate(prompts, {
    maxNewTokens,
    temperature: num('temperature', values.temperature, 0) as number,
    ...(values['top-k'] !== undefined ? { topK: num('top-k', values['top-k']) as number } : {}),
    ...(values['top-p'] !== undefined ? { topP: num('top-p', values['top-p']) as number } : {}),
    ...(values.seed !== undefined ? { seed: num('seed', values.seed) as number } : {}),
    onToken: () => {
      // The first step's tokens come after the prefill; the rate counts the decode steps after it.
      if (done === 0) first = performance.now();
      done++;
      if (done % B === 0) progress(false);
    },
  });
  progress(true);
  const total = performance.now() - t1;
  for (const t of tokens) process.stdout.write(`${t.join(',')}\n`);
  process.stderr.write(
    `loaded in ${(loadMs / 1000).toFixed(2)} s (${model.config.modelType}, ${model.dtype}${model.quantize ? `, ${model.quantize}` : ''}, ${model.device}); ` +
      `prefill ${(first - t1).toFixed(0)} ms; ${done} tokens in ${(total / 1000).toFixed(2)} s\n`,
  );
  model.dispose();
}

async function bench(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      shape: { type: 'string' },
      dtype: { type: 'string' },
      quantize: { type: 'string' },
      device: { type: 'string' },
      prompt: { type: 'string' },
      tokens: { type: 'string' },
      batch: { type: 'string' },
    },
  });
  const shape = values.shape ?? 'mamba-130m';
  const dtype = (values.dtype ?? 'bfloat16') as 'float32' | 'bfloat16';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssmkit-bench-'));
  try {
    const config = shapeConfig(shape, dtype);
    process.stderr.write(`writing a random ${shape} checkpoint (${dtype}) to ${dir}\n`);
    await writeRandomCheckpoint(dir, config);
    const model = await MambaModel.load(dir, {
      dtype,
      ...(values.device !== undefined ? { device: values.device } : {}),
      ...(values.quantize !== undefined ? { quantize: values.quantize as 'w4a16' } : {}),
    });
    const b = backend();
    const r = await timeModel(model, {
      prompt: num('prompt', values.prompt, 128) as number,
      tokens: num('tokens', values.tokens, 32) as number,
      batch: num('batch', values.batch, 1) as number,
    });
    const machine =
      b.name === 'cuda'
        ? `${b.device} (${b.computeCapability})`
        : `${os.cpus()[0]?.model ?? 'cpu'}, ${b.threads} threads, ${b.simd}`;
    process.stdout.write(
      `${shape} ${dtype}${model.quantize ? ` ${model.quantize}` : ''} on ${model.device}: ${machine}\n` +
        `  weights streamed per token: ${(model.weightBytes / 1e6).toFixed(1)} MB\n` +
        `  prefill ${r.promptTokens} tokens: ${r.prefillTokensPerSecond.toFixed(0)} tokens/s\n` +
        `  decode: ${r.decodeMsPerToken.toFixed(2)} ms/token, ${r.decodeTokensPerSecond.toFixed(1)} tokens/s, ${r.decodeGBps.toFixed(1)} GB/s of weights\n`,
    );
    model.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (cmd === 'generate') return generate(rest);
  if (cmd === 'bench') return bench(rest);
  if (cmd === 'inspect') {
    process.stdout.write(`${JSON.stringify(backend(), null, 2)}\n`);
    return;
  }
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  throw new RangeError(`ssmkit: unknown command ${JSON.stringify(cmd)}\n${HELP}`);
}

main(process.argv.slice(2)).catch((e: Error) => {
  process.stderr.write(`${e.message}\n`);
  process.exitCode = 1;
});
