import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tf } from '../src/backend/tf.js';
import { clipConfigJson, mapClipWeights, toClipWeights } from '../src/nn/clipMapping.js';
import { getConfig, validateConfig, type DualEncoderConfig } from '../src/nn/configs.js';
import { encodeText, encodeVideo, initDualEncoder } from '../src/nn/dualEncoder.js';
import type { HostTensor } from '../src/nn/params.js';
import { loadTokenizer } from '../src/text/tokenizer.js';
import { loadCheckpoint, saveCheckpoint } from '../src/train/checkpoint.js';
import { loadModel, readModelInfo } from '../src/train/checkpointInfo.js';
import { CLIP_EXTRA_FILE, exportClipFolder } from '../src/train/clipExport.js';
import { clipConfigFromHf } from '../src/train/clipFolder.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, readSafetensors, type SafetensorsTensor } from '../src/train/safetensors.js';
import { runExportHf } from '../pipelines/export-hf.js';
import { makeSmallRun } from './helpers/smallRun.js';
import { tidyData } from './helpers/read.js';

// dist/test/ → the repository root.
const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'test', 'fixtures', 'clip-tiny');

const bitsOf = (x: number): number => new Uint32Array(Float32Array.of(x).buffer)[0];
const hex = (a: ArrayLike<number>): string[] => Array.from(a, (v) => `0x${v.toString(16).padStart(4, '0')}`);

/** Distance to the nearest other value of a binary format with `mantBits` stored bits and smallest normal exponent `minExp`, at |x|. */
function ulp(x: number, mantBits: number, minExp: number): number {
  const e = Math.max(Math.floor(Math.log2(Math.abs(x))), minExp);
  return 2 ** (e - mantBits);
}

