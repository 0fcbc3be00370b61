// Text generation with a Hugging Face Mamba or Mamba-2 folder (config.json + model.safetensors): token
// ids in, token ids out, streamed as they come, stoppable with Ctrl-C. Tokenization is the caller's
// (the tokenizer.json next to the checkpoint, through any tokenizer library).
//
//   node examples/generate.mjs <model-dir> [ids, comma-separated] [max new tokens]
//   node examples/generate.mjs test/golden/mamba-tiny 1,2,3 16
import { backend, MambaModel } from 'ssmkit';

const [dir = 'test/golden/mamba-tiny', ids = '1,2,3', max = '16'] = process.argv.slice(2);
const prompt = ids.split(',').map(Number);
const device = backend().name === 'cuda' ? 'cuda:0' : 'cpu';

const model = await MambaModel.load(dir, { device });
console.log(`${model.config.modelType}: ${model.config.numLayers} layers, d_model ${model.config.hiddenSize}, on ${device}`);

const ac = new AbortController();
process.once('SIGINT', () => ac.abort());
const started = performance.now();
let count = 0;
try {
  const { tokens } = await model.generate([prompt], {
    maxNewTokens: Number(max),
    temperature: 0.8,
    topP: 0.95,
    seed: 1,
    signal: ac.signal,
    onToken: ({ token }) => {
      count++;
      process.stdout.write(`${token} `);
    },
  });
  const secs = (performance.now() - started) / 1000;
  console.log(`\n${tokens[0].length} tokens in ${secs.toFixed(2)} s (${(count / secs).toFixed(1)} tokens/s)`);
} catch (e) {
  if (e.name !== 'AbortError') throw e;
  console.log(`\nstopped after ${count} tokens`);
} finally {
  model.dispose();
}
