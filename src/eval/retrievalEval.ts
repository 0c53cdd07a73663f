/**
 * Retrieval evaluation of a checkpoint on a manifest: encode once (embeddings cached next to
 * the checkpoint), rank both ways, per-concept R@1, and a report (eval.json, eval.md, PNGs).
 *
 * Small sets are scored densely (the whole caption × video matrix, which dual softmax and
 * QB-Norm need); above `denseLimit` entries the matrix is only ever held one block of rows
 * at a time, and the re-scorings are refused.
 */
import { readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { tf } from '../backend/tf.js';
import { assertCanReadSync } from '../backend/readback.js';
import { buildFrameCache, openFrameCache, readNormalizedClips, type FrameCache } from '../data/frameCache.js';
import { readManifest } from '../data/manifest.js';
import type { ManifestEntry } from '../data/types.js';
import { dualEncoderConfigSchema, type DualEncoderConfig } from '../nn/configs.js';
import { encodeText, encodeVideo } from '../nn/dualEncoder.js';
import type { Params } from '../nn/params.js';
import { loadTokenizer, type Tokenizer } from '../text/tokenizer.js';
import { listCheckpoints, loadCheckpoint } from '../train/checkpoint.js';
import { embeddingCacheKey, readEmbeddingCache, writeEmbeddingCache, type CachedEmbeddings } from './embeddingCache.js';
import { savePlot } from './plot.js';
import {
  dualSoftmax, forEachSimilarityBlock, metricsFromRanks, qbNorm, retrievalRanks, retrievalRanksV2T, type DenseMatrix, type RetrievalMetrics,
} from './retrieval.js';

/** Above this many caption × video entries the matrix is scored block by block (64 MB of float32). */
export const DEFAULT_DENSE_LIMIT = 1 << 24;

// ---------------------------------------------------------------- encoding

function l2Rows(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.sqrt(tf.sum(tf.square(x), 1, true))) as tf.Tensor2D;
}

/**
 * L2-normalised video embeddings [ids × E] of cached clips, `batchSize` clips per forward pass.
 * @example const v = await encodeVideoEmbeddings(params, cfg, cache, ['test-0000', 'test-0001'], 16);
 */
export async function encodeVideoEmbeddings(
  params: Params, cfg: DualEncoderConfig, cache: FrameCache, ids: string[], batchSize: number,
): Promise<Float32Array> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`encodeVideoEmbeddings: batchSize must be a positive integer, got ${batchSize}`);
  const d = cfg.embedDim;
  const out = new Float32Array(ids.length * d);
  for (let s = 0; s < ids.length; s += batchSize) {
    const { data, shape } = await readNormalizedClips(cache, ids.slice(s, s + batchSize));
    const emb = tf.tidy(() => l2Rows(encodeVideo(params, tf.tensor(data, shape), cfg)));
    // Asynchronous reads work on every backend (webgpu in Node has no sync read).
    out.set(await emb.data(), s * d);
    emb.dispose();
  }
  return out;
}

/**
 * L2-normalised text embeddings [captions × E].
 * @example const t = await encodeTextEmbeddings(params, cfg, tok, ['a red circle moves up'], 16, 64);
 */
export async function encodeTextEmbeddings(
  params: Params, cfg: DualEncoderConfig, tok: Tokenizer, captions: string[], maxLen: number, batchSize: number,
): Promise<Float32Array> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`encodeTextEmbeddings: batchSize must be a positive integer, got ${batchSize}`);
  const d = cfg.embedDim;
  const out = new Float32Array(captions.length * d);
  for (let s = 0; s < captions.length; s += batchSize) {
    const chunk = captions.slice(s, s + batchSize);
    const enc = tok.encode(chunk, maxLen);
    const emb = tf.tidy(() => {
      const ids = tf.tensor2d(enc.ids, enc.shape, 'int32');
      const mask = tf.tensor2d(enc.mask, enc.shape, 'int32');
      return l2Rows(encodeText(params, ids, mask, cfg));
    });
    out.set(await emb.data(), s * d);
    emb.dispose();
  }
  return out;
}

// ---------------------------------------------------------------- scoring

export interface ConceptR1 {
  concept: string;
  /** Videos of the gallery with this concept. */
  videos: number;
  /** Captions of those videos. */
  captions: number;
  /** t2v R@1 (%) over the captions of videos with the concept. */
  t2vR1: number;
  /** v2t R@1 (%) over the videos with the concept. */
  v2tR1: number;
}

