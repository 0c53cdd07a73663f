/**
 * Choosing and starting the compute backend.
 *
 * Auto order: `tensorflow` (`@tensorflow/tfjs-node-gpu`'s addon, once `vlmargin setup tensorflow`
 * has built it against an official TensorFlow wheel) → `webgpu` (Dawn through the `webgpu`
 * package, only when an adapter exists; on Linux only when the Vulkan loader is installed, so
 * machines without one never see Dawn's warning) → `wasm` → `cpu`.
 *
 * @example
 * const choice = await initBackend({ prefer: 'auto' });
 * console.log(choice.name, choice.skipped); // 'wasm', [{ name: 'tensorflow', reason: '…' }, …]
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { tf } from './tf.js';
import { registerWasmKernels } from './wasmKernels.js';
import { installWebGPUGuards } from './webgpuGuard.js';
import { NATIVE_PACKAGE, builtAddons, nativePackageDir, readSetupStamp } from './native.js';
import { registerNativeShortcuts } from './nativeKernels.js';

export const BACKEND_NAMES = ['tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export type BackendPreference = 'auto' | BackendName;

export interface BackendSkip { name: BackendName; reason: string }
export interface BackendChoice {
  name: BackendName;
  /** Backends tried before the chosen one, and why each was passed over. */
  skipped: BackendSkip[];
  /** Free-form facts about the chosen backend (adapter, threads, SIMD). */
  info: Record<string, unknown>;
}

export interface InitBackendOptions {
  prefer?: BackendPreference;
  wasmThreads?: number;
  /**
   * TensorFlow's intra-op threads (the pool one op's work is split over); TF's default is one
   * per schedulable CPU. Read once, when the native library starts in this process.
   */
  threads?: number;
  /**
   * Backends `auto` passes over without trying, each with the reason its `skipped` entry gives
   * (doctor, which has already tried the native engine in a child process).
   */
  passOver?: Partial<Record<BackendName, string>>;
}

const require = createRequire(import.meta.url);

function errText(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.split('\n')[0].slice(0, 300);
}

type Attempt = { ok: true; info: Record<string, unknown> } | { ok: false; reason: string };

/** The intra-op thread count the native library started with in this process, once started. */
let tensorflowThreads: string | undefined;

async function tryTensorflow(threads?: number): Promise<Attempt> {
  const dir = nativePackageDir();
  if (!dir) return { ok: false, reason: 'not set up: run `vlmargin setup tensorflow` to build the native engine from the TensorFlow wheel' };
  const stamp = readSetupStamp(dir);
  if (!stamp && builtAddons(dir).length === 0) {
    return { ok: false, reason: `${NATIVE_PACKAGE} is installed but its addon is not built: run \`vlmargin setup tensorflow\`` };
  }
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1)) {
    throw new Error(`initBackend: threads must be a positive integer, got ${threads}`);
  }
  if (tensorflowThreads === undefined) {
    // TensorFlow reads these when its first context starts; later changes have no effect.
    if (threads !== undefined) process.env.TF_NUM_INTRAOP_THREADS = String(threads);
    process.env.TF_CPP_MIN_LOG_LEVEL ??= '1';
    tensorflowThreads = process.env.TF_NUM_INTRAOP_THREADS ?? `default (${os.availableParallelism()})`;
  } else if (threads !== undefined && tensorflowThreads !== String(threads)) {
    throw new Error(`initBackend: TensorFlow already started with ${tensorflowThreads} intra-op threads in this process; threads=${threads} needs a new process`);
  }
  try {
    await import(NATIVE_PACKAGE as string);
  } catch (e) {
    return { ok: false, reason: `${NATIVE_PACKAGE} did not load (rerun \`vlmargin setup tensorflow\`): ${errText(e)}` };
  }
  if (!(await tf.setBackend('tensorflow'))) return { ok: false, reason: `${NATIVE_PACKAGE} loaded but the tensorflow backend failed to start` };
  registerNativeShortcuts();
  const b = tf.backend() as unknown as { binding?: { TF_Version?: string }; isUsingGpuDevice?: boolean };
  return {
    ok: true,
    info: {
      tensorflow: b.binding?.TF_Version,
      library: stamp ? `${stamp.wheel.file} (${stamp.variant})` : `${NATIVE_PACKAGE}'s own download`,
      gpu: b.isUsingGpuDevice === true,
      intraOpThreads: tensorflowThreads,
    },
  };
}

let webgpuExitHook = false;

