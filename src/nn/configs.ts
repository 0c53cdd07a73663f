/**
 * Dual-encoder configurations: a zod schema (configs travel in checkpoints' `config.json`)
 * and three presets. `base` has exactly the shapes of CLIP ViT-B/16 so its weights map in
 * (see clipMapping.ts); `tiny` is sized for CPU tests; `small` for CPU pretraining demos.
 *
 * @example
 * const cfg = getConfig('tiny', { text: { vocabSize: tokenizer.vocabSize } });
 */
import { z } from 'zod';

const posInt = z.number().int().positive();

export const visionConfigSchema = z.object({
  /** Frame side in pixels (frames are square, already resized and normalised). */
  imageSize: posInt,
  patchSize: posInt,
  width: posInt,
  layers: z.number().int().nonnegative(),
  heads: posInt,
  /** Hidden width of the MLP over the model width (4 in CLIP). */
  mlpRatio: posInt,
  /**
   * Adds to each frame's patch tokens an embedding of the same patches of the difference to the
   * next frame (`video.temporal.motion_embed`), so direction and speed show within a frame's
   * tokens rather than only across frames (docs/DESIGN.md §4). Default false (CLIP).
   */
  motion: z.boolean().optional(),
  /**
   * What `motion` embeds: `difference` (default), f[k+1] − f[k], signed by the object's contrast
   * with the background; `foreground`, the difference of |f[k] − the clip's mean frame|, positive
   * where the object arrives and negative where it left whatever its colour (docs/DESIGN.md §4).
   */
  motionInput: z.enum(['difference', 'foreground']).optional(),
  /**
   * `patch` (default, CLIP): each patch is one linear map of its pixels. `conv`: two 3×3
   * convolutions of stride 2 (with GELU) first, then patches of the feature map, so a small
   * object gives the same features wherever it sits in a patch (docs/DESIGN.md §4); `motion`
   * keeps its linear embedding of the differences. The patch side must then be a multiple of 4.
   */
  stem: z.enum(['patch', 'conv']).optional(),
  /**
   * `frame` (default, CLIP): the ViT blocks attend within each frame. `joint`: over all frames'
   * tokens of a clip at once (space-time attention), each frame's marked by a learnt time
   * embedding of `temporal.maxFrames` rows (docs/DESIGN.md §4).
   */
  attention: z.enum(['frame', 'joint']).optional(),
}).strict();

export const textConfigSchema = z.object({
  vocabSize: posInt,
  /** Largest sequence length; the positional embedding has this many rows. */
  contextLength: posInt,
  width: posInt,
  layers: z.number().int().nonnegative(),
  heads: posInt,
  mlpRatio: posInt,
  /** CLIP's text transformer is causal; a bidirectional one suits CLS pooling. */
  causal: z.boolean(),
  /** `eos`: the last non-pad token of each row (CLIP); `cls`: the first token. */
  pooling: z.enum(['eos', 'cls']),
}).strict();

export const temporalConfigSchema = z.object({
  /** `mean` of the per-frame class tokens, or a small `transformer` over them, then the mean. */
  pooling: z.enum(['mean', 'transformer']),
  /** Rows of the temporal positional embedding: the most frames a clip may have. */
  maxFrames: posInt,
  layers: z.number().int().nonnegative(),
  heads: posInt,
}).strict();

export const dualEncoderConfigSchema = z.object({
  name: z.string(),
  vision: visionConfigSchema,
  text: textConfigSchema,
  temporal: temporalConfigSchema,
  /** Width of the shared embedding space both projections map into. */
  embedDim: posInt,
  activation: z.enum(['gelu', 'quickGelu']),
  layerNormEps: z.number().positive(),
  /** Initial value of the learnable `logit_scale` (its exp is the logit multiplier). */
  logitScaleInit: z.number(),
}).strict().superRefine((c, ctx) => {
  const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
  if (c.vision.imageSize % c.vision.patchSize !== 0) {
    issue(['vision', 'patchSize'], `patchSize ${c.vision.patchSize} must divide imageSize ${c.vision.imageSize}`);
  }
  if (c.vision.stem === 'conv' && c.vision.patchSize % 4 !== 0) {
    issue(['vision', 'patchSize'], `patchSize ${c.vision.patchSize} must be a multiple of 4 with stem 'conv' (two stride-2 convolutions)`);
  }
  if (c.vision.width % c.vision.heads !== 0) issue(['vision', 'heads'], `heads ${c.vision.heads} must divide width ${c.vision.width}`);
  if (c.text.width % c.text.heads !== 0) issue(['text', 'heads'], `heads ${c.text.heads} must divide width ${c.text.width}`);
  if (c.text.pooling === 'cls' && c.text.causal) {
    issue(['text', 'pooling'], 'CLS pooling needs a bidirectional text transformer (causal: false): under a causal mask the first token sees only itself');
  }
  if (c.temporal.pooling === 'transformer' && c.vision.width % c.temporal.heads !== 0) {
    issue(['temporal', 'heads'], `heads ${c.temporal.heads} must divide the vision width ${c.vision.width}`);
  }
});

