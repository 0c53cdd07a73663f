/** CAMRI (Nishiyama et al. 2022): an additive angular margin only on rows of the important class. */
import { z } from 'zod';
import { camriRowMargins } from '../camri.js';
import { combinedMargin } from '../combined.js';
import { scaledCosineLogits, scaledMarginCe } from './combined.js';
import { angleOption, commonHeadOptions, defineHead, scaleOption } from './define.js';

export const camri = defineHead({
  schema: z.object({
    name: z.literal('camri'), ...commonHeadOptions, scale: scaleOption(64), marginRad: angleOption(0.5), importantClass: z.number().int().min(0),
    detachMargin: z.boolean().default(false),
  }),
  create: (s, fn) => {
    if (s.importantClass >= s.numClasses) throw new Error(`${fn}: 'importantClass' must be in [0, ${s.numClasses}), got ${s.importantClass}`);
  },
  perSample: ({ cosine, labels, settings: s }) =>
    scaledMarginCe(cosine(), labels, combinedMargin(1, camriRowMargins(labels, s.importantClass, s.marginRad), 0, false), s.scale, s.detachMargin),
  logits: scaledCosineLogits,
});
