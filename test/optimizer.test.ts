import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tf } from '../src/backend/tf.js';
import { AdamW, SGD, clipParamGroups, excludedFromDecay, type GroupFn, type NamedGradients } from '../src/train/optimizer.js';
import { cosineWithWarmup } from '../src/train/schedule.js';
import {
  GradAccumulator, NonFiniteGuard, allFinite, clampLogitScale, clipByGlobalNorm, clipToNorm, globalNorm, gradNorm,
} from '../src/train/gradients.js';
import { guardedUpdate, runTraining } from '../src/train/trainer.js';
import { MetricsLogger, type LogStream } from '../src/train/logger.js';

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `${what}[${i}]: got ${actual[i]}, expected ${expected[i]} (tol ${tol})`);
  }
}

function disposeAll(x: Record<string, tf.Tensor>): void {
  for (const t of Object.values(x)) t.dispose();
}

/**
 * Plain float64 AdamW written from the paper's Algorithm 2 (with PyTorch's lr-scaled decay):
 * independent of src/train/optimizer.ts. `coupled` puts the decay into the gradient instead
 * (Adam + L2), to show the test tells the two apart.
 */
function referenceAdamW(
  init: Record<string, number[]>,
  gradOf: (p: Record<string, number[]>) => Record<string, number[]>,
  lrs: number[],
  group: Record<string, { lrScale: number; wd: number }>,
  b1: number, b2: number, eps: number, coupled = false,
): Record<string, number[]> {
  const p: Record<string, number[]> = {};
  const m: Record<string, number[]> = {};
  const v: Record<string, number[]> = {};
  for (const k of Object.keys(init)) { p[k] = [...init[k]]; m[k] = init[k].map(() => 0); v[k] = init[k].map(() => 0); }
  lrs.forEach((lr, i) => {
    const t = i + 1;
    const g = gradOf(p);
    for (const k of Object.keys(p)) {
      const eta = lr * group[k].lrScale;
      for (let j = 0; j < p[k].length; j++) {
        let gj = g[k][j];
        if (coupled) gj += group[k].wd * p[k][j];
        else p[k][j] -= eta * group[k].wd * p[k][j];
        m[k][j] = b1 * m[k][j] + (1 - b1) * gj;
        v[k][j] = b2 * v[k][j] + (1 - b2) * gj * gj;
        const mh = m[k][j] / (1 - b1 ** t);
        const vh = v[k][j] / (1 - b2 ** t);
        p[k][j] -= eta * mh / (Math.sqrt(vh) + eps);
      }
    }
  });
  return p;
}

// Loss Σ_k Σ_j c_kj (p_kj − a_kj)² + (p_w0 · p_b0): its gradient in plain JS.
const coef: Record<string, number[]> = { w: [0.5, 2, 1, 3], b: [1, 0.25], logit_scale: [4] };
const target: Record<string, number[]> = { w: [1, -1, 0.5, 2], b: [-0.5, 1], logit_scale: [2] };
function quadGrad(p: Record<string, number[]>): Record<string, number[]> {
  const g: Record<string, number[]> = {};
  for (const k of Object.keys(p)) g[k] = p[k].map((x, j) => 2 * coef[k][j] * (x - target[k][j]));
  g.w[0] += p.b[0];
  g.b[0] += p.w[0];
  return g;
}

const init: Record<string, number[]> = { w: [0.3, -0.2, 0.8, 1.5], b: [0.1, -0.4], logit_scale: [Math.log(10)] };
const shapes: Record<string, number[]> = { w: [2, 2], b: [2], logit_scale: [] };

function makeParams(values: Record<string, number[]> = init): Record<string, tf.Variable> {
  const out: Record<string, tf.Variable> = {};
  for (const k of Object.keys(values)) out[k] = tf.variable(tf.tensor(values[k], shapes[k]));
  return out;
}

async function readParams(params: Record<string, tf.Variable>): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [k, v] of Object.entries(params)) out[k] = Array.from(await v.data());
  return out;
}

async function gradTensors(params: Record<string, tf.Variable>): Promise<NamedGradients> {
  const g = quadGrad(await readParams(params));
  const out: NamedGradients = {};
  for (const k of Object.keys(g)) out[k] = tf.tensor(g[k], shapes[k]);
  return out;
}

