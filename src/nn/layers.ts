/**
 * Functional layers over a `Params` record. Every layer reads its weights by a name prefix
 * (`linear(params, 'text.proj', x)` reads `text.proj.weight` and `text.proj.bias`), and uses
 * only second-order-safe ops (src/backend/safeOps.ts) and builtins whose gradients use
 * their inputs, so the bilevel learner can differentiate through it twice.
 *
 * Weight layouts: a linear weight is [in, out] (y = x·W + b, the transpose of PyTorch's);
 * a layer norm has `weight` (γ) and `bias` (β).
 */
import { tf } from '../backend/tf.js';
import * as ops from '../backend/safeOps.js';
import { param, type ParamSpec, type Params } from './params.js';

export type Activation = 'gelu' | 'quickGelu';

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
 * plain products (flagged products on webgpu and tensorflow; the same values).
 *
 * @example matMul(tf.ones([2, 3]), tf.ones([3, 4])) // [2, 4] of 3s
 */
export function matMul(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  checkMatMul('matMul', a, b, false, false);
  return FLAGGED_BACKENDS.has(tf.getBackend()) ? flaggedOp(false, false)(a, b) : matMulOp(a, b);
}

/** The MLP nonlinearity by name. @example activate(x, 'quickGelu') // x·sigmoid(1.702x) */
export function activate(x: tf.Tensor, kind: Activation): tf.Tensor {
  if (kind === 'gelu') return ops.gelu(x);
  if (kind === 'quickGelu') return ops.quickGelu(x);
  throw new Error(`activate: unknown activation '${String(kind)}' (expected gelu or quickGelu)`);
}

/**
 * y = x·W (+ b) over the last axis of x, any leading shape.
 *
 * @example linear(params, 'text.proj', x, false) // x [B, 512] · text.proj.weight [512, 512]
 */
export function linear(params: Params, prefix: string, x: tf.Tensor, bias = true): tf.Tensor {
  const w = param(params, `${prefix}.weight`);
  if (w.rank !== 2) throw new Error(`linear: '${prefix}.weight' must be [in, out], got [${w.shape}]`);
  const [din, dout] = w.shape;
  const lead = x.shape.slice(0, -1);
  if (x.shape[x.rank - 1] !== din) throw new Error(`linear '${prefix}': input's last axis is ${x.shape[x.rank - 1]}, weight expects ${din}`);
  return tf.tidy(() => {
    let y = matMul(tf.reshape(x, [-1, din]), w);
    if (bias) y = tf.add(y, param(params, `${prefix}.bias`));
    return tf.reshape(y, [...lead, dout]);
  });
}

/** Layer norm over the last axis with `${prefix}.weight` and `${prefix}.bias`. @example layerNorm(params, 'video.ln_pre', x) */
export function layerNorm(params: Params, prefix: string, x: tf.Tensor, eps = 1e-5): tf.Tensor {
  return ops.layerNorm(x, param(params, `${prefix}.weight`), param(params, `${prefix}.bias`), eps);
}

/** fc1 → activation → fc2. @example mlp(params, 'text.blocks.0.mlp', x, 'gelu') */
export function mlp(params: Params, prefix: string, x: tf.Tensor, activation: Activation): tf.Tensor {
  return tf.tidy(() => linear(params, `${prefix}.fc2`, activate(linear(params, `${prefix}.fc1`, x), activation)));
}

/**
 * Cuts square images into flattened patches, row-major over the patch grid; each patch
 * vector is ordered (row in patch, column in patch, channel).
 *
 * @param images [N, H, W, C]
 * @returns [N, (H/p)·(W/p), p·p·C]
 * @example patchify(tf.zeros([2, 32, 32, 3]), 8).shape // [2, 16, 192]
 */
export function patchify(images: tf.Tensor, patch: number): tf.Tensor {
  if (images.rank !== 4) throw new Error(`patchify: 'images' must be [N, H, W, C], got [${images.shape}]`);
  const [n, h, w, c] = images.shape;
  if (!Number.isInteger(patch) || patch < 1 || h % patch !== 0 || w % patch !== 0) {
    throw new Error(`patchify: 'patch' ${patch} must divide the image size ${h}×${w}`);
  }
  const gh = h / patch;
  const gw = w / patch;
  return tf.tidy(() => {
    // Rank-4 transposes only: [N·gh, p, gw, p·C] → [N·gh, gw, p, p·C].
    const a = tf.reshape(images, [n * gh, patch, gw, patch * c]);
    const b = tf.transpose(a, [0, 2, 1, 3]);
    return tf.reshape(b, [n, gh * gw, patch * patch * c]);
  });
}

/**
 * Patch embedding without a convolution: patchify, then one matmul with
 * `${prefix}.weight` [p·p·C, D] (no bias, as CLIP).
 *
 * @returns [N, P, D]
 */
export function patchEmbed(params: Params, prefix: string, images: tf.Tensor, patch: number): tf.Tensor {
  return tf.tidy(() => linear(params, prefix, patchify(images, patch), false));
}

/** Specs of a linear layer: weight N(0, std²) [in, out], bias zeros. @example linearSpecs('video.proj', 768, 512, 768 ** -0.5, false) */
export function linearSpecs(prefix: string, din: number, dout: number, std: number, bias = true): ParamSpec[] {
  const out: ParamSpec[] = [{ name: `${prefix}.weight`, shape: [din, dout], init: { kind: 'normal', std } }];
  if (bias) out.push({ name: `${prefix}.bias`, shape: [dout], init: { kind: 'zeros' } });
  return out;
}

/** Specs of a layer norm: weight ones, bias zeros. @example layerNormSpecs('text.ln_final', 512) */
export function layerNormSpecs(prefix: string, width: number): ParamSpec[] {
  return [
    { name: `${prefix}.weight`, shape: [width], init: { kind: 'ones' } },
    { name: `${prefix}.bias`, shape: [width], init: { kind: 'zeros' } },
  ];
}
