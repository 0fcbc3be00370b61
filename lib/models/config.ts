/**
 * Hugging Face `config.json` of a Mamba (`model_type: "mamba"`, MambaForCausalLM) or Mamba-2
 * (`"mamba2"`, Mamba2ForCausalLM) checkpoint -> the runner's normalized config, with every field
 * checked; a missing, malformed or inconsistent field is an SsmkitError (ERR_SSMKIT_CONFIG) naming it.
 */
import { SsmkitError } from '../errors';

/** The model's architecture, normalized from its config.json. */
export interface MambaConfig {
  modelType: 'mamba' | 'mamba2';
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  stateSize: number;
  convKernel: number;
  intermediateSize: number;
  eps: number;
  useBias: boolean;
  useConvBias: boolean;
  residualInFp32: boolean;
  tieWordEmbeddings: boolean;
  /** Mamba: rank of dt's low-rank projection. */
  timeStepRank: number;
  /** Mamba-2: heads, their width and the B/C groups (1 for Mamba). */
  numHeads: number;
  headDim: number;
  nGroups: number;
  chunkSize: number;
  /** Mamba-2: dt is clamped to [lo, hi] after its softplus. */
  timeStepLimit: [number, number];
  bosTokenId?: number;
  eosTokenId?: number;
  padTokenId?: number;
  /** The dtype the checkpoint was saved in, when config.json says. */
  checkpointDtype?: string;
}

// Marks a number that JSON cannot spell while the text is re-parsed.
const TAG = '__ssmkit_float__:';

function bad(field: string, expected: string, got: unknown): SsmkitError {
  const g = typeof got === 'string' ? JSON.stringify(got) : got === undefined ? 'nothing' : JSON.stringify(got);
  return new SsmkitError(`MambaModel.load: config.json: ${field}: expected ${expected}, got ${g}`, 'ERR_SSMKIT_CONFIG');
}

/**
 * Parses config.json text, accepting the non-standard tokens Python's json writes for floats
 * (`Infinity`, `-Infinity`, `NaN`) and transformers' `{"__float__": "Infinity"}` form.
 */
export function parseConfigJson(text: string): Record<string, unknown> {
  // Replace the bare tokens outside strings with tagged strings, then revive them.
  let out = '';
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (inString) {
      out += ch;
      if (ch === '\\') {
        out += text[i + 1] ?? '';
        i++;
      } else if (ch === '"') {
        inString = false;
      }
      continue;
    }
    if (ch === '"') {
      inString = true;
      out += ch;
      continue;
    }
    const rest = text.slice(i, i + 9);
    if (rest.startsWith('-Infinity')) {
      out += `"${TAG}-Infinity"`;
      i += 8;
    } else if (rest.startsWith('Infinity')) {
      out += `"${TAG}Infinity"`;
      i += 7;
    } else if (rest.startsWith('NaN')) {
      out += `"${TAG}NaN"`;
      i += 2;
    } else {
      out += ch;
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(out, (_k, v) => {
      if (typeof v === 'string' && v.startsWith(TAG)) return Number(v.slice(TAG.length));
      if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
        const keys = Object.keys(v);
        if (keys.length === 1 && keys[0] === '__float__') return Number((v as { __float__: unknown }).__float__);
      }
      return v;
    });
  } catch (e) {
    throw new SsmkitError(`MambaModel.load: config.json is not valid JSON: ${(e as Error).message}`, 'ERR_SSMKIT_CONFIG');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new SsmkitError('MambaModel.load: config.json: expected a JSON object', 'ERR_SSMKIT_CONFIG');
  }
  return parsed as Record<string, unknown>;
}

function posInt(c: Record<string, unknown>, field: string, fallback?: number): number {
  const v = c[field] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw bad(field, 'a positive integer', c[field]);
  return v;
}

function bool(c: Record<string, unknown>, field: string, fallback: boolean): boolean {
  const v = c[field] ?? fallback;
  if (typeof v !== 'boolean') throw bad(field, 'true or false', c[field]);
  return v;
}

function optTokenId(c: Record<string, unknown>, field: string): number | undefined {
  const v = c[field];
  if (v === undefined || v === null) return undefined;
  // Several ids (a list of eos tokens) keep the first; the runner does not stop on them.
  const id = Array.isArray(v) ? v[0] : v;
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) throw bad(field, 'a token id', v);
  return id;
}

