/**
 * `probeVideo`: what ffprobe says about a clip, with errors that name the file.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { FfprobeData, FfprobeStream } from 'fluent-ffmpeg';
import { ffmpegInput, fluent, lastErrorLine, VideoFileError } from './ffmpeg.js';

export interface VideoInfo {
  /** Absolute path of the file. */
  file: string;
  /** Seconds of the video stream (the container's duration where the stream has none). */
  duration: number;
  /** Average frames per second. */
  fps: number;
  /** Frames in the stream (from the container when it says, else duration × fps rounded). */
  frameCount: number;
  /** Coded size, before rotation. */
  width: number;
  height: number;
  codec: string;
  /** Clockwise degrees (0, 90, 180, 270) a player turns the picture; ffmpeg applies it when decoding. */
  rotation: number;
}

function num(v: unknown): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : NaN;
  return Number.isFinite(n) ? n : NaN;
}

function rate(v: unknown): number {
  if (typeof v !== 'string') return num(v);
  const [a, b] = v.split('/').map(Number);
  if (b === undefined) return num(a);
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : NaN;
}

function rotationOf(s: FfprobeStream): number {
  const rec = s as unknown as Record<string, unknown>;
  const tag = num(s.tags?.rotate);
  // The display-matrix side data (newer ffprobe) gives the counter-clockwise angle; the
  // legacy `rotate` tag the clockwise one.
  const cw = Number.isFinite(tag) ? tag : -num(rec.rotation);
  if (!Number.isFinite(cw)) return 0;
  return (((Math.round(cw / 90) * 90) % 360) + 360) % 360;
}

function ffprobe(input: string, timeoutMs: number): Promise<FfprobeData> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ffprobe did not finish within ${timeoutMs} ms`)), timeoutMs);
    fluent().ffprobe(input, ['-v', 'error'], (err: Error | null, data: FfprobeData) => {
      clearTimeout(timer);
      if (err) reject(err); else resolve(data);
    });
  });
}

/**
 * Reads duration, fps, frame count, size, codec and rotation of a video file.
 * Throws a `VideoFileError` naming the file when it is missing, empty, not a video,
 * audio-only or of zero duration.
 *
 * @example
 * const info = await probeVideo('clips/a.mp4'); // { duration: 10, fps: 25, frameCount: 250, width: 640, ... }
 */
export async function probeVideo(file: string, opts: { timeoutMs?: number } = {}): Promise<VideoInfo> {
  if (typeof file !== 'string' || file.length === 0) throw new Error(`probeVideo: file must be a non-empty path, got ${JSON.stringify(file)}`);
  const abs = path.resolve(file);
  const timeoutMs = opts.timeoutMs ?? 30000;
  let size: number;
  try {
    const st = await stat(abs);
    if (!st.isFile()) throw new VideoFileError(abs, 'not a regular file');
    size = st.size;
  } catch (e) {
    if (e instanceof VideoFileError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new VideoFileError(abs, code === 'ENOENT' ? 'file not found' : `cannot read file (${code ?? (e as Error).message})`);
  }
  if (size === 0) throw new VideoFileError(abs, 'empty file (0 bytes)');

  let data: FfprobeData;
  try {
    data = await ffprobe(ffmpegInput(abs), timeoutMs);
  } catch (e) {
    throw new VideoFileError(abs, `not a readable video (ffprobe: ${lastErrorLine((e as Error).message)})`);
  }
  const streams = data.streams ?? [];
  const video = streams.find((s) => s.codec_type === 'video' && !(s.disposition && s.disposition.attached_pic === 1));
  if (!video) {
    const kinds = [...new Set(streams.map((s) => s.codec_type ?? 'unknown'))];
    throw new VideoFileError(abs, kinds.includes('audio') ? 'no video stream (audio only)' : `no video stream (streams: ${kinds.join(', ') || 'none'})`);
  }
  let duration = num(video.duration);
  if (!(duration > 0)) duration = num(data.format?.duration);
  if (!(duration > 0)) throw new VideoFileError(abs, 'zero or unknown duration');
  let fps = rate(video.avg_frame_rate);
  if (!(fps > 0)) fps = rate(video.r_frame_rate);
  if (!(fps > 0)) throw new VideoFileError(abs, 'unknown frame rate');
  const width = num(video.width);
  const height = num(video.height);
  if (!(width > 0 && height > 0)) throw new VideoFileError(abs, 'unknown picture size');
  const nb = num(video.nb_frames);
  const frameCount = nb > 0 ? nb : Math.max(1, Math.round(duration * fps));
  return { file: abs, duration, fps, frameCount, width, height, codec: String(video.codec_name ?? 'unknown'), rotation: rotationOf(video) };
}
