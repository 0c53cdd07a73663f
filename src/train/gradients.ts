/**
 * Gradient utilities for the trainer: global-norm clipping, a finiteness check, micro-batch
 * accumulation, the logit-scale clamp and a guard that skips non-finite steps.
 *
 * Ownership: functions here never dispose their inputs; every tensor they return is new and
 * the caller's to dispose.
 */
import { tf } from '../backend/tf.js';
import { MAX_LOGIT_SCALE } from '../margin/sam.js';
import type { NamedGradients } from './optimizer.js';

function checkGrads(fn: string, grads: unknown): asserts grads is NamedGradients {
  if (grads === null || typeof grads !== 'object') throw new Error(`${fn}: 'grads' must be a Record<string, tf.Tensor>`);
  for (const [name, g] of Object.entries(grads as Record<string, unknown>)) {
    if (!(g instanceof tf.Tensor)) throw new Error(`${fn}: grads['${name}'] must be a tf.Tensor`);
  }
}

/**
 * WebGPU's default limit is 8 storage buffers per shader stage, and tfjs-backend-webgpu's AddN
 * binds each input as one (plus the output), so an AddN of more than 7 tensors fails there
 * (a validation error, then NaN).
 */
const ADDN_MAX_INPUTS = 7;

/**
 * Σ of same-shape tensors as AddNs of at most ADDN_MAX_INPUTS inputs, each after the first
 * taking the running sum as its first input: the left-to-right float32 order of a single AddN
 * on cpu/wasm, so the sum is unchanged there bit for bit.
 */
function sumOf(xs: tf.Tensor[]): tf.Tensor {
  let acc = tf.addN(xs.slice(0, ADDN_MAX_INPUTS));
  for (let i = ADDN_MAX_INPUTS; i < xs.length; i += ADDN_MAX_INPUTS - 1) acc = tf.addN([acc, ...xs.slice(i, i + ADDN_MAX_INPUTS - 1)]);
  return acc;
}

/**
 * √(Σ over all tensors of Σ g²), as a scalar tensor.
 *
 * @example
 * globalNorm({ a: tf.tensor1d([3, 4]), b: tf.tensor1d([12]) }); // 13
 */
export function globalNorm(grads: NamedGradients): tf.Scalar {
  checkGrads('globalNorm', grads);
  return tf.tidy(() => {
    const squares = Object.values(grads).map((g) => tf.sum(tf.square(tf.cast(g, 'float32'))));
    return tf.sqrt(squares.length === 0 ? tf.scalar(0) : sumOf(squares)) as tf.Scalar;
  });
}

/**
 * Rescales all gradients together so their global L2 norm is at most `maxNorm`
 * (Pascanu et al. 2013). Only when norm > maxNorm are they multiplied by maxNorm/norm;
 * otherwise they come back unchanged (as new handles). A non-finite norm leaves them
 * unscaled: the caller's `NonFiniteGuard` should skip that step. One asynchronous read (the norm).
 *
 * @example
 * const { grads: clipped, norm } = await clipByGlobalNorm(grads, 1.0); // norm: before clipping
 */
export async function clipByGlobalNorm(grads: NamedGradients, maxNorm: number): Promise<{ grads: NamedGradients; norm: number }> {
  checkClipArgs('clipByGlobalNorm', grads, maxNorm);
  const { norm } = await gradNorm(grads);
  return { grads: scaleToNorm(grads, norm, maxNorm), norm };
}

/**
 * The global L2 norm in one asynchronous read, and whether it is finite. One read serves both
 * the finiteness guard and clipping: a NaN or ±∞ anywhere makes Σg² NaN or ∞, and so does a
 * finite gradient whose Σg² overflows float32 (|g| ≳ 1.8e19), which clipping could not rescale
 * either (maxNorm/∞). The norm is `globalNorm`'s, bit for bit.
 *
 * @example
 * const { norm, finite } = await gradNorm(grads);
 * const toApply = finite && clipNorm > 0 ? clipToNorm(grads, norm, clipNorm) : grads;
 */
export async function gradNorm(grads: NamedGradients): Promise<{ norm: number; finite: boolean }> {
  checkGrads('gradNorm', grads);
  if (Object.keys(grads).length === 0) return { norm: 0, finite: true };
  const normT = globalNorm(grads);
  const norm = (await normT.data())[0];
  normT.dispose();
  return { norm, finite: Number.isFinite(norm) };
}

/**
 * The gradients scaled by maxNorm/norm when norm > maxNorm, else unchanged (new handles):
 * `clipByGlobalNorm` for a norm already read (`gradNorm`).
 *
 * @example const clipped = clipToNorm(grads, 5, 1); // every gradient × 0.2
 */
export function clipToNorm(grads: NamedGradients, norm: number, maxNorm: number): NamedGradients {
  checkClipArgs('clipToNorm', grads, maxNorm);
  if (typeof norm !== 'number' || Number.isNaN(norm) || norm < 0) throw new Error(`clipToNorm: 'norm' must be a number ≥ 0, got ${norm}`);
  return scaleToNorm(grads, norm, maxNorm);
}

