import assert from 'node:assert/strict';
import { tf } from '../src/backend/tf.js';
import * as ops from '../src/backend/safeOps.js';
import { fdGrad, hvpBothWays, relErr, seededUniform } from './helpers/fd.js';
import { tidyData } from './helpers/read.js';

type Op = (x: tf.Tensor) => tf.Tensor;

/** Each op on inputs where it is smooth, with its analytic first and second derivative when elementwise. */
const elementwise: { name: string; op: Op; lo: number; hi: number; d1: (x: number) => number; d2: (x: number) => number }[] = [
  { name: 'exp', op: ops.exp, lo: -2, hi: 2, d1: Math.exp, d2: Math.exp },
  {
    name: 'sigmoid', op: ops.sigmoid, lo: -3, hi: 3,
    d1: (x) => { const s = 1 / (1 + Math.exp(-x)); return s * (1 - s); },
    d2: (x) => { const s = 1 / (1 + Math.exp(-x)); return s * (1 - s) * (1 - 2 * s); },
  },
  {
    name: 'softplus', op: ops.softplus, lo: -3, hi: 3,
    d1: (x) => 1 / (1 + Math.exp(-x)),
    d2: (x) => { const s = 1 / (1 + Math.exp(-x)); return s * (1 - s); },
  },
  {
    name: 'tanh', op: ops.tanh, lo: -2, hi: 2,
    d1: (x) => 1 - Math.tanh(x) ** 2,
    d2: (x) => -2 * Math.tanh(x) * (1 - Math.tanh(x) ** 2),
  },
  {
    name: 'acos', op: ops.acos, lo: -0.8, hi: 0.8,
    d1: (x) => -1 / Math.sqrt(1 - x * x),
    d2: (x) => -x / (1 - x * x) ** 1.5,
  },
  {
    name: 'gelu', op: ops.gelu, lo: -2, hi: 2,
    // d/dx xΦ(x) = Φ(x) + xφ(x); second derivative φ(x)(2 − x²)
    d1: (x) => 0.5 * (1 + erf(x / Math.SQRT2)) + x * phi(x),
    d2: (x) => phi(x) * (2 - x * x),
  },
  {
    name: 'quickGelu', op: ops.quickGelu, lo: -2, hi: 2,
    d1: (x) => { const s = 1 / (1 + Math.exp(-1.702 * x)); return s + 1.702 * x * s * (1 - s); },
    d2: (x) => {
      const a = 1.702; const s = 1 / (1 + Math.exp(-a * x)); const ds = a * s * (1 - s);
      return 2 * ds + x * a * ds * (1 - 2 * s);
    },
  },
  { name: 'powInt(3)', op: (x) => ops.powInt(x, 3), lo: -2, hi: 2, d1: (x) => 3 * x * x, d2: (x) => 6 * x },
];

function phi(x: number): number { return Math.exp(-x * x / 2) / Math.sqrt(2 * Math.PI); }
/** erf by its Maclaurin series (|x| ≤ 2 here, so 40 terms are far past float64 precision). */
function erf(x: number): number {
  let sum = 0; let term = x;
  for (let n = 0; n < 40; n++) {
    sum += term / (2 * n + 1);
    term *= -x * x / (n + 1);
  }
  return 2 / Math.sqrt(Math.PI) * sum;
}

