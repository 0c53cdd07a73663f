import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { access, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadJsonConfig } from '../pipelines/config.js';
import { parseFinetuneQaConfig, runFinetuneQa } from '../pipelines/finetune-qa.js';
import { tf } from '../src/backend/tf.js';
import { COLOR_NAMES } from '../src/data/synth.js';
import type { ManifestEntry } from '../src/data/types.js';
import { argmaxAccuracy, mcLogits, mcLoss } from '../src/qa/qaModel.js';
import { generateSynthQa, QA_ANSWER_VOCAB, readQaJsonl, writeQaJsonl } from '../src/qa/synthQa.js';
import { loadCheckpoint, saveCheckpoint } from '../src/train/checkpoint.js';
import { makeSmallRun } from './helpers/smallRun.js';
import { scoped } from './helpers/read.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const entry = (id: string, concepts: string[], split = 'train'): ManifestEntry => ({ id, video: `/v/${id}.mp4`, captions: ['x'], concepts, split });

describe('synthetic QA set', () => {
  const entries = [
    entry('a', ['shape:circle', 'color:red', 'size:small', 'dir:left', 'speed:fast']),
    entry('b', ['shape:cross', 'color:cyan', 'size:large', 'dir:up', 'speed:slow'], 'test'),
    entry('c', ['color:blue']),
  ];

  it('one open item per known concept, MC for colour/direction/shape with four distinct candidates of the type', async () => {
    const { mc, open } = generateSynthQa(entries, { seed: 4 });
    assert.equal(open.length, 4 + 4 + 1);
    assert.equal(mc.length, 3 + 3 + 1);
    assert.ok(!mc.some((it) => it.type === 'speed'), 'speed has two values, so no 4-way MC');
    const a = Object.fromEntries(open.filter((it) => it.videoId === 'a').map((it) => [it.type, it.answer]));
    assert.deepEqual(a, { color: 'red', direction: 'left', shape: 'circle', speed: 'fast' });
    for (const it of mc) {
      assert.equal(it.choices!.length, 4);
      assert.equal(new Set(it.choices).size, 4);
      assert.equal(it.choices![it.correct!], it.answer);
      if (it.type === 'color') assert.ok(it.choices!.every((c) => (COLOR_NAMES as readonly string[]).includes(c)));
    }
    assert.equal(mc.find((it) => it.videoId === 'b')!.split, 'test');
    assert.deepEqual(generateSynthQa(entries, { seed: 4 }), { mc, open });
    // The correct position varies with the seed (over 7 items, all equal under two seeds would be a bug).
    const other = generateSynthQa(entries, { seed: 5 }).mc.map((it) => it.correct);
    assert.notDeepEqual(other, mc.map((it) => it.correct));
    assert.equal(QA_ANSWER_VOCAB.length, 6 + 4 + 4 + 2);
  });

  it('JSONL round trip; a bad line names file and line; entries without concepts are an error', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-qa-'));
    const { mc, open } = generateSynthQa(entries);
    const file = path.join(dir, 'qa.jsonl');
    await writeQaJsonl(file, [...mc, ...open]);
    assert.deepEqual(await readQaJsonl(file), JSON.parse(JSON.stringify([...mc, ...open])));
    await writeFile(file, `${JSON.stringify(mc[0])}\n${JSON.stringify({ ...mc[0], correct: (mc[0].correct! + 1) % 4 })}\n`);
    await assert.rejects(() => readQaJsonl(file), /qa\.jsonl:2: expected a QA item/);
    assert.throws(() => generateSynthQa([entry('x', ['mood:happy'])]), /no entry has the concepts/);
    await rm(dir, { recursive: true, force: true });
  });

  it('mcLogits and mcLoss by hand', async () => {
    await scoped(async () => {
      // video (1,0); candidates (2,0) → cos 1, (0,3) → cos 0, scale 10.
      const l = mcLogits(tf.tensor2d([[1, 0]]), tf.tensor2d([[2, 0], [0, 3]]), 2, 10);
      assert.deepEqual(Array.from(await l.data()).map((x) => +x.toFixed(5)), [10, 0]);
      // CE with the right answer at 0: log(1 + e^-10); at 1: 10 + log(1 + e^-10).
      assert.ok(Math.abs((await mcLoss(l, Int32Array.of(0)).data())[0] - Math.log1p(Math.exp(-10))) < 1e-6);
      assert.ok(Math.abs((await mcLoss(l, Int32Array.of(1)).data())[0] - (10 + Math.log1p(Math.exp(-10)))) < 1e-4);
      assert.throws(() => mcLogits(tf.tensor2d([[1, 0]]), tf.tensor2d([[1, 0]]), 2, 1), /\[B·K, d\]/);
    });
  });
});

