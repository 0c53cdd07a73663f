/**
 * SphereFace-R (Liu et al., "SphereFace Revived", 2022): the multiplicative margin done two
 * new ways — v1 cos(min(mθ_y, π)) on the target, v2 cos(θ_j/m) on every non-target — under
 * no, hard or soft feature normalisation, with characteristic gradient detachment on by
 * default (the paper's implementation). Without hard normalisation the release grows the
 * margin in steps, m = 1 + dm·(milestones passed), which `marginSteps` turns on.
 */
import { tf } from '../backend/tf.js';
import {
  applyMargin, checkNumber, checkVector, reduceLoss, targetCrossEntropy, checkWeights,
  type MarginSpec,
} from './core.js';
import { checkCosineAndLabels } from './core.js';

type T = tf.Tensor;

export type FeatureNormalization = 'none' | 'hard' | 'soft';
export type SphereFaceRVersion = 'v1' | 'v2';

export interface SphereFaceROptions {
  /** Multiplicative margin m > 0 (paper: 1.5 with hard normalisation). */
  m?: number;
  version?: SphereFaceRVersion;
  /** none: logits scale with ‖x‖; hard: with s; soft: with ‖x‖, and the loss pulls ‖x‖ towards s. */
  featureNormalization?: FeatureNormalization;
  /** s (paper: 30). */
  scale?: number;
  /** ‖x‖ per row [B]; needed for 'none' and 'soft'. */
  featureNorm?: T;
  /** Default true (characteristic gradient detachment). */
  detachMargin?: boolean;
}

export interface SphereFaceRLossOptions extends SphereFaceROptions {
  /** Loss weight (paper code: 50 for hard/soft, 1 for none); hard and soft also divide by s. */
  lw?: number;
  /** Weight t of the soft normalisation penalty t·|‖x‖ − s| (paper code: 0.01). */
  t?: number;
  /** Per-sample weights [B]: loss = Σ wᵢℓᵢ. */
  weights?: T;
  /**
   * Milestone iterations of the margin schedule of the none and soft variants: at training
   * step k (0-based) the margin is m = 1 + dm·#{s ∈ marginSteps : s ≤ k} (the release counts
   * iterations from 1 and takes the milestones below the count). Replaces the fixed `m`.
   */
  marginSteps?: number[];
  /** Margin increment per milestone (release: 0.1 for none, 1.5 for soft). */
  dm?: number;
  /** The training step the schedule is evaluated at (default 0). */
  step?: number;
}

/**
 * The scheduled margin at training step k (0-based): 1 + dm·#{milestones ≤ k}.
 *
 * @example sphereFaceRScheduledMargin(2500, 0.1, [1000, 2000, 3000]) // 1.2
 */
export function sphereFaceRScheduledMargin(step: number, dm: number, marginSteps: readonly number[]): number {
  return 1 + dm * marginSteps.filter((s) => s <= step).length;
}

export function sphereFaceRMargin(m: number, version: SphereFaceRVersion): MarginSpec {
  return version === 'v1'
    ? { target: (_cos, theta) => tf.cos(tf.minimum(tf.mul(theta(), m), Math.PI)) }
    : { others: (_cos, theta) => tf.cos(tf.div(theta(), m)) };
}

/** SphereFace-R settings with defaults filled in and checked. */
export interface SphereFaceRSettings {
  m: number; version: SphereFaceRVersion; norm: FeatureNormalization; s: number; detach: boolean; lw: number; t: number;
  /** The margin schedule, when on. */
  schedule?: { dm: number; marginSteps: number[] };
}

