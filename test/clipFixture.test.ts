import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { embedManifest } from '../pipelines/embed.js';
import { evaluateCheckpointRetrieval } from '../pipelines/eval-retrieval.js';
import { tf } from '../src/backend/tf.js';
import { mapClipWeights } from '../src/nn/clipMapping.js';
import { encodeText, encodeVideo } from '../src/nn/dualEncoder.js';
import { loadTokenizer } from '../src/text/tokenizer.js';
import { loadClipWeights, readClipFolder } from '../src/train/clipFolder.js';
import { loadModel, readModelInfo } from '../src/train/checkpointInfo.js';
import { readSafetensors, writeSafetensors, type SafetensorsTensor } from '../src/train/safetensors.js';
import { ffmpegBinary } from '../src/video/binaries.js';
import { tidyData } from './helpers/read.js';

// dist/test/ → the repository root.
const DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'test', 'fixtures', 'clip-tiny');

interface Fixture {
  captions: string[];
  tokenizer: { vocabSize: number; bos: number; eos: number; pad: number };
  pictures: { n: number; height: number; width: number; mean: number[]; std: number[] };
  dualEncoderConfig: Record<string, unknown>;
}

const fixture = JSON.parse(readFileSync(path.join(DIR, 'fixture.json'), 'utf8')) as Fixture;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Rows of [n, d] scaled to unit length, in float64 (the reference side of a comparison). */
function l2Rows(x: ArrayLike<number>, d: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / d; r++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += x[r * d + j] ** 2;
    for (let j = 0; j < d; j++) out[r * d + j] = x[r * d + j] / Math.sqrt(s);
  }
  return out;
}

