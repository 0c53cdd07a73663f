/**
 * CAMRI (Nishiyama et al. 2022): an additive angular margin only on rows whose label is the
 * important class k, to raise that class's recall without costing accuracy elsewhere.
 */
import { tf } from '../backend/tf.js';
import { applyMargin, checkCosineAndLabels, checkNumber, checkRowScale, type RowScale } from './core.js';
import { combinedMargin } from './combined.js';

type T = tf.Tensor;

export interface CamriOptions {
  /** The important class k. */
  importantClass: number;
  /** Additive angular margin on class k, radians. */
  marginRad: number;
  /** Logit scale s. */
  scale: RowScale;
  detachMargin?: boolean;
}

/** m2 per row: `marginRad` where the label is k, 0 elsewhere. */
export function camriRowMargins(labels: T, importantClass: number, marginRad: number): T {
  return tf.tidy(() => tf.mul(tf.cast(tf.equal(labels, importantClass), 'float32'), marginRad));
}

/**
 * CAMRI logits from cosines [B,C]: s·cos(θ_y + m) on rows of class k, s·cos θ elsewhere.
 *
 * @example
 * const logits = camriLogits(cosine, labels, { importantClass: 3, marginRad: 0.5, scale: 64 });
 */
export function camriLogits(cosine: T, labels: T, opts: CamriOptions): T {
  const fn = 'camriLogits';
  checkCosineAndLabels(cosine, labels, fn);
  const C = cosine.shape[1];
  if (!Number.isInteger(opts.importantClass) || opts.importantClass < 0 || opts.importantClass >= C) {
    throw new Error(`${fn}: 'importantClass' must be an integer in [0, ${C}), got ${opts.importantClass}`);
  }
  checkNumber(opts.marginRad, fn, 'marginRad', 0, Math.PI);
  checkRowScale(opts.scale, fn, 'scale', cosine.shape[0]);
  return tf.tidy(() => {
    const m2 = camriRowMargins(labels, opts.importantClass, opts.marginRad);
    return applyMargin(cosine, labels, combinedMargin(1, m2, 0, false), { scale: opts.scale, detachMargin: opts.detachMargin }).logits;
  });
}
