/**
 * `vlmargin frames`: decode a manifest's videos once into a frame cache, resumably: in this
 * process, or with `--queue` as jobs for `vlmargin worker`s on other machines; `--verify`
 * checks a cache.
 */
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { z } from 'zod';
import { buildFrameCache, planFrameCache, verifyFrameCache, type FrameCacheSummary } from '../../src/data/frameCache.js';
import { readManifest } from '../../src/data/manifest.js';
import type { ItemError } from '../../src/util/itemError.js';
import { SAMPLE_STRATEGIES } from '../../src/video/sampler.js';
import { DEFAULT_FRAMES_QUEUE, enqueueFrameCache, type QueueProgress, type QueueSummary } from '../frames-queue.js';

const FramesArgs = z.object({
  manifest: z.string().min(1, 'expected a path to a JSONL manifest'),
  out: z.string().min(1, 'expected an output folder'),
  frames: z.coerce.number().int().min(1).max(1024),
  size: z.coerce.number().int().min(8).max(4096),
  strategy: z.enum(SAMPLE_STRATEGIES),
  fps: z.coerce.number().positive().optional(),
  seed: z.coerce.number().int().optional(),
  concurrency: z.coerce.number().int().min(1).max(256),
  shardSize: z.coerce.number().int().min(1),
  timeout: z.coerce.number().positive(),
  split: z.string().min(1).optional(),
  allowOutsideRoot: z.boolean().optional(),
  progress: z.boolean(),
  queue: z.string().min(1).optional(),
  queueName: z.string().min(1),
}).refine((a) => a.strategy !== 'fps' || a.fps !== undefined, { message: '--strategy fps needs --fps', path: ['fps'] });

/** Groups failure reasons so a summary of 10 000 bad files stays a few lines long. */
function reasonCounts(errors: ItemError[]): [string, number][] {
  const m = new Map<string, number>();
  for (const e of errors) {
    const key = e.reason.replace(/\(ffprobe: .*\)$/, '(ffprobe error)');
    m.set(key, (m.get(key) ?? 0) + 1);
  }
  return [...m.entries()].sort((a, b) => b[1] - a[1]);
}

function printSummary(s: FrameCacheSummary, manifestErrors: ItemError[], seconds: number): void {
  console.log(`frame cache ${s.out}: ${s.decoded} decoded, ${s.reused} reused from an earlier run, ${s.skipped.length} skipped; ${s.shards} shards; ${seconds.toFixed(1)} s` +
    (s.decoded > 0 ? ` (${(s.decoded / seconds).toFixed(2)} videos/s)` : ''));
  if (s.retried) console.log(`  ${s.retried} earlier ${s.retried === 1 ? 'failure' : 'failures'} tried again (a failure is tried on one more build, or when its file changes)`);
  if (s.changed) console.log(`  ${s.changed} cached ${s.changed === 1 ? 'clip' : 'clips'} decoded again: the video file or window changed`);
  if (s.corruptShards.length) console.log(`  ${s.corruptShards.length} corrupt ${s.corruptShards.length === 1 ? 'shard' : 'shards'} (checksum mismatch) decoded again: ${s.corruptShards.join(', ')}`);
  if (s.padded.length) console.log(`  ${s.padded.length} clips have slots filled from a frame more than one frame interval away (short or corrupt video) (e.g. ${s.padded.slice(0, 3).map((p) => `${p.id}: ${p.padded}`).join(', ')})`);
  if (manifestErrors.length) console.log(`  ${manifestErrors.length} manifest lines were unusable (see the warnings above)`);
  if (s.skipped.length) {
    console.log('  skipped, by reason:');
    for (const [reason, n] of reasonCounts(s.skipped).slice(0, 10)) console.log(`    ${String(n).padStart(6)}  ${reason}`);
    for (const e of s.skipped.slice(0, 5)) console.log(`    e.g. ${e.id ?? '?'} ${e.source}: ${e.reason}`);
  }
}

const duration = (s: number): string => (s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);

function printQueueSummary(s: QueueSummary): void {
  console.log(`frame cache ${s.out}: ${s.shards} shards: ${s.built} built by workers, ${s.reused} already committed, ${s.failed.length} failed; ` +
    `${s.clips} clips, ${s.skipped} items skipped; ${s.seconds.toFixed(1)} s`);
  for (const f of s.failed.slice(0, 10)) console.log(`  ${f.shard}: ${f.reason}`);
  if (s.failed.length > 10) console.log(`  … and ${s.failed.length - 10} more failed shards`);
}

async function verify(dir: string, json: boolean): Promise<void> {
  const r = await verifyFrameCache(dir);
  if (json) {
    console.log(JSON.stringify(r));
  } else {
    const plan = r.planned ? ` of ${r.planned.shards} planned (${r.planned.items} items)` : '';
    console.log(`frame cache ${r.dir}: ${r.clips} clips, ${r.failed} failed items, ${r.shards} intact shards${plan}; ${r.complete ? 'complete' : 'NOT complete'}`);
    if (r.unchecked) console.log(`  ${r.unchecked} shards record no checksum (built by an older version): only their sizes were checked`);
    if (r.leftovers) console.log(`  ${r.leftovers} temporary or uncommitted files (a build running, or killed; the next build removes them)`);
    for (const p of r.problems.slice(0, 20)) console.log(`  problem: ${p}`);
    if (r.problems.length > 20) console.log(`  … and ${r.problems.length - 20} more problems`);
  }
  if (!r.complete) process.exitCode = 1;
}

