/**
 * fluent-ffmpeg wired to the binaries chosen in `binaries.ts`, and safe input names.
 */
import ffmpeg from 'fluent-ffmpeg';
import path from 'node:path';
import { ffmpegBinary, ffprobeBinary } from './binaries.js';

let configured = false;

/** A fluent-ffmpeg command factory with the ffmpeg/ffprobe paths set once per process. */
export function fluent(): typeof ffmpeg {
  if (!configured) {
    ffmpeg.setFfmpegPath(ffmpegBinary().path);
    ffmpeg.setFfprobePath(ffprobeBinary().path);
    configured = true;
  }
  return ffmpeg;
}

/**
 * The name to hand ffmpeg for a local file: absolute and behind the `file:` protocol, so a
 * name starting with `-` is never read as an option and one containing `:` never as a protocol.
 *
 * @example ffmpegInput('-odd name.mp4') // 'file:/cwd/-odd name.mp4'
 */
export function ffmpegInput(file: string): string {
  return `file:${path.resolve(file)}`;
}

/** A failure tied to one video file; `reason` is the human part without the file name. */
export class VideoFileError extends Error {
  readonly file: string;
  readonly reason: string;
  constructor(file: string, reason: string) {
    super(`${file}: ${reason}`);
    this.name = 'VideoFileError';
    this.file = file;
    this.reason = reason;
  }
}

/** The last meaningful stderr line of an ffmpeg/ffprobe failure, for error messages. */
export function lastErrorLine(stderr: string): string {
  const lines = stderr.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !/^(ffmpeg|ffprobe) version|^built with|^configuration:|^lib\w+\s/.test(l));
  const interesting = lines.filter((l) => /error|invalid|no such|not found|moov|unsupported|could not|failed|corrupt|end of file/i.test(l));
  return (interesting.at(-1) ?? lines.at(-1) ?? 'no message').slice(0, 300);
}
