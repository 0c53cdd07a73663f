/**
 * KappaFace (Oinar et al. 2022): ArcFace with a per-class margin m_c = ψ_c·m0 that grows for
 * classes whose features are spread out (low von Mises–Fisher concentration κ) and for
 * classes with few samples, and shrinks for concentrated and large ones.
 *
 *   r_c = ‖Σ z̄‖/n_c,   κ_c = r_c(d − r_c²)/(1 − r_c²),   κ̃ = (κ − mean κ)/std κ (N − 1),
 *   wκ_c = 1 − sigmoid(T·κ̃_c),   ws_c = (cos(π·n_c/K) + 1)/2 with K = 1.05·max n,
 *   ψ_c = γ·wκ_c + (1 − γ)·ws_c;   ψ ≡ 1 in the first epoch.
 *
 * z̄ comes from one of the two sources of the official code: a per-sample memory
 * z̄ ← normalize(α·z̄ + (1 − α)·z) (α = 0.1), or — the official default config — a momentum
 * encoder, an exponential moving average of the backbone's parameters (θ_k ← 0.9·θ_k + 0.1·θ
 * after every step, {@link momentumEncoderUpdate}) whose normalised features of each batch are
 * summed per class over the epoch and start again from zero after it.
 */
import { tf } from '../backend/tf.js';
import { checkLabels, checkMatrix, checkNumber, checkTensor } from './core.js';

type Values = ArrayLike<number>;

export interface KappaOptions {
  /** Base margin m0 in radians (paper: 0.8). */
  m0?: number;
  /** Temperature T of the concentration weight (paper: 0.4). */
  T?: number;
  /** Mix γ between the concentration and the sample-count weights (paper: 0.7). */
  gamma?: number;
}

/** r at or above 1 − this is treated as r = 1 (κ = ∞): float32 unit vectors are only unit to ~1e-7. */
const UNIT_R_TOLERANCE = 1e-6;

function resolve(opts: KappaOptions, fn: string): Required<KappaOptions> {
  const { m0 = 0.8, T = 0.4, gamma = 0.7 } = opts;
  checkNumber(m0, fn, 'm0', 0, Math.PI);
  checkNumber(T, fn, 'T', 0);
  checkNumber(gamma, fn, 'gamma', 0, 1);
  return { m0, T, gamma };
}

/**
 * Margins [C] from per-class sums of memory features and counts, in float64. Classes with no
 * samples carry no information and keep m0 (ψ = 1); they are left out of κ's statistics.
 */
function kappaMarginsFromArrays(sums: ArrayLike<number>, counts: ArrayLike<number>, dim: number, o: Required<KappaOptions>): Float32Array {
  const C = counts.length;
  const kappa = new Float64Array(C).fill(NaN);
  let maxN = 0;
  let maxFinite = -Infinity;
  for (let c = 0; c < C; c++) {
    const n = counts[c];
    if (n <= 0) continue;
    maxN = Math.max(maxN, n);
    let sq = 0;
    for (let k = 0; k < dim; k++) sq += sums[c * dim + k] ** 2;
    const rc = Math.min(Math.sqrt(sq) / n, 1);
    kappa[c] = rc >= 1 - UNIT_R_TOLERANCE ? Infinity : (rc * (dim - rc * rc)) / (1 - rc * rc);
    if (Number.isFinite(kappa[c])) maxFinite = Math.max(maxFinite, kappa[c]);
  }
  const seen: number[] = [];
  for (let c = 0; c < C; c++) {
    if (Number.isNaN(kappa[c])) continue;
    // Infinite κ (a class whose features all coincide, e.g. a single sample) is clipped to the
    // largest finite one; if none is finite they are all equal and standardise to 0.
    if (kappa[c] === Infinity) kappa[c] = Number.isFinite(maxFinite) ? maxFinite : 0;
    seen.push(c);
  }
  const mean = seen.reduce((a, c) => a + kappa[c], 0) / Math.max(seen.length, 1);
  const variance = seen.length > 1 ? seen.reduce((a, c) => a + (kappa[c] - mean) ** 2, 0) / (seen.length - 1) : 0;
  const std = Math.sqrt(variance);
  const K = 1.05 * maxN;
  const out = new Float32Array(C).fill(o.m0);
  for (const c of seen) {
    const z = std > 0 ? (kappa[c] - mean) / std : 0;
    const wKappa = 1 - 1 / (1 + Math.exp(-o.T * z));
    const wSize = (Math.cos((Math.PI * counts[c]) / K) + 1) / 2;
    out[c] = (o.gamma * wKappa + (1 - o.gamma) * wSize) * o.m0;
  }
  return out;
}

/**
 * KappaFace margins [C] (radians) from per-class sums of normalised memory features [C,d]
 * and per-class sample counts [C], read asynchronously.
 *
 * @example
 * const margins = await kappaMargins(classSums, counts); // feed as marginLogits' perClassM2
 */
