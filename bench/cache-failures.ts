/**
 * Frame-cache bookkeeping cost: building caches whose manifests list only missing files, so no
 * ffmpeg runs and what is timed is the shard, error-log and index writes. A build whose cost
 * grows linearly with the rows takes twice as long for twice the rows; an index that held
 * every error and was rewritten after each shard would grow quadratically (docs/RELIABILITY.md).
 *
 *   node dist/bench/cache-failures.js [--rows 10000,20000,50000] [--shard-size 32]
 *
 * Prints seconds per size and the ratio of each to the first, per row.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildFrameCache } from '../src/data/frameCache.js';
import type { ManifestEntry } from '../src/data/types.js';

const { values } = parseArgs({ options: { rows: { type: 'string', default: '10000,20000,50000' }, 'shard-size': { type: 'string', default: '32' } } });
const sizes = values.rows!.split(',').map(Number);
const shardSize = Number(values['shard-size']);
if (sizes.some((n) => !Number.isInteger(n) || n < 1) || !Number.isInteger(shardSize) || shardSize < 1) {
  throw new Error('--rows must be positive integers separated by commas, --shard-size a positive integer');
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'vlm-bench-cache-failures-'));
try {
  const rows: { n: number; seconds: number; indexBytes: number }[] = [];
  for (const n of sizes) {
    const entries: ManifestEntry[] = Array.from({ length: n }, (_, i) => ({ id: `v${i}`, video: path.join(dir, 'missing', `${i}.mp4`), captions: ['x'] }));
    const out = path.join(dir, `cache-${n}`);
    const t0 = performance.now();
    const s = await buildFrameCache(entries, { out, frames: 4, size: 32, shardSize, onWarning: () => undefined });
    const seconds = (performance.now() - t0) / 1000;
    if (s.skipped.length !== n) throw new Error(`expected ${n} failures, got ${s.skipped.length}`);
    rows.push({ n, seconds, indexBytes: statSync(path.join(out, 'index.json')).size });
  }
  console.log(`| rows | seconds | ms per 1000 rows | ratio to ${sizes[0]} rows (per row) | index.json bytes |`);
  console.log('| --- | --- | --- | --- | --- |');
  for (const r of rows) {
    const perRow = r.seconds / r.n / (rows[0].seconds / rows[0].n);
    console.log(`| ${r.n} | ${r.seconds.toFixed(2)} | ${(r.seconds / r.n * 1e6).toFixed(0)} | ${perRow.toFixed(2)} | ${r.indexBytes} |`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
