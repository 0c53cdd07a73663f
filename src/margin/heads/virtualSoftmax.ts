/** Virtual softmax (Chen et al. 2018): a virtual class with logit ‖W_y‖·‖x‖ joins the softmax. */
import { z } from 'zod';
import { tf } from '../../backend/tf.js';
import { virtualSoftmaxPerSample } from '../virtualSoftmax.js';
import { commonHeadOptions, defineHead } from './define.js';

export const virtualSoftmax = defineHead({
  schema: z.object({ name: z.literal('virtual-softmax'), ...commonHeadOptions }),
  perSample: ({ x, W, labels }) => virtualSoftmaxPerSample(x, W, labels),
  logits: ({ x, W }) => tf.matMul(x, W, false, true),
});
