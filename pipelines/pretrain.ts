/**
 * The pretraining pipeline: data → tokenizer → frame cache → dual encoder trained with the
 * subtractive angular margin contrastive loss → retrieval on the test split → eval.json.
 *
 *   npm run pretrain                                   # the default config on the built-in synthetic corpus
 *   vlmargin pretrain --config C [--init DIR] [--data D] [--set key=value …] [--out runs/NAME] [--backend B] [--threads N] [--resume | --overwrite]
 *
 * Everything a run writes lives in `runs/NAME/`: checkpoints/, metrics.jsonl, eval.json.
 */
import { access } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { tf } from '../src/backend/tf.js';
import { initBackend, parseBackendPreference, parseThreads, type BackendChoice } from '../src/backend/init.js';
import { buildFrameCache, frameCacheDirName, openFrameCache, readNormalizedClips, type FrameCache } from '../src/data/frameCache.js';
import { BatchLoader, encodeCaptions, loaderKindOf, type LoaderState } from '../src/data/loader.js';
import { emptySplitReasons, humanCaptions, readManifest } from '../src/data/manifest.js';
import { readMsrvttSplits } from '../src/data/readers.js';
import { StreamLoader, type StreamLoaderState } from '../src/data/streamLoader.js';
import { generateSynthCorpus, seededRandom } from '../src/data/synth.js';
import type { ManifestEntry } from '../src/data/types.js';
import type { RetrievalMetrics } from '../src/eval/retrieval.js';
import { encodeTextEmbeddings, encodeVideoEmbeddings, scoreRetrieval } from '../src/eval/retrievalEval.js';
import { inputAurocs, weightByInput, weightCurve, weightingReport, type WeightingReport } from '../src/meta/analysis.js';
import type { DualEncoderBatch } from '../src/meta/dualEncoderModel.js';
import { MetaBatchCycler, type MetaCyclerState } from '../src/meta/metaBatches.js';
import { WeightNet } from '../src/meta/weightNet.js';
import { DEFAULT_META_SET_DIR, readMetaSet } from '../src/data/metaSet.js';
import { savePlot } from '../src/eval/plot.js';
import { getConfig, type ConfigOverrides, type DualEncoderConfig } from '../src/nn/configs.js';
import { encodeText, encodeVideo, initDualEncoder, paramGroup } from '../src/nn/dualEncoder.js';
import type { ParamStore, Params } from '../src/nn/params.js';
import { buildTokenizer, tokenizerKey } from '../src/text/buildTokenizer.js';
import { loadTokenizer, type Tokenizer } from '../src/text/tokenizer.js';
import { configHash, loadLatestCheckpoint } from '../src/train/checkpoint.js';
import { loadModel, readModelInfo, type CheckpointInfo } from '../src/train/checkpointInfo.js';
import { writeFileAtomic } from '../src/util/atomicWrite.js';
import { checkResumeConfig, openRunFolder } from './runFolder.js';
import { MetricsLogger, writeProgress } from '../src/train/logger.js';
import { openEventWriter } from '../src/train/tensorboard.js';
import { datasetName } from './eval-retrieval.js';
import { AdamW } from '../src/train/optimizer.js';
import { cosineWithWarmup } from '../src/train/schedule.js';
import { CollapseDetector, describeCollapse, inBatchStats } from '../src/train/collapse.js';
import { describeOutOfMemory, runTraining, type MicroStep } from '../src/train/trainer.js';
import { captionSourceTable, lossBySource, samStep } from './lib/samStep.js';
import { loadPretrainConfig, marginAt, parsePretrainConfig, type PretrainConfig } from './config.js';

/** Per-channel mean and std of the frames (absent: OpenAI CLIP's). */
type Normalization = { mean?: readonly number[]; std?: readonly number[] };

export interface PretrainOptions {
  /** Run folder (default runs/<config name>). */
  out?: string;
  /** Overrides the data folder of the config. */
  dataDir?: string;
  backend?: string;
  /** TensorFlow's intra-op threads (overrides the config's `threads`). */
  threads?: number;
  resume?: boolean;
  /** With `resume`: accept a checkpoint saved under other settings (the changed keys are still listed). */
  allowConfigChange?: boolean;
  /** Replace a previous run in the folder (without it, or `resume`, such a folder is refused). */
  overwrite?: boolean;
  quiet?: boolean;
  /** Stop after this many steps (tests, smoke runs); the schedule still spans the full run. */
  stopAfter?: number;
}

export interface EvalReport {
  t2v: RetrievalMetrics;
  v2t: RetrievalMetrics;
  /** R@1 of a random ranking, in percent (100 / number of test videos). */
  chanceR1: number;
  testVideos: number;
  testCaptions: number;
  /** t2v R@1 (percent) over the captions of videos with each concept, when the manifest has concepts. */
  perConceptR1?: Record<string, number>;
}

export interface PretrainResult {
  runDir: string;
  eval: EvalReport;
  backend: string;
  steps: number;
  stopped: 'done' | 'signal';
  wallSeconds: number;
}

interface Splits {
  train: ManifestEntry[];
  /** The validation split `train.evalEvery` scores (may be empty: then a slice of train is held out). */
  val: ManifestEntry[];
  /** Where `val` came from, for messages. */
  valName: string;
  test: ManifestEntry[];
  /** The manifest's own meta split (may be empty). */
  meta: ManifestEntry[];
  /** The manifest the entries came from (meta-set draws resolve against it). */
  manifestPath: string;
  dataDir: string;
  skipped: { source: string; reason: string }[];
}

