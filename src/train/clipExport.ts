/**
 * A dual encoder as a Hugging Face CLIP folder, written and read back.
 *
 * Written: `config.json` (a transformers CLIPConfig), `model.safetensors` (CLIPModel's state
 * dict in F32, F16 or BF16), the tokenizer files (`tokenizer.json`, `tokenizer_config.json`,
 * `special_tokens_map.json`, and whichever vocabulary files the tokenizer folder holds),
 * `preprocessor_config.json` (CLIPImageProcessor with our frame size and normalisation), and
 * `vlmargin_extra.safetensors`: the tensors CLIP has no place for (the temporal transformer,
 * the weighting net) and, in its metadata, our exact config. transformers reads the folder as
 * a plain CLIP model and ignores the extra file; vlmargin's CLIP-folder loader (`readModelInfo`,
 * `loadModel`) reads it back through `readClipExtra` and restores everything.
 *
 * The weight names and layouts come from one table used both ways (nn/clipMapping), so the
 * CLIP tensors of an F32 export are the bytes `mapClipWeights` was given.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { tf } from '../backend/tf.js';
import { clipConfigJson, clipUncoveredParams, toClipWeights, type ClipTokenIds } from '../nn/clipMapping.js';
import { validateConfig, type DualEncoderConfig } from '../nn/configs.js';
import { dualEncoderSpecs } from '../nn/dualEncoder.js';
import type { HostTensor } from '../nn/params.js';
import { CLIP_MEAN, CLIP_STD } from '../video/transforms.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, readSafetensors, writeSafetensors, type SafetensorsTensor } from './safetensors.js';

export type ClipExportDtype = 'f32' | 'f16' | 'bf16';
export const CLIP_EXPORT_DTYPES: readonly ClipExportDtype[] = ['f32', 'f16', 'bf16'];

/** The file beside CLIP's weights that holds what CLIP cannot (and our config). */
export const CLIP_EXTRA_FILE = 'vlmargin_extra.safetensors';
const EXTRA_FORMAT = 'vlmargin-extra';
const EXTRA_VERSION = '1';

/** Tokenizer files copied when the tokenizer folder has them; the first two are required. */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt', 'vocab.json', 'merges.txt'];

const SAFETENSORS_DTYPE: Record<ClipExportDtype, 'F32' | 'F16' | 'BF16'> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };
const TORCH_DTYPE: Record<ClipExportDtype, string> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' };

/** What the export needs of a tokenizer (a loaded `Tokenizer` has all of it). */
export interface ClipExportTokenizer {
  dir: string;
  vocabSize: number;
  bosId: number | null;
  eosId: number;
  padId: number;
}

export interface ExportClipOptions {
  config: DualEncoderConfig;
  /** Every parameter of `config`'s dual encoder (tf tensors are read, not disposed). */
  params: Record<string, tf.Tensor | HostTensor>;
  /** Storage type of model.safetensors and the extra file (default f32). */
  dtype?: ClipExportDtype;
  /** The tokenizer the model was trained with: its files are copied, its ids go into config.json. */
  tokenizer?: ClipExportTokenizer;
  /** Without a tokenizer: the ids config.json records (a folder without tokenizer files results). */
  tokenIds?: ClipTokenIds;
  /** More vlmargin-only tensors (the weighting net as `wnet.*`) for the extra file. */
  extra?: Record<string, tf.Tensor | HostTensor>;
  /** JSON notes for the extra file's metadata (e.g. `{ weightNet: { hidden: 100 } }`). */
  extraMetadata?: Record<string, unknown>;
  /** Per-channel normalisation the model was trained with (default CLIP's). */
  normalization?: { mean: readonly number[]; std: readonly number[] };
  /** Replace `out` when it exists and is not empty (default false: refuse). */
  overwrite?: boolean;
}

export interface ExportClipResult {
  dir: string;
  files: string[];
  dtype: ClipExportDtype;
  clipTensors: number;
  extraTensors: number;
}

