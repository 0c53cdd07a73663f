/**
 * Text↔video retrieval metrics: recall at K, median and mean rank, for one or several
 * captions per video; dual softmax (CAMoE, Cheng et al. 2021) and QB-Norm with the dynamic
 * inverted softmax (Bogolin et al. 2022) as re-scorings; and a blocked evaluator that never
 * holds more than one block of the N×N similarity matrix.
 *
 * Conventions. `sim[i][j]` scores text query i against video j (rows = captions, columns =
 * videos). Ranks are 1-based and ties count against the model: the rank of the true item is
 * 1 + the number of competing items scoring ≥ it. Recalls are percentages.
 */
import { tf } from '../backend/tf.js';

/** A row-major matrix: `data[i * cols + j]`. */
export interface DenseMatrix { data: Float32Array | Float64Array; rows: number; cols: number }
/**
 * A similarity matrix as nested arrays or a {@link DenseMatrix}; a tensor is read by its
 * caller, once and asynchronously: `{ data: await t.data(), rows, cols }`.
 */
export type SimMatrix = number[][] | DenseMatrix;
/** Recalls in percent; MdR/MnR are the median/mean 1-based rank (median of an even count averages the middle two). */
export interface RetrievalMetrics { R1: number; R5: number; R10: number; R50: number; MdR: number; MnR: number }
export interface RetrievalOptions {
  /** Caption i describes video `queryToVideo[i]`; without it the matrix must be square with the truth on the diagonal. */
  queryToVideo?: Int32Array | number[];
}
export interface BothDirections { t2v: RetrievalMetrics; v2t: RetrievalMetrics }

interface Dense { data: ArrayLike<number>; rows: number; cols: number }

/** Reads any accepted matrix form into row-major numbers, rejecting ragged rows and NaN. */
function toDense(sim: SimMatrix, name: string): Dense {
  let out: Dense;
  if (sim instanceof tf.Tensor) {
    throw new Error(`${name}: a tensor is read by the caller, once and asynchronously: pass { data: await t.data(), rows, cols }`);
  } else if (Array.isArray(sim)) {
    const rows = sim.length;
    const cols = rows > 0 && Array.isArray(sim[0]) ? sim[0].length : 0;
    const data = new Float64Array(rows * cols);
    for (let i = 0; i < rows; i++) {
      const row = sim[i];
      if (!Array.isArray(row) || row.length !== cols) {
        throw new Error(`${name}: row ${i} has ${Array.isArray(row) ? row.length : 'no'} entries, expected ${cols} like row 0`);
      }
      for (let j = 0; j < cols; j++) {
        if (typeof row[j] !== 'number') throw new Error(`${name}[${i}][${j}]: expected a number, got ${typeof row[j]}`);
        data[i * cols + j] = row[j];
      }
    }
    out = { data, rows, cols };
  } else if (sim && typeof sim === 'object' && 'data' in sim) {
    const { data, rows, cols } = sim;
    if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
      throw new Error(`${name}: rows and cols must be non-negative integers, got ${rows} × ${cols}`);
    }
    if (!(data instanceof Float32Array || data instanceof Float64Array)) {
      throw new Error(`${name}.data: expected a Float32Array or Float64Array`);
    }
    if (data.length !== rows * cols) throw new Error(`${name}.data: length ${data.length} ≠ rows × cols = ${rows * cols}`);
    out = { data, rows, cols };
  } else {
    throw new Error(`${name}: expected number[][] or { data, rows, cols }`);
  }
  if (out.rows === 0 || out.cols === 0) throw new Error(`${name}: empty matrix (${out.rows} × ${out.cols})`);
  for (let k = 0; k < out.data.length; k++) {
    if (Number.isNaN(out.data[k])) {
      throw new Error(`${name}[${Math.floor(k / out.cols)}][${k % out.cols}] is NaN`);
    }
  }
  return out;
}

