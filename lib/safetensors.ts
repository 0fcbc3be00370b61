/**
 * The safetensors format: an 8-byte little-endian header length, a JSON header mapping names to
 * {dtype, shape, data_offsets}, then the raw little-endian data. int4 tensors are stored as their
 * packed U8 bytes with the logical shape recorded in the metadata under `ssmkit.int4.<name>`.
 */
import * as fs from 'node:fs';
import { arrayCtor, byteLength, type DType, isDType } from './dtype';
import { describe, rangeError, SsmkitError, typeError } from './errors';
import { Tensor } from './tensor';

const FROM_ST: Readonly<Record<string, DType>> = {
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
  I8: 'int8',
  U8: 'uint8',
  I32: 'int32',
  F64: 'float64',
};
const TO_ST: Readonly<Partial<Record<DType, string>>> = Object.fromEntries(
  Object.entries(FROM_ST).map(([k, v]) => [v, k]),
) as Partial<Record<DType, string>>;
const INT4_KEY = 'ssmkit.int4.';

interface Entry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

function bad(source: string, what: string): SsmkitError {
  return new SsmkitError(`loadSafetensors: ${source}: ${what}`, 'ERR_SSMKIT_FORMAT');
}

function parseHeader(
  source: string,
  json: string,
  dataBytes: number,
): { entries: [string, Entry][]; meta: Record<string, string> } {
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(json);
  } catch {
    throw bad(source, 'the header is not valid JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad(source, 'the header is not an object');
  const meta = (header.__metadata__ ?? {}) as Record<string, string>;
  const entries: [string, Entry][] = [];
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const e = v as Entry;
    if (
      typeof e !== 'object' ||
      !Array.isArray(e.shape) ||
      !Array.isArray(e.data_offsets) ||
      e.data_offsets.length !== 2 ||
      !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)
    ) {
      throw bad(source, `tensor ${JSON.stringify(name)} has a malformed entry`);
    }
    const dtype = FROM_ST[e.dtype];
    if (dtype === undefined) {
      throw new TypeError(
        `loadSafetensors: ${source}: tensor ${JSON.stringify(name)} has dtype ${e.dtype}; supported: ${Object.keys(FROM_ST).join(', ')}`,
      );
    }
    const [b, end] = e.data_offsets;
    if (
      !(
        Number.isSafeInteger(b) &&
        Number.isSafeInteger(end) &&
        b >= 0 &&
        end <= dataBytes &&
        end - b === byteLength(dtype, e.shape)
      )
    ) {
      throw bad(source, `tensor ${JSON.stringify(name)} has data offsets that do not match its shape or the file`);
    }
    entries.push([name, e]);
  }
  return { entries, meta };
}

function makeTensor(name: string, e: Entry, bytes: Uint8Array, meta: Record<string, string>): Tensor {
  const dtype = FROM_ST[e.dtype] as DType;
  const ctor = arrayCtor(dtype);
  // A view when the bytes are aligned for the element type, else a copy.
  const aligned = bytes.byteOffset % ctor.BYTES_PER_ELEMENT === 0;
  const src = aligned ? bytes : bytes.slice();
  const arr = new ctor(src.buffer, src.byteOffset, src.byteLength / ctor.BYTES_PER_ELEMENT);
  const int4 = meta[INT4_KEY + name];
  if (int4 !== undefined && dtype === 'uint8') {
    const shape = JSON.parse(int4) as number[];
    return new Tensor('int4', arr as Uint8Array, shape);
  }
  return new Tensor(dtype, arr as never, e.shape);
}

function readFully(fd: number, buf: Uint8Array, position: number): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, Math.min(buf.length - done, 1 << 30), position + done);
    if (n === 0) throw new SsmkitError('loadSafetensors: unexpected end of file', 'ERR_SSMKIT_FORMAT');
    done += n;
  }
}

async function readAt(fh: fs.promises.FileHandle, buf: Uint8Array, position: number, source: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, Math.min(buf.length - done, 1 << 30), position + done);
    if (bytesRead === 0) throw bad(source, 'unexpected end of file');
    done += bytesRead;
  }
}

/**
 * Reads a safetensors file (or its bytes) into CPU tensors, by name. From a path, each tensor gets its
 * own buffer (files larger than 2 GiB work); from bytes, tensors are views where alignment allows.
 * @throws TypeError for an unsupported dtype; SsmkitError (ERR_SSMKIT_FORMAT) for a malformed file.
 * @example
 * const weights = await loadSafetensors('model.safetensors');
 */
