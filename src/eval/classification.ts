/**
 * Classification metrics: accuracy, per-class recall (the quantity CAMRI raises for its
 * target class) and the confusion matrix.
 */

export interface ClassificationMetrics {
  /** Fraction of examples whose prediction equals the label. */
  accuracy: number;
  /** recall[c] = confusion[c][c] / Σ_k confusion[c][k]; NaN for a class with no examples. */
  perClassRecall: number[];
  /** confusion[trueClass][predictedClass] = count. */
  confusion: number[][];
}

function checkClasses(x: ArrayLike<number>, name: string, numClasses: number): void {
  if (x == null || typeof x.length !== 'number') throw new Error(`${name}: expected an array of class indices`);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (!Number.isInteger(v) || v < 0 || v >= numClasses) {
      throw new Error(`${name}[${i}] = ${String(v)}: expected an integer class index in [0, ${numClasses})`);
    }
  }
}

/**
 * Metrics from predicted and true class indices (take an argMax of logits first).
 * @example
 * classificationMetrics([0, 1, 1], [0, 1, 0], 2)
 * // { accuracy: 2/3, perClassRecall: [0.5, 1], confusion: [[1, 1], [0, 1]] }
 */
export function classificationMetrics(pred: ArrayLike<number>, labels: ArrayLike<number>, numClasses: number): ClassificationMetrics {
  if (!Number.isInteger(numClasses) || numClasses < 1) throw new Error(`numClasses: expected a positive integer, got ${String(numClasses)}`);
  checkClasses(pred, 'pred', numClasses);
  checkClasses(labels, 'labels', numClasses);
  if (pred.length !== labels.length) throw new Error(`labels: length ${labels.length} ≠ pred length ${pred.length}`);
  if (pred.length === 0) throw new Error('pred: empty; nothing to score');
  const confusion = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  let correct = 0;
  for (let i = 0; i < pred.length; i++) {
    confusion[labels[i]][pred[i]]++;
    if (pred[i] === labels[i]) correct++;
  }
  const perClassRecall = confusion.map((row, c) => {
    const total = row.reduce((a, b) => a + b, 0);
    return total === 0 ? NaN : row[c] / total;
  });
  return { accuracy: correct / pred.length, perClassRecall, confusion };
}
