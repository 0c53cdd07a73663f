/**
 * Forward + backward time of every margin loss relative to plain normalised softmax, and of
 * SAM relative to symmetric InfoNCE, printed as one markdown table.
 *
 *   node dist/bench/losses.js [--backend wasm] [--batch 256] [--classes 10000] [--dim 512]
 *                                       [--reps 5] [--warmup 2] [--no-regularizer]
 *
 * Each timing is tf.grads of the loss wrt the embeddings and W (video and text for the
 * contrastive losses), with the gradients read back; the cases run round-robin and the
 * ratios use the minimum CPU time of each (see timeRoundRobin).
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

interface Case { name: string; base?: string; f: (...xs: T[]) => T; xs: T[]; dispose?: () => void }
interface Timing { cpuMs: number; wallMs: number }

/**
 * Forward + backward of each case wrt its `xs`, gradients read back, run round-robin (one run
 * of every case per round, so a change in the machine's load hits all of them alike): minimum
 * CPU time and median wall time over `rounds` rounds after `warmup`. The wasm backend runs on
 * one thread, so CPU time is its compute time, and its minimum is the figure least disturbed
 * by other processes; the ratios use it.
 */
async function timeRoundRobin(cases: Case[], rounds: number, warmup: number): Promise<Map<string, Timing>> {
  const run = async (c: Case) => {
    const grads = tf.tidy(() => tf.grads(c.f)(c.xs));
    await Promise.all(grads.map((g) => g.data()));
    tf.dispose(grads);
  };
  for (const c of cases) for (let i = 0; i < warmup; i++) await run(c);
  const cpu = new Map<string, number>();
  const wall = new Map<string, number[]>();
  for (let r = 0; r < rounds; r++) {
    for (const c of cases) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await run(c);
      const w = performance.now() - t0;
      const u = process.cpuUsage(c0);
      cpu.set(c.name, Math.min(cpu.get(c.name) ?? Infinity, (u.user + u.system) / 1000));
      wall.set(c.name, [...(wall.get(c.name) ?? []), w]);
    }
    console.error(`round ${r + 1}/${rounds} done`);
  }
  const out = new Map<string, Timing>();
  for (const c of cases) {
    const w = (wall.get(c.name) as number[]).sort((a, b) => a - b);
    out.set(c.name, { cpuMs: cpu.get(c.name) as number, wallMs: w[Math.floor(w.length / 2)] });
  }
  return out;
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
  if (!Number.isInteger(warmup) || warmup < 0) throw new Error(`--warmup: expected a non-negative integer, got '${values.warmup}'`);

  const x = tf.randomNormal([B, d], 0, 1, 'float32', 1);
  const labels = tf.randomUniform([B], 0, C, 'int32', 2);
  const W = tf.randomNormal([C, d], 0, Math.sqrt(2 / (C + d)), 'float32', 3);
  const softmaxBase = 'normalised softmax (baseline, s = 64)';
  const heads: Case[] = [{ name: softmaxBase, f: (e, w) => normalisedSoftmax(e, w, labels, 64), xs: [x, W] }];
  const common = { numClasses: C, dim: d, seed: 4 };
  const configs: [string, MarginHeadConfig][] = [
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
  if (!values['no-regularizer']) {
    configs.push(['arcface + inter-class regulariser (λ = 0.1), exact every call', { name: 'arcface', ...common, interClassLambda: 0.1 }]);
    configs.push(['arcface + inter-class regulariser, nearest classes reused (searched every 100 calls)', {
      name: 'arcface', ...common, interClassLambda: 0.1, interClassEvery: 100,
    }]);
  }
  for (const [name, config] of configs) {
    const head = new MarginHead(config);
    heads.push({ name, base: softmaxBase, f: (e, w) => head.loss(e, labels, { weight: w }).loss, xs: [x, W], dispose: () => head.dispose() });
  }

  const v = tf.randomNormal([B, d], 0, 1, 'float32', 5);
  const t = tf.add(v, tf.randomNormal([B, d], 0, 1, 'float32', 6));
  const logitScale = Math.log(100);
  const groups = tf.tensor1d(Array.from({ length: B }, (_, i) => Math.floor(i / 2)), 'int32');
  const nceBase = 'symmetric InfoNCE (baseline, s = 100)';
  const contrastive: Case[] = [
    { name: nceBase, f: (a, b) => infoNCE(a, b, logitScale), xs: [v, t] },
    { name: 'SAM (μ = 0.1)', base: nceBase, f: (a, b) => samContrastiveLoss(a, b, { marginRad: 0.1, logitScale }).loss, xs: [v, t] },
    { name: 'SAM (μ = 0.1), detachMargin', base: nceBase, f: (a, b) => samContrastiveLoss(a, b, { marginRad: 0.1, logitScale, detachMargin: true }).loss, xs: [v, t] },
    { name: 'SAM with groups (2 captions per video)', base: nceBase, f: (a, b) => samContrastiveLoss(a, b, { marginRad: 0.1, logitScale, groups }).loss, xs: [v, t] },
  ];

  // The contrastive losses take milliseconds, so they get ten times the rounds.
  const timings = new Map([...await timeRoundRobin(heads, reps, warmup), ...await timeRoundRobin(contrastive, 10 * reps, warmup)]);
  for (const c of heads) c.dispose?.();

  console.log(`\nbackend ${choice.name} ${JSON.stringify(choice.info)}; B = ${B}, C = ${C}, d = ${d}; round-robin, ${reps} rounds (contrastive: ${10 * reps}) after ${warmup} warm-up\n`);
  console.log('| loss | CPU ms (min) | wall ms (median) | relative to | ratio (CPU) |');
  console.log('| --- | ---: | ---: | --- | ---: |');
  for (const c of [...heads, ...contrastive]) {
    const tm = timings.get(c.name) as Timing;
    const ratio = c.base ? tm.cpuMs / (timings.get(c.base) as Timing).cpuMs : 1;
    console.log(`| ${c.name} | ${tm.cpuMs.toFixed(1)} | ${tm.wallMs.toFixed(1)} | ${c.base ? c.base.split(' (')[0] : '—'} | ${ratio.toFixed(2)}× |`);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
