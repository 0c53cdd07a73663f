/**
 * MarginHead (every loss by name) and KappaFace's margins and memory, against float64 hand
 * calculations and finite differences.
 */
import assert from 'node:assert/strict';
import { tf } from '../src/backend/tf.js';
import { assertFinite, assertLabels, KappaMemory, MARGIN_HEAD_NAMES, MarginHead, kappaMargins, type MarginHeadConfig, type MarginHeadName } from '../src/margin/index.js';
import { fdGrad, hvpBothWays, relErr, seededUniform } from './helpers/fd.js';

type Mat = number[][];

const lse = (a: number[]): number => {
  const m = Math.max(...a);
  return m + Math.log(a.reduce((s, v) => s + Math.exp(v - m), 0));
};
const norm = (v: number[]): number => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
const unit = (v: number[]): number[] => v.map((x) => x / norm(v));
const dot = (a: number[], b: number[]): number => a.reduce((s, x, i) => s + x * b[i], 0);
const seeded = (rows: number, cols: number, seed: number, lo = -1, hi = 1): Mat => {
  const v = seededUniform(rows * cols, seed, lo, hi);
  return Array.from({ length: rows }, (_, i) => Array.from(v.slice(i * cols, (i + 1) * cols)));
};
const mean = (a: number[]): number => a.reduce((s, v) => s + v, 0) / a.length;
const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void => {
  const e = relErr(a, b);
  assert.ok(e < tol, `${what}: rel. error ${e.toExponential(2)} ≥ ${tol}\n got ${Array.from(a).map((v) => v.toFixed(5))}\n want ${Array.from(b).map((v) => v.toFixed(5))}`);
};
const acosC = (c: number): number => Math.acos(Math.min(Math.max(c, -1 + 1e-6), 1 - 1e-6));
/** ArcFace target with InsightFace's fallback. */
const arc = (c: number, m: number): number => (acosC(c) + m > Math.PI ? c - m * Math.sin(m) : Math.cos(acosC(c) + m));

const B = 4;
const C = 5;
const D = 6;
const Y = [1, 4, 0, 1];

/** Head options small enough in scale that float32 finite differences stay accurate. */
function fdConfig(name: MarginHeadName): MarginHeadConfig {
  const base = { numClasses: C, dim: D, seed: 7 };
  switch (name) {
    case 'softmax': case 'virtual-softmax': return { name, ...base };
    case 'sphereface': return { name, ...base };
    case 'sphereface-r': return { name, ...base, scale: 4, detachMargin: false };
    case 'sphereface2': return { name, ...base, r: 6, detachMargin: false };
    case 'kappaface': return { name, ...base, scale: 4, numSamples: 10 };
    case 'camri': return { name, ...base, scale: 4, importantClass: 1 };
    default: return { name, ...base, scale: 4 };
  }
}

