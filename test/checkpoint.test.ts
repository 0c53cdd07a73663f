import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tf } from '../src/backend/tf.js';
import {
  listCheckpoints, loadCheckpoint, loadLatestCheckpoint, runCheckpointDir, saveCheckpoint, saveRunCheckpoint, type CheckpointData,
} from '../src/train/index.js';

const bytesOf = (a: ArrayBufferView): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');
const disposeLoaded = (ck: { params: Record<string, tf.Tensor>; optimizer?: Record<string, tf.Tensor> }): void =>
  tf.dispose([...Object.values(ck.params), ...Object.values(ck.optimizer ?? {})]);

// Float32 values whose bits a careless path would change: signed zero, the smallest
// denormal, a denormal, values near the bottom of the normal range, the largest finite float.
const SPECIAL_F32 = new Float32Array([
  -0, 0, 1.401298464324817e-45, 2 ** -140, 1e-38, 1.1754943508222875e-38, 3.4028234663852886e38, -3.4028234663852886e38, 1 / 3, -7.25,
]);
const SPECIAL_I32 = new Int32Array([-2147483648, 2147483647, 0, -1, 1]);

function makeData(step: number, scale = 1): CheckpointData {
  return {
    config: { model: 'tiny', dims: [4, 2], lr: 1e-3 },
    params: {
      'enc.w': tf.tensor2d(SPECIAL_F32, [2, 5]),
      'enc.b': tf.tensor1d([scale, -scale]),
      'tok.ids': tf.tensor1d(SPECIAL_I32, 'int32'),
    },
    optimizer: { 'enc.w.m': tf.tensor2d(new Float32Array(10).fill(0.5 * scale), [2, 5]), t: tf.scalar(step, 'int32') },
    state: { step, dataPosition: { epoch: 1, index: 37 }, rng: [123456789, 362436069], note: 'hello' },
  };
}
const disposeData = (d: CheckpointData): void => tf.dispose([...Object.values(d.params), ...Object.values(d.optimizer ?? {})]);

