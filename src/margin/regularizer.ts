/**
 * Exclusive inter-class regulariser (angular speaker-embedding study, 2019): the mean over
 * classes of the cosine to the nearest other class, R = mean_i max_{j≠i} cos(W_i, W_j),
 * added to a head's loss as λ·R to push class centres apart.
 */
import { tf } from '../backend/tf.js';
import { l2Normalize } from '../backend/safeOps.js';
import { checkMatrix, checkTensor, oneHotFloat, piecewiseConstant } from './core.js';

type T = tf.Tensor;

/**
 * Index of each row's nearest other row by cosine, found block by block so that the C×C
 * matrix never exists whole (C = 10 000 would be 400 MB, and more kept for the backward pass).
 */
function nearestOtherRow(wHat: T, blockRows: number): T {
  const C = wHat.shape[0];
  return tf.tidy(() => {
    const parts: T[] = [];
    for (let start = 0; start < C; start += blockRows) {
      const rows = Math.min(blockRows, C - start);
      const block = tf.matMul(tf.slice(wHat, [start, 0], [rows, -1]), wHat, false, true);
      // Push each row's own column below any cosine (≥ −1).
      const self = tf.mul(oneHotFloat(tf.range(start, start + rows, 1, 'int32'), C), 3);
      parts.push(tf.argMax(tf.sub(block, self), 1));
    }
    return tf.cast(tf.concat(parts), 'float32');
  });
}

function checkWeightsMatrix(weights: unknown, fn: string): asserts weights is tf.Tensor2D {
  checkMatrix(weights, fn, 'weights');
  if (weights.shape[0] < 2) throw new Error(`${fn}: 'weights' needs at least 2 classes, got ${weights.shape[0]}`);
}

/**
 * For each class, the index of its nearest other class by cosine [C] (int32, no gradient).
 * This search is the regulariser's whole cost, O(C²·d); the indices can be kept and reused
 * for a while (MarginHead's `interClassEvery`) since they change slowly during training.
 *
 * @example const nearest = nearestOtherClass(W); interClassRegularizer(W, { nearest });
 */
export function nearestOtherClass(weights: T, opts: { blockRows?: number } = {}): tf.Tensor1D {
  const fn = 'nearestOtherClass';
  checkWeightsMatrix(weights, fn);
  const blockRows = opts.blockRows ?? 1024;
  if (!Number.isInteger(blockRows) || blockRows < 1) throw new Error(`${fn}: 'blockRows' must be a positive integer, got ${blockRows}`);
  return tf.tidy(() => {
    // Off the tape, so no C×C block is kept for a backward pass.
    const idx = piecewiseConstant([weights], (w) => nearestOtherRow(l2Normalize(w, 1), blockRows));
    return detached(tf.cast(idx, 'int32') as tf.Tensor1D);
  });
}

/**
 * A new handle on x's data with no edge on the gradient tape back to x. Indices must not lead
 * back to the weights: gather's gradient for its indices is int32, and the tape refuses any
 * non-float gradient on the path. Reading the values into a fresh tensor would cut the edge
 * too, but webgpu in Node cannot read synchronously; this shares the data instead (counted
 * like a reshape's: the backend frees it when the last handle goes), so nothing is read.
 */
function detached<R extends T>(x: R): R {
  tf.backend().incRef(x.dataId);
  return tf.engine().makeTensorFromTensorInfo({ dataId: x.dataId, shape: x.shape, dtype: x.dtype }) as R;
}

/**
 * R = mean_i max_{j≠i} cos(W_i, W_j) for class weights W [C,d], C ≥ 2.
 *
 * The arg-max is found without gradient (or taken from `nearest`), then R is the mean of the
 * cosines to those rows: the same value, and (away from ties) the same first and second
 * derivatives as the max.
 *
 * @example
 * const R = interClassRegularizer(W); // add λ·R to the loss
 */
export function interClassRegularizer(weights: T, opts: { blockRows?: number; nearest?: T } = {}): T {
  const fn = 'interClassRegularizer';
  checkWeightsMatrix(weights, fn);
  const C = weights.shape[0];
  if (opts.nearest !== undefined) {
    checkTensor(opts.nearest, fn, 'nearest');
    if (opts.nearest.dtype !== 'int32' || opts.nearest.rank !== 1 || opts.nearest.shape[0] !== C) {
      throw new Error(`${fn}: 'nearest' must be int32 [${C}] (from nearestOtherClass), got ${opts.nearest.dtype} [${opts.nearest.shape}]`);
    }
  }
  return tf.tidy(() => meanCosineTo(l2Normalize(weights, 1), opts.nearest ?? nearestOtherClass(weights, opts)));
}

/** mean_i ⟨ŵ_i, ŵ_nearest(i)⟩ on unit rows Ŵ [C,d] (checked inputs; MarginHead shares its Ŵ). */
export function meanCosineTo(wHat: T, nearest: T): T {
  return tf.tidy(() => tf.mean(tf.sum(tf.mul(wHat, tf.gather(wHat, nearest)), 1)));
}
