/**
 * A synthetic video-text corpus with known structure: short H.264 clips of one coloured shape
 * moving over a background, captions from paraphrase templates, a long-tailed train split over
 * colours with a known fraction of misaligned pairs, and clean balanced `meta` and `test` splits.
 *
 * Everything is a function of the parameters: the plan (attributes, captions, noise) comes from
 * seeded generators keyed by clip id, so the manifest is byte-identical for a seed and each clip's
 * pixels do not depend on the order in which clips are encoded.
 */
import { writeFileAtomic } from '../util/atomicWrite.js';
import { spawn } from 'node:child_process';
import { mkdir, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import pLimit from 'p-limit';
import { z } from 'zod';
import { ffmpegBinary } from '../video/binaries.js';
import { writeManifest } from './manifest.js';
import { drawClip, SHAPES, type ClipSpec, type Shape } from './synthDraw.js';
import type { ManifestEntry } from './types.js';

export const COLORS = {
  red: [220, 30, 30],
  green: [30, 190, 40],
  blue: [40, 70, 230],
  yellow: [235, 215, 30],
  purple: [150, 40, 210],
  cyan: [30, 200, 215],
} as const satisfies Record<string, readonly [number, number, number]>;
export type Color = keyof typeof COLORS;
/** Colours in head-to-tail order of the long-tailed train split. */
export const COLOR_NAMES = Object.keys(COLORS) as Color[];
export const OBJECT_SIZES = ['small', 'large'] as const;
export type ObjectSize = (typeof OBJECT_SIZES)[number];
export const DIRECTIONS = ['left', 'right', 'up', 'down'] as const;
export type Direction = (typeof DIRECTIONS)[number];
export const SPEEDS = ['slow', 'fast'] as const;
export type Speed = (typeof SPEEDS)[number];

/** Object half-extent as a fraction of the frame side. */
const RADIUS_FRACTION: Record<ObjectSize, number> = { small: 0.09, large: 0.16 };
/**
 * Distance travelled over the whole clip as a fraction of the frame side. Both stay under one
 * half so that on the wrapping frame the first-to-last displacement is unambiguous.
 */
const TRAVEL_FRACTION: Record<Speed, number> = { slow: 0.2, fast: 0.45 };

/** Bump when drawing, captions or the plan change, so older corpora on disk are regenerated. */
export const SYNTH_GENERATOR_VERSION = 1;
const CORPUS_FORMAT = 'vlmargin-synth-corpus';

export interface Attributes { shape: Shape; color: Color; size: ObjectSize; dir: Direction; speed: Speed }
const ATTRIBUTE_VALUES = {
  shape: SHAPES, color: COLOR_NAMES, size: OBJECT_SIZES, dir: DIRECTIONS, speed: SPEEDS,
} as const satisfies Record<keyof Attributes, readonly string[]>;
const ATTRIBUTE_KEYS = Object.keys(ATTRIBUTE_VALUES) as (keyof Attributes)[];

export const SynthParamsSchema = z.object({
  videos: z.number().int().min(18).max(200000).default(720),
  /**
   * Clips in the `meta` and `test` splits, each a multiple of the colour count (6) so the split
   * is balanced; unset, about 10 % and 20 % of `videos`. Fixing them lets `videos` grow the train
   * split alone: the meta and test clips (attributes, captions, pixels) depend only on their
   * count, id and seed, so the same test split is scored whatever the train split's size.
   */
  metaVideos: z.number().int().min(6).max(200000).refine((v) => v % 6 === 0, 'metaVideos must be a multiple of 6 (the colours)').optional(),
  testVideos: z.number().int().min(6).max(200000).refine((v) => v % 6 === 0, 'testVideos must be a multiple of 6 (the colours)').optional(),
  noise: z.number().min(0).max(1).default(0.3),
  /**
   * Of the noisy pairs, the share that take another clip's caption (a swap, the usual way noisy
   * correspondence is simulated); the rest get their own caption with one attribute wrong.
   */
  swapFraction: z.number().min(0).max(1).default(0.5),
  imbalance: z.number().min(1).max(10000).default(20),
  seed: z.number().int().min(0).max(2 ** 32 - 1).default(1),
  size: z.number().int().min(16).max(1024).refine((v) => v % 2 === 0, 'size must be even (yuv420p)').default(64),
  frames: z.number().int().min(2).max(1000).default(16),
  fps: z.number().positive().max(240).default(8),
});
/** What defines a corpus; two corpora with equal params are identical. */
export type SynthParams = z.infer<typeof SynthParamsSchema>;

export interface SynthClip {
  id: string;
  split: 'train' | 'meta' | 'test';
  /** What the clip shows. */
  attrs: Attributes;
  caption: string;
  noisy: boolean;
  /** How a noisy caption was made: another clip's caption, or this clip's with one attribute wrong. */
  noiseKind?: 'swap' | 'attribute';
  /** Path of the clip relative to the corpus folder. */
  file: string;
  spec: ClipSpec;
}

export interface SynthCounts {
  train: number; meta: number; test: number;
  noisy: number; noisySwap: number; noisyAttribute: number;
  /** Train clips per colour, head first. */
  trainPerColor: Record<Color, number>;
  /** Largest over smallest train colour count. */
  headTailRatio: number;
}

export interface SynthPlan { params: SynthParams; clips: SynthClip[]; counts: SynthCounts }

/** 32-bit string hash (FNV-1a followed by an avalanche), for deriving independent streams. */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * A deterministic generator of floats in [0, 1) (mulberry32) for the stream named by `keys`.
 *
 * @example const r = seededRandom(1, 'clip', 'train-0003'); r(); // same value on every machine
 */
export function seededRandom(...keys: (string | number)[]): () => number {
  let a = hashString(keys.join('|'));
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(rng: () => number, xs: readonly T[]): T { return xs[Math.floor(rng() * xs.length)]; }

function shuffle<T>(rng: () => number, xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

/** `n` values with every value used ⌊n/k⌋ or ⌈n/k⌉ times, in random order. */
function balancedList<T>(rng: () => number, values: readonly T[], n: number): T[] {
  const extra = shuffle(rng, [...values]).slice(0, n % values.length);
  const out: T[] = [];
  for (const v of values) for (let i = 0; i < Math.floor(n / values.length); i++) out.push(v);
  out.push(...extra);
  return shuffle(rng, out);
}

/**
 * Train counts per colour on a geometric profile with head/tail ratio `imbalance` (largest
 * remainder rounding, at least 1 each).
 *
 * @example longTailCounts(504, 6, 20) // [234, 128, 70, 39, 21, 12]
 */
export function longTailCounts(total: number, classes: number, imbalance: number): number[] {
  const w = Array.from({ length: classes }, (_, k) => imbalance ** (-k / Math.max(1, classes - 1)));
  const sum = w.reduce((a, b) => a + b, 0);
  const exact = w.map((x) => (total * x) / sum);
  const counts = exact.map(Math.floor);
  let left = total - counts.reduce((a, b) => a + b, 0);
  const order = exact.map((x, i) => ({ i, r: x - Math.floor(x) })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (let k = 0; left > 0; k++, left--) counts[order[k % classes].i] += 1;
  for (let i = counts.length - 1; i >= 0; i--) {
    if (counts[i] > 0) continue;
    const donor = counts.indexOf(Math.max(...counts));
    counts[donor] -= 1;
    counts[i] = 1;
  }
  return counts;
}

const SIZE_WORDS: Record<ObjectSize, string[]> = { small: ['small', 'little', 'tiny'], large: ['large', 'big'] };
const SPEED_ADVERBS: Record<Speed, string[]> = { slow: ['slowly', 'gently'], fast: ['quickly', 'rapidly'] };
const SPEED_ADJECTIVES: Record<Speed, string[]> = { slow: ['slow'], fast: ['fast', 'quick'] };
const DIR_PHRASES: Record<Direction, string[]> = {
  left: ['to the left', 'leftward'], right: ['to the right', 'rightward'], up: ['upward', 'up'], down: ['downward', 'down'],
};

type Words = { size: string; color: string; shape: string; adv: string; adj: string; dirPhrase: string; dir: Direction };
const TEMPLATES: ((w: Words) => string)[] = [
  (w) => `a ${w.size} ${w.color} ${w.shape} moves ${w.adv} ${w.dirPhrase}`,
  (w) => `a ${w.color} ${w.shape}, ${w.size}, drifting ${w.dir} ${w.adj}`,
  (w) => `the ${w.size} ${w.shape} is ${w.color} and travels ${w.dirPhrase} ${w.adv}`,
  (w) => `${w.adj} ${w.dir}ward motion of a ${w.size} ${w.color} ${w.shape}`,
  (w) => `a ${w.color} ${w.shape} of ${w.size} size slides ${w.dirPhrase} ${w.adv}`,
  (w) => `${w.adv}, a ${w.size} ${w.color} ${w.shape} heads ${w.dir}`,
  (w) => `there is a ${w.size} ${w.color} ${w.shape} going ${w.dir} at a ${w.adj} pace`,
  (w) => `a ${w.size} ${w.shape} in ${w.color} glides ${w.dirPhrase}, ${w.adv}`,
];

/**
 * A caption for attributes, with the template and synonyms drawn from `rng`.
 *
 * @example captionFor({ shape: 'circle', color: 'red', size: 'small', dir: 'left', speed: 'fast' }, seededRandom(0)) // e.g. 'a small red circle moves quickly to the left'
 */
export function captionFor(a: Attributes, rng: () => number): string {
  const template = pick(rng, TEMPLATES);
  return template({
    size: pick(rng, SIZE_WORDS[a.size]), color: a.color, shape: a.shape,
    adv: pick(rng, SPEED_ADVERBS[a.speed]), adj: pick(rng, SPEED_ADJECTIVES[a.speed]),
    dirPhrase: pick(rng, DIR_PHRASES[a.dir]), dir: a.dir,
  });
}

/** The clip's concepts, e.g. `["shape:circle","color:red","size:small","dir:left","speed:fast"]`. */
export function conceptsOf(a: Attributes): string[] {
  return ATTRIBUTE_KEYS.map((k) => `${k}:${a[k]}`);
}

const comboKey = (a: Attributes) => ATTRIBUTE_KEYS.map((k) => a[k]).join('/');

/** Swaps non-colour attributes between items until every attribute combination is unique, keeping all counts. */
function makeCombosDistinct(rng: () => number, items: Attributes[]): void {
  const total = ATTRIBUTE_KEYS.reduce((n, k) => n * ATTRIBUTE_VALUES[k].length, 1);
  if (items.length > total || items.length < 2) return;
  const movable = ATTRIBUTE_KEYS.filter((k) => k !== 'color');
  for (let iter = 0; iter < 100000; iter++) {
    const seen = new Map<string, number>();
    let dup = -1;
    for (let i = 0; i < items.length && dup < 0; i++) {
      const k = comboKey(items[i]);
      if (seen.has(k)) dup = i; else seen.set(k, i);
    }
    if (dup < 0) return;
    const j = Math.floor(rng() * items.length);
    const key = pick(rng, movable);
    const a = items[dup] as unknown as Record<string, string>;
    const b = items[j] as unknown as Record<string, string>;
    [a[key], b[key]] = [b[key], a[key]];
  }
}

function splitAttributes(rng: () => number, n: number, colors: Color[], distinct: boolean): Attributes[] {
  const lists = {
    shape: balancedList(rng, SHAPES, n), size: balancedList(rng, OBJECT_SIZES, n),
    dir: balancedList(rng, DIRECTIONS, n), speed: balancedList(rng, SPEEDS, n),
  };
  const items = colors.map((color, i) => ({ shape: lists.shape[i], color, size: lists.size[i], dir: lists.dir[i], speed: lists.speed[i] }));
  if (distinct) makeCombosDistinct(rng, items);
  return items;
}

function clipSpec(p: SynthParams, id: string, a: Attributes): ClipSpec {
  const rng = seededRandom(p.seed, 'clip', id);
  const speed = (TRAVEL_FRACTION[a.speed] * p.size) / (p.frames - 1);
  const v = { left: [-speed, 0], right: [speed, 0], up: [0, -speed], down: [0, speed] }[a.dir];
  const gray = 45 + rng() * 50;
  const background = [0, 1, 2].map(() => Math.round(gray + (rng() * 2 - 1) * 10)) as [number, number, number];
  return {
    size: p.size, frames: p.frames, shape: a.shape, rgb: COLORS[a.color], radius: RADIUS_FRACTION[a.size] * p.size,
    x0: rng() * p.size, y0: rng() * p.size, vx: v[0], vy: v[1], background, textureSeed: Math.floor(rng() * 2 ** 31),
  };
}

/**
 * Split sizes: meta and test as given, else meta ≈ 10 % and test ≈ 20 %, each a multiple of the
 * colour count (so exactly balanced); train the rest, at least one clip per colour.
 */
function splitSizes(p: SynthParams): { train: number; meta: number; test: number } {
  const c = COLOR_NAMES.length;
  const meta = p.metaVideos ?? c * Math.max(1, Math.floor((p.videos * 0.1) / c));
  const test = p.testVideos ?? c * Math.max(1, Math.floor((p.videos * 0.2) / c));
  const train = p.videos - meta - test;
  if (train < c) throw new Error(`planSynthCorpus: videos ${p.videos} leaves ${train} train clips after ${meta} meta and ${test} test; need at least ${c}`);
  return { train, meta, test };
}

/**
 * The whole corpus as data (no files): attributes, captions, noise and drawing specs of every
 * clip. Pure and cheap, so analyses and tests can use it without encoding video.
 *
 * @example const plan = planSynthCorpus({ seed: 3 }); plan.counts.noisy // ≈ 0.3 · plan.counts.train
 */
export function planSynthCorpus(params: Partial<SynthParams> = {}): SynthPlan {
  const parsed = SynthParamsSchema.safeParse(params);
  if (!parsed.success) throw new Error(`planSynthCorpus: bad parameters: ${z.prettifyError(parsed.error)}`);
  const p = parsed.data;
  const sizes = splitSizes(p);
  const C = COLOR_NAMES.length;
  const perColor = longTailCounts(sizes.train, C, p.imbalance);
  const trainColors = shuffle(seededRandom(p.seed, 'train-colors'), perColor.flatMap((n, k) => Array<Color>(n).fill(COLOR_NAMES[k])));
  const bySplit = {
    train: splitAttributes(seededRandom(p.seed, 'train'), sizes.train, trainColors, false),
    meta: splitAttributes(seededRandom(p.seed, 'meta'), sizes.meta, balancedList(seededRandom(p.seed, 'meta-colors'), COLOR_NAMES, sizes.meta), true),
    test: splitAttributes(seededRandom(p.seed, 'test'), sizes.test, balancedList(seededRandom(p.seed, 'test-colors'), COLOR_NAMES, sizes.test), true),
  };
  const clips: SynthClip[] = [];
  for (const split of ['train', 'meta', 'test'] as const) {
    bySplit[split].forEach((attrs, i) => {
      const id = `${split}-${String(i).padStart(4, '0')}`;
      clips.push({
        id, split, attrs, caption: captionFor(attrs, seededRandom(p.seed, 'caption', id)), noisy: false,
        file: `clips/${id}.mp4`, spec: clipSpec(p, id, attrs),
      });
    });
  }
  const train = clips.filter((c) => c.split === 'train');
  const nrng = seededRandom(p.seed, 'noise');
  const nNoisy = Math.round(p.noise * train.length);
  const cleanCaptions = train.map((c) => c.caption);
  let swaps = 0;
  for (const i of shuffle(nrng, train.map((_, i) => i)).slice(0, nNoisy)) {
    const c = train[i];
    let j = -1;
    if (nrng() < p.swapFraction) {
      for (let tries = 0; tries < 100 && j < 0; tries++) {
        const k = Math.floor(nrng() * train.length);
        if (comboKey(train[k].attrs) !== comboKey(c.attrs)) j = k;
      }
    }
    if (j >= 0) {
      c.caption = cleanCaptions[j];
      c.noiseKind = 'swap';
      swaps += 1;
    } else {
      const key = pick(nrng, ATTRIBUTE_KEYS);
      const wrong = pick(nrng, (ATTRIBUTE_VALUES[key] as readonly string[]).filter((v) => v !== c.attrs[key]));
      c.caption = captionFor({ ...c.attrs, [key]: wrong } as Attributes, seededRandom(p.seed, 'noisy-caption', c.id));
      c.noiseKind = 'attribute';
    }
    c.noisy = true;
  }
  const trainPerColor = Object.fromEntries(COLOR_NAMES.map((k, i) => [k, perColor[i]])) as Record<Color, number>;
  return {
    params: p,
    clips,
    counts: {
      ...sizes, noisy: nNoisy, noisySwap: swaps, noisyAttribute: nNoisy - swaps, trainPerColor,
      headTailRatio: Math.max(...perColor) / Math.min(...perColor),
    },
  };
}

/**
 * Manifest entries of a plan, with videos resolved inside `dir`. Every entry carries `noisy`
 * (true or false), so a meta-set draw can tell clean from unknown.
 *
 * @example const train = synthManifestEntries(planSynthCorpus({}), 'data/synth').filter((e) => e.split === 'train');
 */
export function synthManifestEntries(plan: SynthPlan, dir: string): ManifestEntry[] {
  return plan.clips.map((c) => ({
    id: c.id, video: path.resolve(dir, c.file), captions: [c.caption], concepts: conceptsOf(c.attrs), split: c.split, noisy: c.noisy,
    ...(c.noiseKind ? { noiseKind: c.noiseKind } : {}),
  }));
}

/**
 * Encodes one clip: frames drawn in code, piped as rgb24 to one ffmpeg process (H.264, yuv420p),
 * written via a temporary name so an interrupted run leaves no half file.
 *
 * @example await encodeClip(plan.clips[0].spec, 8, '/tmp/clip.mp4');
 */
export async function encodeClip(spec: ClipSpec, fps: number, file: string): Promise<void> {
  const frames = drawClip(spec);
  const tmp = `${file}.tmp-${process.pid}`;
  const args = [
    '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${spec.size}x${spec.size}`, '-r', String(fps), '-i', '-',
    '-an', '-c:v', 'libx264', '-preset', 'medium', '-crf', '18', '-pix_fmt', 'yuv420p', '-threads', '1',
    // bitexact and no metadata: the same frames give the same bytes on every run.
    '-fflags', '+bitexact', '-flags:v', '+bitexact', '-map_metadata', '-1', '-f', 'mp4', tmp,
  ];
  await new Promise<void>((resolve, reject) => {
    const child = spawn(ffmpegBinary().path, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000); });
    child.stdin.on('error', () => { /* ffmpeg exited early; the exit code carries the reason */ });
    child.on('error', (e) => reject(new Error(`cannot start ffmpeg for ${file}: ${e.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`ffmpeg failed (exit ${code}) writing ${file}: ${stderr.trim() || 'no message'}`));
    });
    child.stdin.end(Buffer.from(frames.buffer, frames.byteOffset, frames.byteLength));
  }).catch(async (e: unknown) => { await rm(tmp, { force: true }); throw e; });
  await rename(tmp, file);
}

/**
 * Options of `generateSynthCorpus`: the corpus parameters (defaults: 720 videos, the minimum 18;
 * noise 0.3; imbalance 20; seed 1; 64×64 px; 16 frames at 8 fps, i.e. 2 s) plus where and how.
 */
export interface SynthOptions extends Partial<SynthParams> {
  /** Corpus folder; gets `manifest.jsonl`, `corpus.json` and `clips/`. */
  out: string;
  /** Clips encoded at once (one ffmpeg process each). */
  concurrency?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface SynthResult {
  dir: string;
  manifestPath: string;
  /** True when an existing corpus with the same parameters was kept. */
  reused: boolean;
  /** Clips encoded by this call (0 when fully reused; missing clips of a reused corpus are re-encoded). */
  clipsWritten: number;
  counts: SynthCounts;
  params: SynthParams;
  seconds: number;
}

interface CorpusFile { format: string; generator: number; params: SynthParams }

function sameParams(stored: SynthParams, b: SynthParams): boolean {
  // A corpus.json written before a parameter existed holds that parameter's default.
  const parsed = SynthParamsSchema.safeParse(stored);
  if (!parsed.success) return false;
  const a = parsed.data;
  return (Object.keys(SynthParamsSchema.shape) as (keyof SynthParams)[]).every((k) => a[k] === b[k]);
}

async function readCorpusFile(file: string): Promise<CorpusFile | null> {
  try {
    const o = JSON.parse(await readFile(file, 'utf8')) as CorpusFile;
    return o && o.format === CORPUS_FORMAT && typeof o.params === 'object' ? o : null;
  } catch {
    return null;
  }
}

async function nonEmptyFile(p: string): Promise<boolean> {
  try { const s = await stat(p); return s.isFile() && s.size > 0; } catch { return false; }
}

/**
 * Writes (or reuses) a synthetic corpus in `out`: `clips/<id>.mp4`, `manifest.jsonl` (splits
 * `train`, `meta`, `test`; every entry with `concepts` and `noisy`) and `corpus.json` (parameters
 * and counts). If `out` already holds a corpus made with the same parameters it is kept, and only
 * clips that have gone missing are encoded again; with other parameters it is replaced.
 *
 * @example const r = await generateSynthCorpus({ out: 'data/synth', seed: 1 }); // r.manifestPath
 */
export async function generateSynthCorpus(options: SynthOptions): Promise<SynthResult> {
  const t0 = performance.now();
  if (!options || typeof options.out !== 'string' || options.out === '') throw new Error('generateSynthCorpus: options.out must name the corpus folder');
  const { out, concurrency = 2, onProgress, ...paramInput } = options;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error(`generateSynthCorpus: concurrency must be an integer >= 1, got ${concurrency}`);
  const plan = planSynthCorpus(paramInput);
  const dir = path.resolve(out);
  const manifestPath = path.join(dir, 'manifest.jsonl');
  const corpusPath = path.join(dir, 'corpus.json');
  const clipsDir = path.join(dir, 'clips');

  const existing = await readCorpusFile(corpusPath);
  const reused = existing !== null && existing.generator === SYNTH_GENERATOR_VERSION && sameParams(existing.params, plan.params)
    && await nonEmptyFile(manifestPath);
  if (!existing && await nonEmptyFile(manifestPath)) {
    throw new Error(`generateSynthCorpus: ${dir} holds a manifest.jsonl but no synthetic corpus.json; refusing to overwrite it (choose another --out)`);
  }
  await mkdir(clipsDir, { recursive: true });
  if (existing && !reused) {
    // Replaced: drop the marker first so an interrupted run is never mistaken for a finished corpus.
    await rm(corpusPath, { force: true });
    const wanted = new Set(plan.clips.map((c) => path.basename(c.file)));
    for (const name of await readdir(clipsDir)) {
      if (/^(train|meta|test)-\d+\.mp4$/.test(name) && !wanted.has(name)) await rm(path.join(clipsDir, name), { force: true });
    }
  }
  const todo: SynthClip[] = [];
  for (const c of plan.clips) if (!reused || !(await nonEmptyFile(path.join(dir, c.file)))) todo.push(c);

  const limit = pLimit(concurrency);
  let done = 0;
  const failures: string[] = [];
  await Promise.all(todo.map((c) => limit(async () => {
    try {
      await encodeClip(c.spec, plan.params.fps, path.join(dir, c.file));
    } catch (e) {
      failures.push((e as Error).message);
    }
    done += 1;
    onProgress?.(done, todo.length);
  })));
  if (failures.length) {
    throw new Error(`generateSynthCorpus: ${failures.length} of ${todo.length} clips failed in ${dir}; first: ${failures[0]}`);
  }
  // Manifests written before entries carried `noiseKind` are brought up to date (same corpus).
  const staleManifest = reused && plan.clips.some((c) => c.noiseKind) && !(await readFile(manifestPath, 'utf8')).includes('"noiseKind"');
  if (staleManifest) await writeManifest(manifestPath, synthManifestEntries(plan, dir));
  if (!reused) {
    await writeManifest(manifestPath, synthManifestEntries(plan, dir));
    const corpus = {
      format: CORPUS_FORMAT,
      generator: SYNTH_GENERATOR_VERSION,
      params: plan.params,
      counts: plan.counts,
      manifest: 'manifest.jsonl',
      attributes: ATTRIBUTE_VALUES,
      pixels: {
        radius: Object.fromEntries(OBJECT_SIZES.map((s) => [s, RADIUS_FRACTION[s] * plan.params.size])),
        speedPerFrame: Object.fromEntries(SPEEDS.map((s) => [s, (TRAVEL_FRACTION[s] * plan.params.size) / (plan.params.frames - 1)])),
      },
      encoding: 'libx264 crf 18, yuv420p, mp4',
    };
    await writeFileAtomic(corpusPath, `${JSON.stringify(corpus, null, 2)}\n`);
  }
  return {
    dir, manifestPath, reused, clipsWritten: todo.length, counts: plan.counts, params: plan.params,
    seconds: (performance.now() - t0) / 1000,
  };
}
