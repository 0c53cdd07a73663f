import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm, writeFile, access } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { tf } from '../src/backend/tf.js';
import { backboneConfigSchema, embedImages, initBackbone } from '../src/face/backbone.js';
import { BatchSampler, ImageFolderDataset, toFloatImage, toFloatPixels } from '../src/face/imageFolder.js';
import { generateSynthIdentities } from '../src/face/synthIdentities.js';
import { embedFloatImages } from '../src/face/verify.js';
import { MARGIN_HEAD_NAMES, MarginHead, type MarginHeadConfig } from '../src/margin/head.js';
import { valueAndGradsOf, type Params } from '../src/nn/params.js';
import { AdamW } from '../src/train/optimizer.js';
import { parseTrainClassifierConfig, runTrainClassifier } from '../pipelines/train-classifier.js';
import { tidyData } from './helpers/read.js';

describe('face: image folders, backbone, heads, train-classifier', function () {
  let tmp: string;
  before(async () => { tmp = await mkdtemp(path.join(os.tmpdir(), 'vlm-face-')); });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  it('an image folder decodes to [−1, 1], skips and reports a bad image, and flips/crops by hand', async () => {
    const root = path.join(tmp, 'folder');
    await mkdir(path.join(root, 'alice'), { recursive: true });
    await mkdir(path.join(root, 'bob'), { recursive: true });
    // 2×2 image: left column black, right column white.
    const px = Buffer.from([0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 255, 255]);
    await sharp(px, { raw: { width: 2, height: 2, channels: 3 } }).png().toFile(path.join(root, 'alice', 'a1.png'));
    await sharp(px, { raw: { width: 2, height: 2, channels: 3 } }).png().toFile(path.join(root, 'bob', 'b1.png'));
    await writeFile(path.join(root, 'bob', 'broken.png'), 'not a png');
    const ds = await ImageFolderDataset.open(root, { size: 2 });
    assert.deepEqual(ds.classes, ['alice', 'bob']);
    assert.equal(ds.length, 2);
    assert.equal(ds.skipped.length, 1);
    assert.match(ds.skipped[0].path, /broken\.png$/);
    assert.deepEqual(ds.counts(), [1, 1]);
    const out = new Float32Array(12);
    toFloatImage(ds, 0, out);
    assert.deepEqual([out[0], out[3]], [-1, 1]);
    toFloatImage(ds, 0, out, { flip: true }, () => 0.1); // rand < ½: mirrored
    assert.deepEqual([out[0], out[3]], [1, -1]);
    // Crop offset: rand 0.99 with pad 1 → dx = dy = +1, edge replicated: every pixel is the right column.
    toFloatImage(ds, 0, out, { cropPad: 1 }, () => 0.99);
    assert.deepEqual([out[0], out[3], out[6], out[9]], [1, 1, 1, 1]);
  });

  it('a lazy image folder holds no pixels, decodes a batch on demand like the eager one, and drops a bad image from it', async () => {
    const root = path.join(tmp, 'lazy');
    await mkdir(path.join(root, 'alice'), { recursive: true });
    await mkdir(path.join(root, 'bob'), { recursive: true });
    const px = Buffer.from([0, 0, 0, 255, 255, 255, 10, 20, 30, 200, 100, 50]);
    await sharp(px, { raw: { width: 2, height: 2, channels: 3 } }).png().toFile(path.join(root, 'alice', 'a1.png'));
    await sharp(Buffer.from(px).reverse(), { raw: { width: 2, height: 2, channels: 3 } }).png().toFile(path.join(root, 'bob', 'b1.png'));
    await writeFile(path.join(root, 'bob', 'broken.png'), 'not a png');
    const lazy = await ImageFolderDataset.open(root, { size: 2, lazy: true });
    const eager = await ImageFolderDataset.open(root, { size: 2 });
    assert.deepEqual([lazy.lazy, lazy.pixels.length, lazy.length, lazy.skipped.length], [true, 0, 3, 0]);
    assert.deepEqual([...lazy.labels], [0, 1, 1]);
    const got = await lazy.readImages([2, 0, 1, 0]);
    assert.deepEqual(got.kept, [0, 1, 0]);
    const want = await eager.readImages([0, 1, 0]);
    assert.deepEqual([...got.pixels], [...want.pixels]);
    assert.deepEqual([...got.pixels.subarray(0, 12)], [...px]);
    assert.deepEqual(lazy.skipped.map((x) => path.basename(x.path)), ['broken.png']);
    await lazy.readImages([2]);
    assert.equal(lazy.skipped.length, 1, 'a bad image is reported once');
    const a = new Float32Array(12);
    const b = new Float32Array(12);
    toFloatPixels(got.pixels.subarray(0, 12), 2, a, { flip: true }, () => 0.1);
    toFloatImage(eager, 0, b, { flip: true }, () => 0.1);
    assert.deepEqual([...a], [...b]);
    assert.throws(() => toFloatImage(lazy, 0, a), /opened lazily; read its pixels with readImages/);
    await assert.rejects(lazy.readImages([3]), /index 3 outside \[0, 3\)/);
  });

  it('balanced sampling draws classes uniformly; natural sampling visits every item once an epoch; resume replays', async () => {
    const labels = Int32Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 1]); // class 1 is 10 % of items
    const bal = new BatchSampler(labels, 2, { batchSize: 100, sampling: 'balanced', seed: 3 });
    let ones = 0;
    for (let k = 0; k < 20; k++) for (const i of bal.next()) ones += labels[i];
    assert.ok(Math.abs(ones / 2000 - 0.5) < 0.04, `class 1 share ${ones / 2000}`);
    const nat = new BatchSampler(labels, 2, { batchSize: 5, seed: 3 });
    const seen = [...nat.next(), ...nat.next()].sort((a, b) => a - b);
    assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const a = new BatchSampler(labels, 2, { batchSize: 3, seed: 9 });
    a.next(); a.next();
    const b = new BatchSampler(labels, 2, { batchSize: 3, seed: 9, resumeFrom: a.state() });
    assert.deepEqual(Array.from(b.next()), Array.from(a.next()));
  });

  it('a few AdamW steps lower the loss of every head on a fixed batch, with no tensor growth', async function () {
    this.timeout(60000);
    const cfg = backboneConfigSchema.parse({ imageSize: 8, patch: 4, width: 16, layers: 1, heads: 2, mlpRatio: 2, embedDim: 8 });
    const B = 12;
    const C = 4;
    const x = tf.randomNormal([B, 8, 8, 3], 0, 1, 'float32', 5);
    const y = tf.tensor1d(Array.from({ length: B }, (_, i) => i % C), 'int32');
    const ids = tf.tensor1d(Array.from({ length: B }, (_, i) => i), 'int32');
    for (const name of MARGIN_HEAD_NAMES) {
      const store = initBackbone(cfg, 2);
      const extra: Record<string, unknown> = name === 'kappaface' ? { numSamples: B } : name === 'camri' ? { importantClass: 1 } : {};
      const head = new MarginHead({ name, numClasses: C, dim: cfg.embedDim, seed: 1, ...extra } as MarginHeadConfig);
      const params: Record<string, tf.Variable> = { ...(store.snapshot() as Record<string, tf.Variable>) };
      for (const [k, v] of Object.entries(head.params())) params[`head.${k}`] = v;
      const opt = new AdamW(params, { lr: 3e-3, weightDecay: 0 });
      const lossAt = (p: Params) => head.loss(embedImages(p, x, cfg), y, { weight: p['head.weight'], bias: p['head.bias'], step: 0 }).loss as tf.Scalar;
      const first = (await tidyData(() => lossAt(params)))[0];
      let tensorsAfterFirst = 0;
      for (let s = 0; s < 8; s++) {
        const { value, grads } = valueAndGradsOf(lossAt, params);
        opt.step(grads, 3e-3);
        if (head.kappa) {
          const e = tf.tidy(() => embedImages(params, x, cfg));
          await head.kappa.update(ids, e, y);
          e.dispose();
        }
        tf.dispose([value, ...Object.values(grads)]);
        if (s === 0) tensorsAfterFirst = tf.memory().numTensors;
      }
      assert.equal(tf.memory().numTensors, tensorsAfterFirst, `${name}: tensors grew over steps`);
      const last = (await tidyData(() => lossAt(params)))[0];
      assert.ok(Number.isFinite(first) && last < first, `${name}: loss ${first} → ${last} did not fall`);
      store.dispose(); head.dispose(); opt.dispose();
    }
    tf.dispose([x, y, ids]);
  });

  it('embedFloatImages: batches of 2 give the default batch size\'s embeddings (with and without flip), unit rows, mirror-symmetric with flip', async () => {
    const cfg = backboneConfigSchema.parse({ imageSize: 8, patch: 4, width: 16, layers: 1, heads: 2, mlpRatio: 2, embedDim: 8 });
    const store = initBackbone(cfg, 4);
    const params = store.snapshot();
    const S = 8;
    const u = (await tidyData(() => tf.randomUniform([5 * S * S * 3], -1, 1, 'float32', 9))) as Float32Array;
    const images = Array.from({ length: 5 }, (_, i) => u.slice(i * S * S * 3, (i + 1) * S * S * 3));
    const mirror = (im: Float32Array) => {
      const o = new Float32Array(im.length);
      for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) for (let k = 0; k < 3; k++) o[(y * S + x) * 3 + k] = im[(y * S + S - 1 - x) * 3 + k];
      return o;
    };
    const before = tf.memory().numTensors;
    for (const flip of [false, true]) {
      const small = await embedFloatImages(params, cfg, images, { flip, batchSize: 2 });
      const whole = await embedFloatImages(params, cfg, images, { flip });
      for (let j = 0; j < whole.length; j++) assert.ok(Math.abs(small[j] - whole[j]) < 1e-5, `flip ${flip}, ${j}: ${small[j]} vs ${whole[j]}`);
      for (let i = 0; i < 5; i++) assert.ok(Math.abs(Math.hypot(...small.subarray(i * 8, (i + 1) * 8)) - 1) < 1e-5, `row ${i} not unit`);
    }
    assert.equal(tf.memory().numTensors, before);
    // With flip, an image and its mirror embed alike (the sum of the two views commutes).
    const a = await embedFloatImages(params, cfg, images.slice(0, 2), { flip: true });
    const b = await embedFloatImages(params, cfg, images.slice(0, 2).map(mirror), { flip: true });
    for (let j = 0; j < a.length; j++) assert.ok(Math.abs(a[j] - b[j]) < 1e-5, `mirror ${j}: ${a[j]} vs ${b[j]}`);
    await assert.rejects(() => embedFloatImages(params, cfg, images, { batchSize: 0 }), /'batchSize' must be a positive integer/);
    store.dispose();
  });

  it('train-classifier runs end to end: eval.json with verification and per-class recall; KappaFace margins logged per epoch and plotted', async function () {
    this.timeout(60000);
    const data = path.join(tmp, 'bench');
    await generateSynthIdentities({ out: data, identities: 6, imbalance: 4, maxPerIdentity: 8, testPerIdentity: 2, verifyIdentities: 4, perVerify: 3, folds: 2, pairsPerFold: 4, size: 16 });
    const cfg = parseTrainClassifierConfig({
      name: 't', data: { dir: data }, backend: 'wasm',
      model: { imageSize: 16, patch: 8, width: 16, layers: 1, heads: 2, embedDim: 8 },
      loss: { name: 'kappaface', importantClass: 'id0005' },
      train: { steps: 8, batchSize: 8, warmupSteps: 1 },
    });
    const out = path.join(tmp, 'run');
    const r = await runTrainClassifier(cfg, { out, quiet: true });
    const ev = JSON.parse(await readFile(path.join(out, 'eval.json'), 'utf8'));
    assert.equal(ev.steps, 8);
    assert.equal(ev.verification.pairs, 16);
    assert.equal(ev.classification.images, 12);
    assert.equal(ev.importantClass.name, 'id0005');
    assert.equal(ev.importantClass.trainImages, 2);
    // 31 training images at batch 8 → 4 steps an epoch → 2 epochs in 8 steps.
    const kappa = (await readFile(path.join(out, 'kappa-margins.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(kappa.map((k) => k.epoch), [1, 2]);
    assert.equal(kappa[0].margins.length, 6);
    for (const m of kappa[1].margins) assert.ok(m > 0 && m <= 0.8);
    await access(path.join(out, 'kappa-margins.png'));
    assert.ok(r.eval.verification!.eer >= 0 && r.eval.verification!.eer <= 1);
  });

  it('train-classifier with data.lazyImages trains to the same weights as with the images decoded up front', async function () {
    this.timeout(60000);
    const data = path.join(tmp, 'bench-lazy');
    await generateSynthIdentities({ out: data, identities: 4, imbalance: 2, maxPerIdentity: 6, testPerIdentity: 1, verifyIdentities: 2, perVerify: 2, folds: 1, pairsPerFold: 2, size: 16 });
    const weights = async (lazyImages: boolean): Promise<Buffer> => {
      const cfg = parseTrainClassifierConfig({
        name: 't', data: { dir: data, lazyImages }, backend: 'wasm', seed: 2, loss: { name: 'arcface' },
        model: { imageSize: 16, patch: 8, width: 16, layers: 1, heads: 2, embedDim: 8 },
        train: { steps: 5, batchSize: 4, warmupSteps: 1, checkpointEvery: 5 },
      });
      const out = path.join(tmp, lazyImages ? 'run-lazy' : 'run-eager');
      await runTrainClassifier(cfg, { out, quiet: true });
      return readFile(path.join(out, 'checkpoints', 'step-000005', 'model.safetensors'));
    };
    const eager = await weights(false);
    const lazy = await weights(true);
    assert.ok(eager.equals(lazy), 'lazy and eager image folders trained to different weights');
  });
});