describe('checkpoint', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(path.join(os.tmpdir(), 'vlm-ck-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('round-trips bit-exactly, with checksums of the files in state.json', async () => {
    const data = makeData(42);
    const ckDir = path.join(dir, 'rt');
    await saveCheckpoint(ckDir, data);
    assert.deepEqual(readdirSync(ckDir).sort(), ['config.json', 'model.safetensors', 'optimizer.safetensors', 'state.json']);
    assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith('.')), [], 'no temp folder left');
    const stateJson = JSON.parse(readFileSync(path.join(ckDir, 'state.json'), 'utf8'));
    assert.deepEqual(stateJson.sha256, {
      'config.json': sha(path.join(ckDir, 'config.json')),
      'model.safetensors': sha(path.join(ckDir, 'model.safetensors')),
      'optimizer.safetensors': sha(path.join(ckDir, 'optimizer.safetensors')),
    });

    const ck = await loadCheckpoint(ckDir);
    assert.deepEqual(ck.config, { model: 'tiny', dims: [4, 2], lr: 1e-3 });
    assert.deepEqual(ck.state, { step: 42, dataPosition: { epoch: 1, index: 37 }, rng: [123456789, 362436069], note: 'hello' });
    assert.deepEqual(Object.keys(ck.params).sort(), ['enc.b', 'enc.w', 'tok.ids']);
    assert.deepEqual(ck.params['enc.w'].shape, [2, 5]);
    assert.equal(ck.params['enc.w'].dtype, 'float32');
    assert.ok(bytesOf(await ck.params['enc.w'].data()).equals(bytesOf(SPECIAL_F32)), 'float32 bits identical');
    assert.equal(ck.params['tok.ids'].dtype, 'int32');
    assert.ok(bytesOf(await ck.params['tok.ids'].data()).equals(bytesOf(SPECIAL_I32)), 'int32 bits identical');
    assert.deepEqual([...(await ck.optimizer!['enc.w.m'].data())], new Array(10).fill(0.5));
    assert.deepEqual(ck.optimizer!.t.shape, []);
    assert.equal((await ck.optimizer!.t.data())[0], 42);
    disposeLoaded(ck);
    disposeData(data);
  });

  it('refuses a flipped byte in model.safetensors via its checksum', async () => {
    const data = makeData(1);
    const ckDir = path.join(dir, 'flip');
    await saveCheckpoint(ckDir, data);
    disposeData(data);
    const model = path.join(ckDir, 'model.safetensors');
    const bytes = readFileSync(model);
    bytes[bytes.length - 3] ^= 0x01; // inside tok.ids: still a well-formed file
    writeFileSync(model, bytes);
    const before = tf.memory().numTensors;
    await assert.rejects(loadCheckpoint(ckDir), (e: Error) => {
      assert.ok(e.message.includes(model), e.message);
      assert.match(e.message, /corrupt: its SHA-256 is [0-9a-f]{64}, state.json recorded/);
      return true;
    });
    assert.equal(tf.memory().numTensors, before);
  });

  it('refuses a checkpoint folder with state.json missing or not JSON', async () => {
    const data = makeData(1);
    const ckDir = path.join(dir, 'nostate');
    await saveCheckpoint(ckDir, data);
    disposeData(data);
    const statePath = path.join(ckDir, 'state.json');
    writeFileSync(statePath, '{"step": 1,');
    await assert.rejects(loadCheckpoint(ckDir), (e: Error) => e.message.includes(statePath) && /not valid JSON/.test(e.message));
    rmSync(statePath);
    await assert.rejects(loadCheckpoint(ckDir), (e: Error) => e.message.includes(statePath) && /missing/.test(e.message));
  });

  it('refuses non-finite weights, naming the tensor, and writes nothing', async () => {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const data = makeData(3);
      const w = tf.tensor1d([1, 2, bad, 4]);
      const ckDir = path.join(dir, `nonfinite-${bad}`);
      await assert.rejects(saveCheckpoint(ckDir, { ...data, params: { ...data.params, 'head.w': w } }),
        new RegExp(`params tensor 'head\\.w' has a non-finite value \\(${bad}\\) at flat index 2`));
      await assert.rejects(saveCheckpoint(ckDir, { ...data, optimizer: { v: w } }), /optimizer tensor 'v' has a non-finite value/);
      assert.equal(existsSync(ckDir), false);
      assert.deepEqual(readdirSync(dir).filter((n) => n.includes('nonfinite')), []);
      w.dispose();
      disposeData(data);
    }
  });

  it('refuses to overwrite unless asked, and checks its arguments', async () => {
    const data = makeData(5);
    const ckDir = path.join(dir, 'over');
    await saveCheckpoint(ckDir, data);
    await assert.rejects(saveCheckpoint(ckDir, data), /already holds a checkpoint; pass \{ overwrite: true \}/);
    await saveCheckpoint(ckDir, { ...data, state: { step: 6 } }, { overwrite: true });
    const ck = await loadCheckpoint(ckDir);
    assert.equal(ck.state.step, 6);
    disposeLoaded(ck);
    assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith('.over')), [], 'backup removed after overwrite');
    await assert.rejects(saveCheckpoint(ckDir, { ...data, state: { step: -1 } }, { overwrite: true }), /state.step must be a non-negative integer/);
    await assert.rejects(saveCheckpoint(ckDir, { ...data, state: { step: 1, sha256: 'x' } }, { overwrite: true }), /state.sha256 is reserved/);
    await assert.rejects(saveCheckpoint(ckDir, { ...data, params: {} }, { overwrite: true }), /params is empty/);
    await assert.rejects(saveCheckpoint(ckDir, { ...data, config: { n: 1n } }, { overwrite: true }), /config is not JSON-serialisable/);
    disposeData(data);
  });

  it('loads the parked copy when a kill hit between the two renames of an overwrite', async () => {
    const data = makeData(8);
    const ckDir = path.join(dir, 'swap');
    await saveCheckpoint(ckDir, data);
    disposeData(data);
    renameSync(ckDir, path.join(dir, '.swap.previous'));
    const warnings: string[] = [];
    const ck = await loadCheckpoint(ckDir, { onWarning: (m) => warnings.push(m) });
    assert.equal(ck.state.step, 8);
    assert.match(warnings.join('\n'), /swap is missing but .*\.swap\.previous holds it/);
    disposeLoaded(ck);
  });

  describe('run folders', () => {
    it('lists, prunes to keep, and loads the newest', async () => {
      const run = path.join(dir, 'run-keep');
      assert.deepEqual(await listCheckpoints(run), []);
      assert.equal(await loadLatestCheckpoint(run), undefined);
      for (const step of [100, 200, 300, 400, 1_000_000]) {
        const data = makeData(step, step);
        await saveRunCheckpoint(run, step, data, { keep: 3 });
        disposeData(data);
      }
      const list = await listCheckpoints(run);
      assert.deepEqual(list.map((c) => c.step), [300, 400, 1_000_000]);
      assert.equal(path.basename(list[0].dir), 'step-000300');
      assert.equal(path.basename(list[2].dir), 'step-1000000');
      assert.deepEqual(readdirSync(path.join(run, 'checkpoints')).sort(), ['step-000300', 'step-000400', 'step-1000000']);
      const ck = await loadLatestCheckpoint(run, { onWarning: (m) => assert.fail(`unexpected warning ${m}`) });
      assert.equal(ck!.step, 1_000_000);
      assert.deepEqual([...(await ck!.params['enc.b'].data())], [1_000_000, -1_000_000]);
      disposeLoaded(ck!);
      const data = makeData(7);
      await assert.rejects(saveRunCheckpoint(run, 8, data), /data.state.step \(7\) must equal step \(8\)/);
      disposeData(data);
    });

    it('ignores and cleans a half-written temp folder left by a killed save', async () => {
      const run = path.join(dir, 'run-kill');
      const data = makeData(100);
      await saveRunCheckpoint(run, 100, data);
      disposeData(data);
      // A pid that is certainly not running any more.
      const deadPid = spawnSync(process.execPath, ['-e', '']).pid!;
      const tmp = path.join(run, 'checkpoints', `.step-000200.tmp-${deadPid}-0badf00d`);
      mkdirSync(tmp);
      writeFileSync(path.join(tmp, 'config.json'), '{"model":');
      writeFileSync(path.join(tmp, 'model.safetensors'), readFileSync(path.join(runCheckpointDir(run, 100), 'model.safetensors')).subarray(0, 50));
      assert.deepEqual((await listCheckpoints(run)).map((c) => c.step), [100]);
      const warnings: string[] = [];
      const ck = await loadLatestCheckpoint(run, { onWarning: (m) => warnings.push(m) });
      assert.equal(ck!.step, 100);
      assert.ok(bytesOf(await ck!.params['enc.w'].data()).equals(bytesOf(SPECIAL_F32)));
      disposeLoaded(ck!);
      assert.equal(existsSync(tmp), false, 'temp folder cleaned');
      assert.match(warnings.join('\n'), /removed leftover folder .*tmp.*interrupted save/);
    });

    it('falls back to the previous checkpoint with a warning when the newest is corrupt', async () => {
      const run = path.join(dir, 'run-fallback');
      for (const step of [100, 200]) {
        const data = makeData(step, step);
        await saveRunCheckpoint(run, step, data);
        disposeData(data);
      }
      const model = path.join(runCheckpointDir(run, 200), 'model.safetensors');
      const bytes = readFileSync(model);
      bytes[100] ^= 0xff;
      writeFileSync(model, bytes);
      const warnings: string[] = [];
      const ck = await loadLatestCheckpoint(run, { onWarning: (m) => warnings.push(m) });
      assert.equal(ck!.step, 100);
      assert.deepEqual([...(await ck!.params['enc.b'].data())], [100, -100]);
      disposeLoaded(ck!);
      assert.equal(warnings.length, 1);
      assert.ok(warnings[0].includes(model), warnings[0]);
      assert.match(warnings[0], /step-000200 is unusable .*corrupt.*falling back to .*step-000100/);

      // With every checkpoint corrupt, resuming must fail loudly rather than start over.
      rmSync(path.join(runCheckpointDir(run, 100), 'config.json'));
      await assert.rejects(loadLatestCheckpoint(run, { onWarning: () => {} }), /no usable checkpoint in .*step-000200.*\n.*step-000100/s);
    });

    it('keeps tf.memory().numTensors flat across save/load loops', async () => {
      const run = path.join(dir, 'run-mem');
      const data = makeData(0);
      const before = tf.memory().numTensors;
      for (let step = 1; step <= 6; step++) {
        await saveRunCheckpoint(run, step, { ...data, state: { step } }, { keep: 2 });
        const ck = await loadLatestCheckpoint(run);
        assert.equal(ck!.step, step);
        disposeLoaded(ck!);
        assert.equal(tf.memory().numTensors, before, `after loop ${step}`);
      }
      disposeData(data);
    });

    it('survives real SIGKILLs during saving: the newest complete checkpoint always loads', async function () {
      this.timeout(60_000);
      const run = path.join(dir, 'run-sigkill');
      const here = path.dirname(fileURLToPath(import.meta.url));
      const tfUrl = new URL(`file://${path.resolve(here, '../src/backend/tf.js')}`).href;
      const trainUrl = new URL(`file://${path.resolve(here, '../src/train/index.js')}`).href;
      // A child that saves ever newer 4 MB checkpoints whose every weight equals the step.
      const child = `
        import { tf } from ${JSON.stringify(tfUrl)};
        import { saveRunCheckpoint } from ${JSON.stringify(trainUrl)};
        for (let step = Number(process.env.START); ; step++) {
          const params = { w: tf.fill([1 << 20], step) };
          await saveRunCheckpoint(process.env.RUN, step, { config: { step }, params, state: { step } }, { keep: 2 });
          tf.dispose(params.w);
          process.stdout.write('saved ' + step + '\\n');
        }`;
      let start = 1;
      for (let round = 0; round < 4; round++) {
        const proc = spawn(process.execPath, ['--input-type=module', '-e', child], {
          env: { ...process.env, RUN: run, START: String(start) }, stdio: ['ignore', 'pipe', 'pipe'],
        });
        let lastSaved = -1;
        let stderr = '';
        proc.stderr.on('data', (d) => { stderr += d; });
        await new Promise<void>((resolve, reject) => {
          const delay = 20 + Math.floor(Math.random() * 200);
          let armed = false;
          proc.stdout.on('data', (d: Buffer) => {
            for (const m of d.toString().matchAll(/saved (\d+)/g)) lastSaved = Number(m[1]);
            if (!armed && lastSaved >= start) {
              armed = true;
              setTimeout(() => proc.kill('SIGKILL'), delay);
            }
          });
          proc.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`child exited ${code}: ${stderr}`))));
        });
        const warnings: string[] = [];
        const ck = await loadLatestCheckpoint(run, { onWarning: (m) => warnings.push(m) });
        assert.ok(ck, 'a checkpoint loads');
        assert.ok(ck.step >= lastSaved, `loaded step ${ck.step} >= last reported ${lastSaved}`);
        const w = await ck.params.w.data();
        assert.ok(w.every((v) => v === ck.step), `weights of step ${ck.step} are consistent`);
        assert.deepEqual(ck.config, { step: ck.step });
        disposeLoaded(ck);
        assert.ok(!warnings.some((m) => /unusable/.test(m)), warnings.join('\n'));
        const leftovers = readdirSync(path.join(run, 'checkpoints')).filter((n) => n.startsWith('.'));
        assert.deepEqual(leftovers, [], 'leftovers cleaned');
        start = ck.step + 1;
      }
    });
  });
});
