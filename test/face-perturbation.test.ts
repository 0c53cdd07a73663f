import assert from 'node:assert/strict';
import { tf } from '../src/backend/tf.js';
import { fitLogisticProbe, perturbationByGroup } from '../src/face/perturbation.js';
import { mulberry32 } from '../src/face/synthIdentities.js';

describe('face: analyze perturbation (probe margins, flip rates)', () => {
  const rand = mulberry32(11);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());

  it('expected flip rate per group matches a Monte Carlo of Gaussian noise on w; labels other than ±1 are refused', async () => {
    const n = 60;
    const d = 5;
    const X = Float64Array.from({ length: n * d }, gauss);
    const y = Array.from({ length: n }, () => (rand() < 0.5 ? 1 : -1));
    const groups = Array.from({ length: n }, (_, i) => (i < 20 ? 'a' : 'b'));
    const w0 = Float64Array.from({ length: d }, gauss);
    const nw = Math.hypot(...w0);
    const w = w0.map((v) => v / nw);
    const sigma = 0.3;
    const before = tf.memory().numTensors;
    const r = await perturbationByGroup(w, X, n, d, y, groups, sigma);
    assert.equal(tf.memory().numTensors, before);
    const trials = 6000;
    const flips = [0, 0];
    const dot = (v: ArrayLike<number>, i: number) => { let s = 0; for (let k = 0; k < d; k++) s += v[k] * X[i * d + k]; return s; };
    for (let t = 0; t < trials; t++) {
      const wn = w.map((v) => v + sigma * gauss());
      for (let i = 0; i < n; i++) if (Math.sign(dot(wn, i)) !== Math.sign(dot(w, i))) flips[i < 20 ? 0 : 1]++;
    }
    const mc = [flips[0] / (trials * 20), flips[1] / (trials * 40)];
    // Binomial sd of the MC mean is below 0.5/√(6000·20) ≈ 0.0015; allow 0.006.
    assert.ok(Math.abs(r.groups[0].expectedFlipRate - mc[0]) < 0.006, `group a: Φ ${r.groups[0].expectedFlipRate} vs MC ${mc[0]}`);
    assert.ok(Math.abs(r.groups[1].expectedFlipRate - mc[1]) < 0.006, `group b: Φ ${r.groups[1].expectedFlipRate} vs MC ${mc[1]}`);
    // α by hand for example 0.
    const a0 = (y[0] * dot(w, 0)) / Math.hypot(...X.subarray(0, d));
    assert.ok(Math.abs(r.margins[0] - a0) < 1e-5);
    await assert.rejects(() => perturbationByGroup(w, X, n, d, y.map((v, i) => (i === 3 ? 0 : v)), groups, sigma), /perturbationByGroup: 'y'\[3\] = 0; labels must be −1 or \+1/);
    await assert.rejects(() => perturbationByGroup(w, X, n, d, y, groups.slice(1), sigma), /perturbationByGroup: 'groups' has 59 entries, expected 60/);
  });

  it('the logistic probe separates linearly separable data and has unit norm', async () => {
    const n = 80;
    const d = 4;
    const truth = [0.6, -0.8, 0, 0];
    const X = Float64Array.from({ length: n * d }, gauss);
    const y = Array.from({ length: n }, (_, i) => (truth.reduce((s, t, k) => s + t * X[i * d + k], 0) >= 0 ? 1 : -1));
    const w = fitLogisticProbe(X, n, d, y, { iterations: 600, l2: 0 });
    assert.ok(Math.abs(Math.hypot(...w) - 1) < 1e-9);
    const cos = w[0] * truth[0] + w[1] * truth[1];
    assert.ok(cos > 0.95, `probe direction cos ${cos}`);
    assert.throws(() => fitLogisticProbe(X, n, d, y.map(() => 1)), /need both classes/);
  });
});
