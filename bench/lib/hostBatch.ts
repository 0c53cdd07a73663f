/**
 * The synthetic training batch of bench-gpu, check-webgpu and tools/reference/sam_reference.py,
 * made on the host from a hash so every backend and PyTorch get the same numbers.
 */
import { tf } from '../../src/backend/tf.js';
import type { DualEncoderConfig } from '../../src/nn/configs.js';
import type { DualEncoderBatch } from '../../src/meta/dualEncoderModel.js';

/**
 * The batch, bit for bit the same in Node and in sam_reference.py: frame value i
 * (row-major over [B, T, S, S, 3]) is 2u − 1 with u = ((i·2654435761 + 40503·seed) mod 2³²)/2³²
 * (a hash, not a generator, so Python gets the same numbers without porting one); token row b
 * has length 4 + (b mod (L − 4)) with id 1 + ((31b + 7i + seed) mod (V − 2)), the rest
 * padding (id 0, mask 0).
 */
export interface HostBatch { frames: Float32Array; framesShape: number[]; ids: Int32Array; mask: Int32Array; L: number }

export function hostBatch(cfg: DualEncoderConfig, batch: number, frames: number, seed: number): HostBatch {
  const S = cfg.vision.imageSize;
  const L = cfg.text.contextLength;
  const V = cfg.text.vocabSize;
  const framesShape = [batch, frames, S, S, 3];
  const data = new Float32Array(batch * frames * S * S * 3);
  const offset = Math.imul(seed, 40503);
  for (let i = 0; i < data.length; i++) data[i] = 2 * (((Math.imul(i, 2654435761) + offset) >>> 0) / 2 ** 32) - 1;
  const ids = new Int32Array(batch * L);
  const mask = new Int32Array(batch * L);
  for (let b = 0; b < batch; b++) {
    const len = 4 + (b % (L - 4));
    for (let i = 0; i < len; i++) { ids[b * L + i] = 1 + ((31 * b + 7 * i + seed) % (V - 2)); mask[b * L + i] = 1; }
  }
  return { frames: data, framesShape, ids, mask, L };
}

/** Fresh tensors per step, as the pretraining loader hands them over (the upload is part of the step). */
export function toTensors(h: HostBatch, batch: number): DualEncoderBatch {
  return {
    frames: tf.tensor(h.frames, h.framesShape),
    ids: tf.tensor2d(h.ids, [batch, h.L], 'int32'),
    mask: tf.tensor2d(h.mask, [batch, h.L], 'int32'),
  };
}

export function disposeBatch(b: DualEncoderBatch): void {
  tf.dispose([b.frames, b.ids, b.mask]);
}

