/**
 * Frame sampling: one ffmpeg process per clip that seeks to the window, keeps only the
 * wanted frames (select filter), resizes and centre-crops them in the filter graph and
 * pipes raw RGB. Never one process per frame.
 */
import pLimit from 'p-limit';
import type { ItemError } from '../util/itemError.js';
import { ffmpegInput, fluent, lastErrorLine, pipeFfmpeg, VideoFileError } from './ffmpeg.js';
import { probeVideo, type VideoInfo } from './probe.js';
import { createRng, hashSeed } from '../util/rng.js';
import { resizeCropFilter } from './transforms.js';

export const SAMPLE_STRATEGIES = ['uniform', 'random', 'fps', 'head', 'tail'] as const;
export type SampleStrategy = (typeof SAMPLE_STRATEGIES)[number];

export interface SampleOptions {
  /** Frames per clip (T). */
  frames: number;
  /** Output side in pixels: the short side is scaled to it, then the centre square is cropped. */
  size: number;
  /**
   * uniform: middle of each of T equal segments of [start, end]; random: one seeded random
   * point per segment; fps: every 1/fps seconds from start; head/tail: T consecutive frames
   * at the start/end of the window.
   */
  strategy?: SampleStrategy;
  /** Window in seconds from the start of the video (default the whole video). */
  start?: number;
  end?: number;
  /** Seed of the `random` strategy. */
  seed?: number;
  /** Sampling rate of the `fps` strategy. */
  fps?: number;
  /** Kill ffmpeg (SIGKILL) after this long; default 120 s. */
  timeoutMs?: number;
  /** Probe result, when the caller has one already (saves one ffprobe process). */
  info?: VideoInfo;
}

export interface SampledFrames {
  /** RGB bytes laid out [T, size, size, 3]. */
  data: Uint8Array;
  shape: [number, number, number, number];
  /** The T sampling times asked for, in seconds from the start of the video. */
  timestamps: number[];
  /** The time of the decoded frame that fills each slot (the frame nearest to the asked time). */
  frameTimes: number[];
  /**
   * Slots filled by a frame more than one frame interval from their time: the clip had no
   * frame there (too short, or a corrupt stretch), so a neighbour stands in.
   */
  padded: number;
  info: VideoInfo;
}

export function checkSampleOptions(o: SampleOptions, where: string): Required<Pick<SampleOptions, 'frames' | 'size' | 'strategy' | 'timeoutMs'>> {
  if (!o || typeof o !== 'object') throw new Error(`${where}: options must be an object`);
  if (!Number.isInteger(o.frames) || o.frames < 1) throw new Error(`${where}: frames must be a positive integer, got ${o.frames}`);
  if (!Number.isInteger(o.size) || o.size < 1) throw new Error(`${where}: size must be a positive integer, got ${o.size}`);
  const strategy = o.strategy ?? 'uniform';
  if (!SAMPLE_STRATEGIES.includes(strategy)) throw new Error(`${where}: strategy must be one of ${SAMPLE_STRATEGIES.join(', ')}, got ${JSON.stringify(strategy)}`);
  if (strategy === 'fps' && !(typeof o.fps === 'number' && o.fps > 0)) throw new Error(`${where}: strategy 'fps' needs fps > 0, got ${o.fps}`);
  for (const k of ['start', 'end'] as const) {
    const v = o[k];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v >= 0)) throw new Error(`${where}: ${k} must be a finite number ≥ 0, got ${v}`);
  }
  if (o.start !== undefined && o.end !== undefined && !(o.end > o.start)) throw new Error(`${where}: end (${o.end}) must be after start (${o.start})`);
  const timeoutMs = o.timeoutMs ?? 120000;
  if (!(timeoutMs > 0)) throw new Error(`${where}: timeoutMs must be positive, got ${o.timeoutMs}`);
  return { frames: o.frames, size: o.size, strategy, timeoutMs };
}