export async function kappaMargins(classSums: tf.Tensor, counts: tf.Tensor, opts: KappaOptions = {}): Promise<tf.Tensor1D> {
  const fn = 'kappaMargins';
  const d = checkKappaInputs(classSums, counts, fn);
  const [sums, n] = await Promise.all([classSums.data(), counts.data()]);
  return tf.tensor1d(marginsFromValues(sums, n, d, opts, fn));
}

/** Shapes; returns d. */
function checkKappaInputs(classSums: tf.Tensor, counts: tf.Tensor, fn: string): number {
  checkMatrix(classSums, fn, 'classSums');
  checkTensor(counts, fn, 'counts');
  const [C, d] = classSums.shape;
  if (counts.rank !== 1 || counts.shape[0] !== C) throw new Error(`${fn}: 'counts' must have shape [${C}] (one per class), got [${counts.shape}]`);
  return d;
}

function marginsFromValues(sums: Values, n: Values, d: number, opts: KappaOptions, fn: string): Float32Array {
  for (let k = 0; k < sums.length; k++) {
    if (!Number.isFinite(sums[k])) throw new Error(`${fn}: 'classSums' must be finite, found ${sums[k]} at [${Math.floor(k / d)}, ${k % d}]`);
  }
  for (let c = 0; c < n.length; c++) {
    if (!Number.isInteger(n[c]) || n[c] < 0) throw new Error(`${fn}: 'counts'[${c}] = ${n[c]} must be a non-negative integer`);
  }
  return kappaMarginsFromArrays(sums, n, d, resolve(opts, fn));
}

export interface KappaMemoryOptions extends KappaOptions {
  /** Number of training samples (sample ids run over [0, numSamples)). */
  numSamples: number;
  /** Feature dimension d. */
  dim: number;
  numClasses: number;
  /** Weight of the old memory in z̄ ← normalize(α·z̄ + (1 − α)·z) (paper: 0.1). */
  momentum?: number;
  /**
   * 'memory' (default): the per-sample feature memory. 'momentum-encoder': `update` takes a
   * momentum encoder's features, added to per-class sums that restart every epoch.
   */
  source?: KappaSource;
}

export type KappaSource = 'memory' | 'momentum-encoder';

/**
 * One momentum-encoder step, θ_k ← μ·θ_k + (1 − μ)·θ for every parameter of `encoder`
 * (variables, updated in place) from the trained `params` of the same names (official: μ = 0.9).
 *
 * @example momentumEncoderUpdate(encoder, store.snapshot(), 0.9);
 */
export function momentumEncoderUpdate(encoder: Record<string, tf.Variable>, params: Record<string, tf.Tensor>, momentum = 0.9): void {
  const fn = 'momentumEncoderUpdate';
  checkNumber(momentum, fn, 'momentum', 0, 1);
  for (const [name, v] of Object.entries(encoder)) {
    const p = params[name];
    if (!(p instanceof tf.Tensor)) throw new Error(`${fn}: 'params' has no '${name}' (the encoder must mirror the trained parameters)`);
    if (p.shape.join() !== v.shape.join()) throw new Error(`${fn}: '${name}' is [${p.shape}] in params and [${v.shape}] in the encoder`);
  }
  tf.tidy(() => {
    for (const [name, v] of Object.entries(encoder)) v.assign(tf.add(tf.mul(v, momentum), tf.mul(params[name], 1 - momentum)));
  });
}

/**
 * The per-sample feature memory of KappaFace and its per-class sums, kept in JS (float32
 * memory, float64 sums) so that no tensor outlives a step.
 *
 * @example
 * const mem = new KappaMemory({ numSamples: N, dim: 512, numClasses: C });
 * await mem.update(sampleIds, embeddings, labels); // every step
 * const m = mem.margins();                        // m0 everywhere in the first epoch
 * mem.endEpoch();                                 // margins for the next epoch
 */
export class KappaMemory {
  readonly numSamples: number;
  readonly dim: number;
  readonly numClasses: number;
  readonly source: KappaSource;
  /** Completed epochs. */
  epoch = 0;
  private readonly opts: Required<KappaOptions>;
  private readonly momentum: number;
  private readonly memory: Float32Array;
  private readonly sampleClass: Int32Array;
  private readonly sums: Float64Array;
  private readonly counts: Float64Array;
  private current: Float32Array;

  constructor(opts: KappaMemoryOptions) {
    const fn = 'KappaMemory';
    for (const k of ['numSamples', 'dim', 'numClasses'] as const) {
      if (!Number.isInteger(opts[k]) || opts[k] < 1) throw new Error(`${fn}: '${k}' must be a positive integer, got ${opts[k]}`);
    }
    this.opts = resolve(opts, fn);
    this.momentum = opts.momentum ?? 0.1;
    checkNumber(this.momentum, fn, 'momentum', 0, 1);
    this.source = opts.source ?? 'memory';
    if (this.source !== 'memory' && this.source !== 'momentum-encoder') throw new Error(`${fn}: 'source' must be 'memory' or 'momentum-encoder', got ${String(this.source)}`);
    this.numSamples = opts.numSamples;
    this.dim = opts.dim;
    this.numClasses = opts.numClasses;
    // The encoder source keeps no per-sample memory.
    this.memory = new Float32Array(this.source === 'memory' ? opts.numSamples * opts.dim : 0);
    this.sampleClass = new Int32Array(opts.numSamples).fill(-1);
    this.sums = new Float64Array(opts.numClasses * opts.dim);
    this.counts = new Float64Array(opts.numClasses);
    this.current = new Float32Array(opts.numClasses).fill(this.opts.m0);
  }

