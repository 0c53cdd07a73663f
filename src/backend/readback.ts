/**
 * Reading tensors back to JS on every backend.
 *
 * tfjs-backend-webgpu reads synchronously (`dataSync`, `arraySync`) through an
 * `OffscreenCanvas`, which exists in browsers but not in Node: there, a sync read of a tensor
 * computed on the GPU throws `ReferenceError: OffscreenCanvas is not defined`. Asynchronous
 * reads (`await t.data()`) work everywhere, so code on a training step's path reads
 * asynchronously, or skips a sync-only check where `canReadSync()` is false.
 *
 * @example
 * if (canReadSync()) checkSomething(x.dataSync()); // else rely on the async guard downstream
 */
import { tf } from './tf.js';

/**
 * False only where the active backend cannot read GPU tensors synchronously: `webgpu` without
 * a global `OffscreenCanvas` (Node). Host-created tensors stay readable there (their values
 * are kept on the CPU), so this is about tensors that kernels produced.
 *
 * @example canReadSync() // true on cpu, wasm, tensorflow; false on webgpu in Node
 */
export function canReadSync(): boolean {
  return !(tf.getBackend() === 'webgpu' && typeof (globalThis as { OffscreenCanvas?: unknown }).OffscreenCanvas === 'undefined');
}

/**
 * Throws a clear error (instead of the backend's `OffscreenCanvas` ReferenceError) when `fn`,
 * a synchronous API, is called where sync reads fail; `alternative` names the async variant.
 *
 * @example assertCanReadSync('mwnStep', 'mwnStepAsync');
 */
export function assertCanReadSync(fn: string, alternative: string): void {
  if (!canReadSync()) {
    throw new Error(`${fn}: the ${tf.getBackend()} backend cannot read tensors synchronously in this runtime (no OffscreenCanvas); use ${alternative}`);
  }
}
