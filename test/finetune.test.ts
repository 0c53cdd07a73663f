import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadJsonConfig } from '../pipelines/config.js';
import {
  batchLoss, lrScaleOf, parseFinetuneRetrievalConfig, runFinetuneRetrieval, trainableNames, withInit,
} from '../pipelines/finetune-retrieval.js';
import { readModelInfo } from '../src/train/checkpointInfo.js';
import { openFrameCache } from '../src/data/frameCache.js';
import { tf } from '../src/backend/tf.js';
import { generateSynthCorpus } from '../src/data/synth.js';
import { getConfig } from '../src/nn/configs.js';
import { initDualEncoder } from '../src/nn/dualEncoder.js';
import { readSafetensors } from '../src/train/safetensors.js';
import { seededUniform } from './helpers/fd.js';
import { makeSmallRun, type SmallRun } from './helpers/smallRun.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('finetune-retrieval config', () => {
  it('the shipped config validates; unknown keys and bad values name the key', async () => {
    const cfg = await loadJsonConfig(path.join(root, 'pipelines', 'configs', 'finetune-retrieval.json'), parseFinetuneRetrievalConfig);
    assert.equal(cfg.train.encoderLrScale, 0.1);
    assert.throws(() => parseFinetuneRetrievalConfig({ model: { init: 'c' }, data: { kind: 'manifest', manifest: 'm' }, train: { freeze: true } }, 'f.json'), /f\.json: invalid config[\s\S]*train/);
    assert.throws(() => parseFinetuneRetrievalConfig({ data: { kind: 'manifest', manifest: 'm' } }, 'f.json'), /model/);
    assert.throws(() => parseFinetuneRetrievalConfig({ model: { init: 'c' }, data: { kind: 'manifest', manifest: 'm' }, train: { encoderLrScale: 2 } }), /train\.encoderLrScale/);
  });

  it('frozen encoders leave only the heads and the temporal module trainable', async () => {
    const names = ['video.conv1.weight', 'video.proj.weight', 'text.proj.weight', 'logit_scale', 'video.temporal.pos', 'text.blocks.0.attn.q.weight'];
    assert.deepEqual(trainableNames(names, true), ['video.proj.weight', 'text.proj.weight', 'logit_scale', 'video.temporal.pos']);
    assert.deepEqual(trainableNames(names, false), names);
  });
});

describe('finetune-retrieval pipeline', function () {
  this.timeout(180000);
  let tmp: string;
  let run: SmallRun;
  let downstream: string;
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-ft-'));
    run = await makeSmallRun(tmp);
    // A different corpus (other seed) stands in for the user's own data.
    const d = await generateSynthCorpus({ out: path.join(tmp, 'downstream'), videos: 36, seed: 11, size: 32, frames: 8, noise: 0, imbalance: 1 });
    downstream = d.manifestPath;
  });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  const base = () => ({
    model: { init: run.runDir }, backend: 'wasm', seed: 2,
    data: { kind: 'manifest', manifest: downstream },
    train: { steps: 8, batchSize: 8, lr: 0.003, encoderLrScale: 0.1, warmupSteps: 1, checkpointEvery: 0 },
    eval: { batchSize: 16 },
  });

  it('a few steps lower the loss on a fixed downstream batch and write eval.json for the test split', async () => {
    const out = path.join(tmp, 'ft');
    const r = await runFinetuneRetrieval(parseFinetuneRetrievalConfig(base()), { out, quiet: true });
    assert.equal(r.steps, 8);
    assert.ok(r.lossAfter < r.lossBefore, `loss ${r.lossBefore} → ${r.lossAfter}`);
    const ev = JSON.parse(await readFile(path.join(out, 'eval.json'), 'utf8'));
    const test = (await readFile(downstream, 'utf8')).trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.split === 'test');
    assert.equal(ev.videos, test.length);
    assert.equal(typeof ev.t2v.R1, 'number');
    assert.equal(ev.step, 8);
    const summary = JSON.parse(await readFile(path.join(out, 'finetune.json'), 'utf8'));
    assert.equal(summary.lossAfter, r.lossAfter);
  });

  it('freezeEncoders: encoder weights are bit-identical to the pretrained ones, the heads moved', async () => {
    const out = path.join(tmp, 'ft-frozen');
    const cfg = base();
    const r = await runFinetuneRetrieval(parseFinetuneRetrievalConfig({ ...cfg, train: { ...cfg.train, freezeEncoders: true } }), { out, quiet: true });
    assert.ok(r.frozen > 0 && r.trainable > 0);
    const before = await readSafetensors(path.join(run.checkpoint, 'model.safetensors'));
    const after = await readSafetensors(path.join(out, 'checkpoints', 'step-000008', 'model.safetensors'));
    const bytes = (f: typeof before, n: string) => { const d = f.tensors.get(n)!.data; return Buffer.from(d.buffer, d.byteOffset, d.byteLength); };
    let encoders = 0;
    for (const name of before.tensors.keys()) {
      const same = bytes(before, name).equals(bytes(after, name));
      const isHead = trainableNames([name], true).length === 1;
      if (!isHead) { encoders++; assert.ok(same, `${name} changed with frozen encoders`); }
    }
    assert.ok(encoders > 0);
    assert.ok(!bytes(before, 'video.proj.weight').equals(bytes(after, 'video.proj.weight')), 'video.proj.weight did not move');
    assert.ok(r.lossAfter < r.lossBefore, `loss ${r.lossBefore} → ${r.lossAfter}`);
  });
});

