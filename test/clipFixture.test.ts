import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tf } from '../src/backend/tf.js';
import { mapClipWeights } from '../src/nn/clipMapping.js';
import { validateConfig, type DualEncoderConfig } from '../src/nn/configs.js';
import { encodeText, encodeVideo } from '../src/nn/dualEncoder.js';
import { readSafetensors } from '../src/train/safetensors.js';

// dist/test/ → the repository root.
const DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'test', 'fixtures', 'clip-tiny');

interface HfClipConfig {
  projection_dim: number; logit_scale_init_value: number;
  vision_config: { image_size: number; patch_size: number; hidden_size: number; num_hidden_layers: number; num_attention_heads: number; intermediate_size: number; hidden_act: string; layer_norm_eps: number };
  text_config: { vocab_size: number; max_position_embeddings: number; hidden_size: number; num_hidden_layers: number; num_attention_heads: number; intermediate_size: number };
}

/** HF CLIPConfig → our config, field by field (what a CLIP loader does). */
function configFromHf(hf: HfClipConfig): DualEncoderConfig {
  const v = hf.vision_config;
  const t = hf.text_config;
  const activation = ({ quick_gelu: 'quickGelu', gelu: 'gelu' } as Record<string, 'quickGelu' | 'gelu'>)[v.hidden_act];
  return validateConfig({
    name: 'clip-tiny',
    vision: { imageSize: v.image_size, patchSize: v.patch_size, width: v.hidden_size, layers: v.num_hidden_layers, heads: v.num_attention_heads, mlpRatio: v.intermediate_size / v.hidden_size },
    text: { vocabSize: t.vocab_size, contextLength: t.max_position_embeddings, width: t.hidden_size, layers: t.num_hidden_layers, heads: t.num_attention_heads, mlpRatio: t.intermediate_size / t.hidden_size, causal: true, pooling: 'eos' },
    temporal: { pooling: 'mean', maxFrames: 1, layers: 0, heads: 1 },
    embedDim: hf.projection_dim, activation, layerNormEps: v.layer_norm_eps, logitScaleInit: hf.logit_scale_init_value,
  }, 'test/fixtures/clip-tiny/config.json');
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('nn: Hugging Face CLIP parity (test/fixtures/clip-tiny, made by tools/reference/make_clip_fixture.py)', () => {
  it('the mapped weights reproduce CLIPModel image and text embeddings within 1e-4', async () => {
    const cfg = configFromHf(JSON.parse(readFileSync(path.join(DIR, 'config.json'), 'utf8')) as HfClipConfig);
    const weights = (await readSafetensors(path.join(DIR, 'model.safetensors'))).tensors;
    const inputs = (await readSafetensors(path.join(DIR, 'inputs.safetensors'))).tensors;
    const expected = (await readSafetensors(path.join(DIR, 'expected.safetensors'))).tensors;
    const mapped = mapClipWeights(weights, cfg, 'test/fixtures/clip-tiny/model.safetensors');
    const params = Object.fromEntries(Object.entries(mapped).map(([k, v]) => [k, tf.tensor(v.data, v.shape)]));
    const input = (name: string, dtype?: 'int32') => tf.tensor(inputs.get(name)!.data as Float32Array | Int32Array, inputs.get(name)!.shape, dtype);
    const before = tf.memory().numTensors;
    const [image, text] = tf.tidy(() => [
      encodeVideo(params, input('frames'), cfg).dataSync(),
      encodeText(params, input('input_ids', 'int32'), input('attention_mask', 'int32'), cfg).dataSync(),
    ]);
    assert.equal(tf.memory().numTensors, before);
    tf.dispose(Object.values(params));
    const wantImage = expected.get('image_embeds')!.data as Float32Array;
    const wantText = expected.get('text_embeds')!.data as Float32Array;
    // The embeddings are O(1) (|max| ≈ 2.4 and 2.9): 1e-4 absolute is the tolerance.
    assert.ok(maxAbsDiff(image, wantImage) < 1e-4, `image embeddings differ by ${maxAbsDiff(image, wantImage)}`);
    assert.ok(maxAbsDiff(text, wantText) < 1e-4, `text embeddings differ by ${maxAbsDiff(text, wantText)}`);
  });
});
