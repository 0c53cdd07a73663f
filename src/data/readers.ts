/**
 * Readers for the public video-text sets (MSR-VTT, WebVid) and for any CSV with an id, a video
 * and a caption column. Each returns the same `Manifest` as the native JSONL reader.
 *
 * The CSV parser is our own (RFC 4180: quoted fields with delimiters, doubled quotes and line
 * breaks inside, LF or CRLF) and streams, because WebVid's CSVs are gigabytes; no CSV package is
 * among the project's dependencies.
 */
import { createReadStream } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { resolveInsideRoot } from './manifest.js';
import type { ItemError } from '../util/itemError.js';
import type { Manifest, ManifestEntry } from './types.js';

/** One CSV record: its fields and the physical line it starts on (1-based), or why it is malformed. */
export type CsvRecord = { line: number; fields: string[] } | { line: number; error: string };

/**
 * Incremental CSV parser: feed text chunks with `push`, then call `end`; both return the records
 * completed so far. Empty lines are skipped.
 *
 * @example
 * const p = new CsvParser();
 * p.push('a,"b,c"\r\n"say ""hi""",d\n'); // [{ line: 1, fields: ['a', 'b,c'] }, { line: 2, fields: ['say "hi"', 'd'] }]
 */
export class CsvParser {
  private field = '';
  private fields: string[] = [];
  private inQuotes = false;
  /** The current field was quoted and its closing quote has been read. */
  private closed = false;
  /** A quote inside a quoted field: either the closing quote or the first of a doubled pair. */
  private quotePending = false;
  private crPending = false;
  private line = 1;
  private recordLine = 1;
  private recordError: string | null = null;
  private recordHasContent = false;

  constructor(private readonly delimiter = ',') {
    if (delimiter.length !== 1 || delimiter === '"' || delimiter === '\n' || delimiter === '\r') {
      throw new Error(`CsvParser: "delimiter" must be one character other than a quote or line break, got ${JSON.stringify(delimiter)}`);
    }
  }

  push(chunk: string): CsvRecord[] {
    const out: CsvRecord[] = [];
    for (let i = 0; i < chunk.length; i++) this.step(chunk[i], out);
    return out;
  }

  end(): CsvRecord[] {
    const out: CsvRecord[] = [];
    if (this.quotePending) { this.quotePending = false; this.inQuotes = false; this.closed = true; }
    if (this.inQuotes) {
      out.push({ line: this.recordLine, error: 'unterminated quoted field (a " opened here is never closed)' });
      this.reset();
      return out;
    }
    if (this.recordHasContent || this.fields.length > 0 || this.field !== '') this.finishRecord(out);
    return out;
  }

  private reset(): void {
    this.field = '';
    this.fields = [];
    this.inQuotes = false;
    this.closed = false;
    this.recordError = null;
    this.recordHasContent = false;
    this.recordLine = this.line;
  }

  private finishRecord(out: CsvRecord[]): void {
    this.fields.push(this.field);
    if (this.recordError) out.push({ line: this.recordLine, error: this.recordError });
    else if (this.recordHasContent) out.push({ line: this.recordLine, fields: this.fields });
    this.reset();
  }

  private step(ch: string, out: CsvRecord[]): void {
    if (this.crPending) {
      this.crPending = false;
      // Second half of a CRLF: the line was counted at the CR (and outside quotes the record ended there).
      if (ch === '\n') { if (this.inQuotes) this.field += ch; return; }
    }
    if (this.quotePending) {
      this.quotePending = false;
      if (ch === '"') { this.field += '"'; return; }
      this.inQuotes = false;
      this.closed = true;
    }
    if (this.inQuotes) {
      if (ch === '"') { this.quotePending = true; return; }
      if (ch === '\n') this.line += 1;
      else if (ch === '\r') { this.line += 1; this.crPending = true; }
      this.field += ch;
      return;
    }
    if (ch === this.delimiter) {
      this.fields.push(this.field);
      this.field = '';
      this.closed = false;
      this.recordHasContent = true;
      return;
    }
    if (ch === '\n' || ch === '\r') {
      this.line += 1;
      if (ch === '\r') this.crPending = true;
      this.finishRecord(out);
      return;
    }
    this.recordHasContent = true;
    if (ch === '"' && this.field === '' && !this.closed) { this.inQuotes = true; return; }
    if (this.closed) {
      this.recordError ??= `unexpected text after a closing quote in field ${this.fields.length + 1}`;
      return;
    }
    // A quote inside an unquoted field is not RFC 4180, but it is common and unambiguous: keep it.
    this.field += ch;
  }
}

