/**
 * Backend benchmark: matmul GFLOP/s (512², 1024²) and one tiny dual-encoder training step
 * (forward, SAM loss, backward) on every backend that starts here, as one markdown table.
 *
 *   node dist/bench/backend.js [--backends wasm,cpu] [--repeats 10]
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { tf } from '../src/backend/tf.js';
import { BACKEND_NAMES, initBackend, type BackendName } from '../src/backend/init.js';
import { tinyTrainStepTimer } from './lib/tinyStep.js';

async function timeIt(f: () => Promise<void>, repeats: number): Promise<number> {
  await f(); // warm-up: kernel compilation, shader/graph caches
  const t0 = performance.now();
  for (let i = 0; i < repeats; i++) await f();
  return (performance.now() - t0) / repeats;
}

async function matmulGflops(n: number, repeats: number): Promise<number> {
  const a = tf.randomNormal([n, n], 0, 1, 'float32', 1);
  const b = tf.randomNormal([n, n], 0, 1, 'float32', 2);
  const ms = await timeIt(async () => {
    const c = tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D);
    await c.data();
    c.dispose();
  }, repeats);
  tf.dispose([a, b]);
  return (2 * n ** 3) / (ms * 1e6);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { backends: { type: 'string' }, repeats: { type: 'string', default: '10' } } });
  const wanted = (values.backends?.split(',') ?? [...BACKEND_NAMES]) as BackendName[];
  const repeats = Number(values.repeats);
  if (!Number.isInteger(repeats) || repeats < 1) throw new Error(`--repeats must be a positive integer, got ${values.repeats}`);
  const rows: string[] = [];
  for (const name of wanted) {
    try {
      await initBackend({ prefer: name });
    } catch (e) {
      rows.push(`| ${name} | not available: ${(e as Error).message.replace(/^initBackend: no backend could start \(/, '').slice(0, 90)} | | | |`);
      continue;
    }
    const g512 = await matmulGflops(512, repeats);
    const g1024 = await matmulGflops(1024, Math.max(2, Math.floor(repeats / 3)));
    const step = await tinyTrainStepTimer();
    const stepMs = await timeIt(step.run, Math.max(2, Math.floor(repeats / 2)));
    step.dispose();
    rows.push(`| ${name} | ${g512.toFixed(1)} | ${g1024.toFixed(1)} | ${stepMs.toFixed(0)} | ${(step.batch / (stepMs / 1000)).toFixed(0)} |`);
    console.error(`${name} done`);
  }
  console.log(`\nmachine: ${os.cpus()[0]?.model ?? 'unknown cpu'} × ${os.cpus().length}, node ${process.version}, tfjs ${tf.version_core}\n`);
  console.log('| backend | matmul 512² GFLOP/s | matmul 1024² GFLOP/s | tiny train step ms (batch 16) | samples/s |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const r of rows) console.log(r);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
