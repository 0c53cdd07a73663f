/**
 * A checkpoint's settings (model shape, tokenizer, frames) read without its weights, and the
 * dual encoder restored from it. Shared by evaluation and every fine-tuning job.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { tf } from '../backend/tf.js';
import { dualEncoderConfigSchema, type DualEncoderConfig } from '../nn/configs.js';
import { initDualEncoder } from '../nn/dualEncoder.js';
import type { ParamStore } from '../nn/params.js';
import { listCheckpoints, loadCheckpoint } from './checkpoint.js';

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
}).loose();

export interface CheckpointInfo {
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
  /** The whole config.json, for pipelines that extend it. */
  raw: Record<string, unknown>;
}

/**
 * Reads a checkpoint's settings without loading its weights. `where` is a checkpoint folder
 * (with state.json) or a run folder (its newest checkpoint is used).
 * @example const info = await readCheckpointInfo('runs/default'); info.step // 240
 */
export async function readCheckpointInfo(where: string): Promise<CheckpointInfo> {
  if (typeof where !== 'string' || !where) throw new Error('--checkpoint: expected a checkpoint folder or a run folder');
  let dir = path.resolve(where);
  try {
    await stat(dir);
  } catch {
    throw new Error(`--checkpoint: ${dir} does not exist`);
  }
  try {
    await stat(path.join(dir, 'state.json'));
  } catch {
    const list = await listCheckpoints(dir);
    if (!list.length) throw new Error(`--checkpoint: ${dir} is neither a checkpoint folder (no state.json) nor a run folder with checkpoints/step-*`);
    dir = list.reduce((a, b) => (b.step > a.step ? b : a)).dir;
  }
  const readJson = async (f: string): Promise<unknown> => {
    try {
      return JSON.parse(await readFile(f, 'utf8'));
    } catch (e) {
      throw new Error(`--checkpoint: cannot read ${f} (${(e as Error).message})`);
    }
  };
  const state = (await readJson(path.join(dir, 'state.json'))) as { step?: unknown; sha256?: Record<string, unknown> };
  const modelSha = state?.sha256?.['model.safetensors'];
  if (typeof modelSha !== 'string' || !Number.isInteger(state.step)) throw new Error(`--checkpoint: ${path.join(dir, 'state.json')} has no step or model checksum; not a vlmargin checkpoint`);
  const raw = await readJson(path.join(dir, 'config.json'));
  const parsed = checkpointConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; ');
    throw new Error(`--checkpoint: ${path.join(dir, 'config.json')} lacks what evaluation needs (${issues}); expected { pretrain, model, tokenizer } as the pretrain pipeline writes`);
  }
  const c = parsed.data;
  return {
    dir, step: state.step as number, modelSha, model: c.model, tokenizerDir: c.tokenizer,
    frames: { count: c.pretrain.frames.count, size: c.pretrain.frames.size, strategy: c.pretrain.frames.strategy },
    seed: c.pretrain.seed, maxLen: c.pretrain.tokenizer.maxLen, batchSize: c.pretrain.eval?.batchSize ?? 64,
    raw: raw as Record<string, unknown>,
  };
}

/**
 * The dual encoder of a checkpoint as a parameter store (every tensor of the checkpoint is
 * required; optimizer state is dropped).
 * @example const store = await loadModel(await readCheckpointInfo('runs/default'), 0);
 */
export async function loadModel(info: CheckpointInfo, seed: number): Promise<ParamStore> {
  const ck = await loadCheckpoint(info.dir, { onWarning: () => undefined });
  const store = initDualEncoder(info.model, seed);
  try {
    store.assign(ck.params, { requireAll: true });
  } finally {
    tf.dispose([...Object.values(ck.params), ...Object.values(ck.optimizer ?? {})]);
  }
  return store;
}
