/**
 * The ablation of the contrastive loss and the sample weighting over a grid of noisy corpora:
 * InfoNCE, SAM, SAM + MW-Net (loss only), SAM + MW-Net (the weight net seeing more than the
 * loss), SAM + L2RW, on the long-tailed synthetic corpus with misaligned pairs that are half
 * swapped captions and half one-attribute-wrong ones (`mixed`) or all swapped (`swap`), at each
 * noise rate. Every method gets the same budget and the same seeds; per corpus it reports
 * mean ± std, paired per-seed differences with a 95 % t interval and an exact sign test, and a
 * figure of recall against noise rate with 95 % intervals.
 *
 *   node dist/experiments/ablation.js [--seeds 1,2,3,4,5] [--epochs 15] [--noise 0.3,0.5]
 *     [--corpora mixed,swap] [--methods infonce,sam,sam+mwn,sam+mwn-inputs,sam+l2rw]
 *     [--inputs loss,cosine,rowMargin,columnMargin,rank,progress] [--config ablation]
 *     [--out runs/ablation] [--report-only]
 *
 * The base config is `pipelines/configs/ablation.json`: the 720-clip corpus at 32 px without
 * frame differences, where 15 epochs are 225 steps, so the 100 runs fit an afternoon on two CPU
 * cores; on the default run's 2 784 training clips 15 epochs are about 1 300 steps of a larger
 * model. `--config default` runs the grid on the default run's settings all the same.
 *
 * Runs live in <out>/<corpus>-<noise %>/<method>-s<seed>/ and are reused once finished (an
 * interrupted grid resumes where it stopped); `--report-only` writes the tables and the figure
 * from the finished runs without training, naming the cells that are missing. The mixed corpus
 * at the default noise rate is the base config's corpus (its folder, its frame cache); the other
 * corpora live beside it, named after it.
 */
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadPretrainConfig, type PretrainConfig } from '../pipelines/config.js';
import { runPretrain, type EvalReport } from '../pipelines/pretrain.js';
import { savePlot } from '../src/eval/plot.js';
import { pairedDifference, summarize } from '../src/eval/stats.js';
import { checkWeightingInputs, type WeightingInput } from '../src/meta/weightNet.js';

const METHODS = ['infonce', 'sam', 'sam+mwn', 'sam+mwn-inputs', 'sam+l2rw'] as const;
type Method = (typeof METHODS)[number];
const CORPORA = { mixed: 0.5, swap: 1 } as const;
type CorpusKind = keyof typeof CORPORA;
/** The synthetic corpus's default noise rate and swap share (the default run's corpus). */
const DEFAULT_NOISE = 0.3;
const DEFAULT_INPUTS: WeightingInput[] = ['loss', 'cosine', 'rowMargin', 'columnMargin', 'rank', 'progress'];
/** Pairs compared per corpus: [a, b] reports a − b. */
const COMPARISONS: [Method, Method][] = [
  ['sam', 'infonce'], ['sam+mwn', 'sam'], ['sam+mwn-inputs', 'sam'], ['sam+mwn-inputs', 'sam+mwn'], ['sam+l2rw', 'sam'],
];

type Weighting = { aurocCleanVsNoisy?: number; byNoiseKind?: Record<string, { aurocCleanVsKind: number }> };
interface RunResult { corpus: string; kind: CorpusKind; noise: number; method: Method; seed: number; eval: EvalReport & { weighting?: Weighting } }

interface Cell { kind: CorpusKind; noise: number; key: string; dir: string }

function configFor(base: PretrainConfig, cell: Cell, method: Method, seed: number, epochs: number, inputs: WeightingInput[]): PretrainConfig {
  const c: PretrainConfig = structuredClone(base);
  c.name = `${cell.key}-${method}-s${seed}`;
  c.seed = seed;
  if (c.data.kind !== 'synth') throw new Error('ablation: the base config must use the synthetic corpus');
  c.data = { ...c.data, dir: cell.dir, noise: cell.noise, swapFraction: CORPORA[cell.kind] };
  c.train.epochs = epochs;
  delete c.train.steps;
  if (method === 'infonce') c.loss = { ...c.loss, marginRad: 0 };
  const kind = method.startsWith('sam+mwn') ? 'mwn' : method === 'sam+l2rw' ? 'l2rw' : 'none';
  c.weighting = { ...c.weighting, method: kind, metaEvery: 1, inputs: method === 'sam+mwn-inputs' ? inputs : ['loss'] };
  return c;
}

