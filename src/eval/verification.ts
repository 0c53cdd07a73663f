/**
 * Verification metrics for pair scores (face, speaker): k-fold accuracy with the threshold
 * chosen on the other folds (the LFW protocol as in InsightFace), ROC, AUC, EER, normalised
 * minDCF (NIST SRE, C_miss = C_fa = 1) and TAR at fixed FAR.
 *
 * A pair is accepted when score ≥ τ. Labels are 1 for a genuine (same identity) pair and 0
 * for an impostor pair. All rates and accuracies are fractions in [0, 1].
 */

export interface RocCurve {
  /** Both rates at each threshold, from τ = +∞ (accept nothing: 0, 0) down to the smallest score (1, 1). */
  fpr: Float64Array;
  tpr: Float64Array;
  /** +∞ first, then the distinct scores in decreasing order. */
  thresholds: Float64Array;
}

export interface VerificationOptions {
  /** FAR targets for TAR@FAR; default 1e-1, 1e-2, …, 1e-6. */
  farTargets?: number[];
  /** Prior of a target (genuine) trial in the DCF; default 0.01. */
  pTarget?: number;
  /** Number of contiguous folds for the accuracy; default 10. */
  folds?: number;
}

export interface VerificationMetrics {
  /** Accuracy over the test folds: mean and population standard deviation. */
  accuracy: { mean: number; std: number };
  eer: number;
  minDCF: number;
  /** TAR at each FAR target, keyed by `target.toExponential()` ("1e-1", "1e-6", "5e-3"). */
  tarAtFar: Record<string, number>;
  auc: number;
}

const DEFAULT_FAR_TARGETS = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6];

function checkPairs(scores: ArrayLike<number>, labels: ArrayLike<number>): { s: Float64Array; y: Uint8Array; pos: number } {
  if (scores == null || typeof scores.length !== 'number') throw new Error('scores: expected an array of numbers');
  if (labels == null || typeof labels.length !== 'number') throw new Error('labels: expected an array of 0/1 values');
  if (scores.length !== labels.length) {
    throw new Error(`labels: length ${labels.length} ≠ scores length ${scores.length}; there must be one label per score`);
  }
  const n = scores.length;
  const s = new Float64Array(n);
  const y = new Uint8Array(n);
  let pos = 0;
  for (let i = 0; i < n; i++) {
    const v = scores[i];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`scores[${i}] = ${String(v)}: expected a finite number`);
    s[i] = v;
    const l = labels[i];
    if (l !== 0 && l !== 1) throw new Error(`labels[${i}] = ${String(l)}: expected 0 (impostor) or 1 (genuine)`);
    y[i] = l;
    pos += l;
  }
  if (pos === 0 || pos === n) {
    throw new Error(`labels: need at least one genuine (1) and one impostor (0) pair, got ${pos} genuine of ${n}`);
  }
  return { s, y, pos };
}

/** Indices sorted by score, descending. */
function orderDesc(s: Float64Array): Uint32Array {
  const idx = new Uint32Array(s.length);
  for (let i = 0; i < idx.length; i++) idx[i] = i;
  return idx.sort((a, b) => s[b] - s[a]);
}

function roc(s: Float64Array, y: Uint8Array, pos: number): RocCurve {
  const n = s.length;
  const neg = n - pos;
  const order = orderDesc(s);
  const fpr = [0];
  const tpr = [0];
  const thresholds = [Infinity];
  let tp = 0;
  let fp = 0;
  for (let k = 0; k < n;) {
    const t = s[order[k]];
    // A group of tied scores enters together: accepting τ = t accepts all of them.
    while (k < n && s[order[k]] === t) {
      if (y[order[k]]) tp++; else fp++;
      k++;
    }
    fpr.push(fp / neg);
    tpr.push(tp / pos);
    thresholds.push(t);
  }
  return { fpr: Float64Array.from(fpr), tpr: Float64Array.from(tpr), thresholds: Float64Array.from(thresholds) };
}

/**
 * ROC curve with one point per distinct score (ties enter together) plus the τ = +∞ origin.
 * @example rocCurve([0.9, 0.4, 0.4], [1, 1, 0]) // fpr [0, 0, 1], tpr [0, 0.5, 1], thresholds [∞, 0.9, 0.4]
 */
export function rocCurve(scores: ArrayLike<number>, labels: ArrayLike<number>): RocCurve {
  const { s, y, pos } = checkPairs(scores, labels);
  return roc(s, y, pos);
}

/**
 * Area under the ROC by the trapezoid rule; with tied scores this equals
 * P(genuine > impostor) + ½·P(genuine = impostor).
 */
function aucOf(c: RocCurve): number {
  let area = 0;
  for (let k = 1; k < c.fpr.length; k++) area += ((c.fpr[k] - c.fpr[k - 1]) * (c.tpr[k] + c.tpr[k - 1])) / 2;
  return area;
}

/**
 * EER over the ROC thresholds: (FPR + FNR)/2 at the threshold where |FPR − FNR| is smallest.
 * FPR − FNR never decreases as τ falls, so the minimum sits at the crossing; when the points
 * either side of it are equally far, their two values are averaged (the linear interpolation
 * at the crossing).
 */
