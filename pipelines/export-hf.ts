/**
 * The export job: a vlmargin checkpoint (or run folder), or a CLIP folder, written as a
 * Hugging Face CLIP folder (src/train/clipFolder.ts says what the folder holds).
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { tf } from '../src/backend/tf.js';
import { loadTokenizer } from '../src/text/tokenizer.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { loadModel, readModelInfo } from '../src/train/checkpointInfo.js';
import { CLIP_EXPORT_DTYPES, exportClipFolder, type ClipExportDtype, type ExportClipResult } from '../src/train/clipExport.js';

export interface ExportHfOptions {
  /** A checkpoint folder, a run folder (its newest checkpoint), or a CLIP folder (config.json + model.safetensors). */
  model: string;
  out: string;
  dtype?: ClipExportDtype;
  /** The tokenizer folder, when not the one the checkpoint records (or the CLIP folder holds). */
  tokenizer?: string;
  overwrite?: boolean;
}

export interface ExportHfResult extends ExportClipResult {
  source: { kind: 'checkpoint' | 'clip'; dir: string; step?: number };
  tokenizerDir: string;
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

async function tokenizerFor(dir: string | null, flag: string | undefined, recordedWhere: string) {
  const chosen = flag ?? dir;
  if (!chosen) throw new Error(`export hf: ${recordedWhere} names no tokenizer; pass --tokenizer DIR with the tokenizer the model was trained with (its tokenizer.json and ids go into the export)`);
  const abs = path.resolve(chosen);
  if (!(await isDir(abs))) {
    throw new Error(`export hf: the tokenizer folder ${abs}${flag ? ' (--tokenizer)' : ` (recorded in ${recordedWhere})`} does not exist; pass --tokenizer DIR with the tokenizer the model was trained with`);
  }
  return loadTokenizer(abs);
}

/**
 * Runs the export and returns what was written.
 * @example await runExportHf({ model: 'runs/default', out: 'export/default-hf', dtype: 'f16' });
 */
export async function runExportHf(opts: ExportHfOptions): Promise<ExportHfResult> {
  const dtype = opts.dtype ?? 'f32';
  if (!CLIP_EXPORT_DTYPES.includes(dtype)) throw new Error(`export hf: --dtype must be one of ${CLIP_EXPORT_DTYPES.join(', ')}, got '${dtype}'`);
  if (!opts.model) throw new Error('export hf: --model is required (a checkpoint folder, a run folder, or a CLIP folder)');
  if (!opts.out) throw new Error('export hf: --out is required (the folder to write)');
  const src = path.resolve(opts.model);
  if (!(await isDir(src))) throw new Error(`export hf: --model ${src} is not a folder; expected a checkpoint folder, a run folder, or a CLIP folder`);
  const isCheckpoint = (await isFile(path.join(src, 'state.json'))) || (await isDir(path.join(src, 'checkpoints')));
  if (!isCheckpoint && !(await isFile(path.join(src, 'config.json')))) {
    throw new Error(`export hf: --model ${src} holds neither a vlmargin checkpoint (state.json, or checkpoints/step-*) nor a CLIP folder (config.json + model.safetensors)`);
  }
  const info = await readModelInfo(src);
  const normalization = info.preprocess;

  if (info.kind === 'checkpoint') {
    const tok = await tokenizerFor(info.tokenizerDir, opts.tokenizer, `${path.join(info.dir, 'config.json')} ("tokenizer")`);
    const ck = await loadCheckpoint(info.dir, { onWarning: () => undefined });
    try {
      // The weighting net travels in the optimizer file as wnet.* (its own optimizer state, wnet_opt.*, is training state and stays behind).
      const extra: Record<string, tf.Tensor> = {};
      for (const [k, v] of Object.entries(ck.optimizer ?? {})) if (k.startsWith('wnet.')) extra[k] = v;
      const weighting = (info.raw.pretrain as { weighting?: { method?: string; hidden?: number; inputs?: string[] } } | undefined)?.weighting;
      const extraMetadata: Record<string, unknown> = { frames: info.frames, source: { checkpoint: info.dir, step: info.step } };
      if (Object.keys(extra).length) extraMetadata.weightNet = { method: weighting?.method ?? 'mwn', hidden: weighting?.hidden ?? extra['wnet.fc1.weight']?.shape[1], inputs: weighting?.inputs ?? ['loss'] };
      const r = await exportClipFolder(opts.out, {
        config: info.model, params: ck.params, dtype, tokenizer: tok, extra, extraMetadata, normalization, overwrite: opts.overwrite,
      });
      return { ...r, source: { kind: 'checkpoint', dir: info.dir, step: info.step }, tokenizerDir: tok.dir };
    } finally {
      tf.dispose([...Object.values(ck.params), ...Object.values(ck.optimizer ?? {})]);
    }
  }

  const tok = await tokenizerFor(info.tokenizerDir, opts.tokenizer, `${src}`);
  const store = await loadModel(info, 0);
  try {
    const extra = info.clip?.extra;
    const r = await exportClipFolder(opts.out, {
      config: info.model, params: store.snapshot(), dtype, tokenizer: tok, extra: extra?.tensors, extraMetadata: extra?.metadata, normalization, overwrite: opts.overwrite,
    });
    return { ...r, source: { kind: 'clip', dir: info.dir }, tokenizerDir: tok.dir };
  } finally {
    store.dispose();
  }
}
