import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tf } from '../src/backend/tf.js';
import { readSafetensors, writeSafetensors, type SafetensorsTensor } from '../src/train/safetensors.js';
import { getConfig, type DualEncoderConfig } from '../src/nn/configs.js';
import { clipTensorShapes, clipUncoveredParams, mapClipWeights } from '../src/nn/clipMapping.js';
import { encodeText, encodeVideo, initDualEncoder, projectVideo } from '../src/nn/dualEncoder.js';
import { patchEmbed } from '../src/nn/layers.js';
import { attentionBias } from '../src/nn/attention.js';
import { transformerBlock } from '../src/nn/transformer.js';
import type { Params } from '../src/nn/params.js';
import { relErr, seededUniform } from './helpers/fd.js';
import { scoped } from './helpers/read.js';

const W = 32; const LAYERS = 2; const P = 8; const IMG = 32; const VOCAB = 1000; const CTX = 16; const E = 16; const HEADS = 2;

const cfg: DualEncoderConfig = getConfig('tiny', {
  name: 'clip-tiny',
  vision: { imageSize: IMG, patchSize: P, width: W, layers: LAYERS, heads: HEADS },
  text: { vocabSize: VOCAB, contextLength: CTX, width: W, layers: LAYERS, heads: HEADS },
  embedDim: E,
  activation: 'quickGelu',
});

/** The Hugging Face CLIPModel names and shapes for this size, written out from the HF layout. */
function hfShapes(): Record<string, number[]> {
  const s: Record<string, number[]> = {
    'vision_model.embeddings.class_embedding': [W],
    'vision_model.embeddings.patch_embedding.weight': [W, 3, P, P],
    'vision_model.embeddings.position_embedding.weight': [(IMG / P) ** 2 + 1, W],
    'vision_model.pre_layrnorm.weight': [W], 'vision_model.pre_layrnorm.bias': [W],
    'vision_model.post_layernorm.weight': [W], 'vision_model.post_layernorm.bias': [W],
    'visual_projection.weight': [E, W],
    'text_model.embeddings.token_embedding.weight': [VOCAB, W],
    'text_model.embeddings.position_embedding.weight': [CTX, W],
    'text_model.final_layer_norm.weight': [W], 'text_model.final_layer_norm.bias': [W],
    'text_projection.weight': [E, W],
    logit_scale: [],
  };
  for (const tower of ['vision_model', 'text_model']) {
    for (let i = 0; i < LAYERS; i++) {
      const l = `${tower}.encoder.layers.${i}`;
      for (const proj of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
        s[`${l}.self_attn.${proj}.weight`] = [W, W];
        s[`${l}.self_attn.${proj}.bias`] = [W];
      }
      for (const ln of ['layer_norm1', 'layer_norm2']) { s[`${l}.${ln}.weight`] = [W]; s[`${l}.${ln}.bias`] = [W]; }
      s[`${l}.mlp.fc1.weight`] = [4 * W, W]; s[`${l}.mlp.fc1.bias`] = [4 * W];
      s[`${l}.mlp.fc2.weight`] = [W, 4 * W]; s[`${l}.mlp.fc2.bias`] = [W];
    }
  }
  return s;
}

function hfTensors(): Record<string, SafetensorsTensor> {
  const out: Record<string, SafetensorsTensor> = {};
  let seed = 1;
  for (const [name, shape] of Object.entries(hfShapes())) {
    const n = shape.reduce((a, b) => a * b, 1);
    const isNorm = /layer_?norm|layrnorm/.test(name);
    const data = seededUniform(n, seed++, -0.5, 0.5);
    if (isNorm && name.endsWith('.weight')) for (let i = 0; i < n; i++) data[i] += 1;
    out[name] = { dtype: 'F32', shape, data };
  }
  out.logit_scale.data[0] = Math.log(100);
  return out;
}

// ---- float64 references over the Hugging Face layout ([out, in] linears, NCHW conv) ----

type Get = (name: string) => Float32Array;

function hfLinear(x: number[], w: Float32Array, b: Float32Array | null, dout: number): number[] {
  const din = x.length;
  return Array.from({ length: dout }, (_, o) => {
    let s = b ? b[o] : 0;
    for (let i = 0; i < din; i++) s += w[o * din + i] * x[i];
    return s;
  });
}

