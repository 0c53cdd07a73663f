/**
 * What the speaker and anti-spoofing jobs share: features of every utterance computed once
 * (bad files reported and skipped, never fatal), fixed-length random crops of them for
 * training, an embedding network + MarginHead trained with AdamW through the common training
 * loop, checkpoints that name what they hold, and embeddings of full utterances for scoring.
 */
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import pLimit from 'p-limit';
import { z } from 'zod';
import { tf } from '../../src/backend/tf.js';
import { loadAudio, randomCrop } from '../../src/audio/decode.js';
import { audioFeatures, featureDim, type FeatureConfig } from '../../src/audio/features.js';
import { BatchSampler } from '../../src/face/imageFolder.js';
import { MarginHead, type MarginHeadConfig } from '../../src/margin/head.js';
import { valueAndGradsOf, type ParamStore, type Params } from '../../src/nn/params.js';
import { loadCheckpoint, loadLatestCheckpoint, type LoadedCheckpoint } from '../../src/train/checkpoint.js';
import { MetricsLogger } from '../../src/train/logger.js';
import { AdamW } from '../../src/train/optimizer.js';
import { cosineWithWarmup } from '../../src/train/schedule.js';
import { runTraining } from '../../src/train/trainer.js';
import { mulberry32 } from '../../src/util/rng.js';

/** Utterance features held in memory: one row-major [frames, dim] array each. */
export interface FeatureBank {
  dim: number;
  features: Float32Array[];
  frames: number[];
  /** Index into the caller's file list of each kept utterance. */
  source: number[];
  skipped: { path: string; reason: string }[];
}

/**
 * Features of each file (full utterances), `concurrency` decodes at a time; a file that cannot
 * be decoded is skipped and listed.
 */
export async function loadFeatureBank(files: string[], cfg: FeatureConfig, opts: { concurrency?: number; onProgress?: (done: number, total: number) => void } = {}): Promise<FeatureBank> {
  const limit = pLimit(opts.concurrency ?? 4);
  const dim = featureDim(cfg);
  const out: (Float32Array | undefined)[] = new Array(files.length);
  const skipped: { path: string; reason: string }[] = [];
  let done = 0;
  await Promise.all(files.map((f, i) => limit(async () => {
    try {
      const pcm = await loadAudio(f, { sampleRate: cfg.sampleRate });
      const feats = audioFeatures(pcm, cfg);
      try { out[i] = (await feats.data()) as Float32Array; } finally { feats.dispose(); }
    } catch (e) {
      skipped.push({ path: f, reason: (e as Error).message.replace(`${f}: `, '') });
    }
    opts.onProgress?.(++done, files.length);
  })));
  const bank: FeatureBank = { dim, features: [], frames: [], source: [], skipped };
  out.forEach((f, i) => {
    if (!f) return;
    bank.features.push(f);
    bank.frames.push(f.length / dim);
    bank.source.push(i);
  });
  return bank;
}

/** A batch [B, cropFrames, dim] of random crops (short utterances repeat end to end). */
export function cropBatch(bank: FeatureBank, idx: ArrayLike<number>, cropFrames: number, rand: () => number): Float32Array {
  const D = bank.dim;
  const out = new Float32Array(idx.length * cropFrames * D);
  for (let b = 0; b < idx.length; b++) {
    const f = bank.features[idx[b]];
    const T = bank.frames[idx[b]];
    const start = T > cropFrames ? Math.floor(rand() * (T - cropFrames + 1)) : 0;
    for (let t = 0; t < cropFrames; t++) {
      const src = ((start + t) % T) * D;
      out.set(f.subarray(src, src + D), (b * cropFrames + t) * D);
    }
  }
  return out;
}

