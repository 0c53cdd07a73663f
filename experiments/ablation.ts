/**
 * The ablation of the contrastive losses and the weighting: InfoNCE, SAM, SAM + MWN, SAM + L2RW on the noisy (40 % misaligned),
 * long-tailed synthetic corpus, the same budget for each, several seeds; mean ± std of t2v and
 * v2t R@1/5/10 and t2v R@1 on the tail colours (the two rarest in the training split).
 *
 *   node dist/experiments/ablation.js [--seeds 1,2,3] [--epochs 10] [--out runs/ablation] [--methods infonce,sam,sam+mwn,sam+l2rw]
 *
 * Each run lives in <out>/<method>-s<seed>/ (resumable: a finished run's eval.json is reused).
 */
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadPretrainConfig, type PretrainConfig } from '../pipelines/config.js';
import { runPretrain, type EvalReport } from '../pipelines/pretrain.js';

const METHODS = ['infonce', 'sam', 'sam+mwn', 'sam+l2rw'] as const;
type Method = (typeof METHODS)[number];

interface RunResult {
  method: Method; seed: number; wallSeconds: number;
  eval: EvalReport & { weighting?: { aurocCleanVsNoisy?: number; byNoiseKind?: Record<string, { aurocCleanVsKind: number }> } };
}

