/**
 * The embedding job: L2-normalised video or caption embeddings of a manifest from a model (a
 * Hugging Face CLIP folder, a checkpoint or a run folder), written as one safetensors file.
 *
 * The file holds `embeddings` F32 [rows, E]: one row per video (video) or per caption (text),
 * in manifest order. Its metadata names the rows: `ids` (JSON array: the entry id of each row),
 * for text also `captionIndex` (which caption of its entry) and `captions`; `skipped` lists
 * entries whose video could not be decoded (they have no row); `model`, `kind`, `dim`.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { buildFrameCache, openFrameCache, planFrameCache, readFrameCachePlan, type BuildFrameCacheOptions, type FrameCacheConfig } from '../src/data/frameCache.js';
import type { ManifestEntry } from '../src/data/types.js';
import { readManifest } from '../src/data/manifest.js';
import { encodeTextEmbeddings, encodeVideoEmbeddings } from '../src/eval/retrievalEval.js';
import { loadTokenizer } from '../src/text/tokenizer.js';
import { loadModel, readModelInfo } from '../src/train/checkpointInfo.js';
import { writeSafetensors } from '../src/train/safetensors.js';

export interface EmbedOptions {
  kind: 'video' | 'text';
  /** Hugging Face CLIP folder, checkpoint folder or run folder. */
  model: string;
  /** Native JSONL manifest. */
  manifest: string;
  /** Output .safetensors file. */
  out: string;
  /** Only entries of this split ('all', the default, takes every entry). */
  split?: string;
  /** Frames per clip for a CLIP folder (default 12; a checkpoint keeps its own). */
  frames?: number;
  /** Frame cache folder (default beside the manifest in .vlmargin/). */
  framesDir?: string;
  batchSize?: number;
  allowOutsideRoot?: boolean;
  onLog?: (message: string) => void;
}

export interface EmbedResult {
  out: string;
  rows: number;
  dim: number;
  ids: string[];
  skipped: { id: string; reason: string }[];
}

function describePlan(c: FrameCacheConfig, planned: { items: number; idsSha256: string } | undefined, what: string): string {
  const settings = `${c.frames} frames of ${c.size}×${c.size}, ${c.strategy}${c.strategy === 'fps' ? ` ${c.fps}/s` : ''}${c.strategy === 'random' ? ` seed ${c.seed}` : ''}`;
  return `${settings}, ${planned ? `${planned.items} clips of ${what} (ids SHA-256 ${planned.idsSha256.slice(0, 12)}…)` : 'its clips not recorded'}`;
}

/**
 * A frame cache folder the user named holds someone's decoded clips: building another plan in
 * it (other settings, or other entries: another manifest or split) would replace its shards,
 * so that is refused, naming both plans; the same plan resumes or reuses it as usual.
 */
async function refuseOtherPlan(dir: string, entries: ManifestEntry[], opts: BuildFrameCacheOptions, split: string): Promise<void> {
  const had = await readFrameCachePlan(dir);
  if (!had) return;
  const plan = planFrameCache(entries, opts);
  const planned = { items: plan.shards.reduce((n, s) => n + s.items.length, 0), idsSha256: plan.idsSha256 };
  const sameSettings = JSON.stringify(had.config) === JSON.stringify(plan.config);
  if (sameSettings && had.planned?.idsSha256 === plan.idsSha256) return;
  const hadWhat = had.planned?.idsSha256 === plan.idsSha256 ? 'the same entries' : 'another manifest or split';
  throw new Error(`--frames-dir ${dir}: holds a frame cache built for another plan (${describePlan(had.config, had.planned, hadWhat)}); `
    + `this embed needs ${describePlan(plan.config, planned, split === 'all' ? 'the manifest' : `split '${split}'`)}, and building it there would replace that cache. `
    + 'Give another --frames-dir (or leave it out: the default is a folder per setting beside the manifest), or delete the folder to rebuild it');
}

/**
 * Embeds a manifest's videos or captions and writes them to `out`.
 * @example await embedManifest({ kind: 'text', model: 'models/clip-vit-base-patch32', manifest: 'm.jsonl', out: 'text.safetensors' });
 */
