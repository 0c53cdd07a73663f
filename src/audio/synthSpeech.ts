/**
 * A source-filter speech synthesiser for tests and examples: a glottal pulse train (pitch
 * with jitter and a slow intonation contour, a spectral-tilt low-pass, aspiration noise)
 * through a cascade of formant resonators (Klatt's two-pole sections), driven by sequences
 * of vowels with fricative bursts and pauses.
 *
 * A speaker is a fixed voice: mean pitch, vocal-tract length (a factor on every formant), a
 * speaker-specific fourth resonance, speaking rate, breathiness and tilt. An utterance draws
 * different words (vowel sequences from a shared vocabulary) and small session changes of
 * pitch, rate and level. Spoofs resynthesise the same words in the same voice with a vocoder's
 * artefacts: a buzzy excitation (no jitter, no aspiration, a flat spectrum) or a smoothed,
 * band-limited envelope.
 */
import { SAMPLE_RATE } from './decode.js';

/** Vowel formants F1–F3 in Hz (an adult male's, Peterson & Barney), scaled per speaker. */
const VOWELS: readonly [number, number, number][] = [
  [270, 2290, 3010], [390, 1990, 2550], [530, 1840, 2480], [660, 1720, 2410],
  [730, 1090, 2440], [570, 840, 2410], [440, 1020, 2240], [300, 870, 2240],
];
const BANDWIDTHS = [70, 100, 140, 200];

export interface SpeakerVoice {
  /** Mean fundamental frequency in Hz. */
  f0: number;
  /** Vocal-tract factor on every formant (shorter tract: higher formants). */
  tract: number;
  /** The speaker's own fourth resonance in Hz. */
  f4: number;
  /** Vowels per second. */
  rate: number;
  /** Aspiration noise relative to the pulses. */
  breath: number;
  /** Pole of the spectral-tilt low-pass on the pulses, in [0, 1). */
  tilt: number;
}

/** How a spoof differs from bona fide speech of the same words and voice. */
export type SpoofKind = 'none' | 'excitation' | 'smoothing';

/**
 * A random voice. @example const v = drawVoice(mulberry32(3));
 */
export function drawVoice(rand: () => number): SpeakerVoice {
  const female = rand() < 0.5;
  return {
    f0: female ? 170 + 70 * rand() : 90 + 60 * rand(),
    tract: (female ? 1.12 : 0.95) + 0.12 * rand(),
    f4: 3200 + 900 * rand(),
    rate: 3 + 3 * rand(),
    breath: 0.02 + 0.1 * rand(),
    tilt: 0.5 + 0.4 * rand(),
  };
}

export interface UtteranceOptions {
  /** Length in seconds (default 1.5). */
  seconds?: number;
  sampleRate?: number;
  /** Vowel sequences to say (indices into the vowel table); drawn from `rand` when absent. */
  words?: number[][];
  spoof?: SpoofKind;
}

/** One word: 1–3 vowels. */
export function drawWord(rand: () => number): number[] {
  return Array.from({ length: 1 + Math.floor(rand() * 3) }, () => Math.floor(rand() * VOWELS.length));
}

interface Segment { kind: 'vowel' | 'fricative' | 'pause'; vowel: number; samples: number }

function plan(voice: SpeakerVoice, words: number[][], total: number, sr: number, rate: number, rand: () => number): Segment[] {
  const segs: Segment[] = [];
  let used = 0;
  let w = 0;
  while (used < total) {
    const word = words[w % words.length];
    w++;
    if (rand() < 0.4) segs.push({ kind: 'fricative', vowel: word[0], samples: Math.round(sr * (0.04 + 0.04 * rand())) });
    for (const v of word) segs.push({ kind: 'vowel', vowel: v, samples: Math.round((sr / rate) * (0.7 + 0.6 * rand())) });
    segs.push({ kind: 'pause', vowel: word[word.length - 1], samples: Math.round(sr * (0.03 + 0.07 * rand())) });
    used = segs.reduce((a, s) => a + s.samples, 0);
  }
  return segs;
}

/**
 * One utterance of `voice` as float PCM in [−1, 1] (peak 0.5).
 *
 * @example const pcm = synthesizeUtterance(voice, mulberry32(7), { seconds: 1 });
 */
