/**
 * Retrieval scoring of embeddings: encode cached clips and captions, rank both ways,
 * per-concept R@1 and recall curves.
 *
 * Every ranking goes through the one blocked scorer of retrieval.ts. Small sets are scored
 * densely (the whole caption × video matrix as one block, which dual softmax and QB-Norm
 * need); above `denseLimit` entries the matrix is only ever held one block of rows at a time,
 * and the re-scorings are refused.
 */
import { tf } from '../backend/tf.js';
import { readNormalizedClips, type FrameCache } from '../data/frameCache.js';
import type { DualEncoderConfig } from '../nn/configs.js';
import { encodeText, encodeVideo } from '../nn/dualEncoder.js';
import type { Params } from '../nn/params.js';
import type { Tokenizer } from '../text/tokenizer.js';
import type { CachedEmbeddings } from './embeddingCache.js';
import {
  dualSoftmax, forEachSimilarityBlock, metricsFromRanks, qbNorm, retrievalRanks, retrievalRanksBlocked, retrievalRanksV2T,
  type BothRanks, type DenseMatrix, type RetrievalMetrics,
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

/** A·Bᵀ [na × nb], read back asynchronously as one block of the scorer. */
async function denseSim(a: Float32Array, b: Float32Array, na: number, nb: number, d: number): Promise<DenseMatrix> {
  let data: Float32Array = new Float32Array(0);
  await forEachSimilarityBlock(a, b, na, nb, d, na, (block) => { data = block; });
  return { data, rows: na, cols: nb };
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

/** Argument checks; decides whether the whole matrix is scored at once (dense) or block by block. */
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
  // Dense is the same scorer with one block holding every row.
  return { dense, blockRows: dense ? Math.max(nq, nv) : blockRows, bankRows };
}

/** Ranks from the whole caption × video matrix (and the bank's, for QB-Norm), after the re-scoring. */
function rescoredRanks(e: CachedEmbeddings, sim: DenseMatrix, bank: DenseMatrix | undefined, opts: ScoreOptions): BothRanks {
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

/**
 * Ranks captions against videos (t2v) and back (v2t) from embeddings with the blocked scorer
 * ({@link retrievalRanksBlocked}); up to `denseLimit` entries the whole matrix is one block,
 * which the dual softmax and QB-Norm re-scorings need.
 * @example
 * const r = await scoreRetrieval({ d: 2, videoIds: ['a', 'b'], videoEmb, queryToVideo: Int32Array.of(0, 1), textEmb });
 * r.t2v.R1 // percent of captions whose own video ranks first
 */
export async function scoreRetrieval(e: CachedEmbeddings, opts: ScoreOptions = {}): Promise<ScoreResult> {
  const plan = planScoring(e, opts, 'scoreRetrieval');
  const nv = e.videoIds.length;
  const nq = e.queryToVideo.length;
  let ranks: BothRanks;
  if (opts.dsl || opts.bankTextEmb) {
    const sim = await denseSim(e.textEmb, e.videoEmb, nq, nv, e.d);
    const bank = opts.bankTextEmb ? await denseSim(opts.bankTextEmb, e.videoEmb, plan.bankRows, nv, e.d) : undefined;
    ranks = rescoredRanks(e, sim, bank, opts);
  } else {
    ranks = await retrievalRanksBlocked(e.textEmb, e.videoEmb, e.d, { blockRows: plan.blockRows, queryToVideo: e.queryToVideo });
  }
  const perConcept = opts.concepts && opts.concepts.some((c) => c && c.length)
    ? conceptRecall(opts.concepts, e.queryToVideo, ranks.t2v, ranks.v2t) : [];
  return {
    t2v: metricsFromRanks(ranks.t2v), v2t: metricsFromRanks(ranks.v2t), t2vRanks: ranks.t2v, v2tRanks: ranks.v2t,
    perConcept, mode: plan.dense ? 'dense' : 'blocked',
  };
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
