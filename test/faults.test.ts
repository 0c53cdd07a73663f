/**
 * Fault injection: a full disk (an fs shim, and a real tmpfs where one can be mounted), two
 * writers in one folder, stale locks, changed configs on resume, caches whose sources or
 * bytes changed, flaky ffmpeg, corrupt files, NaN steps, signals and out-of-memory errors.
 * Each test names the fault it injects and checks that nothing is lost and nothing is wrong
 * without a word. docs/RELIABILITY.md lists them with their totals.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import ffmpegModule from 'fluent-ffmpeg';
import { tf } from '../src/backend/tf.js';
import { buildFrameCache, frameCacheDirName, openFrameCache } from '../src/data/frameCache.js';
import type { ManifestEntry } from '../src/data/types.js';
import { buildTokenizer, tokenizerKey } from '../src/text/buildTokenizer.js';
import { configChanges, configHash, loadCheckpoint, saveCheckpoint } from '../src/train/checkpoint.js';
import { NonFiniteGuard } from '../src/train/gradients.js';
import { MetricsLogger } from '../src/train/logger.js';
import { SGD } from '../src/train/optimizer.js';
import { parseSafetensors, readSafetensors, writeSafetensors } from '../src/train/safetensors.js';
import { describeOutOfMemory, runTraining, type TrainingHooks } from '../src/train/trainer.js';
import { writeFileAtomic } from '../src/util/atomicWrite.js';
import { acquireDirLock, currentHolder } from '../src/util/dirLock.js';
import { ffmpegFailure, sampleFrames } from '../src/video/sampler.js';
import { ffmpegBinary } from '../src/video/binaries.js';
import { fluent } from '../src/video/ffmpeg.js';
import { parsePretrainConfig } from '../pipelines/config.js';
import { runPretrain } from '../pipelines/pretrain.js';
import { evaluateCheckpointRetrieval } from '../pipelines/eval-retrieval.js';
import { openRunFolder } from '../pipelines/runFolder.js';
import { parseFinetuneQaConfig, runFinetuneQa } from '../pipelines/finetune-qa.js';
import { parseFinetuneRetrievalConfig, runFinetuneRetrieval } from '../pipelines/finetune-retrieval.js';
import { parseTrainClassifierConfig, runTrainClassifier } from '../pipelines/train-classifier.js';
import { parseSpeakerConfig, runTrainSpeaker } from '../pipelines/speaker.js';
import { parseSpoofConfig, runTrainSpoof } from '../pipelines/spoof.js';
import { writeVerificationReport } from '../src/face/report.js';
import { generateSynthIdentities } from '../src/face/synthIdentities.js';
import { loadClipWeights, readClipFolder } from '../src/train/clipFolder.js';
import { fillDiskAfter, makeReadOnly, smallTmpfs } from './helpers/faults.js';
import { makeClip } from './video.test.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-faults-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
const fresh = (name: string): string => fs.mkdtempSync(path.join(tmpRoot, `${name}-`));
const quietLogger = (runDir: string) => {
  const stream = { text: '', write(s: string) { this.text += s; return true; } };
  return { logger: new MetricsLogger(path.join(runDir, 'metrics.jsonl'), { quiet: true, stream }), stream };
};
/** Says why a test is skipped (mocha's skip takes no reason), then skips it. */
function skipBecause(ctx: Mocha.Context, why: string): never {
  console.log(`      skipped: ${why}`);
  ctx.skip();
}

/** A one-parameter job: loss = Σw, gradient 1 (or NaN on the steps in `nanAt`). */
function tinyJob(runDir: string, opts: { size?: number; steps?: number; checkpointEvery?: number; nanAt?: (step: number) => boolean } = {}) {
  const params = { w: tf.variable(tf.ones([opts.size ?? 8])) };
  const { logger, stream } = quietLogger(runDir);
  const options = {
    runDir, params, optimizer: new SGD(params, { lr: 0.1 }), schedule: () => 0.1, totalSteps: opts.steps ?? 4,
    checkpointEvery: opts.checkpointEvery ?? 2, config: { job: 'tiny' }, logger, handleSignals: false,
  };
  const hooks: TrainingHooks = {
    dataState: () => ({}),
    computeGrads: async (step) => ({
      loss: opts.nanAt?.(step) ? NaN : 1,
      grads: { w: opts.nanAt?.(step) ? tf.fill([opts.size ?? 8], NaN) : tf.onesLike(params.w) },
      samples: 1,
    }),
  };
  return { params, options, hooks, stream, dispose: () => params.w.dispose() };
}