/**
 * The T times (seconds) a strategy samples in the window [start, end] of a video whose
 * frame rate is `videoFps`. Pure; `sampleFrames` decodes the frames nearest to them.
 *
 * @example
 * planTimestamps('uniform', 4, { start: 0, end: 2, videoFps: 10 }) // [0.25, 0.75, 1.25, 1.75]
 */
export function planTimestamps(
  strategy: SampleStrategy,
  frames: number,
  w: { start: number; end: number; videoFps: number; fps?: number; seed?: number },
): number[] {
  if (!Number.isInteger(frames) || frames < 1) throw new Error(`planTimestamps: frames must be a positive integer, got ${frames}`);
  if (!(w.end > w.start) || !(w.videoFps > 0)) throw new Error(`planTimestamps: need end > start and videoFps > 0, got ${JSON.stringify(w)}`);
  const len = w.end - w.start;
  const seg = len / frames;
  const idx = Array.from({ length: frames }, (_, i) => i);
  switch (strategy) {
    case 'uniform': return idx.map((i) => w.start + (i + 0.5) * seg);
    case 'random': {
      const rng = createRng(w.seed ?? 0);
      return idx.map((i) => w.start + (i + rng.next()) * seg);
    }
    case 'fps': {
      if (!(w.fps && w.fps > 0)) throw new Error('planTimestamps: strategy fps needs fps > 0');
      return idx.map((i) => w.start + i / w.fps!);
    }
    case 'head': return idx.map((i) => w.start + i / w.videoFps);
    case 'tail': return idx.map((i) => Math.max(w.start, w.end - (frames - i) / w.videoFps));
    default: throw new Error(`planTimestamps: unknown strategy ${JSON.stringify(strategy)}`);
  }
}

const round6 = (x: number): number => Math.round(x * 1e6) / 1e6;

/**
 * The select-filter expression that passes, for each target τ (seconds after the seek
 * point), the first frame with t ≥ τ: the frame whose predecessor is still before τ.
 */
function selectExpression(targets: number[]): string {
  const uniq = [...new Set(targets.map(round6))].sort((a, b) => a - b);
  return uniq.map((t) => `gte(t,${t})*(isnan(prev_t)+lt(prev_t,${t}))`).join('+');
}

interface ShowinfoFrame { pts: number; ptsTime: number }

function parseShowinfo(lines: string[]): { frames: ShowinfoFrame[]; timeBase: number | null } {
  let timeBase: number | null = null;
  const frames: ShowinfoFrame[] = [];
  for (const line of lines) {
    if (!line.includes('showinfo')) continue;
    const tb = /config in time_base:\s*(\d+)\/(\d+)/.exec(line);
    if (tb && Number(tb[2]) > 0) { timeBase = Number(tb[1]) / Number(tb[2]); continue; }
    const m = /\bn:\s*\d+\s+pts:\s*(-?\d+)\s+pts_time:\s*(-?[\d.eE+-]+)/.exec(line);
    if (m) frames.push({ pts: Number(m[1]), ptsTime: Number(m[2]) });
  }
  return { frames, timeBase };
}

/**
 * fluent-ffmpeg's own error (exit code or signal, e.g. "ffmpeg was killed with signal SIGKILL")
 * first, then the last stderr line that looks like an error. ffmpeg's plain last line
 * ("video:12kB audio:0kB … muxing overhead") says nothing about a failure, so it is left out.
 */
export function ffmpegFailure(err: Error, stderr: string[]): string {
  // fluent appends ffmpeg's last stderr lines to "ffmpeg exited with code N"; keep only its own part.
  const status = /ffmpeg (exited with code -?\d+|was killed with signal \w+)/.exec(err.message);
  const own = status ? status[0] : (err.message.split('\n')[0] ?? '').replace(/:\s*$/, '').trim();
  const tail = lastErrorLine(stderr.join('\n'));
  const telling = /error|invalid|no such|not found|moov|unsupported|could not|failed|corrupt|end of file|denied|killed/i.test(tail);
  return [own || 'no message', telling && !own.includes(tail) ? tail : ''].filter(Boolean).join(': ');
}

