/**
 * BatchLoader: batches of normalised frames and token ids from a frame cache, with seeded
 * shuffling, one seeded caption per video per epoch, one batch of prefetch, and a position
 * that can be saved as JSON and resumed exactly.
 */
import { tf } from '../backend/tf.js';
import { createRng, hashSeed } from '../util/rng.js';
import { readNormalizedClips, type FrameCache } from './frameCache.js';

/**
 * Tokenised captions, one row per caption: row c belongs to video `videoIds[c]` and its
 * tokens are `ids[c·maxLen … (c+1)·maxLen)`, with `mask` 1 on real tokens, 0 on padding.
 */
export interface CaptionTable {
  videoIds: string[];
  ids: Int32Array;
  mask: Int32Array;
  maxLen: number;
}

/** Turns captions into padded token rows, flat [n, maxLen] (e.g. a tokenizers.js tokenizer). */
export type CaptionEncoder = (captions: string[]) => { ids: Int32Array; mask: Int32Array };

/**
 * Builds a caption table from entries with captions and an encoder.
 *
 * @example
 * const table = encodeCaptions(manifest.entries, (c) => tok.encode(c, 32));
 * table.videoIds.length // total number of captions
 */
export function encodeCaptions(entries: { id: string; captions: string[] }[], encode: CaptionEncoder): CaptionTable {
  if (!Array.isArray(entries)) throw new Error('encodeCaptions: entries must be an array of { id, captions }');
  if (typeof encode !== 'function') throw new Error('encodeCaptions: encode must be a function (captions) => { ids, mask }');
  const videoIds: string[] = [];
  const texts: string[] = [];
  for (const e of entries) {
    if (!e || typeof e.id !== 'string' || !Array.isArray(e.captions)) throw new Error(`encodeCaptions: bad entry ${JSON.stringify(e)}: expected { id, captions[] }`);
    for (const c of e.captions) { videoIds.push(e.id); texts.push(c); }
  }
  if (texts.length === 0) throw new Error('encodeCaptions: no captions in entries');
  const { ids, mask } = encode(texts);
  if (!(ids instanceof Int32Array) || !(mask instanceof Int32Array) || ids.length !== mask.length || ids.length % texts.length !== 0) {
    throw new Error(`encodeCaptions: encode must return Int32Array ids and mask of equal length n·maxLen for n=${texts.length} captions`);
  }
  return { videoIds, ids, mask, maxLen: ids.length / texts.length };
}

/** The exact position of a loader; `new BatchLoader(…, { resumeFrom })` continues from it. */
export interface LoaderState {
  epoch: number;
  /** Batches already handed out in this epoch. */
  position: number;
  /** PRNG state at the start of this epoch (it decides the epoch's order and captions). */
  rngState: number;
  batchSize: number;
}

/**
 * Which loader saved a data position: 'random-access' for BatchLoader's (`rngState`: the whole
 * cache shuffled by id), 'streaming' for StreamLoader's (`shuffleBuffer`: shards through a
 * shuffle buffer); undefined for anything else. Neither position means anything to the other.
 *
 * @example loaderKindOf(loader.state()) // 'random-access'
 */
export function loaderKindOf(state: unknown): 'random-access' | 'streaming' | undefined {
  if (state === null || typeof state !== 'object') return undefined;
  if ('shuffleBuffer' in state) return 'streaming';
  if ('rngState' in state) return 'random-access';
  return undefined;
}

export interface BatchLoaderOptions {
  batchSize: number;
  /** Seed of the shuffles and caption choices (default 0). */
  seed?: number;
  /** Shuffle the video order every epoch (default true). */
  shuffle?: boolean;
  /** Drop the last incomplete batch of an epoch (default true: contrastive losses want full batches). */
  dropLast?: boolean;
  /** Read the next batch while the current one is used (default true). */
  prefetch?: boolean;
  /** Only these videos (e.g. one split); default every cached video that has a caption. */
  videoIds?: string[];
  /** Continue exactly from a saved `state()`. */
  resumeFrom?: LoaderState;
  mean?: readonly number[];
  std?: readonly number[];
  /** Hand frames out as a tf.Tensor5D (the caller disposes it) instead of a Float32Array. */
  asTensor?: boolean;
  /**
   * `one` (default): each video once per epoch with one of its captions, drawn at random.
   * `all`: each video with every caption (text rows > videos; `captionVideo` maps them), for a
   * loss whose positives are all captions of a video (SAM's groups).
   */
  captionsPerVideo?: 'one' | 'all';
  /**
   * Relative chance of each caption-table row being the one drawn for its video (`one`), e.g.
   * by caption source; default uniform. A video whose captions all weigh 0 draws uniformly.
   */
  captionWeights?: ArrayLike<number>;
  /**
   * New frames every epoch: the cache holds `count × k` candidate frames per clip (uniform over
   * the clip) and each epoch takes one at random from each of `count` equal segments (TSN-style),
   * per video, from a stream seeded by (seed, epoch, video). Default: the cached frames as they are.
   */
  randomFrames?: { count: number };
  /**
   * Harder batches: after the epoch's shuffle, each run of `captionGroups` videos is one video
   * (in shuffled order) and the not yet placed videos, within the same 8 batches of the order,
   * whose drawn captions share the most tokens with its caption (Jaccard of token sets), so a
   * batch holds pairs that differ in few words and the loss must tell them apart. Default 1.
   */
  captionGroups?: number;
}

