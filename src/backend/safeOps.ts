/**
 * Second-order-safe ops.
 *
 * tfjs differentiates twice (`tf.grad(tf.grad(f))`) only through ops whose gradient is built
 * from their *inputs*. exp, softmax, logSoftmax, sigmoid, tanh, elu, pow, rsqrt and max either
 * throw or silently lose terms on the second pass because their gradient reuses the saved
 * *output*, which the outer tape cannot trace back to the input. Each op here is either a
 * `tf.customGrad` whose gradient recomputes what it needs from the input (closure over the
 * original tensor, so the outer tape sees the connection) or a composition of such ops and
 * input-only builtins (add, mul, div, sqrt, log, sum, matMul, cos, acos, erf, relu, …).
 *
 * Everything between parameters and a loss that the bilevel meta-learner differentiates
 * must come from here or from input-only builtins. test/safeOps.test.ts checks first and
 * second derivatives of each against central finite differences.
 *
 * @example
 * const f = (x: tf.Tensor) => tf.sum(exp(x));
 * tf.grad((x) => tf.sum(tf.grad(f)(x)))(tf.tensor1d([0, 1])); // ≈ [1, e], tf.exp would throw
 */
import { tf } from './tf.js';

type T = tf.Tensor;

function checkTensor(x: unknown, op: string, arg = 'x'): asserts x is T {
  if (!(x instanceof tf.Tensor)) throw new Error(`${op}: '${arg}' must be a tf.Tensor, got ${typeof x}`);
}

function normAxis(axis: number, rank: number, op: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`${op}: axis ${axis} is out of range for a rank-${rank} tensor`);
  return a;
}

const stopGradientOp = tf.customGrad((x) => ({
  value: tf.clone(x as T),
  gradFunc: (dy: T) => tf.zerosLike(dy),
}));

/** Identity forward, zero gradient (the margin detach flag, logsumexp shifts). */
export function stopGradient<R extends T>(x: R): R {
  checkTensor(x, 'stopGradient');
  return stopGradientOp(x) as R;
}

// Each gradient uses the input saved by `save` (tfjs keeps a clone that outlives the
// caller's tidy scopes and stays on the outer tape), never the forward's output.
const expOp = tf.customGrad((x, save) => {
  (save as tf.GradSaveFunc)([x as T]);
  return { value: tf.exp(x as T), gradFunc: (dy: T, [xs]: T[]) => tf.mul(dy, tf.exp(xs)) };
});

/** e^x; its gradient recomputes e^x from x. */
export function exp(x: T): T {
  checkTensor(x, 'exp');
  return expOp(x);
}

const sigmoidOp = tf.customGrad((x, save) => {
  (save as tf.GradSaveFunc)([x as T]);
  return {
    value: tf.sigmoid(x as T),
    gradFunc: (dy: T, [xs]: T[]) => {
      const s = tf.sigmoid(xs);
      return tf.mul(dy, tf.mul(s, tf.sub(1, s)));
    },
  };
});

/** Logistic sigmoid 1/(1+e^−x). */
export function sigmoid(x: T): T {
  checkTensor(x, 'sigmoid');
  return sigmoidOp(x);
}

const softplusOp = tf.customGrad((x, save) => {
  (save as tf.GradSaveFunc)([x as T]);
  return { value: tf.softplus(x as T), gradFunc: (dy: T, [xs]: T[]) => tf.mul(dy, sigmoid(xs)) };
});

/** log(1+e^x), computed stably; derivative sigmoid(x). */
export function softplus(x: T): T {
  checkTensor(x, 'softplus');
  return softplusOp(x);
}

const tanhOp = tf.customGrad((x, save) => {
  (save as tf.GradSaveFunc)([x as T]);
  return {
    value: tf.tanh(x as T),
    gradFunc: (dy: T, [xs]: T[]) => tf.mul(dy, tf.sub(1, tf.square(tf.tanh(xs)))),
  };
});

/** Hyperbolic tangent. */
export function tanh(x: T): T {
  checkTensor(x, 'tanh');
  return tanhOp(x);
}