/** Writes a result file whole or not at all; a full disk is an error naming the file. */
async function writeJsonFile(file: string, value: unknown): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`, { sync: true });
}

async function exists(p: string): Promise<boolean> {
  try { await access(p); return true; } catch { return false; }
}

async function loadData(cfg: PretrainConfig, dataDirOverride: string | undefined, log: (m: string) => void): Promise<Splits> {
  const d = cfg.data;
  if (d.kind === 'synth') {
    const dir = path.resolve(dataDirOverride ?? d.dir);
    const { kind: _kind, dir: _dir, ...params } = d;
    const r = await generateSynthCorpus({ out: dir, ...params });
    log(r.reused ? `synthetic corpus reused: ${dir}` : `synthetic corpus written: ${dir} (${r.clipsWritten} clips, ${r.seconds.toFixed(1)} s)`);
    const m = await readManifest(r.manifestPath);
    const of = (split: string) => m.entries.filter((e) => e.split === split);
    return { train: of('train'), val: [], valName: '', test: of('test'), meta: of('meta'), manifestPath: r.manifestPath, dataDir: dir, skipped: m.errors };
  }
  if (d.kind === 'manifest') {
    const m = await readManifest(d.manifest, { allowOutsideRoot: d.allowOutsideRoot });
    const dir = path.resolve(dataDirOverride ?? d.dir ?? path.join(path.dirname(d.manifest), '.vlmargin'));
    const train = m.entries.filter((e) => e.split === d.trainSplit);
    const test = m.entries.filter((e) => e.split === d.testSplit);
    if (!train.length) throw new Error(`data.manifest ${d.manifest}: no entries with split '${d.trainSplit}' (data.trainSplit)${emptySplitReasons(m)}`);
    if (!test.length) throw new Error(`data.manifest ${d.manifest}: no entries with split '${d.testSplit}' (data.testSplit)${emptySplitReasons(m)}`);
    return {
      train, val: m.entries.filter((e) => e.split === d.valSplit), valName: `split '${d.valSplit}'`, test,
      meta: m.entries.filter((e) => e.split === d.metaSplit), manifestPath: path.resolve(d.manifest), dataDir: dir, skipped: m.errors,
    };
  }
  const s = await readMsrvttSplits(d.annotations, { videoDir: d.videoDir, protocol: d.protocol, testCsv: d.testCsv, allowOutsideRoot: d.allowOutsideRoot });
  return {
    train: s.train, val: s.val, valName: d.protocol === 'full' ? "MSR-VTT's validate split" : '', test: s.test, meta: [], manifestPath: path.resolve(d.annotations),
    dataDir: path.resolve(dataDirOverride ?? d.dir), skipped: s.errors,
  };
}

/** The config with the sizes a run needs filled in: frames.size and tokenizer.maxLen. */
export type ResolvedPretrainConfig = PretrainConfig & {
  frames: PretrainConfig['frames'] & { size: number };
  tokenizer: PretrainConfig['tokenizer'] & { maxLen: number };
};

/** Frame size and caption length: the config's, else the start model's, else 32 px and 24 tokens. */
export function resolvePretrainConfig(cfg: PretrainConfig, init: CheckpointInfo | undefined): ResolvedPretrainConfig {
  if (init) {
    if (cfg.frames.size !== undefined && cfg.frames.size !== init.frames.size) {
      throw new Error(`frames.size ${cfg.frames.size}: the model in model.init (${init.dir}) takes ${init.frames.size} px frames; leave frames.size unset`);
    }
    if (cfg.tokenizer.dir) throw new Error(`tokenizer.dir: with model.init the model's own tokenizer (${init.tokenizerDir}) is used; remove tokenizer.dir`);
    if (cfg.tokenizer.maxLen !== undefined && cfg.tokenizer.maxLen > init.model.text.contextLength) {
      throw new Error(`tokenizer.maxLen ${cfg.tokenizer.maxLen}: the model in model.init has a context of ${init.model.text.contextLength} tokens`);
    }
  }
  return {
    ...cfg,
    frames: { ...cfg.frames, size: init?.frames.size ?? cfg.frames.size ?? 32 },
    tokenizer: { ...cfg.tokenizer, maxLen: cfg.tokenizer.maxLen ?? init?.maxLen ?? 24 },
  };
}

async function prepareTokenizer(cfg: ResolvedPretrainConfig, splits: Splits, init: CheckpointInfo | undefined, log: (m: string) => void): Promise<Tokenizer> {
  if (init) return loadTokenizer(init.tokenizerDir);
  if (cfg.tokenizer.dir) return loadTokenizer(path.resolve(cfg.tokenizer.dir));
  // Built from training captions only, so test captions never shape the vocabulary; the folder
  // is named by a hash of those captions and the options, so another corpus gets its own.
  const captions = splits.train.flatMap((e) => e.captions);
  const options = { vocabSize: cfg.tokenizer.vocabSize, kind: cfg.tokenizer.kind };
  const dir = path.join(splits.dataDir, `tokenizer-${cfg.tokenizer.kind}-${cfg.tokenizer.vocabSize}-${tokenizerKey(captions, options)}`);
  if (await exists(dir)) {
    try {
      return await loadTokenizer(dir);
    } catch (e) {
      log(`tokenizer ${dir} is unusable (${(e as Error).message}); building it again`);
    }
  }
  const r = await buildTokenizer(captions, { out: dir, ...options });
  log(`tokenizer built: ${dir} (${r.vocabSize} tokens from ${r.words} words)`);
  return loadTokenizer(dir);
}

/**
 * Every setting that can be checked before data is read or decoded: the model's patch size
 * against frames.size, and batch sizes against the number of listed videos (a run should not
 * decode a whole cache to then refuse its config).
 */
function checkConfigBeforeWork(cfg: ResolvedPretrainConfig): void {
  try {
    getConfig(cfg.model.preset, modelOverrides(cfg, cfg.tokenizer.vocabSize));
  } catch (e) {
    throw new Error(`config: model.preset '${cfg.model.preset}' does not fit the other settings (frames.size, tokenizer.maxLen, frames.count): ${(e as Error).message}`);
  }
}

