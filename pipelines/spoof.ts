/**
 * Anti-spoofing (STC's ASVspoof 2019 system, scaled down): LFCC (20 + Δ + ΔΔ) into a light CNN
 * with max-feature-map activations (src/nn/lightCnn.ts) and an AM-softmax head over two classes
 * (bona fide, spoof), trained on an ASVspoof LA protocol. The countermeasure score of an
 * utterance is the head's margin-free logit difference s·(cos θ_bonafide − cos θ_spoof) on the
 * full utterance; bona fide is the positive class of the EER.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { tf } from '../src/backend/tf.js';
import { initBackend, parseBackendPreference } from '../src/backend/init.js';
import { featureConfigSchema, featureDim } from '../src/audio/features.js';
import { asvspoofAudioPath, readAsvspoofProtocol, type SpoofTrial } from '../src/data/asvspoof.js';
import { writeVerificationReport } from '../src/face/report.js';
import { verificationMetrics } from '../src/eval/verification.js';
import { MARGIN_HEAD_NAMES, MarginHead, type MarginHeadConfig } from '../src/margin/head.js';
import { embedLightCnn, initLightCnn, lightCnnConfigSchema } from '../src/nn/lightCnn.js';
import {
  bankSource, loadFeatureBank, loadRunCheckpoint, streamingSource, trainEmbeddingModel, trainSettingsSchema, type CropSource, type FeatureBank,
} from './lib/audioTraining.js';
import { openRunFolder } from './runFolder.js';
import { writeFileAtomic } from '../src/util/atomicWrite.js';

/** Class indices of the two-class head. */
const BONAFIDE = 0;
const SPOOF = 1;

const spoofTrainSchema = trainSettingsSchema.extend({ sampling: z.enum(['natural', 'balanced']).default('balanced') });

export const spoofConfigSchema = z.object({
  name: z.string().min(1).default('spoof'),
  seed: z.number().int().min(0).default(1),
  backend: z.string().default('auto'),
  features: featureConfigSchema.default(featureConfigSchema.parse({ kind: 'lfcc' })),
  /** inputDim is taken from the features. */
  model: lightCnnConfigSchema.omit({ inputDim: true }).partial().default({}),
  loss: z.object({
    name: z.enum(MARGIN_HEAD_NAMES).default('am-softmax'),
    options: z.record(z.string(), z.unknown()).default({}),
  }).default({ name: 'am-softmax', options: {} }),
  /** Class-balanced batches by default: bona fide and spoof drawn equally often. */
  train: spoofTrainSchema.default(spoofTrainSchema.parse({})),
});
export type SpoofConfig = z.output<typeof spoofConfigSchema>;

export function parseSpoofConfig(raw: unknown, source = 'spoof config'): SpoofConfig {
  const r = spoofConfigSchema.safeParse(raw ?? {});
  if (!r.success) throw new Error(`${source}: ${z.prettifyError(r.error).replace(/\n/g, '; ')}`);
  return r.data;
}

export async function readSpoofConfig(file?: string): Promise<SpoofConfig> {
  if (!file) return parseSpoofConfig({});
  let raw: unknown;
  try { raw = JSON.parse(await readFile(file, 'utf8')); } catch (e) { throw new Error(`--config ${file}: ${(e as Error).message}`); }
  return parseSpoofConfig(raw, `--config ${file}`);
}

/** Protocol lines with their audio files; lines whose audio is missing are returned apart. */
async function resolveProtocol(protocol: string, audio: string): Promise<{ trials: SpoofTrial[]; files: string[]; missing: string[] }> {
  const all = await readAsvspoofProtocol(protocol);
  const trials: SpoofTrial[] = [];
  const files: string[] = [];
  const missing: string[] = [];
  for (const t of all) {
    const f = await asvspoofAudioPath(audio, t.utt);
    if (f) { trials.push(t); files.push(f); } else missing.push(t.utt);
  }
  return { trials, files, missing };
}

export interface TrainSpoofResult { runDir: string; utterances: number; bonafide: number; spoof: number; skipped: number; steps: number; lossStart: number; lossEnd: number; seconds: number }

/**
 * Trains the countermeasure on a protocol's utterances.
 *
 * @example await runTrainSpoof(parseSpoofConfig({}), { protocol: 'train/protocol.txt', audio: 'train/wav', out: 'runs/cm' });
 */
