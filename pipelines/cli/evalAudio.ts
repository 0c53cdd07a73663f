/**
 * `vlmargin eval speaker --checkpoint DIR --trials FILE --audio ROOT [--json]` and
 * `vlmargin eval spoof --checkpoint DIR --protocol FILE --audio DIR [--json]`: eval.json with
 * `eer` (percent) and `minDCF` (p_target 0.01), DET and ROC plots.
 */
import type { Command } from 'commander';
import { runEvalSpeaker } from '../speaker.js';
import { runEvalSpoof } from '../spoof.js';

export function register(ev: Command): void {
  ev.command('speaker')
    .description('score a trial list with a speaker checkpoint (cosine of full-utterance embeddings) → eval.json (eer %, minDCF), det.png')
    .requiredOption('--checkpoint <dir>', 'a checkpoint folder, or a run folder (its latest checkpoint)')
    .requiredOption('--trials <file>', "lines 'label path path' (label 1 same speaker, 0 different), paths relative to --audio")
    .requiredOption('--audio <root>', 'folder the trial paths are relative to')
    .option('--out <dir>', 'report folder (default <checkpoint>/eval-speaker-<trials name>)')
    .option('--json', 'print the eval.json object')
    .option('--backend <name>', 'auto, tensorflow, webgpu, wasm or cpu', 'auto')
    .action(async (o: { checkpoint: string; trials: string; audio: string; out?: string; json?: boolean; backend: string }) => {
      const r = await runEvalSpeaker(o);
      if (o.json) console.log(JSON.stringify(r, null, 2));
      else console.log(`EER ${r.eer.toFixed(2)} %, minDCF(0.01) ${r.minDCF.toFixed(4)} on ${r.trials} trials (${r.targets} target)${r.skippedTrials ? `, ${r.skippedTrials} skipped` : ''}; DET ${r.det}`);
    });
  ev.command('spoof')
    .description('score an ASVspoof protocol with a countermeasure checkpoint → eval.json (eer %, per attack), scores.txt, det.png')
    .requiredOption('--checkpoint <dir>', 'a checkpoint folder, or a run folder (its latest checkpoint)')
    .requiredOption('--protocol <file>', "protocol lines 'speaker utt - attack label'")
    .requiredOption('--audio <dir>', 'folder of <utt>.flac or <utt>.wav')
    .option('--out <dir>', 'report folder (default <checkpoint>/eval-spoof-<protocol name>)')
    .option('--json', 'print the eval.json object')
    .option('--backend <name>', 'auto, tensorflow, webgpu, wasm or cpu', 'auto')
    .action(async (o: { checkpoint: string; protocol: string; audio: string; out?: string; json?: boolean; backend: string }) => {
      const r = await runEvalSpoof(o);
      if (o.json) console.log(JSON.stringify(r, null, 2));
      else console.log(`EER ${r.eer.toFixed(2)} % (${r.bonafide} bona fide, ${r.spoof} spoof; ${Object.entries(r.eerByAttack).map(([a, e]) => `${a} ${e.toFixed(2)} %`).join(', ')}); DET ${r.det}`);
    });
}
