/**
 * The frame cache: a manifest decoded once into shards of raw uint8 frames.
 *
 * Layout of `out/`:
 *   index.json             config (frames, size, strategy…), shard list, failed items
 *   shard-00000.bin        clips back to back, each [T, size, size, 3] uint8
 *   shard-00000.json       { items: [{ id, offset, timestamps, … }], errors: [...] }
 *
 * A shard's .bin is written under a temporary name and renamed, then its .json the same
 * way; the .json is the commit mark. A re-run after a crash deletes temporary files and any
 * .bin without its .json, keeps every committed shard, and decodes only what is missing.
 */
import { open, readdir, readFile, rm, stat, mkdir } from 'node:fs/promises';
import path from 'node:path';
import pLimit from 'p-limit';
import type { ItemError, ManifestEntry } from './types.js';
import { writeFileAtomic } from '../util/atomicWrite.js';
import { withDirLock } from '../util/dirLock.js';
import { normalizeFrames } from '../video/transforms.js';
import { checkSampleOptions, sampleItem, SAMPLE_STRATEGIES, type SampleOutcome, type SampleStrategy } from '../video/sampler.js';

const INDEX = 'index.json';
const FORMAT = 'vlmargin-frame-cache';
const VERSION = 1;

/** What decides the bytes of a cached clip; a cache built with other values is refused. */
export interface FrameCacheConfig {
  frames: number;
  size: number;
  strategy: SampleStrategy;
  fps?: number;
  seed?: number;
}

export interface CachedClipMeta {
  id: string;
  video: string;
  /** Byte offset of the clip in its shard's .bin. */
  offset: number;
  timestamps: number[];
  frameTimes: number[];
  padded: number;
}

interface ShardFile {
  format: string;
  version: number;
  clipBytes: number;
  bytes: number;
  items: CachedClipMeta[];
  errors: ItemError[];
}

interface IndexFile extends FrameCacheConfig {
  format: string;
  version: number;
  shardSize: number;
  shards: string[];
  clips: number;
  errors: ItemError[];
  complete: boolean;
}

export interface BuildFrameCacheOptions {
  /** Output folder (created when missing). */
  out: string;
  frames: number;
  size: number;
  strategy?: SampleStrategy;
  /** Rate of the `fps` strategy. */
  fps?: number;
  /** Seed of the `random` strategy (each clip derives its own stream from it and its id). */
  seed?: number;
  /** ffmpeg processes at a time (default 2). */
  concurrency?: number;
  /** Clips per shard (default 32). */
  shardSize?: number;
  /** Per-clip ffmpeg time limit. */
  timeoutMs?: number;
  onProgress?: (p: FrameCacheProgress) => void;
}

export interface FrameCacheProgress {
  total: number;
  /** Items finished in this run (decoded or failed), excluding those already in the cache. */
  done: number;
  /** Items this run has to process (total minus reused, minus duplicates). */
  todo: number;
  decoded: number;
  reused: number;
  skipped: number;
  /** The item just finished. */
  id: string;
}

export interface FrameCacheSummary {
  out: string;
  total: number;
  /** Clips decoded by this run. */
  decoded: number;
  /** Items (clips or recorded failures) found in the cache from an earlier run. */
  reused: number;
  /** Failures of this run and earlier ones, with reasons. */
  skipped: ItemError[];
  /** Clips of this run whose trailing frames repeat the last decoded one. */
  padded: { id: string; padded: number }[];
  shards: number;
}

const shardName = (n: number): string => `shard-${String(n).padStart(5, '0')}`;
const SHARD_RE = /^shard-(\d{5,})\.json$/;

const writeAtomic = (file: string, data: Uint8Array | string): Promise<void> => writeFileAtomic(file, data, { sync: true });

interface ScanResult {
  shards: { name: string; number: number; file: ShardFile }[];
  /** Files removed because they were temporary or uncommitted. */
  discarded: string[];
}