async function hostTensor(v: tf.Tensor | HostTensor, what: string): Promise<HostTensor> {
  if (v instanceof tf.Tensor) {
    if (v.isDisposed) throw new Error(`exportClipFolder: ${what} is a disposed tensor`);
    if (v.dtype !== 'float32') throw new Error(`exportClipFolder: ${what} has dtype ${v.dtype}, expected float32`);
    // Asynchronous: webgpu in Node cannot read synchronously.
    return { shape: [...v.shape], data: (await v.data()) as Float32Array };
  }
  if (!v || !Array.isArray(v.shape) || !(v.data instanceof Float32Array)) throw new Error(`exportClipFolder: ${what} must be a tf.Tensor or {shape, data: Float32Array}`);
  return v;
}

function encode(t: HostTensor, dtype: ClipExportDtype): SafetensorsTensor {
  const data = dtype === 'f16' ? f32ToF16(t.data) : dtype === 'bf16' ? f32ToBf16(t.data) : t.data;
  return { dtype: SAFETENSORS_DTYPE[dtype], shape: [...t.shape], data };
}

function decode(name: string, t: SafetensorsTensor, file: string): HostTensor {
  switch (t.dtype) {
    case 'F32': return { shape: t.shape, data: t.data as Float32Array };
    case 'F16': return { shape: t.shape, data: f16ToF32(t.data as Uint16Array) };
    case 'BF16': return { shape: t.shape, data: bf16ToF32(t.data as Uint16Array) };
    case 'F64': return { shape: t.shape, data: Float32Array.from(t.data as Float64Array) };
    default: throw new Error(`${file}: tensor '${name}' has dtype ${t.dtype}; expected F32, F16, BF16 or F64`);
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

async function readJson(file: string, expected: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : (e as Error).message}); expected ${expected}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message}); expected ${expected}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${file}: expected ${expected}, got ${Array.isArray(v) ? 'an array' : String(v)}`);
  return v as Record<string, unknown>;
}

/** CLIPImageProcessor settings for square frames of `size` pixels: short side to `size` (bicubic, as ffmpeg's scaler), centre crop, rescale, normalise. */
function preprocessorConfig(size: number, norm: { mean: readonly number[]; std: readonly number[] }): Record<string, unknown> {
  return {
    image_processor_type: 'CLIPImageProcessor',
    do_resize: true,
    size: { shortest_edge: size },
    resample: 3,
    do_center_crop: true,
    crop_size: { height: size, width: size },
    do_rescale: true,
    rescale_factor: 1 / 255,
    do_normalize: true,
    image_mean: [...norm.mean],
    image_std: [...norm.std],
    do_convert_rgb: true,
  };
}

/**
 * Writes `out` as a Hugging Face CLIP folder that `CLIPModel.from_pretrained(out)` loads with
 * no missing or unexpected keys (see the module comment for the files). The folder is built
 * under a temporary name beside `out` and renamed into place, so a failure leaves no half
 * export. Refused, with the reason: a text tower CLIP cannot run (bidirectional or CLS
 * pooling), a tokenizer larger than the model's vocabulary, an EOS id of 2 (see
 * `clipConfigJson`).
 *
 * @example
 * await exportClipFolder('export/clip', { config: modelCfg, params: store.snapshot(), tokenizer: tok, dtype: 'f16' });
 */
export async function exportClipFolder(out: string, opts: ExportClipOptions): Promise<ExportClipResult> {
  if (typeof out !== 'string' || out === '') throw new Error('exportClipFolder: out must be a folder path');
  const dtype = opts.dtype ?? 'f32';
  if (!CLIP_EXPORT_DTYPES.includes(dtype)) throw new Error(`exportClipFolder: dtype must be one of ${CLIP_EXPORT_DTYPES.join(', ')}, got ${JSON.stringify(dtype)}`);
  const cfg = validateConfig(opts.config, 'exportClipFolder config');
  const tok = opts.tokenizer;
  if (!tok && !opts.tokenIds) throw new Error('exportClipFolder: give the tokenizer (its files and ids go into the folder) or, without one, tokenIds');
  if (tok && tok.vocabSize > cfg.text.vocabSize) {
    throw new Error(`exportClipFolder: the tokenizer in ${tok.dir} has ${tok.vocabSize} ids but the model's token embedding has ${cfg.text.vocabSize} rows; this tokenizer is not the model's`);
  }
  const tokenIds: ClipTokenIds = tok ? { bos: tok.bosId, eos: tok.eosId, pad: tok.padId } : opts.tokenIds!;
  const configJson = { ...clipConfigJson(cfg, tokenIds), torch_dtype: TORCH_DTYPE[dtype] };

  const dir = path.resolve(out);
  if (await exists(dir)) {
    if (!(await stat(dir)).isDirectory()) throw new Error(`exportClipFolder: ${dir} is a file; expected a folder to write into`);
    if ((await readdir(dir)).length > 0 && !opts.overwrite) throw new Error(`exportClipFolder: ${dir} exists and is not empty; choose a new folder or allow overwriting`);
  }

  const params: Record<string, HostTensor> = {};
  for (const [name, v] of Object.entries(opts.params)) params[name] = await hostTensor(v, `parameter '${name}'`);
  const clip = toClipWeights(params, cfg);
  const extraTensors: Record<string, SafetensorsTensor> = {};
  for (const name of clipUncoveredParams(cfg)) {
    if (!params[name]) throw new Error(`exportClipFolder: missing parameter '${name}' (the temporal transformer of config '${cfg.name}')`);
    extraTensors[name] = encode(params[name], dtype);
  }
  const ours = new Set(dualEncoderSpecs(cfg).map((s) => s.name));
  for (const [name, v] of Object.entries(opts.extra ?? {})) {
    if (ours.has(name)) throw new Error(`exportClipFolder: extra tensor '${name}' has the name of a model parameter; give vlmargin-only tensors a prefix such as 'wnet.'`);
    extraTensors[name] = encode(await hostTensor(v, `extra tensor '${name}'`), dtype);
  }
  const metadata: Record<string, string> = { format: EXTRA_FORMAT, version: EXTRA_VERSION, config: JSON.stringify(cfg) };
  for (const [k, v] of Object.entries(opts.extraMetadata ?? {})) {
    if (k in metadata) throw new Error(`exportClipFolder: extraMetadata may not set '${k}'`);
    metadata[k] = JSON.stringify(v);
  }

  await mkdir(path.dirname(dir), { recursive: true });
  const tmp = path.join(path.dirname(dir), `.${path.basename(dir)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(tmp);
  const files: string[] = [];
  try {
    const json = async (name: string, value: unknown) => {
      await writeFile(path.join(tmp, name), `${JSON.stringify(value, null, 2)}\n`);
      files.push(name);
    };
    await json('config.json', configJson);
    const model: Record<string, SafetensorsTensor> = {};
    for (const [name, t] of Object.entries(clip)) model[name] = encode(t, dtype);
    // transformers refuses safetensors weights whose metadata does not name their framework.
    await writeSafetensors(path.join(tmp, 'model.safetensors'), model, { format: 'pt' });
    files.push('model.safetensors');
    await writeSafetensors(path.join(tmp, CLIP_EXTRA_FILE), extraTensors, metadata);
    files.push(CLIP_EXTRA_FILE);
    await json('preprocessor_config.json', preprocessorConfig(cfg.vision.imageSize, opts.normalization ?? { mean: CLIP_MEAN, std: CLIP_STD }));
    if (tok) files.push(...await copyTokenizer(tok.dir, tmp, cfg.text.contextLength));
    if (await exists(dir)) {
      const old = path.join(path.dirname(dir), `.${path.basename(dir)}.trash-${process.pid}-${randomBytes(4).toString('hex')}`);
      await rename(dir, old);
      await rename(tmp, dir);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, dir);
    }
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return { dir, files, dtype, clipTensors: Object.keys(clip).length, extraTensors: Object.keys(extraTensors).length };
}

