/**
 * Margin losses against numbers worked out here in plain float64 JS (from the papers'
 * formulas), against finite differences, and second order for SAM and ArcFace.
 */
import assert from 'node:assert/strict';
import { tf } from '../src/backend/tf.js';
import {
  angularMargins, camriLogits, flipProbability, interClassRegularizer, marginLogits, nearestOtherClass, samContrastiveLoss, sphereFace2InitBias, sphereFace2Loss, sphereFaceLambda, sphereFaceLogits, sphereFaceRLogits, sphereFaceRLoss, virtualSoftmaxLoss, type SphereFace2Options,
} from '../src/margin/index.js';
import { assertFinite, assertLabels, indicator, logSumExpFlush, targetCrossEntropy } from '../src/margin/core.js';
import { fdGrad, hvpBothWays, relErr, seededUniform } from './helpers/fd.js';

type Mat = number[][];

// ---- float64 references -------------------------------------------------------------

const lse = (a: number[]): number => {
  const m = Math.max(...a);
  return m + Math.log(a.reduce((s, v) => s + Math.exp(v - m), 0));
};
const softplus = (x: number): number => (x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x)));
const norm = (v: number[]): number => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
const unit = (v: number[]): number[] => v.map((x) => x / norm(v));
const dot = (a: number[], b: number[]): number => a.reduce((s, x, i) => s + x * b[i], 0);
const cosines = (X: Mat, W: Mat): Mat => X.map((x) => W.map((w) => dot(unit(x), unit(w))));
const EPS = 1e-6;
const acosC = (c: number): number => Math.acos(Math.min(Math.max(c, -1 + EPS), 1 - EPS));
const flat = (m: Mat): number[] => m.flat();
const seeded = (rows: number, cols: number, seed: number, lo = -1, hi = 1): Mat => {
  const v = seededUniform(rows * cols, seed, lo, hi);
  return Array.from({ length: rows }, (_, i) => Array.from(v.slice(i * cols, (i + 1) * cols)));
};
const ce = (logits: number[], y: number): number => lse(logits) - logits[y];
/** Float64 central differences of a JS function (h = 1e-6: exact to ~1e-8 here). */
const fd64 = (f: (x: number[]) => number, x0: number[], h = 1e-6): number[] =>
  x0.map((_, i) => {
    const p = x0.slice(); p[i] += h;
    const m = x0.slice(); m[i] -= h;
    return (f(p) - f(m)) / (2 * h);
  });
const reshape = (v: number[], cols: number): Mat => Array.from({ length: v.length / cols }, (_, i) => v.slice(i * cols, (i + 1) * cols));
const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void => {
  const e = relErr(a, b);
  assert.ok(e < tol, `${what}: rel. error ${e.toExponential(2)} ≥ ${tol}\n got ${Array.from(a).map((v) => v.toFixed(5))}\n want ${Array.from(b).map((v) => v.toFixed(5))}`);
};

/**
 * SAM by hand. Positives P_ij = [g_i = g_j] (identity without groups); logit_ij =
 * s·cos(max(θ_ij − μ, 0)) on positives, s·cos θ_ij elsewhere; `frozen` replaces chosen
 * logits by constants (to test what the gradient does not depend on).
 */
function samRef(V: Mat, T: Mat, mu: number, s: number, groups?: number[], frozen?: Map<string, number>): number[] {
  const B = V.length;
  const g = groups ?? V.map((_, i) => i);
  const L = V.map((v, i) => T.map((t, j) => {
    const key = `${i},${j}`;
    if (frozen?.has(key)) return frozen.get(key) as number;
    const c = dot(unit(v), unit(t));
    return g[i] === g[j] ? s * Math.cos(Math.max(acosC(c) - mu, 0)) : s * c;
  }));
  return Array.from({ length: B }, (_, i) => {
    const row = L[i];
    const col = L.map((r) => r[i]);
    const pos = (k: number) => g[k] === g[i];
    const rowCe = lse(row) - lse(row.filter((_, j) => pos(j)));
    const colCe = lse(col) - lse(col.filter((_, j) => pos(j)));
    return 0.5 * (rowCe + colCe);
  });
}
const mean = (a: number[]): number => a.reduce((s, v) => s + v, 0) / a.length;

/** Six pairs; pair 0 nearly aligned (θ ≈ 0.1), the rest at random angles. */
function samInputs(): { V: Mat; T: Mat } {
  const V = seeded(6, 8, 101);
  const T = seeded(6, 8, 102);
  const noise = seeded(1, 8, 103, -0.05, 0.05)[0];
  T[0] = V[0].map((x, k) => x + noise[k] * norm(V[0]));
  return { V, T };
}