/** Returns a re-scored matrix in the same form the caller passed in. */
function likeInput(input: SimMatrix, data: Float64Array, rows: number, cols: number): SimMatrix {
  if (Array.isArray(input)) {
    const out: number[][] = [];
    for (let i = 0; i < rows; i++) out.push(Array.from(data.subarray(i * cols, (i + 1) * cols)));
    return out;
  }
  return { data, rows, cols };
}

/** Checks queryToVideo against the matrix, or builds the identity for a square one. */
function resolveQueryToVideo(q2v: Int32Array | number[] | undefined, rows: number, cols: number, matrix = 'sim'): Int32Array {
  const name = 'queryToVideo';
  if (q2v === undefined) {
    if (rows !== cols) {
      throw new Error(`${matrix}: ${rows} × ${cols} is not square; pass ${name} to say which video column each query row belongs to`);
    }
    const id = new Int32Array(rows);
    for (let i = 0; i < rows; i++) id[i] = i;
    return id;
  }
  if (!(q2v instanceof Int32Array) && !Array.isArray(q2v)) throw new Error(`${name}: expected an Int32Array or number[]`);
  if (q2v.length !== rows) throw new Error(`${name}: length ${q2v.length} ≠ number of query rows ${rows}`);
  const out = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    const v = q2v[i];
    if (!Number.isInteger(v) || v < 0 || v >= cols) {
      throw new Error(`${name}[${i}] = ${v}: expected an integer video column in [0, ${cols})`);
    }
    out[i] = v;
  }
  return out;
}

/** Captions of each video as CSR (start offsets + caption indices); every video must have one. */
function captionsPerVideo(q2v: Int32Array, numVideos: number): { start: Int32Array; idx: Int32Array } {
  const start = new Int32Array(numVideos + 1);
  for (let i = 0; i < q2v.length; i++) start[q2v[i] + 1]++;
  for (let j = 0; j < numVideos; j++) {
    if (start[j + 1] === 0) {
      throw new Error(`queryToVideo: video column ${j} has no caption, so it cannot be a v2t query; drop it from the gallery for v2t`);
    }
    start[j + 1] += start[j];
  }
  const fill = start.slice(0, numVideos);
  const idx = new Int32Array(q2v.length);
  for (let i = 0; i < q2v.length; i++) idx[fill[q2v[i]]++] = i;
  return { start, idx };
}

/**
 * Summary of 1-based ranks.
 * @example metricsFromRanks([1, 2, 4, 4]) // { R1: 25, R5: 100, R10: 100, R50: 100, MdR: 3, MnR: 2.75 }
 */
export function metricsFromRanks(ranks: ArrayLike<number>): RetrievalMetrics {
  const n = ranks.length;
  if (n === 0) throw new Error('ranks: empty');
  const sorted = Float64Array.from(ranks).sort();
  if (!(sorted[0] >= 1) || Number.isNaN(sorted[n - 1])) throw new Error('ranks: expected 1-based ranks (≥ 1, no NaN)');
  const recall = (k: number) => {
    let c = 0;
    for (let i = 0; i < n && sorted[i] <= k; i++) c++;
    return (100 * c) / n;
  };
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i];
  const mid = n >> 1;
  const MdR = n % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { R1: recall(1), R5: recall(5), R10: recall(10), R50: recall(50), MdR, MnR: sum / n };
}

/** t2v ranks of one row: 1 + the number of other columns scoring ≥ the true one. */
function rowRank(data: ArrayLike<number>, offset: number, cols: number, truth: number): number {
  const s = data[offset + truth];
  let count = 0;
  for (let j = 0; j < cols; j++) if (data[offset + j] >= s) count++;
  return count; // the true column itself is among the `count`, which supplies the 1 in 1 + others
}

/**
 * Text→video rank of every query row.
 * @example retrievalRanks([[0.9, 0.1], [0.5, 0.5]]) // Int32Array [1, 2] (the tie counts against query 1)
 */
