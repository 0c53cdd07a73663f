/**
 * The pretraining config: one zod schema, validated once at the edge. Unknown keys and bad
 * values are errors that name the key (`train.batchSize: expected an integer ≥ 2`).
 */
import fs from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { WEIGHTING_INPUTS } from '../src/meta/inputNames.js';

const synthData = z.object({
  kind: z.literal('synth'),
  /** Folder of the generated corpus, frame caches and tokenizer (relative to the working directory). */
  dir: z.string().default('data/synth-default'),
  videos: z.number().int().min(18).optional(),
  /** Clips in the meta and test splits (multiples of 6); unset, about 10 % and 20 % of `videos`. */
  metaVideos: z.number().int().min(6).optional(),
  testVideos: z.number().int().min(6).optional(),
  noise: z.number().min(0).max(1).optional(),
  swapFraction: z.number().min(0).max(1).optional(),
  imbalance: z.number().min(1).optional(),
  seed: z.number().int().min(0).optional(),
  size: z.number().int().min(16).optional(),
  frames: z.number().int().min(2).optional(),
  fps: z.number().positive().optional(),
}).strict();

export const ManifestDataSchema = z.object({
  kind: z.literal('manifest'),
  /** Native JSONL manifest with `split` on every entry. */
  manifest: z.string(),
  /** Folder for the frame cache and built tokenizer (default: beside the manifest). */
  dir: z.string().optional(),
  trainSplit: z.string().default('train'),
  /** Scored by `train.evalEvery` (model selection); without entries in it, a slice of train is held out. */
  valSplit: z.string().default('val'),
  /** Scored once, at the end. */
  testSplit: z.string().default('test'),
  metaSplit: z.string().default('meta'),
  allowOutsideRoot: z.boolean().default(false),
}).strict();

export const MsrvttDataSchema = z.object({
  kind: z.literal('msrvtt'),
  /** `MSRVTT_data.json`. */
  annotations: z.string(),
  /** Folder with `<video_id>.mp4`. */
  videoDir: z.string(),
  /** `9k-1kA`: train on the 9k split (train + validate less the 1k-A videos), test on 1k-A; `full`: the JSON's train and test splits. */
  protocol: z.enum(['9k-1kA', 'full']).default('9k-1kA'),
  /** The 1k-A test list (`key,vid_key,video_id,sentence`); default `MSRVTT_JSFUSION_test.csv` beside the annotations. */
  testCsv: z.string().optional(),
  dir: z.string().default('data/msrvtt'),
  allowOutsideRoot: z.boolean().default(false),
}).strict();

/** Meta-learned sample weighting (docs/DESIGN.md §6): the same block in pretraining and fine-tuning. */
export const WeightingSchema = z.object({
  method: z.enum(['none', 'mwn', 'l2rw']).default('none'),
  /** 'heads': projections and logit scale take part in the virtual step (cheap); 'all': every parameter. */
  metaScope: z.enum(['all', 'heads']).default('heads'),
  /** Meta update every k steps (mwn); l2rw needs one every step. */
  metaEvery: z.number().int().min(1).default(1),
  /** α, the virtual step's learning rate. */
  alpha: z.number().positive().max(10).default(0.1),
  hidden: z.number().int().min(1).max(4096).default(100),
  /** What the weight net sees (mwn), in column order; ['loss'] is MW-Net. Its input width, so part of a checkpoint's shape. */
  inputs: z.array(z.enum(WEIGHTING_INPUTS)).min(1).default(['loss'])
    .refine((xs) => new Set(xs).size === xs.length, { message: 'each input at most once' }),
  /** The weight net's Adam learning rate. */
  lr: z.number().positive().max(1).default(1e-3),
  metaBatchSize: z.number().int().min(2).default(32),
  /**
   * The meta set: a native JSONL manifest. Unset: the committed meta-data/default set for the
   * default synthetic corpus, else the manifest's `meta` split.
   */
  metaManifest: z.string().optional(),
}).strict().default({ method: 'none', metaScope: 'heads', metaEvery: 1, alpha: 0.1, hidden: 100, inputs: ['loss'], lr: 1e-3, metaBatchSize: 32 });

export type WeightingConfig = z.infer<typeof WeightingSchema>;

/** Caption sources (a manifest caption `{ "text", "source" }`): how often each is drawn in training. */
export const CaptionsSchema = z.object({
  /**
   * Relative chance of a video's caption being drawn, by source (`human`, `generated`, …); a
   * source not named weighs 1. Evaluation always uses human captions only.
   */
  sourceWeights: z.record(z.string(), z.number().min(0)).default({}),
}).strict().default({ sourceWeights: {} });

