/**
 * Guards and counters for the webgpu backend.
 *
 * WebGPU reports a bad dispatch (a buffer larger than the device lets a shader bind, an
 * out-of-memory) as an "uncaptured error" on the device and carries on: tfjs does not listen,
 * Dawn prints to stderr, and the op's output is left as zeros. Seen on Mesa lavapipe, whose
 * binding limit is 128 MiB: `tf.add` of a 160 MB tensor printed a validation error and read
 * back zeros. A training run would go on with wrong gradients. Here:
 *
 * - every program's input and output bindings are checked against
 *   `maxStorageBufferBindingSize` before dispatch, and an oversized one throws an error that
 *   names the program, the shape and the limit (`checkBindingSizes`);
 * - uncaptured device errors are kept, and `assertNoWebGPUErrors` (called by the trainer after
 *   every step, before any checkpoint) turns them into an exception;
 * - dispatches, shader compiles, uploads and reads are counted (`webgpuCounters`), for
 *   bench-gpu's per-step figures.
 *
 * All of it is a no-op on the other backends.
 *
 * @example
 * installWebGPUGuards(tf.backend()); // done by initBackend for webgpu
 * const before = webgpuCounters(); step(); const d = webgpuCounters().dispatches - before.dispatches;
 */

/** Bytes per element of a tensor's buffer on the webgpu backend (bool is stored as int32). */
function bytesPerElement(dtype: string): number {
  if (dtype === 'complex64') return 8;
  return 4;
}

function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export interface BindingInfo { shape: readonly number[]; dtype: string }

/**
 * Throws when any binding of a program is larger than `limit` bytes; the error names the
 * program, which binding, its shape and size, and what to change.
 *
 * @example checkBindingSizes('MatMulPackedProgram', [{ shape: [256, 197, 3072], dtype: 'float32' }], [], 134217728) // throws
 */
export function checkBindingSizes(program: string, outputs: BindingInfo[], inputs: BindingInfo[], limit: number): void {
  if (!(limit > 0)) return;
  const all = [...outputs.map((b) => ['output', b] as const), ...inputs.map((b, i) => [`input ${i}`, b] as const)];
  for (const [role, b] of all) {
    const bytes = sizeOf(b.shape) * bytesPerElement(b.dtype);
    if (bytes > limit) {
      throw new Error(`webgpu: ${program} ${role} has shape [${b.shape.join(', ')}] (${b.dtype}, ${(bytes / 2 ** 20).toFixed(1)} MiB), `
        + `larger than this GPU lets one shader bind (maxStorageBufferBindingSize ${(limit / 2 ** 20).toFixed(1)} MiB); `
        + 'use a smaller batch, fewer frames or a smaller model');
    }
  }
}

interface Counters { dispatches: number; compiles: number; uploads: number; uploadBytes: number; reads: number; errors: string[] }
const counters: Counters = { dispatches: 0, compiles: 0, uploads: 0, uploadBytes: 0, reads: 0, errors: [] };
/** Kept errors are capped: one bad op can report thousands. */
const MAX_KEPT_ERRORS = 20;
let errorsSeen = 0;

/**
 * Since the process started: dispatches, new shader pipelines, host → GPU uploads (each a
 * staging buffer and a copy; a JS number in an op such as `tf.mul(x, 0.5)` is one), their
 * bytes, GPU → host reads (each waits for the queue), and uncaptured device errors.
 */
export function webgpuCounters(): { dispatches: number; compiles: number; uploads: number; uploadBytes: number; reads: number; errors: number } {
  const { dispatches, compiles, uploads, uploadBytes, reads } = counters;
  return { dispatches, compiles, uploads, uploadBytes, reads, errors: errorsSeen };
}

/**
 * Throws when the GPU device has reported an error since the last call (the results of the
 * ops since then are not to be trusted), and clears the list.
 *
 * @example await loss.data(); assertNoWebGPUErrors('step 12');
 */
export function assertNoWebGPUErrors(where: string): void {
  if (!counters.errors.length) return;
  const first = counters.errors[0];
  const more = errorsSeen - 1;
  counters.errors = [];
  errorsSeen = 0;
  throw new Error(`webgpu: the GPU device reported an error during ${where}, so its results are wrong: ${first}${more > 0 ? ` (and ${more} more)` : ''}`);
}

interface WebGPUBackendLike {
  device?: { limits?: { maxStorageBufferBindingSize?: number }; onuncapturederror?: unknown };
  tensorMap?: { get(id: object): { resource?: unknown; values?: ArrayLike<number> | null; dtype: string; shape: number[] } | undefined };
  uploadToGPU?: (dataId: object) => void;
  read?: (dataId: object) => Promise<unknown>;
  pipelineCache?: Record<string, unknown>;
  runWebGPUProgram?: (program: { outputShape: number[]; constructor: { name: string } }, inputs: BindingInfo[], outputDtype: string, ...rest: unknown[]) => unknown;
  vlmarginGuarded?: boolean;
}

/**
 * Wraps a webgpu backend's program runner with the binding-size check and the counters, and
 * listens for the device's uncaptured errors. Idempotent; ignores other backends.
 */
export function installWebGPUGuards(backend: unknown): void {
  const b = backend as WebGPUBackendLike;
  if (!b || typeof b.runWebGPUProgram !== 'function' || b.vlmarginGuarded) return;
  b.vlmarginGuarded = true;
  const run = b.runWebGPUProgram.bind(b);
  const limit = Number(b.device?.limits?.maxStorageBufferBindingSize ?? 0);
  b.runWebGPUProgram = (program, inputs, outputDtype, ...rest) => {
    const outShape = program.outputShape;
    if (sizeOf(outShape) > 0) {
      checkBindingSizes(program.constructor.name, [{ shape: outShape, dtype: outputDtype }], inputs, limit);
    }
    const out = run(program, inputs, outputDtype, ...rest);
    counters.dispatches += 1;
    return out;
  };
  if (typeof b.uploadToGPU === 'function') {
    const upload = b.uploadToGPU.bind(b);
    b.uploadToGPU = (dataId) => {
      const t = b.tensorMap?.get(dataId);
      if (t && t.resource == null && t.values) {
        counters.uploads += 1;
        counters.uploadBytes += sizeOf(t.shape) * bytesPerElement(t.dtype);
      }
      upload(dataId);
    };
  }
  if (typeof b.read === 'function') {
    const read = b.read.bind(b);
    b.read = (dataId) => {
      counters.reads += 1;
      return read(dataId);
    };
  }
  if (b.pipelineCache) {
    // A new key in the cache is a shader compiled (and a pipeline created).
    b.pipelineCache = new Proxy(b.pipelineCache, {
      set(target, key, value) {
        if (!(key in target)) counters.compiles += 1;
        return Reflect.set(target, key, value);
      },
    });
  }
  if (b.device) {
    b.device.onuncapturederror = (ev: { error?: { message?: string } }) => {
      errorsSeen += 1;
      if (counters.errors.length < MAX_KEPT_ERRORS) counters.errors.push(String(ev?.error?.message ?? ev).split('\n')[0].slice(0, 400));
    };
  }
}
