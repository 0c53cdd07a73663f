import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPretrainConfig, marginAt, parsePretrainConfig } from '../pipelines/config.js';
import { resolvePretrainConfig, runPretrain } from '../pipelines/pretrain.js';
import { readModelInfo } from '../src/train/checkpointInfo.js';
import { openFrameCache } from '../src/data/frameCache.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const script = path.join(root, 'dist', 'pipelines', 'pretrain.js');

function run(args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; signal: NodeJS.Signals | null; err: string }> } {
  const child = spawn(process.execPath, [script, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => { err += d; });
  child.stdout!.on('data', (d) => { err += d; });
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; err: string }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal, err }));
  });
  return { child, done };
}

describe('pretrain config', () => {
  it('the shipped configs validate', async () => {
    const cfg = await loadPretrainConfig('default');
    assert.equal(cfg.data.kind, 'synth');
    assert.equal(cfg.model.preset, 'tiny');
    assert.equal((await loadPretrainConfig('manifest')).data.kind, 'manifest');
    assert.equal((await loadPretrainConfig('msrvtt')).data.kind, 'msrvtt');
  });

  it('unknown keys and bad values are errors that name the key', () => {
    assert.throws(() => parsePretrainConfig({ data: { kind: 'synth' }, train: { batchSise: 4 } }, 'c.json'), /c\.json: invalid config[\s\S]*train.*batchSise/);
    assert.throws(() => parsePretrainConfig({ data: { kind: 'synth' }, train: { batchSize: 1 } }, 'c.json'), /train\.batchSize/);
    assert.throws(() => parsePretrainConfig({ data: { kind: 'synth' }, loss: { marginRad: -0.1 } }, 'c.json'), /loss\.marginRad/);
    assert.throws(() => parsePretrainConfig({ data: { kind: 'webm' } }, 'c.json'), /data/);
  });

  it('the margin schedule is 0 before its start, then ramps linearly to marginRad', () => {
    const loss = parsePretrainConfig({ data: { kind: 'synth' }, loss: { marginRad: 0.2, marginStartStep: 10, marginRampSteps: 4 } }).loss;
    assert.deepEqual([0, 9, 10, 11, 12, 13, 14, 100].map((s) => +marginAt(loss, s).toFixed(6)), [0, 0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2]);
    const flat = parsePretrainConfig({ data: { kind: 'synth' }, loss: { marginRad: 0.2 } }).loss;
    assert.equal(marginAt(flat, 0), 0.2);
  });

  it('a missing config file is an error that names it', async () => {
    await assert.rejects(() => loadPretrainConfig('/nonexistent/x.json'), /--config: cannot read \/nonexistent\/x\.json/);
  });
});