describe('AdamW', () => {
  // w decays at the default 0.1; b is in a no-decay group; logit_scale has its own rate and decay.
  const groups: GroupFn = (name) => (name === 'b' ? { weightDecay: 0 } : name === 'logit_scale' ? { lrScale: 0.5, weightDecay: 0.3 } : undefined);
  const refGroups = { w: { lrScale: 1, wd: 0.1 }, b: { lrScale: 1, wd: 0 }, logit_scale: { lrScale: 0.5, wd: 0.3 } };
  const lrs = [0.05, 0.1, 0.08, 0.06, 0.04];

  it('matches a float64 reference over 5 steps with groups and decoupled decay', async () => {
    const params = makeParams();
    const opt = new AdamW(params, { betas: [0.9, 0.98], eps: 1e-6, weightDecay: 0.1, groups });
    for (const lr of lrs) {
      const g = await gradTensors(params);
      opt.step(g, lr);
      disposeAll(g);
    }
    assert.equal(opt.stepCount, 5);
    const got = await readParams(params);
    const want = referenceAdamW(init, quadGrad, lrs, refGroups, 0.9, 0.98, 1e-6);
    const coupled = referenceAdamW(init, quadGrad, lrs, refGroups, 0.9, 0.98, 1e-6, true);
    let gap = 0;
    for (const k of Object.keys(want)) {
      close(got[k], want[k], 2e-5, k);
      gap = Math.max(gap, ...want[k].map((x, j) => Math.abs(x - coupled[k][j])));
    }
    assert.ok(gap > 1e-3, `decoupled and coupled references should differ visibly, max gap ${gap}`);
    opt.dispose();
    Object.values(params).forEach((p) => p.dispose());
  });

  it('with a zero gradient only decays: p ← p·(1 − lr·wd), exactly', async () => {
    const params = { w: tf.variable(tf.tensor2d([[2, -4]])), bias: tf.variable(tf.tensor1d([3])) };
    const opt = new AdamW(params, { weightDecay: 0.2, groups: clipParamGroups() });
    const g = { w: tf.zeros([1, 2]), bias: tf.zeros([1]) };
    opt.step(g, 0.1);
    close(await params.w.data(), [2 * 0.98, -4 * 0.98], 1e-6, 'w');
    close(await params.bias.data(), [3], 0, 'bias (no decay)');
    disposeAll(g);
    opt.dispose();
    disposeAll(params);
  });

  it('first step moves by lr·g/(|g|+ε) (bias correction)', async () => {
    const params = { s: tf.variable(tf.scalar(1)) };
    const opt = new AdamW(params, { weightDecay: 0 });
    const g = { s: tf.scalar(0.5) };
    opt.step(g, 0.1);
    close(await params.s.data(), [1 - 0.1 * 0.5 / (0.5 + 1e-6)], 1e-7, 's');
    g.s.dispose();
    opt.dispose();
    params.s.dispose();
  });

  it('leaves a parameter with no gradient untouched', async () => {
    const params = makeParams();
    const opt = new AdamW(params, { weightDecay: 0.5 });
    const g = { w: tf.ones([2, 2]) };
    opt.step(g, 0.1);
    assert.deepEqual((await readParams(params)).b, Array.from(Float32Array.from(init.b)));
    g.w.dispose();
    opt.dispose();
    disposeAll(params);
  });

  it('state()/loadState() resume gives the same trajectory as an uninterrupted run', async () => {
    const a = makeParams();
    const optA = new AdamW(a, { weightDecay: 0.1, groups });
    for (const lr of lrs.slice(0, 3)) { const g = await gradTensors(a); optA.step(g, lr); disposeAll(g); }
    const b = makeParams(await readParams(a));
    const optB = new AdamW(b, { weightDecay: 0.1, groups });
    optB.loadState(optA.state(), optA.stepCount);
    assert.equal(optB.stepCount, 3);
    for (const lr of lrs.slice(3)) {
      const ga = await gradTensors(a); optA.step(ga, lr); disposeAll(ga);
      const gb = await gradTensors(b); optB.step(gb, lr); disposeAll(gb);
    }
    const want = referenceAdamW(init, quadGrad, lrs, refGroups, 0.9, 0.98, 1e-6);
    for (const k of Object.keys(want)) close((await readParams(b))[k], want[k], 2e-5, `resumed ${k}`);
    optA.dispose(); optB.dispose(); disposeAll(a); disposeAll(b);
  });

  it('loadState refuses missing, extra and misshapen entries and changes nothing', async () => {
    const params = makeParams();
    const opt = new AdamW(params);
    const good = { ...opt.state() };
    const bad1 = { ...good }; delete bad1['v.b'];
    assert.throws(() => opt.loadState(bad1, 1), /missing 'v\.b'/);
    const wrong = tf.zeros([3]);
    assert.throws(() => opt.loadState({ ...good, 'm.b': wrong }, 1), /'m\.b' has shape \[3\]/);
    assert.throws(() => opt.loadState({ ...good, 'm.extra': wrong }, 1), /no parameter.*m\.extra/);
    assert.throws(() => opt.loadState(good, -1), /'step' must be an integer/);
    assert.equal(opt.stepCount, 0);
    wrong.dispose();
    opt.dispose();
    disposeAll(params);
  });

  it('rejects bad arguments with the argument named', async () => {
    const params = makeParams();
    assert.throws(() => new AdamW(params, { betas: [0.9, 1] }), /'betas'/);
    assert.throws(() => new AdamW(params, { eps: 0 }), /'eps'/);
    assert.throws(() => new AdamW({}), /'params' is empty/);
    const opt = new AdamW(params);
    const g = { nope: tf.zeros([1]) };
    assert.throws(() => opt.step(g, 0.1), /'nope' names no parameter/);
    const g2 = { w: tf.zeros([4]) };
    assert.throws(() => opt.step(g2, 0.1), /grads\['w'\] has shape \[4\], parameter has \[2,2\]/);
    assert.throws(() => opt.step({}, NaN), /learning rate/);
    disposeAll(g); disposeAll(g2); opt.dispose(); disposeAll(params);
  });

  it('chunked (multi-tensor) updates equal a per-parameter float32 update bit for bit, chunks split and gradients missing', async () => {
    // Per parameter, the textbook update in float32 tfjs ops: the flat chunks must not change a bit.
    const shapes: Record<string, number[]> = { a: [3, 4], b: [5], c: [2, 2, 3], d: [7], e: [20], f: [1] };
    const wd: Record<string, number> = { a: 0.1, b: 0, c: 0.1, d: 0, e: 0.1, f: 0.1 };
    const lrScale: Record<string, number> = { a: 1, b: 1, c: 1, d: 1, e: 1, f: 0.25 };
    const rnd = (seed: number, n: number) => Array.from({ length: n }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233) * 2);
    const mk = () => Object.fromEntries(Object.entries(shapes).map(([k, s], j) => [k, tf.variable(tf.tensor(rnd(j + 1, tf.util.sizeFromShape(s)), s))]));
    const pa = mk();
    const pb = mk();
    const groupFn: GroupFn = (n) => ({ weightDecay: wd[n], lrScale: lrScale[n] });
    // chunkElements 16: a (12) and c (12) cannot share a chunk, e (20) is larger than a chunk.
    const opt = new AdamW(pa, { betas: [0.9, 0.98], eps: 1e-6, weightDecay: 0.1, groups: groupFn, chunkElements: 16 });
    const m: Record<string, tf.Tensor> = {};
    const v: Record<string, tf.Tensor> = {};
    for (const [k, s] of Object.entries(shapes)) { m[k] = tf.zeros(s); v[k] = tf.zeros(s); }
    const lrs = [0.05, 0.1, 0.08, 0.06];
    lrs.forEach((lr, i) => {
      const t = i + 1;
      // Step 3 has no gradient for c and d (one in each group): they keep p, m and v.
      const names = Object.keys(shapes).filter((k) => t !== 3 || (k !== 'c' && k !== 'd'));
      const g: NamedGradients = Object.fromEntries(names.map((k, j) => [k, tf.tensor(rnd(100 * t + j, tf.util.sizeFromShape(shapes[k])), shapes[k])]));
      opt.step(g, lr);
      for (const k of names) {
        const eta = lr * lrScale[k];
        const [p, mk2, vk] = tf.tidy(() => {
          const mn = tf.add(tf.mul(m[k], 0.9), tf.mul(g[k], 1 - 0.9));
          const vn = tf.add(tf.mul(v[k], 0.98), tf.mul(tf.square(g[k]), 1 - 0.98));
          const denom = tf.add(tf.div(tf.sqrt(vn), Math.sqrt(1 - 0.98 ** t)), 1e-6);
          const dec = wd[k] > 0 ? tf.mul(pb[k], 1 - eta * wd[k]) : pb[k];
          return [tf.sub(dec, tf.mul(tf.div(mn, denom), eta / (1 - 0.9 ** t))), mn, vn];
        });
        pb[k].assign(p);
        tf.dispose([p, m[k], v[k]]);
        m[k] = mk2;
        v[k] = vk;
      }
      disposeAll(g);
    });
    const st = opt.state();
    for (const k of Object.keys(shapes)) {
      assert.deepEqual(Array.from(await pa[k].data()), Array.from(await pb[k].data()), `param ${k}`);
      assert.deepEqual(Array.from(await st[`m.${k}`].data()), Array.from(await m[k].data()), `m.${k}`);
      assert.deepEqual(st[`v.${k}`].shape, shapes[k], `v.${k} shape`);
      assert.deepEqual(Array.from(await st[`v.${k}`].data()), Array.from(await v[k].data()), `v.${k}`);
    }
    assert.deepEqual(Object.keys(st), Object.keys(shapes).flatMap((k) => [`m.${k}`, `v.${k}`]), 'state lists parameters in order');
    opt.loadState(st, opt.stepCount); // its own views: copied before they are freed
    assert.deepEqual(Array.from(await opt.state()['v.e'].data()), Array.from(await v.e.data()));
    opt.dispose();
    disposeAll(pa); disposeAll(pb); disposeAll(m); disposeAll(v);
  });

  it('state() views are freed by the next step: numTensors flat with a checkpoint-like read every step', async () => {
    const params = makeParams();
    const start = tf.memory().numTensors;
    const opt = new AdamW(params, { groups });
    assert.equal(tf.memory().numTensors, start + 2 * 3, 'the optimizer holds m and v of three group chunks, nothing else');
    const counts: number[] = [];
    for (let i = 0; i < 6; i++) {
      const g = await gradTensors(params);
      opt.step(g, 0.01);
      disposeAll(g);
      const st = opt.state();
      assert.equal(Object.keys(st).length, 2 * Object.keys(params).length);
      counts.push(tf.memory().numTensors);
    }
    assert.ok(counts.every((c) => c === counts[0]), `numTensors: ${counts.join(',')}`);
    const before = tf.memory().numTensors;
    opt.dispose();
    assert.equal(tf.memory().numTensors, before - 2 * Object.keys(params).length - 2 * 3, 'the views and the m and v of three group chunks are freed');
    disposeAll(params);
  });

  it('keeps tf.memory().numTensors flat across 20 steps', async () => {
    const params = makeParams();
    const opt = new AdamW(params, { groups: clipParamGroups({ w: 0.5 }) });
    const loss = (): tf.Scalar => tf.add(tf.sum(tf.square(params.w)), tf.sum(tf.mul(params.b, params.logit_scale))) as tf.Scalar;
    const counts: number[] = [];
    for (let i = 0; i < 20; i++) {
      tf.tidy(() => {
        const { grads } = tf.variableGrads(loss, Object.values(params));
        const named: NamedGradients = {};
        for (const [name, p] of Object.entries(params)) named[name] = grads[p.name];
        opt.step(named, 0.01);
      });
      clampLogitScale(params.logit_scale);
      counts.push(tf.memory().numTensors);
    }
    assert.equal(counts[19], counts[0], `numTensors grew: ${counts.join(',')}`);
    opt.dispose();
    disposeAll(params);
  });
});

