/**
 * Tensor: a dtype, a shape and storage, row-major and contiguous. CPU tensors wrap a TypedArray without
 * copying; CUDA tensors own a device allocation, freed by dispose() or, as a backstop, when the tensor
 * is garbage-collected (one FinalizationRegistry entry per tensor).
 *
 * Storage that ssmkit allocates on the host (op outputs, host copies of device tensors) comes, from
 * 8 MiB up, from the addon: zero pages that are never filled on the JS thread and are unmapped off it,
 * so that an op's JS-thread cost does not grow with its output. Each tensor builds its native
 * descriptor once, as a view into a shared slab (a Float64Array of its own costs ten times more).
 */
import { native } from './backend';
import { type Device, deviceIndex, deviceName } from './device';
import {
  type AnyArray,
  type ArrayFor,
  allocArray,
  arrayCtor,
  byteLength,
  DTYPE_CODE,
  type DType,
  FLOAT_DTYPES,
  fromNumbers,
  isDType,
  packInt4,
  shapeSize,
  storageLength,
  toFloat32,
} from './dtype';
import { describe, fromNative, rangeError, typeError } from './errors';

/** Bytes and tensors ssmkit holds, as {@link memory} reports them. */
export interface MemoryInfo {
  hostBytes: number;
  deviceBytes: number;
  liveTensors: number;
}

interface Handle {
  device: number;
  bytes: number;
  ptr: bigint;
  released: boolean;
  /** Tensors that use this memory (a tensor and its reshaped views). */
  views: number;
}

/** Memory shared by a tensor and its reshaped views; released when the last one lets go. */
class Storage {
  constructor(
    readonly handle: Handle,
    readonly array: AnyArray | undefined,
  ) {}
}

const stats = { hostBytes: 0, deviceBytes: 0, liveTensors: 0 };

function release(h: Handle): void {
  if (h.released) return;
  h.released = true;
  if (h.device < 0) {
    stats.hostBytes -= h.bytes;
    return;
  }
  stats.deviceBytes -= h.bytes;
  try {
    native().deviceFree(h.device, h.ptr);
  } catch {
    // A device that already failed cannot free; nothing more can be done for this allocation.
  }
}

// One entry per tensor (an op call allocates its outputs, so this is on every call's path): a tensor
// collected without dispose() lets go of its storage as dispose() would, and the storage is released
// when the last of its views has let go. The entry holds the small handle, not the storage: V8 keeps a
// held value for a while after unregister(), and the storage would keep the tensor's array with it.
const registry = new FinalizationRegistry<Handle>((h) => {
  stats.liveTensors--;
  if (--h.views === 0) release(h);
});

/**
 * Zero-filled host storage for a tensor of this dtype and shape. At LARGE_HOST_BYTES and above it comes
 * from the addon (fresh zero pages, released off the JS thread: native/napi/backend.cc), so that neither
 * allocating nor freeing it costs the JS thread time that grows with its size.
 */
const LARGE_HOST_BYTES = 8 << 20;
function hostArray<D extends DType>(dtype: D, shape: readonly number[]): ArrayFor<D> {
  const length = storageLength(dtype, shape);
  const ctor = arrayCtor(dtype);
  const bytes = length * ctor.BYTES_PER_ELEMENT;
  if (bytes >= LARGE_HOST_BYTES) {
    const buffer = native().hostAlloc(bytes) as ArrayBuffer | undefined;
    if (buffer !== undefined) return new ctor(buffer, 0, length) as ArrayFor<D>;
  }
  return allocArray(dtype, shape);
}

function hostStorage(array: AnyArray): Storage {
  const s = new Storage({ device: -1, bytes: array.byteLength, ptr: 0n, released: false, views: 0 }, array);
  stats.hostBytes += array.byteLength;
  return s;
}

function deviceStorage(op: string, device: number, bytes: number): Storage {
  let ptr: bigint;
  try {
    ptr = native().deviceAlloc(device, bytes) as bigint;
  } catch (e) {
    throw fromNative(e, op);
  }
  const s = new Storage({ device, bytes, ptr, released: false, views: 0 }, undefined);
  stats.deviceBytes += bytes;
  return s;
}

/**
 * The descriptor native code reads. `meta` is [dtype code, device (-1: host), ndim, shape[0..7], device
 * address]: one Float64Array, built once per tensor, that native code reads without a call per field
 * (device addresses are below 2^53, so a double holds them exactly). A device tensor passes `meta`
 * alone; a host tensor passes [meta, its TypedArray].
 */
