/**
 * Hugging Face CLIP weights (`CLIPModel` safetensors, e.g. openai/clip-vit-base-patch16)
 * onto the dual encoder's parameter names and layouts.
 *
 * Layout changes: PyTorch linear weights are [out, in] and ours [in, out] (transpose);
 * q_proj, k_proj, v_proj are concatenated into one `attn.qkv` [D, 3D]; the patch conv
 * weight [D, 3, p, p] becomes the matmul weight [p·p·3, D] whose rows follow our patch
 * vector order (row in patch, column in patch, channel). `*.position_ids` buffers that
 * older checkpoints carry are ignored. The temporal transformer has no CLIP counterpart:
 * `clipUncoveredParams(cfg)` lists what keeps its fresh initialisation.
 *
 * CLIP checkpoints differ in their MLP activation (OpenAI: quick_gelu; LAION: gelu): set
 * `cfg.activation` from the checkpoint's config.json `hidden_act`.
 */
import type { DualEncoderConfig } from './configs.js';
import { dualEncoderSpecs } from './dualEncoder.js';
import { shapeSize, type HostTensor } from './params.js';

/**
 * One tensor as read from a file. Weights must hold float values (Float32Array,
 * Float64Array or numbers; convert F16/BF16 first); other arrays are accepted in the type
 * so a whole `readSafetensors` map can be passed (its integer `position_ids` are skipped).
 */
export interface ClipSourceTensor {
  shape: number[];
  data: ArrayLike<number> | ArrayLike<bigint>;
  dtype?: string;
}

export type ClipSource = Record<string, ClipSourceTensor> | ReadonlyMap<string, ClipSourceTensor>;

/**
 * One layout change, both ways: `toOurs` joins the Hugging Face tensors of a rule into our
 * one tensor; `toHf` splits ours back into theirs. Each is the exact inverse of the other (a
 * permutation of the same float32 values), so a round trip reproduces every byte.
 */
interface Layout {
  toOurs: (hf: Float32Array[], hfShapes: number[][]) => Float32Array;
  toHf: (ours: Float32Array, hfShapes: number[][]) => Float32Array[];
}

interface Rule {
  ours: string;
  oursShape: number[];
  hf: string[];
  hfShapes: number[][];
  layout: Layout;
}

// Copies, so the mapped weights never alias the caller's arrays.
const same: Layout = {
  toOurs: ([a]) => a.slice(),
  toHf: (a) => [a.slice()],
};

/** HF [out, in] ↔ ours [in, out]. */
const transposed: Layout = {
  toOurs: ([a], [[rows, cols]]) => {
    const out = new Float32Array(a.length);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
    return out;
  },
  toHf: (a, [[rows, cols]]) => {
    const out = new Float32Array(a.length);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = a[c * rows + r];
    return [out];
  },
};

/** HF q, k, v weights [D, D] each ([out, in]) ↔ ours [D, 3D] ([in, out], q | k | v). */
const qkvWeight: Layout = {
  toOurs: (parts, [[d]]) => {
    const out = new Float32Array(3 * d * d);
    parts.forEach((a, s) => {
      for (let o = 0; o < d; o++) for (let i = 0; i < d; i++) out[i * 3 * d + s * d + o] = a[o * d + i];
    });
    return out;
  },
  toHf: (a, [[d]]) => [0, 1, 2].map((s) => {
    const part = new Float32Array(d * d);
    for (let o = 0; o < d; o++) for (let i = 0; i < d; i++) part[o * d + i] = a[i * 3 * d + s * d + o];
    return part;
  }),
};

/** HF q, k, v biases [D] each ↔ ours [3D]. */
const qkvBias: Layout = {
  toOurs: (parts) => {
    const d = parts[0].length;
    const out = new Float32Array(3 * d);
    parts.forEach((a, s) => out.set(a, s * d));
    return out;
  },
  toHf: (a, [[d]]) => [0, 1, 2].map((s) => a.slice(s * d, (s + 1) * d)),
};

/** HF conv [D, C, p, p] ↔ ours [p·p·C, D], row (ky·p + kx)·C + c. */
function patchIndex(d: number, c: number, p: number, visit: (hf: number, ours: number) => void): void {
  for (let o = 0; o < d; o++) {
    for (let ch = 0; ch < c; ch++) {
      for (let ky = 0; ky < p; ky++) {
        for (let kx = 0; kx < p; kx++) visit(((o * c + ch) * p + ky) * p + kx, ((ky * p + kx) * c + ch) * d + o);
      }
    }
  }
}