describe('second-order-safe ops', () => {
  for (const c of elementwise) {
    it(`${c.name}: first and second derivative match the analytic ones and finite differences`, async () => {
      const xv = seededUniform(6, 11, c.lo, c.hi);
      const x = tf.tensor1d(xv);
      const f = (t: tf.Tensor) => tf.sum(c.op(t));
      const g1 = await tidyData(() => tf.grad(f)(x));
      const g2 = await tidyData(() => tf.grad((t: tf.Tensor) => tf.sum(tf.grad(f)(t)))(x));
      const fd1 = await fdGrad(f, x, 1e-2);
      const e1 = Array.from(xv, c.d1);
      const e2 = Array.from(xv, c.d2);
      assert.ok(relErr(g1, e1) < 1e-4, `${c.name}' ${g1} vs ${e1}`);
      assert.ok(relErr(fd1, e1) < 1e-2, `${c.name}' finite difference ${fd1} vs ${e1}`);
      assert.ok(relErr(g2, e2) < 1e-3, `${c.name}'' ${g2} vs ${e2}`);
      const { auto, fd } = await hvpBothWays(f, x, tf.onesLike(x), 1e-2);
      assert.ok(relErr(auto, fd) < 2e-2, `${c.name}'' autodiff ${auto} vs finite difference ${fd}`);
      x.dispose();
    });
  }

  const vectorOps: { name: string; f: (x: tf.Tensor, w: tf.Tensor) => tf.Tensor }[] = [
    { name: 'logSumExp', f: (x, w) => tf.sum(tf.mul(ops.logSumExp(x, 1), tf.sum(w, 1))) },
    { name: 'logSoftmax', f: (x, w) => tf.sum(tf.mul(ops.logSoftmax(x, 1), w)) },
    { name: 'softmax', f: (x, w) => tf.sum(tf.mul(ops.softmax(x, 1), w)) },
    { name: 'maxReduce', f: (x, w) => tf.sum(tf.mul(tf.square(ops.maxReduce(x, 1)), tf.sum(w, 1))) },
    {
      name: 'layerNorm',
      f: (x, w) => tf.sum(tf.mul(ops.layerNorm(x, tf.tensor1d([1.5, -0.5, 1, 2]), tf.tensor1d([0.1, 0, -0.2, 0.3])), w)),
    },
    { name: 'l2Normalize', f: (x, w) => tf.sum(tf.mul(ops.l2Normalize(x, 1), w)) },
    {
      name: 'softmaxCrossEntropy',
      f: (x, w) => tf.sum(tf.mul(ops.softmaxCrossEntropy(x, tf.tensor1d([0, 3, 2], 'int32')), tf.sum(w, 1))),
    },
  ];

  for (const c of vectorOps) {
    it(`${c.name}: gradient and Hessian-vector product match finite differences`, async () => {
      const x = tf.tensor2d(seededUniform(12, 21, -1.5, 1.5), [3, 4]);
      const w = tf.tensor2d(seededUniform(12, 22, -1, 1), [3, 4]);
      const v = tf.tensor2d(seededUniform(12, 23, -1, 1), [3, 4]);
      const f = (t: tf.Tensor) => c.f(t, w);
      const g = await tidyData(() => tf.grad(f)(x));
      const fd = await fdGrad(f, x, 1e-2);
      assert.ok(relErr(g, fd) < 1e-2, `${c.name} gradient ${g} vs ${fd}`);
      const h = await hvpBothWays(f, x, v, 1e-2);
      assert.ok(relErr(h.auto, h.fd) < 2e-2, `${c.name} HVP ${h.auto} vs ${h.fd}`);
      tf.dispose([x, w, v]);
    });
  }

  it('a clamp (clipByValue) differentiates twice: the second derivative of clip(x)² is 2 inside, 0 outside', async () => {
    const x = tf.tensor1d([-2, 0.3, 0.5, 3]);
    const f = (t: tf.Tensor) => tf.sum(tf.square(tf.clipByValue(t, -1, 1)));
    const g2 = await tidyData(() => tf.grad((t: tf.Tensor) => tf.sum(tf.grad(f)(t)))(x));
    assert.deepEqual(Array.from(g2), [0, 2, 2, 0]);
    x.dispose();
  });

  it('forward values match hand calculations', async () => {
    const lse = ops.logSumExp(tf.tensor1d([0, Math.log(3)]));
    assert.ok(Math.abs((await lse.data())[0] - Math.log(4)) < 1e-6);
    const ce = ops.softmaxCrossEntropy(tf.tensor2d([[0, 0], [Math.log(3), 0]]), tf.tensor1d([1, 0], 'int32'));
    const ced = await ce.data();
    assert.ok(Math.abs(ced[0] - Math.log(2)) < 1e-6);
    assert.ok(Math.abs(ced[1] - Math.log(4 / 3)) < 1e-6);
    const big = ops.logSumExp(tf.tensor1d([1000, 1000]));
    assert.ok(Math.abs((await big.data())[0] - (1000 + Math.log(2))) < 1e-3, 'no overflow at large logits');
    const ln = await ops.layerNorm(tf.tensor2d([[1, 2, 3, 4]]), tf.ones([4]), tf.zeros([4]), 0).data();
    const sd = Math.sqrt(1.25);
    assert.deepEqual(Array.from(ln, (v) => Math.round(v * 1e5) / 1e5), [-1.5, -0.5, 0.5, 1.5].map((v) => Math.round(v / sd * 1e5) / 1e5));
    tf.dispose([lse, ce, big]);
  });

  it('acosViaAtan2 (acos on webgpu) is arccos within 1e-6 rad on [−1, 1], exact at the ends, NaN outside', async () => {
    const n = 2001;
    const xs = Array.from({ length: n }, (_, i) => Math.fround(-1 + (2 * i) / (n - 1)));
    const got = await tidyData(() => ops.acosViaAtan2(tf.tensor1d([...xs, 1.5, -1.5])));
    let worst = 0;
    xs.forEach((x, i) => { worst = Math.max(worst, Math.abs(got[i] - Math.acos(x))); });
    assert.ok(worst < 1e-6, `max |acosViaAtan2 − Math.acos| = ${worst}`);
    assert.equal(got[0], Math.fround(Math.PI));
    assert.equal(got[n - 1], 0);
    assert.ok(Number.isNaN(got[n]) && Number.isNaN(got[n + 1]));
  });

  it('tf.exp, by contrast, loses its second derivative (the reason these ops exist)', async () => {
    const x = tf.tensor1d([0.3]);
    let broken = false;
    try {
      const g2 = (await tf.grad((t: tf.Tensor) => tf.sum(tf.grad((u: tf.Tensor) => tf.sum(tf.exp(u)))(t)))(x).data())[0];
      broken = Math.abs(g2 - Math.exp(0.3)) > 1e-3;
    } catch {
      broken = true;
    }
    assert.ok(broken, 'if tfjs fixed exp second order, this guard can go');
    x.dispose();
  });

  it('rejects bad arguments with the argument named', () => {
    assert.throws(() => ops.softmaxCrossEntropy(tf.zeros([2, 3]), tf.tensor1d([0], 'int32')), /'labels' must be \[2\]/);
    assert.throws(() => ops.softmaxCrossEntropy(tf.zeros([2, 3]), tf.tensor1d([0, 1])), /'labels' must be int32/);
    assert.throws(() => ops.layerNorm(tf.zeros([2, 3]), tf.ones([2]), tf.zeros([3])), /'gamma' and 'beta'/);
    assert.throws(() => ops.powInt(tf.zeros([2]), 1.5), /'n' must be an integer/);
    assert.throws(() => ops.logSumExp(tf.zeros([2]), 3), /axis 3 is out of range/);
  });
});

