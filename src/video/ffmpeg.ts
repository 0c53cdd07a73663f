/**
 * fluent-ffmpeg wired to the binaries chosen in `binaries.ts`, and safe input names.
 */
import ffmpeg from 'fluent-ffmpeg';
import path from 'node:path';
import { PassThrough } from 'node:stream';
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

/** A built fluent-ffmpeg command (input, options and output format set). */
export type FfmpegCommand = ReturnType<typeof ffmpeg>;

/**
 * Runs `cmd` with its output piped and resolves with every output byte and ffmpeg's stderr
 * lines once the process has exited and the pipe has drained (either can come first; resolving
 * on one alone loses the tail or the exit status). Past `timeoutMs` the process is killed.
 * Every failure is `fail(reason)`, so callers keep their own error type; `describe` words
 * ffmpeg's own error from it and the stderr lines.
 */
export function pipeFfmpeg(
  cmd: FfmpegCommand,
  opts: { timeoutMs: number; fail: (reason: string) => Error; describe: (err: Error, stderr: string[]) => string },
): Promise<{ bytes: Buffer; stderr: string[] }> {
  const { timeoutMs, fail, describe } = opts;
  return new Promise((resolve, reject) => {
    const stderr: string[] = [];
    const chunks: Buffer[] = [];
    let settled = false;
    let exited = false;
    let drained = false;
    let started = false;
    let timedOut = false;
    const finish = (err: Error | null): void => {
      if (settled) return;
      if (err) { settled = true; clearTimeout(timer); reject(err); return; }
      if (exited && drained) { settled = true; clearTimeout(timer); resolve({ bytes: Buffer.concat(chunks), stderr }); }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      // fluent-ffmpeg spawns after its own async checks; a kill before that is done on 'start'.
      if (started) cmd.kill('SIGKILL');
      finish(fail(`ffmpeg did not finish within ${timeoutMs} ms and was killed`));
    }, timeoutMs);
    cmd.on('start', () => {
      started = true;
      if (timedOut) cmd.kill('SIGKILL');
    });
    cmd.on('stderr', (line: string) => { stderr.push(line); });
    cmd.on('error', (err: Error) => finish(fail(`ffmpeg failed: ${describe(err, stderr)}`)));
    cmd.on('end', () => { exited = true; finish(null); });
    // fluent-ffmpeg reports 'Output stream closed' (and kills ffmpeg) when the process has not
    // exited 20 ms after its output stream closes, which a loaded machine can take for a decode
    // that succeeded. A stream that never emits 'close' leaves the verdict to the exit itself.
    const out = new PassThrough({ emitClose: false });
    cmd.pipe(out, { end: true });
    out.on('data', (c: Buffer) => { chunks.push(c); });
    out.on('end', () => { drained = true; finish(null); });
    out.on('error', (e: Error) => finish(fail(`reading ffmpeg output failed: ${e.message}`)));
  });
}
