/**
 * Combined angular margin: target s·(cos(m1·θ_y + m2) − m3), others s·cos θ_j.
 * ArcFace (Deng et al. 2019, m2), CosFace / AM-softmax (Wang et al. 2018, m3), their mixture
 * (InsightFace's combined margin), AAM-softmax for speakers, and per-class m2 (KappaFace, CAMRI).
 */
import { tf } from '../backend/tf.js';
import {
  applyMargin, checkCosineAndLabels, checkNumber, checkRowScale, checkVector, indicator, type MarginSpec, type RowScale,
} from './core.js';

type T = tf.Tensor;

export interface MarginLogitsOptions {
  /** s, the logit scale (number, scalar tensor, or one per row [B]). */
  scale: RowScale;
  /** Multiplicative angular margin m1 (1 = none). */
  m1?: number;
  /** Additive angular margin m2 in radians (ArcFace). */
  m2?: number;
  /** Additive cosine margin m3 (CosFace, AM-softmax). */
  m3?: number;
  /** Per-class m2 [C] in radians; replaces `m2` (KappaFace, CAMRI). */
  perClassM2?: T;
  /** ArcFace's easy margin: apply the margin only where cos θ_y > 0, keep cos θ_y elsewhere. */
  easyMargin?: boolean;
  /** Forward with the margin, backward as plain normalised softmax. */
  detachMargin?: boolean;
}

/**
 * The combined margin as a {@link MarginSpec}. With m1 = 1 the target cos(θ + m2) is not
 * monotonic once θ + m2 > π; there it becomes cos θ − m2·sin m2 (InsightFace's fallback),
 * which keeps the target logit decreasing in θ over all of [0, π]. `m2` may be a number or a
 * per-row tensor [B].
 */
export function combinedMargin(m1: number, m2: number | T, m3: number, easyMargin: boolean): MarginSpec {
  if (m1 === 1 && m2 === 0) {
    // Pure cosine margin: no angle needed.
    return { target: (cos) => tf.sub(cos, m3) };
  }
  return {
    target: (cos, theta) => {
      const th = theta();
      const arc = tf.cos(tf.add(tf.mul(th, m1), m2));
      let out: T;
      if (easyMargin) {
        const on = indicator(cos, 0);
        out = tf.add(tf.mul(on, arc), tf.mul(tf.sub(1, on), cos));
      } else if (m1 === 1) {
        const m2t = typeof m2 === 'number' ? tf.scalar(m2) : m2;
        const past = indicator(tf.add(th, m2t), Math.PI);
        const fallback = tf.sub(cos, tf.mul(m2t, tf.sin(m2t)));
        out = tf.add(tf.mul(tf.sub(1, past), arc), tf.mul(past, fallback));
      } else {
        out = arc;
      }
      return m3 === 0 ? out : tf.sub(out, m3);
    },
  };
}

/**
 * Margin logits from cosines [B,C]: target s·(cos(m1·θ_y + m2) − m3), others s·cos θ_j.
 *
 * @example
 * // ArcFace, s = 64, m = 0.5
 * const logits = marginLogits(cosine, labels, { scale: 64, m2: 0.5 });
 */
export function marginLogits(cosine: T, labels: T, opts: MarginLogitsOptions): T {
  const fn = 'marginLogits';
  checkCosineAndLabels(cosine, labels, fn);
  const { m1 = 1, m2 = 0, m3 = 0, easyMargin = false, detachMargin = false } = opts;
  checkRowScale(opts.scale, fn, 'scale', cosine.shape[0]);
  checkNumber(m1, fn, 'm1', 0);
  checkNumber(m2, fn, 'm2', -Math.PI, Math.PI);
  checkNumber(m3, fn, 'm3');
  if (opts.perClassM2 !== undefined) {
    checkVector(opts.perClassM2, fn, 'perClassM2', cosine.shape[1]);
  }
  return tf.tidy(() => {
    const rowM2 = opts.perClassM2 ? tf.gather(opts.perClassM2, labels) : m2;
    return applyMargin(cosine, labels, combinedMargin(m1, rowM2, m3, easyMargin), { scale: opts.scale, detachMargin }).logits;
  });
}
