/** SphereFace-R (Liu et al. 2022): the multiplicative margin revived, v1 or v2, under no, hard or soft feature normalisation. */
import { z } from 'zod';
import { tf } from '../../backend/tf.js';
import { rowNorm } from '../core.js';
import { sphereFaceRPerSample, sphereFaceRSettings } from '../sphereFaceR.js';
import { commonHeadOptions, defineHead, scaleOption } from './define.js';

export const sphereFaceR = defineHead({
  schema: z.object({
    name: z.literal('sphereface-r'), ...commonHeadOptions, scale: scaleOption(30), m: z.number().positive().default(1.5),
    version: z.enum(['v1', 'v2']).default('v1'), featureNormalization: z.enum(['none', 'hard', 'soft']).default('hard'),
    lw: z.number().min(0).optional(), t: z.number().min(0).default(0.01), detachMargin: z.boolean().default(true),
    /** The release's margin schedule of the none/soft variants, m = 1 + dm·(milestones passed); replaces m. */
    marginSteps: z.array(z.number().int().min(0)).optional(), dm: z.number().min(0).optional(),
  }),
  create: (s, fn) => sphereFaceRSettings(s, fn),
  perSample: ({ x, cosine, labels, step, state: r }) => sphereFaceRPerSample(cosine(), labels, r, r.norm === 'hard' ? undefined : rowNorm(x), step),
  // Without hard normalisation the training logits scale with ‖x‖, so the evaluation logits do too.
  logits: ({ x, cosine, settings: s }) => (s.featureNormalization === 'hard'
    ? tf.mul(cosine(), s.scale)
    : tf.mul(cosine(), tf.expandDims(rowNorm(x), 1))),
});
