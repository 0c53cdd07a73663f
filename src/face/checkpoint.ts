/** Loading a train-classifier checkpoint: the backbone config, class list and parameters. */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { tf } from '../backend/tf.js';
import { loadCheckpoint, loadLatestCheckpoint } from '../train/checkpoint.js';
import { backboneConfigSchema, type BackboneConfig } from './backbone.js';

export interface FaceCheckpoint {
  dir: string;
  model: BackboneConfig;
  classes: string[];
  /** Every saved parameter (`backbone.*`, `head.*`); the caller disposes them. */
  params: Record<string, tf.Tensor>;
  config: Record<string, unknown>;
}

/**
 * A checkpoint folder, or a run folder's latest checkpoint, written by train-classifier.
 * @example const ck = await loadFaceCheckpoint('runs/arcface'); embedImages(ck.params, x, ck.model)
 */
export async function loadFaceCheckpoint(where: string): Promise<FaceCheckpoint> {
  let isRun = false;
  try { isRun = (await stat(path.join(where, 'checkpoints'))).isDirectory(); } catch { /* a checkpoint folder itself */ }
  const ck = isRun ? await loadLatestCheckpoint(where) : await loadCheckpoint(where);
  if (!ck) throw new Error(`checkpoint ${where}: the run has no checkpoints`);
  const cfg = (ck.config ?? {}) as Record<string, unknown>;
  const parsed = backboneConfigSchema.safeParse(cfg.model);
  if (!parsed.success || !Array.isArray(cfg.classes)) {
    tf.dispose([...Object.values(ck.params), ...Object.values(ck.optimizer ?? {})]);
    throw new Error(`checkpoint ${ck.dir}: not a train-classifier checkpoint (config.json lacks a valid 'model' backbone config and 'classes')`);
  }
  tf.dispose(Object.values(ck.optimizer ?? {}));
  return { dir: ck.dir, model: parsed.data, classes: cfg.classes as string[], params: ck.params, config: cfg };
}