/**
 * Streams a CSV file's records. A missing or unreadable file throws an error naming it.
 *
 * @example for await (const r of readCsvRecords('pairs.csv')) if ('fields' in r) console.log(r.line, r.fields);
 */
export async function* readCsvRecords(file: string, delimiter = ','): AsyncGenerator<CsvRecord> {
  const parser = new CsvParser(delimiter);
  const stream = createReadStream(file, { encoding: 'utf8', highWaterMark: 1 << 20 });
  let first = true;
  try {
    for await (const chunk of stream as AsyncIterable<string>) {
      const text = first ? chunk.replace(/^\uFEFF/, '') : chunk;
      first = false;
      yield* parser.push(text);
    }
  } catch (e) {
    throw new Error(`cannot read CSV ${file}: ${(e as Error).message}`);
  }
  yield* parser.end();
}

async function mustBeFile(file: string, what: string): Promise<string> {
  if (typeof file !== 'string' || file === '') throw new Error(`${what}: the file argument must be a path`);
  const abs = path.resolve(file);
  try {
    if (!(await stat(abs)).isFile()) throw new Error('not a regular file');
  } catch (e) {
    throw new Error(`${what}: cannot read ${abs}: ${(e as Error).message}`);
  }
  return abs;
}

/** Ids and folder names that go into file paths must be one plain path component. */
function plainName(s: string): boolean {
  return s !== '' && s !== '.' && s !== '..' && !/[/\\\0]/.test(s);
}

/**
 * Collects items keyed by id; a CSV with one caption per row gives one entry per video with all
 * its captions. The same id with a different video or window is an error on the later row.
 */
class EntryCollector {
  readonly entries: ManifestEntry[] = [];
  readonly errors: ItemError[] = [];
  private readonly byId = new Map<string, { entry: ManifestEntry; line?: number }>();

  constructor(private readonly source: string) {}

  error(reason: string, line?: number, id?: string): void {
    this.errors.push({ source: this.source, line, id, reason });
  }

  add(entry: ManifestEntry, line?: number): void {
    const prev = this.byId.get(entry.id);
    if (!prev) {
      this.byId.set(entry.id, { entry, line });
      this.entries.push(entry);
      return;
    }
    const p = prev.entry;
    if (p.video !== entry.video || p.start !== entry.start || p.end !== entry.end || p.split !== entry.split) {
      const where = prev.line !== undefined ? ` on line ${prev.line}` : '';
      this.error(`id "${entry.id}" was already used${where} for a different video, window or split`, line, entry.id);
      return;
    }
    for (const c of entry.captions) if (!p.captions.includes(c)) p.captions.push(c);
  }
}

/** Maps a header row to column indices, throwing (naming file and column) when one is missing. */
function columnIndex(header: string[], wanted: Record<string, string | undefined>, file: string, what: string): Record<string, number> {
  const trimmed = header.map((h) => h.trim());
  const out: Record<string, number> = {};
  for (const [key, name] of Object.entries(wanted)) {
    if (name === undefined) continue;
    const i = trimmed.indexOf(name);
    if (i < 0) throw new Error(`${what}: ${file} has no column "${name}" (for ${key}); its header is: ${trimmed.join(', ')}`);
    out[key] = i;
  }
  return out;
}

