/**
 * Subtractive angular margin contrastive loss, SAM (meta-optimised angular margin
 * video-language framework, 2024): symmetric InfoNCE whose positive pairs have μ subtracted
 * from their angle, logit_ij = s·cos(max(θ_ij − μ·[i ~ j], 0)). A positive then counts as
 * aligned before it is perfectly aligned, so once θ < μ it stops pulling (noisy pairs
 * included). μ = 0 is plain symmetric InfoNCE.
 */
import { tf } from '../backend/tf.js';
import { exp, l2Normalize } from '../backend/safeOps.js';
import {
  applyMargin, applyMaskedMargin, checkMatrix, checkNumber, checkRowScale, checkTensor, checkWeights,
  multiPositiveCrossEntropy, reduceLoss, targetCrossEntropy, type MarginSpec,
} from './core.js';

type T = tf.Tensor;

/** ln 200: CLIP's cap on the logit scale s = e^logitScale ≤ 200 (SAM's clamp and the trainer's). */
export const MAX_LOGIT_SCALE = Math.log(200);

export interface SamOptions {
  /** μ, subtracted from the positive pairs' angles (radians, ≥ 0). */
  marginRad: number;
  /** log s (number or learnable scalar tensor), clamped to [0, ln 200] in the forward. */
  logitScale: number | T;
  /**
   * Video id per row [B] (int32). Rows with the same id are the same video with different
   * captions, and every such pair is a positive.
   */
  groups?: T;
  /** Per-sample weights [B]: loss = Σ wᵢℓᵢ (the meta-learner's weighting). */
  weights?: T;
  /** Forward with the margin, backward as plain InfoNCE. */
  detachMargin?: boolean;
}

export function samMargin(marginRad: number): MarginSpec {
  return { target: (_cos, theta) => tf.cos(tf.relu(tf.sub(theta(), marginRad))) };
}

/**
 * SAM loss for B video–text pairs.
 *
 * Row i's cross-entropy is taken over the texts, column i's over the videos. Without
 * `groups` the positive of row/column i is entry (i, i). With `groups` the positives P(i) of
 * row i are all j with groups[j] = groups[i], and the cross-entropy with several positives is
 *
 *   CE_row(i) = −log Σ_{j∈P(i)} e^{logit_ij} + log Σ_j e^{logit_ij}
 *
 * (minus the log of the total softmax probability on the positives), likewise for columns;
 * perSample_i = ½(CE_row(i) + CE_col(i)).
 *
 * @param video [B,d] video embeddings (normalised inside)
 * @param text [B,d] text embeddings (normalised inside)
 * @returns loss (mean, or Σ wᵢℓᵢ with `weights`) and perSample [B]
 * @example
 * const logitScale = tf.variable(tf.scalar(Math.log(100)));
 * const { loss, perSample } = samContrastiveLoss(v, t, { marginRad: 0.01, logitScale });
 */
export function samContrastiveLoss(video: T, text: T, opts: SamOptions): { loss: T; perSample: T } {
  const fn = 'samContrastiveLoss';
  checkMatrix(video, fn, 'video');
  checkMatrix(text, fn, 'text', video.shape[0], video.shape[1]);
  checkNumber(opts.marginRad, fn, 'marginRad', 0, Math.PI);
  checkRowScale(opts.logitScale, fn, 'logitScale');
  const B = video.shape[0];
  if (opts.groups !== undefined) {
    checkTensor(opts.groups, fn, 'groups');
    if (opts.groups.rank !== 1 || opts.groups.shape[0] !== B || opts.groups.dtype !== 'int32') {
      throw new Error(`${fn}: 'groups' must be int32 [${B}] (a video id per row), got ${opts.groups.dtype} [${opts.groups.shape}]`);
    }
  }
  checkWeights(opts.weights, fn, B);
  return tf.tidy(() => {
    const ls = typeof opts.logitScale === 'number' ? tf.scalar(opts.logitScale) : tf.reshape(opts.logitScale, []);
    const scale = exp(tf.minimum(tf.maximum(ls, 0), MAX_LOGIT_SCALE));
    const cosine = tf.matMul(l2Normalize(video, 1), l2Normalize(text, 1), false, true);
    const spec = samMargin(opts.marginRad);
    const margin = { scale, detachMargin: opts.detachMargin };
    let perSample: T;
    if (opts.groups === undefined) {
      const { logits, targetLogit } = applyMargin(cosine, tf.range(0, B, 1, 'int32'), spec, margin);
      const rows = targetCrossEntropy(logits, targetLogit, 1);
      const cols = targetCrossEntropy(logits, targetLogit, 0);
      perSample = tf.mul(tf.add(rows, cols), 0.5);
    } else {
      const g = opts.groups;
      const mask = tf.cast(tf.equal(tf.expandDims(g, 1), tf.expandDims(g, 0)), 'float32');
      const logits = applyMaskedMargin(cosine, mask, spec, margin);
      perSample = tf.mul(tf.add(multiPositiveCrossEntropy(logits, mask, 1), multiPositiveCrossEntropy(logits, mask, 0)), 0.5);
    }
    return { loss: reduceLoss(perSample, opts.weights), perSample };
  });
}
