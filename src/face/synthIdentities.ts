/**
 * The synthetic open-set identity benchmark: small RGB images of many "identities", each a
 * fixed combination of generative attributes (background and skin colours, a stripe pattern,
 * the layout and colours of face-like blobs), drawn with intra-class variation (pose, scale,
 * shift, colour jitter, pixel noise, an occluding patch). Training identities have long-tailed
 * counts; verification identities are never seen in training and are paired in LFW's
 * pairs.txt format.
 *
 * Layout of `out/`:
 *   train/<name>/<name>_0001.png …   long-tailed, for training
 *   test/<name>/<name>_0001.png …    a few held-out images of each training identity (closed set)
 *   verify/<name>/<name>_0001.png …  open-set identities, `perVerify` images each
 *   pairs.txt                         `folds pairsPerFold`, then per fold the same then the different pairs
 *   identities.json                   parameters, counts and every identity's attributes
 */
import { mulberry32 } from '../util/rng.js';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';

export interface SynthIdentityOptions {
  out: string;
  /** Training identities (default 60). */
  identities?: number;
  /** Ratio of the largest to the smallest training count (default 10). */
  imbalance?: number;
  /** Images of the largest training identity (default 40). */
  maxPerIdentity?: number;
  /** Held-out closed-set images per training identity (default 4). */
  testPerIdentity?: number;
  /** Open-set verification identities (default 40). */
  verifyIdentities?: number;
  /** Images per verification identity (default 10). */
  perVerify?: number;
  /** Folds of pairs.txt (default 10) and same (= different) pairs per fold (default 50). */
  folds?: number;
  pairsPerFold?: number;
  seed?: number;
  /** Width = height in pixels (default 32). */
  size?: number;
}

export interface SynthIdentityAttributes {
  background: [number, number, number];
  skin: [number, number, number];
  stripeAngle: number;
  stripeFreq: number;
  stripeAmp: number;
  faceRadius: [number, number];
  eyes: { dx: number; dy: number; r: number; color: [number, number, number] };
  mouth: { y: number; w: number; h: number; color: [number, number, number] };
  mark: { x: number; y: number; r: number; color: [number, number, number] };
}

export interface SynthIdentityResult {
  dir: string;
  pairsPath: string;
  /** Training image counts per identity, largest first. */
  trainCounts: number[];
  images: number;
  pairs: number;
  seconds: number;
}

export { mulberry32 };

/** A stream per (seed, tag, a, b): identities and images do not shift when counts change. */
function streamFor(seed: number, tag: number, a: number, b = 0): () => number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (const v of [tag, a, b]) {
    h = Math.imul(h ^ (v >>> 0), 0x01000193);
    h ^= h >>> 13;
  }
  return mulberry32(h >>> 0);
}

