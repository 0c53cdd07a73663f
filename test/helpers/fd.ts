/**
 * Finite-difference references for gradient tests. Every tfjs gradient in the suite is
 * checked against these central differences, never against the code's own output.
 */
import { tf } from '../../src/backend/tf.js';
import { tidyData } from './read.js';

/** Central-difference gradient of a scalar tfjs function at x0 (float32 evaluations). */
export async function fdGrad(f: (x: tf.Tensor) => tf.Tensor, x0: tf.Tensor, h = 1e-2): Promise<Float64Array> {
  const base = await x0.data();
  const out = new Float64Array(base.length);
  for (let i = 0; i < base.length; i++) {
    const plus = Float32Array.from(base); plus[i] += h;
    const minus = Float32Array.from(base); minus[i] -= h;
    const fp = (await tidyData(() => f(tf.tensor(plus, x0.shape))))[0];
    const fm = (await tidyData(() => f(tf.tensor(minus, x0.shape))))[0];
    out[i] = (fp - fm) / (2 * h);
  }
  return out;
}

/**
 * Hessian-vector product two ways: autodiff of ⟨∇f(x), v⟩, and the central difference
 * (∇f(x + hv) − ∇f(x − hv)) / 2h of the autodiff gradient.
 */
export async function hvpBothWays(f: (x: tf.Tensor) => tf.Tensor, x0: tf.Tensor, v: tf.Tensor, h = 1e-2): Promise<{ auto: Float32Array; fd: Float64Array }> {
  const g = tf.grad((x: tf.Tensor) => f(x));
  const auto = await tidyData(() => tf.grad((x: tf.Tensor) => tf.sum(tf.mul(g(x), v)))(x0)) as Float32Array;
  const gp = await tidyData(() => g(tf.add(x0, tf.mul(v, h))));
  const gm = await tidyData(() => g(tf.sub(x0, tf.mul(v, h))));
  const fd = new Float64Array(gp.length);
  for (let i = 0; i < gp.length; i++) fd[i] = (gp[i] - gm[i]) / (2 * h);
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
