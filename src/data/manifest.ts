/**
 * The native manifest: one JSON object per line,
 * `{"id","video","caption"|"captions","start"?,"end"?,"concepts"?,"split"?,"noisy"?,"noiseKind"?}`.
 * A caption is a string, or `{"text","source"}` naming where it came from (`human`, the default,
 * or e.g. `generated` for captions written by a vision-language model).
 * Relative video paths resolve against the manifest's folder; a path that leaves that folder is
 * refused unless the caller allows it, so a manifest from elsewhere cannot point the pipeline at
 * arbitrary files. A bad line is reported with its file and line number and skipped.
 */
import { writeFileAtomic } from '../util/atomicWrite.js';
import { createReadStream } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { ItemError } from '../util/itemError.js';
import type { Manifest, ManifestEntry } from './types.js';

export interface ReadManifestOptions {
  /** Accept video paths that resolve outside `root` (default false: such items are refused). */
  allowOutsideRoot?: boolean;
  /** Keep only entries whose `split` equals this. */
  split?: string;
  /** Folder relative video paths resolve against (default: the manifest's own folder). */
  root?: string;
}

/**
 * Resolves `video` against `root` and refuses it when it leaves `root` (lexically: `..` or an
 * absolute path elsewhere). Returns the absolute path, or a reason string.
 *
 * @example resolveInsideRoot('/data/set', 'clips/a.mp4', false) // '/data/set/clips/a.mp4'
 */
export function resolveInsideRoot(root: string, video: string, allowOutsideRoot: boolean): { path: string } | { reason: string } {
  const abs = path.resolve(root, video);
  const rel = path.relative(root, abs);
  const outside = rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel);
  if (outside && !allowOutsideRoot) {
    return { reason: `video path "${video}" resolves outside the manifest root ${root}; allow it with allowOutsideRoot (data.allowOutsideRoot in a config, --allow-outside-root on the commands that take --manifest)` };
  }
  return { path: abs };
}

/** The source of a caption given as a plain string. */
export const HUMAN = 'human';

function describeType(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'nothing (the key is missing)';
  if (Array.isArray(v)) return 'an array';
  return `a ${typeof v}`;
}

/** Validates one parsed line; returns the entry (video still as written) or the reason it is unusable. */
function checkLine(obj: unknown): { entry: ManifestEntry } | { reason: string; id?: string } {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return { reason: `expected a JSON object, got ${describeType(obj)}` };
  const o = obj as Record<string, unknown>;
  if (typeof o.id !== 'string' || o.id === '') return { reason: `"id" must be a non-empty string, got ${describeType(o.id)}` };
  const id = o.id;
  const bad = (reason: string) => ({ reason, id });
  if (typeof o.video !== 'string' || o.video === '') return bad(`"video" must be a non-empty string, got ${describeType(o.video)}`);
  let raw: unknown[];
  if (o.caption !== undefined && o.captions !== undefined) return bad('give "caption" or "captions", not both');
  if (o.caption !== undefined) {
    raw = [o.caption];
  } else if (o.captions !== undefined) {
    if (!Array.isArray(o.captions) || o.captions.length === 0) return bad('"captions" must be a non-empty array of strings or { "text", "source" }');
    raw = o.captions;
  } else {
    return bad('missing "caption" (or "captions")');
  }
  const captions: string[] = [];
  const sources: string[] = [];
  for (const [i, c] of raw.entries()) {
    const where = o.caption !== undefined ? '"caption"' : `"captions"[${i}]`;
    if (typeof c === 'string') {
      if (c.trim() === '') return bad(`${where} must be a non-empty string`);
      captions.push(c);
      sources.push(HUMAN);
      continue;
    }
    const co = c as Record<string, unknown>;
    if (typeof c !== 'object' || c === null || Array.isArray(c) || typeof co.text !== 'string' || co.text.trim() === '') {
      return bad(`${where} must be a non-empty string or { "text": non-empty string, "source"?: string }, got ${describeType(c)}`);
    }
    if (co.source !== undefined && (typeof co.source !== 'string' || !/^[\w.-]+$/.test(co.source))) {
      return bad(`${where}.source must be a name (letters, digits, _ . -), e.g. "human" or "generated", got ${JSON.stringify(co.source)}`);
    }
    const extra = Object.keys(co).filter((k) => k !== 'text' && k !== 'source');
    if (extra.length) return bad(`${where} has unknown keys ${extra.join(', ')}; expected "text" and "source"`);
    captions.push(co.text);
    sources.push((co.source as string | undefined) ?? HUMAN);
  }
  const entry: ManifestEntry = { id, video: o.video, captions };
  if (sources.some((x) => x !== HUMAN)) entry.captionSources = sources;
  for (const k of ['start', 'end'] as const) {
    const v = o[k];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) return bad(`"${k}" must be a finite number of seconds >= 0, got ${JSON.stringify(v)}`);
    entry[k] = v;
  }
  if (entry.start !== undefined && entry.end !== undefined && entry.end <= entry.start) {
    return bad(`"end" (${entry.end}) must be after "start" (${entry.start})`);
  }
  if (o.concepts !== undefined) {
    if (!Array.isArray(o.concepts) || !o.concepts.every((c) => typeof c === 'string' && c !== '')) return bad('"concepts" must be an array of non-empty strings');
    entry.concepts = o.concepts as string[];
  }
  if (o.split !== undefined) {
    if (typeof o.split !== 'string' || o.split === '') return bad(`"split" must be a non-empty string, got ${describeType(o.split)}`);
    entry.split = o.split;
  }
  if (o.noisy !== undefined) {
    if (typeof o.noisy !== 'boolean') return bad(`"noisy" must be true or false, got ${describeType(o.noisy)}`);
    entry.noisy = o.noisy;
  }
  if (o.noiseKind !== undefined) {
    if (typeof o.noiseKind !== 'string' || o.noiseKind === '') return bad(`"noiseKind" must be a non-empty string, got ${describeType(o.noiseKind)}`);
    if (o.noisy !== true) return bad('"noiseKind" is only meaningful with "noisy": true');
    entry.noiseKind = o.noiseKind;
  }
  return { entry };
}