// ---- the bilevel check: a float64 reference written by hand ----

interface Mlp { W1: Float64Array; b1: Float64Array; W2: Float64Array; b2: Float64Array }
const DIN = 3; const H = 4; const C = 3;

/** Forward of tanh-MLP + softmax CE per sample, and (optionally) ∂(Σ wᵢℓᵢ)/∂θ by hand-written backprop. */
function mlpLossAndGrad(p: Mlp, X: Float64Array, y: number[], w: Float64Array | null): { losses: number[]; grad?: Mlp } {
  const B = y.length;
  const losses: number[] = [];
  const grad: Mlp | undefined = w ? { W1: new Float64Array(DIN * H), b1: new Float64Array(H), W2: new Float64Array(H * C), b2: new Float64Array(C) } : undefined;
  for (let n = 0; n < B; n++) {
    const h = new Float64Array(H);
    for (let j = 0; j < H; j++) {
      let s = p.b1[j];
      for (let i = 0; i < DIN; i++) s += X[n * DIN + i] * p.W1[i * H + j];
      h[j] = Math.tanh(s);
    }
    const z = new Float64Array(C);
    for (let k = 0; k < C; k++) {
      let s = p.b2[k];
      for (let j = 0; j < H; j++) s += h[j] * p.W2[j * C + k];
      z[k] = s;
    }
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0));
    losses.push(lse - z[y[n]]);
    if (grad && w) {
      const dz = new Float64Array(C);
      for (let k = 0; k < C; k++) dz[k] = w[n] * (Math.exp(z[k] - lse) - (k === y[n] ? 1 : 0));
      const dh = new Float64Array(H);
      for (let j = 0; j < H; j++) {
        for (let k = 0; k < C; k++) { grad.W2[j * C + k] += h[j] * dz[k]; dh[j] += p.W2[j * C + k] * dz[k]; }
      }
      for (let k = 0; k < C; k++) grad.b2[k] += dz[k];
      for (let j = 0; j < H; j++) {
        const da = dh[j] * (1 - h[j] * h[j]);
        grad.b1[j] += da;
        for (let i = 0; i < DIN; i++) grad.W1[i * H + j] += X[n * DIN + i] * da;
      }
    }
  }
  return { losses, grad };
}