function configFor(base: PretrainConfig, method: Method, seed: number, epochs: number, dataDir: string, swapFraction: number): PretrainConfig {
  const c: PretrainConfig = structuredClone(base);
  c.name = `${method}-s${seed}`;
  c.seed = seed;
  if (c.data.kind !== 'synth') throw new Error('ablation: the base config must use the synthetic corpus');
  c.data = { ...c.data, dir: dataDir, noise: 0.4, swapFraction };
  c.train.epochs = epochs;
  delete c.train.steps;
  if (method === 'infonce') c.loss = { ...c.loss, marginRad: 0 };
  c.weighting = { ...c.weighting, method: method === 'sam+mwn' ? 'mwn' : method === 'sam+l2rw' ? 'l2rw' : 'none', metaEvery: 1 };
  return c;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const std = (xs: number[]) => {
  if (xs.length < 2) return 0;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
};
const fmt = (xs: number[]) => `${mean(xs).toFixed(1)} ± ${std(xs).toFixed(1)}`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string', default: '1,2,3' },
      epochs: { type: 'string', default: '10' },
      out: { type: 'string', default: 'runs/ablation' },
      data: { type: 'string', default: 'data/synth-noise40' },
      'swap-fraction': { type: 'string', default: '0.5' },
      config: { type: 'string', default: 'default' },
      methods: { type: 'string', default: METHODS.join(',') },
    },
  });
  const seeds = values.seeds!.split(',').map(Number);
  if (!seeds.every((s) => Number.isInteger(s) && s >= 0)) throw new Error(`--seeds must be integers, got ${values.seeds}`);
  const swapFraction = Number(values['swap-fraction']);
  if (!(swapFraction >= 0 && swapFraction <= 1)) throw new Error(`--swap-fraction must be in [0, 1], got ${values['swap-fraction']}`);
  const epochs = Number(values.epochs);
  if (!Number.isInteger(epochs) || epochs < 1) throw new Error(`--epochs must be a positive integer, got ${values.epochs}`);
  const methods = values.methods!.split(',') as Method[];
  for (const m of methods) if (!METHODS.includes(m)) throw new Error(`--methods: unknown '${m}'; choose from ${METHODS.join(', ')}`);
  const base = await loadPretrainConfig(values.config!);
  const out = path.resolve(values.out!);
  await mkdir(out, { recursive: true });

  const results: RunResult[] = [];
  for (const seed of seeds) {
    for (const method of methods) {
      const runDir = path.join(out, `${method}-s${seed}`);
      let ev: RunResult['eval'] | undefined;
      try {
        ev = JSON.parse(await readFile(path.join(runDir, 'eval.json'), 'utf8'));
        console.error(`${method} seed ${seed}: reusing ${runDir}/eval.json`);
      } catch { /* not run yet */ }
      let wall = 0;
      if (!ev) {
        const r = await runPretrain(configFor(base, method, seed, epochs, values.data!, swapFraction), { out: runDir, quiet: true, resume: true });
        ev = JSON.parse(await readFile(path.join(runDir, 'eval.json'), 'utf8'));
        wall = r.wallSeconds;
        console.error(`${method} seed ${seed}: t2v R@1 ${r.eval.t2v.R1.toFixed(1)} (${wall.toFixed(0)} s)`);
      }
      results.push({ method, seed, eval: ev!, wallSeconds: wall });
    }
  }

  // Tail colours: the two rarest colours of the training split (the corpus is long-tailed over colour).
  const corpus = JSON.parse(await readFile(path.join(path.resolve(values.data!), 'corpus.json'), 'utf8')) as { counts?: { trainPerColor?: Record<string, number> } };
  const perColor = corpus.counts?.trainPerColor;
  const tail = perColor ? Object.entries(perColor).sort((a, b) => a[1] - b[1]).slice(0, 2).map(([c]) => `color:${c}`) : [];

  const kinds = [...new Set(results.flatMap((r) => Object.keys(r.eval.weighting?.byNoiseKind ?? {})))].sort();
  const lines = [
    `| method | t2v R@1 | t2v R@5 | t2v R@10 | v2t R@1 | v2t R@5 | v2t R@10 | t2v R@1 tail (${tail.join(', ') || 'n/a'}) | AUROC clean vs noisy |${kinds.map((k) => ` AUROC clean vs ${k} |`).join('')}`,
    `| --- | --- | --- | --- | --- | --- | --- | --- | --- |${kinds.map(() => ' --- |').join('')}`,
  ];
  const meanStd = (xs: (number | undefined)[]) => {
    const v = xs.filter((x): x is number => typeof x === 'number');
    return v.length ? `${mean(v).toFixed(2)} ± ${std(v).toFixed(2)}` : '—';
  };
  for (const method of methods) {
    const rs = results.filter((r) => r.method === method);
    const g = (f: (r: RunResult) => number) => fmt(rs.map(f));
    const tailR1 = (r: RunResult) => mean(tail.map((c) => r.eval.perConceptR1?.[c] ?? NaN));
    const au = meanStd(rs.map((r) => r.eval.weighting?.aurocCleanVsNoisy));
    const auKinds = kinds.map((k) => ` ${meanStd(rs.map((r) => r.eval.weighting?.byNoiseKind?.[k]?.aurocCleanVsKind))} |`).join('');
    lines.push(`| ${method} | ${g((r) => r.eval.t2v.R1)} | ${g((r) => r.eval.t2v.R5)} | ${g((r) => r.eval.t2v.R10)} | ${g((r) => r.eval.v2t.R1)} | ${g((r) => r.eval.v2t.R5)} | ${g((r) => r.eval.v2t.R10)} | ${tail.length ? g(tailR1) : 'n/a'} | ${au} |${auKinds}`);
  }
  const chance = results[0] ? `chance R@1 = ${results[0].eval.chanceR1.toFixed(2)}% (${results[0].eval.testVideos} test videos)` : '';
  const table = `${lines.join('\n')}\n\n${seeds.length} seeds (${seeds.join(', ')}), ${epochs} epochs each, 40 % misaligned training pairs (${Math.round(100 * swapFraction)} % of them swapped captions); ${chance}`;
  await writeFile(path.join(out, 'results.json'), JSON.stringify({ seeds, epochs, tail, results }, null, 2) + '\n');
  await writeFile(path.join(out, 'table.md'), table + '\n');
  console.log(table);
}

main().then(() => process.exit(0), (e: unknown) => { console.error(`ablation: ${(e as Error).message}`); process.exit(1); });