/** Committed shards of a cache folder, in shard order; with `clean`, deletes leftovers. */
async function scanShards(dir: string, clean: boolean): Promise<ScanResult> {
  const names = await readdir(dir);
  const discarded: string[] = [];
  const shards: ScanResult['shards'] = [];
  const committed = new Set<string>();
  for (const name of names) {
    const m = SHARD_RE.exec(name);
    if (!m) continue;
    const base = name.slice(0, -'.json'.length);
    let file: ShardFile | null = null;
    try {
      file = JSON.parse(await readFile(path.join(dir, name), 'utf8')) as ShardFile;
      if (file.format !== `${FORMAT}-shard` || !Array.isArray(file.items) || !Array.isArray(file.errors)) file = null;
      else {
        const st = await stat(path.join(dir, `${base}.bin`)).catch(() => null);
        if (!st || st.size !== file.bytes) file = null;
      }
    } catch {
      file = null;
    }
    if (file) {
      shards.push({ name: base, number: Number(m[1]), file });
      committed.add(base);
    } else if (clean) {
      await rm(path.join(dir, name), { force: true });
      discarded.push(name);
    }
  }
  if (clean) {
    for (const name of names) {
      const tmp = /\.tmp-\d+$/.test(name);
      const orphanBin = /^shard-\d{5,}\.bin$/.test(name) && !committed.has(name.slice(0, -'.bin'.length));
      if (tmp || orphanBin) {
        await rm(path.join(dir, name), { force: true });
        discarded.push(name);
      }
    }
  }
  shards.sort((a, b) => a.number - b.number);
  return { shards, discarded };
}

function configOf(o: { frames: number; size: number; strategy: SampleStrategy; fps?: number; seed?: number }): FrameCacheConfig {
  const c: FrameCacheConfig = { frames: o.frames, size: o.size, strategy: o.strategy };
  if (o.strategy === 'fps') c.fps = o.fps;
  if (o.strategy === 'random') c.seed = o.seed ?? 0;
  return c;
}

function sameConfig(a: FrameCacheConfig, b: FrameCacheConfig): boolean {
  return a.frames === b.frames && a.size === b.size && a.strategy === b.strategy && a.fps === b.fps && a.seed === b.seed;
}

/**
 * Decodes the videos of a manifest once into a sharded frame cache, resuming a cache that a
 * killed run left behind (committed shards are kept and not decoded again). Bad videos are
 * recorded with reasons and skipped.
 *
 * @example
 * const s = await buildFrameCache(manifest.entries, { out: 'cache/msrvtt-8x224', frames: 8, size: 224 });
 * console.log(s.decoded, s.reused, s.skipped.length);
 */
export async function buildFrameCache(entries: ManifestEntry[], opts: BuildFrameCacheOptions): Promise<FrameCacheSummary> {
  if (!opts || typeof opts.out !== 'string' || !opts.out) throw new Error('buildFrameCache: opts.out must be a folder path');
  await mkdir(path.resolve(opts.out), { recursive: true });
  // Two runs building the same cache at once would interleave shard numbers and indexes.
  return withDirLock(opts.out, () => buildFrameCacheLocked(entries, opts), { what: 'frame cache' });
}

