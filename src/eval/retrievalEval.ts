/**
 * Retrieval scoring of embeddings: encode cached clips and captions, rank both ways,
 * per-concept R@1 and recall curves.
 *
 * Small sets are scored densely (the whole caption × video matrix, which dual softmax and
 * QB-Norm need); above `denseLimit` entries the matrix is only ever held one block of rows
 * at a time, and the re-scorings are refused.
 */
import { tf } from '../backend/tf.js';
import { assertCanReadSync } from '../backend/readback.js';
import { readNormalizedClips, type FrameCache } from '../data/frameCache.js';
import type { DualEncoderConfig } from '../nn/configs.js';
import { encodeText, encodeVideo } from '../nn/dualEncoder.js';
import type { Params } from '../nn/params.js';
import type { Tokenizer } from '../text/tokenizer.js';
import type { CachedEmbeddings } from './embeddingCache.js';
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
 * `norm` is the frames' per-channel mean and std (default OpenAI CLIP's; a CLIP folder states its own).
 * @example const v = await encodeVideoEmbeddings(params, cfg, cache, ['test-0000', 'test-0001'], 16);
 */
export async function encodeVideoEmbeddings(
  params: Params, cfg: DualEncoderConfig, cache: FrameCache, ids: string[], batchSize: number,
  norm: { mean?: readonly number[]; std?: readonly number[] } = {},
): Promise<Float32Array> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`encodeVideoEmbeddings: batchSize must be a positive integer, got ${batchSize}`);
  const d = cfg.embedDim;
  const out = new Float32Array(ids.length * d);
  for (let s = 0; s < ids.length; s += batchSize) {
    const { data, shape } = await readNormalizedClips(cache, ids.slice(s, s + batchSize), { mean: norm.mean, std: norm.std });
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
