/**
 * A small speaker-embedding network: a TDNN (x-vector style frame layers, each a dilated
 * context window flattened and passed through one linear layer, ReLU and a layer norm — a 1-D
 * convolution written as slices + matmul, so no conv kernel or its wasm-missing gradient is
 * needed), attentive statistics pooling (Okabe et al. 2018: attention weights over frames,
 * then the weighted mean and standard deviation), and a linear embedding layer.
 * Parameters live under `speaker.`.
 */
import { z } from 'zod';
import { tf } from '../backend/tf.js';
import { layerNorm, layerNormSpecs, linear, linearSpecs } from './layers.js';
import { ParamStore, param, type ParamSpec, type Params } from './params.js';

const speakerNetFields = z.object({
  /** Feature dimension per frame (80 log-mel filters by default). */
  inputDim: z.number().int().min(1).default(80),
  /** Width of every frame layer. */
  channels: z.number().int().min(2).default(64),
  /** Context window (odd, in frames) and dilation of each frame layer. */
  kernels: z.array(z.number().int().min(1)).min(1).default([5, 3, 3, 1]),
  dilations: z.array(z.number().int().min(1)).min(1).default([1, 2, 3, 1]),
  /** Hidden size of the pooling's attention. */
  attentionDim: z.number().int().min(1).default(32),
  embedDim: z.number().int().min(2).default(64),
});
export const speakerNetConfigSchema = speakerNetFields.refine((c) => c.kernels.length === c.dilations.length, { message: 'kernels and dilations must have the same length' })
  .refine((c) => c.kernels.every((k) => k % 2 === 1), { message: 'every kernel must be odd' });
export type SpeakerNetConfig = z.output<typeof speakerNetConfigSchema>;
/** The network's options without its input size (a job takes that from its features). */
export const speakerNetOptionsSchema = speakerNetFields.omit({ inputDim: true }).partial();

/** Frames the frame layers consume at the edges: Σ (k − 1)·d. An input needs more frames than this. */
export function receptiveField(cfg: SpeakerNetConfig): number {
  return cfg.kernels.reduce((a, k, i) => a + (k - 1) * cfg.dilations[i], 0);
}

/** Parameter specs. @example speakerNetSpecs(speakerNetConfigSchema.parse({})).length */
export function speakerNetSpecs(cfg: SpeakerNetConfig): ParamSpec[] {
  const specs: ParamSpec[] = [];
  let din = cfg.inputDim;
  cfg.kernels.forEach((k, i) => {
    const fanIn = din * k;
    specs.push(...linearSpecs(`speaker.tdnn.${i}`, fanIn, cfg.channels, Math.sqrt(2 / fanIn)), ...layerNormSpecs(`speaker.tdnn.${i}.norm`, cfg.channels));
    din = cfg.channels;
  });
  const C = cfg.channels;
  specs.push(
    ...linearSpecs('speaker.pool.attention', C, cfg.attentionDim, C ** -0.5),
    ...linearSpecs('speaker.pool.score', cfg.attentionDim, 1, cfg.attentionDim ** -0.5),
    ...linearSpecs('speaker.embed', 2 * C, cfg.embedDim, (2 * C) ** -0.5),
  );
  return specs;
}

/** A parameter store with a freshly initialised network. @example const store = initSpeakerNet(cfg, 1); */
export function initSpeakerNet(cfg: SpeakerNetConfig, seed = 0): ParamStore {
  return new ParamStore(seed).addAll(speakerNetSpecs(cfg));
}

/**
 * One TDNN layer: x [B, T, C] → [B, T − (k−1)·d, C'], the k frames t, t+d, …, t+(k−1)·d
 * concatenated along channels, then linear, ReLU, layer norm.
 */
export function tdnnLayer(params: Params, prefix: string, x: tf.Tensor3D, kernel: number, dilation: number): tf.Tensor3D {
  return tf.tidy(() => {
    const [B, T, C] = x.shape;
    const span = (kernel - 1) * dilation;
    if (T <= span) throw new Error(`tdnnLayer '${prefix}': ${T} frames, the layer needs more than ${span}`);
    const out = T - span;
    const ctx = kernel === 1 ? x : tf.concat(Array.from({ length: kernel }, (_, j) => tf.slice(x, [0, j * dilation, 0], [B, out, C])), 2);
    return layerNorm(params, `${prefix}.norm`, tf.relu(linear(params, prefix, ctx))) as tf.Tensor3D;
  });
}

/**
 * Attentive statistics pooling: e_t = vᵀ·tanh(W·h_t + b) + c, α = softmax_t(e), μ = Σ α_t h_t,
 * σ = √(Σ α_t h_t² − μ² + 1e-5); returns [μ, σ] [B, 2C].
 */
export function attentiveStatsPool(params: Params, prefix: string, h: tf.Tensor3D): tf.Tensor2D {
  return tf.tidy(() => {
    const e = tf.squeeze(linear(params, `${prefix}.score`, tf.tanh(linear(params, `${prefix}.attention`, h))), [2]);
    const alpha = tf.expandDims(tf.softmax(e, 1), 2);
    const mu = tf.sum(tf.mul(alpha, h), 1);
    const second = tf.sum(tf.mul(alpha, tf.square(h)), 1);
    const sigma = tf.sqrt(tf.maximum(tf.sub(second, tf.square(mu)), 0).add(1e-5));
    return tf.concat([mu, sigma], 1) as tf.Tensor2D;
  });
}

/**
 * Speaker embeddings [B, embedDim] of feature sequences [B, T, inputDim] (T beyond the
 * receptive field).
 *
 * @example embedSpeakers(store.snapshot(), tf.zeros([2, 100, 80]), cfg).shape // [2, 64]
 */
export function embedSpeakers(params: Params, features: tf.Tensor, cfg: SpeakerNetConfig): tf.Tensor2D {
  if (!(features instanceof tf.Tensor) || features.rank !== 3 || features.shape[2] !== cfg.inputDim) {
    throw new Error(`embedSpeakers: 'features' must be [B, T, ${cfg.inputDim}], got ${features instanceof tf.Tensor ? `[${features.shape}]` : typeof features}`);
  }
  const need = receptiveField(cfg) + 1;
  if ((features.shape[1] as number) < need) throw new Error(`embedSpeakers: ${features.shape[1]} frames; the network needs at least ${need}`);
  param(params, 'speaker.embed.weight');
  return tf.tidy(() => {
    let h = features as tf.Tensor3D;
    cfg.kernels.forEach((k, i) => { h = tdnnLayer(params, `speaker.tdnn.${i}`, h, k, cfg.dilations[i]); });
    return linear(params, 'speaker.embed', attentiveStatsPool(params, 'speaker.pool', h)) as tf.Tensor2D;
  });
}
