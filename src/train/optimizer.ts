/**
 * Optimizers over a flat, name-keyed parameter store.
 *
 * AdamW: Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019).
 * Defaults follow CLIP's ViT recipe (Radford et al. 2021, appendix F): β = (0.9, 0.98),
 * ε = 1e-6, weight decay 0.2. β2 = 0.98 and the larger ε keep the update bounded when a
 * rarely-hit parameter (the logit scale, late tokens) suddenly gets a large gradient.
 *
 * Parameters are `Record<string, tf.Variable>` keyed by dotted names
 * (`video.blocks.0.attn.qkv.weight`, `logit_scale`); per-parameter learning-rate scales and
 * decay come from a function of the name and shape (`groups`), so the trainer can give
 * encoders and heads different rates and exempt gains, biases and the logit scale from decay.
 */
import { tf } from '../backend/tf.js';

/** Trainable parameters by dotted name. */
export type NamedVariables = Record<string, tf.Variable>;
/** Gradients by the same names as the parameters they belong to. */
export type NamedGradients = Record<string, tf.Tensor>;

/** Per-parameter settings; a field left out takes the optimizer's default. */
export interface ParamGroup {
  /** Multiplies the step's learning rate for this parameter. */
  lrScale?: number;
  /** Decay coefficient for this parameter (0 turns decay off). */
  weightDecay?: number;
}

/** Chooses a parameter's group from its name and shape. */
export type GroupFn = (name: string, shape: readonly number[]) => ParamGroup | undefined;

/** What the trainer needs from any optimizer here. */
export interface Optimizer {
  /** Steps taken so far (after `loadState`, the restored count). */
  readonly stepCount: number;
  /** Updates the parameters in place; parameters with no entry in `grads` are left untouched. */
  step(grads: NamedGradients, lr?: number): void;
  /** The optimizer's tensors for a checkpoint (live variables: read them, do not dispose them). */
  state(): Record<string, tf.Tensor>;
  /** Restores `state()` output and the step count; values are copied, `record` stays the caller's. */
  loadState(record: Record<string, tf.Tensor>, step: number): void;
  /** Frees the optimizer's own tensors (never the parameters). */
  dispose(): void;
}

/**
 * OpenCLIP's decay rule: no decay for rank < 2 tensors (gains, biases, class embeddings),
 * anything named as a norm, and the logit scale. Matrices, including positional and token
 * embeddings, are decayed.
 *
 * @example
 * excludedFromDecay('text.ln_final.weight', [512]);      // true
 * excludedFromDecay('video.proj.weight', [768, 512]);    // false
 */
export function excludedFromDecay(name: string, shape: readonly number[]): boolean {
  if (typeof name !== 'string') throw new Error(`excludedFromDecay: 'name' must be a string, got ${typeof name}`);
  if (!Array.isArray(shape)) throw new Error(`excludedFromDecay: 'shape' of '${name}' must be an array of numbers`);
  if (shape.length < 2) return true;
  const parts = name.split('.');
  return name === 'logit_scale' || parts.some((p) => /^(ln|norm|bn)(_|\d|$)/.test(p) || p.endsWith('norm'))
    || parts[parts.length - 1] === 'bias';
}

/**
 * A `GroupFn` in CLIP's style: `excludedFromDecay` parameters get no decay, and the learning
 * rate is scaled by the longest matching name prefix in `lrScaleByPrefix` (1 if none).
 *
 * @example
 * const groups = clipParamGroups({ 'video.': 0.1, 'text.': 0.1 }); // heads and logit_scale at 1×
 * new AdamW(params, { lr: 1e-4, groups });
 */
export function clipParamGroups(lrScaleByPrefix: Record<string, number> = {}): GroupFn {
  const prefixes = Object.entries(lrScaleByPrefix).sort((a, b) => b[0].length - a[0].length);
  for (const [prefix, scale] of prefixes) {
    if (!Number.isFinite(scale) || scale < 0) {
      throw new Error(`clipParamGroups: scale for prefix '${prefix}' must be a finite number ≥ 0, got ${scale}`);
    }
  }
  return (name, shape) => {
    const hit = prefixes.find(([prefix]) => name.startsWith(prefix));
    return { lrScale: hit ? hit[1] : 1, ...(excludedFromDecay(name, shape) ? { weightDecay: 0 } : {}) };
  };
}

