/** `vlmargin meta-set`: draw a small clean concept-balanced meta set from a manifest. */
import type { Command } from 'commander';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { readManifest, writeManifest } from '../../src/data/manifest.js';
import { drawMetaSet, drawRecipePath } from '../../src/data/metaSet.js';

const MetaSetArgs = z.object({
  manifest: z.string().min(1, 'expected a path to a JSONL manifest'),
  out: z.string().min(1, 'expected an output .jsonl path').refine((s) => s.endsWith('.jsonl'), 'the output must end in .jsonl'),
  perConcept: z.coerce.number().int().min(1),
  seed: z.coerce.number().int().min(0),
  conceptPrefix: z.string().min(1).optional(),
  split: z.string().min(1).optional(),
  allowOutsideRoot: z.boolean().optional(),
});

/** The synthetic corpus parameters, when the manifest's folder holds a synthetic corpus.json. */
async function synthParamsNextTo(manifest: string): Promise<unknown> {
  try {
    const o = JSON.parse(await readFile(path.join(path.dirname(manifest), 'corpus.json'), 'utf8')) as { format?: string; params?: unknown };
    return o.format === 'vlmargin-synth-corpus' ? o.params : undefined;
  } catch {
    return undefined;
  }
}

export function register(program: Command): void {
  program.command('meta-set')
    .description('draw a clean meta set balanced over concepts; writes FILE (video paths relative to the source manifest folder) and FILE.draw.json (the recipe)')
    .requiredOption('--manifest <file>', 'source manifest (JSONL) whose entries have concepts')
    .requiredOption('--per-concept <k>', 'items per concept')
    .requiredOption('--out <file>', 'meta-set manifest to write (.jsonl)')
    .option('--concept-prefix <prefix>', 'balance only over concepts starting with this, e.g. color:')
    .option('--split <name>', 'draw only from this split (e.g. meta, so it stays disjoint from train)')
    .option('--seed <n>', 'seed of the draw', '1')
    .option('--allow-outside-root', 'keep entries whose video path leaves the manifest folder')
    .action(async (raw: Record<string, unknown>) => {
      const parsed = MetaSetArgs.safeParse(raw);
      if (!parsed.success) throw new Error(`meta-set: ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}`);
      const a = parsed.data;
      const m = await readManifest(a.manifest, { split: a.split, allowOutsideRoot: a.allowOutsideRoot });
      for (const e of m.errors.slice(0, 5)) console.error(`skipped ${e.source}:${e.line ?? '?'}: ${e.reason}`);
      if (m.errors.length > 5) console.error(`… and ${m.errors.length - 5} more skipped lines`);
      if (m.entries.length === 0) throw new Error(`meta-set: ${m.path} has no usable entries${a.split ? ` in split "${a.split}"` : ''}`);
      const d = drawMetaSet(m.entries, { perConcept: a.perConcept, seed: a.seed, conceptPrefix: a.conceptPrefix });
      await writeManifest(a.out, d.entries, { root: m.root });
      const command = ['vlmargin meta-set', `--manifest ${a.manifest}`, a.split ? `--split ${a.split}` : '', `--per-concept ${a.perConcept}`,
        a.conceptPrefix ? `--concept-prefix ${a.conceptPrefix}` : '', `--seed ${a.seed}`, `--out ${a.out}`].filter(Boolean).join(' ');
      const recipe = {
        command,
        note: 'video paths in the meta-set manifest are relative to the source manifest folder; read it with readMetaSet(file, { source })',
        split: a.split ?? null, perConcept: a.perConcept, conceptPrefix: a.conceptPrefix ?? null, seed: a.seed,
        items: d.entries.length, counts: d.counts, cleanliness: d.cleanliness, excludedNoisy: d.excludedNoisy,
        withoutConcepts: d.withoutConcepts, warnings: d.warnings, synth: await synthParamsNextTo(m.path),
      };
      await writeFile(drawRecipePath(path.resolve(a.out)), `${JSON.stringify(recipe, null, 2)}\n`);
      console.log(`meta set: ${d.entries.length} items from ${m.entries.length} (${d.excludedNoisy} noisy excluded) -> ${path.resolve(a.out)}`);
      console.log(`  per concept: ${Object.entries(d.counts).map(([k, v]) => `${k} ${v}`).join(', ')}`);
      for (const w of d.warnings) console.warn(`warning: ${w}`);
    });
}