function checkSplitsBeforeWork(cfg: PretrainConfig, splits: Splits, metaEntries: ManifestEntry[]): void {
  if (splits.train.length < cfg.train.batchSize) {
    throw new Error(`train.batchSize ${cfg.train.batchSize} is larger than the train split (${splits.train.length} videos listed); lower train.batchSize or add data`);
  }
  if (splits.test.length < 2) throw new Error(`the test split lists ${splits.test.length} videos; retrieval needs at least 2`);
  if (cfg.weighting.method !== 'none' && metaEntries.length < cfg.weighting.metaBatchSize) {
    throw new Error(`weighting.metaBatchSize ${cfg.weighting.metaBatchSize} is larger than the meta set (${metaEntries.length} pairs listed); lower it or add pairs`);
  }
  if (cfg.weighting.inputs.includes('source') && !splits.train.some((e) => e.captionSources)) {
    throw new Error("weighting.inputs 'source': every training caption is human in this manifest (no caption { \"text\", \"source\" }), so the input would be constant; drop 'source'");
  }
}


/**
 * The meta set of the weighting step: `weighting.metaManifest`, else the committed default set
 * when it matches the corpus, else the manifest's own meta split.
 */
async function loadMetaSet(cfg: PretrainConfig, splits: Splits, log: (m: string) => void): Promise<ManifestEntry[]> {
  const w = cfg.weighting;
  if (w.metaManifest) {
    const file = path.resolve(w.metaManifest);
    const drawn = await exists(file.replace(/\.jsonl$/, '.draw.json'));
    const m = drawn ? await readMetaSet(file, { source: splits.manifestPath }) : await readManifest(file);
    if (!m.entries.length) throw new Error(`weighting.metaManifest ${file}: no usable entries (${m.errors.length} errors)`);
    return m.entries;
  }
  if (cfg.data.kind === 'synth') {
    try {
      const m = await readMetaSet(path.join(DEFAULT_META_SET_DIR, 'manifest.jsonl'), { source: splits.manifestPath });
      log(`meta set: meta-data/default (${m.entries.length} clean, balanced pairs)`);
      return m.entries;
    } catch (e) {
      log(`meta set: meta-data/default does not match this corpus (${(e as Error).message.split('\n')[0]}); using its meta split`);
    }
  }
  if (!splits.meta.length) throw new Error('weighting: no meta set: set weighting.metaManifest, or give the manifest a meta split');
  log(`meta set: the manifest's meta split (${splits.meta.length} pairs)`);
  return splits.meta;
}

/** Frames and tokens of `entries` (first caption each) as one batch of tensors; the caller disposes them. */
async function batchOf(entries: ManifestEntry[], cache: FrameCache, tok: Tokenizer, maxLen: number, norm: Normalization): Promise<DualEncoderBatch> {
  const { data, shape } = await readNormalizedClips(cache, entries.map((e) => e.id), norm);
  const enc = tok.encode(entries.map((e) => e.captions[0]), maxLen);
  return {
    frames: tf.tensor(data, shape),
    ids: tf.tensor2d(enc.ids, enc.shape, 'int32'),
    mask: tf.tensor2d(enc.mask, enc.shape, 'int32'),
  };
}

interface FrameCaches {
  /** The training clips' frames (with strategy `random`: the candidates the loader draws from each epoch). */
  train: FrameCache;
  /** Test and meta clips: `count` frames at the configured strategy, uniform when training draws at random. */
  eval: FrameCache;
}

async function prepareFrames(cfg: ResolvedPretrainConfig, splits: Splits, extra: ManifestEntry[], quiet: boolean, log: (m: string) => void): Promise<FrameCaches> {
  const f = cfg.frames;
  const unique = (list: ManifestEntry[]) => { const seen = new Set<string>(); return list.filter((e) => !seen.has(e.id) && seen.add(e.id)); };
  if (f.strategy !== 'random') {
    const cache = await buildCache(cfg, splits.dataDir, unique([...splits.train, ...splits.val, ...splits.test, ...extra]), f.count, f.strategy, quiet, log);
    return { train: cache, eval: cache };
  }
  // The candidates are uniform over the clip so that each of the `count` segments holds `candidates` of them.
  const train = await buildCache(cfg, splits.dataDir, unique(splits.train), f.count * (f.candidates ?? 4), 'uniform', quiet, log);
  const evalCache = await buildCache(cfg, splits.dataDir, unique([...splits.val, ...splits.test, ...extra]), f.count, 'uniform', quiet, log);
  return { train, eval: evalCache };
}

async function buildCache(
  cfg: ResolvedPretrainConfig, dataDir: string, entries: ManifestEntry[], frames: number, strategy: ResolvedPretrainConfig['frames']['strategy'],
  quiet: boolean, log: (m: string) => void,
): Promise<FrameCache> {
  const f = cfg.frames;
  const dir = path.join(dataDir, frameCacheDirName({ frames, size: f.size, strategy, seed: cfg.seed }));
  let last = 0;
  const summary = await buildFrameCache(entries, {
    out: dir, frames, size: f.size, strategy, seed: cfg.seed, concurrency: f.concurrency,
    onProgress: (p) => {
      if (quiet || p.todo === 0) return;
      const now = performance.now();
      if (now - last > 2000 || p.done === p.todo) { last = now; writeProgress(process.stderr, `frames: ${p.done}/${p.todo} decoded`, p.done === p.todo); }
    },
  });
  log(`frame cache ${dir}: ${summary.decoded} decoded, ${summary.reused} reused, ${summary.skipped.length} skipped`);
  for (const e of summary.skipped.slice(0, 10)) log(`  skipped ${e.id ?? e.source}: ${e.reason}`);
  return openFrameCache(dir);
}

function modelConfig(cfg: ResolvedPretrainConfig, tok: Tokenizer, init: CheckpointInfo | undefined): DualEncoderConfig {
  if (init) return init.model;
  return getConfig(cfg.model.preset, modelOverrides(cfg, tok.vocabSize));
}

/** The preset's settings that the run's config replaces. */
function modelOverrides(cfg: ResolvedPretrainConfig, vocabSize: number): ConfigOverrides {
  const m = cfg.model;
  const width = m.width === undefined ? {} : { width: m.width };
  return {
    vision: { imageSize: cfg.frames.size, ...(m.motion ? { motion: true } : {}), ...(m.motion && m.motionInput ? { motionInput: m.motionInput } : {}), ...(m.stem === 'conv' ? { stem: 'conv' } : {}), ...(m.videoAttention === 'joint' ? { attention: 'joint' } : {}), ...width, ...(m.patchSize === undefined ? {} : { patchSize: m.patchSize }) },
    text: { vocabSize, contextLength: cfg.tokenizer.maxLen, ...width },
    temporal: { pooling: m.temporalPooling, maxFrames: Math.max(cfg.frames.count, 1) },
  };
}

