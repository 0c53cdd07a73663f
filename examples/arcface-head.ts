/**
 * A MarginHead (ArcFace) training loop from the library: a linear embedding of points from
 * four well-separated clusters, trained with the angular margin; the margin-free logits then
 * classify held-out points.
 *
 *   node dist/examples/arcface-head.js
 *
 * `tf` comes from vlmargin: a second tfjs install would register every kernel twice.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, MarginHead, tf } from 'vlmargin';

/** Trains for `steps` steps; returns the first and last loss and the accuracy on new points. */
export async function main(steps = 60, backend: 'auto' | 'wasm' | 'cpu' | 'webgpu' | 'tensorflow' = 'auto'): Promise<{ lossFirst: number; lossLast: number; accuracy: number }> {
  await initBackend({ prefer: backend });
  const classes = 4;
  const dim = 8;
  const centres = tf.randomNormal([classes, dim], 0, 3, 'float32', 1);
  const sample = (n: number, seed: number) => tf.tidy(() => {
    const labels = tf.tensor1d(Array.from({ length: n }, (_, i) => i % classes), 'int32');
    const points = tf.add(tf.gather(centres, labels), tf.randomNormal([n, dim], 0, 0.5, 'float32', seed));
    return { points, labels };
  });
  const train = sample(64, 2);
  const test = sample(40, 3);
  // tf.variable keeps its initial tensor alive; tidy disposes it (variables survive a tidy).
  const embed = tf.tidy(() => tf.variable(tf.randomNormal([dim, 16], 0, 0.3, 'float32', 4)));
  const head = new MarginHead({ name: 'arcface', numClasses: classes, dim: 16, scale: 16, m2: 0.3, seed: 5 });
  const optimizer = tf.train.adam(0.02);
  const losses: number[] = [];
  for (let step = 0; step < steps; step++) {
    const loss = optimizer.minimize(() => head.loss(tf.matMul(train.points, embed), train.labels).loss as tf.Scalar, true, [embed, head.weight]);
    losses.push((await loss!.data())[0]);
    loss!.dispose();
  }
  const predicted = tf.tidy(() => tf.argMax(head.logits(tf.matMul(test.points, embed)), 1));
  const right = tf.tidy(() => tf.sum(tf.cast(tf.equal(predicted, test.labels), 'float32')));
  const accuracy = (await right.data())[0] / 40;
  tf.dispose([centres, train.points, train.labels, test.points, test.labels, embed, predicted, right]);
  head.dispose();
  optimizer.dispose();
  return { lossFirst: losses[0], lossLast: losses[losses.length - 1], accuracy };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = await main();
  console.log(`ArcFace loss ${r.lossFirst.toFixed(3)} → ${r.lossLast.toFixed(3)}; accuracy on new points ${(100 * r.accuracy).toFixed(0)} % (chance 25 %)`);
}