function gaussian(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

function colour(r: () => number): [number, number, number] {
  return [r(), r(), r()];
}

function drawAttributes(r: () => number): SynthIdentityAttributes {
  return {
    background: colour(r),
    skin: colour(r),
    stripeAngle: r() * Math.PI,
    stripeFreq: 3 + r() * 9,
    stripeAmp: 0.05 + r() * 0.25,
    faceRadius: [0.45 + r() * 0.3, 0.55 + r() * 0.3],
    eyes: { dx: 0.15 + r() * 0.25, dy: -0.35 + r() * 0.3, r: 0.07 + r() * 0.1, color: colour(r) },
    mouth: { y: 0.2 + r() * 0.3, w: 0.1 + r() * 0.3, h: 0.04 + r() * 0.1, color: colour(r) },
    mark: { x: -0.5 + r(), y: -0.5 + r(), r: 0.06 + r() * 0.12, color: colour(r) },
  };
}

/** Canonical-frame colour at (u, v) ∈ [−1, 1]², v down. */
function shade(a: SynthIdentityAttributes, u: number, v: number, out: number[]): void {
  const [ru, rv] = a.faceRadius;
  const inFace = (u / ru) ** 2 + (v / rv) ** 2 <= 1;
  const base = inFace ? a.skin : a.background;
  const stripe = inFace ? 0 : a.stripeAmp * Math.sin(a.stripeFreq * (u * Math.cos(a.stripeAngle) + v * Math.sin(a.stripeAngle)) * Math.PI);
  let c: readonly number[] = base;
  if (inFace) {
    const e = a.eyes;
    if ((u - e.dx) ** 2 + (v - e.dy) ** 2 <= e.r ** 2 || (u + e.dx) ** 2 + (v - e.dy) ** 2 <= e.r ** 2) c = e.color;
    else if (Math.abs(u) <= a.mouth.w && Math.abs(v - a.mouth.y) <= a.mouth.h) c = a.mouth.color;
    else if ((u - a.mark.x) ** 2 + (v - a.mark.y) ** 2 <= a.mark.r ** 2) c = a.mark.color;
  }
  out[0] = c[0] + stripe;
  out[1] = c[1] + stripe;
  out[2] = c[2] + stripe;
}

/**
 * One image of an identity as RGB bytes [size·size·3]: random pose (±25°), scale (0.85–1.15),
 * shift (±10 %), per-channel colour gain and offset, Gaussian pixel noise, and with
 * probability ½ a grey occluding rectangle.
 *
 * @example const rgb = renderIdentityImage(attrs, mulberry32(7), 32); // Uint8Array(3072)
 */
export function renderIdentityImage(a: SynthIdentityAttributes, r: () => number, size: number): Uint8Array {
  const angle = (r() - 0.5) * (50 * Math.PI) / 180;
  const scale = 0.85 + r() * 0.3;
  const tx = (r() - 0.5) * 0.2;
  const ty = (r() - 0.5) * 0.2;
  const gain = [0.8 + r() * 0.4, 0.8 + r() * 0.4, 0.8 + r() * 0.4];
  const offset = (r() - 0.5) * 0.2;
  const noise = 0.02 + r() * 0.05;
  const occlude = r() < 0.5;
  const ow = 0.2 + r() * 0.3;
  const oh = 0.2 + r() * 0.3;
  const ox = r() * (1 - ow);
  const oy = r() * (1 - oh);
  const grey = r();
  const ca = Math.cos(angle);
  const sa = Math.sin(angle);
  const out = new Uint8Array(size * size * 3);
  const c = [0, 0, 0];
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      // Image → canonical frame: undo shift, scale and rotation.
      const px = ((x + 0.5) / size) * 2 - 1 - tx;
      const py = ((y + 0.5) / size) * 2 - 1 - ty;
      const u = (ca * px + sa * py) / scale;
      const v = (-sa * px + ca * py) / scale;
      shade(a, u, v, c);
      const fx = x / size;
      const fy = y / size;
      const hidden = occlude && fx >= ox && fx < ox + ow && fy >= oy && fy < oy + oh;
      for (let k = 0; k < 3; k++) {
        const val = hidden ? grey : c[k] * gain[k] + offset + noise * gaussian(r);
        out[(y * size + x) * 3 + k] = Math.max(0, Math.min(255, Math.round(val * 255)));
      }
    }
  }
  return out;
}

/** Long-tailed counts n_i = round(max·R^(−i/(N−1))), at least 2 (a class needs a pair). @example identityCounts(3, 10, 100) // [10, 3, 1→2] */
export function identityCounts(identities: number, max: number, imbalance: number): number[] {
  return Array.from({ length: identities }, (_, i) => Math.max(2, Math.round(max * imbalance ** (identities > 1 ? -i / (identities - 1) : 0))));
}

/** LFW-style image path of the n-th (1-based) image of `name` under `dir`. @example lfwImagePath('v', 'id7', 3) // v/id7/id7_0003.png */
export function lfwImagePath(dir: string, name: string, n: number, ext = '.png'): string {
  return path.join(dir, name, `${name}_${String(n).padStart(4, '0')}${ext}`);
}

function checkInt(v: number, name: string, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new Error(`synth-identities: '${name}' must be an integer ≥ ${min}, got ${v}`);
}

/**
 * Writes the benchmark to `opts.out` (replacing an earlier one there); the same options give
 * byte-identical files.
 *
 * @example
 * const r = await generateSynthIdentities({ out: '/tmp/ids', identities: 60, imbalance: 10, seed: 1 });
 * // r.pairsPath = '/tmp/ids/pairs.txt'
 */
