/**
 * Is the learned weighting doing its job? AUROC of the weight as a score for being clean, mean
 * weights of clean and noisy samples, and the loss → weight curve of a weight net (plot data).
 */
import type { WeightNet } from './weightNet.js';

function checkNumbers(xs: unknown, fn: string, arg: string): asserts xs is ArrayLike<number> {
  if (xs === null || typeof xs !== 'object' || typeof (xs as ArrayLike<number>).length !== 'number') {
    throw new Error(`${fn}: '${arg}' must be an array of numbers`);
  }
  const a = xs as ArrayLike<number>;
  for (let i = 0; i < a.length; i++) {
    if (typeof a[i] !== 'number' || Number.isNaN(a[i])) throw new Error(`${fn}: '${arg}'[${i}] is ${String(a[i])}, expected a number`);
  }
}

function checkFlags(flags: unknown, n: number, fn: string, arg: string): asserts flags is ArrayLike<boolean> {
  if (flags === null || typeof flags !== 'object' || (flags as ArrayLike<boolean>).length !== n) {
    throw new Error(`${fn}: '${arg}' must be an array of ${n} booleans (one per score)`);
  }
}

/**
 * Area under the ROC curve of `scores` for telling `positives` from the rest, as the
 * Mann–Whitney statistic U/(n₊n₋): the chance that a random positive scores above a random
 * negative, ties counting ½. NaN when either class is empty.
 *
 * @example auroc([0.9, 0.5, 0.5, 0.1], [true, true, false, false]) // (1 + 1 + 0.5 + 1)/4 = 0.875
 */
export function auroc(scores: ArrayLike<number>, positives: ArrayLike<boolean>): number {
  checkNumbers(scores, 'auroc', 'scores');
  checkFlags(positives, scores.length, 'auroc', 'positives');
  const idx = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[a] - scores[b]);
  // Sum of the positives' mid-ranks (1-based), ties sharing the mean rank of their run.
  let rankSumPos = 0;
  let nPos = 0;
  for (let i = 0; i < idx.length;) {
    let j = i;
    while (j + 1 < idx.length && scores[idx[j + 1]] === scores[idx[i]]) j++;
    const midRank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) if (positives[idx[k]]) { rankSumPos += midRank; nPos++; }
    i = j + 1;
  }
  const nNeg = scores.length - nPos;
  if (nPos === 0 || nNeg === 0) return NaN;
  return (rankSumPos - nPos * (nPos + 1) / 2) / (nPos * nNeg);
}

export interface WeightingReport {
  /** AUROC of the weight as a score for being clean (1: every clean sample outweighs every noisy one). */
  aurocCleanVsNoisy: number;
  meanWeightClean: number;
  meanWeightNoisy: number;
  clean: number;
  noisy: number;
  /**
   * With noise kinds given: for each kind, the AUROC of clean pairs against the noisy pairs of
   * that kind alone, their mean weight and count.
   */
  byNoiseKind?: Record<string, { aurocCleanVsKind: number; meanWeight: number; count: number }>;
}

/**
 * How well per-sample weights separate clean from noisy samples; with `noiseKinds` (one label per
 * sample, read only for noisy ones; unlabelled noisy samples count as `unknown`) also per kind.
 *
 * @example weightingReport([0.9, 0.8, 0.1], [false, false, true]) // { aurocCleanVsNoisy: 1, meanWeightClean: 0.85, … }
 */
export function weightingReport(weights: ArrayLike<number>, noisyFlags: ArrayLike<boolean>, noiseKinds?: ArrayLike<string | undefined>): WeightingReport {
  checkNumbers(weights, 'weightingReport', 'weights');
  checkFlags(noisyFlags, weights.length, 'weightingReport', 'noisyFlags');
  if (noiseKinds !== undefined && (noiseKinds === null || typeof noiseKinds !== 'object' || noiseKinds.length !== weights.length)) {
    throw new Error(`weightingReport: 'noiseKinds' must be an array of ${weights.length} labels (one per weight)`);
  }
  const clean: boolean[] = [];
  let sumClean = 0;
  let sumNoisy = 0;
  let nClean = 0;
  for (let i = 0; i < weights.length; i++) {
    const isClean = !noisyFlags[i];
    clean.push(isClean);
    if (isClean) { sumClean += weights[i]; nClean++; } else sumNoisy += weights[i];
  }
  const nNoisy = weights.length - nClean;
  const report: WeightingReport = {
    aurocCleanVsNoisy: auroc(weights, clean),
    meanWeightClean: nClean ? sumClean / nClean : NaN,
    meanWeightNoisy: nNoisy ? sumNoisy / nNoisy : NaN,
    clean: nClean,
    noisy: nNoisy,
  };
  if (noiseKinds) {
    const kindOf = (i: number) => noiseKinds[i] ?? 'unknown';
    const kinds = [...new Set(Array.from({ length: weights.length }, (_, i) => i).filter((i) => !clean[i]).map(kindOf))].sort();
    report.byNoiseKind = {};
    for (const kind of kinds) {
      const rows = Array.from({ length: weights.length }, (_, i) => i).filter((i) => clean[i] || kindOf(i) === kind);
      const ofKind = rows.filter((i) => !clean[i]);
      report.byNoiseKind[kind] = {
        aurocCleanVsKind: auroc(rows.map((i) => weights[i]), rows.map((i) => clean[i])),
        meanWeight: ofKind.reduce((s, i) => s + weights[i], 0) / ofKind.length,
        count: ofKind.length,
      };
    }
  }
  return report;
}