export interface Batch<F> {
  /** Normalised frames [B, T, S, S, 3]. */
  frames: F;
  framesShape: [number, number, number, number, number];
  /** Token ids and mask, flat [N, L]: N = B, or every caption of the batch's videos with `captionsPerVideo: 'all'`. */
  ids: Int32Array;
  mask: Int32Array;
  textShape: [number, number];
  /** Row of each text row's caption in the caption table (stable across epochs). */
  index: number[];
  /** Which video of the batch (0 … B−1) each text row belongs to (`captionsPerVideo: 'all'` only). */
  captionVideo?: Int32Array;
  videoId: string[];
  epoch: number;
  /** 0-based batch number within the epoch. */
  step: number;
}

interface EpochPlan {
  order: number[];
  captionRow: number[];
  nextState: number;
}

interface RawBatch {
  frames: Float32Array;
  ids: Int32Array;
  mask: Int32Array;
  index: number[];
  videoId: string[];
  captionVideo?: Int32Array;
}

/**
 * Batches from a frame cache and a caption table. Every epoch visits each video once with
 * one of its captions; both the order and the captions come from a seeded PRNG whose state
 * at the epoch start is part of `state()`, so a resumed loader gives the same batches.
 *
 * Disposal: with `asTensor: true`, `batch.frames` is a new tensor owned by the caller, who
 * must `tf.dispose` it; tensors are made only when a batch is handed out, so a prefetched
 * batch never holds one. Without it no tensors are made.
 *
 * @example
 * const loader = new BatchLoader(cache, table, { batchSize: 32, seed: 1 });
 * const b = await loader.next(); // b.frames: Float32Array [32,8,224,224,3], b.ids: Int32Array [32, L]
 * const saved = loader.state();   // JSON; new BatchLoader(cache, table, { batchSize: 32, resumeFrom: saved })
 */
export class BatchLoader<T extends boolean = false> {
  readonly batchSize: number;
  readonly batchesPerEpoch: number;
  /** Videos the loader draws from, in canonical (first caption) order. */
  readonly videos: string[];
  /** Videos with captions that the cache lacks (failed to decode, or not built yet). */
  readonly missing: string[];
  private readonly cache: FrameCache;
  private readonly table: CaptionTable;
  private readonly rowsOf: number[][];
  private readonly opts: BatchLoaderOptions;
  private epoch: number;
  private position: number;
  private rngState: number;
  private plan: EpochPlan;
  private pending: { epoch: number; position: number; batch: Promise<RawBatch> } | null = null;
  private busy = false;

