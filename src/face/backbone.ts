/**
 * A small image backbone for recognition heads: patch embedding by reshape + matmul (no conv),
 * a learned positional embedding, pre-LN transformer blocks, a final layer norm, mean pooling
 * over patches, and a linear projection to the embedding. Parameters live under `backbone.`.
 */
import { z } from 'zod';
import { tf } from '../backend/tf.js';
import { layerNorm, layerNormSpecs, linear, linearSpecs, patchEmbed } from '../nn/layers.js';
import { ParamStore, param, type ParamSpec, type Params } from '../nn/params.js';
import { transformer, transformerSpecs } from '../nn/transformer.js';

export const backboneConfigSchema = z.object({
  imageSize: z.number().int().min(4).default(32),
  patch: z.number().int().min(1).default(8),
  width: z.number().int().min(4).default(64),
  layers: z.number().int().min(0).default(2),
  heads: z.number().int().min(1).default(4),
  mlpRatio: z.number().int().min(1).default(2),
  embedDim: z.number().int().min(2).default(64),
}).refine((c) => c.imageSize % c.patch === 0, { message: 'patch must divide imageSize' })
  .refine((c) => c.width % c.heads === 0, { message: 'heads must divide width' });
export type BackboneConfig = z.output<typeof backboneConfigSchema>;

/**
 * Parameter specs of the backbone.
 * @example backboneSpecs(backboneConfigSchema.parse({})).length
 */
export function backboneSpecs(cfg: BackboneConfig): ParamSpec[] {
  const patches = (cfg.imageSize / cfg.patch) ** 2;
  const w = cfg.width;
  return [
    { name: 'backbone.patch_embed.weight', shape: [cfg.patch * cfg.patch * 3, w], init: { kind: 'normal', std: (cfg.patch * cfg.patch * 3) ** -0.5 } },
    { name: 'backbone.pos_embed', shape: [patches, w], init: { kind: 'normal', std: 0.02 } },
    ...transformerSpecs('backbone.blocks', w, cfg.layers, cfg.mlpRatio),
    ...layerNormSpecs('backbone.ln_post', w),
    ...linearSpecs('backbone.proj', w, cfg.embedDim, w ** -0.5),
  ];
}

/** A parameter store holding a freshly initialised backbone. @example const store = initBackbone(cfg, 1); */
export function initBackbone(cfg: BackboneConfig, seed = 0): ParamStore {
  return new ParamStore(seed).addAll(backboneSpecs(cfg));
}

/**
 * Embeddings [N, embedDim] of images [N, S, S, 3] (already normalised, roughly zero-mean).
 * @example const emb = embedImages(store.snapshot(), tf.zeros([2, 32, 32, 3]), cfg); // [2, 64]
 */
export function embedImages(params: Params, images: tf.Tensor, cfg: BackboneConfig): tf.Tensor2D {
  const S = cfg.imageSize;
  if (images.rank !== 4 || images.shape[1] !== S || images.shape[2] !== S || images.shape[3] !== 3) {
    throw new Error(`embedImages: 'images' must be [N, ${S}, ${S}, 3], got [${images.shape}]`);
  }
  return tf.tidy(() => {
    let x = tf.add(patchEmbed(params, 'backbone.patch_embed', images, cfg.patch), param(params, 'backbone.pos_embed'));
    x = transformer(params, 'backbone.blocks', x, cfg.layers, { heads: cfg.heads, activation: 'gelu', eps: 1e-5 });
    x = layerNorm(params, 'backbone.ln_post', x);
    return linear(params, 'backbone.proj', tf.mean(x, 1)) as tf.Tensor2D;
  });
}