export const trainSettingsSchema = z.object({
  steps: z.number().int().min(1).default(300),
  batchSize: z.number().int().min(2).default(32),
  lr: z.number().positive().default(3e-3),
  minLr: z.number().min(0).default(1e-5),
  warmupSteps: z.number().int().min(0).default(20),
  weightDecay: z.number().min(0).default(1e-4),
  clipNorm: z.number().min(0).default(5),
  /** Length of the training crops in frames (100 = 1 s at a 10 ms hop). */
  cropFrames: z.number().int().min(8).default(100),
  sampling: z.enum(['natural', 'balanced']).default('natural'),
  checkpointEvery: z.number().int().min(0).default(0),
  keepCheckpoints: z.number().int().min(1).default(2),
  /** Files decoded at once while loading. */
  concurrency: z.number().int().min(1).default(4),
  /**
   * Hold every utterance's features in memory (N·frames·dim·4 bytes) and crop from them; off,
   * each step decodes its batch's files and computes the features of a random waveform crop
   * (for corpora that do not fit in memory).
   */
  cacheFeatures: z.boolean().default(true),
});
export type TrainSettings = z.output<typeof trainSettingsSchema>;

/** Where training crops come from: items by index → a batch [B, cropFrames, dim]. */
export interface CropSource {
  dim: number;
  /** Number of items (indices run over [0, size)). */
  size: number;
  batch(idx: Int32Array, cropFrames: number, rand: () => number): Promise<Float32Array>;
}

/** Crops from features held in memory. */
export function bankSource(bank: FeatureBank): CropSource {
  return { dim: bank.dim, size: bank.features.length, batch: async (idx, T, rand) => cropBatch(bank, idx, T, rand) };
}

/**
 * Crops decoded on demand: each file of the batch is decoded, a random waveform window of
 * exactly `cropFrames` frames is cut and its features computed. A file that fails to decode is
 * reported once and replaced, now and later, by another item of the same class.
 */
export function streamingSource(files: string[], labels: Int32Array, cfg: FeatureConfig, opts: { concurrency?: number; onSkip?: (path: string, reason: string) => void } = {}): CropSource {
  const dim = featureDim(cfg);
  const bad = new Set<number>();
  const limit = pLimit(opts.concurrency ?? 4);
  const replacement = (i: number, rand: () => number): number => {
    const same = [];
    for (let k = 0; k < files.length; k++) if (labels[k] === labels[i] && !bad.has(k)) same.push(k);
    if (same.length === 0) throw new Error(`every utterance of class ${labels[i]} failed to decode (last: ${files[i]})`);
    return same[Math.floor(rand() * same.length)];
  };
  const crop = async (i: number, T: number, rand: () => number): Promise<Float32Array> => {
    for (;;) {
      if (bad.has(i)) i = replacement(i, rand);
      try {
        const pcm = await loadAudio(files[i], { sampleRate: cfg.sampleRate });
        const window = randomCrop(pcm, (T - 1) * cfg.hop + cfg.winLength, rand);
        const f = audioFeatures(window, cfg);
        try { return (await f.data()) as Float32Array; } finally { f.dispose(); }
      } catch (e) {
        bad.add(i);
        opts.onSkip?.(files[i], (e as Error).message.replace(`${files[i]}: `, ''));
      }
    }
  };
  return {
    dim, size: files.length,
    batch: async (idx, T, rand) => {
      const parts = await Promise.all(Array.from(idx, (i) => limit(() => crop(i, T, rand))));
      const out = new Float32Array(idx.length * T * dim);
      parts.forEach((p, b) => out.set(p, b * T * dim));
      return out;
    },
  };
}

export interface EmbeddingJob {
  runDir: string;
  seed: number;
  store: ParamStore;
  /** Parameter prefix → embeddings [B, d] of features [B, T, D]. */
  embed: (params: Params, features: tf.Tensor) => tf.Tensor2D;
  head: MarginHeadConfig;
  source: CropSource;
  /** Class of each item. */
  labels: Int32Array;
  numClasses: number;
  train: TrainSettings;
  /** JSON for the checkpoint's config.json. */
  config: Record<string, unknown>;
  quiet?: boolean;
}

export interface EmbeddingJobResult { steps: number; lossStart: number; lossEnd: number; finalLoss: number; seconds: number }

