/**
 * Small-sample statistics for comparing training runs over seeds: mean ± sample std, a 95 %
 * Student-t interval of a mean, and paired per-seed differences with that interval and an
 * exact two-sided sign test. No distribution fitting beyond the t table: with 3–10 seeds the
 * sign test is the assumption-free check, the t interval the one that uses the sizes.
 */

/** t quantile at 0.975 for 1–30 degrees of freedom (standard table); beyond 30, the normal's 1.96 is within 4 %. */
const T975 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
  2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
  2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/** The 0.975 quantile of Student's t with `df` degrees of freedom (df ≥ 1; 1.96 above 30). */
export function tQuantile975(df: number): number {
  if (!Number.isInteger(df) || df < 1) throw new Error(`tQuantile975: 'df' must be an integer ≥ 1, got ${df}`);
  return df <= T975.length ? T975[df - 1] : 1.96;
}

export interface MeanSummary {
  n: number;
  mean: number;
  /** Sample standard deviation (n − 1); 0 for one value. */
  std: number;
  /** 95 % t interval of the mean; [mean, mean] for one value. */
  ci95: [number, number];
}

function checkValues(xs: unknown, fn: string, what: string): asserts xs is number[] {
  if (!Array.isArray(xs) || xs.length === 0 || !xs.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new Error(`${fn}: '${what}' must be a non-empty array of finite numbers`);
  }
}

/**
 * Mean, sample std and the 95 % t interval of the mean.
 *
 * @example summarize([1, 2, 3]) // { n: 3, mean: 2, std: 1, ci95: [2 − 4.303/√3, 2 + 4.303/√3] }
 */
export function summarize(xs: number[]): MeanSummary {
  checkValues(xs, 'summarize', 'xs');
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const std = n < 2 ? 0 : Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
  const half = n < 2 ? 0 : tQuantile975(n - 1) * std / Math.sqrt(n);
  return { n, mean, std, ci95: [mean - half, mean + half] };
}

function binomialTail(n: number, k: number): number {
  // P(X ≤ k) for X ~ Binomial(n, ½).
  let c = 1;
  let sum = 0;
  for (let i = 0; i <= k; i++) {
    sum += c;
    c = c * (n - i) / (i + 1);
  }
  return sum / 2 ** n;
}

/**
 * Exact two-sided sign test of `wins` positive against `losses` negative differences (ties
 * dropped): 2·P(X ≤ min) under Binomial(wins + losses, ½), capped at 1; 1 when nothing is left.
 *
 * @example signTest(5, 0) // 0.0625: five of five seeds cannot reach p < 0.05
 */
export function signTest(wins: number, losses: number): number {
  if (!Number.isInteger(wins) || !Number.isInteger(losses) || wins < 0 || losses < 0) {
    throw new Error(`signTest: 'wins' and 'losses' must be integers ≥ 0, got ${wins}, ${losses}`);
  }
  const n = wins + losses;
  if (n === 0) return 1;
  return Math.min(1, 2 * binomialTail(n, Math.min(wins, losses)));
}

export interface PairedDifference extends MeanSummary {
  /** Pairs where a − b is positive, negative, zero. */
  wins: number;
  losses: number;
  ties: number;
  /** Exact two-sided sign test p-value. */
  signP: number;
}

/**
 * a − b paired by index (e.g. by seed): mean ± std of the differences, their 95 % t interval
 * and the sign test. A difference is "real" at 95 % when the interval excludes 0.
 *
 * @example pairedDifference([5, 6, 7], [4, 4, 4]) // mean 2, wins 3, signP 0.25
 */
export function pairedDifference(a: number[], b: number[]): PairedDifference {
  checkValues(a, 'pairedDifference', 'a');
  checkValues(b, 'pairedDifference', 'b');
  if (a.length !== b.length) throw new Error(`pairedDifference: 'a' has ${a.length} values and 'b' ${b.length}; pair them by seed`);
  const d = a.map((x, i) => x - b[i]);
  const wins = d.filter((x) => x > 0).length;
  const losses = d.filter((x) => x < 0).length;
  return { ...summarize(d), wins, losses, ties: d.length - wins - losses, signP: signTest(wins, losses) };
}