export function retrievalRanks(sim: SimMatrix, opts: RetrievalOptions = {}): Int32Array {
  const m = toDense(sim, 'sim');
  const q2v = resolveQueryToVideo(opts.queryToVideo, m.rows, m.cols);
  const ranks = new Int32Array(m.rows);
  for (let i = 0; i < m.rows; i++) ranks[i] = rowRank(m.data, i * m.cols, m.cols, q2v[i]);
  return ranks;
}

/**
 * Video→text rank of every video column. Video j queries all captions by `sim[:, j]`; its
 * rank is that of its best-scoring own caption, counting as competitors only the captions of
 * OTHER videos that score ≥ it (so own captions tied at the top do not push each other down):
 * rank_j = 1 + #{i : queryToVideo[i] ≠ j, sim[i][j] ≥ max_{c : queryToVideo[c] = j} sim[c][j]}.
 * Every video needs at least one caption.
 * @example retrievalRanksV2T([[0.5, 0.1], [0.5, 0.2], [0.3, 0.9]], [0, 0, 1]) // Int32Array [1, 1]
 */
export function retrievalRanksV2T(sim: SimMatrix, queryToVideo?: Int32Array | number[]): Int32Array {
  const m = toDense(sim, 'sim');
  const q2v = resolveQueryToVideo(queryToVideo, m.rows, m.cols);
  captionsPerVideo(q2v, m.cols);
  const best = new Float64Array(m.cols).fill(-Infinity);
  for (let i = 0; i < m.rows; i++) {
    const v = m.data[i * m.cols + q2v[i]];
    if (v > best[q2v[i]]) best[q2v[i]] = v;
  }
  // Row-major sweep so large dense matrices are read in memory order.
  const ranks = new Int32Array(m.cols).fill(1);
  for (let i = 0; i < m.rows; i++) {
    const off = i * m.cols;
    const own = q2v[i];
    for (let j = 0; j < m.cols; j++) if (j !== own && m.data[off + j] >= best[j]) ranks[j]++;
  }
  return ranks;
}

/**
 * Text→video metrics.
 * @example
 * retrievalMetrics([[0.9, 0.1], [0.5, 0.5]]) // { R1: 50, …, MdR: 1.5, MnR: 1.5 }
 * retrievalMetrics(sim5x3, { queryToVideo: [0, 0, 1, 2, 2] }) // 5 captions of 3 videos
 */
export function retrievalMetrics(sim: SimMatrix, opts: RetrievalOptions = {}): RetrievalMetrics {
  return metricsFromRanks(retrievalRanks(sim, opts));
}

/**
 * Video→text metrics on the same text-by-video matrix (see {@link retrievalRanksV2T} for the rank).
 * @example retrievalMetricsV2T([[0.9, 0.1], [0.5, 0.5]]) // ranks [1, 1] → R1 100
 */
export function retrievalMetricsV2T(sim: SimMatrix, queryToVideo?: Int32Array | number[]): RetrievalMetrics {
  return metricsFromRanks(retrievalRanksV2T(sim, queryToVideo));
}

/**
 * Both directions at once.
 * @example const { t2v, v2t } = retrievalMetricsBoth(sim, { queryToVideo });
 */
export function retrievalMetricsBoth(sim: SimMatrix, opts: RetrievalOptions = {}): BothDirections {
  const m = toDense(sim, 'sim');
  const dense: DenseMatrix = { data: m.data instanceof Float32Array ? m.data : Float64Array.from(m.data), rows: m.rows, cols: m.cols };
  return { t2v: retrievalMetrics(dense, opts), v2t: retrievalMetricsV2T(dense, opts.queryToVideo) };
}

export interface DualSoftmaxOptions {
  /** Multiplies sim inside the softmax (an inverse temperature). Default 100, CLIP's logit scale, for cosine inputs. */
  temperature?: number;
  /** 0: softmax down each column, over the text queries (for t2v); 1: along each row, over the videos (for v2t). */
  axis?: 0 | 1;
}

