/**
 * Virtual Softmax (Chen et al. 2018): one extra "virtual" negative class W_virt = ‖W_y‖·x/‖x‖
 * in the softmax denominator during training, whose logit is W_virt·x = ‖W_y‖·‖x‖. It can only
 * be beaten by pulling x towards W_y, so it tightens the decision boundary.
 */
import { tf } from '../backend/tf.js';
import { exp } from '../backend/safeOps.js';
import { checkLabels, checkMatrix, checkWeights, oneHotFloat, piecewiseConstant, reduceLoss, rowNorm } from './core.js';

type T = tf.Tensor;

/**
 * ℓᵢ = −W_y·x + log(Σ_j e^{W_j·x} + e^{‖W_y‖·‖x‖}), unnormalised logits.
 *
 * @param embeddings x [B,d]
 * @param weights W [C,d]
 * @param labels [B] int32
 * @example
 * const { loss, perSample } = virtualSoftmaxLoss(x, W, labels);
 */
export function virtualSoftmaxLoss(embeddings: T, weights: T, labels: T, opts: { sampleWeights?: T } = {}): { loss: T; perSample: T } {
  const fn = 'virtualSoftmaxLoss';
  checkMatrix(embeddings, fn, 'embeddings');
  checkMatrix(weights, fn, 'weights', undefined, embeddings.shape[1]);
  checkLabels(labels, fn, embeddings.shape[0]);
  checkWeights(opts.sampleWeights, fn, embeddings.shape[0], 'sampleWeights');
  return tf.tidy(() => {
    const perSample = virtualSoftmaxPerSample(embeddings, weights, labels);
    return { loss: reduceLoss(perSample, opts.sampleWeights), perSample };
  });
}

/** Per-sample loss on checked inputs (the head calls this after its own checks). */
export function virtualSoftmaxPerSample(embeddings: T, weights: T, labels: T): T {
  return tf.tidy(() => {
    const logits = tf.matMul(embeddings, weights, false, true);
    const oneHot = oneHotFloat(labels, weights.shape[0]);
    const target = tf.sum(tf.mul(logits, oneHot), 1);
    const virtual = tf.mul(rowNorm(tf.gather(weights, labels)), rowNorm(embeddings));
    // logSumExp over the C logits and the virtual one without concatenating a [B, C+1] copy;
    // the shift is gradient-free and far-below entries are held at −60, as in core's
    // logSumExpFlush (no subnormal softmax weights in the backward pass).
    const shift = piecewiseConstant([logits, virtual], (z, v) => tf.maximum(tf.max(z, 1), v));
    const m = tf.expandDims(shift, 1);
    const denom = tf.add(tf.sum(exp(tf.maximum(tf.sub(logits, m), -60)), 1), exp(tf.maximum(tf.sub(virtual, shift), -60)));
    const lse = tf.add(tf.log(denom), shift);
    return tf.sub(lse, target);
  });
}
