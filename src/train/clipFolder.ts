/**
 * A Hugging Face CLIP model folder as a starting point: `config.json` gives the model's shapes
 * (any size: ViT-B/32, B/16, L/14 … with no preset), `model.safetensors` (F32, F16 or BF16) its
 * weights, `tokenizer.json` its tokenizer (read with `loadTokenizer`), and
 * `preprocessor_config.json` the frames' size, mean and std.
 *
 * `config.json` as `save_pretrained` writes it leaves out every field equal to transformers'
 * default, so a missing field takes CLIPTextConfig's / CLIPVisionConfig's default (those of
 * openai/clip-vit-base-patch32).
 *
 * On top of CLIP the temporal pooling starts as CLIP4Clip's meanP: the mean of the frames'
 * class tokens. A temporal transformer can be switched on; its residual branches and positional
 * embedding then start at zero (`temporalMeanInit`), so its output is still the mean until the
 * first update moves it.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { readClipExtra, type ClipExtra } from './clipExport.js';
import { bf16ToF32, f16ToF32, firstNonFinite, readSafetensors } from './safetensors.js';
import { mapClipWeights, type ClipSourceTensor } from '../nn/clipMapping.js';
import { validateConfig, type DualEncoderConfig } from '../nn/configs.js';
import type { HostTensor } from '../nn/params.js';

/** Frames as the folder's image processor makes them: short side to `imageSize`, centre crop, `(x/255 − mean)/std`. */
export interface ClipPreprocess {
  imageSize: number;
  mean: [number, number, number];
  std: [number, number, number];
  /** Where the values came from: the folder's preprocessor_config.json, or CLIP's defaults when it has none. */
  source: string;
}

export interface ClipTemporalOptions {
  /** `mean` (meanP, the default) or a temporal `transformer` started as the mean. */
  pooling?: 'mean' | 'transformer';
  /** Most frames per clip the temporal positional embedding holds (default 32). */
  maxFrames?: number;
  /** Temporal transformer blocks (default 4, as CLIP4Clip's seqTransf). */
  layers?: number;
}

export interface ClipFolderInfo {
  dir: string;
  /** The dual encoder with the folder's shapes and the chosen temporal pooling. */
  config: DualEncoderConfig;
  preprocess: ClipPreprocess;
  /** Text context length (max_position_embeddings; 77 for OpenAI's). */
  contextLength: number;
  /** model.safetensors, the file the weights come from. */
  weightsFile: string;
  /** What a vlmargin export keeps beside CLIP's weights (its exact config, temporal transformer, weighting net); null for a plain CLIP folder. */
  extra: ClipExtra | null;
}

const CONFIG = 'config.json';
const WEIGHTS = 'model.safetensors';
const PREPROCESSOR = 'preprocessor_config.json';
const TOKENIZER = 'tokenizer.json';

/** transformers' CLIPTextConfig defaults (what a diff-saved config.json leaves out). */
const TEXT_DEFAULTS = {
  vocab_size: 49408, hidden_size: 512, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 8,
  max_position_embeddings: 77, hidden_act: 'quick_gelu', layer_norm_eps: 1e-5,
};
/** transformers' CLIPVisionConfig defaults. */
const VISION_DEFAULTS = {
  hidden_size: 768, intermediate_size: 3072, num_hidden_layers: 12, num_attention_heads: 12, num_channels: 3,
  image_size: 224, patch_size: 32, hidden_act: 'quick_gelu', layer_norm_eps: 1e-5,
};
const CLIP_DEFAULTS = { projection_dim: 512, logit_scale_init_value: 2.6592 };
/** OpenAI CLIP's normalisation (CLIPImageProcessor's defaults). */
const DEFAULT_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
const DEFAULT_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

const ACTIVATIONS: Record<string, DualEncoderConfig['activation']> = { quick_gelu: 'quickGelu', gelu: 'gelu' };

type Json = Record<string, unknown>;

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

