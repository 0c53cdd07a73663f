/**
 * Fine-tunes a pretrained dual encoder on a downstream text↔video retrieval set, then
 * evaluates it on the downstream test split.
 *
 *   node dist/pipelines/finetune-retrieval.js --config pipelines/configs/finetune-retrieval.json [--out runs/NAME]
 *
 * The encoders learn at `train.encoderLrScale` × the heads' rate (projections, logit scale;
 * the temporal module counts as a head: it is new on top of the image encoder), or not at
 * all with `train.freezeEncoders`. The loss is the SAM contrastive loss. The run folder gets
 * checkpoints/ (evaluable with `vlmargin eval retrieval`), metrics.jsonl, and the test
 * split's eval.json / eval.md / PNG plots.
 */
import { formatIssues, loadJsonConfig, ManifestDataSchema, MsrvttDataSchema } from './config.js';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { tf } from '../src/backend/tf.js';
import { initBackend, parseBackendPreference } from '../src/backend/init.js';
import { assertCanReadSync } from '../src/backend/readback.js';
import { buildFrameCache, frameCacheDirName, openFrameCache, readNormalizedClips, type FrameCache } from '../src/data/frameCache.js';
import { BatchLoader, encodeCaptions } from '../src/data/loader.js';
import { readManifest } from '../src/data/manifest.js';
import { readMsrvtt, readMsrvtt1kA } from '../src/data/readers.js';
import type { ManifestEntry } from '../src/data/types.js';
import { readCheckpointInfo, loadModel } from '../src/train/checkpointInfo.js';
import { evaluateCheckpointRetrieval, type RetrievalEvalReport } from './eval-retrieval.js';
import { samContrastiveLoss } from '../src/margin/sam.js';
import type { DualEncoderConfig } from '../src/nn/configs.js';
import { encodeText, encodeVideo, paramGroup } from '../src/nn/dualEncoder.js';
import { valueAndGradsOf, type Params } from '../src/nn/params.js';
import { loadTokenizer, type Tokenizer } from '../src/text/tokenizer.js';
import { MetricsLogger } from '../src/train/logger.js';
import { AdamW } from '../src/train/optimizer.js';
import { cosineWithWarmup } from '../src/train/schedule.js';
import { runTraining } from '../src/train/trainer.js';

// The pretraining data sources, less the folder keys: a fine-tune keeps its caches beside the data or in its run.
const manifestData = ManifestDataSchema.omit({ dir: true, metaSplit: true });
const msrvttData = MsrvttDataSchema.omit({ dir: true });

export const FinetuneRetrievalConfigSchema = z.object({
  name: z.string().regex(/^[\w.-]+$/, 'letters, digits, _ . - only').default('finetune-retrieval'),
  seed: z.number().int().min(0).default(1),
  backend: z.enum(['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu']).default('auto'),
  /** A checkpoint folder, or a run folder (its newest checkpoint). */
  checkpoint: z.string(),
  data: z.discriminatedUnion('kind', [manifestData, msrvttData]),
  /** Frame cache folder (default: beside the manifest in .vlmargin/, or <run>/frames for MSR-VTT). */
  framesDir: z.string().optional(),
  train: z.object({
    steps: z.number().int().min(1).default(100),
    batchSize: z.number().int().min(2).default(16),
    /** Learning rate of the heads. */
    lr: z.number().positive().max(1).default(1e-3),
    /** Encoder rate = lr × encoderLrScale. */
    encoderLrScale: z.number().positive().max(1).default(0.1),
    /** Only the heads (projections, temporal module, logit scale) get gradients. */
    freezeEncoders: z.boolean().default(false),
    minLr: z.number().min(0).default(0),
    warmupSteps: z.number().int().min(0).default(5),
    weightDecay: z.number().min(0).default(0.05),
    clipNorm: z.number().min(0).default(1),
    checkpointEvery: z.number().int().min(0).default(50),
    keepCheckpoints: z.number().int().min(1).default(2),
  }).strict().default({
    steps: 100, batchSize: 16, lr: 1e-3, encoderLrScale: 0.1, freezeEncoders: false, minLr: 0, warmupSteps: 5,
    weightDecay: 0.05, clipNorm: 1, checkpointEvery: 50, keepCheckpoints: 2,
  }),
  loss: z.object({
    /** μ of the subtractive angular margin (radians); the model is already aligned, so no warm-up is needed. */
    marginRad: z.number().min(0).max(Math.PI / 2).default(0.1),
    detachMargin: z.boolean().default(false),
  }).strict().default({ marginRad: 0.1, detachMargin: false }),
  eval: z.object({
    batchSize: z.number().int().min(1).default(64),
    dsl: z.boolean().default(false),
  }).strict().default({ batchSize: 64, dsl: false }),
}).strict();

