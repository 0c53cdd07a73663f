/**
 * The face losses as their authors' code computes them, each against a worked example done
 * here in float64 straight from the released formulas (OpenSphere's SphereFace2 and
 * SphereFace-R heads, KappaFace's momentum encoder), and the differential-privacy σ of the
 * perturbation analysis against the Gaussian mechanism's formulas.
 */
import assert from 'node:assert/strict';
import { tf } from '../src/backend/tf.js';
import {
  flipRateGap, gaussianMechanismSigma, KappaMemory, MarginHead, momentumEncoderUpdate, normalCdf, sphereFace2InitBias, sphereFace2Loss,
  sphereFaceRLoss, sphereFaceRScheduledMargin, type SphereFace2Variant,
} from '../src/margin/index.js';
import { sigmaFromOptions } from '../pipelines/cli/analyze.js';
import { relErr } from './helpers/fd.js';

const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void => {
  const e = relErr(a, b);
  assert.ok(e < tol, `${what}: rel. error ${e.toExponential(2)} ≥ ${tol}\n got ${Array.from(a)}\n want ${Array.from(b)}`);
};
const softplus = (x: number): number => (x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x)));
const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

// The released head's forward, literally: adjusted cosines with 1e-5 clamps, logits
// r·adj + b, binary cross-entropy against one-hot targets weighted lw·C/r·(α or 1 − α),
// averaged over all B·C entries (F.binary_cross_entropy_with_logits' mean).
const COS = [[0.6, -0.2, 0.1], [0.3, 0.5, -0.95], [-0.4, 0.05, 0.7]];
const Y = [0, 2, 2];
function releasedSphereFace2(variant: SphereFace2Variant, b: number, o: { alpha: number; r: number; m: number; t: number; lw: number }): { loss: number; adj: number[][] } {
  const g = (z: number) => 2 * ((z + 1) / 2) ** o.t - 1;
  const C = COS[0].length;
  const adj = COS.map((row, i) => row.map((c, j) => {
    const hot = j === Y[i] ? 1 : 0;
    if (variant === 'C') return g(c) - o.m * (2 * hot - 1);
    let th = Math.acos(Math.min(Math.max(c, -1 + 1e-5), 1 - 1e-5));
    if (hot) th = variant === 'A' ? th + o.m : th * o.m;
    th = Math.min(Math.max(th, 1e-5), 3.14159);
    return g(Math.cos(th));
  }));
  let sum = 0;
  adj.forEach((row, i) => row.forEach((a, j) => {
    const hot = j === Y[i] ? 1 : 0;
    const z = o.r * a + b;
    const w = ((o.lw * C) / o.r) * (hot ? o.alpha : 1 - o.alpha);
    sum += w * (hot ? softplus(-z) : softplus(z));
  }));
  return { loss: sum / (COS.length * C), adj };
}

