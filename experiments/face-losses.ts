/**
 * The face-loss comparison on the long-tailed synthetic identity benchmark: softmax, ArcFace,
 * CosFace, SphereFace-R, SphereFace2, KappaFace and Virtual Softmax, same backbone, budget and
 * seeds; open-set verification (10-fold accuracy, TAR@FAR=1e-3, EER) on identities never seen
 * in training. Then CAMRI vs plain ArcFace on the recall of one tail identity (closed set).
 *
 *   node dist/experiments/face-losses.js [--out runs/face-losses] [--steps 250] [--seeds 1,2,3]
 *
 * Writes <out>/results.json and <out>/table.md and prints the table.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { generateSynthIdentities, readSynthIdentityOptions } from '../src/face/synthIdentities.js';
import type { MarginHeadName } from '../src/margin/head.js';
import { parseTrainClassifierConfig, runTrainClassifier, type TrainClassifierResult } from '../pipelines/train-classifier.js';

const LOSSES: MarginHeadName[] = ['softmax', 'arcface', 'cosface', 'sphereface-r', 'sphereface2', 'kappaface', 'virtual-softmax'];
/** The benchmark: 60 training identities, 40 → 4 images (imbalance 10), 20 held-out images each, 40 open-set identities. */
const BENCH = { identities: 60, imbalance: 10, maxPerIdentity: 40, testPerIdentity: 20, verifyIdentities: 40, perVerify: 10, folds: 10, pairsPerFold: 50, seed: 1, size: 32 };
/** A tail identity (6 training images) for CAMRI. */
const IMPORTANT = 'id0050';
const MODEL = { imageSize: 32, patch: 8, width: 48, layers: 1, heads: 4, mlpRatio: 2, embedDim: 64 };

interface Row { loss: string; seed: number; accuracy: number; tar1e3: number; eer: number; closedSetAccuracy: number; importantRecall: number; lossStart: number; lossEnd: number; seconds: number }

const meanStd = (xs: number[]) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const s = Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(xs.length - 1, 1));
  return { m, s };
};
const pct = (xs: number[]) => { const { m, s } = meanStd(xs.map((x) => 100 * x)); return `${m.toFixed(1)} ± ${s.toFixed(1)}`; };

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string', default: 'runs/face-losses' },
      steps: { type: 'string', default: '250' },
      seeds: { type: 'string', default: '1,2,3' },
      losses: { type: 'string', default: LOSSES.join(',') },
      backend: { type: 'string', default: 'wasm' },
    },
  });
  const steps = Number(values.steps);
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps must be a positive integer, got '${values.steps}'`);
  const seeds = values.seeds!.split(',').map(Number);
  if (seeds.some((s) => !Number.isInteger(s) || s < 0)) throw new Error(`--seeds must be comma-separated non-negative integers, got '${values.seeds}'`);
  const losses = values.losses!.split(',') as MarginHeadName[];
  const out = path.resolve(values.out!);
  const data = path.join(out, 'data');
  await mkdir(out, { recursive: true });
  const have = await readSynthIdentityOptions(data);
  if (!have || JSON.stringify(have) !== JSON.stringify({ ...have, ...BENCH })) await generateSynthIdentities({ out: data, ...BENCH });

  const rows: Row[] = [];
  const t0 = performance.now();
  const run = async (loss: MarginHeadName, seed: number): Promise<void> => {
    const cfg = parseTrainClassifierConfig({
      name: `${loss}-s${seed}`, seed, backend: values.backend, data: { dir: data }, model: MODEL,
      loss: { name: loss, importantClass: IMPORTANT },
      train: { steps, batchSize: 64, lr: 2e-3, warmupSteps: 20 },
    });
    const r: TrainClassifierResult = await runTrainClassifier(cfg, { out: path.join(out, 'runs', `${loss}-s${seed}`), quiet: true, overwrite: true });
    const v = r.eval.verification!;
    const row: Row = {
      loss, seed, accuracy: v.accuracy.mean, tar1e3: v.tarAtFar['1e-3'], eer: v.eer, closedSetAccuracy: r.eval.classification!.accuracy,
      importantRecall: r.eval.importantClass!.recall, lossStart: r.lossStart, lossEnd: r.lossEnd, seconds: r.wallSeconds,
    };
    rows.push(row);
    console.error(`${loss} seed ${seed}: acc ${(100 * row.accuracy).toFixed(1)} TAR@1e-3 ${(100 * row.tar1e3).toFixed(1)} EER ${(100 * row.eer).toFixed(1)} `
      + `closed ${(100 * row.closedSetAccuracy).toFixed(1)} ${IMPORTANT} recall ${(100 * row.importantRecall).toFixed(0)} loss ${row.lossStart.toFixed(2)}→${row.lossEnd.toFixed(2)} (${row.seconds.toFixed(0)} s)`);
  };
  for (const loss of losses) for (const seed of seeds) await run(loss, seed);
  if (!losses.includes('arcface')) for (const seed of seeds) await run('arcface', seed);
  for (const seed of seeds) await run('camri', seed);

  const by = (loss: string) => rows.filter((r) => r.loss === loss);
  const lines = [
    `Long-tailed synthetic identities: ${BENCH.identities} training identities (${BENCH.maxPerIdentity}→4 images, imbalance ${BENCH.imbalance}), `
    + `${BENCH.verifyIdentities} unseen identities, ${BENCH.folds * BENCH.pairsPerFold * 2} pairs; backbone ${JSON.stringify(MODEL)}; `
    + `${steps} steps × 64, AdamW; seeds ${seeds.join(', ')} (mean ± sample std, %).`,
    '',
    '| loss | verification acc | TAR@FAR=1e-3 | EER | closed-set acc |',
    '| --- | --- | --- | --- | --- |',
    ...losses.map((l) => `| ${l} | ${pct(by(l).map((r) => r.accuracy))} | ${pct(by(l).map((r) => r.tar1e3))} | ${pct(by(l).map((r) => r.eer))} | ${pct(by(l).map((r) => r.closedSetAccuracy))} |`),
    '',
    `CAMRI (margin on ${IMPORTANT} only, a tail identity with 6 training images; ${BENCH.testPerIdentity} test images) vs ArcFace:`,
    '',
    `| loss | ${IMPORTANT} recall | closed-set acc | verification acc |`,
    '| --- | --- | --- | --- |',
    ...['arcface', 'camri'].map((l) => `| ${l} | ${pct(by(l).map((r) => r.importantRecall))} | ${pct(by(l).map((r) => r.closedSetAccuracy))} | ${pct(by(l).map((r) => r.accuracy))} |`),
    '',
    `Wall time ${((performance.now() - t0) / 60000).toFixed(1)} min.`,
  ];
  const table = lines.join('\n');
  await writeFile(path.join(out, 'results.json'), JSON.stringify({ bench: BENCH, model: MODEL, steps, seeds, important: IMPORTANT, rows }, null, 2) + '\n');
  await writeFile(path.join(out, 'table.md'), table + '\n');
  console.log(table);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(() => process.exit(0), (e: unknown) => { console.error(`face-losses: ${(e as Error).message}`); process.exit(1); });
}