interface Resolved { lrScale: number; weightDecay: number }

function resolveGroups(owner: string, params: NamedVariables, groups: GroupFn | undefined, defaultDecay: number): Map<string, Resolved> {
  const out = new Map<string, Resolved>();
  for (const [name, p] of Object.entries(params)) {
    const g = groups?.(name, p.shape) ?? {};
    const lrScale = g.lrScale ?? 1;
    const weightDecay = g.weightDecay ?? defaultDecay;
    if (!Number.isFinite(lrScale) || lrScale < 0) throw new Error(`${owner}: group lrScale for '${name}' must be a finite number ≥ 0, got ${lrScale}`);
    if (!Number.isFinite(weightDecay) || weightDecay < 0) throw new Error(`${owner}: group weightDecay for '${name}' must be a finite number ≥ 0, got ${weightDecay}`);
    out.set(name, { lrScale, weightDecay });
  }
  return out;
}

function checkParams(owner: string, params: unknown): asserts params is NamedVariables {
  if (params === null || typeof params !== 'object') throw new Error(`${owner}: 'params' must be a Record<string, tf.Variable>`);
  const entries = Object.entries(params as Record<string, unknown>);
  if (entries.length === 0) throw new Error(`${owner}: 'params' is empty; nothing to optimize`);
  for (const [name, p] of entries) {
    if (!(p instanceof tf.Variable)) throw new Error(`${owner}: params['${name}'] must be a tf.Variable`);
    if (p.dtype !== 'float32') throw new Error(`${owner}: params['${name}'] must be float32, got ${p.dtype}`);
  }
}

function checkLr(owner: string, lr: unknown): number {
  if (typeof lr !== 'number' || !Number.isFinite(lr) || lr < 0) throw new Error(`${owner}: learning rate must be a finite number ≥ 0, got ${String(lr)}`);
  return lr;
}

function checkGrads(owner: string, params: NamedVariables, grads: unknown): asserts grads is NamedGradients {
  if (grads === null || typeof grads !== 'object') throw new Error(`${owner}.step: 'grads' must be a Record<string, tf.Tensor>`);
  for (const [name, g] of Object.entries(grads as Record<string, unknown>)) {
    const p = params[name];
    if (!p) throw new Error(`${owner}.step: gradient '${name}' names no parameter of this optimizer`);
    if (!(g instanceof tf.Tensor)) throw new Error(`${owner}.step: grads['${name}'] must be a tf.Tensor`);
    if (!tf.util.arraysEqual(g.shape, p.shape)) {
      throw new Error(`${owner}.step: grads['${name}'] has shape [${g.shape}], parameter has [${p.shape}]`);
    }
  }
}

/**
 * Checks a state record against the expected key → shape map before anything is assigned,
 * so a bad checkpoint leaves the optimizer as it was.
 */
function validateState(owner: string, record: unknown, step: unknown, expected: Map<string, number[]>): asserts record is Record<string, tf.Tensor> {
  if (record === null || typeof record !== 'object') throw new Error(`${owner}.loadState: 'record' must be a Record<string, tf.Tensor>`);
  if (typeof step !== 'number' || !Number.isInteger(step) || step < 0) throw new Error(`${owner}.loadState: 'step' must be an integer ≥ 0, got ${String(step)}`);
  const rec = record as Record<string, unknown>;
  const extra = Object.keys(rec).filter((k) => !expected.has(k));
  if (extra.length > 0) {
    throw new Error(`${owner}.loadState: state has entries for no parameter of this optimizer: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', …' : ''}`);
  }
  for (const [key, shape] of expected) {
    const src = rec[key];
    if (!(src instanceof tf.Tensor)) throw new Error(`${owner}.loadState: state is missing '${key}'`);
    if (!tf.util.arraysEqual(src.shape, shape)) throw new Error(`${owner}.loadState: '${key}' has shape [${src.shape}], parameter has [${shape}]`);
  }
}

