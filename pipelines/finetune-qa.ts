/**
 * Video question answering from a pretrained dual encoder, on the synthetic QA set derived
 * from a corpus manifest's concepts.
 *
 *   vlmargin finetune qa [--config finetune-qa] [--set key=value …] [--out runs/NAME] [--overwrite]
 *
 * 1. Multiple choice scored as retrieval (video vs "question answer" for each of 4
 *    candidates; the best cosine wins): zero-shot, then after a short fine-tune with
 *    cross-entropy over the candidates (encoders at a lower rate than the heads).
 * 2. Open-ended as classification over the answer vocabulary: a MarginHead (arcface,
 *    cosface, … by name) on fused video-question features of the MC-fine-tuned model, the
 *    video encoder frozen (default) or trained with the head (open.encoderLrScale > 0).
 * Writes qa.jsonl (the items) and qa.json (accuracies with chance levels) to the run folder.
 * Both fine-tunes skip steps with a non-finite loss or gradients and stop with an error (no
 * qa.json) after `train.maxNonFinite` of them in a row, as every training job does.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { tf } from '../src/backend/tf.js';
import { l2Normalize } from '../src/backend/safeOps.js';
import { initBackend, parseBackendPreference } from '../src/backend/init.js';
import { buildFrameCache, frameCacheDirName, openFrameCache, readNormalizedClips, type FrameCache } from '../src/data/frameCache.js';
import { readManifest } from '../src/data/manifest.js';
import { seededRandom } from '../src/data/synth.js';
import { encodeTextEmbeddings, encodeVideoEmbeddings } from '../src/eval/retrievalEval.js';
import { readCheckpointInfo, loadModel } from '../src/train/checkpointInfo.js';
import { MARGIN_HEAD_NAMES } from '../src/margin/head.js';
import type { DualEncoderConfig } from '../src/nn/configs.js';
import { encodeText, encodeVideo, paramGroup } from '../src/nn/dualEncoder.js';
import { valueAndGradsOf, type Params } from '../src/nn/params.js';
import { mcLogits, mcLoss, OpenQaHead } from '../src/qa/qaModel.js';
import { generateSynthQa, qaCandidateText, QA_ANSWER_VOCAB, QA_QUESTIONS, QA_TYPES, writeQaJsonl, type QaItem, type QaType } from '../src/qa/synthQa.js';
import type { Tokenizer } from '../src/text/tokenizer.js';
import { loadTokenizer } from '../src/text/tokenizer.js';
import { NonFiniteGuard } from '../src/train/gradients.js';
import { AdamW } from '../src/train/optimizer.js';
import { guardedUpdate } from '../src/train/trainer.js';
import { formatIssues, loadJsonConfig, NonFiniteKeys, runNameSchema } from './config.js';
import { openRunFolder } from './runFolder.js';
import { writeFileAtomic } from '../src/util/atomicWrite.js';

export const FinetuneQaConfigSchema = z.object({
  name: runNameSchema('finetune-qa'),
  seed: z.number().int().min(0).default(1),
  backend: z.enum(['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu']).default('auto'),
  /** A checkpoint folder, or a run folder (its newest checkpoint). */
  checkpoint: z.string(),
  corpus: z.object({
    /** A synthetic corpus manifest (entries with color:/dir:/shape:/speed: concepts). */
    manifest: z.string(),
    trainSplit: z.string().default('train'),
    testSplit: z.string().default('test'),
  }).strict(),
  framesDir: z.string().optional(),
  mc: z.object({
    steps: z.number().int().min(0).default(300),
    batchSize: z.number().int().min(1).default(16),
    lr: z.number().positive().max(1).default(1e-3),
    encoderLrScale: z.number().min(0).max(1).default(0.1),
  }).strict().default({ steps: 300, batchSize: 16, lr: 1e-3, encoderLrScale: 0.1 }),
  open: z.object({
    /** The margin head by name, with its options (classes and width are filled in). */
    head: z.object({ name: z.enum(MARGIN_HEAD_NAMES) }).loose().default({ name: 'arcface', scale: 16, m2: 0.2 }),
    hidden: z.number().int().min(1).default(128),
    featureDim: z.number().int().min(2).default(64),
    steps: z.number().int().min(1).default(300),
    /** Videos per step; each brings all of its questions (one per type). */
    batchSize: z.number().int().min(1).default(32),
    lr: z.number().positive().max(1).default(3e-3),
    /**
     * The video encoder's learning rate relative to `lr` while the head trains (end to end);
     * 0 (the default) keeps it frozen, so embeddings are computed once and only the head learns.
     * On the synthetic set end to end was no better (README), and it encodes clips every step.
     */
    encoderLrScale: z.number().min(0).max(1).default(0),
  }).strict().default({ head: { name: 'arcface', scale: 16, m2: 0.2 }, hidden: 128, featureDim: 64, steps: 300, batchSize: 32, lr: 3e-3, encoderLrScale: 0 }),
  /** The non-finite guard of both fine-tunes (each counts its own steps). */
  train: z.object(NonFiniteKeys).strict().default({ maxNonFinite: 5, maxNonFiniteRate: 0.2 }),
  eval: z.object({ batchSize: z.number().int().min(1).default(64) }).strict().default({ batchSize: 64 }),
}).strict();