describe('parameter groups', () => {
  it('excludes gains, biases, norms and the logit scale from decay, not matrices', async () => {
    assert.equal(excludedFromDecay('text.ln_final.weight', [512]), true);
    assert.equal(excludedFromDecay('video.blocks.0.attn.qkv.bias', [2304]), true);
    assert.equal(excludedFromDecay('logit_scale', []), true);
    assert.equal(excludedFromDecay('video.blocks.0.norm1.weight', [8, 8]), true);
    assert.equal(excludedFromDecay('video.blocks.0.attn.qkv.weight', [768, 2304]), false);
    assert.equal(excludedFromDecay('text.positional_embedding', [77, 512]), false);
    assert.equal(excludedFromDecay('video.proj.weight', [768, 512]), false);
  });

  it('clipParamGroups takes the longest matching prefix', async () => {
    const g = clipParamGroups({ 'video.': 0.1, 'video.proj': 2 });
    assert.deepEqual(g('video.blocks.0.mlp.fc1.weight', [4, 4]), { lrScale: 0.1 });
    assert.deepEqual(g('video.proj.weight', [4, 4]), { lrScale: 2 });
    assert.deepEqual(g('logit_scale', []), { lrScale: 1, weightDecay: 0 });
    assert.throws(() => clipParamGroups({ x: -1 }), /prefix 'x'/);
  });
});

