/**
 * The loader: finds the native addon (the CUDA variant when it can run, else the CPU one), loads it
 * once, and reports what loaded and why through {@link backend}. Everything else reaches native code
 * through {@link native}.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { rangeError, SsmkitError, typeError } from './errors';

/** What {@link backend} reports. */
export interface BackendInfo {
  name: 'cpu' | 'cuda';
  device?: string;
  computeCapability?: string;
  cpuFeatures: string[];
  /** The CPU SIMD path in force (scalar, avx2, avx512, avx512vnni). */
  simd: string;
  threads: number;
  bindingPath: string;
  fallbackReason?: string;
}

// The addon's exports are untyped at this boundary; lib/ops/* call them with checked arguments.
// biome-ignore lint/suspicious/noExplicitAny: the addon's functions are untyped at this boundary
export type NativeAddon = any;

interface Loaded {
  addon: NativeAddon;
  info: BackendInfo;
  cudaDevices: number;
}

let loaded: Loaded | undefined;

/** The package root: the nearest folder above this file whose package.json is ssmkit's. */
function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        if (JSON.parse(fs.readFileSync(pj, 'utf8')).name === 'ssmkit') return dir;
      } catch {
        // not ours; keep looking
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return path.join(__dirname, '..', '..');
    dir = up;
  }
}

function requireAddon(file: string): NativeAddon {
  // A plain require keeps bundlers from inlining the binary.
  return require(file) as NativeAddon;
}

function cudaCandidates(root: string): string[] {
  return [
    path.join(root, 'build-cuda', 'Release', 'ssmkit.node'),
    path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'cuda', 'ssmkit.node'),
  ];
}

