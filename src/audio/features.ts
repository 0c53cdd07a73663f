/**
 * Spectral features of 16 kHz speech (docs/DESIGN.md §11): 25 ms periodic-Hann frames every 10 ms,
 * a 512-point power spectrum, triangular filters — on the mel scale m = 2595·log10(1 + f/700)
 * for log-mel filterbanks, linearly spaced for LFCC — log(x + 1e-6), and for LFCC a DCT-II to
 * 20 coefficients plus deltas. Every feature matrix is mean-normalised per utterance (each
 * dimension minus its mean over the utterance's frames).
 *
 * Ops return tensors [frames, dims]; nothing reads back.
 */
import { z } from 'zod';
import { tf } from '../backend/tf.js';
import { powerSpectrum } from '../backend/spectrum.js';
import { SAMPLE_RATE } from './decode.js';

/** Added inside the log so silent bins stay finite. */
export const LOG_FLOOR = 1e-6;

export const featureConfigSchema = z.object({
  kind: z.enum(['logmel', 'lfcc']).default('logmel'),
  sampleRate: z.number().int().min(1000).default(SAMPLE_RATE),
  /** Window length in samples (25 ms). */
  winLength: z.number().int().min(8).default(400),
  /** Hop in samples (10 ms). */
  hop: z.number().int().min(1).default(160),
  fftLength: z.number().int().min(8).default(512),
  /** Triangular filters: 80 mel filters for log-mel; for LFCC (when not given) 20 linear ones. */
  numFilters: z.number().int().min(1).optional(),
  /** LFCC cepstral coefficients kept after the DCT. */
  numCoeffs: z.number().int().min(1).default(20),
  /** LFCC delta order: 0 none, 1 Δ, 2 Δ and ΔΔ. */
  deltaOrder: z.number().int().min(0).max(2).default(2),
  fMin: z.number().min(0).default(0),
  /** Upper edge of the filters (default the Nyquist frequency). */
  fMax: z.number().positive().optional(),
}).refine((c) => c.fftLength >= c.winLength && c.fftLength % 2 === 0, { message: 'fftLength must be even and ≥ winLength' });
export type FeatureConfig = z.output<typeof featureConfigSchema>;

/** Fills in the defaults and checks a feature config; errors name the field. */
export function featureConfig(raw: z.input<typeof featureConfigSchema> = {}): FeatureConfig {
  const r = featureConfigSchema.safeParse(raw);
  if (!r.success) throw new Error(`feature config: ${z.prettifyError(r.error).replace(/\n/g, '; ')}`);
  return r.data;
}

/** Filters used by a config (80 mel, or 20 linear for LFCC, unless set). */
export function filterCount(cfg: FeatureConfig): number {
  return cfg.numFilters ?? (cfg.kind === 'logmel' ? 80 : 20);
}

/** Feature dimension per frame. @example featureDim(featureConfig({ kind: 'lfcc' })) // 60 */
export function featureDim(cfg: FeatureConfig): number {
  return cfg.kind === 'logmel' ? filterCount(cfg) : cfg.numCoeffs * (1 + cfg.deltaOrder);
}

/** Frames of a signal of n samples: 1 + ⌊(n − L)/hop⌋ (a signal shorter than a window gives one, zero-padded). */
export function frameCount(n: number, cfg: Pick<FeatureConfig, 'winLength' | 'hop'>): number {
  return n <= cfg.winLength ? 1 : 1 + Math.floor((n - cfg.winLength) / cfg.hop);
}

/** mel(f) = 2595·log10(1 + f/700). @example hzToMel(700) // 2595·log10 2 ≈ 781.17 */
export function hzToMel(f: number): number { return 2595 * Math.log10(1 + f / 700); }
/** The inverse of {@link hzToMel}. */
export function melToHz(m: number): number { return 700 * (10 ** (m / 2595) - 1); }

export interface FilterbankOptions {
  numFilters: number;
  fftLength: number;
  sampleRate: number;
  fMin?: number;
  fMax?: number;
}

/**
 * Triangular filters [fftLength/2 + 1, numFilters] (row-major, bins × filters) with edges at
 * the given numFilters + 2 frequencies: filter j rises from edge j to edge j+1 and falls to
 * edge j+2, evaluated at each bin's frequency k·sampleRate/fftLength.
 */
function triangles(edgesHz: number[], fftLength: number, sampleRate: number): Float32Array {
  const F = edgesHz.length - 2;
  const K = fftLength / 2 + 1;
  const out = new Float32Array(K * F);
  for (let k = 0; k < K; k++) {
    const f = (k * sampleRate) / fftLength;
    for (let j = 0; j < F; j++) {
      const [lo, mid, hi] = [edgesHz[j], edgesHz[j + 1], edgesHz[j + 2]];
      const w = Math.min((f - lo) / (mid - lo), (hi - f) / (hi - mid));
      out[k * F + j] = w > 0 ? w : 0;
    }
  }
  return out;
}

