/** `vlmargin synth`: generate (or reuse) the synthetic video-text corpus. */
import type { Command } from 'commander';
import { z } from 'zod';
import { generateSynthCorpus } from '../../src/data/synth.js';
import { writeProgress } from '../../src/train/logger.js';

const SynthArgs = z.object({
  out: z.string().min(1, 'expected an output folder'),
  videos: z.coerce.number().int().optional(),
  noise: z.coerce.number().optional(),
  swapFraction: z.coerce.number().optional(),
  imbalance: z.coerce.number().optional(),
  seed: z.coerce.number().int().optional(),
  size: z.coerce.number().int().optional(),
  frames: z.coerce.number().int().optional(),
  fps: z.coerce.number().optional(),
  concurrency: z.coerce.number().int().min(1).optional(),
});

export function register(program: Command): void {
  program.command('synth')
    .description('write a synthetic corpus (moving shapes, templated captions, long-tailed noisy train split, clean balanced meta/test splits); reuses one made with the same parameters')
    .requiredOption('--out <dir>', 'corpus folder (gets manifest.jsonl, corpus.json, clips/)')
    .option('--videos <n>', 'total clips: meta ≈ 10 %, test ≈ 20 %, the rest train (default 720)')
    .option('--noise <fraction>', 'fraction of train pairs with a misaligned caption (default 0.3)')
    .option('--swap-fraction <fraction>', 'share of the misaligned pairs that take another clip\'s caption; the rest get one attribute wrong (default 0.5)')
    .option('--imbalance <ratio>', 'head/tail ratio of train clips per colour (default 20)')
    .option('--seed <n>', 'seed; the same seed and parameters give the same corpus (default 1)')
    .option('--size <px>', 'frame width and height, even (default 64)')
    .option('--frames <n>', 'frames per clip (default 16)')
    .option('--fps <n>', 'frame rate (default 8)')
    .option('--concurrency <n>', 'clips encoded at once (default 2)')
    .action(async (raw: Record<string, unknown>) => {
      const parsed = SynthArgs.safeParse(raw);
      if (!parsed.success) throw new Error(`synth: ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}`);
      let lastShown = -1;
      const r = await generateSynthCorpus({
        ...parsed.data,
        onProgress: (done, total) => {
          const pct = Math.floor((100 * done) / total / 10) * 10;
          if (pct !== lastShown || done === total) { writeProgress(process.stderr, `encoding clips ${done}/${total}`, done === total); lastShown = pct; }
        },
      });
      const c = r.counts;
      console.log(`${r.reused ? 'reused' : 'generated'} corpus in ${r.dir} (${r.clipsWritten} clips encoded, ${r.seconds.toFixed(1)} s)`);
      console.log(`  train ${c.train} (noisy ${c.noisy}: ${c.noisySwap} swapped, ${c.noisyAttribute} one attribute wrong), meta ${c.meta}, test ${c.test}`);
      console.log(`  train per colour ${Object.entries(c.trainPerColor).map(([k, v]) => `${k} ${v}`).join(', ')} (head/tail ${c.headTailRatio.toFixed(2)})`);
      console.log(`  manifest ${r.manifestPath}`);
    });
}