/**
 * arccos as atan2(√((1−x)(1+x)), x), the form `acos` uses on webgpu. tfjs-backend-webgpu's
 * Acos is WGSL's acos, whose precision the WGSL spec leaves to the driver: on Mesa lavapipe it
 * is off by up to 1.6e-4 rad over [−1, 1] (wasm: 2e-7), this form by 3.3e-6. SAM and every
 * additive-angle head take θ = acos(cos θ), so the error lands in every logit.
 *
 * @example acosViaAtan2(tf.tensor1d([0.5])) // ≈ π/3
 */
export function acosViaAtan2(x: T): T {
  checkTensor(x, 'acosViaAtan2');
  return tf.tidy(() => tf.atan2(tf.sqrt(tf.mul(tf.sub(1, x), tf.add(1, x))), x));
}

const acosOp = tf.customGrad((x, save) => {
  (save as tf.GradSaveFunc)([x as T]);
  return {
    // cpu/wasm keep tf.acos (correctly rounded there, and the trained figures depend on it).
    value: tf.getBackend() === 'webgpu' ? acosViaAtan2(x as T) : tf.acos(x as T),
    gradFunc: (dy: T, [xs]: T[]) => tf.neg(tf.div(dy, tf.sqrt(tf.sub(1, tf.square(xs))))),
  };
});

/**
 * arccos. The derivative −1/√(1−x²) is infinite at ±1: callers clamp to [−1+ε, 1−ε]
 * first (the margin core does).
 */
export function acos(x: T): T {
  checkTensor(x, 'acos');
  return acosOp(x);
}

/** Max-reduction whose gradient goes to the arg-max entries (shared equally between ties). */
export function maxReduce(x: T, axis = -1, keepDims = false): T {
  checkTensor(x, 'maxReduce');
  const a = normAxis(axis, x.rank, 'maxReduce');
  const op = tf.customGrad((xi, save) => {
    (save as tf.GradSaveFunc)([xi as T]);
    return {
      value: tf.max(xi as T, a, keepDims),
      gradFunc: (dy: T, [xs]: T[]) => {
        const mask = tf.cast(tf.equal(xs, tf.max(xs, a, true)), 'float32');
        const share = tf.div(mask, tf.sum(mask, a, true));
        return tf.mul(keepDims ? dy : tf.expandDims(dy, a), share);
      },
    };
  });
  return op(x);
}

/**
 * The max along `axis` (kept dims) as a constant shift: computed inside a custom op with a
 * zero gradient, so backprop never builds tf.max's arg-max mask (a broadcast Equal that is
 * slow on wasm) for a term whose gradient cancels anyway.
 */
function maxShift(x: T, axis: number): T {
  const op = tf.customGrad((xi, save) => {
    (save as tf.GradSaveFunc)([xi as T]);
    return { value: tf.max(xi as T, axis, true), gradFunc: (_dy: T, [xs]: T[]) => tf.zerosLike(xs) };
  });
  return op(x);
}

/**
 * log Σ e^x along `axis`, shifted by the (gradient-free) max for stability.
 *
 * @example logSumExp(tf.tensor1d([0, Math.log(3)])) // ≈ log 4
 */
export function logSumExp(x: T, axis = -1, keepDims = false): T {
  checkTensor(x, 'logSumExp');
  const a = normAxis(axis, x.rank, 'logSumExp');
  return tf.tidy(() => {
    const m = maxShift(x, a);
    const lse = tf.add(m, tf.log(tf.sum(exp(tf.sub(x, m)), a, true)));
    return keepDims ? lse : tf.squeeze(lse, [a]);
  });
}

/** x − logSumExp(x) along `axis`. */
export function logSoftmax(x: T, axis = -1): T {
  checkTensor(x, 'logSoftmax');
  return tf.tidy(() => tf.sub(x, logSumExp(x, axis, true)));
}

/** e^(logSoftmax(x)). */
export function softmax(x: T, axis = -1): T {
  checkTensor(x, 'softmax');
  return tf.tidy(() => exp(logSoftmax(x, axis)));
}