describe('faults: a full disk', () => {
  it('a checkpoint that cannot be written is retried once, then fails the run naming the folder and ENOSPC; no temporary folder is left', async () => {
    const runDir = fresh('full');
    const job = tinyJob(runDir);
    const disk = await fillDiskAfter(0, { syncWrites: false });
    try {
      await assert.rejects(runTraining(job.options, job.hooks), (e: Error) => {
        assert.match(e.message, /checkpoint at step 2 could not be written to .*step-000002: .*ENOSPC.*the disk is full/);
        return true;
      });
    } finally {
      disk.restore();
      job.dispose();
    }
    assert.match(job.stream.text, /checkpoint at step 2 could not be written .*trying once more/);
    assert.ok(disk.failures() >= 2, `two attempts, ${disk.failures()} failed writes`);
    assert.deepEqual(fs.readdirSync(path.join(runDir, 'checkpoints')), []);
  });

  it('a save that fails once and then succeeds keeps the run going, and the checkpoint loads', async () => {
    const runDir = fresh('flaky');
    const job = tinyJob(runDir);
    let calls = 0;
    const disk = await fillDiskAfter(() => ++calls !== 1, { syncWrites: false });
    let r;
    try {
      r = await runTraining(job.options, job.hooks);
    } finally {
      disk.restore();
      job.dispose();
    }
    assert.equal(r.step, 4);
    assert.equal(disk.failures(), 1);
    const ck = await loadCheckpoint(path.join(runDir, 'checkpoints', 'step-000004'));
    // SGD lr 0.1, gradient 1, four steps: 1 − 0.4 (hand).
    assert.ok(Math.abs((await ck.params.w.data())[0] - 0.6) < 1e-6);
    assert.equal(ck.state.configHash, configHash({ job: 'tiny' }));
    tf.dispose(Object.values(ck.params));
  });

  it('a final checkpoint that cannot be written never reports success', async () => {
    const runDir = fresh('final');
    const job = tinyJob(runDir, { checkpointEvery: 0 });
    const disk = await fillDiskAfter(0, { syncWrites: false });
    try {
      await assert.rejects(runTraining(job.options, job.hooks), /checkpoint at step 4 could not be written/);
    } finally {
      disk.restore();
      job.dispose();
    }
  });

  it('metrics.jsonl and result files on a full disk: errors name the file', async () => {
    const dir = fresh('names');
    const logger = new MetricsLogger(path.join(dir, 'metrics.jsonl'), { quiet: true });
    const disk = await fillDiskAfter(0);
    try {
      assert.throws(() => logger.write({ step: 1, loss: 1, lr: 0.1 }), /cannot append to '.*metrics\.jsonl'.*ENOSPC.*the disk is full/);
      await assert.rejects(writeFileAtomic(path.join(dir, 'eval.json'), '{}'), /cannot write .*eval\.json .*ENOSPC.*the disk is full/);
      // The results of every job go through the same writer: a verification report, for one.
      await assert.rejects(writeVerificationReport([0.9, 0.1], [1, 0], path.join(dir, 'eval'), { folds: 2 }), /cannot write .*eval\/metrics\.json .*ENOSPC.*the disk is full/);
    } finally {
      disk.restore();
      logger.close();
    }
    assert.deepEqual(fs.readdirSync(dir).sort(), ['eval', 'metrics.jsonl']);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'eval')), [], 'no temporary file is left');
  });

  it('on a real 600 KiB tmpfs, a run whose checkpoint does not fit fails, naming the path, and leaves no partial checkpoint', async function () {
    const fsys = smallTmpfs(600);
    if ('why' in fsys) skipBecause(this, fsys.why);
    try {
      const runDir = path.join(fsys.dir, 'run');
      fs.mkdirSync(runDir);
      // 200 000 float32 = 800 KB of weights: more than the whole filesystem.
      const job = tinyJob(runDir, { size: 200_000 });
      try {
        await assert.rejects(runTraining(job.options, job.hooks), /checkpoint at step 2 could not be written to .*step-000002: .*(ENOSPC|no space left)/);
      } finally {
        job.dispose();
      }
      assert.deepEqual(fs.readdirSync(path.join(runDir, 'checkpoints')), []);
    } finally {
      fsys.unmount();
    }
  });
});