/**
 * Copies the tokenizer files; tokenizer_config.json gets `model_max_length` = the model's
 * context, so a transformers tokenizer asked to truncate stops where the position table ends.
 */
async function copyTokenizer(from: string, to: string, contextLength: number): Promise<string[]> {
  const src = path.resolve(from);
  const copied: string[] = [];
  for (const name of TOKENIZER_FILES) {
    const file = path.join(src, name);
    if (!(await exists(file))) {
      if (name === 'tokenizer.json' || name === 'tokenizer_config.json') {
        throw new Error(`exportClipFolder: the tokenizer folder ${src} has no ${name}; expected a Hugging Face tokenizer folder (as \`vlmargin tokenizer build\` writes)`);
      }
      continue;
    }
    if (name === 'tokenizer_config.json') {
      const tc = await readJson(file, 'a tokenizer_config.json object');
      await writeFile(path.join(to, name), `${JSON.stringify({ ...tc, model_max_length: contextLength }, null, 2)}\n`);
    } else {
      await copyFile(file, path.join(to, name));
    }
    copied.push(name);
  }
  return copied;
}

/** What an export keeps beside CLIP's weights (`readClipExtra`). */
export interface ClipExtra {
  file: string;
  /** Our exact config (CLIP's config.json cannot say how frames are pooled). */
  config: DualEncoderConfig;
  /** The temporal transformer's parameters (empty for mean pooling), float32. */
  temporal: Record<string, HostTensor>;
  /** The other tensors (e.g. the weighting net, `wnet.*`), float32. */
  tensors: Record<string, HostTensor>;
  /** The JSON notes besides the config (e.g. `weightNet`, `frames`, `source`). */
  metadata: Record<string, unknown>;
}

