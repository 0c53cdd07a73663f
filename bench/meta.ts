/**
 * Cost of the meta-weighting steps against a plain SAM training step, on the dual encoder.
 *
 *   node dist/bench/meta.js [--preset tiny] [--batch 16] [--meta-batch 16] [--frames 4]
 *                                     [--repeats 7] [--backend wasm] [--variants plain,mwn-heads,mwn-all,l2rw-heads,l2rw-all]
 *
 * Every variant is one full training step on random inputs: forward, loss, backward and the
 * model's AdamW update; `mwn-*` adds the virtual step, the weight-net update and the weighted
 * actual step (metaEvery 1), `l2rw-*` the L2RW scores. Times come from one process with the
 * variants interleaved (robust to a shared machine's changing load). Memory comes from one
 * child process per variant, so its peak RSS (getrusage maxrss) is its own; the tensor peak is
 * tf.profile's peakBytes over one step (all live tensors, parameters and optimizer state included).
 */
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { tf } from '../src/backend/tf.js';
import { initBackend, parseBackendPreference } from '../src/backend/init.js';
import { dualEncoderMetaModel, type DualEncoderBatch } from '../src/meta/dualEncoderModel.js';
import { l2rwStep } from '../src/meta/l2rw.js';
import { mwnStep } from '../src/meta/metaStep.js';
import { WeightNet } from '../src/meta/weightNet.js';
import { getConfig, type PresetName } from '../src/nn/configs.js';
import { initDualEncoder } from '../src/nn/dualEncoder.js';
import { AdamW } from '../src/train/optimizer.js';

const VARIANTS = ['plain', 'mwn-heads', 'mwn-all', 'l2rw-heads', 'l2rw-all'] as const;
type Variant = typeof VARIANTS[number];

interface Settings { preset: PresetName; batch: number; metaBatch: number; frames: number; repeats: number; backend: string }

interface MemoryResult { variant: Variant; peakTensorMiB: number; baseTensorMiB: number; peakRssMiB: number }