describe('margin: MarginHead', () => {
  it('every head by name: gradients wrt embeddings and W match finite differences', async () => {
    const x = tf.tensor2d(seeded(B, D, 501));
    const y = tf.tensor1d(Y, 'int32');
    for (const name of MARGIN_HEAD_NAMES) {
      const head = new MarginHead(fdConfig(name));
      head.step = 100; // SphereFace: λ = max(5, 1000/13) ≈ 77, past the first iterations
      const w = tf.clone(head.weight);
      const fx = (t: tf.Tensor) => head.loss(t, y, { weight: w }).loss;
      const fw = (t: tf.Tensor) => head.loss(x, y, { weight: t }).loss;
      const lossValue = (await fx(x).data())[0];
      assert.ok(Number.isFinite(lossValue) && lossValue > 0, `${name}: loss ${lossValue}`);
      close(await tf.grad(fx)(x).data(), await fdGrad(fx, x, 1e-3), 2e-2, `${name} d/dx`);
      close(await tf.grad(fw)(w).data(), await fdGrad(fw, w, 1e-3), 2e-2, `${name} d/dW`);
      if (head.bias) {
        const fb = (t: tf.Tensor) => head.loss(x, y, { bias: t }).loss;
        const b = tf.clone(head.bias);
        close(await tf.grad(fb)(b).data(), await fdGrad(fb, b, 1e-3), 2e-2, `${name} d/db`);
      }
      head.dispose();
    }
  });

  it('defaults follow the papers (docs/DESIGN.md §5 table)', async () => {
    const make = (name: MarginHeadName, extra: object = {}) => new MarginHead({ name, numClasses: C, dim: D, ...extra } as MarginHeadConfig).settings as Record<string, unknown>;
    const expect: [MarginHeadName, Record<string, unknown>, object?][] = [
      ['normface', { scale: 64 }],
      ['arcface', { scale: 64, m1: 1, m2: 0.5, m3: 0 }],
      ['cosface', { scale: 64, m3: 0.35 }],
      ['am-softmax', { scale: 30, m3: 0.2 }],
      ['aam-softmax', { scale: 30, m2: 0.2 }],
      ['sphereface', { m: 4, lambdaBase: 1000, lambdaGamma: 0.12, lambdaMin: 5 }],
      ['sphereface-r', { scale: 30, m: 1.5, featureNormalization: 'hard', version: 'v1', detachMargin: true }],
      ['sphereface2', { lambda: 0.7, r: 40, m: 0.4, t: 3, variant: 'C', lw: 50, detachMargin: true }],
      ['kappaface', { scale: 64, m0: 0.8, T: 0.4, gamma: 0.7 }, { numSamples: 3 }],
    ];
    for (const [name, want, extra] of expect) {
      const got = make(name, extra);
      for (const [k, v] of Object.entries(want)) assert.equal(got[k], v, `${name}.${k}`);
    }
  });

  it('ArcFace with its defaults (s = 64, m = 0.5) matches the hand calculation, with W passed explicitly too', async () => {
    const X = seeded(B, D, 511);
    const head = new MarginHead({ name: 'arcface', numClasses: C, dim: D, seed: 3 });
    const ref = (W: Mat) => X.map((x, i) => {
      const cos = W.map((w) => dot(unit(x), unit(w)));
      return lse(cos.map((c, j) => 64 * (j === Y[i] ? arc(c, 0.5) : c))) - 64 * arc(cos[Y[i]], 0.5);
    });
    const x = tf.tensor2d(X);
    const y = tf.tensor1d(Y, 'int32');
    const own = head.loss(x, y);
    close(await own.perSample.data(), ref((await head.weight.array()) as Mat), 1e-4, 'variable W');
    assert.ok(Math.abs((await own.loss.data())[0] - mean(ref((await head.weight.array()) as Mat))) < 1e-3);
    const W2 = seeded(C, D, 512);
    close(await head.loss(x, y, { weight: tf.tensor2d(W2) }).perSample.data(), ref(W2), 1e-4, 'explicit W');
    // Evaluation logits are margin-free: s·cos θ.
    const logits = (await head.logits(x, { weight: tf.tensor2d(W2) }).array()) as Mat;
    close(logits.flat(), X.flatMap((xx) => W2.map((w) => 64 * dot(unit(xx), unit(w)))), 1e-5, 'eval logits');
    head.dispose();
  });

  it('sample weights, the inter-class regulariser, and softmax eval logits', async () => {
    const X = seeded(B, D, 521);
    const x = tf.tensor2d(X);
    const y = tf.tensor1d(Y, 'int32');
    const head = new MarginHead({ name: 'cosface', numClasses: C, dim: D, seed: 5, scale: 10, interClassLambda: 0.3 });
    const W = (await head.weight.array()) as Mat;
    const per = X.map((xx, i) => {
      const cos = W.map((w) => dot(unit(xx), unit(w)));
      return lse(cos.map((c, j) => 10 * (j === Y[i] ? c - 0.35 : c))) - 10 * (cos[Y[i]] - 0.35);
    });
    const Wn = W.map(unit);
    const R = mean(Wn.map((a, i) => Math.max(...Wn.filter((_, j) => j !== i).map((b) => dot(a, b)))));
    const sw = [0.4, 0.1, 0.2, 0.3];
    const { loss, perSample } = head.loss(x, y, { sampleWeights: tf.tensor1d(sw) });
    close(await perSample.data(), per, 1e-4, 'perSample excludes R');
    assert.ok(Math.abs((await loss.data())[0] - (per.reduce((a, l, i) => a + sw[i] * l, 0) + 0.3 * R)) < 1e-4, 'Σ wℓ + λR');
    const soft = new MarginHead({ name: 'softmax', numClasses: C, dim: D, seed: 5 });
    const Ws = (await soft.weight.array()) as Mat;
    close(await soft.logits(x).data(), X.flatMap((xx) => Ws.map((w) => dot(xx, w))), 1e-5, 'softmax logits W·x');
    tf.dispose([head.weight, soft.weight]);
  });

  it('interClassEvery reuses the nearest classes between searches', async () => {
    const x = tf.tensor2d(seeded(B, D, 551));
    const y = tf.tensor1d(Y, 'int32');
    const head = new MarginHead({ name: 'normface', numClasses: C, dim: D, seed: 5, scale: 4, interClassLambda: 1, interClassEvery: 2 });
    const W1 = seeded(C, D, 552);
    const W2 = seeded(C, D, 553);
    const nearestOf = (W: Mat) => W.map(unit).map((a, i, n) => n.reduce((best, b, j) => (j !== i && (best < 0 || dot(a, b) > dot(a, n[best])) ? j : best), -1));
    const Rwith = (W: Mat, nn: number[]) => mean(W.map(unit).map((a, i, n) => dot(a, n[nn[i]])));
    assert.notDeepEqual(nearestOf(W1), nearestOf(W2), 'the two W have different nearest classes');
    const regOf = async (W: Mat) => {
      const w = tf.tensor2d(W);
      const { loss, perSample } = head.loss(x, y, { weight: w });
      return (await loss.data())[0] - mean(Array.from(await perSample.data()));
    };
    assert.ok(Math.abs((await regOf(W1)) - Rwith(W1, nearestOf(W1))) < 1e-5, 'call 1 searches');
    assert.ok(Math.abs((await regOf(W2)) - Rwith(W2, nearestOf(W1))) < 1e-5, 'call 2 reuses W1’s nearest classes');
    assert.ok(Math.abs((await regOf(W2)) - Rwith(W2, nearestOf(W2))) < 1e-5, 'call 3 searches again');
    head.dispose();
  });

  it('second order through the head: ArcFace HVP over (embeddings, W) and a virtual SGD step on W', async () => {
    const head = new MarginHead({ name: 'arcface', numClasses: C, dim: D, seed: 11, scale: 4 });
    const y = tf.tensor1d(Y, 'int32');
    const X = seeded(B, D, 531);
    // Embeddings and W share d, so both fit in one [B + C, d] point for the HVP.
    const packed = tf.concat([tf.tensor2d(X), head.weight]);
    const f = (p: tf.Tensor) => head.loss(tf.slice(p, [0, 0], [B, D]), y, { weight: tf.slice(p, [B, 0], [C, D]) }).loss;
    const h = await hvpBothWays(f, packed, tf.tensor2d(seededUniform((B + C) * D, 532), [B + C, D]), 1e-3);
    close(h.auto, h.fd, 2e-2, 'HVP');
    // The bilevel pattern: W' = W − α∇W L(x; W), then a loss at W' differentiated wrt x.
    const x2 = tf.tensor2d(seeded(B, D, 533));
    const meta = (x: tf.Tensor) => {
      const gW = tf.grad((w: tf.Tensor) => head.loss(x, y, { weight: w }).loss)(head.weight);
      return head.loss(x2, y, { weight: tf.sub(head.weight, tf.mul(gW, 0.5)) }).loss;
    };
    const x0 = tf.tensor2d(X);
    close(await tf.grad(meta)(x0).data(), await fdGrad(meta, x0, 1e-3), 2e-2, 'meta-gradient');
    head.dispose();
  });

  it('no tensors leak over repeated loss and gradient calls, for every head', async () => {
    const x = tf.tensor2d(seeded(B, D, 541));
    const y = tf.tensor1d(Y, 'int32');
    for (const name of MARGIN_HEAD_NAMES) {
      const head = new MarginHead({ ...fdConfig(name), interClassLambda: 0.1, interClassEvery: 2 } as MarginHeadConfig);
      const step = () => tf.tidy(() => {
        tf.grads((e: tf.Tensor, w: tf.Tensor) => head.loss(e, y, { weight: w }).loss)([x, head.weight]);
        head.logits(x);
      });
      step();
      const before = tf.memory().numTensors;
      for (let k = 0; k < 3; k++) step();
      assert.equal(tf.memory().numTensors, before, name);
      head.dispose();
    }
  });

  it('rejects bad configs and inputs with the argument named', async () => {
    assert.throws(() => new MarginHead({ name: 'nope', numClasses: C, dim: D } as unknown as MarginHeadConfig), /MarginHead: invalid config \(name/);
    assert.throws(() => new MarginHead({ name: 'arcface', numClasses: C, dim: D, scale: -1 }), /scale/);
    assert.throws(() => new MarginHead({ name: 'camri', numClasses: C, dim: D } as MarginHeadConfig), /importantClass/);
    assert.throws(() => new MarginHead({ name: 'camri', numClasses: C, dim: D, importantClass: 5 }), /'importantClass' must be in \[0, 5\)/);
    assert.throws(() => new MarginHead({ name: 'kappaface', numClasses: C, dim: D } as MarginHeadConfig), /numSamples/);
    const head = new MarginHead({ name: 'arcface', numClasses: C, dim: D });
    const y = tf.tensor1d(Y, 'int32');
    assert.throws(() => head.loss(tf.zeros([B, D + 1]), y), /arcface\)\.loss: 'embeddings' must have shape \[N, 6\]/);
    const bad = tf.tensor2d(seeded(B, D, 1).map((r, i) => (i === 2 ? r.map((v, k) => (k === 3 ? NaN : v)) : r)));
    // Values are the caller's to check (the loss never reads back), the same on every backend.
    await assert.rejects(assertFinite(bad, 'train', 'embeddings'), /train: 'embeddings' must be finite, found NaN at \[2, 3\]/);
    await assert.rejects(assertLabels(tf.tensor1d([0, 1, 5, 2], 'int32'), C, 'train'), /train: 'labels'\[2\] = 5 is out of range/);
    await assertFinite(tf.zeros([B, D]), 'train', 'embeddings');
    await assertLabels(y, C, 'train');
    assert.throws(() => head.loss(tf.zeros([B, D]), y, { weight: tf.zeros([C, D - 1]) }), /'weight' must have shape \[5, 6\]/);
    assert.throws(() => head.loss(tf.zeros([B, D]), y, { sampleWeights: tf.zeros([B + 1]) }), /'sampleWeights'/);
    head.dispose();
  });
});

