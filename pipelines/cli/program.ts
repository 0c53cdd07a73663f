/** The `vlmargin` command tree, built without parsing (main.ts parses; tests walk it). */
import { Command } from 'commander';
import { register as doctor } from './doctor.js';
import { register as pretrain } from './pretrain.js';
import { register as evaluate } from './eval.js';
import { register as tokenizer } from './tokenizer.js';
import { register as synth } from './synth.js';
import { register as metaSet } from './metaSet.js';
import { register as frames } from './frames.js';
import { register as synthIdentities } from './synthIdentities.js';
import { register as analyze } from './analyze.js';
import { register as embed } from './embed.js';
import { register as worker } from './worker.js';
import { register as train } from './train.js';
import { register as synthSpeech } from './synthSpeech.js';
import { register as exportModel } from './export.js';
import { register as jobs } from './jobs.js';
import { register as setup } from './setup.js';

export function buildProgram(): Command {
  const program = new Command();
  program.name('vlmargin').description('video-language contrastive pretraining with angular margins, on TensorFlow.js');
  // `train` (speaker, spoof) comes before the jobs, which add `train classifier` to it.
  for (const register of [doctor, pretrain, evaluate, tokenizer, synth, metaSet, frames, worker, synthIdentities, analyze, embed, train, jobs, synthSpeech, setup]) register(program);
  exportModel(program);
  return program;
}

/** Every runnable command as its words (`['eval', 'retrieval']`), depth first, without `help`. */
export function commandPaths(cmd: Command, prefix: string[] = []): string[][] {
  const subs = cmd.commands.filter((c) => c.name() !== 'help');
  if (!subs.length) return prefix.length ? [prefix] : [];
  return subs.flatMap((c) => commandPaths(c, [...prefix, c.name()]));
}