const list = (s: string, what: string): string[] => {
  const xs = s.split(',').map((x) => x.trim()).filter(Boolean);
  if (!xs.length) throw new Error(`--${what} is empty`);
  return xs;
};
const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);

async function readEval(runDir: string): Promise<RunResult['eval'] | undefined> {
  try {
    return JSON.parse(await readFile(path.join(runDir, 'eval.json'), 'utf8'));
  } catch {
    return undefined;
  }
}

/** The report of one corpus: per-method mean ± std, then the paired differences. */
function corpusReport(cell: Cell, methods: Method[], rs: RunResult[], tail: string[]): string {
  const of = (m: Method) => rs.filter((r) => r.method === m).sort((a, b) => a.seed - b.seed);
  const ms = (xs: (number | undefined)[], fmt: (x: number) => string) => {
    const v = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
    if (!v.length) return '—';
    const s = summarize(v);
    return `${fmt(s.mean)} ± ${fmt(s.std)}`;
  };
  const au = (r: RunResult, k?: string) => (k ? r.eval.weighting?.byNoiseKind?.[k]?.aurocCleanVsKind : r.eval.weighting?.aurocCleanVsNoisy);
  const kinds = cell.kind === 'mixed' ? ['attribute', 'swap'] : ['swap'];
  const lines = [
    `### ${cell.kind}, ${Math.round(cell.noise * 100)} % misaligned`,
    '',
    `| method | seeds | t2v R@1 | t2v R@5 | t2v R@10 | v2t R@1 | v2t R@10 | t2v R@1 tail | AUROC clean vs misaligned |${kinds.map((k) => ` AUROC vs ${k} |`).join('')}`,
    `| --- | --- | --- | --- | --- | --- | --- | --- | --- |${kinds.map(() => ' --- |').join('')}`,
  ];
  for (const m of methods) {
    const x = of(m);
    if (!x.length) continue;
    const tailR1 = (r: RunResult) => (tail.length ? tail.reduce((a, c) => a + (r.eval.perConceptR1?.[c] ?? NaN), 0) / tail.length : undefined);
    lines.push(`| ${m} | ${x.map((r) => r.seed).join(',')} | ${ms(x.map((r) => r.eval.t2v.R1), f1)} | ${ms(x.map((r) => r.eval.t2v.R5), f1)} | ${ms(x.map((r) => r.eval.t2v.R10), f1)} | ${ms(x.map((r) => r.eval.v2t.R1), f1)} | ${ms(x.map((r) => r.eval.v2t.R10), f1)} | ${ms(x.map(tailR1), f1)} | ${ms(x.map((r) => au(r)), f2)} |${kinds.map((k) => ` ${ms(x.map((r) => au(r, k)), f2)} |`).join('')}`);
  }
  const diffs: string[] = [];
  for (const [a, b] of COMPARISONS) {
    const ra = of(a);
    const rb = of(b);
    const seeds = ra.map((r) => r.seed).filter((s) => rb.some((r) => r.seed === s));
    if (seeds.length < 2) continue;
    const pick = (rsm: RunResult[], f: (r: RunResult) => number | undefined) => seeds.map((s) => f(rsm.find((r) => r.seed === s)!));
    const metrics: [string, (r: RunResult) => number | undefined, (x: number) => string][] = [
      ['t2v R@1', (r) => r.eval.t2v.R1, f1], ['t2v R@10', (r) => r.eval.t2v.R10, f1], ['v2t R@1', (r) => r.eval.v2t.R1, f1],
    ];
    if (a.startsWith('sam+mwn') && b.startsWith('sam+mwn')) metrics.push(['AUROC', (r) => au(r), f2]);
    for (const [name, f, fmt] of metrics) {
      const va = pick(ra, f);
      const vb = pick(rb, f);
      if (va.some((v) => typeof v !== 'number') || vb.some((v) => typeof v !== 'number')) continue;
      const d = pairedDifference(va as number[], vb as number[]);
      const real = d.ci95[0] > 0 || d.ci95[1] < 0;
      diffs.push(`| ${a} − ${b} | ${name} | ${seeds.length} | ${fmt(d.mean)} ± ${fmt(d.std)} | [${fmt(d.ci95[0])}, ${fmt(d.ci95[1])}] | ${d.wins}/${d.losses}/${d.ties} | ${d.signP.toFixed(3)} | ${real ? 'yes' : 'no'} |`);
    }
  }
  if (diffs.length) {
    lines.push('', 'Paired by seed (a − b):', '', '| comparison | metric | seeds | mean ± std | 95 % t interval | wins/losses/ties | sign test p | interval excludes 0 |', '| --- | --- | --- | --- | --- | --- | --- | --- |', ...diffs);
  }
  return lines.join('\n');
}

