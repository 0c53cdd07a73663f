/**
 * Fine-tunes a dual encoder on a downstream text↔video retrieval set, then evaluates it on the
 * downstream test split. The start (`model.init`, or `--init DIR`) is a Hugging Face CLIP folder
 * (CLIP4Clip's recipe: meanP, or a temporal transformer that starts as the mean) or a vlmargin
 * checkpoint.
 *
 *   vlmargin finetune retrieval [--config finetune-retrieval] [--init DIR] [--data D] [--set key=value …] [--out runs/NAME] [--overwrite]
 *
 * Three learning rates: `train.lr` for the new layers (the temporal module), × `encoderLrScale`
 * for the towers, × `headLrScale` for the projections and logit scale; or the towers not at
 * all with `train.freezeEncoders`. The loss is the SAM contrastive loss, plain or weighted by
 * the meta-learner (`weighting`, the same block as pretraining). The run folder gets
 * checkpoints/ (evaluable with `vlmargin eval retrieval`), metrics.jsonl, and the test
 * split's eval.json / eval.md / PNG plots.
 */
import { CaptionsSchema, checkWeighting, formatIssues, loadJsonConfig, ManifestDataSchema, MsrvttDataSchema, RecomputeSchema, runNameSchema, WeightingSchema } from './config.js';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { tf } from '../src/backend/tf.js';
import { initBackend, parseBackendPreference } from '../src/backend/init.js';
import { buildFrameCache, frameCacheDirName, openFrameCache, readNormalizedClips, type FrameCache } from '../src/data/frameCache.js';
import { BatchLoader, encodeCaptions } from '../src/data/loader.js';
import { readManifest } from '../src/data/manifest.js';
import { readMsrvttSplits } from '../src/data/readers.js';
import type { ManifestEntry } from '../src/data/types.js';
import { loadModel, readModelInfo, type CheckpointInfo } from '../src/train/checkpointInfo.js';
import { MetaBatchCycler } from '../src/meta/metaBatches.js';
import { WeightNet } from '../src/meta/weightNet.js';
import { captionSourceTable, lossBySource, samStep } from './lib/samStep.js';
import { evaluateCheckpointRetrieval, type RetrievalEvalReport } from './eval-retrieval.js';
import { samContrastiveLoss } from '../src/margin/sam.js';
import type { DualEncoderConfig } from '../src/nn/configs.js';
import { encodeText, encodeVideo, paramGroup } from '../src/nn/dualEncoder.js';
import type { Params } from '../src/nn/params.js';
import { loadTokenizer, type Tokenizer } from '../src/text/tokenizer.js';
import { MetricsLogger } from '../src/train/logger.js';
import { AdamW } from '../src/train/optimizer.js';
import { cosineWithWarmup } from '../src/train/schedule.js';
import { runTraining } from '../src/train/trainer.js';
import { openRunFolder } from './runFolder.js';
import { writeFileAtomic } from '../src/util/atomicWrite.js';

// The pretraining data sources, less the folder keys: a fine-tune keeps its caches beside the data or in its run.
const manifestData = ManifestDataSchema.omit({ dir: true, valSplit: true });
const msrvttData = MsrvttDataSchema.omit({ dir: true });