function checkClipArgs(fn: string, grads: unknown, maxNorm: number): asserts grads is NamedGradients {
  checkGrads(fn, grads);
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) throw new Error(`${fn}: 'maxNorm' must be a finite number > 0, got ${maxNorm}`);
}

function scaleToNorm(grads: NamedGradients, norm: number, maxNorm: number): NamedGradients {
  const scale = Number.isFinite(norm) && norm > maxNorm ? maxNorm / norm : 1;
  const out: NamedGradients = {};
  for (const [name, g] of Object.entries(grads)) out[name] = scale === 1 ? tf.clone(g) : tf.tidy(() => tf.mul(g, scale));
  return out;
}

/**
 * True when every element of every gradient is finite. One asynchronous read: each tensor is
 * reduced to Σ 0·g, which is 0 when all its elements are finite and NaN otherwise
 * (0·±∞ = NaN), and these sums are added before reading.
 *
 * @example
 * await allFinite({ w: tf.tensor1d([1, Infinity]) }); // false
 */
export async function allFinite(grads: NamedGradients): Promise<boolean> {
  checkGrads('allFinite', grads);
  const probe = finiteProbe(grads);
  if (!probe) return true;
  const v = (await probe.data())[0];
  probe.dispose();
  return v === 0;
}

/** Σ over the tensors of Σ 0·g (0 when all finite, NaN otherwise); null for no tensors. */
function finiteProbe(grads: NamedGradients): tf.Tensor | null {
  const values = Object.values(grads);
  if (values.length === 0) return null;
  return tf.tidy(() => sumOf(values.map((g) => tf.sum(tf.mul(tf.cast(g, 'float32'), 0)))));
}

/**
 * Sums gradients over k micro-batches and hands back their weighted mean.
 * With weights = micro-batch sizes and per-micro-batch mean gradients, the result is the
 * gradient of the mean loss over all samples, as long as the loss is a sum over samples.
 * (A contrastive loss is not: its negatives differ between one big batch and k small ones.)
 * Holds its own copies; inputs stay the caller's.
 *
 * @example
 * const acc = new GradAccumulator(4);
 * for (const mb of microBatches) { const g = grad(mb); acc.add(g, mb.size); dispose(g); }
 * const grads = acc.mean(); // ready after 4 adds; caller disposes
 */
export class GradAccumulator {
  readonly k: number;
  private sums: NamedGradients | null = null;
  private count = 0;
  private weightSum = 0;

  constructor(k: number) {
    if (!Number.isInteger(k) || k < 1) throw new Error(`GradAccumulator: 'k' must be an integer ≥ 1, got ${k}`);
    this.k = k;
  }

  /** Micro-batches added since the last `mean()` or `reset()`. */
  get added(): number { return this.count; }

  /** True once k micro-batches have been added. */
  get ready(): boolean { return this.count >= this.k; }

  /** Adds one micro-batch's gradients with weight `weight` (e.g. its size). */
  add(grads: NamedGradients, weight = 1): void {
    checkGrads('GradAccumulator.add', grads);
    if (!(weight > 0) || !Number.isFinite(weight)) throw new Error(`GradAccumulator.add: 'weight' must be a finite number > 0, got ${weight}`);
    if (this.ready) throw new Error(`GradAccumulator.add: already holds k=${this.k} micro-batches; call mean() or reset() first`);
    const names = Object.keys(grads);
    if (this.sums === null) {
      if (names.length === 0) throw new Error(`GradAccumulator.add: 'grads' is empty`);
      const sums: NamedGradients = {};
      // tf.keep: the sums must outlive any tidy scope the caller wraps around add().
      for (const name of names) sums[name] = tf.keep(tf.tidy(() => tf.mul(tf.cast(grads[name], 'float32'), weight)));
      this.sums = sums;
    } else {
      const sums = this.sums;
      const expected = Object.keys(sums);
      const missing = expected.filter((n) => !(n in grads));
      const extra = names.filter((n) => !(n in sums));
      if (missing.length > 0 || extra.length > 0) {
        throw new Error(`GradAccumulator.add: micro-batch ${this.count + 1} has different gradient names than the first (missing: [${missing.join(', ')}], extra: [${extra.join(', ')}])`);
      }
      for (const name of names) {
        if (!tf.util.arraysEqual(grads[name].shape, sums[name].shape)) {
          throw new Error(`GradAccumulator.add: grads['${name}'] has shape [${grads[name].shape}], earlier micro-batches had [${sums[name].shape}]`);
        }
      }
      for (const name of names) {
        const next = tf.keep(tf.tidy(() => tf.add(sums[name], tf.mul(tf.cast(grads[name], 'float32'), weight))));
        sums[name].dispose();
        sums[name] = next;
      }
    }
    this.count += 1;
    this.weightSum += weight;
  }

  /** Σ wᵢgᵢ / Σ wᵢ over the added micro-batches (new tensors), then resets. */
  mean(): NamedGradients {
    if (this.sums === null) throw new Error('GradAccumulator.mean: nothing was added');
    const out: NamedGradients = {};
    for (const [name, s] of Object.entries(this.sums)) out[name] = tf.div(s, this.weightSum);
    this.reset();
    return out;
  }

