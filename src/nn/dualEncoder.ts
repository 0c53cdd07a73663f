/**
 * The video-text dual encoder (docs/DESIGN.md §4) as pure functions over a `Params` record.
 *
 * Video: frames [B, T, H, W, 3] → patches · W (no conv; with `vision.motion`, plus the patches
 * of the difference to the next frame · W_motion; with `vision.stem: 'conv'`, two stride-2 3×3
 * convolutions of the frame first) + class token + positional
 * embedding → ln_pre → ViT blocks per frame (T folded into the batch; with `vision.attention:
 * 'joint'`, over all frames' tokens of a clip at once, each frame's marked by a time embedding) → ln_post on the
 * class token → temporal pooling (mean, or a temporal transformer then the mean) →
 * `video.proj`. Text: ids [B, L] → token + positional embedding → transformer (causal or
 * not) → pooling (EOS: last real token; CLS: first) → ln_final → `text.proj`.
 * Plus the scalar `logit_scale`, which the encoders do not use (the loss does).
 *
 * Parameter names (D_v, D_t the widths, E the embedding width, P patches, p patch side):
 *   video.patch_embed.weight [p·p·3, D_v]   video.class_embedding [D_v]   video.pos_embed [1+P, D_v]
 *   video.ln_pre.{weight,bias}   video.blocks.N.{ln_1,attn.qkv,attn.out,ln_2,mlp.fc1,mlp.fc2}.*
 *   video.ln_post.*   video.temporal.pos_embed [maxFrames, D_v]   video.temporal.blocks.N.*
 *   video.temporal.motion_embed.weight [p·p·3, D_v] (vision.motion)
 *   video.time_embed [maxFrames, D_v] (vision.attention 'joint')
 *   video.stem.conv1.{weight [3, 3, 3, D_v/4], bias}   video.stem.conv2.{weight [3, 3, D_v/4, D_v/2], bias}
 *     and video.patch_embed.weight [(p/4)²·D_v/2, D_v] (vision.stem 'conv')
 *   video.proj.weight [D_v, E]
 *   text.token_embed.weight [V, D_t]   text.pos_embed [context, D_t]   text.blocks.N.*
 *   text.ln_final.*   text.proj.weight [D_t, E]   logit_scale []
 */
import { tf } from '../backend/tf.js';
import type { DualEncoderConfig } from './configs.js';
import { validateConfig } from './configs.js';
import { activate, layerNorm, layerNormSpecs, linear, linearSpecs, patchEmbed } from './layers.js';
import { countParams, param, ParamStore, type ParamSpec, type Params } from './params.js';
import { transformer, transformerSpecs, type BlockOptions, type Recompute } from './transformer.js';

/** Channels of the convolutional stem after its two convolutions: D_v/4, then D_v/2. */
function convStemShape(cfg: DualEncoderConfig): { c1: number; c2: number } {
  const w = cfg.vision.width;
  return { c1: Math.max(1, Math.floor(w / 4)), c2: Math.max(1, Math.floor(w / 2)) };
}

/**
 * Forward differences f[k+1] − f[k] of frames [B, T, H, W, C] as [B, T, H·W·C]; the last frame
 * takes the one before it, so every frame carries the motion with the same sign convention
 * (at least two frames). The slices run on a rank-3 view: wasm slices rank ≤ 4 by rows but
 * rank 5 element by element in JavaScript, which made a training step about three times slower.
 * With `input: 'foreground'` the differences are of each frame's distance to the clip's mean
 * frame instead (docs/DESIGN.md §4).
 */
function frameDifferences(frames: tf.Tensor, input: 'difference' | 'foreground' = 'difference'): tf.Tensor {
  const [b, t, h, w, c] = frames.shape;
  const pixels = h * w * c;
  let flat = tf.reshape(frames, [b, t, pixels]);
  // `foreground`: |f[k] − mean over the clip's frames|, where a static background cancels and
  // a moving object leaves its unsigned footprint; its differences are then positive where the
  // object arrives and negative where it left, whatever its contrast with the background.
  if (input === 'foreground') flat = tf.abs(tf.sub(flat, tf.mean(flat, 1, true)));
  const d = tf.sub(tf.slice(flat, [0, 1, 0], [b, t - 1, pixels]), tf.slice(flat, [0, 0, 0], [b, t - 1, pixels]));
  return tf.concat([d, tf.slice(d, [0, t - 2, 0], [b, 1, pixels])], 1);
}