export interface ScoreOptions {
  /** Dual softmax (over queries for t2v, over videos for v2t); dense only. */
  dsl?: boolean;
  dslTemperature?: number;
  /** Query-bank caption embeddings [bank × d] for QB-Norm of t2v; dense only. */
  bankTextEmb?: Float32Array;
  qbnormBeta?: number;
  qbnormK?: number;
  /** Concepts of each video row (same order as the embeddings); enables per-concept R@1. */
  concepts?: (string[] | undefined)[];
  /** Largest caption × video count scored densely (default {@link DEFAULT_DENSE_LIMIT}). */
  denseLimit?: number;
  /** Rows per block in the blocked path (default 1024). */
  blockRows?: number;
}

export interface ScoreResult {
  t2v: RetrievalMetrics;
  v2t: RetrievalMetrics;
  /** 1-based rank of every caption (t2v) and every video (v2t). */
  t2vRanks: Int32Array;
  v2tRanks: Int32Array;
  perConcept: ConceptR1[];
  mode: 'dense' | 'blocked';
}

/** Bᵀ as a tensor, materialised once (see retrieval.ts on why). */
function transposed(b: Float32Array, nb: number, d: number): tf.Tensor {
  return tf.tidy(() => tf.transpose(tf.tensor2d(b, [nb, d])));
}

/** Rows r0..r1 of A·Bᵀ as a tensor. */
function blockOf(a: Float32Array, bT: tf.Tensor, r0: number, r1: number, d: number): tf.Tensor {
  return tf.tidy(() => tf.matMul(tf.tensor2d(a.subarray(r0 * d, r1 * d), [r1 - r0, d]), bT as tf.Tensor2D));
}

type BlockVisitor = (block: Float32Array, r0: number, r1: number) => void;

/** Row blocks of A·Bᵀ, one at a time, each read synchronously and disposed before the next. */
function forEachBlock(a: Float32Array, b: Float32Array, na: number, nb: number, d: number, blockRows: number, visit: BlockVisitor): void {
  const bT = transposed(b, nb, d);
  try {
    for (let r0 = 0; r0 < na; r0 += blockRows) {
      const r1 = Math.min(na, r0 + blockRows);
      const block = blockOf(a, bT, r0, r1, d);
      let values: Float32Array;
      try {
        values = block.dataSync() as Float32Array;
      } finally {
        block.dispose();
      }
      visit(values, r0, r1);
    }
  } finally {
    bT.dispose();
  }
}

/**
 * The blocked path's rank arrays and the visitors that fill them from blocks of text × video
 * (t2v) and video × text (v2t) similarities; same tie rules as retrievalRanks / retrievalRanksV2T.
 */
function blockedRankers(e: CachedEmbeddings): { t2v: Int32Array; v2t: Int32Array; t2vBlock: BlockVisitor; v2tBlock: BlockVisitor } {
  const nv = e.videoIds.length;
  const nq = e.queryToVideo.length;
  const q2v = e.queryToVideo;
  const t2v = new Int32Array(nq);
  const v2t = new Int32Array(nv);
  return {
    t2v,
    v2t,
    t2vBlock: (block, r0, r1) => {
      const m: DenseMatrix = { data: block, rows: r1 - r0, cols: nv };
      t2v.set(retrievalRanks(m, { queryToVideo: q2v.subarray(r0, r1) }), r0);
    },
    v2tBlock: (block, r0, r1) => {
      for (let j = r0; j < r1; j++) {
        const off = (j - r0) * nq;
        let best = -Infinity;
        for (let i = 0; i < nq; i++) if (q2v[i] === j && block[off + i] > best) best = block[off + i];
        let rank = 1;
        for (let i = 0; i < nq; i++) if (q2v[i] !== j && block[off + i] >= best) rank++;
        v2t[j] = rank;
      }
    },
  };
}

/** Ranks of both directions without the whole matrix. */
function blockedRanks(e: CachedEmbeddings, blockRows: number): { t2v: Int32Array; v2t: Int32Array } {
  const r = blockedRankers(e);
  const nv = e.videoIds.length;
  const nq = e.queryToVideo.length;
  forEachBlock(e.textEmb, e.videoEmb, nq, nv, e.d, blockRows, r.t2vBlock);
  forEachBlock(e.videoEmb, e.textEmb, nv, nq, e.d, blockRows, r.v2tBlock);
  return { t2v: r.t2v, v2t: r.v2t };
}