/** Iterates data rows (after the header) with their fields, reporting malformed rows and wrong field counts. */
async function* csvRows(file: string, delimiter: string, what: string, collector: EntryCollector):
  AsyncGenerator<{ header: string[] } | { line: number; fields: string[] }> {
  let header: string[] | null = null;
  for await (const rec of readCsvRecords(file, delimiter)) {
    if ('error' in rec) {
      if (!header) throw new Error(`${what}: ${file} line ${rec.line}: the header row is malformed: ${rec.error}`);
      collector.error(rec.error, rec.line);
      continue;
    }
    if (!header) {
      header = rec.fields;
      yield { header };
      continue;
    }
    if (rec.fields.length !== header.length) {
      collector.error(`expected ${header.length} fields as in the header, found ${rec.fields.length}`, rec.line);
      continue;
    }
    yield rec;
  }
  if (!header) throw new Error(`${what}: ${file} is empty (no header row)`);
}

async function exists(p: string): Promise<boolean> {
  try { await access(p); return true; } catch { return false; }
}

export interface MsrvttOptions {
  /** Folder holding `<video_id>.mp4` (e.g. `MSRVTT/videos/all`). */
  videoDir: string;
  /** Keep only videos of this split (`train`, `validate`, `test` in MSRVTT_data.json). */
  split?: string;
  allowOutsideRoot?: boolean;
}

/**
 * Reads MSR-VTT's `MSRVTT_data.json` (`{videos:[{video_id,split,category,...}], sentences:[{video_id,caption,sen_id}]}`):
 * one entry per video with its captions in `sen_id` order, `split` from the file and the
 * category as concept `category:<n>`. The `start time`/`end time` fields refer to the source
 * YouTube video, not to the distributed clips, so they are not used as a window.
 *
 * @example const m = await readMsrvtt('MSRVTT/annotation/MSRVTT_data.json', { videoDir: 'MSRVTT/videos/all', split: 'train' });
 */
export async function readMsrvtt(file: string, options: MsrvttOptions): Promise<Manifest> {
  const what = 'readMsrvtt';
  const source = await mustBeFile(file, what);
  if (!options || typeof options.videoDir !== 'string' || options.videoDir === '') {
    throw new Error(`${what}: options.videoDir must name the folder holding <video_id>.mp4`);
  }
  const root = path.resolve(options.videoDir);
  let data: unknown;
  try {
    data = JSON.parse(await readFile(source, 'utf8'));
  } catch (e) {
    throw new Error(`${what}: ${source} is not valid JSON: ${(e as Error).message}`);
  }
  const d = data as { videos?: unknown; sentences?: unknown };
  if (typeof d !== 'object' || d === null || !Array.isArray(d.videos) || !Array.isArray(d.sentences)) {
    throw new Error(`${what}: ${source} must hold an object with "videos" and "sentences" arrays (MSRVTT_data.json layout)`);
  }
  const col = new EntryCollector(source);
  const captions = new Map<string, { sen: number; caption: string }[]>();
  d.sentences.forEach((s: unknown, i: number) => {
    const o = s as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || typeof o.video_id !== 'string' || typeof o.caption !== 'string' || o.caption.trim() === '') {
      col.error(`sentences[${i}] needs a string video_id and a non-empty caption`);
      return;
    }
    const sen = typeof o.sen_id === 'number' ? o.sen_id : i;
    const list = captions.get(o.video_id) ?? [];
    list.push({ sen, caption: o.caption.trim() });
    captions.set(o.video_id, list);
  });
  const known = new Set<string>();
  d.videos.forEach((v: unknown, i: number) => {
    const o = v as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || typeof o.video_id !== 'string' || !plainName(o.video_id)) {
      col.error(`videos[${i}] needs a video_id that is a plain file name`);
      return;
    }
    const id = o.video_id;
    if (known.has(id)) { col.error(`videos[${i}]: duplicate video_id "${id}"`, undefined, id); return; }
    known.add(id);
    const caps = captions.get(id);
    if (!caps) { col.error(`videos[${i}]: video "${id}" has no sentences`, undefined, id); return; }
    if (options.split !== undefined && o.split !== options.split) return;
    const resolved = resolveInsideRoot(root, `${id}.mp4`, options.allowOutsideRoot ?? false);
    if ('reason' in resolved) { col.error(resolved.reason, undefined, id); return; }
    const entry: ManifestEntry = {
      id,
      video: resolved.path,
      captions: caps.sort((a, b) => a.sen - b.sen).map((c) => c.caption),
    };
    if (typeof o.split === 'string' && o.split !== '') entry.split = o.split;
    if (typeof o.category === 'number' || typeof o.category === 'string') entry.concepts = [`category:${o.category}`];
    col.add(entry);
  });
  for (const id of captions.keys()) {
    if (!known.has(id)) col.error(`sentences refer to video "${id}", which is not in "videos"`, undefined, id);
  }
  return { path: source, root, entries: col.entries, errors: col.errors };
}