describe('margin: SAM contrastive loss', () => {
  const s = 10;
  const logitScale = Math.log(s);

  it('μ = 0 equals symmetric InfoNCE computed by hand', async () => {
    const { V, T } = samInputs();
    // InfoNCE written out directly: logits s·cos, CE of rows and of columns against the diagonal.
    const C = cosines(V, T);
    const want = C.map((row, i) => 0.5 * (ce(row.map((c) => s * c), i) + ce(C.map((r) => s * r[i]), i)));
    const { loss, perSample } = samContrastiveLoss(tf.tensor2d(V), tf.tensor2d(T), { marginRad: 0, logitScale });
    close(await perSample.data(), want, 1e-4, 'perSample');
    assert.ok(Math.abs((await loss.data())[0] - mean(want)) < 1e-4);
  });

  it('μ > 0 matches the hand formula, including a pair already inside the margin', async () => {
    const { V, T } = samInputs();
    assert.ok(acosC(dot(unit(V[0]), unit(T[0]))) < 0.3, 'pair 0 is inside μ');
    const { perSample } = samContrastiveLoss(tf.tensor2d(V), tf.tensor2d(T), { marginRad: 0.3, logitScale });
    close(await perSample.data(), samRef(V, T, 0.3, s), 1e-4, 'perSample');
    const plain = samRef(V, T, 0, s);
    assert.ok((await perSample.data()).every((v, i) => v < plain[i]), 'the subtractive margin lowers every loss');
  });

  it('gradients wrt video, text and logitScale match finite differences', async () => {
    const { V, T } = samInputs();
    const v = tf.tensor2d(V);
    const t = tf.tensor2d(T);
    const ls = tf.scalar(logitScale);
    const opts = { marginRad: 0.3 };
    const fv = (x: tf.Tensor) => samContrastiveLoss(x, t, { ...opts, logitScale: ls }).loss;
    const ft = (x: tf.Tensor) => samContrastiveLoss(v, x, { ...opts, logitScale: ls }).loss;
    const fs = (x: tf.Tensor) => samContrastiveLoss(v, t, { ...opts, logitScale: x }).loss;
    close(await tf.grad(fv)(v).data(), await fdGrad(fv, v), 1e-2, 'd/dvideo');
    close(await tf.grad(ft)(t).data(), await fdGrad(ft, t), 1e-2, 'd/dtext');
    close(await tf.grad(fs)(ls).data(), await fdGrad(fs, ls), 1e-2, 'd/dlogitScale');
    // And against the float64 hand formula's own finite differences.
    const ref = fd64((x) => mean(samRef(reshape(x, 8), T, 0.3, s)), flat(V));
    close(await tf.grad(fv)(v).data(), ref, 2e-3, 'd/dvideo vs float64 reference');
  });

  it('a positive pair inside the margin (θ < μ) gets no gradient through its positive logit', async () => {
    const { V, T } = samInputs();
    const v = tf.tensor2d(V);
    const t = tf.tensor2d(T);
    // Pair 0 (θ ≈ 0.08) sits inside μ = 0.3; pair 1 (θ ≈ π/2) is outside, as a contrast.
    for (const [mu, pair, inside] of [[0.3, 0, true], [0.3, 1, false]] as const) {
      const auto = [
        ...(await tf.grad((x: tf.Tensor) => samContrastiveLoss(x, t, { marginRad: mu, logitScale }).loss)(v).data()),
        ...(await tf.grad((x: tf.Tensor) => samContrastiveLoss(v, x, { marginRad: mu, logitScale }).loss)(t).data()),
      ];
      // The same loss with logit_kk frozen at its value: differs from the live one only in
      // the gradient that flows through logit_kk.
      const value = s * Math.cos(Math.max(acosC(dot(unit(V[pair]), unit(T[pair]))) - mu, 0));
      const frozen = new Map([[`${pair},${pair}`, value]]);
      const lossOf = (x: number[]) => mean(samRef(reshape(x.slice(0, 48), 8), reshape(x.slice(48), 8), mu, s, undefined, frozen));
      const frozenGrad = fd64(lossOf, [...flat(V), ...flat(T)]);
      const e = relErr(auto, frozenGrad);
      if (inside) {
        assert.ok(value === s, 'inside the margin the positive logit is s·cos 0 = s');
        assert.ok(e < 2e-3, `inside: gradient equals the frozen-positive gradient (rel. err ${e})`);
      } else {
        assert.ok(e > 1e-2, `outside: the positive logit does pull (rel. err ${e})`);
      }
    }
  });

  it('groups: every pair of the same video is a positive (multi-positive CE by hand)', async () => {
    const V = seeded(5, 6, 111);
    const T = seeded(5, 6, 112);
    const groups = [0, 0, 1, 2, 2];
    const g = tf.tensor1d(groups, 'int32');
    const { perSample } = samContrastiveLoss(tf.tensor2d(V), tf.tensor2d(T), { marginRad: 0.2, logitScale, groups: g });
    close(await perSample.data(), samRef(V, T, 0.2, s, groups), 1e-4, 'perSample with groups');
    // Distinct ids are the ordinary one-positive case.
    const distinct = samContrastiveLoss(tf.tensor2d(V), tf.tensor2d(T), { marginRad: 0.2, logitScale, groups: tf.tensor1d([7, 1, 2, 3, 4], 'int32') });
    close(await distinct.perSample.data(), samRef(V, T, 0.2, s), 1e-4, 'distinct groups');
    const fv = (x: tf.Tensor) => samContrastiveLoss(x, tf.tensor2d(T), { marginRad: 0.2, logitScale, groups: g }).loss;
    const v = tf.tensor2d(V);
    close(await tf.grad(fv)(v).data(), await fdGrad(fv, v), 1e-2, 'd/dvideo with groups');
  });

  it('weights give Σ wᵢℓᵢ; logitScale is clamped to [0, ln 200]', async () => {
    const { V, T } = samInputs();
    const w = [0.1, 0.3, 0, 0.2, 0.25, 0.15];
    const want = samRef(V, T, 0.1, s).reduce((a, l, i) => a + w[i] * l, 0);
    const { loss } = samContrastiveLoss(tf.tensor2d(V), tf.tensor2d(T), { marginRad: 0.1, logitScale, weights: tf.tensor1d(w) });
    assert.ok(Math.abs((await loss.data())[0] - want) < 1e-4);
    const high = (await samContrastiveLoss(tf.tensor2d(V), tf.tensor2d(T), { marginRad: 0.1, logitScale: 9 }).loss.data())[0];
    assert.ok(Math.abs(high - mean(samRef(V, T, 0.1, 200))) < 1e-3, 's capped at 200');
    const low = (await samContrastiveLoss(tf.tensor2d(V), tf.tensor2d(T), { marginRad: 0.1, logitScale: -2 }).loss.data())[0];
    assert.ok(Math.abs(low - mean(samRef(V, T, 0.1, 1))) < 1e-4, 's floored at 1');
  });

  it('second order: Hessian-vector products (video, and video × sample weights) match finite differences', async () => {
    const { V, T } = samInputs();
    const t = tf.tensor2d(T);
    const fv = (x: tf.Tensor) => samContrastiveLoss(x, t, { marginRad: 0.3, logitScale }).loss;
    const v0 = tf.tensor2d(V);
    const dir = tf.tensor2d(seededUniform(48, 121), [6, 8]);
    const h1 = await hvpBothWays(fv, v0, dir);
    close(h1.auto, h1.fd, 2e-2, 'HVP wrt video');
    // The meta-learner's cross term: video and weights packed in one vector.
    const w0 = Array.from(seededUniform(6, 122, 0.05, 0.3));
    const packed = tf.tensor1d([...flat(V), ...w0]);
    const fp = (p: tf.Tensor) => {
      const x = tf.reshape(tf.slice(p, [0], [48]), [6, 8]);
      const w = tf.slice(p, [48], [6]);
      return samContrastiveLoss(x, t, { marginRad: 0.3, logitScale, weights: w }).loss;
    };
    const h2 = await hvpBothWays(fp, packed, tf.tensor1d(seededUniform(54, 123)));
    close(h2.auto, h2.fd, 2e-2, 'HVP wrt (video, weights)');
  });

  it('detachMargin keeps the forward value and gives the gradient of InfoNCE at the margin logits', async () => {
    const { V, T } = samInputs();
    const v = tf.tensor2d(V);
    const t = tf.tensor2d(T);
    const live = samContrastiveLoss(v, t, { marginRad: 0.3, logitScale });
    const det = samContrastiveLoss(v, t, { marginRad: 0.3, logitScale, detachMargin: true });
    close(await det.perSample.data(), await live.perSample.data(), 1e-6, 'forward');
    const gDet = await tf.grad((x: tf.Tensor) => samContrastiveLoss(x, t, { marginRad: 0.3, logitScale, detachMargin: true }).loss)(v).data();
    const gLive = await tf.grad((x: tf.Tensor) => samContrastiveLoss(x, t, { marginRad: 0.3, logitScale }).loss)(v).data();
    assert.ok(relErr(gDet, gLive) > 1e-2, 'the gradient changes');
    // Reference: logits s·(cos + Δ) with Δ = cos(max(θ−μ,0)) − cos held constant.
    const C0 = cosines(V, T);
    const delta = C0.map((_, i) => Math.cos(Math.max(acosC(C0[i][i]) - 0.3, 0)) - C0[i][i]);
    const detRef = (x: number[]) => {
      const C = cosines(reshape(x, 8), T);
      const L = C.map((row, i) => row.map((c, j) => s * (c + (i === j ? delta[i] : 0))));
      return mean(L.map((row, i) => 0.5 * (ce(row, i) + ce(L.map((r) => r[i]), i))));
    };
    close(gDet, fd64(detRef, flat(V)), 2e-3, 'detached gradient');
  });

  it('rejects bad input with the argument named', async () => {
    const v = tf.tensor2d(seeded(3, 4, 1));
    assert.throws(() => samContrastiveLoss(v, tf.zeros([3, 5]), { marginRad: 0.1, logitScale: 1 }), /'text' must have shape \[3, 4\]/);
    assert.throws(() => samContrastiveLoss(v, tf.zeros([2, 4]), { marginRad: 0.1, logitScale: 1 }), /'text'/);
    // A non-finite input is not read back inside the loss: it gives a non-finite loss on every backend.
    const bad = tf.tensor2d([[1, 2, NaN, 0], [0, 1, 0, 0], [1, 1, 1, 1]]);
    assert.ok(Number.isNaN((await samContrastiveLoss(bad, v, { marginRad: 0.1, logitScale: 1 }).loss.data())[0]));
    assert.throws(() => samContrastiveLoss(v, v, { marginRad: -1, logitScale: 1 }), /'marginRad'/);
    assert.throws(() => samContrastiveLoss(v, v, { marginRad: 0.1, logitScale: 1, groups: tf.tensor1d([0, 1, 2]) }), /'groups' must be int32/);
    assert.throws(() => samContrastiveLoss(v, v, { marginRad: 0.1, logitScale: 1, weights: tf.ones([2]) }), /'weights' must have shape \[3\]/);
  });
});

