/**
 * Frame-sampling benchmark: videos/s of 8-frame uniform sampling at 224 px (one ffmpeg per
 * clip, `sampleMany`) against (a) the decode limit, `ffmpeg -i clip -f null -`, and (b) one
 * ffmpeg process per frame (`-ss t -i clip -frames:v 1`), on generated 10 s 640×360 H.264
 * clips, all with `-threads 1` per process and the same pool size.
 *
 *   node dist/pipelines/bench-frames.js [--clips 8] [--seconds 10] [--frames 8] [--concurrency <cpus>] [--repeats 3] [--gops 250,50]
 *
 * Goals: sampling time ≤ 1.25 × full-decode time, and ≥ 5 × faster than per-frame. The
 * per-frame cost is (process start + decoding from the previous keyframe) × frames, so the
 * second ratio depends on the GOP length, the frame count and the process start time,
 * which is printed with the table.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pLimit from 'p-limit';
import { ffmpegBinary } from '../src/video/binaries.js';
import { ffmpegInput } from '../src/video/ffmpeg.js';
import { probeVideo } from '../src/video/probe.js';
import { planTimestamps, sampleMany } from '../src/video/sampler.js';
import { resizeCropFilter } from '../src/video/transforms.js';

const SIZE = 224;

function run(bin: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 }, (err, stdout) => {
      if (err) reject(new Error(`${path.basename(bin)} ${args.join(' ')}: ${err.message}`)); else resolve(stdout.length);
    });
  });
}

async function timeIt(f: () => Promise<void>, repeats: number): Promise<number> {
  const times: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    await f();
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

interface Row { gop: number; method: string; processes: number; seconds: number }

async function benchGop(dir: string, gop: number, o: { clips: number; seconds: number; frames: number; concurrency: number; repeats: number }): Promise<Row[]> {
  const frames = o.frames;
  const ffmpeg = ffmpegBinary().path;
  const clips: string[] = [];
  for (let i = 0; i < o.clips; i++) {
    const file = path.join(dir, `gop${gop}-clip${i}.mp4`);
    // testsrc2 moves every frame, so no frame is free to decode; an offset start makes clips differ.
    execFileSync(ffmpeg, ['-v', 'error', '-y', '-f', 'lavfi', '-i', `testsrc2=s=640x360:r=25:d=${o.seconds + i}`,
      '-ss', String(i), '-c:v', 'libx264', '-preset', 'veryfast', '-g', String(gop), '-pix_fmt', 'yuv420p', file]);
    clips.push(file);
  }
  const limit = pLimit(o.concurrency);
  const fullDecode = async (): Promise<void> => {
    await Promise.all(clips.map((c) => limit(() => run(ffmpeg, ['-nostdin', '-v', 'error', '-threads', '1', '-i', ffmpegInput(c), '-f', 'null', '-']))));
  };
  const ours = async (): Promise<void> => {
    const r = await sampleMany(clips.map((video) => ({ video })), { frames, size: SIZE, strategy: 'uniform' }, { concurrency: o.concurrency });
    if (r.decoded !== clips.length) throw new Error(`bench: sampleMany skipped ${JSON.stringify(r.skipped)}`);
  };
  const perFrame = async (): Promise<void> => {
    // The per-frame way also needs the duration, so it probes each clip once too.
    const jobs = await Promise.all(clips.map((c) => limit(async () => {
      const info = await probeVideo(c);
      return planTimestamps('uniform', frames, { start: 0, end: info.duration, videoFps: info.fps }).map((t) => ({ c, t }));
    })));
    await Promise.all(jobs.flat().map(({ c, t }) => limit(async () => {
      const bytes = await run(ffmpeg, ['-nostdin', '-v', 'error', '-threads', '1', '-ss', t.toFixed(3), '-i', ffmpegInput(c),
        '-frames:v', '1', '-vf', resizeCropFilter(SIZE), '-pix_fmt', 'rgb24', '-f', 'rawvideo', 'pipe:1']);
      if (bytes !== SIZE * SIZE * 3) throw new Error(`bench: per-frame decode of ${c} at ${t}s gave ${bytes} bytes`);
    })));
  };
  // One warm-up of each so the page cache and fluent-ffmpeg's capability probe are not timed.
  await fullDecode(); await ours(); await perFrame();
  return [
    { gop, method: 'full decode `ffmpeg -i clip -f null -` (limit)', processes: clips.length, seconds: await timeIt(fullDecode, o.repeats) },
    { gop, method: `sampleMany, uniform @${SIZE} (ffprobe + 1 ffmpeg per clip)`, processes: 2 * clips.length, seconds: await timeIt(ours, o.repeats) },
    { gop, method: `1 ffmpeg per frame (-ss t -i clip -frames:v 1) + ffprobe`, processes: (frames + 1) * clips.length, seconds: await timeIt(perFrame, o.repeats) },
  ];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      clips: { type: 'string', default: '8' },
      seconds: { type: 'string', default: '10' },
      frames: { type: 'string', default: '8' },
      concurrency: { type: 'string', default: String(os.cpus().length) },
      repeats: { type: 'string', default: '3' },
      gops: { type: 'string', default: '250,50' },
    },
  });
  const o = { clips: Number(values.clips), seconds: Number(values.seconds), frames: Number(values.frames), concurrency: Number(values.concurrency), repeats: Number(values.repeats) };
  for (const [k, v] of Object.entries(o)) if (!Number.isInteger(v) || v < 1) throw new Error(`bench-frames: --${k} must be a positive integer, got ${v}`);
  const gops = String(values.gops).split(',').map(Number);
  if (gops.some((g) => !Number.isInteger(g) || g < 1)) throw new Error(`bench-frames: --gops must be comma-separated positive integers, got ${values.gops}`);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'vlm-bench-frames-'));
  try {
    const rows: Row[] = [];
    for (const gop of gops) rows.push(...(await benchGop(dir, gop, o)));
    const startMs = await timeIt(async () => { for (let i = 0; i < 20; i++) await run(ffmpegBinary().path, ['-version']); }, 1) / 20 * 1000;
    console.log(`\nFrame sampling, ${o.clips} clips of ${o.seconds} s, 640×360 H.264 25 fps (libx264 veryfast), ` +
      `${o.frames} frames per clip, ${o.concurrency} processes at a time, -threads 1 each; median of ${o.repeats}; ffmpeg process start ${startMs.toFixed(1)} ms; ${os.cpus().length}× ${os.cpus()[0]?.model ?? 'cpu'}; ${ffmpegBinary().version}\n`);
    console.log('| GOP (frames) | method | processes | time (s) | videos/s | time ÷ full decode | sampleMany speed-up |');
    console.log('| ---: | --- | ---: | ---: | ---: | ---: | ---: |');
    for (const gop of gops) {
      const [full, ours, per] = rows.filter((r) => r.gop === gop);
      for (const r of [full, ours, per]) {
        console.log(`| ${gop} | ${r.method} | ${r.processes} | ${r.seconds.toFixed(2)} | ${(o.clips / r.seconds).toFixed(2)} | ` +
          `${(r.seconds / full.seconds).toFixed(2)}× | ${r === ours ? '—' : `${(r.seconds / ours.seconds).toFixed(2)}×`} |`);
      }
      const goalA = ours.seconds <= 1.25 * full.seconds;
      const goalB = per.seconds >= 5 * ours.seconds;
      console.log(`| ${gop} | goals: ≤1.25× full decode ${goalA ? 'met' : 'NOT met'}; ≥5× faster than per-frame ${goalB ? 'met' : 'NOT met'} | | | | | |`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => { setTimeout(() => process.exit(0), 50).unref(); },
  (e: unknown) => { console.error(`bench-frames: ${(e as Error).message}`); process.exit(1); },
);