async function readJson(file: string, expected: string): Promise<Json> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); expected ${expected}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message}); expected ${expected}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${file}: expected ${expected}, got ${Array.isArray(v) ? 'an array' : String(v)}`);
  return v as Json;
}

/**
 * Whether `dir` is a Hugging Face CLIP folder (a config.json with `vision_config` and
 * `text_config`, beside model.safetensors), as opposed to a vlmargin checkpoint or run folder.
 *
 * @example if (await isClipFolder('models/clip-vit-base-patch32')) …
 */
export async function isClipFolder(dir: string): Promise<boolean> {
  const file = path.join(path.resolve(dir), CONFIG);
  if (!(await exists(file)) || (await exists(path.join(path.resolve(dir), 'state.json')))) return false;
  try {
    const c = JSON.parse(await readFile(file, 'utf8')) as Json;
    return c !== null && typeof c === 'object' && ('vision_config' in c || 'text_config' in c || c.model_type === 'clip');
  } catch {
    return false;
  }
}

/**
 * A Hugging Face `CLIPConfig` (config.json) as our dual-encoder config, field by field.
 *
 * @param temporal the pooling over frames on top of CLIP (default meanP)
 * @example clipConfigFromHf(JSON.parse(text), 'models/clip/config.json', { pooling: 'transformer', maxFrames: 12 })
 */
export function clipConfigFromHf(hf: unknown, source = CONFIG, temporal: ClipTemporalOptions = {}): DualEncoderConfig {
  if (hf === null || typeof hf !== 'object' || Array.isArray(hf)) throw new Error(`${source}: expected a CLIPConfig object`);
  const h = hf as Json;
  if (h.model_type !== undefined && h.model_type !== 'clip') {
    throw new Error(`${source}: model_type is '${String(h.model_type)}'; expected 'clip' (a CLIPModel folder)`);
  }
  const section = (key: string): Json => {
    const s = h[key];
    if (s === undefined) return {};
    if (s === null || typeof s !== 'object' || Array.isArray(s)) throw new Error(`${source}: '${key}' must be an object`);
    return s as Json;
  };
  const t = { ...TEXT_DEFAULTS, ...section('text_config') } as Json;
  const v = { ...VISION_DEFAULTS, ...section('vision_config') } as Json;
  const top = { ...CLIP_DEFAULTS, ...h } as Json;
  const int = (o: Json, key: string, where: string): number => {
    const x = o[key];
    if (!Number.isInteger(x) || (x as number) < 1) throw new Error(`${source}: ${where}.${key} must be a positive integer, got ${JSON.stringify(x)}`);
    return x as number;
  };
  const ratio = (o: Json, where: string): number => {
    const r = int(o, 'intermediate_size', where) / int(o, 'hidden_size', where);
    if (!Number.isInteger(r)) {
      throw new Error(`${source}: ${where}.intermediate_size ${String(o.intermediate_size)} is not a whole multiple of hidden_size ${String(o.hidden_size)}; this dual encoder's MLP width is an integer ratio of the model width`);
    }
    return r;
  };
  const act = (o: Json, where: string): DualEncoderConfig['activation'] => {
    const a = ACTIVATIONS[String(o.hidden_act)];
    if (!a) throw new Error(`${source}: ${where}.hidden_act '${String(o.hidden_act)}' is not supported; expected quick_gelu or gelu`);
    return a;
  };
  const va = act(v, 'vision_config');
  const ta = act(t, 'text_config');
  if (va !== ta) throw new Error(`${source}: the towers use different activations (vision ${String(v.hidden_act)}, text ${String(t.hidden_act)}); this dual encoder has one`);
  if (v.num_channels !== 3) throw new Error(`${source}: vision_config.num_channels is ${String(v.num_channels)}; expected 3 (RGB)`);
  const eps = Number(v.layer_norm_eps);
  if (Number(t.layer_norm_eps) !== eps) throw new Error(`${source}: the towers use different layer_norm_eps; this dual encoder has one`);
  const visionHeads = int(v, 'num_attention_heads', 'vision_config');
  const pooling = temporal.pooling ?? 'mean';
  return validateConfig({
    name: path.basename(path.dirname(path.resolve(source))) || 'clip',
    vision: {
      imageSize: int(v, 'image_size', 'vision_config'), patchSize: int(v, 'patch_size', 'vision_config'), width: int(v, 'hidden_size', 'vision_config'),
      layers: int(v, 'num_hidden_layers', 'vision_config'), heads: visionHeads, mlpRatio: ratio(v, 'vision_config'),
    },
    text: {
      vocabSize: int(t, 'vocab_size', 'text_config'), contextLength: int(t, 'max_position_embeddings', 'text_config'), width: int(t, 'hidden_size', 'text_config'),
      layers: int(t, 'num_hidden_layers', 'text_config'), heads: int(t, 'num_attention_heads', 'text_config'), mlpRatio: ratio(t, 'text_config'),
      causal: true, pooling: 'eos',
    },
    temporal: { pooling, maxFrames: temporal.maxFrames ?? 32, layers: temporal.layers ?? 4, heads: visionHeads },
    embedDim: int(top, 'projection_dim', '(top level)'),
    activation: va,
    layerNormEps: eps,
    logitScaleInit: Number(top.logit_scale_init_value),
  }, source);
}