  /**
   * z̄ᵢ ← normalize(α·z̄ᵢ + (1−α)·zᵢ) for each row, and the class sums follow; with the
   * momentum-encoder source, normalize(zᵢ) of the encoder's features is added to its class's
   * sum for the epoch. Reads the ids, labels and features once, asynchronously, and checks
   * their values before anything changes.
   *
   * @example await mem.update(sampleIds, embeddings, labels);
   */
  async update(sampleIds: tf.Tensor, features: tf.Tensor, labels: tf.Tensor): Promise<void> {
    const fn = 'KappaMemory.update';
    const B = this.checkUpdate(sampleIds, features, labels, fn);
    const [ids, ys, z] = await Promise.all([sampleIds.data(), labels.data(), features.data()]);
    this.apply(ids, ys, z, B, fn);
  }

  private checkUpdate(sampleIds: tf.Tensor, features: tf.Tensor, labels: tf.Tensor, fn: string): number {
    checkMatrix(features, fn, 'features', undefined, this.dim);
    const B = features.shape[0];
    checkLabels(labels, fn, B);
    checkLabels(sampleIds, fn, B, 'sampleIds');
    return B;
  }

  private apply(ids: Values, ys: Values, z: Values, B: number, fn: string): void {
    // Values are checked here, on what was read, before anything changes: an id out of range
    // would write past the memory unseen, and a NaN would poison a class sum for good.
    for (let i = 0; i < B; i++) {
      if (!(ids[i] >= 0 && ids[i] < this.numSamples)) throw new Error(`${fn}: 'sampleIds'[${i}] = ${ids[i]} is out of range; sample ids must be in [0, ${this.numSamples})`);
      if (!(ys[i] >= 0 && ys[i] < this.numClasses)) throw new Error(`${fn}: 'labels'[${i}] = ${ys[i]} is out of range; labels must be in [0, ${this.numClasses})`);
    }
    for (let j = 0; j < B * this.dim; j++) {
      if (!Number.isFinite(z[j])) throw new Error(`${fn}: 'features' must be finite, found ${z[j]} at [${Math.floor(j / this.dim)}, ${j % this.dim}]`);
    }
    const d = this.dim;
    if (this.source === 'momentum-encoder') {
      for (let i = 0; i < B; i++) {
        let zn = 0;
        for (let k = 0; k < d; k++) zn += z[i * d + k] ** 2;
        zn = Math.sqrt(zn) || 1;
        for (let k = 0; k < d; k++) this.sums[ys[i] * d + k] += z[i * d + k] / zn;
        this.counts[ys[i]] += 1;
      }
      return;
    }
    const a = this.momentum;
    const next = new Float64Array(d);
    for (let i = 0; i < B; i++) {
      const id = ids[i];
      const y = ys[i];
      const prev = this.sampleClass[id];
      if (prev !== -1 && prev !== y) throw new Error(`${fn}: sample ${id} was class ${prev} and is now labelled ${y}`);
      let zn = 0;
      for (let k = 0; k < d; k++) zn += z[i * d + k] ** 2;
      zn = Math.sqrt(zn) || 1;
      let nn = 0;
      for (let k = 0; k < d; k++) {
        next[k] = a * this.memory[id * d + k] + (1 - a) * (z[i * d + k] / zn);
        nn += next[k] ** 2;
      }
      nn = Math.sqrt(nn) || 1;
      for (let k = 0; k < d; k++) {
        const v = next[k] / nn;
        this.sums[y * d + k] += v - this.memory[id * d + k];
        this.memory[id * d + k] = v;
      }
      if (prev === -1) {
        this.sampleClass[id] = y;
        this.counts[y] += 1;
      }
    }
  }

  /**
   * Recomputes the margins from the memory (call once an epoch, at its end). With the
   * momentum-encoder source the epoch's class sums and counts then restart from zero.
   */
  endEpoch(): void {
    this.current = kappaMarginsFromArrays(this.sums, this.counts, this.dim, this.opts);
    this.epoch += 1;
    if (this.source === 'momentum-encoder') {
      this.sums.fill(0);
      this.counts.fill(0);
    }
  }

  /** The current margins [C] in radians (m0 for every class until the first `endEpoch`). */
  margins(): tf.Tensor1D {
    return tf.tensor1d(this.current);
  }

  /** Per-class sums [C,d] and counts [C] of the memory as tensors (for inspection and tests). */
  classStats(): { classSums: tf.Tensor2D; counts: tf.Tensor1D } {
    return {
      classSums: tf.tensor2d(Float32Array.from(this.sums), [this.numClasses, this.dim]),
      counts: tf.tensor1d(Float32Array.from(this.counts)),
    };
  }
}