/**
 * The weight net's raw output V(ℓ) ∈ (0, 1) over a grid of loss values, for the loss → weight
 * plot. `losses` is the grid itself, or { min, max, points } for an even grid.
 *
 * @example await weightCurve(net, { min: 0, max: 8, points: 81 }) // { loss: [0, 0.1, …, 8], weight: [...] }
 */
export async function weightCurve(weightNet: WeightNet, losses: ArrayLike<number> | { min: number; max: number; points: number }): Promise<{ loss: number[]; weight: number[] }> {
  if (!weightNet || typeof weightNet.weightsOf !== 'function') throw new Error('weightCurve: \'weightNet\' must be a WeightNet');
  if (weightNet.inputs.length !== 1 || weightNet.inputs[0] !== 'loss') {
    throw new Error(`weightCurve: the net sees ${weightNet.inputs.join(', ')}, not the loss alone; use weightByInput`);
  }
  let grid: number[];
  if (losses !== null && typeof losses === 'object' && 'points' in losses) {
    const { min, max, points } = losses;
    if (!Number.isFinite(min) || !Number.isFinite(max) || max < min) throw new Error(`weightCurve: need finite min ≤ max, got ${min}, ${max}`);
    if (!Number.isInteger(points) || points < 2) throw new Error(`weightCurve: 'points' must be an integer ≥ 2, got ${points}`);
    grid = Array.from({ length: points }, (_, i) => min + (max - min) * i / (points - 1));
  } else {
    checkNumbers(losses, 'weightCurve', 'losses');
    grid = Array.from(losses);
  }
  return { loss: grid, weight: Array.from(await weightNet.weightsOf(grid)) };
}

/**
 * Each input alone as a score for being clean: the AUROC of its raw values (above ½: larger
 * means cleaner; below: smaller does; ½ for a constant such as `progress` at one step).
 * `rows` holds one row of inputs per sample, columns named by `names`.
 *
 * @example inputAurocs([[0.2, 0.9], [3.1, 0.1]], ['loss', 'cosine'], [false, true]) // { loss: 0, cosine: 1 }
 */
export function inputAurocs(rows: ArrayLike<ArrayLike<number>>, names: readonly string[], noisyFlags: ArrayLike<boolean>): Record<string, number> {
  checkRows(rows, names.length, 'inputAurocs');
  checkFlags(noisyFlags, rows.length, 'inputAurocs', 'noisyFlags');
  const clean = Array.from({ length: rows.length }, (_, i) => !noisyFlags[i]);
  const out: Record<string, number> = {};
  names.forEach((name, d) => { out[name] = auroc(Array.from(rows, (r) => r[d]), clean); });
  return out;
}

function checkRows(rows: unknown, d: number, fn: string): asserts rows is ArrayLike<ArrayLike<number>> {
  if (rows === null || typeof rows !== 'object' || typeof (rows as ArrayLike<unknown>).length !== 'number') throw new Error(`${fn}: 'rows' must be an array of rows of ${d} numbers`);
  const a = rows as ArrayLike<ArrayLike<number>>;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === null || typeof a[i] !== 'object' || a[i].length !== d) throw new Error(`${fn}: rows[${i}] must hold ${d} numbers`);
  }
}

function quantile(sorted: number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/**
 * The learned weight as a function of each input: V along an even grid over that input's
 * observed 2nd–98th percentile, every other input held at its median over `rows` (the samples
 * the net saw). One curve per entry of `weightNet.inputs`.
 *
 * @example await weightByInput(net, rows, { points: 41 }) // { loss: { x: [...], weight: [...] }, rank: { … } }
 */
export async function weightByInput(
  weightNet: WeightNet, rows: ArrayLike<ArrayLike<number>>, opts: { points?: number } = {},
): Promise<Record<string, { x: number[]; weight: number[] }>> {
  if (!weightNet || typeof weightNet.weightsOf !== 'function') throw new Error('weightByInput: \'weightNet\' must be a WeightNet');
  const names = weightNet.inputs;
  checkRows(rows, names.length, 'weightByInput');
  if (rows.length === 0) throw new Error('weightByInput: \'rows\' is empty');
  const points = opts.points ?? 41;
  if (!Number.isInteger(points) || points < 2) throw new Error(`weightByInput: 'points' must be an integer ≥ 2, got ${points}`);
  const cols = names.map((_, d) => Array.from(rows, (r) => r[d]).sort((a, b) => a - b));
  const median = cols.map((c) => quantile(c, 0.5));
  const out: Record<string, { x: number[]; weight: number[] }> = {};
  for (let d = 0; d < names.length; d++) {
    const lo = quantile(cols[d], 0.02);
    const hi = quantile(cols[d], 0.98);
    const x = Array.from({ length: points }, (_, i) => lo + (hi - lo) * i / (points - 1));
    const weight = await weightNet.weightsOf(x.map((v) => median.map((m, k) => (k === d ? v : m))));
    out[names[d]] = { x, weight: Array.from(weight) };
  }
  return out;
}