/** `blockedRanks` with asynchronous reads. */
async function blockedRanksAsync(e: CachedEmbeddings, blockRows: number): Promise<{ t2v: Int32Array; v2t: Int32Array }> {
  const r = blockedRankers(e);
  const nv = e.videoIds.length;
  const nq = e.queryToVideo.length;
  await forEachSimilarityBlock(e.textEmb, e.videoEmb, nq, nv, e.d, blockRows, r.t2vBlock);
  await forEachSimilarityBlock(e.videoEmb, e.textEmb, nv, nq, e.d, blockRows, r.v2tBlock);
  return { t2v: r.t2v, v2t: r.v2t };
}

/** A·Bᵀ [na × nb] as a tensor. */
function simTensor(a: Float32Array, b: Float32Array, na: number, nb: number, d: number): tf.Tensor {
  return tf.tidy(() => tf.matMul(tf.tensor2d(a, [na, d]), tf.tensor2d(b, [nb, d]), false, true));
}

function denseSim(a: Float32Array, b: Float32Array, na: number, nb: number, d: number): DenseMatrix {
  const s = simTensor(a, b, na, nb, d);
  try {
    return { data: s.dataSync() as Float32Array, rows: na, cols: nb };
  } finally {
    s.dispose();
  }
}

async function denseSimAsync(a: Float32Array, b: Float32Array, na: number, nb: number, d: number): Promise<DenseMatrix> {
  const s = simTensor(a, b, na, nb, d);
  try {
    return { data: (await s.data()) as Float32Array, rows: na, cols: nb };
  } finally {
    s.dispose();
  }
}

/** Per-concept R@1 from per-caption and per-video ranks. */
export function conceptRecall(
  concepts: (string[] | undefined)[], queryToVideo: Int32Array, t2vRanks: Int32Array, v2tRanks: Int32Array,
): ConceptR1[] {
  if (concepts.length !== v2tRanks.length) throw new Error(`conceptRecall: ${concepts.length} concept lists for ${v2tRanks.length} videos`);
  if (queryToVideo.length !== t2vRanks.length) throw new Error(`conceptRecall: ${queryToVideo.length} captions but ${t2vRanks.length} t2v ranks`);
  const acc = new Map<string, { videos: number; vHits: number; captions: number; tHits: number }>();
  const get = (c: string) => {
    let a = acc.get(c);
    if (!a) acc.set(c, (a = { videos: 0, vHits: 0, captions: 0, tHits: 0 }));
    return a;
  };
  concepts.forEach((cs, j) => {
    for (const c of new Set(cs ?? [])) { const a = get(c); a.videos++; if (v2tRanks[j] === 1) a.vHits++; }
  });
  queryToVideo.forEach((j, i) => {
    for (const c of new Set(concepts[j] ?? [])) { const a = get(c); a.captions++; if (t2vRanks[i] === 1) a.tHits++; }
  });
  return [...acc.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([concept, a]) => ({
    concept, videos: a.videos, captions: a.captions, t2vR1: (100 * a.tHits) / a.captions, v2tR1: (100 * a.vHits) / a.videos,
  }));
}

interface ScorePlan { dense: boolean; blockRows: number; bankRows: number }

/** Argument checks shared by the sync and async scoring; decides dense or blocked. */
function planScoring(e: CachedEmbeddings, opts: ScoreOptions, fn: string): ScorePlan {
  const nv = e.videoIds.length;
  const nq = e.queryToVideo.length;
  if (e.videoEmb.length !== nv * e.d || e.textEmb.length !== nq * e.d) throw new Error(`${fn}: embeddings do not match ${nv} videos / ${nq} captions × d = ${e.d}`);
  if (nv < 2) throw new Error(`${fn}: need at least 2 videos to rank, got ${nv}`);
  if (opts.dsl && opts.bankTextEmb) throw new Error(`${fn}: choose dual softmax or QB-Norm, not both`);
  const denseLimit = opts.denseLimit ?? DEFAULT_DENSE_LIMIT;
  const dense = nq * nv <= denseLimit;
  if (!dense && (opts.dsl || opts.bankTextEmb)) {
    throw new Error(`${fn}: ${nq} captions × ${nv} videos exceeds the dense limit ${denseLimit}; dual softmax and QB-Norm need the whole matrix`);
  }
  let bankRows = 0;
  if (dense && opts.bankTextEmb) {
    bankRows = opts.bankTextEmb.length / e.d;
    if (!Number.isInteger(bankRows) || bankRows < 1) throw new Error(`${fn}: bankTextEmb length ${opts.bankTextEmb.length} is not a positive multiple of d = ${e.d}`);
  }
  const blockRows = opts.blockRows ?? 1024;
  if (!dense && (!Number.isInteger(blockRows) || blockRows < 1)) throw new Error(`${fn}: blockRows must be a positive integer, got ${blockRows}`);
  return { dense, blockRows, bankRows };
}