/** Embeds the test split once and ranks captions against videos (t2v) and back (v2t). */
export async function evaluateRetrieval(
  params: Params, modelCfg: DualEncoderConfig, cache: FrameCache, test: ManifestEntry[], tok: Tokenizer, maxLen: number, batchSize: number,
  norm: Normalization = {},
): Promise<EvalReport> {
  const videos = humanCaptions(test).filter((e) => cache.has(e.id));
  if (videos.length < 2) throw new Error(`evaluateRetrieval: only ${videos.length} test videos are in the frame cache; need at least 2`);
  const captions = videos.flatMap((v) => v.captions);
  const queryToVideo = Int32Array.from(videos.flatMap((v, j) => v.captions.map(() => j)));
  const videoEmb = await encodeVideoEmbeddings(params, modelCfg, cache, videos.map((v) => v.id), batchSize, norm);
  const textEmb = await encodeTextEmbeddings(params, modelCfg, tok, captions, maxLen, batchSize);
  const scored = await scoreRetrieval(
    { d: modelCfg.embedDim, videoIds: videos.map((v) => v.id), videoEmb, queryToVideo, textEmb },
    { concepts: videos.map((v) => v.concepts) },
  );
  const report: EvalReport = {
    t2v: scored.t2v, v2t: scored.v2t,
    chanceR1: 100 / videos.length, testVideos: videos.length, testCaptions: captions.length,
  };
  if (scored.perConcept.length) report.perConceptR1 = Object.fromEntries(scored.perConcept.map((c) => [c.concept, c.t2vR1]));
  return report;
}

/**
 * The training videos and the validation videos `train.evalEvery` scores: the data's own
 * validation split when it has one, else `eval.valFraction` of the training videos (a fixed
 * draw from the seed) held out of training. Without `evalEvery` every training video trains.
 */
export function validationSplit(
  cfg: PretrainConfig, splits: Pick<Splits, 'val' | 'valName'>, train: ManifestEntry[], cache: { has(id: string): boolean },
): { train: ManifestEntry[]; val: ManifestEntry[]; valNote?: string } {
  if (cfg.train.evalEvery === 0) return { train, val: [] };
  const own = splits.val.filter((e) => cache.has(e.id));
  if (own.length >= 2) return { train, val: own, valNote: `evalEvery: scoring the validation ${splits.valName} (${own.length} videos); test is scored once at the end` };
  const n = Math.max(2, Math.round(cfg.eval.valFraction * train.length));
  if (train.length - n < 2) throw new Error(`train.evalEvery: ${train.length} training videos are too few to hold ${n} out for validation; give the data a validation split or set train.evalEvery to 0`);
  const rng = seededRandom(cfg.seed, 'validation-holdout');
  const order = train.map((e, i) => ({ e, k: rng(), i })).sort((a, b) => a.k - b.k || a.i - b.i);
  const held = new Set(order.slice(0, n).map((o) => o.e.id));
  return {
    train: train.filter((e) => !held.has(e.id)),
    val: train.filter((e) => held.has(e.id)),
    valNote: `evalEvery: no validation split${splits.valName ? ` (${splits.valName} is empty)` : ''}; holding out ${n} of ${train.length} training videos (eval.valFraction ${cfg.eval.valFraction}); test is scored once at the end`,
  };
}

function optimizerFor(store: ParamStore, cfg: PretrainConfig): AdamW {
  return new AdamW(store.snapshot() as Record<string, tf.Variable>, {
    lr: cfg.train.lr,
    weightDecay: cfg.train.weightDecay,
    groups: (name) => {
      const g = paramGroup(name);
      return { lrScale: g.group === 'head' ? 1 : cfg.train.encoderLrScale, weightDecay: g.decay ? cfg.train.weightDecay : 0 };
    },
  });
}

/** Runs (or resumes) one pretraining job and returns its test-split retrieval figures. */
export async function runPretrain(rawCfg: PretrainConfig, opts: PretrainOptions = {}): Promise<PretrainResult> {
  const t0 = performance.now();
  const log = (m: string) => { if (!opts.quiet) console.error(m); };
  const init = rawCfg.model.init
    ? await readModelInfo(rawCfg.model.init, { frames: rawCfg.frames.count, temporal: { pooling: rawCfg.model.temporalPooling } })
    : undefined;
  const cfg = resolvePretrainConfig(rawCfg, init);
  if (!init) checkConfigBeforeWork(cfg);
  const { runDir, release } = await openRunFolder(opts.out, cfg.name, log, { resume: opts.resume, overwrite: opts.overwrite });
  try {
    return await runPretrainIn(runDir, cfg, init, opts, t0, log);
  } finally {
    await release();
  }
}

/**
 * A checkpoint's data position belongs to the loader that wrote it (frames.shuffleBuffer picks
 * the loader): the other cannot continue from it, even with --allow-config-change.
 */
function checkResumeLoader(ck: { dir: string; state: Record<string, unknown> }, shuffleBuffer: number | undefined): void {
  const saved = loaderKindOf(ck.state.dataPosition);
  const now = shuffleBuffer === undefined ? 'random-access' : 'streaming';
  if (saved === undefined || saved === now) return;
  const savedBuffer = (ck.state.dataPosition as { shuffleBuffer?: unknown }).shuffleBuffer;
  const describe = (kind: string, buffer: unknown) => (kind === 'streaming'
    ? `the streaming loader (frames.shuffleBuffer ${String(buffer)})` : 'the random-access loader (frames.shuffleBuffer unset)');
  throw new Error(`--resume: checkpoint ${ck.dir} was written with ${describe(saved, savedBuffer)}, and this run uses ${describe(now, shuffleBuffer)}; `
    + `a data position does not carry over from one loader to the other. The config key frames.shuffleBuffer selects the loader: `
    + `${saved === 'streaming' ? `set it to ${String(savedBuffer)}` : 'leave it unset'} to resume this run, or start a new one under another --out`);
}

