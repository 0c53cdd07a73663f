/**
 * Learning-rate schedules: functions from the number of optimizer steps already taken to
 * the learning rate of the next one.
 */

/** Maps a 0-based step index to a learning rate. */
export type LrSchedule = (step: number) => number;

export interface CosineWithWarmupOptions {
  /** Peak learning rate, reached at the end of warmup. */
  baseLr: number;
  /** Steps of linear warmup (0 for none). */
  warmupSteps: number;
  /** Length of the whole run in steps, warmup included. */
  totalSteps: number;
  /** Floor of the cosine, reached at `totalSteps` and kept after it. Default 0. */
  minLr?: number;
}

/**
 * Linear warmup then half-cosine decay (SGDR without restarts, Loshchilov & Hutter 2017; the
 * CLIP/OpenCLIP schedule plus an optional floor).
 *
 * step < W: lr = baseLr·(step+1)/W, so the first step already moves (lr = baseLr/W) and step
 * W−1 reaches baseLr. W ≤ step ≤ T: lr = minLr + ½(baseLr − minLr)(1 + cos(π(step−W)/(T−W))).
 * step > T: minLr.
 *
 * @example
 * const lr = cosineWithWarmup({ baseLr: 1e-3, warmupSteps: 10, totalSteps: 110 });
 * lr(0);   // 1e-4
 * lr(60);  // 5e-4
 * lr(110); // 0
 */
export function cosineWithWarmup(opts: CosineWithWarmupOptions): LrSchedule {
  if (opts === null || typeof opts !== 'object') throw new Error('cosineWithWarmup: options { baseLr, warmupSteps, totalSteps, minLr? } are required');
  const { baseLr, warmupSteps, totalSteps, minLr = 0 } = opts;
  if (!Number.isFinite(baseLr) || baseLr < 0) throw new Error(`cosineWithWarmup: 'baseLr' must be a finite number ≥ 0, got ${baseLr}`);
  if (!Number.isInteger(totalSteps) || totalSteps < 1) throw new Error(`cosineWithWarmup: 'totalSteps' must be an integer ≥ 1, got ${totalSteps}`);
  if (!Number.isInteger(warmupSteps) || warmupSteps < 0 || warmupSteps > totalSteps) {
    throw new Error(`cosineWithWarmup: 'warmupSteps' must be an integer in [0, totalSteps=${totalSteps}], got ${warmupSteps}`);
  }
  if (!Number.isFinite(minLr) || minLr < 0 || minLr > baseLr) throw new Error(`cosineWithWarmup: 'minLr' must be in [0, baseLr=${baseLr}], got ${minLr}`);
  const decaySteps = totalSteps - warmupSteps;
  return (step: number) => {
    if (!Number.isInteger(step) || step < 0) throw new Error(`cosineWithWarmup: 'step' must be an integer ≥ 0, got ${step}`);
    if (step < warmupSteps) return baseLr * (step + 1) / warmupSteps;
    if (step >= totalSteps) return minLr;
    const progress = (step - warmupSteps) / decaySteps;
    return minLr + 0.5 * (baseLr - minLr) * (1 + Math.cos(Math.PI * progress));
  };
}