export type FinetuneQaConfig = z.infer<typeof FinetuneQaConfigSchema>;

export function parseFinetuneQaConfig(raw: unknown, source = 'config'): FinetuneQaConfig {
  const r = FinetuneQaConfigSchema.safeParse(raw);
  if (!r.success) throw new Error(formatIssues(r.error, source));
  return r.data;
}

export interface Accuracy { accuracy: number; items: number; perType: Partial<Record<QaType, { accuracy: number; items: number; chance: number }>> }

export interface FinetuneQaResult {
  runDir: string;
  /** `skippedSteps`: steps whose loss or gradients were not finite, so not applied. */
  mc: { zeroShot: Accuracy; finetuned: Accuracy; chance: number; steps: number; skippedSteps: number };
  open: Accuracy & { chance: number; head: string; encoderLrScale: number; trainLossFirst: number; trainLossLast: number; skippedSteps: number };
  wallSeconds: number;
}

function summarise(items: QaItem[], hits: boolean[], chanceOf: (t: QaType) => number): Accuracy {
  const perType: Accuracy['perType'] = {};
  for (const t of QA_TYPES) {
    const idx = items.map((it, i) => (it.type === t ? i : -1)).filter((i) => i >= 0);
    if (idx.length) perType[t] = { accuracy: idx.filter((i) => hits[i]).length / idx.length, items: idx.length, chance: chanceOf(t) };
  }
  return { accuracy: hits.filter(Boolean).length / Math.max(1, hits.length), items: items.length, perType };
}

/** Multiple-choice accuracy: each item's video embedding against its candidates' text embeddings. */
async function scoreMc(params: Params, cfg: DualEncoderConfig, tok: Tokenizer, maxLen: number, items: QaItem[], videoEmb: Map<string, Float32Array>, batchSize: number): Promise<Accuracy> {
  const d = cfg.embedDim;
  const texts = items.flatMap((it) => it.choices!.map((c) => qaCandidateText(it.question, c)));
  const cand = await encodeTextEmbeddings(params, cfg, tok, texts, maxLen, batchSize);
  const hits = items.map((it, i) => {
    const v = videoEmb.get(it.videoId)!;
    let best = -1;
    let bestScore = -Infinity;
    for (let k = 0; k < it.choices!.length; k++) {
      let s = 0;
      const off = (i * 4 + k) * d;
      for (let j = 0; j < d; j++) s += v[j] * cand[off + j];
      if (s > bestScore) { bestScore = s; best = k; }
    }
    return best === it.correct;
  });
  return summarise(items, hits, () => 0.25);
}

/** The step's loss as a number; `value` is disposed, and `grads` too when the read fails (no step follows). */
async function readLoss(value: tf.Scalar, grads: Record<string, tf.Tensor>): Promise<number> {
  try {
    return (await value.data())[0];
  } catch (e) {
    tf.dispose(Object.values(grads));
    throw e;
  } finally {
    value.dispose();
  }
}

