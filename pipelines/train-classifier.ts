/**
 * Open-set recognition training: a small image backbone (src/face/backbone.ts) + a MarginHead
 * of any loss by name, trained with AdamW on a folder-per-identity image tree or the synthetic
 * identity benchmark; closed-set classification (per-class recall, CAMRI's target) on the
 * test split and verification on the pairs file → eval.json.
 *
 *   vlmargin train classifier --loss arcface [--data DIR] [--out runs/NAME] [--steps N] [--seed S]
 *       [--important-class ID] [--sampling natural|balanced] [--resume [--allow-config-change] | --overwrite]
 *
 * Run folder: checkpoints/, metrics.jsonl, eval.json, and for KappaFace kappa-margins.jsonl and
 * kappa-margins.png (margin vs class size).
 */
import { appendFile, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { tf } from '../src/backend/tf.js';
import { initBackend, parseBackendPreference } from '../src/backend/init.js';
import { classificationMetrics, type ClassificationMetrics } from '../src/eval/classification.js';
import { savePlot } from '../src/eval/plot.js';
import type { VerificationMetrics } from '../src/eval/verification.js';
import { backboneConfigSchema, embedImages, initBackbone, type BackboneConfig } from '../src/face/backbone.js';
import { BatchSampler, ImageFolderDataset, isFolder, toFloatImage, toFloatPixels } from '../src/face/imageFolder.js';
import { generateSynthIdentities, mulberry32, readSynthIdentityOptions } from '../src/face/synthIdentities.js';
import { verifyPairs } from '../src/face/verify.js';
import { MARGIN_HEAD_NAMES, MarginHead, type MarginHeadConfig } from '../src/margin/head.js';
import { momentumEncoderUpdate } from '../src/margin/kappaface.js';
import { valueAndGradsOf, type Params } from '../src/nn/params.js';
import { configHash, loadLatestCheckpoint } from '../src/train/checkpoint.js';
import { MetricsLogger } from '../src/train/logger.js';
import { AdamW } from '../src/train/optimizer.js';
import { cosineWithWarmup } from '../src/train/schedule.js';
import { runTraining } from '../src/train/trainer.js';
import { runNameSchema } from './config.js';
import { checkResumeConfig, openRunFolder } from './runFolder.js';
import { writeFileAtomic } from '../src/util/atomicWrite.js';

/** One typed config per run: data, model, loss, training. */
export const trainClassifierConfigSchema = z.object({
  name: runNameSchema('classifier'),
  seed: z.number().int().min(0).default(1),
  backend: z.string().default('auto'),
  data: z.object({
    /** Benchmark folder with train/ (and test/, verify/, pairs.txt), or a bare image tree when `train` is given. */
    dir: z.string().min(1),
    /** Generate the synthetic benchmark into `dir` with these options unless it is there with the same ones. */
    synth: z.object({
      identities: z.number().int().min(2).default(60),
      imbalance: z.number().min(1).default(10),
      seed: z.number().int().min(0).default(1),
      size: z.number().int().min(8).default(32),
    }).optional(),
    train: z.string().optional(),
    test: z.string().optional(),
    pairs: z.string().optional(),
    verifyImages: z.string().optional(),
    /** Decode training images when a batch needs them (memory: the file list and a batch) instead of all at the start. */
    lazyImages: z.boolean().default(false),
  }),
  model: backboneConfigSchema.default(backboneConfigSchema.parse({})),
  loss: z.object({
    name: z.enum(MARGIN_HEAD_NAMES),
    /** Identity name (or label index) of CAMRI's important class. */
    importantClass: z.union([z.string(), z.number().int().min(0)]).optional(),
    /** Further head options (scale, m2, …) as MarginHead takes them. */
    options: z.record(z.string(), z.unknown()).default({}),
  }),
  train: z.object({
    steps: z.number().int().min(1).default(300),
    batchSize: z.number().int().min(2).default(64),
    lr: z.number().positive().default(2e-3),
    minLr: z.number().min(0).default(1e-5),
    warmupSteps: z.number().int().min(0).default(20),
    weightDecay: z.number().min(0).default(0.05),
    clipNorm: z.number().min(0).default(5),
    sampling: z.enum(['natural', 'balanced']).default('natural'),
    flip: z.boolean().default(true),
    cropPad: z.number().int().min(0).default(2),
    checkpointEvery: z.number().int().min(0).default(0),
    keepCheckpoints: z.number().int().min(1).default(2),
  }).default(() => ({ steps: 300, batchSize: 64, lr: 2e-3, minLr: 1e-5, warmupSteps: 20, weightDecay: 0.05, clipNorm: 5, sampling: 'natural' as const, flip: true, cropPad: 2, checkpointEvery: 0, keepCheckpoints: 2 })),
  eval: z.object({ flip: z.boolean().default(false) }).default({ flip: false }),
});
export type TrainClassifierConfig = z.output<typeof trainClassifierConfigSchema>;

export interface TrainClassifierOptions {
  out?: string;
  resume?: boolean;
  /** With `resume`: accept a checkpoint saved under other settings (the changed keys are still listed). */
  allowConfigChange?: boolean;
  /** Replace a previous run in the folder (without it, or `resume`, such a folder is refused). */
  overwrite?: boolean;
  quiet?: boolean;
}

export interface ClassifierEval {
  verification?: VerificationMetrics & { pairs: number; folds: number };
  classification?: ClassificationMetrics & { images: number };
  importantClass?: { name: string; index: number; recall: number; trainImages: number };
}

export interface TrainClassifierResult {
  runDir: string;
  eval: ClassifierEval;
  steps: number;
  finalLoss: number;
  /** Mean loss over the first and the last 10 % of steps. */
  lossStart: number;
  lossEnd: number;
  skippedImages: number;
  wallSeconds: number;
}

/** Parses and validates a config object; errors name the field. */
export function parseTrainClassifierConfig(raw: unknown, source = 'config'): TrainClassifierConfig {
  const r = trainClassifierConfigSchema.safeParse(raw);
  if (!r.success) throw new Error(`${source}: ${z.prettifyError(r.error).replace(/\n/g, '; ')}`);
  return r.data;
}

interface DataPaths { train: string; test?: string; pairs?: string; verifyImages?: string }

async function prepareData(cfg: TrainClassifierConfig, log: (m: string) => void): Promise<DataPaths> {
  const d = cfg.data;
  const dir = path.resolve(d.dir);
  if (d.synth) {
    const have = await readSynthIdentityOptions(dir);
    const same = have && have.identities === d.synth.identities && have.imbalance === d.synth.imbalance && have.seed === d.synth.seed && have.size === d.synth.size;
    if (!same) {
      const r = await generateSynthIdentities({ out: dir, ...d.synth });
      log(`synthetic identities written: ${dir} (${r.images} images, ${r.seconds.toFixed(1)} s)`);
    }
  }
  const pick = async (explicit: string | undefined, sub: string): Promise<string | undefined> => {
    if (explicit) return path.resolve(explicit);
    const p = path.join(dir, sub);
    return (await isFolder(p)) ? p : undefined;
  };
  const train = d.train ? path.resolve(d.train) : path.join(dir, 'train');
  if (!(await isFolder(train))) throw new Error(`data: no training image tree at ${train} (expected <identity>/<image> folders)`);
  const verifyImages = await pick(d.verifyImages, 'verify');
  const pairs = d.pairs ? path.resolve(d.pairs) : verifyImages ? path.join(dir, 'pairs.txt') : undefined;
  return { train, test: await pick(d.test, 'test'), pairs, verifyImages };
}

function headConfig(cfg: TrainClassifierConfig, classes: string[], numSamples: number): MarginHeadConfig {
  const base: Record<string, unknown> = { ...cfg.loss.options, name: cfg.loss.name, numClasses: classes.length, dim: cfg.model.embedDim, seed: cfg.seed };
  if (cfg.loss.name === 'kappaface') base.numSamples = numSamples;
  if (cfg.loss.name === 'camri') base.importantClass = importantIndex(cfg, classes);
  return base as MarginHeadConfig;
}

function importantIndex(cfg: TrainClassifierConfig, classes: string[]): number {
  const k = cfg.loss.importantClass;
  if (k === undefined) throw new Error(`loss.importantClass (--important-class) is required for ${cfg.loss.name}`);
  const idx = typeof k === 'number' ? k : classes.indexOf(k);
  if (idx < 0 || idx >= classes.length) throw new Error(`loss.importantClass: '${k}' is not a training identity (${classes.length} classes: ${classes.slice(0, 3).join(', ')}, …)`);
  return idx;
}

/** Closed-set predictions of the head on every image of `ds`. */
async function classify(params: Params, model: BackboneConfig, head: MarginHead, ds: ImageFolderDataset): Promise<number[]> {
  const S = model.imageSize;
  const per = S * S * 3;
  const pred: number[] = [];
  for (let s = 0; s < ds.length; s += 128) {
    const n = Math.min(128, ds.length - s);
    const buf = new Float32Array(n * per);
    for (let i = 0; i < n; i++) toFloatImage(ds, s + i, buf.subarray(i * per, (i + 1) * per));
    const p = tf.tidy(() => tf.argMax(head.logits(embedImages(params, tf.tensor4d(buf, [n, S, S, 3]), model), { weight: params['head.weight'] }), 1));
    try {
      pred.push(...(await p.data()));
    } finally {
      p.dispose();
    }
  }
  return pred;
}

async function evaluate(
  cfg: TrainClassifierConfig, params: Params, head: MarginHead, data: DataPaths, train: ImageFolderDataset, log: (m: string) => void,
): Promise<ClassifierEval> {
  const out: ClassifierEval = {};
  if (data.test) {
    const test = await ImageFolderDataset.open(data.test, { size: cfg.model.imageSize, classes: train.classes });
    if (test.skipped.length) log(`test: ${test.skipped.length} unreadable image(s) skipped (first: ${test.skipped[0].path}: ${test.skipped[0].reason})`);
    const pred = await classify(params, cfg.model, head, test);
    out.classification = { ...classificationMetrics(pred, Array.from(test.labels), train.classes.length), images: test.length };
    if (cfg.loss.importantClass !== undefined) {
      const k = importantIndex(cfg, train.classes);
      out.importantClass = { name: train.classes[k], index: k, recall: out.classification.perClassRecall[k], trainImages: train.counts()[k] };
    }
  }
  if (data.pairs && data.verifyImages) {
    const v = await verifyPairs(params, cfg.model, data.pairs, data.verifyImages, { flip: cfg.eval.flip });
    out.verification = { ...v.metrics, pairs: v.scores.length, folds: v.folds };
  }
  return out;
}

/** Removes the JSONL rows whose `step` is past `step` (and broken lines); a missing file is left missing. */
async function dropRowsAfterStep(file: string, step: number): Promise<void> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new Error(`--resume: cannot read ${file} (${(e as Error).message})`);
  }
  const lines = text.split('\n').filter((l) => l.trim());
  const kept = lines.filter((l) => {
    let row: { step?: unknown };
    try { row = JSON.parse(l) as { step?: unknown }; } catch { return false; }
    return !(typeof row.step === 'number' && row.step > step);
  });
  if (kept.length !== lines.length) await writeFileAtomic(file, kept.map((l) => `${l}\n`).join(''));
}

