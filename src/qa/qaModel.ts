/**
 * Video QA on top of the dual encoder.
 * - Multiple choice as retrieval: score each candidate "question answer" text against the
 *   video by cosine and pick the best ({@link mcLogits}).
 * - Open-ended as classification: fuse the video and question embeddings as
 *   [v, q, v ⊙ q] → linear → ReLU → linear, then a {@link MarginHead} over the answer
 *   vocabulary ({@link OpenQaHead}).
 */
import { tf } from '../backend/tf.js';
import { MarginHead, type MarginHeadConfig } from '../margin/head.js';

function l2Rows(x: tf.Tensor): tf.Tensor {
  return tf.div(x, tf.sqrt(tf.add(tf.sum(tf.square(x), -1, true), 1e-12)));
}

/**
 * Candidate logits [B, K] = scale · cos(video b, candidate b·K + k), for candidates laid out
 * video by video.
 * @example mcLogits(tf.tensor2d([[1, 0]]), tf.tensor2d([[1, 0], [0, 1]]), 2, 10) // [[10, 0]]
 */
export function mcLogits(video: tf.Tensor, candidates: tf.Tensor, k: number, scale: number | tf.Tensor): tf.Tensor2D {
  if (video.rank !== 2 || candidates.rank !== 2) throw new Error(`mcLogits: video and candidates must be 2-D, got [${video.shape}] and [${candidates.shape}]`);
  const [b, d] = video.shape;
  if (!Number.isInteger(k) || k < 2 || candidates.shape[0] !== b * k || candidates.shape[1] !== d) {
    throw new Error(`mcLogits: candidates must be [B·K, d] = [${b}·${k}, ${d}], got [${candidates.shape}]`);
  }
  return tf.tidy(() => {
    const v = tf.reshape(l2Rows(video), [b, 1, d]);
    const c = tf.reshape(l2Rows(candidates), [b, k, d]);
    return tf.mul(tf.sum(tf.mul(v, c), 2), scale) as tf.Tensor2D;
  });
}

/** Mean cross-entropy of multiple-choice logits [B, K] against the correct indices. */
export function mcLoss(logits: tf.Tensor2D, correct: Int32Array): tf.Scalar {
  if (logits.shape[0] !== correct.length) throw new Error(`mcLoss: ${logits.shape[0]} rows but ${correct.length} correct indices`);
  return tf.tidy(() => {
    const logp = tf.logSoftmax(logits);
    return tf.neg(tf.mean(tf.sum(tf.mul(logp, tf.oneHot(tf.tensor1d(correct, 'int32'), logits.shape[1])), 1))) as tf.Scalar;
  });
}

/**
 * Fraction of rows whose largest logit is the correct one (ties go to the lowest index),
 * read asynchronously.
 *
 * @example await argmaxAccuracy(tf.tensor2d([[1, 3], [2, 0]]), [1, 1]) // 0.5
 */
export async function argmaxAccuracy(logits: tf.Tensor2D, correct: ArrayLike<number>): Promise<number> {
  const pred = tf.tidy(() => tf.argMax(logits, 1));
  try {
    return hitRate(await pred.data(), correct);
  } finally {
    pred.dispose();
  }
}

function hitRate(p: ArrayLike<number>, correct: ArrayLike<number>): number {
  let hit = 0;
  for (let i = 0; i < p.length; i++) if (p[i] === correct[i]) hit++;
  return hit / p.length;
}

export interface OpenQaHeadOptions {
  /** Width of the video and question embeddings. */
  embedDim: number;
  hidden?: number;
  /** Width of the features the margin head sees. */
  featureDim?: number;
  /** The margin head: `name` (arcface, cosface, …) and its options; classes and width are filled in. */
  head: Omit<MarginHeadConfig, 'numClasses' | 'dim'> & { name: MarginHeadConfig['name'] };
  numAnswers: number;
  seed?: number;
}

/**
 * Fusion MLP + margin head for open-ended answers.
 * @example
 * const h = new OpenQaHead({ embedDim: 64, head: { name: 'arcface', scale: 16, m2: 0.2 }, numAnswers: 16 });
 * const { loss } = h.loss(videoEmb, questionEmb, labels); const pred = h.predict(videoEmb, questionEmb);
 */
export class OpenQaHead {
  readonly margin: MarginHead;
  readonly mlp: Record<string, tf.Variable>;

  constructor(o: OpenQaHeadOptions) {
    const hidden = o.hidden ?? 128;
    const featureDim = o.featureDim ?? 64;
    if (!Number.isInteger(o.embedDim) || o.embedDim < 1) throw new Error(`OpenQaHead: embedDim must be a positive integer, got ${o.embedDim}`);
    if (!Number.isInteger(hidden) || hidden < 1 || !Number.isInteger(featureDim) || featureDim < 1) throw new Error('OpenQaHead: hidden and featureDim must be positive integers');
    const seed = o.seed ?? 0;
    const inDim = 3 * o.embedDim;
    this.mlp = tf.tidy(() => ({
      'fuse.w1': tf.variable(tf.randomNormal([inDim, hidden], 0, Math.sqrt(2 / inDim), 'float32', seed + 1)),
      'fuse.b1': tf.variable(tf.zeros([hidden])),
      'fuse.w2': tf.variable(tf.randomNormal([hidden, featureDim], 0, Math.sqrt(1 / hidden), 'float32', seed + 2)),
    }));
    this.margin = new MarginHead({ ...o.head, numClasses: o.numAnswers, dim: featureDim, seed } as MarginHeadConfig);
  }

  /** Trainable tensors by name (MLP and head). */
  params(): Record<string, tf.Variable> {
    return { ...this.mlp, ...Object.fromEntries(Object.entries(this.margin.params()).map(([k, v]) => [`head.${k}`, v])) };
  }

  /** Fused features [B, featureDim] of video and question embeddings [B, E]. */
  features(video: tf.Tensor, question: tf.Tensor): tf.Tensor2D {
    return tf.tidy(() => {
      const v = l2Rows(video);
      const q = l2Rows(question);
      const x = tf.concat([v, q, tf.mul(v, q)], 1);
      const h = tf.relu(tf.add(tf.matMul(x, this.mlp['fuse.w1']), this.mlp['fuse.b1']));
      return tf.matMul(h, this.mlp['fuse.w2']) as tf.Tensor2D;
    });
  }

  loss(video: tf.Tensor, question: tf.Tensor, labels: tf.Tensor): { loss: tf.Tensor; perSample: tf.Tensor } {
    return tf.tidy(() => {
      const r = this.margin.loss(this.features(video, question), labels);
      return { loss: r.loss, perSample: r.perSample };
    });
  }

  /** Margin-free class scores [B, answers]. */
  logits(video: tf.Tensor, question: tf.Tensor): tf.Tensor2D {
    return tf.tidy(() => this.margin.logits(this.features(video, question)) as tf.Tensor2D);
  }

  dispose(): void {
    tf.dispose(Object.values(this.mlp));
    this.margin.dispose();
  }
}