function ln(x: number[], g: Float32Array, b: Float32Array): number[] {
  const mu = x.reduce((a, v) => a + v, 0) / x.length;
  const va = x.reduce((a, v) => a + (v - mu) ** 2, 0) / x.length;
  return x.map((v, i) => (v - mu) / Math.sqrt(va + 1e-5) * g[i] + b[i]);
}

/** HF CLIPEncoderLayer: q scaled by dₕ^−½, heads as contiguous slices of q/k/v, quick GELU. */
function hfLayer(xs: number[][], get: Get, l: string, causal: boolean): number[][] {
  const dh = W / HEADS;
  const h = xs.map((x) => ln(x, get(`${l}.layer_norm1.weight`), get(`${l}.layer_norm1.bias`)));
  const proj = (n: string) => h.map((x) => hfLinear(x, get(`${l}.self_attn.${n}.weight`), get(`${l}.self_attn.${n}.bias`), W));
  const q = proj('q_proj').map((r) => r.map((v) => v / Math.sqrt(dh)));
  const k = proj('k_proj'); const v = proj('v_proj');
  const ctx = xs.map(() => new Array<number>(W).fill(0));
  for (let hd = 0; hd < HEADS; hd++) {
    for (let i = 0; i < xs.length; i++) {
      const js = xs.map((_, j) => j).filter((j) => !causal || j <= i);
      const sc = js.map((j) => { let s = 0; for (let c = 0; c < dh; c++) s += q[i][hd * dh + c] * k[j][hd * dh + c]; return s; });
      const m = Math.max(...sc); const e = sc.map((s) => Math.exp(s - m)); const z = e.reduce((a, b) => a + b, 0);
      js.forEach((j, n) => { for (let c = 0; c < dh; c++) ctx[i][hd * dh + c] += e[n] / z * v[j][hd * dh + c]; });
    }
  }
  const r1 = xs.map((x, i) => hfLinear(ctx[i], get(`${l}.self_attn.out_proj.weight`), get(`${l}.self_attn.out_proj.bias`), W).map((a, c) => a + x[c]));
  return r1.map((x) => {
    const y = ln(x, get(`${l}.layer_norm2.weight`), get(`${l}.layer_norm2.bias`));
    const f1 = hfLinear(y, get(`${l}.mlp.fc1.weight`), get(`${l}.mlp.fc1.bias`), 4 * W).map((a) => a / (1 + Math.exp(-1.702 * a)));
    return hfLinear(f1, get(`${l}.mlp.fc2.weight`), get(`${l}.mlp.fc2.bias`), W).map((a, c) => a + x[c]);
  });
}

/** Conv2d with stride = kernel = P over an NHWC image, as PyTorch's patch embedding (no bias). */
function hfPatchEmbed(img: Float32Array, get: Get): number[][] {
  const w = get('vision_model.embeddings.patch_embedding.weight');
  const g = IMG / P; const out: number[][] = [];
  for (let gy = 0; gy < g; gy++) for (let gx = 0; gx < g; gx++) {
    out.push(Array.from({ length: W }, (_, o) => {
      let s = 0;
      for (let c = 0; c < 3; c++) for (let ky = 0; ky < P; ky++) for (let kx = 0; kx < P; kx++) {
        s += w[((o * 3 + c) * P + ky) * P + kx] * img[((gy * P + ky) * IMG + gx * P + kx) * 3 + c];
      }
      return s;
    }));
  }
  return out;
}

function hfVision(img: Float32Array, get: Get): number[] {
  const pos = get('vision_model.embeddings.position_embedding.weight');
  let xs = [Array.from(get('vision_model.embeddings.class_embedding')), ...hfPatchEmbed(img, get)].map((r, t) => r.map((v, c) => v + pos[t * W + c]));
  xs = xs.map((x) => ln(x, get('vision_model.pre_layrnorm.weight'), get('vision_model.pre_layrnorm.bias')));
  for (let i = 0; i < LAYERS; i++) xs = hfLayer(xs, get, `vision_model.encoder.layers.${i}`, false);
  const cls = ln(xs[0], get('vision_model.post_layernorm.weight'), get('vision_model.post_layernorm.bias'));
  return hfLinear(cls, get('visual_projection.weight'), null, E);
}