describe('margin: core log-sum-exp', () => {
  it('keeps the value, gives exact zeros instead of subnormal softmax weights, and stays second-order safe', async () => {
    const rowsIn = [[0.5, -1, 2, 0.1], [100, 0, -100, 99]];
    const x = tf.tensor2d(rowsIn);
    close(await logSumExpFlush(x, 1).data(), rowsIn.map(lse), 1e-6, 'value');
    close(await logSumExpFlush(x, 0).data(), [0, 1, 2, 3].map((j) => lse(rowsIn.map((r) => r[j]))), 1e-6, 'value, axis 0');
    // e^(−200) underflows and e^(−100)·… would be subnormal in float32: both must come out as 0.
    const g = await tf.grad((t: tf.Tensor) => tf.sum(logSumExpFlush(t, 1)))(x).data();
    const want = rowsIn.flatMap((r) => r.map((v) => Math.exp(v - lse(r))));
    close(g, want, 1e-5, 'gradient = softmax');
    assert.equal(g[5], 0, 'weight e^−100 is flushed to 0');
    assert.ok(Array.from(g).every((v) => v === 0 || Math.abs(v) >= 1.1754944e-38), 'no subnormals');
    const f = (t: tf.Tensor) => tf.sum(tf.mul(logSumExpFlush(t, 1), tf.tensor1d([1, -0.5])));
    const h = await hvpBothWays(f, tf.tensor2d(seeded(2, 4, 7, -2, 2)), tf.tensor2d(seeded(2, 4, 8)));
    close(h.auto, h.fd, 2e-2, 'HVP');
  });
});