export type CaptionsConfig = z.infer<typeof CaptionsSchema>;

/** What a training step's backward recomputes (`train.recompute`). */
export const RecomputeSchema = z.enum(['none', 'blocks']).default('none');

/** The checks across the weighting and train blocks, shared by the pretrain and fine-tune schemas. */
export function checkWeighting(c: { weighting: WeightingConfig; train: { captionsPerVideo: 'one' | 'all'; recompute: 'none' | 'blocks' } }, ctx: z.RefinementCtx): void {
  if (c.weighting.method !== 'none' && c.train.recompute !== 'none') {
    ctx.addIssue({ code: 'custom', path: ['train', 'recompute'], message: `recompute '${c.train.recompute}' gives first-order gradients only, and weighting.method '${c.weighting.method}' differentiates the encoders twice: use 'none' with it` });
  }
  if (c.weighting.method === 'l2rw' && c.weighting.metaEvery !== 1) {
    ctx.addIssue({ code: 'custom', path: ['weighting', 'metaEvery'], message: 'l2rw weighs every batch from a meta gradient: metaEvery must be 1' });
  }
  const inputs = c.weighting.inputs;
  if (c.weighting.method !== 'mwn' && !(inputs.length === 1 && inputs[0] === 'loss')) {
    ctx.addIssue({ code: 'custom', path: ['weighting', 'inputs'], message: `the inputs of the weight net of method 'mwn' (method is '${c.weighting.method}'): remove it or set method 'mwn'` });
  }
  if (c.weighting.method !== 'none' && c.train.captionsPerVideo === 'all') {
    ctx.addIssue({ code: 'custom', path: ['train', 'captionsPerVideo'], message: `the weighting net weighs one caption per video: use 'one' with weighting.method '${c.weighting.method}'` });
  }
}

/**
 * A run's name: the default run folder is runs/<name>, so it is one plain folder name, never
 * a path nor only dots ("." and ".." would put checkpoints into the working folder or above).
 */
export function runNameSchema(fallback: string) {
  return z.string().regex(/^[\w.-]+$/, 'letters, digits, _ . - only')
    .refine((n) => !/^\.+$/.test(n), 'must not be only dots: "." and ".." name the working folder and its parent, not a run').default(fallback);
}

/**
 * The non-finite guard's keys (`train.maxNonFinite`, `train.maxNonFiniteRate`), one definition for
 * every job that trains: see NonFiniteGuard in src/train/gradients.ts.
 */
export const NonFiniteKeys = {
  maxNonFinite: z.number().int().min(1).default(5),
  /** Stop when more than this fraction of the last 50 steps were skipped as non-finite. */
  maxNonFiniteRate: z.number().gt(0).max(1).default(0.2),
};

