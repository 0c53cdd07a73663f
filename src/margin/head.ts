/**
 * MarginHead: a classification head W [C,d] with one of the margin losses, built by name with
 * the papers' defaults (docs/DESIGN.md §5). The weights live in a tf.Variable; `loss` also takes W
 * (and SphereFace2's b) as plain tensors so that the bilevel step can evaluate the head at
 * θ' = θ − α∇θL.
 */
import { z } from 'zod';
import { tf } from '../backend/tf.js';
import { l2Normalize } from '../backend/safeOps.js';
import {
  applyMargin, checkFinite, checkLabels, checkMatrix, checkTensor, checkWeights, reduceLoss, rowNorm, targetCrossEntropy,
  oneHotFloat, type MarginSpec, type RowScale,
} from './core.js';
import { combinedMargin } from './combined.js';
import { camriRowMargins } from './camri.js';
import { KappaMemory } from './kappaface.js';
import { meanCosineTo, nearestOtherClass } from './regularizer.js';
import { sphereFaceLambda, sphereFaceMargin } from './sphereface.js';
import { sphereFaceRPerSample, sphereFaceRSettings, type SphereFaceRSettings } from './sphereFaceR.js';
import { sphereFace2InitBias, sphereFace2PerSample } from './sphereFace2.js';
import { virtualSoftmaxPerSample } from './virtualSoftmax.js';

type T = tf.Tensor;

export const MARGIN_HEAD_NAMES = [
  'softmax', 'normface', 'arcface', 'cosface', 'am-softmax', 'aam-softmax', 'sphereface', 'sphereface-r',
  'sphereface2', 'kappaface', 'camri', 'virtual-softmax',
] as const;
export type MarginHeadName = (typeof MARGIN_HEAD_NAMES)[number];

const common = {
  numClasses: z.number().int().min(2),
  dim: z.number().int().min(1),
  /** Weight λ of the inter-class regulariser λ·R added to the loss (0 = off). */
  interClassLambda: z.number().min(0).default(0),
  /** Search the regulariser's nearest classes (O(C²d)) every this many loss calls, reusing them between. */
  interClassEvery: z.number().int().min(1).default(1),
  /** Seed of W's Xavier-normal initialisation. */
  seed: z.number().int().optional(),
};
const scale = (s: number) => z.number().positive().default(s);
const angle = (m: number) => z.number().min(0).max(Math.PI).default(m);