// ---- KappaFace ------------------------------------------------------------------------

/** docs/DESIGN.md §5's KappaFace margins, written out in float64 (N − 1 std, K = 1.05·max n). */
function kappaRef(sums: Mat, counts: number[], m0 = 0.8, T = 0.4, gamma = 0.7): number[] {
  const d = sums[0].length;
  const r = sums.map((s, c) => norm(s) / counts[c]);
  const raw = r.map((rc) => (1 - rc < 1e-6 ? Infinity : (rc * (d - rc * rc)) / (1 - rc * rc)));
  const maxFinite = Math.max(...raw.filter(Number.isFinite));
  const kappa = raw.map((k) => (Number.isFinite(k) ? k : maxFinite));
  const mu = mean(kappa);
  const sd = Math.sqrt(kappa.reduce((a, k) => a + (k - mu) ** 2, 0) / (kappa.length - 1));
  const K = 1.05 * Math.max(...counts);
  return kappa.map((k, c) => {
    const wk = 1 - 1 / (1 + Math.exp(-T * ((k - mu) / sd)));
    const ws = (Math.cos((Math.PI * counts[c]) / K) + 1) / 2;
    return (gamma * wk + (1 - gamma) * ws) * m0;
  });
}

const sumOf = (vs: Mat): number[] => vs.map(unit).reduce((a, v) => a.map((x, k) => x + v[k]));