describe('margin: core piecewiseConstant', () => {
  it('gives a zero gradient when a tidy scope disposed its inputs before the backward pass', async () => {
    // The mask's input t = 3x lives only inside the inner tidy; the gradient of Σ x²·[3x > 0]
    // is 2x where x > 0 and 0 elsewhere (the mask contributes nothing). On the native engine a
    // gradient that touched the disposed t threw.
    const xs = [-1.5, -0.2, 0.3, 2];
    const f = (x: tf.Tensor) => {
      const mask = tf.tidy(() => indicator(tf.mul(x, 3), 0));
      return tf.sum(tf.mul(tf.square(x), mask));
    };
    const before = tf.memory().numTensors;
    const g = tf.tidy(() => tf.grad(f)(tf.tensor1d(xs)));
    close(await g.data(), xs.map((v) => (v > 0 ? 2 * v : 0)), 1e-6, 'gradient');
    g.dispose();
    assert.equal(tf.memory().numTensors, before, 'no tensors left behind');
  });
});

// ---- combined margin (ArcFace, CosFace, …) --------------------------------------------

/** Cosines [4,5] in (−0.9, 0.9), with row 2's target at cos = −0.95 (θ + 0.5 > π: the fallback). */
function cosInputs(): { C: Mat; y: number[] } {
  const C = seeded(4, 5, 201, -0.9, 0.9);
  const y = [1, 4, 0, 2];
  C[2][0] = -0.95;
  return { C, y };
}
const ceOf = (logits: tf.Tensor, y: number[]): tf.Tensor =>
  tf.mean(targetCrossEntropy(logits, tf.sum(tf.mul(logits, tf.cast(tf.oneHot(tf.tensor1d(y, 'int32'), logits.shape[1] as number), 'float32')), 1)));

describe('margin: combined margin logits', () => {
  const s = 8;

  it('ArcFace, CosFace, the combined form, easy margin and per-class m2 match the formulas', async () => {
    const { C, y } = cosInputs();
    const c = tf.tensor2d(C);
    const yt = tf.tensor1d(y, 'int32');
    const expectWith = (target: (cy: number, row: number) => number): number[] =>
      C.flatMap((row, i) => row.map((v, j) => s * (j === y[i] ? target(v, i) : v)));
    const arc = (cy: number, m2: number) => {
      const th = acosC(cy);
      return th + m2 > Math.PI ? cy - m2 * Math.sin(m2) : Math.cos(th + m2);
    };
    close(await marginLogits(c, yt, { scale: s, m2: 0.5 }).data(), expectWith((v) => arc(v, 0.5)), 1e-5, 'ArcFace');
    assert.ok(acosC(-0.95) + 0.5 > Math.PI, 'row 2 exercises the fallback');
    close(await marginLogits(c, yt, { scale: s, m3: 0.35 }).data(), expectWith((v) => v - 0.35), 1e-6, 'CosFace');
    close(await marginLogits(c, yt, { scale: s, m1: 2, m2: 0.1, m3: 0.05 }).data(),
      expectWith((v) => Math.cos(2 * acosC(v) + 0.1) - 0.05), 1e-5, 'combined (m1 = 2: no fallback)');
    close(await marginLogits(c, yt, { scale: s, m2: 0.5, easyMargin: true }).data(),
      expectWith((v) => (v > 0 ? Math.cos(acosC(v) + 0.5) : v)), 1e-5, 'easy margin');
    const perClass = [0.1, 0.2, 0.3, 0.4, 0.5];
    close(await marginLogits(c, yt, { scale: s, m2: 3, perClassM2: tf.tensor1d(perClass) }).data(),
      expectWith((v, i) => arc(v, perClass[y[i]])), 1e-5, 'per-class m2');
  });

  it('the ArcFace fallback keeps the target logit non-increasing in θ over [0, π]', async () => {
    const n = 2001;
    for (const m2 of [0.2, 0.5, 1.0]) {
      const C = Array.from({ length: n }, (_, k) => [Math.cos((Math.PI * k) / (n - 1)), 0]);
      const logits = (await marginLogits(tf.tensor2d(C), tf.zeros([n], 'int32'), { scale: 1, m2 }).array()) as Mat;
      let worst = 0;
      for (let k = 1; k < n; k++) worst = Math.max(worst, logits[k][0] - logits[k - 1][0]);
      assert.ok(worst <= 1e-6, `m2 = ${m2}: target logit rose by ${worst} somewhere`);
    }
  });

  it('gradients of the cross-entropy match finite differences (ArcFace, CosFace, combined, per-class)', async () => {
    const { C, y } = cosInputs();
    C[2][0] = -0.6; // keep clear of the fallback's kink for the finite differences
    const c = tf.tensor2d(C);
    const yt = tf.tensor1d(y, 'int32');
    const variants = {
      arcface: { scale: s, m2: 0.5 },
      cosface: { scale: s, m3: 0.35 },
      combined: { scale: s, m1: 1.5, m2: 0.1, m3: 0.05 },
      perClass: { scale: s, perClassM2: tf.tensor1d([0.1, 0.2, 0.3, 0.4, 0.5]) },
    };
    for (const [name, o] of Object.entries(variants)) {
      const f = (x: tf.Tensor) => ceOf(marginLogits(x, yt, o), y);
      close(await tf.grad(f)(c).data(), await fdGrad(f, c, 1e-3), 1e-2, name);
    }
  });

  it('detachMargin changes the gradient and not the forward value', async () => {
    const { C, y } = cosInputs();
    C[2][0] = -0.6;
    const c = tf.tensor2d(C);
    const yt = tf.tensor1d(y, 'int32');
    const live = await marginLogits(c, yt, { scale: s, m2: 0.5 }).data();
    const det = await marginLogits(c, yt, { scale: s, m2: 0.5, detachMargin: true }).data();
    close(det, live, 1e-7, 'forward');
    const gLive = await tf.grad((x: tf.Tensor) => ceOf(marginLogits(x, yt, { scale: s, m2: 0.5 }), y))(c).data();
    const gDet = await tf.grad((x: tf.Tensor) => ceOf(marginLogits(x, yt, { scale: s, m2: 0.5, detachMargin: true }), y))(c).data();
    assert.ok(relErr(gDet, gLive) > 1e-2, 'the gradient changes');
    // Detached: the gradient of CE(s·(cos + Δ)) with Δ = cos(θ_y + m) − cos θ_y held constant.
    const delta = C.map((row, i) => Math.cos(acosC(row[y[i]]) + 0.5) - row[y[i]]);
    const ref = (x: number[]) => mean(reshape(x, 5).map((row, i) => ce(row.map((v, j) => s * (v + (j === y[i] ? delta[i] : 0))), y[i])));
    close(gDet, fd64(ref, flat(C)), 1e-3, 'detached gradient = normalised-softmax gradient');
  });

  it('second order: ArcFace Hessian-vector product matches finite differences', async () => {
    const { C, y } = cosInputs();
    C[2][0] = -0.6;
    const yt = tf.tensor1d(y, 'int32');
    const f = (x: tf.Tensor) => ceOf(marginLogits(x, yt, { scale: s, m2: 0.5 }), y);
    const h = await hvpBothWays(f, tf.tensor2d(C), tf.tensor2d(seededUniform(20, 211), [4, 5]), 1e-3);
    close(h.auto, h.fd, 2e-2, 'ArcFace HVP');
  });

  it('rejects bad input with the argument named', async () => {
    const c = tf.tensor2d(seeded(2, 3, 5));
    await assert.rejects(assertLabels(tf.tensor1d([0, 3], 'int32'), 3, 'marginLogits'), /marginLogits: 'labels'\[1\] = 3 is out of range; labels must be integers in \[0, 3\)/);
    await assert.rejects(assertLabels(tf.tensor1d([0, -1], 'int32'), 3, 'marginLogits'), /'labels'\[1\] = -1/);
    assert.throws(() => marginLogits(c, tf.tensor1d([0, 1]), { scale: 1 }), /'labels' must be int32/);
    assert.throws(() => marginLogits(c, tf.tensor1d([0, 1, 2], 'int32'), { scale: 1 }), /'labels' must have shape \[2\]/);
    await assert.rejects(assertFinite(tf.tensor2d([[0.1, Infinity, 0], [0, 0, 0]]), 'marginLogits', 'cosine'), /'cosine' must be finite, found Infinity at \[0, 1\]/);
    assert.throws(() => marginLogits(c, tf.tensor1d([0, 1], 'int32'), { scale: 1, perClassM2: tf.ones([2]) }), /'perClassM2' must have shape \[3\]/);
    assert.throws(() => marginLogits(c, tf.tensor1d([0, 1], 'int32'), { scale: tf.ones([3]) }), /'scale'/);
  });
});

