/** SphereFace / A-softmax (Liu et al. 2017): W normalised, x not, so the logits carry ‖x‖. */
import { z } from 'zod';
import { tf } from '../../backend/tf.js';
import { rowNorm } from '../core.js';
import { sphereFaceLambda, sphereFaceMargin } from '../sphereface.js';
import { scaledMarginCe } from './combined.js';
import { commonHeadOptions, defineHead } from './define.js';

export const sphereface = defineHead({
  schema: z.object({
    name: z.literal('sphereface'), ...commonHeadOptions, m: z.number().int().min(1).default(4),
    lambdaBase: z.number().min(0).default(1000), lambdaGamma: z.number().min(0).default(0.12),
    lambdaPower: z.number().min(0).default(1), lambdaMin: z.number().min(0).default(5), detachMargin: z.boolean().default(false),
  }),
  perSample: ({ x, cosine, labels, step, settings: s }) => {
    const lambda = sphereFaceLambda(step, { base: s.lambdaBase, gamma: s.lambdaGamma, power: s.lambdaPower, lambdaMin: s.lambdaMin });
    return scaledMarginCe(cosine(), labels, sphereFaceMargin(s.m, lambda), rowNorm(x), s.detachMargin);
  },
  logits: ({ x, cosine }) => tf.mul(cosine(), tf.expandDims(rowNorm(x), 1)),
});