export type NativeTensor = Float64Array | [Float64Array, AnyArray];
const META_LENGTH = 12;
// Descriptors are views into shared slabs: a Float64Array of its own (96 bytes, past V8's on-heap limit)
// costs an off-heap allocation, ten times a view's price, and every op call makes one for its output.
const SLAB_METAS = 1024;
let metaSlab = new ArrayBuffer(0);
let metaOffset = 0;
function newMeta(): Float64Array {
  if (metaOffset === metaSlab.byteLength) {
    metaSlab = new ArrayBuffer(SLAB_METAS * META_LENGTH * 8);
    metaOffset = 0;
  }
  const meta = new Float64Array(metaSlab, metaOffset, META_LENGTH);
  metaOffset += META_LENGTH * 8;
  return meta;
}

let internalStorage: Storage | undefined;

function checkShape(op: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) throw typeError(op, 'shape', 'an array of non-negative integers', shape);
  if (shape.length > 8) throw rangeError(op, 'shape', 'at most 8 dimensions', `${shape.length}`);
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number') throw typeError(op, 'shape', 'an array of non-negative integers', `[${shape.join(', ')}]`);
    if (!Number.isSafeInteger(d) || d < 0) {
      throw rangeError(op, 'shape', 'an array of non-negative integers', `[${shape.join(', ')}]`);
    }
    n *= d;
  }
  if (!Number.isSafeInteger(n) || n > 2 ** 40) {
    throw rangeError(op, 'shape', 'at most 2^40 elements', `[${shape.join(', ')}]`);
  }
  return [...shape];
}

const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  int8: [-128, 127],
  uint8: [0, 255],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  int4: [-8, 7],
};

function fromList(dtype: DType, data: unknown[], shape: number[]): AnyArray {
  const size = shapeSize(shape);
  if (data.length !== size) {
    throw rangeError('Tensor', 'data', `${size} values for shape [${shape.join(', ')}]`, `${data.length}`);
  }
  const range = INT_RANGE[dtype];
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (typeof v !== 'number') throw typeError('Tensor', `data[${i}]`, 'a number', v);
    if (range && (!Number.isInteger(v) || v < range[0] || v > range[1])) {
      throw rangeError('Tensor', `data[${i}]`, `an integer in ${range[0]}..${range[1]} for ${dtype}`, `${v}`);
    }
  }
  const nums = data as number[];
  if (dtype === 'int4') return packInt4(nums, shape.length ? (shape[shape.length - 1] as number) : 1);
  if (FLOAT_DTYPES.includes(dtype) || dtype === 'float64') return fromNumbers(dtype, nums);
  const out = new (arrayCtor(dtype))(size);
  for (let i = 0; i < size; i++) out[i] = nums[i] as number;
  return out;
}

function fromTypedArray(dtype: DType, data: ArrayBufferView, shape: number[]): AnyArray {
  const ctor = arrayCtor(dtype);
  const F16 = (globalThis as { Float16Array?: new (...a: unknown[]) => ArrayBufferView }).Float16Array;
  let arr: AnyArray;
  if (data instanceof ctor) {
    arr = data as AnyArray;
  } else if (dtype === 'float16' && F16 !== undefined && data instanceof F16) {
    const f = data as unknown as { buffer: ArrayBufferLike; byteOffset: number; length: number };
    arr = new Uint16Array(f.buffer, f.byteOffset, f.length);
  } else {
    const want = dtype === 'float16' || dtype === 'bfloat16' ? 'a Uint16Array of bit patterns' : `a ${ctor.name}`;
    throw typeError('Tensor', 'data', `${want} (or number[]) for ${dtype}`, data);
  }
  const need = storageLength(dtype, shape);
  if (arr.length !== need) {
    throw rangeError(
      'Tensor',
      'data',
      `length ${need} for ${dtype} of shape [${shape.join(', ')}]${dtype === 'int4' ? ' (packed two per byte)' : ''}`,
      `length ${arr.length}`,
    );
  }
  return arr;
}

/**
 * A typed, shaped block of memory on the CPU or a CUDA device.
 * @example
 * const t = new Tensor('float32', new Float32Array([1, 2, 3, 4]), [2, 2]);
 * const h = new Tensor('bfloat16', [0.5, 1.5], [2]); // number[] values are rounded to nearest even
 */
