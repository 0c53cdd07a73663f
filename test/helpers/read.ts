/**
 * Asynchronous reads for tests: every backend (webgpu included) supports them, so the suite
 * reads tensors the way library callers do.
 */
import { tf } from '../../src/backend/tf.js';

/** Runs `fn` inside tf.tidy, reads the returned tensor's values, then disposes it. */
export async function tidyData(fn: () => tf.Tensor): Promise<Float32Array | Int32Array | Uint8Array> {
  const t = tf.tidy(fn);
  try {
    return await t.data() as Float32Array | Int32Array | Uint8Array;
  } finally {
    t.dispose();
  }
}

/** As tidyData, for the nested-array form (tensor.array()). */
export async function tidyArray<T = number[]>(fn: () => tf.Tensor): Promise<T> {
  const t = tf.tidy(fn);
  try {
    return await t.array() as unknown as T;
  } finally {
    t.dispose();
  }
}

/**
 * tf.tidy for a test body that awaits reads: tensors made inside `fn` are disposed when it
 * settles, except those it returns. Sound only because mocha runs tests one at a time, so no
 * other code allocates tensors inside this scope while `fn` awaits.
 */
export async function scoped(fn: () => Promise<void>): Promise<void> {
  tf.engine().startScope();
  try {
    await fn();
  } finally {
    tf.engine().endScope();
  }
}