const patchWeight: Layout = {
  toOurs: ([a], [[d, c, p]]) => {
    const out = new Float32Array(a.length);
    patchIndex(d, c, p, (hf, ours) => { out[ours] = a[hf]; });
    return out;
  },
  toHf: (a, [[d, c, p]]) => {
    const out = new Float32Array(a.length);
    patchIndex(d, c, p, (hf, ours) => { out[hf] = a[ours]; });
    return [out];
  },
};

function rules(cfg: DualEncoderConfig): Rule[] {
  if (cfg.vision.stem === 'conv') {
    throw new Error(`clipMapping: config '${cfg.name}' has vision.stem 'conv', which CLIP has no place for (CLIP embeds patches linearly); a CLIP start or export needs the patch stem`);
  }
  const shapes = new Map(dualEncoderSpecs(cfg).map((s) => [s.name, s.shape]));
  const out: Rule[] = [];
  const add = (ours: string, hf: string[], hfShapes: number[][], layout: Layout) => {
    const oursShape = shapes.get(ours);
    if (!oursShape) throw new Error(`clipMapping: internal: no parameter '${ours}' in the dual encoder`);
    out.push({ ours, oursShape, hf, hfShapes, layout });
  };
  const copy = (ours: string, hf: string) => add(ours, [hf], [shapes.get(ours)!], same);
  const lin = (ours: string, hf: string, bias = true) => {
    const [din, dout] = shapes.get(`${ours}.weight`)!;
    add(`${ours}.weight`, [`${hf}.weight`], [[dout, din]], transposed);
    if (bias) copy(`${ours}.bias`, `${hf}.bias`);
  };
  const norm = (ours: string, hf: string) => { copy(`${ours}.weight`, `${hf}.weight`); copy(`${ours}.bias`, `${hf}.bias`); };
  const blocks = (ours: string, hf: string, layers: number, width: number) => {
    for (let i = 0; i < layers; i++) {
      const o = `${ours}.${i}`;
      const h = `${hf}.${i}`;
      const qkv = ['q', 'k', 'v'].map((n) => `${h}.self_attn.${n}_proj`);
      add(`${o}.attn.qkv.weight`, qkv.map((n) => `${n}.weight`), [[width, width], [width, width], [width, width]], qkvWeight);
      add(`${o}.attn.qkv.bias`, qkv.map((n) => `${n}.bias`), [[width], [width], [width]], qkvBias);
      lin(`${o}.attn.out`, `${h}.self_attn.out_proj`);
      norm(`${o}.ln_1`, `${h}.layer_norm1`);
      norm(`${o}.ln_2`, `${h}.layer_norm2`);
      lin(`${o}.mlp.fc1`, `${h}.mlp.fc1`);
      lin(`${o}.mlp.fc2`, `${h}.mlp.fc2`);
    }
  };
  const v = cfg.vision;
  const t = cfg.text;
  copy('video.class_embedding', 'vision_model.embeddings.class_embedding');
  add('video.patch_embed.weight', ['vision_model.embeddings.patch_embedding.weight'], [[v.width, 3, v.patchSize, v.patchSize]], patchWeight);
  copy('video.pos_embed', 'vision_model.embeddings.position_embedding.weight');
  norm('video.ln_pre', 'vision_model.pre_layrnorm'); // sic: HF's spelling
  blocks('video.blocks', 'vision_model.encoder.layers', v.layers, v.width);
  norm('video.ln_post', 'vision_model.post_layernorm');
  lin('video.proj', 'visual_projection', false);
  copy('text.token_embed.weight', 'text_model.embeddings.token_embedding.weight');
  copy('text.pos_embed', 'text_model.embeddings.position_embedding.weight');
  blocks('text.blocks', 'text_model.encoder.layers', t.layers, t.width);
  norm('text.ln_final', 'text_model.final_layer_norm');
  lin('text.proj', 'text_projection', false);
  copy('logit_scale', 'logit_scale');
  return out;
}

/** The Hugging Face names a CLIP checkpoint for `cfg` must hold, with their shapes. */
export function clipTensorShapes(cfg: DualEncoderConfig): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const r of rules(cfg)) r.hf.forEach((n, i) => { out[n] = r.hfShapes[i]; });
  return out;
}

/** Our parameters that CLIP has no weights for (the temporal transformer); they keep their initialisation. */
export function clipUncoveredParams(cfg: DualEncoderConfig): string[] {
  const covered = new Set(rules(cfg).map((r) => r.ours));
  return dualEncoderSpecs(cfg).map((s) => s.name).filter((n) => !covered.has(n));
}

function isIgnoredBuffer(name: string): boolean {
  return name.endsWith('.position_ids');
}