function runFfmpeg(file: string, seek: number, readFor: number, filter: string, timeoutMs: number): Promise<{ bytes: Buffer; stderr: string[] }> {
  const inputOptions = ['-nostdin', '-hide_banner', '-threads', '1'];
  // `-ss`/`-t` before `-i`: seek by index to the keyframe, decode only the window.
  if (seek > 0) inputOptions.push('-ss', String(round6(seek)));
  inputOptions.push('-t', String(round6(readFor)));
  const cmd = fluent()(ffmpegInput(file))
    .inputOptions(inputOptions)
    .noAudio()
    .videoFilters(filter)
    .outputOptions(['-sn', '-dn', '-vsync', '0', '-pix_fmt', 'rgb24'])
    .format('rawvideo');
  return pipeFfmpeg(cmd, { timeoutMs, fail: (reason) => new VideoFileError(file, reason), describe: ffmpegFailure });
}

/**
 * Decodes T frames of one clip with a single ffmpeg process, resized and centre-cropped
 * to `size`×`size` RGB. Where the clip has no frame for a slot (too short, truncated), the
 * last decoded frame is repeated; where a corrupt stretch was skipped, the next frame stands
 * in. `padded` counts both: every slot whose frame is more than one frame interval away.
 *
 * @example
 * const s = await sampleFrames('a.mp4', { frames: 8, size: 224 });
 * s.shape // [8, 224, 224, 3]; s.timestamps // the 8 segment middles
 */
export async function sampleFrames(file: string, opts: SampleOptions): Promise<SampledFrames> {
  const o = checkSampleOptions(opts, 'sampleFrames');
  if (typeof file !== 'string' || !file) throw new Error(`sampleFrames: file must be a non-empty path, got ${JSON.stringify(file)}`);
  const info = opts.info ?? await probeVideo(file, { timeoutMs: o.timeoutMs });
  const start = opts.start ?? 0;
  const end = Math.min(opts.end ?? info.duration, info.duration);
  if (!(end > start)) throw new VideoFileError(info.file, `window [${start}, ${opts.end ?? info.duration}] s is empty for a video of ${info.duration} s`);
  const timestamps = planTimestamps(o.strategy, o.frames, { start, end, videoFps: info.fps, fps: opts.fps, seed: opts.seed });
  const half = 0.5 / info.fps;
  // Aim half a frame early so the frame chosen is the one nearest to each time (ties: the
  // earlier frame, the one on screen at that time).
  const targets = timestamps.map((t) => t - start - half - 1e-6);
  const lastNeeded = Math.max(...timestamps) + 1 / info.fps;
  const readFor = Math.min(end, lastNeeded) - start;
  const filter = `select='${selectExpression(targets)}',showinfo,${resizeCropFilter(o.size)}`;
  const { bytes, stderr } = await runFfmpeg(info.file, start, readFor, filter, o.timeoutMs);

  const frameBytes = o.size * o.size * 3;
  const { frames, timeBase } = parseShowinfo(stderr);
  const got = bytes.length / frameBytes;
  if (!Number.isInteger(got) || got !== frames.length) {
    throw new VideoFileError(info.file, `ffmpeg returned ${bytes.length} bytes for ${frames.length} frames of ${frameBytes} bytes (${lastErrorLine(stderr.join('\n'))})`);
  }
  if (got === 0) throw new VideoFileError(info.file, `no frame could be decoded in [${start}, ${end}] s (${lastErrorLine(stderr.join('\n'))})`);
  const times = frames.map((f) => (timeBase !== null ? f.pts * timeBase : f.ptsTime));

  const data = new Uint8Array(o.frames * frameBytes);
  const frameTimes: number[] = [];
  let padded = 0;
  let j = 0;
  // A frame further than one frame interval from its slot's time stands in for a frame the
  // file does not have there (a short clip, or a corrupt stretch skipped by the decoder).
  const tolerance = 1 / info.fps + 1e-6;
  for (let k = 0; k < o.frames; k++) {
    // Selected frames arrive in time order; the first one at or after a target is its frame.
    while (j < got && times[j] < targets[k] - 1e-6) j++;
    let src = j;
    if (j >= got) src = got - 1;
    if (j >= got || Math.abs(times[src] - (timestamps[k] - start)) > tolerance) padded++;
    data.set(bytes.subarray(src * frameBytes, (src + 1) * frameBytes), k * frameBytes);
    frameTimes.push(round6(start + times[src]));
  }
  return { data, shape: [o.frames, o.size, o.size, 3], timestamps: timestamps.map(round6), frameTimes, padded, info };
}