// ---- SphereFace, SphereFace-R, SphereFace2 ----------------------------------------------

describe('margin: SphereFace family', () => {
  /** ψ(θ) = (−1)^k cos(mθ) − 2k on [kπ/m, (k+1)π/m]. */
  const psi = (th: number, m: number): number => {
    const k = Math.min(Math.floor((m * th) / Math.PI), m - 1);
    return (k % 2 === 0 ? 1 : -1) * Math.cos(m * th) - 2 * k;
  };

  it('A-softmax: ψ piecewise, ‖x‖ scaling and λ annealing by hand', async () => {
    // Targets at θ in each of the four pieces for m = 4.
    const thetas = [0.3, 1.0, 1.9, 2.8];
    const C = thetas.map((th, i) => [Math.cos(th), 0.2 * i - 0.3, 0.1]);
    const y = [0, 0, 0, 0];
    const xn = [1.5, 2, 0.5, 3];
    for (const lambda of [0, 5]) {
      const got = (await sphereFaceLogits(tf.tensor2d(C), tf.tensor1d(y, 'int32'), { featureNorm: tf.tensor1d(xn), m: 4, lambda }).array()) as Mat;
      const want = C.map((row, i) => row.map((c, j) => xn[i] * (j === 0 ? (lambda * c + psi(acosC(c), 4)) / (1 + lambda) : c)));
      close(flat(got), flat(want), 1e-5, `λ = ${lambda}`);
    }
    assert.equal(sphereFaceLambda(0), 1000);
    assert.ok(Math.abs(sphereFaceLambda(10) - 1000 / 2.2) < 1e-9);
    assert.equal(sphereFaceLambda(1e6), 5);
    // ψ is continuous at the piece boundaries and falls monotonically.
    for (let k = 1; k < 4; k++) assert.ok(Math.abs(psi((k * Math.PI) / 4 - 1e-9, 4) - psi((k * Math.PI) / 4 + 1e-9, 4)) < 1e-6);
  });

  it('A-softmax gradient matches finite differences', async () => {
    const C = [[Math.cos(0.5), 0.1, -0.2], [0.3, Math.cos(1.2), 0.4], [-0.1, 0.2, Math.cos(2.5)]];
    const y = [0, 1, 2];
    const xn = tf.tensor1d([1.2, 0.8, 1.5]);
    const f = (x: tf.Tensor) => ceOf(sphereFaceLogits(x, tf.tensor1d(y, 'int32'), { featureNorm: xn, m: 4, lambda: 2 }), y);
    const c = tf.tensor2d(C);
    close(await tf.grad(f)(c).data(), await fdGrad(f, c, 1e-3), 1e-2, 'A-softmax');
  });

  it('SphereFace-R v1 and v2 logits and the three normalisations by hand', async () => {
    const { C, y } = cosInputs();
    const c = tf.tensor2d(C);
    const yt = tf.tensor1d(y, 'int32');
    const v1 = (row: number[], i: number, sc: number) => row.map((v, j) => sc * (j === y[i] ? Math.cos(Math.min(1.5 * acosC(v), Math.PI)) : v));
    const v2 = (row: number[], i: number, sc: number) => row.map((v, j) => sc * (j === y[i] ? v : Math.cos(acosC(v) / 1.5)));
    close(await sphereFaceRLogits(c, yt).data(), C.flatMap((r, i) => v1(r, i, 30)), 1e-5, 'v1 hard (defaults)');
    close(await sphereFaceRLogits(c, yt, { version: 'v2', scale: 10 }).data(), C.flatMap((r, i) => v2(r, i, 10)), 1e-5, 'v2 hard');
    const xn = [2, 3, 0.5, 1];
    close(await sphereFaceRLogits(c, yt, { featureNormalization: 'none', featureNorm: tf.tensor1d(xn) }).data(),
      C.flatMap((r, i) => v1(r, i, xn[i])), 1e-5, 'v1 none');
    const ceRow = (logits: number[], i: number) => ce(logits, y[i]);
    const hard = await sphereFaceRLoss(c, yt, { scale: 10 }).perSample.data();
    close(hard, C.map((r, i) => (50 * ceRow(v1(r, i, 10), i)) / 10), 1e-4, 'hard: lw·CE/s');
    const soft = await sphereFaceRLoss(c, yt, { scale: 10, featureNormalization: 'soft', featureNorm: tf.tensor1d(xn) }).perSample.data();
    close(soft, C.map((r, i) => (50 * ceRow(v1(r, i, xn[i]), i)) / 10 + 0.01 * Math.abs(xn[i] - 10)), 1e-4, 'soft: lw·CE/s + t|‖x‖ − s|');
    const none = await sphereFaceRLoss(c, yt, { featureNormalization: 'none', featureNorm: tf.tensor1d(xn) }).perSample.data();
    close(none, C.map((r, i) => ceRow(v1(r, i, xn[i]), i)), 1e-4, 'none: CE');
    assert.throws(() => sphereFaceRLogits(c, yt, { featureNormalization: 'soft' }), /'featureNorm'/);
  });

  it('SphereFace-R gradients: finite differences without detachment, normalised softmax with it (the default)', async () => {
    const { C, y } = cosInputs();
    const c = tf.tensor2d(C);
    const yt = tf.tensor1d(y, 'int32');
    for (const version of ['v1', 'v2'] as const) {
      const f = (x: tf.Tensor) => sphereFaceRLoss(x, yt, { version, scale: 4, detachMargin: false }).loss;
      close(await tf.grad(f)(c).data(), await fdGrad(f, c, 1e-3), 1e-2, `${version} live`);
    }
    const g = await tf.grad((x: tf.Tensor) => sphereFaceRLoss(x, yt, { scale: 4 }).loss)(c).data();
    const delta = C.map((row, i) => Math.cos(Math.min(1.5 * acosC(row[y[i]]), Math.PI)) - row[y[i]]);
    const ref = (x: number[]) => mean(reshape(x, 5).map((row, i) => (50 / 4) * ce(row.map((v, j) => 4 * (v + (j === y[i] ? delta[i] : 0))), y[i])));
    close(g, fd64(ref, flat(C)), 1e-3, 'detached v1');
  });

  const sf2Ref = (C: Mat, y: number[], b: number, lambda = 0.7, r = 40, m = 0.4, t = 3): number[] => {
    const g = (z: number) => 2 * Math.pow((z + 1) / 2, t) - 1;
    return C.map((row, i) => row.reduce((acc, c, j) => acc + (j === y[i]
      ? (lambda / r) * softplus(-(r * (g(c) - m) + b))
      : ((1 - lambda) / r) * softplus(r * (g(c) + m) + b)), 0));
  };

  it('SphereFace2 per-sample loss by hand, gradients wrt cosine and bias by finite differences', async () => {
    const { C, y } = cosInputs();
    const c = tf.tensor2d(C);
    const yt = tf.tensor1d(y, 'int32');
    close(await sphereFace2Loss(c, yt, { bias: -3, lw: 1 }).perSample.data(), sf2Ref(C, y, -3), 1e-4, 'paper defaults, lw = 1');
    close(await sphereFace2Loss(c, yt, { bias: -3 }).perSample.data(), sf2Ref(C, y, -3).map((v) => 50 * v), 1e-4, 'the release weights the loss by lw = 50');
    close(await sphereFace2Loss(c, yt, { bias: 1, lambda: 0.5, r: 10, m: 0.2, t: 2, lw: 1 }).perSample.data(), sf2Ref(C, y, 1, 0.5, 10, 0.2, 2), 1e-4, 'other settings');
    const b = tf.scalar(0.5);
    const o = { r: 6, m: 0.2, lw: 1, detachMargin: false };
    const fc = (x: tf.Tensor) => sphereFace2Loss(x, yt, { ...o, bias: b }).loss;
    const fb = (x: tf.Tensor) => sphereFace2Loss(c, yt, { ...o, bias: x }).loss;
    close(await tf.grad(fc)(c).data(), await fdGrad(fc, c, 1e-3), 1e-2, 'd/dcosine');
    close(await tf.grad(fb)(b).data(), await fdGrad(fb, b, 1e-3), 1e-2, 'd/dbias');
    const det = sphereFace2Loss(c, yt, { ...o, bias: b, detachMargin: true });
    close(await det.perSample.data(), await sphereFace2Loss(c, yt, { ...o, bias: b }).perSample.data(), 1e-6, 'detach keeps the forward');
  });

  it('sphereFace2InitBias zeroes the initial gradient in b when every cosine is 0', async () => {
    const cases: [number, SphereFace2Options][] = [[10000, {}], [10, { r: 4, m: 0.1 }], [50, { lambda: 0.5, t: 2 }]];
    for (const [C, o] of cases) {
      const b = sphereFace2InitBias(C, o);
      const zeros = Array.from({ length: 2 }, () => new Array(C).fill(0));
      const y = [0, 1];
      const lossOf = (bb: number) => mean(sf2Ref(zeros, y, bb, o.lambda ?? 0.7, o.r ?? 40, o.m ?? 0.4, o.t ?? 3));
      const h = 1e-5;
      const slope = (lossOf(b + h) - lossOf(b - h)) / (2 * h);
      const posPull = (lossOf(b + 1) - lossOf(b - 1)) / 2; // a scale for "zero"
      assert.ok(Math.abs(slope) < 1e-6 * Math.max(1, Math.abs(posPull)), `C = ${C}: ∂L/∂b = ${slope} at b = ${b}`);
      // And through tfjs's own gradient.
      const gb = (await tf.grad((x: tf.Tensor) => sphereFace2Loss(tf.zeros([2, C]), tf.tensor1d(y, 'int32'), { ...o, bias: x }).loss)(tf.scalar(b)).data())[0];
      assert.ok(Math.abs(gb) < 1e-4, `C = ${C}: autodiff ∂L/∂b = ${gb}`);
    }
    assert.throws(() => sphereFace2InitBias(1), /'numClasses'/);
  });
});