/**
 * Reads a native JSONL manifest. Bad lines (invalid JSON, missing or mistyped fields, duplicate
 * ids, paths escaping the root) become `errors` with file and line; a missing or unreadable file
 * throws an error naming it.
 *
 * @example
 * const m = await readManifest('data/synth/manifest.jsonl', { split: 'train' });
 * for (const e of m.errors) console.warn(`${e.source}:${e.line}: ${e.reason}`);
 */
export async function readManifest(file: string, options: ReadManifestOptions = {}): Promise<Manifest> {
  if (typeof file !== 'string' || file === '') throw new Error('readManifest: "file" must be a path to a .jsonl manifest');
  const source = path.resolve(file);
  const root = path.resolve(options.root ?? path.dirname(source));
  try {
    const s = await stat(source);
    if (!s.isFile()) throw new Error('not a regular file');
  } catch (e) {
    throw new Error(`readManifest: cannot read manifest ${source}: ${(e as Error).message}`);
  }
  const entries: ManifestEntry[] = [];
  const errors: ItemError[] = [];
  const firstLineOf = new Map<string, number>();
  const stream = createReadStream(source, { encoding: 'utf8' });
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  let line = 0;
  try {
    for await (const raw of lines) {
      line += 1;
      const text = (line === 1 ? raw.replace(/^\uFEFF/, '') : raw).trim();
      if (text === '') continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (e) {
        errors.push({ source, line, reason: `invalid JSON: ${(e as Error).message}` });
        continue;
      }
      const checked = checkLine(parsed);
      if ('reason' in checked) {
        errors.push({ source, line, id: checked.id, reason: checked.reason });
        continue;
      }
      const { entry } = checked;
      const seen = firstLineOf.get(entry.id);
      if (seen !== undefined) {
        errors.push({ source, line, id: entry.id, reason: `duplicate id "${entry.id}" (first on line ${seen})` });
        continue;
      }
      firstLineOf.set(entry.id, line);
      const resolved = resolveInsideRoot(root, entry.video, options.allowOutsideRoot ?? false);
      if ('reason' in resolved) {
        errors.push({ source, line, id: entry.id, reason: resolved.reason });
        continue;
      }
      entry.video = resolved.path;
      if (options.split !== undefined && entry.split !== options.split) continue;
      entries.push(entry);
    }
  } catch (e) {
    throw new Error(`readManifest: failed while reading ${source} (after line ${line}): ${(e as Error).message}`);
  }
  return { path: source, root, entries, errors };
}