/** Head configuration: `name` plus that family's options, defaults from the papers. */
export const marginHeadConfigSchema = z.discriminatedUnion('name', [
  z.object({ name: z.literal('softmax'), ...common }),
  z.object({ name: z.literal('normface'), ...common, scale: scale(64) }),
  z.object({
    name: z.literal('arcface'), ...common, scale: scale(64), m1: z.number().positive().default(1), m2: angle(0.5),
    m3: z.number().default(0), easyMargin: z.boolean().default(false), detachMargin: z.boolean().default(false),
  }),
  z.object({ name: z.literal('cosface'), ...common, scale: scale(64), m3: z.number().default(0.35), detachMargin: z.boolean().default(false) }),
  z.object({ name: z.literal('am-softmax'), ...common, scale: scale(30), m3: z.number().default(0.2), detachMargin: z.boolean().default(false) }),
  z.object({
    name: z.literal('aam-softmax'), ...common, scale: scale(30), m2: angle(0.2), easyMargin: z.boolean().default(false),
    detachMargin: z.boolean().default(false),
  }),
  z.object({
    name: z.literal('sphereface'), ...common, m: z.number().int().min(1).default(4),
    lambdaBase: z.number().min(0).default(1000), lambdaGamma: z.number().min(0).default(0.12),
    lambdaPower: z.number().min(0).default(1), lambdaMin: z.number().min(0).default(5), detachMargin: z.boolean().default(false),
  }),
  z.object({
    name: z.literal('sphereface-r'), ...common, scale: scale(30), m: z.number().positive().default(1.5),
    version: z.enum(['v1', 'v2']).default('v1'), featureNormalization: z.enum(['none', 'hard', 'soft']).default('hard'),
    lw: z.number().min(0).optional(), t: z.number().min(0).default(0.01), detachMargin: z.boolean().default(true),
    /** The release's margin schedule of the none/soft variants, m = 1 + dm·(milestones passed); replaces m. */
    marginSteps: z.array(z.number().int().min(0)).optional(), dm: z.number().min(0).optional(),
  }),
  z.object({
    name: z.literal('sphereface2'), ...common, lambda: z.number().gt(0).lt(1).default(0.7), r: scale(40),
    m: z.number().default(0.4), t: z.number().int().min(1).max(16).default(3), bias: z.number().optional(),
    /** OpenSphere's defaults: margin type C, loss weight 50, g and m without gradient. */
    variant: z.enum(['C', 'A', 'M']).default('C'), lw: z.number().min(0).default(50), detachMargin: z.boolean().default(true),
  }),
  z.object({
    name: z.literal('kappaface'), ...common, scale: scale(64), m0: angle(0.8), T: z.number().min(0).default(0.4),
    gamma: z.number().min(0).max(1).default(0.7), numSamples: z.number().int().min(1), momentum: z.number().min(0).max(1).default(0.1),
    /** Where the concentration's features come from: the per-sample memory, or a momentum encoder (the official default config). */
    kappaSource: z.enum(['memory', 'momentum-encoder']).default('memory'),
    /** μ of the momentum encoder θ_k ← μ·θ_k + (1 − μ)·θ (official: 0.9). */
    encoderMomentum: z.number().min(0).max(1).default(0.9),
    easyMargin: z.boolean().default(false), detachMargin: z.boolean().default(false),
  }),
  z.object({
    name: z.literal('camri'), ...common, scale: scale(64), marginRad: angle(0.5), importantClass: z.number().int().min(0),
    detachMargin: z.boolean().default(false),
  }),
  z.object({ name: z.literal('virtual-softmax'), ...common }),
]);
/** What `new MarginHead(...)` accepts (defaults optional). */
export type MarginHeadConfig = z.input<typeof marginHeadConfigSchema>;
/** The configuration with every default filled in. */
export type MarginHeadSettings = z.output<typeof marginHeadConfigSchema>;

export interface MarginHeadLossOptions {
  /** W [C,d] to use instead of the head's variable (the bilevel step's θ'). */
  weight?: T;
  /** SphereFace2's b to use instead of the head's variable. */
  bias?: T;
  /** Per-sample weights [B]: loss = Σ wᵢℓᵢ (+ λR) instead of the mean. */
  sampleWeights?: T;
  /** SphereFace's annealing iteration and SphereFace-R's schedule step (default: the head's `step`). */
  step?: number;
}

/**
 * A margin classification head.
 *
 * @example
 * const head = new MarginHead({ name: 'arcface', numClasses: 1000, dim: 512 }); // s = 64, m = 0.5
 * const { loss, perSample } = head.loss(embeddings, labels);
 * const scores = head.logits(embeddings); // margin-free, for evaluation
 */
export class MarginHead {
  readonly name: MarginHeadName;
  readonly settings: MarginHeadSettings;
  /** W [C,d]. */
  readonly weight: tf.Variable;
  /** SphereFace2's bias b (scalar), initialised by {@link sphereFace2InitBias}. */
  readonly bias?: tf.Variable;
  /** KappaFace's feature memory: call `kappa.update(ids, emb, labels)` each step and `kappa.endEpoch()` once an epoch. */
  readonly kappa?: KappaMemory;
  /** SphereFace's annealing iteration and SphereFace-R's margin-schedule step; the trainer advances it. */
  step = 0;
  private readonly sphereFaceR?: SphereFaceRSettings;
  private nearest?: tf.Tensor1D;
  private regularizerCalls = 0;

