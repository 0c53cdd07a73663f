/**
 * The jobs beyond pretraining as `vlmargin` commands: `finetune retrieval`, `finetune qa`,
 * `train classifier`, and `experiment ablation` / `experiment face-losses` (run as their own
 * processes: the command layer does not import the experiments).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { CONFIG_DIR, configFile, loadJsonConfig } from '../config.js';
import { parseFinetuneQaConfig, runFinetuneQa } from '../finetune-qa.js';
import { parseFinetuneRetrievalConfig, runFinetuneRetrieval, withInit } from '../finetune-retrieval.js';
import { main as trainClassifier } from '../train-classifier.js';
import { collect, SET_HELP } from './options.js';

interface JobOpts { config: string; init?: string; data?: string; set?: string[]; out?: string; backend?: string; overwrite?: boolean; quiet?: boolean }

function jobOptions(cmd: Command, defaultConfig: string, data: boolean): Command {
  cmd.option('--config <fileOrName>', 'a JSON config, or the name of one in pipelines/configs', defaultConfig);
  if (data) cmd.option('--data <path>', 'the downstream data: a manifest (.jsonl), a folder with manifest.jsonl, or for an msrvtt config the MSR-VTT folder');
  return cmd
    .option('--set <key=value>', SET_HELP, collect)
    .option('--out <dir>', 'run folder (default runs/<config name>)')
    .option('--backend <name>', 'auto, tensorflow, webgpu, wasm or cpu (overrides the config)')
    .option('--overwrite', 'replace a previous run in the run folder')
    .option('--quiet', 'no progress output');
}

const hint = `; give a JSON file or one of the names in ${CONFIG_DIR}`;

export function register(program: Command): void {
  const ft = program.command('finetune').description('fine-tune a CLIP folder or a checkpoint on a downstream task');
  jobOptions(ft.command('retrieval'), 'finetune-retrieval', true)
    .option('--init <dir>', 'start from a Hugging Face CLIP folder or a checkpoint (sets model.init)')
    .description('fine-tune a CLIP folder or a checkpoint for text↔video retrieval on a downstream set, then evaluate its test split')
    .action(async (o: JobOpts) => {
      const cfg = await loadJsonConfig(configFile(o.config), (raw, source) => parseFinetuneRetrievalConfig(withInit(raw, o.init), source), hint, { data: o.data, sets: o.set });
      const r = await runFinetuneRetrieval(cfg, { out: o.out, backend: o.backend, quiet: o.quiet, overwrite: o.overwrite });
      console.log(`fixed-batch loss ${r.lossBefore.toFixed(4)} → ${r.lossAfter.toFixed(4)} after ${r.steps} steps`);
      console.log(`test t2v R@1 ${r.eval.t2v.R1.toFixed(1)}, v2t R@1 ${r.eval.v2t.R1.toFixed(1)} (chance ${r.eval.chanceR1.toFixed(1)}); report ${r.eval.files.json}`);
    });
  jobOptions(ft.command('qa'), 'finetune-qa', false)
    .option('--data <path>', 'the QA corpus: a synthetic corpus manifest (.jsonl) or its folder (sets corpus.manifest)')
    .description('video question answering from a checkpoint: multiple choice (zero-shot and fine-tuned) and open-ended with a margin head')
    .action(async (o: JobOpts) => {
      const sets = [...(o.data ? [`corpus.manifest=${JSON.stringify(qaManifest(o.data))}`] : []), ...(o.set ?? [])];
      const cfg = await loadJsonConfig(configFile(o.config), parseFinetuneQaConfig, hint, { sets });
      const r = await runFinetuneQa(cfg, { out: o.out, backend: o.backend, quiet: o.quiet, overwrite: o.overwrite });
      console.log(`multiple choice: zero-shot ${(100 * r.mc.zeroShot.accuracy).toFixed(1)}%, fine-tuned ${(100 * r.mc.finetuned.accuracy).toFixed(1)}% (chance ${(100 * r.mc.chance).toFixed(0)}%)`);
      console.log(`open-ended (${r.open.head}): ${(100 * r.open.accuracy).toFixed(1)}% (chance ${(100 * r.open.chance).toFixed(1)}%); report ${path.join(r.runDir, 'qa.json')}`);
    });

  // `train` also holds the speaker and anti-spoofing jobs; join it when it is already there.
  const train = program.commands.find((c) => c.name() === 'train') ?? program.command('train').description('train a classifier');
  train.command('classifier')
    .description('train an image backbone with a margin head (ArcFace, CosFace, … by name) on a folder-per-identity tree or the synthetic identities; verification and per-class recall')
    .option('--loss <name>', 'the margin head: softmax, arcface, cosface, sphereface-r, sphereface2, kappaface, virtual-softmax, camri, …', 'arcface')
    .option('--data <dir>', 'image tree (train/<identity>/*.png, optional test/ and pairs); generated there when absent', 'data/synth-identities')
    .option('--out <dir>', 'run folder (default runs/classifier-<loss>)')
    .option('--steps <n>', 'optimizer steps')
    .option('--batch-size <n>', 'images per step')
    .option('--seed <n>', 'seed')
    .option('--important-class <id>', "CAMRI's important class")
    .option('--sampling <how>', 'natural or balanced')
    .option('--flip', 'add horizontally flipped images to the evaluation embeddings')
    .option('--backend <name>', 'auto, tensorflow, webgpu, wasm or cpu')
    .option('--resume', 'continue from the latest checkpoint in the run folder')
    .option('--allow-config-change', 'with --resume: continue from a checkpoint saved under other settings')
    .option('--overwrite', 'replace a previous run in the run folder')
    .option('--no-synth', 'never generate the synthetic identities into --data')
    .option('--quiet', 'no progress output')
    .action(async (o: Record<string, string | boolean | undefined>) => {
      const argv: string[] = [];
      for (const [k, v] of Object.entries(o)) {
        const flag = `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
        if (k === 'synth') { if (v === false) argv.push('--no-synth'); } else if (v === true) argv.push(flag);
        else if (typeof v === 'string') argv.push(flag, v);
      }
      await trainClassifier(argv);
    });

  const ex = program.command('experiment').description('the experiments behind docs/RESULTS.md (each runs several trainings)');
  ex.command('ablation')
    .description('InfoNCE vs SAM vs SAM + MWN vs SAM + L2RW on the noisy synthetic corpus, several seeds (resumable)')
    .option('--seeds <list>', 'comma-separated seeds', '1,2,3,4,5')
    .option('--epochs <n>', 'epochs per run', '15')
    .option('--noise <list>', 'misaligned shares of the training pairs', '0.3,0.5')
    .option('--corpora <list>', 'mixed (half swapped captions, half one attribute wrong) and/or swap', 'mixed,swap')
    .option('--methods <list>', 'of infonce,sam,sam+mwn,sam+mwn-inputs,sam+l2rw', 'infonce,sam,sam+mwn,sam+mwn-inputs,sam+l2rw')
    .option('--inputs <list>', 'the weight net\'s inputs for sam+mwn-inputs', 'loss,cosine,rowMargin,columnMargin,rank,progress')
    .option('--config <fileOrName>', 'the base pretraining config', 'ablation')
    .option('--data-root <dir>', 'folder of the corpora other than the base config\'s', 'data')
    .option('--out <dir>', 'output folder', 'runs/ablation')
    .option('--report-only', 'tables and figure from the finished runs, without training')
    .action(async (o: Record<string, string | boolean>) => runScript('ablation', o));
  ex.command('face-losses')
    .description('softmax, ArcFace, CosFace, SphereFace-R, SphereFace2, KappaFace, Virtual Softmax on the long-tailed synthetic identities; CAMRI on a tail class')
    .option('--out <dir>', 'output folder', 'runs/face-losses')
    .option('--steps <n>', 'steps per run', '250')
    .option('--seeds <list>', 'comma-separated seeds', '1,2,3')
    .option('--losses <list>', 'comma-separated heads')
    .option('--backend <name>', 'auto, tensorflow, webgpu, wasm or cpu', 'wasm')
    .action(async (o: Record<string, string>) => runScript('face-losses', o));
}

/** `--data` of the QA job as a manifest file: the path itself, or manifest.jsonl in that folder. */
function qaManifest(p: string): string {
  const abs = path.resolve(p);
  return fs.existsSync(abs) && fs.statSync(abs).isDirectory() ? path.join(abs, 'manifest.jsonl') : abs;
}

/** Runs dist/experiments/<name>.js with the options as flags, passing its output through. */
async function runScript(name: string, o: Record<string, string | boolean | undefined>): Promise<void> {
  const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'experiments', `${name}.js`);
  const args = Object.entries(o).filter(([, v]) => v !== undefined && v !== false).flatMap(([k, v]) => {
    const flag = `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    return v === true ? [flag] : [flag, v as string];
  });
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (c, signal) => resolve(c ?? (signal ? 130 : 1)));
  });
  if (code !== 0) process.exitCode = code;
}
