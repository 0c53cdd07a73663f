/**
 * Collapse detection for contrastive training. A subtractive angular margin can be satisfied
 * without learning anything: with every video-text pair at the same angle θ ≈ π/2, each
 * positive still beats its negatives by s·(cos(θ − μ) − cos θ) ≈ s·sin μ, so the loss falls
 * towards zero while retrieval stays at chance (docs/DESIGN.md; test/samCollapse.test.ts works
 * the numbers). The loss alone cannot tell this from success; in-batch retrieval can.
 *
 * The detector watches the loss and, while it is far below chance-level InfoNCE (ln B), asks
 * the caller for in-batch figures every few steps; it reports once when the batch's own
 * pairs are not found (top-1 at chance) or every positive sits at the same angle.
 *
 * @example
 * const det = new CollapseDetector({ batchSize: 32 });
 * if (det.wantsCheck(step, loss)) {
 *   const stats = await inBatchStats(videoEmb, textEmb);
 *   const found = det.observe(step, loss, stats);
 *   if (found) console.warn(`${describeCollapse(found)}; fix: lower the margin`);
 * }
 */
import { tf } from '../backend/tf.js';
import { l2Normalize } from '../backend/safeOps.js';

/** What a batch's own pairs look like; angles in degrees. */
export interface InBatchStats {
  batchSize: number;
  /** Fraction of texts whose nearest video in the batch is their own (row argmax; ties go to the first). */
  t2vTop1: number;
  /** Mean and standard deviation of the positive pairs' angles. */
  posAngleMeanDeg: number;
  posAngleStdDeg: number;
  /** Mean angle of the negative pairs. */
  negAngleMeanDeg: number;
}

/**
 * In-batch retrieval figures of B paired embeddings (row i of `video` and of `text` are a
 * pair). Reads the B×B cosine matrix back (asynchronously: webgpu in Node cannot read
 * synchronously); the inputs are not disposed.
 */
export async function inBatchStats(video: tf.Tensor2D, text: tf.Tensor2D): Promise<InBatchStats> {
  const B = video.shape[0];
  if (B < 2 || text.shape[0] !== B) throw new Error(`inBatchStats: need two [B, d] matrices with B ≥ 2, got [${video.shape}] and [${text.shape}]`);
  const cos = tf.tidy(() => tf.matMul(l2Normalize(text, 1), l2Normalize(video, 1), false, true));
  const c = (await cos.data()) as Float32Array;
  cos.dispose();
  return inBatchStatsFromCosines(c, B);
}

/** The figures of `inBatchStats` from a row-major B×B cosine matrix (text rows, video columns). */
export function inBatchStatsFromCosines(c: ArrayLike<number>, B: number): InBatchStats {
  const deg = (x: number) => (Math.acos(Math.max(-1, Math.min(1, x))) * 180) / Math.PI;
  let hits = 0;
  let posSum = 0;
  let posSq = 0;
  let negSum = 0;
  for (let i = 0; i < B; i++) {
    let best = 0;
    for (let j = 1; j < B; j++) if (c[i * B + j] > c[i * B + best]) best = j;
    if (best === i) hits += 1;
    for (let j = 0; j < B; j++) {
      const a = deg(c[i * B + j]);
      if (i === j) { posSum += a; posSq += a * a; } else negSum += a;
    }
  }
  const posMean = posSum / B;
  return {
    batchSize: B,
    t2vTop1: hits / B,
    posAngleMeanDeg: posMean,
    posAngleStdDeg: Math.sqrt(Math.max(0, posSq / B - posMean * posMean)),
    negAngleMeanDeg: negSum / (B * (B - 1)),
  };
}

export interface CollapseDetectorOptions {
  batchSize: number;
  /** Check when the loss is below this fraction of ln B (default 0.1). */
  lossFraction?: number;
  /** Steps between checks while the loss stays low (default 25). */
  checkEvery?: number;
  /** Positive angles spread less than this (degrees) count as pinned together (default 0.5). */
  pinnedStdDeg?: number;
}

/** A detected collapse: the step, the loss and the batch figures that showed it. */
export interface CollapseFinding {
  step: number;
  loss: number;
  /** Chance-level InfoNCE, ln B. */
  chanceLoss: number;
  stats: InBatchStats;
  reason: 'chance-retrieval' | 'pinned-angles';
}

export class CollapseDetector {
  private readonly batchSize: number;
  private readonly lossFraction: number;
  private readonly checkEvery: number;
  private readonly pinnedStdDeg: number;
  private lastCheck = -Infinity;
  private found: CollapseFinding | null = null;

  constructor(opts: CollapseDetectorOptions) {
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 2) throw new Error(`CollapseDetector: 'batchSize' must be an integer ≥ 2, got ${opts.batchSize}`);
    this.batchSize = opts.batchSize;
    this.lossFraction = opts.lossFraction ?? 0.1;
    this.checkEvery = opts.checkEvery ?? 25;
    this.pinnedStdDeg = opts.pinnedStdDeg ?? 0.5;
    if (!(this.lossFraction > 0 && this.lossFraction < 1)) throw new Error(`CollapseDetector: 'lossFraction' must be in (0, 1), got ${this.lossFraction}`);
    if (!Number.isInteger(this.checkEvery) || this.checkEvery < 1) throw new Error(`CollapseDetector: 'checkEvery' must be an integer ≥ 1, got ${this.checkEvery}`);
  }

  /** The first collapse seen, or null. */
  get finding(): CollapseFinding | null {
    return this.found;
  }

  /** Whether the caller should compute in-batch figures for this step. */
  wantsCheck(step: number, loss: number): boolean {
    if (this.found || !Number.isFinite(loss)) return false;
    if (loss >= this.lossFraction * Math.log(this.batchSize)) return false;
    return step - this.lastCheck >= this.checkEvery;
  }

  /** Judges one step's figures; returns the finding the first time a collapse is seen, else undefined. */
  observe(step: number, loss: number, stats: InBatchStats): CollapseFinding | undefined {
    this.lastCheck = step;
    if (this.found) return undefined;
    const chanceLoss = Math.log(stats.batchSize);
    if (loss >= this.lossFraction * chanceLoss) return undefined;
    // A batch of B pairs at chance finds about one of them; two allows for ties broken in its favour.
    const atChance = stats.t2vTop1 * stats.batchSize <= 2;
    const pinned = stats.posAngleStdDeg < this.pinnedStdDeg && Math.abs(stats.posAngleMeanDeg - stats.negAngleMeanDeg) < 1;
    if (!atChance && !pinned) return undefined;
    this.found = { step, loss, chanceLoss, stats, reason: atChance ? 'chance-retrieval' : 'pinned-angles' };
    return this.found;
  }
}

/** One sentence saying what was seen (the caller adds the fix in its own terms). */
export function describeCollapse(f: CollapseFinding): string {
  const s = f.stats;
  return `training has collapsed at step ${f.step}: the loss is ${f.loss.toPrecision(2)}, far below chance-level InfoNCE `
    + `(ln ${s.batchSize} = ${f.chanceLoss.toFixed(2)}), yet in-batch text→video top-1 is ${(100 * s.t2vTop1).toFixed(1)} % `
    + `(chance ${(100 / s.batchSize).toFixed(1)} %) and positive pairs sit at ${s.posAngleMeanDeg.toFixed(1)}° ± ${s.posAngleStdDeg.toFixed(1)}° `
    + `(negatives ${s.negAngleMeanDeg.toFixed(1)}°): the margin is being met by pushing every pair to the same angle, not by aligning pairs`;
}