/** The limits that decide what a training step can bind (tfjs asks the device for these). */
const ADAPTER_LIMITS = ['maxBufferSize', 'maxStorageBufferBindingSize', 'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupsPerDimension'] as const;
const ADAPTER_INFO = ['vendor', 'architecture', 'device', 'description', 'isFallbackAdapter', 'subgroupMinSize', 'subgroupMaxSize'] as const;

/**
 * What a Dawn adapter is: its info fields, the limits tfjs requests and its features.
 * GPUAdapterInfo's fields are getters on its prototype, so spreading it gives `{}`; they are
 * read one by one here.
 */
export function describeAdapter(adapter: unknown): Record<string, unknown> {
  const a = adapter as { info?: Record<string, unknown>; limits?: Record<string, unknown>; features?: Iterable<string> };
  const out: Record<string, unknown> = {};
  for (const k of ADAPTER_INFO) {
    const v = a.info?.[k];
    if (v !== undefined && v !== '') out[k] = v;
  }
  const limits: Record<string, number> = {};
  for (const k of ADAPTER_LIMITS) {
    const v = a.limits?.[k];
    if (typeof v === 'number' || typeof v === 'bigint') limits[k] = Number(v);
  }
  out.limits = limits;
  out.features = a.features ? [...a.features].sort() : [];
  return out;
}

/** Looks for a WebGPU adapter through Dawn; never throws. */
export async function probeWebGPU(): Promise<{ adapter: Record<string, unknown> | null; reason?: string; gpu?: unknown; globals?: Record<string, unknown> }> {
  try {
    const mod = (await import('webgpu' as string)) as { create(flags: string[]): { requestAdapter(o?: object): Promise<unknown> }; globals: Record<string, unknown> };
    const gpu = mod.create([]);
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) return { adapter: null, reason: 'Dawn found no GPU adapter (no Vulkan/Metal/D3D12 device)' };
    return { adapter: describeAdapter(adapter), gpu, globals: mod.globals };
  } catch (e) {
    return { adapter: null, reason: `the webgpu package did not load: ${errText(e)}` };
  }
}

/**
 * The Dawn instance the webgpu backend runs on, held for the life of the process. A second
 * instance replacing navigator.gpu would let the first be collected under the running
 * backend's device (segfaults, hangs, a pthread mutex assertion).
 */
let webgpuStarted: { adapter: Record<string, unknown>; gpu: unknown } | undefined;

/** Why auto passes over a CPU adapter (llvmpipe/lavapipe, SwiftShader); null for a real GPU. */
function fallbackReason(adapter: Record<string, unknown>): string | null {
  if (adapter.isFallbackAdapter !== true) return null;
  return `the only WebGPU adapter is a CPU fallback (${String(adapter.description ?? adapter.device ?? 'unnamed')}); name --backend webgpu to use it anyway`;
}

let vulkanLoader: boolean | undefined;

/**
 * Whether the Vulkan loader (libvulkan.so.1) can be found: in LD_LIBRARY_PATH, the linker's
 * cache (ldconfig -p) or the usual library folders. Linux only (true elsewhere: Metal and D3D12
 * need no loader). Without it Dawn prints a multi-line "Couldn't load Vulkan" warning from
 * native code, which no JavaScript can silence, and finds no adapter anyway.
 */
export function vulkanLoaderFound(): boolean {
  if (process.platform !== 'linux') return true;
  if (vulkanLoader !== undefined) return vulkanLoader;
  const lib = 'libvulkan.so.1';
  const multiarch = process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu';
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    `/lib/${multiarch}`, `/usr/lib/${multiarch}`, '/lib64', '/usr/lib64', '/lib', '/usr/lib', '/usr/local/lib',
  ];
  vulkanLoader = dirs.some((d) => fs.existsSync(path.join(d, lib)));
  if (!vulkanLoader) {
    for (const ldconfig of ['/sbin/ldconfig', '/usr/sbin/ldconfig']) {
      try {
        if (execFileSync(ldconfig, ['-p'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).includes(lib)) vulkanLoader = true;
        break;
      } catch { /* not there: try the next */ }
    }
  }
  return vulkanLoader;
}

/** Why webgpu is passed over without asking Dawn, or null when Dawn may be asked. */
export function webgpuSkipReason(): string | null {
  return vulkanLoaderFound() ? null : 'no Vulkan loader (libvulkan.so.1) on this machine, so no GPU for Dawn; --backend webgpu asks Dawn anyway';
}