describe('SGD', () => {
  it('momentum 0.9 on a constant gradient: 1 → 0.9 → 0.71 → 0.439 (hand)', async () => {
    const params = { p: tf.variable(tf.scalar(1)) };
    const opt = new SGD(params, { lr: 0.1, momentum: 0.9 });
    const g = { p: tf.scalar(1) };
    const seen: number[] = [];
    for (let i = 0; i < 3; i++) { opt.step(g); seen.push((await params.p.data())[0]); }
    close(seen, [0.9, 0.71, 0.439], 1e-6, 'p');
    const resumed = { p: tf.variable(tf.scalar(0.439)) };
    const opt2 = new SGD(resumed, { lr: 0.1, momentum: 0.9 });
    opt2.loadState(opt.state(), 3);
    opt2.step(g); // b = 0.9·2.71 + 1 = 3.439
    close(await resumed.p.data(), [0.439 - 0.3439], 1e-6, 'resumed p');
    g.p.dispose(); opt.dispose(); opt2.dispose(); params.p.dispose(); resumed.p.dispose();
  });

  it('plain SGD with coupled L2: p ← p − lr(g + λp)', async () => {
    const params = { w: tf.variable(tf.tensor1d([2, -1])) };
    const opt = new SGD(params, { weightDecay: 0.5 });
    const g = { w: tf.tensor1d([1, 1]) };
    opt.step(g, 0.1);
    close(await params.w.data(), [2 - 0.1 * (1 + 1), -1 - 0.1 * (1 - 0.5)], 1e-6, 'w');
    assert.deepEqual(opt.state(), {});
    g.w.dispose(); opt.dispose(); params.w.dispose();
  });
});

