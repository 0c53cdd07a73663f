/**
 * Frame extraction through the queue against the local build, on this machine, one run:
 * clips/s of `buildFrameCache` (in-process) and of `enqueueFrameCache` with 1 and 2
 * `vlmargin worker` processes, at the same number of ffmpeg processes in total; then the
 * queue's cost per shard, from shards whose items fail without decoding (a missing file),
 * so the time is the orchestration alone.
 *
 *   node dist/bench/frames-queue.js [--clips 48] [--seconds 4] [--frames 8] [--size 112]
 *                                   [--shard-size 8] [--ffmpeg 2] [--empty-shards 200] [--queue redis://…]
 *
 * Without --queue it starts redis-server (from the PATH) on a free loopback port and stops it.
 * Workers are started and ready before each timed run; the caches are compared byte for byte.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildFrameCache, planFrameCache } from '../src/data/frameCache.js';
import type { ManifestEntry } from '../src/data/types.js';
import { ffmpegBinary } from '../src/video/binaries.js';
import { enqueueFrameCache } from '../pipelines/frames-queue.js';

const { values: a } = parseArgs({
  options: {
    clips: { type: 'string', default: '48' }, seconds: { type: 'string', default: '4' }, frames: { type: 'string', default: '8' },
    size: { type: 'string', default: '112' }, 'shard-size': { type: 'string', default: '8' }, ffmpeg: { type: 'string', default: '2' },
    'empty-shards': { type: 'string', default: '200' }, queue: { type: 'string' },
  },
});
const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'pipelines', 'cli', 'main.js');

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => resolve(p)); });
  });
}

async function startRedis(): Promise<{ url: string; stop: () => void }> {
  if (a.queue) return { url: a.queue, stop: () => undefined };
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  for (let i = 0; i < 50; i++) {
    try { if (execFileSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).includes('PONG')) break; } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url: `redis://127.0.0.1:${port}`, stop: () => { child.kill('SIGTERM'); } };
}

function startWorker(url: string, name: string, concurrency: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [cli, 'worker', '--queue', url, '--queue-name', name, '--concurrency', String(concurrency)], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => { out += d; if (out.includes('taking jobs')) resolve(child); });
    child.on('exit', (c) => reject(new Error(`worker exited (${c}) before taking jobs: ${out}`)));
  });
}

async function stopWorkers(ws: ChildProcess[]): Promise<void> {
  await Promise.all(ws.map((w) => new Promise<void>((r) => { w.once('exit', () => r()); w.kill('SIGTERM'); })));
}

function sameFiles(x: string, y: string): boolean {
  const list = (d: string): string[] => readdirSync(d).filter((n) => n !== '.lock').sort();
  const [lx, ly] = [list(x), list(y)];
  return lx.join() === ly.join() && lx.every((n) => readFileSync(path.join(x, n)).equals(readFileSync(path.join(y, n))));
}

async function main(): Promise<void> {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'vlm-queue-bench-'));
  const redis = await startRedis();
  try {
    const n = Number(a.clips);
    const ff = Number(a.ffmpeg);
    const opts = { frames: Number(a.frames), size: Number(a.size), shardSize: Number(a['shard-size']) };
    const entries: ManifestEntry[] = [];
    for (let i = 0; i < n; i++) {
      const file = path.join(tmp, `c${i}.mp4`);
      execFileSync(ffmpegBinary().path, ['-v', 'error', '-y', '-f', 'lavfi', '-i', `testsrc2=s=320x240:r=25:d=${a.seconds}`, '-vf', `hue=h=${(i * 37) % 360}`,
        '-c:v', 'libx264', '-g', '50', '-pix_fmt', 'yuv420p', file]);
      entries.push({ id: `c${i}`, video: file, captions: ['x'] });
    }
    console.log(`${n} clips of ${a.seconds} s 320×240 H.264; ${opts.frames} frames at ${opts.size} px; shards of ${opts.shardSize}; ${ff} ffmpeg processes in total; ${os.cpus().length} CPUs`);

    const t0 = performance.now();
    await buildFrameCache(entries, { out: path.join(tmp, 'local'), ...opts, concurrency: ff });
    const local = (performance.now() - t0) / 1000;

    const plan = planFrameCache(entries, opts);
    const rows: [string, number, boolean][] = [['local build (in-process)', local, true]];
    const layouts: [string, number[]][] = [[`1 worker × ${ff}`, [ff]], [`2 workers × ${Math.max(1, ff / 2)}`, [Math.max(1, ff / 2), Math.max(1, ff / 2)]]];
    for (const [label, conc] of layouts) {
      const name = `bench-${label.replace(/\W+/g, '')}-${process.pid}`;
      const ws = await Promise.all(conc.map((c) => startWorker(redis.url, name, c)));
      const out = path.join(tmp, name);
      const s0 = performance.now();
      const s = await enqueueFrameCache(plan, { out, queue: redis.url, name, pollMs: 50 });
      const secs = (performance.now() - s0) / 1000;
      await stopWorkers(ws);
      if (s.failed.length) throw new Error(`${label}: ${s.failed.length} shards failed`);
      rows.push([`queue, ${label}`, secs, sameFiles(path.join(tmp, 'local'), out)]);
    }
    console.log('\n| build | seconds | clips/s | vs local | same bytes as local |');
    console.log('| --- | ---: | ---: | ---: | --- |');
    for (const [label, secs, same] of rows) console.log(`| ${label} | ${secs.toFixed(2)} | ${(n / secs).toFixed(2)} | ${(local / secs).toFixed(2)} | ${same ? 'yes' : 'NO'} |`);

    // Orchestration alone: shards of one item whose file is missing (no ffmpeg runs).
    const e = Number(a['empty-shards']);
    const missing: ManifestEntry[] = Array.from({ length: e }, (_, i) => ({ id: `m${i}`, video: path.join(tmp, `missing-${i}.mp4`), captions: ['x'] }));
    const mOpts = { frames: 2, size: 16, shardSize: 1 };
    const l0 = performance.now();
    await buildFrameCache(missing, { out: path.join(tmp, 'm-local'), ...mOpts, concurrency: ff });
    const lSecs = (performance.now() - l0) / 1000;
    const name = `bench-empty-${process.pid}`;
    const ws = await Promise.all([ff].map((c) => startWorker(redis.url, name, c)));
    const q0 = performance.now();
    await enqueueFrameCache(planFrameCache(missing, mOpts), { out: path.join(tmp, 'm-queue'), queue: redis.url, name, pollMs: 50 });
    const qSecs = (performance.now() - q0) / 1000;
    await stopWorkers(ws);
    console.log(`\n${e} shards with nothing to decode: local ${(lSecs * 1000 / e).toFixed(1)} ms/shard, queue (1 worker × ${ff}) ${(qSecs * 1000 / e).toFixed(1)} ms/shard: ` +
      `the queue adds ${((qSecs - lSecs) * 1000 / e).toFixed(1)} ms per shard`);
  } finally {
    redis.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
