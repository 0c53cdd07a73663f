/**
 * What a pretrained model's embeddings encode on a synthetic corpus (src/eval/attributeProbe.ts):
 * for each test caption its top-1 video, and the share of those videos that have the caption's
 * shape, colour, size, direction and speed. Reads the two files `vlmargin embed` writes (rows in
 * manifest order, ids in the metadata) and the manifest's `concepts`.
 *
 *   vlmargin embed video --model RUN --manifest M --split test --out v.safetensors
 *   vlmargin embed text  --model RUN --manifest M --split test --out t.safetensors
 *   node dist/experiments/attribute-probe.js --manifest M --videos v.safetensors --texts t.safetensors
 */
import { parseArgs } from 'node:util';
import { readManifest } from '../src/data/manifest.js';
import { attributeAgreement, conceptMap } from '../src/eval/attributeProbe.js';
import { readSafetensors } from '../src/train/safetensors.js';

async function load(file: string): Promise<{ ids: string[]; rows: Float32Array[] }> {
  const f = await readSafetensors(file);
  const t = f.tensors.get('embeddings');
  if (!t || t.shape.length !== 2) throw new Error(`${file}: expected a 2-D tensor 'embeddings' (as vlmargin embed writes)`);
  const ids = JSON.parse(f.metadata.ids ?? 'null') as unknown;
  if (!Array.isArray(ids) || ids.length !== t.shape[0]) throw new Error(`${file}: metadata 'ids' must list one id per row`);
  const [n, d] = t.shape;
  const data = Float32Array.from(t.data as ArrayLike<number>);
  return { ids: ids as string[], rows: Array.from({ length: n }, (_, i) => data.subarray(i * d, (i + 1) * d)) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { manifest: { type: 'string' }, videos: { type: 'string' }, texts: { type: 'string' } } });
  if (!values.manifest || !values.videos || !values.texts) throw new Error('usage: --manifest M.jsonl --videos V.safetensors --texts T.safetensors');
  const concepts = new Map<string, Map<string, string>>();
  for (const e of (await readManifest(values.manifest)).entries) {
    if (e.concepts) concepts.set(e.id, conceptMap(e.concepts, `${values.manifest} entry '${e.id}'`));
  }
  const videos = await load(values.videos);
  const texts = await load(values.texts);
  const r = attributeAgreement(texts.rows, texts.ids, videos.rows, videos.ids, concepts);
  console.log(`${r.captions} captions against ${videos.rows.length} videos; top-1 is the caption's own video for ${(100 * r.exact).toFixed(1)} %`);
  console.log('| attribute | top-1 video has the caption\'s value | chance |');
  console.log('| --- | --- | --- |');
  for (const a of r.attributes) console.log(`| ${a.name} | ${(100 * a.agreement).toFixed(1)} % | ${(100 * a.chance).toFixed(0)} % |`);
}

main().catch((err: unknown) => { console.error(err instanceof Error ? err.message : err); process.exit(1); });