describe('argmaxAccuracy', () => {
  it('by hand (ties go to the lowest index), read asynchronously, leaving no tensor', async () => {
    // Row predictions: 1, 0 (tie 2 = 2 → index 0), 2, 1.
    const logits = tf.tensor2d([[0, 3, 1], [2, 2, 1], [-1, -2, 0], [0.5, 0.7, 0.6]]);
    const correct = [1, 1, 2, 0];
    assert.equal(await argmaxAccuracy(logits, correct), 2 / 4);
    const before = tf.memory().numTensors;
    for (let k = 0; k < 3; k++) assert.equal(await argmaxAccuracy(logits, correct), 2 / 4);
    assert.equal(await argmaxAccuracy(logits, [1, 0, 2, 1]), 1);
    assert.equal(tf.memory().numTensors, before);
    logits.dispose();
  });
});

describe('finetune-qa pipeline', function () {
  this.timeout(180000);
  it('the shipped config validates', async () => {
    const cfg = await loadJsonConfig(path.join(root, 'pipelines', 'configs', 'finetune-qa.json'), parseFinetuneQaConfig);
    assert.equal(cfg.open.head.name, 'arcface');
    assert.throws(() => parseFinetuneQaConfig({ checkpoint: 'c', corpus: { manifest: 'm' }, open: { head: { name: 'bogus' } } }, 'q.json'), /q\.json: invalid config[\s\S]*open\.head\.name/);
  });

  let tmp = '';
  let run: Awaited<ReturnType<typeof makeSmallRun>>;
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-qa-run-'));
    run = await makeSmallRun(tmp, { videos: 96 });
  });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  it('open-ended colour questions with an ArcFace head on frozen embeddings land well above chance (pooled over 3 seeds)', async () => {
    let hits = 0;
    let items = 0;
    for (const seed of [1, 2, 3]) {
      const out = path.join(tmp, `qa-${seed}`);
      const r = await runFinetuneQa(parseFinetuneQaConfig({
        seed, checkpoint: run.runDir, backend: 'wasm', corpus: { manifest: run.manifest },
        mc: { steps: 10, batchSize: 8, lr: 0.001, encoderLrScale: 0.1 },
        open: { head: { name: 'arcface', scale: 16, m2: 0.2 }, steps: 300, lr: 0.01, encoderLrScale: 0 },
      }), { out, quiet: true });
      const color = r.open.perType.color!;
      assert.equal(color.items, 18);
      assert.ok(Math.abs(color.chance - 1 / 6) < 1e-12);
      hits += Math.round(color.accuracy * color.items);
      items += color.items;
      assert.equal(r.mc.chance, 0.25);
      assert.equal(r.mc.zeroShot.items, 18 * 3);
      assert.ok(r.open.trainLossLast < r.open.trainLossFirst);
      const saved = JSON.parse(await readFile(path.join(out, 'qa.json'), 'utf8'));
      assert.equal(saved.open.perType.color.accuracy, color.accuracy);
      if (seed === 1) assert.equal((await readQaJsonl(path.join(out, 'qa.jsonl'))).filter((it) => it.kind === 'open').length, 96 * 4);
    }
    // 54 answers, chance 1/6 (9 expected): 18 or more right by chance has probability ≈ 0.002 (binomial tail).
    assert.ok(hits >= 18, `colour: ${hits} of ${items} right (chance 1/6 = 9)`);
  });

  it('end to end (open.encoderLrScale > 0) the video encoder trains with the head, and no tensor is left behind', async () => {
    const cfg = (encoderLrScale: number) => parseFinetuneQaConfig({
      seed: 4, checkpoint: run.runDir, backend: 'wasm', corpus: { manifest: run.manifest },
      mc: { steps: 0 }, open: { head: { name: 'cosface', scale: 16, m: 0.2 }, steps: 8, batchSize: 8, lr: 0.01, encoderLrScale },
    });
    const frozen = await runFinetuneQa(cfg(0), { out: path.join(tmp, 'qa-frozen'), quiet: true });
    const before = tf.memory().numTensors;
    const joint = await runFinetuneQa(cfg(0.5), { out: path.join(tmp, 'qa-joint'), quiet: true });
    assert.equal(tf.memory().numTensors, before);
    // Same head initialisation and batches: the first loss is the same, later ones differ only if the encoder moved.
    assert.ok(Math.abs(joint.open.trainLossFirst - frozen.open.trainLossFirst) < 1e-4, `${joint.open.trainLossFirst} vs ${frozen.open.trainLossFirst}`);
    assert.notEqual(joint.open.trainLossLast, frozen.open.trainLossLast);
    assert.equal(joint.open.encoderLrScale, 0.5);
  });

  /** SHA-256 of every file in a folder, by name. */
  const digests = async (dir: string) => Object.fromEntries(await Promise.all((await readdir(dir)).sort().map(async (f) => [f, createHash('sha256').update(await readFile(path.join(dir, f))).digest('hex')])));
  const exists = (f: string) => access(f).then(() => true, () => false);

  it('a diverged multiple-choice fine-tune stops after train.maxNonFinite skipped steps, names the stage, writes no qa.json and leaves the checkpoint as it was', async () => {
    // A logit scale of 1000 (exp(1000) overflows float32) makes every candidate's logit ±∞ and
    // the cross-entropy NaN from the first step: the loss a diverged fine-tune would have.
    const ck = await loadCheckpoint(run.checkpoint);
    const hot = path.join(tmp, 'hot', 'checkpoints', 'step-000024');
    try {
      const params = { ...ck.params, logit_scale: tf.scalar(1000) };
      await saveCheckpoint(hot, { config: ck.config, params, optimizer: ck.optimizer, state: ck.state });
      tf.dispose(params.logit_scale);
    } finally {
      tf.dispose([...Object.values(ck.params), ...Object.values(ck.optimizer ?? {})]);
    }
    const sums = await digests(hot);
    const out = path.join(tmp, 'qa-diverged-mc');
    await assert.rejects(runFinetuneQa(parseFinetuneQaConfig({
      seed: 1, checkpoint: hot, backend: 'wasm', corpus: { manifest: run.manifest },
      mc: { steps: 20, batchSize: 4 }, open: { steps: 5 }, train: { maxNonFinite: 3 },
    }), { out, quiet: true }), /^Error: multiple-choice fine-tune: stopped after 3 non-finite steps in a row at step 2: loss=NaN[\s\S]*train\.maxNonFinite 3[\s\S]*no qa\.json/);
    assert.equal(await exists(path.join(out, 'qa.json')), false);
    assert.deepEqual(await digests(hot), sums);
  });

  it('a diverged open-ended fine-tune stops the same way; steps skipped below the limit are counted in qa.json', async () => {
    // A head scale of 1e39 is ∞ in float32: every logit is ±∞ and the loss NaN.
    const cfg = (scale: number) => parseFinetuneQaConfig({
      seed: 1, checkpoint: run.runDir, backend: 'wasm', corpus: { manifest: run.manifest },
      mc: { steps: 0 }, open: { head: { name: 'arcface', scale, m2: 0.2 }, steps: 6, batchSize: 8 }, train: { maxNonFinite: 4 },
    });
    const out = path.join(tmp, 'qa-diverged-open');
    await assert.rejects(runFinetuneQa(cfg(1e39), { out, quiet: true }), /^Error: open-ended fine-tune: stopped after 4 non-finite steps in a row at step 3/);
    assert.equal(await exists(path.join(out, 'qa.json')), false);
    const fine = await runFinetuneQa(cfg(16), { out: path.join(tmp, 'qa-finite-open'), quiet: true });
    assert.equal(fine.open.skippedSteps, 0);
    assert.equal(fine.mc.skippedSteps, 0);
    assert.equal(JSON.parse(await readFile(path.join(tmp, 'qa-finite-open', 'qa.json'), 'utf8')).open.skippedSteps, 0);
  });
});
