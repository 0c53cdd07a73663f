/**
 * The retrieval-evaluation job: evaluate a model (a checkpoint, or a Hugging Face CLIP folder
 * zero-shot) on a manifest split. Encodes once (embeddings cached next to the checkpoint, or
 * under runs/<folder>-zero-shot/ for a CLIP folder, which is never written to), ranks both
 * ways, per-concept R@1, and writes the report (eval.json, eval.md, PNGs).
 */
import { stat, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { tf } from '../src/backend/tf.js';
import { buildFrameCache, frameCacheDirName, openFrameCache } from '../src/data/frameCache.js';
import { emptySplitReasons, humanCaptions, readManifest } from '../src/data/manifest.js';
import type { ManifestEntry } from '../src/data/types.js';
import type { ItemError } from '../src/util/itemError.js';
import type { Params } from '../src/nn/params.js';
import { loadTokenizer, type Tokenizer } from '../src/text/tokenizer.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { loadModel, readModelInfo, type CheckpointInfo } from '../src/train/checkpointInfo.js';
import { embeddingCacheKey, readEmbeddingCache, writeEmbeddingCache } from '../src/eval/embeddingCache.js';
import { savePlot } from '../src/eval/plot.js';
import type { RetrievalMetrics } from '../src/eval/retrieval.js';
import {
  encodeTextEmbeddings, encodeVideoEmbeddings, recallCurve, scoreRetrieval, type ConceptR1, type ScoreResult,
} from '../src/eval/retrievalEval.js';
import { writeFileAtomic } from '../src/util/atomicWrite.js';

export interface RetrievalEvalOptions {
  /** Checkpoint folder, run folder, or Hugging Face CLIP folder (zero-shot). */
  checkpoint: string;
  /** Frames per clip for a CLIP folder (default 12; a checkpoint keeps its own). */
  frames?: number;
  /** Native JSONL manifest, or pass `entries` (then `manifest` only names the data in the report and cache key). */
  manifest: string;
  entries?: ManifestEntry[];
  /** Split to evaluate; 'all' takes every entry (default 'test'). */
  split?: string;
  dsl?: boolean;
  dslTemperature?: number;
  /** QB-Norm query bank: the captions of this manifest's `qbnormSplit` (default 'train'; 'all' = every entry). */
  qbnorm?: string;
  qbnormSplit?: string;
  qbnormBeta?: number;
  /** Report folder (default `<checkpoint>/eval/<manifest name>-<split>[-dsl|-qbnorm]`). */
  out?: string;
  /** Frame cache folder (default `<manifest folder>/.vlmargin/frames-<count>x<size>-<strategy>-s<seed>`). */
  framesDir?: string;
  batchSize?: number;
  denseLimit?: number;
  blockRows?: number;
  allowOutsideRoot?: boolean;
  /** Use these weights instead of the checkpoint's (a pipeline evaluating its live model); disables the cache. */
  params?: Params;
  onLog?: (message: string) => void;
  /** Write PNG plots (default true). */
  plots?: boolean;
}

export interface RetrievalEvalReport {
  checkpoint: string;
  step: number;
  manifest: string;
  split: string;
  videos: number;
  captions: number;
  /** Entries of the split left out because their video could not be decoded. */
  skipped: { id: string; reason: string }[];
  rescoring: 'none' | 'dsl' | 'qbnorm';
  /** QB-Norm re-scores t2v only (the bank is captions); v2t is then the plain ranking. */
  note?: string;
  t2v: RetrievalMetrics;
  v2t: RetrievalMetrics;
  /** R@1 (%) of a random ranking: 100 / videos, in both directions. */
  chanceR1: number;
  perConcept: ConceptR1[];
  mode: 'dense' | 'blocked';
  cache: { hit: boolean; file: string | null };
  /** Items encoded by this run (0 and 0 on a cache hit). */
  encoded: { videos: number; captions: number };
  seconds: number;
  files: { json: string; markdown: string; plots: string[] };
}

function pickSplit(entries: ManifestEntry[], split: string, source: string, what: string, errors: ItemError[] = []): ManifestEntry[] {
  const out = split === 'all' ? entries : entries.filter((e) => e.split === split);
  if (!out.length) {
    throw new Error(`${what} ${source}: no entries with split '${split}'${emptySplitReasons({ entries, errors })}; --split all uses every entry`);
  }
  return out;
}

async function loadWeights(info: CheckpointInfo): Promise<Params> {
  if (info.kind === 'clip') return (await loadModel(info, 0)).snapshot();
  const ck = await loadCheckpoint(info.dir, { onWarning: () => undefined });
  if (ck.optimizer) tf.dispose(Object.values(ck.optimizer));
  return ck.params;
}

/**
 * Evaluates a checkpoint on a manifest split and writes the report.
 * @example
 * const r = await evaluateCheckpointRetrieval({ checkpoint: 'runs/default', manifest: 'data/synth-default/manifest.jsonl' });
 * console.log(r.t2v.R1, r.files.json);
 */
export async function evaluateCheckpointRetrieval(opts: RetrievalEvalOptions): Promise<RetrievalEvalReport> {
  const t0 = performance.now();
  const log = opts.onLog ?? (() => undefined);
  if (typeof opts.manifest !== 'string' || !opts.manifest) throw new Error('--manifest: expected a manifest path');
  const split = opts.split ?? 'test';
  const info = await readModelInfo(opts.checkpoint, { frames: opts.frames });
  // A run folder's newest checkpoint may be that of a run that stopped early (a full disk, a
  // kill): its figures are not the finished run's, and the report says which step they are.
  const planned = (info.raw as { pretrain?: { train?: { steps?: unknown } } }).pretrain?.train?.steps;
  if (info.kind === 'checkpoint' && typeof planned === 'number' && info.step < planned) {
    log(`warning: ${info.dir} is step ${info.step} of a ${planned}-step run, which stopped early or is still running; the figures are of step ${info.step}`);
  }
  // A CLIP folder is someone's download: reports and caches go to a run folder of its own.
  const home = info.kind === 'clip' ? path.resolve('runs', `${path.basename(info.dir)}-zero-shot`) : info.dir;
  const manifestPath = path.resolve(opts.manifest);
  let entries = opts.entries;
  let manifestMtime = 0;
  let lineErrors: ItemError[] = [];
  if (!entries) {
    try {
      manifestMtime = (await stat(manifestPath)).mtimeMs;
    } catch {
      throw new Error(`--manifest: ${manifestPath} does not exist`);
    }
    const m = await readManifest(manifestPath, { allowOutsideRoot: opts.allowOutsideRoot });
    if (m.errors.length) log(`${m.errors.length} manifest lines skipped (first: line ${m.errors[0].line ?? '?'}: ${m.errors[0].reason})`);
    entries = m.entries;
    lineErrors = m.errors;
  }
  // Generated captions train; only human ones are queries.
  const wanted = humanCaptions(pickSplit(entries, split, manifestPath, opts.entries ? 'data' : '--manifest', lineErrors));
  const batchSize = opts.batchSize ?? info.batchSize;
  const rescoring = opts.dsl ? 'dsl' : opts.qbnorm ? 'qbnorm' : 'none';
  const out = path.resolve(opts.out ?? path.join(home, 'eval', `${path.parse(manifestPath).name}-${split}${rescoring === 'none' ? '' : `-${rescoring}`}`));
  const framesDir = path.resolve(opts.framesDir
    ?? path.join(path.dirname(manifestPath), '.vlmargin', frameCacheDirName({ frames: info.frames.count, size: info.frames.size, strategy: info.frames.strategy, seed: info.seed })));

  const keyParts = {
    checkpointSha: info.modelSha, step: info.step, manifest: manifestPath, manifestMtime, split,
    ids: opts.entries ? embeddingCacheKey({ e: wanted.map((e) => [e.id, e.video, e.captions]) }) : undefined,
    frames: info.frames, seed: info.seed, maxLen: info.maxLen, tokenizer: info.tokenizerDir,
  };
  const cacheDir = path.join(home, 'embeddings');
  const key = embeddingCacheKey(keyParts);
  const useCache = !opts.params;
  let emb = useCache ? await readEmbeddingCache(cacheDir, key) : null;
  const hit = emb !== null;
  let encoded = { videos: 0, captions: 0 };
  let params: Params | undefined = opts.params;
  let tok: Tokenizer | undefined;
  const ownParams = !opts.params;
  const skipped: { id: string; reason: string }[] = [];
  try {
    if (!emb) {
      const summary = await buildFrameCache(wanted, {
        out: framesDir, frames: info.frames.count, size: info.frames.size, strategy: info.frames.strategy, seed: info.seed,
      });
      log(`frame cache ${framesDir}: ${summary.decoded} decoded, ${summary.reused} reused, ${summary.skipped.length} skipped`);
      const cache = await openFrameCache(framesDir);
      const usable = wanted.filter((e) => cache.has(e.id));
      const failed = new Map(summary.skipped.map((s) => [s.id, s.reason]));
      for (const e of wanted) if (!cache.has(e.id)) skipped.push({ id: e.id, reason: failed.get(e.id) ?? 'not in the frame cache' });
      if (usable.length < 2) throw new Error(`--manifest ${manifestPath}: only ${usable.length} videos of split '${split}' could be decoded; need at least 2`);
      tok = await loadTokenizer(info.tokenizerDir);
      params ??= await loadWeights(info);
      const captions = usable.flatMap((e) => e.captions);
      const queryToVideo = Int32Array.from(usable.flatMap((e, j) => e.captions.map(() => j)));
      const videoEmb = await encodeVideoEmbeddings(params, info.model, cache, usable.map((e) => e.id), batchSize, info.preprocess);
      const textEmb = await encodeTextEmbeddings(params, info.model, tok, captions, info.maxLen, batchSize);
      emb = { d: info.model.embedDim, videoIds: usable.map((e) => e.id), videoEmb, queryToVideo, textEmb };
      encoded = { videos: usable.length, captions: captions.length };
      if (useCache) await writeEmbeddingCache(cacheDir, key, keyParts, emb);
    } else {
      const have = new Set(emb.videoIds);
      for (const e of wanted) if (!have.has(e.id)) skipped.push({ id: e.id, reason: 'not decodable when the embeddings were cached' });
    }

    let bankTextEmb: Float32Array | undefined;
    let note: string | undefined;
    if (opts.qbnorm) {
      const bankPath = path.resolve(opts.qbnorm);
      let bankMtime: number;
      try {
        bankMtime = (await stat(bankPath)).mtimeMs;
      } catch {
        throw new Error(`--qbnorm: ${bankPath} does not exist`);
      }
      const bankSplit = opts.qbnormSplit ?? 'train';
      const bankParts = { checkpointSha: info.modelSha, step: info.step, bank: bankPath, bankMtime, bankSplit, maxLen: info.maxLen, tokenizer: info.tokenizerDir };
      const bankKey = embeddingCacheKey(bankParts);
      const cachedBank = useCache ? await readEmbeddingCache(cacheDir, bankKey) : null;
      if (cachedBank) {
        bankTextEmb = cachedBank.textEmb;
      } else {
        const bank = await readManifest(bankPath, { allowOutsideRoot: true });
        const bankEntries = pickSplit(bank.entries, bankSplit, bankPath, '--qbnorm', bank.errors);
        tok ??= await loadTokenizer(info.tokenizerDir);
        params ??= await loadWeights(info);
        const bankCaptions = bankEntries.flatMap((e) => e.captions);
        bankTextEmb = await encodeTextEmbeddings(params, info.model, tok, bankCaptions, info.maxLen, batchSize);
        encoded.captions += bankCaptions.length;
        // Stored as an entry with no video rows but one placeholder, so the same reader serves it.
        if (useCache) {
          await writeEmbeddingCache(cacheDir, bankKey, bankParts, {
            d: info.model.embedDim, videoIds: ['(bank)'], videoEmb: new Float32Array(info.model.embedDim),
            queryToVideo: new Int32Array(bankCaptions.length), textEmb: bankTextEmb,
          });
        }
      }
      note = 'QB-Norm re-scores text→video only (the query bank holds captions); video→text is the plain ranking';
    }

    const conceptsById = new Map(wanted.map((e) => [e.id, e.concepts]));
    const scored = await scoreRetrieval(emb, {
      dsl: opts.dsl, dslTemperature: opts.dslTemperature, bankTextEmb, qbnormBeta: opts.qbnormBeta,
      concepts: emb.videoIds.map((id) => conceptsById.get(id)), denseLimit: opts.denseLimit, blockRows: opts.blockRows,
    });
    const report: RetrievalEvalReport = {
      checkpoint: info.dir, step: info.step, manifest: manifestPath, split,
      videos: emb.videoIds.length, captions: emb.queryToVideo.length, skipped, rescoring, note,
      t2v: scored.t2v, v2t: scored.v2t, chanceR1: 100 / emb.videoIds.length, perConcept: scored.perConcept, mode: scored.mode,
      cache: { hit, file: useCache ? path.join(cacheDir, `${key}.json`) : null }, encoded,
      seconds: 0, files: { json: path.join(out, 'eval.json'), markdown: path.join(out, 'eval.md'), plots: [] },
    };
    if (opts.plots !== false) report.files.plots = await writePlots(report, scored, out);
    report.seconds = (performance.now() - t0) / 1000;
    await mkdir(out, { recursive: true });
    await writeFileAtomic(report.files.markdown, formatRetrievalMarkdown(report));
    await writeFileAtomic(report.files.json, `${JSON.stringify(report, null, 2)}\n`);
    return report;
  } finally {
    if (ownParams && params) tf.dispose(Object.values(params));
  }
}

/** The data set's name for titles: the manifest's folder when the file is just `manifest.jsonl`. */
export function datasetName(manifest: string): string {
  const p = path.parse(manifest);
  return /^manifest$/i.test(p.name) ? path.basename(p.dir) : p.name;
}

/** Top of a percentage axis: the data's maximum with some room, never past 100. */
function percentTop(values: number[]): number {
  const top = Math.max(1, ...values);
  return Math.min(100, Math.ceil((top * 1.15) / 5) * 5);
}

async function writePlots(r: RetrievalEvalReport, s: ScoreResult, out: string): Promise<string[]> {
  const files: string[] = [];
  const name = `${datasetName(r.manifest)} (${r.split}, ${r.videos} videos)`;
  const maxK = Math.min(50, r.videos);
  // A random ranking finds a text's video within the top K with probability K / videos.
  const chance = Array.from({ length: maxK }, (_, i) => ({ k: i + 1, recall: (100 * (i + 1)) / r.videos, direction: 'chance (random ranking)' }));
  const curve = [
    ...recallCurve(s.t2vRanks, maxK).map((p) => ({ ...p, direction: 'text→video' })),
    ...recallCurve(s.v2tRanks, maxK).map((p) => ({ ...p, direction: 'video→text' })),
  ];
  const top = percentTop([...curve, ...chance].map((p) => p.recall));
  const legend = { orient: 'bottom' as const, direction: 'horizontal' as const, title: null, labelLimit: 0 };
  files.push(await savePlot({
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: `Recall@K on ${name}, step ${r.step}`,
    width: 420, height: 260, data: { values: [...curve, ...chance] },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'k', type: 'quantitative', title: 'K (rank cut-off)', scale: { domain: [1, maxK] }, axis: { tickMinStep: 1, format: 'd' } },
      y: { field: 'recall', type: 'quantitative', title: 'queries whose match is in the top K (%)', scale: { domain: [0, top] } },
      color: { field: 'direction', type: 'nominal', legend, scale: { range: ['#4c78a8', '#f58518', '#888888'] }, sort: ['text→video', 'video→text', 'chance (random ranking)'] },
      strokeDash: { condition: { test: "datum.direction === 'chance (random ranking)'", value: [4, 3] }, value: [1, 0] },
    },
  }, path.join(out, 'recall_at_k.png')));
  if (r.perConcept.length) {
    const bars = r.perConcept.flatMap((c) => [
      { concept: c.concept, direction: 'text→video', R1: c.t2vR1 }, { concept: c.concept, direction: 'video→text', R1: c.v2tR1 },
    ]);
    const yTop = percentTop([...bars.map((b) => b.R1), r.chanceR1]);
    files.push(await savePlot({
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      title: `R@1 per concept on ${name}`,
      width: { step: 12 }, height: 240,
      layer: [
        {
          data: { values: bars }, mark: 'bar',
          encoding: {
            x: { field: 'concept', type: 'nominal', sort: null, title: 'concept (videos that show it)' },
            xOffset: { field: 'direction' },
            y: { field: 'R1', type: 'quantitative', title: 'R@1 within the concept (%)', scale: { domain: [0, yTop] } },
            color: { field: 'direction', type: 'nominal', legend },
          },
        },
        {
          data: { values: [{ chance: r.chanceR1, label: `chance ${r.chanceR1.toFixed(1)} %` }] },
          layer: [
            { mark: { type: 'rule', strokeDash: [4, 3], color: '#888888' }, encoding: { y: { field: 'chance', type: 'quantitative' } } },
            { mark: { type: 'text', align: 'right', dy: -6, color: '#555555' }, encoding: { y: { field: 'chance', type: 'quantitative' }, x: { value: 'width' }, text: { field: 'label' } } },
          ],
        },
      ],
    }, path.join(out, 'concept_r1.png')));
  }
  return files;
}

