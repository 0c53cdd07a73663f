/**
 * A folder-per-identity image tree (the CASIA-WebFace / MS1M layout after extraction:
 * `root/<identity>/<image>`), decoded with sharp to size×size RGB bytes: all at once and held
 * in memory (N·size²·3 bytes), or with `lazy` when a batch asks for them, so memory holds the
 * file list and one batch whatever the number of images. Flip and crop augmentation, natural
 * or class-balanced sampling (resumable, BatchSampler). An image sharp cannot decode is
 * skipped and reported, never fatal.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import pLimit from 'p-limit';
import sharp from 'sharp';
import { mulberry32 } from './synthIdentities.js';

export interface ImageFolderOptions {
  /** Output width = height in pixels (images are resized to it). */
  size: number;
  /** Decodes at once (default 4). */
  concurrency?: number;
  /** Only these identities, in this label order (e.g. a checkpoint's class list). */
  classes?: string[];
  /**
   * List the images now and decode them when `readImages` asks (default false: decode all
   * now). Files are random access, so a full shuffle costs 4 bytes per image and needs no
   * shuffle buffer.
   */
  lazy?: boolean;
}

export interface SkippedImage { path: string; reason: string }

const IMAGE_RE = /\.(png|jpe?g|webp|bmp|gif|tiff?)$/i;

/**
 * The decoded dataset: labels are indices into `classes` (folder names, sorted).
 *
 * @example
 * const ds = await ImageFolderDataset.open('casia/train', { size: 32 });
 * ds.skipped; // [{ path, reason }] for unreadable images
 */
export class ImageFolderDataset {
  private constructor(
    readonly root: string,
    readonly size: number,
    readonly classes: string[],
    /** Pixel bytes of every kept image, item i at [i·size²·3, (i+1)·size²·3). */
    readonly pixels: Uint8Array,
    readonly labels: Int32Array,
    readonly files: string[],
    readonly skipped: SkippedImage[],
    private readonly lazyConcurrency: number | null = null,
  ) {}

  /** Whether images are decoded on demand (opened with `lazy`). */
  get lazy(): boolean { return this.lazyConcurrency !== null; }

