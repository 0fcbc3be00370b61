/**
 * A Hugging Face checkpoint's weights, read one tensor at a time: `model.safetensors`, or the shards
 * listed by `model.safetensors.index.json`. Only the headers are read up front, so that loading a model
 * holds one source tensor at a time next to the packed weights instead of the whole file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DType } from '../dtype';
import { byteLength } from '../dtype';
import { SsmkitError } from '../errors';
import { Tensor } from '../tensor';

const FROM_ST: Readonly<Record<string, DType>> = {
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
  F64: 'float64',
  I8: 'int8',
  U8: 'uint8',
  I32: 'int32',
};

interface Entry {
  file: string;
  dtype: DType;
  shape: number[];
  offset: number;
  bytes: number;
}

function formatError(file: string, what: string): SsmkitError {
  return new SsmkitError(`MambaModel.load: ${file}: ${what}`, 'ERR_SSMKIT_FORMAT');
}

async function readExactly(fh: fs.promises.FileHandle, buf: Uint8Array, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, Math.min(buf.length - done, 1 << 30), position + done);
    if (bytesRead === 0) throw formatError(file, 'unexpected end of file');
    done += bytesRead;
  }
}

async function readHeader(file: string, into: Map<string, Entry>): Promise<void> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const { size } = await fh.stat();
    const head = new Uint8Array(8);
    if (size < 8) throw formatError(file, 'file too short for safetensors');
    await readExactly(fh, head, 0, file);
    const n = Number(new DataView(head.buffer).getBigUint64(0, true));
    if (n > size - 8 || n > 100 * 1024 * 1024) throw formatError(file, 'header length out of range');
    const hb = new Uint8Array(n);
    await readExactly(fh, hb, 8, file);
    let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    try {
      header = JSON.parse(new TextDecoder().decode(hb));
    } catch {
      throw formatError(file, 'the safetensors header is not valid JSON');
    }
    const dataBytes = size - 8 - n;
    for (const [name, e] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const dtype = e && FROM_ST[e.dtype];
      if (dtype === undefined) throw formatError(file, `tensor ${name}: unsupported dtype ${e?.dtype}`);
      const [b, end] = e.data_offsets ?? [];
      if (
        !Array.isArray(e.shape) ||
        !Number.isSafeInteger(b) ||
        !Number.isSafeInteger(end) ||
        (b as number) < 0 ||
        (end as number) > dataBytes ||
        (end as number) - (b as number) !== byteLength(dtype, e.shape)
      ) {
        throw formatError(file, `tensor ${name}: data offsets do not match its shape or the file`);
      }
      into.set(name, { file, dtype, shape: e.shape, offset: 8 + n + (b as number), bytes: (end as number) - (b as number) });
    }
  } finally {
    await fh.close();
  }
}

/** The tensors of a checkpoint folder by name, read on demand. */
export class Checkpoint {
  readonly #entries: Map<string, Entry>;
  private constructor(entries: Map<string, Entry>) {
    this.#entries = entries;
  }

  /** Opens `dir/model.safetensors`, or the shards named by `dir/model.safetensors.index.json`. */
  static async open(dir: string): Promise<Checkpoint> {
    const entries = new Map<string, Entry>();
    const index = path.join(dir, 'model.safetensors.index.json');
    const single = path.join(dir, 'model.safetensors');
    if (fs.existsSync(index)) {
      let map: Record<string, string>;
      try {
        map = JSON.parse(await fs.promises.readFile(index, 'utf8')).weight_map;
      } catch (e) {
        throw formatError(index, `not valid JSON (${(e as Error).message})`);
      }
      if (map === null || typeof map !== 'object') throw formatError(index, 'no weight_map object');
      const shards = [...new Set(Object.values(map))].sort();
      for (const shard of shards) {
        if (typeof shard !== 'string' || shard.includes('..') || path.isAbsolute(shard)) {
          throw formatError(index, `weight_map names a file outside the folder: ${JSON.stringify(shard)}`);
        }
        const file = path.join(dir, shard);
        if (!fs.existsSync(file)) throw formatError(index, `shard ${shard} is missing`);
        await readHeader(file, entries);
      }
      for (const name of Object.keys(map)) {
        if (!entries.has(name)) throw formatError(index, `tensor ${name} is not in shard ${map[name]}`);
      }
    } else if (fs.existsSync(single)) {
      await readHeader(single, entries);
    } else {
      throw new SsmkitError(
        `MambaModel.load: ${dir}: no model.safetensors or model.safetensors.index.json (only safetensors checkpoints load)`,
        'ERR_SSMKIT_FORMAT',
      );
    }
    return new Checkpoint(entries);
  }

  has(name: string): boolean {
    return this.#entries.has(name);
  }

  names(): string[] {
    return [...this.#entries.keys()];
  }

  shape(name: string): readonly number[] | undefined {
    return this.#entries.get(name)?.shape;
  }

  /** Reads one tensor into a new CPU tensor. */
  async read(name: string): Promise<Tensor> {
    const e = this.#entries.get(name);
    if (e === undefined) throw formatError('checkpoint', `missing tensor ${name}`);
    const fh = await fs.promises.open(e.file, 'r');
    try {
      const bytes = new Uint8Array(e.bytes);
      await readExactly(fh, bytes, e.offset, e.file);
      const elem = e.dtype === 'float64' ? 8 : e.dtype === 'float32' || e.dtype === 'int32' ? 4 : e.dtype.endsWith('16') ? 2 : 1;
      const Ctor = {
        float32: Float32Array,
        float64: Float64Array,
        int32: Int32Array,
        float16: Uint16Array,
        bfloat16: Uint16Array,
        int8: Int8Array,
        uint8: Uint8Array,
      }[e.dtype as 'float32'];
      return new Tensor(e.dtype, new Ctor(bytes.buffer, 0, e.bytes / elem) as never, e.shape);
    } finally {
      await fh.close();
    }
  }
}
