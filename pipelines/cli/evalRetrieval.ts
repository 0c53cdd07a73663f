/**
 * `vlmargin eval retrieval --model DIR|--checkpoint C (--manifest M | --msrvtt MSRVTT_data.json --video-dir D) [--split test] [--dsl] [--qbnorm BANK] [--out DIR]`:
 * text↔video retrieval of a checkpoint, or of a Hugging Face CLIP folder zero-shot. Reads every
 * format pretraining reads: a native manifest (a synthetic corpus's included) and MSR-VTT.
 */
import type { Command } from 'commander';
import { initBackend, parseBackendPreference } from '../../src/backend/init.js';
import { readMsrvtt, readMsrvtt1kA } from '../../src/data/readers.js';
import type { ManifestEntry } from '../../src/data/types.js';
import { evaluateCheckpointRetrieval, formatRetrievalMarkdown } from '../eval-retrieval.js';

interface Opts {
  checkpoint?: string; model?: string; frames?: string; manifest?: string; msrvtt?: string; videoDir?: string; testCsv?: string; split: string; dsl?: boolean; dslTemperature?: string; qbnorm?: string; qbnormSplit: string;
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
    .option('--manifest <file>', 'native JSONL manifest (a synthetic corpus has one: data/synth-default/manifest.jsonl)')
    .option('--msrvtt <file>', "MSR-VTT's MSRVTT_data.json, instead of --manifest (needs --video-dir)")
    .option('--video-dir <dir>', 'with --msrvtt: the folder with <video_id>.mp4')
    .option('--test-csv <file>', "with --msrvtt: the 1k-A test CSV, used for --split test (else the JSON's test split)")
    .option('--split <name>', "split to evaluate ('all' for every entry; MSR-VTT: train, validate, test)", 'test')
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
      if (!o.manifest === !o.msrvtt) throw new Error('give the data as --manifest FILE.jsonl or --msrvtt MSRVTT_data.json --video-dir DIR (one of them)');
      const entries = o.msrvtt ? await msrvttEntries(o) : undefined;
      await initBackend({ prefer: parseBackendPreference(o.backend) });
      const r = await evaluateCheckpointRetrieval({
        checkpoint: model, frames: positive(o.frames, '--frames', true), manifest: o.manifest ?? o.msrvtt!, entries, split: o.split, dsl: o.dsl, dslTemperature: positive(o.dslTemperature, '--dsl-temperature', false),
        qbnorm: o.qbnorm, qbnormSplit: o.qbnormSplit, qbnormBeta: positive(o.qbnormBeta, '--qbnorm-beta', false), out: o.out,
        framesDir: o.framesDir, batchSize: positive(o.batchSize, '--batch-size', true), allowOutsideRoot: o.allowOutsideRoot,
        onLog: o.quiet ? undefined : (m) => console.error(m),
      }).catch((e: Error) => {
        // The library's checkpoint errors name the folder; the command adds the flag it came from.
        if (/^checkpoint /.test(e.message)) e.message = `${o.model ? '--model' : '--checkpoint'}: ${e.message}`;
        throw e;
      });
      console.log(formatRetrievalMarkdown(r));
      console.log(`report: ${r.files.json} (${r.cache.hit ? 'embeddings from the cache' : `encoded ${r.encoded.videos} videos, ${r.encoded.captions} captions`}; ${r.seconds.toFixed(1)} s)`);
    });
}

/** The MSR-VTT split asked for, read as pretraining reads it (the 1k-A CSV for test when given). */
async function msrvttEntries(o: Opts): Promise<ManifestEntry[]> {
  if (!o.videoDir) throw new Error('--msrvtt needs --video-dir (the folder with <video_id>.mp4)');
  const common = { videoDir: o.videoDir, allowOutsideRoot: o.allowOutsideRoot };
  if (o.testCsv && o.split !== 'test') throw new Error(`--test-csv is the test split; it does not apply to --split ${o.split}`);
  const m = o.testCsv
    ? await readMsrvtt1kA(o.testCsv, common)
    : await readMsrvtt(o.msrvtt!, { ...common, split: o.split === 'all' ? undefined : o.split });
  if (m.entries.length < 2) {
    throw new Error(`--msrvtt ${o.testCsv ?? o.msrvtt}: ${m.entries.length} usable videos for --split ${o.split} (MSR-VTT's splits are train, validate, test)${m.errors.length ? `; first problem: ${m.errors[0].reason}` : ''}`);
  }
  return m.entries;
}