/** Trains (or resumes) one classifier run and writes eval.json. */
export async function runTrainClassifier(cfg: TrainClassifierConfig, opts: TrainClassifierOptions = {}): Promise<TrainClassifierResult> {
  // One writer per run folder; a previous run continues with --resume or is replaced with --overwrite (pipelines/runFolder.ts).
  const { runDir, release } = await openRunFolder(
    opts.out, cfg.name, (m) => { if (!opts.quiet) console.error(m); }, { resume: opts.resume, overwrite: opts.overwrite },
  );
  try {
    return await runTrainClassifierIn(runDir, cfg, opts);
  } finally {
    await release();
  }
}

async function runTrainClassifierIn(runDir: string, cfg: TrainClassifierConfig, opts: TrainClassifierOptions): Promise<TrainClassifierResult> {
  const t0 = performance.now();
  const log = (m: string) => { if (!opts.quiet) console.error(m); };
  await initBackend({ prefer: parseBackendPreference(cfg.backend) });
  const data = await prepareData(cfg, log);
  const train = await ImageFolderDataset.open(data.train, { size: cfg.model.imageSize, lazy: cfg.data.lazyImages });
  for (const s of train.skipped.slice(0, 10)) log(`skipped ${s.path}: ${s.reason}`);
  if (train.skipped.length) log(`train: ${train.skipped.length} unreadable image(s) skipped of ${train.length + train.skipped.length}`);
  const counts = train.counts();
  const classes = train.classes;
  if (cfg.loss.name === 'camri') importantIndex(cfg, classes);

  const store = initBackbone(cfg.model, cfg.seed);
  const head = new MarginHead(headConfig(cfg, classes, train.length));
  const params: Record<string, tf.Variable> = { ...(store.snapshot() as Record<string, tf.Variable>) };
  for (const [k, v] of Object.entries(head.params())) params[`head.${k}`] = v;
  const optimizer = new AdamW(params, {
    lr: cfg.train.lr, weightDecay: cfg.train.weightDecay, betas: [0.9, 0.999],
    // Norms, biases, positional embeddings and SphereFace2's scalar bias are not decayed.
    groups: (name, shape) => ({ weightDecay: shape.length >= 2 && name !== 'backbone.pos_embed' ? cfg.train.weightDecay : 0 }),
  });
  let startStep = 0;
  let resumeFrom = 0;
  if (opts.resume) {
    const ck = await loadLatestCheckpoint(runDir, { onWarning: (w) => log(`warning: ${w}`) });
    if (ck) {
      try {
        checkResumeConfig(ck, (ck.config as { trainClassifier?: unknown } | null)?.trainClassifier, cfg, !!opts.allowConfigChange, log);
      } catch (e) {
        tf.dispose([...Object.values(ck.params), ...Object.values(ck.optimizer ?? {})]);
        throw e;
      }
      for (const [k, v] of Object.entries(ck.params)) {
        if (!(k in params)) throw new Error(`--resume: checkpoint ${ck.dir} has parameter '${k}' this config does not`);
        params[k].assign(v);
      }
      if (ck.optimizer) optimizer.loadState(ck.optimizer, Number(ck.state.optimizerStep ?? ck.step));
      tf.dispose([...Object.values(ck.params), ...Object.values(ck.optimizer ?? {})]);
      startStep = ck.step;
      resumeFrom = Number(ck.state.dataPosition ?? 0);
      // KappaFace's feature memory is not checkpointed: it refills over the next epoch (ψ ≡ 1 meanwhile).
      log(`resumed from ${ck.dir} (step ${ck.step})`);
    }
  }
  const encoder = head.kappa?.source === 'momentum-encoder'
    ? Object.fromEntries(Object.entries(store.snapshot()).map(([k, v]) => [k, tf.variable(tf.clone(v), false)]))
    : undefined;
  const sampler = new BatchSampler(train.labels, classes.length, { batchSize: cfg.train.batchSize, sampling: cfg.train.sampling, seed: cfg.seed, resumeFrom });
  const augRand = mulberry32(cfg.seed * 7919 + 17 + resumeFrom);
  const S = cfg.model.imageSize;
  const per = S * S * 3;
  const epochSteps = sampler.batchesPerEpoch;
  const totalSteps = cfg.train.steps;
  const schedule = cosineWithWarmup({ baseLr: cfg.train.lr, warmupSteps: Math.min(cfg.train.warmupSteps, totalSteps), totalSteps, minLr: cfg.train.minLr });
  const logger = new MetricsLogger(path.join(runDir, 'metrics.jsonl'), { quiet: opts.quiet, ...(opts.resume ? { resumeAt: startStep } : {}) });
  const kappaFile = path.join(runDir, 'kappa-margins.jsonl');
  // Rows the interrupted run logged after its checkpoint are steps this run trains again.
  if (opts.resume && head.kappa) await dropRowsAfterStep(kappaFile, startStep);
  const losses: number[] = [];
  log(`${cfg.loss.name}: ${classes.length} identities, ${train.length} images, ${store.count().toLocaleString('en-US')} backbone parameters, ${epochSteps} steps/epoch, ${totalSteps} steps`);

  const training = await runTraining({
    runDir, params, optimizer, schedule, totalSteps, startStep,
    clipNorm: cfg.train.clipNorm, checkpointEvery: cfg.train.checkpointEvery, keepCheckpoints: cfg.train.keepCheckpoints,
    config: { trainClassifier: cfg, model: cfg.model, classes, head: head.settings },
    configHash: configHash(cfg),
    logger,
  }, {
    computeGrads: async (step) => {
      const drawn = sampler.next();
      // Images that cannot be decoded (found only now when opened lazily) leave the batch.
      const { pixels, kept } = await train.readImages(drawn);
      if (kept.length === 0) throw new Error(`train-classifier: no image of batch ${step} could be decoded (see ${train.skipped.at(-1)?.path})`);
      const idx = Int32Array.from(kept);
      const n = idx.length;
      const buf = new Float32Array(n * per);
      for (let i = 0; i < n; i++) toFloatPixels(pixels.subarray(i * per, (i + 1) * per), S, buf.subarray(i * per, (i + 1) * per), { flip: cfg.train.flip, cropPad: cfg.train.cropPad }, augRand);
      const images = tf.tensor4d(buf, [n, S, S, 3]);
      const labels = tf.tensor1d(Int32Array.from(idx, (i) => train.labels[i]), 'int32');
      // KappaFace's memory takes this step's embeddings: kept past the gradient call and read
      // (asynchronously) after it, since the loss function itself cannot wait for a read.
      let emb: tf.Tensor | undefined;
      const { value, grads } = valueAndGradsOf((p) => {
        const e = embedImages(p, images, cfg.model);
        if (head.kappa && !encoder) emb = tf.keep(e);
        return head.loss(e, labels, { weight: p['head.weight'], bias: p['head.bias'], step }).loss as tf.Scalar;
      }, params);
      if (encoder) {
        // The official momentum encoder: θ_k ← μ·θ_k + (1 − μ)·θ from the parameters as the
        // previous steps left them, then its features of this batch feed the class sums.
        momentumEncoderUpdate(encoder, params, (head.settings as { encoderMomentum: number }).encoderMomentum);
        emb = embedImages(encoder, images, cfg.model);
      }
      const sampleIds = emb && tf.tensor1d(idx, 'int32');
      let loss: number;
      try {
        loss = (await value.data())[0];
        if (head.kappa && emb && sampleIds) await head.kappa.update(sampleIds, emb, labels);
      } finally {
        tf.dispose([emb, sampleIds]);
      }
      losses.push(loss);
      const extra: Record<string, number> = {};
      if (head.kappa && (step + 1) % epochSteps === 0) {
        head.kappa.endEpoch();
        const m = head.kappa.margins();
        const margins = Array.from(await m.data());
        m.dispose();
        await appendFile(kappaFile, JSON.stringify({ epoch: head.kappa.epoch, step: step + 1, margins }) + '\n');
        extra.kappaMarginMean = margins.reduce((a, b) => a + b, 0) / margins.length;
      }
      head.step = step + 1;
      tf.dispose([value, images, labels]);
      return { loss, grads, samples: n, extra };
    },
    dataState: () => sampler.state(),
  });

  const snapshot: Params = { ...params };
  const evalReport = await evaluate(cfg, snapshot, head, data, train, log);
  if (head.kappa && head.kappa.epoch > 0) {
    const m = head.kappa.margins();
    const margins = Array.from(await m.data());
    m.dispose();
    await savePlot({
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      title: `KappaFace margins after epoch ${head.kappa.epoch}`,
      data: { values: margins.map((margin, c) => ({ classSize: counts[c], margin, identity: classes[c] })) },
      mark: { type: 'point', filled: true },
      encoding: {
        x: { field: 'classSize', type: 'quantitative', title: 'training images of the class' },
        y: { field: 'margin', type: 'quantitative', title: 'margin m_c (rad)', scale: { zero: false } },
      },
      width: 360, height: 240,
    }, path.join(runDir, 'kappa-margins.png'));
  }
  const k = Math.max(1, Math.floor(losses.length / 10));
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / Math.max(a.length, 1);
  const wallSeconds = (performance.now() - t0) / 1000;
  const result: TrainClassifierResult = {
    runDir, eval: evalReport, steps: training.step, finalLoss: training.lastLoss,
    lossStart: mean(losses.slice(0, k)), lossEnd: mean(losses.slice(-k)), skippedImages: train.skipped.length, wallSeconds,
  };
  await writeFileAtomic(path.join(runDir, 'eval.json'), JSON.stringify({
    ...evalReport, steps: training.step, stopped: training.stopped, lossStart: result.lossStart, lossEnd: result.lossEnd,
    skippedImages: train.skipped.map((s) => s.path), classCounts: counts, wallSeconds, config: cfg,
  }, null, 2) + '\n');
  store.dispose();
  if (encoder) tf.dispose(Object.values(encoder));
  head.dispose();
  optimizer.dispose();
  return result;
}