/** Copies a value into an optimizer variable; the source stays the caller's. */
function copyInto(target: tf.Variable, src: tf.Tensor): void {
  tf.tidy(() => target.assign(tf.cast(src, 'float32')));
}

export interface AdamWOptions {
  /** Default learning rate for `step` when none is passed. Default 1e-3. */
  lr?: number;
  /** Moment decay rates. Default [0.9, 0.98] (CLIP). */
  betas?: [number, number];
  /** Added to √v̂. Default 1e-6 (CLIP). */
  eps?: number;
  /** Decoupled decay coefficient for parameters whose group sets none. Default 0.2 (CLIP). */
  weightDecay?: number;
  /** Per-parameter lrScale / weightDecay; see `clipParamGroups`. */
  groups?: GroupFn;
  /**
   * Largest flat chunk of parameters updated together, in elements. Default 2²² (16 MiB of
   * float32: far under WebGPU's smallest binding limit, and a step's temporaries stay small).
   */
  chunkElements?: number;
}

/**
 * AdamW with decoupled weight decay, updating `tf.Variable`s in place.
 *
 * Per parameter with gradient g, group rate η = lr·lrScale, decay λ, step t:
 * p ← p − η·λ·p; m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
 * p ← p − η·(m/(1−β1ᵗ)) / (√(v/(1−β2ᵗ)) + ε).
 * The decay never enters m or v. t counts `step` calls; a parameter missing from a step's
 * grads is neither decayed nor moved, and its moments keep their values.
 *
 * @example
 * const opt = new AdamW(params, { groups: clipParamGroups() });
 * opt.step(grads, schedule(opt.stepCount));
 */
export class AdamW implements Optimizer {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private readonly params: NamedVariables;
  private readonly groups: Map<string, Resolved>;
  /** The parameters in flat chunks of one group each; m and v live flat, per chunk. */
  private readonly chunks: FlatChunk[];
  /** `state()`'s per-parameter views, valid until the next step, load or state call. */
  private views: Record<string, tf.Tensor> | null = null;
  private t = 0;

  constructor(params: NamedVariables, opts: AdamWOptions = {}) {
    checkParams('AdamW', params);
    const { lr = 1e-3, betas = [0.9, 0.98], eps = 1e-6, weightDecay = 0.2, groups, chunkElements = FLAT_MAX_ELEMENTS } = opts;
    this.lr = checkLr('AdamW', lr);
    if (!Number.isInteger(chunkElements) || chunkElements < 1) throw new Error(`AdamW: 'chunkElements' must be a positive integer, got ${chunkElements}`);
    if (!Array.isArray(betas) || betas.length !== 2 || betas.some((b) => !(b >= 0 && b < 1))) {
      throw new Error(`AdamW: 'betas' must be two numbers in [0, 1), got ${JSON.stringify(betas)}`);
    }
    if (!(eps > 0) || !Number.isFinite(eps)) throw new Error(`AdamW: 'eps' must be a finite number > 0, got ${eps}`);
    if (!(weightDecay >= 0) || !Number.isFinite(weightDecay)) throw new Error(`AdamW: 'weightDecay' must be a finite number ≥ 0, got ${weightDecay}`);
    if (groups !== undefined && typeof groups !== 'function') throw new Error(`AdamW: 'groups' must be a function (name, shape) => { lrScale?, weightDecay? }`);
    [this.beta1, this.beta2] = betas;
    this.eps = eps;
    this.weightDecay = weightDecay;
    this.params = { ...params };
    this.groups = resolveGroups('AdamW', this.params, groups, weightDecay);
    this.chunks = flatChunks(this.params, this.groups, chunkElements);
  }

  get stepCount(): number { return this.t; }

  /** The resolved { lrScale, weightDecay } of one parameter (for logging and tests). */
  groupOf(name: string): { lrScale: number; weightDecay: number } {
    const g = this.groups.get(name);
    if (!g) throw new Error(`AdamW.groupOf: no parameter named '${name}'`);
    return { ...g };
  }