describe('finetune-retrieval from a Hugging Face CLIP folder', function () {
  this.timeout(180000);
  let tmp: string;
  let downstream: string;
  const clipDir = path.join(root, 'test', 'fixtures', 'clip-tiny');
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-ft-clip-'));
    const d = await generateSynthCorpus({ out: path.join(tmp, 'downstream'), videos: 36, seed: 11, size: 32, frames: 8, noise: 0.3, imbalance: 1 });
    downstream = d.manifestPath;
  });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  for (const method of ['mwn', 'l2rw'] as const) {
    it(`${method}: the folder's shapes, tokenizer and normalisation, a temporal transformer from the mean, the loss goes down`, async () => {
      const out = path.join(tmp, `ft-${method}`);
      const cfg = parseFinetuneRetrievalConfig({
        model: { init: clipDir, temporalPooling: 'transformer', temporalLayers: 1 }, frames: { count: 4 }, backend: 'wasm', seed: 3,
        data: { kind: 'manifest', manifest: downstream },
        train: { steps: 6, batchSize: 8, lr: 0.003, encoderLrScale: 0.1, headLrScale: 0.3, warmupSteps: 1, checkpointEvery: 0 },
        weighting: { method, metaBatchSize: 6, hidden: 16 },
        eval: { batchSize: 16 },
      });
      const before = tf.memory().numTensors;
      const r = await runFinetuneRetrieval(cfg, { out, quiet: true });
      assert.equal(tf.memory().numTensors, before);
      assert.equal(r.steps, 6);
      assert.ok(r.lossAfter < r.lossBefore, `loss ${r.lossBefore} → ${r.lossAfter}`);
      const metrics = (await readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.step !== undefined && m.weightMin !== undefined);
      assert.ok(metrics.length > 0, 'no weighted step was logged');
      // The saved checkpoint reads back as a model with the CLIP folder's settings.
      const info = await readModelInfo(out);
      assert.equal(info.kind, 'checkpoint');
      assert.equal(info.maxLen, 16);
      assert.deepEqual(info.preprocess.mean, [0.5, 0.4, 0.3]);
      assert.equal(info.model.temporal.pooling, 'transformer');
      assert.equal(info.tokenizerDir, clipDir);
    });
  }

  it('caption sources: generated captions train (drawn at their weight, loss reported per source), evaluation uses human captions only', async () => {
    const lines = (await readFile(downstream, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const withGenerated = lines.map((e) => ({ ...e, caption: undefined, captions: [e.caption, { text: `generated: ${String(e.caption)}`, source: 'generated' }] }));
    const manifest = path.join(path.dirname(downstream), 'with-generated.jsonl');
    await writeFile(manifest, withGenerated.map((e) => JSON.stringify(e)).join('\n') + '\n');
    const out = path.join(tmp, 'ft-sources');
    const r = await runFinetuneRetrieval(parseFinetuneRetrievalConfig({
      model: { init: clipDir }, frames: { count: 2, strategy: 'random', candidates: 3 }, backend: 'wasm', seed: 4,
      data: { kind: 'manifest', manifest },
      train: { steps: 4, batchSize: 8, lr: 0.003, warmupSteps: 1, checkpointEvery: 0 },
      captions: { sourceWeights: { generated: 0.5 } },
      eval: { batchSize: 16 },
    }), { out, quiet: true });
    const metrics = (await readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.step !== undefined);
    assert.ok(metrics.some((m) => typeof m.loss_human === 'number') && metrics.some((m) => typeof m.loss_generated === 'number'), JSON.stringify(metrics[0]));
    const test = lines.filter((e) => e.split === 'test');
    assert.equal(r.eval.captions, test.length, 'evaluation should query with the one human caption of each test video');
    // Random frames: training draws from 2 × 3 uniform candidates per clip; the test clips keep 2 uniform frames.
    const vlm = path.join(path.dirname(manifest), '.vlmargin');
    const candidates = await openFrameCache(path.join(vlm, 'frames-6x32-uniform'));
    const fixed = await openFrameCache(path.join(vlm, 'frames-2x32-uniform'));
    const trainIds = lines.filter((e) => e.split === 'train').map((e) => e.id as string);
    assert.deepEqual([...candidates.ids].sort(), [...trainIds].sort());
    assert.ok(test.every((e) => fixed.has(e.id as string)) && test.every((e) => !candidates.has(e.id as string)));
  });

  it('--init sets model.init over the file; learning-rate factors per group', () => {
    const cfg = parseFinetuneRetrievalConfig(withInit({ model: { init: 'a', temporalPooling: 'transformer' }, data: { kind: 'manifest', manifest: 'm' } }, 'b'));
    assert.equal(cfg.model.init, 'b');
    assert.equal(cfg.model.temporalPooling, 'transformer');
    assert.equal(parseFinetuneRetrievalConfig(withInit({ data: { kind: 'manifest', manifest: 'm' } }, 'c')).model.init, 'c');
    const train = { encoderLrScale: 0.001, headLrScale: 0.01 };
    assert.equal(lrScaleOf('text.blocks.3.mlp.fc1.weight', train), 0.001);
    assert.equal(lrScaleOf('video.proj.weight', train), 0.01);
    assert.equal(lrScaleOf('logit_scale', train), 0.01);
    assert.equal(lrScaleOf('video.temporal.blocks.0.attn.qkv.weight', train), 1);
  });
});