function triple(x: unknown, key: string, file: string): [number, number, number] {
  if (typeof x === 'number' && Number.isFinite(x)) return [x, x, x];
  if (!Array.isArray(x) || x.length !== 3 || x.some((e) => typeof e !== 'number' || !Number.isFinite(e))) {
    throw new Error(`${file}: ${key} must be 3 numbers (R, G, B), got ${JSON.stringify(x)}`);
  }
  return x as [number, number, number];
}

/** A size field of preprocessor_config.json: a number, `{ height, width }` or `{ shortest_edge }`. */
function sizeOf(x: unknown): number | null {
  if (typeof x === 'number') return x;
  if (x !== null && typeof x === 'object') {
    const o = x as Json;
    if (typeof o.height === 'number' && o.height === o.width) return o.height;
    if (typeof o.shortest_edge === 'number') return o.shortest_edge;
  }
  return null;
}

/**
 * The folder's frame preprocessing (preprocessor_config.json; CLIP's defaults when absent).
 * Frames are resized so the short side is the crop size and the centre square cropped
 * (ffmpeg's bicubic, where Hugging Face uses PIL's: equal when the short side already has that size).
 */
export async function readClipPreprocess(dir: string, imageSize: number): Promise<ClipPreprocess> {
  const file = path.join(path.resolve(dir), PREPROCESSOR);
  if (!(await exists(file))) return { imageSize, mean: [...DEFAULT_MEAN], std: [...DEFAULT_STD], source: 'CLIP defaults (no preprocessor_config.json)' };
  const p = await readJson(file, 'a Hugging Face image processor config (image_mean, image_std, crop_size)');
  const mean = p.image_mean === undefined ? [...DEFAULT_MEAN] as [number, number, number] : triple(p.image_mean, 'image_mean', file);
  const std = p.image_std === undefined ? [...DEFAULT_STD] as [number, number, number] : triple(p.image_std, 'image_std', file);
  if (std.some((s) => !(s > 0))) throw new Error(`${file}: image_std must be positive, got ${JSON.stringify(std)}`);
  if (p.do_normalize === false || p.do_rescale === false) {
    throw new Error(`${file}: do_normalize/do_rescale false is not supported; frames are always scaled to [0, 1] and normalised`);
  }
  const crop = p.do_center_crop === false ? sizeOf(p.size) : sizeOf(p.crop_size) ?? sizeOf(p.size);
  if (crop !== null && crop !== imageSize) {
    throw new Error(`${file}: frames are cropped to ${crop} px but config.json's vision_config.image_size is ${imageSize}; expected the same size`);
  }
  return { imageSize, mean, std, source: file };
}

/**
 * Reads a Hugging Face CLIP folder's settings without its weights. A folder written by
 * `exportClipFolder` brings its exact config (the temporal pooling included) from
 * vlmargin_extra.safetensors, and `temporal` is not used.
 *
 * @example const info = await readClipFolder('models/clip-vit-base-patch32'); info.config.vision.patchSize // 32
 */
