/**
 * The meta set: a small, clean, concept-balanced set of pairs for the bilevel weighting step.
 * It is drawn from any manifest with `concepts`, written as an overlay manifest whose video paths
 * are relative to the source manifest's folder (so the committed file needs no video files), and
 * read back against that source, which it must still match.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readManifest } from './manifest.js';
import { generateSynthCorpus, seededRandom, SynthParamsSchema, type SynthParams, type SynthResult } from './synth.js';
import type { Manifest, ManifestEntry } from './types.js';

export interface MetaSetOptions {
  /** Items wanted per concept. */
  perConcept: number;
  seed: number;
  /** Balance only over concepts starting with this (e.g. `color:`); default all concepts. */
  conceptPrefix?: string;
}

export interface MetaSetDraw {
  /** The chosen entries, sorted by id. */
  entries: ManifestEntry[];
  /** Chosen items per balanced concept. */
  counts: Record<string, number>;
  /** `checked`: items flagged `noisy: true` were left out; `unchecked`: no item carries a flag, so cleanliness is unknown. */
  cleanliness: 'checked' | 'unchecked';
  excludedNoisy: number;
  /** Entries with no concept under the prefix, which cannot take part. */
  withoutConcepts: number;
  warnings: string[];
}

function shuffled<T>(rng: () => number, xs: readonly T[]): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * Draws a clean meta set with `perConcept` items for every concept (those under `conceptPrefix`,
 * or all). Items flagged `noisy: true` are excluded. Concepts are filled rarest first; an item
 * is preferred when it adds least to concepts that are already full, then to the other concepts
 * (those outside the prefix); so with one concept per item under the prefix every concept gets
 * exactly `perConcept` (when it has that many) and the rest come out near-balanced. The result does not depend on the
 * order of `entries`.
 *
 * @example const d = drawMetaSet(manifest.entries, { perConcept: 10, seed: 1, conceptPrefix: 'color:' });
 */
export function drawMetaSet(entries: readonly ManifestEntry[], options: MetaSetOptions): MetaSetDraw {
  if (!Array.isArray(entries)) throw new Error('drawMetaSet: "entries" must be an array of ManifestEntry');
  if (!options || !Number.isInteger(options.perConcept) || options.perConcept < 1) {
    throw new Error(`drawMetaSet: options.perConcept must be an integer >= 1, got ${options?.perConcept}`);
  }
  if (!Number.isInteger(options.seed)) throw new Error(`drawMetaSet: options.seed must be an integer, got ${options.seed}`);
  const prefix = options.conceptPrefix ?? '';
  const K = options.perConcept;
  const warnings: string[] = [];
  const flagged = entries.some((e) => e.noisy !== undefined);
  if (!flagged) warnings.push('no entry carries a "noisy" flag, so cleanliness cannot be checked: the meta set is only as clean as its source');
  const excludedNoisy = entries.filter((e) => e.noisy === true).length;

  const relevant = (e: ManifestEntry) => (e.concepts ?? []).filter((c) => c.startsWith(prefix));
  const clean = entries.filter((e) => e.noisy !== true);
  const usable = clean.filter((e) => relevant(e).length > 0);
  const withoutConcepts = clean.length - usable.length;
  if (usable.length === 0) throw new Error(`drawMetaSet: no clean entry has a concept${prefix ? ` starting with "${prefix}"` : ''}`);

  const pool = shuffled(seededRandom(options.seed, 'meta-set'), [...usable].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)));
  const conceptsOf = new Map(pool.map((e) => [e, relevant(e)]));
  const available = new Map<string, number>();
  for (const cs of conceptsOf.values()) for (const c of cs) available.set(c, (available.get(c) ?? 0) + 1);
  const counts = new Map([...available.keys()].map((c) => [c, 0]));
  const order = [...available.keys()].sort((a, b) => available.get(a)! - available.get(b)! || (a < b ? -1 : 1));
  const allCounts = new Map<string, number>();
  const chosen = new Set<ManifestEntry>();

  for (const c of order) {
    while (counts.get(c)! < K) {
      let best: ManifestEntry | null = null;
      let bestScore = [Infinity, Infinity, Infinity];
      for (const e of pool) {
        if (chosen.has(e)) continue;
        const cs = conceptsOf.get(e)!;
        if (!cs.includes(c)) continue;
        const score = [
          cs.filter((x) => counts.get(x)! >= K).length,
          cs.reduce((s, x) => s + counts.get(x)!, 0),
          // Concepts outside the prefix only break ties, keeping them as even as the balanced ones allow.
          (e.concepts ?? []).reduce((s: number, x: string) => s + (allCounts.get(x) ?? 0), 0),
        ];
        if (score[0] < bestScore[0] || (score[0] === bestScore[0] && (score[1] < bestScore[1] || (score[1] === bestScore[1] && score[2] < bestScore[2])))) {
          best = e;
          bestScore = score;
        }
      }
      if (!best) {
        warnings.push(`concept "${c}" has only ${counts.get(c)} clean items, fewer than ${K}`);
        break;
      }
      chosen.add(best);
      for (const x of conceptsOf.get(best)!) counts.set(x, counts.get(x)! + 1);
      for (const x of best.concepts ?? []) allCounts.set(x, (allCounts.get(x) ?? 0) + 1);
    }
  }
  const picked = [...chosen].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return {
    entries: picked,
    counts: Object.fromEntries([...counts.entries()].sort(([a], [b]) => (a < b ? -1 : 1))),
    cleanliness: flagged ? 'checked' : 'unchecked',
    excludedNoisy,
    withoutConcepts,
    warnings,
  };
}

