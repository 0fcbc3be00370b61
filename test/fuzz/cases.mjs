// The public ops and one small valid call of each, as SPEC.md defines them: the seed that the malformed
// call generator mutates. Each entry: the op's name, a builder of fresh valid positional arguments
// (tensors first, the options object last when the op takes one), and the positional arguments the op
// may modify in place (its state).

/** @param {typeof import('../../dist/cjs/index.js')} s @param {() => number} rnd */
export function opCases(s, rnd) {
  const T = s.Tensor;
  const f = (shape, dtype = 'float32', scale = 1) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = Array.from({ length: n }, () => (rnd() * 2 - 1) * scale);
    return new T(dtype, v, shape);
  };
  const negA = (shape) => {
    const t = f(shape);
    const d = t.dataSync();
    for (let i = 0; i < d.length; i++) d[i] = -Math.abs(d[i]) - 0.1;
    return t;
  };
  const i8 = (shape) => new T('int8', Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => Math.floor(rnd() * 255) - 127), shape);
  const i4 = (shape) => new T('int4', Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => Math.floor(rnd() * 16) - 8), shape);
  const i32 = (values, shape) => new T('int32', values, shape);
  const pos = (shape) => {
    const t = f(shape);
    const d = t.dataSync();
    for (let i = 0; i < d.length; i++) d[i] = Math.abs(d[i]) * 0.1 + 0.01;
    return t;
  };
  return [
    {
      op: 'selectiveScan',
      args: () => [
        f([2, 4, 5]),
        pos([2, 4, 5]),
        negA([4, 3]),
        f([2, 1, 3, 5]),
        f([2, 1, 3, 5]),
        { D: f([4]), z: f([2, 4, 5]), deltaBias: f([4]), deltaSoftplus: true, initialState: f([2, 4, 3]), returnLastState: true, seqIdx: i32([0, 0, 1, 1, 1, 0, 0, 0, 0, 2], [2, 5]) },
      ],
      inPlace: [],
    },
    {
      op: 'selectiveStateUpdate',
      args: () => [f([2, 4, 3]), f([2, 4]), f([2, 4]), negA([4, 3]), f([2, 3]), f([2, 3]), { D: f([4]), z: f([2, 4]), dtBias: f([4]), dtSoftplus: true, stateBatchIndices: i32([1, -1], [2]) }],
      inPlace: [0],
    },
    {
      op: 'ssdScan',
      args: () => [
        f([1, 6, 2, 4]),
        pos([1, 6, 2]),
        negA([2]),
        f([1, 6, 1, 3]),
        f([1, 6, 1, 3]),
        { chunkSize: 4, D: f([2]), z: f([1, 6, 2, 4]), dtBias: f([2]), dtSoftplus: true, initialStates: f([1, 2, 4, 3]), returnFinalStates: true },
      ],
      inPlace: [],
    },
    {
      op: 'causalConv1d',
      args: () => [f([2, 4, 6]), f([4, 3]), { bias: f([4]), activation: 'silu', initialStates: f([2, 4, 2]), returnFinalStates: true }],
      inPlace: [],
    },
    {
      op: 'causalConv1dUpdate',
      args: () => [f([2, 4, 1]), f([2, 4, 2]), f([4, 3]), { bias: f([4]), activation: 'silu', convStateIndices: i32([1, 0], [2]) }],
      inPlace: [1],
    },
    {
      op: 'fftConv',
      args: () => [f([1, 2, 8]), f([2, 8]), { D: f([2]), gelu: true, pregate: f([1, 2, 8]), postgate: f([1, 2, 8]) }],
      inPlace: [],
    },
    { op: 's4dKernel', args: () => [f([2]), negA([2, 2, 2]), f([2, 2, 2]), 8], inPlace: [] },
    {
      op: 'ssmConv',
      args: () => [f([1, 2, 8]), f([2], 'float32', 0.5), negA([2, 2, 2]), f([2, 2, 2]), { D: f([2]), blockSize: 4, returnLastState: true }],
      inPlace: [],
    },
    { op: 'quantize', args: () => [f([4, 8]), { bits: 8, granularity: 'token' }], inPlace: [] },
    { op: 'hadamard', args: () => [f([3, 8]), { scale: 0.5 }], inPlace: [] },
    { op: 'gemmW8A8', args: () => [i8([3, 8]), i8([5, 8]), pos([3]), pos([5]), { bias: f([5]), outDtype: 'float32' }], inPlace: [] },
    { op: 'gemmW4A8', args: () => [i8([3, 8]), i4([5, 8]), pos([3]), pos([5]), { outDtype: 'float32' }], inPlace: [] },
    {
      op: 'gemmW4A16',
      args: () => {
        const s32 = pos([5, 1]);
        const scales = s32.cast('float16');
        s32.dispose();
        return [f([3, 128], 'float16'), i4([5, 128]), scales, { groupSize: 128 }];
      },
      inPlace: [],
    },
    { op: 'packWeights', args: () => [i8([5, 8]), { bits: 8 }], inPlace: [] },
  ];
}