/**
 * Reads the MSR-VTT 1k-A test list (`key,vid_key,video_id,sentence`, e.g. `MSRVTT_JSFUSION_test.csv`):
 * one entry per video with split `test`.
 *
 * @example const m = await readMsrvtt1kA('MSRVTT_JSFUSION_test.csv', { videoDir: 'MSRVTT/videos/all' });
 */
export async function readMsrvtt1kA(file: string, options: Omit<MsrvttOptions, 'split'>): Promise<Manifest> {
  const what = 'readMsrvtt1kA';
  const source = await mustBeFile(file, what);
  if (!options || typeof options.videoDir !== 'string' || options.videoDir === '') {
    throw new Error(`${what}: options.videoDir must name the folder holding <video_id>.mp4`);
  }
  const root = path.resolve(options.videoDir);
  const col = new EntryCollector(source);
  let idx: Record<string, number> = {};
  for await (const row of csvRows(source, ',', what, col)) {
    if ('header' in row) { idx = columnIndex(row.header, { video_id: 'video_id', sentence: 'sentence' }, source, what); continue; }
    const id = row.fields[idx.video_id].trim();
    const sentence = row.fields[idx.sentence].trim();
    if (!plainName(id)) { col.error(`video_id ${JSON.stringify(id)} is not a plain file name`, row.line); continue; }
    if (sentence === '') { col.error('empty sentence', row.line, id); continue; }
    const resolved = resolveInsideRoot(root, `${id}.mp4`, options.allowOutsideRoot ?? false);
    if ('reason' in resolved) { col.error(resolved.reason, row.line, id); continue; }
    col.add({ id, video: resolved.path, captions: [sentence], split: 'test' }, row.line);
  }
  return { path: source, root, entries: col.entries, errors: col.errors };
}

export interface MsrvttSplitOptions extends Omit<MsrvttOptions, 'split'> {
  /**
   * `9k-1kA` (default): train on the train and validate videos of MSRVTT_data.json less the 1k-A
   * test videos (9,000 with all 20 captions each), test on the 1k-A list. `full`: the JSON's own
   * train (6,513) and test (2,990) splits.
   */
  protocol?: '9k-1kA' | 'full';
  /** The 1k-A list; default `MSRVTT_JSFUSION_test.csv` beside the annotations file. */
  testCsv?: string;
}

/** MSR-VTT's training and test entries under a published protocol. */
export interface MsrvttSplits {
  train: ManifestEntry[];
  /**
   * Videos for model selection: the JSON's validate split under `full`; empty under `9k-1kA`,
   * whose training set already holds them (a caller holds out a slice of train instead).
   */
  val: ManifestEntry[];
  test: ManifestEntry[];
  /** The files read (the test list first). */
  sources: string[];
  errors: ItemError[];
}

/**
 * MSR-VTT's training and test sets as retrieval papers use them (CLIP4Clip, X-CLIP, TS2-Net):
 * the 9k training split and the 1k-A test by default.
 *
 * @example const s = await readMsrvttSplits('msrvtt_data/MSRVTT_data.json', { videoDir: 'MSRVTT/videos/all' }); s.train.length // 9000
 */
