/**
 * The margin core: everything the margin losses share.
 *
 * Input checks, normalisation, cosines, angles (with the cosine clamped to [−1+ε, 1−ε]
 * before acos), target masks, scaling, per-row margins and the detach flag live here. A loss
 * family states only its margin as a {@link MarginSpec}: the new cosine of the target entry
 * (and, rarely, of the other entries). The core turns it into
 *
 *   logits_j = s · (cos θ_j + Δ_j),   Δ = (new cosine − cos θ) on the entries the spec touches,
 *
 * where Δ is computed off the gradient tape when `detachMargin` is set: the forward pass has
 * the margin, the backward pass is plain normalised softmax ("characteristic gradient
 * detachment", SphereFace-R; also what InsightFace's ArcFace does).
 *
 * Everything here is second-order safe (the bilevel meta-learner differentiates the losses
 * twice): only the ops of `backend/safeOps` and tfjs builtins whose gradients use their
 * inputs. Clamping is `minimum(maximum(·))` because `clipByValue`'s gradient calls
 * `logicalAnd`, which has no gradient of its own; data-dependent masks go through
 * {@link piecewiseConstant} instead of `where` for the same reason.
 */
import { tf } from '../backend/tf.js';
import { acos, exp } from '../backend/safeOps.js';

type T = tf.Tensor;

/** ε of the clamp cos θ ∈ [−1+ε, 1−ε] before acos (acos' = −1/√(1−c²) ≈ −707 at the edge). */
export const COS_EPS = 1e-6;

/** A scale (or any per-loss coefficient) given as a number, a scalar tensor or one value per row [B]. */
export type RowScale = number | tf.Tensor;

// ---------------------------------------------------------------------------------------
// Checks. Each names the function and the argument, and says what was expected.

export function checkTensor(x: unknown, fn: string, arg: string): asserts x is T {
  if (!(x instanceof tf.Tensor)) {
    throw new Error(`${fn}: '${arg}' must be a tf.Tensor, got ${x === null ? 'null' : typeof x}`);
  }
}

/** A float matrix [rows, cols]; `rows`/`cols` pin a size when given. */
export function checkMatrix(x: unknown, fn: string, arg: string, rows?: number, cols?: number): asserts x is tf.Tensor2D {
  checkTensor(x, fn, arg);
  const want = `[${rows ?? 'N'}, ${cols ?? 'D'}]`;
  if (x.rank !== 2) throw new Error(`${fn}: '${arg}' must be a matrix ${want}, got shape [${x.shape}]`);
  if ((rows !== undefined && x.shape[0] !== rows) || (cols !== undefined && x.shape[1] !== cols)) {
    throw new Error(`${fn}: '${arg}' must have shape ${want}, got [${x.shape}]`);
  }
  if (x.dtype !== 'float32') throw new Error(`${fn}: '${arg}' must be float32, got ${x.dtype}`);
}

/** A float vector of length n. */
export function checkVector(x: unknown, fn: string, arg: string, n: number): asserts x is tf.Tensor1D {
  checkTensor(x, fn, arg);
  if (x.rank !== 1 || x.shape[0] !== n) throw new Error(`${fn}: '${arg}' must have shape [${n}], got [${x.shape}]`);
  if (x.dtype !== 'float32') throw new Error(`${fn}: '${arg}' must be float32, got ${x.dtype}`);
}

/**
 * int32 labels [n]: shape and dtype. Their values are the caller's to check, once, with
 * {@link assertLabels} (ops never read back).
 */
export function checkLabels(labels: unknown, fn: string, n: number, arg = 'labels'): asserts labels is tf.Tensor1D {
  checkTensor(labels, fn, arg);
  if (labels.rank !== 1 || labels.shape[0] !== n) {
    throw new Error(`${fn}: '${arg}' must have shape [${n}] (one label per row), got [${labels.shape}]`);
  }
  if (labels.dtype !== 'int32') throw new Error(`${fn}: '${arg}' must be int32, got ${labels.dtype}`);
}

