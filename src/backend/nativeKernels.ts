/**
 * Launches the native engine can skip. On `tensorflow` every kernel is one TFE_Execute call
 * (about 7 µs more per op than wasm, measured by bench/launches.ts), and in a training step a
 * sixth of them change nothing: a `Reshape` to the shape the tensor already has (tfjs-core's
 * add/mul/div gradients reshape to the input shape unconditionally) and a `Cast` to the dtype it
 * already has (the same gradients cast their operands to float32). Both are answered here the
 * way tfjs-node's own `Identity` kernel is: the output shares the input's data and takes a
 * reference, so the values are the same bytes and nothing is launched. Any other reshape or
 * cast goes to the original kernel.
 */
import { tf } from './tf.js';

interface RefCounting { incRef(dataId: object): void }

let installed = false;

/** Replaces `tensorflow`'s Reshape and Cast with versions that skip no-op launches; idempotent. */
export function registerNativeShortcuts(): void {
  if (installed) return;
  const reshape = tf.getKernel('Reshape', 'tensorflow');
  const cast = tf.getKernel('Cast', 'tensorflow');
  if (!reshape || !cast) return;
  installed = true;
  const passThrough = (x: tf.TensorInfo, backend: unknown): tf.TensorInfo => {
    (backend as RefCounting).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
  tf.unregisterKernel('Reshape', 'tensorflow');
  tf.registerKernel({
    ...reshape,
    kernelFunc: (args) => {
      const x = args.inputs.x as tf.TensorInfo;
      const shape = (args.attrs as { shape: number[] }).shape;
      return tf.util.arraysEqual(x.shape, shape) ? passThrough(x, args.backend) : reshape.kernelFunc(args);
    },
  });
  tf.unregisterKernel('Cast', 'tensorflow');
  tf.registerKernel({
    ...cast,
    kernelFunc: (args) => {
      const x = args.inputs.x as tf.TensorInfo;
      return (args.attrs as { dtype: tf.DataType }).dtype === x.dtype ? passThrough(x, args.backend) : cast.kernelFunc(args);
    },
  });
}
