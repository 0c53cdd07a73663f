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

// tfjs's Sum and Mean gradients broadcast dy by multiplying it with `ones(x.shape)`, a tensor
// made on the host: on webgpu every backward pass uploads one per reduction (for base at batch
// 256, a layer norm's mean over [256, 197, 768] is 155 MB; a tiny step uploaded 1.2 MB where
// its batch is 0.2). Here the ones come from `fill`, which the device makes: the same product
// with the same constant, so the values, and the graph a second-order pass sees, are unchanged.
// (broadcastTo would be a Tile, whose gradient is one slice and add per repeat.)
function expandedDy(dy: tf.Tensor, x: tf.Tensor, axis: number | number[]): tf.Tensor {
  const shape = x.shape.slice();
  for (const a of tf.util.parseAxisParam(axis, x.shape)) shape[a] = 1;
  return tf.mul(tf.reshape(dy, shape), tf.fill(x.shape, 1, 'float32'));
}
// The filter gradient of conv2d has no gradient in tfjs, so a second-order pass through a
// convolution (the bilevel step through the video stem) would throw. dW = BackpropFilter(x, dy)
// is bilinear in x and dy: with upstream g (filter-shaped), ∂/∂x is the input gradient of
// conv2d(x, g) for upstream dy, and ∂/∂dy is conv2d(x, g) itself.
if (!tf.getGradient('Conv2DBackpropFilter')) {
  tf.registerGradient({
    kernelName: 'Conv2DBackpropFilter',
    inputsToSave: ['x', 'dy'],
    gradFunc: (g: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs?: tf.NamedAttrMap) => {
      const [x, dy] = saved as [tf.Tensor4D, tf.Tensor4D];
      const a = attrs as unknown as { strides: [number, number] | number; pad: 'valid' | 'same'; dataFormat: 'NHWC' | 'NCHW'; dimRoundingMode?: 'floor' | 'round' | 'ceil' };
      if (a.dataFormat === 'NCHW') throw new Error('Conv2DBackpropFilter gradient: only NHWC is supported');
      const filter = g as tf.Tensor4D;
      return {
        x: () => tf.conv2dTranspose(dy, filter, x.shape, a.strides, a.pad, a.dimRoundingMode),
        dy: () => tf.conv2d(x, filter, a.strides, a.pad, 'NHWC', 1, a.dimRoundingMode),
      };
    },
  });
}

const quiet = <T>(f: () => T): T => {
  // registerGradient warns when it replaces a gradient; these replacements are deliberate.
  const warn = console.warn;
  console.warn = () => {};
  try { return f(); } finally { console.warn = warn; }
};
quiet(() => {
  tf.registerGradient({
    kernelName: 'Sum',
    inputsToSave: ['x'],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs?: tf.NamedAttrMap) => {
      const [x] = saved;
      const { axis } = attrs as unknown as { axis: number | number[] };
      return { x: () => expandedDy(dy as tf.Tensor, x, axis) };
    },
  });
  tf.registerGradient({
    kernelName: 'Mean',
    inputsToSave: ['x'],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs?: tf.NamedAttrMap) => {
      const [x] = saved;
      const { axis } = attrs as unknown as { axis: number | number[] };
      const axes = tf.util.parseAxisParam(axis, x.shape);
      const reduceSize = axes.reduce((n, a) => n * x.shape[a], 1);
      return { x: () => tf.div(expandedDy(dy as tf.Tensor, x, axis), reduceSize) };
    },
  });
});

export { tf };
export type Tensor = tf.Tensor;
export type Scalar = tf.Scalar;
export type Tensor1D = tf.Tensor1D;
export type Tensor2D = tf.Tensor2D;