/**
 * The value checks the ops leave to their caller, the same on every backend: every label in
 * [0, numClasses), read asynchronously. Inside an op an out-of-range label one-hots to a zero
 * row (a wrong loss, not a fault), so data from outside should pass here first.
 *
 * @example await assertLabels(labels, 10, 'train', 'labels');
 */
export async function assertLabels(labels: T, numClasses: number, fn: string, arg = 'labels'): Promise<void> {
  checkTensor(labels, fn, arg);
  const v = await labels.data();
  for (let i = 0; i < v.length; i++) {
    if (!(v[i] >= 0 && v[i] < numClasses) || !Number.isInteger(v[i])) {
      throw new Error(`${fn}: '${arg}'[${i}] = ${v[i]} is out of range; labels must be integers in [0, ${numClasses})`);
    }
  }
}

/**
 * Every entry finite, read asynchronously: the other value check the ops leave to their
 * caller (inside an op a non-finite input gives a non-finite loss, which the trainer's
 * NonFiniteGuard skips on every backend).
 *
 * @example await assertFinite(embeddings, 'train', 'embeddings');
 */
export async function assertFinite(x: T, fn: string, arg: string): Promise<void> {
  checkTensor(x, fn, arg);
  const v = await x.data();
  let i = 0;
  while (i < v.length && Number.isFinite(v[i])) i++;
  if (i === v.length) return;
  const cols = x.rank === 2 ? x.shape[1] as number : 0;
  const where = cols ? `[${Math.floor(i / cols)}, ${i % cols}]` : `[${i}]`;
  throw new Error(`${fn}: '${arg}' must be finite, found ${v[i]} at ${where}`);
}

/** Checks shared by the cosine-input functions: cosine [B,C] float32, labels int32 [B]. */
export function checkCosineAndLabels(cosine: unknown, labels: unknown, fn: string): asserts cosine is tf.Tensor2D {
  checkMatrix(cosine, fn, 'cosine');
  checkLabels(labels, fn, cosine.shape[0]);
}

/** A finite number, optionally within [lo, hi]. */
export function checkNumber(x: unknown, fn: string, arg: string, lo = -Infinity, hi = Infinity): asserts x is number {
  if (typeof x !== 'number' || !Number.isFinite(x) || x < lo || x > hi) {
    throw new Error(`${fn}: '${arg}' must be a finite number in [${lo}, ${hi}], got ${String(x)}`);
  }
}

/** A number, a scalar tensor, or (when `rows` is given) a float tensor [rows]. */
export function checkRowScale(x: unknown, fn: string, arg: string, rows?: number): asserts x is RowScale {
  if (typeof x === 'number') {
    checkNumber(x, fn, arg);
    return;
  }
  checkTensor(x, fn, arg);
  if (x.dtype !== 'float32') throw new Error(`${fn}: '${arg}' must be float32, got ${x.dtype}`);
  const scalar = x.size === 1 && x.rank <= 1;
  const perRow = rows !== undefined && x.rank === 1 && x.shape[0] === rows;
  if (!scalar && !perRow) {
    throw new Error(`${fn}: '${arg}' must be a number, a scalar tensor${rows !== undefined ? ` or a tensor [${rows}]` : ''}, got shape [${x.shape}]`);
  }
}

// ---------------------------------------------------------------------------------------
// Geometry.

/** cos clamped to [−1+ε, 1−ε], so acos and its derivative stay finite. */
export function clampCos(c: T): T {
  return tf.minimum(tf.maximum(c, -1 + COS_EPS), 1 - COS_EPS);
}

/** θ = acos(clamp(cos θ)). */
export function angleOf(c: T): T {
  return acos(clampCos(c));
}

/** Row L2 norms √(Σx² + ε) [B] (tf.norm's gradient is not second-order safe). */
export function rowNorm(x: T): T {
  return tf.sqrt(tf.add(tf.sum(tf.square(x), 1), 1e-12));
}

/**
 * A function of x that is constant almost everywhere (a mask, a piece index): its value is
 * computed off the gradient tape and its gradient is zero, so neither the first nor the
 * second backward pass meets ops without gradients (comparisons, logical ops, floor, mod).
 */
