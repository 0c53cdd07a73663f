import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import { applyDataPath, applySets, loadPretrainConfig, parsePretrainConfig } from '../pipelines/config.js';
import { runPretrain, validationSplit } from '../pipelines/pretrain.js';
import { buildProgram, commandPaths } from '../pipelines/cli/program.js';
import { openRunFolder } from '../pipelines/runFolder.js';
import { parseSpeakerConfig, runTrainSpeaker } from '../pipelines/speaker.js';
import { parseSpoofConfig, runTrainSpoof } from '../pipelines/spoof.js';
import { tf } from '../src/backend/tf.js';
import { emptySplitReasons, readManifest } from '../src/data/manifest.js';
import type { ManifestEntry } from '../src/data/types.js';
import { CollapseDetector, inBatchStats, inBatchStatsFromCosines } from '../src/train/collapse.js';
import { MetricsLogger, progressFormat, writeProgress } from '../src/train/logger.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'pipelines', 'cli', 'main.js');

function runCli(args: string[]): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, [cli, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, out })));
}

describe('run folders', () => {
  let tmp: string;
  before(async () => { tmp = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-runfolder-')); });

  it('a folder holding a run is refused without --resume or --overwrite, and --overwrite removes only run outputs', async () => {
    const dir = path.join(tmp, 'run');
    const open = async (o?: { resume?: boolean; overwrite?: boolean }) => (await openRunFolder(dir, 'x', () => undefined, o)).release();
    await open();
    await open(); // empty: fine
    await mkdir(path.join(dir, 'checkpoints', 'step-000004'), { recursive: true });
    await writeFile(path.join(dir, 'metrics.jsonl'), '{}\n');
    await writeFile(path.join(dir, 'notes.txt'), 'mine');
    await assert.rejects(open(), /--out .*run already holds a run \(checkpoints, metrics\.jsonl\); pass --resume to continue it, --overwrite to replace it/);
    // The refusal gave the lock back: the same folder opens at once with --resume.
    await open({ resume: true });
    assert.ok(existsSync(path.join(dir, 'metrics.jsonl')));
    await assert.rejects(open({ resume: true, overwrite: true }), /--resume and --overwrite: give one/);
    assert.ok(existsSync(path.join(dir, 'metrics.jsonl')));
    await open({ overwrite: true });
    assert.ok(!existsSync(path.join(dir, 'metrics.jsonl')) && !existsSync(path.join(dir, 'checkpoints')));
    assert.equal(await readFile(path.join(dir, 'notes.txt'), 'utf8'), 'mine');
  });

  it('speaker and anti-spoofing training refuse a folder holding a run before any work', async () => {
    const dir = path.join(tmp, 'audio-run');
    await mkdir(path.join(dir, 'checkpoints'), { recursive: true });
    const speaker = parseSpeakerConfig({});
    await assert.rejects(runTrainSpeaker(speaker, { audio: path.join(tmp, 'no-audio'), out: dir, quiet: true }), /already holds a run \(checkpoints\); pass --resume to continue it, --overwrite to replace it/);
    await assert.rejects(runTrainSpoof(parseSpoofConfig({}), { protocol: path.join(tmp, 'none.txt'), audio: tmp, out: dir, quiet: true }), /already holds a run/);
    // With --overwrite the folder is taken and the job goes on to its data (missing here).
    await assert.rejects(runTrainSpeaker(speaker, { audio: path.join(tmp, 'no-audio'), out: dir, quiet: true, overwrite: true }), /--audio/);
    assert.ok(!existsSync(path.join(dir, 'checkpoints')));
  });

  it('--overwrite never removes the outputs of a run that holds the folder', async () => {
    const dir = path.join(tmp, 'busy');
    const first = await openRunFolder(dir, 'x', () => undefined);
    await writeFile(path.join(dir, 'metrics.jsonl'), '{}\n');
    try {
      await assert.rejects(openRunFolder(dir, 'x', () => undefined, { overwrite: true }), /is in use by process/);
      assert.ok(existsSync(path.join(dir, 'metrics.jsonl')));
    } finally {
      await first.release();
    }
  });
});

describe('config from the command line', () => {
  let tmp: string;
  before(async () => { tmp = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-set-')); });

  it('--set assigns typed values on any path and is validated like the file', async () => {
    const raw = applySets({ data: { kind: 'synth' }, train: { steps: 10 } }, ['train.steps=30', 'loss.marginRad=0.01', 'model.preset=small', 'train.evalEvery=5']);
    const cfg = parsePretrainConfig(raw);
    assert.deepEqual([cfg.train.steps, cfg.loss.marginRad, cfg.model.preset, cfg.train.evalEvery], [30, 0.01, 'small', 5]);
    await assert.rejects(loadPretrainConfig('default', { sets: ['train.steps=abc'] }), /default\.json \(with --set train\.steps=abc\): invalid config\n\s+train\.steps: .*number/);
    await assert.rejects(loadPretrainConfig('default', { sets: ['train.stpes=3'] }), /train[\s\S]*stpes/);
    assert.throws(() => applySets({}, ['steps']), /--set 'steps': expected key\.path=value/);
    assert.throws(() => applySets({ seed: 1 }, ['seed.x=1']), /'seed' is not an object/);
  });

  it('--data points any data kind at the data', async () => {
    const manifest = path.join(tmp, 'mine', 'manifest.jsonl');
    await mkdir(path.dirname(manifest), { recursive: true });
    await writeFile(manifest, '');
    const synth = { data: { kind: 'synth', dir: 'data/x' } };
    assert.deepEqual(applyDataPath(synth, path.join(tmp, 'new-corpus')).data, { kind: 'synth', dir: path.join(tmp, 'new-corpus') });
    assert.deepEqual(applyDataPath(synth, manifest).data, { kind: 'manifest', manifest });
    assert.deepEqual(applyDataPath(synth, path.dirname(manifest)).data, { kind: 'manifest', manifest });
    const kept = applyDataPath({ data: { kind: 'manifest', manifest: 'a.jsonl', testSplit: 'eval' } }, manifest).data as Record<string, unknown>;
    assert.deepEqual(kept, { kind: 'manifest', manifest, testSplit: 'eval' });
    const ms = applyDataPath({ data: { kind: 'msrvtt', annotations: 'x', videoDir: 'y', dir: 'z' } }, path.join(tmp, 'MSRVTT')).data;
    assert.deepEqual(ms, { kind: 'msrvtt', annotations: path.join(tmp, 'MSRVTT', 'annotation', 'MSRVTT_data.json'), videoDir: path.join(tmp, 'MSRVTT', 'videos', 'all'), dir: path.join(tmp, 'MSRVTT') });
    assert.throws(() => applyDataPath({ data: { kind: 'manifest', manifest: 'a' } }, path.join(tmp, 'nothing-here')), /--data .*nothing-here: no such manifest/);
    const cfg = await loadPretrainConfig('manifest', { data: manifest, sets: ['train.steps=3'] });
    assert.equal(cfg.data.kind === 'manifest' && cfg.data.manifest, manifest);
  });

  it('a manifest whose every line is bad says why, not only that the split is empty', async () => {
    const file = path.join(tmp, 'bad', 'manifest.jsonl');
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, [
      '{"id":"a","video":"a.mp4","caption":"x","split":"train"',
      '{"id":"b","video":"../b.mp4","caption":"x","split":"train"}',
      '{"id":"c","video":"c.mp4","split":"train"}',
      '{"id":"d","video":"d.mp4","caption":"","split":"train"}',
    ].join('\n'));
    const m = await readManifest(file);
    const why = emptySplitReasons(m);
    assert.match(why, /0 usable entries; 4 lines skipped, first:\n\s+line 1: invalid JSON[^\n]*\n\s+line 2: video path "\.\.\/b\.mp4" resolves outside[^\n]*data\.allowOutsideRoot[^\n]*\n\s+line 3: missing "caption"/);
    assert.doesNotMatch(why, /line 4/);
    const cfg = parsePretrainConfig({ data: { kind: 'manifest', manifest: file }, backend: 'wasm' });
    await assert.rejects(runPretrain(cfg, { out: path.join(tmp, 'run-bad'), quiet: true }), /no entries with split 'train' \(data\.trainSplit\) \(0 usable entries; 4 lines skipped, first:\n\s+line 1: invalid JSON/);
  });
});

describe('validation split for evalEvery', () => {
  const entry = (id: string, split: string): ManifestEntry => ({ id, video: `/v/${id}.mp4`, captions: [id], split });
  const train = Array.from({ length: 40 }, (_, i) => entry(`t${i}`, 'train'));
  const all = { has: () => true };

  it('uses the data\'s own validation split, else holds out a fixed slice of train, never test', () => {
    const cfg = parsePretrainConfig({ data: { kind: 'synth' }, train: { evalEvery: 10 } });
    const own = validationSplit(cfg, { val: [entry('v0', 'val'), entry('v1', 'val')], valName: "split 'val'" }, train, all);
    assert.deepEqual(own.val.map((e) => e.id), ['v0', 'v1']);
    assert.equal(own.train.length, 40);
    const held = validationSplit(cfg, { val: [], valName: '' }, train, all);
    assert.equal(held.val.length, 4); // eval.valFraction 0.1 of 40
    assert.equal(held.train.length, 36);
    assert.ok(held.val.every((v) => !held.train.some((t) => t.id === v.id) && v.split === 'train'));
    assert.deepEqual(validationSplit(cfg, { val: [], valName: '' }, train, all).val, held.val, 'the same draw every time');
    const other = validationSplit(parsePretrainConfig({ data: { kind: 'synth' }, seed: 2, train: { evalEvery: 10 } }), { val: [], valName: '' }, train, all);
    assert.notDeepEqual(other.val.map((e) => e.id), held.val.map((e) => e.id));
    const none = validationSplit(parsePretrainConfig({ data: { kind: 'synth' } }), { val: [], valName: '' }, train, all);
    assert.equal(none.train.length, 40);
    assert.equal(none.val.length, 0);
  });
});

describe('collapse detection', function () {
  this.timeout(240000);

  it('in-batch figures match a hand calculation', async () => {
    // Texts 0 and 1 find their videos, text 2 finds video 0; positive cosines 1, 0.5, 0.
    const c = [1, 0, 0, 0, 0.5, 0.2, 0.9, 0.1, 0];
    const s = inBatchStatsFromCosines(c, 3);
    assert.equal(s.t2vTop1, 2 / 3);
    const pos = [0, 60, 90];
    const mean = (pos[0] + pos[1] + pos[2]) / 3;
    assert.ok(Math.abs(s.posAngleMeanDeg - mean) < 1e-9);
    assert.ok(Math.abs(s.posAngleStdDeg - Math.sqrt(pos.reduce((a, p) => a + (p - mean) ** 2, 0) / 3)) < 1e-6);
    const neg = [0, 0, 0, 0.2, 0.9, 0.1].map((x) => (Math.acos(x) * 180) / Math.PI);
    assert.ok(Math.abs(s.negAngleMeanDeg - neg.reduce((a, b) => a + b, 0) / 6) < 1e-9);
    const v = tf.tensor2d([[1, 0], [0, 1]]);
    const t = tf.tensor2d([[2, 0], [0, 3]]);
    const before = tf.memory().numTensors;
    const st = await inBatchStats(v, t);
    assert.equal(tf.memory().numTensors, before);
    assert.deepEqual([st.t2vTop1, st.posAngleMeanDeg, st.negAngleMeanDeg], [1, 0, 90]);
    tf.dispose([v, t]);
  });

  it('flags orthogonal pairs at a low loss once, never an aligned batch', () => {
    const B = 8;
    const det = new CollapseDetector({ batchSize: B, checkEvery: 5 });
    assert.equal(det.wantsCheck(0, Math.log(B)), false, 'chance-level loss is no reason to look');
    assert.equal(det.wantsCheck(3, 0.01), true);
    const aligned = Array.from({ length: B * B }, (_, k) => (Math.floor(k / B) === k % B ? 0.9 : 0.1));
    assert.equal(det.observe(3, 0.01, inBatchStatsFromCosines(aligned, B)), undefined);
    assert.equal(det.wantsCheck(5, 0.01), false, 'checks are spaced');
    const orthogonal = new Array(B * B).fill(0);
    const found = det.observe(8, 0.001, inBatchStatsFromCosines(orthogonal, B));
    assert.equal(found?.reason, 'chance-retrieval');
    assert.equal(det.wantsCheck(100, 0.001), false, 'said once');
  });

  it('a tiny pretrain at μ = 0.1 from scratch collapses and is told so once, with the fix', async () => {
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-collapse-'));
    const cfg = parsePretrainConfig({
      name: 'collapse', seed: 3, backend: 'wasm',
      data: { kind: 'synth', dir: path.join(tmp, 'data'), videos: 40, noise: 0, imbalance: 1, seed: 5, size: 32, frames: 8 },
      frames: { count: 2, size: 32 }, tokenizer: { vocabSize: 200, maxLen: 16 },
      loss: { marginRad: 0.1 },
      train: { steps: 12, batchSize: 8, lr: 0.002, warmupSteps: 2, checkpointEvery: 0 },
      eval: { batchSize: 16 },
    });
    const lines: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    const error = console.error;
    process.stderr.write = ((chunk: string) => { lines.push(String(chunk)); return true; }) as typeof process.stderr.write;
    console.error = (...a: unknown[]) => { lines.push(a.join(' ')); };
    try {
      await runPretrain(cfg, { out: path.join(tmp, 'run') });
    } finally {
      process.stderr.write = write;
      console.error = error;
    }
    const warnings = lines.join('').split('\n').filter((l) => l.includes('training has collapsed'));
    assert.equal(warnings.length, 1, lines.join(''));
    assert.match(lines.join(''), /fix: a smaller margin, --set loss\.marginRad=0\.01 \(now 0\.1\)/);
    const ev = JSON.parse(await readFile(path.join(tmp, 'run', 'eval.json'), 'utf8'));
    assert.ok(ev.collapse.stats.t2vTop1 * 8 <= 2, JSON.stringify(ev.collapse));
  });
});

describe('progress output', () => {
  it('the bar keeps every number whole at 80 columns (widest values rendered by cli-progress)', async () => {
    let text = '';
    const stream = { isTTY: true, columns: 80, write: (s: string) => { text += s; return true; }, cursorTo: () => true, moveCursor: () => true, clearLine: () => true, clearScreenDown: () => true, on: () => stream, removeListener: () => stream };
    const { format, barsize } = progressFormat(80, 100000);
    const bar = new cliProgress.MultiBar({ stream: stream as unknown as NodeJS.WritableStream, format, barsize, forceRedraw: true, hideCursor: false, linewrap: true, noTTYOutput: true, notTTYSchedule: 0 });
    const b = bar.create(100000, 99999, { sps: '9999.9', loss: '1234.5678', lr: '1.00e-10' });
    b.update(99999, { sps: '9999.9', loss: '1234.5678', lr: '1.00e-10' });
    bar.stop();
    const lines = text.split(/\r|\n|\x1b\[[0-9;]*[A-Za-z]/).filter((l) => l.trim());
    assert.ok(lines.some((l) => l.includes('loss 1234.5678')), JSON.stringify(lines));
    for (const l of lines) assert.ok(l.length <= 79, `${l.length}: ${l}`);
  });

  it('off a terminal every update is one whole line', () => {
    let text = '';
    const stream = { write: (s: string) => { text += s; return true; } };
    writeProgress(stream, 'frames: 1/3 decoded');
    writeProgress(stream, 'frames: 3/3 decoded', true);
    assert.equal(text, 'frames: 1/3 decoded\nframes: 3/3 decoded\n');
    let tty = '';
    writeProgress({ isTTY: true, columns: 30, write: (s: string) => { tty += s; return true; } }, 'x'.repeat(40));
    assert.equal(tty, `\r${'x'.repeat(29)}`);
    const logger = new MetricsLogger(path.join(os.tmpdir(), `vlmargin-progress-${process.pid}.jsonl`), { stream, printEvery: 2 });
    text = '';
    logger.start(4);
    for (let step = 1; step <= 4; step++) {
      logger.write({ step, loss: 1, lr: 1e-3 });
      if (step === 2) logger.write({ step, loss: 1, lr: 1e-3, eval: 1, valT2vR1: 62.5, valChanceR1: 12.5 });
    }
    logger.close();
    const lines = text.trim().split('\n');
    assert.deepEqual(lines.map((l) => l.split(' |')[0]), ['step 2/4 (50.0%)', 'step 2: evaluation', 'step 4/4 (100.0%)']);
    assert.equal(lines[1], 'step 2: evaluation | valT2vR1 62.50 | valChanceR1 12.50', 'an evaluation row shows its figures, not a status line with "- samples/s"');
  });
});

describe('every job is a vlmargin command', function () {
  this.timeout(120000);
  it('with --help', async () => {
    for (const cmd of [['pretrain'], ['finetune', 'retrieval'], ['finetune', 'qa'], ['train', 'classifier'], ['experiment', 'ablation'], ['experiment', 'face-losses'], ['eval', 'retrieval']]) {
      const r = await runCli([...cmd, '--help']);
      assert.equal(r.code, 0, `${cmd.join(' ')}: ${r.out}`);
      assert.match(r.out, new RegExp(`Usage: vlmargin ${cmd.join(' ')} \\[options\\]`));
    }
  });

  it('experiment ablation hands its script only options the script knows, booleans as bare flags', async () => {
    const out = await mkdtemp(path.join(os.tmpdir(), 'vlm-ablation-cli-'));
    const r = await runCli(['experiment', 'ablation', '--report-only', '--out', out, '--seeds', '1', '--methods', 'sam', '--corpora', 'mixed', '--noise', '0.3']);
    assert.equal(r.code, 0, r.out);
    const table = await readFile(path.join(out, 'table.md'), 'utf8');
    assert.match(table, /Not run \(1\): mixed-30\/sam-s1/, 'the one requested cell is reported missing, nothing trained');
  });

  it("and README's command table names every command there is, under one '## Command line'", async () => {
    const readme = await readFile(path.join(root, 'README.md'), 'utf8');
    assert.equal(readme.match(/^## Command line$/gm)?.length, 1, "README: exactly one '## Command line' heading");
    const section = readme.slice(readme.indexOf('## Command line'), readme.indexOf('\n## ', readme.indexOf('## Command line') + 3));
    const named = [...section.matchAll(/^\| (.*?) \| [^|]/gm)].flatMap((m) => [...m[1].matchAll(/`([^`]+)`/g)].map((c) => c[1]));
    const paths = commandPaths(buildProgram());
    assert.ok(paths.length > 20, `only ${paths.length} commands found`);
    const missing = paths.map((p) => p.join(' ')).filter((p) => !named.some((n) => n === p || n.startsWith(`${p} `)));
    assert.deepEqual(missing, [], 'commands missing from the README table');
  });
});
