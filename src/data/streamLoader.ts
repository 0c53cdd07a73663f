/**
 * StreamLoader: batches from a frame cache read shard by shard, in a seeded shard order,
 * through a shuffle buffer (the tf.data / WebDataset scheme), so memory is the buffer plus
 * one shard whatever the size of the cache. Its position is saved as JSON and resumed exactly:
 * the shuffle's draws depend only on clip ids, so a resume replays the epoch's choices from
 * the shards' .json records, without reading pixels, and reads only the clips then in the
 * buffer.
 *
 * Memory: `shuffleBuffer` clips (T·S²·3 bytes each), one shard's .bin while it is dealt into
 * the buffer, two batches of floats, and per cached clip only what the caption table holds.
 */
import { open } from 'node:fs/promises';
import path from 'node:path';
import { tf } from '../backend/tf.js';
import { createRng, hashSeed, type Rng } from '../util/rng.js';
import { normalizeFrames } from '../video/transforms.js';
import { listFrameCacheShards, readFrameCacheShard, type FrameCacheShards } from './frameCache.js';
import { loaderKindOf, type Batch, type CaptionTable } from './loader.js';

/** The exact position of a StreamLoader; `StreamLoader.open(…, { resumeFrom })` continues from it. */
export interface StreamLoaderState {
  epoch: number;
  /** Batches already handed out in this epoch. */
  position: number;
  seed: number;
  batchSize: number;
  shuffleBuffer: number;
}

export interface StreamLoaderOptions {
  batchSize: number;
  /** Clips held for shuffling; larger mixes better and costs T·S²·3 bytes per clip. */
  shuffleBuffer: number;
  /** Seed of the shard order, the buffer's draws and the caption choices (default 0). */
  seed?: number;
  /** Shuffle (default true); false reads shards and clips in order. */
  shuffle?: boolean;
  /** Drop the last incomplete batch of an epoch (default true). */
  dropLast?: boolean;
  /** Prepare the next batch while the current one is used (default true). */
  prefetch?: boolean;
  /** Only these videos (e.g. one split); default every cached video that has a caption. */
  videoIds?: Iterable<string>;
  resumeFrom?: StreamLoaderState;
  mean?: readonly number[];
  std?: readonly number[];
  /** Hand frames out as a tf.Tensor5D (the caller disposes it) instead of a Float32Array. */
  asTensor?: boolean;
  /**
   * `one` (default): each clip with one of its captions, drawn. `all`: each clip with every
   * caption (text rows > clips; `captionVideo` maps them), as BatchLoader's option.
   */
  captionsPerVideo?: 'one' | 'all';
  /**
   * Relative chance of each caption-table row being drawn for its clip (`one`), e.g. by
   * caption source; default uniform. A clip whose captions all weigh 0 draws uniformly.
   */
  captionWeights?: ArrayLike<number>;
  /**
   * New frames every epoch, as BatchLoader's option of the same name: the cache holds
   * `count × k` candidate frames per clip and each epoch takes one at random from each of
   * `count` equal segments, from a stream seeded by (seed, epoch, video), so both loaders pick
   * the same frames for a video in an epoch and a resume picks them again.
   */
  randomFrames?: { count: number };
}

interface Slot {
  id: string;
  shard: string;
  offset: number;
  /** The clip's bytes; null for a clip dealt during a resume's replay (read when handed out). */
  data: Uint8Array | null;
}

/** A clip and its caption-table rows for this epoch (one row, or all of them with `captionsPerVideo: 'all'`). */
interface Pick { slot: Slot; rows: readonly number[] }

/**
 * @example
 * const loader = await StreamLoader.open('cache/webvid-8x224', table, { batchSize: 256, shuffleBuffer: 4096, seed: 1 });
 * const b = await loader.next();      // b.frames: Float32Array [256, 8, 224, 224, 3]
 * const saved = loader.state();       // JSON; StreamLoader.open(dir, table, { …, resumeFrom: saved })
 */
export class StreamLoader<T extends boolean = false> {
  readonly batchSize: number;
  readonly batchesPerEpoch: number;
  /** Cached clips with a caption (and in `videoIds`), counted once when opened. */
  readonly clips: number;
  readonly frames: number;
  readonly size: number;
  private readonly cache: FrameCacheShards;
  private readonly shards: string[];
  private readonly rowsOf: Map<string, number[]>;
  private readonly table: CaptionTable;
  private readonly opts: StreamLoaderOptions;
  private readonly seed: number;
  private epoch = 0;
  private position = 0;
  private stream: AsyncGenerator<Pick> | null = null;
  private loadPixels = true;
  private pending: Promise<RawBatch | null> | null = null;
  private busy = false;
  private broken: Error | null = null;

