/**
 * MarginHead: a classification head W [C,d] with one of the margin losses, built by name with
 * the papers' defaults (docs/DESIGN.md §5). The heads are defined one family per file in
 * heads/ and listed in heads/registry.ts. The weights live in a tf.Variable; `loss` also takes W
 * (and SphereFace2's b) as plain tensors so that the bilevel step can evaluate the head at
 * θ' = θ − α∇θL.
 */
import { tf } from '../backend/tf.js';
import { l2Normalize } from '../backend/safeOps.js';
import { checkLabels, checkMatrix, checkTensor, checkWeights, reduceLoss } from './core.js';
import { KappaMemory } from './kappaface.js';
import { meanCosineTo, nearestOtherClass } from './regularizer.js';
import type { MarginHeadDefinition } from './heads/define.js';
import { marginHeadConfigSchema, marginHeadDefinition, type MarginHeadConfig, type MarginHeadName, type MarginHeadSettings } from './heads/registry.js';

export { MARGIN_HEAD_NAMES, marginHeadConfigSchema, type MarginHeadConfig, type MarginHeadName, type MarginHeadSettings } from './heads/registry.js';

type T = tf.Tensor;

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
  /** The learnable scalar bias of heads that have one (SphereFace2's b). */
  readonly bias?: tf.Variable;
  /** KappaFace's feature memory: call `await kappa.update(ids, emb, labels)` each step and `kappa.endEpoch()` once an epoch. */
  readonly kappa?: KappaMemory;
  /** SphereFace's annealing iteration and SphereFace-R's margin-schedule step; the trainer advances it. */
  step = 0;
  private readonly def: MarginHeadDefinition;
  private readonly state: unknown;
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
    this.def = marginHeadDefinition(s.name);
    this.state = this.def.create?.(s, 'MarginHead');
    if (this.state instanceof KappaMemory) this.kappa = this.state;
    const C = s.numClasses;
    // Xavier-normal, as the papers' code initialises W.
    this.weight = tf.tidy(() => tf.variable(tf.randomNormal([C, s.dim], 0, Math.sqrt(2 / (C + s.dim)), 'float32', s.seed), true));
    if (this.def.initBias) {
      const b = this.def.initBias(s);
      this.bias = tf.tidy(() => tf.variable(tf.scalar(b), true));
    }
  }

  get numClasses(): number { return this.settings.numClasses; }
  get dim(): number { return this.settings.dim; }

  /** The trainable tensors by name: `weight`, and `bias` for heads with one (SphereFace2). */
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
    const B = embeddings.shape[0];
    checkLabels(labels, fn, B);
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
      const perSample = this.def.perSample({
        settings: this.settings, x: embeddings, labels, W, wHat, cosine: () => tf.matMul(l2Normalize(embeddings, 1), wHat(), false, true),
        step: opts.step ?? this.step, bias: opts.bias ?? this.bias, state: this.state,
      });
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

  /**
   * Margin-free class scores [B,C] for evaluation: W·x for softmax and virtual-softmax,
   * ‖x‖·cos θ where the training logits scale with ‖x‖ (SphereFace, SphereFace-R without
   * hard normalisation), r·cos θ for SphereFace2, s·cos θ otherwise.
   */
  logits(embeddings: T, opts: { weight?: T } = {}): T {
    const fn = `MarginHead(${this.name}).logits`;
    checkMatrix(embeddings, fn, 'embeddings', undefined, this.dim);
    const W = this.resolveWeight(opts.weight, fn);
    return tf.tidy(() => this.def.logits({
      settings: this.settings, x: embeddings, W, cosine: () => tf.matMul(l2Normalize(embeddings, 1), l2Normalize(W, 1), false, true),
    }));
  }

  /** Frees W (and b, and the regulariser's cached nearest classes). */
  dispose(): void {
    this.weight.dispose();
    this.bias?.dispose();
    this.nearest?.dispose();
  }
}
