/**
 * Forward + backward time of every margin loss relative to plain normalised softmax, and of
 * SAM relative to symmetric InfoNCE, printed as one markdown table.
 *
 *   node dist/pipelines/bench-losses.js [--backend wasm] [--batch 256] [--classes 10000] [--dim 512]
 *                                       [--reps 5] [--warmup 2] [--no-regularizer]
 *
 * Each timing is tf.grads of the loss wrt the embeddings and W (video and text for the
 * contrastive losses), with the gradients read back, median of `reps` runs after `warmup`.
 * The baselines are written here from the same second-order-safe ops and the same
 * cross-entropy (logSumExp − target logit) as the margin core, so a ratio measures the
 * margin's cost and nothing else. The heads' times include their argument checks (labels in
 * range, finite embeddings), which read a little data back each call; the baselines have none.
 */
import { parseArgs } from 'node:util';
import { initBackend, parseBackendPreference } from '../src/backend/init.js';
import { tf } from '../src/backend/tf.js';
import { exp, l2Normalize } from '../src/backend/safeOps.js';
import { MarginHead, samContrastiveLoss, type MarginHeadConfig } from '../src/margin/index.js';
import { oneHotFloat, targetCrossEntropy } from '../src/margin/core.js';

type T = tf.Tensor;

function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: expected a positive integer, got '${value}'`);
  return n;
}

/** Plain normalised softmax: s·x̂·Ŵᵀ and its cross-entropy (the baseline of every head). */
function normalisedSoftmax(x: T, W: T, labels: T, scale: number): T {
  const logits = tf.mul(tf.matMul(l2Normalize(x, 1), l2Normalize(W, 1), false, true), scale);
  const target = tf.sum(tf.mul(logits, oneHotFloat(labels, W.shape[0] as number)), 1);
  return tf.mean(targetCrossEntropy(logits, target));
}

/** Symmetric InfoNCE, SAM's baseline: the same computation with no margin. */
function infoNCE(v: T, t: T, logitScale: number): T {
  const B = v.shape[0] as number;
  const logits = tf.mul(tf.matMul(l2Normalize(v, 1), l2Normalize(t, 1), false, true), exp(tf.scalar(logitScale)));
  const pos = tf.sum(tf.mul(logits, oneHotFloat(tf.range(0, B, 1, 'int32'), B)), 1);
  return tf.mean(tf.mul(tf.add(targetCrossEntropy(logits, pos, 1), targetCrossEntropy(logits, pos, 0)), 0.5));
}

interface Timing { wallMs: number; cpuMs: number }

/**
 * Forward + backward of f wrt `xs`, gradients read back: median wall time and minimum CPU
 * time over `reps` runs after `warmup`. The wasm backend runs on one thread, so CPU time is
 * its compute time; its minimum is the figure least disturbed by other processes on the
 * machine, and the ratios use it.
 */
function time(f: (...xs: T[]) => T, xs: T[], reps: number, warmup: number): Timing {
  const run = () => tf.tidy(() => {
    for (const g of tf.grads(f)(xs)) g.dataSync();
  });
  for (let i = 0; i < warmup; i++) run();
  const wall: number[] = [];
  let cpuMs = Infinity;
  for (let i = 0; i < reps; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    run();
    wall.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpuMs = Math.min(cpuMs, (c.user + c.system) / 1000);
  }
  wall.sort((a, b) => a - b);
  return { wallMs: wall[Math.floor(wall.length / 2)], cpuMs };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'wasm' },
      batch: { type: 'string', default: '256' },
      classes: { type: 'string', default: '10000' },
      dim: { type: 'string', default: '512' },
      reps: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '2' },
      'no-regularizer': { type: 'boolean', default: false },
    },
  });
  const choice = await initBackend({ prefer: parseBackendPreference(values.backend) });
  const B = positiveInt('batch', values.batch);
  const C = positiveInt('classes', values.classes);
  const d = positiveInt('dim', values.dim);
  const reps = positiveInt('reps', values.reps);
  const warmup = Number(values.warmup);

  const x = tf.randomNormal([B, d], 0, 1, 'float32', 1);
  const labels = tf.randomUniform([B], 0, C, 'int32', 2);
  const W = tf.randomNormal([C, d], 0, Math.sqrt(2 / (C + d)), 'float32', 3);
  const rows: { name: string; t: Timing; base: string; ratio: number }[] = [];
  const add = (name: string, t: Timing, base: string, baseT?: Timing) => {
    rows.push({ name, t, base, ratio: baseT ? t.cpuMs / baseT.cpuMs : 1 });
    console.error(`${name}: cpu ${t.cpuMs.toFixed(1)} ms, wall ${t.wallMs.toFixed(1)} ms`);
  };

  const base = time((e, w) => normalisedSoftmax(e, w, labels, 64), [x, W], reps, warmup);
  add('normalised softmax (baseline, s = 64)', base, '—');

  const common = { numClasses: C, dim: d, seed: 4 };
  const heads: [string, MarginHeadConfig][] = [
    ['softmax (unnormalised)', { name: 'softmax', ...common }],
    ['normface (core, no margin)', { name: 'normface', ...common }],
    ['arcface', { name: 'arcface', ...common }],
    ['arcface, detachMargin', { name: 'arcface', ...common, detachMargin: true }],
    ['cosface', { name: 'cosface', ...common }],
    ['am-softmax', { name: 'am-softmax', ...common }],
    ['aam-softmax', { name: 'aam-softmax', ...common }],
    ['sphereface (A-softmax)', { name: 'sphereface', ...common }],
    ['sphereface-r v1 (hard, detached)', { name: 'sphereface-r', ...common }],
    ['sphereface-r v2 (hard, detached)', { name: 'sphereface-r', ...common, version: 'v2' }],
    ['sphereface-r v2 (hard, live gradient)', { name: 'sphereface-r', ...common, version: 'v2', detachMargin: false }],
    ['sphereface2', { name: 'sphereface2', ...common }],
    ['kappaface', { name: 'kappaface', ...common, numSamples: B }],
    ['camri', { name: 'camri', ...common, importantClass: 0 }],
    ['virtual-softmax', { name: 'virtual-softmax', ...common }],
  ];
  if (!values['no-regularizer']) heads.push(['arcface + inter-class regulariser (λ = 0.1)', { name: 'arcface', ...common, interClassLambda: 0.1 }]);
  for (const [label, config] of heads) {
    const head = new MarginHead(config);
    add(label, time((e, w) => head.loss(e, labels, { weight: w }).loss, [x, W], reps, warmup), 'normalised softmax', base);
    head.dispose();
  }

  const v = tf.randomNormal([B, d], 0, 1, 'float32', 5);
  const t = tf.add(v, tf.randomNormal([B, d], 0, 1, 'float32', 6));
  const logitScale = Math.log(100);
  const nce = time((a, b) => infoNCE(a, b, logitScale), [v, t], reps, warmup);
  add('symmetric InfoNCE (baseline, s = 100)', nce, '—');
  add('SAM (μ = 0.1)', time((a, b) => samContrastiveLoss(a, b, { marginRad: 0.1, logitScale }).loss, [v, t], reps, warmup), 'InfoNCE', nce);
  const groups = tf.tensor1d(Array.from({ length: B }, (_, i) => Math.floor(i / 2)), 'int32');
  add('SAM with groups (2 captions per video)', time((a, b) => samContrastiveLoss(a, b, { marginRad: 0.1, logitScale, groups }).loss, [v, t], reps, warmup), 'InfoNCE', nce);

  console.log(`\nbackend ${choice.name} ${JSON.stringify(choice.info)}; B = ${B}, C = ${C}, d = ${d}; ${reps} runs after ${warmup} warm-up\n`);
  console.log('| loss | CPU ms (min) | wall ms (median) | relative to | ratio (CPU) |');
  console.log('| --- | ---: | ---: | --- | ---: |');
  for (const r of rows) console.log(`| ${r.name} | ${r.t.cpuMs.toFixed(1)} | ${r.t.wallMs.toFixed(1)} | ${r.base} | ${r.ratio.toFixed(2)}× |`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