export const PretrainConfigSchema = z.object({
  name: runNameSchema('default'),
  seed: z.number().int().min(0).default(1),
  backend: z.enum(['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu']).default('auto'),
  /** TensorFlow's intra-op threads on the native engine (default: one per CPU). */
  threads: z.number().int().min(1).max(1024).optional(),
  data: z.discriminatedUnion('kind', [synthData, ManifestDataSchema, MsrvttDataSchema]),
  frames: z.object({
    count: z.number().int().min(1).max(64).default(4),
    /** Frame side in pixels (default 32; with model.init, the model's image size). */
    size: z.number().int().min(8).max(512).optional(),
    /** `random`: new frames every epoch, one from each of `count` segments of `count × candidates` cached ones; test frames stay uniform. */
    strategy: z.enum(['uniform', 'random', 'fps', 'head', 'tail']).default('uniform'),
    /** With strategy `random`: cached candidate frames per frame a step uses (default 4). */
    candidates: z.number().int().min(1).max(16).optional(),
    concurrency: z.number().int().min(1).max(64).default(2),
    /**
     * Clips in the shuffle buffer of a streaming loader (shards read in a seeded order, memory
     * flat in the dataset size); unset, training shuffles the whole cache by random access.
     */
    shuffleBuffer: z.number().int().min(1).optional(),
  }).strict().default({ count: 4, strategy: 'uniform', concurrency: 2 }),
  tokenizer: z.object({
    /** An existing Hugging Face tokenizer folder; without it one is built from the training captions. */
    dir: z.string().optional(),
    vocabSize: z.number().int().min(32).max(100000).default(1000),
    kind: z.enum(['wordpiece', 'bpe']).default('wordpiece'),
    /** Tokens per caption (default 24; with model.init, the model's context length). */
    maxLen: z.number().int().min(4).max(512).optional(),
  }).strict().default({ vocabSize: 1000, kind: 'wordpiece' }),
  model: z.object({
    preset: z.enum(['tiny', 'small', 'base']).default('tiny'),
    temporalPooling: z.enum(['mean', 'transformer']).default('mean'),
    /** Frame differences into the video encoder's patch tokens (vision.motion, docs/DESIGN.md §4). */
    motion: z.boolean().default(false),
    /** What the motion embedding sees: `difference` or `foreground` (vision.motionInput). */
    motionInput: z.enum(['difference', 'foreground']).optional(),
    /** `conv`: two stride-2 3×3 convolutions before the patches (vision.stem, docs/DESIGN.md §4). */
    stem: z.enum(['patch', 'conv']).optional(),
    /** `joint`: the video blocks attend over all frames' tokens at once (vision.attention, docs/DESIGN.md §4). */
    videoAttention: z.enum(['frame', 'joint']).optional(),
    /** The preset's vision patch side, replaced (it must divide frames.size). */
    patchSize: z.number().int().min(1).max(64).optional(),
    /** The preset's vision and text width, replaced (a multiple of their heads). */
    width: z.number().int().min(4).max(2048).optional(),
    /**
     * Start from a Hugging Face CLIP folder (its shapes, tokenizer and frame normalisation) or a
     * vlmargin checkpoint instead of random weights; `preset` and the tokenizer settings are then
     * the model's.
     */
    init: z.string().optional(),
  }).strict().default({ preset: 'tiny', temporalPooling: 'mean', motion: false }),
  loss: z.object({
    /**
     * μ of the subtractive angular margin, in radians; 0 is symmetric InfoNCE. 0.1 collapses from
     * random weights; 0.01 does not, from scratch or from CLIP (docs/RESULTS.md).
     */
    marginRad: z.number().min(0).max(Math.PI / 2).default(0.01),
    /**
     * Steps of plain InfoNCE before the margin starts, then steps over which μ ramps from 0.
     * From scratch, a margin on near-orthogonal random embeddings is satisfied by collapse
     * (every positive gets s·μ·sin θ for free at θ ≈ π/2); once pairs align it only stops
     * pulling positives closer than μ, which is its purpose.
     */
    marginStartStep: z.number().int().min(0).default(0),
    marginRampSteps: z.number().int().min(0).default(0),
    detachMargin: z.boolean().default(false),
  }).strict().default({ marginRad: 0.01, marginStartStep: 0, marginRampSteps: 0, detachMargin: false }),
  train: z.object({
    epochs: z.number().int().min(1).default(10),
    /** Overrides epochs when set. */
    steps: z.number().int().min(1).optional(),
    batchSize: z.number().int().min(2).default(32),
    lr: z.number().positive().max(1).default(2e-3),
    /** Learning-rate factor of the encoders relative to the heads (projections, logit scale). */
    encoderLrScale: z.number().positive().max(10).default(1),
    minLr: z.number().min(0).default(0),
    warmupSteps: z.number().int().min(0).default(20),
    weightDecay: z.number().min(0).default(0.05),
    clipNorm: z.number().min(0).default(1),
    accumSteps: z.number().int().min(1).default(1),
    evalEvery: z.number().int().min(0).default(0),
    checkpointEvery: z.number().int().min(0).default(50),
    keepCheckpoints: z.number().int().min(1).default(3),
    ...NonFiniteKeys,
    /** `one`: a caption drawn per video per epoch; `all`: every caption of a video as a positive (SAM's groups; no weighting). */
    captionsPerVideo: z.enum(['one', 'all']).default('one'),
    /**
     * Batches of groups of this many videos whose captions share the most tokens (1: plain
     * shuffle); the in-memory loader only (BatchLoaderOptions.captionGroups).
     */
    captionGroups: z.number().int().min(1).max(64).optional(),
    /**
     * Activation recomputation (gradient checkpointing): `none` keeps every activation for the
     * backward pass; `blocks` keeps each transformer block's input only and recomputes the block
     * in the backward: a fraction of the memory for about a third more compute per step
     * (docs/PERFORMANCE.md). Plain steps only (weighting.method `none`).
     */
    recompute: RecomputeSchema,
  }).strict().default({
    epochs: 10, batchSize: 32, lr: 2e-3, encoderLrScale: 1, minLr: 0, warmupSteps: 20, weightDecay: 0.05,
    clipNorm: 1, accumSteps: 1, evalEvery: 0, checkpointEvery: 50, keepCheckpoints: 3, maxNonFinite: 5, maxNonFiniteRate: 0.2, captionsPerVideo: 'one',
    recompute: 'none',
  }),
  eval: z.object({
    batchSize: z.number().int().min(1).default(64),
    /**
     * With `train.evalEvery` and no validation split (the synthetic corpus; a manifest without
     * `valSplit` entries), this fraction of the training videos is held out and scored instead.
     */
    valFraction: z.number().gt(0).max(0.5).default(0.1),
  }).strict().default({ batchSize: 64, valFraction: 0.1 }),
  /** Meta-learned sample weighting (docs/DESIGN.md §6). */
  weighting: WeightingSchema,
  captions: CaptionsSchema,
}).strict().superRefine((c, ctx) => {
  checkWeighting(c, ctx);
  if ((c.train.captionGroups ?? 1) > 1 && c.frames.shuffleBuffer !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['train', 'captionGroups'], message: 'caption groups arrange a whole epoch, which the streaming loader (frames.shuffleBuffer) never holds: unset one of them' });
  }
});

