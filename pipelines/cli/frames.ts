/** `vlmargin frames`: decode a manifest's videos once into a frame cache, resumably. */
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { z } from 'zod';
import { buildFrameCache, type FrameCacheSummary } from '../../src/data/frameCache.js';
import { readManifest } from '../../src/data/manifest.js';
import type { ItemError } from '../../src/data/types.js';
import { SAMPLE_STRATEGIES } from '../../src/video/sampler.js';

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
  if (s.padded.length) console.log(`  ${s.padded.length} clips had fewer frames than asked and repeat their last frame (e.g. ${s.padded.slice(0, 3).map((p) => `${p.id}: ${p.padded}`).join(', ')})`);
  if (manifestErrors.length) console.log(`  ${manifestErrors.length} manifest lines were unusable (see the warnings above)`);
  if (s.skipped.length) {
    console.log('  skipped, by reason:');
    for (const [reason, n] of reasonCounts(s.skipped).slice(0, 10)) console.log(`    ${String(n).padStart(6)}  ${reason}`);
    for (const e of s.skipped.slice(0, 5)) console.log(`    e.g. ${e.id ?? '?'} ${e.source}: ${e.reason}`);
  }
}

export function register(program: Command): void {
  program.command('frames')
    .description('decode the videos of a native JSONL manifest once into a sharded frame cache (re-run to resume)')
    .requiredOption('--manifest <file>', 'native JSONL manifest')
    .requiredOption('--out <dir>', 'cache folder (created; an existing cache with the same settings is resumed)')
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
      const parsed = FramesArgs.safeParse(raw);
      if (!parsed.success) throw new Error(`frames: ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}`);
      const a = parsed.data;
      const m = await readManifest(a.manifest, { allowOutsideRoot: a.allowOutsideRoot ?? false, split: a.split });
      for (const e of m.errors.slice(0, 10)) console.warn(`skipped ${e.source}:${e.line ?? '?'}: ${e.reason}`);
      if (m.errors.length > 10) console.warn(`… and ${m.errors.length - 10} more unusable manifest lines`);
      if (m.entries.length === 0) throw new Error(`frames: ${m.path} has no usable entries (${m.errors.length} lines skipped)`);

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
