/**
 * An on-disk cache of evaluation embeddings, so a checkpoint's test set is encoded once.
 *
 * One entry is two files named by a key (the SHA-256 of what decides the embeddings: the
 * checkpoint's weights digest and step, the manifest path and mtime, the split, frame and
 * token settings): `<key>.json` (ids, counts, width, the key's parts) and `<key>.f32`
 * (little-endian float32: video rows, then caption rows). The `.f32` is renamed into place
 * before the `.json`, so a `.json` is only ever beside a complete `.f32`.
 */
import { writeFileAtomic } from '../util/atomicWrite.js';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';

export interface CachedEmbeddings {
  /** Embedding width. */
  d: number;
  /** Video ids, one per row of `videoEmb`. */
  videoIds: string[];
  /** [videos × d], L2-normalised. */
  videoEmb: Float32Array;
  /** Caption i belongs to video row `queryToVideo[i]`. */
  queryToVideo: Int32Array;
  /** [captions × d], L2-normalised. */
  textEmb: Float32Array;
}

interface Header {
  format: string;
  version: number;
  key: string;
  parts: unknown;
  d: number;
  videoIds: string[];
  queryToVideo: number[];
  bytes: number;
}

const FORMAT = 'vlmargin-embeddings';
const VERSION = 1;

/**
 * The key of an entry: SHA-256 (hex) of the JSON of `parts` with keys sorted, so the same
 * settings in any order give the same key.
 * @example embeddingCacheKey({ checkpointSha: 'ab…', step: 24, manifest: '/d/m.jsonl', mtimeMs: 1 }) // '3f0c…' (64 hex)
 */
export function embeddingCacheKey(parts: Record<string, unknown>): string {
  if (!parts || typeof parts !== 'object' || Array.isArray(parts)) throw new Error('embeddingCacheKey: parts must be an object');
  const sorted = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sorted);
    if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted((v as Record<string, unknown>)[k])]));
    return v;
  };
  return createHash('sha256').update(JSON.stringify(sorted(parts))).digest('hex');
}

function checkKey(key: string): void {
  if (typeof key !== 'string' || !/^[0-9a-f]{16,128}$/.test(key)) throw new Error(`embedding cache: key must be a hex digest, got ${JSON.stringify(key)}`);
}

const writeSynced = (file: string, data: Uint8Array | string): Promise<void> => writeFileAtomic(file, data, { sync: true });

/**
 * Reads an entry, or null when there is none. A damaged entry (unreadable header, wrong
 * size) is deleted and reported as absent, so the caller re-encodes instead of failing.
 * @example const hit = await readEmbeddingCache('runs/a/checkpoints/step-000100/embeddings', key);
 */
export async function readEmbeddingCache(dir: string, key: string): Promise<CachedEmbeddings | null> {
  if (typeof dir !== 'string' || !dir) throw new Error('readEmbeddingCache: dir must be a folder path');
  checkKey(key);
  const jsonFile = path.join(dir, `${key}.json`);
  const binFile = path.join(dir, `${key}.f32`);
  let header: Header;
  try {
    header = JSON.parse(await readFile(jsonFile, 'utf8')) as Header;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    await rm(jsonFile, { force: true });
    return null;
  }
  let bytes: Buffer;
  try {
    bytes = await readFile(binFile);
  } catch {
    await rm(jsonFile, { force: true });
    return null;
  }
  const nv = Array.isArray(header.videoIds) ? header.videoIds.length : -1;
  const nq = Array.isArray(header.queryToVideo) ? header.queryToVideo.length : -1;
  const ok = header.format === FORMAT && header.version === VERSION && header.key === key && Number.isInteger(header.d) && header.d > 0
    && nv > 0 && nq > 0 && bytes.length === (nv + nq) * header.d * 4 && header.bytes === bytes.length;
  if (!ok) {
    await rm(jsonFile, { force: true });
    await rm(binFile, { force: true });
    return null;
  }
  // Copy into an aligned buffer: a Buffer from readFile may sit at an odd offset of a shared pool.
  const all = new Float32Array(bytes.length / 4);
  new Uint8Array(all.buffer).set(bytes);
  return {
    d: header.d,
    videoIds: header.videoIds,
    videoEmb: all.subarray(0, nv * header.d),
    queryToVideo: Int32Array.from(header.queryToVideo),
    textEmb: all.subarray(nv * header.d),
  };
}

/**
 * Writes an entry (atomically, see the module comment) and returns the header's path.
 * @example await writeEmbeddingCache(dir, key, { checkpointSha, step }, { d, videoIds, videoEmb, queryToVideo, textEmb });
 */
export async function writeEmbeddingCache(dir: string, key: string, parts: unknown, e: CachedEmbeddings): Promise<string> {
  if (typeof dir !== 'string' || !dir) throw new Error('writeEmbeddingCache: dir must be a folder path');
  checkKey(key);
  const nv = e.videoIds.length;
  const nq = e.queryToVideo.length;
  if (!(Number.isInteger(e.d) && e.d > 0)) throw new Error(`writeEmbeddingCache: d must be a positive integer, got ${e.d}`);
  if (e.videoEmb.length !== nv * e.d) throw new Error(`writeEmbeddingCache: videoEmb has ${e.videoEmb.length} values, expected ${nv} videos × ${e.d}`);
  if (e.textEmb.length !== nq * e.d) throw new Error(`writeEmbeddingCache: textEmb has ${e.textEmb.length} values, expected ${nq} captions × ${e.d}`);
  await mkdir(dir, { recursive: true });
  const bin = new Uint8Array((nv + nq) * e.d * 4);
  const view = new Float32Array(bin.buffer);
  view.set(e.videoEmb, 0);
  view.set(e.textEmb, nv * e.d);
  await writeSynced(path.join(dir, `${key}.f32`), bin);
  const header: Header = {
    format: FORMAT, version: VERSION, key, parts, d: e.d, videoIds: e.videoIds, queryToVideo: Array.from(e.queryToVideo), bytes: bin.length,
  };
  const jsonFile = path.join(dir, `${key}.json`);
  await writeSynced(jsonFile, `${JSON.stringify(header)}\n`);
  return jsonFile;
}