async function clipBatch(cache: FrameCache, ids: string[]): Promise<tf.Tensor> {
  const { data, shape } = await readNormalizedClips(cache, ids);
  return tf.tensor(data, shape);
}

async function embedVideos(params: Params, cfg: DualEncoderConfig, cache: FrameCache, ids: string[], batchSize: number): Promise<Map<string, Float32Array>> {
  const all = await encodeVideoEmbeddings(params, cfg, cache, ids, batchSize);
  const d = cfg.embedDim;
  return new Map(ids.map((id, i) => [id, all.subarray(i * d, (i + 1) * d)]));
}

/** Runs zero-shot and fine-tuned multiple-choice QA and open-ended QA with a margin head. */
export async function runFinetuneQa(cfg: FinetuneQaConfig, opts: { out?: string; backend?: string; quiet?: boolean; overwrite?: boolean } = {}): Promise<FinetuneQaResult> {
  // One writer per run folder, and a previous run replaced only with --overwrite (pipelines/runFolder.ts).
  const { runDir, release } = await openRunFolder(opts.out, cfg.name, (m) => { if (!opts.quiet) console.error(m); }, { overwrite: opts.overwrite });
  try {
    return await runFinetuneQaIn(runDir, cfg, opts);
  } finally {
    await release();
  }
}

