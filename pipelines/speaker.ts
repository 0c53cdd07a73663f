/**
 * Speaker verification: a TDNN with attentive statistics pooling (src/nn/speakerNet.ts) over
 * log-mel filterbanks, trained with any MarginHead (AAM-softmax, s = 30, m = 0.2 by default) on
 * a VoxCeleb-layout tree where every speaker folder is a class; scored by the cosine of
 * full-utterance embeddings on a trial list → eval.json (EER in percent, minDCF at
 * p_target 0.01) with DET and ROC plots.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { tf } from '../src/backend/tf.js';
import { initBackend, parseBackendPreference } from '../src/backend/init.js';
import { featureConfigSchema, featureDim } from '../src/audio/features.js';
import { readTrials, scanVoxCeleb } from '../src/data/voxceleb.js';
import { writeVerificationReport } from '../src/face/report.js';
import { MARGIN_HEAD_NAMES, type MarginHeadConfig } from '../src/margin/head.js';
import { embedSpeakers, initSpeakerNet, receptiveField, speakerNetConfigSchema, speakerNetOptionsSchema, type SpeakerNetConfig } from '../src/nn/speakerNet.js';
import {
  bankSource, dot, embedBank, loadFeatureBank, loadRunCheckpoint, streamingSource, trainEmbeddingModel, trainSettingsSchema, type CropSource,
} from './lib/audioTraining.js';
import { openRunFolder } from './runFolder.js';
import { writeFileAtomic } from '../src/util/atomicWrite.js';

export const speakerConfigSchema = z.object({
  name: z.string().min(1).default('speaker'),
  seed: z.number().int().min(0).default(1),
  backend: z.string().default('auto'),
  features: featureConfigSchema.default(featureConfigSchema.parse({ kind: 'logmel' })),
  /** inputDim is taken from the features. */
  model: speakerNetOptionsSchema.default({}),
  loss: z.object({
    name: z.enum(MARGIN_HEAD_NAMES).default('aam-softmax'),
    /** Further head options (scale, m2, interClassLambda, …) as MarginHead takes them. */
    options: z.record(z.string(), z.unknown()).default({}),
  }).default({ name: 'aam-softmax', options: {} }),
  train: trainSettingsSchema.default(trainSettingsSchema.parse({})),
});
export type SpeakerConfig = z.output<typeof speakerConfigSchema>;

/** Parses a config object (`--config` file contents); errors name the field. */
export function parseSpeakerConfig(raw: unknown, source = 'speaker config'): SpeakerConfig {
  const r = speakerConfigSchema.safeParse(raw ?? {});
  if (!r.success) throw new Error(`${source}: ${z.prettifyError(r.error).replace(/\n/g, '; ')}`);
  return r.data;
}

/** Reads a JSON config file (or none: every default). */
export async function readSpeakerConfig(file?: string): Promise<SpeakerConfig> {
  if (!file) return parseSpeakerConfig({});
  let raw: unknown;
  try { raw = JSON.parse(await readFile(file, 'utf8')); } catch (e) { throw new Error(`--config ${file}: ${(e as Error).message}`); }
  return parseSpeakerConfig(raw, `--config ${file}`);
}

function netConfig(cfg: SpeakerConfig): SpeakerNetConfig {
  return speakerNetConfigSchema.parse({ ...cfg.model, inputDim: featureDim(cfg.features) });
}

export interface TrainSpeakerResult {
  runDir: string;
  speakers: number;
  utterances: number;
  skipped: { path: string; reason: string }[];
  steps: number;
  lossStart: number;
  lossEnd: number;
  seconds: number;
}

/**
 * Trains on a VoxCeleb-layout tree; the run folder gets checkpoints/ and metrics.jsonl.
 *
 * @example await runTrainSpeaker(parseSpeakerConfig({ train: { steps: 100 } }), { audio: 'data/synth-speakers/train', out: 'runs/spk' });
 */
export async function runTrainSpeaker(cfg: SpeakerConfig, opts: { audio: string; out: string; quiet?: boolean; overwrite?: boolean }): Promise<TrainSpeakerResult> {
  // One writer per run folder, and a previous run replaced only with --overwrite (pipelines/runFolder.ts).
  const { runDir, release } = await openRunFolder(opts.out, 'speaker', (m) => { if (!opts.quiet) console.error(m); }, { overwrite: opts.overwrite });
  try {
    return await runTrainSpeakerIn(runDir, cfg, opts);
  } finally {
    await release();
  }
}