export interface SampleItem {
  /** Used in error records and to derive the item's random seed; defaults to the path. */
  id?: string;
  video: string;
  start?: number;
  end?: number;
}

export type SampleOutcome =
  | { ok: true; item: SampleItem; clip: SampledFrames }
  | { ok: false; item: SampleItem; error: ItemError };

export interface SampleManyResult {
  /** One outcome per item, in input order. */
  outcomes: SampleOutcome[];
  decoded: number;
  /** The items that failed, with why. */
  skipped: ItemError[];
}

/**
 * Samples one item and never throws: a failure becomes `{ ok: false, error }` naming the
 * file. With `strategy: 'random'` the item's stream is derived from `opts.seed` and its id.
 *
 * @example
 * const o = await sampleItem({ id: 'a', video: 'a.mp4' }, { frames: 8, size: 224 });
 * if (!o.ok) console.log(o.error.reason); // e.g. 'no video stream (audio only)'
 */
export async function sampleItem(item: SampleItem, opts: SampleOptions): Promise<SampleOutcome> {
  try {
    if (!item || typeof item.video !== 'string' || !item.video) throw new Error(`item has no video path: ${JSON.stringify(item)}`);
    const clip = await sampleFrames(item.video, {
      ...opts,
      start: item.start ?? opts.start,
      end: item.end ?? opts.end,
      seed: hashSeed(opts.seed ?? 0, item.id ?? item.video),
    });
    return { ok: true, item, clip };
  } catch (e) {
    const source = e instanceof VideoFileError ? e.file : String(item?.video ?? '');
    const reason = e instanceof VideoFileError ? e.reason : (e as Error).message;
    return { ok: false, item, error: { source, ...(item?.id !== undefined ? { id: item.id } : {}), reason } };
  }
}

/**
 * Samples many clips with at most `concurrency` ffmpeg processes at a time. A bad file
 * becomes an error record and the rest go on.
 *
 * @example
 * const r = await sampleMany([{ id: 'a', video: 'a.mp4' }], { frames: 8, size: 224 }, { concurrency: 2 });
 * r.decoded; r.skipped // [{ source: '/abs/b.mp4', id: 'b', reason: 'file not found' }]
 */
export async function sampleMany(
  items: SampleItem[],
  opts: SampleOptions,
  pool: { concurrency?: number; onResult?: (o: SampleOutcome, done: number) => void } = {},
): Promise<SampleManyResult> {
  if (!Array.isArray(items)) throw new Error('sampleMany: items must be an array of { id?, video, start?, end? }');
  checkSampleOptions(opts, 'sampleMany');
  const concurrency = pool.concurrency ?? 2;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error(`sampleMany: concurrency must be a positive integer, got ${concurrency}`);
  const limit = pLimit(concurrency);
  let done = 0;
  const outcomes = await Promise.all(items.map((item) => limit(async () => {
    const outcome = await sampleItem(item, opts);
    done++;
    pool.onResult?.(outcome, done);
    return outcome;
  })));
  const skipped = outcomes.flatMap((o) => (o.ok ? [] : [o.error]));
  return { outcomes, decoded: outcomes.length - skipped.length, skipped };
}
