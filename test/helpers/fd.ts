/**
 * Finite-difference references for gradient tests. Every tfjs gradient in the suite is
 * checked against these central differences, never against the code's own output.
 */
import { tf } from '../../src/backend/tf.js';

/** Central-difference gradient of a scalar tfjs function at x0 (float32 evaluations). */
export function fdGrad(f: (x: tf.Tensor) => tf.Tensor, x0: tf.Tensor, h = 1e-2): Float64Array {
  const base = x0.dataSync();
  const out = new Float64Array(base.length);
  for (let i = 0; i < base.length; i++) {
    const plus = Float32Array.from(base); plus[i] += h;
    const minus = Float32Array.from(base); minus[i] -= h;
    const fp = tf.tidy(() => f(tf.tensor(plus, x0.shape)).dataSync()[0]);
    const fm = tf.tidy(() => f(tf.tensor(minus, x0.shape)).dataSync()[0]);
    out[i] = (fp - fm) / (2 * h);
  }
  return out;
}

/**
 * Hessian-vector product two ways: autodiff of ⟨∇f(x), v⟩, and the central difference
 * (∇f(x + hv) − ∇f(x − hv)) / 2h of the autodiff gradient.
 */
export function hvpBothWays(f: (x: tf.Tensor) => tf.Tensor, x0: tf.Tensor, v: tf.Tensor, h = 1e-2): { auto: Float32Array; fd: Float64Array } {
  let auto: Float32Array = new Float32Array(0);
  let fd: Float64Array = new Float64Array(0);
  tf.tidy(() => {
    const g = tf.grad((x: tf.Tensor) => f(x));
    auto = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(g(x), v)))(x0).dataSync() as Float32Array;
    const gp = g(tf.add(x0, tf.mul(v, h))).dataSync();
    const gm = g(tf.sub(x0, tf.mul(v, h))).dataSync();
    fd = new Float64Array(gp.length);
    for (let i = 0; i < gp.length; i++) fd[i] = (gp[i] - gm[i]) / (2 * h);
  });
  return { auto, fd };
}

/** max |a − b| / max(‖b‖∞, floor): a relative error that tolerates near-zero entries. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-3): number {
  if (a.length !== b.length) throw new Error(`relErr: lengths differ (${a.length} vs ${b.length})`);
  let num = 0;
  let den = floor;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

/** Deterministic uniform values in [lo, hi) (mulberry32), for reproducible test inputs. */
export function seededUniform(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out[i] = lo + (hi - lo) * u;
  }
  return out;
}