export async function runTrainSpoof(cfg: SpoofConfig, opts: { protocol: string; audio: string; out: string; quiet?: boolean; overwrite?: boolean }): Promise<TrainSpoofResult> {
  // One writer per run folder, and a previous run replaced only with --overwrite (pipelines/runFolder.ts).
  const { runDir, release } = await openRunFolder(opts.out, 'spoof', (m) => { if (!opts.quiet) console.error(m); }, { overwrite: opts.overwrite });
  try {
    return await runTrainSpoofIn(runDir, cfg, opts);
  } finally {
    await release();
  }
}

async function runTrainSpoofIn(runDir: string, cfg: SpoofConfig, opts: { protocol: string; audio: string; out: string; quiet?: boolean }): Promise<TrainSpoofResult> {
  const log = (m: string) => { if (!opts.quiet) console.error(m); };
  await initBackend({ prefer: parseBackendPreference(cfg.backend) });
  const { trials, files, missing } = await resolveProtocol(opts.protocol, opts.audio);
  if (missing.length) log(`${missing.length} protocol utterance(s) have no audio in ${opts.audio} (first: ${missing[0]}.flac/.wav); skipped`);
  let source: CropSource;
  let labels: Int32Array;
  let skipped = 0;
  if (cfg.train.cacheFeatures) {
    const bank = await loadFeatureBank(files, cfg.features, { concurrency: cfg.train.concurrency });
    for (const s of bank.skipped.slice(0, 5)) log(`skipped ${s.path}: ${s.reason}`);
    skipped = bank.skipped.length;
    source = bankSource(bank);
    labels = Int32Array.from(bank.source, (i) => (trials[i].label === 1 ? BONAFIDE : SPOOF));
  } else {
    labels = Int32Array.from(trials, (t) => (t.label === 1 ? BONAFIDE : SPOOF));
    source = streamingSource(files, labels, cfg.features, { concurrency: cfg.train.concurrency, onSkip: (p, reason) => { skipped++; log(`skipped ${p}: ${reason}`); } });
  }
  const bonafide = labels.filter((l) => l === BONAFIDE).length;
  if (bonafide === 0 || bonafide === labels.length) throw new Error(`--protocol ${opts.protocol}: training needs both bona fide and spoof utterances with audio, got ${bonafide} bona fide of ${labels.length}`);
  const model = lightCnnConfigSchema.parse({ ...cfg.model, inputDim: featureDim(cfg.features) });
  const store = initLightCnn(model, cfg.seed);
  const head = { ...cfg.loss.options, name: cfg.loss.name, numClasses: 2, dim: model.embedDim, seed: cfg.seed } as MarginHeadConfig;
  log(`spoof ${cfg.loss.name}: ${bonafide} bona fide, ${labels.length - bonafide} spoof, ${store.count().toLocaleString('en-US')} parameters, ${cfg.train.steps} steps`);
  try {
    const r = await trainEmbeddingModel({
      runDir, seed: cfg.seed, store, head, source, labels, numClasses: 2, train: cfg.train, quiet: opts.quiet,
      embed: (p, x) => embedLightCnn(p, x, model),
      config: { kind: 'spoof', spoof: cfg, features: cfg.features, model, classes: ['bonafide', 'spoof'] },
    });
    return { runDir, utterances: labels.length, bonafide, spoof: labels.length - bonafide, skipped: missing.length + skipped, ...r };
  } finally {
    store.dispose();
  }
}

export interface SpoofEval {
  /** Equal error rate in percent (bona fide vs every spoof). */
  eer: number;
  minDCF: number;
  /** EER in percent of bona fide against each attack alone. */
  eerByAttack: Record<string, number>;
  bonafide: number;
  spoof: number;
  skipped: number;
  scores: string;
  det: string;
  checkpoint: string;
  protocol: string;
}