  /**
   * The size²·3 bytes of images `indices`, back to back: copied from memory, or decoded now when
   * opened lazily. An image that cannot be decoded is left out (and added to `skipped` once);
   * `kept` lists the indices that made it, in order.
   *
   * @example const { pixels, kept } = await ds.readImages(sampler.next());
   */
  async readImages(indices: ArrayLike<number>): Promise<{ pixels: Uint8Array; kept: number[] }> {
    const per = this.size * this.size * 3;
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k];
      if (!Number.isInteger(i) || i < 0 || i >= this.length) throw new Error(`ImageFolderDataset.readImages: index ${i} outside [0, ${this.length})`);
    }
    if (!this.lazy) {
      const pixels = new Uint8Array(indices.length * per);
      for (let k = 0; k < indices.length; k++) pixels.set(this.pixels.subarray(indices[k] * per, (indices[k] + 1) * per), k * per);
      return { pixels, kept: Array.from(indices) };
    }
    const limit = pLimit(this.lazyConcurrency!);
    const decoded = await Promise.all(Array.from(indices, (i) => limit(async () => {
      try {
        return await decodeImage(this.files[i], this.size);
      } catch (err) {
        if (!this.skipped.some((x) => x.path === this.files[i])) this.skipped.push({ path: this.files[i], reason: (err as Error).message.split('\n')[0] });
        return null;
      }
    })));
    const kept = Array.from(indices).filter((_, k) => decoded[k] !== null);
    const pixels = new Uint8Array(kept.length * per);
    let n = 0;
    for (const d of decoded) if (d) pixels.set(d, per * n++);
    return { pixels, kept };
  }

  get length(): number { return this.labels.length; }

  /** Kept images per class. */
  counts(): number[] {
    const c = new Array<number>(this.classes.length).fill(0);
    for (const y of this.labels) c[y]++;
    return c;
  }

  static async open(root: string, opts: ImageFolderOptions): Promise<ImageFolderDataset> {
    if (typeof root !== 'string' || root === '') throw new Error(`ImageFolderDataset: 'root' must be a folder path`);
    if (!Number.isInteger(opts?.size) || opts.size < 1) throw new Error(`ImageFolderDataset: 'size' must be a positive integer, got ${opts?.size}`);
    const dir = path.resolve(root);
    let names: string[];
    try {
      names = (await readdir(dir, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name).sort();
    } catch (e) {
      throw new Error(`ImageFolderDataset: cannot list ${dir} (${(e as Error).message})`);
    }
    const classes = opts.classes ?? names;
    const missing = classes.filter((c) => !names.includes(c));
    if (missing.length) throw new Error(`ImageFolderDataset: ${dir} lacks ${missing.length} class folder(s): ${missing.slice(0, 5).join(', ')}`);
    if (classes.length === 0) throw new Error(`ImageFolderDataset: ${dir} has no identity folders (expected root/<identity>/<image>)`);
    const entries: { file: string; label: number }[] = [];
    for (let c = 0; c < classes.length; c++) {
      const files = (await readdir(path.join(dir, classes[c]))).filter((f) => IMAGE_RE.test(f)).sort();
      for (const f of files) entries.push({ file: path.join(dir, classes[c], f), label: c });
    }
    const S = opts.size;
    const per = S * S * 3;
    if (opts.lazy) {
      if (entries.length === 0) throw new Error(`ImageFolderDataset: no image files under ${dir}`);
      return new ImageFolderDataset(dir, S, classes, new Uint8Array(0), Int32Array.from(entries, (e) => e.label), entries.map((e) => e.file), [], opts.concurrency ?? 4);
    }
    const buf = new Uint8Array(entries.length * per);
    const ok = new Uint8Array(entries.length);
    const skipped: SkippedImage[] = [];
    const limit = pLimit(opts.concurrency ?? 4);
    await Promise.all(entries.map((e, i) => limit(async () => {
      try {
        buf.set(await decodeImage(e.file, S), i * per);
        ok[i] = 1;
      } catch (err) {
        skipped.push({ path: e.file, reason: (err as Error).message.split('\n')[0] });
      }
    })));
    const keep = entries.map((_, i) => i).filter((i) => ok[i]);
    const pixels = new Uint8Array(keep.length * per);
    keep.forEach((i, k) => pixels.set(buf.subarray(i * per, (i + 1) * per), k * per));
    if (keep.length === 0) throw new Error(`ImageFolderDataset: no readable image under ${dir} (${skipped.length} skipped; first: ${skipped[0]?.path}: ${skipped[0]?.reason})`);
    skipped.sort((a, b) => a.path.localeCompare(b.path));
    return new ImageFolderDataset(dir, S, classes, pixels, Int32Array.from(keep, (i) => entries[i].label), keep.map((i) => entries[i].file), skipped);
  }
}

async function decodeImage(file: string, S: number): Promise<Uint8Array> {
  const { data, info } = await sharp(file).removeAlpha().toColorspace('srgb').resize(S, S, { fit: 'fill' }).raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || data.length !== S * S * 3) throw new Error(`decoded to ${info.channels} channels, ${data.length} bytes`);
  return data;
}

export interface AugmentOptions {
  /** Mirror left-right with probability ½. */
  flip?: boolean;
  /** Pad by this many pixels (edge replicate) and crop back to size at a random offset. */
  cropPad?: number;
}

/**
 * Writes image `i` of `ds` as floats in [−1, 1] into `out` (size²·3), augmented with `rand`.
 * @example toFloatImage(ds, 0, new Float32Array(32 * 32 * 3), { flip: true, cropPad: 2 }, Math.random)
 */
export function toFloatImage(ds: ImageFolderDataset, i: number, out: Float32Array, aug: AugmentOptions = {}, rand: () => number = Math.random): Float32Array {
  const S = ds.size;
  const per = S * S * 3;
  if (!Number.isInteger(i) || i < 0 || i >= ds.length) throw new Error(`toFloatImage: index ${i} outside [0, ${ds.length})`);
  if (ds.lazy) throw new Error('toFloatImage: the dataset was opened lazily; read its pixels with readImages and convert them with toFloatPixels');
  return toFloatPixels(ds.pixels.subarray(i * per, (i + 1) * per), S, out, aug, rand);
}

