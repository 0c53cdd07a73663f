/** SphereFace2 (Wen et al. 2022): C one-vs-all binary problems with a learnable bias b. */
import { z } from 'zod';
import { tf } from '../../backend/tf.js';
import { sphereFace2InitBias, sphereFace2PerSample } from '../sphereFace2.js';
import { commonHeadOptions, defineHead, scaleOption } from './define.js';

export const sphereFace2 = defineHead({
  schema: z.object({
    name: z.literal('sphereface2'), ...commonHeadOptions, lambda: z.number().gt(0).lt(1).default(0.7), r: scaleOption(40),
    m: z.number().default(0.4), t: z.number().int().min(1).max(16).default(3), bias: z.number().optional(),
    /** OpenSphere's defaults: margin type C, loss weight 50, g and m without gradient. */
    variant: z.enum(['C', 'A', 'M']).default('C'), lw: z.number().min(0).default(50), detachMargin: z.boolean().default(true),
  }),
  initBias: (s) => s.bias ?? sphereFace2InitBias(s.numClasses, s),
  perSample: ({ cosine, labels, bias, settings: s }) => sphereFace2PerSample(cosine(), labels, s, bias as tf.Tensor, s.detachMargin),
  logits: ({ cosine, settings: s }) => tf.mul(cosine(), s.r),
});