/**
 * One 3×3 'same' convolution of stride 2 with bias and the model's activation. Its second
 * order (the bilevel step through the stem) uses the filter gradient's gradient that
 * src/backend/tf.ts registers.
 */
function stemConv(params: Params, prefix: string, x: tf.Tensor4D, cfg: DualEncoderConfig): tf.Tensor4D {
  return tf.tidy(() => {
    const y = tf.add(tf.conv2d(x, param(params, `${prefix}.weight`) as tf.Tensor4D, 2, 'same'), param(params, `${prefix}.bias`));
    return activate(y, cfg.activation) as tf.Tensor4D;
  });
}

/**
 * The convolutional stem (`vision.stem: 'conv'`): frames [B, T, H, W, 3] through two stride-2
 * 3×3 convolutions with 'same' padding, bias and the model's activation. Frame differences
 * (`vision.motion`) keep their linear patch embedding: through the stem, direction was not
 * learnt (docs/RESULTS.md).
 *
 * @returns [B·T, H/4, W/4, D_v/2]
 */
export function convStem(params: Params, frames: tf.Tensor, cfg: DualEncoderConfig): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, t, h, w, c] = frames.shape;
    const input = tf.reshape(frames, [b * t, h, w, c]) as tf.Tensor4D;
    return stemConv(params, 'video.stem.conv2', stemConv(params, 'video.stem.conv1', input, cfg), cfg);
  });
}

/**
 * Every parameter of the dual encoder for `cfg`: names, shapes, initialisers. Allocates
 * no tensors (so it can count the base model's 149.6 M parameters for free).
 */
export function dualEncoderSpecs(cfg: DualEncoderConfig): ParamSpec[] {
  const { vision: v, text: t, temporal, embedDim } = cfg;
  const numPatches = (v.imageSize / v.patchSize) ** 2;
  const conv = v.stem === 'conv' ? convStemShape(cfg) : undefined;
  const patchDim = conv ? (v.patchSize / 4) ** 2 * conv.c2 : v.patchSize * v.patchSize * 3;
  const specs: ParamSpec[] = [];
  if (conv) {
    // He initialisation: the convolutions feed a GELU.
    specs.push(
      { name: 'video.stem.conv1.weight', shape: [3, 3, 3, conv.c1], init: { kind: 'normal', std: (2 / (9 * 3)) ** 0.5 } },
      { name: 'video.stem.conv1.bias', shape: [conv.c1], init: { kind: 'zeros' } },
      { name: 'video.stem.conv2.weight', shape: [3, 3, conv.c1, conv.c2], init: { kind: 'normal', std: (2 / (9 * conv.c1)) ** 0.5 } },
      { name: 'video.stem.conv2.bias', shape: [conv.c2], init: { kind: 'zeros' } },
    );
  }
  specs.push(
    { name: 'video.patch_embed.weight', shape: [patchDim, v.width], init: { kind: 'normal', std: patchDim ** -0.5 } },
    { name: 'video.class_embedding', shape: [v.width], init: { kind: 'normal', std: v.width ** -0.5 } },
    { name: 'video.pos_embed', shape: [1 + numPatches, v.width], init: { kind: 'normal', std: v.width ** -0.5 } },
    ...layerNormSpecs('video.ln_pre', v.width),
    ...transformerSpecs('video.blocks', v.width, v.layers, v.mlpRatio),
    ...layerNormSpecs('video.ln_post', v.width),
  );
  if (v.attention === 'joint') specs.push({ name: 'video.time_embed', shape: [temporal.maxFrames, v.width], init: { kind: 'normal', std: v.width ** -0.5 } });
  const pixelDim = v.patchSize * v.patchSize * 3;
  if (v.motion) specs.push({ name: 'video.temporal.motion_embed.weight', shape: [pixelDim, v.width], init: { kind: 'normal', std: pixelDim ** -0.5 } });
  if (temporal.pooling === 'transformer') {
    specs.push(
      { name: 'video.temporal.pos_embed', shape: [temporal.maxFrames, v.width], init: { kind: 'normal', std: 0.01 } },
      ...transformerSpecs('video.temporal.blocks', v.width, temporal.layers, v.mlpRatio),
    );
  }
  specs.push(
    ...linearSpecs('video.proj', v.width, embedDim, v.width ** -0.5, false),
    { name: 'text.token_embed.weight', shape: [t.vocabSize, t.width], init: { kind: 'normal', std: 0.02 } },
    { name: 'text.pos_embed', shape: [t.contextLength, t.width], init: { kind: 'normal', std: 0.01 } },
    ...transformerSpecs('text.blocks', t.width, t.layers, t.mlpRatio),
    ...layerNormSpecs('text.ln_final', t.width),
    ...linearSpecs('text.proj', t.width, embedDim, t.width ** -0.5, false),
    { name: 'logit_scale', shape: [], init: { kind: 'constant', value: cfg.logitScaleInit } },
  );
  return specs;
}