describe('safetensors: float32 → F16 / BF16 rounding', () => {
  it('rounds hand-computed edge values to nearest, ties to even', () => {
    // F16 has 10 stored bits: ulp(1) = 2⁻¹⁰. 1 + 2⁻¹¹ is halfway between 1 (even) and 1 + 2⁻¹⁰ (odd): stays 1;
    // 1 + 3·2⁻¹¹ is halfway between 1 + 2⁻¹⁰ (odd) and 1 + 2·2⁻¹⁰ (even): goes up.
    const f16In = [1, -2, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -11 + 2 ** -20, 65504, 65519.99, 65520, 1e6, -1e6,
      2 ** -14, 2 ** -24, 2 ** -25, 3 * 2 ** -25, 2 ** -25 + 2 ** -40, 2 ** -26, 2 ** -14 - 2 ** -25, -0, Infinity, -Infinity, 2046.5, 2047.5, 2048 + 1, 2048 + 3];
    const f16Want = [0x3c00, 0xc000, 0x3c00, 0x3c02, 0x3c01, 0x7bff, 0x7bff, 0x7c00, 0x7c00, 0xfc00,
      0x0400, 0x0001, 0x0000, 0x0002, 0x0001, 0x0000, 0x0400, 0x8000, 0x7c00, 0xfc00, 0x67fe, 0x6800, 0x6800, 0x6802];
    assert.deepEqual(hex(f32ToF16(Float32Array.from(f16In))), hex(f16Want));
    // BF16 keeps float32's exponent and 7 stored bits: ulp(1) = 2⁻⁷.
    const f32Max = new Float32Array(new Uint32Array([0x7f7fffff]).buffer)[0];
    const bf16In = [1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -1.5, f32Max, 2 ** -133, -0, Infinity, 3.140625];
    const bf16Want = [0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xbfc0, 0x7f80, 0x0001, 0x8000, 0x7f80, 0x4049];
    assert.deepEqual(hex(f32ToBf16(Float32Array.from(bf16In))), hex(bf16Want));
    // NaN stays NaN (quiet), whatever its payload.
    const nan = new Float32Array(new Uint32Array([0x7f800001, 0xffc00000]).buffer);
    for (const h of f32ToF16(nan)) assert.ok((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0);
    for (const h of f32ToBf16(nan)) assert.ok((h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0);
    assert.throws(() => f32ToF16(new Float64Array(1) as unknown as Float32Array), /values must be a Float32Array/);
  });

  it('every finite F16 and BF16 value converts back to itself, and each midpoint between neighbours goes to the even one', () => {
    for (const [name, toF32, fromF32, maxFinite] of [['F16', f16ToF32, f32ToF16, 0x7bff], ['BF16', bf16ToF32, f32ToBf16, 0x7f7f]] as const) {
      const bits = Uint16Array.from({ length: maxFinite + 1 }, (_, i) => i);
      const back = fromF32(toF32(bits));
      for (let i = 0; i < bits.length; i++) if (back[i] !== bits[i]) assert.fail(`${name} 0x${i.toString(16)} came back as 0x${back[i].toString(16)}`);
      // The exact midpoint of i and i+1 (representable in float32 for both formats), and a hair above it.
      const lo = toF32(bits.subarray(0, maxFinite));
      const hi = toF32(bits.subarray(1, maxFinite + 1));
      const mid = lo.map((v, i) => (v + hi[i]) / 2);
      const above = mid.map((m) => new Float32Array(new Uint32Array([bitsOf(m) + 1]).buffer)[0]);
      const rm = fromF32(mid);
      const ra = fromF32(above);
      for (let i = 0; i < maxFinite; i++) {
        const even = i % 2 === 0 ? i : i + 1;
        if (rm[i] !== even) assert.fail(`${name} midpoint of 0x${i.toString(16)} and its successor rounded to 0x${rm[i].toString(16)}, not the even 0x${even.toString(16)}`);
        if (ra[i] !== i + 1) assert.fail(`${name} just above the midpoint of 0x${i.toString(16)} rounded to 0x${ra[i].toString(16)}`);
      }
    }
  });
});

describe('nn: CLIP config.json written from our config', () => {
  it('the fixture\'s config.json read and written again gives its fields back; our presets survive the trip', () => {
    const hf = JSON.parse(readFileSync(path.join(FIXTURE, 'config.json'), 'utf8'));
    const cfg = clipConfigFromHf(hf, 'fixture config.json');
    const back = clipConfigJson(cfg, { bos: 620, eos: 621, pad: 621 });
    for (const tower of ['text_config', 'vision_config'] as const) {
      // projection_dim inside a tower is read only by the single-tower models: we write the real one.
      for (const [k, v] of Object.entries(back[tower])) if (k !== 'projection_dim') assert.deepEqual(v, hf[tower][k], `${tower}.${k}`);
    }
    assert.equal(back.projection_dim, hf.projection_dim);
    assert.equal(back.logit_scale_init_value, hf.logit_scale_init_value);
    for (const preset of ['tiny', 'small', 'base'] as const) {
      const c = getConfig(preset);
      const again = clipConfigFromHf(clipConfigJson(c, { bos: 5, eos: 6, pad: 0 }), `/x/${preset}/config.json`, c.temporal);
      assert.deepEqual({ ...again, name: preset }, c, preset);
    }
  });

  it('refuses what CLIPModel cannot run, saying why', () => {
    const tiny = getConfig('tiny');
    assert.throws(() => clipConfigJson(getConfig('tiny', { text: { causal: false, pooling: 'cls' } }), { bos: 2, eos: 3, pad: 0 }), /causal with EOS pooling.*causal=false, pooling=cls/);
    assert.throws(() => clipConfigJson(tiny, { bos: 1, eos: 2, pad: 0 }), /EOS token id is 2.*largest id/);
    assert.throws(() => clipConfigJson(tiny, { bos: 1, eos: 5000, pad: 0 }), /eos=5000 is not in \[0, 1000\)/);
  });
});

describe('CLIP export: round trip through the committed tiny HF fixture', function () {
  this.timeout(60000);
  let tmp: string;
  let hf: Map<string, SafetensorsTensor>;
  let cfg: DualEncoderConfig;
  let ours: Record<string, HostTensor>;

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-export-'));
    hf = (await readSafetensors(path.join(FIXTURE, 'model.safetensors'))).tensors;
    cfg = clipConfigFromHf(JSON.parse(readFileSync(path.join(FIXTURE, 'config.json'), 'utf8')), path.join(FIXTURE, 'config.json'));
    ours = mapClipWeights(hf, cfg);
  });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  it('toClipWeights inverts mapClipWeights bit for bit', () => {
    const back = toClipWeights(ours, cfg);
    assert.deepEqual(Object.keys(back).sort(), [...hf.keys()].sort());
    for (const [name, t] of hf) {
      assert.deepEqual(back[name].shape, t.shape, name);
      assert.ok(Buffer.from(back[name].data.buffer).equals(Buffer.from((t.data as Float32Array).buffer, t.data.byteOffset, t.data.byteLength)), `${name}: bytes differ`);
    }
    const missing = { ...ours };
    delete missing['text.blocks.1.ln_2.bias'];
    assert.throws(() => toClipWeights({ ...missing, 'text.blocks.9.ln_2.bias': ours['text.blocks.1.ln_2.bias'] }, cfg),
      /2 problem\(s\)[\s\S]*missing 'text.blocks.1.ln_2.bias'[\s\S]*unexpected 'text.blocks.9.ln_2.bias'/);
  });

  it('f32: every tensor has the fixture\'s bytes, the tokenizer and preprocessing come along, and vlmargin reads it back to the CLIPModel embeddings', async () => {
    const out = path.join(tmp, 'f32');
    const r = await runExportHf({ model: FIXTURE, out });
    assert.equal(r.source.kind, 'clip');
    assert.deepEqual(r.files.sort(), ['config.json', 'merges.txt', 'model.safetensors', 'preprocessor_config.json', 'tokenizer.json', 'tokenizer_config.json', CLIP_EXTRA_FILE, 'vocab.json'].sort());
    const m = await readSafetensors(path.join(out, 'model.safetensors'));
    assert.equal(m.metadata.format, 'pt');
    assert.deepEqual([...m.tensors.keys()].sort(), [...hf.keys()].sort());
    for (const [name, t] of hf) {
      const e = m.tensors.get(name)!;
      assert.equal(e.dtype, 'F32');
      assert.ok(Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), `${name}: bytes differ`);
    }
    for (const f of ['tokenizer.json', 'vocab.json', 'merges.txt']) assert.ok((await readFile(path.join(out, f))).equals(await readFile(path.join(FIXTURE, f))), f);
    const want = JSON.parse(await readFile(path.join(FIXTURE, 'config.json'), 'utf8'));
    const got = JSON.parse(await readFile(path.join(out, 'config.json'), 'utf8'));
    for (const k of ['bos_token_id', 'eos_token_id', 'pad_token_id', 'vocab_size']) assert.equal(got.text_config[k], want.text_config[k], k);
    const pre = JSON.parse(await readFile(path.join(out, 'preprocessor_config.json'), 'utf8'));
    const wantPre = JSON.parse(await readFile(path.join(FIXTURE, 'preprocessor_config.json'), 'utf8'));
    for (const k of ['image_mean', 'image_std', 'crop_size', 'size', 'resample', 'image_processor_type']) assert.deepEqual(pre[k], wantPre[k], k);

    // Back into vlmargin through the CLIP-folder loader: the embeddings PyTorch computed for the fixture.
    const info = await readModelInfo(out);
    assert.equal(info.kind, 'clip');
    assert.deepEqual(info.model, cfg);
    assert.deepEqual(info.preprocess, { mean: wantPre.image_mean, std: wantPre.image_std });
    const store = await loadModel(info, 0);
    const inputs = (await readSafetensors(path.join(FIXTURE, 'inputs.safetensors'))).tensors;
    const expected = (await readSafetensors(path.join(FIXTURE, 'expected.safetensors'))).tensors;
    const input = (name: string, dtype?: 'int32') => tf.tensor(inputs.get(name)!.data as Float32Array | Int32Array, inputs.get(name)!.shape, dtype);
    const image = await tidyData(() => encodeVideo(store.snapshot(), input('frames'), info.model));
    const text = await tidyData(() => encodeText(store.snapshot(), input('input_ids', 'int32'), input('attention_mask', 'int32'), info.model));
    store.dispose();
    const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i])));
    assert.ok(maxDiff(image, expected.get('image_embeds')!.data as Float32Array) < 1e-4);
    assert.ok(maxDiff(text, expected.get('text_embeds')!.data as Float32Array) < 1e-4);
  });

  for (const [dtype, stored, mantBits, minExp, toF32] of [['f16', 'F16', 10, -14, f16ToF32], ['bf16', 'BF16', 7, -126, bf16ToF32]] as const) {
    it(`${dtype}: every value is within half an ulp of ${stored} of the fixture's float32 (round to nearest), and reads back`, async () => {
      const out = path.join(tmp, dtype);
      await runExportHf({ model: FIXTURE, out, dtype });
      const m = await readSafetensors(path.join(out, 'model.safetensors'));
      assert.equal(JSON.parse(await readFile(path.join(out, 'config.json'), 'utf8')).torch_dtype, dtype === 'f16' ? 'float16' : 'bfloat16');
      let worst = 0;
      for (const [name, t] of hf) {
        const e = m.tensors.get(name)!;
        assert.equal(e.dtype, stored, name);
        const got = toF32(e.data as Uint16Array);
        const want = t.data as Float32Array;
        for (let i = 0; i < want.length; i++) {
          const err = Math.abs(got[i] - want[i]) / ulp(want[i], mantBits, minExp);
          if (!(err <= 0.5)) assert.fail(`${name}[${i}]: ${want[i]} stored as ${got[i]}, ${err} ulp away`);
          worst = Math.max(worst, err);
        }
      }
      assert.ok(worst > 0.25, `rounding error never exceeded a quarter ulp (${worst}): was anything rounded?`);
      const info = await readModelInfo(out);
      assert.deepEqual(info.model, cfg);
      (await loadModel(info, 0)).dispose();
    });
  }

  it('the temporal transformer and the weighting net go to the extra file, and --model DIR restores them; config.json stays plain CLIP', async () => {
    const tcfg = getConfig('tiny', { ...cfg, name: 'temporal-model', temporal: { pooling: 'transformer', maxFrames: 4, layers: 1, heads: 2 } });
    const store = initDualEncoder(tcfg, 7);
    const wnet = { 'wnet.fc1.weight': tf.randomNormal([1, 8], 0, 1, 'float32', 1), 'wnet.fc1.bias': tf.zeros([8]) };
    const out = path.join(tmp, 'temporal');
    const before = tf.memory().numTensors;
    const r = await exportClipFolder(out, {
      config: tcfg, params: store.snapshot(), tokenizer: await loadTokenizer(FIXTURE), extra: wnet,
      extraMetadata: { weightNet: { hidden: 8 }, frames: { count: 3, size: 32, strategy: 'uniform' } },
    });
    assert.equal(tf.memory().numTensors, before);
    const names = store.names();
    const temporal = names.filter((n) => n.startsWith('video.temporal.'));
    assert.equal(r.extraTensors, temporal.length + 2);
    const model = await readSafetensors(path.join(out, 'model.safetensors'));
    assert.ok([...model.tensors.keys()].every((n) => !n.includes('temporal')));

    const info = await readModelInfo(out);
    assert.deepEqual(info.model, tcfg);
    assert.equal(info.frames.count, 3);
    assert.deepEqual(info.clip!.extra!.metadata.weightNet, { hidden: 8 });
    assert.deepEqual(info.clip!.extra!.tensors['wnet.fc1.weight'].data, await wnet['wnet.fc1.weight'].data());
    const loaded = await loadModel(info, 99);
    for (const n of names) assert.deepEqual(await loaded.get(n).data(), await store.get(n).data(), n);
    loaded.dispose();
    store.dispose();
    tf.dispose(Object.values(wnet));

    // An edited config.json no longer matches the extra file: named, not silently mixed.
    const edited = path.join(tmp, 'edited');
    await runExportHf({ model: out, out: edited });
    const c = JSON.parse(await readFile(path.join(edited, 'config.json'), 'utf8'));
    c.text_config.layer_norm_eps = 1e-6;
    c.vision_config.layer_norm_eps = 1e-6;
    await writeFile(path.join(edited, 'config.json'), JSON.stringify(c));
    await assert.rejects(readModelInfo(edited), /config.json and .*vlmargin_extra.safetensors describe different models/);

    await assert.rejects(exportClipFolder(out, { config: cfg, params: ours, tokenIds: { bos: 620, eos: 621, pad: 621 } }), /exists and is not empty/);
    const clsCfg = getConfig('tiny', { text: { causal: false, pooling: 'cls' } });
    const cls = initDualEncoder(clsCfg, 0);
    await assert.rejects(exportClipFolder(path.join(tmp, 'cls'), { config: clsCfg, params: cls.snapshot(), tokenIds: { bos: 2, eos: 3, pad: 0 } }), /causal with EOS pooling/);
    cls.dispose();
    assert.ok(!existsSync(path.join(tmp, 'cls')));
  });
});
describe('export hf: a model trained from scratch with vlmargin\'s own tokenizer', function () {
  this.timeout(180000);
  let tmp: string;
  let checkpoint: string;

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-export-run-'));
    checkpoint = (await makeSmallRun(tmp, { steps: 4 })).checkpoint;
  });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  it('exports the checkpoint with its tokenizer (ids and vocabulary size in config.json) and reads back to the same weights', async () => {
    const out = path.join(tmp, 'hf');
    const r = await runExportHf({ model: path.dirname(path.dirname(checkpoint)), out, dtype: 'f32' });
    assert.equal(r.source.kind, 'checkpoint');
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'preprocessor_config.json', CLIP_EXTRA_FILE]) {
      assert.ok(existsSync(path.join(out, f)), f);
    }
    const tok = await loadTokenizer(r.tokenizerDir);
    const json = JSON.parse(await readFile(path.join(out, 'config.json'), 'utf8'));
    const ck = await loadCheckpoint(checkpoint, { onWarning: () => undefined });
    const cfg = validateConfig((ck.config as { model: unknown }).model);
    assert.equal(json.text_config.vocab_size, cfg.text.vocabSize);
    assert.equal(json.text_config.vocab_size, tok.vocabSize);
    assert.equal(json.text_config.eos_token_id, tok.eosId);
    assert.equal(json.text_config.pad_token_id, tok.padId);
    assert.equal(JSON.parse(await readFile(path.join(out, 'tokenizer_config.json'), 'utf8')).model_max_length, cfg.text.contextLength);
    // The exported tokenizer is the same tokenizer.
    const exported = await loadTokenizer(out);
    const captions = ['a person walks a dog', 'zebra!'];
    assert.deepEqual(exported.encode(captions, 16), tok.encode(captions, 16));
    const info = await readModelInfo(out);
    assert.deepEqual(info.model, cfg);
    assert.equal(info.frames.count, 2);
    const store = await loadModel(info, 99);
    for (const [name, t] of Object.entries(ck.params)) assert.deepEqual(await store.get(name).data(), await t.data(), name);
    store.dispose();

    // The weighting net rides along from the optimizer file with what it sees; its optimizer state does not.
    const mwn = path.join(tmp, 'mwn-checkpoint');
    const w = { 'wnet.fc1.weight': tf.fill([2, 4], 0.5), 'wnet.fc1.bias': tf.fill([4], 0.25), 'wnet_opt.m.fc1.bias': tf.zeros([4]) };
    const config = ck.config as { pretrain: Record<string, unknown> };
    await saveCheckpoint(mwn, { config: { ...config, pretrain: { ...config.pretrain, weighting: { method: 'mwn', hidden: 4, inputs: ['loss', 'rank'] } } }, params: ck.params, optimizer: { ...ck.optimizer, ...w }, state: ck.state });
    const r2 = await runExportHf({ model: mwn, out: path.join(tmp, 'hf-mwn'), dtype: 'bf16' });
    const extra = (await readModelInfo(r2.dir)).clip!.extra!;
    assert.deepEqual(Object.keys(extra.tensors).sort(), ['wnet.fc1.bias', 'wnet.fc1.weight']);
    assert.deepEqual(Array.from(extra.tensors['wnet.fc1.weight'].data), new Array(8).fill(0.5));
    assert.deepEqual(extra.metadata.weightNet, { method: 'mwn', hidden: 4, inputs: ['loss', 'rank'] });
    tf.dispose([...Object.values(ck.params), ...Object.values(ck.optimizer ?? {}), ...Object.values(w)]);

    // An export is a CLIP folder with a tokenizer: it exports again, to the same bytes.
    const again = path.join(tmp, 'hf-again');
    await runExportHf({ model: out, out: again });
    for (const name of ['model.safetensors', 'tokenizer.json', 'config.json', 'preprocessor_config.json']) {
      assert.ok((await readFile(path.join(out, name))).equals(await readFile(path.join(again, name))), `${name} differs after a second export`);
    }
  });

  it('says exactly why it cannot export when the tokenizer is gone', async () => {
    const tokDir = path.join(tmp, 'tok-elsewhere');
    const ck = await loadCheckpoint(checkpoint, { onWarning: () => undefined });
    const lost = path.join(tmp, 'lost');
    await mkdir(lost);
    await saveCheckpoint(path.join(lost, 'ck'), { config: { ...(ck.config as object), tokenizer: tokDir }, params: ck.params, state: ck.state });
    tf.dispose(Object.values(ck.params));
    tf.dispose(Object.values(ck.optimizer ?? {}));
    await assert.rejects(runExportHf({ model: path.join(lost, 'ck'), out: path.join(tmp, 'never') }),
      new RegExp(`tokenizer folder ${tokDir.replace(/[/.]/g, '\\$&')} \\(recorded in .*config.json \\("tokenizer"\\)\\) does not exist; pass --tokenizer DIR`));
    await writeFile(path.join(lost, 'note.txt'), 'x');
    await assert.rejects(runExportHf({ model: lost, out: path.join(tmp, 'never') }), /holds neither a vlmargin checkpoint/);
  });
});
