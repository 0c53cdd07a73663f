/**
 * Audio in and out: any file ffmpeg can read (audio or video) decoded to 16 kHz mono float
 * PCM with one ffmpeg process, and 16-bit PCM WAV written without ffmpeg (the synthetic
 * corpora are made that way).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { ffmpegInput, fluent, lastErrorLine, pipeFfmpeg } from '../video/ffmpeg.js';

/** The sample rate of every feature pipeline here (docs/DESIGN.md §11). */
export const SAMPLE_RATE = 16000;

/** A failure tied to one audio file; `reason` is the human part without the file name. */
export class AudioFileError extends Error {
  readonly file: string;
  readonly reason: string;
  constructor(file: string, reason: string) {
    super(`${file}: ${reason}`);
    this.name = 'AudioFileError';
    this.file = file;
    this.reason = reason;
  }
}

export interface DecodeOptions {
  /** Output sample rate (default 16 000). */
  sampleRate?: number;
  /** Kill ffmpeg after this long (default 60 s). */
  timeoutMs?: number;
}

/**
 * Decodes the first audio stream of `file` to mono float32 PCM in [−1, 1] at `sampleRate`.
 * A missing file, a file without audio, or an empty stream is an {@link AudioFileError}.
 *
 * @example const pcm = await decodeAudio('spk1/sess/utt1.wav'); pcm.length / 16000 // seconds
 */
export async function decodeAudio(file: string, opts: DecodeOptions = {}): Promise<Float32Array> {
  const { sampleRate = SAMPLE_RATE, timeoutMs = 60000 } = opts;
  if (typeof file !== 'string' || !file) throw new Error(`decodeAudio: 'file' must be a non-empty path, got ${JSON.stringify(file)}`);
  if (!Number.isInteger(sampleRate) || sampleRate < 1000) throw new Error(`decodeAudio: 'sampleRate' must be an integer ≥ 1000, got ${sampleRate}`);
  const cmd = fluent()(ffmpegInput(file))
    .inputOptions(['-nostdin', '-hide_banner', '-threads', '1'])
    .noVideo()
    .audioChannels(1)
    .audioFrequency(sampleRate)
    .audioCodec('pcm_f32le')
    .outputOptions(['-sn', '-dn'])
    .format('f32le');
  const { bytes, stderr } = await pipeFfmpeg(cmd, {
    timeoutMs,
    fail: (reason) => new AudioFileError(file, reason),
    describe: (err, lines) => lastErrorLine(lines.join('\n') || err.message),
  });
  if (bytes.length < 4) throw new AudioFileError(file, `no audio samples decoded (${lastErrorLine(stderr.join('\n'))})`);
  // Copy into an aligned buffer: a Node Buffer may start at any byte offset.
  const out = new Float32Array(Math.floor(bytes.length / 4));
  new Uint8Array(out.buffer).set(bytes.subarray(0, out.length * 4));
  return out;
}

/**
 * A mono 16-bit PCM WAV file's bytes; samples are clipped to [−1, 1].
 *
 * @example encodeWav(new Float32Array(16000), 16000).length // 44 + 32000
 */
export function encodeWav(samples: Float32Array, sampleRate = SAMPLE_RATE): Buffer {
  const n = samples.length;
  const buf = Buffer.alloc(44 + 2 * n);
  buf.write('RIFF', 0, 'ascii');
  buf.writeUInt32LE(36 + 2 * n, 4);
  buf.write('WAVE', 8, 'ascii');
  buf.write('fmt ', 12, 'ascii');
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(sampleRate, 24);
  buf.writeUInt32LE(sampleRate * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write('data', 36, 'ascii');
  buf.writeUInt32LE(2 * n, 40);
  for (let i = 0; i < n; i++) {
    const v = Math.max(-1, Math.min(1, samples[i]));
    buf.writeInt16LE(Math.round(v * 32767), 44 + 2 * i);
  }
  return buf;
}

/** Writes {@link encodeWav}'s bytes. @example await writeWav('a.wav', pcm); */
export async function writeWav(file: string, samples: Float32Array, sampleRate = SAMPLE_RATE): Promise<void> {
  await writeFile(file, encodeWav(samples, sampleRate));
}

/**
 * A fixed-length window of `samples` starting at a random offset (training crops); an
 * utterance shorter than `length` is repeated end to end to fill it.
 *
 * @example randomCrop(pcm, 32000, Math.random) // 2 s at 16 kHz
 */
export function randomCrop(samples: Float32Array, length: number, rand: () => number): Float32Array {
  if (!Number.isInteger(length) || length < 1) throw new Error(`randomCrop: 'length' must be a positive integer, got ${length}`);
  if (samples.length === 0) throw new Error('randomCrop: empty signal');
  if (samples.length >= length) {
    const start = Math.floor(rand() * (samples.length - length + 1));
    return samples.slice(start, start + length);
  }
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = samples[i % samples.length];
  return out;
}

/**
 * Samples of a WAV file's bytes when it is already mono at `sampleRate` in 16-bit PCM or
 * 32-bit float; undefined for anything else (other rates, channels or codecs go to ffmpeg).
 */
export function parseWav(bytes: Uint8Array, sampleRate = SAMPLE_RATE): Float32Array | undefined {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < 12 || b.toString('ascii', 0, 4) !== 'RIFF' || b.toString('ascii', 8, 12) !== 'WAVE') return undefined;
  let fmt: { codec: number; channels: number; rate: number; bits: number } | undefined;
  let off = 12;
  while (off + 8 <= b.length) {
    const id = b.toString('ascii', off, off + 4);
    const size = b.readUInt32LE(off + 4);
    const body = off + 8;
    if (id === 'fmt ' && size >= 16 && body + 16 <= b.length) {
      fmt = { codec: b.readUInt16LE(body), channels: b.readUInt16LE(body + 2), rate: b.readUInt32LE(body + 4), bits: b.readUInt16LE(body + 14) };
    } else if (id === 'data') {
      if (!fmt || fmt.channels !== 1 || fmt.rate !== sampleRate) return undefined;
      const end = Math.min(b.length, body + size);
      if (fmt.codec === 1 && fmt.bits === 16) {
        const out = new Float32Array(Math.floor((end - body) / 2));
        for (let i = 0; i < out.length; i++) out[i] = b.readInt16LE(body + 2 * i) / 32768;
        return out;
      }
      if (fmt.codec === 3 && fmt.bits === 32) {
        const out = new Float32Array(Math.floor((end - body) / 4));
        for (let i = 0; i < out.length; i++) out[i] = b.readFloatLE(body + 4 * i);
        return out;
      }
      return undefined;
    }
    off = body + size + (size % 2);
  }
  return undefined;
}

/**
 * 16 kHz mono float PCM of any audio or video file: a WAV already in that form is read
 * directly (no process start, which costs more than the read for short utterances); anything
 * else is decoded by ffmpeg.
 *
 * @example const pcm = await loadAudio('spk1/sess/utt1.flac');
 */
export async function loadAudio(file: string, opts: DecodeOptions = {}): Promise<Float32Array> {
  const rate = opts.sampleRate ?? SAMPLE_RATE;
  if (/\.wav$/i.test(file)) {
    let bytes: Buffer;
    try { bytes = await readFile(file); } catch (e) { throw new AudioFileError(file, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`); }
    const pcm = parseWav(bytes, rate);
    if (pcm && pcm.length > 0) return pcm;
  }
  return decodeAudio(file, opts);
}