/**
 * Per-sample cross-entropy −log softmax(logits)[label] for integer labels.
 *
 * @param logits [B, C] float
 * @param labels [B] int32 in [0, C)
 * @returns [B] losses
 * @example softmaxCrossEntropy(tf.tensor2d([[0, 0]]), tf.tensor1d([1], 'int32')) // [log 2]
 */
export function softmaxCrossEntropy(logits: T, labels: T): T {
  checkTensor(logits, 'softmaxCrossEntropy', 'logits');
  checkTensor(labels, 'softmaxCrossEntropy', 'labels');
  if (logits.rank !== 2) throw new Error(`softmaxCrossEntropy: 'logits' must be [B, C], got shape [${logits.shape}]`);
  if (labels.rank !== 1 || labels.shape[0] !== logits.shape[0]) {
    throw new Error(`softmaxCrossEntropy: 'labels' must be [${logits.shape[0]}], got shape [${labels.shape}]`);
  }
  if (labels.dtype !== 'int32') throw new Error(`softmaxCrossEntropy: 'labels' must be int32, got ${labels.dtype}`);
  return tf.tidy(() => {
    const oneHot = tf.oneHot(labels as tf.Tensor1D, logits.shape[1] as number);
    return tf.neg(tf.sum(tf.mul(oneHot, logSoftmax(logits, 1)), 1));
  });
}

/** x^n for a small non-negative integer n by repeated products (tf.pow is not second-order safe). */
export function powInt(x: T, n: number): T {
  checkTensor(x, 'powInt');
  if (!Number.isInteger(n) || n < 0 || n > 64) throw new Error(`powInt: 'n' must be an integer in [0, 64], got ${n}`);
  return tf.tidy(() => {
    let out: T = tf.onesLike(x);
    let base = x;
    let k = n;
    while (k > 0) {
      if (k & 1) out = tf.mul(out, base);
      k >>= 1;
      if (k > 0) base = tf.mul(base, base);
    }
    return out;
  });
}

/** Exact GELU: x·Φ(x) = ½x(1 + erf(x/√2)). */
export function gelu(x: T): T {
  checkTensor(x, 'gelu');
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2)))));
}

/** CLIP's "quick GELU": x·sigmoid(1.702x). */
export function quickGelu(x: T): T {
  checkTensor(x, 'quickGelu');
  return tf.tidy(() => tf.mul(x, sigmoid(tf.mul(x, 1.702))));
}

/**
 * Layer normalisation over the last axis: (x − μ)/√(σ² + ε)·γ + β, σ² the biased variance.
 * Built from sub, mean, square, sqrt and div, whose gradients use inputs only.
 */
export function layerNorm(x: T, gamma: T, beta: T, eps = 1e-5): T {
  checkTensor(x, 'layerNorm');
  checkTensor(gamma, 'layerNorm', 'gamma');
  checkTensor(beta, 'layerNorm', 'beta');
  const d = x.shape[x.rank - 1];
  if (gamma.size !== d || beta.size !== d) {
    throw new Error(`layerNorm: 'gamma' and 'beta' must have ${d} elements (last axis of x), got ${gamma.size} and ${beta.size}`);
  }
  return tf.tidy(() => {
    const mu = tf.mean(x, -1, true);
    const xc = tf.sub(x, mu);
    const variance = tf.mean(tf.square(xc), -1, true);
    const xhat = tf.div(xc, tf.sqrt(tf.add(variance, eps)));
    return tf.add(tf.mul(xhat, gamma), beta);
  });
}

/** Row-wise L2 normalisation x/√(Σx² + ε) along `axis` (tf.norm's gradient is not used). */
export function l2Normalize(x: T, axis = -1, eps = 1e-12): T {
  checkTensor(x, 'l2Normalize');
  const a = normAxis(axis, x.rank, 'l2Normalize');
  return tf.tidy(() => tf.div(x, tf.sqrt(tf.add(tf.sum(tf.square(x), a, true), eps))));
}