/** Ranks from the whole caption × video matrix (and the bank's, for QB-Norm), after the re-scoring. */
function denseRanks(e: CachedEmbeddings, sim: DenseMatrix, bank: DenseMatrix | undefined, opts: ScoreOptions): { t2v: Int32Array; v2t: Int32Array } {
  let t2vSim: DenseMatrix = sim;
  let v2tSim: DenseMatrix = sim;
  if (opts.dsl) {
    t2vSim = dualSoftmax(sim, { axis: 0, temperature: opts.dslTemperature }) as DenseMatrix;
    v2tSim = dualSoftmax(sim, { axis: 1, temperature: opts.dslTemperature }) as DenseMatrix;
  } else if (bank) {
    t2vSim = qbNorm(sim, bank, { beta: opts.qbnormBeta, k: opts.qbnormK }) as DenseMatrix;
  }
  return { t2v: retrievalRanks(t2vSim, { queryToVideo: e.queryToVideo }), v2t: retrievalRanksV2T(v2tSim, e.queryToVideo) };
}

function scoreResult(e: CachedEmbeddings, opts: ScoreOptions, ranks: { t2v: Int32Array; v2t: Int32Array }, mode: 'dense' | 'blocked'): ScoreResult {
  const { t2v: t2vRanks, v2t: v2tRanks } = ranks;
  const perConcept = opts.concepts && opts.concepts.some((c) => c && c.length)
    ? conceptRecall(opts.concepts, e.queryToVideo, t2vRanks, v2tRanks) : [];
  return { t2v: metricsFromRanks(t2vRanks), v2t: metricsFromRanks(v2tRanks), t2vRanks, v2tRanks, perConcept, mode };
}

/**
 * Ranks captions against videos (t2v) and back (v2t) from embeddings. Reads the similarities
 * synchronously; on webgpu in Node use `scoreRetrievalAsync` (same result).
 * @example
 * const r = scoreRetrieval({ d: 2, videoIds: ['a', 'b'], videoEmb, queryToVideo: Int32Array.of(0, 1), textEmb });
 * r.t2v.R1 // percent of captions whose own video ranks first
 */
export function scoreRetrieval(e: CachedEmbeddings, opts: ScoreOptions = {}): ScoreResult {
  assertCanReadSync('scoreRetrieval', 'scoreRetrievalAsync');
  const plan = planScoring(e, opts, 'scoreRetrieval');
  const nv = e.videoIds.length;
  const nq = e.queryToVideo.length;
  if (!plan.dense) return scoreResult(e, opts, blockedRanks(e, plan.blockRows), 'blocked');
  const sim = denseSim(e.textEmb, e.videoEmb, nq, nv, e.d);
  const bank = opts.bankTextEmb ? denseSim(opts.bankTextEmb, e.videoEmb, plan.bankRows, nv, e.d) : undefined;
  return scoreResult(e, opts, denseRanks(e, sim, bank, opts), 'dense');
}

/**
 * `scoreRetrieval` with the similarity blocks read asynchronously, so it runs on every backend
 * (webgpu in Node has no sync read). Same ranks and metrics.
 * @example
 * const r = await scoreRetrievalAsync(embeddings, { concepts });
 */
export async function scoreRetrievalAsync(e: CachedEmbeddings, opts: ScoreOptions = {}): Promise<ScoreResult> {
  const plan = planScoring(e, opts, 'scoreRetrievalAsync');
  const nv = e.videoIds.length;
  const nq = e.queryToVideo.length;
  if (!plan.dense) return scoreResult(e, opts, await blockedRanksAsync(e, plan.blockRows), 'blocked');
  const sim = await denseSimAsync(e.textEmb, e.videoEmb, nq, nv, e.d);
  const bank = opts.bankTextEmb ? await denseSimAsync(opts.bankTextEmb, e.videoEmb, plan.bankRows, nv, e.d) : undefined;
  return scoreResult(e, opts, denseRanks(e, sim, bank, opts), 'dense');
}

/** Recall (%) at every K from 1 to `maxK`. */
export function recallCurve(ranks: Int32Array, maxK: number): { k: number; recall: number }[] {
  const out: { k: number; recall: number }[] = [];
  for (let k = 1; k <= maxK; k++) {
    let c = 0;
    for (const r of ranks) if (r <= k) c++;
    out.push({ k, recall: (100 * c) / ranks.length });
  }
  return out;
}