/**
 * Maps Hugging Face CLIP tensors onto our names and layouts. Every problem (a missing
 * name, an unexpected one, a wrong shape, a non-float dtype) is collected and reported in
 * one error that names each tensor. Ours not in CLIP: see `clipUncoveredParams`.
 *
 * @param source name → {shape, data} (a record or a Map, e.g. `readSafetensors(f).tensors`
 *   after converting F16/BF16 data to float32)
 * @param cfg the dual-encoder config the weights are for (`getConfig('base')` for ViT-B/16)
 * @example
 * const mapped = mapClipWeights(hfTensors, getConfig('base'));
 * store.assign(mapped);
 */
export function mapClipWeights(source: ClipSource, cfg: DualEncoderConfig, sourceName = 'CLIP weights'): Record<string, HostTensor> {
  if (source === null || typeof source !== 'object') throw new Error(`mapClipWeights: 'source' must be a record or Map of name → {shape, data}`);
  if (!cfg.text.causal || cfg.text.pooling !== 'eos') {
    throw new Error(`mapClipWeights: CLIP's text encoder is causal with EOS pooling; cfg.text has causal=${cfg.text.causal}, pooling=${cfg.text.pooling}`);
  }
  const entries = source instanceof Map ? [...source.entries()] : Object.entries(source);
  const byName = new Map<string, ClipSourceTensor>(entries.filter(([n]) => !isIgnoredBuffer(n)));
  const rs = rules(cfg);
  const expected = new Set(rs.flatMap((r) => r.hf));
  const problems: string[] = [];
  for (const r of rs) {
    r.hf.forEach((name, i) => {
      const t = byName.get(name);
      const want = r.hfShapes[i];
      if (!t) { problems.push(`missing '${name}' [${want}] (for ${r.ours})`); return; }
      if (!Array.isArray(t.shape) || t.shape.length !== want.length || t.shape.some((d, k) => d !== want[k])) {
        problems.push(`'${name}' has shape [${t.shape}], expected [${want}] for config '${cfg.name}' (${r.ours})`);
        return;
      }
      if (t.dtype !== undefined && t.dtype !== 'F32' && t.dtype !== 'F64') {
        problems.push(`'${name}' has dtype ${t.dtype}; convert it to float32 first (f16ToF32 / bf16ToF32)`);
        return;
      }
      const isFloatData = t.data instanceof Float32Array || t.data instanceof Float64Array || Array.isArray(t.data);
      if (!isFloatData || t.data.length !== shapeSize(want)) {
        problems.push(`'${name}' data must be ${shapeSize(want)} float values, got ${isFloatData ? t.data.length : (t.data as object)?.constructor?.name ?? typeof t.data}`);
      }
    });
  }
  for (const name of byName.keys()) if (!expected.has(name)) problems.push(`unexpected '${name}' (not part of a CLIP model for config '${cfg.name}')`);
  if (problems.length) {
    const shown = problems.slice(0, 40);
    const more = problems.length > shown.length ? `\n  … and ${problems.length - shown.length} more` : '';
    throw new Error(`mapClipWeights (${sourceName}): ${problems.length} problem(s):\n  ${shown.join('\n  ')}${more}`);
  }
  const out: Record<string, HostTensor> = {};
  for (const r of rs) {
    const parts = r.hf.map((n) => {
      const d = byName.get(n)!.data;
      return d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>);
    });
    out[r.ours] = { shape: [...r.oursShape], data: r.layout.toOurs(parts, r.hfShapes) };
  }
  return out;
}

/**
 * Our parameters in Hugging Face CLIP's names and layouts: the inverse of `mapClipWeights`
 * through the same table, so `toClipWeights(mapClipWeights(w, cfg), cfg)` reproduces every
 * tensor of `w` bit for bit. Parameters CLIP has no place for (`clipUncoveredParams`) are
 * left out; every missing, unknown or mis-shaped parameter is named in one error.
 *
 * @param params our name → {shape, data} (float32, e.g. read back from a ParamStore)
 * @example
 * const hf = toClipWeights(mapClipWeights(hfTensors, cfg), cfg); // HF name → {shape, data}
 * await writeSafetensors('model.safetensors', Object.fromEntries(Object.entries(hf).map(([k, v]) => [k, { dtype: 'F32', ...v }])));
 */