  /**
   * One update. Parameters of a chunk are concatenated and updated by one set of kernels, as
   * PyTorch's multi-tensor AdamW does: per element the same float32 operations in the same
   * order as a per-parameter update, so the result is the same bit for bit, with a dozen
   * kernels per chunk instead of per parameter (on webgpu, a dispatch each).
   */
  step(grads: NamedGradients, lr: number = this.lr): void {
    checkGrads('AdamW', this.params, grads);
    checkLr('AdamW.step', lr);
    this.disposeViews();
    this.t += 1;
    const { beta1, beta2, eps, t } = this;
    const k = { beta1, beta2, eps, bc1: 1 - beta1 ** t, sqrtBc2: Math.sqrt(1 - beta2 ** t), lr };
    // One tidy per chunk: its temporaries (a dozen chunk-sized vectors) are freed before the
    // next chunk starts, so the step's peak is about one chunk's worth, not the whole model's.
    for (const c of this.chunks) {
      tf.tidy(() => {
        const present = c.names.map((n) => grads[n] !== undefined);
        if (!present.some(Boolean)) return;
        if (present.every(Boolean)) {
          const u = adamwUpdate(flatten(c.names.map((n) => this.params[n])), flatten(c.names.map((n) => grads[n])), c.m, c.v, c, k);
          this.assignParts(c, u.p, c.names.map(() => true));
          c.m.assign(u.m);
          c.v.assign(u.v);
          return;
        }
        // Some parameters of the chunk have no gradient this step: they are neither decayed
        // nor moved, and their moments keep their values.
        const ms = sliceParts(c.m, c.sizes);
        const vs = sliceParts(c.v, c.sizes);
        const ps: tf.Tensor[] = [];
        c.names.forEach((n, i) => {
          if (!present[i]) return;
          const u = adamwUpdate(tf.reshape(this.params[n], [-1]), tf.reshape(grads[n], [-1]), ms[i], vs[i], c, k);
          ps.push(u.p);
          ms[i] = u.m;
          vs[i] = u.v;
        });
        this.assignParts(c, ps.length === 1 ? ps[0] : tf.concat(ps), present);
        c.m.assign(tf.concat(ms));
        c.v.assign(tf.concat(vs));
      });
    }
  }

  /** Writes the flat update `flat` back into the parameters of `c` marked in `which`. */
  private assignParts(c: FlatChunk, flat: tf.Tensor, which: boolean[]): void {
    const names = c.names.filter((_, i) => which[i]);
    const sizes = c.sizes.filter((_, i) => which[i]);
    const parts = sliceParts(flat, sizes);
    names.forEach((n, i) => this.params[n].assign(tf.reshape(parts[i], this.params[n].shape)));
  }

  /**
   * `m.<name>` and `v.<name>` for every parameter; the step count is `stepCount`. The tensors
   * are views the optimizer owns (do not dispose them), valid until its next `step`,
   * `loadState`, `state` or `dispose`: read or save them before stepping again.
   */
  state(): Record<string, tf.Tensor> {
    this.disposeViews();
    const views = tf.tidy(() => {
      const out: Record<string, tf.Tensor> = {};
      for (const c of this.chunks) {
        const ms = sliceParts(c.m, c.sizes);
        const vs = sliceParts(c.v, c.sizes);
        c.names.forEach((n, i) => {
          out[`m.${n}`] = tf.reshape(ms[i], this.params[n].shape);
          out[`v.${n}`] = tf.reshape(vs[i], this.params[n].shape);
        });
      }
      return out;
    });
    // Ordered like the parameters, as the checkpoint files list them.
    const ordered: Record<string, tf.Tensor> = {};
    for (const n of Object.keys(this.params)) {
      ordered[`m.${n}`] = views[`m.${n}`];
      ordered[`v.${n}`] = views[`v.${n}`];
    }
    this.views = ordered;
    return ordered;
  }