/** A folder with train/ but no identities.json is someone's data: never generate into it. */
async function isBareImageTree(dir: string): Promise<boolean> {
  return (await isFolder(path.join(dir, 'train'))) && !(await readSynthIdentityOptions(dir));
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      loss: { type: 'string', default: 'arcface' },
      data: { type: 'string', default: 'data/synth-identities' },
      out: { type: 'string' },
      steps: { type: 'string' },
      'batch-size': { type: 'string' },
      seed: { type: 'string' },
      'important-class': { type: 'string' },
      sampling: { type: 'string' },
      flip: { type: 'boolean', default: false },
      backend: { type: 'string' },
      resume: { type: 'boolean', default: false },
      'allow-config-change': { type: 'boolean', default: false },
      overwrite: { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      'no-synth': { type: 'boolean', default: false },
    },
  });
  const num = (v: string | undefined, name: string) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got '${v}'`);
    return n;
  };
  const raw = {
    name: values.out ? path.basename(values.out) : `classifier-${values.loss}`,
    seed: num(values.seed, 'seed'),
    backend: values.backend,
    data: { dir: values.data, synth: values['no-synth'] || (await isBareImageTree(values.data!)) ? undefined : {} },
    loss: { name: values.loss, importantClass: values['important-class'] },
    train: { steps: num(values.steps, 'steps'), batchSize: num(values['batch-size'], 'batch-size'), sampling: values.sampling },
    eval: { flip: values.flip },
  };
  const cfg = parseTrainClassifierConfig(JSON.parse(JSON.stringify(raw)), 'train-classifier options');
  const r = await runTrainClassifier(cfg, { out: values.out, resume: values.resume, allowConfigChange: values['allow-config-change'], overwrite: values.overwrite, quiet: values.quiet });
  console.log(JSON.stringify({ runDir: r.runDir, steps: r.steps, lossStart: r.lossStart, lossEnd: r.lossEnd, ...r.eval.verification && {
    accuracy: r.eval.verification.accuracy, eer: r.eval.verification.eer, tarAtFar1e3: r.eval.verification.tarAtFar['1e-3'] },
  closedSetAccuracy: r.eval.classification?.accuracy, importantClass: r.eval.importantClass }, null, 2));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(() => process.exit(0), (e: unknown) => { console.error(`train-classifier: ${(e as Error).message}`); process.exit(1); });
}
