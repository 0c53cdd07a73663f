/**
 * Loader memory against dataset size: one epoch over synthetic frame caches of N/10 and N
 * clips (default 100 000 clips of 4 frames at 32 px: 1.2 GB), each run in a fresh process,
 * sampling RSS after every batch. Compares StreamLoader (shards in a seeded order through a
 * shuffle buffer) with BatchLoader (the whole cache's clip index in memory, clips read by
 * random access).
 *
 *   node dist/bench/stream-loader.js [--clips 100000] [--frames 4] [--size 32] [--shard-size 32]
 *                                    [--batch 64] [--buffer 1024] [--dir /tmp/…] [--keep]
 *
 * The caches are written directly in the frame-cache layout (index.json, shard-NNNNN.bin +
 * .json) with patterned pixels: decoding 100 000 videos is not what is measured here.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openFrameCache } from '../src/data/frameCache.js';
import { BatchLoader, encodeCaptions } from '../src/data/loader.js';
import { StreamLoader } from '../src/data/streamLoader.js';

const { values: a } = parseArgs({
  options: {
    clips: { type: 'string', default: '100000' }, frames: { type: 'string', default: '4' }, size: { type: 'string', default: '32' },
    'shard-size': { type: 'string', default: '32' }, batch: { type: 'string', default: '64' }, buffer: { type: 'string', default: '1024' },
    dir: { type: 'string' }, keep: { type: 'boolean', default: false },
    child: { type: 'string' }, mode: { type: 'string' },
  },
});
const num = (k: keyof typeof a): number => Number(a[k]);
const MAX_LEN = 16;
const MB = 1024 * 1024;

function writeCache(dir: string, clips: number, frames: number, size: number, shardSize: number): void {
  if (existsSync(path.join(dir, 'index.json'))) return;
  mkdirSync(dir, { recursive: true });
  const clipBytes = frames * size * size * 3;
  const shards: string[] = [];
  for (let k = 0; k * shardSize < clips; k++) {
    const name = `shard-${String(k).padStart(5, '0')}`;
    const n = Math.min(shardSize, clips - k * shardSize);
    const bin = new Uint8Array(n * clipBytes);
    for (let i = 0; i < n; i++) bin.fill((k * shardSize + i) % 251, i * clipBytes, (i + 1) * clipBytes);
    const items = Array.from({ length: n }, (_, i) => ({
      id: `v${k * shardSize + i}`, video: `/data/v${k * shardSize + i}.mp4`, offset: i * clipBytes,
      timestamps: Array.from({ length: frames }, (_, t) => t + 0.5), frameTimes: Array.from({ length: frames }, (_, t) => t + 0.5), padded: 0,
    }));
    writeFileSync(path.join(dir, `${name}.bin`), bin);
    writeFileSync(path.join(dir, `${name}.json`), JSON.stringify({ format: 'vlmargin-frame-cache-shard', version: 1, clipBytes, bytes: bin.length, items, errors: [] }));
    shards.push(name);
  }
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({
    format: 'vlmargin-frame-cache', version: 1, frames, size, strategy: 'uniform', shardSize, shards, clips, errors: [], complete: true,
  }));
}

interface ChildResult { mode: string; clips: number; afterTableMb: number; afterOpenMb: number; peakMb: number; endMb: number; liveOpenMb: number; livePeakMb: number; batches: number; seconds: number }

async function child(dir: string, clips: number, mode: string): Promise<void> {
  // A caption table of one caption per clip, as the pipelines hold it.
  const table = encodeCaptions(Array.from({ length: clips }, (_, i) => ({ id: `v${i}`, captions: [`caption ${i}`] })), (cs) => ({
    ids: new Int32Array(cs.length * MAX_LEN).fill(1), mask: new Int32Array(cs.length * MAX_LEN).fill(1),
  }));
  global.gc?.();
  const afterTable = process.memoryUsage().rss;
  const batchSize = num('batch');
  const loader = mode === 'stream'
    ? await StreamLoader.open(dir, table, { batchSize, shuffleBuffer: num('buffer'), seed: 1 })
    : new BatchLoader(await openFrameCache(dir), table, { batchSize, seed: 1 });
  // Live memory: the JS heap and array buffers right after a full GC.
  const live = (): number => { global.gc?.(); const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers; };
  const liveOpen = live();
  const afterOpen = process.memoryUsage().rss;
  let peak = afterOpen;
  let livePeak = liveOpen;
  const every = Math.max(1, Math.floor(loader.batchesPerEpoch / 20));
  const t0 = performance.now();
  let gcMs = 0;
  for (let b = 0; b < loader.batchesPerEpoch; b++) {
    await loader.next();
    peak = Math.max(peak, process.memoryUsage().rss);
    if (b % every === every - 1) { const g0 = performance.now(); livePeak = Math.max(livePeak, live()); gcMs += performance.now() - g0; }
  }
  const seconds = (performance.now() - t0 - gcMs) / 1000;
  global.gc?.();
  const r: ChildResult = {
    mode, clips, afterTableMb: afterTable / MB, afterOpenMb: afterOpen / MB, peakMb: peak / MB, endMb: process.memoryUsage().rss / MB,
    liveOpenMb: liveOpen / MB, livePeakMb: livePeak / MB,
    batches: loader.batchesPerEpoch, seconds,
  };
  console.log(JSON.stringify(r));
}

async function main(): Promise<void> {
  if (a.child) { await child(a.child, num('clips'), a.mode!); return; }
  const clips = num('clips');
  const frames = num('frames');
  const size = num('size');
  const root = a.dir ?? mkdtempSync(path.join(os.tmpdir(), 'vlm-stream-bench-'));
  const clipBytes = frames * size * size * 3;
  const sizes = [Math.round(clips / 10), clips];
  console.log(`caches of ${sizes.join(' and ')} clips, ${frames}×${size}² (${clipBytes} B/clip; ${(sizes[1] * clipBytes / 1e9).toFixed(2)} GB), in ${root}`);
  for (const n of sizes) writeCache(path.join(root, `c${n}`), n, frames, size, num('shard-size'));
  const rows: ChildResult[] = [];
  for (const mode of ['stream', 'random']) {
    for (const n of sizes) {
      const r = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), '--child', path.join(root, `c${n}`), '--clips', String(n), '--mode', mode,
        '--batch', a.batch!, '--buffer', a.buffer!], { encoding: 'utf8', maxBuffer: 16 * MB });
      if (r.status !== 0) throw new Error(`${mode} ${n}: ${r.stderr}`);
      rows.push(JSON.parse(r.stdout.trim().split('\n').at(-1)!) as ChildResult);
    }
  }
  const bufMb = (num('buffer') * clipBytes) / MB;
  const batchMb = (num('batch') * clipBytes * 4) / MB;
  console.log(`batch ${a.batch}, shuffle buffer ${a.buffer} clips (${bufMb.toFixed(1)} MB of pixels), a batch of floats ${batchMb.toFixed(1)} MB`);
  console.log('RSS in MB: with the caption table; after opening the loader; the peak over one epoch (sampled after every batch); after the epoch and a GC.');
  console.log('Live MB (JS heap + array buffers after a full GC, sampled 20 times in the epoch): after opening, and the largest in the epoch.');
  console.log('| loader | clips | RSS table | RSS opened | RSS peak | RSS after | RSS peak − opened | live opened | live peak − opened | epoch (s) | clips/s |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    console.log(`| ${r.mode === 'stream' ? 'StreamLoader' : 'BatchLoader'} | ${r.clips} | ${r.afterTableMb.toFixed(0)} | ${r.afterOpenMb.toFixed(0)} | ${r.peakMb.toFixed(0)} | ${r.endMb.toFixed(0)} | ${(r.peakMb - r.afterOpenMb).toFixed(0)} | ${r.liveOpenMb.toFixed(0)} | ${(r.livePeakMb - r.liveOpenMb).toFixed(0)} | ${r.seconds.toFixed(1)} | ${((r.batches * num('batch')) / r.seconds).toFixed(0)} |`);
  }
  if (!a.keep && !a.dir) rmSync(root, { recursive: true, force: true });
}

await main();
