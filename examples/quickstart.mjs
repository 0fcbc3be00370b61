// A first run on whatever backend loads: what it is, then a Hadamard rotation of a random batch (the
// outlier-taming step of Quamba), checked for orthonormality by transforming twice.
import { backend, hadamard, Tensor } from 'ssmkit';

const b = backend();
console.log(`ssmkit backend: ${b.name}${b.device ? ` (${b.device})` : ''}, CPU path ${b.simd}, ${b.threads} threads`);

const rows = 4;
const n = 1024;
const x = new Tensor(
  'float32',
  Float32Array.from({ length: rows * n }, () => Math.random() * 2 - 1),
  [rows, n],
);
const device = b.name === 'cuda' ? 'cuda:0' : 'cpu';
const xd = await x.to(device);
const scale = 1 / Math.sqrt(n);
const y = await hadamard(xd, { scale });
const back = await hadamard(y, { scale });
const a = x.dataSync();
const r = await back.data();
let maxErr = 0;
for (let i = 0; i < a.length; i++) maxErr = Math.max(maxErr, Math.abs(a[i] - r[i]));
console.log(`hadamard [${rows}, ${n}] on ${device}: H(H(x)) = x within ${maxErr.toExponential(2)}`);
for (const t of [x, xd, y, back]) t.dispose();