describe('Hugging Face CLIP folder (test/fixtures/clip-tiny, made by tools/reference/make_clip_fixture.py)', function () {
  this.timeout(60_000);
  let inputs: Map<string, SafetensorsTensor>;
  let expected: Map<string, SafetensorsTensor>;
  let tmp: string;
  before(async () => {
    inputs = (await readSafetensors(path.join(DIR, 'inputs.safetensors'))).tensors;
    expected = (await readSafetensors(path.join(DIR, 'expected.safetensors'))).tensors;
    tmp = mkdtempSync(path.join(os.tmpdir(), 'vlm-clipfolder-'));
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('config.json gives the model shapes the fixture was made for, and the folder\'s own mean and std', async () => {
    const info = await readClipFolder(DIR);
    const want = fixture.dualEncoderConfig as { vision: unknown; text: unknown; embedDim: number; activation: string; layerNormEps: number };
    assert.deepEqual(info.config.vision, want.vision);
    assert.deepEqual(info.config.text, want.text);
    assert.equal(info.config.embedDim, want.embedDim);
    assert.equal(info.config.activation, want.activation);
    assert.equal(info.config.temporal.pooling, 'mean');
    assert.deepEqual(info.preprocess.mean, fixture.pictures.mean);
    assert.deepEqual(info.preprocess.std, fixture.pictures.std);
    assert.equal(info.contextLength, 16);
    // Without preprocessor_config.json: OpenAI CLIP's mean and std, config.json's image size.
    const bare = path.join(tmp, 'no-preprocessor');
    cpSync(DIR, bare, { recursive: true });
    rmSync(path.join(bare, 'preprocessor_config.json'));
    const plain = await readClipFolder(bare);
    assert.deepEqual(plain.preprocess.mean, [0.48145466, 0.4578275, 0.40821073]);
    assert.deepEqual(plain.preprocess.std, [0.26862954, 0.26130258, 0.27577711]);
    assert.equal(plain.preprocess.imageSize, (JSON.parse(readFileSync(path.join(DIR, 'config.json'), 'utf8')) as { vision_config: { image_size: number } }).vision_config.image_size);
  });

  it('the folder\'s CLIP BPE tokenizer gives Hugging Face\'s ids and masks (padding with <|endoftext|>, truncation keeping it last)', async () => {
    const tok = await loadTokenizer(DIR);
    assert.equal(tok.vocabSize, fixture.tokenizer.vocabSize);
    assert.equal(tok.bosId, fixture.tokenizer.bos);
    assert.equal(tok.eosId, fixture.tokenizer.eos);
    assert.equal(tok.padId, fixture.tokenizer.pad);
    const enc = tok.encode(fixture.captions, 16);
    assert.deepEqual(Array.from(enc.ids), Array.from(inputs.get('input_ids')!.data as Int32Array));
    assert.deepEqual(Array.from(enc.mask), Array.from(inputs.get('attention_mask')!.data as Int32Array));
    // Hand-checked pieces (vocab.json): "a</w>" is byte 'a' + </w> = 256 + 64, "beach</w>" a learnt merge.
    assert.deepEqual(tok.tokenize('A beach!'), ['a</w>', 'beach</w>', '!</w>']);
    assert.equal(enc.ids[1], 256 + 'a'.charCodeAt(0) - 33);
  });

  it('the mapped weights reproduce CLIPModel image and text embeddings within 1e-4', async () => {
    const info = await readClipFolder(DIR);
    const weights = (await readSafetensors(path.join(DIR, 'model.safetensors'))).tensors;
    const mapped = mapClipWeights(weights, info.config, 'test/fixtures/clip-tiny/model.safetensors');
    const params = Object.fromEntries(Object.entries(mapped).map(([k, v]) => [k, tf.tensor(v.data, v.shape)]));
    const input = (name: string, dtype?: 'int32') => tf.tensor(inputs.get(name)!.data as Float32Array | Int32Array, inputs.get(name)!.shape, dtype);
    const before = tf.memory().numTensors;
    const image = await tidyData(() => encodeVideo(params, input('frames'), info.config));
    const text = await tidyData(() => encodeText(params, input('input_ids', 'int32'), input('attention_mask', 'int32'), info.config));
    assert.equal(tf.memory().numTensors, before);
    tf.dispose(Object.values(params));
    const wantImage = expected.get('image_embeds')!.data as Float32Array;
    const wantText = expected.get('text_embeds')!.data as Float32Array;
    // The embeddings are O(1): 1e-4 absolute is the tolerance.
    assert.ok(maxAbsDiff(image, wantImage) < 1e-4, `image embeddings differ by ${maxAbsDiff(image, wantImage)}`);
    assert.ok(maxAbsDiff(text, wantText) < 1e-4, `text embeddings differ by ${maxAbsDiff(text, wantText)}`);
  });

  it('vlmargin embed text / video from the folder: get_text_features and get_image_features of a static clip, L2-normalised, within 1e-4', async () => {
    const { n, height, width } = fixture.pictures;
    const pictures = inputs.get('images')!.data as Uint8Array;
    const frameBytes = height * width * 3;
    const lines: string[] = [];
    for (let i = 0; i < n; i++) {
      // A lossless (PNG-coded) clip of one picture held for 2 s: decoding returns its exact pixels.
      const raw = path.join(tmp, `p${i}.rgb`);
      writeFileSync(raw, pictures.subarray(i * frameBytes, (i + 1) * frameBytes));
      execFileSync(ffmpegBinary().path, ['-y', '-loglevel', 'error', '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${width}x${height}`, '-r', '4',
        '-stream_loop', '7', '-i', raw, '-c:v', 'png', '-pix_fmt', 'rgb24', path.join(tmp, `p${i}.mkv`)]);
      lines.push(JSON.stringify({ id: `clip-${i}`, video: `p${i}.mkv`, captions: fixture.captions.slice(2 * i, 2 * i + 2) }));
    }
    const manifest = path.join(tmp, 'manifest.jsonl');
    writeFileSync(manifest, `${lines.join('\n')}\n`);

    const before = tf.memory().numTensors;
    const video = await embedManifest({ kind: 'video', model: DIR, manifest, out: path.join(tmp, 'video.safetensors'), frames: 4 });
    const text = await embedManifest({ kind: 'text', model: DIR, manifest, out: path.join(tmp, 'text.safetensors') });
    assert.equal(tf.memory().numTensors, before);

    const vFile = await readSafetensors(video.out);
    assert.deepEqual(JSON.parse(vFile.metadata.ids), ['clip-0', 'clip-1']);
    assert.deepEqual(vFile.tensors.get('embeddings')!.shape, [n, 16]);
    const wantV = l2Rows(expected.get('picture_embeds')!.data as Float32Array, 16);
    const gotV = vFile.tensors.get('embeddings')!.data as Float32Array;
    assert.ok(maxAbsDiff(gotV, wantV) < 1e-4, `video embeddings differ from get_image_features by ${maxAbsDiff(gotV, wantV)}`);

    const tFile = await readSafetensors(text.out);
    assert.deepEqual(JSON.parse(tFile.metadata.ids), ['clip-0', 'clip-0', 'clip-1', 'clip-1']);
    assert.deepEqual(JSON.parse(tFile.metadata.captionIndex), [0, 1, 0, 1]);
    const wantT = l2Rows(expected.get('text_embeds')!.data as Float32Array, 16);
    const gotT = tFile.tensors.get('embeddings')!.data as Float32Array;
    assert.ok(maxAbsDiff(gotT, wantT) < 1e-4, `text embeddings differ from get_text_features by ${maxAbsDiff(gotT, wantT)}`);

    // eval retrieval --model DIR: zero-shot ranks of the captions, as Hugging Face's embeddings rank them.
    const report = await evaluateCheckpointRetrieval({ checkpoint: DIR, manifest, split: 'all', frames: 4, out: path.join(tmp, 'eval') });
    const ranks = [0, 1, 2, 3].map((k) => {
      const sims = [0, 1].map((v) => wantT.subarray(k * 16, k * 16 + 16).reduce((a, x, j) => a + x * wantV[v * 16 + j], 0));
      const own = Math.floor(k / 2);
      assert.ok(Math.abs(sims[0] - sims[1]) > 1e-3, `caption ${k}: the two videos tie (${sims}); the ranking would not be decided`);
      return 1 + (sims[1 - own] > sims[own] ? 1 : 0);
    });
    assert.equal(report.captions, 4);
    assert.equal(report.videos, 2);
    assert.equal(report.t2v.MnR, ranks.reduce((a, b) => a + b, 0) / 4);
    assert.equal(report.t2v.R1, (100 * ranks.filter((r) => r === 1).length) / 4);
  });

  it('vlmargin embed --frames-dir refuses a cache built for another plan (settings, split) and leaves it as it was', async () => {
    const dir = path.join(tmp, 'frames-dir-case');
    mkdirSync(dir);
    const lines = [0, 1, 2, 3].map((i) => {
      execFileSync(ffmpegBinary().path, ['-y', '-loglevel', 'error', '-f', 'lavfi', '-i', `testsrc=size=32x32:rate=4:duration=2,hue=h=${90 * i}`, '-c:v', 'png', path.join(dir, `c${i}.mkv`)]);
      return JSON.stringify({ id: `c${i}`, video: `c${i}.mkv`, captions: ['a test card'], split: i < 2 ? 'train' : 'test' });
    });
    const manifest = path.join(dir, 'manifest.jsonl');
    writeFileSync(manifest, `${lines.join('\n')}\n`);
    const framesDir = path.join(dir, 'frames');
    const embed = (name: string, o: { frames: number; split?: string; framesDir?: string }) => embedManifest({ kind: 'video', model: DIR, manifest, out: path.join(dir, `${name}.safetensors`), ...o });
    const first = await embed('all', { frames: 4, framesDir });
    assert.equal(first.rows, 4);
    const digests = () => Object.fromEntries(readdirSync(framesDir).sort().map((f) => [f, createHash('sha256').update(readFileSync(path.join(framesDir, f))).digest('hex')]));
    const before = digests();
    const where = framesDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    await assert.rejects(embed('test', { frames: 4, split: 'test', framesDir }), new RegExp(`^Error: --frames-dir ${where}: holds a frame cache built for another plan \\(4 frames of 32×32, uniform, 4 clips .*\\); `
      + `this embed needs 4 frames of 32×32, uniform, 2 clips of split 'test' .*Give another --frames-dir .*or delete the folder`));
    await assert.rejects(embed('two', { frames: 2, framesDir }), /another plan \(4 frames of 32×32, uniform, 4 clips .*this embed needs 2 frames of 32×32, uniform, 4 clips of the manifest/);
    assert.deepEqual(digests(), before);
    // The same plan reuses the cache; the default folder (one per setting) is not concerned.
    const again = await embed('again', { frames: 4, framesDir });
    assert.deepEqual((await readSafetensors(again.out)).tensors.get('embeddings')!.data, (await readSafetensors(first.out)).tensors.get('embeddings')!.data);
    assert.equal((await embed('test-default', { frames: 4, split: 'test' })).rows, 2);
    assert.deepEqual(digests(), before);
  });

  it('F16 and BF16 weights load as their exact float32 values', async () => {
    const weights = (await readSafetensors(path.join(DIR, 'model.safetensors'))).tensors;
    const info = await readClipFolder(DIR);
    // BF16 of x is its top 16 bits. F16 is written by hand for values k/1024, |k| < 2048, which
    // are exact in F16: exponent field m + 5 for |k| in [2^m, 2^(m+1)), mantissa (|k|/2^m − 1)·1024.
    const topBits = (x: Float32Array) => Uint16Array.from(new Uint32Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength)), (b) => b >>> 16);
    const bfValue = (x: Float32Array) => new Float32Array(Uint32Array.from(topBits(x), (h) => (h << 16) >>> 0).buffer);
    const halfK = (x: Float32Array) => Int32Array.from(x, (v) => Math.max(-2047, Math.min(2047, Math.round(v * 1024))));
    const halfBits = (k: Int32Array) => Uint16Array.from(k, (v) => {
      if (v === 0) return 0;
      const a = Math.abs(v);
      const m = Math.floor(Math.log2(a));
      return (v < 0 ? 0x8000 : 0) | ((m + 5) << 10) | ((a / 2 ** m - 1) * 1024);
    });
    const cases = [
      { kind: 'BF16' as const, bits: topBits, value: bfValue },
      { kind: 'F16' as const, bits: (x: Float32Array) => halfBits(halfK(x)), value: (x: Float32Array) => Float32Array.from(halfK(x), (k) => k / 1024) },
    ];
    for (const c of cases) {
      const dir = path.join(tmp, c.kind);
      cpSync(DIR, dir, { recursive: true });
      const file = new Map<string, SafetensorsTensor>();
      const values = new Map<string, SafetensorsTensor>();
      for (const [name, t] of weights) {
        file.set(name, { dtype: c.kind, shape: t.shape, data: c.bits(t.data as Float32Array) });
        values.set(name, { dtype: 'F32', shape: t.shape, data: c.value(t.data as Float32Array) });
      }
      await writeSafetensors(path.join(dir, 'model.safetensors'), file, { format: 'pt' });
      const got = await loadClipWeights(await readClipFolder(dir));
      const want = mapClipWeights(values, info.config);
      assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
      for (const name of Object.keys(want)) assert.deepEqual(got[name].data, want[name].data, `${c.kind}: ${name}`);
    }
  });

  it('a temporal transformer on top starts as the mean of the frames (meanP), and trains away from it', async () => {
    const info = await readModelInfo(DIR, { frames: 3, temporal: { pooling: 'transformer', layers: 2 } });
    assert.equal(info.model.temporal.pooling, 'transformer');
    const meanInfo = await readModelInfo(DIR, { frames: 3 });
    const store = await loadModel(info, 5);
    const meanStore = await loadModel(meanInfo, 5);
    const frames = tf.randomNormal([2, 3, 32, 32, 3], 0, 1, 'float32', 7);
    const a = await tidyData(() => encodeVideo(store.snapshot(), frames, info.model));
    const b = await tidyData(() => encodeVideo(meanStore.snapshot(), frames, meanInfo.model));
    assert.ok(maxAbsDiff(a, b) < 1e-5, `temporal transformer at start differs from meanP by ${maxAbsDiff(a, b)}`);
    // One plain gradient step on the temporal parameters changes the output: it is trainable, not frozen at the mean.
    const names = store.names().filter((n) => n.startsWith('video.temporal.'));
    const { grads } = tf.variableGrads(() => tf.sum(tf.square(encodeVideo(store.snapshot(), frames, info.model))) as tf.Scalar, names.map((n) => store.get(n)));
    let moved = false;
    for (const g of Object.values(grads)) if ((await tidyData(() => tf.max(tf.abs(g))))[0] > 0) moved = true;
    tf.dispose(Object.values(grads));
    assert.ok(moved, 'no temporal parameter has a gradient');
    tf.dispose(frames);
    store.dispose();
    meanStore.dispose();
  });
});