  loadState(record: Record<string, tf.Tensor>, step: number): void {
    const expected = new Map<string, number[]>();
    for (const [name, p] of Object.entries(this.params)) {
      expected.set(`m.${name}`, p.shape);
      expected.set(`v.${name}`, p.shape);
    }
    validateState('AdamW', record, step, expected);
    tf.tidy(() => {
      for (const c of this.chunks) {
        c.m.assign(flatten(c.names.map((n) => tf.cast(record[`m.${n}`], 'float32'))));
        c.v.assign(flatten(c.names.map((n) => tf.cast(record[`v.${n}`], 'float32'))));
      }
    });
    // After the copy: `record` may be this optimizer's own views.
    this.disposeViews();
    this.t = step;
  }

  dispose(): void {
    this.disposeViews();
    for (const c of this.chunks) {
      c.m.dispose();
      c.v.dispose();
    }
    this.chunks.length = 0;
  }

  private disposeViews(): void {
    if (this.views) tf.dispose(Object.values(this.views));
    this.views = null;
  }
}

/**
 * The default largest flat chunk, in elements: 2²² float32 is 16 MiB, an eighth of the
 * smallest binding limit WebGPU allows (128 MiB), so a concatenated chunk can always be bound,
 * and the dozen chunk-sized temporaries of an update stay near 200 MiB. A larger parameter
 * (base's token embedding, 25 M) is a chunk of its own.
 */
const FLAT_MAX_ELEMENTS = 2 ** 22;

/** Parameters of one (lrScale, weightDecay) group, updated as one flat vector. */
interface FlatChunk {
  names: string[];
  sizes: number[];
  lrScale: number;
  weightDecay: number;
  m: tf.Variable;
  v: tf.Variable;
}

function flatChunks(params: NamedVariables, groups: Map<string, Resolved>, maxElements: number): FlatChunk[] {
  const chunks: Omit<FlatChunk, 'm' | 'v'>[] = [];
  const open = new Map<string, Omit<FlatChunk, 'm' | 'v'> & { total: number }>();
  for (const [name, p] of Object.entries(params)) {
    const { lrScale, weightDecay } = groups.get(name)!;
    const key = `${lrScale}|${weightDecay}`;
    let c = open.get(key);
    if (c && c.total + p.size > maxElements) c = undefined;
    if (!c) {
      c = { names: [], sizes: [], lrScale, weightDecay, total: 0 };
      open.set(key, c);
      chunks.push(c);
    }
    c.names.push(name);
    c.sizes.push(p.size);
    c.total += p.size;
  }
  return chunks.map(({ names, sizes, lrScale, weightDecay }) => {
    const n = sizes.reduce((a, b) => a + b, 0);
    const zeros = (): tf.Variable => tf.tidy(() => tf.variable(tf.zeros([n]), false));
    return { names, sizes, lrScale, weightDecay, m: zeros(), v: zeros() };
  });
}

/** The tensors raveled and joined (one tensor: raveled only). */
function flatten(xs: tf.Tensor[]): tf.Tensor1D {
  const flat = xs.map((x) => tf.reshape(x, [-1]));
  return (flat.length === 1 ? flat[0] : tf.concat(flat)) as tf.Tensor1D;
}

/**
 * Consecutive pieces of a flat vector (the vector itself when there is one piece). One slice
 * each rather than tf.split: wasm's SplitV took 1.2 s to cut 12 M floats into 100 pieces,
 * where the slices take milliseconds.
 */
function sliceParts(x: tf.Tensor, sizes: number[]): tf.Tensor[] {
  if (sizes.length === 1) return [x];
  let at = 0;
  return sizes.map((n) => {
    const part = tf.slice(x, [at], [n]);
    at += n;
    return part;
  });
}

/** AdamW on flat vectors; the operation order of the per-parameter formula above. */
function adamwUpdate(
  p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, group: { lrScale: number; weightDecay: number },
  k: { beta1: number; beta2: number; eps: number; bc1: number; sqrtBc2: number; lr: number },
): { p: tf.Tensor; m: tf.Tensor; v: tf.Tensor } {
  const eta = k.lr * group.lrScale;
  const mNew = tf.add(tf.mul(m, k.beta1), tf.mul(g, 1 - k.beta1));
  const vNew = tf.add(tf.mul(v, k.beta2), tf.mul(tf.square(g), 1 - k.beta2));
  const denom = tf.add(tf.div(tf.sqrt(vNew), k.sqrtBc2), k.eps);
  const decayed = group.weightDecay > 0 ? tf.mul(p, 1 - eta * group.weightDecay) : p;
  return { p: tf.sub(decayed, tf.mul(tf.div(mNew, denom), eta / k.bc1)), m: mNew, v: vNew };
}