export class Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly size: number;
  readonly device: Device;
  #storage: Storage | null;
  #desc: NativeTensor | undefined;

  /**
   * Wraps `data` (no copy) as a CPU tensor. `data` is the dtype's TypedArray (float16/bfloat16:
   * Uint16Array bit patterns, or a Float16Array; int4: Uint8Array packed two per byte along the last
   * dimension, low nibble first) or a number[] of values, converted.
   * @throws TypeError for an unknown dtype or a TypedArray of the wrong kind; RangeError for a bad
   * shape or a length that does not match it.
   */
  constructor(dtype: D, data: ArrayFor<D> | number[], shape: readonly number[]) {
    const s = internalStorage;
    internalStorage = undefined;
    if (s !== undefined) {
      // A view or fresh storage from _make: the dtype is the caller's own.
      let dims: number[];
      try {
        dims = checkShape('Tensor', shape);
      } catch (e) {
        if (s.handle.views === 0) release(s.handle);
        throw e;
      }
      this.dtype = dtype;
      this.shape = Object.freeze(dims);
      this.size = shapeSize(dims);
      this.device = deviceName(s.handle.device);
      this.#storage = s;
      s.handle.views++;
      stats.liveTensors++;
      registry.register(this, s.handle, this);
      return;
    }
    if (!isDType(dtype))
      throw typeError('Tensor', 'dtype', `one of float32, float16, bfloat16, int8, uint8, int32, int4, float64`, dtype);
    const dims = checkShape('Tensor', shape);
    let storage: Storage;
    if (Array.isArray(data)) {
      storage = hostStorage(fromList(dtype, data, dims));
    } else if (ArrayBuffer.isView(data)) {
      storage = hostStorage(fromTypedArray(dtype, data, dims));
    } else {
      throw typeError('Tensor', 'data', 'a TypedArray or number[]', data);
    }
    this.dtype = dtype;
    this.shape = Object.freeze(dims);
    this.size = shapeSize(dims);
    this.device = deviceName(storage.handle.device);
    this.#storage = storage;
    storage.handle.views++;
    stats.liveTensors++;
    registry.register(this, storage.handle, this);
  }

  /** @internal A tensor over existing storage (a view) or fresh storage. */
  static _make<D extends DType>(dtype: D, shape: readonly number[], storage: Storage): Tensor<D> {
    internalStorage = storage;
    return new Tensor<D>(dtype, [] as number[], shape);
  }

  /** @internal Uninitialized (device) or zeroed (host) storage for a tensor of this dtype and shape. */
  static _alloc<D extends DType>(op: string, dtype: D, shape: readonly number[], device: number): Tensor<D> {
    const storage =
      device < 0 ? hostStorage(hostArray(dtype, shape)) : deviceStorage(op, device, Math.max(1, byteLength(dtype, shape)));
    return Tensor._make(dtype, shape, storage);
  }

  /**
   * Internal: a float32 scalar (shape []) holding `value`, on the CPU (device < 0) or on cuda:device, where
   * it is written by a kernel enqueued on the device's stream: nothing waits for the device (an upload
   * through a host buffer would wait for every op queued before it).
   */
  static _scalar(op: string, value: number, device: number): Tensor<'float32'> {
    if (device < 0) return new Tensor('float32', new Float32Array([value]), []);
    const t = Tensor._alloc(op, 'float32', [], device);
    const h = (t.#storage as Storage).handle;
    const bits = new Uint32Array(new Float32Array([value]).buffer)[0] as number;
    try {
      native().fill32(h.device, h.ptr, bits, 1);
    } catch (e) {
      t.dispose();
      throw fromNative(e, op);
    }
    return t;
  }

  /**
   * A zero-filled tensor.
   * @example
   * const z = Tensor.zeros([2, 3], 'float16');
   */
  static zeros<D extends DType = 'float32'>(shape: readonly number[], dtype?: D, device: string = 'cpu'): Tensor<D> {
    const t = Tensor.empty(shape, dtype, device);
    if (t.#storage?.handle.device !== -1) {
      const host = hostArray(t.dtype, t.shape);
      try {
        native().copyToDevice(t.#storage?.handle.device, t.#storage?.handle.ptr, host, false);
      } catch (e) {
        t.dispose();
        throw fromNative(e, 'Tensor.zeros');
      }
    }
    return t;
  }

  /**
   * A tensor whose contents are unspecified (zero on the CPU, uninitialized on a device).
   * @example
   * const out = Tensor.empty([4, 256], 'bfloat16', 'cuda:0');
   */
  static empty<D extends DType = 'float32'>(shape: readonly number[], dtype?: D, device: string = 'cpu'): Tensor<D> {
    const dt = (dtype ?? 'float32') as D;
    if (!isDType(dt)) throw typeError('Tensor.empty', 'dtype', 'a dtype name', dt);
    const dims = checkShape('Tensor.empty', shape);
    return Tensor._alloc('Tensor.empty', dt, dims, deviceIndex('Tensor.empty', 'device', device));
  }

  /** True once dispose() has run. */
  get isDisposed(): boolean {
    return this.#storage === null;
  }

  #live(op: string, arg: string): Storage {
    const s = this.#storage;
    if (s === null) {
      const e = new TypeError(`${op}: ${arg}: the tensor has been disposed`);
      Object.defineProperty(e, 'code', { value: 'ERR_SSMKIT_DISPOSED', enumerable: true });
      throw e;
    }
    if (s.array !== undefined && s.array.byteLength === 0 && this.size > 0) {
      const e = new TypeError(`${op}: ${arg}: its ArrayBuffer has been detached or resized`);
      Object.defineProperty(e, 'code', { value: 'ERR_SSMKIT_DETACHED', enumerable: true });
      throw e;
    }
    return s;
  }

  /** @internal The descriptor passed to native code; throws if the tensor was disposed. */
  _native(op: string, arg: string): NativeTensor {
    const s = this.#live(op, arg);
    let desc = this.#desc;
    if (desc === undefined) {
      const meta = newMeta();
      meta[0] = DTYPE_CODE[this.dtype];
      meta[1] = s.handle.device;
      meta[2] = this.shape.length;
      for (let i = 0; i < this.shape.length; i++) meta[3 + i] = this.shape[i] as number;
      meta[11] = Number(s.handle.ptr);
      desc = s.array === undefined ? meta : [meta, s.array];
      this.#desc = desc;
    }
    return desc;
  }

  /** @internal The device address of a CUDA tensor's storage (0n for a host tensor). */
  get _deviceAddress(): bigint {
    return this.#live('_deviceAddress', 'this').handle.ptr;
  }

  /** @internal The device index (-1 for the CPU). */
  get _deviceIndex(): number {
    return this.#storage?.handle.device ?? -1;
  }

  /**
   * A copy on `device` ('cpu', 'cuda', 'cuda:N'); the copy runs off the event loop.
   * @throws SsmkitError when the device is missing or out of memory.
   * @example
   * const g = await t.to('cuda:0');
   */
  async to(device: string): Promise<Tensor<D>> {
    return this.#copyTo('to', device, true);
  }

  /**
   * {@link to} on the calling thread.
   * @example
   * const g = t.toSync('cuda');
   */
  toSync(device: string): Tensor<D> {
    return this.#copyTo('toSync', device, false) as Tensor<D>;
  }

  #copyTo(op: string, device: string, async: boolean): Tensor<D> | Promise<Tensor<D>> {
    const src = this.#live(op, 'this');
    const dst = deviceIndex(op, 'device', device);
    const out = Tensor._alloc(op, this.dtype, this.shape, dst);
    const o = out.#storage as Storage;
    const bytes = byteLength(this.dtype, this.shape);
    const fail = (e: unknown): never => {
      out.dispose();
      throw fromNative(e, op);
    };
    try {
      if (src.handle.device < 0 && dst < 0) {
        (o.array as AnyArray).set(src.array as never);
        return async ? Promise.resolve(out) : out;
      }
      if (src.handle.device < 0) {
        const r = native().copyToDevice(dst, o.handle.ptr, src.array, async);
        return async ? (r as Promise<void>).then(() => out, fail) : out;
      }
      if (dst < 0) {
        const r = native().copyToHost(src.handle.device, o.array, src.handle.ptr, async);
        return async ? (r as Promise<void>).then(() => out, fail) : out;
      }
      if (dst === src.handle.device) {
        native().copyOnDevice(dst, o.handle.ptr, src.handle.ptr, bytes);
        return async ? Promise.resolve(out) : out;
      }
      // Between two devices: through the host.
      const host = hostArray(this.dtype, this.shape);
      native().copyToHost(src.handle.device, host, src.handle.ptr, false);
      native().copyToDevice(dst, o.handle.ptr, host, false);
      return async ? Promise.resolve(out) : out;
    } catch (e) {
      return fail(e);
    }
  }

  /**
   * A new tensor of another float dtype (float32, float16, bfloat16, float64), rounding to nearest even.
   * @throws TypeError for a non-float dtype on either side.
   * @example
   * const h = t.cast('bfloat16');
   */
  cast<E extends DType>(dtype: E): Tensor<E> {
    const s = this.#live('cast', 'this');
    const floats: readonly DType[] = [...FLOAT_DTYPES, 'float64'];
    if (!isDType(dtype) || !floats.includes(dtype)) {
      throw typeError('cast', 'dtype', 'float32, float16, bfloat16 or float64', dtype);
    }
    if (!floats.includes(this.dtype)) {
      throw typeError('cast', 'this', 'a tensor of a float dtype', describe(this));
    }
    if (s.handle.device >= 0) {
      const out = Tensor._alloc('cast', dtype, this.shape, s.handle.device);
      try {
        native().deviceCast(
          s.handle.device,
          s.handle.ptr,
          DTYPE_CODE[this.dtype],
          (out.#storage as Storage).handle.ptr,
          DTYPE_CODE[dtype],
          this.size,
        );
      } catch (e) {
        out.dispose();
        throw fromNative(e, 'cast');
      }
      return out;
    }
    const values = this.dtype === 'float64' ? (s.array as Float64Array) : toFloat32(this.dtype, s.array as AnyArray);
    const arr = fromNumbers(dtype, values);
    return Tensor._make(dtype, this.shape, hostStorage(arr));
  }

  /**
   * A view with another shape over the same storage (no copy); one dimension may be -1.
   * @throws RangeError when the sizes differ.
   * @example
   * const flat = t.reshape([-1]);
   */
  reshape(shape: readonly number[]): Tensor<D> {
    const s = this.#live('reshape', 'this');
    if (!Array.isArray(shape)) throw typeError('reshape', 'shape', 'an array of integers', shape);
    const dims = [...shape] as number[];
    const infer = dims.indexOf(-1);
    if (infer >= 0) {
      const rest = shapeSize(dims.filter((_, i) => i !== infer));
      if (rest === 0 || this.size % rest !== 0) {
        throw rangeError('reshape', 'shape', `a shape with ${this.size} elements`, `[${dims.join(', ')}]`);
      }
      dims[infer] = this.size / rest;
    }
    checkShape('reshape', dims);
    if (shapeSize(dims) !== this.size) {
      throw rangeError('reshape', 'shape', `a shape with ${this.size} elements`, `[${dims.join(', ')}]`);
    }
    if (this.dtype === 'int4') {
      const oldLast = this.shape[this.shape.length - 1] ?? 1;
      const newLast = dims[dims.length - 1] ?? 1;
      if (oldLast !== newLast && (oldLast % 2 !== 0 || newLast % 2 !== 0)) {
        throw rangeError(
          'reshape',
          'shape',
          'an int4 shape whose last dimension keeps the packing (both even)',
          `[${dims.join(', ')}]`,
        );
      }
    }
    return Tensor._make(this.dtype, dims, s);
  }

  /**
   * The contents on the host: a CPU tensor's own array (no copy), or a copy of a device tensor as the work
   * queued before the call leaves it, awaited off the event loop. Up to 1 MiB the copy takes its place in
   * the device's queue at the call, so ops queued after it neither change what it reads nor delay it
   * (a decode loop can queue its next step, then await this one's tokens).
   * @example
   * const values = await out.data();
   */
  async data(): Promise<ArrayFor<D>> {
    const s = this.#live('data', 'this');
    if (s.array !== undefined) return s.array as ArrayFor<D>;
    const host = hostArray(this.dtype, this.shape);
    try {
      await native().copyToHost(s.handle.device, host, s.handle.ptr, true);
    } catch (e) {
      throw fromNative(e, 'data');
    }
    return host;
  }

  /**
   * {@link data} on the calling thread.
   * @example
   * const values = out.dataSync();
   */
  dataSync(): ArrayFor<D> {
    const s = this.#live('dataSync', 'this');
    if (s.array !== undefined) return s.array as ArrayFor<D>;
    const host = hostArray(this.dtype, this.shape);
    try {
      native().copyToHost(s.handle.device, host, s.handle.ptr, false);
    } catch (e) {
      throw fromNative(e, 'dataSync');
    }
    return host;
  }

  /**
   * Lets go of the storage (device memory is freed when no view of it remains). Idempotent; any later
   * use of the tensor throws.
   * @example
   * t.dispose();
   */
  dispose(): void {
    const s = this.#storage;
    if (s === null) return;
    this.#storage = null;
    registry.unregister(this);
    stats.liveTensors--;
    if (--s.handle.views === 0) release(s.handle);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this.isDisposed ? ', disposed' : ''})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

/**
 * Bytes held by live tensors on the host and on devices, and how many tensors are live.
 * @example
 * const { deviceBytes } = memory();
 */
export function memory(): MemoryInfo {
  return { ...stats };
}