export async function generateSynthIdentities(opts: SynthIdentityOptions): Promise<SynthIdentityResult> {
  const t0 = performance.now();
  if (typeof opts?.out !== 'string' || opts.out === '') throw new Error(`synth-identities: 'out' must be a folder path`);
  const {
    identities = 60, imbalance = 10, maxPerIdentity = 40, testPerIdentity = 4, verifyIdentities = 40, perVerify = 10,
    folds = 10, pairsPerFold = 50, seed = 1, size = 32,
  } = opts;
  checkInt(identities, 'identities', 2);
  checkInt(maxPerIdentity, 'maxPerIdentity', 2);
  checkInt(testPerIdentity, 'testPerIdentity', 0);
  checkInt(verifyIdentities, 'verifyIdentities', 2);
  checkInt(perVerify, 'perVerify', 2);
  checkInt(folds, 'folds', 1);
  checkInt(pairsPerFold, 'pairsPerFold', 1);
  checkInt(seed, 'seed', 0);
  checkInt(size, 'size', 8);
  if (!(imbalance >= 1) || !Number.isFinite(imbalance)) throw new Error(`synth-identities: 'imbalance' must be a number ≥ 1, got ${imbalance}`);
  if (verifyIdentities < 2 * folds) {
    throw new Error(`synth-identities: 'verifyIdentities' (${verifyIdentities}) must be at least 2 per fold (folds = ${folds}): folds are identity-disjoint`);
  }
  const dir = path.resolve(opts.out);
  for (const sub of ['train', 'test', 'verify']) await rm(path.join(dir, sub), { recursive: true, force: true });

  const trainCounts = identityCounts(identities, maxPerIdentity, imbalance);
  const trainNames = Array.from({ length: identities }, (_, i) => `id${String(i).padStart(4, '0')}`);
  const verifyNames = Array.from({ length: verifyIdentities }, (_, i) => `vid${String(i).padStart(4, '0')}`);
  const attrs = new Map<string, SynthIdentityAttributes>();
  trainNames.forEach((n, i) => attrs.set(n, drawAttributes(streamFor(seed, 1, i))));
  verifyNames.forEach((n, i) => attrs.set(n, drawAttributes(streamFor(seed, 2, i))));

  let images = 0;
  const write = async (split: string, name: string, tag: number, id: number, count: number): Promise<void> => {
    await mkdir(path.join(dir, split, name), { recursive: true });
    for (let k = 0; k < count; k++) {
      const rgb = renderIdentityImage(attrs.get(name)!, streamFor(seed, tag, id, k), size);
      await sharp(rgb, { raw: { width: size, height: size, channels: 3 } }).png().toFile(lfwImagePath(path.join(dir, split), name, k + 1));
      images++;
    }
  };
  for (let i = 0; i < identities; i++) {
    await write('train', trainNames[i], 3, i, trainCounts[i]);
    if (testPerIdentity > 0) await write('test', trainNames[i], 4, i, testPerIdentity);
  }
  for (let i = 0; i < verifyIdentities; i++) await write('verify', verifyNames[i], 5, i, perVerify);

  // Identity-disjoint folds as in LFW: fold f owns verification identities f, f+folds, ….
  const r = streamFor(seed, 6, 0);
  const pick = (n: number) => Math.floor(r() * n);
  const lines = [`${folds}\t${pairsPerFold}`];
  for (let f = 0; f < folds; f++) {
    const own = verifyNames.filter((_, i) => i % folds === f);
    for (let p = 0; p < pairsPerFold; p++) {
      const a = pick(perVerify);
      const b = (a + 1 + pick(perVerify - 1)) % perVerify;
      lines.push(`${own[pick(own.length)]}\t${a + 1}\t${b + 1}`);
    }
    for (let p = 0; p < pairsPerFold; p++) {
      const i = pick(own.length);
      const j = (i + 1 + pick(own.length - 1)) % own.length;
      lines.push(`${own[i]}\t${pick(perVerify) + 1}\t${own[j]}\t${pick(perVerify) + 1}`);
    }
  }
  const pairsPath = path.join(dir, 'pairs.txt');
  await writeFile(pairsPath, lines.join('\n') + '\n');
  await writeFile(path.join(dir, 'identities.json'), JSON.stringify({
    format: 'vlmargin-synth-identities', version: 1,
    options: { identities, imbalance, maxPerIdentity, testPerIdentity, verifyIdentities, perVerify, folds, pairsPerFold, seed, size },
    train: trainNames.map((name, i) => ({ name, count: trainCounts[i], attributes: attrs.get(name) })),
    verify: verifyNames.map((name) => ({ name, count: perVerify, attributes: attrs.get(name) })),
  }, null, 1) + '\n');
  return { dir, pairsPath, trainCounts, images, pairs: folds * pairsPerFold * 2, seconds: (performance.now() - t0) / 1000 };
}

/** The options a benchmark folder was generated with, or undefined when it has no identities.json. */
export async function readSynthIdentityOptions(dir: string): Promise<Required<Omit<SynthIdentityOptions, 'out'>> | undefined> {
  try {
    const j = JSON.parse(await readFile(path.join(dir, 'identities.json'), 'utf8')) as { options: Required<Omit<SynthIdentityOptions, 'out'>> };
    return j.options;
  } catch {
    return undefined;
  }
}
