import assert from 'node:assert/strict';
import { tf } from '../src/backend/tf.js';
import * as ops from '../src/backend/safeOps.js';
import { valueAndGradsOf, type Params } from '../src/nn/params.js';
import { encodeText, encodeVideo, initDualEncoder } from '../src/nn/dualEncoder.js';
import { getConfig, type DualEncoderConfig } from '../src/nn/configs.js';
import { transformer, transformerSpecs, type BlockOptions, type Recompute } from '../src/nn/transformer.js';
import { ParamStore } from '../src/nn/params.js';
import { parsePretrainConfig } from '../pipelines/config.js';
import { parseFinetuneRetrievalConfig } from '../pipelines/finetune-retrieval.js';
import { samStep } from '../pipelines/lib/samStep.js';
import { fdGrad, relErr, seededUniform } from './helpers/fd.js';
import { tidyData } from './helpers/read.js';

/** Two blocks per stack, temporal transformer on: every kind of stack recomputes. */
const cfg: DualEncoderConfig = getConfig('tiny', {
  name: 'recompute-tiny',
  vision: { imageSize: 16, patchSize: 8, width: 16, layers: 2, heads: 2 },
  text: { vocabSize: 30, contextLength: 8, width: 16, layers: 2, heads: 2 },
  temporal: { pooling: 'transformer', maxFrames: 3, layers: 1, heads: 2 },
  embedDim: 8,
});

function batch(b: number, t: number, lengths: number[], seed: number): { frames: tf.Tensor; ids: tf.Tensor2D; mask: tf.Tensor2D } {
  const S = cfg.vision.imageSize;
  const L = cfg.text.contextLength;
  const frames = tf.tensor(seededUniform(b * t * S * S * 3, seed, -1.5, 1.5), [b, t, S, S, 3]);
  const u = seededUniform(b * L, seed + 1, 0, 1);
  const ids = new Int32Array(b * L);
  const mask = new Int32Array(b * L);
  lengths.forEach((len, r) => {
    for (let i = 0; i < len; i++) { ids[r * L + i] = 1 + Math.floor(u[r * L + i] * (cfg.text.vocabSize - 1)); mask[r * L + i] = 1; }
  });
  return { frames, ids: tf.tensor2d(ids, [b, L], 'int32'), mask: tf.tensor2d(mask, [b, L], 'int32') };
}

/** Symmetric InfoNCE: every parameter of both towers reaches the loss. */
function loss(p: Params, x: { frames: tf.Tensor; ids: tf.Tensor; mask: tf.Tensor }, recompute: Recompute, tower: 'both' | 'video' | 'text' = 'both'): tf.Scalar {
  const v = ops.l2Normalize(encodeVideo(p, x.frames, cfg, { recompute: tower === 'text' ? 'none' : recompute }), 1);
  const t = ops.l2Normalize(encodeText(p, x.ids, x.mask, cfg, { recompute: tower === 'video' ? 'none' : recompute }), 1);
  const logits = tf.mul(tf.matMul(v, t, false, true), ops.exp(p.logit_scale));
  const labels = tf.range(0, x.frames.shape[0], 1, 'int32');
  return tf.mean(tf.add(ops.softmaxCrossEntropy(logits, labels), ops.softmaxCrossEntropy(tf.transpose(logits), labels))) as tf.Scalar;
}

async function gradsOf(p: Params, x: Parameters<typeof loss>[1], recompute: Recompute, tower?: 'both' | 'video' | 'text'): Promise<{ value: number; grads: Record<string, Float32Array> }> {
  const { value, grads } = valueAndGradsOf((q) => loss(q, x, recompute, tower), p);
  const out: Record<string, Float32Array> = {};
  for (const [n, g] of Object.entries(grads)) out[n] = await g.data() as Float32Array;
  const v = (await value.data())[0];
  tf.dispose([value, ...Object.values(grads)]);
  return { value: v, grads: out };
}

const syn = { data: { kind: 'synth' } };