export function register(program: Command): void {
  program.command('frames')
    .description('decode the videos of a native JSONL manifest once into a sharded frame cache (re-run to resume), locally or through a queue; or --verify one')
    .option('--manifest <file>', 'native JSONL manifest')
    .option('--out <dir>', 'cache folder (created; an existing cache with the same settings is resumed)')
    .option('--verify <dir>', 'check a cache (every shard against its checksum, all of its manifest present); exit 1 unless complete')
    .option('--json', 'with --verify: print the report as JSON (clips, failed, shards, complete, …)')
    .option('--queue <url>', 'enqueue one job per shard on this Redis (redis://HOST:PORT[/DB]) for `vlmargin worker`s, and wait')
    .option('--queue-name <name>', 'queue name on that Redis (workers must use the same)', DEFAULT_FRAMES_QUEUE)
    .option('--frames <n>', 'frames per clip', '8')
    .option('--size <px>', 'side of the square frames: short side scaled to it, centre cropped', '224')
    .option('--strategy <name>', `frame sampling: ${SAMPLE_STRATEGIES.join(', ')}`, 'uniform')
    .option('--fps <rate>', 'sampling rate for --strategy fps')
    .option('--seed <n>', 'seed for --strategy random')
    .option('--concurrency <n>', 'ffmpeg processes at a time', '2')
    .option('--shard-size <n>', 'clips per shard', '32')
    .option('--timeout <s>', 'kill ffmpeg on a clip after this many seconds', '120')
    .option('--split <name>', 'only entries of this split')
    .option('--allow-outside-root', 'accept video paths that leave the manifest folder')
    .option('--no-progress', 'no progress bar (logs only the summary)')
    .action(async (raw: Record<string, unknown>) => {
      if (typeof raw.verify === 'string') {
        if (raw.manifest !== undefined || raw.out !== undefined || raw.queue !== undefined) throw new Error('frames: --verify DIR checks a cache; give it without --manifest, --out or --queue');
        await verify(raw.verify, raw.json === true);
        return;
      }
      if (raw.json) throw new Error('frames: --json goes with --verify DIR');
      if (raw.manifest === undefined || raw.out === undefined) throw new Error('frames: expected --manifest FILE and --out DIR (or --verify DIR)');
      const parsed = FramesArgs.safeParse(raw);
      if (!parsed.success) throw new Error(`frames: ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}`);
      const a = parsed.data;
      const m = await readManifest(a.manifest, { allowOutsideRoot: a.allowOutsideRoot ?? false, split: a.split });
      for (const e of m.errors.slice(0, 10)) console.warn(`skipped ${e.source}:${e.line ?? '?'}: ${e.reason}`);
      if (m.errors.length > 10) console.warn(`… and ${m.errors.length - 10} more unusable manifest lines`);
      if (m.entries.length === 0) throw new Error(`frames: ${m.path} has no usable entries (${m.errors.length} lines skipped)`);

      if (a.queue !== undefined) {
        const plan = planFrameCache(m.entries, {
          frames: a.frames, size: a.size, strategy: a.strategy, fps: a.fps, seed: a.seed, shardSize: a.shardSize, timeoutMs: a.timeout * 1000,
        });
        const tty = a.progress && process.stderr.isTTY;
        const qbar = tty
          ? new cliProgress.SingleBar({
            format: 'shards |{bar}| {value}/{total} done | {failed} failed | {remaining} remaining | {eta} left',
            stream: process.stderr, hideCursor: true,
          }, cliProgress.Presets.shades_classic)
          : null;
        let lastLog = 0;
        const show = (p: QueueProgress): void => {
          const eta = p.etaSeconds === null ? '?' : duration(p.etaSeconds);
          if (qbar) {
            if (!qbar.isActive) qbar.start(p.shards, p.done, { failed: p.failed, remaining: p.remaining, eta });
            qbar.update(p.done, { failed: p.failed, remaining: p.remaining, eta });
          } else if (a.progress && Date.now() - lastLog > 10_000) {
            lastLog = Date.now();
            console.error(`frames: shards ${p.done}/${p.shards} done, ${p.failed} failed, ${p.remaining} remaining, ETA ${eta}`);
          }
        };
        try {
          const s = await enqueueFrameCache(plan, { out: a.out, queue: a.queue, name: a.queueName, timeoutMs: a.timeout * 1000, onProgress: show });
          qbar?.stop();
          printQueueSummary(s);
          if (s.failed.length) throw new Error(`frames: ${s.failed.length} of ${s.shards} shards failed on the workers (above); run the command again to retry them`);
        } finally {
          qbar?.stop();
        }
        return;
      }

      const bar = a.progress && process.stderr.isTTY
        ? new cliProgress.SingleBar({
          format: 'frames |{bar}| {value}/{total} clips | {decoded} decoded, {skipped} skipped | {eta_formatted} left',
          stream: process.stderr, hideCursor: true,
        }, cliProgress.Presets.shades_classic)
        : null;
      const t0 = performance.now();
      let started = false;
      try {
        const s = await buildFrameCache(m.entries, {
          out: a.out, frames: a.frames, size: a.size, strategy: a.strategy, fps: a.fps, seed: a.seed,
          concurrency: a.concurrency, shardSize: a.shardSize, timeoutMs: a.timeout * 1000,
          onProgress: (p) => {
            if (!bar) return;
            if (!started) { bar.start(p.todo, 0, { decoded: 0, skipped: 0 }); started = true; }
            bar.update(p.done, { decoded: p.decoded, skipped: p.skipped });
          },
        });
        bar?.stop();
        printSummary(s, m.errors, (performance.now() - t0) / 1000);
      } catch (e) {
        bar?.stop();
        throw e;
      }
    });
}
