/**
 * The one place vlmargin imports TensorFlow.js from.
 *
 * Ops come from `@tensorflow/tfjs-core`. The core's Node bundle registers no gradient
 * functions; `@tensorflow/tfjs` registers all of them into the global gradient registry
 * that the core shares, so it is imported here once for that side effect.
 */
import '@tensorflow/tfjs';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';

export { tf };
export type Tensor = tf.Tensor;
export type Scalar = tf.Scalar;
export type Tensor1D = tf.Tensor1D;
export type Tensor2D = tf.Tensor2D;
