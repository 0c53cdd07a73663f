/**
 * Pre-LN transformer blocks as in CLIP: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
 *
 * Names under a block prefix: `ln_1`, `attn.qkv`, `attn.out`, `ln_2`, `mlp.fc1`, `mlp.fc2`.
 * A stack under `prefix` has blocks `${prefix}.0`, `${prefix}.1`, ….
 */
import { tf } from '../backend/tf.js';
import { attentionBias, attentionSpecs, multiHeadAttention, type AttentionMask } from './attention.js';
import { layerNorm, layerNormSpecs, linearSpecs, mlp, type Activation } from './layers.js';
import type { ParamSpec, Params } from './params.js';

/**
 * Activation recomputation (gradient checkpointing, docs/DESIGN.md §3): `none` keeps every
 * forward intermediate for the backward pass; `blocks` keeps only each block's input and
 * runs the block's forward again inside the backward, so a step's activation memory is one
 * block's instead of all of them, for about one more forward of compute.
 */
export type Recompute = 'none' | 'blocks';

export const RECOMPUTE_MODES: readonly Recompute[] = ['none', 'blocks'];

export interface BlockOptions {
  heads: number;
  activation: Activation;
  eps: number;
  /** Default `none`. With `blocks` the stack may be differentiated once only (no gradient of a gradient). */
  recompute?: Recompute;
}

/**
 * One pre-LN block; `bias` from `attentionBias`. x: [B, L, D] → [B, L, D].
 *
 * @example transformerBlock(params, 'video.blocks.0', x, { heads: 12, activation: 'quickGelu', eps: 1e-5 })
 */
export function transformerBlock(params: Params, prefix: string, x: tf.Tensor, opts: BlockOptions, bias: tf.Tensor | null = null): tf.Tensor {
  return tf.tidy(() => {
    const h = tf.add(x, multiHeadAttention(params, `${prefix}.attn`, layerNorm(params, `${prefix}.ln_1`, x, opts.eps), opts.heads, bias));
    return tf.add(h, mlp(params, `${prefix}.mlp`, layerNorm(params, `${prefix}.ln_2`, h, opts.eps), opts.activation));
  });
}

/** The engine's tape state, which a nested tf.grads inside a backward pass replaces. */
interface TapeState { activeTape: unknown; gradientDepth: number }

function secondOrder(prefix: string): Error {
  return new Error(`transformer '${prefix}': recompute 'blocks' gives first-order gradients only, and this gradient is itself being differentiated (a second-order step such as the meta-learner's); use recompute 'none' there`);
}

/**
 * `transformerBlock` whose backward recomputes the block from its saved input.
 *
 * The block runs inside a tf.customGrad whose inputs are x and the block's parameters, so
 * the outer tape holds one node per block and saves x (and the mask bias), not the block's
 * intermediates; a customGrad's forward runs untaped. The gradient function runs the block
 * again on a fresh tape (tf.grads) and returns d/dx and d/dW. That inner tf.grads resets the
 * engine's active tape, which the outer backward still disposes at its end, so it is put back.
 * The gradient's ops are not recorded against the original x and W (they use the saved
 * copies), so a second differentiation through it would silently miss terms: refused.
 */
function recomputedBlock(params: Params, prefix: string, x: tf.Tensor, opts: BlockOptions, bias: tf.Tensor | null): tf.Tensor {
  const names = Object.keys(params).filter((n) => n.startsWith(`${prefix}.`));
  const run = (xx: tf.Tensor, ws: tf.Tensor[], b: tf.Tensor | null): tf.Tensor => {
    const p: Params = {};
    names.forEach((n, i) => { p[n] = ws[i]; });
    return transformerBlock(p, prefix, xx, opts, b);
  };
  const state = tf.engine().state as unknown as TapeState;
  // Inside a gradient that is itself differentiated (depth 2 and more): refuse before any work.
  if (state.gradientDepth > 1) throw secondOrder(prefix);
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const inputs = args.slice(0, -1) as tf.Tensor[];
    save(bias ? [...inputs, bias] : inputs);
    return {
      value: run(inputs[0], inputs.slice(1), bias),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        if (state.gradientDepth > 0) throw secondOrder(prefix);
        const tape = state.activeTape;
        try {
          const xs = saved[0];
          const ws = saved.slice(1, 1 + names.length);
          const b = bias ? saved[1 + names.length] : null;
          return tf.tidy(() => tf.grads((...t: tf.Tensor[]) => run(t[0], t.slice(1), b))([xs, ...ws], dy));
        } finally {
          state.activeTape = tape;
        }
      },
    };
  });
  return op(x, ...names.map((n) => params[n]));
}

/**
 * `layers` blocks in sequence under `${prefix}.0` …; the mask's bias is built once.
 *
 * @example transformer(params, 'text.blocks', x, 12, { heads: 8, activation: 'quickGelu', eps: 1e-5 }, { causal: true })
 */
export function transformer(params: Params, prefix: string, x: tf.Tensor, layers: number, opts: BlockOptions, mask: AttentionMask = {}): tf.Tensor {
  if (x.rank !== 3) throw new Error(`transformer '${prefix}': 'x' must be [B, L, D], got [${x.shape}]`);
  if (!Number.isInteger(layers) || layers < 0) throw new Error(`transformer '${prefix}': 'layers' must be a non-negative integer, got ${layers}`);
  return tf.tidy(() => {
    const [b, l] = x.shape as number[];
    const bias = attentionBias(b, l, mask);
    let h = x;
    const recompute = opts.recompute ?? 'none';
    if (!RECOMPUTE_MODES.includes(recompute)) throw new Error(`transformer '${prefix}': 'recompute' must be one of ${RECOMPUTE_MODES.join(', ')}, got ${String(recompute)}`);
    const block = recompute === 'blocks' ? recomputedBlock : transformerBlock;
    for (let i = 0; i < layers; i++) h = block(params, `${prefix}.${i}`, h, opts, bias);
    return layers === 0 ? tf.clone(h) : h;
  });
}

/**
 * Specs of a stack with CLIP's initialisation: attention in-projection std D^−½, the two
 * residual outputs (2·layers·D)^−½, MLP fc1 (2D)^−½; biases zero, norms (1, 0).
 *
 * @example transformerSpecs('text.blocks', 512, 12, 4).length // 12 blocks × 12 tensors
 */
export function transformerSpecs(prefix: string, width: number, layers: number, mlpRatio: number): ParamSpec[] {
  const attnStd = width ** -0.5;
  const projStd = width ** -0.5 * (2 * Math.max(layers, 1)) ** -0.5;
  const fcStd = (2 * width) ** -0.5;
  const out: ParamSpec[] = [];
  for (let i = 0; i < layers; i++) {
    const p = `${prefix}.${i}`;
    out.push(
      ...layerNormSpecs(`${p}.ln_1`, width),
      ...attentionSpecs(`${p}.attn`, width, attnStd, projStd),
      ...layerNormSpecs(`${p}.ln_2`, width),
      ...linearSpecs(`${p}.mlp.fc1`, width, mlpRatio * width, fcStd),
      ...linearSpecs(`${p}.mlp.fc2`, mlpRatio * width, width, projStd),
    );
  }
  return out;
}
