/**
 * The verification protocol in one place: embed every image a pairs file names (optionally
 * averaging with the mirrored image's embedding), score each pair by cosine similarity, and
 * compute the verification metrics with the file's folds.
 */
import sharp from 'sharp';
import pLimit from 'p-limit';
import { tf } from '../backend/tf.js';
import { verificationMetrics, type VerificationMetrics } from '../eval/verification.js';
import type { Params } from '../nn/params.js';
import { embedImages, type BackboneConfig } from './backbone.js';
import { readPairs } from './pairs.js';

/** Decodes one image file to floats in [−1, 1] (size²·3); errors name the file. */
export async function readImageFloats(file: string, size: number): Promise<Float32Array> {
  let data: Buffer;
  try {
    data = await sharp(file).removeAlpha().toColorspace('srgb').resize(size, size, { fit: 'fill' }).raw().toBuffer();
  } catch (e) {
    throw new Error(`image ${file}: cannot decode (${(e as Error).message.split('\n')[0]})`);
  }
  return Float32Array.from(data, (v) => v / 127.5 - 1);
}

function mirror(img: Float32Array, S: number): Float32Array {
  const out = new Float32Array(img.length);
  for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) for (let k = 0; k < 3; k++) out[(y * S + x) * 3 + k] = img[(y * S + S - 1 - x) * 3 + k];
  return out;
}

/**
 * Unit-norm embeddings [N·d] of float images (each size²·3), each batch read asynchronously;
 * with `flip`, each is the normalised sum of the image's and its mirror's embeddings.
 *
 * @example const emb = await embedFloatImages(params, cfg, images, { flip: true });
 */
export async function embedFloatImages(params: Params, cfg: BackboneConfig, images: Float32Array[], opts: { flip?: boolean; batchSize?: number } = {}): Promise<Float32Array> {
  const bs = batchSizeOf(opts.batchSize, 'embedFloatImages');
  const out = new Float32Array(images.length * cfg.embedDim);
  for (let s = 0; s < images.length; s += bs) {
    const e = embedChunk(params, cfg, images.slice(s, s + bs), opts.flip);
    try {
      out.set(await e.data(), s * cfg.embedDim);
    } finally {
      e.dispose();
    }
  }
  return out;
}

function batchSizeOf(batchSize: number | undefined, fn: string): number {
  const bs = batchSize ?? 128;
  if (!Number.isInteger(bs) || bs < 1) throw new Error(`${fn}: 'batchSize' must be a positive integer, got ${batchSize}`);
  return bs;
}

/** Unit-norm embeddings [n, d] of one batch of images. */
function embedChunk(params: Params, cfg: BackboneConfig, chunk: Float32Array[], flip: boolean | undefined): tf.Tensor {
  const S = cfg.imageSize;
  const buf = new Float32Array(chunk.length * S * S * 3);
  chunk.forEach((im, i) => buf.set(im, i * S * S * 3));
  return tf.tidy(() => {
    let emb: tf.Tensor = embedImages(params, tf.tensor4d(buf, [chunk.length, S, S, 3]), cfg);
    if (flip) {
      const fbuf = new Float32Array(buf.length);
      chunk.forEach((im, i) => fbuf.set(mirror(im, S), i * S * S * 3));
      emb = tf.add(tf.div(emb, tf.norm(emb, 2, 1, true)), l2(embedImages(params, tf.tensor4d(fbuf, [chunk.length, S, S, 3]), cfg)));
    }
    return l2(emb);
  });
}

function l2(x: tf.Tensor): tf.Tensor {
  return tf.div(x, tf.maximum(tf.norm(x, 2, 1, true), 1e-12));
}

export interface PairVerification {
  scores: Float64Array;
  labels: Uint8Array;
  metrics: VerificationMetrics;
  folds: number;
}

/**
 * Cosine scores and verification metrics of a model on a pairs file whose images are under
 * `imagesDir`. A pairs file naming a missing image is an error naming the file and line.
 *
 * @example const r = await verifyPairs(params, cfg, 'ids/pairs.txt', 'ids/verify', { flip: true }); r.metrics.eer
 */
export async function verifyPairs(
  params: Params, cfg: BackboneConfig, pairsFile: string, imagesDir: string, opts: { flip?: boolean; farTargets?: number[] } = {},
): Promise<PairVerification> {
  const p = await readPairs(pairsFile, imagesDir);
  const keys = [...p.paths.keys()];
  const index = new Map(keys.map((k, i) => [k, i]));
  const limit = pLimit(4);
  const images = await Promise.all(keys.map((k) => limit(() => readImageFloats(p.paths.get(k)!, cfg.imageSize))));
  const emb = await embedFloatImages(params, cfg, images, { flip: opts.flip });
  const d = cfg.embedDim;
  const scores = new Float64Array(p.pairs.length);
  const labels = new Uint8Array(p.pairs.length);
  p.pairs.forEach((q, i) => {
    const a = index.get(`${q.a.name}#${q.a.n}`)! * d;
    const b = index.get(`${q.b.name}#${q.b.n}`)! * d;
    let dot = 0;
    for (let k = 0; k < d; k++) dot += emb[a + k] * emb[b + k];
    scores[i] = dot;
    labels[i] = q.label;
  });
  const folds = Math.min(p.folds > 1 ? p.folds : 10, p.pairs.length);
  return { scores, labels, folds, metrics: verificationMetrics(scores, labels, { folds, farTargets: opts.farTargets }) };
}