/** The report as a markdown table (both directions, then per-concept R@1). */
export function formatRetrievalMarkdown(r: RetrievalEvalReport): string {
  const f = (x: number) => x.toFixed(1);
  const row = (name: string, m: RetrievalMetrics) => `| ${name} | ${f(m.R1)} | ${f(m.R5)} | ${f(m.R10)} | ${f(m.R50)} | ${f(m.MdR)} | ${f(m.MnR)} |`;
  const lines = [
    `# Retrieval: ${datasetName(r.manifest)} (${r.split})`,
    '',
    `checkpoint ${r.checkpoint} (step ${r.step}); ${r.videos} videos, ${r.captions} captions; re-scoring: ${r.rescoring}; chance R@1 = ${r.chanceR1.toFixed(2)}%`,
    ...(r.note ? ['', r.note] : []),
    ...(r.skipped.length ? ['', `${r.skipped.length} videos skipped (first: ${r.skipped[0].id}: ${r.skipped[0].reason})`] : []),
    '',
    '| direction | R@1 | R@5 | R@10 | R@50 | MdR | MnR |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    row('text→video', r.t2v),
    row('video→text', r.v2t),
  ];
  if (r.perConcept.length) {
    lines.push('', '| concept | videos | captions | t2v R@1 | v2t R@1 |', '| --- | --- | --- | --- | --- |');
    for (const c of r.perConcept) lines.push(`| ${c.concept} | ${c.videos} | ${c.captions} | ${f(c.t2vR1)} | ${f(c.v2tR1)} |`);
  }
  return `${lines.join('\n')}\n`;
}