/**
 * Scalar count of the dual encoder for `cfg` (optionally under a name prefix such as
 * `'video.'`), from shapes alone.
 *
 * @example countDualEncoderParams(getConfig('base')) // 149620737, as CLIP ViT-B/16
 */
export function countDualEncoderParams(cfg: DualEncoderConfig, prefix = ''): number {
  return countParams(dualEncoderSpecs(validateConfig(cfg, 'countDualEncoderParams cfg')), prefix);
}

/**
 * A parameter store with every dual-encoder parameter, initialised from `seed`.
 *
 * @example
 * const store = initDualEncoder(getConfig('tiny'), 0);
 * const emb = encodeText(store.snapshot(), ids, mask, cfg);
 */
export function initDualEncoder(cfg: DualEncoderConfig, seed = 0): ParamStore {
  const c = validateConfig(cfg, 'initDualEncoder cfg');
  return new ParamStore(seed).addAll(dualEncoderSpecs(c));
}

/** How a forward runs, apart from the model: what the backward may recompute. */
export interface EncodeOptions {
  /** `blocks`: every transformer block recomputes its activations in the backward (first-order gradients only). Default `none`. */
  recompute?: Recompute;
}

function blockOpts(cfg: DualEncoderConfig, heads: number, run: EncodeOptions = {}): BlockOptions {
  return { heads, activation: cfg.activation, eps: cfg.layerNormEps, recompute: run.recompute ?? 'none' };
}

/**
 * Pooled video features before the projection, [B, D_v]. Frames must already be resized
 * to `imageSize` and normalised.
 *
 * @param frames [B, T, H, W, 3] float32
 */
export function videoFeatures(params: Params, frames: tf.Tensor, cfg: DualEncoderConfig, run: EncodeOptions = {}): tf.Tensor2D {
  const v = cfg.vision;
  if (!(frames instanceof tf.Tensor) || frames.rank !== 5) {
    throw new Error(`videoFeatures: 'frames' must be a [B, T, H, W, 3] tensor, got ${frames instanceof tf.Tensor ? `[${frames.shape}]` : typeof frames}`);
  }
  const [b, t, h, w, c] = frames.shape;
  if (h !== v.imageSize || w !== v.imageSize || c !== 3) {
    throw new Error(`videoFeatures: 'frames' must be [B, T, ${v.imageSize}, ${v.imageSize}, 3] for this config, got [${frames.shape}]`);
  }
  if (frames.dtype !== 'float32') throw new Error(`videoFeatures: 'frames' must be float32 (normalised), got ${frames.dtype}`);
  const temporal = cfg.temporal;
  if ((temporal.pooling === 'transformer' || v.attention === 'joint') && t > temporal.maxFrames) {
    throw new Error(`videoFeatures: 'frames' has ${t} frames per clip, more than temporal.maxFrames ${temporal.maxFrames}`);
  }
  return tf.tidy(() => {
    const n = b * t;
    let patches = v.stem === 'conv'
      ? patchEmbed(params, 'video.patch_embed', convStem(params, frames, cfg), v.patchSize / 4)
      : patchEmbed(params, 'video.patch_embed', tf.reshape(frames, [n, h, w, c]), v.patchSize);
    if (v.motion && t > 1) {
      patches = tf.add(patches, patchEmbed(params, 'video.temporal.motion_embed', tf.reshape(frameDifferences(frames, v.motionInput), [n, h, w, c]), v.patchSize));
    }
    // fill, not zeros: zeros are made on the host and uploaded every step on webgpu.
    const cls = tf.add(tf.fill([n, 1, v.width], 0), tf.reshape(param(params, 'video.class_embedding'), [1, 1, v.width]));
    let x = tf.add(tf.concat([cls, patches], 1), param(params, 'video.pos_embed'));
    const tokens = 1 + (v.imageSize / v.patchSize) ** 2;
    const joint = v.attention === 'joint';
    if (joint) {
      // One sequence of every frame's tokens per clip, each frame's tokens marked by its time
      // embedding, so a patch can attend to where the object is in the other frames.
      const time = tf.reshape(tf.slice(param(params, 'video.time_embed'), [0, 0], [t, v.width]), [1, t, 1, v.width]);
      x = tf.reshape(tf.add(tf.reshape(x, [b, t, tokens, v.width]), time), [b, t * tokens, v.width]);
    }
    x = layerNorm(params, 'video.ln_pre', x, cfg.layerNormEps);
    x = transformer(params, 'video.blocks', x, v.layers, blockOpts(cfg, v.heads, run));
    if (joint) x = tf.reshape(x, [n, tokens, v.width]);
    const frameTokens = layerNorm(params, 'video.ln_post', tf.reshape(tf.slice(x, [0, 0, 0], [n, 1, v.width]), [n, v.width]), cfg.layerNormEps);
    let seq = tf.reshape(frameTokens, [b, t, v.width]);
    if (temporal.pooling === 'transformer') {
      seq = tf.add(seq, tf.slice(param(params, 'video.temporal.pos_embed'), [0, 0], [t, v.width]));
      seq = transformer(params, 'video.temporal.blocks', seq, temporal.layers, blockOpts(cfg, temporal.heads, run));
    }
    return tf.mean(seq, 1) as tf.Tensor2D;
  });
}