describe('cosineWithWarmup', () => {
  const lr = cosineWithWarmup({ baseLr: 1e-3, warmupSteps: 10, totalSteps: 110, minLr: 1e-5 });
  it('warms up linearly from baseLr/W to baseLr', async () => {
    close([lr(0), lr(4), lr(9)], [1e-4, 5e-4, 1e-3], 1e-15, 'warmup');
  });
  it('follows the half cosine to minLr and stays there', async () => {
    const mid = 1e-5 + 0.5 * (1e-3 - 1e-5); // cos(π/2) = 0
    const quarter = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + Math.SQRT1_2); // cos(π/4)
    close([lr(10), lr(35), lr(60), lr(110), lr(500)], [1e-3, quarter, mid, 1e-5, 1e-5], 1e-15, 'cosine');
  });
  it('without warmup starts at baseLr; checks its arguments', async () => {
    assert.equal(cosineWithWarmup({ baseLr: 0.1, warmupSteps: 0, totalSteps: 4 })(0), 0.1);
    close([cosineWithWarmup({ baseLr: 0.1, warmupSteps: 0, totalSteps: 4 })(2)], [0.05], 1e-15, 'half');
    assert.throws(() => cosineWithWarmup({ baseLr: 1, warmupSteps: 5, totalSteps: 4 }), /'warmupSteps'/);
    assert.throws(() => cosineWithWarmup({ baseLr: 1, warmupSteps: 0, totalSteps: 4, minLr: 2 }), /'minLr'/);
    assert.throws(() => lr(-1), /'step'/);
  });
});