export type VisionConfig = z.infer<typeof visionConfigSchema>;
export type TextConfig = z.infer<typeof textConfigSchema>;
export type TemporalConfig = z.infer<typeof temporalConfigSchema>;
export type DualEncoderConfig = z.infer<typeof dualEncoderConfigSchema>;

/** ln(100): docs/DESIGN.md §5, the SAM loss's scale starts at 100. */
const LOGIT_SCALE_INIT = Math.log(100);

const PRESETS = {
  // A training step at batch 32 × 4 frames stays well under a second on wasm (2 cores).
  tiny: {
    name: 'tiny',
    vision: { imageSize: 32, patchSize: 8, width: 64, layers: 2, heads: 4, mlpRatio: 4 },
    text: { vocabSize: 1000, contextLength: 16, width: 64, layers: 2, heads: 4, mlpRatio: 4, causal: true, pooling: 'eos' },
    temporal: { pooling: 'mean', maxFrames: 8, layers: 1, heads: 4 },
    embedDim: 64,
    activation: 'gelu',
    layerNormEps: 1e-5,
    logitScaleInit: LOGIT_SCALE_INIT,
  },
  small: {
    name: 'small',
    vision: { imageSize: 112, patchSize: 16, width: 256, layers: 6, heads: 4, mlpRatio: 4 },
    text: { vocabSize: 8192, contextLength: 32, width: 256, layers: 6, heads: 4, mlpRatio: 4, causal: true, pooling: 'eos' },
    temporal: { pooling: 'mean', maxFrames: 16, layers: 2, heads: 4 },
    embedDim: 256,
    activation: 'gelu',
    layerNormEps: 1e-5,
    logitScaleInit: LOGIT_SCALE_INIT,
  },
  // CLIP ViT-B/16 (openai/clip-vit-base-patch16).
  base: {
    name: 'base',
    vision: { imageSize: 224, patchSize: 16, width: 768, layers: 12, heads: 12, mlpRatio: 4 },
    text: { vocabSize: 49408, contextLength: 77, width: 512, layers: 12, heads: 8, mlpRatio: 4, causal: true, pooling: 'eos' },
    temporal: { pooling: 'mean', maxFrames: 32, layers: 4, heads: 12 },
    embedDim: 512,
    activation: 'quickGelu',
    layerNormEps: 1e-5,
    logitScaleInit: LOGIT_SCALE_INIT,
  },
} as const satisfies Record<string, DualEncoderConfig>;

export type PresetName = keyof typeof PRESETS;
export const PRESET_NAMES = Object.keys(PRESETS) as PresetName[];

/** One level of optional overrides per section (`{ text: { vocabSize: 5000 } }`). */
export type ConfigOverrides = {
  [K in keyof DualEncoderConfig]?: DualEncoderConfig[K] extends object ? Partial<DualEncoderConfig[K]> : DualEncoderConfig[K];
};

/**
 * Validates a configuration (e.g. read from a checkpoint's config.json); throws an error
 * listing every bad field with its path.
 *
 * @example validateConfig(JSON.parse(await readFile('run/config.json', 'utf8')).model, 'run/config.json')
 */
export function validateConfig(raw: unknown, source = 'config'): DualEncoderConfig {
  const r = dualEncoderConfigSchema.safeParse(raw);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `  ${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new Error(`invalid dual-encoder config (${source}):\n${lines.join('\n')}`);
  }
  return r.data;
}

/**
 * A preset with optional per-section overrides, validated.
 *
 * @example getConfig('tiny', { text: { vocabSize: 3000 }, temporal: { pooling: 'transformer' } })
 */
export function getConfig(name: PresetName, overrides: ConfigOverrides = {}): DualEncoderConfig {
  if (!(name in PRESETS)) throw new Error(`getConfig: unknown preset '${String(name)}' (known: ${PRESET_NAMES.join(', ')})`);
  const base = PRESETS[name] as DualEncoderConfig;
  const merged: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(overrides)) {
    const cur = (base as Record<string, unknown>)[k];
    merged[k] = cur !== null && typeof cur === 'object' && v !== null && typeof v === 'object' ? { ...cur, ...v } : v;
  }
  return validateConfig(merged, `preset '${name}' with overrides`);
}