/** One entry as a JSON line, keys in a fixed order so the same entries always give the same bytes. */
function entryLine(e: ManifestEntry, folder: string): string {
  const rel = path.relative(folder, e.video);
  const inside = rel !== '' && rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel);
  const o: Record<string, unknown> = { id: e.id, video: inside ? rel.split(path.sep).join('/') : e.video };
  const caps: unknown[] = e.captionSources
    ? e.captions.map((text, i) => (e.captionSources![i] === HUMAN ? text : { text, source: e.captionSources![i] }))
    : e.captions;
  if (caps.length === 1) o.caption = caps[0];
  else o.captions = caps;
  if (e.start !== undefined) o.start = e.start;
  if (e.end !== undefined) o.end = e.end;
  if (e.concepts !== undefined) o.concepts = e.concepts;
  if (e.split !== undefined) o.split = e.split;
  if (e.noisy !== undefined) o.noisy = e.noisy;
  if (e.noiseKind !== undefined) o.noiseKind = e.noiseKind;
  return JSON.stringify(o);
}

export interface WriteManifestOptions {
  /**
   * Folder video paths are written relative to (default: the manifest's folder). Another folder
   * makes an overlay manifest, read back with `readManifest(file, { root })`.
   */
  root?: string;
}

/**
 * Writes entries as a native JSONL manifest (via a temporary file and a rename). Videos inside
 * the root (by default the manifest's folder) are written relative to it with `/`; others keep
 * their absolute path (reading those back needs `allowOutsideRoot`). Relative `video` values are
 * taken relative to the current directory.
 *
 * @example await writeManifest('out/manifest.jsonl', [{ id: 'a', video: '/abs/out/clips/a.mp4', captions: ['a red circle'] }]);
 */
export async function writeManifest(file: string, entries: readonly ManifestEntry[], options: WriteManifestOptions = {}): Promise<void> {
  if (typeof file !== 'string' || file === '') throw new Error('writeManifest: "file" must be a path');
  if (!Array.isArray(entries)) throw new Error('writeManifest: "entries" must be an array of ManifestEntry');
  const target = path.resolve(file);
  const folder = path.resolve(options.root ?? path.dirname(target));
  const seen = new Set<string>();
  const lines: string[] = [];
  entries.forEach((e, i) => {
    if (typeof e.id !== 'string' || e.id === '') throw new Error(`writeManifest: entries[${i}].id must be a non-empty string`);
    if (seen.has(e.id)) throw new Error(`writeManifest: duplicate id "${e.id}" at entries[${i}]`);
    seen.add(e.id);
    if (typeof e.video !== 'string' || e.video === '') throw new Error(`writeManifest: entries[${i}] ("${e.id}") has no video path`);
    if (!Array.isArray(e.captions) || e.captions.length === 0) throw new Error(`writeManifest: entries[${i}] ("${e.id}") needs at least one caption`);
    lines.push(entryLine({ ...e, video: path.resolve(e.video) }, folder));
  });
  await mkdir(path.dirname(target), { recursive: true });
  await writeFileAtomic(target, lines.length ? `${lines.join('\n')}\n` : '');
}

/** The source of each caption of an entry (`human` unless the manifest named another). */
export function captionSourcesOf(e: ManifestEntry): string[] {
  return e.captionSources ?? e.captions.map(() => HUMAN);
}

/**
 * The entries with their human captions only, for evaluation (generated captions train, they
 * never score). Entries left without a caption are dropped.
 *
 * @example humanCaptions([{ id: 'a', video: 'a.mp4', captions: ['x', 'y'], captionSources: ['human', 'generated'] }]) // captions ['x']
 */
export function humanCaptions(entries: ManifestEntry[]): ManifestEntry[] {
  const out: ManifestEntry[] = [];
  for (const e of entries) {
    if (!e.captionSources) { out.push(e); continue; }
    const captions = e.captions.filter((_, i) => e.captionSources![i] === HUMAN);
    if (!captions.length) continue;
    const { captionSources: _drop, ...rest } = e;
    out.push({ ...rest, captions });
  }
  return out;
}

/**
 * Why a split came out empty, for an error message: the splits that are present and the first
 * `limit` skipped lines with their reasons (when every line was bad, those are the answer).
 *
 * @example throw new Error(`no entries with split 'train'${emptySplitReasons(m)}`);
 */
export function emptySplitReasons(m: Pick<Manifest, 'entries' | 'errors'>, limit = 3): string {
  const splits = [...new Set(m.entries.map((e) => e.split ?? '(none)'))];
  const parts = [`${m.entries.length} usable entries${splits.length ? ` with splits ${splits.map((s) => `'${s}'`).join(', ')}` : ''}`];
  if (m.errors.length) {
    const first = m.errors.slice(0, limit).map((e) => `    ${e.line !== undefined ? `line ${e.line}` : e.id ?? e.source}: ${e.reason}`);
    parts.push(`${m.errors.length} lines skipped, first:\n${first.join('\n')}`);
  }
  return ` (${parts.join('; ')})`;
}