export const FinetuneRetrievalConfigSchema = z.object({
  name: runNameSchema('finetune-retrieval'),
  seed: z.number().int().min(0).default(1),
  backend: z.enum(['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu']).default('auto'),
  model: z.object({
    /** A Hugging Face CLIP folder, a vlmargin checkpoint folder, or a run folder (its newest checkpoint). */
    init: z.string(),
    /** On top of a CLIP folder: meanP, or a temporal transformer that starts as the mean. A checkpoint keeps its own. */
    temporalPooling: z.enum(['mean', 'transformer']).default('mean'),
    temporalLayers: z.number().int().min(1).max(12).default(4),
  }).strict(),
  frames: z.object({
    /** Frames per clip (default: the checkpoint's, or 12 from a CLIP folder). */
    count: z.number().int().min(1).max(64).optional(),
    /** `uniform`: the same frames every epoch; `random`: one from each of `count` segments of `count × candidates` cached ones, new every epoch. Test frames stay uniform. */
    strategy: z.enum(['uniform', 'random']).default('uniform'),
    /** With strategy `random`: cached candidate frames per frame a step uses. */
    candidates: z.number().int().min(1).max(16).default(4),
  }).strict().default({ strategy: 'uniform', candidates: 4 }),
  data: z.discriminatedUnion('kind', [manifestData, msrvttData]),
  /** Frame cache folder (default: beside the manifest in .vlmargin/, or <run>/frames for MSR-VTT). */
  framesDir: z.string().optional(),
  train: z.object({
    steps: z.number().int().min(1).default(100),
    batchSize: z.number().int().min(2).default(16),
    /** Learning rate of the new layers (the temporal module). */
    lr: z.number().positive().max(1).default(1e-3),
    /** Tower (encoder) rate = lr × encoderLrScale. */
    encoderLrScale: z.number().positive().max(1).default(0.1),
    /** Projection and logit-scale rate = lr × headLrScale. */
    headLrScale: z.number().positive().max(1).default(1),
    /** Only the heads (projections, temporal module, logit scale) get gradients. */
    freezeEncoders: z.boolean().default(false),
    minLr: z.number().min(0).default(0),
    warmupSteps: z.number().int().min(0).default(5),
    weightDecay: z.number().min(0).default(0.05),
    clipNorm: z.number().min(0).default(1),
    checkpointEvery: z.number().int().min(0).default(50),
    keepCheckpoints: z.number().int().min(1).default(2),
    /** `one`: a caption drawn per video per epoch; `all`: every caption of a video as a positive (SAM's groups; no weighting). */
    captionsPerVideo: z.enum(['one', 'all']).default('one'),
    /**
     * Activation recomputation (gradient checkpointing): `none` keeps every activation for the
     * backward pass; `blocks` keeps each transformer block's input only and recomputes the block
     * in the backward: a fraction of the memory for about a third more compute per step
     * (docs/PERFORMANCE.md). Plain steps only (weighting.method `none`).
     */
    recompute: RecomputeSchema,
  }).strict().default({
    steps: 100, batchSize: 16, lr: 1e-3, encoderLrScale: 0.1, headLrScale: 1, freezeEncoders: false, minLr: 0, warmupSteps: 5,
    weightDecay: 0.05, clipNorm: 1, checkpointEvery: 50, keepCheckpoints: 2, captionsPerVideo: 'one', recompute: 'none',
  }),
  loss: z.object({
    /** μ of the subtractive angular margin (radians); 0.1 has collapsed fine-tunes, 0.01 has not (docs/RESULTS.md). */
    marginRad: z.number().min(0).max(Math.PI / 2).default(0.01),
    detachMargin: z.boolean().default(false),
  }).strict().default({ marginRad: 0.01, detachMargin: false }),
  eval: z.object({
    batchSize: z.number().int().min(1).default(64),
    dsl: z.boolean().default(false),
  }).strict().default({ batchSize: 64, dsl: false }),
  /** Meta-learned sample weighting; the meta set is `weighting.metaManifest`, else the manifest's `meta` split. */
  weighting: WeightingSchema,
  captions: CaptionsSchema,
}).strict().superRefine((c, ctx) => checkWeighting(c, ctx));

export type FinetuneRetrievalConfig = z.infer<typeof FinetuneRetrievalConfigSchema>;

/** Validates a config object; the error names every bad key. */
export function parseFinetuneRetrievalConfig(raw: unknown, source = 'config'): FinetuneRetrievalConfig {
  const r = FinetuneRetrievalConfigSchema.safeParse(raw);
  if (!r.success) throw new Error(formatIssues(r.error, source));
  return r.data;
}

export interface DownstreamData {
  train: ManifestEntry[];
  test: ManifestEntry[];
  /** The manifest's meta split (empty for MSR-VTT: give weighting.metaManifest). */
  meta: ManifestEntry[];
  source: string;
  framesRoot: string;
}

/** The downstream splits of a native manifest or an MSR-VTT layout. */
export async function loadDownstream(d: FinetuneRetrievalConfig['data'], runDir: string): Promise<DownstreamData> {
  if (d.kind === 'manifest') {
    const m = await readManifest(d.manifest, { allowOutsideRoot: d.allowOutsideRoot });
    const train = m.entries.filter((e) => e.split === d.trainSplit);
    const test = m.entries.filter((e) => e.split === d.testSplit);
    if (!train.length) throw new Error(`data.manifest ${d.manifest}: no entries with split '${d.trainSplit}' (data.trainSplit)`);
    if (!test.length) throw new Error(`data.manifest ${d.manifest}: no entries with split '${d.testSplit}' (data.testSplit)`);
    const meta = m.entries.filter((e) => e.split === d.metaSplit);
    return { train, test, meta, source: path.resolve(d.manifest), framesRoot: path.join(path.dirname(path.resolve(d.manifest)), '.vlmargin') };
  }
  const s = await readMsrvttSplits(d.annotations, { videoDir: d.videoDir, protocol: d.protocol, testCsv: d.testCsv, allowOutsideRoot: d.allowOutsideRoot });
  return { train: s.train, test: s.test, meta: [], source: s.sources[0], framesRoot: runDir };
}