// ---- CAMRI, Virtual Softmax, inter-class regulariser, fairness ---------------------------

describe('margin: CAMRI, Virtual Softmax, regulariser, angular margins', () => {
  it('CAMRI puts the angular margin only on rows of the important class', async () => {
    const { C, y } = cosInputs();
    C[2][0] = -0.6;
    const yt = tf.tensor1d(y, 'int32');
    const got = await camriLogits(tf.tensor2d(C), yt, { importantClass: 4, marginRad: 0.4, scale: 8 }).data();
    const want = C.flatMap((row, i) => row.map((v, j) => 8 * (j === y[i] && y[i] === 4 ? Math.cos(acosC(v) + 0.4) : v)));
    close(got, want, 1e-5, 'CAMRI logits');
    const f = (x: tf.Tensor) => ceOf(camriLogits(x, yt, { importantClass: 4, marginRad: 0.4, scale: 8 }), y);
    const c = tf.tensor2d(C);
    close(await tf.grad(f)(c).data(), await fdGrad(f, c, 1e-3), 1e-2, 'CAMRI gradient');
    assert.throws(() => camriLogits(c, yt, { importantClass: 5, marginRad: 0.4, scale: 8 }), /'importantClass'/);
  });

  it('Virtual Softmax adds ‖W_y‖·‖x‖ to the denominator (by hand, and gradients)', async () => {
    const X = seeded(3, 4, 301);
    const W = seeded(5, 4, 302);
    const y = [2, 0, 4];
    const want = X.map((x, i) => {
      const z = W.map((w) => dot(w, x));
      return lse([...z, norm(W[y[i]]) * norm(x)]) - z[y[i]];
    });
    const x = tf.tensor2d(X);
    const w = tf.tensor2d(W);
    const yt = tf.tensor1d(y, 'int32');
    close(await virtualSoftmaxLoss(x, w, yt).perSample.data(), want, 1e-5, 'perSample');
    const fx = (t: tf.Tensor) => virtualSoftmaxLoss(t, w, yt).loss;
    const fw = (t: tf.Tensor) => virtualSoftmaxLoss(x, t, yt).loss;
    close(await tf.grad(fx)(x).data(), await fdGrad(fx, x, 1e-3), 1e-2, 'd/dx');
    close(await tf.grad(fw)(w).data(), await fdGrad(fw, w, 1e-3), 1e-2, 'd/dW');
    assert.throws(() => virtualSoftmaxLoss(x, tf.zeros([5, 3]), yt), /'weights' must have shape \[N, 4\]/);
  });

  it('inter-class regulariser: mean nearest-other-class cosine by hand, blockwise, with gradients', async () => {
    const W = seeded(7, 3, 401);
    const Wn = W.map(unit);
    const want = mean(Wn.map((a, i) => Math.max(...Wn.filter((_, j) => j !== i).map((b) => dot(a, b)))));
    const w = tf.tensor2d(W);
    for (const blockRows of [1024, 3, 1]) {
      assert.ok(Math.abs((await interClassRegularizer(w, { blockRows }).data())[0] - want) < 1e-5, `blockRows ${blockRows}`);
    }
    const f = (t: tf.Tensor) => interClassRegularizer(t, { blockRows: 3 });
    // Float64 differences with a small step: rows 0's two nearest classes are only 8e-4 apart.
    const ref = (x: number[]) => {
      const n = reshape(x, 3).map(unit);
      return mean(n.map((a, i) => Math.max(...n.filter((_, j) => j !== i).map((b) => dot(a, b)))));
    };
    close(await tf.grad(f)(w).data(), fd64(ref, flat(W)), 1e-4, 'd/dW');
    const before = tf.memory().numTensors;
    for (let k = 0; k < 3; k++) tf.tidy(() => { tf.grad(f)(w); });
    assert.equal(tf.memory().numTensors, before, 'no leaked tensors');
  });

  it('nearestOtherClass reads nothing back (webgpu in Node cannot read synchronously), cuts the tape, and frees its data', async () => {
    const W = seeded(7, 3, 402);
    const Wn = W.map(unit);
    const want = Wn.map((a, i) => Wn.reduce((best, b, j) => (j !== i && (best < 0 || dot(a, b) > dot(a, Wn[best])) ? j : best), -1));
    const w = tf.tensor2d(W);
    const proto = tf.Tensor.prototype as unknown as Record<'dataSync' | 'arraySync', (this: tf.Tensor) => unknown>;
    // eslint-disable-next-line no-restricted-properties -- the test replaces the sync reads to prove none happens
    const saved = { dataSync: proto.dataSync, arraySync: proto.arraySync };
    let nearest: tf.Tensor;
    // Any sync read throws.
    /* eslint-disable no-restricted-properties -- as above: the replacements that throw */
    proto.dataSync = function (this: tf.Tensor) { throw new Error(`a sync read of [${this.shape}]`); };
    proto.arraySync = () => { throw new Error('a sync read'); };
    /* eslint-enable no-restricted-properties */
    try {
      nearest = nearestOtherClass(w, { blockRows: 3 });
      // Gather's gradient for its indices is int32, which the tape refuses: this throws if the indices lead back to W.
      tf.tidy(() => { tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, nearestOtherClass(t))))(w); });
    } finally {
      Object.assign(proto, saved);
    }
    assert.equal(nearest.dtype, 'int32');
    assert.deepEqual(Array.from(await nearest.data()), want);
    nearest.dispose();
    const mem = tf.memory();
    for (let k = 0; k < 3; k++) nearestOtherClass(w).dispose();
    assert.equal(tf.memory().numTensors, mem.numTensors, 'tensors');
    assert.equal(tf.memory().numBytes, mem.numBytes, 'bytes');
    assert.equal(tf.memory().numDataBuffers, mem.numDataBuffers, 'data buffers');
  });

  it('flipProbability of a tensor: read asynchronously, the number variant elementwise, shape kept', async () => {
    const alpha = tf.tensor2d([[1, -2, 0], [0.25, 5, -0.01]]);
    const before = tf.memory().numTensors;
    const got = await flipProbability(alpha, 2);
    assert.deepEqual(got.shape, [2, 3]);
    const v = await got.data();
    close(v.slice(0, 3), [0.308537538725987, 0.158655253931457, 0.5], 1e-6, 'table values');
    assert.deepEqual(Array.from(v), [1, -2, 0, 0.25, 5, -0.01].map((a) => Math.fround(flipProbability(Math.fround(a), 2))));
    got.dispose();
    assert.equal(tf.memory().numTensors, before);
    await assert.rejects(() => flipProbability(alpha, 0), /flipProbability: 'sigma'/);
    await assert.rejects(() => flipProbability(tf.tensor1d([1, NaN]), 1), /flipProbability: 'alpha' must be finite/);
    alpha.dispose();
  });

  it('angular margins y⟨w,x⟩/‖x‖ and flip probabilities Φ(−|α|/σ)', async () => {
    const X = [[3, 4], [1, -1], [0, 2]];
    const a = await angularMargins(tf.tensor1d([1, 2]), tf.tensor2d(X), tf.tensor1d([1, -1, -1])).data();
    close(a, [11 / 5, 1 / Math.SQRT2, -2], 1e-6, 'angular margins');
    // Φ(−1) = 0.158655253931457, Φ(−5) = 2.866515718791939e-7 (standard normal tables).
    assert.ok(Math.abs(flipProbability(1, 1) - 0.158655253931457) < 1e-7);
    assert.ok(Math.abs(flipProbability(-2, 2) - 0.158655253931457) < 1e-7);
    assert.ok(Math.abs(flipProbability(5, 1) / 2.866515718791939e-7 - 1) < 1e-5, 'tail keeps its relative precision');
    assert.ok(Math.abs(flipProbability(0, 3) - 0.5) < 1e-7);
    close(await (await flipProbability(tf.tensor1d([1, -2, 0]), 2)).data(), [0.308537538725987, 0.158655253931457, 0.5], 1e-6, 'tensor input');
    assert.throws(() => flipProbability(1, 0), /'sigma'/);
  });

  it('no function leaks tensors over repeated calls', async () => {
    const { C, y } = cosInputs();
    const c = tf.tensor2d(C);
    const yt = tf.tensor1d(y, 'int32');
    const V = tf.tensor2d(seeded(4, 5, 9));
    const groups = tf.tensor1d([0, 0, 1, 2], 'int32');
    const labels4 = tf.tensor1d([0, 1, 2, 3], 'int32');
    const calls: (() => unknown)[] = [
      () => marginLogits(c, yt, { scale: 4, m2: 0.5 }),
      () => sphereFaceLogits(c, yt, { featureNorm: 2 }),
      () => sphereFaceRLoss(c, yt, { version: 'v2' }),
      () => sphereFace2Loss(c, yt),
      () => camriLogits(c, yt, { importantClass: 1, marginRad: 0.3, scale: 4 }),
      () => samContrastiveLoss(V, c, { marginRad: 0.2, logitScale: 2, groups }),
      () => virtualSoftmaxLoss(V, c, labels4),
    ];
    for (const call of calls) {
      tf.tidy(() => { call(); });
      const before = tf.memory().numTensors;
      for (let k = 0; k < 3; k++) tf.tidy(() => { call(); });
      assert.equal(tf.memory().numTensors, before);
      const r = call() as tf.Tensor | { loss: tf.Tensor; perSample: tf.Tensor };
      const made = r instanceof tf.Tensor ? [r] : [r.loss, r.perSample];
      assert.equal(tf.memory().numTensors, before + made.length, 'only the returned tensors remain');
      tf.dispose(made);
    }
  });
});