// ---------------------------------------------------------------- checkpoints

/** The parts of a checkpoint's config.json that evaluation needs (the pretrain pipeline writes them). */
const checkpointConfigSchema = z.object({
  pretrain: z.object({
    seed: z.number().int().default(0),
    frames: z.object({ count: z.number().int().min(1), size: z.number().int().min(8), strategy: z.enum(['uniform', 'random', 'fps', 'head', 'tail']) }).loose(),
    tokenizer: z.object({ maxLen: z.number().int().min(4) }).loose(),
    eval: z.object({ batchSize: z.number().int().min(1) }).loose().optional(),
  }).loose(),
  model: dualEncoderConfigSchema,
  tokenizer: z.string(),
}).loose();

export interface CheckpointInfo {
  dir: string;
  step: number;
  /** SHA-256 of model.safetensors, from state.json. */
  modelSha: string;
  model: DualEncoderConfig;
  tokenizerDir: string;
  frames: { count: number; size: number; strategy: 'uniform' | 'random' | 'fps' | 'head' | 'tail' };
  seed: number;
  maxLen: number;
  batchSize: number;
  /** The whole config.json, for pipelines that extend it. */
  raw: Record<string, unknown>;
}

/**
 * Reads a checkpoint's settings without loading its weights. `where` is a checkpoint folder
 * (with state.json) or a run folder (its newest checkpoint is used).
 * @example const info = await readCheckpointInfo('runs/default'); info.step // 240
 */
export async function readCheckpointInfo(where: string): Promise<CheckpointInfo> {
  if (typeof where !== 'string' || !where) throw new Error('--checkpoint: expected a checkpoint folder or a run folder');
  let dir = path.resolve(where);
  try {
    await stat(dir);
  } catch {
    throw new Error(`--checkpoint: ${dir} does not exist`);
  }
  try {
    await stat(path.join(dir, 'state.json'));
  } catch {
    const list = await listCheckpoints(dir);
    if (!list.length) throw new Error(`--checkpoint: ${dir} is neither a checkpoint folder (no state.json) nor a run folder with checkpoints/step-*`);
    dir = list.reduce((a, b) => (b.step > a.step ? b : a)).dir;
  }
  const readJson = async (f: string): Promise<unknown> => {
    try {
      return JSON.parse(await readFile(f, 'utf8'));
    } catch (e) {
      throw new Error(`--checkpoint: cannot read ${f} (${(e as Error).message})`);
    }
  };
  const state = (await readJson(path.join(dir, 'state.json'))) as { step?: unknown; sha256?: Record<string, unknown> };
  const modelSha = state?.sha256?.['model.safetensors'];
  if (typeof modelSha !== 'string' || !Number.isInteger(state.step)) throw new Error(`--checkpoint: ${path.join(dir, 'state.json')} has no step or model checksum; not a vlmargin checkpoint`);
  const raw = await readJson(path.join(dir, 'config.json'));
  const parsed = checkpointConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; ');
    throw new Error(`--checkpoint: ${path.join(dir, 'config.json')} lacks what evaluation needs (${issues}); expected { pretrain, model, tokenizer } as the pretrain pipeline writes`);
  }
  const c = parsed.data;
  return {
    dir, step: state.step as number, modelSha, model: c.model, tokenizerDir: c.tokenizer,
    frames: { count: c.pretrain.frames.count, size: c.pretrain.frames.size, strategy: c.pretrain.frames.strategy },
    seed: c.pretrain.seed, maxLen: c.pretrain.tokenizer.maxLen, batchSize: c.pretrain.eval?.batchSize ?? 64,
    raw: raw as Record<string, unknown>,
  };
}

// ---------------------------------------------------------------- the whole evaluation

export interface RetrievalEvalOptions {
  /** Checkpoint folder or run folder. */
  checkpoint: string;
  /** Native JSONL manifest, or pass `entries` (then `manifest` only names the data in the report and cache key). */
  manifest: string;
  entries?: ManifestEntry[];
  /** Split to evaluate; 'all' takes every entry (default 'test'). */
  split?: string;
  dsl?: boolean;
  dslTemperature?: number;
  /** QB-Norm query bank: the captions of this manifest's `qbnormSplit` (default 'train'; 'all' = every entry). */
  qbnorm?: string;
  qbnormSplit?: string;
  qbnormBeta?: number;
  /** Report folder (default `<checkpoint>/eval/<manifest name>-<split>[-dsl|-qbnorm]`). */
  out?: string;
  /** Frame cache folder (default `<manifest folder>/.vlmargin/frames-<count>x<size>-<strategy>-s<seed>`). */
  framesDir?: string;
  batchSize?: number;
  denseLimit?: number;
  blockRows?: number;
  allowOutsideRoot?: boolean;
  /** Use these weights instead of the checkpoint's (a pipeline evaluating its live model); disables the cache. */
  params?: Params;
  onLog?: (message: string) => void;
  /** Write PNG plots (default true). */
  plots?: boolean;
}