/**
 * Writes one image's size²·3 RGB bytes as floats in [−1, 1] into `out`, augmented with `rand`.
 * @example toFloatPixels(pixels.subarray(0, 32 * 32 * 3), 32, new Float32Array(32 * 32 * 3), { flip: true })
 */
export function toFloatPixels(src: Uint8Array, S: number, out: Float32Array, aug: AugmentOptions = {}, rand: () => number = Math.random): Float32Array {
  const per = S * S * 3;
  if (src.length !== per) throw new Error(`toFloatPixels: 'src' must hold ${per} bytes, got ${src.length}`);
  if (out.length !== per) throw new Error(`toFloatImage: 'out' must hold ${per} floats, got ${out.length}`);
  const pad = aug.cropPad ?? 0;
  const flip = aug.flip ? rand() < 0.5 : false;
  const dx = pad > 0 ? Math.floor(rand() * (2 * pad + 1)) - pad : 0;
  const dy = pad > 0 ? Math.floor(rand() * (2 * pad + 1)) - pad : 0;
  for (let y = 0; y < S; y++) {
    const sy = Math.min(S - 1, Math.max(0, y + dy));
    for (let x = 0; x < S; x++) {
      const xx = flip ? S - 1 - x : x;
      const sx = Math.min(S - 1, Math.max(0, xx + dx));
      for (let k = 0; k < 3; k++) out[(y * S + x) * 3 + k] = src[(sy * S + sx) * 3 + k] / 127.5 - 1;
    }
  }
  return out;
}

export type Sampling = 'natural' | 'balanced';

/**
 * Index batches: `natural` walks a fresh shuffle of all items each epoch; `balanced` draws a
 * class uniformly, then one of its items. Resumable: `state()` is the number of batches drawn,
 * and a sampler built with it replays to the same position.
 *
 * @example const s = new BatchSampler(ds.labels, ds.classes.length, { batchSize: 64, sampling: 'balanced', seed: 1 });
 */
export class BatchSampler {
  private readonly rand: () => number;
  private order: Int32Array = new Int32Array(0);
  private pos = 0;
  private drawn = 0;
  private readonly byClass: number[][];
  readonly batchSize: number;
  readonly sampling: Sampling;

  constructor(readonly labels: ArrayLike<number>, numClasses: number, opts: { batchSize: number; sampling?: Sampling; seed?: number; resumeFrom?: number }) {
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`BatchSampler: 'batchSize' must be a positive integer, got ${opts.batchSize}`);
    if (labels.length < 1) throw new Error('BatchSampler: no items');
    this.batchSize = opts.batchSize;
    this.sampling = opts.sampling ?? 'natural';
    if (this.sampling !== 'natural' && this.sampling !== 'balanced') throw new Error(`BatchSampler: 'sampling' must be natural or balanced, got ${String(this.sampling)}`);
    this.rand = mulberry32(opts.seed ?? 0);
    this.byClass = Array.from({ length: numClasses }, () => [] as number[]);
    for (let i = 0; i < labels.length; i++) this.byClass[labels[i]].push(i);
    for (let k = 0; k < (opts.resumeFrom ?? 0); k++) this.next();
  }

  /** Batches per epoch (items / batch size, rounded up). */
  get batchesPerEpoch(): number { return Math.ceil(this.labels.length / this.batchSize); }

  next(): Int32Array {
    const out = new Int32Array(this.batchSize);
    if (this.sampling === 'balanced') {
      const nonEmpty = this.byClass.filter((c) => c.length > 0);
      for (let b = 0; b < this.batchSize; b++) {
        const c = nonEmpty[Math.floor(this.rand() * nonEmpty.length)];
        out[b] = c[Math.floor(this.rand() * c.length)];
      }
    } else {
      for (let b = 0; b < this.batchSize; b++) {
        if (this.pos >= this.order.length) this.reshuffle();
        out[b] = this.order[this.pos++];
      }
    }
    this.drawn++;
    return out;
  }

  state(): number { return this.drawn; }

  private reshuffle(): void {
    const n = this.labels.length;
    this.order = Int32Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(this.rand() * (i + 1));
      [this.order[i], this.order[j]] = [this.order[j], this.order[i]];
    }
    this.pos = 0;
  }
}

/** Whether `p` is an existing folder. */
export async function isFolder(p: string): Promise<boolean> {
  try { return (await stat(p)).isDirectory(); } catch { return false; }
}