  constructor(config: MarginHeadConfig) {
    const parsed = marginHeadConfigSchema.safeParse(config);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(config)'}: ${i.message}`).join('; ');
      throw new Error(`MarginHead: invalid config (${issues})`);
    }
    const s = parsed.data;
    this.settings = s;
    this.name = s.name;
    const C = s.numClasses;
    if (s.name === 'camri' && s.importantClass >= C) {
      throw new Error(`MarginHead: 'importantClass' must be in [0, ${C}), got ${s.importantClass}`);
    }
    if (s.name === 'sphereface-r') this.sphereFaceR = sphereFaceRSettings(s, 'MarginHead');
    if (s.name === 'kappaface') {
      this.kappa = new KappaMemory({
        numSamples: s.numSamples, dim: s.dim, numClasses: C, m0: s.m0, T: s.T, gamma: s.gamma, momentum: s.momentum, source: s.kappaSource,
      });
    }
    // Xavier-normal, as the papers' code initialises W.
    this.weight = tf.tidy(() => tf.variable(tf.randomNormal([C, s.dim], 0, Math.sqrt(2 / (C + s.dim)), 'float32', s.seed), true));
    if (s.name === 'sphereface2') {
      const b = s.bias ?? sphereFace2InitBias(C, s);
      this.bias = tf.tidy(() => tf.variable(tf.scalar(b), true));
    }
  }

  get numClasses(): number { return this.settings.numClasses; }
  get dim(): number { return this.settings.dim; }

  /** The trainable tensors by name: `weight`, and `bias` for SphereFace2. */
  params(): Record<string, tf.Variable> {
    return this.bias ? { weight: this.weight, bias: this.bias } : { weight: this.weight };
  }

  private resolveWeight(weight: T | undefined, fn: string): T {
    if (weight === undefined) return this.weight;
    checkMatrix(weight, fn, 'weight', this.numClasses, this.dim);
    return weight;
  }

  /**
   * Training loss for embeddings [B,d] and labels [B]: perSample [B] and loss = mean (or
   * Σ wᵢℓᵢ with `sampleWeights`) plus λ·R when the inter-class regulariser is on (R is not
   * part of perSample: it belongs to no sample).
   */
  loss(embeddings: T, labels: T, opts: MarginHeadLossOptions = {}): { loss: T; perSample: T } {
    const fn = `MarginHead(${this.name}).loss`;
    checkMatrix(embeddings, fn, 'embeddings', undefined, this.dim);
    checkFinite(embeddings, fn, 'embeddings');
    const B = embeddings.shape[0];
    checkLabels(labels, fn, B, this.numClasses);
    checkWeights(opts.sampleWeights, fn, B, 'sampleWeights');
    const W = this.resolveWeight(opts.weight, fn);
    if (opts.bias !== undefined) {
      checkTensor(opts.bias, fn, 'bias');
      if (opts.bias.size !== 1) throw new Error(`${fn}: 'bias' must be a scalar, got shape [${opts.bias.shape}]`);
    }
    return tf.tidy(() => {
      // Ŵ once, shared by the cosines and the regulariser.
      let unitW: T | undefined;
      const wHat = (): T => (unitW ??= l2Normalize(W, 1));
      const perSample = this.perSample(embeddings, labels, W, wHat, opts);
      let loss = reduceLoss(perSample, opts.sampleWeights);
      if (this.settings.interClassLambda > 0) loss = tf.add(loss, tf.mul(this.regularizer(W, wHat), this.settings.interClassLambda));
      return { loss, perSample };
    });
  }

  private regularizer(W: T, wHat: () => T): T {
    const every = this.settings.interClassEvery;
    if (every === 1) return meanCosineTo(wHat(), nearestOtherClass(W));
    if (this.nearest === undefined || this.regularizerCalls % every === 0) {
      this.nearest?.dispose();
      this.nearest = tf.keep(nearestOtherClass(W));
    }
    this.regularizerCalls += 1;
    return meanCosineTo(wHat(), this.nearest);
  }

  private perSample(x: T, labels: T, W: T, wHat: () => T, opts: MarginHeadLossOptions): T {
    const s = this.settings;
    const cos = (): T => tf.matMul(l2Normalize(x, 1), wHat(), false, true);
    const ce = (cosine: T, spec: MarginSpec, scale: RowScale, detachMargin: boolean): T => {
      const { logits, targetLogit } = applyMargin(cosine, labels, spec, { scale, detachMargin });
      return targetCrossEntropy(logits, targetLogit);
    };
    switch (s.name) {
      case 'softmax': {
        const logits = tf.matMul(x, W, false, true);
        const target = tf.sum(tf.mul(logits, oneHotFloat(labels, s.numClasses)), 1);
        return targetCrossEntropy(logits, target);
      }
      case 'normface':
        return ce(cos(), {}, s.scale, false);
      case 'arcface':
        return ce(cos(), combinedMargin(s.m1, s.m2, s.m3, s.easyMargin), s.scale, s.detachMargin);
      case 'cosface':
      case 'am-softmax':
        return ce(cos(), combinedMargin(1, 0, s.m3, false), s.scale, s.detachMargin);
      case 'aam-softmax':
        return ce(cos(), combinedMargin(1, s.m2, 0, s.easyMargin), s.scale, s.detachMargin);
      case 'kappaface': {
        const m2 = tf.gather((this.kappa as KappaMemory).margins(), labels);
        return ce(cos(), combinedMargin(1, m2, 0, s.easyMargin), s.scale, s.detachMargin);
      }
      case 'camri':
        return ce(cos(), combinedMargin(1, camriRowMargins(labels, s.importantClass, s.marginRad), 0, false), s.scale, s.detachMargin);
      case 'sphereface': {
        // A-softmax: W normalised, x not, so the logits carry ‖x‖.
        const lambda = sphereFaceLambda(opts.step ?? this.step, { base: s.lambdaBase, gamma: s.lambdaGamma, power: s.lambdaPower, lambdaMin: s.lambdaMin });
        return ce(cos(), sphereFaceMargin(s.m, lambda), rowNorm(x), s.detachMargin);
      }
      case 'sphereface-r': {
        const r = this.sphereFaceR as SphereFaceRSettings;
        return sphereFaceRPerSample(cos(), labels, r, r.norm === 'hard' ? undefined : rowNorm(x), opts.step ?? this.step);
      }
      case 'sphereface2':
        return sphereFace2PerSample(cos(), labels, s, opts.bias ?? (this.bias as tf.Variable), s.detachMargin);
      case 'virtual-softmax':
        return virtualSoftmaxPerSample(x, W, labels);
    }
  }

  /**
   * Margin-free class scores [B,C] for evaluation: W·x for softmax and virtual-softmax,
   * ‖x‖·cos θ where the training logits scale with ‖x‖ (SphereFace, SphereFace-R without
   * hard normalisation), r·cos θ for SphereFace2, s·cos θ otherwise.
   */
  logits(embeddings: T, opts: { weight?: T } = {}): T {
    const fn = `MarginHead(${this.name}).logits`;
    checkMatrix(embeddings, fn, 'embeddings', undefined, this.dim);
    checkFinite(embeddings, fn, 'embeddings');
    const W = this.resolveWeight(opts.weight, fn);
    const s = this.settings;
    return tf.tidy(() => {
      if (s.name === 'softmax' || s.name === 'virtual-softmax') return tf.matMul(embeddings, W, false, true);
      const cosine = tf.matMul(l2Normalize(embeddings, 1), l2Normalize(W, 1), false, true);
      const byNorm = s.name === 'sphereface' || (s.name === 'sphereface-r' && s.featureNormalization !== 'hard');
      if (byNorm) return tf.mul(cosine, tf.expandDims(rowNorm(embeddings), 1));
      return tf.mul(cosine, s.name === 'sphereface2' ? s.r : s.scale);
    });
  }

  /** Frees W (and b, and the regulariser's cached nearest classes). */
  dispose(): void {
    this.weight.dispose();
    this.bias?.dispose();
    this.nearest?.dispose();
  }
}