export interface RetrievalEvalReport {
  checkpoint: string;
  step: number;
  manifest: string;
  split: string;
  videos: number;
  captions: number;
  /** Entries of the split left out because their video could not be decoded. */
  skipped: { id: string; reason: string }[];
  rescoring: 'none' | 'dsl' | 'qbnorm';
  /** QB-Norm re-scores t2v only (the bank is captions); v2t is then the plain ranking. */
  note?: string;
  t2v: RetrievalMetrics;
  v2t: RetrievalMetrics;
  /** R@1 (%) of a random ranking: 100 / videos, in both directions. */
  chanceR1: number;
  perConcept: ConceptR1[];
  mode: 'dense' | 'blocked';
  cache: { hit: boolean; file: string | null };
  /** Items encoded by this run (0 and 0 on a cache hit). */
  encoded: { videos: number; captions: number };
  seconds: number;
  files: { json: string; markdown: string; plots: string[] };
}

function pickSplit(entries: ManifestEntry[], split: string, source: string, what: string): ManifestEntry[] {
  const out = split === 'all' ? entries : entries.filter((e) => e.split === split);
  if (!out.length) {
    const have = [...new Set(entries.map((e) => e.split ?? '(none)'))].join(', ');
    throw new Error(`${what} ${source}: no entries with split '${split}' (splits present: ${have || 'none'}); pass 'all' to use every entry`);
  }
  return out;
}

async function loadWeights(info: CheckpointInfo): Promise<Params> {
  const ck = await loadCheckpoint(info.dir, { onWarning: () => undefined });
  if (ck.optimizer) tf.dispose(Object.values(ck.optimizer));
  return ck.params;
}

/**
 * Evaluates a checkpoint on a manifest split and writes the report.
 * @example
 * const r = await evaluateCheckpointRetrieval({ checkpoint: 'runs/default', manifest: 'data/synth-default/manifest.jsonl' });
 * console.log(r.t2v.R1, r.files.json);
 */
