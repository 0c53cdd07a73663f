/**
 * Heads on the combined angular margin s·(cos(m1·θ_y + m2) − m3): NormFace (no margin),
 * ArcFace, CosFace, AM-softmax and AAM-softmax.
 */
import { z } from 'zod';
import { tf } from '../../backend/tf.js';
import { applyMargin, targetCrossEntropy, type MarginSpec, type RowScale } from '../core.js';
import { combinedMargin } from '../combined.js';
import { angleOption, commonHeadOptions, defineHead, scaleOption, type LogitsInput, type PerSampleInput } from './define.js';

type T = tf.Tensor;

/** Cross-entropy of s·(margin logits) for a margin on cos θ. */
export function scaledMarginCe(cosine: T, labels: T, spec: MarginSpec, scale: RowScale, detachMargin: boolean): T {
  const { logits, targetLogit } = applyMargin(cosine, labels, spec, { scale, detachMargin });
  return targetCrossEntropy(logits, targetLogit);
}

/** s·cos θ, the evaluation logits of every head here. */
export const scaledCosineLogits = ({ cosine, settings }: LogitsInput<{ scale: number }>): T => tf.mul(cosine(), settings.scale);

export const normface = defineHead({
  schema: z.object({ name: z.literal('normface'), ...commonHeadOptions, scale: scaleOption(64) }),
  perSample: ({ cosine, labels, settings: s }) => scaledMarginCe(cosine(), labels, {}, s.scale, false),
  logits: scaledCosineLogits,
});

export const arcface = defineHead({
  schema: z.object({
    name: z.literal('arcface'), ...commonHeadOptions, scale: scaleOption(64), m1: z.number().positive().default(1), m2: angleOption(0.5),
    m3: z.number().default(0), easyMargin: z.boolean().default(false), detachMargin: z.boolean().default(false),
  }),
  perSample: ({ cosine, labels, settings: s }) => scaledMarginCe(cosine(), labels, combinedMargin(s.m1, s.m2, s.m3, s.easyMargin), s.scale, s.detachMargin),
  logits: scaledCosineLogits,
});

const cosineMargin = ({ cosine, labels, settings: s }: PerSampleInput<{ scale: number; m3: number; detachMargin: boolean }, unknown>): T =>
  scaledMarginCe(cosine(), labels, combinedMargin(1, 0, s.m3, false), s.scale, s.detachMargin);

export const cosface = defineHead({
  schema: z.object({ name: z.literal('cosface'), ...commonHeadOptions, scale: scaleOption(64), m3: z.number().default(0.35), detachMargin: z.boolean().default(false) }),
  perSample: cosineMargin,
  logits: scaledCosineLogits,
});

export const amSoftmax = defineHead({
  schema: z.object({ name: z.literal('am-softmax'), ...commonHeadOptions, scale: scaleOption(30), m3: z.number().default(0.2), detachMargin: z.boolean().default(false) }),
  perSample: cosineMargin,
  logits: scaledCosineLogits,
});

export const aamSoftmax = defineHead({
  schema: z.object({
    name: z.literal('aam-softmax'), ...commonHeadOptions, scale: scaleOption(30), m2: angleOption(0.2), easyMargin: z.boolean().default(false),
    detachMargin: z.boolean().default(false),
  }),
  perSample: ({ cosine, labels, settings: s }) => scaledMarginCe(cosine(), labels, combinedMargin(1, s.m2, 0, s.easyMargin), s.scale, s.detachMargin),
  logits: scaledCosineLogits,
});