/**
 * Reads `vlmargin_extra.safetensors` from an export folder; null when the folder has none (a
 * plain CLIP folder). `clipConfig` is the config read from the folder's config.json: it must
 * describe the same CLIP as the extra file's config, which is then returned whole.
 *
 * @example
 * const extra = await readClipExtra('export/clip', clipConfigFromHf(hfJson));
 * if (extra) store.assign(extra.temporal);
 */
export async function readClipExtra(dir: string, clipConfig: DualEncoderConfig): Promise<ClipExtra | null> {
  const file = path.join(path.resolve(dir), CLIP_EXTRA_FILE);
  if (!(await exists(file))) return null;
  const f = await readSafetensors(file);
  const { format, version, config, ...rest } = f.metadata;
  if (format !== EXTRA_FORMAT || version !== EXTRA_VERSION) {
    throw new Error(`${file}: metadata format/version is ${JSON.stringify(format)}/${JSON.stringify(version)}, expected "${EXTRA_FORMAT}"/"${EXTRA_VERSION}"`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(config ?? '');
  } catch {
    throw new Error(`${file}: metadata has no valid JSON 'config'`);
  }
  const cfg = validateConfig(parsed, `${file} metadata 'config'`);
  // config.json may have been edited after the export: it must still describe the same CLIP.
  const clipPart = (c: DualEncoderConfig) => JSON.stringify({ ...c, name: '', temporal: null });
  if (clipPart(cfg) !== clipPart(clipConfig)) {
    throw new Error(`${path.join(path.dirname(file), 'config.json')} and ${file} describe different models (config.json: ${clipPart(clipConfig)}; ${CLIP_EXTRA_FILE}: ${clipPart(cfg)})`);
  }
  const metadata: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rest)) {
    try {
      metadata[k] = JSON.parse(v);
    } catch {
      metadata[k] = v;
    }
  }
  const uncovered = new Set(clipUncoveredParams(cfg));
  const temporal: Record<string, HostTensor> = {};
  const tensors: Record<string, HostTensor> = {};
  for (const [name, t] of f.tensors) {
    const host = decode(name, t, file);
    if (uncovered.has(name)) temporal[name] = host;
    else tensors[name] = host;
  }
  const missing = [...uncovered].filter((n) => !temporal[n]);
  if (missing.length) throw new Error(`${file}: missing ${missing.length} tensor(s) of the temporal transformer: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ' …' : ''}`);
  return { file, config: cfg, temporal, tensors, metadata };
}
