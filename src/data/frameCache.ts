/**
 * The frame cache: a manifest decoded once into shards of raw uint8 frames.
 *
 * Layout of `out/`:
 *   index.json             config (frames, size, strategy…), the plan, shard list, counts
 *   shard-00000.bin        clips back to back, each [T, size, size, 3] uint8
 *   shard-00000.json       { sha256, items: [{ id, offset, timestamps, fileSize, fileMtimeMs, … }], errors: [...] }
 *   errors.jsonl           one line per failed item, appended as each shard is committed
 *
 * Shard k holds the k-th run of `shardSize` usable manifest entries (planFrameCache), so a
 * shard is a unit of work any process can build (buildFrameCacheShard), alone or as a job of
 * a queue, with the same bytes. A shard's .bin is written under a temporary name and renamed,
 * then its .json the same way; the .json is the commit mark, and records the .bin's SHA-256.
 * A re-run after a crash deletes temporary files and any .bin without its .json, keeps every
 * committed shard, and decodes only what is missing.
 *
 * A cached item is reused only while what decides its bytes is unchanged: the video's path,
 * size and modification time and the clip's window (another manifest with the same ids, or a
 * re-encoded file, is decoded again; the other clips of its shard are copied over). A failed
 * item is tried again on the next build (once), and at once when its file changes. Each
 * shard's .bin is checked against its SHA-256 once per process before its clips are used; a
 * bad one is decoded again by the next build.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { appendFile, open, readdir, readFile, rename, rm, stat, mkdir } from 'node:fs/promises';
import path from 'node:path';
import pLimit, { type LimitFunction } from 'p-limit';
import type { ItemError } from '../util/itemError.js';
import type { ManifestEntry } from './types.js';
import { writeFileAtomic } from '../util/atomicWrite.js';
import { describeHolder, withDirLock } from '../util/dirLock.js';
import { normalizeFrames } from '../video/transforms.js';
import { checkSampleOptions, sampleItem, SAMPLE_STRATEGIES, type SampleOutcome, type SampleStrategy } from '../video/sampler.js';

const INDEX = 'index.json';
const ERROR_LOG = 'errors.jsonl';
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

/** What a cached item was made from: the file as it was (null: missing) and the clip's window. */
export interface SourceStamp {
  /** Size in bytes of the video when it was decoded; null when the file did not exist. */
  fileSize: number | null;
  /** Its modification time (ms since the epoch); null when the file did not exist. */
  fileMtimeMs: number | null;
  start?: number;
  end?: number;
}

export interface CachedClipMeta extends SourceStamp {
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
  /** Hex SHA-256 of the shard's .bin. */
  sha256?: string;
  items: CachedClipMeta[];
  errors: CachedError[];
}

/** A failure kept in a shard: which file, why, from what source, and how many builds tried it. */
export interface CachedError extends ItemError, Partial<SourceStamp> {
  /** Builds that tried this item with this source and failed; a failure is tried on one more build. */
  attempts?: number;
}

interface IndexFile extends FrameCacheConfig {
  format: string;
  version: number;
  shardSize: number;
  /** The manifest's plan: shard and item counts, and the checksum of its ids (see planFrameCache). */
  planned?: { shards: number; items: number; idsSha256: string };
  shards: string[];
  clips: number;
  /** Failed items in the committed shards and unusable manifest entries (reasons: errors.jsonl, the shards). */
  failed: number;
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
  /** Told about waits for another builder's lock, taken-over locks and corrupt shards; default console.warn. */
  onWarning?: (message: string) => void;
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
  /** Items of an earlier build decoded again because their file or window changed. */
  changed: number;
  /** Earlier failures tried again by this run (each is tried on one more build). */
  retried: number;
  /** Shards whose .bin no longer matched its SHA-256; their clips were decoded again. */
  corruptShards: string[];
  /** Clips of this run with slots filled from a frame more than one frame interval away. */
  padded: { id: string; padded: number }[];
  shards: number;
}

/**
 * The folder name a pipeline gives the cache of these settings inside its data folder:
 * `frames-8x224-uniform`; the seed is part of it only for `random`, the one strategy it changes.
 *
 * @example frameCacheDirName({ frames: 4, size: 32, strategy: 'random', seed: 1 }) // 'frames-4x32-random-s1'
 */
export function frameCacheDirName(c: FrameCacheConfig): string {
  const base = `frames-${c.frames}x${c.size}-${c.strategy}`;
  if (c.strategy === 'random') return `${base}-s${c.seed ?? 0}`;
  if (c.strategy === 'fps') return `${base}-${c.fps}`;
  return base;
}

/** Shards whose checksum was checked in this process: .bin path → (size, mtime, SHA-256 found). */
const verifiedShards = new Map<string, { size: number; mtimeMs: number; got: string }>();
const hashing = new Map<string, Promise<string>>();

/**
 * Whether a shard's .bin still has the SHA-256 its .json recorded. Read in full once per shard
 * per process (again only when the file changes), so checking costs one pass over the cache.
 * A shard without a recorded checksum cannot be checked and passes.
 */
async function shardIntact(bin: string, want: string | undefined): Promise<{ ok: boolean; got: string }> {
  if (want === undefined) return { ok: true, got: '' };
  const st = await stat(bin);
  const memo = verifiedShards.get(bin);
  if (memo && memo.size === st.size && memo.mtimeMs === st.mtimeMs) return { ok: memo.got === want, got: memo.got };
  // Readers of one shard at the same moment share one pass over it.
  const key = `${bin}\0${st.size}\0${st.mtimeMs}`;
  let pending = hashing.get(key);
  if (!pending) {
    pending = sha256File(bin).finally(() => hashing.delete(key));
    hashing.set(key, pending);
  }
  const got = await pending;
  verifiedShards.set(bin, { size: st.size, mtimeMs: st.mtimeMs, got });
  return { ok: got === want, got };
}