/** HF CLIPTextModel with the EOS token at index `eos` (the last real token). */
function hfText(ids: number[], eos: number, get: Get): number[] {
  const tok = get('text_model.embeddings.token_embedding.weight'); const pos = get('text_model.embeddings.position_embedding.weight');
  let xs = ids.map((id, t) => Array.from({ length: W }, (_, c) => tok[id * W + c] + pos[t * W + c]));
  for (let i = 0; i < LAYERS; i++) xs = hfLayer(xs, get, `text_model.encoder.layers.${i}`, true);
  const h = ln(xs[eos], get('text_model.final_layer_norm.weight'), get('text_model.final_layer_norm.bias'));
  return hfLinear(h, get('text_projection.weight'), null, E);
}

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  const e = relErr(a, b);
  assert.ok(e < tol, `${what}: relative error ${e} ≥ ${tol}`);
}

describe('nn: CLIP weight mapping', () => {
  let dir: string;
  let source: Map<string, SafetensorsTensor>;
  let get: Get;
  let mapped: ReturnType<typeof mapClipWeights>;
  let params: Params;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'vlm-clip-'));
    const file = path.join(dir, 'model.safetensors');
    // Older checkpoints carry int64 position_ids buffers; the mapping must skip them.
    await writeSafetensors(file, {
      ...hfTensors(),
      'text_model.embeddings.position_ids': { dtype: 'I64', shape: [1, CTX], data: BigInt64Array.from({ length: CTX }, (_, i) => BigInt(i)) },
    });
    source = (await readSafetensors(file)).tensors;
    get = (n) => {
      const t = source.get(n);
      if (!t) throw new Error(`test: no ${n}`);
      return t.data as Float32Array;
    };
    mapped = mapClipWeights(source, cfg, file);
    params = Object.fromEntries(Object.entries(mapped).map(([k, v]) => [k, tf.tensor(v.data, v.shape)]));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
    tf.dispose(Object.values(params));
  });

  it('covers every parameter of the model (and only the temporal transformer is left when it is on)', async () => {
    const store = initDualEncoder(cfg, 0);
    assert.deepEqual(Object.keys(mapped).sort(), store.names().sort());
    store.assign(mapped, { requireAll: true });
    assert.equal((await store.get('logit_scale').data())[0], Math.fround(Math.log(100)));
    store.dispose();
    const withTemporal = getConfig('tiny', { ...cfg, temporal: { pooling: 'transformer', maxFrames: 4, layers: 1, heads: 2 } });
    const uncovered = clipUncoveredParams(withTemporal);
    assert.ok(uncovered.length > 0 && uncovered.every((n) => n.startsWith('video.temporal.')));
    const all = initDualEncoder(withTemporal, 0);
    assert.deepEqual([...Object.keys(mapClipWeights(source, withTemporal)), ...uncovered].sort(), all.names().sort());
    all.dispose();
    assert.deepEqual(clipTensorShapes(cfg), hfShapes());
  });

  it('patch embedding: our reshape + matmul equals a direct convolution loop over the HF conv weight', () => scoped(async () => {
    const img = seededUniform(IMG * IMG * 3, 501, -2, 2);
    const ours = patchEmbed(params, 'video.patch_embed', tf.tensor4d(img, [1, IMG, IMG, 3]), P);
    close(await ours.data(), hfPatchEmbed(img, get).flat(), 1e-5, 'patch embedding');
  }));

  it('one encoder layer (q/k/v split, transposes, quick GELU) equals the HF layer computed by loops, on 2 tokens', () => scoped(async () => {
    const x = seededUniform(2 * W, 502, -1, 1);
    const rows = [Array.from(x.slice(0, W)), Array.from(x.slice(W))];
    const opts = { heads: HEADS, activation: 'quickGelu' as const, eps: 1e-5 };
    const v = transformerBlock(params, 'video.blocks.1', tf.tensor3d(x, [1, 2, W]), opts);
    close(await v.data(), hfLayer(rows, get, 'vision_model.encoder.layers.1', false).flat(), 1e-4, 'vision layer 1');
    const t = transformerBlock(params, 'text.blocks.0', tf.tensor3d(x, [1, 2, W]), opts, attentionBias(1, 2, { causal: true }));
    close(await t.data(), hfLayer(rows, get, 'text_model.encoder.layers.0', true).flat(), 1e-4, 'text layer 0 (causal)');
    const f = seededUniform(W, 503);
    close(await projectVideo(params, tf.tensor2d(f, [1, W])).data(), hfLinear(Array.from(f), get('visual_projection.weight'), null, E), 1e-5, 'visual projection');
  }));

  it('whole encoders equal HF CLIP computed by loops (one-frame video; text with and without padding)', () => scoped(async () => {
    const img = seededUniform(IMG * IMG * 3, 504, -2, 2);
    const v = encodeVideo(params, tf.tensor(img, [1, 1, IMG, IMG, 3]), cfg);
    close(await v.data(), hfVision(img, get), 1e-4, 'vision tower');
    const rowA = [49, 320, 7, 999]; const rowB = [12, 5, 871, 640, 3, 998];
    const ids = tf.tensor2d([[...rowA, 0, 0], rowB], undefined, 'int32');
    const mask = tf.tensor2d([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]);
    const t = encodeText(params, ids, mask, cfg);
    close(await t.data(), [...hfText(rowA, 3, get), ...hfText(rowB, 5, get)], 1e-4, 'text tower');
  }));

  it('names every missing, unexpected, mis-shaped and half-precision tensor in one error', () => {
    const bad = new Map(source);
    bad.delete('text_model.encoder.layers.1.mlp.fc2.bias');
    bad.set('text_model.encoder.layers.2.mlp.fc2.bias', { dtype: 'F32', shape: [W], data: new Float32Array(W) });
    bad.set('visual_projection.weight', { dtype: 'F32', shape: [W, E], data: new Float32Array(W * E) });
    bad.set('vision_model.post_layernorm.bias', { dtype: 'F16', shape: [W], data: new Uint16Array(W) });
    assert.throws(() => mapClipWeights(bad, cfg, 'bad.safetensors'), (e: Error) => {
      assert.match(e.message, /^mapClipWeights \(bad.safetensors\): 4 problem\(s\)/);
      assert.match(e.message, /missing 'text_model.encoder.layers.1.mlp.fc2.bias' \[32\]/);
      assert.match(e.message, /unexpected 'text_model.encoder.layers.2.mlp.fc2.bias'/);
      assert.match(e.message, /'visual_projection.weight' has shape \[32,16\], expected \[16,32\]/);
      assert.match(e.message, /'vision_model.post_layernorm.bias' has dtype F16; convert it to float32 first/);
      return true;
    });
    // A config that does not match the file names the tensor whose shape it changes.
    const wider = getConfig('tiny', { ...cfg, text: { ...cfg.text, contextLength: 32 } });
    assert.throws(() => mapClipWeights(source, wider), /'text_model.embeddings.position_embedding.weight' has shape \[16,32\], expected \[32,32\]/);
    const bidirectional = getConfig('tiny', { ...cfg, text: { ...cfg.text, causal: false } });
    assert.throws(() => mapClipWeights(source, bidirectional), /causal with EOS pooling/);
  });

  it('the base config expects exactly CLIP ViT-B/16\'s tensor shapes', () => {
    const s = clipTensorShapes(getConfig('base'));
    assert.deepEqual(s['vision_model.embeddings.patch_embedding.weight'], [768, 3, 16, 16]);
    assert.deepEqual(s['vision_model.embeddings.position_embedding.weight'], [197, 768]);
    assert.deepEqual(s['text_model.embeddings.token_embedding.weight'], [49408, 512]);
    assert.deepEqual(s['text_model.embeddings.position_embedding.weight'], [77, 512]);
    assert.deepEqual(s['vision_model.encoder.layers.11.mlp.fc1.weight'], [3072, 768]);
    assert.deepEqual(s['text_model.encoder.layers.11.self_attn.q_proj.weight'], [512, 512]);
    assert.deepEqual(s['visual_projection.weight'], [512, 768]);
    assert.deepEqual(s['text_projection.weight'], [512, 512]);
    const total = Object.values(s).reduce((a, shape) => a + shape.reduce((x, y) => x * y, 1), 0);
    assert.equal(total, 149_620_737);
    // 16 per layer; vision 3 embeddings + 2 norms × 2 + projection; text 2 embeddings + norm × 2 + projection; scale.
    assert.equal(Object.keys(s).length, 2 * 12 * 16 + (3 + 4 + 1) + (2 + 2 + 1) + 1);
  });
});