describe('finetune-retrieval batchLoss', () => {
  it('batchLoss on a micro model: the same number on every call, near log B, and no tensor left behind', async () => {
    const cfg = getConfig('tiny', {
      name: 'micro',
      vision: { imageSize: 8, patchSize: 4, width: 8, layers: 1, heads: 2 },
      text: { vocabSize: 20, contextLength: 6, width: 8, layers: 1, heads: 2 },
      temporal: { pooling: 'transformer', maxFrames: 3, layers: 1, heads: 2 },
      embedDim: 8,
    });
    const store = initDualEncoder(cfg, 3);
    const params = store.snapshot();
    const B = 4;
    const L = 5;
    const u = seededUniform(B * L, 7, 0, 1);
    const ids = Int32Array.from(u, (x) => 1 + Math.floor(x * 19));
    const mask = Int32Array.from({ length: B * L }, (_, i) => (i % L < 2 + (Math.floor(i / L) % 3) ? 1 : 0));
    const batch = {
      frames: tf.tensor(seededUniform(B * 2 * 8 * 8 * 3, 8, -1.5, 1.5), [B, 2, 8, 8, 3]),
      ids: tf.tensor2d(ids, [B, L], 'int32'),
      mask: tf.tensor2d(mask, [B, L], 'int32'),
    };
    const loss = { marginRad: 0.1, detachMargin: false };
    const before = tf.memory().numTensors;
    const first = await batchLoss(params, cfg, batch, loss);
    for (let k = 0; k < 3; k++) {
      const got = await batchLoss(params, cfg, batch, loss);
      assert.ok(Object.is(got, first), `call ${k + 2}: ${got} vs ${first}`);
    }
    assert.equal(tf.memory().numTensors, before);
    // B pairs in a softmax over B: a random model's loss is near log B, far from 0.
    assert.ok(Number.isFinite(first) && first > 0.5, `loss ${first}`);
    tf.dispose([batch.frames, batch.ids, batch.mask]);
    store.dispose();
  });
});
