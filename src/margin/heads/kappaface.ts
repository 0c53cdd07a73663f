/** KappaFace (Oinar et al. 2022): ArcFace with per-class margins from a feature memory ({@link KappaMemory}). */
import { z } from 'zod';
import { tf } from '../../backend/tf.js';
import { combinedMargin } from '../combined.js';
import { KappaMemory } from '../kappaface.js';
import { scaledCosineLogits, scaledMarginCe } from './combined.js';
import { angleOption, commonHeadOptions, defineHead, scaleOption } from './define.js';

export const kappaface = defineHead({
  schema: z.object({
    name: z.literal('kappaface'), ...commonHeadOptions, scale: scaleOption(64), m0: angleOption(0.8), T: z.number().min(0).default(0.4),
    gamma: z.number().min(0).max(1).default(0.7), numSamples: z.number().int().min(1), momentum: z.number().min(0).max(1).default(0.1),
    /** Where the concentration's features come from: the per-sample memory, or a momentum encoder (the official default config). */
    kappaSource: z.enum(['memory', 'momentum-encoder']).default('memory'),
    /** μ of the momentum encoder θ_k ← μ·θ_k + (1 − μ)·θ (official: 0.9). */
    encoderMomentum: z.number().min(0).max(1).default(0.9),
    easyMargin: z.boolean().default(false), detachMargin: z.boolean().default(false),
  }),
  create: (s) => new KappaMemory({
    numSamples: s.numSamples, dim: s.dim, numClasses: s.numClasses, m0: s.m0, T: s.T, gamma: s.gamma, momentum: s.momentum, source: s.kappaSource,
  }),
  perSample: ({ cosine, labels, state: kappa, settings: s }) => {
    const m2 = tf.gather(kappa.margins(), labels);
    return scaledMarginCe(cosine(), labels, combinedMargin(1, m2, 0, s.easyMargin), s.scale, s.detachMargin);
  },
  logits: scaledCosineLogits,
});