describe('recompute: transformer blocks recomputed in the backward (train.recompute)', () => {
  it('gradients of every parameter equal plain autodiff\'s, video and text towers, one at a time and together', async () => {
    const store = initDualEncoder(cfg, 3);
    const p = store.snapshot();
    const x = batch(3, 3, [3, 8, 5], 11);
    const plain = await gradsOf(p, x, 'none');
    for (const tower of ['video', 'text', 'both'] as const) {
      const rc = await gradsOf(p, x, 'blocks', tower);
      assert.equal(rc.value, plain.value, `${tower}: the loss is the same forward`);
      assert.deepEqual(Object.keys(rc.grads).sort(), Object.keys(plain.grads).sort());
      for (const [n, g] of Object.entries(plain.grads)) {
        assert.ok(g.some((v) => v !== 0), `${n}: the plain gradient is not trivially zero`);
        const e = relErr(rc.grads[n], g, 1e-6);
        assert.ok(e < 1e-4, `${tower}: ${n}: relative error ${e} against plain autodiff`);
      }
    }
    tf.dispose([x.frames, x.ids, x.mask]);
    store.dispose();
  });

  it('one recomputed block (causal and padding masks) matches finite differences wrt its input and a weight', async () => {
    const D = 8;
    const store = new ParamStore(5).addAll(transformerSpecs('blk', D, 1, 2));
    const p = store.snapshot();
    const opts: BlockOptions = { heads: 2, activation: 'quickGelu', eps: 1e-5, recompute: 'blocks' };
    const keyPadding = tf.tensor2d([[1, 1, 1, 0], [1, 1, 1, 1]], [2, 4], 'int32');
    const target = tf.tensor(seededUniform(2 * 4 * D, 7), [2, 4, D]);
    const x0 = tf.tensor(seededUniform(2 * 4 * D, 8, -1, 1), [2, 4, D]);
    const out = (q: Params, x: tf.Tensor) => tf.sum(tf.mul(transformer(q, 'blk', x, 1, opts, { causal: true, keyPadding }), target));
    const wName = 'blk.0.attn.qkv.weight';
    const auto = await tidyData(() => tf.grad((x: tf.Tensor) => out(p, x))(x0));
    const fdX = await fdGrad((x) => out(p, x), x0, 1e-2);
    assert.ok(relErr(auto, fdX) < 1e-2, `d/dx: relative error ${relErr(auto, fdX)} against finite differences`);
    const autoW = await tidyData(() => tf.grad((w: tf.Tensor) => out({ ...p, [wName]: w }, x0))(p[wName]));
    const fdW = await fdGrad((w) => out({ ...p, [wName]: w }, x0), p[wName], 1e-2);
    assert.ok(Math.max(...Array.from(fdW, Math.abs)) > 1e-3, 'the weight gradient is not trivially zero');
    assert.ok(relErr(autoW, fdW) < 1e-2, `d/dW: relative error ${relErr(autoW, fdW)} against finite differences`);
    tf.dispose([keyPadding, target, x0]);
    store.dispose();
  });

  it('numTensors stays flat over steps, and a second-order pass through it is refused with the mode named', () => {
    const store = initDualEncoder(cfg, 4);
    const x = batch(2, 2, [4, 8], 21);
    const counts: number[] = [];
    const start = tf.memory().numTensors;
    for (let i = 0; i < 4; i++) {
      tf.tidy(() => {
        const { grads } = valueAndGradsOf((p) => loss(p, x, 'blocks'), store.snapshot());
        for (const n of store.names()) store.get(n).assign(tf.sub(store.get(n), tf.mul(grads[n], 1e-3)));
      });
      counts.push(tf.memory().numTensors);
    }
    assert.ok(counts.every((c) => c === start), `numTensors per step: ${counts} (before: ${start})`);
    // A gradient of a gradient (the meta-learner's bilevel step) would miss terms silently.
    const theta = store.snapshot();
    const second = () => tf.grad((s: tf.Tensor) => {
      const { grads } = valueAndGradsOf((p) => tf.mul(loss(p, x, 'blocks', 'text'), s) as tf.Scalar, theta, ['text.blocks.0.attn.qkv.weight']);
      return tf.sum(grads['text.blocks.0.attn.qkv.weight']);
    })(tf.scalar(1));
    assert.throws(second, /recompute 'blocks' gives first-order gradients only/);
    // tfjs keeps what the interrupted gradient had saved; the steps after it run and leak nothing.
    const after: number[] = [];
    for (let i = 0; i < 2; i++) {
      tf.tidy(() => { valueAndGradsOf((p) => loss(p, x, 'blocks'), store.snapshot()); });
      after.push(tf.memory().numTensors);
    }
    assert.equal(after[1], after[0], `numTensors after the refused pass: ${after}`);
    tf.dispose([x.frames, x.ids, x.mask]);
    store.dispose();
  });

  it('the plain training step (samStep) with recompute gives the same gradients; weighted steps refuse it', async () => {
    const store = initDualEncoder(cfg, 6);
    const params = store.snapshot() as Record<string, tf.Variable>;
    const x = batch(3, 2, [2, 5, 8], 31);
    const base = { modelCfg: cfg, params, batch: x, step: 0, marginRad: 0.01, detachMargin: false, weighting: parsePretrainConfig(syn).weighting };
    const a = await samStep({ ...base, recompute: 'none' });
    const b = await samStep({ ...base, recompute: 'blocks' });
    assert.equal(a.loss, b.loss);
    for (const [n, g] of Object.entries(a.grads)) {
      const e = relErr(await b.grads[n].data(), await g.data(), 1e-6);
      assert.ok(e < 1e-4, `${n}: relative error ${e}`);
    }
    tf.dispose([...Object.values(a.grads), ...Object.values(b.grads)]);
    const mwn = parsePretrainConfig({ ...syn, weighting: { method: 'mwn' } }).weighting;
    await assert.rejects(samStep({ ...base, weighting: mwn, recompute: 'blocks' }), /recompute 'blocks' gives first-order gradients only, and weighting 'mwn'/);
    tf.dispose([x.frames, x.ids, x.mask]);
    store.dispose();
  });

  it('configs: train.recompute defaults to none, takes blocks, and names the key for a bad value or a weighted step', () => {
    assert.equal(parsePretrainConfig(syn).train.recompute, 'none');
    assert.equal(parsePretrainConfig({ ...syn, train: { recompute: 'blocks' } }).train.recompute, 'blocks');
    assert.throws(() => parsePretrainConfig({ ...syn, train: { recompute: 'all' } }, 'p.json'), /p\.json: invalid config\n\s+train\.recompute: .*"none"\|"blocks"/);
    assert.throws(() => parsePretrainConfig({ ...syn, train: { recompute: 'blocks' }, weighting: { method: 'l2rw' } }, 'p.json'),
      /train\.recompute: recompute 'blocks' gives first-order gradients only, and weighting\.method 'l2rw'/);
    const ft = { model: { init: 'i' }, data: { kind: 'manifest', manifest: 'm.jsonl' } };
    assert.equal(parseFinetuneRetrievalConfig({ ...ft, train: { recompute: 'blocks' } }).train.recompute, 'blocks');
    assert.throws(() => parseFinetuneRetrievalConfig({ ...ft, train: { recompute: true } }, 'f.json'), /f\.json: invalid config\n\s+train\.recompute/);
    assert.throws(() => parseFinetuneRetrievalConfig({ ...ft, train: { recompute: 'blocks' }, weighting: { method: 'mwn' } }, 'f.json'), /train\.recompute: .*weighting\.method 'mwn'/);
    assert.throws(() => tf.tidy(() => transformer({}, 'x', tf.zeros([1, 2, 4]), 1, { heads: 1, activation: 'gelu', eps: 1e-5, recompute: 'yes' as Recompute })),
      /transformer 'x': 'recompute' must be one of none, blocks, got yes/);
  });
});