async function runFinetuneQaIn(runDir: string, cfg: FinetuneQaConfig, opts: { backend?: string; quiet?: boolean }): Promise<FinetuneQaResult> {
  const t0 = performance.now();
  const log = (m: string) => { if (!opts.quiet) console.error(m); };
  await initBackend({ prefer: parseBackendPreference(opts.backend ?? cfg.backend) });
  const info = await readCheckpointInfo(cfg.checkpoint);
  const manifest = await readManifest(cfg.corpus.manifest);
  const { mc, open } = generateSynthQa(manifest.entries, { seed: cfg.seed });
  await writeQaJsonl(path.join(runDir, 'qa.jsonl'), [...mc, ...open]);
  const inSplit = (s: string) => (it: QaItem) => it.split === s;
  const framesDir = path.resolve(cfg.framesDir ?? path.join(path.dirname(path.resolve(cfg.corpus.manifest)), '.vlmargin',
    frameCacheDirName({ frames: info.frames.count, size: info.frames.size, strategy: info.frames.strategy, seed: info.seed })));
  const wanted = manifest.entries.filter((e) => e.split === cfg.corpus.trainSplit || e.split === cfg.corpus.testSplit);
  await buildFrameCache(wanted, { out: framesDir, frames: info.frames.count, size: info.frames.size, strategy: info.frames.strategy, seed: info.seed });
  const cache = await openFrameCache(framesDir);
  const usable = (it: QaItem) => cache.has(it.videoId);
  const mcTrain = mc.filter(inSplit(cfg.corpus.trainSplit)).filter(usable);
  const mcTest = mc.filter(inSplit(cfg.corpus.testSplit)).filter(usable);
  const openTrain = open.filter(inSplit(cfg.corpus.trainSplit)).filter(usable);
  const openTest = open.filter(inSplit(cfg.corpus.testSplit)).filter(usable);
  if (!mcTest.length || !openTest.length || !openTrain.length) {
    throw new Error(`corpus.manifest ${cfg.corpus.manifest}: need QA items in both '${cfg.corpus.trainSplit}' and '${cfg.corpus.testSplit}' (have ${openTrain.length} train, ${openTest.length} test open-ended)`);
  }
  const tok = await loadTokenizer(info.tokenizerDir);
  const store = await loadModel(info, cfg.seed);
  const params = store.snapshot();
  const model = info.model;
  const bs = cfg.eval.batchSize;
  const testIds = [...new Set(mcTest.map((it) => it.videoId))];
  const zeroShot = await scoreMc(params, model, tok, info.maxLen, mcTest, await embedVideos(params, model, cache, testIds, bs), bs);
  log(`MC zero-shot accuracy ${(100 * zeroShot.accuracy).toFixed(1)}% on ${mcTest.length} items (chance 25%)`);

  // Multiple-choice fine-tune: cross-entropy over each item's four candidates.
  const names = Object.keys(params).filter((n) => cfg.mc.encoderLrScale > 0 || paramGroup(n).group !== 'encoder');
  const optimizer = new AdamW(Object.fromEntries(names.map((n) => [n, params[n] as tf.Variable])), {
    lr: cfg.mc.lr, weightDecay: 0, groups: (n) => ({ lrScale: paramGroup(n).group === 'encoder' ? cfg.mc.encoderLrScale : 1 }),
  });
  const rng = seededRandom(cfg.seed, 'qa-mc-batches');
  const newGuard = () => new NonFiniteGuard({ maxConsecutive: cfg.train.maxNonFinite, maxRate: cfg.train.maxNonFiniteRate });
  // The guard's error names the step; this names the fine-tune it stopped.
  const guarded = async <T>(stage: string, run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (e) {
      if (!/non-finite/.test((e as Error).message)) throw e;
      throw new Error(`${stage}: ${(e as Error).message} (train.maxNonFinite ${cfg.train.maxNonFinite}, train.maxNonFiniteRate ${cfg.train.maxNonFiniteRate}); no qa.json was written`, { cause: e });
    }
  };
  const mcGuard = newGuard();
  try {
    for (let step = 0; step < cfg.mc.steps && mcTrain.length; step++) {
      const batch = Array.from({ length: Math.min(cfg.mc.batchSize, mcTrain.length) }, () => mcTrain[Math.floor(rng() * mcTrain.length)]);
      const frames = await clipBatch(cache, batch.map((it) => it.videoId));
      const enc = tok.encode(batch.flatMap((it) => it.choices!.map((c) => qaCandidateText(it.question, c))), info.maxLen);
      const ids = tf.tensor2d(enc.ids, enc.shape, 'int32');
      const mask = tf.tensor2d(enc.mask, enc.shape, 'int32');
      const correct = Int32Array.from(batch, (it) => it.correct!);
      const { value, grads } = valueAndGradsOf((p) => {
        const v = encodeVideo(p, frames, model);
        const t = encodeText(p, ids, mask, model);
        return mcLoss(mcLogits(v, t, 4, tf.exp(p.logit_scale)), correct);
      }, params, names);
      tf.dispose([frames, ids, mask]);
      const lv = await readLoss(value, grads);
      const { verdict } = await guarded('multiple-choice fine-tune', () => guardedUpdate(grads, lv, step, mcGuard, (g) => optimizer.step(g)));
      if (verdict === 'skip') log(`MC step ${step}: non-finite loss or gradients (loss=${lv}); step skipped (${mcGuard.total} so far)`);
    }
  } finally {
    optimizer.dispose();
  }
  const allIds = [...new Set([...openTrain, ...openTest, ...mcTest].map((it) => it.videoId))];
  const videoEmb = await embedVideos(params, model, cache, allIds, bs);
  const finetuned = await scoreMc(params, model, tok, info.maxLen, mcTest, videoEmb, bs);
  log(`MC after ${cfg.mc.steps} fine-tune steps: ${(100 * finetuned.accuracy).toFixed(1)}%`);

  // Open-ended: a margin head over the answer vocabulary on fused video-question features; the
  // video encoder trains with it unless open.encoderLrScale is 0. The text side stays fixed:
  // each question type has one embedding.
  const questionEmb = new Map(await Promise.all(QA_TYPES.map(async (t) => [t, await encodeTextEmbeddings(params, model, tok, [QA_QUESTIONS[t].question], info.maxLen, 1)] as const)));
  const d = model.embedDim;
  // Video embeddings of a lightly trained model share a large common direction; the
  // differences that carry colour or shape are small beside it, and an MLP on raw
  // embeddings learns only the per-question answer prior. Standardising each dimension
  // with the training videos' mean and spread (fixed before training) exposes those differences.
  const trainVideos = [...new Set(openTrain.map((it) => it.videoId))].map((id) => videoEmb.get(id)!);
  const mean = new Float32Array(d);
  const std = new Float32Array(d);
  for (const v of trainVideos) for (let j = 0; j < d; j++) mean[j] += v[j] / trainVideos.length;
  for (const v of trainVideos) for (let j = 0; j < d; j++) std[j] += (v[j] - mean[j]) ** 2 / trainVideos.length;
  for (let j = 0; j < d; j++) std[j] = Math.sqrt(std[j]) + 1e-6;
  const stack = (items: QaItem[], emb: Map<string, Float32Array>) => {
    const v = new Float32Array(items.length * d);
    const q = new Float32Array(items.length * d);
    items.forEach((it, i) => {
      const e = emb.get(it.videoId)!;
      for (let j = 0; j < d; j++) v[i * d + j] = (e[j] - mean[j]) / std[j];
      q.set(questionEmb.get(it.type)!, i * d);
    });
    return { v, q, y: Int32Array.from(items, (it) => QA_ANSWER_VOCAB.indexOf(it.answer)) };
  };
  const head = new OpenQaHead({
    embedDim: d, hidden: cfg.open.hidden, featureDim: cfg.open.featureDim, numAnswers: QA_ANSWER_VOCAB.length, seed: cfg.seed,
    head: cfg.open.head as ConstructorParameters<typeof OpenQaHead>[0]['head'],
  });
  const endToEnd = cfg.open.encoderLrScale > 0;
  const headVars = head.params();
  const videoVars: Record<string, tf.Variable> = endToEnd
    ? Object.fromEntries(Object.keys(params).filter((n) => n.startsWith('video.')).map((n) => [n, params[n] as tf.Variable])) : {};
  const headOpt = new AdamW(headVars, { lr: cfg.open.lr, weightDecay: 0 });
  const encoderOpt = endToEnd ? new AdamW(videoVars, { lr: cfg.open.lr * cfg.open.encoderLrScale, weightDecay: 0 }) : undefined;
  const headName = new Map(Object.entries(headVars).map(([n, v]) => [v.name, n]));
  const videoName = new Map(Object.entries(videoVars).map(([n, v]) => [v.name, n]));
  const varList = [...Object.values(headVars), ...Object.values(videoVars)];
  const train = stack(openTrain, videoEmb);
  // Items by video, so one encoded clip serves all of its questions.
  const trainVideoIds = [...new Set(openTrain.map((it) => it.videoId))];
  const itemsOf = new Map(trainVideoIds.map((id) => [id, [] as number[]]));
  openTrain.forEach((it, i) => itemsOf.get(it.videoId)!.push(i));
  const standardise = { mean: tf.tensor1d(mean), std: tf.tensor1d(std) };
  const orng = seededRandom(cfg.seed, 'qa-open-batches');
  let trainLossFirst = NaN;
  let trainLossLast = NaN;
  let openAcc: Accuracy;
  const openGuard = newGuard();
  try {
    for (let step = 0; step < cfg.open.steps; step++) {
      const videos = Array.from({ length: Math.min(cfg.open.batchSize, trainVideoIds.length) }, () => trainVideoIds[Math.floor(orng() * trainVideoIds.length)]);
      const pick = Int32Array.from(videos.flatMap((id) => itemsOf.get(id)!));
      const slot = Int32Array.from(videos.flatMap((id, k) => itemsOf.get(id)!.map(() => k)));
      const B = pick.length;
      const rows = (x: Float32Array) => { const o = new Float32Array(B * d); pick.forEach((r, i) => o.set(x.subarray(r * d, (r + 1) * d), i * d)); return o; };
      const frames = endToEnd ? await clipBatch(cache, videos) : undefined;
      const { value, grads } = tf.tidy(() => {
        const q = tf.tensor2d(rows(train.q), [B, d]);
        const y = tf.tensor1d(Int32Array.from(pick, (r) => train.y[r]), 'int32');
        return tf.variableGrads(() => {
          const v = frames
            // The same L2-normalised embedding the frozen path (and retrieval) uses, then standardised.
            ? tf.gather(tf.div(tf.sub(l2Normalize(encodeVideo(params, frames, model)), standardise.mean), standardise.std), tf.tensor1d(slot, 'int32'))
            : tf.tensor2d(rows(train.v), [B, d]);
          return head.loss(v, q, y).loss as tf.Scalar;
        }, varList);
      });
      frames?.dispose();
      const lv = await readLoss(value, grads);
      const of = (g: Record<string, tf.Tensor>, names: Map<string, string>) => Object.fromEntries(Object.entries(g).filter(([k]) => names.has(k)).map(([k, t]) => [names.get(k)!, t]));
      const { verdict } = await guarded('open-ended fine-tune', () => guardedUpdate(grads, lv, step, openGuard, (g) => {
        headOpt.step(of(g, headName));
        encoderOpt?.step(of(g, videoName));
      }));
      if (verdict === 'skip') {
        log(`open-ended step ${step}: non-finite loss or gradients (loss=${lv}); step skipped (${openGuard.total} so far)`);
        continue;
      }
      if (Number.isNaN(trainLossFirst)) trainLossFirst = lv;
      trainLossLast = lv;
    }
    const testEmb = endToEnd ? await embedVideos(params, model, cache, [...new Set(openTest.map((it) => it.videoId))], bs) : videoEmb;
    const test = stack(openTest, testEmb);
    const logits = tf.tidy(() => head.logits(tf.tensor2d(test.v, [openTest.length, d]), tf.tensor2d(test.q, [openTest.length, d])));
    const pred = tf.tidy(() => tf.argMax(logits, 1));
    const p = await pred.data();
    tf.dispose([logits, pred]);
    openAcc = summarise(openTest, openTest.map((_, i) => p[i] === test.y[i]), (t) => 1 / QA_QUESTIONS[t].answers.length);
  } finally {
    tf.dispose([standardise.mean, standardise.std]);
    headOpt.dispose();
    encoderOpt?.dispose();
    head.dispose();
    store.dispose();
  }
  // Chance of the open-ended set: each item's 1/|answers of its type|, averaged over items.
  const openChance = openTest.reduce((s, it) => s + 1 / QA_QUESTIONS[it.type].answers.length, 0) / openTest.length;
  log(`open-ended (${cfg.open.head.name}) accuracy ${(100 * openAcc.accuracy).toFixed(1)}% on ${openTest.length} items (chance ${(100 * openChance).toFixed(1)}%)`);
  const result: FinetuneQaResult = {
    runDir,
    mc: { zeroShot, finetuned, chance: 0.25, steps: cfg.mc.steps, skippedSteps: mcGuard.total },
    open: { ...openAcc, chance: openChance, head: cfg.open.head.name, encoderLrScale: cfg.open.encoderLrScale, trainLossFirst, trainLossLast, skippedSteps: openGuard.total },
    wallSeconds: (performance.now() - t0) / 1000,
  };
  await writeFileAtomic(path.join(runDir, 'qa.json'), `${JSON.stringify({ ...result, from: { checkpoint: info.dir, step: info.step }, config: cfg }, null, 2)}\n`);
  return result;
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' }, out: { type: 'string' }, backend: { type: 'string' }, set: { type: 'string', multiple: true, default: [] },
      overwrite: { type: 'boolean', default: false }, quiet: { type: 'boolean', default: false },
    },
  });
  if (!values.config) throw new Error('--config: a finetune-qa JSON config is required (see pipelines/configs/finetune-qa.json)');
  const cfg = await loadJsonConfig(values.config, parseFinetuneQaConfig, '', { sets: values.set });
  const r = await runFinetuneQa(cfg, { out: values.out, backend: values.backend, quiet: values.quiet, overwrite: values.overwrite });
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  console.log(`multiple choice (${r.mc.zeroShot.items} items, chance 25%): zero-shot ${pct(r.mc.zeroShot.accuracy)}, after ${r.mc.steps} steps ${pct(r.mc.finetuned.accuracy)}`);
  console.log(`open-ended (${r.open.items} items, ${r.open.head}, chance ${pct(r.open.chance)}): ${pct(r.open.accuracy)}`);
  for (const [t, a] of Object.entries(r.open.perType)) console.log(`  ${t}: ${pct(a.accuracy)} of ${a.items} (chance ${pct(a.chance)})`);
  console.log(`report: ${path.join(r.runDir, 'qa.json')}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(() => process.exit(0), (e: unknown) => { console.error(`finetune-qa: ${(e as Error).message}`); process.exit(1); });
}
