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
import { matMul } from '../backend/matMul.js';
import { param, type ParamSpec, type Params } from './params.js';

export type Activation = 'gelu' | 'quickGelu';

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
