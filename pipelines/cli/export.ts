/**
 * `vlmargin export hf --model DIR|CHECKPOINT --out DIR2 [--dtype f32|f16|bf16]`: a Hugging Face
 * CLIP folder that `CLIPModel.from_pretrained(DIR2)` loads, plus vlmargin_extra.safetensors.
 */
import type { Command } from 'commander';
import { initBackend } from '../../src/backend/init.js';
import type { ClipExportDtype } from '../../src/train/clipExport.js';
import { runExportHf } from '../export-hf.js';

interface Opts { model: string; out: string; dtype: string; tokenizer?: string; overwrite?: boolean }

export function register(program: Command): void {
  const exp = program.command('export').description('write a model in another library\'s format');
  exp.command('hf')
    .description('a Hugging Face CLIP folder (config.json, model.safetensors, tokenizer, preprocessor_config.json) that transformers\' CLIPModel.from_pretrained loads; what CLIP cannot hold (temporal transformer, weighting net) goes to vlmargin_extra.safetensors, which --model DIR2 restores')
    .requiredOption('--model <dir>', 'a checkpoint folder, a run folder (its newest checkpoint), or a CLIP folder (e.g. an earlier export)')
    .requiredOption('--out <dir>', 'folder to write (must be new or empty unless --overwrite)')
    .option('--dtype <type>', 'storage type of the weights: f32, f16 or bf16 (rounded to nearest, ties to even)', 'f32')
    .option('--tokenizer <dir>', 'tokenizer folder, when not the one the checkpoint records')
    .option('--overwrite', 'replace --out if it exists')
    .action(async (o: Opts) => {
      // Only host arrays are touched: the cpu backend avoids starting wasm or a GPU.
      await initBackend({ prefer: 'cpu' });
      const r = await runExportHf({ model: o.model, out: o.out, dtype: o.dtype as ClipExportDtype, tokenizer: o.tokenizer, overwrite: o.overwrite });
      const from = r.source.kind === 'checkpoint' ? `checkpoint ${r.source.dir} (step ${r.source.step})` : `CLIP folder ${r.source.dir}`;
      console.log(`exported ${from} to ${r.dir} (${r.dtype}): ${r.clipTensors} CLIP tensors, ${r.extraTensors} in vlmargin_extra.safetensors; tokenizer from ${r.tokenizerDir}`);
      console.log(`wrote ${r.files.join(', ')}`);
    });
}