async function runPretrainIn(
  runDir: string, cfg: ResolvedPretrainConfig, init: CheckpointInfo | undefined, opts: PretrainOptions, t0: number, log: (m: string) => void,
): Promise<PretrainResult> {
  const backend: BackendChoice = await initBackend({ prefer: parseBackendPreference(opts.backend ?? cfg.backend), threads: opts.threads ?? cfg.threads });
  log(`backend: ${backend.name}${backend.skipped.length ? ` (passed over: ${backend.skipped.map((s) => s.name).join(', ')})` : ''}`);

  if (init) log(`model.init: ${init.kind === 'clip' ? 'Hugging Face CLIP folder' : 'checkpoint'} ${init.dir}`);
  const norm: Normalization = init?.preprocess ?? {};
  const splits = await loadData(cfg, opts.dataDir, log);
  if (splits.skipped.length) log(`${splits.skipped.length} manifest items skipped (first: ${splits.skipped[0].source}: ${splits.skipped[0].reason})`);
  const weighting = cfg.weighting.method;
  const metaEntriesAll = weighting === 'none' ? [] : await loadMetaSet(cfg, splits, log);
  checkSplitsBeforeWork(cfg, splits, metaEntriesAll);
  const tok = await prepareTokenizer(cfg, splits, init, log);
  // The validation videos are chosen before decoding: with frames.strategy 'random' they go to the evaluation cache.
  const held = validationSplit(cfg, splits, splits.train, { has: () => true });
  if (held.valNote) log(held.valNote);
  const caches = await prepareFrames(cfg, { ...splits, train: held.train, val: held.val }, metaEntriesAll, !!opts.quiet, log);
  const cache = caches.eval;
  const metaEntries = metaEntriesAll.filter((e) => cache.has(e.id));
  if (weighting !== 'none' && metaEntries.length < cfg.weighting.metaBatchSize) {
    throw new Error(`weighting: the meta set has ${metaEntries.length} decodable pairs, fewer than weighting.metaBatchSize ${cfg.weighting.metaBatchSize}`);
  }
  const modelCfg = modelConfig(cfg, tok, init);
  const maxLen = cfg.tokenizer.maxLen;

  const trainEntries = held.train.filter((e) => caches.train.has(e.id));
  const valEntries = held.val.filter((e) => cache.has(e.id));
  if (cfg.train.evalEvery > 0 && valEntries.length < 2) throw new Error(`train.evalEvery: only ${valEntries.length} validation videos could be decoded; need at least 2`);
  if (trainEntries.length < cfg.train.batchSize) {
    throw new Error(`train split has ${trainEntries.length} decodable videos, fewer than train.batchSize ${cfg.train.batchSize}`);
  }
  const table = encodeCaptions(trainEntries, (c) => tok.encode(c, maxLen));
  const sources = captionSourceTable(trainEntries, cfg.captions);

  const store = init ? await loadModel(init, cfg.seed) : initDualEncoder(modelCfg, cfg.seed);
  const optimizer = optimizerFor(store, cfg);
  const weightNet = weighting === 'mwn'
    ? new WeightNet({ hidden: cfg.weighting.hidden, lr: cfg.weighting.lr, seed: cfg.seed, inputs: cfg.weighting.inputs })
    : undefined;
  let resumeFrom: LoaderState | StreamLoaderState | undefined;
  let metaResume: MetaCyclerState | undefined;
  let startStep = 0;
  if (opts.resume) {
    const ck = await loadLatestCheckpoint(runDir, { onWarning: (w) => log(`warning: ${w}`) });
    if (ck) {
      try {
        checkResumeLoader(ck, cfg.frames.shuffleBuffer);
        checkResumeConfig(ck, (ck.config as { pretrain?: unknown } | null)?.pretrain, cfg, !!opts.allowConfigChange, log);
      } catch (e) {
        tf.dispose([...Object.values(ck.params), ...Object.values(ck.optimizer ?? {})]);
        throw e;
      }
      store.assign(ck.params, { requireAll: true });
      const { main: optState, wnet, wnetOpt } = splitOptimizerState(ck.optimizer ?? {});
      if (Object.keys(optState).length) optimizer.loadState(optState, Number(ck.state.optimizerStep ?? ck.step));
      if (weightNet && Object.keys(wnet).length) {
        weightNet.loadParams(wnet);
        weightNet.optimizer.loadState(wnetOpt, Number(ck.state.weightNetStep ?? 0));
      }
      tf.dispose([...Object.values(ck.params), ...Object.values(ck.optimizer ?? {})]);
      resumeFrom = ck.state.dataPosition as LoaderState | StreamLoaderState;
      metaResume = ck.state.metaCycler as MetaCyclerState | undefined;
      startStep = ck.step;
      log(`resumed from ${ck.dir} (step ${ck.step})`);
    } else {
      log(`--resume: no checkpoint in ${runDir}; starting from scratch`);
    }
  }
  const metaCycler = weighting === 'none'
    ? undefined
    : new MetaBatchCycler(metaEntries.length, cfg.weighting.metaBatchSize, { seed: cfg.seed, resumeFrom: metaResume });
  /** Latest weight given to each training video (normalised so a batch's weights average 1). */
  const lastWeight = new Map<string, number>();
  const trainIds = trainEntries.map((e) => e.id);
  const loader = cfg.frames.shuffleBuffer === undefined
    ? new BatchLoader(caches.train, table, {
      batchSize: cfg.train.batchSize, seed: cfg.seed, videoIds: trainIds, resumeFrom: resumeFrom as LoaderState | undefined, mean: norm.mean, std: norm.std,
      captionsPerVideo: cfg.train.captionsPerVideo, captionWeights: sources.weights, captionGroups: cfg.train.captionGroups,
      randomFrames: cfg.frames.strategy === 'random' ? { count: cfg.frames.count } : undefined,
    })
    : await StreamLoader.open(caches.train.dir, table, {
      batchSize: cfg.train.batchSize, shuffleBuffer: cfg.frames.shuffleBuffer, seed: cfg.seed, videoIds: trainIds,
      resumeFrom: resumeFrom as StreamLoaderState | undefined, mean: norm.mean, std: norm.std,
      captionsPerVideo: cfg.train.captionsPerVideo, captionWeights: sources.weights,
      randomFrames: cfg.frames.strategy === 'random' ? { count: cfg.frames.count } : undefined,
    });
  /** The weight net's inputs for each training video when it was last weighted (mwn). */
  const lastInputs = new Map<string, number[]>();
  const totalSteps = cfg.train.steps ?? cfg.train.epochs * loader.batchesPerEpoch;
  const schedule = cosineWithWarmup({ baseLr: cfg.train.lr, warmupSteps: cfg.train.warmupSteps, totalSteps, minLr: cfg.train.minLr });
  const events = await openEventWriter(path.join(runDir, 'events'));
  const logger = new MetricsLogger(path.join(runDir, 'metrics.jsonl'), { quiet: opts.quiet, events, ...(opts.resume ? { resumeAt: startStep } : {}) });
  if (logger.droppedOnResume) log(`metrics.jsonl: dropped ${logger.droppedOnResume} rows written after the step-${startStep} checkpoint by the interrupted run`);
  const params = store.snapshot();
  log(`model ${modelCfg.name}: ${store.count().toLocaleString('en-US')} parameters; ${trainEntries.length} train videos, ${loader.batchesPerEpoch} steps/epoch, ${totalSteps} steps`);

  const collapse = new CollapseDetector({ batchSize: cfg.train.batchSize });
  /** Every few steps while the loss is suspiciously low: are the batch's own pairs found? Said once. */
  const checkCollapse = async (step: number, loss: number, batch: DualEncoderBatch, captionVideo?: Int32Array): Promise<void> => {
    if (!collapse.wantsCheck(step, loss)) return;
    // With several captions per video the figures pair each video with its first caption.
    const firstCaption = captionVideo ? Array.from({ length: batch.frames.shape[0] }, (_, v) => captionVideo.indexOf(v)) : undefined;
    const [v, t] = tf.tidy(() => {
      const text = encodeText(params, batch.ids, batch.mask, modelCfg);
      return [encodeVideo(params, batch.frames, modelCfg), firstCaption ? tf.gather(text, firstCaption) : text] as tf.Tensor2D[];
    });
    try {
      const found = collapse.observe(step, loss, await inBatchStats(v, t));
      if (found) logger.log(`warning: ${describeCollapse(found)}.\n  ${collapseFix(marginAt(cfg.loss, step))}`);
    } finally {
      tf.dispose([v, t]);
    }
  };

  const stopAt = Math.min(totalSteps, opts.stopAfter ?? totalSteps);
  const training = await runTraining({
    runDir, params: params as Record<string, tf.Variable>, optimizer, schedule,
    totalSteps: stopAt, startStep,
    accumSteps: cfg.train.accumSteps, clipNorm: cfg.train.clipNorm,
    evalEvery: cfg.train.evalEvery, checkpointEvery: cfg.train.checkpointEvery, keepCheckpoints: cfg.train.keepCheckpoints,
    maxNonFinite: cfg.train.maxNonFinite,
    config: { pretrain: cfg, model: modelCfg, tokenizer: tok.dir, ...(init ? { preprocess: init.preprocess, init: { kind: init.kind, dir: init.dir, step: init.step } } : {}) },
    configHash: configHash(cfg),
    maxNonFiniteRate: cfg.train.maxNonFiniteRate,
    logger, logitScaleName: 'logit_scale',
  }, {
    computeGrads: async (step): Promise<MicroStep> => {
      const marginRad = marginAt(cfg.loss, step);
      const w0 = performance.now();
      const batch = await loader.next();
      const dataWaitMs = performance.now() - w0;
      const B = batch.framesShape[0];
      const train: DualEncoderBatch = {
        frames: tf.tensor(batch.frames as Float32Array, batch.framesShape),
        ids: tf.tensor2d(batch.ids, batch.textShape, 'int32'),
        mask: tf.tensor2d(batch.mask, batch.textShape, 'int32'),
      };
      try {
        const r = await samStep({
          modelCfg, params: params as Record<string, tf.Variable>, batch: train, captionVideo: batch.captionVideo, step, marginRad, detachMargin: cfg.loss.detachMargin,
          weighting: cfg.weighting, weightNet, recompute: cfg.train.recompute,
          nextMetaBatch: metaCycler ? () => batchOf(metaCycler.next().map((i) => metaEntries[i]), cache, tok, maxLen, norm) : undefined,
          progress: Math.min(step / Math.max(totalSteps, 1), 1),
          source: weightNet?.inputs.includes('source') ? batch.index.map((i) => (sources.rowSource[i] === 'human' ? 1 : 0)) : undefined,
        });
        await checkCollapse(step, r.loss, train, batch.captionVideo);
        const bySource = sources.weights ? lossBySource(r.perSample, batch.index.map((i) => sources.rowSource[i])) : {};
        if (!r.weights) return { loss: r.loss, grads: r.grads, samples: B, dataWaitMs, extra: { marginRad, ...bySource } };
        const weights = r.weights;
        batch.videoId.forEach((id, i) => lastWeight.set(id, weights[i] * B));
        if (r.inputRows) batch.videoId.forEach((id, i) => lastInputs.set(id, r.inputRows![i]));
        events.histogram('weighting/sample_weight', Array.from(weights, (w) => w * B), step + 1);
        let wMin = Infinity; let wMax = -Infinity;
        for (let i = 0; i < weights.length; i++) { wMin = Math.min(wMin, weights[i] * B); wMax = Math.max(wMax, weights[i] * B); }
        return {
          loss: r.loss, grads: r.grads, samples: B, dataWaitMs,
          extra: { marginRad, metaLoss: r.metaLoss ?? NaN, weightMin: wMin, weightMax: wMax, ...bySource },
        };
      } finally {
        tf.dispose([train.frames, train.ids, train.mask]);
      }
    },
    dataState: () => loader.state(),
    extraState: () => ({
      ...(metaCycler ? { metaCycler: metaCycler.state() } : {}),
      ...(weightNet ? { weightNetStep: weightNet.optimizer.stepCount } : {}),
    }),
    extraTensors: () => {
      if (!weightNet) return {};
      const out: Record<string, tf.Tensor> = {};
      for (const [k, v] of Object.entries(weightNet.params)) out[`wnet.${k}`] = v;
      for (const [k, v] of Object.entries(weightNet.optimizer.state())) out[`wnet_opt.${k}`] = v;
      return out;
    },
    // Model selection sees the validation split only; the test split is scored once, after training.
    evaluate: async () => {
      const r = await evaluateRetrieval(params, modelCfg, cache, valEntries, tok, maxLen, cfg.eval.batchSize, norm);
      return { valT2vR1: r.t2v.R1, valV2tR1: r.v2t.R1, valT2vR5: r.t2v.R5, valChanceR1: r.chanceR1 };
    },
  });

  const evalReport = await evaluateRetrieval(params, modelCfg, cache, splits.test, tok, maxLen, cfg.eval.batchSize, norm);
  const dataset = `${datasetName(splits.manifestPath)}, ${training.step} steps`;
  const weightingOut = weighting === 'none' ? undefined : await reportWeighting(runDir, trainEntries, lastWeight, lastInputs, weightNet, log, dataset);
  for (const [dir, m] of [['t2v', evalReport.t2v], ['v2t', evalReport.v2t]] as const) {
    for (const k of ['R1', 'R5', 'R10'] as const) events.scalar(`test/${dir}_${k}`, m[k], training.step);
  }
  if (weightingOut?.aurocCleanVsNoisy !== undefined) events.scalar('weighting/auroc_clean_vs_noisy', weightingOut.aurocCleanVsNoisy, training.step);
  events.close();
  const wallSeconds = (performance.now() - t0) / 1000;
  await writeJsonFile(path.join(runDir, 'eval.json'), {
    split: 'test', ...evalReport, steps: training.step, stopped: training.stopped, skippedSteps: training.skippedSteps,
    ...(weightingOut ? { weighting: weightingOut } : {}),
    ...(collapse.finding ? { collapse: collapse.finding } : {}),
    backend: backend.name, wallSeconds, config: cfg, model: modelCfg,
  });
  weightNet?.dispose();
  store.dispose();
  optimizer.dispose();
  return { runDir, eval: evalReport, backend: backend.name, steps: training.step, stopped: training.stopped, wallSeconds };
}