function checkFilterbank(o: FilterbankOptions, fn: string): Required<FilterbankOptions> {
  const { numFilters, fftLength, sampleRate, fMin = 0, fMax = sampleRate / 2 } = o;
  if (!Number.isInteger(numFilters) || numFilters < 1) throw new Error(`${fn}: 'numFilters' must be a positive integer, got ${numFilters}`);
  if (!Number.isInteger(fftLength) || fftLength < 2 || fftLength % 2) throw new Error(`${fn}: 'fftLength' must be an even integer ≥ 2, got ${fftLength}`);
  if (!(sampleRate > 0)) throw new Error(`${fn}: 'sampleRate' must be positive, got ${sampleRate}`);
  if (!(fMin >= 0 && fMax > fMin && fMax <= sampleRate / 2)) throw new Error(`${fn}: need 0 ≤ fMin < fMax ≤ sampleRate/2, got fMin ${fMin}, fMax ${fMax}`);
  return { numFilters, fftLength, sampleRate, fMin, fMax };
}

/**
 * Mel filterbank [fftLength/2 + 1, numFilters]: edges equally spaced in mel between fMin and fMax.
 *
 * @example melFilterbank({ numFilters: 80, fftLength: 512, sampleRate: 16000 }).length // 257·80
 */
export function melFilterbank(opts: FilterbankOptions): Float32Array {
  const o = checkFilterbank(opts, 'melFilterbank');
  const [a, b] = [hzToMel(o.fMin), hzToMel(o.fMax)];
  const edges = Array.from({ length: o.numFilters + 2 }, (_, i) => melToHz(a + ((b - a) * i) / (o.numFilters + 1)));
  return triangles(edges, o.fftLength, o.sampleRate);
}

/**
 * Linear filterbank [fftLength/2 + 1, numFilters]: edges equally spaced in Hz (LFCC).
 *
 * @example linearFilterbank({ numFilters: 20, fftLength: 512, sampleRate: 16000 })
 */
export function linearFilterbank(opts: FilterbankOptions): Float32Array {
  const o = checkFilterbank(opts, 'linearFilterbank');
  const edges = Array.from({ length: o.numFilters + 2 }, (_, i) => o.fMin + ((o.fMax - o.fMin) * i) / (o.numFilters + 1));
  return triangles(edges, o.fftLength, o.sampleRate);
}

/**
 * Orthonormal DCT-II as a matrix [n, k]: c[i, j] = √(2/n)·cos(π·j·(2i + 1)/(2n)), column 0 scaled by 1/√2.
 *
 * @example dctMatrix(20, 20) // x [T, 20] · it = cepstra [T, 20]
 */
export function dctMatrix(n: number, k: number): Float32Array {
  if (!Number.isInteger(n) || n < 1 || !Number.isInteger(k) || k < 1 || k > n) throw new Error(`dctMatrix: need integers 1 ≤ k ≤ n, got n ${n}, k ${k}`);
  const out = new Float32Array(n * k);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) out[i * k + j] = Math.sqrt(2 / n) * Math.cos((Math.PI * j * (2 * i + 1)) / (2 * n)) * (j === 0 ? Math.SQRT1_2 : 1);
  }
  return out;
}

/** Periodic Hann window of length L: ½ − ½·cos(2πn/L). */
export function hannWindow(L: number): Float32Array {
  return Float32Array.from({ length: L }, (_, n) => 0.5 - 0.5 * Math.cos((2 * Math.PI * n) / L));
}

function toSignal(samples: Float32Array | tf.Tensor, fn: string): tf.Tensor1D {
  if (samples instanceof Float32Array) {
    if (samples.length === 0) throw new Error(`${fn}: empty signal`);
    return tf.tensor1d(samples);
  }
  if (!(samples instanceof tf.Tensor) || samples.rank !== 1 || samples.size === 0) {
    throw new Error(`${fn}: 'samples' must be a non-empty Float32Array or tensor [N], got ${samples instanceof tf.Tensor ? `[${samples.shape}]` : typeof samples}`);
  }
  return tf.cast(samples, 'float32') as tf.Tensor1D;
}

/**
 * Windowed frames [T, winLength] of a signal: one gather with an index matrix (no gradient
 * to the waveform is ever needed), times the periodic Hann window.
 */
export function signalFrames(samples: Float32Array | tf.Tensor, cfg: Pick<FeatureConfig, 'winLength' | 'hop'>): tf.Tensor2D {
  return tf.tidy(() => {
    let x = toSignal(samples, 'signalFrames');
    const L = cfg.winLength;
    if (x.shape[0] < L) x = tf.pad(x, [[0, L - x.shape[0]]]);
    const T = frameCount(x.shape[0], cfg);
    const idx = new Int32Array(T * L);
    for (let t = 0; t < T; t++) for (let i = 0; i < L; i++) idx[t * L + i] = t * cfg.hop + i;
    const f = tf.gather(x, tf.tensor2d(idx, [T, L], 'int32'));
    return tf.mul(f, tf.tensor1d(hannWindow(L))) as tf.Tensor2D;
  });
}

