/** Plain softmax cross-entropy on W·x: the baseline head, without normalisation or margin. */
import { z } from 'zod';
import { tf } from '../../backend/tf.js';
import { oneHotFloat, targetCrossEntropy } from '../core.js';
import { commonHeadOptions, defineHead } from './define.js';

export const softmax = defineHead({
  schema: z.object({ name: z.literal('softmax'), ...commonHeadOptions }),
  perSample: ({ x, W, labels, settings: s }) => {
    const logits = tf.matMul(x, W, false, true);
    const target = tf.sum(tf.mul(logits, oneHotFloat(labels, s.numClasses)), 1);
    return targetCrossEntropy(logits, target);
  },
  logits: ({ x, W }) => tf.matMul(x, W, false, true),
});