/** The fix printed with a collapse warning, in the config's terms. */
export function collapseFix(marginRad: number): string {
  if (marginRad > 0) {
    return `fix: a smaller margin, --set loss.marginRad=0.01 (now ${marginRad}); larger margins collapsed here even after `
      + 'InfoNCE warm-up steps (docs/RESULTS.md, "The margin default")';
  }
  return 'with no margin this is not the margin\'s doing: check that captions and clips differ between pairs, and try a lower train.lr';
}

/** Splits a checkpoint's optimizer record into the model optimizer's, the weight net's parameters and its optimizer's. */
function splitOptimizerState(rec: Record<string, tf.Tensor>): { main: Record<string, tf.Tensor>; wnet: Record<string, tf.Tensor>; wnetOpt: Record<string, tf.Tensor> } {
  const main: Record<string, tf.Tensor> = {};
  const wnet: Record<string, tf.Tensor> = {};
  const wnetOpt: Record<string, tf.Tensor> = {};
  for (const [k, v] of Object.entries(rec)) {
    if (k.startsWith('wnet_opt.')) wnetOpt[k.slice('wnet_opt.'.length)] = v;
    else if (k.startsWith('wnet.')) wnet[k.slice('wnet.'.length)] = v;
    else main[k] = v;
  }
  return { main, wnet, wnetOpt };
}