export type FinetuneRetrievalConfig = z.infer<typeof FinetuneRetrievalConfigSchema>;

/** Validates a config object; the error names every bad key. */
export function parseFinetuneRetrievalConfig(raw: unknown, source = 'config'): FinetuneRetrievalConfig {
  const r = FinetuneRetrievalConfigSchema.safeParse(raw);
  if (!r.success) throw new Error(formatIssues(r.error, source));
  return r.data;
}

export interface DownstreamData { train: ManifestEntry[]; test: ManifestEntry[]; source: string; framesRoot: string }

/** The downstream splits of a native manifest or an MSR-VTT layout. */
export async function loadDownstream(d: FinetuneRetrievalConfig['data'], runDir: string): Promise<DownstreamData> {
  if (d.kind === 'manifest') {
    const m = await readManifest(d.manifest, { allowOutsideRoot: d.allowOutsideRoot });
    const train = m.entries.filter((e) => e.split === d.trainSplit);
    const test = m.entries.filter((e) => e.split === d.testSplit);
    if (!train.length) throw new Error(`data.manifest ${d.manifest}: no entries with split '${d.trainSplit}' (data.trainSplit)`);
    if (!test.length) throw new Error(`data.manifest ${d.manifest}: no entries with split '${d.testSplit}' (data.testSplit)`);
    return { train, test, source: path.resolve(d.manifest), framesRoot: path.join(path.dirname(path.resolve(d.manifest)), '.vlmargin') };
  }
  const train = await readMsrvtt(d.annotations, { videoDir: d.videoDir, split: 'train', allowOutsideRoot: d.allowOutsideRoot });
  const test = d.testCsv
    ? await readMsrvtt1kA(d.testCsv, { videoDir: d.videoDir, allowOutsideRoot: d.allowOutsideRoot })
    : await readMsrvtt(d.annotations, { videoDir: d.videoDir, split: 'test', allowOutsideRoot: d.allowOutsideRoot });
  return { train: train.entries, test: test.entries, source: path.resolve(d.testCsv ?? d.annotations), framesRoot: runDir };
}

export interface FixedBatch { frames: tf.Tensor; ids: tf.Tensor2D; mask: tf.Tensor2D }

/** The first `n` usable entries (first caption each) as one batch, for before/after loss comparisons. */
export async function fixedBatch(cache: FrameCache, entries: ManifestEntry[], tok: Tokenizer, maxLen: number, n: number): Promise<FixedBatch> {
  const chosen = entries.filter((e) => cache.has(e.id)).slice(0, n);
  if (chosen.length < 2) throw new Error(`fixedBatch: need at least 2 cached entries, got ${chosen.length}`);
  const { data, shape } = await readNormalizedClips(cache, chosen.map((e) => e.id));
  const enc = tok.encode(chosen.map((e) => e.captions[0]), maxLen);
  return {
    frames: tf.tensor(data, shape),
    ids: tf.tensor2d(enc.ids, enc.shape, 'int32'),
    mask: tf.tensor2d(enc.mask, enc.shape, 'int32'),
  };
}

/**
 * SAM contrastive loss of a batch (a number; no gradients kept). `batchLossAsync` is the same
 * with an asynchronous read.
 *
 * @example const before = batchLoss(params, info.model, probe, cfg.loss);
 */