/**
 * Dual softmax (DSL, CAMoE): with axis 0,
 *   out[i][j] = sim[i][j] · exp(T·sim[i][j]) / Σ_{i'} exp(T·sim[i'][j]),
 * i.e. each score times the prior that video j picks text i among all texts; axis 1 sums
 * over j' instead. Computed with the column (row) maximum subtracted. Returns the same form
 * as `sim`. Needs the whole matrix, so it is for the dense path.
 * @example dualSoftmax([[2, 3], [0, 3]], { temperature: Math.LN2 }) // [[2·4/5, 3/2], [0, 3/2]]
 */
export function dualSoftmax(sim: SimMatrix, opts: DualSoftmaxOptions = {}): SimMatrix {
  const T = opts.temperature ?? 100;
  const axis = opts.axis ?? 0;
  if (!Number.isFinite(T) || T <= 0) throw new Error(`dualSoftmax: temperature must be a positive number, got ${T}`);
  if (axis !== 0 && axis !== 1) throw new Error(`dualSoftmax: axis must be 0 or 1, got ${String(axis)}`);
  const m = toDense(sim, 'sim');
  const { rows, cols, data } = m;
  for (let k = 0; k < data.length; k++) {
    if (!Number.isFinite(data[k])) throw new Error(`sim[${Math.floor(k / cols)}][${k % cols}] = ${data[k]}: dualSoftmax needs finite scores`);
  }
  const out = new Float64Array(rows * cols);
  // Lines are columns for axis 0 and rows for axis 1: element (line a, position b) sits at a·sa + b·sb.
  const [lines, len, sa, sb] = axis === 0 ? [cols, rows, 1, cols] : [rows, cols, cols, 1];
  for (let a = 0; a < lines; a++) {
    let max = -Infinity;
    for (let b = 0; b < len; b++) max = Math.max(max, data[a * sa + b * sb]);
    let z = 0;
    for (let b = 0; b < len; b++) z += Math.exp(T * (data[a * sa + b * sb] - max));
    for (let b = 0; b < len; b++) {
      const k = a * sa + b * sb;
      out[k] = data[k] * (Math.exp(T * (data[k] - max)) / z);
    }
  }
  return likeInput(sim, out, rows, cols);
}

export interface QbNormOptions {
  /** Inverse temperature of the inverted softmax (paper default 20, for cosine similarities). */
  beta?: number;
  /** How many top gallery items of each bank query enter the activation set (paper default 1). */
  k?: number;
}

/**
 * QB-Norm with the dynamic inverted softmax (Bogolin et al., "Cross Modal Retrieval with
 * Querybank Normalisation", CVPR 2022). `sim` is [queries × gallery], `bankSim` is
 * [bank queries × the same gallery] (e.g. training captions against the test videos).
 *   A = ∪_b topk(bankSim[b]) — the activation set, gallery items in some bank query's top k;
 *   for each query row q whose top-1 item argmax_g sim[q][g] is in A, the whole row becomes
 *     out[q][g] = exp(β·sim[q][g]) / Σ_b exp(β·bankSim[b][g])      (inverted softmax);
 *   other rows are left unchanged.
 * Rows are normalised whole, never item by item, because ranking happens within a row and
 * mixing both scales inside one row would compare unlike quantities. Ties in top-k and
 * argmax go to the lower gallery index. The sum is computed in log space (max subtracted);
 * the output is then exp(β·s − log Σ), finite unless s exceeds the bank's column maximum by
 * more than ~709/β. Returns the same form as `sim`. For v2t pass both matrices transposed
 * (videos as queries, captions as gallery).
 * @example qbNorm([[2, 1, 0]], [[3, 1, 0], [2, 1, 1]], { beta: Math.LN2 }) // [[4/12, 2/4, 1/3]]
 */