describe('face losses as released: SphereFace2 (OpenSphere)', () => {
  const base = { alpha: 0.7, r: 40, t: 3, lw: 50 };
  for (const [variant, m] of [['C', 0.4], ['A', 0.4], ['M', 1.5]] as [SphereFace2Variant, number][]) {
    it(`variant ${variant}: loss with lw = 50 and the detached gradient match the released head by hand`, async () => {
      const b = -2.5;
      const want = releasedSphereFace2(variant, b, { ...base, m });
      const cos = tf.tensor2d(COS);
      const y = tf.tensor1d(Y, 'int32');
      const got = (await sphereFace2Loss(cos, y, { variant, m, bias: b }).loss.data())[0];
      close([got], [want.loss], 2e-5, `${variant} loss`);
      // Released backward: the adjustment is a constant, so ∂/∂cos_ij = w_ij·(σ(z_ij) − y_ij)·r/(B·C)
      // and ∂/∂b = Σ w_ij·(σ(z_ij) − y_ij)/(B·C), z from the adjusted logits.
      const n = COS.length * COS[0].length;
      const dz = COS.map((row, i) => row.map((_, j) => {
        const hot = j === Y[i] ? 1 : 0;
        const w = ((base.lw * COS[0].length) / base.r) * (hot ? base.alpha : 1 - base.alpha);
        return (w * (sigmoid(base.r * want.adj[i][j] + b) - hot)) / n;
      }));
      const gc = await tf.grad((c: tf.Tensor) => sphereFace2Loss(c, y, { variant, m, bias: b }).loss)(cos).data();
      close(gc, dz.flat().map((v) => v * base.r), 2e-4, `${variant} d/dcos (detached)`);
      const gb = await tf.grad((bb: tf.Tensor) => sphereFace2Loss(cos, y, { variant, m, bias: bb }).loss)(tf.scalar(b)).data();
      close(gb, [dz.flat().reduce((a, v) => a + v, 0)], 2e-4, `${variant} d/db`);
    });
  }

  it('the initial bias equals the released closed form for C, A and M', () => {
    for (const [variant, m] of [['C', 0.4], ['A', 0.4], ['M', 1.5], ['A', 3]] as [SphereFace2Variant, number][]) {
      for (const C of [10, 1000, 85742]) {
        const { alpha, r, t } = { alpha: 0.7, r: 40, t: 3 };
        const z = alpha / ((1 - alpha) * (C - 1));
        const gz = (c: number) => 2 * ((c + 1) / 2) ** t - 1;
        let ay: number; let ai: number;
        if (variant === 'C') { ay = r * (2 * 0.5 ** t - 1 - m); ai = r * (2 * 0.5 ** t - 1 + m); } else {
          const thetaY = Math.min(Math.PI, variant === 'A' ? Math.PI / 2 + m : (m * Math.PI) / 2);
          ay = r * gz(Math.cos(thetaY));
          ai = r * (2 * 0.5 ** t - 1);
        }
        const temp = (1 - z) ** 2 + 4 * z * Math.exp(ay - ai);
        const want = Math.log(2 * z) - ai - Math.log(1 - z + Math.sqrt(temp));
        const got = sphereFace2InitBias(C, { variant, m });
        assert.ok(Math.abs(got - want) < 1e-9 * Math.max(1, Math.abs(want)), `${variant} m=${m} C=${C}: ${got} vs ${want}`);
      }
    }
  });

  it('the paper\'s form stays reachable (lw 1, live gradient), and the head takes the variant', async () => {
    const cos = tf.tensor2d(COS);
    const y = tf.tensor1d(Y, 'int32');
    const live = (await sphereFace2Loss(cos, y, { bias: -1, lw: 1, detachMargin: false }).loss.data())[0];
    close([live], [releasedSphereFace2('C', -1, { ...base, lw: 1, m: 0.4 }).loss], 2e-5, 'lw 1');
    const head = new MarginHead({ name: 'sphereface2', numClasses: 5, dim: 4, variant: 'A' });
    assert.equal(head.settings.name === 'sphereface2' && head.settings.variant, 'A');
    assert.ok(Math.abs((await (head.bias as tf.Variable).data())[0] - sphereFace2InitBias(5, { variant: 'A' })) < 1e-4);
    head.dispose();
    assert.throws(() => sphereFace2Loss(cos, y, { variant: 'X' as SphereFace2Variant }), /'variant' must be 'C', 'A' or 'M'/);
  });
});