/** Normalizes a parsed config.json; throws SsmkitError (ERR_SSMKIT_CONFIG) naming the first bad field. */
export function normalizeConfig(c: Record<string, unknown>): MambaConfig {
  const type = c.model_type;
  if (type !== 'mamba' && type !== 'mamba2') throw bad('model_type', '"mamba" or "mamba2"', type);
  const act = c.hidden_act ?? 'silu';
  if (act !== 'silu') throw bad('hidden_act', '"silu" (the only activation of mamba_ssm)', act);
  const hiddenSize = posInt(c, 'hidden_size');
  const vocabSize = posInt(c, 'vocab_size');
  const numLayers = posInt(c, 'num_hidden_layers');
  const stateSize = posInt(c, 'state_size', 16);
  const convKernel = posInt(c, 'conv_kernel', 4);
  if (convKernel < 2) throw bad('conv_kernel', 'an integer of at least 2', c.conv_kernel);
  const expand = c.expand ?? 2;
  if (typeof expand !== 'number' || !(expand > 0)) throw bad('expand', 'a positive number', c.expand);
  const intermediateSize = posInt(c, 'intermediate_size', Math.round(expand * hiddenSize));
  if (type === 'mamba2' && c.intermediate_size === undefined && !Number.isInteger(expand * hiddenSize)) {
    throw bad('expand', 'a factor giving an integer width expand * hidden_size', expand);
  }
  const eps = c.layer_norm_epsilon ?? 1e-5;
  if (typeof eps !== 'number' || !(eps >= 0)) throw bad('layer_norm_epsilon', 'a non-negative number', c.layer_norm_epsilon);
  if (c.rms_norm === false) throw bad('rms_norm', 'true (LayerNorm blocks are not supported)', false);
  const dtype = c.dtype ?? c.torch_dtype;
  const common = {
    modelType: type,
    vocabSize,
    hiddenSize,
    numLayers,
    stateSize,
    convKernel,
    intermediateSize,
    eps,
    useBias: bool(c, 'use_bias', false),
    useConvBias: bool(c, 'use_conv_bias', true),
    residualInFp32: bool(c, 'residual_in_fp32', true),
    bosTokenId: optTokenId(c, 'bos_token_id'),
    eosTokenId: optTokenId(c, 'eos_token_id'),
    padTokenId: optTokenId(c, 'pad_token_id'),
    ...(typeof dtype === 'string' ? { checkpointDtype: dtype } : {}),
  } as const;
  if (type === 'mamba') {
    const rank = c.time_step_rank ?? 'auto';
    const timeStepRank = rank === 'auto' ? Math.ceil(hiddenSize / 16) : posInt(c, 'time_step_rank');
    return {
      ...common,
      // transformers' MambaConfig ties by default.
      tieWordEmbeddings: bool(c, 'tie_word_embeddings', true),
      timeStepRank,
      numHeads: intermediateSize,
      headDim: 1,
      nGroups: 1,
      chunkSize: 256,
      timeStepLimit: [0, Number.POSITIVE_INFINITY],
    };
  }
  const numHeads = posInt(c, 'num_heads');
  const headDim = posInt(c, 'head_dim', 64);
  if (numHeads * headDim !== intermediateSize) {
    throw bad(
      'num_heads',
      `num_heads * head_dim (${headDim}) equal to the inner width expand * hidden_size = ${intermediateSize}`,
      c.num_heads,
    );
  }
  const nGroups = posInt(c, 'n_groups', 1);
  if (numHeads % nGroups !== 0) throw bad('n_groups', `a divisor of num_heads (${numHeads})`, c.n_groups);
  const limit = c.time_step_limit ?? [0, Number.POSITIVE_INFINITY];
  if (
    !Array.isArray(limit) ||
    limit.length !== 2 ||
    typeof limit[0] !== 'number' ||
    typeof limit[1] !== 'number' ||
    Number.isNaN(limit[0]) ||
    Number.isNaN(limit[1]) ||
    limit[0] < 0 ||
    limit[1] < limit[0]
  ) {
    throw bad('time_step_limit', '[lo, hi] with 0 <= lo <= hi', limit);
  }
  return {
    ...common,
    // transformers' Mamba2Config does not tie by default.
    tieWordEmbeddings: bool(c, 'tie_word_embeddings', false),
    // Mamba-2 has no low-rank dt projection; its config's time_step_rank is unused.
    timeStepRank: 0,
    numHeads,
    headDim,
    nGroups,
    chunkSize: posInt(c, 'chunk_size', 256),
    timeStepLimit: [limit[0], limit[1]],
  };
}