export function qbNorm(sim: SimMatrix, bankSim: SimMatrix, opts: QbNormOptions = {}): SimMatrix {
  const beta = opts.beta ?? 20;
  const k = opts.k ?? 1;
  if (!Number.isFinite(beta) || beta <= 0) throw new Error(`qbNorm: beta must be a positive number, got ${beta}`);
  const m = toDense(sim, 'sim');
  const bank = toDense(bankSim, 'bankSim');
  if (bank.cols !== m.cols) {
    throw new Error(`bankSim: has ${bank.cols} gallery columns but sim has ${m.cols}; both must score the same gallery`);
  }
  if (!Number.isInteger(k) || k < 1 || k > m.cols) throw new Error(`qbNorm: k must be an integer in [1, ${m.cols}], got ${k}`);
  for (const [mat, name] of [[m, 'sim'], [bank, 'bankSim']] as const) {
    for (let e = 0; e < mat.data.length; e++) {
      if (!Number.isFinite(mat.data[e])) throw new Error(`${name}[${Math.floor(e / mat.cols)}][${e % mat.cols}] = ${mat.data[e]}: qbNorm needs finite scores`);
    }
  }
  const G = m.cols;
  const active = new Uint8Array(G);
  const top = new Int32Array(k);
  for (let b = 0; b < bank.rows; b++) {
    const off = b * G;
    // Insertion into a k-slot list sorted by (score desc, index asc); O(G·k), fine for small k.
    let filled = 0;
    for (let g = 0; g < G; g++) {
      const s = bank.data[off + g];
      if (filled === k && s <= bank.data[off + top[k - 1]]) continue;
      let p = filled < k ? filled++ : k - 1;
      while (p > 0 && s > bank.data[off + top[p - 1]]) { top[p] = top[p - 1]; p--; }
      top[p] = g;
    }
    for (let t = 0; t < k; t++) active[top[t]] = 1;
  }
  const logZ = new Float64Array(G);
  for (let g = 0; g < G; g++) {
    let max = -Infinity;
    for (let b = 0; b < bank.rows; b++) max = Math.max(max, bank.data[b * G + g]);
    let z = 0;
    for (let b = 0; b < bank.rows; b++) z += Math.exp(beta * (bank.data[b * G + g] - max));
    logZ[g] = beta * max + Math.log(z);
  }
  const out = Float64Array.from(m.data);
  for (let q = 0; q < m.rows; q++) {
    const off = q * G;
    let arg = 0;
    for (let g = 1; g < G; g++) if (m.data[off + g] > m.data[off + arg]) arg = g;
    if (!active[arg]) continue;
    for (let g = 0; g < G; g++) out[off + g] = Math.exp(beta * m.data[off + g] - logZ[g]);
  }
  return likeInput(sim, out, m.rows, G);
}

export interface BlockedOptions {
  /** Caption rows per similarity block; a block holds blockRows × N floats. */
  blockRows?: number;
  queryToVideo?: Int32Array | number[];
  /**
   * How far, relative to d·Σ|aₖbₖ|, the backend's matMul may stray from the exact dot product
   * (default 4·2⁻²⁴, four times float32's bound). Only a speed setting: videos whose scores stray
   * further are ranked again exactly.
   */
  matMulRelativeError?: number;
}

function checkEmbeddings(x: Float32Array, d: number, name: string): number {
  if (!(x instanceof Float32Array)) throw new Error(`${name}: expected a Float32Array of n × d values`);
  if (x.length === 0 || x.length % d !== 0) throw new Error(`${name}: length ${x.length} is not a positive multiple of d = ${d}`);
  for (let k = 0; k < x.length; k++) {
    if (!Number.isFinite(x[k])) throw new Error(`${name}[${Math.floor(k / d)}][${k % d}] = ${x[k]}: embeddings must be finite`);
  }
  return x.length / d;
}

/** 1-based ranks of every caption (t2v) and every video (v2t). */
export interface BothRanks { t2v: Int32Array; v2t: Int32Array }