describe('face losses as released: SphereFace-R margin schedule, KappaFace momentum encoder', () => {
  it('m = 1 + dm·(milestones passed), counted as the release counts iterations', () => {
    const steps = [2, 5];
    let iter = 0;
    for (let k = 0; k < 8; k++) {
      iter += 1; // the release increments before use
      const released = 1 + 0.1 * steps.filter((s) => s < iter).length;
      assert.ok(Math.abs(sphereFaceRScheduledMargin(k, 0.1, steps) - released) < 1e-12, `step ${k}`);
    }
  });

  it('none and soft losses use the scheduled margin (worked example), hard refuses a schedule', async () => {
    const cos = [[0.5, 0.1, -0.3], [0.2, 0.6, 0.0]];
    const y = [0, 1];
    const xn = [3, 5];
    const byHand = (m: number, norm: 'none' | 'soft') => cos.map((row, i) => {
      const th = Math.acos(row[y[i]]);
      const logits = row.map((c, j) => xn[i] * (j === y[i] ? Math.cos(Math.min(m * th, Math.PI)) : c));
      const mx = Math.max(...logits);
      const ce = mx + Math.log(logits.reduce((a, v) => a + Math.exp(v - mx), 0)) - logits[y[i]];
      return norm === 'none' ? ce : (50 * ce) / 30 + 0.01 * Math.abs(xn[i] - 30);
    });
    const c = tf.tensor2d(cos);
    const yt = tf.tensor1d(y, 'int32');
    const featureNorm = tf.tensor1d(xn);
    // none: dm 0.1 (release default), two milestones passed at step 7 → m = 1.2.
    close(await sphereFaceRLoss(c, yt, { featureNormalization: 'none', featureNorm, marginSteps: [3, 6], step: 7 }).perSample.data(), byHand(1.2, 'none'), 1e-4, 'none at step 7');
    close(await sphereFaceRLoss(c, yt, { featureNormalization: 'none', featureNorm, marginSteps: [3, 6], step: 0 }).perSample.data(), byHand(1, 'none'), 1e-4, 'none at step 0');
    // soft: dm 1.5 (release default), one milestone passed → m = 2.5.
    close(await sphereFaceRLoss(c, yt, { featureNormalization: 'soft', featureNorm, marginSteps: [3], step: 4 }).perSample.data(), byHand(2.5, 'soft'), 1e-4, 'soft at step 4');
    assert.throws(() => sphereFaceRLoss(c, yt, { marginSteps: [3] }), /'marginSteps'.*'none' or 'soft'/);
    // Through the head: its step drives the schedule.
    const head = new MarginHead({ name: 'sphereface-r', numClasses: 3, dim: 2, featureNormalization: 'none', marginSteps: [1], dm: 0.5, detachMargin: false });
    const x = tf.tensor2d([[1, 2], [-2, 0.5]]);
    const W = (await head.weight.array()) as number[][];
    const unit = (v: number[]) => v.map((a) => a / Math.hypot(...v));
    const rows = ((await x.array()) as number[][]);
    const hand = (m: number) => rows.map((r, i) => {
      const n = Math.hypot(...r);
      const cs = W.map((w) => unit(r).reduce((a, v, k) => a + v * unit(w)[k], 0));
      const logits = cs.map((cc, j) => n * (j === y[i] ? Math.cos(Math.min(m * Math.acos(cc), Math.PI)) : cc));
      const mx = Math.max(...logits);
      return mx + Math.log(logits.reduce((a, v) => a + Math.exp(v - mx), 0)) - logits[y[i]];
    });
    close(await head.loss(x, yt).perSample.data(), hand(1), 1e-4, 'head step 0');
    head.step = 1;
    close(await head.loss(x, yt).perSample.data(), hand(1.5), 1e-4, 'head step 1');
    head.dispose();
  });

  it('the momentum encoder is an EMA of the parameters, and its features make per-epoch class sums', async () => {
    const enc = { w: tf.variable(tf.tensor1d([1, 2])), b: tf.variable(tf.scalar(-1)) };
    momentumEncoderUpdate(enc, { w: tf.tensor1d([3, -2]), b: tf.scalar(1), other: tf.scalar(5) });
    close(await enc.w.data(), [0.9 + 0.3, 1.8 - 0.2], 1e-6, 'θ_k = 0.9θ_k + 0.1θ');
    close(await enc.b.data(), [-0.9 + 0.1], 1e-6, 'bias');
    assert.throws(() => momentumEncoderUpdate(enc, { w: tf.tensor1d([1, 2]) }), /no 'b'/);

    // KappaFace margins by hand from the epoch's normalised features (d = 2, 3 classes).
    const feats = [[3, 4], [1, 0], [0, 2], [1, 1], [-1, 1], [2, 0.1]];
    const labels = [0, 0, 1, 1, 2, 2];
    const margins = (F: number[][], L: number[]) => {
      const d = 2;
      const sums = [[0, 0], [0, 0], [0, 0]];
      const n = [0, 0, 0];
      F.forEach((f, i) => { const u = f.map((v) => v / Math.hypot(...f)); sums[L[i]][0] += u[0]; sums[L[i]][1] += u[1]; n[L[i]]++; });
      const kappa = sums.map((s, c) => { const r = Math.hypot(...s) / n[c]; return (r * (d - r * r)) / (1 - r * r); });
      const mean = kappa.reduce((a, v) => a + v, 0) / 3;
      const std = Math.sqrt(kappa.reduce((a, v) => a + (v - mean) ** 2, 0) / 2);
      const K = 1.05 * Math.max(...n);
      return kappa.map((k, c) => 0.8 * (0.7 * (1 - sigmoid(0.4 * (k - mean) / std)) + 0.3 * (Math.cos((Math.PI * n[c]) / K) + 1) / 2));
    };
    const mem = new KappaMemory({ numSamples: 6, dim: 2, numClasses: 3, source: 'momentum-encoder' });
    const ids = tf.tensor1d([0, 1, 2, 3, 4, 5], 'int32');
    await mem.update(ids, tf.tensor2d(feats), tf.tensor1d(labels, 'int32'));
    mem.endEpoch();
    close(await mem.margins().data(), margins(feats, labels), 1e-5, 'epoch 1');
    // The next epoch starts from zero: only its own features count.
    const feats2 = [[1, 0], [1, 0.2], [0, 1], [0.3, 1], [1, 1], [-1, 1]];
    await mem.update(ids, tf.tensor2d(feats2), tf.tensor1d(labels, 'int32'));
    mem.endEpoch();
    close(await mem.margins().data(), margins(feats2, labels), 1e-5, 'epoch 2 alone');
    const head = new MarginHead({ name: 'kappaface', numClasses: 3, dim: 2, numSamples: 6, kappaSource: 'momentum-encoder' });
    assert.equal(head.kappa?.source, 'momentum-encoder');
    head.dispose();
    tf.dispose([enc.w, enc.b]);
  });
});