function load(): Loaded {
  if (loaded) return loaded;
  const want = process.env.SSMKIT_BACKEND || 'auto';
  if (want !== 'auto' && want !== 'cpu' && want !== 'cuda') {
    throw rangeError('ssmkit', 'SSMKIT_BACKEND', "'auto', 'cpu' or 'cuda'", JSON.stringify(want));
  }
  const root = packageRoot();
  const explicit = process.env.SSMKIT_BINDING;
  if (explicit) {
    // A specific binary (a sanitizer or debug build), used as it is.
    const addon = requireAddon(path.resolve(explicit));
    const build = addon.buildInfo() as { simd: string; cpuFeatures: string[]; cuda: boolean };
    const count = build.cuda && want !== 'cpu' ? (addon.deviceCount() as { count: number }).count : 0;
    const dev = count > 0 ? (addon.deviceInfo(0) as { name: string; computeCapability: string }) : undefined;
    loaded = {
      addon,
      cudaDevices: count,
      info: {
        name: count > 0 ? 'cuda' : 'cpu',
        ...(dev ? { device: dev.name, computeCapability: dev.computeCapability } : {}),
        cpuFeatures: build.cpuFeatures,
        simd: build.simd,
        threads: addon.getNumThreads() as number,
        bindingPath: path.resolve(explicit),
      },
    };
    return loaded;
  }
  const tried: string[] = [];
  let fallbackReason: string | undefined;
  let warn = false;
  // An NVIDIA driver's control device: CUDA was expected here, so falling back deserves a warning.
  const gpuLikely = fs.existsSync('/dev/nvidiactl');

  if (want !== 'cpu') {
    let found = false;
    for (const file of cudaCandidates(root)) {
      if (!fs.existsSync(file)) continue;
      found = true;
      try {
        const addon = requireAddon(file);
        const { count, error } = addon.deviceCount() as { count: number; error?: string };
        if (count > 0) {
          const dev = addon.deviceInfo(0) as { name: string; computeCapability: string };
          const build = addon.buildInfo() as { simd: string; cpuFeatures: string[] };
          loaded = {
            addon,
            cudaDevices: count,
            info: {
              name: 'cuda',
              device: dev.name,
              computeCapability: dev.computeCapability,
              cpuFeatures: build.cpuFeatures,
              simd: build.simd,
              threads: addon.getNumThreads() as number,
              bindingPath: file,
            },
          };
          return loaded;
        }
        tried.push(`${file}: ${error ?? 'no CUDA device found'}`);
      } catch (e) {
        // The binary exists but does not load (missing library, wrong platform): always worth a warning.
        warn = true;
        tried.push(`${file}: ${(e as Error).message}`);
      }
    }
    if (!found) tried.push(`no CUDA build (looked for ${cudaCandidates(root).join(', ')})`);
    fallbackReason = tried.join('; ');
    // A machine without an NVIDIA driver simply runs on the CPU (the reason is in backend()); a GPU
    // machine where CUDA cannot be used, or a CUDA binary that does not load, gets one warning.
    warn = warn || gpuLikely;
    if (want === 'cuda') {
      throw new SsmkitError(
        `ssmkit: SSMKIT_BACKEND=cuda, but the CUDA backend cannot be used: ${fallbackReason}. ` +
          'Install the NVIDIA driver and run on a machine with an NVIDIA GPU (compute capability 8.0 or newer), ' +
          'or build the CUDA variant with `npm run build:cuda` where nvcc is installed.',
        'ERR_SSMKIT_NO_CUDA',
      );
    }
  }

  let addon: NativeAddon;
  let bindingPath: string;
  try {
    const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
    bindingPath = nodeGypBuild.resolve(root);
    addon = requireAddon(bindingPath);
  } catch (e) {
    tried.push(`CPU build: ${(e as Error).message.split('\n')[0]}`);
    throw new SsmkitError(
      `ssmkit: no native binary could be loaded for ${process.platform}-${process.arch}, Node ${process.version}. ` +
        `Tried: ${tried.join('; ')}. To fix it, either install on a platform with a prebuilt binary (linux-x64), ` +
        'or build from source with `npm rebuild ssmkit` on a machine with python3, make and a C++17 compiler ' +
        '(g++ or clang).',
      'ERR_SSMKIT_LOAD',
    );
  }
  const build = addon.buildInfo() as { simd: string; cpuFeatures: string[] };
  loaded = {
    addon,
    cudaDevices: 0,
    info: {
      name: 'cpu',
      cpuFeatures: build.cpuFeatures,
      simd: build.simd,
      threads: addon.getNumThreads() as number,
      bindingPath,
      ...(fallbackReason !== undefined && want === 'auto' ? { fallbackReason } : {}),
    },
  };
  if (warn && fallbackReason) {
    process.emitWarning(`ssmkit: using the CPU backend: ${fallbackReason}`, { code: 'SSMKIT_CPU_FALLBACK' });
  }
  return loaded;
}

/** The loaded native addon (loading it on first use). */
export function native(): NativeAddon {
  return load().addon;
}

/** Number of CUDA devices the loaded backend can use (0 on the CPU backend). */
export function cudaDeviceCount(): number {
  return load().cudaDevices;
}

/**
 * What loaded and why: the backend's name, its device, the CPU features and SIMD path in force, the
 * CPU thread count, the binary's path, and why CUDA was not used when it was not.
 * @throws SsmkitError (ERR_SSMKIT_LOAD, ERR_SSMKIT_NO_CUDA) when no binary loads.
 * @example
 * console.log(backend().name); // 'cpu' or 'cuda'
 */
export function backend(): BackendInfo {
  const l = load();
  return { ...l.info, cpuFeatures: [...l.info.cpuFeatures], threads: l.addon.getNumThreads() as number };
}

/**
 * Sets how many threads CPU kernels use (default: all cores). Ops already running keep their split.
 * @throws RangeError unless n is an integer from 1 to 1024.
 * @example
 * setNumThreads(2);
 */
export function setNumThreads(n: number): void {
  if (typeof n !== 'number') throw typeError('setNumThreads', 'n', 'an integer from 1 to 1024', n);
  if (!Number.isInteger(n) || n < 1 || n > 1024) {
    throw rangeError('setNumThreads', 'n', 'an integer from 1 to 1024', n);
  }
  native().setNumThreads(n);
}

/**
 * The number of threads CPU kernels use.
 * @example
 * const n = getNumThreads();
 */
export function getNumThreads(): number {
  return native().getNumThreads() as number;
}