async function buildFrameCacheLocked(entries: ManifestEntry[], opts: BuildFrameCacheOptions): Promise<FrameCacheSummary> {
  if (!Array.isArray(entries)) throw new Error('buildFrameCache: entries must be an array of manifest entries');
  if (!opts || typeof opts.out !== 'string' || !opts.out) throw new Error('buildFrameCache: opts.out must be a folder path');
  const strategy = opts.strategy ?? 'uniform';
  checkSampleOptions({ frames: opts.frames, size: opts.size, strategy, fps: opts.fps, timeoutMs: opts.timeoutMs }, 'buildFrameCache');
  const concurrency = opts.concurrency ?? 2;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error(`buildFrameCache: concurrency must be a positive integer, got ${opts.concurrency}`);
  const shardSize = opts.shardSize ?? 32;
  if (!Number.isInteger(shardSize) || shardSize < 1) throw new Error(`buildFrameCache: shardSize must be a positive integer, got ${opts.shardSize}`);
  const out = path.resolve(opts.out);
  const config = configOf({ frames: opts.frames, size: opts.size, strategy, fps: opts.fps, seed: opts.seed });
  await mkdir(out, { recursive: true });

  const indexPath = path.join(out, INDEX);
  const existing = await readFile(indexPath, 'utf8').then((t) => JSON.parse(t) as IndexFile, (e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw new Error(`buildFrameCache: ${indexPath} is unreadable (${e.message}); delete the folder or choose another --out`);
  });
  if (existing) {
    if (existing.format !== FORMAT) throw new Error(`buildFrameCache: ${out} holds something other than a frame cache (${indexPath})`);
    const had = configOf(existing);
    if (!sameConfig(had, config)) {
      throw new Error(`buildFrameCache: ${out} was built with ${JSON.stringify(had)}, asked ${JSON.stringify(config)}; choose another --out or delete it`);
    }
  }

  const { shards } = await scanShards(out, true);
  const known = new Map<string, 'clip' | 'error'>();
  const oldErrors: ItemError[] = [];
  for (const s of shards) {
    for (const it of s.file.items) known.set(it.id, 'clip');
    for (const er of s.file.errors) {
      if (er.id !== undefined) known.set(er.id, 'error');
      oldErrors.push(er);
    }
  }

  const seen = new Set<string>();
  const manifestErrors: ItemError[] = [];
  const todo: ManifestEntry[] = [];
  let reused = 0;
  for (const e of entries) {
    if (!e || typeof e.id !== 'string' || typeof e.video !== 'string') {
      manifestErrors.push({ source: String(e?.video ?? ''), reason: `entry without id/video: ${JSON.stringify(e)}` });
      continue;
    }
    if (seen.has(e.id)) { manifestErrors.push({ source: e.video, id: e.id, reason: 'duplicate id in the manifest; kept the first' }); continue; }
    seen.add(e.id);
    if (known.has(e.id)) reused++; else todo.push(e);
  }

  const shardNames = shards.map((s) => s.name);
  let nextShard = shards.length ? shards[shards.length - 1].number + 1 : 0;
  const clipBytes = opts.frames * opts.size * opts.size * 3;
  const newErrors: ItemError[] = [];
  const padded: FrameCacheSummary['padded'] = [];
  let decoded = 0;
  let done = 0;

  const writeIndex = async (complete: boolean): Promise<void> => {
    const clips = [...known.values()].filter((v) => v === 'clip').length;
    const index: IndexFile = {
      format: FORMAT, version: VERSION, ...config, shardSize, shards: shardNames, clips,
      errors: [...oldErrors, ...newErrors, ...manifestErrors], complete,
    };
    await writeAtomic(indexPath, `${JSON.stringify(index, null, 1)}\n`);
  };

  const writeShard = async (batch: SampleOutcome[]): Promise<void> => {
    const name = shardName(nextShard++);
    const ok = batch.filter((o): o is Extract<SampleOutcome, { ok: true }> => o.ok);
    const bin = new Uint8Array(ok.length * clipBytes);
    const items: CachedClipMeta[] = ok.map((o, i) => {
      bin.set(o.clip.data, i * clipBytes);
      return {
        id: o.item.id!, video: o.clip.info.file, offset: i * clipBytes,
        timestamps: o.clip.timestamps, frameTimes: o.clip.frameTimes, padded: o.clip.padded,
      };
    });
    const errors = batch.flatMap((o) => (o.ok ? [] : [o.error]));
    const file: ShardFile = { format: `${FORMAT}-shard`, version: VERSION, clipBytes, bytes: bin.length, items, errors };
    await writeAtomic(path.join(out, `${name}.bin`), bin);
    await writeAtomic(path.join(out, `${name}.json`), JSON.stringify(file));
    for (const it of items) known.set(it.id, 'clip');
    for (const er of errors) known.set(er.id!, 'error');
    shardNames.push(name);
    await writeIndex(false);
  };

  // One pool across all clips; finished clips gather in a buffer that is written out every
  // `shardSize` items, one shard write at a time, while decoding goes on.
  const limit = pLimit(concurrency);
  let buffer: SampleOutcome[] = [];
  let writing: Promise<void> = Promise.resolve();
  let writeError: Error | null = null;
  const flush = (): void => {
    const batch = buffer;
    buffer = [];
    writing = writing.then(() => writeShard(batch)).catch((e: Error) => { writeError ??= e; });
  };
  const sampleOpts = { frames: opts.frames, size: opts.size, strategy, fps: opts.fps, seed: config.seed, timeoutMs: opts.timeoutMs };
  await Promise.all(todo.map((e) => limit(async () => {
    if (writeError) return;
    const o = await sampleItem({ id: e.id, video: e.video, start: e.start, end: e.end }, sampleOpts);
    if (o.ok) {
      decoded++;
      if (o.clip.padded > 0) padded.push({ id: e.id, padded: o.clip.padded });
    } else {
      newErrors.push(o.error);
    }
    done++;
    buffer.push(o);
    if (buffer.length >= shardSize) flush();
    opts.onProgress?.({ total: entries.length, done, todo: todo.length, decoded, reused, skipped: newErrors.length, id: e.id });
  })));
  if (buffer.length) flush();
  await writing;
  if (writeError) throw new Error(`buildFrameCache: writing a shard in ${out} failed: ${(writeError as Error).message}`);
  await writeIndex(true);
  return {
    out, total: entries.length, decoded, reused,
    skipped: [...oldErrors.filter((er) => er.id === undefined || seen.has(er.id)), ...newErrors, ...manifestErrors],
    padded, shards: shardNames.length,
  };
}

