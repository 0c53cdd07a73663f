/** `vlmargin synth-speakers` and `vlmargin synth-spoof`: the synthetic speech corpora. */
import type { Command } from 'commander';
import { z } from 'zod';
import { generateSynthSpeakers, generateSynthSpoof } from '../../src/data/synthSpeech.js';

const SpeakerArgs = z.object({
  out: z.string().min(1),
  trainSpeakers: z.coerce.number().int().min(2).optional(),
  testSpeakers: z.coerce.number().int().min(2).optional(),
  sessions: z.coerce.number().int().min(1).optional(),
  uttsPerSession: z.coerce.number().int().min(1).optional(),
  seconds: z.coerce.number().min(0.2).optional(),
  seed: z.coerce.number().int().min(0).optional(),
});
const SpoofArgs = z.object({
  out: z.string().min(1),
  trainSpeakers: z.coerce.number().int().min(1).optional(),
  evalSpeakers: z.coerce.number().int().min(1).optional(),
  perSpeaker: z.coerce.number().int().min(2).optional(),
  seconds: z.coerce.number().min(0.2).optional(),
  seed: z.coerce.number().int().min(0).optional(),
});

export function register(program: Command): void {
  program.command('synth-speakers')
    .description('write a synthetic speaker corpus (source-filter voices) in the VoxCeleb layout: train/, test/ and trials.txt')
    .requiredOption('--out <dir>', 'corpus folder')
    .option('--train-speakers <n>', 'training speakers (default 16)')
    .option('--test-speakers <n>', 'test speakers, disjoint (default 8)')
    .option('--sessions <n>', 'sessions per speaker (default 2)')
    .option('--utts-per-session <n>', 'utterances per session (default 3)')
    .option('--seconds <s>', 'utterance length (default 1.5)')
    .option('--seed <n>', 'seed (default 1)')
    .action(async (raw: Record<string, unknown>) => {
      const p = SpeakerArgs.safeParse(raw);
      if (!p.success) throw new Error(`synth-speakers: ${z.prettifyError(p.error).replace(/\n/g, '; ')}`);
      const r = await generateSynthSpeakers(p.data);
      console.log(`${r.reused ? 'reused' : 'wrote'} ${r.utterances} utterances: train ${r.train}, test ${r.test}, trials ${r.trials}`);
    });
  program.command('synth-spoof')
    .description('write a synthetic bona fide / spoof set in the ASVspoof LA layout: <split>/wav/ and <split>/protocol.txt for train and eval')
    .requiredOption('--out <dir>', 'corpus folder')
    .option('--train-speakers <n>', 'speakers of the train split (default 4)')
    .option('--eval-speakers <n>', 'speakers of the eval split (default 4)')
    .option('--per-speaker <n>', 'bona fide utterances per speaker, each with one spoof (default 6)')
    .option('--seconds <s>', 'utterance length (default 1)')
    .option('--seed <n>', 'seed (default 1)')
    .action(async (raw: Record<string, unknown>) => {
      const p = SpoofArgs.safeParse(raw);
      if (!p.success) throw new Error(`synth-spoof: ${z.prettifyError(p.error).replace(/\n/g, '; ')}`);
      const r = await generateSynthSpoof(p.data);
      console.log(`${r.reused ? 'reused' : 'wrote'} ${r.utterances} utterances: train ${r.train.protocol}, eval ${r.eval.protocol}`);
    });
}