describe('gradient utilities', () => {
  it('clipByGlobalNorm: (3,4),(12) has norm 13 and halves at maxNorm 6.5', async () => {
    const before = tf.memory().numTensors;
    const g = { a: tf.tensor1d([3, 4]), b: tf.tensor2d([[12]]) };
    const n = globalNorm(g);
    close(await n.data(), [13], 1e-5, 'globalNorm');
    n.dispose();
    const clipped = await clipByGlobalNorm(g, 6.5);
    close([clipped.norm], [13], 1e-5, 'norm');
    close(await clipped.grads.a.data(), [1.5, 2], 1e-6, 'a');
    close(await clipped.grads.b.data(), [6], 1e-6, 'b');
    const kept = await clipByGlobalNorm(g, 20);
    close(await kept.grads.a.data(), [3, 4], 0, 'unclipped a');
    disposeAll(kept.grads);
    close(await g.a.data(), [3, 4], 0, 'input survives disposing the output');
    disposeAll(clipped.grads);
    disposeAll(g);
    assert.equal(tf.memory().numTensors, before);
    await assert.rejects(() => clipByGlobalNorm({}, 0), /'maxNorm'/);
  });

  it('gradNorm: one read for the norm and the guard; clipToNorm scales by maxNorm/norm (hand)', async () => {
    const g = { a: tf.tensor1d([3, 4]), b: tf.tensor1d([12]) };
    assert.deepEqual(await gradNorm(g), { norm: 13, finite: true });
    const c = clipToNorm(g, 13, 6.5);
    assert.deepEqual(Array.from(await c.a.data()), [1.5, 2]);
    assert.deepEqual(Array.from(await c.b.data()), [6]);
    const same = clipToNorm(g, 13, 20); // under the limit: new handles, same values
    assert.notEqual(same.a, g.a);
    assert.deepEqual(Array.from(await same.a.data()), [3, 4]);
    assert.throws(() => clipToNorm(g, NaN, 1), /'norm' must be a number ≥ 0/);
    const nan = { a: tf.tensor1d([1, NaN]) };
    assert.equal((await gradNorm(nan)).finite, false);
    // 1e20² = 1e40 overflows float32 (max ≈ 3.4e38): finite values, but no finite norm to clip by.
    const huge = { a: tf.tensor1d([1e20]) };
    const h = await gradNorm(huge);
    assert.equal(h.norm, Infinity);
    assert.equal(h.finite, false);
    assert.deepEqual(await gradNorm({}), { norm: 0, finite: true });
    disposeAll(g); disposeAll(c); disposeAll(same); disposeAll(nan); disposeAll(huge);
  });

  it('allFinite reads NaN and ±Inf anywhere, and huge finite values as finite', async () => {
    const before = tf.memory().numTensors;
    const ok = { a: tf.tensor1d([1, 2]), b: tf.tensor1d([3e38, -3e38]) };
    assert.equal(await allFinite(ok), true);
    for (const bad of [NaN, Infinity, -Infinity]) {
      const g = { ...ok, c: tf.tensor2d([[0, bad]]) };
      assert.equal(await allFinite(g), false, `with ${bad}`);
      g.c.dispose();
    }
    disposeAll(ok);
    assert.equal(tf.memory().numTensors, before);
  });

  it('over 20 tensors (AddN in chunks of 7 for webgpu) the norm is the float32 left fold of g², bit for bit', async () => {
    const before = tf.memory().numTensors;
    const vals = Array.from({ length: 20 }, (_, k) => 0.1 * (k + 1) + 1 / 3);
    const g: NamedGradients = Object.fromEntries(vals.map((v, k) => [`p${k}`, tf.tensor1d([v])]));
    // AddN on cpu/wasm adds its inputs in order into a float32 accumulator.
    let acc = 0;
    for (const v of vals) acc = Math.fround(acc + Math.fround(Math.fround(v) * Math.fround(v)));
    const norm = Math.fround(Math.sqrt(acc));
    const scale = Math.fround(2 / norm);
    for (const clipped of [await clipByGlobalNorm(g, 2)]) {
      assert.equal(clipped.norm, norm);
      for (const [k, v] of vals.entries()) assert.equal((await clipped.grads[`p${k}`].data())[0], Math.fround(Math.fround(v) * scale), `p${k}`);
      disposeAll(clipped.grads);
    }
    assert.equal(await allFinite(g), true);
    const bad = { ...g, p14: tf.tensor1d([NaN]) };
    assert.equal(await allFinite(bad), false, 'a NaN past the first AddN chunk');
    bad.p14.dispose();
    disposeAll(g);
    assert.equal(tf.memory().numTensors, before);
    await assert.rejects(clipByGlobalNorm({}, -1), /clipByGlobalNorm: 'maxNorm'/);
  });

  it('runTraining (async reads) skips a step with a NaN gradient and clips the others: w = w0 − 2·lr·g·(1/‖g‖) (hand)', async () => {
    const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vlmargin-trainer-'));
    try {
      const params = { w: tf.variable(tf.tensor1d([1, 1])) };
      const grads = [[3, 4], [NaN, 1], [3, 4]];
      const stream = { text: '', write(s: string) { this.text += s; return true; } };
      const r = await runTraining({
        runDir, params, optimizer: new SGD(params, { lr: 0.1 }), schedule: () => 0.1, totalSteps: 3, clipNorm: 1, config: {},
        logger: new MetricsLogger(path.join(runDir, 'metrics.jsonl'), { quiet: true, stream }), handleSignals: false,
      }, {
        dataState: () => ({}),
        computeGrads: async (step) => ({ loss: 1, grads: { w: tf.tensor1d(grads[step]) }, samples: 1 }),
      });
      assert.equal(r.skippedSteps, 1);
      assert.match(stream.text, /step 1: non-finite/);
      close(await params.w.data(), [1 - 2 * 0.1 * 0.6, 1 - 2 * 0.1 * 0.8], 1e-6, 'w');
      const rows = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.deepEqual(rows.map((x) => x.skipped), [0, 1, 0]);
      close([rows[0].gradNorm, rows[2].gradNorm], [5, 5], 1e-6, 'gradNorm');
      params.w.dispose();
    } finally {
      fs.rmSync(runDir, { recursive: true, force: true });
    }
  });

  it('GradAccumulator mean over unequal micro-batches equals the full-batch gradient of a linear model (hand)', async () => {
    // Model y = w·x + c, loss = mean over samples of ½(y − t)². Full-batch gradient by hand:
    // ∂w = mean((wx+c−t)·x), ∂c = mean(wx+c−t).
    const xs = [1, 2, -1, 0.5, 3, -2];
    const ts = [2, 3, 0, 1, 5, -1];
    const w0 = 0.7; const c0 = -0.3;
    const r = xs.map((x, i) => w0 * x + c0 - ts[i]);
    const dw = r.reduce((s, ri, i) => s + ri * xs[i], 0) / xs.length;
    const dc = r.reduce((s, ri) => s + ri, 0) / xs.length;

    const w = tf.variable(tf.scalar(w0)); const c = tf.variable(tf.scalar(c0));
    const acc = new GradAccumulator(3);
    const before = tf.memory().numTensors;
    for (const [lo, hi] of [[0, 2], [2, 5], [5, 6]]) {
      tf.tidy(() => {
        const x = tf.tensor1d(xs.slice(lo, hi)); const t = tf.tensor1d(ts.slice(lo, hi));
        const f = (): tf.Scalar => tf.mean(tf.mul(0.5, tf.square(tf.sub(tf.add(tf.mul(w, x), c), t)))) as tf.Scalar;
        const { grads } = tf.variableGrads(f, [w, c]);
        acc.add({ w: grads[w.name], c: grads[c.name] }, hi - lo);
      });
    }
    assert.equal(acc.ready, true);
    const extra = { w: tf.scalar(0), c: tf.scalar(0) };
    assert.throws(() => acc.add(extra), /already holds k=3/);
    disposeAll(extra);
    const mean = acc.mean();
    close(await mean.w.data(), [dw], 1e-6, 'dw');
    close(await mean.c.data(), [dc], 1e-6, 'dc');
    assert.equal(acc.added, 0);
    disposeAll(mean);
    assert.equal(tf.memory().numTensors, before);
    w.dispose(); c.dispose();
  });

  it('GradAccumulator refuses mismatched names and shapes, and reset frees its sums', async () => {
    const acc = new GradAccumulator(2);
    const a = { w: tf.ones([2]) };
    const before = tf.memory().numTensors;
    acc.add(a);
    const b = { v: tf.ones([2]) };
    assert.throws(() => acc.add(b), /missing: \[w\], extra: \[v\]/);
    const c = { w: tf.ones([3]) };
    assert.throws(() => acc.add(c), /shape \[3\]/);
    acc.reset();
    disposeAll(b); disposeAll(c);
    assert.equal(tf.memory().numTensors, before);
    assert.throws(() => acc.mean(), /nothing was added/);
    disposeAll(a);
  });

  it('clampLogitScale clips to [0, ln 200]', async () => {
    const s = tf.variable(tf.scalar(6));
    clampLogitScale(s);
    close(await s.data(), [Math.log(200)], 1e-6, 'upper');
    s.assign(tf.scalar(-1));
    clampLogitScale(s);
    close(await s.data(), [0], 0, 'lower');
    s.assign(tf.scalar(Math.log(100)));
    clampLogitScale(s);
    close(await s.data(), [Math.log(100)], 1e-6, 'inside');
    s.dispose();
  });

  it('NonFiniteGuard skips, counts, resets on ok and stops after K in a row', async () => {
    const guard = new NonFiniteGuard({ maxConsecutive: 3 });
    const seq: [number, boolean][] = [[1, true], [NaN, true], [2, true], [1, false], [Infinity, true], [0.5, true]];
    assert.deepEqual(seq.map(([l, f]) => guard.check(l, f)), ['ok', 'skip', 'ok', 'skip', 'skip', 'ok']);
    assert.equal(guard.total, 3);
    assert.equal(guard.consecutive, 0);
    assert.equal(guard.check(NaN, false), 'skip');
    assert.equal(guard.check(NaN, true), 'skip');
    assert.throws(() => guard.check(1, false, 41), /stopped after 3 non-finite steps in a row at step 41: /);
    assert.equal(guard.total, 6);
    const byCount = new NonFiniteGuard({ maxConsecutive: 1 });
    assert.throws(() => byCount.check(NaN, true), /in a row at step 0/);
  });

  it('guardedUpdate applies finite gradients clipped to clipNorm, skips non-finite ones untouched, and disposes every gradient', async () => {
    const before = tf.memory().numTensors;
    const guard = new NonFiniteGuard({ maxConsecutive: 2 });
    const applied: tf.Tensor[] = [];
    const apply = (g: NamedGradients) => { applied.push(tf.concat([g.a, g.b])); };
    // ‖(3, 4, 12)‖ = 13: clipped to norm 1 each element is × 1/13.
    const ok = await guardedUpdate({ a: tf.tensor1d([3, 4]), b: tf.tensor1d([12]) }, 0.5, 0, guard, apply, 1);
    assert.deepEqual(ok, { verdict: 'ok', norm: 13 });
    close(await applied[0].data(), [3 / 13, 4 / 13, 12 / 13], 1e-6, 'clipped');
    const skip = await guardedUpdate({ a: tf.tensor1d([3, Infinity]), b: tf.tensor1d([12]) }, 0.5, 1, guard, apply, 1);
    assert.equal(skip.verdict, 'skip');
    assert.equal(applied.length, 1, 'a non-finite gradient never reaches the optimizer');
    await guardedUpdate({ a: tf.tensor1d([1, 2]), b: tf.tensor1d([2]) }, 0.5, 2, guard, apply);
    close(await applied[1].data(), [1, 2, 2], 0, 'unclipped without clipNorm');
    await guardedUpdate({ a: tf.tensor1d([1, 2]), b: tf.tensor1d([2]) }, NaN, 3, guard, apply);
    await assert.rejects(guardedUpdate({ a: tf.tensor1d([1, 2]), b: tf.tensor1d([2]) }, NaN, 4, guard, apply), /stopped after 2 non-finite steps in a row at step 4/);
    assert.equal(applied.length, 2);
    tf.dispose(applied);
    assert.equal(tf.memory().numTensors, before);
  });
});