export interface FixedBatch { frames: tf.Tensor; ids: tf.Tensor2D; mask: tf.Tensor2D }

/** The first `n` usable entries (first caption each) as one batch, for before/after loss comparisons. */
export async function fixedBatch(
  cache: FrameCache, entries: ManifestEntry[], tok: Tokenizer, maxLen: number, n: number, norm: { mean?: readonly number[]; std?: readonly number[] } = {},
): Promise<FixedBatch> {
  const chosen = entries.filter((e) => cache.has(e.id)).slice(0, n);
  if (chosen.length < 2) throw new Error(`fixedBatch: need at least 2 cached entries, got ${chosen.length}`);
  const { data, shape } = await readNormalizedClips(cache, chosen.map((e) => e.id), norm);
  const enc = tok.encode(chosen.map((e) => e.captions[0]), maxLen);
  return {
    frames: tf.tensor(data, shape),
    ids: tf.tensor2d(enc.ids, enc.shape, 'int32'),
    mask: tf.tensor2d(enc.mask, enc.shape, 'int32'),
  };
}

/**
 * SAM contrastive loss of a batch (a number, read asynchronously; no gradients kept).
 *
 * @example const before = await batchLoss(params, info.model, probe, cfg.loss);
 */
export async function batchLoss(params: Params, cfg: DualEncoderConfig, b: FixedBatch, loss: FinetuneRetrievalConfig['loss']): Promise<number> {
  const l = samLossOf(params, cfg, b, loss);
  try {
    return (await l.data())[0];
  } finally {
    l.dispose();
  }
}

function samLossOf(params: Params, cfg: DualEncoderConfig, b: FixedBatch, loss: FinetuneRetrievalConfig['loss']): tf.Tensor {
  return tf.tidy(() => {
    const v = encodeVideo(params, b.frames, cfg);
    const t = encodeText(params, b.ids, b.mask, cfg);
    return samContrastiveLoss(v, t, { marginRad: loss.marginRad, logitScale: params.logit_scale, detachMargin: loss.detachMargin }).loss;
  });
}

/**
 * A parameter's learning-rate factor: the towers at `encoderLrScale`, the projections and logit
 * scale at `headLrScale`, the new layers (temporal module) at 1.
 *
 * @example lrScaleOf('video.blocks.0.ln_1.weight', { encoderLrScale: 0.001, headLrScale: 0.001 }) // 0.001
 */
export function lrScaleOf(name: string, train: Pick<FinetuneRetrievalConfig['train'], 'encoderLrScale' | 'headLrScale'>): number {
  const g = paramGroup(name).group;
  return g === 'encoder' ? train.encoderLrScale : g === 'head' ? train.headLrScale : 1;
}

/** Names the optimiser updates: all, or only the heads (and the temporal module) when encoders are frozen. */
export function trainableNames(names: string[], freezeEncoders: boolean): string[] {
  return freezeEncoders ? names.filter((n) => paramGroup(n).group !== 'encoder') : names;
}

export interface FinetuneRetrievalResult {
  runDir: string;
  /** SAM loss on a fixed batch of downstream training pairs, before and after fine-tuning. */
  lossBefore: number;
  lossAfter: number;
  trainable: number;
  frozen: number;
  steps: number;
  eval: RetrievalEvalReport;
  wallSeconds: number;
}

/** The meta set of the weighting step: `weighting.metaManifest`, else the manifest's meta split. */
async function loadFinetuneMetaSet(cfg: FinetuneRetrievalConfig, data: DownstreamData): Promise<ManifestEntry[]> {
  if (cfg.weighting.metaManifest) {
    const m = await readManifest(cfg.weighting.metaManifest, { allowOutsideRoot: true });
    if (!m.entries.length) throw new Error(`weighting.metaManifest ${path.resolve(cfg.weighting.metaManifest)}: no usable entries (${m.errors.length} errors)`);
    return m.entries;
  }
  if (!data.meta.length) throw new Error(`weighting: no meta set: set weighting.metaManifest (a small clean JSONL manifest), or give the manifest a '${cfg.data.kind === 'manifest' ? cfg.data.metaSplit : 'meta'}' split`);
  return data.meta;
}

