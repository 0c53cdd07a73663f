/** `vlmargin synth-identities`: write the synthetic open-set identity benchmark. */
import type { Command } from 'commander';
import { z } from 'zod';
import { generateSynthIdentities } from '../../src/face/synthIdentities.js';

const Args = z.object({
  out: z.string().min(1, 'expected an output folder'),
  identities: z.coerce.number().int().min(2).optional(),
  imbalance: z.coerce.number().min(1).optional(),
  seed: z.coerce.number().int().min(0).optional(),
  size: z.coerce.number().int().min(8).optional(),
  maxPerIdentity: z.coerce.number().int().min(2).optional(),
  verifyIdentities: z.coerce.number().int().min(2).optional(),
  pairsPerFold: z.coerce.number().int().min(1).optional(),
});

export function register(program: Command): void {
  program.command('synth-identities')
    .description('write a synthetic identity benchmark: long-tailed train/<id>/*.png, closed-set test/, open-set verify/ and an LFW pairs.txt')
    .requiredOption('--out <dir>', 'benchmark folder')
    .option('--identities <n>', 'training identities (default 60)')
    .option('--imbalance <ratio>', 'largest/smallest training count (default 10)')
    .option('--seed <n>', 'seed; the same seed and options give the same files (default 1)')
    .option('--size <px>', 'image width and height (default 32)')
    .option('--max-per-identity <n>', 'images of the largest training identity (default 40)')
    .option('--verify-identities <n>', 'open-set identities, at least 2 per fold (default 40)')
    .option('--pairs-per-fold <n>', 'same (and as many different) pairs in each of the 10 folds (default 50)')
    .action(async (raw: Record<string, unknown>) => {
      const parsed = Args.safeParse(raw);
      if (!parsed.success) throw new Error(`synth-identities: ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}`);
      const r = await generateSynthIdentities(parsed.data);
      const c = r.trainCounts;
      console.log(`wrote ${r.images} images and ${r.pairs} pairs to ${r.dir} in ${r.seconds.toFixed(1)} s`);
      console.log(`  train: ${c.length} identities, ${c.reduce((a, b) => a + b, 0)} images (largest ${c[0]}, smallest ${c[c.length - 1]})`);
      console.log(`  pairs: ${r.pairsPath}`);
    });
}