/**
 * The retrieval scorer: t2v and v2t ranks from embeddings, without the N×N matrix.
 * Similarities (dot products; pass L2-normalised embeddings for cosines) are computed by one
 * tf.matMul per block of `blockRows` captions against all videos, and each block serves both
 * directions before it is disposed. t2v ranks are row-local. A video's v2t rank needs its best
 * own caption's score as a threshold before its column is counted, and that score may lie in a
 * later block; so the threshold is first bounded in float64 (the float32 product differs from the
 * exact dot product by at most d·2⁻²⁴·Σ|aₖbₖ|, taken 4× here): scores clearly above or below the
 * band are counted or dropped at once, the few inside it are kept and settled against the block's
 * own score once every caption has been seen. A backend whose matMul is less precise than float32
 * (TF32 on recent NVIDIA GPUs) can put a best score outside its band; those videos alone are
 * ranked again from a video × caption pass. Peak memory is about blockRows × N floats twice (the
 * block on the backend and its copy read back) plus both embedding tables. Ranks follow
 * {@link retrievalRanks} and {@link retrievalRanksV2T} exactly on the float32 scores of the
 * text × video product.
 * @example
 * const { t2v, v2t } = await retrievalRanksBlocked(textEmb, videoEmb, 256, { blockRows: 1024 });
 */
export async function retrievalRanksBlocked(
  textEmb: Float32Array, videoEmb: Float32Array, d: number, opts: BlockedOptions = {},
): Promise<BothRanks> {
  if (!Number.isInteger(d) || d < 1) throw new Error(`d: expected a positive integer embedding width, got ${d}`);
  const blockRows = opts.blockRows ?? 1024;
  if (!Number.isInteger(blockRows) || blockRows < 1) throw new Error(`blockRows: expected a positive integer, got ${blockRows}`);
  const nq = checkEmbeddings(textEmb, d, 'textEmb');
  const nv = checkEmbeddings(videoEmb, d, 'videoEmb');
  const q2v = resolveQueryToVideo(opts.queryToVideo, nq, nv, 'textEmb × videoEmb');
  const caps = captionsPerVideo(q2v, nv);
  const rel = opts.matMulRelativeError ?? 4 * 2 ** -24;
  if (!(rel >= 0) || !Number.isFinite(rel)) throw new Error(`matMulRelativeError: expected a finite number ≥ 0, got ${rel}`);

  // best_j = max over j's captions c of the float32 score S_c, and |S_c − e_c| ≤ err_c around
  // the float64 dot product e_c, so best_j lies in [max_c (e_c − err_c), max_c (e_c + err_c)].
  const loBest = new Float64Array(nv).fill(-Infinity);
  const hi = new Float64Array(nv).fill(-Infinity);
  const u = rel * d;
  for (let i = 0; i < nq; i++) {
    const j = q2v[i];
    let dot = 0;
    let abs = 0;
    for (let k = 0; k < d; k++) {
      const p = textEmb[i * d + k] * videoEmb[j * d + k];
      dot += p;
      abs += Math.abs(p);
    }
    const err = u * abs + Number.MIN_VALUE;
    loBest[j] = Math.max(loBest[j], dot - err);
    hi[j] = Math.max(hi[j], dot + err);
  }

  const t2v = new Int32Array(nq);
  const above = new Int32Array(nv);
  const ownScore = new Float32Array(nq);
  let bandCol = new Int32Array(1024);
  let bandVal = new Float32Array(1024);
  let nBand = 0;
  const keep = (j: number, v: number) => {
    if (nBand === bandCol.length) {
      const c = new Int32Array(2 * nBand); c.set(bandCol); bandCol = c;
      const w = new Float32Array(2 * nBand); w.set(bandVal); bandVal = w;
    }
    bandCol[nBand] = j;
    bandVal[nBand++] = v;
  };
  // Captions of other videos in [from, to) of row `off`: counted above the band, kept inside it.
  const scan = (block: Float32Array, off: number, from: number, to: number) => {
    for (let j = from; j < to; j++) {
      const v = block[off + j];
      if (v > hi[j]) above[j]++;
      else if (v >= loBest[j]) keep(j, v);
    }
  };
  await forEachSimilarityBlock(textEmb, videoEmb, nq, nv, d, blockRows, (block, r0, r1) => {
    for (let r = r0; r < r1; r++) {
      const off = (r - r0) * nv;
      const own = q2v[r];
      t2v[r] = rowRank(block, off, nv, own);
      ownScore[r] = block[off + own];
      scan(block, off, 0, own);
      scan(block, off, own + 1, nv);
    }
  });

  const best = new Float64Array(nv).fill(-Infinity);
  for (let i = 0; i < nq; i++) best[q2v[i]] = Math.max(best[q2v[i]], ownScore[i]);
  const v2t = new Int32Array(nv);
  const outside: number[] = [];
  for (let j = 0; j < nv; j++) {
    if (best[j] > hi[j] || best[j] < loBest[j]) outside.push(j);
    v2t[j] = 1 + above[j];
  }
  for (let b = 0; b < nBand; b++) if (bandVal[b] >= best[bandCol[b]]) v2t[bandCol[b]]++;
  if (outside.length) await rankVideosAgain(outside, textEmb, videoEmb, nq, d, blockRows, caps, v2t);
  return { t2v, v2t };
}