/** Index of the pooled token per row: the last position whose mask is non-zero (0 if none). */
function eosPositions(mask: tf.Tensor, length: number): tf.Tensor {
  return tf.tidy(() => {
    const real = tf.cast(tf.notEqual(mask, 0), 'int32');
    return tf.argMax(tf.mul(real, tf.range(1, length + 1, 1, 'int32')), 1);
  });
}

/**
 * The value check `textFeatures` leaves to its caller, the same on every backend: every token
 * id in [0, vocabSize), read once, asynchronously. Inside the op an out-of-range id is the
 * backend's business (an error on cpu/wasm, a clamped read on webgpu), so ids that do not come
 * from the model's own tokenizer should pass here first.
 *
 * @example await assertTokenIds(ids, cfg.text.vocabSize);
 */
export async function assertTokenIds(ids: tf.Tensor, vocabSize: number, fn = 'textFeatures', arg = 'ids'): Promise<void> {
  if (!(ids instanceof tf.Tensor) || ids.dtype !== 'int32') {
    throw new Error(`${fn}: '${arg}' must be an int32 tensor, got ${ids instanceof tf.Tensor ? ids.dtype : typeof ids}`);
  }
  const v = await ids.data();
  for (let i = 0; i < v.length; i++) {
    if (v[i] < 0 || v[i] >= vocabSize) {
      throw new Error(`${fn}: '${arg}' holds ${v[i]} at flat index ${i}, outside the vocabulary [0, ${vocabSize})`);
    }
  }
}

/**
 * Pooled text features before the projection, [B, D_t].
 *
 * @param ids [B, L] int32 token ids, L ≤ contextLength
 * @param mask [B, L], 1 for real tokens (EOS included), 0 for padding
 */