describe('MetricsLogger', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vlmargin-logger-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  function capture(isTTY: boolean): LogStream & { text: string } {
    return { isTTY, columns: 120, text: '', write(s: string) { this.text += s; return true; } };
  }

  it('appends one valid JSON line per write with the fields, after a partial line left by a crash', async () => {
    const file = path.join(dir, 'sub', 'metrics.jsonl');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, '{"step":1,"loss":2}\n{"step":2,"lo');
    const out = capture(false);
    const logger = new MetricsLogger(file, { stream: out, printEvery: 2 });
    logger.start(10, 2);
    const held = tf.ones([5]);
    for (let step = 3; step <= 5; step++) {
      logger.write({ step, loss: 1 / step, lr: 1e-4 * step, logitScale: Math.log(100), samplesPerSec: 250, dataWaitMs: 3.5, gradNorm: NaN });
    }
    logger.log('checkpoint saved');
    logger.close();
    logger.close();
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    assert.equal(lines[lines.length - 1], '', 'file ends with a newline');
    assert.deepEqual(JSON.parse(lines[0]), { step: 1, loss: 2 });
    assert.equal(lines[1], '{"step":2,"lo');
    const recs = lines.slice(2, -1).map((l) => JSON.parse(l));
    assert.deepEqual(recs.map((r) => r.step), [3, 4, 5]);
    const r = recs[1];
    assert.equal(r.loss, 0.25);
    assert.equal(r.lr, 4e-4);
    assert.equal(r.logitScale, Math.log(100));
    assert.equal(r.samplesPerSec, 250);
    assert.equal(r.dataWaitMs, 3.5);
    assert.equal(r.gradNorm, null, 'NaN becomes null');
    assert.ok(Number.isInteger(r.memory.numTensors) && r.memory.numTensors >= 1, 'numTensors');
    assert.ok(r.memory.numBytes >= 20, 'numBytes counts the 5-float tensor held');
    assert.ok(r.memory.rssMB > 1, 'rssMB');
    assert.ok(!Number.isNaN(Date.parse(r.time)));
    held.dispose();
    // Off a terminal: a status line at steps 4 (2 after the start at 2), not at 3 or 5.
    assert.match(out.text, /^step 4\/10 \(40\.0%\) \| loss 0\.2500 \| lr 4\.00e-4 \| 250\.0 samples\/s \| ETA \d+s\ncheckpoint saved\n$/);
  });

  it('draws a bar on a terminal and prints log() messages above it; quiet shows nothing', async () => {
    const tty = capture(true);
    const logger = new MetricsLogger(path.join(dir, 'tty.jsonl'), { stream: tty });
    logger.start(100);
    logger.write({ step: 1, loss: 3.5, lr: 1e-3, samplesPerSec: 12 });
    logger.log('hello there');
    logger.close();
    const at = tty.text.indexOf('hello there\n');
    assert.ok(at >= 0, 'message printed');
    assert.match(tty.text.slice(at), /step 1\/100 .*12\.0 samples\/s \| loss 3\.5000/, 'bar redrawn after the message');

    const silent = capture(true);
    const q = new MetricsLogger(path.join(dir, 'quiet.jsonl'), { stream: silent, quiet: true });
    q.start(10);
    q.write({ step: 1, loss: 1, lr: 1 });
    q.close();
    assert.equal(silent.text, '');
  });

  it('rejects bad records with the field named', async () => {
    const logger = new MetricsLogger(path.join(dir, 'bad.jsonl'), { quiet: true });
    assert.throws(() => logger.write({ step: 1.5, loss: 1, lr: 1 }), /'step'/);
    assert.throws(() => logger.write({ step: 1, loss: '1' as unknown as number, lr: 1 }), /'loss'/);
    assert.throws(() => logger.write({ step: 1, loss: 1, lr: 1, memory: 3 }), /'memory' is filled in by the logger/);
    logger.close();
    assert.throws(() => logger.write({ step: 1, loss: 1, lr: 1 }), /closed/);
    assert.throws(() => new MetricsLogger(path.join(dir, 'bad.jsonl', 'x.jsonl')), /cannot open/);
  });
});