  /** Drops what was accumulated. */
  reset(): void {
    if (this.sums) for (const s of Object.values(this.sums)) s.dispose();
    this.sums = null;
    this.count = 0;
    this.weightSum = 0;
  }
}

/**
 * Clamps the log logit scale in place to [min, max] (default [0, ln 200], docs/DESIGN.md §5),
 * as CLIP does after each optimizer step.
 *
 * @example
 * opt.step(grads, lr); clampLogitScale(params.logit_scale);
 */
export function clampLogitScale(logitScale: tf.Variable, min = 0, max = MAX_LOGIT_SCALE): void {
  if (!(logitScale instanceof tf.Variable)) throw new Error(`clampLogitScale: 'logitScale' must be a tf.Variable`);
  if (!(min <= max)) throw new Error(`clampLogitScale: need min ≤ max, got min=${min}, max=${max}`);
  tf.tidy(() => logitScale.assign(tf.clipByValue(logitScale, min, max)));
}

/**
 * Skips steps whose loss or gradients are not finite and stops the run after
 * `maxConsecutive` of them in a row, or when more than `maxRate` of the last `window`
 * steps were skipped (a NaN every other step never makes a long run of them, and a run that
 * skips a third of its steps is not training).
 *
 * @example
 * const guard = new NonFiniteGuard({ maxConsecutive: 5, window: 50, maxRate: 0.2 });
 * if (guard.check(lossValue, allFinite(grads), step) === 'ok') opt.step(grads, lr);
 */
export class NonFiniteGuard {
  readonly maxConsecutive: number;
  readonly window: number;
  readonly maxRate: number;
  private consecutiveCount = 0;
  private totalCount = 0;
  private checks = 0;
  /** The verdicts of the last `window` checks (true: skipped), as a ring. */
  private readonly recent: boolean[] = [];
  private recentSkips = 0;

  constructor(opts: { maxConsecutive?: number; window?: number; maxRate?: number } = {}) {
    const { maxConsecutive = 5, window = 50, maxRate = 0.2 } = opts;
    if (!Number.isInteger(maxConsecutive) || maxConsecutive < 1) {
      throw new Error(`NonFiniteGuard: 'maxConsecutive' must be an integer ≥ 1, got ${maxConsecutive}`);
    }
    if (!Number.isInteger(window) || window < 1) throw new Error(`NonFiniteGuard: 'window' must be an integer ≥ 1, got ${window}`);
    if (!(maxRate > 0 && maxRate <= 1)) throw new Error(`NonFiniteGuard: 'maxRate' must be in (0, 1], got ${maxRate}`);
    this.maxConsecutive = maxConsecutive;
    this.window = window;
    this.maxRate = maxRate;
  }

  /** Non-finite steps in the current run of them (0 after an ok step). */
  get consecutive(): number { return this.consecutiveCount; }
  /** Non-finite steps since construction. */
  get total(): number { return this.totalCount; }
  /** Non-finite steps among the last `window` checks. */
  get inWindow(): number { return this.recentSkips; }

  /**
   * 'ok' when `lossValue` is finite and `gradsFinite`, else 'skip'; throws on the
   * maxConsecutive-th skip in a row, and on a skip that makes more than maxRate·window of
   * the last `window` checks skipped. `step` names the trainer's step in the error
   * (default: the number of checks so far, from 0).
   */
  check(lossValue: number, gradsFinite: boolean, step?: number): 'ok' | 'skip' {
    if (typeof lossValue !== 'number') throw new Error(`NonFiniteGuard.check: 'lossValue' must be a number, got ${typeof lossValue}`);
    if (typeof gradsFinite !== 'boolean') throw new Error(`NonFiniteGuard.check: 'gradsFinite' must be a boolean, got ${typeof gradsFinite}`);
    const at = step ?? this.checks;
    this.checks += 1;
    const ok = Number.isFinite(lossValue) && gradsFinite;
    this.recent.push(!ok);
    if (!ok) this.recentSkips += 1;
    if (this.recent.length > this.window && this.recent.shift()) this.recentSkips -= 1;
    if (ok) {
      this.consecutiveCount = 0;
      return 'ok';
    }
    this.consecutiveCount += 1;
    this.totalCount += 1;
    const advice = 'Lower the learning rate, enable gradient clipping, or check the data for NaN/Inf.';
    if (this.consecutiveCount >= this.maxConsecutive) {
      throw new Error(
        `stopped after ${this.consecutiveCount} non-finite steps in a row at step ${at}: loss=${lossValue}, gradients finite=${gradsFinite} `
        + `(${this.totalCount} non-finite in total). ${advice}`,
      );
    }
    if (this.recentSkips > this.maxRate * this.window) {
      throw new Error(
        `stopped at step ${at}: ${this.recentSkips} of the last ${Math.min(this.checks, this.window)} steps had a non-finite loss or gradients `
        + `(more than ${Math.round(this.maxRate * 100)}% of a ${this.window}-step window; ${this.totalCount} in total). ${advice}`,
      );
    }
    return 'skip';
  }
}