/** Fills in the paper's defaults and checks them (the cosine-independent part of the checks). */
export function sphereFaceRSettings(opts: SphereFaceRLossOptions, fn: string): SphereFaceRSettings {
  const { m = 1.5, version = 'v1', featureNormalization: norm = 'hard', scale: s = 30, detachMargin: detach = true } = opts;
  checkNumber(m, fn, 'm', Number.MIN_VALUE);
  checkNumber(s, fn, 'scale', Number.MIN_VALUE);
  if (version !== 'v1' && version !== 'v2') throw new Error(`${fn}: 'version' must be 'v1' or 'v2', got ${String(version)}`);
  if (norm !== 'none' && norm !== 'hard' && norm !== 'soft') {
    throw new Error(`${fn}: 'featureNormalization' must be 'none', 'hard' or 'soft', got ${String(norm)}`);
  }
  const { lw = norm === 'none' ? 1 : 50, t = 0.01 } = opts;
  checkNumber(lw, fn, 'lw', 0);
  checkNumber(t, fn, 't', 0);
  if (opts.marginSteps === undefined) return { m, version, norm, s, detach, lw, t };
  if (norm === 'hard') throw new Error(`${fn}: 'marginSteps' (the margin schedule) belongs to featureNormalization 'none' or 'soft'; hard normalisation uses a fixed 'm'`);
  if (!Array.isArray(opts.marginSteps) || opts.marginSteps.some((x) => !Number.isInteger(x) || x < 0)) {
    throw new Error(`${fn}: 'marginSteps' must be an array of non-negative integer steps, got ${JSON.stringify(opts.marginSteps)}`);
  }
  const dm = opts.dm ?? (norm === 'none' ? 0.1 : 1.5);
  checkNumber(dm, fn, 'dm', 0);
  return { m, version, norm, s, detach, lw, t, schedule: { dm, marginSteps: [...opts.marginSteps] } };
}

function checkInputs(cosine: unknown, labels: unknown, opts: SphereFaceRLossOptions, fn: string): SphereFaceRSettings {
  checkCosineAndLabels(cosine, labels, fn);
  const settings = sphereFaceRSettings(opts, fn);
  if (settings.norm !== 'hard') {
    if (opts.featureNorm === undefined) throw new Error(`${fn}: 'featureNorm' (‖x‖ per row) is required with featureNormalization '${settings.norm}'`);
    checkVector(opts.featureNorm, fn, 'featureNorm', cosine.shape[0]);
  }
  return settings;
}

/** The margin in force at `step`: the schedule's when on, else the fixed m. */
export function sphereFaceRMarginAt(r: SphereFaceRSettings, step = 0): number {
  return r.schedule ? sphereFaceRScheduledMargin(step, r.schedule.dm, r.schedule.marginSteps) : r.m;
}

function logitsAndTarget(cosine: T, labels: T, r: SphereFaceRSettings, featureNorm?: T, step = 0): { logits: T; targetLogit: T } {
  const scale = r.norm === 'hard' ? r.s : (featureNorm as T);
  return applyMargin(cosine, labels, sphereFaceRMargin(sphereFaceRMarginAt(r, step), r.version), { scale, detachMargin: r.detach });
}

/** Per-sample loss on checked inputs (the head calls this after its own checks). */
export function sphereFaceRPerSample(cosine: T, labels: T, r: SphereFaceRSettings, featureNorm?: T, step = 0): T {
  return tf.tidy(() => {
    const { logits, targetLogit } = logitsAndTarget(cosine, labels, r, featureNorm, step);
    const ce = targetCrossEntropy(logits, targetLogit);
    const perSample = tf.mul(ce, r.norm === 'none' ? r.lw : r.lw / r.s);
    return r.norm === 'soft' ? tf.add(perSample, tf.mul(tf.abs(tf.sub(featureNorm as T, r.s)), r.t)) : perSample;
  });
}

/**
 * SphereFace-R logits from cosines [B,C].
 *
 * @example
 * const logits = sphereFaceRLogits(cosine, labels, { m: 1.5, version: 'v1' }); // hard norm, s = 30
 */
export function sphereFaceRLogits(cosine: T, labels: T, opts: SphereFaceROptions & Pick<SphereFaceRLossOptions, 'marginSteps' | 'dm' | 'step'> = {}): T {
  const r = checkInputs(cosine, labels, opts, 'sphereFaceRLogits');
  return tf.tidy(() => logitsAndTarget(cosine, labels, r, opts.featureNorm, opts.step ?? 0).logits);
}

/**
 * SphereFace-R loss: none ℓ = lw·CE; hard ℓ = lw·CE/s; soft ℓ = lw·CE/s + t·|‖x‖ − s|.
 *
 * @example
 * const { loss, perSample } = sphereFaceRLoss(cosine, labels, { featureNormalization: 'hard' });
 */
export function sphereFaceRLoss(cosine: T, labels: T, opts: SphereFaceRLossOptions = {}): { loss: T; perSample: T } {
  const fn = 'sphereFaceRLoss';
  const r = checkInputs(cosine, labels, opts, fn);
  checkWeights(opts.weights, fn, cosine.shape[0]);
  return tf.tidy(() => {
    const perSample = sphereFaceRPerSample(cosine, labels, r, opts.featureNorm, opts.step ?? 0);
    return { loss: reduceLoss(perSample, opts.weights), perSample };
  });
}