export type PretrainConfig = z.infer<typeof PretrainConfigSchema>;

/** μ at `step` under the margin schedule (0 before `marginStartStep`, then a linear ramp). */
export function marginAt(loss: PretrainConfig['loss'], step: number): number {
  if (step < loss.marginStartStep) return 0;
  if (loss.marginRampSteps === 0) return loss.marginRad;
  return loss.marginRad * Math.min(1, (step - loss.marginStartStep + 1) / loss.marginRampSteps);
}

/** Folder of the shipped configs (pipelines/configs, also when run from dist/). */
export const CONFIG_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'pipelines', 'configs');

/** Formats zod issues as `path: message` lines. */
export function formatIssues(error: z.ZodError, source: string): string {
  const lines = error.issues.map((i) => {
    const where = i.path.length ? i.path.join('.') : '(top level)';
    return `  ${where}: ${i.message}`;
  });
  return `${source}: invalid config\n${lines.join('\n')}`;
}

/** Validates a config object; the error names every bad key. */
export function parsePretrainConfig(raw: unknown, source = 'config'): PretrainConfig {
  const r = PretrainConfigSchema.safeParse(raw);
  if (!r.success) throw new Error(formatIssues(r.error, source));
  return r.data;
}

/** Command-line changes to a config file, applied before it is validated. */
export interface ConfigOverrides {
  /** `key.path=value` assignments (`--set`); the value is JSON when it parses as JSON, else a string. */
  sets?: string[];
  /** `--data`: where the data is (see `applyDataPath`). */
  data?: string;
}

/**
 * Applies `--set key.path=value` assignments to a raw (not yet validated) config. The value is
 * read as JSON when it parses (`30`, `0.01`, `true`, `"x"`, `[1,2]`), else taken as a string;
 * objects on the path are created as needed. Validation happens afterwards, as for the file.
 *
 * @example applySets({ train: { steps: 10 } }, ['train.steps=30', 'loss.marginRad=0.01'])
 */
export function applySets(raw: unknown, sets: string[]): Record<string, unknown> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error('--set: the config must be a JSON object');
  const out = structuredClone(raw) as Record<string, unknown>;
  for (const s of sets) {
    const eq = s.indexOf('=');
    const key = eq > 0 ? s.slice(0, eq).trim() : '';
    if (!key || key.split('.').some((k) => k === '')) throw new Error(`--set '${s}': expected key.path=value, for example --set train.steps=30`);
    const text = s.slice(eq + 1);
    let value: unknown;
    try { value = JSON.parse(text); } catch { value = text; }
    const parts = key.split('.');
    let node = out;
    for (const p of parts.slice(0, -1)) {
      const next = node[p];
      if (next === undefined) node[p] = {};
      else if (next === null || typeof next !== 'object' || Array.isArray(next)) throw new Error(`--set '${s}': '${p}' is not an object in the config`);
      node = node[p] as Record<string, unknown>;
    }
    node[parts[parts.length - 1]] = value;
  }
  return out;
}

