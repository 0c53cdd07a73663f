/**
 * Multi-head self-attention as a pure function, with key-padding and causal masks.
 *
 * Weights under `prefix`: `qkv.weight` [D, 3D] and `qkv.bias` [3D] (q, k, v side by side;
 * head h uses columns h·dₕ…(h+1)·dₕ of each), `out.weight` [D, D], `out.bias` [D].
 * Masks enter as an additive bias of −1e9 on the scores: a masked key then gets exactly
 * zero weight (e^−1e9 underflows), and a row whose keys are all masked stays finite.
 */
import { tf } from '../backend/tf.js';
import * as ops from '../backend/safeOps.js';
import { matMul } from '../backend/matMul.js';
import { linear, linearSpecs } from './layers.js';
import type { ParamSpec, Params } from './params.js';

export const MASKED_SCORE = -1e9;

export interface AttentionMask {
  /** [B, L], 1 (or true) for a real token, 0 for padding: padded keys are never attended to. */
  keyPadding?: tf.Tensor;
  /** Position i attends to keys 0…i only. */
  causal?: boolean;
}

/**
 * The additive score bias for a mask: [B, 1, L, L] (or [1, 1, L, L] with no padding
 * mask), 0 where attention is allowed; null when nothing is masked.
 *
 * @example attentionBias(2, 5, { causal: true }) // [1, 1, 5, 5], −1e9 above the diagonal
 */
export function attentionBias(batch: number, length: number, mask: AttentionMask = {}): tf.Tensor | null {
  const { keyPadding, causal = false } = mask;
  if (!keyPadding && !causal) return null;
  if (keyPadding && (keyPadding.rank !== 2 || keyPadding.shape[0] !== batch || keyPadding.shape[1] !== length)) {
    throw new Error(`attentionBias: 'keyPadding' must be [${batch}, ${length}], got [${keyPadding.shape}]`);
  }
  return tf.tidy(() => {
    let bias: tf.Tensor = tf.fill([1, 1, length, length], 0); // made on the device (tf.zeros is a host upload on webgpu)
    if (causal) {
      const i = tf.reshape(tf.range(0, length, 1, 'int32'), [length, 1]);
      const j = tf.reshape(tf.range(0, length, 1, 'int32'), [1, length]);
      const future = tf.cast(tf.greater(j, i), 'float32');
      bias = tf.add(bias, tf.reshape(tf.mul(future, MASKED_SCORE), [1, 1, length, length]));
    }
    if (keyPadding) {
      const pad = tf.sub(1, tf.cast(tf.notEqual(keyPadding, 0), 'float32'));
      bias = tf.add(bias, tf.reshape(tf.mul(pad, MASKED_SCORE), [batch, 1, 1, length]));
    }
    // Both masks on one key must not add to −2e9 and lose the float32 ordering: clip.
    return tf.maximum(bias, MASKED_SCORE);
  });
}

/**
 * Multi-head self-attention.
 *
 * @param x [B, L, D]
 * @param bias from `attentionBias` (computed once per stack), or null
 * @returns [B, L, D]
 * @example multiHeadAttention(params, 'text.blocks.0.attn', x, 8, attentionBias(B, L, { causal: true }))
 */
export function multiHeadAttention(params: Params, prefix: string, x: tf.Tensor, heads: number, bias: tf.Tensor | null = null): tf.Tensor {
  if (x.rank !== 3) throw new Error(`multiHeadAttention '${prefix}': 'x' must be [B, L, D], got [${x.shape}]`);
  const [b, l, d] = x.shape;
  if (!Number.isInteger(heads) || heads < 1 || d % heads !== 0) {
    throw new Error(`multiHeadAttention '${prefix}': 'heads' ${heads} must divide the width ${d}`);
  }
  if (bias && (bias.rank !== 4 || (bias.shape[0] !== 1 && bias.shape[0] !== b) || bias.shape[1] !== 1 || bias.shape[2] !== l || bias.shape[3] !== l)) {
    throw new Error(`multiHeadAttention '${prefix}': 'bias' must be [${b} or 1, 1, ${l}, ${l}], got [${bias.shape}]`);
  }
  const dh = d / heads;
  return tf.tidy(() => {
    const qkv = linear(params, `${prefix}.qkv`, x);
    const [q, k, v] = tf.split(qkv, 3, 2);
    const split = (t: tf.Tensor, perm: number[], shape: number[]) => tf.reshape(tf.transpose(tf.reshape(t, [b, l, heads, dh]), perm), shape);
    // k goes straight to [B·H, dₕ, L] so no product needs a transpose flag.
    const kT = split(k, [0, 2, 3, 1], [b * heads, dh, l]);
    const scores = tf.mul(matMul(split(q, [0, 2, 1, 3], [b * heads, l, dh]), kT), 1 / Math.sqrt(dh));
    let s4: tf.Tensor = tf.reshape(scores, [b, heads, l, l]);
    if (bias) s4 = tf.add(s4, bias);
    const attn = tf.reshape(ops.softmax(s4, -1), [b * heads, l, l]);
    const ctx = matMul(attn, split(v, [0, 2, 1, 3], [b * heads, l, dh]));
    const merged = tf.reshape(tf.transpose(tf.reshape(ctx, [b, heads, l, dh]), [0, 2, 1, 3]), [b, l, d]);
    return linear(params, `${prefix}.out`, merged);
  });
}

/**
 * Parameter specs of one attention module; `outStd` lets deep stacks shrink the residual branch.
 *
 * @example attentionSpecs('text.blocks.0.attn', 512, 512 ** -0.5, 0.006)
 */
export function attentionSpecs(prefix: string, width: number, inStd: number, outStd: number): ParamSpec[] {
  return [...linearSpecs(`${prefix}.qkv`, width, 3 * width, inStd), ...linearSpecs(`${prefix}.out`, width, width, outStd)];
}