describe('faults: the run folder', () => {
  it('a second writer is refused at once, naming the first one\'s pid, host and start time; the lock goes with the run', async () => {
    const out = path.join(fresh('runs'), 'a');
    const logs: string[] = [];
    const first = await openRunFolder(out, 'x', (m) => logs.push(m));
    await assert.rejects(openRunFolder(out, 'x', (m) => logs.push(m)),
      new RegExp(`run folder .*a is in use by process ${process.pid} on host ${os.hostname()} \\(since \\d{4}-.*\\); wait for that run to end, or choose another folder`));
    await first.release();
    const second = await openRunFolder(out, 'x', (m) => logs.push(m));
    await second.release();
    assert.deepEqual(fs.readdirSync(out), []);
    assert.deepEqual(logs, []);
  });

  it('refuses --out "", the working folder and names made of dots (and caption groups with the streaming loader)', async () => {
    await assert.rejects(openRunFolder('', 'x', () => undefined), /--out: expected a run folder, got an empty path/);
    await assert.rejects(openRunFolder('  ', 'x', () => undefined), /empty path/);
    await assert.rejects(openRunFolder('.', 'x', () => undefined), /is the working folder or above it/);
    await assert.rejects(openRunFolder('..', 'x', () => undefined), /is the working folder or above it/);
    for (const name of ['.', '..', '...']) {
      assert.throws(() => parsePretrainConfig({ name, data: { kind: 'synth' } }), /name: must not be only dots/);
    }
    assert.equal(parsePretrainConfig({ name: 'a.b', data: { kind: 'synth' } }).name, 'a.b');
    assert.throws(() => parsePretrainConfig({ data: { kind: 'synth' }, train: { captionGroups: 4 }, frames: { shuffleBuffer: 64 } }), /train\.captionGroups: caption groups arrange a whole epoch/);
  });

  it('every training job (pretrain, fine-tunes, classifier, speaker, spoof) locks its folder and refuses --out "" before reading any data', async () => {
    const missing = path.join(fresh('nodata'), 'absent');
    const jobs: [string, (out: string) => Promise<unknown>][] = [
      ['pretrain', (out) => runPretrain(parsePretrainConfig({ data: { kind: 'manifest', manifest: `${missing}.jsonl` } }), { out, quiet: true })],
      ['finetune-retrieval', (out) => runFinetuneRetrieval(parseFinetuneRetrievalConfig({ model: { init: missing }, data: { kind: 'manifest', manifest: `${missing}.jsonl` } }), { out, quiet: true })],
      ['finetune-qa', (out) => runFinetuneQa(parseFinetuneQaConfig({ checkpoint: missing, corpus: { manifest: `${missing}.jsonl` } }), { out, quiet: true })],
      ['train-classifier', (out) => runTrainClassifier(parseTrainClassifierConfig({ data: { dir: missing }, loss: { name: 'arcface' } }), { out, quiet: true })],
      ['speaker', (out) => runTrainSpeaker(parseSpeakerConfig({}), { audio: missing, out, quiet: true })],
      ['spoof', (out) => runTrainSpoof(parseSpoofConfig({}), { protocol: `${missing}.txt`, audio: missing, out, quiet: true })],
    ];
    for (const [name, run] of jobs) {
      const out = path.join(fresh('held'), name);
      const held = await openRunFolder(out, name, () => undefined);
      try {
        await assert.rejects(run(out), new RegExp(`run folder .*${name} is in use by process ${process.pid}`), name);
      } finally {
        await held.release();
      }
      await assert.rejects(run(''), /--out: expected a run folder, got an empty path/, name);
      // Unlocked, each job gets as far as its missing data, which it names.
      await assert.rejects(run(out), (e: Error) => e.message.includes('absent') && !/in use/.test(e.message), name);
      assert.ok(!fs.existsSync(path.join(out, '.lock')), `${name}: the lock goes with the run`);
    }
    for (const parse of [(name: string) => parseFinetuneQaConfig({ name, checkpoint: 'c', corpus: { manifest: 'm' } }),
      (name: string) => parseFinetuneRetrievalConfig({ name, model: { init: 'i' }, data: { kind: 'manifest', manifest: 'm' } }),
      (name: string) => parseTrainClassifierConfig({ name, data: { dir: 'd' }, loss: { name: 'arcface' } })]) {
      assert.throws(() => parse('..'), /must not be only dots/);
      assert.throws(() => parse('../elsewhere'), /letters, digits, _ \. - only/);
    }
  });

  it('a lock whose pid now belongs to another process (a restart), or whose machine rebooted, is taken over and said so', async () => {
    const dir = fresh('stale');
    const me = currentHolder();
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ...me, procStart: '1' }, /pid \d+ now belongs to another process/],
      [{ ...me, boot: 'another-boot' }, /has restarted since/],
      [{ ...me, pid: spawnSync(process.execPath, ['-e', '0']).pid! }, /no longer exists/],
      [{ pid: process.pid }, /this process's own/],
    ];
    if (!me.procStart) cases.shift();
    if (!me.boot) cases.splice(cases.findIndex(([h]) => h.boot === 'another-boot'), 1);
    for (const [holder, reason] of cases) {
      const lock = path.join(dir, '.lock');
      fs.writeFileSync(lock, holder.host === undefined ? String(holder.pid) : JSON.stringify(holder));
      const said: string[] = [];
      const release = await acquireDirLock(dir, { wait: false, onTakeover: (_h, why) => said.push(why) });
      assert.equal(said.length, 1, JSON.stringify(holder));
      assert.match(said[0], reason);
      assert.equal(JSON.parse(fs.readFileSync(lock, 'utf8')).pid, process.pid);
      await release();
    }
  });

  it('waiting for a live lock says whom it waits for at each notice interval, then names it on timeout', async () => {
    const dir = fresh('wait');
    fs.writeFileSync(path.join(dir, '.lock'), JSON.stringify({ pid: 1, host: 'other-machine', startedAt: '2026-01-01T00:00:00.000Z' }));
    const notices: number[] = [];
    await assert.rejects(acquireDirLock(dir, { what: 'frame cache', pollMs: 5, waitNoticeMs: 40, timeoutMs: 200, onWait: (h, waited) => { assert.equal(h.host, 'other-machine'); notices.push(waited); } }),
      /frame cache .*still locked by process 1 on host other-machine \(since 2026-01-01T00:00:00\.000Z\) after 0 s; if no such run is going on, delete .*\.lock/);
    assert.ok(notices.length >= 3 && notices.length <= 7, `notices at ${notices.join(', ')} ms`);
    assert.ok(notices[0] < 40, `the first notice comes at once, not after an interval: ${notices[0]} ms`);
    for (let i = 1; i < notices.length; i++) assert.ok(notices[i] - notices[i - 1] >= 40, `notices at ${notices.join(', ')} ms`);
  });
});