/** The source stamp of an item now (one stat). */
async function stampOf(it: FrameCacheItem): Promise<SourceStamp> {
  const st = await stat(path.resolve(it.video)).catch(() => null);
  const stamp: SourceStamp = { fileSize: st ? st.size : null, fileMtimeMs: st ? st.mtimeMs : null };
  if (it.start !== undefined) stamp.start = it.start;
  if (it.end !== undefined) stamp.end = it.end;
  return stamp;
}

function sameStamp(a: Partial<SourceStamp>, b: SourceStamp): boolean {
  return (a.fileSize ?? null) === b.fileSize && (a.fileMtimeMs ?? null) === b.fileMtimeMs && a.start === b.start && a.end === b.end;
}

type ItemVerdict =
  | { kind: 'keep-clip'; clip: CachedClipMeta }
  | { kind: 'keep-error'; error: CachedError }
  | { kind: 'decode'; stamp: SourceStamp; attempts: number; why: 'new' | 'changed' | 'retry' };

/** What to do with each planned item of a shard, given its committed records (if any) and the files now. */
async function judgeItems(file: ShardFile | null, shard: FrameCacheShardPlan): Promise<ItemVerdict[]> {
  const clips = new Map((file?.items ?? []).map((it) => [it.id, it]));
  const errors = new Map((file?.errors ?? []).flatMap((e) => (e.id === undefined ? [] : [[e.id, e] as const])));
  return Promise.all(shard.items.map(async (it): Promise<ItemVerdict> => {
    const stamp = await stampOf(it);
    const video = path.resolve(it.video);
    const clip = clips.get(it.id);
    if (clip && clip.video === video && sameStamp(clip, stamp)) return { kind: 'keep-clip', clip };
    const error = errors.get(it.id);
    if (error && path.resolve(error.source) === video && sameStamp(error, stamp)) {
      const attempts = error.attempts ?? 1;
      return attempts >= 2 ? { kind: 'keep-error', error } : { kind: 'decode', stamp, attempts: attempts + 1, why: 'retry' };
    }
    return { kind: 'decode', stamp, attempts: 1, why: clip || error ? 'changed' : 'new' };
  }));
}

const shardName = (n: number): string => `shard-${String(n).padStart(5, '0')}`;
const SHARD_RE = /^shard-(\d{5,})\.json$/;
// Temporary names: `<file>.tmp-<pid>` (writeFileAtomic) or `<file>.tmp-<pid>-<hex>` (shards,
// whose writers may be processes on other machines with the same pid).
const TMP_RE = /\.tmp-\d+(-[0-9a-f]+)?$/;

const writeAtomic = (file: string, data: Uint8Array | string): Promise<void> => writeFileAtomic(file, data, { sync: true });

/** Like writeAtomic, with a temporary name no other process (on any host) shares. */
async function writeShardFile(file: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.datasync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await rename(tmp, file);
}

interface ScanResult {
  shards: { name: string; number: number; file: ShardFile }[];
  /** Files removed because they were temporary or uncommitted. */
  discarded: string[];
}