function eerOf(c: RocCurve): number {
  let bestGap = Infinity;
  let sum = 0;
  let count = 0;
  for (let k = 0; k < c.fpr.length; k++) {
    const fnr = 1 - c.tpr[k];
    const gap = Math.abs(c.fpr[k] - fnr);
    const value = (c.fpr[k] + fnr) / 2;
    // Rates are ratios of integers; compare gaps with a tolerance far below 1/n.
    if (gap < bestGap - 1e-12) { bestGap = gap; sum = value; count = 1; } else if (Math.abs(gap - bestGap) <= 1e-12) { sum += value; count++; }
  }
  return sum / count;
}

/** min over τ of (P_miss·p + P_fa·(1 − p)) / min(p, 1 − p), τ over the ROC thresholds (including accept-none). */
function minDcfOf(c: RocCurve, p: number): number {
  let best = Infinity;
  for (let k = 0; k < c.fpr.length; k++) {
    best = Math.min(best, ((1 - c.tpr[k]) * p + c.fpr[k] * (1 - p)) / Math.min(p, 1 - p));
  }
  return best;
}

/** Largest TPR over ROC points with FPR ≤ target (0 when only τ = +∞ qualifies). */
function tarAt(c: RocCurve, target: number): number {
  let best = 0;
  for (let k = 0; k < c.fpr.length; k++) if (c.fpr[k] <= target) best = Math.max(best, c.tpr[k]);
  return best;
}

/**
 * Threshold with the best accuracy on (s, y): candidates are −∞ (accept all), the midpoints
 * between consecutive distinct scores, and +∞ (reject all). Ties go to the LARGEST τ (the
 * strictest), as InsightFace's first-argmax over ascending distance thresholds does.
 */
function bestThreshold(s: Float64Array, y: Uint8Array): number {
  const n = s.length;
  const order = orderDesc(s);
  let negTotal = 0;
  for (let i = 0; i < n; i++) negTotal += 1 - y[i];
  // Walk τ downwards from +∞: correct = accepted genuine + rejected impostors.
  let correct = negTotal;
  let bestCorrect = correct;
  let bestTau = Infinity;
  for (let k = 0; k < n;) {
    const t = s[order[k]];
    while (k < n && s[order[k]] === t) {
      correct += y[order[k]] ? 1 : -1;
      k++;
    }
    const tau = k < n ? (t + s[order[k]]) / 2 : -Infinity;
    if (correct > bestCorrect) { bestCorrect = correct; bestTau = tau; }
  }
  return bestTau;
}

/**
 * Accuracy over `folds` contiguous folds (the first n mod folds folds hold one extra pair);
 * each fold is scored with the threshold chosen on the others by {@link bestThreshold}.
 */
function foldAccuracy(s: Float64Array, y: Uint8Array, folds: number): { mean: number; std: number } {
  const n = s.length;
  const accs: number[] = [];
  let start = 0;
  for (let f = 0; f < folds; f++) {
    const size = Math.floor(n / folds) + (f < n % folds ? 1 : 0);
    const end = start + size;
    const trainS = new Float64Array(n - size);
    const trainY = new Uint8Array(n - size);
    trainS.set(s.subarray(0, start)); trainS.set(s.subarray(end), start);
    trainY.set(y.subarray(0, start)); trainY.set(y.subarray(end), start);
    const tau = bestThreshold(trainS, trainY);
    let correct = 0;
    for (let i = start; i < end; i++) if ((s[i] >= tau ? 1 : 0) === y[i]) correct++;
    accs.push(correct / size);
    start = end;
  }
  const mean = accs.reduce((a, b) => a + b, 0) / folds;
  const std = Math.sqrt(accs.reduce((a, b) => a + (b - mean) ** 2, 0) / folds);
  return { mean, std };
}

/**
 * All verification metrics for pair scores and 0/1 labels.
 * @example
 * const m = verificationMetrics(cosines, sameIdentity, { folds: 10 });
 * m.accuracy.mean; m.eer; m.minDCF; m.tarAtFar['1e-3']; m.auc;
 */
export function verificationMetrics(
  scores: ArrayLike<number>, labels: ArrayLike<number>, opts: VerificationOptions = {},
): VerificationMetrics {
  const { s, y, pos } = checkPairs(scores, labels);
  const farTargets = opts.farTargets ?? DEFAULT_FAR_TARGETS;
  const pTarget = opts.pTarget ?? 0.01;
  const folds = opts.folds ?? 10;
  if (!Array.isArray(farTargets) || farTargets.length === 0) throw new Error('farTargets: expected a non-empty array of rates in (0, 1]');
  for (const t of farTargets) {
    if (typeof t !== 'number' || !(t > 0 && t <= 1)) throw new Error(`farTargets: ${String(t)} is not a rate in (0, 1]`);
  }
  if (typeof pTarget !== 'number' || !(pTarget > 0 && pTarget < 1)) throw new Error(`pTarget: expected a prior in (0, 1), got ${String(pTarget)}`);
  if (!Number.isInteger(folds) || folds < 2 || folds > s.length) {
    throw new Error(`folds: expected an integer in [2, ${s.length}] (the number of pairs), got ${String(folds)}`);
  }
  const c = roc(s, y, pos);
  const tarAtFar: Record<string, number> = {};
  for (const t of farTargets) tarAtFar[t.toExponential()] = tarAt(c, t);
  return {
    accuracy: foldAccuracy(s, y, folds),
    eer: eerOf(c),
    minDCF: minDcfOf(c, pTarget),
    tarAtFar,
    auc: aucOf(c),
  };
}