function metaLossRef(p: Mlp, eps: Float64Array, alpha: number, Xt: Float64Array, yt: number[], Xm: Float64Array, ym: number[]): number {
  const { grad } = mlpLossAndGrad(p, Xt, yt, eps);
  const step = (a: Float64Array, g: Float64Array) => a.map((v, i) => v - alpha * g[i]);
  const q: Mlp = { W1: step(p.W1, grad!.W1), b1: step(p.b1, grad!.b1), W2: step(p.W2, grad!.W2), b2: step(p.b2, grad!.b2) };
  const { losses } = mlpLossAndGrad(q, Xm, ym, null);
  return losses.reduce((a, v) => a + v, 0) / losses.length;
}

describe('bilevel hypergradient through one virtual SGD step', () => {
  it('∂L_meta/∂ε of a 2-layer MLP with softmax CE matches float64 finite differences (rel. err ≤ 1e-3)', async () => {
    const f64 = (a: Float32Array) => Float64Array.from(a);
    const p: Mlp = {
      W1: f64(seededUniform(DIN * H, 1, -0.8, 0.8)), b1: f64(seededUniform(H, 2, -0.1, 0.1)),
      W2: f64(seededUniform(H * C, 3, -0.8, 0.8)), b2: f64(seededUniform(C, 4, -0.1, 0.1)),
    };
    const Bt = 6; const Bm = 5; const alpha = 0.5;
    const Xt = f64(seededUniform(Bt * DIN, 5, -1, 1)); const yt = [0, 1, 2, 1, 0, 2];
    const Xm = f64(seededUniform(Bm * DIN, 6, -1, 1)); const ym = [2, 0, 1, 1, 0];
    const eps0 = Float64Array.from([0.2, 0.1, 0.25, 0.15, 0.2, 0.1]);

    const hStep = 1e-5;
    const ref = eps0.map((_, i) => {
      const ep = Float64Array.from(eps0); ep[i] += hStep;
      const em = Float64Array.from(eps0); em[i] -= hStep;
      return (metaLossRef(p, ep, alpha, Xt, yt, Xm, ym) - metaLossRef(p, em, alpha, Xt, yt, Xm, ym)) / (2 * hStep);
    });

    const before = tf.memory().numTensors;
    const got = await tidyData(() => {
      const W1 = tf.tensor2d(Float32Array.from(p.W1), [DIN, H]); const b1 = tf.tensor1d(Float32Array.from(p.b1));
      const W2 = tf.tensor2d(Float32Array.from(p.W2), [H, C]); const b2 = tf.tensor1d(Float32Array.from(p.b2));
      const xt = tf.tensor2d(Float32Array.from(Xt), [Bt, DIN]); const lt = tf.tensor1d(yt, 'int32');
      const xm = tf.tensor2d(Float32Array.from(Xm), [Bm, DIN]); const lm = tf.tensor1d(ym, 'int32');
      const forward = (ps: tf.Tensor[], x: tf.Tensor, l: tf.Tensor) => {
        const h = ops.tanh(tf.add(tf.matMul(x as tf.Tensor2D, ps[0] as tf.Tensor2D), ps[1]));
        return ops.softmaxCrossEntropy(tf.add(tf.matMul(h as tf.Tensor2D, ps[2] as tf.Tensor2D), ps[3]), l);
      };
      const metaLoss = (eps: tf.Tensor) => {
        const theta = [W1, b1, W2, b2];
        const grads = tf.grads((...ps: tf.Tensor[]) => tf.sum(tf.mul(forward(ps, xt, lt), eps)))(theta);
        const thetaPrime = theta.map((t, i) => tf.sub(t, tf.mul(grads[i], alpha)));
        return tf.mean(forward(thetaPrime, xm, lm));
      };
      return tf.grad(metaLoss)(tf.tensor1d(Float32Array.from(eps0)));
    });
    assert.equal(tf.memory().numTensors, before, 'no tensors leaked');
    const err = relErr(got, ref, 1e-6);
    assert.ok(err <= 1e-3, `hypergradient ${Array.from(got)} vs finite differences ${Array.from(ref)} (rel err ${err})`);
    assert.ok(Math.max(...ref.map(Math.abs)) > 1e-3, 'the hypergradient is not trivially zero');
  });
});