  private constructor(cache: FrameCacheShards, shards: string[], clips: number, rowsOf: Map<string, number[]>, table: CaptionTable, opts: StreamLoaderOptions) {
    this.cache = cache;
    this.shards = shards;
    this.clips = clips;
    this.rowsOf = rowsOf;
    this.table = table;
    this.opts = opts;
    this.seed = opts.seed ?? 0;
    this.batchSize = opts.batchSize;
    this.frames = opts.randomFrames?.count ?? cache.frames;
    this.size = cache.size;
    this.batchesPerEpoch = (opts.dropLast ?? true) ? Math.floor(clips / opts.batchSize) : Math.ceil(clips / opts.batchSize);
  }

  /** Opens a cache for streaming: one pass over the shards' records counts the usable clips. */
  static async open<T extends boolean = false>(dir: string, captions: CaptionTable, opts: StreamLoaderOptions & { asTensor?: T }): Promise<StreamLoader<T>> {
    if (!opts || !Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`StreamLoader: batchSize must be a positive integer, got ${opts?.batchSize}`);
    if (!Number.isInteger(opts.shuffleBuffer) || opts.shuffleBuffer < 1) throw new Error(`StreamLoader: shuffleBuffer must be a positive integer (clips), got ${opts.shuffleBuffer}`);
    if (!captions || !Array.isArray(captions.videoIds) || !(captions.ids instanceof Int32Array) || captions.ids.length !== captions.videoIds.length * captions.maxLen) {
      throw new Error('StreamLoader: captions must be a CaptionTable { videoIds, ids, mask, maxLen } (see encodeCaptions)');
    }
    if (opts.captionsPerVideo !== undefined && opts.captionsPerVideo !== 'one' && opts.captionsPerVideo !== 'all') {
      throw new Error(`StreamLoader: captionsPerVideo must be 'one' or 'all', got ${JSON.stringify(opts.captionsPerVideo)}`);
    }
    const w = opts.captionWeights;
    if (w !== undefined && (w.length !== captions.videoIds.length || Array.from(w).some((x) => !(x >= 0) || !Number.isFinite(x)))) {
      throw new Error(`StreamLoader: captionWeights must hold ${captions.videoIds.length} finite weights ≥ 0 (one per caption-table row)`);
    }
    const cache = await listFrameCacheShards(dir);
    const rf = opts.randomFrames;
    if (rf !== undefined && (!Number.isInteger(rf.count) || rf.count < 1 || cache.frames % rf.count !== 0)) {
      throw new Error(`StreamLoader: randomFrames.count must divide the cache's ${cache.frames} frames per clip, got ${rf?.count}`);
    }
    const allowed = opts.videoIds ? new Set(opts.videoIds) : null;
    const rowsOf = new Map<string, number[]>();
    captions.videoIds.forEach((v, r) => {
      if (allowed && !allowed.has(v)) return;
      const list = rowsOf.get(v);
      if (list) list.push(r); else rowsOf.set(v, [r]);
    });
    const shards: string[] = [];
    let clips = 0;
    for (const name of cache.shards) {
      const s = await readFrameCacheShard(cache.dir, name);
      if (!s) continue;
      const n = s.items.reduce((k, it) => k + (rowsOf.has(it.id) ? 1 : 0), 0);
      if (n > 0) { shards.push(name); clips += n; }
    }
    const dropLast = opts.dropLast ?? true;
    if ((dropLast ? Math.floor(clips / opts.batchSize) : Math.ceil(clips / opts.batchSize)) === 0) {
      throw new Error(`StreamLoader: ${clips} cached videos with captions in ${cache.dir} make no ${dropLast ? 'full ' : ''}batch of ${opts.batchSize}`);
    }
    const loader = new StreamLoader<T>(cache, shards, clips, rowsOf, captions, opts);
    const r = opts.resumeFrom;
    if (r) {
      if (loaderKindOf(r) === 'random-access') {
        throw new Error(`StreamLoader: resumeFrom ${JSON.stringify(r)} is a BatchLoader's position (the random-access loader's); it cannot place this streaming loader: resume with BatchLoader, or start without resumeFrom`);
      }
      const ok = Number.isInteger(r.epoch) && r.epoch >= 0 && Number.isInteger(r.position) && r.position >= 0 && r.position < loader.batchesPerEpoch && Number.isInteger(r.seed);
      if (!ok) throw new Error(`StreamLoader: resumeFrom ${JSON.stringify(r)} is not a valid state for ${loader.batchesPerEpoch} batches per epoch`);
      if (r.batchSize !== opts.batchSize || r.shuffleBuffer !== opts.shuffleBuffer) {
        throw new Error(`StreamLoader: resumeFrom was saved with batchSize ${r.batchSize} and shuffleBuffer ${r.shuffleBuffer}, this loader has ${opts.batchSize} and ${opts.shuffleBuffer}`);
      }
      await loader.seek(r.epoch, r.position, r.seed);
    }
    return loader;
  }