/** Scores of full utterances: s·(cos θ_bonafide − cos θ_spoof), bank order. */
async function scoreBank(bank: FeatureBank, params: Record<string, tf.Tensor>, head: MarginHead, embed: (x: tf.Tensor) => tf.Tensor2D, minFrames: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < bank.features.length; i++) {
    const T = Math.max(bank.frames[i], minFrames);
    const x = new Float32Array(T * bank.dim);
    for (let t = 0; t < T; t++) x.set(bank.features[i].subarray((t % bank.frames[i]) * bank.dim, ((t % bank.frames[i]) + 1) * bank.dim), t * bank.dim);
    const s = tf.tidy(() => {
      const logits = head.logits(embed(tf.tensor3d(x, [1, T, bank.dim])), { weight: params['head.weight'] });
      return tf.sub(tf.slice(logits, [0, BONAFIDE], [1, 1]), tf.slice(logits, [0, SPOOF], [1, 1]));
    });
    try { out.push((await s.data())[0]); } finally { s.dispose(); }
  }
  return out;
}

/**
 * Scores a protocol with a countermeasure checkpoint → eval.json, scores.txt (`utt attack label score`), DET/ROC plots.
 *
 * @example const r = await runEvalSpoof({ checkpoint: 'runs/cm', protocol: 'eval/protocol.txt', audio: 'eval/wav' });
 */
export async function runEvalSpoof(opts: { checkpoint: string; protocol: string; audio: string; out?: string; backend?: string }): Promise<SpoofEval> {
  await initBackend({ prefer: parseBackendPreference(opts.backend ?? 'auto') });
  const ck = await loadRunCheckpoint(opts.checkpoint);
  let head: MarginHead | undefined;
  try {
    const conf = (ck.config ?? {}) as { kind?: string; features?: unknown; model?: unknown; head?: MarginHeadConfig };
    if (conf.kind !== 'spoof' || !conf.head) throw new Error(`--checkpoint ${ck.dir}: not an anti-spoofing checkpoint (config.json kind is '${conf.kind ?? 'missing'}')`);
    const features = featureConfigSchema.parse(conf.features);
    const model = lightCnnConfigSchema.parse(conf.model);
    head = new MarginHead(conf.head);
    const { trials, files, missing } = await resolveProtocol(opts.protocol, opts.audio);
    const bank = await loadFeatureBank(files, features);
    const scores = await scoreBank(bank, ck.params, head, (x) => embedLightCnn(ck.params, x, model), 4);
    const kept = bank.source.map((i) => trials[i]);
    const labels = kept.map((t) => t.label);
    const bonafide = labels.reduce((a: number, b) => a + b, 0);
    if (bonafide === 0 || bonafide === labels.length) throw new Error(`--protocol ${opts.protocol}: the EER needs both bona fide and spoof utterances with audio, got ${bonafide} bona fide of ${labels.length}`);
    const outDir = path.resolve(opts.out ?? path.join(ck.dir, `eval-spoof-${path.basename(opts.protocol, path.extname(opts.protocol))}`));
    const report = await writeVerificationReport(scores, labels, outDir, { folds: Math.min(10, scores.length), title: path.basename(opts.protocol), extra: { checkpoint: ck.dir } });
    const eerByAttack: Record<string, number> = {};
    for (const attack of [...new Set(kept.filter((t) => t.label === 0).map((t) => t.attack))].sort()) {
      const pick = kept.map((t, k) => (t.label === 1 || t.attack === attack ? k : -1)).filter((k) => k >= 0);
      eerByAttack[attack] = 100 * verificationMetrics(pick.map((k) => scores[k]), pick.map((k) => labels[k]), { folds: 2 }).eer;
    }
    const scoresFile = path.join(outDir, 'scores.txt');
    await writeFileAtomic(scoresFile, kept.map((t, k) => `${t.utt} ${t.attack} ${t.label === 1 ? 'bonafide' : 'spoof'} ${scores[k]}`).join('\n') + '\n');
    const result: SpoofEval = {
      eer: 100 * report.metrics.eer, minDCF: report.metrics.minDCF, eerByAttack, bonafide, spoof: labels.length - bonafide,
      skipped: missing.length + bank.skipped.length, scores: scoresFile, det: report.files.det, checkpoint: ck.dir, protocol: path.resolve(opts.protocol),
    };
    await writeFileAtomic(path.join(outDir, 'eval.json'), JSON.stringify(result, null, 2) + '\n');
    return result;
  } finally {
    head?.dispose();
    tf.dispose(Object.values(ck.params));
  }
}
