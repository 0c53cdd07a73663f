/**
 * One `tiny` dual-encoder training step on random inputs (forward, SAM loss, backward, AdamW),
 * for benchmarks that compare backends or losses on the same work.
 */
import { tf } from '../../src/backend/tf.js';
import { samContrastiveLoss } from '../../src/margin/sam.js';
import { getConfig, type DualEncoderConfig, type PresetName } from '../../src/nn/configs.js';
import { encodeText, encodeVideo, initDualEncoder } from '../../src/nn/dualEncoder.js';
import { valueAndGradsOf } from '../../src/nn/params.js';
import { AdamW } from '../../src/train/optimizer.js';

export interface TinyStep {
  batch: number;
  cfg: DualEncoderConfig;
  /** One full step; resolves when its results are on the host. */
  run(): Promise<void>;
  /** The step's phases one at a time, for profiling: forward only (the loss, no tape). */
  forward(): tf.Scalar;
  /** Forward and backward: the loss and the gradients by parameter name. */
  valueAndGrads(): { value: tf.Scalar; grads: Record<string, tf.Tensor> };
  /** The optimizer update from `valueAndGrads`' gradients. */
  update(grads: Record<string, tf.Tensor>): void;
  dispose(): void;
}

export async function tinyTrainStepTimer(opts: { batch?: number; frames?: number; marginRad?: number; preset?: PresetName } = {}): Promise<TinyStep> {
  const batch = opts.batch ?? 16;
  const T = opts.frames ?? 4;
  const cfg = getConfig(opts.preset ?? 'tiny', { text: { vocabSize: 1000, contextLength: 16 }, temporal: { maxFrames: T } });
  const S = cfg.vision.imageSize;
  const store = initDualEncoder(cfg, 1);
  const params = store.snapshot();
  const optimizer = new AdamW(params as Record<string, tf.Variable>, { lr: 1e-3 });
  const frames = tf.randomNormal([batch, T, S, S, 3], 0, 1, 'float32', 7);
  const L = cfg.text.contextLength;
  const idsHost = new Int32Array(batch * L);
  const maskHost = new Int32Array(batch * L);
  for (let b = 0; b < batch; b++) {
    const len = 4 + (b % (L - 4));
    for (let i = 0; i < len; i++) { idsHost[b * L + i] = 1 + ((b * 31 + i * 7) % 998); maskHost[b * L + i] = 1; }
  }
  const ids = tf.tensor2d(idsHost, [batch, L], 'int32');
  const mask = tf.tensor2d(maskHost, [batch, L], 'int32');
  const marginRad = opts.marginRad ?? 0.1;
  const lossOf = (p: typeof params): tf.Scalar => samContrastiveLoss(
    encodeVideo(p, frames, cfg), encodeText(p, ids, mask, cfg), { marginRad, logitScale: p.logit_scale },
  ).loss as tf.Scalar;
  return {
    batch,
    cfg,
    async run() {
      const { value, grads } = valueAndGradsOf(lossOf, params);
      optimizer.step(grads, 1e-3);
      await value.data();
      tf.dispose([value, ...Object.values(grads)]);
    },
    forward: () => tf.tidy(() => lossOf(params)),
    valueAndGrads: () => valueAndGradsOf(lossOf, params),
    update: (grads) => optimizer.step(grads, 1e-3),
    dispose() {
      tf.dispose([frames, ids, mask]);
      optimizer.dispose();
      store.dispose();
    },
  };
}