/** Runs one fine-tuning job and evaluates it on the downstream test split. */
export async function runFinetuneRetrieval(
  cfg: FinetuneRetrievalConfig, opts: { out?: string; backend?: string; quiet?: boolean; overwrite?: boolean } = {},
): Promise<FinetuneRetrievalResult> {
  // One writer per run folder, and a previous run replaced only with --overwrite (pipelines/runFolder.ts).
  const { runDir, release } = await openRunFolder(opts.out, cfg.name, (m) => { if (!opts.quiet) console.error(m); }, { overwrite: opts.overwrite });
  try {
    return await runFinetuneRetrievalIn(runDir, cfg, opts);
  } finally {
    await release();
  }
}

async function runFinetuneRetrievalIn(runDir: string, cfg: FinetuneRetrievalConfig, opts: { backend?: string; quiet?: boolean }): Promise<FinetuneRetrievalResult> {
  const t0 = performance.now();
  const log = (m: string) => { if (!opts.quiet) console.error(m); };
  const backend = await initBackend({ prefer: parseBackendPreference(opts.backend ?? cfg.backend) });
  const info = await readModelInfo(cfg.model.init, {
    frames: cfg.frames.count, batchSize: cfg.eval.batchSize,
    temporal: { pooling: cfg.model.temporalPooling, layers: cfg.model.temporalLayers },
  });
  if (info.kind === 'checkpoint' && cfg.frames.count !== undefined && cfg.frames.count !== info.frames.count) {
    throw new Error(`frames.count ${cfg.frames.count}: the checkpoint ${info.dir} was trained on ${info.frames.count} frames per clip; leave frames.count unset to use them`);
  }
  log(`from ${info.kind === 'clip' ? `CLIP folder ${info.dir} (${info.model.temporal.pooling === 'mean' ? 'meanP' : 'temporal transformer started as the mean'})` : `${info.dir} (step ${info.step})`}; backend ${backend.name}`);
  const data = await loadDownstream(cfg.data, runDir);
  const metaSet = cfg.weighting.method === 'none' ? [] : await loadFinetuneMetaSet(cfg, data);
  // Sizes that cannot work are refused before any video is decoded; after decoding, the
  // decodable counts are checked again below.
  if (data.train.length < cfg.train.batchSize) {
    throw new Error(`train.batchSize ${cfg.train.batchSize} is larger than the downstream train split (${data.train.length} videos listed)`);
  }
  if (cfg.weighting.method !== 'none' && metaSet.length < cfg.weighting.metaBatchSize) {
    throw new Error(`weighting.metaBatchSize ${cfg.weighting.metaBatchSize} is larger than the meta set (${metaSet.length} pairs listed)`);
  }
  const framesDir = path.resolve(cfg.framesDir ?? path.join(data.framesRoot, frameCacheDirName({ frames: info.frames.count, size: info.frames.size, strategy: info.frames.strategy, seed: info.seed })));
  const randomFrames = cfg.frames.strategy === 'random';
  const buildCache = async (dir: string, entries: ManifestEntry[], frames: number, strategy: CheckpointInfo['frames']['strategy']): Promise<FrameCache> => {
    const summary = await buildFrameCache(entries, { out: dir, frames, size: info.frames.size, strategy, seed: info.seed });
    log(`frame cache ${dir}: ${summary.decoded} decoded, ${summary.reused} reused, ${summary.skipped.length} skipped`);
    return openFrameCache(dir);
  };
  // With random frames the training clips get their own cache of candidates, uniform over the
  // clip so that each of the `count` segments holds `candidates` of them; framesDir keeps the
  // test, meta and loss-probe clips at `count` uniform frames.
  const fixed = randomFrames ? [...data.test, ...metaSet, ...data.train.slice(0, cfg.train.batchSize)] : [...data.train, ...data.test, ...metaSet];
  const cache = await buildCache(framesDir, fixed, info.frames.count, info.frames.strategy);
  const trainCache = randomFrames
    ? await buildCache(
      path.resolve(cfg.framesDir ? `${cfg.framesDir}-candidates` : path.join(data.framesRoot, frameCacheDirName({ frames: info.frames.count * cfg.frames.candidates, size: info.frames.size, strategy: 'uniform' }))),
      data.train, info.frames.count * cfg.frames.candidates, 'uniform')
    : cache;
  const tok = await loadTokenizer(info.tokenizerDir);
  const trainEntries = data.train.filter((e) => trainCache.has(e.id));
  if (trainEntries.length < cfg.train.batchSize) {
    throw new Error(`downstream train split has ${trainEntries.length} decodable videos, fewer than train.batchSize ${cfg.train.batchSize}`);
  }
  const metaEntries = metaSet.filter((e) => cache.has(e.id));
  if (cfg.weighting.method !== 'none' && metaEntries.length < cfg.weighting.metaBatchSize) {
    throw new Error(`weighting: the meta set has ${metaEntries.length} decodable pairs, fewer than weighting.metaBatchSize ${cfg.weighting.metaBatchSize}`);
  }
  const norm = info.preprocess;

  const store = await loadModel(info, cfg.seed);
  const params = store.snapshot();
  const names = trainableNames(Object.keys(params), cfg.train.freezeEncoders);
  const trainable = Object.fromEntries(names.map((n) => [n, params[n] as tf.Variable]));
  const optimizer = new AdamW(trainable, {
    lr: cfg.train.lr, weightDecay: cfg.train.weightDecay,
    groups: (name) => ({ lrScale: lrScaleOf(name, cfg.train), weightDecay: paramGroup(name).decay ? cfg.train.weightDecay : 0 }),
  });
  const probe = await fixedBatch(cache, trainEntries, tok, info.maxLen, cfg.train.batchSize, norm);
  const lossBefore = await batchLoss(params, info.model, probe, cfg.loss);
  const table = encodeCaptions(trainEntries, (c) => tok.encode(c, info.maxLen));
  const sources = captionSourceTable(trainEntries, cfg.captions);
  const loader = new BatchLoader(trainCache, table, {
    batchSize: cfg.train.batchSize, seed: cfg.seed, videoIds: trainEntries.map((e) => e.id), mean: norm.mean, std: norm.std,
    captionsPerVideo: cfg.train.captionsPerVideo, captionWeights: sources.weights,
    randomFrames: randomFrames ? { count: info.frames.count } : undefined,
  });
  const schedule = cosineWithWarmup({ baseLr: cfg.train.lr, warmupSteps: cfg.train.warmupSteps, totalSteps: cfg.train.steps, minLr: cfg.train.minLr });
  const logger = new MetricsLogger(path.join(runDir, 'metrics.jsonl'), { quiet: opts.quiet });
  const weightNet = cfg.weighting.method === 'mwn' ? new WeightNet({ hidden: cfg.weighting.hidden, lr: cfg.weighting.lr, seed: cfg.seed, inputs: cfg.weighting.inputs }) : undefined;
  const metaCycler = cfg.weighting.method === 'none' ? undefined : new MetaBatchCycler(metaEntries.length, cfg.weighting.metaBatchSize, { seed: cfg.seed });
  const nextMetaBatch = metaCycler ? async (): Promise<FixedBatch> => {
    const chosen = metaCycler.next().map((i) => metaEntries[i]);
    return fixedBatch(cache, chosen, tok, info.maxLen, chosen.length, norm);
  } : undefined;
  log(`${names.length} of ${Object.keys(params).length} tensors trainable (${cfg.train.freezeEncoders ? 'encoders frozen' : `encoders at ${cfg.train.encoderLrScale}×, heads at ${cfg.train.headLrScale}× the new layers' rate`}); ${trainEntries.length} train videos; weighting ${cfg.weighting.method}`);

  let training;
  try {
    training = await runTraining({
      runDir, params: params as Record<string, tf.Variable>, optimizer, schedule, totalSteps: cfg.train.steps,
      clipNorm: cfg.train.clipNorm, checkpointEvery: cfg.train.checkpointEvery, keepCheckpoints: cfg.train.keepCheckpoints,
      config: { ...info.raw, preprocess: norm, finetune: cfg, from: { kind: info.kind, dir: info.dir, step: info.step } },
      logger, logitScaleName: 'logit_scale',
    }, {
      computeGrads: async (step) => {
        const batch = await loader.next();
        const frames = tf.tensor(batch.frames as Float32Array, batch.framesShape);
        const ids = tf.tensor2d(batch.ids, batch.textShape, 'int32');
        const mask = tf.tensor2d(batch.mask, batch.textShape, 'int32');
        try {
          const r = await samStep({
            modelCfg: info.model, params: params as Record<string, tf.Variable>, trainable: names, batch: { frames, ids, mask }, step, captionVideo: batch.captionVideo,
            marginRad: cfg.loss.marginRad, detachMargin: cfg.loss.detachMargin, weighting: cfg.weighting, weightNet, nextMetaBatch, recompute: cfg.train.recompute,
            progress: Math.min(step / cfg.train.steps, 1),
            source: weightNet?.inputs.includes('source') ? batch.index.map((i) => (sources.rowSource[i] === 'human' ? 1 : 0)) : undefined,
          });
          const extra: Record<string, number> = sources.weights ? lossBySource(r.perSample, batch.index.map((i) => sources.rowSource[i])) : {};
          if (r.weights) {
            let lo = Infinity; let hi = -Infinity;
            for (let i = 0; i < r.weights.length; i++) { lo = Math.min(lo, r.weights[i] * r.weights.length); hi = Math.max(hi, r.weights[i] * r.weights.length); }
            Object.assign(extra, { weightMin: lo, weightMax: hi, metaLoss: r.metaLoss ?? NaN });
          }
          return { loss: r.loss, grads: r.grads, samples: batch.framesShape[0], extra };
        } finally {
          tf.dispose([frames, ids, mask]);
        }
      },
      dataState: () => loader.state(),
    });
  } finally {
    optimizer.dispose();
    weightNet?.dispose();
  }
  const lossAfter = await batchLoss(params, info.model, probe, cfg.loss);
  tf.dispose([probe.frames, probe.ids, probe.mask]);
  const frozen = Object.keys(params).length - names.length;
  store.dispose();

  const evalReport = await evaluateCheckpointRetrieval({
    checkpoint: runDir, manifest: data.source, entries: data.test, split: 'all', dsl: cfg.eval.dsl,
    framesDir, batchSize: cfg.eval.batchSize, out: runDir, onLog: log,
  });
  const wallSeconds = (performance.now() - t0) / 1000;
  const summaryFile = path.join(runDir, 'finetune.json');
  await writeFileAtomic(summaryFile, `${JSON.stringify({
    from: { kind: info.kind, dir: info.dir, step: info.step }, steps: training.step, stopped: training.stopped, lossBefore, lossAfter,
    trainableTensors: names.length, frozenTensors: frozen, backend: backend.name, wallSeconds, config: cfg,
    t2v: evalReport.t2v, v2t: evalReport.v2t,
  }, null, 2)}\n`);
  return { runDir, lossBefore, lossAfter, trainable: names.length, frozen, steps: training.step, eval: evalReport, wallSeconds };
}

/** The config with `model.init` set from `--init` (which wins over the file). */
export function withInit(raw: unknown, init: string | undefined): unknown {
  if (init === undefined) return raw;
  if (init === '') throw new Error('--init: expected a Hugging Face CLIP folder or a checkpoint');
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return raw;
  const r = raw as Record<string, unknown>;
  const model = r.model !== null && typeof r.model === 'object' && !Array.isArray(r.model) ? r.model as Record<string, unknown> : {};
  return { ...r, model: { ...model, init } };
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' }, init: { type: 'string' }, out: { type: 'string' }, backend: { type: 'string' }, set: { type: 'string', multiple: true, default: [] },
      overwrite: { type: 'boolean', default: false }, quiet: { type: 'boolean', default: false },
    },
  });
  if (!values.config) throw new Error('--config: a finetune-retrieval JSON config is required (see pipelines/configs/finetune-retrieval.json)');
  const cfg = await loadJsonConfig(values.config, (raw, source) => parseFinetuneRetrievalConfig(withInit(raw, values.init), source), '', { sets: values.set });
  const r = await runFinetuneRetrieval(cfg, { out: values.out, backend: values.backend, quiet: values.quiet, overwrite: values.overwrite });
  console.log(`fixed-batch loss ${r.lossBefore.toFixed(4)} → ${r.lossAfter.toFixed(4)} after ${r.steps} steps`);
  console.log(`test t2v R@1 ${r.eval.t2v.R1.toFixed(1)}, v2t R@1 ${r.eval.v2t.R1.toFixed(1)} (chance ${r.eval.chanceR1.toFixed(1)}); report ${r.eval.files.json}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(() => process.exit(0), (e: unknown) => { console.error(`finetune-retrieval: ${(e as Error).message}`); process.exit(1); });
}