  /** Where the loader stands: the next `next()` returns batch `position` of `epoch`. JSON-safe. */
  state(): StreamLoaderState {
    return { epoch: this.epoch, position: this.position, seed: this.seed, batchSize: this.batchSize, shuffleBuffer: this.opts.shuffleBuffer };
  }

  /**
   * The next batch; epochs roll over without end. Do not call again before it resolves. After
   * a failed read the loader refuses further calls: reopen it with `resumeFrom: state()`.
   */
  async next(): Promise<Batch<T extends true ? tf.Tensor5D : Float32Array>> {
    if (this.busy) throw new Error('StreamLoader.next: called again before the previous call resolved');
    if (this.broken) throw new Error(`StreamLoader.next: an earlier read failed (${this.broken.message}); reopen with resumeFrom: state()`);
    this.busy = true;
    try {
      const epoch = this.epoch;
      const position = this.position;
      let raw: RawBatch | null;
      try {
        raw = this.pending ? await this.pending : await this.take();
        this.pending = null;
      } catch (e) {
        this.broken = e as Error;
        throw e;
      }
      if (!raw) throw new Error('StreamLoader: an epoch ended early (a shard vanished while training?)');
      this.position++;
      if (this.position === this.batchesPerEpoch) {
        this.epoch++;
        this.position = 0;
        this.stream = null;
      }
      if (this.opts.prefetch ?? true) {
        this.pending = this.take();
        this.pending.catch(() => undefined);
      }
      const B = raw.videoId.length;
      const framesShape: Batch<unknown>['framesShape'] = [B, this.frames, this.size, this.size, 3];
      const frames = this.opts.asTensor ? tf.tensor5d(raw.frames, framesShape, 'float32') : raw.frames;
      return {
        frames: frames as T extends true ? tf.Tensor5D : Float32Array,
        framesShape, ids: raw.ids, mask: raw.mask, textShape: [raw.index.length, this.table.maxLen],
        index: raw.index, videoId: raw.videoId, epoch, step: position,
        ...(raw.captionVideo ? { captionVideo: raw.captionVideo } : {}),
      };
    } finally {
      this.busy = false;
    }
  }

  /** Replays the choices of `epoch` up to batch `position` without reading pixels. */
  private async seek(epoch: number, position: number, seed: number): Promise<void> {
    if (seed !== this.seed) throw new Error(`StreamLoader: resumeFrom was saved with seed ${seed}, this loader has ${this.seed}`);
    this.epoch = epoch;
    this.position = position;
    this.stream = this.epochStream(epoch);
    this.loadPixels = false;
    for (let i = 0; i < position * this.batchSize; i++) {
      const r = await this.stream.next();
      if (r.done) throw new Error(`StreamLoader: the cache holds fewer clips than when the state was saved (epoch ${epoch}, batch ${position})`);
    }
    this.loadPixels = true;
  }

  /** The next batch's clips and captions, read; null when the epoch has too few left. */
  private async take(): Promise<RawBatch | null> {
    const epoch = this.epoch;
    this.stream ??= this.epochStream(epoch);
    const picks: Pick[] = [];
    while (picks.length < this.batchSize) {
      const r = await this.stream.next();
      if (r.done) break;
      picks.push(r.value);
    }
    if (picks.length === 0 || (picks.length < this.batchSize && (this.opts.dropLast ?? true))) return null;
    const clipLen = this.cache.clipBytes;
    const frames = new Float32Array(picks.length * clipLen);
    for (let i = 0; i < picks.length; i++) {
      const s = picks[i].slot;
      const data = s.data ?? await readClip(path.join(this.cache.dir, `${s.shard}.bin`), s.offset, clipLen, s.id);
      normalizeFrames(data, { mean: this.opts.mean, std: this.opts.std, out: frames.subarray(i * clipLen, (i + 1) * clipLen) });
      s.data = null;
    }
    const L = this.table.maxLen;
    const rows = picks.flatMap((p) => p.rows);
    const ids = new Int32Array(rows.length * L);
    const mask = new Int32Array(rows.length * L);
    rows.forEach((r, i) => {
      ids.set(this.table.ids.subarray(r * L, (r + 1) * L), i * L);
      mask.set(this.table.mask.subarray(r * L, (r + 1) * L), i * L);
    });
    const raw: RawBatch = { frames: this.opts.randomFrames ? this.pickFrames(frames, picks, epoch) : frames, ids, mask, index: rows, videoId: picks.map((p) => p.slot.id) };
    if (this.opts.captionsPerVideo === 'all') raw.captionVideo = Int32Array.from(picks.flatMap((p, i) => p.rows.map(() => i)));
    return raw;
  }

