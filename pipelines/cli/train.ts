/**
 * `vlmargin train speaker --audio ROOT --out DIR [--config C] [--steps N]` and
 * `vlmargin train spoof --protocol FILE --audio DIR --out DIR [--config C] [--steps N]`.
 */
import type { Command } from 'commander';
import { readSpeakerConfig, runTrainSpeaker } from '../speaker.js';
import { readSpoofConfig, runTrainSpoof } from '../spoof.js';

function steps(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--steps must be a positive integer, got '${v}'`);
  return n;
}

export function register(program: Command): void {
  const train = program.command('train').description('train a speaker-verification, anti-spoofing or image classification model');
  train.command('speaker')
    .description('train a speaker embedding network (TDNN + attentive statistics pooling, AAM-softmax by default) on a VoxCeleb-layout tree')
    .requiredOption('--audio <root>', 'folder of <speaker>/<session>/<utt>.<audio>; every speaker folder is a class')
    .requiredOption('--out <dir>', 'run folder (checkpoints/, metrics.jsonl)')
    .option('--config <file>', 'JSON config: features, model, loss {name, options}, train {steps, batchSize, lr, cropFrames, …}')
    .option('--steps <n>', 'training steps (overrides the config)')
    .option('--backend <name>', 'auto, tensorflow, webgpu, wasm or cpu')
    .option('--overwrite', 'replace a previous run in the run folder')
    .action(async (o: { audio: string; out: string; config?: string; steps?: string; backend?: string; overwrite?: boolean }) => {
      const cfg = await readSpeakerConfig(o.config);
      cfg.train.steps = steps(o.steps) ?? cfg.train.steps;
      if (o.backend) cfg.backend = o.backend;
      const r = await runTrainSpeaker(cfg, { audio: o.audio, out: o.out, overwrite: o.overwrite });
      console.log(JSON.stringify({ ...r, skipped: r.skipped.length }, null, 2));
    });
  train.command('spoof')
    .description('train an anti-spoofing countermeasure (LFCC, light CNN with max-feature-map, AM-softmax) on an ASVspoof LA protocol')
    .requiredOption('--protocol <file>', "protocol lines 'speaker utt - attack label' (label bonafide or spoof)")
    .requiredOption('--audio <dir>', 'folder of <utt>.flac or <utt>.wav')
    .requiredOption('--out <dir>', 'run folder (checkpoints/, metrics.jsonl)')
    .option('--config <file>', 'JSON config: features, model, loss {name, options}, train {…}')
    .option('--steps <n>', 'training steps (overrides the config)')
    .option('--backend <name>', 'auto, tensorflow, webgpu, wasm or cpu')
    .option('--overwrite', 'replace a previous run in the run folder')
    .action(async (o: { protocol: string; audio: string; out: string; config?: string; steps?: string; backend?: string; overwrite?: boolean }) => {
      const cfg = await readSpoofConfig(o.config);
      cfg.train.steps = steps(o.steps) ?? cfg.train.steps;
      if (o.backend) cfg.backend = o.backend;
      console.log(JSON.stringify(await runTrainSpoof(cfg, { protocol: o.protocol, audio: o.audio, out: o.out, overwrite: o.overwrite }), null, 2));
    });
}