/** Recall against noise rate, one line per method with 95 % t intervals, a panel per corpus kind. */
async function plotRecall(results: RunResult[], methods: Method[], file: string): Promise<string | undefined> {
  const values: { corpus: string; method: string; noise: number; x: number; mean: number; lo: number; hi: number; metric: string }[] = [];
  const groups = new Map<string, RunResult[]>();
  for (const r of results) {
    const k = `${r.kind}|${r.noise}|${r.method}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  for (const [k, rs] of groups) {
    const [corpus, noise, method] = k.split('|');
    for (const [metric, f] of [['t2v R@1', (r: RunResult) => r.eval.t2v.R1], ['t2v R@10', (r: RunResult) => r.eval.t2v.R10]] as const) {
      const s = summarize(rs.map(f));
      const pct = Math.round(Number(noise) * 100);
      // Methods side by side around their noise rate, so the intervals do not hide each other.
      const x = pct + (methods.indexOf(method as Method) - (methods.length - 1) / 2) * 0.8;
      values.push({ corpus, method, noise: pct, x, mean: s.mean, lo: s.ci95[0], hi: s.ci95[1], metric });
    }
  }
  if (!values.length) return undefined;
  const color = { field: 'method', type: 'nominal', sort: methods, title: null } as const;
  const pcts = values.map((v) => v.noise);
  const x = { field: 'x', type: 'quantitative' as const, title: 'misaligned training pairs, %', scale: { domain: [Math.min(...pcts) - 5, Math.max(...pcts) + 5] } };
  return savePlot({
    title: 'Test recall against the share of misaligned training pairs (mean and 95 % t interval over seeds)',
    data: { values },
    facet: { row: { field: 'metric', type: 'nominal', title: null }, column: { field: 'corpus', type: 'nominal', title: 'corpus' } },
    resolve: { scale: { y: 'independent' } },
    spec: {
      width: 220, height: 160,
      layer: [
        { mark: { type: 'line', point: true }, encoding: { x, y: { field: 'mean', type: 'quantitative', title: 'recall, %' }, color } },
        { mark: { type: 'errorbar', ticks: true }, encoding: { x, y: { field: 'lo', type: 'quantitative', title: 'recall, %' }, y2: { field: 'hi' }, color } },
      ],
    },
  }, file);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string', default: '1,2,3,4,5' },
      epochs: { type: 'string', default: '15' },
      out: { type: 'string', default: 'runs/ablation' },
      noise: { type: 'string', default: '0.3,0.5' },
      corpora: { type: 'string', default: 'mixed,swap' },
      'data-root': { type: 'string', default: 'data' },
      config: { type: 'string', default: 'ablation' },
      methods: { type: 'string', default: METHODS.join(',') },
      inputs: { type: 'string', default: DEFAULT_INPUTS.join(',') },
      'report-only': { type: 'boolean', default: false },
    },
  });
  const seeds = list(values.seeds!, 'seeds').map(Number);
  if (!seeds.every((s) => Number.isInteger(s) && s >= 0)) throw new Error(`--seeds must be integers ≥ 0, got ${values.seeds}`);
  const epochs = Number(values.epochs);
  if (!Number.isInteger(epochs) || epochs < 1) throw new Error(`--epochs must be a positive integer, got ${values.epochs}`);
  const noises = list(values.noise!, 'noise').map(Number);
  if (!noises.every((n) => n > 0 && n < 1)) throw new Error(`--noise must be rates in (0, 1), got ${values.noise}`);
  const kinds = list(values.corpora!, 'corpora') as CorpusKind[];
  for (const k of kinds) if (!(k in CORPORA)) throw new Error(`--corpora: unknown '${k}'; choose from ${Object.keys(CORPORA).join(', ')}`);
  const methods = list(values.methods!, 'methods') as Method[];
  for (const m of methods) if (!METHODS.includes(m)) throw new Error(`--methods: unknown '${m}'; choose from ${METHODS.join(', ')}`);
  const inputs = checkWeightingInputs(list(values.inputs!, 'inputs'), '--inputs');
  const base = await loadPretrainConfig(values.config!);
  if (base.data.kind !== 'synth') throw new Error('ablation: --config must use the synthetic corpus');
  const out = path.resolve(values.out!);
  await mkdir(out, { recursive: true });

  // The other corpora are named after the base config's, so two base configs never share one.
  const corpusStem = base.data.kind === 'synth' && base.data.dir ? path.basename(base.data.dir) : 'synth';
  const cells: Cell[] = kinds.flatMap((kind) => noises.map((noise) => {
    const key = `${kind}-${Math.round(noise * 100)}`;
    const isDefault = kind === 'mixed' && noise === DEFAULT_NOISE;
    const dir = isDefault && base.data.kind === 'synth' ? base.data.dir : path.join(values['data-root']!, `${corpusStem}-noise${Math.round(noise * 100)}-${kind}`);
    return { kind, noise, key, dir };
  }));

  const results: RunResult[] = [];
  const missing: string[] = [];
  for (const cell of cells) {
    for (const seed of seeds) {
      for (const method of methods) {
        const runDir = path.join(out, cell.key, `${method}-s${seed}`);
        let ev = await readEval(runDir);
        if (!ev && !values['report-only']) {
          const t0 = performance.now();
          const r = await runPretrain(configFor(base, cell, method, seed, epochs, inputs), { out: runDir, quiet: true, resume: true });
          console.error(`${cell.key} ${method} seed ${seed}: t2v R@1 ${r.eval.t2v.R1.toFixed(1)} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
          ev = await readEval(runDir);
        }
        if (ev) results.push({ corpus: cell.key, kind: cell.kind, noise: cell.noise, method, seed, eval: ev });
        else missing.push(`${cell.key}/${method}-s${seed}`);
      }
    }
  }

  const sections: string[] = [];
  for (const cell of cells) {
    const rs = results.filter((r) => r.corpus === cell.key);
    if (!rs.length) continue;
    // Tail colours: the two rarest colours of that corpus's training split.
    let tail: string[] = [];
    try {
      const corpus = JSON.parse(await readFile(path.join(path.resolve(cell.dir), 'corpus.json'), 'utf8')) as { counts?: { trainPerColor?: Record<string, number> } };
      const per = corpus.counts?.trainPerColor;
      if (per) tail = Object.entries(per).sort((a, b) => a[1] - b[1]).slice(0, 2).map(([c]) => `color:${c}`);
    } catch { /* no corpus.json: no tail column */ }
    sections.push(corpusReport(cell, methods, rs, tail));
  }
  const chance = results[0] ? `chance R@1 = ${results[0].eval.chanceR1.toFixed(2)} % (${results[0].eval.testVideos} test videos)` : '';
  const ran = `${results.length} runs: ${epochs} epochs each, seeds ${seeds.join(', ')}; ${chance}`;
  const table = [ran, ...(missing.length ? [`Not run (${missing.length}): ${missing.join(', ')}`] : []), '', sections.join('\n\n')].join('\n');
  const figure = await plotRecall(results, methods, path.join(out, 'recall-vs-noise.png'));
  await writeFile(path.join(out, 'results.json'), JSON.stringify({ seeds, epochs, inputs, cells, missing, results }, null, 2) + '\n');
  await writeFile(path.join(out, 'table.md'), table + '\n');
  console.log(table);
  if (figure) console.log(`\nfigure: ${figure}`);
}

main().then(() => process.exit(0), (e: unknown) => { console.error(`ablation: ${(e as Error).message}`); process.exit(1); });
