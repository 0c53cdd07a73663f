/** `vlmargin pretrain --config C [--init DIR] [--data D] [--set key=value …] [--out runs/NAME] [--backend B] [--threads N] [--resume [--allow-config-change] | --overwrite]`. */
import type { Command } from 'commander';
import { formatEvalTable, runPretrain } from '../pretrain.js';
import { loadPretrainConfig } from '../config.js';
import { parseThreads } from '../../src/backend/init.js';
import { collect, DATA_HELP, SET_HELP } from './options.js';

export function register(program: Command): void {
  program.command('pretrain')
    .description('pretrain a dual encoder with the SAM contrastive loss and report test retrieval')
    .option('--config <fileOrName>', 'a JSON config, or the name of one in pipelines/configs', 'default')
    .option('--init <dir>', 'start from a Hugging Face CLIP folder or a checkpoint (sets model.init)')
    .option('--data <path>', DATA_HELP)
    .option('--set <key=value>', SET_HELP, collect)
    .option('--out <dir>', 'run folder (default runs/<config name>)')
    .option('--backend <name>', 'auto, tensorflow, webgpu, wasm or cpu (overrides the config)')
    .option('--threads <n>', 'TensorFlow intra-op threads on the native engine (overrides the config key threads)', (v) => parseThreads(v))
    .option('--resume', 'continue from the latest checkpoint in the run folder')
    .option('--allow-config-change', 'with --resume: continue from a checkpoint saved under other settings')
    .option('--overwrite', 'replace a previous run in the run folder')
    .option('--quiet', 'no progress output')
    .action(async (o: { config: string; init?: string; data?: string; set?: string[]; out?: string; backend?: string; threads?: number; resume?: boolean; allowConfigChange?: boolean; overwrite?: boolean; quiet?: boolean }) => {
      const cfg = await loadPretrainConfig(o.config, { data: o.data, sets: o.set });
      if (o.init !== undefined) cfg.model.init = o.init;
      const r = await runPretrain(cfg, { out: o.out, backend: o.backend, threads: o.threads, resume: o.resume, allowConfigChange: o.allowConfigChange, overwrite: o.overwrite, quiet: o.quiet });
      console.log(formatEvalTable(r.eval));
      console.log(`run: ${r.runDir} (${r.steps} steps on ${r.backend}, ${r.wallSeconds.toFixed(0)} s)`);
      if (r.stopped === 'signal') process.exitCode = 130;
    });
}