export function textFeatures(params: Params, ids: tf.Tensor, mask: tf.Tensor, cfg: DualEncoderConfig, run: EncodeOptions = {}): tf.Tensor2D {
  const tc = cfg.text;
  if (!(ids instanceof tf.Tensor) || ids.rank !== 2 || ids.dtype !== 'int32') {
    throw new Error(`textFeatures: 'ids' must be an int32 [B, L] tensor, got ${ids instanceof tf.Tensor ? `${ids.dtype} [${ids.shape}]` : typeof ids}`);
  }
  const [b, l] = ids.shape;
  if (l > tc.contextLength) throw new Error(`textFeatures: 'ids' has length ${l}, more than text.contextLength ${tc.contextLength}`);
  if (!(mask instanceof tf.Tensor) || mask.rank !== 2 || mask.shape[0] !== b || mask.shape[1] !== l) {
    throw new Error(`textFeatures: 'mask' must be [${b}, ${l}] like 'ids', got ${mask instanceof tf.Tensor ? `[${mask.shape}]` : typeof mask}`);
  }
  // The ids' values are not read back (an op never reads): they come from the tokenizer the
  // embedding table was sized for (text.vocabSize = tok.vocabSize); ids from anywhere else are
  // the caller's to check before the call, with assertTokenIds.
  return tf.tidy(() => {
    const tok = tf.gather(param(params, 'text.token_embed.weight'), ids);
    const x = tf.add(tok, tf.slice(param(params, 'text.pos_embed'), [0, 0], [l, tc.width]));
    const h = transformer(params, 'text.blocks', x, tc.layers, blockOpts(cfg, tc.heads, run), { keyPadding: mask, causal: tc.causal });
    let pooled: tf.Tensor;
    if (tc.pooling === 'eos') {
      const pick = tf.reshape(tf.oneHot(eosPositions(mask, l), l), [b, l, 1]);
      pooled = tf.sum(tf.mul(h, pick), 1);
    } else {
      pooled = tf.reshape(tf.slice(h, [0, 0, 0], [b, 1, tc.width]), [b, tc.width]);
    }
    // Layer norm is per token, so normalising only the pooled token is the same and cheaper.
    return layerNorm(params, 'text.ln_final', pooled, cfg.layerNormEps) as tf.Tensor2D;
  });
}

/** [B, D_v] → [B, E] with `video.proj.weight` (no bias, as CLIP). */
export function projectVideo(params: Params, features: tf.Tensor): tf.Tensor2D {
  return linear(params, 'video.proj', features, false) as tf.Tensor2D;
}

/** [B, D_t] → [B, E] with `text.proj.weight`. */
export function projectText(params: Params, features: tf.Tensor): tf.Tensor2D {
  return linear(params, 'text.proj', features, false) as tf.Tensor2D;
}

/**
 * Video embeddings [B, E], not normalised (the loss normalises).
 *
 * @example encodeVideo(store.snapshot(), tf.zeros([2, 4, 32, 32, 3]), getConfig('tiny')).shape // [2, 64]
 */
export function encodeVideo(params: Params, frames: tf.Tensor, cfg: DualEncoderConfig, run: EncodeOptions = {}): tf.Tensor2D {
  return tf.tidy(() => projectVideo(params, videoFeatures(params, frames, cfg, run)));
}

/**
 * Text embeddings [B, E], not normalised.
 *
 * @example encodeText(params, tf.tensor2d([[5, 9, 2, 0]], undefined, 'int32'), tf.tensor2d([[1, 1, 1, 0]]), cfg)
 */
export function encodeText(params: Params, ids: tf.Tensor, mask: tf.Tensor, cfg: DualEncoderConfig, run: EncodeOptions = {}): tf.Tensor2D {
  return tf.tidy(() => projectText(params, textFeatures(params, ids, mask, cfg, run)));
}

/**
 * Which optimiser group a parameter belongs to.
 * - `group`: `head` for `video.proj`, `text.proj` and `logit_scale` (the projections and
 *   scale that `metaScope: heads` adapts); `temporal` for `video.temporal.*` (new on top of
 *   CLIP, so usually trained at the full rate when the encoders are fine-tuned slowly);
 *   `encoder` for everything else.
 * - `decay`: false for biases, layer norms, `logit_scale` and the 1-D class embedding
 *   (OpenCLIP's rule: weight decay only on matrices).
 *
 * @example paramGroup('text.blocks.3.ln_1.weight') // { group: 'encoder', decay: false }
 */
export function paramGroup(name: string): { group: 'encoder' | 'temporal' | 'head'; decay: boolean } {
  if (typeof name !== 'string' || name === '') throw new Error('paramGroup: name must be a non-empty parameter name');
  const parts = name.split('.');
  const group = name === 'logit_scale' || name.startsWith('video.proj.') || name.startsWith('text.proj.')
    ? 'head'
    : name.startsWith('video.temporal.') ? 'temporal' : 'encoder';
  const decay = !(name === 'logit_scale' || name === 'video.class_embedding' || parts[parts.length - 1] === 'bias'
    || parts.some((p) => p.startsWith('ln_')));
  return { group, decay };
}