export interface CachedClip {
  /** RGB bytes [T, size, size, 3]. */
  data: Uint8Array;
  shape: [number, number, number, number];
  timestamps: number[];
}

export interface FrameCache extends FrameCacheConfig {
  dir: string;
  /** Ids of the cached clips, in shard order. */
  ids: string[];
  /** Items that could not be decoded, with reasons. */
  errors: ItemError[];
  has(id: string): boolean;
  /** Where a clip came from and which frames it holds, without reading its pixels. */
  meta(id: string): CachedClipMeta;
  /** Reads one clip's frames. */
  get(id: string): Promise<CachedClip>;
}

/**
 * Opens a frame cache for random access by id. Only committed shards are read, so a cache
 * whose build is still running or was killed opens with the clips finished so far.
 *
 * @example
 * const cache = await openFrameCache('cache/msrvtt-8x224');
 * const clip = await cache.get(cache.ids[0]); // clip.shape: [8, 224, 224, 3]
 */
export async function openFrameCache(dir: string): Promise<FrameCache> {
  if (typeof dir !== 'string' || !dir) throw new Error('openFrameCache: dir must be a folder path');
  const root = path.resolve(dir);
  const indexPath = path.join(root, INDEX);
  let index: IndexFile;
  try {
    index = JSON.parse(await readFile(indexPath, 'utf8')) as IndexFile;
  } catch (e) {
    throw new Error(`openFrameCache: ${indexPath} is missing or unreadable (${(e as Error).message}); build it with \`vlmargin frames\``);
  }
  if (index.format !== FORMAT || !SAMPLE_STRATEGIES.includes(index.strategy) || !(index.frames > 0) || !(index.size > 0)) {
    throw new Error(`openFrameCache: ${indexPath} is not a vlmargin frame cache index`);
  }
  const config = configOf(index);
  const clipBytes = config.frames * config.size * config.size * 3;
  const { shards } = await scanShards(root, false);
  const where = new Map<string, { shard: string; meta: CachedClipMeta }>();
  const errors: ItemError[] = [];
  for (const s of shards) {
    if (s.file.clipBytes !== clipBytes) throw new Error(`openFrameCache: ${path.join(root, `${s.name}.json`)} holds clips of ${s.file.clipBytes} bytes, the index says ${clipBytes}`);
    for (const it of s.file.items) where.set(it.id, { shard: path.join(root, `${s.name}.bin`), meta: it });
    errors.push(...s.file.errors);
  }
  const lookup = (id: string): { shard: string; meta: CachedClipMeta } => {
    const w = where.get(id);
    if (!w) throw new Error(`frame cache ${root}: no clip with id ${JSON.stringify(id)}`);
    return w;
  };
  return {
    ...config,
    dir: root,
    ids: [...where.keys()],
    errors,
    has: (id) => where.has(id),
    meta: (id) => lookup(id).meta,
    async get(id) {
      const w = lookup(id);
      const data = new Uint8Array(clipBytes);
      const fh = await open(w.shard, 'r');
      try {
        const { bytesRead } = await fh.read(data, 0, clipBytes, w.meta.offset);
        if (bytesRead !== clipBytes) throw new Error(`frame cache ${w.shard}: clip ${id} is cut short (${bytesRead} of ${clipBytes} bytes)`);
      } finally {
        await fh.close();
      }
      return { data, shape: [config.frames, config.size, config.size, 3], timestamps: w.meta.timestamps };
    },
  };
}

/**
 * The CLIP-normalised frames of cached clips, stacked into one host batch `[n, T, S, S, 3]`
 * (normalisation happens here, never in the cache).
 *
 * @example const { data, shape } = await readNormalizedClips(cache, ['a', 'b']); tf.tensor(data, shape)
 */
export async function readNormalizedClips(
  cache: FrameCache, ids: readonly string[], opts: { mean?: readonly number[]; std?: readonly number[] } = {},
): Promise<{ data: Float32Array; shape: [number, number, number, number, number] }> {
  if (ids.length === 0) throw new Error('readNormalizedClips: ids must name at least one clip');
  const clipLen = cache.frames * cache.size * cache.size * 3;
  const data = new Float32Array(ids.length * clipLen);
  const clips = await Promise.all(ids.map((id) => cache.get(id)));
  clips.forEach((c, i) => normalizeFrames(c.data, { mean: opts.mean, std: opts.std, out: data.subarray(i * clipLen, (i + 1) * clipLen) }));
  return { data, shape: [ids.length, cache.frames, cache.size, cache.size, 3] };
}