async function tryWebGPU(auto: boolean): Promise<Attempt> {
  const skip = auto && !webgpuStarted ? webgpuSkipReason() : null;
  if (skip) return { ok: false, reason: skip };
  if (webgpuStarted) {
    const why = auto ? fallbackReason(webgpuStarted.adapter) : null;
    if (why) return { ok: false, reason: why };
    if (!(await tf.setBackend('webgpu'))) return { ok: false, reason: 'the webgpu backend failed to restart' };
    return { ok: true, info: { adapter: webgpuStarted.adapter } };
  }
  const probe = await probeWebGPU();
  if (!probe.adapter) return { ok: false, reason: probe.reason ?? 'no adapter' };
  // A CPU Vulkan driver runs the same cores as wasm, slower (README, "GPU").
  const why = auto ? fallbackReason(probe.adapter) : null;
  if (why) return { ok: false, reason: why };
  const g = globalThis as unknown as Record<string, unknown>;
  Object.assign(g, probe.globals);
  g.navigator = { gpu: probe.gpu, userAgent: 'node' };
  if (!webgpuExitHook) {
    webgpuExitHook = true;
    // Dawn keeps the event loop alive while navigator.gpu is reachable.
    process.once('beforeExit', () => { delete g.navigator; });
  }
  try {
    await import('@tensorflow/tfjs-backend-webgpu');
    if (!(await tf.setBackend('webgpu'))) return { ok: false, reason: 'the webgpu backend failed to start on the adapter' };
    installWebGPUGuards(tf.backend());
  } catch (e) {
    return { ok: false, reason: `the webgpu backend failed: ${errText(e)}` };
  }
  webgpuStarted = { adapter: probe.adapter, gpu: probe.gpu };
  return { ok: true, info: { adapter: probe.adapter } };
}

async function tryWasm(threads?: number): Promise<Attempt> {
  try {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    const dir = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
    wasm.setWasmPaths(dir + path.sep);
    if (threads) wasm.setThreadsCount(threads);
    registerWasmKernels();
    if (!(await tf.setBackend('wasm'))) return { ok: false, reason: 'the wasm backend failed to start' };
    return {
      ok: true,
      info: {
        simd: await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'),
        multithread: await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT'),
        threads: wasm.getThreadsCount(),
      },
    };
  } catch (e) {
    return { ok: false, reason: `the wasm backend failed: ${errText(e)}` };
  }
}

async function tryCpu(): Promise<Attempt> {
  if (!(await tf.setBackend('cpu'))) return { ok: false, reason: 'cpu backend failed' };
  // The cpu backend prints a "install tfjs-node" banner on first use; doctor already says it.
  (tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;
  return { ok: true, info: {} };
}

function attempt(name: BackendName, opts: InitBackendOptions, auto: boolean): Promise<Attempt> {
  switch (name) {
    case 'tensorflow': return tryTensorflow(opts.threads);
    case 'webgpu': return tryWebGPU(auto);
    case 'wasm': return tryWasm(opts.wasmThreads);
    case 'cpu': return tryCpu();
  }
}

/**
 * Starts the preferred backend, or the first available one in the auto order.
 * A named backend that cannot start is an error (no silent fallback).
 */
export async function initBackend(opts: InitBackendOptions = {}): Promise<BackendChoice> {
  const prefer = opts.prefer ?? 'auto';
  if (prefer !== 'auto' && !(BACKEND_NAMES as readonly string[]).includes(prefer)) {
    throw new Error(`initBackend: unknown backend '${String(prefer)}'; choose one of auto, ${BACKEND_NAMES.join(', ')}`);
  }
  const order: BackendName[] = prefer === 'auto' ? [...BACKEND_NAMES] : [prefer];
  const skipped: BackendSkip[] = [];
  for (const name of order) {
    const passOver = prefer === 'auto' ? opts.passOver?.[name] : undefined;
    if (passOver !== undefined) {
      skipped.push({ name, reason: passOver });
      continue;
    }
    const r = await attempt(name, opts, prefer === 'auto');
    if (r.ok) {
      await tf.ready();
      return { name, skipped, info: r.info };
    }
    skipped.push({ name, reason: r.reason });
  }
  throw new Error(`initBackend: no backend could start (${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')})`);
}

/** Parses a `--backend` value, with an error that lists the choices. */
export function parseBackendPreference(value: string | undefined, argName = '--backend'): BackendPreference {
  const v = value ?? 'auto';
  if (v === 'auto' || (BACKEND_NAMES as readonly string[]).includes(v)) return v as BackendPreference;
  throw new Error(`${argName}: unknown backend '${v}'; choose one of auto, ${BACKEND_NAMES.join(', ')}`);
}

/** Parses a thread count (`--threads`, the config key `threads`), with an error that names the argument. */
export function parseThreads(value: string | number | undefined, argName = '--threads'): number | undefined {
  if (value === undefined) return undefined;
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new Error(`${argName}: expected a whole number of threads from 1 to 1024, got '${value}'`);
  return n;
}
