/** `vlmargin tokenizer build`: learn a WordPiece or BPE vocabulary from a manifest's captions. */
import type { Command } from 'commander';
import { z } from 'zod';
import { readManifest } from '../../src/data/manifest.js';
import { buildTokenizer } from '../../src/text/buildTokenizer.js';

const BuildArgs = z.object({
  manifest: z.string().min(1, 'expected a path to a JSONL manifest'),
  out: z.string().min(1, 'expected an output folder'),
  vocabSize: z.coerce.number().int().min(8).max(1_000_000),
  kind: z.enum(['wordpiece', 'bpe']),
  minFrequency: z.coerce.number().int().min(1),
  split: z.string().min(1).optional(),
  allowOutsideRoot: z.boolean().optional(),
});

export function register(program: Command): void {
  const tokenizer = program.command('tokenizer').description('text tokenizers (Hugging Face folders, read by tokenizers.js)');
  tokenizer.command('build')
    .description('learn a vocabulary from the captions of a native JSONL manifest and write tokenizer.json, tokenizer_config.json, special_tokens_map.json (+ vocab.txt)')
    .requiredOption('--manifest <file>', 'native JSONL manifest (caption or captions per line)')
    .requiredOption('--out <dir>', 'folder to write the tokenizer into')
    .option('--vocab-size <n>', 'largest vocabulary, special tokens included', '4096')
    .option('--kind <kind>', 'wordpiece (BERT style [CLS] … [SEP]) or bpe (CLIP style <|startoftext|> … <|endoftext|>)', 'wordpiece')
    .option('--min-frequency <n>', 'merge a pair only if it occurs at least this often', '2')
    .option('--split <name>', 'use only entries of this split (e.g. train, so test captions do not shape the vocabulary)')
    .option('--allow-outside-root', 'keep entries whose video path leaves the manifest folder')
    .action(async (raw: Record<string, unknown>) => {
      const parsed = BuildArgs.safeParse(raw);
      if (!parsed.success) throw new Error(`tokenizer build: ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}`);
      const a = parsed.data;
      const m = await readManifest(a.manifest, { allowOutsideRoot: a.allowOutsideRoot ?? false, split: a.split });
      for (const e of m.errors.slice(0, 10)) console.warn(`skipped ${e.source}:${e.line ?? '?'}: ${e.reason}`);
      if (m.errors.length > 10) console.warn(`… and ${m.errors.length - 10} more skipped lines`);
      const captions = m.entries.flatMap((e) => e.captions);
      if (captions.length === 0) {
        throw new Error(`tokenizer build: ${m.path} gave no captions${a.split ? ` in split "${a.split}"` : ''} (${m.errors.length} lines skipped)`);
      }
      const r = await buildTokenizer(captions, { out: a.out, vocabSize: a.vocabSize, kind: a.kind, minFrequency: a.minFrequency });
      console.log(`${r.kind} tokenizer: ${r.vocabSize} tokens (${r.merges} merges) from ${captions.length} captions of ${m.entries.length} entries, ${r.words} distinct words`);
      console.log(`wrote ${r.files.join(', ')}`);
    });
}