export interface WeightingOutput extends Partial<WeightingReport> {
  /** Training pairs whose latest weight was recorded. */
  weighed: number;
  plots: string[];
  /** What the weight net saw (mwn). */
  inputs?: string[];
  /**
   * Per input set (key: its inputs joined by '+'): AUROC clean vs misaligned of the learned
   * weight, and of each input alone as a score (above ½: larger is cleaner).
   */
  aurocByInputSet?: Record<string, { weight: number; byInput: Record<string, number> }>;
  /** The learned weight along each input, the others at their medians (weight-by-input.png). */
  weightByInput?: Record<string, { x: number[]; weight: number[] }>;
}

/**
 * How the learned weights treat clean and misaligned pairs (when the manifest flags them),
 * with PNGs of the loss → weight curve (mwn) and of the weight histograms.
 */
async function reportWeighting(
  runDir: string, train: ManifestEntry[], lastWeight: Map<string, number>, lastInputs: Map<string, number[]>,
  weightNet: WeightNet | undefined, log: (m: string) => void, dataset: string,
): Promise<WeightingOutput> {
  const extra: Partial<WeightingOutput> = {};
  const flagged = train.filter((e) => lastWeight.has(e.id) && typeof e.noisy === 'boolean');
  const plots: string[] = [];
  let report: WeightingReport | undefined;
  if (flagged.length && flagged.some((e) => e.noisy) && flagged.some((e) => !e.noisy)) {
    const kinds = flagged.some((e) => e.noiseKind !== undefined) ? flagged.map((e) => e.noiseKind) : undefined;
    report = weightingReport(flagged.map((e) => lastWeight.get(e.id)!), flagged.map((e) => e.noisy === true), kinds);
    log(`weighting: AUROC clean vs misaligned ${report.aurocCleanVsNoisy.toFixed(3)}; mean weight clean ${report.meanWeightClean.toFixed(3)}, misaligned ${report.meanWeightNoisy.toFixed(3)}`);
    for (const [kind, k] of Object.entries(report.byNoiseKind ?? {})) {
      log(`  ${kind} (${k.count} pairs): AUROC clean vs ${kind} ${k.aurocCleanVsKind.toFixed(3)}, mean weight ${k.meanWeight.toFixed(3)}`);
    }
    if (weightNet && flagged.every((e) => lastInputs.has(e.id))) {
      const byInput = inputAurocs(flagged.map((e) => lastInputs.get(e.id)!), weightNet.inputs, flagged.map((e) => e.noisy === true));
      extra.aurocByInputSet = { [weightNet.inputs.join('+')]: { weight: report.aurocCleanVsNoisy, byInput } };
      log(`  each input alone (AUROC, above 0.5: larger is cleaner): ${Object.entries(byInput).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(', ')}`);
    }
    const pairLabel = (e: ManifestEntry) => (!e.noisy ? 'clean' : e.noiseKind ? `misaligned (${e.noiseKind})` : 'misaligned');
    const values = flagged.map((e) => ({ weight: lastWeight.get(e.id)!, pair: pairLabel(e) }));
    plots.push(await savePlot({
      title: `Latest weight of each training pair (${dataset})`, width: 420, height: 220, data: { values },
      mark: { type: 'bar', opacity: 0.6 },
      encoding: {
        x: { field: 'weight', type: 'quantitative', bin: { maxbins: 40 }, title: 'latest weight (a batch\'s weights average 1)' },
        y: { aggregate: 'count', type: 'quantitative', stack: null, title: 'training pairs', axis: { tickMinStep: 1, format: 'd' } },
        color: { field: 'pair', type: 'nominal', legend: { orient: 'bottom', direction: 'horizontal', title: null, labelLimit: 0 } },
      },
    }, path.join(runDir, 'weights-histogram.png')));
  }
  if (weightNet && weightNet.inputs.length === 1 && weightNet.inputs[0] === 'loss') {
    const curve = await weightCurve(weightNet, { min: 0, max: 8, points: 81 });
    plots.push(await savePlot({
      title: `Learned weighting function V(loss) (${dataset})`, width: 420, height: 220,
      data: { values: curve.loss.map((l, i) => ({ loss: l, weight: curve.weight[i] })) },
      mark: 'line',
      encoding: {
        x: { field: 'loss', type: 'quantitative', title: 'per-sample SAM loss of a training pair' },
        y: { field: 'weight', type: 'quantitative', title: 'V(loss), unnormalised', scale: { zero: false } },
      },
    }, path.join(runDir, 'weight-curve.png')));
  }
  if (weightNet && lastInputs.size) {
    extra.inputs = [...weightNet.inputs];
    const curves = await weightByInput(weightNet, [...lastInputs.values()]);
    extra.weightByInput = curves;
    const values = Object.entries(curves).flatMap(([input, c]) => c.x.map((x, i) => ({ input, x, weight: c.weight[i] })));
    // A loss-only net has its curve in weight-curve.png already.
    if (weightNet.inputs.length > 1) plots.push(await savePlot({
      title: `Learned weight along each input, others at their medians (${dataset})`,
      data: { values },
      facet: { field: 'input', type: 'nominal', title: null, sort: [...weightNet.inputs] },
      columns: 4,
      spec: {
        width: 160, height: 110, mark: 'line',
        encoding: { x: { field: 'x', type: 'quantitative', title: null }, y: { field: 'weight', type: 'quantitative', title: 'V, unnormalised' } },
      },
      resolve: { scale: { x: 'independent' } },
    }, path.join(runDir, 'weight-by-input.png')));
  }
  return { ...(report ?? {}), ...extra, weighed: lastWeight.size, plots: plots.map((p) => path.basename(p)) };
}