export async function evaluateCheckpointRetrieval(opts: RetrievalEvalOptions): Promise<RetrievalEvalReport> {
  const t0 = performance.now();
  const log = opts.onLog ?? (() => undefined);
  if (typeof opts.manifest !== 'string' || !opts.manifest) throw new Error('--manifest: expected a manifest path');
  const split = opts.split ?? 'test';
  const info = await readCheckpointInfo(opts.checkpoint);
  const manifestPath = path.resolve(opts.manifest);
  let entries = opts.entries;
  let manifestMtime = 0;
  if (!entries) {
    try {
      manifestMtime = (await stat(manifestPath)).mtimeMs;
    } catch {
      throw new Error(`--manifest: ${manifestPath} does not exist`);
    }
    const m = await readManifest(manifestPath, { allowOutsideRoot: opts.allowOutsideRoot });
    if (m.errors.length) log(`${m.errors.length} manifest lines skipped (first: line ${m.errors[0].line ?? '?'}: ${m.errors[0].reason})`);
    entries = m.entries;
  }
  const wanted = pickSplit(entries, split, manifestPath, '--manifest');
  const batchSize = opts.batchSize ?? info.batchSize;
  const rescoring = opts.dsl ? 'dsl' : opts.qbnorm ? 'qbnorm' : 'none';
  const out = path.resolve(opts.out ?? path.join(info.dir, 'eval', `${path.parse(manifestPath).name}-${split}${rescoring === 'none' ? '' : `-${rescoring}`}`));
  const framesDir = path.resolve(opts.framesDir
    ?? path.join(path.dirname(manifestPath), '.vlmargin', `frames-${info.frames.count}x${info.frames.size}-${info.frames.strategy}-s${info.seed}`));

  const keyParts = {
    checkpointSha: info.modelSha, step: info.step, manifest: manifestPath, manifestMtime, split,
    ids: opts.entries ? embeddingCacheKey({ e: wanted.map((e) => [e.id, e.video, e.captions]) }) : undefined,
    frames: info.frames, seed: info.seed, maxLen: info.maxLen, tokenizer: info.tokenizerDir,
  };
  const cacheDir = path.join(info.dir, 'embeddings');
  const key = embeddingCacheKey(keyParts);
  const useCache = !opts.params;
  let emb = useCache ? await readEmbeddingCache(cacheDir, key) : null;
  const hit = emb !== null;
  let encoded = { videos: 0, captions: 0 };
  let params: Params | undefined = opts.params;
  let tok: Tokenizer | undefined;
  const ownParams = !opts.params;
  const skipped: { id: string; reason: string }[] = [];
  try {
    if (!emb) {
      const summary = await buildFrameCache(wanted, {
        out: framesDir, frames: info.frames.count, size: info.frames.size, strategy: info.frames.strategy, seed: info.seed,
      });
      log(`frame cache ${framesDir}: ${summary.decoded} decoded, ${summary.reused} reused, ${summary.skipped.length} skipped`);
      const cache = await openFrameCache(framesDir);
      const usable = wanted.filter((e) => cache.has(e.id));
      const failed = new Map(summary.skipped.map((s) => [s.id, s.reason]));
      for (const e of wanted) if (!cache.has(e.id)) skipped.push({ id: e.id, reason: failed.get(e.id) ?? 'not in the frame cache' });
      if (usable.length < 2) throw new Error(`--manifest ${manifestPath}: only ${usable.length} videos of split '${split}' could be decoded; need at least 2`);
      tok = await loadTokenizer(info.tokenizerDir);
      params ??= await loadWeights(info);
      const captions = usable.flatMap((e) => e.captions);
      const queryToVideo = Int32Array.from(usable.flatMap((e, j) => e.captions.map(() => j)));
      const videoEmb = await encodeVideoEmbeddings(params, info.model, cache, usable.map((e) => e.id), batchSize);
      const textEmb = await encodeTextEmbeddings(params, info.model, tok, captions, info.maxLen, batchSize);
      emb = { d: info.model.embedDim, videoIds: usable.map((e) => e.id), videoEmb, queryToVideo, textEmb };
      encoded = { videos: usable.length, captions: captions.length };
      if (useCache) await writeEmbeddingCache(cacheDir, key, keyParts, emb);
    } else {
      const have = new Set(emb.videoIds);
      for (const e of wanted) if (!have.has(e.id)) skipped.push({ id: e.id, reason: 'not decodable when the embeddings were cached' });
    }

    let bankTextEmb: Float32Array | undefined;
    let note: string | undefined;
    if (opts.qbnorm) {
      const bankPath = path.resolve(opts.qbnorm);
      let bankMtime: number;
      try {
        bankMtime = (await stat(bankPath)).mtimeMs;
      } catch {
        throw new Error(`--qbnorm: ${bankPath} does not exist`);
      }
      const bankSplit = opts.qbnormSplit ?? 'train';
      const bankParts = { checkpointSha: info.modelSha, step: info.step, bank: bankPath, bankMtime, bankSplit, maxLen: info.maxLen, tokenizer: info.tokenizerDir };
      const bankKey = embeddingCacheKey(bankParts);
      const cachedBank = useCache ? await readEmbeddingCache(cacheDir, bankKey) : null;
      if (cachedBank) {
        bankTextEmb = cachedBank.textEmb;
      } else {
        const bank = await readManifest(bankPath, { allowOutsideRoot: true });
        const bankEntries = pickSplit(bank.entries, bankSplit, bankPath, '--qbnorm');
        tok ??= await loadTokenizer(info.tokenizerDir);
        params ??= await loadWeights(info);
        const bankCaptions = bankEntries.flatMap((e) => e.captions);
        bankTextEmb = await encodeTextEmbeddings(params, info.model, tok, bankCaptions, info.maxLen, batchSize);
        encoded.captions += bankCaptions.length;
        // Stored as an entry with no video rows but one placeholder, so the same reader serves it.
        if (useCache) {
          await writeEmbeddingCache(cacheDir, bankKey, bankParts, {
            d: info.model.embedDim, videoIds: ['(bank)'], videoEmb: new Float32Array(info.model.embedDim),
            queryToVideo: new Int32Array(bankCaptions.length), textEmb: bankTextEmb,
          });
        }
      }
      note = 'QB-Norm re-scores text→video only (the query bank holds captions); video→text is the plain ranking';
    }

    const conceptsById = new Map(wanted.map((e) => [e.id, e.concepts]));
    const scored = await scoreRetrievalAsync(emb, {
      dsl: opts.dsl, dslTemperature: opts.dslTemperature, bankTextEmb, qbnormBeta: opts.qbnormBeta,
      concepts: emb.videoIds.map((id) => conceptsById.get(id)), denseLimit: opts.denseLimit, blockRows: opts.blockRows,
    });
    const report: RetrievalEvalReport = {
      checkpoint: info.dir, step: info.step, manifest: manifestPath, split,
      videos: emb.videoIds.length, captions: emb.queryToVideo.length, skipped, rescoring, note,
      t2v: scored.t2v, v2t: scored.v2t, chanceR1: 100 / emb.videoIds.length, perConcept: scored.perConcept, mode: scored.mode,
      cache: { hit, file: useCache ? path.join(cacheDir, `${key}.json`) : null }, encoded,
      seconds: 0, files: { json: path.join(out, 'eval.json'), markdown: path.join(out, 'eval.md'), plots: [] },
    };
    if (opts.plots !== false) report.files.plots = await writePlots(report, scored, out);
    report.seconds = (performance.now() - t0) / 1000;
    await mkdir(out, { recursive: true });
    await writeFile(report.files.markdown, formatRetrievalMarkdown(report));
    await writeFile(report.files.json, `${JSON.stringify(report, null, 2)}\n`);
    return report;
  } finally {
    if (ownParams && params) tf.dispose(Object.values(params));
  }
}

