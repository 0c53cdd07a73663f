/**
 * The dual encoder with the SAM loss as a `MetaModel`, so the pretraining pipeline can hand it
 * to `mwnStep` / `l2rwStep`. Heads are the parameters `paramGroup` calls `head` (the two
 * projections and `logit_scale`); features are the pooled video and text features before them.
 */
import { tf } from '../backend/tf.js';
import { l2Normalize } from '../backend/safeOps.js';
import { samContrastiveLoss } from '../margin/sam.js';
import type { DualEncoderConfig } from '../nn/configs.js';
import { dualEncoderSpecs, paramGroup, projectText, projectVideo, textFeatures, videoFeatures } from '../nn/dualEncoder.js';
import type { MetaModel, Params } from './metaStep.js';

/** One batch as tensors (the caller owns and disposes them). */
export interface DualEncoderBatch {
  /** Normalised frames [B, T, S, S, 3]. */
  frames: tf.Tensor;
  /** Token ids [B, L] int32. */
  ids: tf.Tensor;
  /** [B, L], 1 for real tokens. */
  mask: tf.Tensor;
  /** Video id per row [B] int32 when a video appears with several captions (all its pairs are positives). */
  groups?: tf.Tensor;
}

export interface DualEncoderMetaModelOptions {
  /** SAM's μ in radians (0: plain symmetric InfoNCE). */
  marginRad: number;
  /** Forward with the margin, backward as plain InfoNCE. */
  detachMargin?: boolean;
}

/**
 * A `MetaModel` for the dual encoder of `cfg` trained with the SAM loss; the logit scale is
 * the `logit_scale` parameter.
 *
 * @example
 * const model = dualEncoderMetaModel(cfg, { marginRad: 0.01 });
 * const r = mwnStep({ model, params: store.snapshot() as Record<string, tf.Variable>, trainBatch, metaBatch, weightNet, alpha: 1e-3, metaScope: 'heads' });
 */
export function dualEncoderMetaModel(cfg: DualEncoderConfig, opts: DualEncoderMetaModelOptions): MetaModel<DualEncoderBatch> & {
  /** Cosines [B, B] of the batch's projected videos (rows) and captions (columns), for `weightingInputs`. */
  similarities(params: Params, batch: DualEncoderBatch): tf.Tensor;
} {
  if (!cfg || typeof cfg !== 'object' || !cfg.vision || !cfg.text) throw new Error('dualEncoderMetaModel: \'cfg\' must be a DualEncoderConfig (getConfig)');
  if (!opts || typeof opts.marginRad !== 'number' || !Number.isFinite(opts.marginRad) || opts.marginRad < 0) {
    throw new Error(`dualEncoderMetaModel: 'opts.marginRad' must be a finite number ≥ 0, got ${String(opts?.marginRad)}`);
  }
  const headNames = dualEncoderSpecs(cfg).map((s) => s.name).filter((n) => paramGroup(n).group === 'head');
  const lossOf = (p: Params, video: tf.Tensor, text: tf.Tensor, b: DualEncoderBatch) => samContrastiveLoss(video, text, {
    marginRad: opts.marginRad, logitScale: p.logit_scale, groups: b.groups, detachMargin: opts.detachMargin,
  }).perSample;
  const features = (p: Params, b: DualEncoderBatch) => [videoFeatures(p, b.frames, cfg), textFeatures(p, b.ids, b.mask, cfg)];
  const headPerSampleLoss = (p: Params, f: readonly tf.Tensor[], b: DualEncoderBatch) => {
    if (f.length !== 2) throw new Error(`dualEncoderMetaModel: expected [videoFeatures, textFeatures], got ${f.length} tensors`);
    return lossOf(p, projectVideo(p, f[0]), projectText(p, f[1]), b);
  };
  return {
    headNames,
    batchSize: (b) => {
      if (!b || !(b.frames instanceof tf.Tensor)) throw new Error('dualEncoderMetaModel: a batch needs \'frames\' [B, T, S, S, 3]');
      return b.frames.shape[0];
    },
    features,
    headPerSampleLoss,
    perSampleLoss: (p, b) => headPerSampleLoss(p, features(p, b), b),
    similarities: (p, b) => tf.tidy(() => {
      const [v, t] = features(p, b);
      return tf.matMul(l2Normalize(projectVideo(p, v), 1), l2Normalize(projectText(p, t), 1), false, true);
    }),
  };
}