function positiveInt(name: string, value: string | undefined): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}: expected a positive integer, got '${value}'`);
  return n;
}

function randomBatch(n: number, frames: number, size: number, vocab: number, L: number, seed: number): DualEncoderBatch {
  const ids = new Int32Array(n * L);
  const mask = new Int32Array(n * L);
  for (let b = 0; b < n; b++) {
    const len = 4 + ((b + seed) % (L - 4));
    for (let i = 0; i < len; i++) { ids[b * L + i] = 1 + ((b * 31 + i * 7 + seed) % (vocab - 2)); mask[b * L + i] = 1; }
  }
  return {
    frames: tf.randomNormal([n, frames, size, size, 3], 0, 1, 'float32', seed),
    ids: tf.tensor2d(ids, [n, L], 'int32'),
    mask: tf.tensor2d(mask, [n, L], 'int32'),
  };
}

/** One variant's training step over shared parameters (the values do not change the work). */
function makeSteps(s: Settings) {
  const cfg = getConfig(s.preset, { temporal: { maxFrames: Math.max(s.frames, getConfig(s.preset).temporal.maxFrames) } });
  const store = initDualEncoder(cfg, 1);
  const params = store.snapshot() as Record<string, tf.Variable>;
  const optimizer = new AdamW(params, { lr: 1e-4 });
  const weightNet = new WeightNet();
  const model = dualEncoderMetaModel(cfg, { marginRad: 0.1 });
  const L = Math.min(16, cfg.text.contextLength);
  const train = randomBatch(s.batch, s.frames, cfg.vision.imageSize, cfg.text.vocabSize, L, 7);
  const meta = randomBatch(s.metaBatch, s.frames, cfg.vision.imageSize, cfg.text.vocabSize, L, 11);
  const alpha = 1e-3;
  let stepIndex = 0;
  const step = async (variant: Variant) => {
    let grads: Record<string, tf.Tensor>;
    let loss: number;
    if (variant === 'plain') {
      const names = Object.keys(params);
      const r = tf.valueAndGrads((...ts: tf.Tensor[]) => {
        const p: Record<string, tf.Tensor> = {};
        names.forEach((n, i) => { p[n] = ts[i]; });
        return tf.mean(model.perSampleLoss(p, train)) as tf.Scalar;
      })(names.map((n) => params[n]));
      grads = Object.fromEntries(names.map((n, i) => [n, r.grads[i]]));
      loss = (await r.value.data())[0];
      r.value.dispose();
    } else if (variant === 'mwn-heads' || variant === 'mwn-all') {
      const metaScope = variant === 'mwn-heads' ? 'heads' : 'all';
      ({ grads, loss } = await mwnStep({ model, params, trainBatch: train, metaBatch: meta, weightNet, alpha, metaScope, step: stepIndex }));
    } else {
      const metaScope = variant === 'l2rw-heads' ? 'heads' : 'all';
      ({ grads, loss } = await l2rwStep({ model, params, trainBatch: train, metaBatch: meta, alpha, metaScope }));
    }
    optimizer.step(grads);
    tf.dispose(Object.values(grads));
    stepIndex++;
    if (!Number.isFinite(loss)) throw new Error(`bench-meta: ${variant} gave a non-finite loss`);
  };
  return { step, backend: tf.getBackend() };
}

function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
}

/**
 * Step times of all variants in one process, interleaved round by round (the order rotating),
 * so a change in machine load hits every variant alike; medians and minima per variant.
 */
async function timeAll(variants: Variant[], s: Settings): Promise<{ backend: string; times: Map<Variant, number[]> }> {
  await initBackend({ prefer: parseBackendPreference(s.backend) });
  const { step, backend } = makeSteps(s);
  const times = new Map<Variant, number[]>(variants.map((v) => [v, []]));
  for (const v of variants) { await step(v); await step(v); }
  for (let r = 0; r < s.repeats; r++) {
    for (let k = 0; k < variants.length; k++) {
      const v = variants[(k + r) % variants.length];
      const t0 = performance.now();
      await step(v);
      times.get(v)!.push(performance.now() - t0);
    }
    console.error(`round ${r + 1}/${s.repeats}`);
  }
  return { backend, times };
}

/** Memory of one variant, alone in this (child) process: tf.profile's peak over one step, and maxrss. */
async function memoryChild(variant: Variant, s: Settings): Promise<void> {
  await initBackend({ prefer: parseBackendPreference(s.backend) });
  const { step } = makeSteps(s);
  await step(variant);
  await step(variant);
  const baseBytes = tf.memory().numBytes;
  const prof = await tf.profile(() => step(variant));
  const result: MemoryResult = {
    variant,
    peakTensorMiB: prof.peakBytes / 2 ** 20,
    baseTensorMiB: baseBytes / 2 ** 20,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
  };
  console.log(JSON.stringify(result));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      preset: { type: 'string', default: 'tiny' },
      batch: { type: 'string', default: '16' },
      'meta-batch': { type: 'string', default: '16' },
      frames: { type: 'string', default: '4' },
      repeats: { type: 'string', default: '7' },
      backend: { type: 'string', default: 'wasm' },
      variants: { type: 'string', default: VARIANTS.join(',') },
      child: { type: 'string' },
    },
  });
  const settings: Settings = {
    preset: values.preset as PresetName,
    batch: positiveInt('--batch', values.batch),
    metaBatch: positiveInt('--meta-batch', values['meta-batch']),
    frames: positiveInt('--frames', values.frames),
    repeats: positiveInt('--repeats', values.repeats),
    backend: values.backend as string,
  };
  getConfig(settings.preset); // an unknown preset fails here, with the known names
  const variants = (values.variants as string).split(',') as Variant[];
  for (const v of variants) if (!(VARIANTS as readonly string[]).includes(v)) throw new Error(`--variants: unknown '${v}' (known: ${VARIANTS.join(', ')})`);
  if (values.child) {
    await memoryChild(values.child as Variant, settings);
    return;
  }

  const self = fileURLToPath(import.meta.url);
  const forward = process.argv.slice(2);
  const memory = new Map<Variant, MemoryResult>();
  for (const v of variants) {
    const r = spawnSync(process.execPath, [self, ...forward, '--child', v], { encoding: 'utf8', maxBuffer: 1 << 24 });
    const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
    if (r.status !== 0 || !line) console.error(`${v}: memory run failed (exit ${r.status})\n${r.stderr.slice(-2000)}`);
    else memory.set(v, JSON.parse(line) as MemoryResult);
  }
  const { backend, times } = await timeAll(variants, settings);
  const plain = times.get('plain');
  const cpus = os.cpus();
  console.log(`\nmachine: ${cpus[0]?.model ?? 'unknown cpu'} × ${cpus.length}, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}, node ${process.version}, backend ${backend}`);
  console.log(`model: ${settings.preset} dual encoder, batch ${settings.batch}, meta batch ${settings.metaBatch}, ${settings.frames} frames, SAM loss, AdamW; ` +
    `${settings.repeats} interleaved rounds after 2 warm-up steps each\n`);
  console.log('| variant | median ms/step | × plain (median) | min ms/step | × plain (min) | peak tensor MiB | (at step start) | peak RSS MiB |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const v of variants) {
    const t = times.get(v)!;
    const m = memory.get(v);
    const relMed = plain ? (median(t) / median(plain)).toFixed(2) : 'n/a';
    const relMin = plain ? (Math.min(...t) / Math.min(...plain)).toFixed(2) : 'n/a';
    const mem = m ? `${m.peakTensorMiB.toFixed(1)} | ${m.baseTensorMiB.toFixed(1)} | ${m.peakRssMiB.toFixed(0)}` : 'n/a | n/a | n/a';
    console.log(`| ${v} | ${median(t).toFixed(0)} | ${relMed} | ${Math.min(...t).toFixed(0)} | ${relMin} | ${mem} |`);
  }
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