export function synthesizeUtterance(voice: SpeakerVoice, rand: () => number, opts: UtteranceOptions = {}): Float32Array {
  const { seconds = 1.5, sampleRate: sr = SAMPLE_RATE, spoof = 'none' } = opts;
  if (!(seconds > 0)) throw new Error(`synthesizeUtterance: 'seconds' must be positive, got ${seconds}`);
  const n = Math.round(seconds * sr);
  const words = opts.words ?? Array.from({ length: 4 }, () => drawWord(rand));
  // Session variation: pitch ±6 %, rate ±10 %, level.
  const f0 = voice.f0 * (0.94 + 0.12 * rand());
  const rate = voice.rate * (0.9 + 0.2 * rand());
  const segs = plan(voice, words, n, sr, rate, rand);

  // Per-sample formant targets, then a one-pole glide between segments (coarticulation);
  // the vocoder spoof glides far more slowly (an over-smoothed envelope).
  const glide = spoof === 'smoothing' ? 0.9995 : 0.995;
  const formants = [new Float32Array(n), new Float32Array(n), new Float32Array(n)];
  const voiced = new Float32Array(n);
  const fric = new Float32Array(n);
  let i = 0;
  const cur = VOWELS[segs[0].vowel].map((f) => f * voice.tract);
  for (const s of segs) {
    const target = VOWELS[s.vowel].map((f) => f * voice.tract);
    for (let k = 0; k < s.samples && i < n; k++, i++) {
      for (let j = 0; j < 3; j++) { cur[j] = glide * cur[j] + (1 - glide) * target[j]; formants[j][i] = cur[j]; }
      const edge = Math.min(1, k / 160, (s.samples - k) / 160);
      voiced[i] = s.kind === 'vowel' ? edge : 0;
      fric[i] = s.kind === 'fricative' ? edge : 0;
    }
  }

  // Excitation: pulses at the pitch period (jittered, with a slow intonation contour).
  const src = new Float32Array(n);
  const buzz = spoof === 'excitation';
  let phase = 0;
  let period = sr / f0;
  let lp = 0;
  const contourRate = 0.5 + rand();
  const contourPhase = 2 * Math.PI * rand();
  for (let t = 0; t < n; t++) {
    phase += 1;
    let pulse = 0;
    if (phase >= period) {
      phase -= period;
      pulse = 1;
      const intonation = 1 + 0.08 * Math.sin(2 * Math.PI * contourRate * (t / sr) + contourPhase);
      period = sr / (f0 * intonation * (buzz ? 1 : 1 + 0.02 * (rand() - 0.5)));
    }
    if (buzz) {
      // A vocoder's sawtooth: flat harmonics, no tilt, no aspiration.
      src[t] = voiced[t] * ((phase / period) - 0.5) * 0.5;
    } else {
      lp = voice.tilt * lp + (1 - voice.tilt) * pulse * 8;
      src[t] = voiced[t] * (lp + voice.breath * (rand() - 0.5));
    }
  }

  // Formant cascade (Klatt resonators), coefficients refreshed every 40 samples.
  const out = new Float32Array(n);
  const state = [[0, 0], [0, 0], [0, 0], [0, 0]];
  const coef = [[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]];
  const T = 1 / sr;
  const setCoef = (j: number, F: number, B: number): void => {
    const C = -Math.exp(-2 * Math.PI * B * T);
    const Bc = 2 * Math.exp(-Math.PI * B * T) * Math.cos(2 * Math.PI * F * T);
    coef[j] = [1 - Bc - C, Bc, C];
  };
  let noiseLp = 0;
  for (let t = 0; t < n; t++) {
    if (t % 40 === 0) {
      for (let j = 0; j < 3; j++) setCoef(j, formants[j][t], BANDWIDTHS[j]);
      setCoef(3, voice.f4 * (spoof === 'smoothing' ? 0.85 : 1), BANDWIDTHS[3]);
    }
    let x = src[t];
    for (let j = 0; j < 4; j++) {
      const [a, b, c] = coef[j];
      const y = a * x + b * state[j][0] + c * state[j][1];
      state[j][1] = state[j][0];
      state[j][0] = y;
      x = y;
    }
    // Fricatives: high-passed noise (first difference of white noise).
    const w = rand() - 0.5;
    const hp = w - noiseLp;
    noiseLp = w;
    out[t] = x + fric[t] * 0.6 * hp;
  }
  if (spoof === 'smoothing') {
    // Band-limiting of a low-rate vocoder: a moving average over 4 samples (a null at 4 kHz).
    const copy = out.slice();
    for (let t = 3; t < n; t++) out[t] = 0.25 * (copy[t] + copy[t - 1] + copy[t - 2] + copy[t - 3]);
  }
  let peak = 0;
  for (let t = 0; t < n; t++) peak = Math.max(peak, Math.abs(out[t]));
  const gain = (0.5 * (0.7 + 0.3 * rand())) / (peak || 1);
  for (let t = 0; t < n; t++) out[t] = out[t] * gain + 1e-3 * (rand() - 0.5);
  return out;
}