export async function embedManifest(opts: EmbedOptions): Promise<EmbedResult> {
  if (opts.kind !== 'video' && opts.kind !== 'text') throw new Error(`embed: kind must be 'video' or 'text', got ${JSON.stringify(opts.kind)}`);
  if (typeof opts.out !== 'string' || !opts.out.endsWith('.safetensors')) throw new Error(`--out: expected a .safetensors file, got ${JSON.stringify(opts.out)}`);
  const log = opts.onLog ?? (() => undefined);
  const info = await readModelInfo(opts.model, { frames: opts.frames, batchSize: opts.batchSize });
  const manifestPath = path.resolve(opts.manifest);
  const m = await readManifest(manifestPath, { allowOutsideRoot: opts.allowOutsideRoot });
  if (m.errors.length) log(`${m.errors.length} manifest lines skipped (first: line ${m.errors[0].line ?? '?'}: ${m.errors[0].reason})`);
  const split = opts.split ?? 'all';
  const entries = split === 'all' ? m.entries : m.entries.filter((e) => e.split === split);
  if (!entries.length) throw new Error(`--manifest ${manifestPath}: no entries${split === 'all' ? '' : ` with split '${split}'`}`);
  const batchSize = opts.batchSize ?? info.batchSize;
  const store = await loadModel(info, 0);
  const params = store.snapshot();
  const meta: Record<string, string> = { kind: opts.kind, model: info.dir, step: String(info.step), manifest: manifestPath, split };
  let data: Float32Array;
  let ids: string[];
  const skipped: { id: string; reason: string }[] = [];
  try {
    if (opts.kind === 'video') {
      const framesDir = path.resolve(opts.framesDir
        ?? path.join(path.dirname(manifestPath), '.vlmargin', `frames-${info.frames.count}x${info.frames.size}-${info.frames.strategy}-s${info.seed}`));
      const cacheOpts = { out: framesDir, frames: info.frames.count, size: info.frames.size, strategy: info.frames.strategy, seed: info.seed };
      if (opts.framesDir !== undefined) await refuseOtherPlan(framesDir, entries, cacheOpts, split);
      const summary = await buildFrameCache(entries, cacheOpts);
      log(`frame cache ${framesDir}: ${summary.decoded} decoded, ${summary.reused} reused, ${summary.skipped.length} skipped`);
      const cache = await openFrameCache(framesDir);
      const failed = new Map(summary.skipped.map((s) => [s.id, s.reason]));
      ids = [];
      for (const e of entries) {
        if (cache.has(e.id)) ids.push(e.id);
        else skipped.push({ id: e.id, reason: failed.get(e.id) ?? 'not in the frame cache' });
      }
      if (!ids.length) throw new Error(`--manifest ${manifestPath}: none of the ${entries.length} videos could be decoded (first: ${skipped[0]?.id}: ${skipped[0]?.reason})`);
      for (const s of skipped) log(`skipped ${s.id}: ${s.reason}`);
      data = await encodeVideoEmbeddings(params, info.model, cache, ids, batchSize, info.preprocess);
      meta.frames = JSON.stringify(info.frames);
    } else {
      const tok = await loadTokenizer(info.tokenizerDir);
      const rows = entries.flatMap((e) => e.captions.map((c, k) => ({ id: e.id, k, c })));
      ids = rows.map((r) => r.id);
      data = await encodeTextEmbeddings(params, info.model, tok, rows.map((r) => r.c), info.maxLen, batchSize);
      meta.captionIndex = JSON.stringify(rows.map((r) => r.k));
      meta.captions = JSON.stringify(rows.map((r) => r.c));
    }
  } finally {
    store.dispose();
  }
  const d = info.model.embedDim;
  Object.assign(meta, { ids: JSON.stringify(ids), skipped: JSON.stringify(skipped), dim: String(d) });
  const out = path.resolve(opts.out);
  await mkdir(path.dirname(out), { recursive: true });
  await writeSafetensors(out, { embeddings: { dtype: 'F32', shape: [ids.length, d], data } }, meta);
  return { out, rows: ids.length, dim: d, ids, skipped };
}