/** The retrieval table printed at the end of a run. */
export function formatEvalTable(r: EvalReport): string {
  const row = (name: string, m: RetrievalMetrics) =>
    `| ${name} | ${m.R1.toFixed(1)} | ${m.R5.toFixed(1)} | ${m.R10.toFixed(1)} | ${m.MdR.toFixed(1)} | ${m.MnR.toFixed(1)} |`;
  return [
    `test split: ${r.testVideos} videos, ${r.testCaptions} captions; chance R@1 = ${r.chanceR1.toFixed(2)}%`,
    '| direction | R@1 | R@5 | R@10 | MdR | MnR |',
    '| --- | --- | --- | --- | --- | --- |',
    row('text→video', r.t2v),
    row('video→text', r.v2t),
  ].join('\n');
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', default: 'default' },
      init: { type: 'string' },
      data: { type: 'string' },
      out: { type: 'string' },
      backend: { type: 'string' },
      threads: { type: 'string' },
      set: { type: 'string', multiple: true, default: [] },
      resume: { type: 'boolean', default: false },
      'allow-config-change': { type: 'boolean', default: false },
      overwrite: { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      'stop-after': { type: 'string' },
    },
  });
  const cfg = await loadPretrainConfig(values.config!, { data: values.data, sets: values.set });
  if (values.init !== undefined) cfg.model.init = values.init;
  let stopAfter: number | undefined;
  if (values['stop-after'] !== undefined) {
    stopAfter = Number(values['stop-after']);
    if (!Number.isInteger(stopAfter) || stopAfter < 1) throw new Error(`--stop-after must be a positive integer, got ${values['stop-after']}`);
  }
  const r = await runPretrain(cfg, { out: values.out, backend: values.backend, threads: parseThreads(values.threads), resume: values.resume, allowConfigChange: values['allow-config-change'], overwrite: values.overwrite, quiet: values.quiet, stopAfter });
  console.log(formatEvalTable(r.eval));
  console.log(`run: ${r.runDir} (${r.steps} steps on ${r.backend}, ${r.wallSeconds.toFixed(0)} s${r.stopped === 'signal' ? ', stopped by a signal: --resume continues' : ''})`);
}

export { parsePretrainConfig };

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(() => process.exit(0), (e: unknown) => { console.error(describeOutOfMemory(e, 'pretrain') ?? `pretrain: ${(e as Error).message}`); process.exit(1); });
}
