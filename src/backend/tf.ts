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

// Comparisons are piecewise constant, so their gradient is zero. tfjs registers none, and
// a second-order pass that meets one on the path from the inputs (a max's arg-max mask,
// a clamp's condition) throws. TensorFlow treats them as non-differentiable; so do we.
for (const kernelName of ['Equal', 'NotEqual', 'Greater', 'Less', 'LessEqual']) {
  if (!tf.getGradient(kernelName)) {
    tf.registerGradient({
      kernelName,
      inputsToSave: ['a', 'b'],
      gradFunc: (_dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => ({
        a: () => tf.zerosLike(saved[0]),
        b: () => tf.zerosLike(saved[1]),
      }),
    });
  }
}

// The same for the logical ops that clipByValue's and where's gradients build: without them a
// second-order pass through a clamp throws. tfjs wants float32 gradients even for bool inputs.
for (const kernelName of ['LogicalAnd', 'LogicalOr']) {
  if (!tf.getGradient(kernelName)) {
    tf.registerGradient({
      kernelName,
      inputsToSave: ['a', 'b'],
      gradFunc: (_dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => ({
        a: () => tf.zeros(saved[0].shape),
        b: () => tf.zeros(saved[1].shape),
      }),
    });
  }
}
if (!tf.getGradient('LogicalNot')) {
  tf.registerGradient({
    kernelName: 'LogicalNot',
    inputsToSave: ['x'],
    gradFunc: (_dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => ({ x: () => tf.zeros(saved[0].shape) }),
  });
}

export { tf };
export type Tensor = tf.Tensor;
export type Scalar = tf.Scalar;
export type Tensor1D = tf.Tensor1D;
export type Tensor2D = tf.Tensor2D;