export async function readMsrvttSplits(annotations: string, options: MsrvttSplitOptions): Promise<MsrvttSplits> {
  const protocol = options.protocol ?? '9k-1kA';
  const { videoDir, allowOutsideRoot } = options;
  const all = await readMsrvtt(annotations, { videoDir, allowOutsideRoot });
  if (protocol === 'full') {
    return {
      train: all.entries.filter((e) => e.split === 'train'), val: all.entries.filter((e) => e.split === 'validate'),
      test: all.entries.filter((e) => e.split === 'test'),
      sources: [all.path], errors: all.errors,
    };
  }
  const csv = options.testCsv ?? path.join(path.dirname(path.resolve(annotations)), 'MSRVTT_JSFUSION_test.csv');
  if (!(await exists(csv))) {
    throw new Error(`MSR-VTT 9k/1k-A: the 1k-A test list ${csv} does not exist; give data.testCsv (MSRVTT_JSFUSION_test.csv), or data.protocol "full" for the JSON's own splits`);
  }
  const test = await readMsrvtt1kA(csv, { videoDir, allowOutsideRoot });
  const held = new Set(test.entries.map((e) => e.id));
  const train = all.entries.filter((e) => (e.split === 'train' || e.split === 'validate') && !held.has(e.id));
  return { train, val: [], test: test.entries, sources: [test.path, all.path], errors: [...all.errors, ...test.errors] };
}

export interface WebvidOptions {
  /** Folder holding `<page_dir>/<videoid>.mp4`. */
  videoDir: string;
  /** Split name to put on every entry (WebVid ships train and val as separate CSVs). */
  split?: string;
  /**
   * Keep only rows whose video file exists (one summary error counts the others). Useful because
   * a local WebVid copy usually holds a fraction of the CSV.
   */
  onlyExisting?: boolean;
  allowOutsideRoot?: boolean;
}

/**
 * Reads a WebVid CSV (`videoid,contentUrl,duration,page_dir,name`); videos are at
 * `<videoDir>/<page_dir>/<videoid>.mp4`, the caption is `name`.
 *
 * @example const m = await readWebvid('results_2M_val.csv', { videoDir: 'webvid/videos', split: 'val', onlyExisting: true });
 */
export async function readWebvid(file: string, options: WebvidOptions): Promise<Manifest> {
  const what = 'readWebvid';
  const source = await mustBeFile(file, what);
  if (!options || typeof options.videoDir !== 'string' || options.videoDir === '') {
    throw new Error(`${what}: options.videoDir must name the folder holding <page_dir>/<videoid>.mp4`);
  }
  const root = path.resolve(options.videoDir);
  const col = new EntryCollector(source);
  let idx: Record<string, number> = {};
  let missing = 0;
  for await (const row of csvRows(source, ',', what, col)) {
    if ('header' in row) { idx = columnIndex(row.header, { videoid: 'videoid', page_dir: 'page_dir', name: 'name' }, source, what); continue; }
    const id = row.fields[idx.videoid].trim();
    const pageDir = row.fields[idx.page_dir].trim();
    const caption = row.fields[idx.name].trim();
    if (!plainName(id)) { col.error(`videoid ${JSON.stringify(id)} is not a plain file name`, row.line); continue; }
    if (!plainName(pageDir)) { col.error(`page_dir ${JSON.stringify(pageDir)} is not a plain folder name`, row.line, id); continue; }
    if (caption === '') { col.error('empty caption (name)', row.line, id); continue; }
    const resolved = resolveInsideRoot(root, path.join(pageDir, `${id}.mp4`), options.allowOutsideRoot ?? false);
    if ('reason' in resolved) { col.error(resolved.reason, row.line, id); continue; }
    if (options.onlyExisting && !(await exists(resolved.path))) { missing += 1; continue; }
    const entry: ManifestEntry = { id, video: resolved.path, captions: [caption] };
    if (options.split !== undefined) entry.split = options.split;
    col.add(entry, row.line);
  }
  if (missing > 0) col.error(`${missing} rows skipped because their video file is not under ${root} (onlyExisting)`);
  return { path: source, root, entries: col.entries, errors: col.errors };
}