export async function readClipFolder(dir: string, temporal: ClipTemporalOptions = {}): Promise<ClipFolderInfo> {
  if (typeof dir !== 'string' || !dir) throw new Error('readClipFolder: dir must be a folder path');
  const abs = path.resolve(dir);
  const configFile = path.join(abs, CONFIG);
  const hf = await readJson(configFile, 'a Hugging Face CLIPConfig (text_config, vision_config, projection_dim)');
  const fromHf = clipConfigFromHf(hf, configFile, temporal);
  const extra = await readClipExtra(abs, fromHf);
  const config = extra ? extra.config : fromHf;
  const weightsFile = path.join(abs, WEIGHTS);
  if (!(await exists(weightsFile))) {
    const bin = await exists(path.join(abs, 'pytorch_model.bin'));
    throw new Error(`${abs}: no ${WEIGHTS}${bin ? ' (only pytorch_model.bin: save the model again with safe_serialization=True, or convert it with the safetensors package)' : ''}; expected a CLIPModel saved by save_pretrained`);
  }
  if (!(await exists(path.join(abs, TOKENIZER)))) {
    throw new Error(`${abs}: no ${TOKENIZER}; expected the CLIP tokenizer saved beside the model (CLIPTokenizer.save_pretrained writes it)`);
  }
  const preprocess = await readClipPreprocess(abs, config.vision.imageSize);
  return { dir: abs, config, preprocess, contextLength: config.text.contextLength, weightsFile, extra };
}

/**
 * The folder's weights under our names and layouts (F16 and BF16 converted to float32
 * exactly). Temporal-transformer parameters are not in CLIP: see `temporalMeanInit`.
 */
export async function loadClipWeights(info: ClipFolderInfo): Promise<Record<string, HostTensor>> {
  const file = await readSafetensors(info.weightsFile);
  const source = new Map<string, ClipSourceTensor>();
  for (const [name, t] of file.tensors) {
    // Diverged weights would only surface steps later as a NaN similarity, far from the file.
    const at = firstNonFinite(t);
    if (at >= 0) throw new Error(`${info.weightsFile}: tensor '${name}' has a non-finite value at flat index ${at}; these weights cannot be used`);
    if (t.dtype === 'F16') source.set(name, { shape: t.shape, data: f16ToF32(t.data as Uint16Array), dtype: 'F32' });
    else if (t.dtype === 'BF16') source.set(name, { shape: t.shape, data: bf16ToF32(t.data as Uint16Array), dtype: 'F32' });
    else source.set(name, { shape: t.shape, data: t.data as ClipSourceTensor['data'], dtype: t.dtype });
  }
  return mapClipWeights(source, info.config, info.weightsFile);
}

/**
 * Zeros for the temporal transformer's positional embedding and each block's residual
 * branches (`attn.out`, `mlp.fc2`): every block is then the identity, so the pooled output is
 * the mean of the frames, as meanP, and the first update starts from there. Empty when the
 * config pools by the mean.
 *
 * @example store.assign(temporalMeanInit(cfg));
 */
export function temporalMeanInit(cfg: DualEncoderConfig): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  if (cfg.temporal.pooling !== 'transformer') return out;
  const w = cfg.vision.width;
  const zeros = (shape: number[]): HostTensor => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
  out['video.temporal.pos_embed'] = zeros([cfg.temporal.maxFrames, w]);
  for (let i = 0; i < cfg.temporal.layers; i++) {
    const b = `video.temporal.blocks.${i}`;
    out[`${b}.attn.out.weight`] = zeros([w, w]);
    out[`${b}.attn.out.bias`] = zeros([w]);
    out[`${b}.mlp.fc2.weight`] = zeros([w * cfg.vision.mlpRatio, w]);
    out[`${b}.mlp.fc2.bias`] = zeros([w]);
  }
  return out;
}

/** SHA-256 of a file, streamed (a CLIP checkpoint is hundreds of MB). */
export async function fileSha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
