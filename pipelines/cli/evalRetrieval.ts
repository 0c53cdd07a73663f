/**
 * `vlmargin eval retrieval --model DIR|--checkpoint C --manifest M [--split test] [--dsl] [--qbnorm BANK] [--out DIR]`:
 * text↔video retrieval of a checkpoint, or of a Hugging Face CLIP folder zero-shot.
 */
import type { Command } from 'commander';
import { initBackend, parseBackendPreference } from '../../src/backend/init.js';
import { evaluateCheckpointRetrieval, formatRetrievalMarkdown } from '../eval-retrieval.js';

interface Opts {
  checkpoint?: string; model?: string; frames?: string; manifest: string; split: string; dsl?: boolean; dslTemperature?: string; qbnorm?: string; qbnormSplit: string;
  qbnormBeta?: string; out?: string; framesDir?: string; batchSize?: string; backend?: string; allowOutsideRoot?: boolean; quiet?: boolean;
}

function positive(value: string | undefined, name: string, integer: boolean): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!(n > 0) || (integer && !Number.isInteger(n))) throw new Error(`${name}: expected a positive ${integer ? 'integer' : 'number'}, got '${value}'`);
  return n;
}

export function registerEvalRetrieval(ev: Command): void {
  ev.command('retrieval')
    .description('text→video and video→text retrieval of a checkpoint, or of a Hugging Face CLIP folder zero-shot, on a manifest split (eval.json, eval.md, PNG plots)')
    .option('--model <dir>', 'Hugging Face CLIP folder (zero-shot), checkpoint folder or run folder')
    .option('--checkpoint <dir>', 'checkpoint folder, or a run folder (its newest checkpoint); the same as --model')
    .option('--frames <n>', 'frames per clip for a CLIP folder (default 12; a checkpoint keeps its own)')
    .requiredOption('--manifest <file>', 'native JSONL manifest')
    .option('--split <name>', "split to evaluate ('all' for every entry)", 'test')
    .option('--dsl', 'dual softmax re-scoring')
    .option('--dsl-temperature <t>', 'inverse temperature of the dual softmax (default 100)')
    .option('--qbnorm <manifest>', 'QB-Norm of text→video with this manifest\'s captions as the query bank')
    .option('--qbnorm-split <name>', "split of the bank manifest ('all' for every entry)", 'train')
    .option('--qbnorm-beta <b>', 'inverse temperature of QB-Norm (default 20)')
    .option('--out <dir>', 'report folder (default <checkpoint>/eval/<manifest>-<split>; runs/<folder>-zero-shot/eval/… for a CLIP folder)')
    .option('--frames-dir <dir>', 'frame cache folder (default beside the manifest in .vlmargin/)')
    .option('--batch-size <n>', 'encoding batch size (default: the checkpoint\'s eval batch size)')
    .option('--backend <name>', 'auto, tensorflow, webgpu, wasm or cpu', 'auto')
    .option('--allow-outside-root', 'accept video paths outside the manifest folder')
    .option('--quiet', 'print only the table')
    .action(async (o: Opts) => {
      if (o.dsl && o.qbnorm) throw new Error('--dsl and --qbnorm: choose one re-scoring');
      if (o.model && o.checkpoint) throw new Error('--model and --checkpoint: give one (they name the same thing)');
      const model = o.model ?? o.checkpoint;
      if (!model) throw new Error('--model: a Hugging Face CLIP folder, a checkpoint folder or a run folder is required');
      await initBackend({ prefer: parseBackendPreference(o.backend) });
      const r = await evaluateCheckpointRetrieval({
        checkpoint: model, frames: positive(o.frames, '--frames', true), manifest: o.manifest, split: o.split, dsl: o.dsl, dslTemperature: positive(o.dslTemperature, '--dsl-temperature', false),
        qbnorm: o.qbnorm, qbnormSplit: o.qbnormSplit, qbnormBeta: positive(o.qbnormBeta, '--qbnorm-beta', false), out: o.out,
        framesDir: o.framesDir, batchSize: positive(o.batchSize, '--batch-size', true), allowOutsideRoot: o.allowOutsideRoot,
        onLog: o.quiet ? undefined : (m) => console.error(m),
      });
      console.log(formatRetrievalMarkdown(r));
      console.log(`report: ${r.files.json} (${r.cache.hit ? 'embeddings from the cache' : `encoded ${r.encoded.videos} videos, ${r.encoded.captions} captions`}; ${r.seconds.toFixed(1)} s)`);
    });
}