  /** One frame from each of `count` equal segments of every clip's candidates, drawn per (seed, epoch, video). */
  private pickFrames(all: Float32Array, picks: Pick[], epoch: number): Float32Array {
    const count = this.opts.randomFrames!.count;
    const cached = this.cache.frames;
    const per = cached / count;
    const frameLen = this.size * this.size * 3;
    const out = new Float32Array(picks.length * count * frameLen);
    picks.forEach((p, i) => {
      const rng = createRng(hashSeed(hashSeed(this.seed, epoch), p.slot.id));
      for (let j = 0; j < count; j++) {
        const src = (i * cached + j * per + rng.int(per)) * frameLen;
        out.set(all.subarray(src, src + frameLen), (i * count + j) * frameLen);
      }
    });
    return out;
  }

  /**
   * One epoch's clips, each with its caption row: shards in a seeded order, dealt into the
   * buffer; once it is full each new clip replaces a uniformly drawn one, which is handed out;
   * at the end the buffer is emptied in a drawn order.
   */
  private async *epochStream(epoch: number): AsyncGenerator<Pick> {
    const rng: Rng = createRng(hashSeed(this.seed, `epoch-${epoch}`));
    const shuffle = this.opts.shuffle ?? true;
    const capacity = shuffle ? this.opts.shuffleBuffer : 1;
    const order = [...this.shards];
    if (shuffle) rng.shuffle(order);
    const buffer: Slot[] = [];
    const all = this.opts.captionsPerVideo === 'all';
    const w = this.opts.captionWeights;
    // Drawn as the clip leaves the buffer, from the epoch's one generator, so a resume's
    // replay makes the same draws.
    const caption = (slot: Slot): Pick => {
      const rows = this.rowsOf.get(slot.id)!;
      if (all) return { slot, rows };
      if (rows.length === 1) return { slot, rows };
      const total = w ? rows.reduce((a, r) => a + w[r], 0) : 0;
      if (!(total > 0)) return { slot, rows: [rows[rng.int(rows.length)]] };
      let u = rng.next() * total;
      for (const r of rows) { u -= w![r]; if (u < 0) return { slot, rows: [r] }; }
      return { slot, rows: [rows[rows.length - 1]] };
    };
    for (const name of order) {
      const s = await readFrameCacheShard(this.cache.dir, name, { pixels: this.loadPixels });
      if (!s) throw new Error(`StreamLoader: ${path.join(this.cache.dir, name)} is no longer a committed shard`);
      for (const it of s.items) {
        if (!this.rowsOf.has(it.id)) continue;
        // A copy (a Buffer's slice would be a view), so the shard's buffer is freed once dealt.
        const slot: Slot = { id: it.id, shard: name, offset: it.offset, data: s.data ? new Uint8Array(s.data.subarray(it.offset, it.offset + this.cache.clipBytes)) : null };
        if (buffer.length < capacity) { buffer.push(slot); continue; }
        const j = capacity === 1 ? 0 : rng.int(capacity);
        const out = buffer[j];
        buffer[j] = slot;
        yield caption(out);
      }
    }
    while (buffer.length) {
      const j = shuffle ? rng.int(buffer.length) : 0;
      const out = buffer[j];
      buffer[j] = buffer[buffer.length - 1];
      buffer.pop();
      yield caption(out);
    }
  }
}

interface RawBatch {
  frames: Float32Array;
  ids: Int32Array;
  mask: Int32Array;
  index: number[];
  videoId: string[];
  captionVideo?: Int32Array;
}

async function readClip(file: string, offset: number, bytes: number, id: string): Promise<Uint8Array> {
  const data = new Uint8Array(bytes);
  const fh = await open(file, 'r');
  try {
    const { bytesRead } = await fh.read(data, 0, bytes, offset);
    if (bytesRead !== bytes) throw new Error(`frame cache ${file}: clip ${id} is cut short (${bytesRead} of ${bytes} bytes)`);
  } finally {
    await fh.close();
  }
  return data;
}