describe('faults: resuming a run', function () {
  this.timeout(300000);
  let dataDir: string;
  const config = (over: Record<string, unknown> = {}) => parsePretrainConfig({
    name: 'resume', seed: 3, backend: 'wasm',
    data: { kind: 'synth', dir: dataDir, videos: 40, noise: 0, imbalance: 1, seed: 5, size: 32, frames: 8 },
    frames: { count: 2, size: 32 },
    tokenizer: { vocabSize: 200, maxLen: 16 },
    train: { steps: 4, batchSize: 8, lr: 0.002, warmupSteps: 1, checkpointEvery: 2, keepCheckpoints: 2 },
    eval: { batchSize: 16 },
    ...over,
  });
  before(() => { dataDir = path.join(fresh('resume-data'), 'data'); });

  it('refuses a checkpoint saved with another lr or seed, naming the keys; --allow-config-change continues; metrics.jsonl has no repeated step', async () => {
    const out = path.join(fresh('resume'), 'run');
    await runPretrain(config(), { out, quiet: true, stopAfter: 2 });
    // Evaluating the unfinished run names the step it evaluates.
    const said: string[] = [];
    await assert.rejects(evaluateCheckpointRetrieval({ checkpoint: out, manifest: path.join(out, 'absent.jsonl'), onLog: (m) => said.push(m) }), /absent\.jsonl does not exist/);
    assert.match(said.join('\n'), /warning: .*step-000002 is step 2 of a 4-step run, which stopped early or is still running/);
    // What a run killed after its step-2 checkpoint leaves: rows of steps it never saved.
    const metrics = path.join(out, 'metrics.jsonl');
    fs.appendFileSync(metrics, `${JSON.stringify({ step: 3, loss: 9 })}\n${JSON.stringify({ step: 4, loss: 9 })}\n{"step":5,"lo`);
    const changed = config({ seed: 4, train: { steps: 4, batchSize: 8, lr: 0.003, warmupSteps: 1, checkpointEvery: 2, keepCheckpoints: 2 } });
    await assert.rejects(runPretrain(changed, { out, quiet: true, resume: true }),
      /--resume: checkpoint .*step-000002 was saved with other settings: seed, train\.lr\. .*--allow-config-change/);
    const r = await runPretrain(changed, { out, quiet: true, resume: true, allowConfigChange: true });
    assert.equal(r.steps, 4);
    const rows = fs.readFileSync(metrics, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(rows.map((x) => (x.event ? `${x.event}@${x.step}` : x.step)), [1, 2, 'resume@2', 3, 4]);
    assert.equal(rows[2].droppedRows, 2);
    assert.ok(rows.every((x) => x.loss !== 9));
    // The same settings resume without a word about them.
    const again = await runPretrain(changed, { out, quiet: true, resume: true });
    assert.equal(again.steps, 4);
  });

  it('train-classifier --resume: another lr is refused, naming it; the same config resumes with no repeated step in metrics.jsonl or kappa-margins.jsonl', async () => {
    const dir = fresh('cls-resume');
    const data = path.join(dir, 'bench');
    await generateSynthIdentities({ out: data, identities: 4, imbalance: 1, maxPerIdentity: 6, testPerIdentity: 1, verifyIdentities: 2, perVerify: 2, folds: 1, pairsPerFold: 2, size: 16 });
    const cfg = (lr: number) => parseTrainClassifierConfig({
      name: 'c', data: { dir: data }, backend: 'wasm',
      model: { imageSize: 16, patch: 8, width: 8, layers: 1, heads: 2, embedDim: 4 },
      loss: { name: 'kappaface' },
      train: { steps: 4, batchSize: 8, lr, warmupSteps: 1, checkpointEvery: 2, keepCheckpoints: 2 },
    });
    const out = path.join(dir, 'run');
    await runTrainClassifier(cfg(0.002), { out, quiet: true });
    // A run killed after its step-2 checkpoint: step 4 never saved, rows 3 and 4 logged.
    fs.rmSync(path.join(out, 'checkpoints', 'step-000004'), { recursive: true });
    await assert.rejects(runTrainClassifier(cfg(0.003), { out, quiet: true, resume: true }),
      /--resume: checkpoint .*step-000002 was saved with other settings: train\.lr\. .*--allow-config-change/);
    const r = await runTrainClassifier(cfg(0.002), { out, quiet: true, resume: true });
    assert.equal(r.steps, 4);
    const rows = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(rows.map((x) => (x.event ? `${x.event}@${x.step}` : x.step)), [1, 2, 'resume@2', 3, 4]);
    assert.equal(rows[2].droppedRows, 2);
    // KappaFace's per-epoch margins: each step once, whether the interrupted run logged it or not.
    const kappa = fs.readFileSync(path.join(out, 'kappa-margins.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step as number);
    assert.ok(kappa.length > 0 && kappa.every((x) => x <= 4), kappa.join(','));
    assert.deepEqual(kappa, [...new Set(kappa)].sort((a, b) => a - b), `steps ${kappa.join(',')}`);
  });

  it('config constraints are checked before any data is read or decoded', async () => {
    const dir = fresh('early');
    const data = path.join(dir, 'data');
    await assert.rejects(runPretrain(config({ data: { kind: 'synth', dir: data }, frames: { count: 2, size: 36 } }), { out: path.join(dir, 'run'), quiet: true }),
      /model\.preset 'tiny' does not fit [\s\S]*patchSize 8 must divide imageSize 36/);
    assert.ok(!fs.existsSync(data), 'no corpus was generated');
    const manifest = path.join(dir, 'm.jsonl');
    fs.writeFileSync(manifest, ['a', 'b', 'c'].map((id, i) => JSON.stringify({ id, video: `${id}.mp4`, caption: `clip ${id}`, split: i < 2 ? 'train' : 'test' })).join('\n'));
    await assert.rejects(runPretrain(config({ data: { kind: 'manifest', manifest } }), { out: path.join(dir, 'run2'), quiet: true }),
      /train\.batchSize 8 is larger than the train split \(2 videos listed\)/);
    assert.ok(!fs.existsSync(path.join(dir, '.vlmargin')), 'nothing was decoded');
  });

  it('a fine-tune whose batch is larger than its train split is refused before any video is decoded', async () => {
    const dir = fresh('ft-early');
    const manifest = path.join(dir, 'm.jsonl');
    fs.writeFileSync(manifest, ['a', 'b', 'c'].map((id, i) => JSON.stringify({ id, video: `${id}.mp4`, caption: `clip ${id}`, split: i < 2 ? 'train' : 'test' })).join('\n'));
    const clip = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'test', 'fixtures', 'clip-tiny');
    const cfg = parseFinetuneRetrievalConfig({ backend: 'wasm', model: { init: clip }, frames: { count: 2 }, data: { kind: 'manifest', manifest }, train: { batchSize: 4 } });
    await assert.rejects(runFinetuneRetrieval(cfg, { out: path.join(dir, 'run'), quiet: true }),
      /train\.batchSize 4 is larger than the downstream train split \(2 videos listed\)/);
    assert.ok(!fs.existsSync(path.join(dir, '.vlmargin')), 'nothing was decoded');
  });
});

describe('faults: the frame cache', function () {
  this.timeout(120000);
  let dir: string;
  const clip = (name: string, colour: string): string => makeClip(path.join(dir, `${name}.mp4`), `color=c=${colour}:s=32x24:r=5:d=2`);
  const centre = async (cacheDir: string, id: string): Promise<number[]> => {
    const c = await (await openFrameCache(cacheDir)).get(id);
    const i = (8 * 16 + 8) * 3;
    return [...c.data.subarray(i, i + 3)];
  };
  const isColour = (px: number[], want: number[]) => px.every((v, k) => Math.abs(v - want[k]) < 30);
  before(() => { dir = fresh('cache'); });

  it('two manifests with the same ids in one cache folder each get their own frames', async () => {
    const out = path.join(dir, 'shared');
    const a: ManifestEntry[] = [{ id: 'v1', video: clip('a1', 'red'), captions: ['x'] }, { id: 'v2', video: clip('a2', 'red'), captions: ['x'] }];
    const b: ManifestEntry[] = [{ id: 'v1', video: clip('b1', 'blue'), captions: ['x'] }, { id: 'v2', video: clip('b2', 'blue'), captions: ['x'] }];
    await buildFrameCache(a, { out, frames: 2, size: 16 });
    const sb = await buildFrameCache(b, { out, frames: 2, size: 16 });
    assert.deepEqual([sb.decoded, sb.reused, sb.changed], [2, 0, 2]);
    assert.ok(isColour(await centre(out, 'v1'), [0, 0, 255]), 'B sees its blue clip');
    // Re-encoding a file in place (new size or mtime) is noticed too.
    makeClip(a[0].video, 'color=c=lime:s=32x24:r=5:d=2');
    const sa = await buildFrameCache(a, { out, frames: 2, size: 16 });
    assert.deepEqual([sa.decoded, sa.changed], [2, 2]);
    assert.ok(isColour(await centre(out, 'v1'), [0, 255, 0]));
  });

  it('a clip that failed as "file not found" is decoded once the file appears; a failure is retried on one more build', async () => {
    const out = path.join(dir, 'appears');
    const late: ManifestEntry = { id: 'late', video: path.join(dir, 'late.mp4'), captions: ['x'] };
    const s1 = await buildFrameCache([late], { out, frames: 2, size: 16 });
    assert.match(s1.skipped[0].reason, /file not found/);
    const s2 = await buildFrameCache([late], { out, frames: 2, size: 16 });
    assert.deepEqual([s2.retried, s2.skipped.length], [1, 1]);
    const s3 = await buildFrameCache([late], { out, frames: 2, size: 16 });
    assert.deepEqual([s3.retried, s3.reused, s3.skipped.length], [0, 1, 1]);
    clip('late', 'yellow');
    const s4 = await buildFrameCache([late], { out, frames: 2, size: 16 });
    assert.deepEqual([s4.decoded, s4.skipped.length], [1, 0]);
    assert.ok(isColour(await centre(out, 'late'), [255, 255, 0]));
  });

  it('errors go to errors.jsonl; index.json holds no error list and stays the same size', async () => {
    const out = path.join(dir, 'errors');
    const missing = Array.from({ length: 40 }, (_, i) => ({ id: `m${i}`, video: path.join(dir, `missing-${i}.mp4`), captions: ['x'] }));
    await buildFrameCache(missing.slice(0, 10), { out, frames: 2, size: 16, shardSize: 4 });
    const small = fs.statSync(path.join(out, 'index.json')).size;
    await buildFrameCache(missing, { out, frames: 2, size: 16, shardSize: 4 });
    const index = JSON.parse(fs.readFileSync(path.join(out, 'index.json'), 'utf8'));
    assert.equal(index.failed, 40);
    assert.ok(!('errors' in index), 'the index holds counts, not the errors');
    // It grows with the shard list only: 3 shards, then 10.
    assert.ok(fs.statSync(path.join(out, 'index.json')).size - small < 7 * 20, `${small} → ${fs.statSync(path.join(out, 'index.json')).size} bytes`);
    const logged = fs.readFileSync(path.join(out, 'errors.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    // 10 first failures, their retry on the second build, and 30 new ones.
    assert.equal(logged.length, 50);
    assert.ok(logged.every((e) => /file not found/.test(e.reason)));
  });

  it('bit rot in a shard is detected on read and the shard is decoded again on the next build', async () => {
    const out = path.join(dir, 'rot');
    const entries: ManifestEntry[] = [{ id: 'r', video: clip('rot', 'magenta'), captions: ['x'] }];
    await buildFrameCache(entries, { out, frames: 2, size: 16 });
    const shard = JSON.parse(fs.readFileSync(path.join(out, 'shard-00000.json'), 'utf8'));
    const bin = path.join(out, 'shard-00000.bin');
    assert.equal(shard.sha256, createHash('sha256').update(fs.readFileSync(bin)).digest('hex'));
    const bytes = fs.readFileSync(bin);
    bytes[100] ^= 0xff;
    fs.writeFileSync(bin, bytes);
    await assert.rejects((await openFrameCache(out)).get('r'), /shard-00000\.bin is corrupt \(SHA-256 [0-9a-f]{64}, its \.json records [0-9a-f]{64}\); build the cache again/);
    const warnings: string[] = [];
    const s = await buildFrameCache(entries, { out, frames: 2, size: 16, onWarning: (m) => warnings.push(m) });
    assert.deepEqual([s.decoded, s.corruptShards], [1, ['shard-00000']]);
    assert.match(warnings.join('\n'), /shard-00000\.bin is corrupt/);
    assert.ok(isColour(await centre(out, 'r'), [255, 0, 255]));
  });

  it('a complete cache on a read-only filesystem is used without a lock', async function () {
    const out = path.join(dir, 'readonly');
    const entries: ManifestEntry[] = [{ id: 'ro', video: clip('ro', 'white'), captions: ['x'] }];
    await buildFrameCache(entries, { out, frames: 2, size: 16 });
    const ro = makeReadOnly(out);
    if ('why' in ro) skipBecause(this, ro.why);
    try {
      assert.throws(() => fs.writeFileSync(path.join(out, 'probe'), 'x'), /EROFS|EACCES/);
      const s = await buildFrameCache(entries, { out, frames: 2, size: 16 });
      assert.deepEqual([s.decoded, s.reused], [0, 1]);
      assert.ok(isColour(await centre(out, 'ro'), [255, 255, 255]));
      // Work left to do on a read-only cache is an error that says why.
      await assert.rejects(buildFrameCache([...entries, { id: 'x', video: clip('x', 'red'), captions: ['x'] }], { out, frames: 2, size: 16 }), /cannot create the lock .*read-only/);
    } finally {
      ro.undo();
    }
  });

  it('a corrupt index.json is an error naming the file and the likely cause', async () => {
    const out = path.join(dir, 'badindex');
    await buildFrameCache([{ id: 'i', video: clip('i', 'red'), captions: ['x'] }], { out, frames: 2, size: 16 });
    fs.writeFileSync(path.join(out, 'index.json'), '{"format": "vlmargin-fra');
    await assert.rejects(openFrameCache(out), /index\.json is corrupt \(.*JSON.*\); likely the disk filled or the machine stopped while it was written/);
    await assert.rejects(buildFrameCache([{ id: 'i', video: path.join(dir, 'i.mp4'), captions: ['x'] }], { out, frames: 2, size: 16 }), /index\.json is corrupt/);
  });

  it('uniform sampling does not name its cache by seed; random does', () => {
    assert.equal(frameCacheDirName({ frames: 4, size: 32, strategy: 'uniform', seed: 7 }), 'frames-4x32-uniform');
    assert.equal(frameCacheDirName({ frames: 4, size: 32, strategy: 'random', seed: 7 }), 'frames-4x32-random-s7');
  });
});

describe('faults: ffmpeg', function () {
  this.timeout(60000);
  let dir: string;
  before(() => { dir = fresh('ffmpeg'); });
  afterEach(() => ffmpegModule.setFfmpegPath(ffmpegBinary().path));

  /** An ffmpeg that fails its first `n` decodes with ffmpeg's plain last line, then works. */
  function flakyFfmpeg(n: number): void {
    fluent();
    const count = path.join(dir, `count-${n}`);
    fs.writeFileSync(count, '');
    const wrapper = path.join(dir, `ffmpeg-flaky-${n}.sh`);
    fs.writeFileSync(wrapper, `#!/bin/sh
case "$*" in *rawvideo*)
  if [ "$(wc -c < '${count}')" -lt ${n} ]; then printf x >> '${count}'; echo 'video:12kB audio:0kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 0.000000%' >&2; exit 1; fi;;
esac
exec '${ffmpegBinary().path}' "$@"
`);
    fs.chmodSync(wrapper, 0o755);
    ffmpegModule.setFfmpegPath(wrapper);
  }

  it('reports fluent-ffmpeg\'s error, not ffmpeg\'s plain last line', () => {
    const plain = 'video:12kB audio:0kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 0.000000%';
    assert.equal(ffmpegFailure(new Error('ffmpeg was killed with signal SIGKILL'), ['frame=  4', plain]), 'ffmpeg was killed with signal SIGKILL');
    assert.equal(ffmpegFailure(new Error(`ffmpeg exited with code 1: ${plain}`), ['frame=  4', plain]), 'ffmpeg exited with code 1');
    assert.equal(ffmpegFailure(new Error('ffmpeg exited with code 1: '), ['[mov] moov atom not found', plain]), 'ffmpeg exited with code 1: [mov] moov atom not found');
  });

  it('a decode that fails once is retried and the clip kept; one that fails twice is skipped with the real error', async () => {
    const entries: ManifestEntry[] = [{ id: 'f', video: makeClip(path.join(dir, 'f.mp4'), 'color=c=red:s=32x24:r=5:d=2'), captions: ['x'] }];
    flakyFfmpeg(1);
    const once = await buildFrameCache(entries, { out: path.join(dir, 'once'), frames: 2, size: 16 });
    assert.deepEqual([once.decoded, once.skipped.length], [1, 0]);
    flakyFfmpeg(2);
    const twice = await buildFrameCache(entries, { out: path.join(dir, 'twice'), frames: 2, size: 16 });
    assert.equal(twice.skipped.length, 1);
    assert.match(twice.skipped[0].reason, /^ffmpeg failed: ffmpeg exited with code 1.* \(failed twice\)$/);
    assert.doesNotMatch(twice.skipped[0].reason, /muxing overhead/);
  });

  it('a decode whose process exits well after its output closed (a loaded machine) is kept, not taken for a failure', async () => {
    // fluent-ffmpeg gives the process 20 ms between its output closing and its exit; this ffmpeg
    // closes its output when the real one is done and exits 300 ms later, with the real status.
    fluent();
    const wrapper = path.join(dir, 'ffmpeg-slow-exit.sh');
    fs.writeFileSync(wrapper, `#!/bin/sh
case "$*" in *rawvideo*)
  '${ffmpegBinary().path}' "$@"; rc=$?; exec >&-; sleep 0.3; exit $rc;;
esac
exec '${ffmpegBinary().path}' "$@"
`);
    fs.chmodSync(wrapper, 0o755);
    ffmpegModule.setFfmpegPath(wrapper);
    const file = makeClip(path.join(dir, 'slow-exit.mp4'), 'color=c=blue:s=32x24:r=5:d=2');
    const s = await sampleFrames(file, { frames: 2, size: 16 });
    assert.deepEqual(s.shape, [2, 16, 16, 3]);
    const built = await buildFrameCache([{ id: 'slow', video: file, captions: ['x'] }], { out: path.join(dir, 'slow-exit'), frames: 2, size: 16 });
    assert.deepEqual([built.decoded, built.skipped.length], [1, 0], JSON.stringify(built.skipped));
  });

  it('a frame more than one frame interval from its slot counts as padding (a stretch with no frames)', async () => {
    // 5 fps, frames at 0–0.8 s and 3.0–3.8 s only: the slots at 1.5 s and 2.5 s have no frame near them.
    const file = makeClip(path.join(dir, 'gap.mp4'), 'color=c=red:s=32x24:r=5:d=2,setpts=\'if(gte(T,1),PTS+2/TB,PTS)\'', ['-vsync', 'passthrough', '-c:v', 'libx264', '-pix_fmt', 'yuv420p']);
    const s = await sampleFrames(file, { frames: 4, size: 16, start: 0, end: 4 });
    assert.deepEqual(s.timestamps, [0.5, 1.5, 2.5, 3.5]);
    assert.equal(s.padded, 2, `frames used: ${s.frameTimes.join(', ')}`);
    const whole = await sampleFrames(makeClip(path.join(dir, 'nogap.mp4'), 'color=c=red:s=32x24:r=5:d=4'), { frames: 4, size: 16 });
    assert.equal(whole.padded, 0);
  });
});

describe('faults: tokenizer, checkpoints and numerics', () => {
  it('a tokenizer write that dies midway leaves no folder (never a lone tokenizer.json); the key follows the captions and options', async () => {
    const out = path.join(fresh('tok'), 'tokenizer');
    let writes = 0;
    const disk = await fillDiskAfter(() => ++writes < 2, { syncWrites: false });
    try {
      await assert.rejects(buildTokenizer(['a red clip', 'a blue clip'], { out, vocabSize: 60 }), /buildTokenizer: cannot write the tokenizer files beside .*tokenizer/);
    } finally {
      disk.restore();
    }
    assert.ok(!fs.existsSync(out));
    assert.deepEqual(fs.readdirSync(path.dirname(out)), []);
    await buildTokenizer(['a red clip', 'a blue clip'], { out, vocabSize: 60 });
    assert.deepEqual(fs.readdirSync(out).sort(), ['special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt']);
    const k = tokenizerKey(['a red clip'], { vocabSize: 60 });
    assert.equal(tokenizerKey(['a red clip'], { vocabSize: 60, kind: 'wordpiece' }), k);
    assert.notEqual(tokenizerKey(['a red clip!'], { vocabSize: 60 }), k);
    assert.notEqual(tokenizerKey(['a red clip'], { vocabSize: 61 }), k);
    assert.notEqual(tokenizerKey(['a', 'b'], {}), tokenizerKey(['a\n"b'], {}));
  });

  it('a checkpoint holding NaN is refused on load, naming the file and tensor', async () => {
    const dir = path.join(fresh('nan'), 'ck');
    const w = tf.tensor1d([1, 2, 3]);
    await saveCheckpoint(dir, { config: {}, params: { w }, state: { step: 1 } });
    w.dispose();
    // Written by another tool: weights with a NaN and a state.json that vouches for them.
    const model = path.join(dir, 'model.safetensors');
    const { sha256 } = await writeSafetensors(model, { w: { dtype: 'F32', shape: [3], data: new Float32Array([1, NaN, 3]) } });
    const state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'));
    state.sha256['model.safetensors'] = sha256;
    fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify(state));
    await assert.rejects(loadCheckpoint(dir), /model\.safetensors: tensor 'w' has a non-finite value at flat index 1; these weights diverged/);
  });

  it('a Hugging Face CLIP folder whose weights hold NaN is refused on load, naming the file and tensor', async () => {
    const fixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'test', 'fixtures', 'clip-tiny');
    const dir = path.join(fresh('clip-nan'), 'clip');
    fs.cpSync(fixture, dir, { recursive: true });
    const file = path.join(dir, 'model.safetensors');
    const st = await readSafetensors(file);
    const [name, t] = [...st.tensors].find(([, v]) => v.dtype === 'F32' && v.data.length > 3)!;
    (t.data as Float32Array)[3] = Infinity;
    await writeSafetensors(file, st.tensors, st.metadata);
    await assert.rejects(loadClipWeights(await readClipFolder(dir)),
      new RegExp(`model\\.safetensors: tensor '${name.replace(/\./g, '\\.')}' has a non-finite value at flat index 3`));
  });

  it('safetensors are read by ranges: any chunk size gives the bytes of a whole-file read and the file\'s SHA-256', async () => {
    const file = path.join(fresh('st'), 'x.safetensors');
    const a = new Float32Array(1000).map((_, i) => Math.sin(i));
    await writeSafetensors(file, { a: { dtype: 'F32', shape: [10, 100], data: a }, b: { dtype: 'I8', shape: [3], data: new Int8Array([1, -2, 3]) } }, { k: 'v' });
    const whole = parseSafetensors(fs.readFileSync(file));
    const want = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
    for (const chunkBytes of [1, 7, 4096]) {
      const r = await readSafetensors(file, { sha256: true, chunkBytes });
      assert.equal(r.sha256, want);
      assert.deepEqual(r.tensors, whole.tensors);
      assert.deepEqual(r.metadata, { k: 'v' });
    }
    fs.truncateSync(file, fs.statSync(file).size - 1);
    await assert.rejects(readSafetensors(file), /trailing bytes|out of range/);
  });

  it('a safetensors file over 2 GiB loads (set VLMARGIN_LARGE_FILE_TESTS=1: needs 2.2 GB of memory and disk)', async function () {
    if (process.env.VLMARGIN_LARGE_FILE_TESTS !== '1') skipBecause(this, 'VLMARGIN_LARGE_FILE_TESTS is not 1 (the file and its array take 2.2 GB each)');
    this.timeout(600000);
    const file = path.join(fresh('big'), 'big.safetensors');
    const n = 2.2e9;
    const header = Buffer.from(JSON.stringify({ big: { dtype: 'U8', shape: [n], data_offsets: [0, n] } }).padEnd(64, ' '));
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(file, Buffer.concat([prefix, header]));
    fs.truncateSync(file, 8 + header.length + n);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from([7]), 0, 1, 8 + header.length + n - 1);
    fs.closeSync(fd);
    const r = await readSafetensors(file);
    const big = r.tensors.get('big')!;
    assert.equal(big.data.length, n);
    assert.equal(big.data[n - 1], 7);
    assert.equal(big.data[0], 0);
  });

  it('NaN every other step trips the skipped-step rate: 11 of the last 21 steps is over 20% of a 50-step window (hand count)', async () => {
    const guard = new NonFiniteGuard({ maxConsecutive: 5, window: 50, maxRate: 0.2 });
    let tripped = -1;
    for (let i = 0; i < 30 && tripped < 0; i++) {
      try { guard.check(i % 2 === 0 ? NaN : 1, true, i); } catch (e) { tripped = i; assert.match((e as Error).message, /stopped at step 20: 11 of the last 21 steps had a non-finite loss/); }
    }
    // Skips at 0, 2, …, 20: the 11th is over 0.2 · 50 = 10.
    assert.equal(tripped, 20);
    const runDir = fresh('nanrate');
    const job = tinyJob(runDir, { steps: 30, checkpointEvery: 0, nanAt: (s) => s % 2 === 0 });
    try {
      await assert.rejects(runTraining(job.options, job.hooks), /11 of the last 21 steps/);
    } finally {
      job.dispose();
    }
  });

  it('a second SIGINT quits at once; the first one only asks for a clean stop', async () => {
    const runDir = fresh('sigint');
    const job = tinyJob(runDir, { steps: 1000, checkpointEvery: 0 });
    let quit = 0;
    const others = process.listeners('SIGINT');
    process.removeAllListeners('SIGINT');
    try {
      const run = runTraining({ ...job.options, handleSignals: true, forceQuit: () => { quit++; throw new Error('forced quit'); } }, {
        ...job.hooks,
        computeGrads: async (step, m) => {
          if (step === 3) {
            process.emit('SIGINT', 'SIGINT');
            assert.equal(quit, 0, 'the first SIGINT does not quit');
            process.emit('SIGINT', 'SIGINT');
          }
          return job.hooks.computeGrads(step, m);
        },
      });
      await assert.rejects(run, /forced quit/);
      assert.equal(quit, 1);
      assert.match(job.stream.text, /SIGINT: finishing the current step.*Ctrl-C again quits at once/);
      assert.match(job.stream.text, /SIGINT again: quitting now without a checkpoint/);
    } finally {
      for (const l of others) process.on('SIGINT', l as NodeJS.SignalsListener);
      job.dispose();
    }
  });

  it('out of memory is named as such, with what to lower', async () => {
    assert.equal(describeOutOfMemory(new Error('shape mismatch'), 'x'), undefined);
    const runDir = fresh('oom');
    const job = tinyJob(runDir);
    try {
      await assert.rejects(runTraining(job.options, { ...job.hooks, computeGrads: async () => { throw new RangeError('memory access out of bounds'); } }),
        /training step 0: out of memory \(memory access out of bounds\)\. .*lower train\.batchSize/);
    } finally {
      job.dispose();
    }
  });

  it('configChanges names every differing key, configHash ignores key order', () => {
    assert.deepEqual(configChanges({ seed: 1, train: { lr: 1, steps: 4 }, loss: { marginRad: 0.1 } }, { seed: 2, train: { lr: 1, steps: 5 }, loss: { marginRad: 0.2 }, extra: true }),
      ['extra', 'loss.marginRad', 'seed', 'train.steps']);
    assert.equal(configHash({ a: 1, b: { c: [1, 2] } }), configHash({ b: { c: [1, 2] }, a: 1 }));
    assert.notEqual(configHash({ a: 1 }), configHash({ a: 2 }));
  });
});