export async function loadSafetensors(source: string | Uint8Array): Promise<Record<string, Tensor>> {
  if (source instanceof Uint8Array) return parseBytes(source);
  if (typeof source !== 'string') throw typeError('loadSafetensors', 'source', 'a path or a Uint8Array', source);
  const fh = await fs.promises.open(source, 'r');
  try {
    const { size } = await fh.stat();
    if (size < 8) throw bad(source, 'file too short');
    const head = new Uint8Array(8);
    await readAt(fh, head, 0, source);
    const n = Number(new DataView(head.buffer).getBigUint64(0, true));
    if (n > size - 8 || n > 100 * 1024 * 1024) throw bad(source, 'header length out of range');
    const hb = new Uint8Array(n);
    await readAt(fh, hb, 8, source);
    const { entries, meta } = parseHeader(source, new TextDecoder().decode(hb), size - 8 - n);
    const out: Record<string, Tensor> = {};
    for (const [name, e] of entries) {
      const bytes = new Uint8Array(e.data_offsets[1] - e.data_offsets[0]);
      await readAt(fh, bytes, 8 + n + e.data_offsets[0], source);
      out[name] = makeTensor(name, e, bytes, meta);
    }
    return out;
  } finally {
    await fh.close();
  }
}

/** Synchronous {@link loadSafetensors} from a path or bytes. */
export function loadSafetensorsSync(source: string | Uint8Array): Record<string, Tensor> {
  if (source instanceof Uint8Array) return parseBytes(source);
  if (typeof source !== 'string') throw typeError('loadSafetensorsSync', 'source', 'a path or a Uint8Array', source);
  const fd = fs.openSync(source, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw bad(source, 'file too short');
    const head = new Uint8Array(8);
    readFully(fd, head, 0);
    const n = Number(new DataView(head.buffer).getBigUint64(0, true));
    if (n > size - 8 || n > 100 * 1024 * 1024) throw bad(source, 'header length out of range');
    const hb = new Uint8Array(n);
    readFully(fd, hb, 8);
    const { entries, meta } = parseHeader(source, new TextDecoder().decode(hb), size - 8 - n);
    const out: Record<string, Tensor> = {};
    for (const [name, e] of entries) {
      const bytes = new Uint8Array(e.data_offsets[1] - e.data_offsets[0]);
      readFully(fd, bytes, 8 + n + e.data_offsets[0]);
      out[name] = makeTensor(name, e, bytes, meta);
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

function parseBytes(buf: Uint8Array): Record<string, Tensor> {
  const source = 'bytes';
  if (buf.length < 8) throw bad(source, 'too short');
  const n = Number(new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true));
  if (n > buf.length - 8) throw bad(source, 'header length out of range');
  const { entries, meta } = parseHeader(source, new TextDecoder().decode(buf.subarray(8, 8 + n)), buf.length - 8 - n);
  const out: Record<string, Tensor> = {};
  for (const [name, e] of entries) {
    out[name] = makeTensor(name, e, buf.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]), meta);
  }
  return out;
}

/** Serializes tensors (device tensors are copied to the host) into safetensors bytes. */
export async function encodeSafetensors(tensors: Record<string, Tensor>, metadata?: Record<string, string>): Promise<Uint8Array> {
  if (typeof tensors !== 'object' || tensors === null)
    throw typeError('saveSafetensors', 'tensors', 'a record of Tensors', tensors);
  const meta: Record<string, string> = {};
  if (metadata !== undefined) {
    if (typeof metadata !== 'object' || metadata === null)
      throw typeError('saveSafetensors', 'metadata', 'a record of strings', metadata);
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw typeError('saveSafetensors', `metadata.${k}`, 'a string', v);
      meta[k] = v;
    }
  }
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    if (!(t instanceof Tensor)) throw typeError('saveSafetensors', `tensors.${name}`, 'a Tensor', t);
    if (name === '__metadata__') throw rangeError('saveSafetensors', 'tensors', 'no tensor named __metadata__', 'one');
    const data = await t.data();
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    let st = TO_ST[t.dtype];
    let shape = [...t.shape];
    if (t.dtype === 'int4') {
      st = 'U8';
      meta[INT4_KEY + name] = JSON.stringify(shape);
      shape = shape.length === 0 ? [1] : [...shape.slice(0, -1), Math.ceil((shape[shape.length - 1] as number) / 2)];
    }
    if (st === undefined || !isDType(t.dtype))
      throw typeError('saveSafetensors', `tensors.${name}`, 'a supported dtype', describe(t));
    header[name] = { dtype: st, shape, data_offsets: [offset, offset + bytes.length] };
    blobs.push(bytes);
    offset += bytes.length;
  }
  if (Object.keys(meta).length) header.__metadata__ = meta;
  let json = JSON.stringify(header);
  // Pad so that the data starts 8-byte aligned, as the reference writer does.
  json += ' '.repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
  const hb = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + hb.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let p = 8 + hb.length;
  for (const b of blobs) {
    out.set(b, p);
    p += b.length;
  }
  return out;
}

/**
 * Writes tensors to a safetensors file; device tensors are copied to the host first.
 * @throws TypeError for a value that is not a Tensor or metadata that is not strings.
 * @example
 * await saveSafetensors('out.safetensors', { weight: w }, { format: 'pt' });
 */
export async function saveSafetensors(
  path: string,
  tensors: Record<string, Tensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  if (typeof path !== 'string') throw typeError('saveSafetensors', 'path', 'a file path', path);
  const bytes = await encodeSafetensors(tensors, metadata);
  await fs.promises.writeFile(path, bytes);
}