describe('pretrain pipeline end to end', function () {
  this.timeout(300000);
  let tmp: string;
  let configPath: string;

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-pretrain-'));
    configPath = path.join(tmp, 'small.json');
    await writeFile(configPath, JSON.stringify({
      name: 'small', seed: 3, backend: 'wasm',
      data: { kind: 'synth', dir: path.join(tmp, 'data'), videos: 40, noise: 0.2, imbalance: 4, seed: 5, size: 32, frames: 8 },
      frames: { count: 2, size: 32 },
      tokenizer: { vocabSize: 200, maxLen: 16 },
      train: { steps: 24, batchSize: 8, lr: 0.002, warmupSteps: 2, checkpointEvery: 4, keepCheckpoints: 2 },
      eval: { batchSize: 16 },
    }));
  });

  it('runs, writes eval.json, and a kill -9 then --resume ends bit-identical to an uninterrupted run', async () => {
    const outA = path.join(tmp, 'runA');
    const a = await run(['--config', configPath, '--out', outA, '--quiet']).done;
    assert.equal(a.code, 0, a.err);
    const evalA = JSON.parse(await readFile(path.join(outA, 'eval.json'), 'utf8'));
    for (const dir of ['t2v', 'v2t']) for (const k of ['R1', 'R5', 'R10', 'MdR', 'MnR']) assert.equal(typeof evalA[dir][k], 'number', `${dir}.${k}`);
    assert.equal(evalA.steps, 24);
    assert.equal(evalA.backend, 'wasm');
    assert.ok(evalA.wallSeconds > 0);
    const lines = (await readFile(path.join(outA, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 24);
    for (const l of lines) {
      assert.ok(Number.isFinite(l.loss) && l.loss > 0, `loss ${l.loss} at step ${l.step}`);
      for (const k of ['lr', 'logitScale', 'samplesPerSec', 'dataWaitMs', 'memory']) assert.ok(k in l, k);
    }
    const tensorsFlat = lines.slice(2).every((l) => l.memory.numTensors === lines[1].memory.numTensors);
    assert.ok(tensorsFlat, `numTensors per step: ${lines.map((l) => l.memory.numTensors)}`);

    const outB = path.join(tmp, 'runB');
    const b = run(['--config', configPath, '--out', outB, '--quiet']);
    const ckDir = path.join(outB, 'checkpoints');
    let killedAfter = '';
    while (!killedAfter) {
      await new Promise((r) => setTimeout(r, 25));
      const names = existsSync(ckDir) ? (await readdir(ckDir)).filter((n) => /^step-\d+$/.test(n)) : [];
      if (names.some((n) => n >= 'step-000008')) { b.child.kill('SIGKILL'); killedAfter = names.sort().at(-1)!; }
      if (b.child.exitCode !== null) break;
    }
    const killed = await b.done;
    assert.equal(killed.signal, 'SIGKILL', `the run ended before it could be killed: ${killed.err}`);
    assert.ok(!existsSync(path.join(outB, 'eval.json')));
    const resumed = await run(['--config', configPath, '--out', outB, '--resume', '--quiet']).done;
    assert.equal(resumed.code, 0, resumed.err);
    const finalA = await readFile(path.join(outA, 'checkpoints', 'step-000024', 'model.safetensors'));
    const finalB = await readFile(path.join(outB, 'checkpoints', 'step-000024', 'model.safetensors'));
    assert.ok(finalA.equals(finalB), `weights after kill at ${killedAfter} + resume differ from the uninterrupted run`);
    const evalB = JSON.parse(await readFile(path.join(outB, 'eval.json'), 'utf8'));
    assert.deepEqual(evalB.t2v, evalA.t2v);
  });

  it('with MWN weighting on every batch-level input: eval.json reports the weighting per input, and stop + --resume restores the weight net and meta batches exactly', async () => {
    const cfgPath = path.join(tmp, 'mwn.json');
    await writeFile(cfgPath, JSON.stringify({
      name: 'mwn', seed: 4, backend: 'wasm',
      data: { kind: 'synth', dir: path.join(tmp, 'data-mwn'), videos: 100, noise: 0.4, imbalance: 4, seed: 5, size: 32, frames: 8 },
      frames: { count: 2, size: 32 },
      tokenizer: { vocabSize: 200, maxLen: 16 },
      train: { steps: 10, batchSize: 8, lr: 0.002, warmupSteps: 2, checkpointEvery: 5 },
      weighting: { method: 'mwn', metaBatchSize: 4, metaScope: 'heads', inputs: ['loss', 'cosine', 'rowMargin', 'columnMargin', 'rank', 'progress'] },
      eval: { batchSize: 16 },
    }));
    const outA = path.join(tmp, 'mwnA');
    const a = await run(['--config', cfgPath, '--out', outA, '--quiet']).done;
    assert.equal(a.code, 0, a.err);
    const evalA = JSON.parse(await readFile(path.join(outA, 'eval.json'), 'utf8'));
    assert.ok(evalA.weighting.aurocCleanVsNoisy >= 0 && evalA.weighting.aurocCleanVsNoisy <= 1);
    assert.ok(evalA.weighting.noisy > 0 && evalA.weighting.clean > 0);
    for (const f of ['weights-histogram.png', 'weight-by-input.png']) assert.ok(existsSync(path.join(outA, f)), f);
    assert.ok(!existsSync(path.join(outA, 'weight-curve.png')), 'V(loss) alone is drawn only for a loss-only net');
    const w = evalA.weighting;
    assert.deepEqual(w.inputs, ['loss', 'cosine', 'rowMargin', 'columnMargin', 'rank', 'progress']);
    const set = w.aurocByInputSet['loss+cosine+rowMargin+columnMargin+rank+progress'];
    assert.equal(set.weight, w.aurocCleanVsNoisy);
    for (const x of w.inputs) {
      assert.ok(set.byInput[x] >= 0 && set.byInput[x] <= 1, `AUROC of ${x} alone`);
      assert.equal(w.weightByInput[x].x.length, w.weightByInput[x].weight.length);
    }
    const outB = path.join(tmp, 'mwnB');
    const b1 = await run(['--config', cfgPath, '--out', outB, '--quiet', '--stop-after', '5']).done;
    assert.equal(b1.code, 0, b1.err);
    const b2 = await run(['--config', cfgPath, '--out', outB, '--quiet', '--resume']).done;
    assert.equal(b2.code, 0, b2.err);
    for (const f of ['model.safetensors', 'optimizer.safetensors']) {
      const x = await readFile(path.join(outA, 'checkpoints', 'step-000010', f));
      const y = await readFile(path.join(outB, 'checkpoints', 'step-000010', f));
      assert.ok(x.equals(y), `${f} after stop + resume differs from the uninterrupted run`);
    }
  });

  it('frames.shuffleBuffer streams the cache (here with random frames): its position is checkpointed, and stop + --resume ends bit-identical', async () => {
    const cfgPath = path.join(tmp, 'stream.json');
    await writeFile(cfgPath, JSON.stringify({
      name: 'stream', seed: 3, backend: 'wasm',
      data: { kind: 'synth', dir: path.join(tmp, 'data'), videos: 40, noise: 0.2, imbalance: 4, seed: 5, size: 32, frames: 8 },
      frames: { count: 2, size: 32, shuffleBuffer: 6, strategy: 'random', candidates: 2 },
      tokenizer: { vocabSize: 200, maxLen: 16 },
      train: { steps: 10, batchSize: 8, lr: 0.002, warmupSteps: 2, checkpointEvery: 5 },
      eval: { batchSize: 16 },
    }));
    const outA = path.join(tmp, 'streamA');
    const a = await run(['--config', cfgPath, '--out', outA, '--quiet']).done;
    assert.equal(a.code, 0, a.err);
    const state = JSON.parse(await readFile(path.join(outA, 'checkpoints', 'step-000005', 'state.json'), 'utf8'));
    assert.equal(state.dataPosition.shuffleBuffer, 6, `data position ${JSON.stringify(state.dataPosition)}`);
    // Past an epoch by step 5 (fewer than 40 training videos at batch 8), so the resume replays into a later epoch.
    assert.ok(state.dataPosition.epoch >= 1, `data position ${JSON.stringify(state.dataPosition)}`);
    const outB = path.join(tmp, 'streamB');
    const b1 = await run(['--config', cfgPath, '--out', outB, '--quiet', '--stop-after', '5']).done;
    assert.equal(b1.code, 0, b1.err);
    const b2 = await run(['--config', cfgPath, '--out', outB, '--quiet', '--resume']).done;
    assert.equal(b2.code, 0, b2.err);
    for (const f of ['model.safetensors', 'optimizer.safetensors']) {
      const x = await readFile(path.join(outA, 'checkpoints', 'step-000010', f));
      const y = await readFile(path.join(outB, 'checkpoints', 'step-000010', f));
      assert.ok(x.equals(y), `${f} after stop + resume differs from the uninterrupted streaming run`);
    }
  });

  it('--resume with the other loader (frames.shuffleBuffer set or unset) fails naming both loaders and the key, with or without --allow-config-change', async () => {
    const config = (shuffleBuffer?: number) => JSON.stringify({
      name: 'loaders', seed: 3, backend: 'wasm',
      data: { kind: 'synth', dir: path.join(tmp, 'data'), videos: 40, noise: 0.2, imbalance: 4, seed: 5, size: 32, frames: 8 },
      frames: { count: 2, size: 32, ...(shuffleBuffer ? { shuffleBuffer } : {}) },
      tokenizer: { vocabSize: 200, maxLen: 16 },
      train: { steps: 4, batchSize: 8, lr: 0.002, warmupSteps: 2, checkpointEvery: 2 },
      eval: { batchSize: 16 },
    });
    const streaming = path.join(tmp, 'loaders-stream.json');
    const random = path.join(tmp, 'loaders-random.json');
    await writeFile(streaming, config(6));
    await writeFile(random, config());
    const out = path.join(tmp, 'loaders');
    const first = await run(['--config', streaming, '--out', out, '--quiet', '--stop-after', '2']).done;
    assert.equal(first.code, 0, first.err);
    for (const extra of [[], ['--allow-config-change']]) {
      const r = await run(['--config', random, '--out', out, '--quiet', '--resume', ...extra]).done;
      assert.equal(r.code, 1, r.err);
      assert.match(r.err, /--resume: checkpoint \S+step-000002 was written with the streaming loader \(frames\.shuffleBuffer 6\), and this run uses the random-access loader \(frames\.shuffleBuffer unset\); .*The config key frames\.shuffleBuffer selects the loader: set it to 6 to resume this run/);
    }
    const resumed = await run(['--config', streaming, '--out', out, '--quiet', '--resume']).done;
    assert.equal(resumed.code, 0, resumed.err);
  });

  it('SIGINT finishes the step, saves a checkpoint at it and stops; --resume runs to the end', async () => {
    const out = path.join(tmp, 'runSig');
    const r = run(['--config', configPath, '--out', out, '--quiet']);
    const ckDir = path.join(out, 'checkpoints');
    while (r.child.exitCode === null) {
      await new Promise((res) => setTimeout(res, 25));
      if (existsSync(ckDir) && (await readdir(ckDir)).some((n) => /^step-\d+$/.test(n))) { r.child.kill('SIGINT'); break; }
    }
    const first = await r.done;
    assert.equal(first.code, 0, first.err);
    const ev = JSON.parse(await readFile(path.join(out, 'eval.json'), 'utf8'));
    assert.equal(ev.stopped, 'signal', 'the run ended before the signal arrived');
    assert.ok(ev.steps < 24);
    const saved = (await readdir(ckDir)).filter((n) => /^step-\d+$/.test(n)).sort();
    assert.equal(saved.at(-1), `step-${String(ev.steps).padStart(6, '0')}`, 'a checkpoint at the step where it stopped');
    const second = await run(['--config', configPath, '--out', out, '--quiet', '--resume']).done;
    assert.equal(second.code, 0, second.err);
    assert.equal(JSON.parse(await readFile(path.join(out, 'eval.json'), 'utf8')).steps, 24);
  });
});

