/**
 * `vlmargin embed video|text --model DIR|CHECKPOINT --manifest M --out FILE.safetensors`:
 * L2-normalised embeddings of a manifest's videos (one row per video) or captions (one row per
 * caption), in manifest order, with the row ids in the file's metadata.
 */
import type { Command } from 'commander';
import { initBackend, parseBackendPreference } from '../../src/backend/init.js';
import { embedManifest } from '../embed.js';

interface Opts {
  model: string; manifest: string; out: string; split: string; frames?: string; framesDir?: string;
  batchSize?: string; backend?: string; allowOutsideRoot?: boolean; quiet?: boolean;
}

function positiveInt(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}: expected a positive integer, got '${value}'`);
  return n;
}

export function register(program: Command): void {
  program.command('embed')
    .description('L2-normalised embeddings of a manifest\'s videos or captions, from a Hugging Face CLIP folder or a checkpoint, as safetensors')
    .argument('<kind>', "'video' (one row per video) or 'text' (one row per caption)")
    .requiredOption('--model <dir>', 'Hugging Face CLIP folder, checkpoint folder or run folder')
    .requiredOption('--manifest <file>', 'native JSONL manifest')
    .requiredOption('--out <file>', 'output .safetensors file (tensor `embeddings`; row ids in its metadata)')
    .option('--split <name>', "only this split ('all' for every entry)", 'all')
    .option('--frames <n>', 'frames per clip for a CLIP folder (default 12; a checkpoint keeps its own)')
    .option('--frames-dir <dir>', 'frame cache folder (default beside the manifest in .vlmargin/)')
    .option('--batch-size <n>', 'encoding batch size (default 64, or the checkpoint\'s)')
    .option('--backend <name>', 'auto, tensorflow, webgpu, wasm or cpu', 'auto')
    .option('--allow-outside-root', 'accept video paths outside the manifest folder')
    .option('--quiet', 'print only the summary line')
    .action(async (kind: string, o: Opts) => {
      if (kind !== 'video' && kind !== 'text') throw new Error(`embed: the kind must be 'video' or 'text', got '${kind}'`);
      await initBackend({ prefer: parseBackendPreference(o.backend) });
      const r = await embedManifest({
        kind, model: o.model, manifest: o.manifest, out: o.out, split: o.split, frames: positiveInt(o.frames, '--frames'),
        framesDir: o.framesDir, batchSize: positiveInt(o.batchSize, '--batch-size'), allowOutsideRoot: o.allowOutsideRoot,
        onLog: o.quiet ? undefined : (m) => console.error(m),
      });
      console.log(`${r.out}: ${r.rows} ${kind === 'video' ? 'videos' : 'captions'} × ${r.dim}${r.skipped.length ? ` (${r.skipped.length} videos skipped: not decodable)` : ''}`);
    });
}