/**
 * Points a raw pretraining or fine-tuning config at `--data`, whatever its data kind:
 * - a `.jsonl` file, or a folder holding `manifest.jsonl`: a native manifest (`data.kind`
 *   becomes `manifest`), except that a synthetic config keeps a synthetic corpus's folder;
 * - with `data.kind: synth`: the corpus folder (written there when it does not exist);
 * - with `data.kind: msrvtt`: the MSR-VTT folder (`annotation/MSRVTT_data.json`, `videos/all`,
 *   and `annotation/MSRVTT_JSFUSION_test.csv` when present).
 */
export function applyDataPath(raw: Record<string, unknown>, dataPath: string): Record<string, unknown> {
  const out = structuredClone(raw);
  const data = (out.data ?? {}) as Record<string, unknown>;
  const abs = path.resolve(dataPath);
  const isFile = fs.existsSync(abs) && fs.statSync(abs).isFile();
  const manifestIn = isFile ? abs : path.join(abs, 'manifest.jsonl');
  const keep = (keys: string[]) => Object.fromEntries(keys.filter((k) => data[k] !== undefined).map((k) => [k, data[k]]));
  if (isFile && !abs.endsWith('.jsonl')) {
    throw new Error(`--data ${abs}: expected a native manifest (.jsonl) or a folder (a corpus, or MSR-VTT's folder with annotation/ and videos/)`);
  }
  // A synthetic corpus folder also holds a manifest.jsonl; corpus.json tells it from a user's folder.
  const synthFolder = !isFile && (!fs.existsSync(abs) || fs.existsSync(path.join(abs, 'corpus.json')) || !fs.existsSync(manifestIn));
  if (data.kind === 'synth' && synthFolder) {
    out.data = { ...data, dir: abs };
  } else if (data.kind === 'msrvtt' && !isFile) {
    const csv = path.join(abs, 'annotation', 'MSRVTT_JSFUSION_test.csv');
    out.data = {
      ...keep(['kind', 'allowOutsideRoot']), annotations: path.join(abs, 'annotation', 'MSRVTT_data.json'),
      videoDir: path.join(abs, 'videos', 'all'), ...(fs.existsSync(csv) ? { testCsv: csv } : {}),
      ...('dir' in data ? { dir: abs } : {}),
    };
  } else {
    if (!fs.existsSync(manifestIn)) throw new Error(`--data ${abs}: no such manifest${isFile ? '' : ` (looked for ${manifestIn})`}`);
    out.data = {
      ...(data.kind === 'manifest' ? data : {}), kind: 'manifest', manifest: manifestIn,
      ...keep(['allowOutsideRoot']),
    };
  }
  return out;
}

/** Applies `--data` and every `--set` (in that order) to a raw config. */
export function applyOverrides(raw: unknown, o: ConfigOverrides = {}): unknown {
  if (!o.data && !o.sets?.length) return raw;
  let out = applySets(raw, []);
  if (o.data) out = applyDataPath(out, o.data);
  return applySets(out, o.sets ?? []);
}

/** The `(with --set …)` note added to the source of a config changed on the command line. */
function overrideNote(o: ConfigOverrides): string {
  const parts = [...(o.data ? [`--data ${o.data}`] : []), ...(o.sets ?? []).map((s) => `--set ${s}`)];
  return parts.length ? ` (with ${parts.join(' ')})` : '';
}

/**
 * Reads and validates a JSON config file; `hint` is added to the error when the file cannot be
 * read; `overrides` (`--data`, `--set`) are applied before validation.
 * @example const cfg = await loadJsonConfig('pipelines/configs/finetune-qa.json', parseFinetuneQaConfig);
 */
export async function loadJsonConfig<T>(
  file: string, parse: (raw: unknown, source: string) => T, hint = '', overrides: ConfigOverrides = {},
): Promise<T> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (e) {
    throw new Error(`--config: cannot read ${abs} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})${hint}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${abs}: not valid JSON (${(e as Error).message})`);
  }
  return parse(applyOverrides(raw, overrides), abs + overrideNote(overrides));
}

/** Reads a config file: a path, or the name of a shipped config (`default`, `msrvtt`, …). */
export async function loadPretrainConfig(nameOrPath: string, overrides: ConfigOverrides = {}): Promise<PretrainConfig> {
  return loadJsonConfig(configFile(nameOrPath), parsePretrainConfig, `; give a JSON file or one of the names in ${CONFIG_DIR}`, overrides);
}

/** A config argument as a file: a path, or the name of a shipped config. */
export function configFile(nameOrPath: string): string {
  return /[\\/]|\.json$/.test(nameOrPath) ? path.resolve(nameOrPath) : path.join(CONFIG_DIR, `${nameOrPath}.json`);
}