export interface ReadMetaSetOptions {
  /** The manifest the meta set was drawn from; the meta set's video paths are relative to its folder. */
  source: string;
  allowOutsideRoot?: boolean;
}

/**
 * Reads an overlay meta set (video paths relative to the source manifest's folder) and checks that
 * every item is still in the source with the same video and captions; a mismatch means the source
 * is not the one it was drawn from, and throws.
 *
 * @example const meta = await readMetaSet('meta-data/default/manifest.jsonl', { source: 'data/synth/manifest.jsonl' });
 */
export async function readMetaSet(file: string, options: ReadMetaSetOptions): Promise<Manifest> {
  if (!options || typeof options.source !== 'string' || options.source === '') {
    throw new Error('readMetaSet: options.source must name the manifest the meta set was drawn from');
  }
  const allow = options.allowOutsideRoot ?? false;
  const source = await readManifest(options.source, { allowOutsideRoot: allow });
  const meta = await readManifest(file, { root: source.root, allowOutsideRoot: allow });
  const byId = new Map(source.entries.map((e) => [e.id, e]));
  for (const e of meta.entries) {
    const s = byId.get(e.id);
    const same = s && s.video === e.video && s.captions.length === e.captions.length && s.captions.every((c, i) => c === e.captions[i]);
    if (!same) {
      throw new Error(`readMetaSet: ${meta.path} does not match its source ${source.path}: item "${e.id}" is ${s ? 'different there' : 'missing there'}; `
        + 'the source was regenerated with other parameters or edited (see the recipe next to the meta set)');
    }
  }
  return meta;
}

/** The committed default meta set: `meta-data/default/` in the package. */
export const DEFAULT_META_SET_DIR = fileURLToPath(new URL('../../../meta-data/default/', import.meta.url));

/** Path of the recipe written next to a meta-set manifest: `x.jsonl` → `x.draw.json`. */
export function drawRecipePath(metaManifest: string): string {
  return metaManifest.replace(/\.jsonl$/i, '') + '.draw.json';
}

/**
 * Loads the committed default meta set: regenerates (or reuses) the synthetic corpus in
 * `corpusDir` with the parameters its recipe records, then reads the meta set against it.
 *
 * @example const { meta, corpus } = await loadDefaultMetaSet({ corpusDir: 'data/synth-default' });
 */
export async function loadDefaultMetaSet(options: { corpusDir: string; concurrency?: number }): Promise<{ meta: Manifest; corpus: SynthResult }> {
  if (!options || typeof options.corpusDir !== 'string' || options.corpusDir === '') {
    throw new Error('loadDefaultMetaSet: options.corpusDir must name the folder for the synthetic corpus');
  }
  const manifest = path.join(DEFAULT_META_SET_DIR, 'manifest.jsonl');
  const recipeFile = drawRecipePath(manifest);
  let params: SynthParams;
  try {
    const recipe = JSON.parse(await readFile(recipeFile, 'utf8')) as { synth?: unknown };
    params = SynthParamsSchema.parse(recipe.synth);
  } catch (e) {
    throw new Error(`loadDefaultMetaSet: ${recipeFile} does not hold the synthetic corpus parameters under "synth": ${(e as Error).message}`);
  }
  const corpus = await generateSynthCorpus({ out: options.corpusDir, concurrency: options.concurrency, ...params });
  return { meta: await readMetaSet(manifest, { source: corpus.manifestPath }), corpus };
}
