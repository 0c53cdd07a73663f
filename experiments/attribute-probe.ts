/**
 * What a pretrained model's embeddings encode on a synthetic corpus: for each test caption, the
 * top-1 video by cosine, and the share of those videos that have the caption's value of each
 * attribute (shape, colour, size, direction, speed). Chance is 1 / (values of the attribute).
 *
 * Reads the two files `vlmargin embed` writes (rows in manifest order, ids in the metadata) and
 * the manifest's `concepts`.
 *
 *   vlmargin embed video --model RUN --manifest M --split test --out v.safetensors
 *   vlmargin embed text  --model RUN --manifest M --split test --out t.safetensors
 *   node dist/experiments/attribute-probe.js --manifest M --videos v.safetensors --texts t.safetensors
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { readSafetensors } from '../src/train/safetensors.js';

interface Embeddings { ids: string[]; rows: Float32Array[] }

async function load(file: string): Promise<Embeddings> {
  const f = await readSafetensors(file);
  const t = f.tensors.get('embeddings');
  if (!t || t.shape.length !== 2) throw new Error(`${file}: expected a 2-D tensor 'embeddings' (written by vlmargin embed)`);
  const ids = JSON.parse(f.metadata.ids ?? 'null') as string[] | null;
  if (!Array.isArray(ids) || ids.length !== t.shape[0]) throw new Error(`${file}: metadata 'ids' must list one id per row`);
  const [n, d] = t.shape;
  const data = Float32Array.from(t.data as ArrayLike<number>);
  return { ids, rows: Array.from({ length: n }, (_, i) => data.subarray(i * d, (i + 1) * d)) };
}

function attributesOf(concepts: string[]): Map<string, string> {
  return new Map(concepts.map((c) => c.split(':') as [string, string]));
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { manifest: { type: 'string' }, videos: { type: 'string' }, texts: { type: 'string' } } });
  if (!values.manifest || !values.videos || !values.texts) throw new Error('usage: --manifest M --videos V.safetensors --texts T.safetensors');
  const concepts = new Map<string, Map<string, string>>();
  for (const line of (await readFile(values.manifest, 'utf8')).split('\n')) {
    if (!line.trim()) continue;
    const e = JSON.parse(line) as { id: string; concepts?: string[] };
    if (e.concepts) concepts.set(e.id, attributesOf(e.concepts));
  }
  const videos = await load(values.videos);
  const texts = await load(values.texts);
  const hits = new Map<string, number>();
  const values_ = new Map<string, Set<string>>();
  for (const a of concepts.values()) for (const [k, v] of a) (values_.get(k) ?? values_.set(k, new Set()).get(k)!).add(v);
  let exact = 0;
  texts.rows.forEach((q, i) => {
    let best = -1; let bestScore = -Infinity;
    videos.rows.forEach((v, j) => {
      let s = 0;
      for (let k = 0; k < q.length; k++) s += q[k] * v[k];
      if (s > bestScore) { bestScore = s; best = j; }
    });
    const want = concepts.get(texts.ids[i]);
    const got = concepts.get(videos.ids[best]);
    if (!want || !got) throw new Error(`no concepts in ${values.manifest} for ${texts.ids[i]} or ${videos.ids[best]}`);
    if (texts.ids[i] === videos.ids[best]) exact++;
    for (const [k, v] of want) if (got.get(k) === v) hits.set(k, (hits.get(k) ?? 0) + 1);
  });
  const n = texts.rows.length;
  console.log(`${n} captions against ${videos.rows.length} videos; top-1 is the caption's own video for ${(100 * exact / n).toFixed(1)} %`);
  console.log('| attribute | top-1 video has the caption\'s value | chance |');
  console.log('| --- | --- | --- |');
  for (const [k, set] of values_) console.log(`| ${k} | ${(100 * (hits.get(k) ?? 0) / n).toFixed(1)} % | ${(100 / set.size).toFixed(0)} % |`);
}

main().catch((err: unknown) => { console.error(err instanceof Error ? err.message : err); process.exit(1); });
