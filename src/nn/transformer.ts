/**
 * Pre-LN transformer blocks as in CLIP: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
 *
 * Names under a block prefix: `ln_1`, `attn.qkv`, `attn.out`, `ln_2`, `mlp.fc1`, `mlp.fc2`.
 * A stack under `prefix` has blocks `${prefix}.0`, `${prefix}.1`, ….
 */
import { tf } from '../backend/tf.js';
import { attentionBias, attentionSpecs, multiHeadAttention, type AttentionMask } from './attention.js';
import { layerNorm, layerNormSpecs, linearSpecs, mlp, type Activation } from './layers.js';
import type { ParamSpec, Params } from './params.js';

export interface BlockOptions {
  heads: number;
  activation: Activation;
  eps: number;
}

/**
 * One pre-LN block; `bias` from `attentionBias`. x: [B, L, D] → [B, L, D].
 *
 * @example transformerBlock(params, 'video.blocks.0', x, { heads: 12, activation: 'quickGelu', eps: 1e-5 })
 */
export function transformerBlock(params: Params, prefix: string, x: tf.Tensor, opts: BlockOptions, bias: tf.Tensor | null = null): tf.Tensor {
  return tf.tidy(() => {
    const h = tf.add(x, multiHeadAttention(params, `${prefix}.attn`, layerNorm(params, `${prefix}.ln_1`, x, opts.eps), opts.heads, bias));
    return tf.add(h, mlp(params, `${prefix}.mlp`, layerNorm(params, `${prefix}.ln_2`, h, opts.eps), opts.activation));
  });
}

/**
 * `layers` blocks in sequence under `${prefix}.0` …; the mask's bias is built once.
 *
 * @example transformer(params, 'text.blocks', x, 12, { heads: 8, activation: 'quickGelu', eps: 1e-5 }, { causal: true })
 */
export function transformer(params: Params, prefix: string, x: tf.Tensor, layers: number, opts: BlockOptions, mask: AttentionMask = {}): tf.Tensor {
  if (x.rank !== 3) throw new Error(`transformer '${prefix}': 'x' must be [B, L, D], got [${x.shape}]`);
  if (!Number.isInteger(layers) || layers < 0) throw new Error(`transformer '${prefix}': 'layers' must be a non-negative integer, got ${layers}`);
  return tf.tidy(() => {
    const [b, l] = x.shape as number[];
    const bias = attentionBias(b, l, mask);
    let h = x;
    for (let i = 0; i < layers; i++) h = transformerBlock(params, `${prefix}.${i}`, h, opts, bias);
    return layers === 0 ? tf.clone(h) : h;
  });
}

/**
 * Specs of a stack with CLIP's initialisation: attention in-projection std D^−½, the two
 * residual outputs (2·layers·D)^−½, MLP fc1 (2D)^−½; biases zero, norms (1, 0).
 *
 * @example transformerSpecs('text.blocks', 512, 12, 4).length // 12 blocks × 12 tensors
 */
export function transformerSpecs(prefix: string, width: number, layers: number, mlpRatio: number): ParamSpec[] {
  const attnStd = width ** -0.5;
  const projStd = width ** -0.5 * (2 * Math.max(layers, 1)) ** -0.5;
  const fcStd = (2 * width) ** -0.5;
  const out: ParamSpec[] = [];
  for (let i = 0; i < layers; i++) {
    const p = `${prefix}.${i}`;
    out.push(
      ...layerNormSpecs(`${p}.ln_1`, width),
      ...attentionSpecs(`${p}.attn`, width, attnStd, projStd),
      ...layerNormSpecs(`${p}.ln_2`, width),
      ...linearSpecs(`${p}.mlp.fc1`, width, mlpRatio * width, fcStd),
      ...linearSpecs(`${p}.mlp.fc2`, mlpRatio * width, width, projStd),
    );
  }
  return out;
}
