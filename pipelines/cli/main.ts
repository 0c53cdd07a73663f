#!/usr/bin/env node
/** The `vlmargin` command. Each sub-command lives in its own file and registers itself here. */
import { Command } from 'commander';
import { describeOutOfMemory } from '../../src/train/trainer.js';
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
import { register as setup } from './setup.js';

const program = new Command();
program.name('vlmargin').description('video-language contrastive pretraining with angular margins, on TensorFlow.js');
for (const register of [doctor, pretrain, evaluate, tokenizer, synth, metaSet, frames, worker, synthIdentities, analyze, embed, train, synthSpeech, setup]) register(program);
exportModel(program);

program.parseAsync(process.argv).then(
  () => { setTimeout(() => process.exit(process.exitCode ?? 0), 100).unref(); },
  (e: unknown) => { console.error(describeOutOfMemory(e, 'vlmargin') ?? `vlmargin: ${(e as Error).message}`); process.exit(1); },
);
