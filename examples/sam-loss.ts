/**
 * One SAM contrastive step after another, from the library: a linear projection of each side
 * trained so that paired video and text features meet (the loss falls towards 0).
 *
 *   node dist/examples/sam-loss.js
 *
 * `tf` comes from vlmargin: a second tfjs install would register every kernel twice.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, samContrastiveLoss, tf } from 'vlmargin';

/** Trains for `steps` steps on a fixed batch of 8 pairs; returns the loss of each step. */
export async function main(steps = 30, backend: 'auto' | 'wasm' | 'cpu' | 'webgpu' | 'tensorflow' = 'auto'): Promise<number[]> {
  await initBackend({ prefer: backend });
  const B = 8;
  const d = 16;
  // Paired features: text i is a noisy copy of video i, in another basis.
  const videoFeat = tf.randomNormal([B, d], 0, 1, 'float32', 1);
  const textFeat = tf.tidy(() => tf.add(tf.matMul(videoFeat, tf.randomNormal([d, d], 0, 1, 'float32', 2)), tf.randomNormal([B, d], 0, 0.1, 'float32', 3)));
  // tf.variable keeps its initial tensor alive; tidy disposes it (variables survive a tidy).
  const wVideo = tf.tidy(() => tf.variable(tf.randomNormal([d, d], 0, 0.3, 'float32', 4)));
  const wText = tf.tidy(() => tf.variable(tf.randomNormal([d, d], 0, 0.3, 'float32', 5)));
  const logitScale = tf.tidy(() => tf.variable(tf.scalar(Math.log(10))));
  const optimizer = tf.train.adam(0.05);
  const losses: number[] = [];
  for (let step = 0; step < steps; step++) {
    const loss = optimizer.minimize(() => samContrastiveLoss(
      tf.matMul(videoFeat, wVideo), tf.matMul(textFeat, wText), { marginRad: 0.01, logitScale },
    ).loss as tf.Scalar, true);
    losses.push((await loss!.data())[0]);
    loss!.dispose();
  }
  tf.dispose([videoFeat, textFeat, wVideo, wText, logitScale]);
  optimizer.dispose();
  return losses;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const losses = await main();
  console.log(`SAM loss ${losses[0].toFixed(3)} → ${losses[losses.length - 1].toFixed(3)} over ${losses.length} steps`);
}