/** |STFT|² [T, fftLength/2 + 1]. @example powerSpectrogram(pcm, featureConfig()) */
export function powerSpectrogram(samples: Float32Array | tf.Tensor, cfg: FeatureConfig): tf.Tensor2D {
  return tf.tidy(() => powerSpectrum(signalFrames(samples, cfg), cfg.fftLength));
}

/** x − mean over frames, per dimension. */
export function meanNormalize(x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.sub(x, tf.mean(x, 0, true)) as tf.Tensor2D);
}

/**
 * Regression deltas over ±N frames with the edges replicated:
 * d_t = Σ_{n=1..N} n·(c_{t+n} − c_{t−n}) / (2·Σ n²).
 *
 * @example deltas(cepstra) // same shape [T, D]
 */
export function deltas(x: tf.Tensor2D, N = 2): tf.Tensor2D {
  if (!Number.isInteger(N) || N < 1) throw new Error(`deltas: 'N' must be a positive integer, got ${N}`);
  return tf.tidy(() => {
    const T = x.shape[0];
    const first = tf.slice(x, [0, 0], [1, -1]);
    const last = tf.slice(x, [T - 1, 0], [1, -1]);
    const padded = tf.concat([...Array(N).fill(first), x, ...Array(N).fill(last)], 0);
    let acc: tf.Tensor = tf.zerosLike(x);
    for (let n = 1; n <= N; n++) {
      const ahead = tf.slice(padded, [N + n, 0], [T, -1]);
      const behind = tf.slice(padded, [N - n, 0], [T, -1]);
      acc = tf.add(acc, tf.mul(tf.sub(ahead, behind), n));
    }
    const denom = 2 * Array.from({ length: N }, (_, i) => (i + 1) ** 2).reduce((a, b) => a + b, 0);
    return tf.div(acc, denom) as tf.Tensor2D;
  });
}

function logEnergies(samples: Float32Array | tf.Tensor, cfg: FeatureConfig, bank: Float32Array): tf.Tensor2D {
  const K = cfg.fftLength / 2 + 1;
  const F = bank.length / K;
  return tf.tidy(() => tf.log(tf.add(tf.matMul(powerSpectrogram(samples, cfg), tf.tensor2d(bank, [K, F])), LOG_FLOOR)) as tf.Tensor2D);
}

function bankOptions(cfg: FeatureConfig): FilterbankOptions {
  return { numFilters: filterCount(cfg), fftLength: cfg.fftLength, sampleRate: cfg.sampleRate, fMin: cfg.fMin, fMax: cfg.fMax };
}

/**
 * Log-mel filterbank energies [T, numFilters] (80 by default), mean-normalised.
 *
 * @example logMel(pcm).shape // [1 + ⌊(n − 400)/160⌋, 80]
 */
export function logMel(samples: Float32Array | tf.Tensor, raw: z.input<typeof featureConfigSchema> = {}): tf.Tensor2D {
  const cfg = featureConfig({ ...raw, kind: 'logmel' });
  return tf.tidy(() => meanNormalize(logEnergies(samples, cfg, melFilterbank(bankOptions(cfg)))));
}

/**
 * Linear-frequency cepstral coefficients [T, numCoeffs·(1 + deltaOrder)]: log linear-filter
 * energies, DCT-II, the first numCoeffs, then Δ (and ΔΔ), mean-normalised.
 *
 * @example lfcc(pcm).shape // [T, 60]
 */
export function lfcc(samples: Float32Array | tf.Tensor, raw: z.input<typeof featureConfigSchema> = {}): tf.Tensor2D {
  const cfg = featureConfig({ ...raw, kind: 'lfcc' });
  const F = filterCount(cfg);
  if (cfg.numCoeffs > F) throw new Error(`lfcc: 'numCoeffs' ${cfg.numCoeffs} exceeds the ${F} filters`);
  return tf.tidy(() => {
    const c = tf.matMul(logEnergies(samples, cfg, linearFilterbank(bankOptions(cfg))), tf.tensor2d(dctMatrix(F, cfg.numCoeffs), [F, cfg.numCoeffs])) as tf.Tensor2D;
    const parts: tf.Tensor2D[] = [c];
    if (cfg.deltaOrder >= 1) parts.push(deltas(c));
    if (cfg.deltaOrder >= 2) parts.push(deltas(parts[1]));
    return meanNormalize(tf.concat(parts, 1) as tf.Tensor2D);
  });
}

/** The features a config names. @example audioFeatures(pcm, featureConfig({ kind: 'lfcc' })) */
export function audioFeatures(samples: Float32Array | tf.Tensor, cfg: FeatureConfig): tf.Tensor2D {
  return cfg.kind === 'logmel' ? logMel(samples, cfg) : lfcc(samples, cfg);
}