export function piecewiseConstant(inputs: T[], f: (...xs: T[]) => T): T {
  const op = tf.customGrad((...args: unknown[]) => {
    const xs = args.slice(0, inputs.length) as T[];
    // The gradient runs after the caller's tidy scopes have disposed the inputs, so it may
    // only use their shapes: zerosLike(x) reads x's data handle, which the native backend
    // refuses for a disposed tensor (wasm and cpu happen to read only the shape).
    const shapes = xs.map((x) => x.shape);
    return { value: f(...xs), gradFunc: () => shapes.map((s) => tf.fill(s, 0, 'float32')) };
  });
  return (op as (...xs: T[]) => T)(...inputs);
}

/** 1 where x > threshold, else 0 (float), gradient-free. */
export function indicator(x: T, threshold: number | T): T {
  const thr = typeof threshold === 'number' ? tf.scalar(threshold) : threshold;
  return piecewiseConstant([x, thr], (a, b) => tf.cast(tf.greater(a, b), 'float32'));
}

/**
 * One-hot rows as float32. Built as int32 and cast: tfjs-backend-wasm 4.22's OneHot kernel
 * returns all zeros when asked for float32 directly.
 */
export function oneHotFloat(labels: T, depth: number): T {
  return tf.cast(tf.oneHot(labels as tf.Tensor1D, depth), 'float32');
}

/** The scale as a tensor that broadcasts against [B, C]: a scalar, or [B, 1] for per-row scales. */
export function scaleColumn(scale: RowScale): T {
  if (typeof scale === 'number') return tf.scalar(scale);
  return scale.rank === 1 && scale.size > 1 ? tf.expandDims(scale, 1) : tf.reshape(scale, []);
}

/** The same scale shaped to multiply a per-row vector [B]. */
function scaleRow(scale: RowScale): T {
  if (typeof scale === 'number') return tf.scalar(scale);
  return scale.rank === 1 && scale.size > 1 ? scale : tf.reshape(scale, []);
}

// ---------------------------------------------------------------------------------------
// The margin hook and its application.

/** What a loss family states about its margin. Each hook returns a new cosine. */
export interface MarginSpec {
  /**
   * New cosine of each row's target entry. `cos` [B] is the target cosine, `theta()` its
   * clamped angle (computed only if asked), `labels` [B] the target classes.
   */
  target?: (cos: T, theta: () => T, labels: T) => T;
  /**
   * New cosine of every non-target entry [B, C]. Costs a C-wide pass (and a C-wide acos if
   * it asks for θ); only SphereFace-R v2 needs it.
   */
  others?: (cos: T, theta: () => T) => T;
}

export interface ApplyMarginOptions {
  /** s: a number, a scalar tensor (learnable), or one value per row [B] (‖x‖ for SphereFace). */
  scale: RowScale;
  /** Forward with the margin, backward as if there were none. */
  detachMargin?: boolean;
}

/**
 * Δ = newCos(c) − c. Detached, it is computed off the gradient tape: the backward pass then
 * skips the margin's ops entirely (a stopGradient would still push zeros back through them,
 * a C-wide acos's gradient included).
 */
export function marginTerm(c: T, newCos: (c: T) => T, detach = false): T {
  return detach ? piecewiseConstant([c], (x) => tf.sub(newCos(x), x)) : tf.sub(newCos(c), c);
}

/**
 * logits = s·(cos + Δ) for one target class per row, and the target logit itself [B] (the
 * cross-entropy needs it and taking it from the logits again would cost another C-wide pass).
 * No argument checks: the public wrappers check and then call this.
 */