describe('pretrain from a Hugging Face CLIP folder (model.init)', function () {
  this.timeout(120000);
  const clipDir = path.join(root, 'test', 'fixtures', 'clip-tiny');

  it('takes the folder\'s shapes, tokenizer, frame size and normalisation, and writes them into its checkpoints', async () => {
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-pretrain-clip-'));
    const cfg = parsePretrainConfig({
      name: 'from-clip', seed: 2, backend: 'wasm',
      data: { kind: 'synth', dir: path.join(tmp, 'data'), videos: 40, noise: 0, imbalance: 1, seed: 5, size: 32, frames: 8 },
      frames: { count: 2, strategy: 'random', candidates: 2 },
      model: { init: clipDir },
      train: { steps: 3, batchSize: 8, lr: 0.002, warmupSteps: 1, checkpointEvery: 3, keepCheckpoints: 1 },
      eval: { batchSize: 16 },
    });
    const r = await runPretrain(cfg, { out: path.join(tmp, 'run'), quiet: true });
    assert.equal(r.steps, 3);
    const info = await readModelInfo(r.runDir);
    // Random frames: the training clips' 2 × 2 uniform candidates in one cache, the test clips' 2 uniform frames in another.
    const candidates = await openFrameCache(path.join(tmp, 'data', 'frames-4x32-uniform'));
    const fixed = await openFrameCache(path.join(tmp, 'data', 'frames-2x32-uniform'));
    const testIds = new Set(fixed.ids);
    assert.ok(candidates.ids.length >= 8 && testIds.size >= 2, `${candidates.ids.length} training clips, ${testIds.size} test clips cached`);
    assert.ok(candidates.ids.every((id) => !testIds.has(id)), 'a test clip is among the training candidates');
    assert.equal(info.frames.strategy, 'uniform', 'a model trained on random frames is evaluated on uniform ones');
    assert.equal(info.frames.count, 2);
    await rm(tmp, { recursive: true, force: true });
    assert.equal(info.model.vision.width, 32);
    assert.equal(info.model.text.vocabSize, 622);
    assert.equal(info.frames.size, 32);
    assert.equal(info.maxLen, 16);
    assert.equal(info.tokenizerDir, clipDir);
    assert.deepEqual(info.preprocess.std, [0.2, 0.25, 0.3]);
  });

  it('refuses settings that contradict the model, naming the key', async () => {
    const init = await readModelInfo(clipDir);
    const base = { data: { kind: 'synth' }, model: { init: clipDir } };
    assert.throws(() => resolvePretrainConfig(parsePretrainConfig({ ...base, frames: { size: 64 } }), init), /frames\.size 64[\s\S]*32 px/);
    assert.throws(() => resolvePretrainConfig(parsePretrainConfig({ ...base, tokenizer: { dir: 'tok' } }), init), /tokenizer\.dir/);
    assert.throws(() => resolvePretrainConfig(parsePretrainConfig({ ...base, tokenizer: { maxLen: 40 } }), init), /tokenizer\.maxLen 40[\s\S]*16 tokens/);
    const plain = resolvePretrainConfig(parsePretrainConfig({ data: { kind: 'synth' } }), undefined);
    assert.equal(plain.frames.size, 32);
    assert.equal(plain.tokenizer.maxLen, 24);
  });
});
