/**
 * The matrix product of the models, with a gradient chosen for the backend: explicit
 * transposes on cpu/wasm, tfjs's transpose flags on webgpu and the native TensorFlow engine.
 * Both gradients are built from products of the saved inputs, so they are differentiable to
 * second order, and both give the same values; model code calls `matMul` and never asks which
 * backend runs.
 */
import { tf } from './tf.js';

function swapLast(t: tf.Tensor): tf.Tensor {
  return t.rank === 2 ? tf.transpose(t) : tf.transpose(t, [0, 2, 1]);
}

// tfjs's MatMul gradient multiplies with transposeA/transposeB flags, which the wasm
// backend runs on a slow path (about 10x a plain product here); transposing explicitly is
// cheap. The gradient is built from this same op on the saved inputs, so it stays
// differentiable (second order) and fast at every level.
const matMulOp = tf.customGrad((a, b, save) => {
  (save as tf.GradSaveFunc)([a as tf.Tensor, b as tf.Tensor]);
  return {
    value: tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D),
    gradFunc: (dy: tf.Tensor, [as, bs]: tf.Tensor[]) => [matMul(dy, swapLast(bs)), matMul(swapLast(as), dy)],
  };
});

// On webgpu the opposite holds: the matmul shader reads either operand transposed for free,
// and an explicit transpose is one more dispatch (two per product in every backward pass).
// There the gradient is written with flags, each a flagged product of the saved inputs. The
// native TensorFlow engine is the same case: its BatchMatMul takes adjoint flags at no cost,
// and each transpose is one more op launch (~30 µs) plus a copy (tiny step at batch 32:
// 89 Transpose kernels → 35, 2372 kernels → 2318 per step).
const FLAGGED_BACKENDS = new Set(['webgpu', 'tensorflow']);
const flaggedOps = new Map<string, (a: tf.Tensor, b: tf.Tensor) => tf.Tensor>();

function flaggedOp(ta: boolean, tb: boolean): (a: tf.Tensor, b: tf.Tensor) => tf.Tensor {
  const key = `${ta}|${tb}`;
  let op = flaggedOps.get(key);
  if (!op) {
    op = tf.customGrad((a, b, save) => {
      (save as tf.GradSaveFunc)([a as tf.Tensor, b as tf.Tensor]);
      return {
        value: tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D, ta, tb),
        // C = op(A)·op(B): dA and dB as products of dC and the inputs, flags chosen so no
        // operand is transposed in memory.
        gradFunc: (dy: tf.Tensor, [as, bs]: tf.Tensor[]) => {
          if (!ta && !tb) return [matMulFlagged(dy, bs, false, true), matMulFlagged(as, dy, true, false)];
          if (!ta && tb) return [matMulFlagged(dy, bs, false, false), matMulFlagged(dy, as, true, false)];
          if (ta && !tb) return [matMulFlagged(bs, dy, false, true), matMulFlagged(as, dy, false, false)];
          return [matMulFlagged(bs, dy, true, true), matMulFlagged(dy, as, true, true)];
        },
      };
    }) as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor;
    flaggedOps.set(key, op);
  }
  return op;
}

/**
 * op(a)·op(b) with tfjs's transpose flags (op = transpose of the last two axes when set), with
 * a gradient of flagged products, differentiable to second order. `matMul` uses it on webgpu and tensorflow.
 *
 * @example matMulFlagged(tf.ones([3, 2]), tf.ones([4, 3]), true, true) // [2, 4] of 3s
 */
export function matMulFlagged(a: tf.Tensor, b: tf.Tensor, transposeA = false, transposeB = false): tf.Tensor {
  checkMatMul('matMulFlagged', a, b, transposeA, transposeB);
  return flaggedOp(transposeA, transposeB)(a, b);
}

function checkMatMul(fn: string, a: tf.Tensor, b: tf.Tensor, ta: boolean, tb: boolean): void {
  if (a.rank !== b.rank || (a.rank !== 2 && a.rank !== 3)) {
    throw new Error(`${fn}: 'a' and 'b' must both be rank 2 or both rank 3, got [${a.shape}] and [${b.shape}]`);
  }
  const r = a.rank;
  const k = ta ? a.shape[r - 2] : a.shape[r - 1];
  const kb = tb ? b.shape[r - 1] : b.shape[r - 2];
  if (k !== kb || (r === 3 && a.shape[0] !== b.shape[0])) {
    throw new Error(`${fn}: shapes [${a.shape}] and [${b.shape}] do not multiply${ta || tb ? ` (transposeA ${ta}, transposeB ${tb})` : ''}`);
  }
}

/**
 * a·b for [M, K]·[K, N] or batched [B, M, K]·[B, K, N] (same batch), with a gradient of
 * plain products; on webgpu and tensorflow a gradient of flagged products (the same values).
 *
 * @example matMul(tf.ones([2, 3]), tf.ones([3, 4])) // [2, 4] of 3s
 */
export function matMul(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  checkMatMul('matMul', a, b, false, false);
  // The one backend choice of this op: see the two gradients above.
  return FLAGGED_BACKENDS.has(tf.getBackend()) ? flaggedOp(false, false)(a, b) : matMulOp(a, b);
}
