/**
 * A small pretrained run for the evaluation, fine-tuning and QA tests: the pretrain pipeline
 * (as a child process) on a 40-video synthetic corpus, 24 steps of the tiny model (~10 s),
 * on the suite's backend: the tests compare its eval figures with ones they compute in-process,
 * and near-tied ranks differ between engines.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface SmallRun { runDir: string; dataDir: string; manifest: string; checkpoint: string }

export async function makeSmallRun(tmp: string, opts: { videos?: number; steps?: number } = {}): Promise<SmallRun> {
  const steps = opts.steps ?? 24;
  const dataDir = path.join(tmp, 'data');
  const runDir = path.join(tmp, 'run');
  const configPath = path.join(tmp, 'small.json');
  await writeFile(configPath, JSON.stringify({
    name: 'small', seed: 3, backend: process.env.VLMARGIN_TEST_BACKEND ?? 'wasm',
    data: { kind: 'synth', dir: dataDir, videos: opts.videos ?? 40, noise: 0, imbalance: 1, seed: 5, size: 32, frames: 8 },
    frames: { count: 2, size: 32 },
    tokenizer: { vocabSize: 200, maxLen: 16 },
    // The checkpoint the evaluation and QA thresholds were set on; pinned so the schema default can move.
    loss: { marginRad: 0.1 },
    train: { steps, batchSize: 8, lr: 0.002, warmupSteps: 2, checkpointEvery: steps, keepCheckpoints: 1 },
    eval: { batchSize: 16 },
  }));
  const child = spawn(process.execPath, [path.join(root, 'dist', 'pipelines', 'pretrain.js'), '--config', configPath, '--out', runDir, '--quiet'],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  if (code !== 0) throw new Error(`pretrain for the test checkpoint failed (${code}):\n${out}`);
  return { runDir, dataDir, manifest: path.join(dataDir, 'manifest.jsonl'), checkpoint: path.join(runDir, 'checkpoints', `step-${String(steps).padStart(6, '0')}`) };
}