  constructor(cache: FrameCache, captions: CaptionTable, opts: BatchLoaderOptions & { asTensor?: T }) {
    if (!cache || typeof cache.get !== 'function') throw new Error('BatchLoader: cache must be an opened frame cache (openFrameCache)');
    checkTable(captions);
    if (!opts || !Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`BatchLoader: batchSize must be a positive integer, got ${opts?.batchSize}`);
    if (opts.captionsPerVideo !== undefined && opts.captionsPerVideo !== 'one' && opts.captionsPerVideo !== 'all') {
      throw new Error(`BatchLoader: captionsPerVideo must be 'one' or 'all', got ${JSON.stringify(opts.captionsPerVideo)}`);
    }
    const rf = opts.randomFrames;
    if (rf !== undefined && (!Number.isInteger(rf.count) || rf.count < 1 || cache.frames % rf.count !== 0)) {
      throw new Error(`BatchLoader: randomFrames.count must divide the cache's ${cache.frames} frames per clip, got ${rf?.count}`);
    }
    const w = opts.captionWeights;
    if (w !== undefined && (w.length !== captions.videoIds.length || Array.from(w).some((x) => !(x >= 0) || !Number.isFinite(x)))) {
      throw new Error(`BatchLoader: captionWeights must hold ${captions.videoIds.length} finite weights ≥ 0 (one per caption-table row)`);
    }
    this.cache = cache;
    this.table = captions;
    this.opts = opts;
    this.batchSize = opts.batchSize;
    const allowed = opts.videoIds ? new Set(opts.videoIds) : null;
    const rows = new Map<string, number[]>();
    captions.videoIds.forEach((v, r) => {
      if (allowed && !allowed.has(v)) return;
      const list = rows.get(v);
      if (list) list.push(r); else rows.set(v, [r]);
    });
    this.videos = [...rows.keys()].filter((v) => cache.has(v));
    this.missing = [...rows.keys()].filter((v) => !cache.has(v));
    this.rowsOf = this.videos.map((v) => rows.get(v)!);
    const n = this.videos.length;
    const dropLast = opts.dropLast ?? true;
    this.batchesPerEpoch = dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
    if (this.batchesPerEpoch === 0) {
      throw new Error(`BatchLoader: ${n} cached videos with captions make no ${dropLast ? 'full ' : ''}batch of ${this.batchSize}` +
        (this.missing.length ? ` (${this.missing.length} captioned videos are not in the cache ${cache.dir})` : ''));
    }
    const r = opts.resumeFrom;
    if (r) {
      if (loaderKindOf(r) === 'streaming') {
        throw new Error(`BatchLoader: resumeFrom ${JSON.stringify(r)} is a StreamLoader's position (the streaming loader's); it cannot place this random-access loader: resume with StreamLoader, or start without resumeFrom`);
      }
      const ok = Number.isInteger(r.epoch) && r.epoch >= 0 && Number.isInteger(r.position) && r.position >= 0 &&
        r.position < this.batchesPerEpoch && Number.isInteger(r.rngState) && r.rngState >= 0 && r.rngState <= 0xffffffff;
      if (!ok) throw new Error(`BatchLoader: resumeFrom ${JSON.stringify(r)} is not a valid state for ${this.batchesPerEpoch} batches per epoch`);
      if (r.batchSize !== this.batchSize) throw new Error(`BatchLoader: resumeFrom was saved with batchSize ${r.batchSize}, this loader has ${this.batchSize}`);
      this.epoch = r.epoch;
      this.position = r.position;
      this.rngState = r.rngState;
    } else {
      this.epoch = 0;
      this.position = 0;
      this.rngState = createRng(opts.seed ?? 0).state();
    }
    this.plan = this.makePlan(this.rngState);
  }

  /** Where the loader stands: the next `next()` returns batch `position` of `epoch`. JSON-safe. */
  state(): LoaderState {
    return { epoch: this.epoch, position: this.position, rngState: this.rngState, batchSize: this.batchSize };
  }

