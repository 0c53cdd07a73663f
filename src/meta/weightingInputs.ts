/**
 * The weight net's inputs beyond the loss, computed from the train batch's similarity matrix
 * without gradient. A misaligned pair whose loss looks ordinary (one attribute wrong) can still
 * stand out by where its positive sits among the batch's negatives, which the loss alone
 * averages away.
 */
import { tf } from '../backend/tf.js';
import { stopGradient } from '../backend/safeOps.js';
import { checkWeightingInputs, type WeightingInput } from './weightNet.js';

export interface WeightingInputSources {
  /** Cosines [B, B] of the batch: row i = video i, column j = caption j; the diagonal holds the pairs. */
  similarities?: tf.Tensor;
  /** Video id per row [B] when a video appears with several captions (same id = positive, never a negative). */
  groups?: tf.Tensor;
  /** Caption source per sample: 1 human, 0 generated. */
  source?: ArrayLike<number>;
  /** Training progress in [0, 1] (step / total steps). */
  progress?: number;
}

/**
 * (x − mean) / std over the batch. Cosines and margins spread over a few hundredths while the
 * embeddings are young, and over tenths later: raw, they would be invisible next to the loss
 * to a net initialised for unit-scale inputs, and their scale would drift with training.
 */
function zScore(x: tf.Tensor): tf.Tensor {
  const { mean, variance } = tf.moments(x);
  return tf.div(tf.sub(x, mean), tf.add(tf.sqrt(variance), 1e-6));
}

/** Inputs that need the similarity matrix. */
const FROM_SIMILARITIES: readonly WeightingInput[] = ['cosine', 'rowMargin', 'columnMargin', 'rank'];

/** Whether `inputs` need `similarities` (so the caller can skip that forward when not). */
export function needsSimilarities(inputs: readonly WeightingInput[]): boolean {
  return inputs.some((x) => FROM_SIMILARITIES.includes(x));
}

/**
 * The non-loss inputs of `inputs` as a detached tensor [B, k] (columns in `inputs` order, the
 * loss skipped: the step inserts it), or undefined when `inputs` is only the loss. Pass it as
 * `sampleInputs` to the meta step.
 *
 * @example weightingInputs(['loss', 'rowMargin', 'progress'], { similarities: sims, progress: 0.3 }) // [B, 2]
 */
export function weightingInputs(inputs: readonly WeightingInput[], from: WeightingInputSources): tf.Tensor | undefined {
  const list = checkWeightingInputs(inputs, 'weightingInputs').filter((x) => x !== 'loss');
  if (list.length === 0) return undefined;
  const { similarities, groups, source, progress } = from ?? {};
  let B: number | undefined;
  if (needsSimilarities(list)) {
    if (!(similarities instanceof tf.Tensor) || similarities.rank !== 2 || similarities.shape[0] !== similarities.shape[1]) {
      throw new Error(`weightingInputs: ${list.filter((x) => FROM_SIMILARITIES.includes(x)).join(', ')} need 'similarities' [B, B], got ${similarities instanceof tf.Tensor ? `[${similarities.shape}]` : String(similarities)}`);
    }
    B = similarities.shape[0];
  }
  if (list.includes('source')) {
    if (source === undefined || source === null || typeof source.length !== 'number') throw new Error('weightingInputs: \'source\' needs a caption source per sample (1 human, 0 generated)');
    if (B !== undefined && source.length !== B) throw new Error(`weightingInputs: 'source' has ${source.length} values for a batch of ${B}`);
    B = source.length;
  }
  if (list.includes('progress') && (typeof progress !== 'number' || !(progress >= 0 && progress <= 1))) {
    throw new Error(`weightingInputs: 'progress' must be a number in [0, 1], got ${String(progress)}`);
  }
  if (B === undefined) throw new Error('weightingInputs: the batch size is unknown; give \'similarities\' or \'source\'');
  const n = B;
  if (groups !== undefined && (!(groups instanceof tf.Tensor) || groups.rank !== 1 || groups.shape[0] !== n)) {
    throw new Error(`weightingInputs: 'groups' must be a tensor [${n}]`);
  }
  return tf.tidy(() => {
    const cols: tf.Tensor[] = [];
    let s: tf.Tensor | undefined;
    let pos: tf.Tensor | undefined;
    let diag: tf.Tensor | undefined;
    if (similarities) {
      s = stopGradient(tf.cast(similarities, 'float32'));
      pos = groups ? tf.cast(tf.equal(tf.reshape(groups, [-1, 1]), tf.reshape(groups, [1, -1])), 'float32') : tf.eye(n);
      diag = tf.sum(tf.mul(s, tf.eye(n)), 1);
    }
    // Negatives only: positives pushed below every cosine.
    const hardest = (axis: number) => tf.max(tf.sub(s!, tf.mul(pos!, 4)), axis);
    for (const x of list) {
      if (x === 'cosine') cols.push(zScore(diag!));
      else if (x === 'rowMargin') cols.push(zScore(tf.sub(diag!, hardest(1))));
      else if (x === 'columnMargin') cols.push(zScore(tf.sub(diag!, hardest(0))));
      else if (x === 'rank') {
        const neg = tf.sub(1, pos!);
        const above = (axis: number, d: tf.Tensor) => tf.sum(tf.mul(neg, tf.cast(tf.greater(s!, d), 'float32')), axis);
        const rowAbove = above(1, tf.reshape(diag!, [-1, 1]));
        const colAbove = above(0, tf.reshape(diag!, [1, -1]));
        const negatives = tf.maximum(tf.add(tf.sum(neg, 1), tf.sum(neg, 0)), 1);
        cols.push(tf.div(tf.add(rowAbove, colAbove), negatives));
      } else if (x === 'source') cols.push(tf.tensor1d(Float32Array.from(source!)));
      else cols.push(tf.fill([n], progress!));
    }
    return tf.stack(cols, 1);
  });
}