export interface SGDOptions {
  /** Default learning rate for `step` when none is passed. Default 1e-2. */
  lr?: number;
  /** Heavy-ball momentum μ (0 = plain SGD). Default 0. */
  momentum?: number;
  /** L2 coefficient added to the gradient (coupled, as in PyTorch's SGD). Default 0. */
  weightDecay?: number;
  /** Per-parameter lrScale / weightDecay. */
  groups?: GroupFn;
}

/**
 * SGD with optional momentum, PyTorch's form: g' = g + λ·p; b ← μ·b + g' (b = g' on the
 * first step); p ← p − η·b.
 *
 * @example
 * const opt = new SGD(params, { lr: 0.1, momentum: 0.9 });
 * opt.step(grads);
 */
export class SGD implements Optimizer {
  readonly lr: number;
  readonly momentum: number;
  private readonly params: NamedVariables;
  private readonly groups: Map<string, Resolved>;
  private readonly buf = new Map<string, tf.Variable>();
  private t = 0;

  constructor(params: NamedVariables, opts: SGDOptions = {}) {
    checkParams('SGD', params);
    const { lr = 1e-2, momentum = 0, weightDecay = 0, groups } = opts;
    this.lr = checkLr('SGD', lr);
    if (!(momentum >= 0 && momentum < 1)) throw new Error(`SGD: 'momentum' must be in [0, 1), got ${momentum}`);
    if (!(weightDecay >= 0) || !Number.isFinite(weightDecay)) throw new Error(`SGD: 'weightDecay' must be a finite number ≥ 0, got ${weightDecay}`);
    if (groups !== undefined && typeof groups !== 'function') throw new Error(`SGD: 'groups' must be a function (name, shape) => { lrScale?, weightDecay? }`);
    this.momentum = momentum;
    this.params = { ...params };
    this.groups = resolveGroups('SGD', this.params, groups, weightDecay);
    if (momentum > 0) {
      for (const [name, p] of Object.entries(this.params)) {
        this.buf.set(name, tf.tidy(() => tf.variable(tf.zerosLike(p), false)));
      }
    }
  }

  get stepCount(): number { return this.t; }

  step(grads: NamedGradients, lr: number = this.lr): void {
    checkGrads('SGD', this.params, grads);
    checkLr('SGD.step', lr);
    this.t += 1;
    tf.tidy(() => {
      for (const [name, g] of Object.entries(grads)) {
        const p = this.params[name];
        const { lrScale, weightDecay } = this.groups.get(name)!;
        let d = weightDecay > 0 ? tf.add(g, tf.mul(p, weightDecay)) : g;
        if (this.momentum > 0) {
          const b = this.buf.get(name)!;
          // b starts at zero, so the first step gives b = g' exactly as PyTorch's initialisation.
          const bNew = tf.add(tf.mul(b, this.momentum), d);
          b.assign(bNew);
          d = bNew;
        }
        p.assign(tf.sub(p, tf.mul(d, lr * lrScale)));
      }
    });
  }

  /** `momentum.<name>` per parameter when momentum > 0, else empty. */
  state(): Record<string, tf.Tensor> {
    const out: Record<string, tf.Tensor> = {};
    for (const [name, b] of this.buf) out[`momentum.${name}`] = b;
    return out;
  }

  loadState(record: Record<string, tf.Tensor>, step: number): void {
    const expected = new Map<string, number[]>();
    for (const [name, b] of this.buf) expected.set(`momentum.${name}`, b.shape);
    validateState('SGD', record, step, expected);
    for (const [name, b] of this.buf) copyInto(b, record[`momentum.${name}`]);
    this.t = step;
  }

  dispose(): void {
    for (const b of this.buf.values()) b.dispose();
    this.buf.clear();
  }
}
