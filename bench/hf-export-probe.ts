/**
 * vlmargin's side of the Hugging Face export parity check: reads an export folder the way
 * vlmargin does, embeds seeded images and captions, and writes inputs.safetensors and
 * expected.safetensors for tools/reference/check_hf_export.py to compare with CLIPModel.
 *
 *   node dist/bench/hf-export-probe.js --export DIR --out PROBE_DIR [--n 4] [--seed 1]
 *   python3 tools/reference/check_hf_export.py DIR --inputs PROBE_DIR/inputs.safetensors --expected PROBE_DIR/expected.safetensors
 *
 * Images are one-frame videos. CLIPModel has no temporal transformer, so for a model with one
 * the probe embeds without it (mean pooling of one frame), which is what transformers computes.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { initBackend } from '../src/backend/init.js';
import { tf } from '../src/backend/tf.js';
import { encodeText, encodeVideo } from '../src/nn/dualEncoder.js';
import { loadTokenizer } from '../src/text/tokenizer.js';
import { loadModel, readModelInfo } from '../src/train/checkpointInfo.js';
import { writeSafetensors } from '../src/train/safetensors.js';
import { mulberry32 } from '../src/util/rng.js';
import { normalizeFrames } from '../src/video/transforms.js';

const CAPTIONS = ['a man is walking a dog in the park', 'two people dance on a stage at night', 'a red car', 'the chef is cooking some pasta in a kitchen while people watch and a cat sleeps'];

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { export: { type: 'string' }, out: { type: 'string' }, n: { type: 'string', default: '4' }, seed: { type: 'string', default: '1' } } });
  if (!values.export || !values.out) throw new Error('usage: hf-export-probe --export DIR --out PROBE_DIR [--n 4] [--seed 1]');
  const n = Number(values.n);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--n: expected a positive integer, got '${values.n}'`);
  await initBackend({ prefer: 'cpu' });
  const info = await readModelInfo(values.export);
  if (info.kind !== 'clip') throw new Error(`${info.dir} is a vlmargin checkpoint; give the folder \`vlmargin export hf\` wrote`);
  let cfg = info.model;
  const store = await loadModel(info, 0);
  const params = store.snapshot();
  if (cfg.temporal.pooling === 'transformer') {
    console.error('the model has a temporal transformer, which CLIPModel lacks: embedding single images without it');
    cfg = { ...cfg, temporal: { ...cfg.temporal, pooling: 'mean' } };
  }
  const s = cfg.vision.imageSize;
  const L = cfg.text.contextLength;
  const rng = mulberry32(Number(values.seed));
  const pixels = Uint8Array.from({ length: n * s * s * 3 }, () => Math.floor(rng() * 256));
  const frames = normalizeFrames(pixels, info.preprocess); // [N, S, S, 3]
  const pixelValues = new Float32Array(frames.length); // [N, 3, S, S]
  for (let b = 0; b < n; b++) for (let y = 0; y < s; y++) for (let x = 0; x < s; x++) for (let c = 0; c < 3; c++) {
    pixelValues[((b * 3 + c) * s + y) * s + x] = frames[((b * s + y) * s + x) * 3 + c];
  }
  const captions = Array.from({ length: n }, (_, i) => CAPTIONS[i % CAPTIONS.length]);
  const tok = await loadTokenizer(info.tokenizerDir);
  const enc = tok.encode(captions, L);
  const [image, text] = tf.tidy(() => [
    encodeVideo(params, tf.tensor(frames, [n, 1, s, s, 3]), cfg),
    encodeText(params, tf.tensor2d(enc.ids, enc.shape, 'int32'), tf.tensor2d(enc.mask, enc.shape, 'int32'), cfg),
  ]);
  const out = path.resolve(values.out);
  await mkdir(out, { recursive: true });
  await writeSafetensors(path.join(out, 'inputs.safetensors'), {
    pixel_values: { dtype: 'F32', shape: [n, 3, s, s], data: pixelValues },
    frames: { dtype: 'F32', shape: [n, 1, s, s, 3], data: frames },
    input_ids: { dtype: 'I32', shape: enc.shape, data: enc.ids },
    attention_mask: { dtype: 'I32', shape: enc.shape, data: enc.mask },
  }, { captions: JSON.stringify(captions) });
  await writeSafetensors(path.join(out, 'expected.safetensors'), { image_embeds: image, text_embeds: text });
  tf.dispose([image, text]);
  store.dispose();
  console.log(`wrote ${path.join(out, 'inputs.safetensors')} and expected.safetensors: ${n} images of ${s}px, ${n} captions of ${L} tokens, embeddings [${n}, ${cfg.embedDim}]`);
}

main().catch((e: unknown) => { console.error(`hf-export-probe: ${(e as Error).message}`); process.exit(1); });
