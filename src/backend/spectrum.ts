/**
 * The power spectrum of real frames, |rfft(frame zero-padded to n)|². Where the backend has
 * FFT kernels (cpu, webgpu, the native engine) this is `tf.spectral.rfft`; wasm has none (no
 * FFT, Complex or ComplexAbs kernel), and there it is the same DFT as two matmuls with cosine
 * and sine bases, which is also differentiable.
 */
import { tf } from './tf.js';

const bases = new Map<string, { cos: Float32Array; sin: Float32Array }>();

/** cos/sin DFT bases [L, n/2+1] for frames of length L zero-padded to n (host arrays, cached). */
function dftBases(L: number, n: number): { cos: Float32Array; sin: Float32Array } {
  const key = `${L}/${n}`;
  const hit = bases.get(key);
  if (hit) return hit;
  const K = n / 2 + 1;
  const cos = new Float32Array(L * K);
  const sin = new Float32Array(L * K);
  for (let t = 0; t < L; t++) {
    for (let k = 0; k < K; k++) {
      // (t·k) mod n keeps the angle small, so float64 cos/sin stay exact to the last bit.
      const a = (2 * Math.PI * ((t * k) % n)) / n;
      cos[t * K + k] = Math.cos(a);
      sin[t * K + k] = Math.sin(a);
    }
  }
  const b = { cos, sin };
  bases.set(key, b);
  return b;
}

function hasFft(): boolean {
  const backend = tf.getBackend();
  return ['FFT', 'Complex', 'ComplexAbs', 'Real', 'Imag'].every((k) => tf.getKernel(k, backend) !== undefined);
}

/**
 * |DFT|² of each row of `frames` [T, L] zero-padded to `fftLength` ≥ L: [T, fftLength/2 + 1].
 *
 * @example powerSpectrum(tf.ones([1, 4]), 4) // [[16, 0, 0]]
 */
export function powerSpectrum(frames: tf.Tensor2D, fftLength: number): tf.Tensor2D {
  if (!(frames instanceof tf.Tensor) || frames.rank !== 2) throw new Error(`powerSpectrum: 'frames' must be a tensor [T, L], got ${frames instanceof tf.Tensor ? `[${frames.shape}]` : typeof frames}`);
  const L = frames.shape[1];
  if (!Number.isInteger(fftLength) || fftLength < L || fftLength % 2 !== 0) {
    throw new Error(`powerSpectrum: 'fftLength' must be an even integer ≥ the frame length ${L}, got ${fftLength}`);
  }
  return tf.tidy(() => {
    if (hasFft()) {
      const padded = fftLength > L ? tf.pad(frames, [[0, 0], [0, fftLength - L]]) : frames;
      return tf.square(tf.abs(tf.spectral.rfft(padded))) as tf.Tensor2D;
    }
    const { cos, sin } = dftBases(L, fftLength);
    const K = fftLength / 2 + 1;
    const re = tf.matMul(frames, tf.tensor2d(cos, [L, K]));
    const im = tf.matMul(frames, tf.tensor2d(sin, [L, K]));
    return tf.add(tf.square(re), tf.square(im)) as tf.Tensor2D;
  });
}