export function applyMargin(cosine: T, labels: T, spec: MarginSpec, opts: ApplyMarginOptions): { logits: T; targetLogit: T } {
  return tf.tidy(() => {
    const numClasses = cosine.shape[1] as number;
    const oneHot = oneHotFloat(labels, numClasses);
    const cosY = tf.sum(tf.mul(cosine, oneHot), 1);

    let adjusted = cosine;
    let targetCos = cosY;
    if (spec.target) {
      const target = spec.target;
      const dy = marginTerm(cosY, (c) => target(c, () => angleOf(c), labels), opts.detachMargin);
      adjusted = tf.add(adjusted, tf.mul(oneHot, tf.expandDims(dy, 1)));
      targetCos = tf.add(cosY, dy);
    }
    if (spec.others) {
      const others = spec.others;
      const d = marginTerm(cosine, (c) => others(c, () => angleOf(c)), opts.detachMargin);
      adjusted = tf.add(adjusted, tf.mul(tf.sub(1, oneHot), d));
    }
    return {
      logits: tf.mul(adjusted, scaleColumn(opts.scale)),
      targetLogit: tf.mul(targetCos, scaleRow(opts.scale)),
    };
  });
}

/**
 * logits = s·(cos + Δ) where Δ is applied on every entry of a 0/1 `mask` [B, C] (several
 * positives per row: SAM with several captions per video). The spec's `target` hook is used
 * elementwise on the whole matrix.
 */
export function applyMaskedMargin(cosine: T, mask: T, spec: MarginSpec, opts: ApplyMarginOptions): T {
  return tf.tidy(() => {
    if (!spec.target) return tf.mul(cosine, scaleColumn(opts.scale));
    const target = spec.target;
    const delta = tf.mul(mask, marginTerm(cosine, (c) => target(c, () => angleOf(c), mask), opts.detachMargin));
    return tf.mul(tf.add(cosine, delta), scaleColumn(opts.scale));
  });
}

/** Shifted logits below this contribute e^−60 ≈ 1e−26 each: invisible in a float32 sum. */
const FLUSH_BELOW = -60;

/**
 * log Σ e^x along `axis` (max-shifted, the shift gradient-free) with entries more than 60
 * below the max held at −60. The value is unchanged in float32, and their softmax weights,
 * instead of being subnormal (under 1.2e−38, which large scales such as s = 100 produce
 * routinely for well-separated pairs), become exactly 0 in the gradient: wasm cannot flush
 * subnormals, and a backward matmul fed with a few hundred of them ran 5× slower here.
 */
export function logSumExpFlush(x: T, axis = -1): T {
  return tf.tidy(() => {
    // The shift, like Δ when detached, is computed off the tape: no Max gradient to run.
    const m = piecewiseConstant([x], (t) => tf.max(t, axis, true));
    const shifted = tf.maximum(tf.sub(x, m), FLUSH_BELOW);
    return tf.add(tf.squeeze(m, [axis < 0 ? axis + x.rank : axis]), tf.log(tf.sum(exp(shifted), axis)));
  });
}

/** Softmax cross-entropy from the logits and the target logit: logSumExp(logits) − logit_y, along `axis`. */
export function targetCrossEntropy(logits: T, targetLogit: T, axis = 1): T {
  return tf.tidy(() => tf.sub(logSumExpFlush(logits, axis), targetLogit));
}

/**
 * Cross-entropy with several positives (0/1 `mask`, at least one per row along `axis`):
 *   ℓ = −log Σ_{j∈P} e^{z_j} + log Σ_j e^{z_j},
 * i.e. minus the log of the total softmax probability of the positives. With one positive it
 * is the ordinary cross-entropy.
 */
export function multiPositiveCrossEntropy(logits: T, mask: T, axis = 1): T {
  return tf.tidy(() => {
    // Non-positives go to −1e30, which logSumExpFlush holds at 60 below the row's max: e^−60
    // each to the sum, and no gradient.
    const masked = tf.add(tf.mul(logits, mask), tf.mul(tf.sub(1, mask), -1e30));
    return tf.sub(logSumExpFlush(logits, axis), logSumExpFlush(masked, axis));
  });
}

/** mean(ℓ), or Σ wᵢℓᵢ when per-sample weights are given (the meta-learner normalises them). */
export function reduceLoss(perSample: T, weights?: T): T {
  return weights ? tf.sum(tf.mul(perSample, weights)) : tf.mean(perSample);
}

/** Checks optional per-sample weights [B]. */
export function checkWeights(weights: unknown, fn: string, n: number, arg = 'weights'): void {
  if (weights === undefined) return;
  checkVector(weights, fn, arg, n);
}