describe('perturbation: σ from a differential-privacy budget', () => {
  it('classic Gaussian mechanism by hand; the analytic σ solves its δ equation and is smaller', () => {
    // σ = Δ·√(2 ln(1.25/δ))/ε: ε 0.5, δ 1e-5, Δ 1 → √(2·ln 125000)/0.5.
    close([gaussianMechanismSigma(0.5, 1e-5, 1)], [Math.sqrt(2 * Math.log(125000)) / 0.5], 1e-12, 'classic');
    close([gaussianMechanismSigma(0.5, 1e-5, 2)], [2 * Math.sqrt(2 * Math.log(125000)) / 0.5], 1e-12, 'scales with Δ');
    assert.throws(() => gaussianMechanismSigma(2, 1e-5, 1), /epsilon < 1.*analytic/);
    // Φ by Simpson's rule on the density (independent of the erfc used inside).
    const phi = (x: number) => {
      const a = -12; const n = 4000; const h = (x - a) / n;
      let s = 0;
      for (let k = 0; k <= n; k++) s += (k === 0 || k === n ? 1 : k % 2 ? 4 : 2) * Math.exp(-((a + k * h) ** 2) / 2);
      return (s * h) / 3 / Math.sqrt(2 * Math.PI);
    };
    for (const [eps, delta] of [[0.5, 1e-5], [2, 1e-6]]) {
      const s = gaussianMechanismSigma(eps, delta, 1, 'analytic');
      const d = phi(1 / (2 * s) - eps * s) - Math.exp(eps) * phi(-1 / (2 * s) - eps * s);
      assert.ok(Math.abs(d - delta) < 1e-3 * delta, `ε ${eps}: δ(σ) = ${d}, want ${delta}`);
      assert.ok(Math.abs(normalCdf(0.7) - phi(0.7)) < 1e-7);
    }
    assert.ok(gaussianMechanismSigma(0.5, 1e-5, 1, 'analytic') < gaussianMechanismSigma(0.5, 1e-5, 1));
  });

  it('the command takes σ or (ε, δ, Δ), not both, and reports the groups\' flip-rate gap', () => {
    assert.equal(sigmaFromOptions({ sigma: '0.2' }).sigma, 0.2);
    const dp = sigmaFromOptions({ epsilon: '0.5', delta: '1e-5', sensitivity: '1' });
    close([dp.sigma], [Math.sqrt(2 * Math.log(125000)) / 0.5], 1e-12, 'from ε, δ');
    assert.deepEqual(dp.privacy, { epsilon: 0.5, delta: 1e-5, sensitivity: 1, mechanism: 'classic' });
    assert.throws(() => sigmaFromOptions({ sigma: '1', epsilon: '0.5', delta: '1e-5' }), /either --sigma or --epsilon/);
    assert.throws(() => sigmaFromOptions({ epsilon: '0.5' }), /--delta must be a positive number/);
    assert.throws(() => sigmaFromOptions({ epsilon: '3', delta: '1e-5' }), /--mechanism analytic/);
    assert.deepEqual(flipRateGap([{ group: 'head', expectedFlipRate: 0.125 }, { group: 'mid', expectedFlipRate: 0.25 }, { group: 'tail', expectedFlipRate: 0.5 }]), { gap: 0.375, highest: 'tail', lowest: 'head' });
  });
});