/** v2t ranks of the listed videos from their own video × caption rows (every caption's score read from one product). */
async function rankVideosAgain(
  videos: number[], textEmb: Float32Array, videoEmb: Float32Array, nq: number, d: number, blockRows: number,
  caps: { start: Int32Array; idx: Int32Array }, v2t: Int32Array,
): Promise<void> {
  const sub = new Float32Array(videos.length * d);
  videos.forEach((j, r) => sub.set(videoEmb.subarray(j * d, (j + 1) * d), r * d));
  await forEachSimilarityBlock(sub, textEmb, videos.length, nq, d, blockRows, (block, r0, r1) => {
    for (let r = r0; r < r1; r++) {
      const j = videos[r];
      const off = (r - r0) * nq;
      let best = -Infinity;
      for (let c = caps.start[j]; c < caps.start[j + 1]; c++) best = Math.max(best, block[off + caps.idx[c]]);
      let ge = 0;
      for (let i = 0; i < nq; i++) if (block[off + i] >= best) ge++;
      let ownAtBest = 0;
      for (let c = caps.start[j]; c < caps.start[j + 1]; c++) if (block[off + caps.idx[c]] === best) ownAtBest++;
      v2t[j] = 1 + ge - ownAtBest;
    }
  });
}

/**
 * t2v and v2t metrics of {@link retrievalRanksBlocked}'s ranks.
 * @example
 * const { t2v, v2t } = await retrievalMetricsBlocked(textEmb, videoEmb, 256, { blockRows: 1024 });
 */
export async function retrievalMetricsBlocked(
  textEmb: Float32Array, videoEmb: Float32Array, d: number, opts: BlockedOptions = {},
): Promise<BothDirections> {
  const ranks = await retrievalRanksBlocked(textEmb, videoEmb, d, opts);
  return { t2v: metricsFromRanks(ranks.t2v), v2t: metricsFromRanks(ranks.v2t) };
}

/**
 * Calls `visit` with row blocks of A·Bᵀ (A: [na, d], B: [nb, d]), one at a time, each read
 * asynchronously and disposed before the next.
 */
export async function forEachSimilarityBlock(
  a: Float32Array, b: Float32Array, na: number, nb: number, d: number, blockRows: number,
  visit: (block: Float32Array, r0: number, r1: number) => void,
): Promise<void> {
  // Bᵀ is materialised once: the wasm matMul with transposeB = true measured ~25× slower
  // (0.9 vs 21 GFLOP/s for 1024×256 by 256×10000) than on a pre-transposed operand.
  const bT = tf.tidy(() => tf.transpose(tf.tensor2d(b, [nb, d])));
  try {
    for (let r0 = 0; r0 < na; r0 += blockRows) {
      const r1 = Math.min(na, r0 + blockRows);
      const block = tf.tidy(() => tf.matMul(tf.tensor2d(a.subarray(r0 * d, r1 * d), [r1 - r0, d]), bT));
      let values: Float32Array;
      try {
        values = (await block.data()) as Float32Array;
      } finally {
        block.dispose();
      }
      visit(values, r0, r1);
    }
  } finally {
    bT.dispose();
  }
}