async function runTrainSpeakerIn(runDir: string, cfg: SpeakerConfig, opts: { audio: string; out: string; quiet?: boolean }): Promise<TrainSpeakerResult> {
  const log = (m: string) => { if (!opts.quiet) console.error(m); };
  // Settings that cannot work are refused before any audio is decoded.
  const model = netConfig(cfg);
  if (cfg.train.cropFrames <= receptiveField(model)) throw new Error(`train.cropFrames ${cfg.train.cropFrames} must exceed the network's receptive field ${receptiveField(model)}`);
  await initBackend({ prefer: parseBackendPreference(cfg.backend) });
  const scan = await scanVoxCeleb(opts.audio);
  for (const s of scan.skipped.slice(0, 5)) log(`skipped ${s.path}: ${s.reason}`);
  if (scan.speakers.length < 2) throw new Error(`--audio ${opts.audio}: found ${scan.speakers.length} speaker folder(s) with utterances; training needs at least 2 (<speaker>/<session>/<utt>.wav)`);
  const files = scan.utterances.map((u) => u.path);
  const skipped: { path: string; reason: string }[] = [];
  let source: CropSource;
  let labels: Int32Array;
  if (cfg.train.cacheFeatures) {
    const bank = await loadFeatureBank(files, cfg.features, { concurrency: cfg.train.concurrency });
    for (const s of bank.skipped.slice(0, 5)) log(`skipped ${s.path}: ${s.reason}`);
    if (bank.skipped.length) log(`${bank.skipped.length} of ${files.length} utterance(s) could not be decoded and were skipped`);
    if (bank.features.length < 2) throw new Error(`--audio ${opts.audio}: fewer than 2 decodable utterances`);
    skipped.push(...bank.skipped);
    source = bankSource(bank);
    labels = Int32Array.from(bank.source, (i) => scan.utterances[i].label);
  } else {
    labels = Int32Array.from(scan.utterances, (u) => u.label);
    source = streamingSource(files, labels, cfg.features, {
      concurrency: cfg.train.concurrency,
      onSkip: (p, reason) => { skipped.push({ path: p, reason }); log(`skipped ${p}: ${reason}`); },
    });
  }
  const store = initSpeakerNet(model, cfg.seed);
  const head = { ...cfg.loss.options, name: cfg.loss.name, numClasses: scan.speakers.length, dim: model.embedDim, seed: cfg.seed } as MarginHeadConfig;
  if (cfg.loss.name === 'kappaface') (head as { numSamples?: number }).numSamples = source.size;
  log(`speaker ${cfg.loss.name}: ${scan.speakers.length} speakers, ${source.size} utterances, ${store.count().toLocaleString('en-US')} parameters, ${cfg.train.steps} steps`);
  try {
    const r = await trainEmbeddingModel({
      runDir, seed: cfg.seed, store, head, source, labels, numClasses: scan.speakers.length, train: cfg.train, quiet: opts.quiet,
      embed: (p, x) => embedSpeakers(p, x, model),
      config: { kind: 'speaker', speaker: cfg, features: cfg.features, model, classes: scan.speakers, audio: scan.root },
    });
    return { runDir, speakers: scan.speakers.length, utterances: source.size, skipped: [...scan.skipped, ...skipped], ...r };
  } finally {
    store.dispose();
  }
}

/** What `eval speaker` writes to eval.json and prints with --json. */
export interface SpeakerEval {
  /** Equal error rate in percent. */
  eer: number;
  /** Normalised minimum detection cost at p_target 0.01, C_miss = C_fa = 1. */
  minDCF: number;
  pTarget: number;
  trials: number;
  targets: number;
  nontargets: number;
  /** Trials left out because one of their files could not be decoded. */
  skippedTrials: number;
  skippedFiles: { path: string; reason: string }[];
  det: string;
  roc: string;
  checkpoint: string;
  trialList: string;
  audio: string;
}

/**
 * Scores a trial list with a speaker checkpoint (cosine of full-utterance embeddings).
 *
 * @example const r = await runEvalSpeaker({ checkpoint: 'runs/spk', trials: 'trials.txt', audio: 'data/test' });
 */
export async function runEvalSpeaker(opts: { checkpoint: string; trials: string; audio: string; out?: string; backend?: string }): Promise<SpeakerEval> {
  await initBackend({ prefer: parseBackendPreference(opts.backend ?? 'auto') });
  const ck = await loadRunCheckpoint(opts.checkpoint);
  try {
    const conf = (ck.config ?? {}) as { kind?: string; features?: unknown; model?: unknown };
    if (conf.kind !== 'speaker') throw new Error(`--checkpoint ${ck.dir}: not a speaker checkpoint (config.json kind is '${conf.kind ?? 'missing'}')`);
    const features = featureConfigSchema.parse(conf.features);
    const model = speakerNetConfigSchema.parse(conf.model);
    const trials = await readTrials(opts.trials);
    const root = path.resolve(opts.audio);
    const rels = [...new Set(trials.flatMap((t) => [t.enrol, t.test]))];
    const bank = await loadFeatureBank(rels.map((r) => path.join(root, r)), features);
    const emb = await embedBank(bank, (x) => embedSpeakers(ck.params, x, model), receptiveField(model) + 1);
    const byRel = new Map(bank.source.map((s, k) => [rels[s], emb[k]]));
    const scores: number[] = [];
    const labels: number[] = [];
    for (const t of trials) {
      const a = byRel.get(t.enrol);
      const b = byRel.get(t.test);
      if (!a || !b) continue;
      scores.push(dot(a, b));
      labels.push(t.label);
    }
    if (scores.length === 0) throw new Error(`--trials ${opts.trials}: no trial could be scored (${bank.skipped.length} file(s) failed to decode; first: ${bank.skipped[0]?.path}: ${bank.skipped[0]?.reason})`);
    const outDir = path.resolve(opts.out ?? path.join(ck.dir, `eval-speaker-${path.basename(opts.trials, path.extname(opts.trials))}`));
    const report = await writeVerificationReport(scores, labels, outDir, { folds: Math.min(10, scores.length), title: path.basename(opts.trials), extra: { checkpoint: ck.dir } });
    const targets = labels.reduce((a, b) => a + b, 0);
    const result: SpeakerEval = {
      eer: 100 * report.metrics.eer, minDCF: report.metrics.minDCF, pTarget: 0.01, trials: scores.length, targets, nontargets: scores.length - targets,
      skippedTrials: trials.length - scores.length, skippedFiles: bank.skipped, det: report.files.det, roc: report.files.roc,
      checkpoint: ck.dir, trialList: path.resolve(opts.trials), audio: root,
    };
    await writeFileAtomic(path.join(outDir, 'eval.json'), JSON.stringify(result, null, 2) + '\n');
    return result;
  } finally {
    tf.dispose(Object.values(ck.params));
  }
}
