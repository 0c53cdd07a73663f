/**
 * Frame-sampling benchmark: videos/s of 8-frame uniform sampling at 224 px (one ffmpeg per
 * clip, `sampleMany`) against (a) the decode limit, `ffmpeg -i clip -f null -`, and (b) one
 * ffmpeg process per frame (`-ss t -i clip -frames:v 1`), on generated 10 s 640×360 H.264
 * clips, all with `-threads 1` per process and the same pool size.
 *
 *   node dist/bench/frames.js [--clips 8] [--seconds 10] [--frames 8] [--concurrency <cpus>] [--repeats 3] [--gops 250,50]
 *
 * Goals: sampling time ≤ 1.25 × full-decode time, and ≥ 5 × faster than per-frame. The
 * per-frame cost is (process start + decoding from the previous keyframe) × frames, so the
 * second ratio depends on the GOP length, the frame count and the process start time,
 * which is printed with the table.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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

/** CPU seconds used so far by this process and its waited-for children (Linux /proc), or null. */
function cpuSeconds(tick: number): number | null {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    // After "pid (comm) ": state=0 … utime=11 stime=12 cutime=13 cstime=14.
    return (f[11] + f[12] + f[13] + f[14]) / tick;
  } catch {
    return null;
  }
}

interface Timing { wall: number; cpu: number | null }

/**
 * Runs each method `repeats` times, interleaved (A B C A B C …) so that load from other
 * processes on the machine falls on all of them alike; medians of wall and CPU seconds.
 */
async function measure(methods: (() => Promise<void>)[], repeats: number, tick: number): Promise<Timing[]> {
  const walls: number[][] = methods.map(() => []);
  const cpus: (number | null)[][] = methods.map(() => []);
  for (let r = 0; r < repeats; r++) {
    for (let m = 0; m < methods.length; m++) {
      const c0 = cpuSeconds(tick);
      const t0 = performance.now();
      await methods[m]();
      walls[m].push((performance.now() - t0) / 1000);
      const c1 = cpuSeconds(tick);
      cpus[m].push(c0 !== null && c1 !== null ? c1 - c0 : null);
    }
  }
  const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  return methods.map((_, m) => ({
    wall: median(walls[m]),
    cpu: cpus[m].every((c) => c !== null) ? median(cpus[m] as number[]) : null,
  }));
}

interface Row { gop: number; method: string; processes: number; t: Timing }

async function benchGop(dir: string, gop: number, o: { clips: number; seconds: number; frames: number; concurrency: number; repeats: number }, tick: number): Promise<Row[]> {
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
  const [full, mine, per] = await measure([fullDecode, ours, perFrame], o.repeats, tick);
  return [
    { gop, method: 'full decode `ffmpeg -i clip -f null -` (limit)', processes: clips.length, t: full },
    { gop, method: `sampleMany, uniform @${SIZE} (ffprobe + 1 ffmpeg per clip)`, processes: 2 * clips.length, t: mine },
    { gop, method: '1 ffmpeg per frame (`-ss t -i clip -frames:v 1`) + ffprobe', processes: (frames + 1) * clips.length, t: per },
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

  let tick = 100;
  try { tick = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100; } catch { /* Linux default */ }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vlm-bench-frames-'));
  try {
    const rows: Row[] = [];
    for (const gop of gops) rows.push(...(await benchGop(dir, gop, o, tick)));
    const [start] = await measure([async () => { for (let i = 0; i < 20; i++) await run(ffmpegBinary().path, ['-version']); }], 1, tick);
    const load = os.loadavg()[0];
    console.log(`\nFrame sampling: ${o.clips} clips of ${o.seconds} s, 640×360 H.264 25 fps (libx264 veryfast), ${o.frames} frames per clip at ${SIZE} px; ` +
      `${o.concurrency} processes at a time, -threads 1 each; medians of ${o.repeats} interleaved runs; ffmpeg process start ${(start.wall / 20 * 1000).toFixed(1)} ms; ` +
      `${os.cpus().length}× ${os.cpus()[0]?.model ?? 'cpu'}, load average ${load.toFixed(1)} at the end; ${ffmpegBinary().version.replace(/ Copyright.*$/, '')}\n`);
    const cpuOk = rows.every((r) => r.t.cpu !== null);
    console.log(`| GOP (frames) | method | processes | wall (s) | videos/s |${cpuOk ? ' CPU s / video |' : ''} wall ÷ full decode |${cpuOk ? ' CPU ÷ full decode |' : ''} sampleMany speed-up (wall${cpuOk ? ' / CPU' : ''}) |`);
    console.log(`| ---: | --- | ---: | ---: | ---: |${cpuOk ? ' ---: |' : ''} ---: |${cpuOk ? ' ---: |' : ''} ---: |`);
    for (const gop of gops) {
      const [full, ours, per] = rows.filter((r) => r.gop === gop);
      for (const r of [full, ours, per]) {
        const speed = r === ours ? '—' : `${(r.t.wall / ours.t.wall).toFixed(2)}×${cpuOk ? ` / ${(r.t.cpu! / ours.t.cpu!).toFixed(2)}×` : ''}`;
        console.log(`| ${gop} | ${r.method} | ${r.processes} | ${r.t.wall.toFixed(2)} | ${(o.clips / r.t.wall).toFixed(2)} |` +
          `${cpuOk ? ` ${(r.t.cpu! / o.clips).toFixed(3)} |` : ''} ${(r.t.wall / full.t.wall).toFixed(2)}× |${cpuOk ? ` ${(r.t.cpu! / full.t.cpu!).toFixed(2)}× |` : ''} ${speed} |`);
      }
    }
    console.log('');
    for (const gop of gops) {
      const [full, ours, per] = rows.filter((r) => r.gop === gop);
      const goalA = ours.t.wall <= 1.25 * full.t.wall;
      const goalB = per.t.wall >= 5 * ours.t.wall;
      console.log(`GOP ${gop}: ≤1.25× full-decode time ${goalA ? 'met' : 'NOT met'}; ≥5× faster than one process per frame ${goalB ? 'met' : 'NOT met'} (wall time).`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => { setTimeout(() => process.exit(0), 50).unref(); },
  (e: unknown) => { console.error(`bench-frames: ${(e as Error).message}`); process.exit(1); },
);
