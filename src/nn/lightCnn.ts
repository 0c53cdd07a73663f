/**
 * A light CNN with max-feature-map activations for anti-spoofing (the LCNN of STC's ASVspoof
 * 2019 system, scaled down): 3×3 convolutions, each followed by MFM (split the channels in
 * halves and keep the elementwise max, docs/DESIGN.md §11) and 2×2 max pooling, then a mean over
 * time, a linear layer with MFM and a linear embedding. Convolutions are im2col + matmul and
 * pooling is a reshape + max of halves: wasm has no Conv2DBackpropFilter, and this needs only
 * slices, concatenations and matmuls. Parameters live under `lcnn.`.
 */
import { z } from 'zod';
import { tf } from '../backend/tf.js';
import { linear, linearSpecs } from './layers.js';
import { ParamStore, param, type ParamSpec, type Params } from './params.js';

export const lightCnnConfigSchema = z.object({
  /** Feature dimension per frame (LFCC 20 + Δ + ΔΔ = 60 by default). */
  inputDim: z.number().int().min(4).default(60),
  /** Output channels after MFM of each conv block (each conv has twice as many). */
  channels: z.array(z.number().int().min(1)).min(1).default([8, 16, 16]),
  /** Pool 2×2 after these blocks (by index). */
  poolAfter: z.array(z.number().int().min(0)).default([0, 1]),
  /** Width after the hidden linear layer's MFM. */
  hidden: z.number().int().min(1).default(32),
  embedDim: z.number().int().min(2).default(32),
});
export type LightCnnConfig = z.output<typeof lightCnnConfigSchema>;

/** Frequency bins left after the pools. */
function outBins(cfg: LightCnnConfig): number {
  let f = cfg.inputDim;
  cfg.channels.forEach((_, i) => { if (cfg.poolAfter.includes(i)) f = Math.floor(f / 2); });
  return f;
}

/** Parameter specs. @example lightCnnSpecs(lightCnnConfigSchema.parse({})) */
export function lightCnnSpecs(cfg: LightCnnConfig): ParamSpec[] {
  const specs: ParamSpec[] = [];
  let cin = 1;
  cfg.channels.forEach((c, i) => {
    specs.push(...linearSpecs(`lcnn.conv.${i}`, 9 * cin, 2 * c, Math.sqrt(2 / (9 * cin))));
    cin = c;
  });
  const flat = outBins(cfg) * cin;
  specs.push(...linearSpecs('lcnn.fc', flat, 2 * cfg.hidden, Math.sqrt(2 / flat)), ...linearSpecs('lcnn.embed', cfg.hidden, cfg.embedDim, cfg.hidden ** -0.5));
  return specs;
}

/** A parameter store with a freshly initialised network. */
export function initLightCnn(cfg: LightCnnConfig, seed = 0): ParamStore {
  return new ParamStore(seed).addAll(lightCnnSpecs(cfg));
}

/**
 * Max-feature-map over the last axis: split into halves a, b and take max(a, b).
 *
 * @example maxFeatureMap(tf.tensor2d([[1, 5, 3, 2]])) // [[3, 5]]
 */
export function maxFeatureMap(x: tf.Tensor): tf.Tensor {
  const c = x.shape[x.rank - 1];
  if (c % 2 !== 0) throw new Error(`maxFeatureMap: the last axis must be even, got ${c}`);
  return tf.tidy(() => {
    const [a, b] = tf.split(x, 2, x.rank - 1);
    return tf.maximum(a, b);
  });
}

/** 3×3 'same' convolution of x [B, H, W, C] by im2col + matmul with `${prefix}.weight` [9C, C'] and bias. */
export function conv3x3(params: Params, prefix: string, x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const [B, H, W, C] = x.shape;
    const p = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]);
    const cols: tf.Tensor[] = [];
    for (let dy = 0; dy < 3; dy++) for (let dx = 0; dx < 3; dx++) cols.push(tf.slice(p, [0, dy, dx, 0], [B, H, W, C]));
    return linear(params, prefix, tf.concat(cols, 3)) as tf.Tensor4D;
  });
}

/** 2×2 max pooling with stride 2 (an odd last row or column is dropped). */
export function maxPool2x2(x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const [B, H, W, C] = x.shape;
    const h = Math.floor(H / 2);
    const w = Math.floor(W / 2);
    const even = tf.slice(x, [0, 0, 0, 0], [B, 2 * h, 2 * w, C]);
    const [l, r] = tf.split(tf.reshape(even, [B * 2 * h, w, 2 * C]), 2, 2);
    const cols = tf.maximum(l, r); // [B·2h, w, C]
    const [t, b] = tf.split(tf.reshape(cols, [B * h, 2, w * C]), 2, 1);
    return tf.reshape(tf.maximum(t, b), [B, h, w, C]) as tf.Tensor4D;
  });
}

/**
 * Embeddings [B, embedDim] of feature maps [B, T, inputDim] (T ≥ 4).
 *
 * @example embedLightCnn(store.snapshot(), tf.zeros([2, 100, 60]), cfg).shape // [2, 32]
 */
export function embedLightCnn(params: Params, features: tf.Tensor, cfg: LightCnnConfig): tf.Tensor2D {
  if (!(features instanceof tf.Tensor) || features.rank !== 3 || features.shape[2] !== cfg.inputDim) {
    throw new Error(`embedLightCnn: 'features' must be [B, T, ${cfg.inputDim}], got ${features instanceof tf.Tensor ? `[${features.shape}]` : typeof features}`);
  }
  const minT = 2 ** cfg.poolAfter.filter((i) => i < cfg.channels.length).length;
  if ((features.shape[1] as number) < minT) throw new Error(`embedLightCnn: ${features.shape[1]} frames; the network needs at least ${minT}`);
  param(params, 'lcnn.embed.weight');
  return tf.tidy(() => {
    let x = tf.expandDims(features, 3) as tf.Tensor4D;
    cfg.channels.forEach((_, i) => {
      x = maxFeatureMap(conv3x3(params, `lcnn.conv.${i}`, x)) as tf.Tensor4D;
      if (cfg.poolAfter.includes(i)) x = maxPool2x2(x);
    });
    const [B, , F, C] = x.shape;
    const pooled = tf.reshape(tf.mean(x, 1), [B, F * C]);
    return linear(params, 'lcnn.embed', maxFeatureMap(linear(params, 'lcnn.fc', pooled))) as tf.Tensor2D;
  });
}
