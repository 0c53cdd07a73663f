/**
 * The weighting network of Meta-Weight-Net (Shu et al., NeurIPS 2019): an MLP 1 → h → 1 with
 * ReLU and a sigmoid output that maps a sample's (detached) loss to its weight in (0, 1).
 *
 * Its parameters are its own `tf.Variable`s with their own optimizer, updated only by the
 * bilevel step (metaStep.ts). The forward is a pure function of a parameter record so the
 * step can evaluate it on the variables or on plain tensors, and it uses the second-order-safe
 * sigmoid: the virtual step differentiates through tensors the net produced.
 *
 * Defaults follow the released Meta-Weight-Net code: h = 100, Adam with lr 1e-3 and weight
 * decay 1e-4 (here decoupled, AdamW-style, β = (0.9, 0.999), ε = 1e-8); SGD with momentum 0.9
 * is the alternative. With Adam the scale of the hypergradient (which grows with the virtual
 * learning rate α) mostly cancels, so α mainly needs to be large enough that the
 * hypergradient is not lost under ε.
 */
import { tf } from '../backend/tf.js';
import { mulberry32 } from '../util/rng.js';
import { sigmoid } from '../backend/safeOps.js';
import { AdamW, SGD, type Optimizer } from '../train/optimizer.js';

type Params = Record<string, tf.Tensor>;

/** Names of the weight net's parameters, in this order. */
export const WEIGHT_NET_PARAM_NAMES = ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias'] as const;

export interface WeightNetOptions {
  /** Hidden width h. Default 100 (64 is also used). */
  hidden?: number;
  /** Seed of the initial values. Default 0. */
  seed?: number;
  /** Default 'adam'. */
  optimizer?: 'adam' | 'sgd';
  /** Learning rate of the net's optimizer (β in the design notes). Default 1e-3 (1e-4 is the slower choice). */
  lr?: number;
  /** Decay: decoupled for Adam, L2 added to the gradient for SGD. Default 1e-4. */
  weightDecay?: number;
  /** SGD momentum. Default 0.9; ignored by Adam. */
  momentum?: number;
}

/** mulberry32 draws, uniform in [−bound, bound). */
function uniformValues(n: number, seed: number, bound: number): Float32Array {
  const u = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * u() - 1) * bound;
  return out;
}

function checkLosses(losses: unknown, fn: string): asserts losses is tf.Tensor {
  if (!(losses instanceof tf.Tensor) || losses.rank !== 1 || losses.dtype !== 'float32') {
    const got = losses instanceof tf.Tensor ? `${losses.dtype} [${losses.shape}]` : typeof losses;
    throw new Error(`${fn}: 'losses' must be a float32 tensor [B] of per-sample losses, got ${got}`);
  }
}

/**
 * The loss → weight MLP and its optimizer.
 *
 * @example
 * const net = new WeightNet({ hidden: 100, lr: 1e-3 });
 * const w = net.forward(tf.tensor1d([0.2, 3.5]));   // [2] in (0, 1)
 * net.step(hypergrads);                             // φ ← φ − β·∇φ L_meta (Adam)
 * net.dispose();
 */
export class WeightNet {
  readonly hidden: number;
  readonly lr: number;
  /** `fc1.weight` [1, h], `fc1.bias` [h], `fc2.weight` [h, 1], `fc2.bias` [1]. */
  readonly params: Record<string, tf.Variable>;
  readonly optimizer: Optimizer;