export function toClipWeights(params: Record<string, HostTensor>, cfg: DualEncoderConfig, sourceName = 'vlmargin parameters'): Record<string, HostTensor> {
  if (params === null || typeof params !== 'object') throw new Error(`toClipWeights: 'params' must be a record of name → {shape, data}`);
  if (!cfg.text.causal || cfg.text.pooling !== 'eos') {
    throw new Error(`toClipWeights: CLIP's text encoder is causal with EOS pooling; cfg.text has causal=${cfg.text.causal}, pooling=${cfg.text.pooling}, which CLIP cannot represent`);
  }
  const rs = rules(cfg);
  const known = new Set([...rs.map((r) => r.ours), ...clipUncoveredParams(cfg)]);
  const problems: string[] = [];
  for (const r of rs) {
    const t = params[r.ours];
    if (!t) { problems.push(`missing '${r.ours}' [${r.oursShape}]`); continue; }
    if (!Array.isArray(t.shape) || t.shape.length !== r.oursShape.length || t.shape.some((d, k) => d !== r.oursShape[k])) {
      problems.push(`'${r.ours}' has shape [${t.shape}], expected [${r.oursShape}] for config '${cfg.name}'`);
    } else if (!(t.data instanceof Float32Array) || t.data.length !== shapeSize(r.oursShape)) {
      problems.push(`'${r.ours}' data must be a Float32Array of ${shapeSize(r.oursShape)} values`);
    }
  }
  for (const name of Object.keys(params)) if (!known.has(name)) problems.push(`unexpected '${name}' (not a parameter of config '${cfg.name}')`);
  if (problems.length) {
    const shown = problems.slice(0, 40);
    const more = problems.length > shown.length ? `\n  … and ${problems.length - shown.length} more` : '';
    throw new Error(`toClipWeights (${sourceName}): ${problems.length} problem(s):\n  ${shown.join('\n  ')}${more}`);
  }
  const out: Record<string, HostTensor> = {};
  for (const r of rs) {
    const parts = r.layout.toHf(params[r.ours].data, r.hfShapes);
    r.hf.forEach((name, i) => { out[name] = { shape: [...r.hfShapes[i]], data: parts[i] }; });
  }
  return out;
}

/** The special token ids CLIP's text config records; the text model pools on the first `eos` of each row. */
export interface ClipTokenIds {
  bos: number | null;
  eos: number;
  pad: number;
}

/**
 * A transformers `CLIPConfig` (config.json) for `cfg`. HF's text model pools on the first
 * occurrence of `eos_token_id`, except that an id of 2 selects its older rule (the largest id
 * in the row), which matches ours only when EOS is the largest id: that case is refused.
 *
 * @example
 * const json = clipConfigJson(getConfig('base'), { bos: 49406, eos: 49407, pad: 49407 });
 * json.text_config.vocab_size // 49408
 */
export function clipConfigJson(cfg: DualEncoderConfig, tokens: ClipTokenIds): Record<string, unknown> & { text_config: Record<string, unknown>; vision_config: Record<string, unknown> } {
  if (!cfg.text.causal || cfg.text.pooling !== 'eos') {
    throw new Error(`clipConfigJson: CLIP's text encoder is causal with EOS pooling; this model has causal=${cfg.text.causal}, pooling=${cfg.text.pooling}, which CLIPModel cannot run`);
  }
  const ids = { bos: tokens.bos, eos: tokens.eos, pad: tokens.pad };
  for (const [k, v] of Object.entries(ids)) {
    if (v !== null && (!Number.isInteger(v) || v < 0 || v >= cfg.text.vocabSize)) {
      throw new Error(`clipConfigJson: token id ${k}=${v} is not in [0, ${cfg.text.vocabSize}) (the model's vocabulary)`);
    }
  }
  if (ids.eos === 2) {
    throw new Error('clipConfigJson: the EOS token id is 2, which transformers\' CLIP text model reads as "pool on the largest id in each row" (its rule for old configs), not on the EOS token; vlmargin pools on EOS, so the exported text embeddings would differ. Use a tokenizer whose EOS id is not 2');
  }
  const hiddenAct = { quickGelu: 'quick_gelu', gelu: 'gelu' }[cfg.activation];
  const common = (t: DualEncoderConfig['vision'] | DualEncoderConfig['text']) => ({
    hidden_size: t.width, intermediate_size: t.mlpRatio * t.width, num_hidden_layers: t.layers, num_attention_heads: t.heads,
    hidden_act: hiddenAct, layer_norm_eps: cfg.layerNormEps, projection_dim: cfg.embedDim, attention_dropout: 0,
  });
  const text: Record<string, unknown> = { vocab_size: cfg.text.vocabSize, max_position_embeddings: cfg.text.contextLength, ...common(cfg.text) };
  if (ids.bos !== null) text.bos_token_id = ids.bos;
  text.eos_token_id = ids.eos;
  text.pad_token_id = ids.pad;
  const vision = { image_size: cfg.vision.imageSize, patch_size: cfg.vision.patchSize, num_channels: 3, ...common(cfg.vision) };
  return {
    architectures: ['CLIPModel'],
    model_type: 'clip',
    projection_dim: cfg.embedDim,
    logit_scale_init_value: cfg.logitScaleInit,
    text_config: text,
    vision_config: vision,
  };
}