export interface CsvManifestOptions {
  idColumn?: string;
  videoColumn?: string;
  captionColumn?: string;
  startColumn?: string;
  endColumn?: string;
  splitColumn?: string;
  /** Column holding concepts joined by `conceptSeparator`. */
  conceptsColumn?: string;
  conceptSeparator?: string;
  delimiter?: string;
  /** Folder relative video paths resolve against (default: the CSV's folder). */
  root?: string;
  allowOutsideRoot?: boolean;
  /** Keep only rows with this split (needs `splitColumn`). */
  split?: string;
}

function parseSeconds(s: string): number | null {
  const t = s.trim();
  if (!/^\d+(\.\d+)?$/.test(t)) return null;
  return Number(t);
}

/**
 * Reads any CSV with a header row into a manifest. Columns default to `id`, `video`, `caption`;
 * rows sharing an id (and video) are merged into one entry with several captions.
 *
 * @example
 * const m = await readCsvManifest('pairs.csv', { idColumn: 'clip', videoColumn: 'file', captionColumn: 'text', splitColumn: 'split' });
 */
export async function readCsvManifest(file: string, options: CsvManifestOptions = {}): Promise<Manifest> {
  const what = 'readCsvManifest';
  const source = await mustBeFile(file, what);
  if (options.split !== undefined && options.splitColumn === undefined) {
    throw new Error(`${what}: options.split needs options.splitColumn to say which column holds the split`);
  }
  const root = path.resolve(options.root ?? path.dirname(source));
  const sep = options.conceptSeparator ?? '|';
  const col = new EntryCollector(source);
  let idx: Record<string, number> = {};
  for await (const row of csvRows(source, options.delimiter ?? ',', what, col)) {
    if ('header' in row) {
      idx = columnIndex(row.header, {
        id: options.idColumn ?? 'id',
        video: options.videoColumn ?? 'video',
        caption: options.captionColumn ?? 'caption',
        start: options.startColumn,
        end: options.endColumn,
        split: options.splitColumn,
        concepts: options.conceptsColumn,
      }, source, what);
      continue;
    }
    const f = row.fields;
    const id = f[idx.id].trim();
    const video = f[idx.video].trim();
    const caption = f[idx.caption].trim();
    if (id === '') { col.error('empty id', row.line); continue; }
    if (video === '') { col.error('empty video path', row.line, id); continue; }
    if (caption === '') { col.error('empty caption', row.line, id); continue; }
    const entry: ManifestEntry = { id, video, captions: [caption] };
    let bad = false;
    for (const k of ['start', 'end'] as const) {
      if (idx[k] === undefined || f[idx[k]].trim() === '') continue;
      const v = parseSeconds(f[idx[k]]);
      if (v === null) { col.error(`${k} ${JSON.stringify(f[idx[k]])} is not a number of seconds`, row.line, id); bad = true; break; }
      entry[k] = v;
    }
    if (bad) continue;
    if (entry.start !== undefined && entry.end !== undefined && entry.end <= entry.start) {
      col.error(`end (${entry.end}) must be after start (${entry.start})`, row.line, id);
      continue;
    }
    if (idx.split !== undefined && f[idx.split].trim() !== '') entry.split = f[idx.split].trim();
    if (options.split !== undefined && entry.split !== options.split) continue;
    if (idx.concepts !== undefined) {
      const concepts = f[idx.concepts].split(sep).map((c) => c.trim()).filter((c) => c !== '');
      if (concepts.length) entry.concepts = concepts;
    }
    const resolved = resolveInsideRoot(root, video, options.allowOutsideRoot ?? false);
    if ('reason' in resolved) { col.error(resolved.reason, row.line, id); continue; }
    entry.video = resolved.path;
    col.add(entry, row.line);
  }
  return { path: source, root, entries: col.entries, errors: col.errors };
}