  constructor(opts: WeightNetOptions = {}) {
    const { hidden = 100, seed = 0, optimizer = 'adam', lr = 1e-3, weightDecay = 1e-4, momentum = 0.9 } = opts;
    if (!Number.isInteger(hidden) || hidden < 1) throw new Error(`WeightNet: 'hidden' must be a positive integer, got ${hidden}`);
    if (!Number.isInteger(seed)) throw new Error(`WeightNet: 'seed' must be an integer, got ${seed}`);
    if (optimizer !== 'adam' && optimizer !== 'sgd') throw new Error(`WeightNet: 'optimizer' must be 'adam' or 'sgd', got ${String(optimizer)}`);
    if (!(lr > 0) || !Number.isFinite(lr)) throw new Error(`WeightNet: 'lr' must be a finite number > 0, got ${lr}`);
    this.hidden = hidden;
    this.lr = lr;
    // PyTorch's nn.Linear initialisation, U(±1/√fan_in), as in the released code.
    const b2 = 1 / Math.sqrt(hidden);
    const init: [string, number[], number][] = [
      ['fc1.weight', [1, hidden], 1], ['fc1.bias', [hidden], 1], ['fc2.weight', [hidden, 1], b2], ['fc2.bias', [1], b2],
    ];
    this.params = {};
    init.forEach(([name, shape, bound], i) => {
      const values = uniformValues(shape.reduce((a, b) => a * b, 1), seed * 4 + i + 1, bound);
      this.params[name] = tf.tidy(() => tf.variable(tf.tensor(values, shape, 'float32'), true));
    });
    this.optimizer = optimizer === 'adam'
      ? new AdamW(this.params, { lr, betas: [0.9, 0.999], eps: 1e-8, weightDecay })
      : new SGD(this.params, { lr, momentum, weightDecay });
  }

  /**
   * Weights V(ℓ) ∈ (0, 1) [B] of per-sample losses [B]. The losses should be detached (the
   * weight is a function of the loss value, not a path for the model's gradient); `params`
   * replaces the variables (e.g. tensors on a gradient tape).
   *
   * @example net.forward(tf.tensor1d([0.1, 2.0])) // Tensor [2]
   */
  forward(losses: tf.Tensor, params: Params = this.params): tf.Tensor {
    checkLosses(losses, 'WeightNet.forward');
    for (const name of WEIGHT_NET_PARAM_NAMES) {
      if (!(params[name] instanceof tf.Tensor)) throw new Error(`WeightNet.forward: 'params' lacks '${name}'`);
    }
    return tf.tidy(() => {
      const x = tf.reshape(losses, [-1, 1]) as tf.Tensor2D;
      const h = tf.relu(tf.add(tf.matMul(x, params['fc1.weight'] as tf.Tensor2D), params['fc1.bias']));
      const z = tf.add(tf.matMul(h as tf.Tensor2D, params['fc2.weight'] as tf.Tensor2D), params['fc2.bias']);
      return tf.reshape(sigmoid(z), [-1]);
    });
  }

  /** V(ℓ) for plain numbers (no tensors escape; read asynchronously, so it works on every backend). */
  async weightsOf(losses: ArrayLike<number>): Promise<Float32Array> {
    if (losses === null || typeof losses !== 'object' || typeof losses.length !== 'number') {
      throw new Error('WeightNet.weightsOf: \'losses\' must be an array of numbers');
    }
    if (losses.length === 0) return new Float32Array(0);
    const v = tf.tidy(() => this.forward(tf.tensor1d(Float32Array.from(losses))));
    try {
      return Float32Array.from(await v.data());
    } finally {
      v.dispose();
    }
  }

  /** One optimizer step on the net's parameters with gradients keyed as `params`. */
  step(grads: Record<string, tf.Tensor>): void {
    this.optimizer.step(grads);
  }

  /** Copies values into the parameters (a checkpoint restore); shapes must match. */
  loadParams(values: Record<string, tf.Tensor>): void {
    for (const name of WEIGHT_NET_PARAM_NAMES) {
      const v = values[name];
      if (!(v instanceof tf.Tensor)) throw new Error(`WeightNet.loadParams: missing '${name}'`);
      if (!tf.util.arraysEqual(v.shape, this.params[name].shape)) {
        throw new Error(`WeightNet.loadParams: '${name}' has shape [${v.shape}], expected [${this.params[name].shape}]`);
      }
    }
    tf.tidy(() => { for (const name of WEIGHT_NET_PARAM_NAMES) this.params[name].assign(tf.cast(values[name], 'float32')); });
  }

  /** Frees the parameters and the optimizer state. */
  dispose(): void {
    this.optimizer.dispose();
    for (const v of Object.values(this.params)) v.dispose();
  }
}