export function batchLoss(params: Params, cfg: DualEncoderConfig, b: FixedBatch, loss: FinetuneRetrievalConfig['loss']): number {
  assertCanReadSync('batchLoss', 'batchLossAsync');
  const l = samLossOf(params, cfg, b, loss);
  const v = l.dataSync()[0];
  l.dispose();
  return v;
}

/**
 * `batchLoss` reading the loss asynchronously (webgpu in Node); the same number, bit for bit.
 *
 * @example const before = await batchLossAsync(params, info.model, probe, cfg.loss);
 */
export async function batchLossAsync(params: Params, cfg: DualEncoderConfig, b: FixedBatch, loss: FinetuneRetrievalConfig['loss']): Promise<number> {
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

/** Runs one fine-tuning job and evaluates it on the downstream test split. */
export async function runFinetuneRetrieval(
  cfg: FinetuneRetrievalConfig, opts: { out?: string; backend?: string; quiet?: boolean } = {},
): Promise<FinetuneRetrievalResult> {
  const t0 = performance.now();
  const runDir = path.resolve(opts.out ?? path.join('runs', cfg.name));
  await mkdir(runDir, { recursive: true });
  const log = (m: string) => { if (!opts.quiet) console.error(m); };
  const backend = await initBackend({ prefer: parseBackendPreference(opts.backend ?? cfg.backend) });
  const info = await readCheckpointInfo(cfg.checkpoint);
  log(`from ${info.dir} (step ${info.step}); backend ${backend.name}`);
  const data = await loadDownstream(cfg.data, runDir);
  const framesDir = path.resolve(cfg.framesDir ?? path.join(data.framesRoot, frameCacheDirName({ frames: info.frames.count, size: info.frames.size, strategy: info.frames.strategy, seed: info.seed })));
  const summary = await buildFrameCache([...data.train, ...data.test], {
    out: framesDir, frames: info.frames.count, size: info.frames.size, strategy: info.frames.strategy, seed: info.seed,
  });
  log(`frame cache ${framesDir}: ${summary.decoded} decoded, ${summary.reused} reused, ${summary.skipped.length} skipped`);
  const cache = await openFrameCache(framesDir);
  const tok = await loadTokenizer(info.tokenizerDir);
  const trainEntries = data.train.filter((e) => cache.has(e.id));
  if (trainEntries.length < cfg.train.batchSize) {
    throw new Error(`downstream train split has ${trainEntries.length} decodable videos, fewer than train.batchSize ${cfg.train.batchSize}`);
  }

  const store = await loadModel(info, cfg.seed);
  const params = store.snapshot();
  const names = trainableNames(Object.keys(params), cfg.train.freezeEncoders);
  const trainable = Object.fromEntries(names.map((n) => [n, params[n] as tf.Variable]));
  const optimizer = new AdamW(trainable, {
    lr: cfg.train.lr, weightDecay: cfg.train.weightDecay,
    groups: (name) => {
      const g = paramGroup(name);
      return { lrScale: g.group === 'encoder' ? cfg.train.encoderLrScale : 1, weightDecay: g.decay ? cfg.train.weightDecay : 0 };
    },
  });
  const probe = await fixedBatch(cache, trainEntries, tok, info.maxLen, cfg.train.batchSize);
  const lossBefore = await batchLossAsync(params, info.model, probe, cfg.loss);
  const table = encodeCaptions(trainEntries, (c) => tok.encode(c, info.maxLen));
  const loader = new BatchLoader(cache, table, { batchSize: cfg.train.batchSize, seed: cfg.seed, videoIds: trainEntries.map((e) => e.id) });
  const schedule = cosineWithWarmup({ baseLr: cfg.train.lr, warmupSteps: cfg.train.warmupSteps, totalSteps: cfg.train.steps, minLr: cfg.train.minLr });
  const logger = new MetricsLogger(path.join(runDir, 'metrics.jsonl'), { quiet: opts.quiet });
  log(`${names.length} of ${Object.keys(params).length} tensors trainable (${cfg.train.freezeEncoders ? 'encoders frozen' : `encoders at ${cfg.train.encoderLrScale}× the head rate`}); ${trainEntries.length} train videos`);

  let training;
  try {
    training = await runTraining({
      runDir, params: params as Record<string, tf.Variable>, optimizer, schedule, totalSteps: cfg.train.steps,
      clipNorm: cfg.train.clipNorm, checkpointEvery: cfg.train.checkpointEvery, keepCheckpoints: cfg.train.keepCheckpoints,
      config: { ...info.raw, finetune: cfg, from: { checkpoint: info.dir, step: info.step } },
      logger, logitScaleName: 'logit_scale',
    }, {
      computeGrads: async () => {
        const batch = await loader.next();
        const frames = tf.tensor(batch.frames as Float32Array, batch.framesShape);
        const ids = tf.tensor2d(batch.ids, batch.textShape, 'int32');
        const mask = tf.tensor2d(batch.mask, batch.textShape, 'int32');
        const { value, grads } = valueAndGradsOf((p) => {
          const v = encodeVideo(p, frames, info.model);
          const t = encodeText(p, ids, mask, info.model);
          return samContrastiveLoss(v, t, { marginRad: cfg.loss.marginRad, logitScale: p.logit_scale, detachMargin: cfg.loss.detachMargin }).loss as tf.Scalar;
        }, params, names);
        const loss = (await value.data())[0];
        tf.dispose([value, frames, ids, mask]);
        return { loss, grads, samples: batch.framesShape[0] };
      },
      dataState: () => loader.state(),
    });
  } finally {
    optimizer.dispose();
  }
  const lossAfter = await batchLossAsync(params, info.model, probe, cfg.loss);
  tf.dispose([probe.frames, probe.ids, probe.mask]);
  const frozen = Object.keys(params).length - names.length;
  store.dispose();

  const evalReport = await evaluateCheckpointRetrieval({
    checkpoint: runDir, manifest: data.source, entries: data.test, split: 'all', dsl: cfg.eval.dsl,
    framesDir, batchSize: cfg.eval.batchSize, out: runDir, onLog: log,
  });
  const wallSeconds = (performance.now() - t0) / 1000;
  const summaryFile = path.join(runDir, 'finetune.json');
  await writeFile(summaryFile, `${JSON.stringify({
    from: { checkpoint: info.dir, step: info.step }, steps: training.step, stopped: training.stopped, lossBefore, lossAfter,
    trainableTensors: names.length, frozenTensors: frozen, backend: backend.name, wallSeconds, config: cfg,
    t2v: evalReport.t2v, v2t: evalReport.v2t,
  }, null, 2)}\n`);
  return { runDir, lossBefore, lossAfter, trainable: names.length, frozen, steps: training.step, eval: evalReport, wallSeconds };
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string' }, out: { type: 'string' }, backend: { type: 'string' }, quiet: { type: 'boolean', default: false } },
  });
  if (!values.config) throw new Error('--config: a finetune-retrieval JSON config is required (see pipelines/configs/finetune-retrieval.json)');
  const cfg = await loadJsonConfig(values.config, parseFinetuneRetrievalConfig);
  const r = await runFinetuneRetrieval(cfg, { out: values.out, backend: values.backend, quiet: values.quiet });
  console.log(`fixed-batch loss ${r.lossBefore.toFixed(4)} → ${r.lossAfter.toFixed(4)} after ${r.steps} steps`);
  console.log(`test t2v R@1 ${r.eval.t2v.R1.toFixed(1)}, v2t R@1 ${r.eval.v2t.R1.toFixed(1)} (chance ${r.eval.chanceR1.toFixed(1)}); report ${r.eval.files.json}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(() => process.exit(0), (e: unknown) => { console.error(`finetune-retrieval: ${(e as Error).message}`); process.exit(1); });
}