async function writePlots(r: RetrievalEvalReport, s: ScoreResult, out: string): Promise<string[]> {
  const files: string[] = [];
  const curve = [
    ...recallCurve(s.t2vRanks, Math.min(50, r.videos)).map((p) => ({ ...p, direction: 'text→video' })),
    ...recallCurve(s.v2tRanks, Math.min(50, r.captions)).map((p) => ({ ...p, direction: 'video→text' })),
  ];
  files.push(await savePlot({
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: `Recall@K: ${path.basename(r.manifest)} (${r.split}), step ${r.step}`,
    width: 420, height: 260, data: { values: curve }, mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'k', type: 'quantitative', title: 'K' },
      y: { field: 'recall', type: 'quantitative', title: 'recall (%)', scale: { domain: [0, 100] } },
      color: { field: 'direction', type: 'nominal' },
    },
  }, path.join(out, 'recall_at_k.png')));
  if (r.perConcept.length) {
    const bars = r.perConcept.flatMap((c) => [
      { concept: c.concept, direction: 'text→video', R1: c.t2vR1 }, { concept: c.concept, direction: 'video→text', R1: c.v2tR1 },
    ]);
    files.push(await savePlot({
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      title: `R@1 per concept (chance ${r.chanceR1.toFixed(1)}%)`,
      width: { step: 12 }, height: 240, data: { values: bars }, mark: 'bar',
      encoding: {
        x: { field: 'concept', type: 'nominal', sort: null, title: null },
        xOffset: { field: 'direction' },
        y: { field: 'R1', type: 'quantitative', title: 'R@1 (%)', scale: { domain: [0, 100] } },
        color: { field: 'direction', type: 'nominal' },
      },
    }, path.join(out, 'concept_r1.png')));
  }
  return files;
}

/** The report as a markdown table (both directions, then per-concept R@1). */
export function formatRetrievalMarkdown(r: RetrievalEvalReport): string {
  const f = (x: number) => x.toFixed(1);
  const row = (name: string, m: RetrievalMetrics) => `| ${name} | ${f(m.R1)} | ${f(m.R5)} | ${f(m.R10)} | ${f(m.R50)} | ${f(m.MdR)} | ${f(m.MnR)} |`;
  const lines = [
    `# Retrieval: ${path.basename(r.manifest)} (${r.split})`,
    '',
    `checkpoint ${r.checkpoint} (step ${r.step}); ${r.videos} videos, ${r.captions} captions; re-scoring: ${r.rescoring}; chance R@1 = ${r.chanceR1.toFixed(2)}%`,
    ...(r.note ? ['', r.note] : []),
    ...(r.skipped.length ? ['', `${r.skipped.length} videos skipped (first: ${r.skipped[0].id}: ${r.skipped[0].reason})`] : []),
    '',
    '| direction | R@1 | R@5 | R@10 | R@50 | MdR | MnR |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    row('text→video', r.t2v),
    row('video→text', r.v2t),
  ];
  if (r.perConcept.length) {
    lines.push('', '| concept | videos | captions | t2v R@1 | v2t R@1 |', '| --- | --- | --- | --- | --- |');
    for (const c of r.perConcept) lines.push(`| ${c.concept} | ${c.videos} | ${c.captions} | ${f(c.t2vR1)} | ${f(c.v2tR1)} |`);
  }
  return `${lines.join('\n')}\n`;
}
