/**
 * Which SAM margin is safe when fine-tuning from a CLIP folder: the same fine-tune at several
 * μ, one seed each, on a synthetic downstream corpus. A margin collapses when the training
 * loss goes to ~0 while retrieval stays at chance (docs/RESULTS.md, "What we found about the
 * margin").
 *
 *   node dist/experiments/clip-margin.js [--init test/fixtures/clip-tiny] [--margins 0,0.01,0.03,0.1] [--steps 150]
 *     [--lr 0.001] [--encoder-lr-scale 0.1] [--out runs/clip-margin]
 *
 * Writes <out>/summary.json and prints one table row per μ.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { parseFinetuneRetrievalConfig, runFinetuneRetrieval } from '../pipelines/finetune-retrieval.js';
import { generateSynthCorpus } from '../src/data/synth.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      init: { type: 'string', default: 'test/fixtures/clip-tiny' },
      margins: { type: 'string', default: '0,0.01,0.03,0.1' },
      steps: { type: 'string', default: '150' },
      seed: { type: 'string', default: '1' },
      lr: { type: 'string', default: '0.001' },
      'encoder-lr-scale': { type: 'string', default: '0.1' },
      out: { type: 'string', default: 'runs/clip-margin' },
    },
  });
  const margins = values.margins!.split(',').map(Number);
  if (margins.some((m) => !(m >= 0))) throw new Error(`--margins: expected non-negative numbers, got ${values.margins}`);
  const steps = Number(values.steps);
  const seed = Number(values.seed);
  const out = path.resolve(values.out!);
  await mkdir(out, { recursive: true });
  // 32 px clips: the fixture's image size; 240 videos, 20 % misaligned, the default synthetic recipe otherwise.
  const corpus = await generateSynthCorpus({ out: path.join(out, 'corpus'), videos: 240, seed: 5, size: 32, frames: 8, noise: 0.2, imbalance: 1 });
  const rows: Record<string, unknown>[] = [];
  for (const marginRad of margins) {
    const cfg = parseFinetuneRetrievalConfig({
      name: `mu-${marginRad}`, seed, backend: 'wasm',
      model: { init: values.init }, frames: { count: 4 },
      data: { kind: 'manifest', manifest: corpus.manifestPath },
      train: { steps, batchSize: 32, lr: Number(values.lr), encoderLrScale: Number(values['encoder-lr-scale']), headLrScale: 1, warmupSteps: 10, checkpointEvery: 0 },
      loss: { marginRad },
      eval: { batchSize: 64 },
    }, 'clip-margin');
    const r = await runFinetuneRetrieval(cfg, { out: path.join(out, `mu-${marginRad}`), quiet: true, overwrite: true });
    const row = {
      marginRad, steps: r.steps, lossBefore: r.lossBefore, lossAfter: r.lossAfter,
      t2vR1: r.eval.t2v.R1, t2vR10: r.eval.t2v.R10, v2tR1: r.eval.v2t.R1, chanceR1: r.eval.chanceR1, wallSeconds: r.wallSeconds,
    };
    rows.push(row);
    console.log(`μ ${marginRad}: fixed-batch loss ${r.lossBefore.toFixed(4)} → ${r.lossAfter.toFixed(4)}; t2v R@1 ${r.eval.t2v.R1.toFixed(1)} R@10 ${r.eval.t2v.R10.toFixed(1)}, v2t R@1 ${r.eval.v2t.R1.toFixed(1)} (chance ${r.eval.chanceR1.toFixed(1)}); ${r.wallSeconds.toFixed(0)} s`);
  }
  await writeFile(path.join(out, 'summary.json'), `${JSON.stringify({ init: path.resolve(values.init!), steps, seed, lr: Number(values.lr), encoderLrScale: Number(values['encoder-lr-scale']), rows }, null, 2)}\n`);
}

main().then(() => process.exit(0), (e: unknown) => { console.error(`clip-margin: ${(e as Error).message}`); process.exit(1); });
