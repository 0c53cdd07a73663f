/**
 * A model's settings (shape, tokenizer, frames, normalisation) read without its weights, and
 * the dual encoder restored from it. A model is a vlmargin checkpoint (or a run folder: its
 * newest checkpoint) or a Hugging Face CLIP folder. Shared by evaluation, embedding and every
 * fine-tuning job.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { tf } from '../backend/tf.js';
import { dualEncoderConfigSchema, type DualEncoderConfig } from '../nn/configs.js';
import { initDualEncoder } from '../nn/dualEncoder.js';
import type { ParamStore } from '../nn/params.js';
import { listCheckpoints, loadCheckpoint } from './checkpoint.js';
import { fileSha256, isClipFolder, loadClipWeights, readClipFolder, temporalMeanInit, type ClipFolderInfo, type ClipTemporalOptions } from './clipFolder.js';

/** OpenAI CLIP's frame normalisation, which checkpoints without a `preprocess` entry were trained with. */
const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];
/** Frames per clip from a CLIP folder unless asked otherwise (CLIP4Clip's 12). */
export const CLIP_DEFAULT_FRAMES = 12;

/** The parts of a checkpoint's config.json that evaluation needs (the pretrain pipeline writes them). */
const checkpointConfigSchema = z.object({
  pretrain: z.object({
    seed: z.number().int().default(0),
    frames: z.object({ count: z.number().int().min(1), size: z.number().int().min(8), strategy: z.enum(['uniform', 'random', 'fps', 'head', 'tail']) }).loose(),
    tokenizer: z.object({ maxLen: z.number().int().min(4) }).loose(),
    eval: z.object({ batchSize: z.number().int().min(1) }).loose().optional(),
  }).loose(),
  model: dualEncoderConfigSchema,
  tokenizer: z.string(),
  /** The frames' normalisation when it is not OpenAI CLIP's (a model started from a CLIP folder with its own). */
  preprocess: z.object({ mean: z.array(z.number()).length(3), std: z.array(z.number().positive()).length(3) }).loose().optional(),
}).loose();

export interface CheckpointInfo {
  /** `checkpoint`: a vlmargin checkpoint folder; `clip`: a Hugging Face CLIP folder (step 0). */
  kind: 'checkpoint' | 'clip';
  dir: string;
  step: number;
  /** SHA-256 of model.safetensors, from state.json. */
  modelSha: string;
  model: DualEncoderConfig;
  tokenizerDir: string;
  frames: { count: number; size: number; strategy: 'uniform' | 'random' | 'fps' | 'head' | 'tail' };
  seed: number;
  maxLen: number;
  batchSize: number;
  /** Per-channel normalisation of frames scaled to [0, 1]. */
  preprocess: { mean: number[]; std: number[] };
  /** The whole config.json (for a CLIP folder, the same fields made from it), for pipelines that extend it. */
  raw: Record<string, unknown>;
  /** The CLIP folder's own description (kind `clip` only). */
  clip?: ClipFolderInfo;
}

/**
 * Reads a checkpoint's settings without loading its weights. `where` is a checkpoint folder
 * (with state.json) or a run folder (its newest checkpoint is used).
 * @example const info = await readCheckpointInfo('runs/default'); info.step // 240
 */
export async function readCheckpointInfo(where: string): Promise<CheckpointInfo> {
  if (typeof where !== 'string' || !where) throw new Error(`readCheckpointInfo: expected a checkpoint folder or a run folder as a non-empty string, got ${JSON.stringify(where)}`);
  let dir = path.resolve(where);
  try {
    await stat(dir);
  } catch {
    throw new Error(`checkpoint ${dir}: does not exist`);
  }
  try {
    await stat(path.join(dir, 'state.json'));
  } catch {
    const list = await listCheckpoints(dir);
    if (!list.length) throw new Error(`checkpoint ${dir}: neither a checkpoint folder (no state.json) nor a run folder with checkpoints/step-*`);
    dir = list.reduce((a, b) => (b.step > a.step ? b : a)).dir;
  }
  const readJson = async (f: string): Promise<unknown> => {
    try {
      return JSON.parse(await readFile(f, 'utf8'));
    } catch (e) {
      throw new Error(`checkpoint ${f}: cannot read it (${(e as Error).message})`);
    }
  };
  const state = (await readJson(path.join(dir, 'state.json'))) as { step?: unknown; sha256?: Record<string, unknown> };
  const modelSha = state?.sha256?.['model.safetensors'];
  if (typeof modelSha !== 'string' || !Number.isInteger(state.step)) throw new Error(`checkpoint ${path.join(dir, 'state.json')}: no step or model checksum; not a vlmargin checkpoint`);
  const raw = await readJson(path.join(dir, 'config.json'));
  const parsed = checkpointConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; ');
    throw new Error(`checkpoint ${path.join(dir, 'config.json')}: lacks what evaluation needs (${issues}); expected { pretrain, model, tokenizer } as the pretrain pipeline writes`);
  }
  const c = parsed.data;
  return {
    kind: 'checkpoint', dir, step: state.step as number, modelSha, model: c.model, tokenizerDir: c.tokenizer,
    // A model trained on frames drawn at random each epoch is evaluated on uniform ones.
    frames: { count: c.pretrain.frames.count, size: c.pretrain.frames.size, strategy: c.pretrain.frames.strategy === 'random' ? 'uniform' : c.pretrain.frames.strategy },
    seed: c.pretrain.seed, maxLen: c.pretrain.tokenizer.maxLen, batchSize: c.pretrain.eval?.batchSize ?? 64,
    preprocess: c.preprocess ? { mean: c.preprocess.mean, std: c.preprocess.std } : { mean: [...CLIP_MEAN], std: [...CLIP_STD] },
    raw: raw as Record<string, unknown>,
  };
}