/** Trains the network and head; the last checkpoint is written to runDir/checkpoints/. */
export async function trainEmbeddingModel(job: EmbeddingJob): Promise<EmbeddingJobResult> {
  const t = job.train;
  await mkdir(job.runDir, { recursive: true });
  const head = new MarginHead(job.head);
  const params: Record<string, tf.Variable> = { ...(job.store.snapshot() as Record<string, tf.Variable>) };
  for (const [k, v] of Object.entries(head.params())) params[`head.${k}`] = v;
  const optimizer = new AdamW(params, {
    lr: t.lr, weightDecay: t.weightDecay, betas: [0.9, 0.999],
    groups: (_name, shape) => ({ weightDecay: shape.length >= 2 ? t.weightDecay : 0 }),
  });
  const sampler = new BatchSampler(job.labels, job.numClasses, { batchSize: t.batchSize, sampling: t.sampling, seed: job.seed });
  const rand = mulberry32(job.seed * 7919 + 11);
  const schedule = cosineWithWarmup({ baseLr: t.lr, warmupSteps: Math.min(t.warmupSteps, t.steps), totalSteps: t.steps, minLr: t.minLr });
  const logger = new MetricsLogger(path.join(job.runDir, 'metrics.jsonl'), { quiet: job.quiet });
  const losses: number[] = [];
  const B = t.batchSize;
  try {
    const r = await runTraining({
      runDir: job.runDir, params, optimizer, schedule, totalSteps: t.steps, clipNorm: t.clipNorm,
      checkpointEvery: t.checkpointEvery, keepCheckpoints: t.keepCheckpoints, config: { ...job.config, head: head.settings }, logger,
    }, {
      computeGrads: async (step) => {
        const idx = sampler.next();
        const x = tf.tensor3d(await job.source.batch(idx, t.cropFrames, rand), [B, t.cropFrames, job.source.dim]);
        const y = tf.tensor1d(Int32Array.from(idx, (i) => job.labels[i]), 'int32');
        const { value, grads } = valueAndGradsOf((p) => head.loss(job.embed(p, x), y, { weight: p['head.weight'], bias: p['head.bias'], step }).loss as tf.Scalar, params);
        let loss: number;
        try { loss = (await value.data())[0]; } finally { tf.dispose([value, x, y]); }
        head.step = step + 1;
        losses.push(loss);
        return { loss, grads, samples: B };
      },
      dataState: () => sampler.state(),
    });
    const k = Math.max(1, Math.floor(losses.length / 10));
    const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / Math.max(a.length, 1);
    return { steps: r.step, lossStart: mean(losses.slice(0, k)), lossEnd: mean(losses.slice(-k)), finalLoss: r.lastLoss, seconds: r.seconds };
  } finally {
    head.dispose();
    optimizer.dispose();
  }
}

/**
 * A checkpoint folder, or a run folder's latest checkpoint; optimizer tensors are freed.
 *
 * @example const ck = await loadRunCheckpoint('runs/speaker');
 */
export async function loadRunCheckpoint(where: string): Promise<LoadedCheckpoint> {
  let isRun = false;
  try { isRun = (await stat(path.join(where, 'checkpoints'))).isDirectory(); } catch { /* a checkpoint folder itself */ }
  const ck = isRun ? await loadLatestCheckpoint(where) : await loadCheckpoint(where);
  if (!ck) throw new Error(`--checkpoint ${where}: the run has no checkpoints`);
  tf.dispose(Object.values(ck.optimizer ?? {}));
  return { ...ck, optimizer: undefined };
}

/**
 * L2-normalised embeddings of full utterances, one forward pass each (lengths differ), in bank order.
 */
export async function embedBank(bank: FeatureBank, embed: (features: tf.Tensor) => tf.Tensor2D, minFrames: number): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let i = 0; i < bank.features.length; i++) {
    // An utterance shorter than the network's receptive field is repeated end to end.
    const T = Math.max(bank.frames[i], minFrames);
    const x = T === bank.frames[i] ? bank.features[i] : cropBatch(bank, [i], T, () => 0);
    const e = tf.tidy(() => {
      const v = embed(tf.tensor3d(x, [1, T, bank.dim]));
      return tf.div(v, tf.norm(v, 2, 1, true).add(1e-12));
    });
    try { out.push((await e.data()) as Float32Array); } finally { e.dispose(); }
  }
  return out;
}

/** Cosine of two unit vectors. */
export function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let k = 0; k < a.length; k++) s += a[k] * b[k];
  return s;
}
