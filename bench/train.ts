/**
 * Training throughput of the default (`tiny`) pipeline on one backend: samples/s, the SAM /
 * InfoNCE step-time ratio, and the share of step time spent waiting for data — all from the
 * per-step metrics of short runs on the default corpus, in one process.
 *
 *   node dist/bench/train.js [--backend cpu|wasm] [--steps 40] [--skip 5]
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadPretrainConfig } from '../pipelines/config.js';
import { runPretrain } from '../pipelines/pretrain.js';

interface StepLine { step: number; samplesPerSec: number; dataWaitMs: number; eval?: number }

async function timeRun(marginRad: number, backend: string, steps: number, skip: number): Promise<{ samplesPerSec: number; stepMs: number; waitShare: number }> {
  const cfg = await loadPretrainConfig('default');
  cfg.loss = { ...cfg.loss, marginRad };
  cfg.train = { ...cfg.train, steps, checkpointEvery: 0, evalEvery: 0 };
  const out = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-bench-train-'));
  await runPretrain(cfg, { out, backend, quiet: true });
  const lines = (await readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n')
    .map((l) => JSON.parse(l) as StepLine).filter((l) => !l.eval).slice(skip);
  const batch = cfg.train.batchSize;
  const stepMs = lines.reduce((a, l) => a + (1000 * batch) / l.samplesPerSec, 0) / lines.length;
  const waitMs = lines.reduce((a, l) => a + l.dataWaitMs, 0) / lines.length;
  return { samplesPerSec: (1000 * batch) / stepMs, stepMs, waitShare: waitMs / stepMs };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { backend: { type: 'string', default: 'wasm' }, steps: { type: 'string', default: '40' }, skip: { type: 'string', default: '5' } } });
  const steps = Number(values.steps);
  const skip = Number(values.skip);
  if (!Number.isInteger(steps) || !Number.isInteger(skip) || skip < 0 || steps <= skip + 1) {
    throw new Error(`--steps must exceed --skip + 1 (integers), got ${values.steps} and ${values.skip}`);
  }
  // Interleaved pairs, so that load from other jobs hits both losses alike.
  const sam = [];
  const info = [];
  for (let r = 0; r < 2; r++) {
    sam.push(await timeRun(0.01, values.backend!, steps, skip));
    info.push(await timeRun(0, values.backend!, steps, skip));
  }
  type Timing = Awaited<ReturnType<typeof timeRun>>;
  const best = (xs: Timing[]) => xs.reduce((a, b) => (b.stepMs < a.stepMs ? b : a));
  const s = best(sam);
  const i = best(info);
  const cfg = await loadPretrainConfig('default');
  console.log(`backend ${values.backend}, ${cfg.model.preset} dual encoder, batch ${cfg.train.batchSize}, ${cfg.frames.count} frames of ${cfg.frames.size} px, ${steps - skip} timed steps (best of 2 runs each)\n`);
  console.log('| loss | step ms | samples/s | data wait share |');
  console.log('| --- | ---: | ---: | ---: |');
  console.log(`| SAM (μ = 0.01) | ${s.stepMs.toFixed(0)} | ${s.samplesPerSec.toFixed(1)} | ${(100 * s.waitShare).toFixed(1)} % |`);
  console.log(`| InfoNCE | ${i.stepMs.toFixed(0)} | ${i.samplesPerSec.toFixed(1)} | ${(100 * i.waitShare).toFixed(1)} % |`);
  console.log(`\nSAM / InfoNCE step time: ${(s.stepMs / i.stepMs).toFixed(2)}×`);
}

main().then(() => process.exit(0), (e: unknown) => { console.error(`bench-train: ${(e as Error).message}`); process.exit(1); });