export interface ModelInfoOptions {
  /** Frames per clip for a CLIP folder (default 12); a checkpoint keeps its own. */
  frames?: number;
  /** Temporal pooling on top of a CLIP folder (default meanP). */
  temporal?: ClipTemporalOptions;
  /** Encoding batch size for a CLIP folder (default 64). */
  batchSize?: number;
}

/**
 * The settings of a model: a Hugging Face CLIP folder (config.json with text_config and
 * vision_config, model.safetensors, tokenizer.json) or a vlmargin checkpoint / run folder.
 * For a CLIP folder, `raw` is a config.json in the checkpoint's own layout, so a checkpoint
 * saved from it reads back with `readCheckpointInfo`.
 *
 * @example const info = await readModelInfo('models/clip-vit-base-patch32', { frames: 12 }); info.maxLen // 77
 */
export async function readModelInfo(where: string, opts: ModelInfoOptions = {}): Promise<CheckpointInfo> {
  if (typeof where !== 'string' || !where) throw new Error(`readModelInfo: expected a Hugging Face CLIP folder, a checkpoint folder or a run folder as a non-empty string, got ${JSON.stringify(where)}`);
  if (!(await isClipFolder(where))) return readCheckpointInfo(where);
  const requested = opts.frames ?? CLIP_DEFAULT_FRAMES;
  const temporal = { ...opts.temporal, maxFrames: Math.max(opts.temporal?.maxFrames ?? 32, requested) };
  const clip = await readClipFolder(where, temporal);
  // An export keeps the frames per clip its model was trained with.
  const exported = (clip.extra?.metadata.frames as { count?: unknown } | undefined)?.count;
  const frames = opts.frames ?? (Number.isInteger(exported) && (exported as number) > 0 ? exported as number : CLIP_DEFAULT_FRAMES);
  const batchSize = opts.batchSize ?? 64;
  const framesCfg = { count: frames, size: clip.preprocess.imageSize, strategy: 'uniform' as const };
  const preprocess = { mean: [...clip.preprocess.mean], std: [...clip.preprocess.std] };
  return {
    kind: 'clip', dir: clip.dir, step: 0, modelSha: await fileSha256(clip.weightsFile), model: clip.config, tokenizerDir: clip.dir,
    frames: framesCfg, seed: 0, maxLen: clip.contextLength, batchSize, preprocess, clip,
    raw: {
      pretrain: { seed: 0, frames: framesCfg, tokenizer: { maxLen: clip.contextLength }, eval: { batchSize } },
      model: clip.config, tokenizer: clip.dir, preprocess, init: { clip: clip.dir },
    },
  };
}

/**
 * The dual encoder of a model as a parameter store. From a checkpoint every tensor is
 * required and optimizer state is dropped; from a CLIP folder every CLIP tensor is required
 * and a temporal transformer starts as the mean (`temporalMeanInit`), or, from an export, is
 * the one it holds.
 * @example const store = await loadModel(await readCheckpointInfo('runs/default'), 0);
 */
export async function loadModel(info: CheckpointInfo, seed: number): Promise<ParamStore> {
  if (info.kind === 'clip') {
    if (!info.clip) throw new Error(`loadModel: ${info.dir} is a CLIP folder but its description is missing; read it with readModelInfo`);
    const weights = await loadClipWeights(info.clip);
    const store = initDualEncoder(info.model, seed);
    try {
      store.assign(weights);
      store.assign(info.clip.extra ? info.clip.extra.temporal : temporalMeanInit(info.model));
    } catch (e) {
      store.dispose();
      throw e;
    }
    return store;
  }
  const ck = await loadCheckpoint(info.dir, { onWarning: () => undefined });
  const store = initDualEncoder(info.model, seed);
  try {
    store.assign(ck.params, { requireAll: true });
  } finally {
    tf.dispose([...Object.values(ck.params), ...Object.values(ck.optimizer ?? {})]);
  }
  return store;
}