describe('margin: KappaFace', () => {
  const e1 = [1, 0, 0];
  const tight = [[1, 0.05, 0], [1, -0.05, 0.02], [1, 0, -0.04]];
  const spread = [[1, 0.8, 0], [1, -0.6, 0.5], [0.4, 0, -1]];
  const medium = [[1, 0.3, 0], [1, -0.3, 0.1], [1, 0, -0.3], [1, 0.2, 0.2], [1, -0.1, -0.2], [1, 0.25, -0.05]];

  it('margins match the formula by hand', async () => {
    const sums = [sumOf(tight), sumOf(spread), sumOf(medium), sumOf([[0, 1, 0.3], [0.2, 1, 0]])];
    const counts = [3, 3, 6, 2];
    const got = await (await kappaMargins(tf.tensor2d(sums), tf.tensor1d(counts))).data();
    close(got, kappaRef(sums, counts), 1e-5, 'defaults');
    const got2 = await (await kappaMargins(tf.tensor2d(sums), tf.tensor1d(counts), { m0: 0.5, T: 1, gamma: 0.3 })).data();
    close(got2, kappaRef(sums, counts, 0.5, 1, 0.3), 1e-5, 'other settings');
  });

  it('a more concentrated class and a larger class each get a smaller margin', async () => {
    // Same counts: the tight class gets the smaller margin.
    const m1 = await (await kappaMargins(tf.tensor2d([sumOf(tight), sumOf(spread), sumOf(medium.slice(0, 3))]), tf.tensor1d([3, 3, 3]))).data();
    assert.ok(m1[0] < m1[2] && m1[2] < m1[1], `concentration: ${m1}`);
    // Same concentration (the same directions, twice as many): the larger class gets the smaller margin.
    const m2 = await (await kappaMargins(tf.tensor2d([sumOf(spread), sumOf([...spread, ...spread]), sumOf(tight)]), tf.tensor1d([3, 6, 3]))).data();
    assert.ok(m2[1] < m2[0], `size: ${m2}`);
  });

  it('an infinite κ (all features identical) is clipped to the largest finite one', async () => {
    const sums = [sumOf([e1, e1, e1]), sumOf(tight), sumOf(spread)];
    const m = await (await kappaMargins(tf.tensor2d(sums), tf.tensor1d([3, 3, 3]))).data();
    assert.ok(Math.abs(m[0] - m[1]) < 1e-6, `clipped class equals the most concentrated finite one: ${m}`);
    close(m, kappaRef(sums, [3, 3, 3]), 1e-5, 'reference');
    assert.ok(Array.from(m).every(Number.isFinite));
  });

  it('KappaMemory: m0 in the first epoch, z̄ ← normalize(0.1 z̄ + 0.9 z), margins from its class sums after the epoch', async () => {
    const mem = new KappaMemory({ numSamples: 6, dim: 3, numClasses: 3 });
    close(await mem.margins().data(), [0.8, 0.8, 0.8], 1e-7, 'first epoch');
    const f1 = [tight[0], tight[1], spread[0], spread[1], medium[0], medium[1]];
    await mem.update(tf.tensor1d([0, 1, 2, 3, 4, 5], 'int32'), tf.tensor2d(f1), tf.tensor1d([0, 0, 1, 1, 2, 2], 'int32'));
    const f2 = [[0.5, 0.5, 0], [0, 0, 2]];
    await mem.update(tf.tensor1d([0, 4], 'int32'), tf.tensor2d(f2), tf.tensor1d([0, 2], 'int32'));
    close(await mem.margins().data(), [0.8, 0.8, 0.8], 1e-7, 'still the first epoch');
    const z = f1.map(unit);
    z[0] = unit(z[0].map((v, k) => 0.1 * v + 0.9 * unit(f2[0])[k]));
    z[4] = unit(z[4].map((v, k) => 0.1 * v + 0.9 * unit(f2[1])[k]));
    const sums = [0, 1, 2].map((c) => [0, 1].map((i) => z[2 * c + i]).reduce((a, v) => a.map((x, k) => x + v[k])));
    const stats = mem.classStats();
    close(await stats.classSums.data(), sums.flat(), 1e-6, 'class sums');
    close(await stats.counts.data(), [2, 2, 2], 1e-9, 'counts');
    mem.endEpoch();
    assert.equal(mem.epoch, 1);
    close(await mem.margins().data(), kappaRef(sums, [2, 2, 2]), 1e-5, 'margins after the epoch');
    await assert.rejects(() => mem.update(tf.tensor1d([0], 'int32'), tf.tensor2d([e1]), tf.tensor1d([1], 'int32')), /sample 0 was class 0/);
    await assert.rejects(() => mem.update(tf.tensor1d([6], 'int32'), tf.tensor2d([e1]), tf.tensor1d([1], 'int32')), /'sampleIds'\[0\] = 6/);
  });

  it('kappaMargins and KappaMemory.update read asynchronously: hand-checked numbers, values checked on what was read, no tensor growth', async () => {
    const sums = [sumOf(tight), sumOf(spread), sumOf(medium), sumOf([[0, 1, 0.3], [0.2, 1, 0]])];
    const counts = [3, 3, 6, 2];
    const S = tf.tensor2d(sums);
    const N = tf.tensor1d(counts);
    const before = tf.memory().numTensors;
    const got = await kappaMargins(S, N, { m0: 0.5, T: 1, gamma: 0.3 });
    close(await got.data(), kappaRef(sums, counts, 0.5, 1, 0.3), 1e-5, 'by hand');
    got.dispose();
    assert.equal(tf.memory().numTensors, before);
    await assert.rejects(() => kappaMargins(S, tf.tensor1d([3, 3, 1.5, 2])), /kappaMargins: 'counts'\[2\] = 1.5 must be a non-negative integer/);
    await assert.rejects(() => kappaMargins(tf.tensor2d([[0, NaN]]), tf.tensor1d([1])), /kappaMargins: 'classSums' must be finite, found NaN at \[0, 1\]/);
    const a = new KappaMemory({ numSamples: 6, dim: 3, numClasses: 3 });
    const feed = [
      { ids: [0, 1, 2, 3], f: [tight[0], tight[1], spread[0], spread[1]], y: [0, 0, 1, 1] },
      { ids: [4, 5, 0], f: [medium[0], medium[1], [0.5, 0.5, 0]], y: [2, 2, 0] },
      { ids: [2, 4], f: [[0.3, -1, 0.2], [0, 0, 2]], y: [1, 2] },
    ];
    const start = tf.memory().numTensors;
    for (const { ids, f, y } of feed) {
      const t = [tf.tensor1d(ids, 'int32'), tf.tensor2d(f), tf.tensor1d(y, 'int32')] as const;
      await a.update(...t);
      tf.dispose([...t]);
      assert.equal(tf.memory().numTensors, start, 'update keeps no tensor');
    }
    const sa = a.classStats();
    assert.deepEqual(Array.from(await sa.counts.data()), [2, 2, 2], 'counts: samples per class, each once (ids 0/1, 2/3, 4/5)');
    a.endEpoch();
    const sumsRead = await sa.classSums.data();
    close(await a.margins().data(), kappaRef(Array.from({ length: 3 }, (_, c) => Array.from(sumsRead.slice(c * 3, c * 3 + 3))), [2, 2, 2]), 1e-5, 'margins after the epoch');
    // Class 1 by hand: z̄₃ = unit(f₃); z̄₂ = normalize(0.1·unit(f₂) + 0.9·unit(f₂')) after its second visit.
    const z2 = unit(unit(spread[0]).map((v, k) => 0.1 * v + 0.9 * unit([0.3, -1, 0.2])[k]));
    close((await sa.classSums.data()).slice(3, 6), unit(spread[1]).map((v, k) => v + z2[k]), 1e-6, 'class 1 sum');
    await assert.rejects(() => a.update(tf.tensor1d([0], 'int32'), tf.tensor2d([e1]), tf.tensor1d([1], 'int32')), /sample 0 was class 0/);
    await assert.rejects(() => a.update(tf.tensor1d([6], 'int32'), tf.tensor2d([e1]), tf.tensor1d([1], 'int32')), /'sampleIds'\[0\] = 6/);
    await assert.rejects(() => a.update(tf.tensor1d([1], 'int32'), tf.tensor2d([[0, NaN, 0]]), tf.tensor1d([0], 'int32')), /'features' must be finite, found NaN at \[0, 1\]/);
  });

  it('the kappaface head uses the memory margins inside ArcFace', async () => {
    const head = new MarginHead({ name: 'kappaface', numClasses: 3, dim: 3, numSamples: 4, scale: 4, seed: 2 });
    const X = [tight[0], spread[0], medium[0], tight[1]];
    const y = [0, 1, 2, 0];
    const kappa = head.kappa as KappaMemory;
    await kappa.update(tf.tensor1d([0, 1, 2, 3], 'int32'), tf.tensor2d(X), tf.tensor1d(y, 'int32'));
    kappa.endEpoch();
    const margins = Array.from(await kappa.margins().data());
    assert.ok(margins.some((m) => Math.abs(m - 0.8) > 1e-3), 'margins moved off m0');
    const W = (await head.weight.array()) as Mat;
    const want = X.map((x, i) => {
      const cos = W.map((w) => dot(unit(x), unit(w)));
      const t = arc(cos[y[i]], margins[y[i]]);
      return lse(cos.map((c, j) => 4 * (j === y[i] ? t : c))) - 4 * t;
    });
    close(await head.loss(tf.tensor2d(X), tf.tensor1d(y, 'int32')).perSample.data(), want, 1e-4, 'per-class ArcFace');
    head.dispose();
  });
});
