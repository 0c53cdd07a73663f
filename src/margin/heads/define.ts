/**
 * What a margin head is: an options schema, a per-sample training loss and margin-free
 * evaluation logits. Each head family exports its definitions from one file in this folder,
 * made with {@link defineHead}; registry.ts lists them, and {@link MarginHead} builds any of
 * them by name.
 */
import { z } from 'zod';
import type { tf } from '../../backend/tf.js';

type T = tf.Tensor;

/** Options every head takes. */
export const commonHeadOptions = {
  numClasses: z.number().int().min(2),
  dim: z.number().int().min(1),
  /** Weight λ of the inter-class regulariser λ·R added to the loss (0 = off). */
  interClassLambda: z.number().min(0).default(0),
  /** Search the regulariser's nearest classes (O(C²d)) every this many loss calls, reusing them between. */
  interClassEvery: z.number().int().min(1).default(1),
  /** Seed of W's Xavier-normal initialisation. */
  seed: z.number().int().optional(),
};
/** A logit scale option with the paper's default. */
export const scaleOption = (s: number) => z.number().positive().default(s);
/** An angle option in radians, [0, π], with the paper's default. */
export const angleOption = (m: number) => z.number().min(0).max(Math.PI).default(m);

/** What a head's per-sample loss is given. */
export interface PerSampleInput<S, St> {
  settings: S;
  /** Embeddings x [B,d]. */
  x: T;
  /** int32 labels [B]. */
  labels: T;
  /** Class weights W [C,d] (the head's variable, or the bilevel step's θ'). */
  W: T;
  /** Ŵ, W with unit rows, made once per loss call and shared with the regulariser. */
  wHat: () => T;
  /** cos θ = x̂·Ŵᵀ [B,C]. */
  cosine: () => T;
  /** SphereFace's annealing iteration and SphereFace-R's margin-schedule step. */
  step: number;
  /** The learnable bias (or the bilevel step's value of it), for heads with `initBias`. */
  bias?: T;
  /** What `create` returned. */
  state: St;
}

/** What a head's evaluation logits are given. */
export interface LogitsInput<S> {
  settings: S;
  /** Embeddings x [B,d]. */
  x: T;
  W: T;
  /** cos θ = x̂·Ŵᵀ [B,C]. */
  cosine: () => T;
}

/** One margin head: its schema (`name` literal plus options) and its two functions of the embeddings. */
export interface MarginHeadDefinition<Sch extends z.ZodObject = z.ZodObject, St = unknown> {
  schema: Sch;
  /** Checks that need more than one option (or the class count) and builds per-head state; `fn` names the caller in errors. */
  create?: (settings: z.output<Sch>, fn: string) => St;
  /** The initial value of a learnable scalar bias, for heads that have one. */
  initBias?: (settings: z.output<Sch>) => number;
  /** ℓᵢ [B], inside the caller's tidy. */
  perSample: (input: PerSampleInput<z.output<Sch>, St>) => T;
  /** Margin-free class scores [B,C], inside the caller's tidy. */
  logits: (input: LogitsInput<z.output<Sch>>) => T;
}

/**
 * Types a head definition from its schema.
 * @example
 * export const normface = defineHead({
 *   schema: z.object({ name: z.literal('normface'), ...commonHeadOptions, scale: scaleOption(64) }),
 *   perSample: ({ cosine, labels, settings }) => …,
 *   logits: ({ cosine, settings }) => tf.mul(cosine(), settings.scale),
 * });
 */
export function defineHead<Sch extends z.ZodObject, St = undefined>(def: MarginHeadDefinition<Sch, St>): MarginHeadDefinition<Sch, St> {
  return def;
}