  /** The next batch; epochs roll over without end. Do not call again before it resolves. */
  async next(): Promise<Batch<T extends true ? tf.Tensor5D : Float32Array>> {
    if (this.busy) throw new Error('BatchLoader.next: called again before the previous call resolved');
    this.busy = true;
    try {
      const { epoch, position } = this;
      const pending = this.pending;
      this.pending = null;
      // A failed read leaves the position where it was, so the caller may retry.
      const raw = pending && pending.epoch === epoch && pending.position === position
        ? await pending.batch
        : await this.load(position, epoch);
      this.position++;
      if (this.position === this.batchesPerEpoch) {
        this.epoch++;
        this.position = 0;
        this.rngState = this.plan.nextState;
        this.plan = this.makePlan(this.rngState);
      }
      if (this.opts.prefetch ?? true) {
        const batch = this.load(this.position, this.epoch);
        // A failed prefetch is reported by the next() that awaits it, not as an unhandled rejection.
        batch.catch(() => undefined);
        this.pending = { epoch: this.epoch, position: this.position, batch };
      }
      const B = raw.videoId.length;
      const framesShape: Batch<unknown>['framesShape'] = [B, this.opts.randomFrames?.count ?? this.cache.frames, this.cache.size, this.cache.size, 3];
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

  /** The batches left in the current epoch. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Batch<T extends true ? tf.Tensor5D : Float32Array>> {
    const epoch = this.epoch;
    while (this.epoch === epoch) yield await this.next();
  }

  private makePlan(state: number): EpochPlan {
    const rng = createRng({ state });
    const order = this.videos.map((_, i) => i);
    if (this.opts.shuffle ?? true) rng.shuffle(order);
    const w = this.opts.captionWeights;
    const captionRow = order.map((v) => {
      const rows = this.rowsOf[v];
      if (!w) return rows[rng.int(rows.length)];
      const total = rows.reduce((a, r) => a + w[r], 0);
      if (!(total > 0)) return rows[rng.int(rows.length)];
      let u = rng.next() * total;
      for (const r of rows) { u -= w[r]; if (u < 0) return r; }
      return rows[rows.length - 1];
    });
    const group = this.opts.captionGroups ?? 1;
    if (group > 1) {
      // Groups form within pools of 8 batches of the shuffled order: cost linear in the data
      // set, and each batch's neighbours still come from a random part of it.
      const entries = order.map((v, i) => ({ v, row: captionRow[i] }));
      const pool = 8 * this.batchSize;
      const grouped: typeof entries = [];
      for (let from = 0; from < entries.length; from += pool) grouped.push(...groupByCaption(entries.slice(from, from + pool), this.table, group));
      return { order: grouped.map((g) => g.v), captionRow: grouped.map((g) => g.row), nextState: rng.state() };
    }
    return { order, captionRow, nextState: rng.state() };
  }

  private async load(position: number, epoch: number): Promise<RawBatch> {
    const from = position * this.batchSize;
    const to = Math.min(from + this.batchSize, this.videos.length);
    const picks = this.plan.order.slice(from, to);
    const all = this.opts.captionsPerVideo === 'all';
    const rows = all ? picks.flatMap((v) => this.rowsOf[v]) : this.plan.captionRow.slice(from, to);
    const { data: decoded } = await readNormalizedClips(this.cache, picks.map((v) => this.videos[v]), { mean: this.opts.mean, std: this.opts.std });
    const frames = this.opts.randomFrames ? this.pickFrames(decoded, picks, epoch) : decoded;
    const L = this.table.maxLen;
    const ids = new Int32Array(rows.length * L);
    const mask = new Int32Array(rows.length * L);
    rows.forEach((r, i) => {
      ids.set(this.table.ids.subarray(r * L, (r + 1) * L), i * L);
      mask.set(this.table.mask.subarray(r * L, (r + 1) * L), i * L);
    });
    const raw: RawBatch = { frames, ids, mask, index: rows, videoId: picks.map((v) => this.videos[v]) };
    if (all) raw.captionVideo = Int32Array.from(picks.flatMap((v, i) => this.rowsOf[v].map(() => i)));
    return raw;
  }

  /** One frame from each of `count` equal segments of every clip's candidates, drawn per (seed, epoch, video). */
  private pickFrames(all: Float32Array, picks: number[], epoch: number): Float32Array {
    const count = this.opts.randomFrames!.count;
    const per = this.cache.frames / count;
    const frameLen = this.cache.size * this.cache.size * 3;
    const out = new Float32Array(picks.length * count * frameLen);
    picks.forEach((v, i) => {
      const rng = createRng(hashSeed(hashSeed(this.opts.seed ?? 0, epoch), this.videos[v]));
      for (let j = 0; j < count; j++) {
        const src = (i * this.cache.frames + j * per + rng.int(per)) * frameLen;
        out.set(all.subarray(src, src + frameLen), (i * count + j) * frameLen);
      }
    });
    return out;
  }
}

/**
 * Greedy grouping for `captionGroups`: walks the entries in their (shuffled) order; each entry
 * not yet placed starts a group and takes the `group − 1` unplaced entries whose caption token
 * sets are closest to its own (Jaccard; ties to the earlier entry). Deterministic in the order.
 */
export function groupByCaption<E extends { row: number }>(entries: E[], table: CaptionTable, group: number): E[] {
  const L = table.maxLen;
  const sets = entries.map((e) => {
    const out = new Set<number>();
    for (let k = 0; k < L; k++) if (table.mask[e.row * L + k]) out.add(table.ids[e.row * L + k]);
    return out;
  });
  const placed = new Uint8Array(entries.length);
  const out: E[] = [];
  for (let i = 0; i < entries.length; i++) {
    if (placed[i]) continue;
    placed[i] = 1;
    out.push(entries[i]);
    const scored: { j: number; sim: number }[] = [];
    for (let j = i + 1; j < entries.length; j++) {
      if (placed[j]) continue;
      let inter = 0;
      for (const t of sets[j]) if (sets[i].has(t)) inter++;
      scored.push({ j, sim: inter / (sets[i].size + sets[j].size - inter || 1) });
    }
    scored.sort((a, b) => b.sim - a.sim || a.j - b.j);
    for (const { j } of scored.slice(0, group - 1)) { placed[j] = 1; out.push(entries[j]); }
  }
  return out;
}

function checkTable(t: CaptionTable): void {
  if (!t || !Array.isArray(t.videoIds) || !(t.ids instanceof Int32Array) || !(t.mask instanceof Int32Array)) {
    throw new Error('BatchLoader: captions must be a CaptionTable { videoIds, ids: Int32Array, mask: Int32Array, maxLen } (see encodeCaptions)');
  }
  const n = t.videoIds.length;
  if (!Number.isInteger(t.maxLen) || t.maxLen < 1 || t.ids.length !== n * t.maxLen || t.mask.length !== n * t.maxLen) {
    throw new Error(`BatchLoader: caption table has ${n} rows and maxLen ${t.maxLen}, so ids and mask need ${n * t.maxLen} entries (got ${t.ids.length}, ${t.mask.length})`);
  }
}
