/**
 * Speaker verification on the synthetic speaker corpus: softmax, AM-softmax, AAM-softmax and
 * AAM-softmax + the exclusive inter-class regulariser, same TDNN + attentive statistics
 * pooling network, budget and seeds; EER and minDCF (p_target 0.01) on every pair of test
 * utterances of speakers never seen in training.
 *
 *   node dist/experiments/speaker-losses.js [--out runs/speaker-losses] [--steps 400] [--seeds 1,2,3] [--results docs/RESULTS.md]
 *
 * Writes <out>/results.json and <out>/table.md, prints the table, and with --results replaces
 * the block between `<!-- speaker-losses:begin -->` and `<!-- speaker-losses:end -->` there.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { generateSynthSpeakers } from '../src/data/synthSpeech.js';
import { parseSpeakerConfig, runEvalSpeaker, runTrainSpeaker } from '../pipelines/speaker.js';

/** The corpus: 32 training speakers, 10 test speakers, 2 sessions × 3 utterances of 1.5 s. */
const CORPUS = { trainSpeakers: 32, testSpeakers: 10, sessions: 2, uttsPerSession: 3, seconds: 1.5, seed: 1 };
/** λ of the inter-class regulariser in the fourth row. */
const REG_LAMBDA = 0.5;
const SYSTEMS: { name: string; loss: { name: string; options?: Record<string, unknown> } }[] = [
  { name: 'softmax', loss: { name: 'softmax' } },
  { name: 'AM-softmax (s 30, m 0.2)', loss: { name: 'am-softmax' } },
  { name: 'AAM-softmax (s 30, m 0.2)', loss: { name: 'aam-softmax' } },
  { name: `AAM-softmax + inter-class regulariser (λ ${REG_LAMBDA})`, loss: { name: 'aam-softmax', options: { interClassLambda: REG_LAMBDA } } },
];

interface Row { system: string; seed: number; eer: number; minDCF: number; lossStart: number; lossEnd: number; seconds: number }

const meanStd = (xs: number[]) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const s = Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(xs.length - 1, 1));
  return { m, s };
};

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string', default: 'runs/speaker-losses' },
      steps: { type: 'string', default: '400' },
      seeds: { type: 'string', default: '1,2,3' },
      backend: { type: 'string', default: 'wasm' },
      results: { type: 'string' },
    },
  });
  const steps = Number(values.steps);
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps must be a positive integer, got '${values.steps}'`);
  const seeds = values.seeds!.split(',').map(Number);
  if (seeds.some((s) => !Number.isInteger(s) || s < 0)) throw new Error(`--seeds must be comma-separated non-negative integers, got '${values.seeds}'`);
  const out = path.resolve(values.out!);
  await mkdir(out, { recursive: true });
  const corpus = await generateSynthSpeakers({ out: path.join(out, 'data'), ...CORPUS });
  const rows: Row[] = [];
  const t0 = performance.now();
  for (const sys of SYSTEMS) {
    for (const seed of seeds) {
      const cfg = parseSpeakerConfig({
        seed, backend: values.backend, loss: sys.loss,
        features: { kind: 'logmel', numFilters: 40 }, model: { channels: 48, embedDim: 48, attentionDim: 24 },
        train: { steps, batchSize: 32, cropFrames: 80, lr: 3e-3, warmupSteps: 15 },
      });
      const runDir = path.join(out, `${sys.loss.name}${sys.loss.options ? '-reg' : ''}-s${seed}`);
      const t = performance.now();
      const r = await runTrainSpeaker(cfg, { audio: corpus.train, out: runDir, quiet: true, overwrite: true });
      const e = await runEvalSpeaker({ checkpoint: runDir, trials: corpus.trials, audio: corpus.test, backend: values.backend });
      const row = { system: sys.name, seed, eer: e.eer, minDCF: e.minDCF, lossStart: r.lossStart, lossEnd: r.lossEnd, seconds: (performance.now() - t) / 1000 };
      rows.push(row);
      console.error(`${sys.name} seed ${seed}: EER ${e.eer.toFixed(2)} %, minDCF ${e.minDCF.toFixed(3)} (${row.seconds.toFixed(0)} s)`);
    }
  }
  const trials = (await readFile(corpus.trials, 'utf8')).trim().split('\n');
  const targets = trials.filter((l) => l.startsWith('1 ')).length;
  const lines = [
    `| loss | EER % (mean ± sd) | minDCF(0.01) | EER % per seed (${seeds.join(', ')}) |`,
    '| --- | --- | --- | --- |',
    ...SYSTEMS.map((s) => {
      const rs = rows.filter((r) => r.system === s.name);
      const e = meanStd(rs.map((r) => r.eer));
      const d = meanStd(rs.map((r) => r.minDCF));
      return `| ${s.name} | ${e.m.toFixed(2)} ± ${e.s.toFixed(2)} | ${d.m.toFixed(3)} ± ${d.s.toFixed(3)} | ${rs.map((r) => r.eer.toFixed(2)).join(', ')} |`;
    }),
  ];
  const minutes = (performance.now() - t0) / 60000;
  const setup = `Corpus (\`generateSynthSpeakers\`): ${CORPUS.trainSpeakers} training speakers, ${CORPUS.testSpeakers} unseen test speakers, `
    + `${CORPUS.sessions} sessions × ${CORPUS.uttsPerSession} utterances of ${CORPUS.seconds} s each; ${trials.length} trials (${targets} target), every pair of test utterances. `
    + `40 log-mel filters, TDNN (48 channels, kernels 5/3/3/1, dilations 1/2/3/1) + attentive statistics pooling → 48-d embeddings, `
    + `${steps} AdamW steps (lr 3e-3, batch 32, 80-frame crops), cosine scoring of full utterances; ${seeds.length} seeds. `
    + `\`node dist/experiments/speaker-losses.js --steps ${steps} --seeds ${seeds.join(',')}\` on ${os.cpus().length} cores (${os.cpus()[0]?.model.trim()}), backend ${values.backend}, ${minutes.toFixed(1)} min in all.`;
  const table = `${setup}\n\n${lines.join('\n')}\n`;
  await writeFile(path.join(out, 'results.json'), JSON.stringify({ corpus: CORPUS, steps, seeds, rows }, null, 2) + '\n');
  await writeFile(path.join(out, 'table.md'), table);
  console.log(table);
  if (values.results) {
    const file = path.resolve(values.results);
    const text = await readFile(file, 'utf8');
    const begin = '<!-- speaker-losses:begin -->';
    const end = '<!-- speaker-losses:end -->';
    const i = text.indexOf(begin);
    const j = text.indexOf(end);
    if (i < 0 || j < i) throw new Error(`--results ${file}: no '${begin}' … '${end}' block to replace`);
    await writeFile(file, `${text.slice(0, i + begin.length)}\n${table}${text.slice(j)}`);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(() => process.exit(0), (e: unknown) => { console.error(`speaker-losses: ${(e as Error).message}`); process.exit(1); });
}