/** Reads a shard's commit mark; null unless it is a shard file whose .bin has the size it names. */
async function readShardFile(dir: string, name: string): Promise<ShardFile | null> {
  try {
    const file = JSON.parse(await readFile(path.join(dir, `${name}.json`), 'utf8')) as ShardFile;
    if (file.format !== `${FORMAT}-shard` || !Array.isArray(file.items) || !Array.isArray(file.errors)) return null;
    const st = await stat(path.join(dir, `${name}.bin`)).catch(() => null);
    return st && st.size === file.bytes ? file : null;
  } catch {
    return null;
  }
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
    const file = await readShardFile(dir, base);
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
      const tmp = TMP_RE.test(name);
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

/** What a shard's decode needs of a manifest entry. */
export type FrameCacheItem = Pick<ManifestEntry, 'id' | 'video' | 'start' | 'end'>;

/** One unit of work: shard `number` holds exactly these items (clips or recorded failures). */
export interface FrameCacheShardPlan {
  number: number;
  name: string;
  items: FrameCacheItem[];
}

/**
 * How a manifest maps onto shards: its usable entries in manifest order, cut every
 * `shardSize`. The plan depends only on the entries and options, so every machine that
 * builds a shard of it writes the same bytes, and a shard is the same whoever builds it.
 */
export interface FrameCachePlan {
  config: FrameCacheConfig;
  shardSize: number;
  /** Entries given, usable or not. */
  total: number;
  shards: FrameCacheShardPlan[];
  /** Entries left out of the plan: malformed, or a repeated id. */
  manifestErrors: ItemError[];
  /** Checksum of the planned ids, shard by shard; `--verify` recomputes it from the shards. */
  idsSha256: string;
}

export interface PlanFrameCacheOptions {
  frames: number;
  size: number;
  strategy?: SampleStrategy;
  fps?: number;
  seed?: number;
  /** Clips per shard (default 32). */
  shardSize?: number;
  /** Per-clip ffmpeg time limit, checked here so a plan is only made from valid options. */
  timeoutMs?: number;
}

/** The ids a shard holds (clips and failures), as a checksum input: sorted, so either order agrees. */
const shardIdsText = (ids: string[]): string => [...ids].sort().join('\n');

function idsChecksum(perShard: string[][]): string {
  const h = createHash('sha256');
  for (const ids of perShard) h.update(`${shardIdsText(ids)}\n\n`);
  return h.digest('hex');
}

/**
 * Cuts a manifest into shards (see FrameCachePlan). Entries without an id or video, and
 * repeated ids (the first is kept), are left out and reported in `manifestErrors`.
 *
 * @example
 * const plan = planFrameCache(manifest.entries, { frames: 8, size: 224, shardSize: 32 });
 * plan.shards.length // ⌈usable entries / 32⌉
 */
export function planFrameCache(entries: ManifestEntry[] | FrameCacheItem[], opts: PlanFrameCacheOptions): FrameCachePlan {
  if (!Array.isArray(entries)) throw new Error('planFrameCache: entries must be an array of manifest entries');
  if (!opts) throw new Error('planFrameCache: opts { frames, size } are required');
  const strategy = opts.strategy ?? 'uniform';
  checkSampleOptions({ frames: opts.frames, size: opts.size, strategy, fps: opts.fps, timeoutMs: opts.timeoutMs }, 'planFrameCache');
  const shardSize = opts.shardSize ?? 32;
  if (!Number.isInteger(shardSize) || shardSize < 1) throw new Error(`planFrameCache: shardSize must be a positive integer, got ${opts.shardSize}`);
  const seen = new Set<string>();
  const manifestErrors: ItemError[] = [];
  const usable: FrameCacheItem[] = [];
  for (const e of entries) {
    if (!e || typeof e.id !== 'string' || typeof e.video !== 'string') {
      manifestErrors.push({ source: String(e?.video ?? ''), reason: `entry without id/video: ${JSON.stringify(e)}` });
      continue;
    }
    if (seen.has(e.id)) { manifestErrors.push({ source: e.video, id: e.id, reason: 'duplicate id in the manifest; kept the first' }); continue; }
    seen.add(e.id);
    const item: FrameCacheItem = { id: e.id, video: e.video };
    if (e.start !== undefined) item.start = e.start;
    if (e.end !== undefined) item.end = e.end;
    usable.push(item);
  }
  const shards: FrameCacheShardPlan[] = [];
  for (let k = 0; k * shardSize < usable.length; k++) {
    shards.push({ number: k, name: shardName(k), items: usable.slice(k * shardSize, (k + 1) * shardSize) });
  }
  return {
    config: configOf({ frames: opts.frames, size: opts.size, strategy, fps: opts.fps, seed: opts.seed }),
    shardSize, total: entries.length, shards, manifestErrors,
    idsSha256: idsChecksum(shards.map((s) => s.items.map((it) => it.id))),
  };
}

/** Whether a committed shard holds exactly the planned items. */
function shardMatches(file: ShardFile, plan: FrameCacheShardPlan): boolean {
  const ids = [...file.items.map((it) => it.id), ...file.errors.map((e) => e.id ?? '')];
  return ids.length === plan.items.length && shardIdsText(ids) === shardIdsText(plan.items.map((it) => it.id));
}

/**
 * Whether a committed shard can be used as it is: it holds the planned ids, every item's
 * source is unchanged, every failure has had its retry, and its .bin matches its SHA-256.
 */
async function shardCurrent(dir: string, file: ShardFile, plan: FrameCacheShardPlan): Promise<boolean> {
  if (!shardMatches(file, plan)) return false;
  const verdicts = await judgeItems(file, plan);
  if (verdicts.some((v) => v.kind === 'decode')) return false;
  return (await shardIntact(path.join(dir, `${plan.name}.bin`), file.sha256)).ok;
}

/**
 * One item through ffmpeg, tried a second time when the first attempt fails on a file that
 * exists (a decoder killed under load is not a bad video).
 */
async function decodeItem(it: FrameCacheItem, sampleOpts: Parameters<typeof sampleItem>[1]): Promise<SampleOutcome> {
  const item = { id: it.id, video: it.video, start: it.start, end: it.end };
  const first = await sampleItem(item, sampleOpts);
  if (first.ok || /file not found/.test(first.error.reason)) return first;
  const second = await sampleItem(item, sampleOpts);
  if (second.ok) return second;
  return { ...second, error: { ...second.error, reason: `${second.error.reason} (failed twice)` } };
}

export interface BuildShardOptions {
  /** Per-clip ffmpeg time limit. */
  timeoutMs?: number;
  /** ffmpeg processes at a time for this shard (default 2); ignored when `limit` is given. */
  concurrency?: number;
  /** A pool shared with other shards being built at once (p-limit). */
  limit?: LimitFunction;
  /** Called as each item finishes, decoded or failed. */
  onItem?: (o: SampleOutcome) => void;
}

export interface ShardBuildResult {
  name: string;
  /** Clips decoded (0 when the shard was already committed). */
  decoded: number;
  /** Items that failed, with reasons, in plan order. */
  errors: ItemError[];
  padded: { id: string; padded: number }[];
  /** The shard was found committed with the planned items and left as it was. */
  reused: boolean;
  /** Items decoded again because their file or window changed since the shard was built. */
  changed: number;
  /** Earlier failures tried again. */
  retried: number;
}

/**
 * Decodes one planned shard and commits it (.bin, then .json as the commit mark, each under a
 * temporary name then renamed). Idempotent: a shard already committed with the planned items
 * is kept, and two processes building the same shard write the same bytes, so a shard is never
 * duplicated or torn. A clip that fails is recorded in the shard with its reason.
 *
 * @example
 * const plan = planFrameCache(entries, { frames: 8, size: 224 });
 * await buildFrameCacheShard('cache/msrvtt', plan.config, plan.shards[0], { concurrency: 2 });
 */
export async function buildFrameCacheShard(
  out: string, config: FrameCacheConfig, shard: FrameCacheShardPlan, opts: BuildShardOptions = {},
): Promise<ShardBuildResult> {
  if (typeof out !== 'string' || !out) throw new Error('buildFrameCacheShard: out must be a folder path');
  if (!shard || !Number.isInteger(shard.number) || shard.name !== shardName(shard.number) || !Array.isArray(shard.items)) {
    throw new Error(`buildFrameCacheShard: shard must be one of planFrameCache's shards, got ${JSON.stringify(shard)?.slice(0, 200)}`);
  }
  checkSampleOptions({ ...config, timeoutMs: opts.timeoutMs }, 'buildFrameCacheShard');
  const dir = path.resolve(out);
  const existing = await readShardFile(dir, shard.name);
  const binPath = path.join(dir, `${shard.name}.bin`);
  const intact = existing ? (await shardIntact(binPath, existing.sha256)).ok : false;
  const verdicts = await judgeItems(existing && intact ? existing : null, shard);
  if (existing && intact && shardMatches(existing, shard) && verdicts.every((v) => v.kind !== 'decode')) {
    return { name: shard.name, decoded: 0, errors: existing.errors, padded: [], reused: true, changed: 0, retried: 0 };
  }
  const concurrency = opts.concurrency ?? 2;
  if (!opts.limit && (!Number.isInteger(concurrency) || concurrency < 1)) throw new Error(`buildFrameCacheShard: concurrency must be a positive integer, got ${opts.concurrency}`);
  const limit = opts.limit ?? pLimit(concurrency);
  const sampleOpts = { frames: config.frames, size: config.size, strategy: config.strategy, fps: config.fps, seed: config.seed, timeoutMs: opts.timeoutMs };
  const clipBytes = config.frames * config.size * config.size * 3;
  // Clips whose source is unchanged are copied from the old .bin (read before it is replaced).
  const kept = new Map<string, Uint8Array>();
  if (existing && intact) {
    const fh = await open(binPath, 'r');
    try {
      for (const v of verdicts) {
        if (v.kind !== 'keep-clip') continue;
        const data = new Uint8Array(clipBytes);
        await fh.read(data, 0, clipBytes, v.clip.offset);
        kept.set(v.clip.id, data);
      }
    } finally {
      await fh.close();
    }
  }
  type Slot = { ok: true; meta: CachedClipMeta; data: Uint8Array; padded: number } | { ok: false; error: CachedError };
  const slots = await Promise.all(shard.items.map((it, i) => limit(async (): Promise<Slot> => {
    const v = verdicts[i];
    if (v.kind === 'keep-clip') return { ok: true, meta: v.clip, data: kept.get(it.id)!, padded: 0 };
    if (v.kind === 'keep-error') return { ok: false, error: v.error };
    const o = await decodeItem(it, sampleOpts);
    opts.onItem?.(o);
    if (o.ok) {
      const meta: CachedClipMeta = {
        id: it.id, video: path.resolve(it.video), ...v.stamp, offset: 0,
        timestamps: o.clip.timestamps, frameTimes: o.clip.frameTimes, padded: o.clip.padded,
      };
      return { ok: true, meta, data: o.clip.data, padded: o.clip.padded };
    }
    return { ok: false, error: { ...o.error, source: path.resolve(it.video), ...v.stamp, attempts: v.attempts } };
  })));
  const ok = slots.filter((x): x is Extract<Slot, { ok: true }> => x.ok);
  const bin = new Uint8Array(ok.length * clipBytes);
  const items: CachedClipMeta[] = ok.map((x, i) => {
    bin.set(x.data, i * clipBytes);
    return { ...x.meta, offset: i * clipBytes };
  });
  const errors = slots.flatMap((x) => (x.ok ? [] : [x.error]));
  const sha256 = createHash('sha256').update(bin).digest('hex');
  const file: ShardFile = { format: `${FORMAT}-shard`, version: VERSION, clipBytes, bytes: bin.length, sha256, items, errors };
  // A stale commit mark must go first: between the two renames below it would vouch for the
  // new .bin.
  if (existing) await rm(path.join(dir, `${shard.name}.json`), { force: true });
  await writeShardFile(binPath, bin);
  await writeShardFile(path.join(dir, `${shard.name}.json`), JSON.stringify(file));
  const st = await stat(binPath);
  verifiedShards.set(binPath, { size: st.size, mtimeMs: st.mtimeMs, got: sha256 });
  const fresh = slots.flatMap((x, i) => (!x.ok && verdicts[i].kind === 'decode' ? [x.error] : []));
  if (fresh.length) await appendFile(path.join(dir, ERROR_LOG), fresh.map((e) => `${JSON.stringify({ shard: shard.name, ...e })}\n`).join(''));
  const decodedSlots = shard.items.map((it, i) => ({ it, v: verdicts[i], slot: slots[i] })).filter((x) => x.v.kind === 'decode');
  return {
    name: shard.name, errors, reused: false,
    decoded: decodedSlots.filter((x) => x.slot.ok).length,
    changed: verdicts.filter((v) => v.kind === 'decode' && v.why === 'changed').length,
    retried: verdicts.filter((v) => v.kind === 'decode' && v.why === 'retry').length,
    padded: decodedSlots.flatMap((x) => (x.slot.ok && x.slot.padded > 0 ? [{ id: x.it.id, padded: x.slot.padded }] : [])),
  };
}

/** What `prepareFrameCache` found: committed shards of the plan, by number. */
export interface PreparedFrameCache {
  out: string;
  committed: Map<number, { items: number; errors: ItemError[] }>;
  /** Shards whose .bin did not match its SHA-256 (removed, to be decoded again). */
  corrupt: string[];
  /** Leftover or stale files removed (temporary, uncommitted, or shards of another plan). */
  discarded: string[];
}

async function readIndex(indexPath: string, where: string): Promise<IndexFile | null> {
  let text: string;
  try {
    text = await readFile(indexPath, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`${where}: cannot read ${indexPath} (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text) as IndexFile;
  } catch (e) {
    throw new Error(`${where}: ${indexPath} is corrupt (${(e as Error).message}); likely the disk filled or the machine stopped while it was written. Delete ${path.dirname(indexPath)} and build the cache again`);
  }
}

/**
 * The index of an existing cache for a reader (`where` names the caller in errors): missing,
 * unreadable, corrupt or not a vlmargin index are each said with the path.
 */
async function readExistingIndex(dir: string, where: string): Promise<{ root: string; indexPath: string; index: IndexFile }> {
  if (typeof dir !== 'string' || !dir) throw new Error(`${where}: dir must be a folder path`);
  const root = path.resolve(dir);
  const indexPath = path.join(root, INDEX);
  let index: IndexFile | null;
  try {
    index = await readIndex(indexPath, where);
  } catch (e) {
    if (/is corrupt/.test((e as Error).message)) throw e;
    throw new Error(`${where}: ${indexPath} is unreadable (${(e as Error).message}); build it with \`vlmargin frames\``);
  }
  if (!index) throw new Error(`${where}: ${indexPath} is missing; build the cache with \`vlmargin frames\``);
  if (index.format !== FORMAT || !SAMPLE_STRATEGIES.includes(index.strategy) || !(index.frames > 0) || !(index.size > 0)) {
    throw new Error(`${where}: ${indexPath} is not a vlmargin frame cache index`);
  }
  return { root, indexPath, index };
}

/** What an existing cache was built for: its settings and the plan of its entries (see planFrameCache). */
export interface FrameCachePlanOf {
  config: FrameCacheConfig;
  /** Absent in an index that did not record its plan. */
  planned?: { shards: number; items: number; idsSha256: string };
  complete: boolean;
}

/**
 * The settings and plan a cache folder was built for, or null when it holds no index.json
 * (nothing built there yet). A build for another plan replaces the folder's shards, so a caller
 * that was handed the folder can refuse first.
 *
 * @example
 * const had = await readFrameCachePlan('cache/msrvtt');
 * if (had && had.planned?.idsSha256 !== planFrameCache(entries, opts).idsSha256) throw new Error('…');
 */
export async function readFrameCachePlan(dir: string): Promise<FrameCachePlanOf | null> {
  if (typeof dir !== 'string' || !dir) throw new Error('readFrameCachePlan: dir must be a folder path');
  const indexPath = path.join(path.resolve(dir), INDEX);
  const index = await readIndex(indexPath, 'readFrameCachePlan');
  if (!index) return null;
  if (index.format !== FORMAT) throw new Error(`readFrameCachePlan: ${indexPath} is not a vlmargin frame cache index`);
  return { config: configOf(index), planned: index.planned, complete: index.complete === true };
}

/**
 * Readies a folder for a plan: refuses a cache built with other options, removes temporary
 * files, uncommitted shards and committed shards whose items differ from the plan (an edited
 * manifest), and writes the index (not yet complete). Call it holding the folder's lock.
 */
export async function prepareFrameCache(out: string, plan: FrameCachePlan, opts: { onWarning?: (message: string) => void } = {}): Promise<PreparedFrameCache> {
  const dir = path.resolve(out);
  await mkdir(dir, { recursive: true });
  const indexPath = path.join(dir, INDEX);
  const existing = await readIndex(indexPath, 'buildFrameCache');
  if (existing) {
    if (existing.format !== FORMAT) throw new Error(`buildFrameCache: ${dir} holds something other than a frame cache (${indexPath})`);
    const had = configOf(existing);
    if (!sameConfig(had, plan.config)) {
      throw new Error(`buildFrameCache: ${dir} was built with ${JSON.stringify(had)}, asked ${JSON.stringify(plan.config)}; use another frame cache folder or delete it`);
    }
  }
  const { shards, discarded } = await scanShards(dir, true);
  const committed: PreparedFrameCache['committed'] = new Map();
  const corrupt: string[] = [];
  for (const s of shards) {
    const planned = plan.shards[s.number];
    const bin = path.join(dir, `${s.name}.bin`);
    const intact = await shardIntact(bin, s.file.sha256);
    if (!intact.ok) {
      corrupt.push(s.name);
      opts.onWarning?.(`frame cache ${dir}: ${s.name}.bin is corrupt (SHA-256 ${intact.got}, its .json records ${s.file.sha256}); its clips are decoded again`);
    } else if (planned && s.name === planned.name && shardMatches(s.file, planned)) {
      if (await shardCurrent(dir, s.file, planned)) committed.set(s.number, { items: s.file.items.length, errors: s.file.errors });
      // Not current (a source changed, a failure due for its retry): kept, so its unchanged clips are copied over.
      continue;
    }
    await rm(path.join(dir, `${s.name}.json`), { force: true });
    await rm(bin, { force: true });
    discarded.push(`${s.name}.json`, `${s.name}.bin`);
  }
  await writeFrameCacheIndex(dir, plan, committed);
  return { out: dir, committed, corrupt, discarded };
}

/**
 * Writes `index.json` from the plan and the committed shards; the cache is complete when every
 * planned shard is committed. The same plan and shards give the same bytes, whoever built them.
 */
export async function writeFrameCacheIndex(out: string, plan: FrameCachePlan, committed: PreparedFrameCache['committed']): Promise<void> {
  const numbers = [...committed.keys()].sort((a, b) => a - b);
  const index: IndexFile = {
    format: FORMAT, version: VERSION, ...plan.config, shardSize: plan.shardSize,
    planned: { shards: plan.shards.length, items: plan.shards.reduce((n, s) => n + s.items.length, 0), idsSha256: plan.idsSha256 },
    shards: numbers.map(shardName),
    clips: numbers.reduce((n, k) => n + committed.get(k)!.items, 0),
    failed: numbers.reduce((n, k) => n + committed.get(k)!.errors.length, 0) + plan.manifestErrors.length,
    complete: numbers.length === plan.shards.length,
  };
  await writeAtomic(path.join(path.resolve(out), INDEX), `${JSON.stringify(index, null, 1)}\n`);
}

/**
 * Reads the committed shards of a plan back from the folder (after workers elsewhere built
 * them), removes what killed workers left, and writes the index; returns the committed shards.
 */
export async function finishFrameCache(out: string, plan: FrameCachePlan): Promise<PreparedFrameCache['committed']> {
  const dir = path.resolve(out);
  await scanShards(dir, true);
  const committed: PreparedFrameCache['committed'] = new Map();
  for (const s of plan.shards) {
    const file = await readShardFile(dir, s.name);
    if (file && shardMatches(file, s)) committed.set(s.number, { items: file.items.length, errors: file.errors });
  }
  await writeFrameCacheIndex(dir, plan, committed);
  return committed;
}

/**
 * Decodes the videos of a manifest once into a sharded frame cache, resuming a cache that a
 * killed run left behind (committed shards are kept and not decoded again). Bad videos are
 * recorded with reasons and skipped. The shards are those of `planFrameCache`, built with
 * `buildFrameCacheShard`, so the result is byte for byte what workers on a queue build.
 *
 * @example
 * const s = await buildFrameCache(manifest.entries, { out: 'cache/msrvtt-8x224', frames: 8, size: 224 });
 * console.log(s.decoded, s.reused, s.skipped.length);
 */
export async function buildFrameCache(entries: ManifestEntry[], opts: BuildFrameCacheOptions): Promise<FrameCacheSummary> {
  if (!opts || typeof opts.out !== 'string' || !opts.out) throw new Error('buildFrameCache: opts.out must be a folder path');
  if (!Array.isArray(entries)) throw new Error('buildFrameCache: entries must be an array of manifest entries');
  const plan = planFrameCache(entries, opts);
  const concurrency = opts.concurrency ?? 2;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error(`buildFrameCache: concurrency must be a positive integer, got ${opts.concurrency}`);
  const out = path.resolve(opts.out);
  const ready = await completeCacheSummary(out, plan).catch(() => null);
  if (ready) return ready;
  try {
    await mkdir(out, { recursive: true });
  } catch (e) {
    throw new Error(`buildFrameCache: cannot create the cache folder ${out} (${(e as Error).message})`);
  }
  const warn = opts.onWarning ?? ((m: string) => console.warn(m));
  // Two runs building the same cache at once would interleave shard writes and indexes.
  return withDirLock(out, () => buildFrameCacheLocked(plan, { ...opts, onWarning: warn }, concurrency), {
    what: 'frame cache',
    onWait: (h, waited) => warn(`frame cache ${out}: ${waited ? `still waiting (${Math.round(waited / 1000)} s)` : 'waiting'} for ${describeHolder(h)}, which is building it`),
    onTakeover: (h, why) => warn(`frame cache ${out}: took over the lock of ${describeHolder(h)}: ${why}`),
  });
}

/**
 * The summary of a build with nothing to do (a complete index of this plan, every shard
 * current and intact), or null. Takes no lock and writes nothing, so a complete cache also
 * serves from a read-only filesystem.
 */
async function completeCacheSummary(out: string, plan: FrameCachePlan): Promise<FrameCacheSummary | null> {
  const index = await readIndex(path.join(out, INDEX), 'buildFrameCache');
  if (!index || index.format !== FORMAT || !index.complete || !sameConfig(configOf(index), plan.config) || index.planned?.idsSha256 !== plan.idsSha256) return null;
  const errors: ItemError[] = [];
  let reused = 0;
  for (const s of plan.shards) {
    const file = await readShardFile(out, s.name);
    if (!file || !(await shardCurrent(out, file, s))) return null;
    errors.push(...file.errors);
    reused += s.items.length;
  }
  return {
    out, total: plan.total, decoded: 0, reused, changed: 0, retried: 0, corruptShards: [],
    skipped: [...errors, ...plan.manifestErrors], padded: [], shards: plan.shards.length,
  };
}

async function buildFrameCacheLocked(plan: FrameCachePlan, opts: BuildFrameCacheOptions, concurrency: number): Promise<FrameCacheSummary> {
  const out = path.resolve(opts.out);
  const { committed, corrupt } = await prepareFrameCache(out, plan, { onWarning: opts.onWarning });
  const todo = plan.shards.filter((s) => !committed.has(s.number));
  let reused = plan.shards.reduce((n, s) => n + (committed.has(s.number) ? s.items.length : 0), 0);
  // A shard to rebuild may keep some of its items (unchanged sources, failures past their retry).
  let todoItems = 0;
  for (const s of todo) {
    const file = await readShardFile(out, s.name);
    const usable = file && (await shardIntact(path.join(out, `${s.name}.bin`), file.sha256)).ok ? file : null;
    const decode = (await judgeItems(usable, s)).filter((v) => v.kind === 'decode').length;
    todoItems += decode;
    reused += s.items.length - decode;
  }
  const padded: FrameCacheSummary['padded'] = [];
  let decoded = 0;
  let skipped = 0;
  let done = 0;
  let changed = 0;
  let retried = 0;

  // One ffmpeg pool across shards; a few shards in flight so the pool never waits on one
  // shard's last clip, and the index rewritten after each commit, one write at a time.
  const limit = pLimit(concurrency);
  const shardPool = pLimit(concurrency + 1);
  let indexWrite: Promise<void> = Promise.resolve();
  await Promise.all(todo.map((shard) => shardPool(async () => {
    const r = await buildFrameCacheShard(out, plan.config, shard, {
      limit, timeoutMs: opts.timeoutMs,
      onItem: (o) => {
        done++;
        if (o.ok) decoded++; else skipped++;
        opts.onProgress?.({ total: plan.total, done, todo: todoItems, decoded, reused, skipped, id: o.item.id! });
      },
    }).catch((e: Error) => { throw new Error(`buildFrameCache: writing ${shard.name} in ${out} failed: ${e.message}`); });
    padded.push(...r.padded);
    changed += r.changed;
    retried += r.retried;
    committed.set(shard.number, { items: shard.items.length - r.errors.length, errors: r.errors });
    indexWrite = indexWrite.then(() => writeFrameCacheIndex(out, plan, committed));
    await indexWrite;
  })));
  await writeFrameCacheIndex(out, plan, committed);
  const order = new Map(plan.shards.flatMap((s) => s.items.map((it, i) => [it.id, s.number * plan.shardSize + i] as const)));
  padded.sort((a, b) => order.get(a.id)! - order.get(b.id)!);
  return {
    out, total: plan.total, decoded, reused, changed, retried, corruptShards: corrupt,
    skipped: [...plan.shards.flatMap((s) => committed.get(s.number)?.errors ?? []), ...plan.manifestErrors],
    padded, shards: committed.size,
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
  const { root, index } = await readExistingIndex(dir, 'openFrameCache');
  const config = configOf(index);
  const clipBytes = config.frames * config.size * config.size * 3;
  const { shards } = await scanShards(root, false);
  const where = new Map<string, { shard: string; sha256?: string; meta: CachedClipMeta }>();
  const errors: ItemError[] = [];
  for (const s of shards) {
    if (s.file.clipBytes !== clipBytes) throw new Error(`openFrameCache: ${path.join(root, `${s.name}.json`)} holds clips of ${s.file.clipBytes} bytes, the index says ${clipBytes}`);
    for (const it of s.file.items) where.set(it.id, { shard: path.join(root, `${s.name}.bin`), sha256: s.file.sha256, meta: it });
    errors.push(...s.file.errors);
  }
  const lookup = (id: string): { shard: string; sha256?: string; meta: CachedClipMeta } => {
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
      const check = await shardIntact(w.shard, w.sha256).catch((e: Error) => ({ ok: false, got: `unreadable: ${e.message}` }));
      if (!check.ok) {
        throw new Error(`frame cache ${w.shard} is corrupt (SHA-256 ${check.got}, its .json records ${w.sha256}); build the cache again (\`vlmargin frames\`, or rerun the pipeline) to decode its clips again`);
      }
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

/** What `verifyFrameCache` found. */
export interface FrameCacheReport {
  dir: string;
  /** Clips in the committed shards that passed every check. */
  clips: number;
  /** Items recorded as failed (with reasons) in those shards. */
  failed: number;
  /** Committed shards that passed every check. */
  shards: number;
  /** Every shard of the manifest's plan is committed, intact, and holds the planned ids. */
  complete: boolean;
  /** The plan the index records (absent in caches from before plans were recorded). */
  planned: { shards: number; items: number } | null;
  /** Shards whose .json records no checksum, so only their sizes were checked. */
  unchecked: number;
  /** Temporary or uncommitted files (a build in progress, or one that was killed). */
  leftovers: number;
  /** Each thing wrong, naming the file. */
  problems: string[];
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Checks a frame cache folder: every committed shard against its .json (sizes, offsets, the
 * SHA-256 of its .bin), and the set of shards against the plan recorded in the index. Reads
 * every byte once; changes nothing.
 *
 * @example
 * const r = await verifyFrameCache('cache/msrvtt-8x224');
 * r.complete; r.problems // e.g. ['shard-00003.bin: SHA-256 … differs from the … its .json records']
 */
export async function verifyFrameCache(dir: string): Promise<FrameCacheReport> {
  const { root, indexPath, index } = await readExistingIndex(dir, 'verifyFrameCache');
  const clipBytes = index.frames * index.size * index.size * 3;
  const names = (await readdir(root)).sort();
  const problems: string[] = [];
  const good = new Map<number, string[]>();
  let clips = 0;
  let failed = 0;
  let unchecked = 0;
  let leftovers = 0;
  const committedBins = new Set<string>();
  for (const name of names) {
    const m = SHARD_RE.exec(name);
    if (!m) continue;
    const base = name.slice(0, -'.json'.length);
    const bad = (what: string): void => { problems.push(`${base}: ${what}`); };
    let file: ShardFile;
    try {
      file = JSON.parse(await readFile(path.join(root, name), 'utf8')) as ShardFile;
    } catch (e) {
      bad(`${name} is unreadable (${(e as Error).message})`);
      continue;
    }
    if (file?.format !== `${FORMAT}-shard` || !Array.isArray(file.items) || !Array.isArray(file.errors)) { bad(`${name} is not a shard record`); continue; }
    committedBins.add(`${base}.bin`);
    const st = await stat(path.join(root, `${base}.bin`)).catch(() => null);
    if (!st) { bad(`${base}.bin is missing`); continue; }
    if (file.clipBytes !== clipBytes) { bad(`clips of ${file.clipBytes} bytes, the index says ${clipBytes}`); continue; }
    if (file.bytes !== file.items.length * clipBytes) { bad(`${name} lists ${file.items.length} clips but ${file.bytes} bytes`); continue; }
    if (st.size !== file.bytes) { bad(`${base}.bin is ${st.size} bytes, its .json says ${file.bytes}`); continue; }
    const off = file.items.findIndex((it, i) => it.offset !== i * clipBytes);
    if (off >= 0) { bad(`clip ${JSON.stringify(file.items[off].id)} at offset ${file.items[off].offset}, expected ${off * clipBytes}`); continue; }
    if (typeof file.sha256 === 'string') {
      const got = await sha256File(path.join(root, `${base}.bin`));
      if (got !== file.sha256) { bad(`${base}.bin has SHA-256 ${got}, its .json records ${file.sha256}`); continue; }
    } else {
      unchecked++;
    }
    good.set(Number(m[1]), [...file.items.map((it) => it.id), ...file.errors.map((e) => e.id ?? '')]);
    clips += file.items.length;
    failed += file.errors.length;
  }
  for (const name of names) {
    if (TMP_RE.test(name) || (/^shard-\d{5,}\.bin$/.test(name) && !committedBins.has(name))) leftovers++;
  }
  const p = index.planned;
  let complete: boolean;
  if (p) {
    const numbers = [...good.keys()].sort((a, b) => a - b);
    const all = numbers.length === p.shards && numbers.every((k, i) => k === i);
    complete = problems.length === 0 && all && idsChecksum(numbers.map((k) => good.get(k)!)) === p.idsSha256;
    if (problems.length === 0 && all && !complete) problems.push(`${indexPath}: the shards hold other ids than the manifest's plan (a build from another manifest into this folder?)`);
  } else {
    complete = problems.length === 0 && index.complete === true;
  }
  return {
    dir: root, clips, failed, shards: good.size, complete,
    planned: p ? { shards: p.shards, items: p.items } : null, unchecked, leftovers, problems,
  };
}

/** A frame cache seen shard by shard: its config and committed shards, nothing held per clip. */
export interface FrameCacheShards extends FrameCacheConfig {
  dir: string;
  clipBytes: number;
  /** Committed shard names, in shard order. */
  shards: string[];
}

/**
 * Lists the committed shards of a cache without reading their clips (memory per shard, not
 * per clip), for readers that stream it shard by shard.
 *
 * @example const { shards, clipBytes } = await listFrameCacheShards('cache/webvid-8x224');
 */
export async function listFrameCacheShards(dir: string): Promise<FrameCacheShards> {
  const { root, index } = await readExistingIndex(dir, 'listFrameCacheShards');
  const config = configOf(index);
  const shards = (await readdir(root)).filter((n) => SHARD_RE.test(n))
    .map((n) => n.slice(0, -'.json'.length)).sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)));
  return { ...config, dir: root, clipBytes: config.frames * config.size * config.size * 3, shards };
}

/**
 * One shard's clip records, and with `pixels` its whole .bin in one read; null when the shard
 * is not committed (its .json or .bin missing or of the wrong size).
 *
 * @example const s = await readFrameCacheShard(dir, 'shard-00000', { pixels: true }); s?.items[0].offset
 */
export async function readFrameCacheShard(dir: string, name: string, opts: { pixels?: boolean } = {}): Promise<{ items: CachedClipMeta[]; data: Uint8Array | null } | null> {
  const root = path.resolve(dir);
  const file = await readShardFile(root, name);
  if (!file) return null;
  const bin = path.join(root, `${name}.bin`);
  const data: Uint8Array | null = opts.pixels ? await readFile(bin) : null;
  if (data && data.length !== file.bytes) throw new Error(`frame cache ${root}: ${name}.bin changed while it was read (${data.length} bytes, its .json says ${file.bytes})`);
  if (data && file.sha256 !== undefined) {
    // Checked once per process, as openFrameCache does, from the bytes already in hand.
    const st = await stat(bin);
    const memo = verifiedShards.get(bin);
    const got = memo && memo.size === st.size && memo.mtimeMs === st.mtimeMs ? memo.got : createHash('sha256').update(data).digest('hex');
    verifiedShards.set(bin, { size: st.size, mtimeMs: st.mtimeMs, got });
    if (got !== file.sha256) throw new Error(`frame cache ${bin} is corrupt (SHA-256 ${got}, its .json records ${file.sha256}); build the cache again (\`vlmargin frames\`) to decode its clips again`);
  }
  return { items: file.items, data };
}
