import assert from 'node:assert/strict';
import { tf } from '../src/backend/tf.js';
import * as ops from '../src/backend/safeOps.js';
import {
  ParamStore, initialValues, valueAndGradsOf, type Params,
} from '../src/nn/params.js';
import { matMul, matMulFlagged } from '../src/backend/matMul.js';
import { layerNorm, linear, patchify } from '../src/nn/layers.js';
import { attentionBias, multiHeadAttention } from '../src/nn/attention.js';
import {
  assertTokenIds, convStem, countDualEncoderParams, dualEncoderSpecs, encodeText, encodeVideo, initDualEncoder, paramGroup,
} from '../src/nn/dualEncoder.js';
import { getConfig, validateConfig, type DualEncoderConfig } from '../src/nn/configs.js';
import { clipTensorShapes } from '../src/nn/clipMapping.js';
import { fdGrad, hvpBothWays, relErr, seededUniform } from './helpers/fd.js';
import { tidyData, scoped } from './helpers/read.js';

/** A model small enough for finite differences in float32. */
const micro: DualEncoderConfig = getConfig('tiny', {
  name: 'micro',
  vision: { imageSize: 8, patchSize: 4, width: 8, layers: 1, heads: 2 },
  text: { vocabSize: 20, contextLength: 6, width: 8, layers: 1, heads: 2 },
  temporal: { pooling: 'transformer', maxFrames: 3, layers: 1, heads: 2 },
  embedDim: 8,
});

function textBatch(lengths: number[], L: number, vocab: number, seed: number): { ids: tf.Tensor2D; mask: tf.Tensor2D } {
  const u = seededUniform(lengths.length * L, seed, 0, 1);
  const ids = new Int32Array(lengths.length * L);
  const mask = new Float32Array(lengths.length * L);
  lengths.forEach((len, b) => {
    for (let i = 0; i < len; i++) { ids[b * L + i] = 1 + Math.floor(u[b * L + i] * (vocab - 1)); mask[b * L + i] = 1; }
  });
  return { ids: tf.tensor2d(ids, [lengths.length, L], 'int32'), mask: tf.tensor2d(mask, [lengths.length, L]) };
}

function framesBatch(b: number, t: number, size: number, seed: number): tf.Tensor {
  return tf.tensor(seededUniform(b * t * size * size * 3, seed, -1.5, 1.5), [b, t, size, size, 3]);
}

/** Symmetric InfoNCE with the learnable scale: touches every parameter of the model. */
function clipLoss(p: Params, cfg: DualEncoderConfig, frames: tf.Tensor, ids: tf.Tensor, mask: tf.Tensor): tf.Scalar {
  const v = ops.l2Normalize(encodeVideo(p, frames, cfg), 1);
  const t = ops.l2Normalize(encodeText(p, ids, mask, cfg), 1);
  const logits = tf.mul(tf.matMul(v, t, false, true), ops.exp(p.logit_scale));
  const labels = tf.range(0, frames.shape[0], 1, 'int32');
  return tf.mean(tf.add(ops.softmaxCrossEntropy(logits, labels), ops.softmaxCrossEntropy(tf.transpose(logits), labels))) as tf.Scalar;
}

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  const e = relErr(a, b);
  assert.ok(e < tol, `${what}: relative error ${e} ≥ ${tol}`);
}

// ---- plain-JS references (float64, loops) ----

/** Exact GELU x·Φ(x) with erf by Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7). */
function refGelu(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * z);
  const erf = 1 - t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) * Math.exp(-z * z);
  return 0.5 * x * (1 + Math.sign(x) * erf);
}

function refLayerNorm(row: number[], g: ArrayLike<number>, b: ArrayLike<number>, eps: number): number[] {
  const mu = row.reduce((a, v) => a + v, 0) / row.length;
  const varr = row.reduce((a, v) => a + (v - mu) ** 2, 0) / row.length;
  return row.map((v, i) => (v - mu) / Math.sqrt(varr + eps) * g[i] + b[i]);
}

/** y = x·W + b with W [in, out] row-major. */
function refLinear(x: number[], W: ArrayLike<number>, b: ArrayLike<number> | null, dout: number): number[] {
  const out = new Array<number>(dout).fill(0);
  for (let o = 0; o < dout; o++) {
    let s = b ? b[o] : 0;
    for (let i = 0; i < x.length; i++) s += x[i] * W[i * dout + o];
    out[o] = s;
  }
  return out;
}

/** Self-attention of one sequence by loops; `allowed(i, j)` says whether query i may see key j. */
function refAttention(x: number[][], w: { qkvW: ArrayLike<number>; qkvB: ArrayLike<number>; outW: ArrayLike<number>; outB: ArrayLike<number> },
  heads: number, allowed: (i: number, j: number) => boolean): number[][] {
  const L = x.length; const D = x[0].length; const dh = D / heads;
  const qkv = x.map((row) => refLinear(row, w.qkvW, w.qkvB, 3 * D));
  const ctx = x.map(() => new Array<number>(D).fill(0));
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < L; i++) {
      const scores: number[] = [];
      for (let j = 0; j < L; j++) {
        let s = 0;
        for (let c = 0; c < dh; c++) s += qkv[i][h * dh + c] * qkv[j][D + h * dh + c];
        scores.push(allowed(i, j) ? s / Math.sqrt(dh) : -Infinity);
      }
      const m = Math.max(...scores);
      const e = scores.map((s) => (s === -Infinity ? 0 : Math.exp(s - m)));
      const z = e.reduce((a, v) => a + v, 0);
      for (let j = 0; j < L; j++) for (let c = 0; c < dh; c++) ctx[i][h * dh + c] += e[j] / z * qkv[j][2 * D + h * dh + c];
    }
  }
  return ctx.map((row) => refLinear(row, w.outW, w.outB, D));
}

describe('nn: parameter store', () => {
  it('same seed gives the same weights, another seed others; init schemes have the right statistics', async () => {
    const specs = [
      { name: 'a', shape: [200, 50], init: { kind: 'normal' as const, std: 0.5 } },
      { name: 'b', shape: [100, 40], init: { kind: 'truncNormal' as const, std: 2 } },
      { name: 'c', shape: [30, 70], init: { kind: 'xavier' as const } },
      { name: 'd', shape: [5], init: { kind: 'ones' as const } },
      { name: 'e', shape: [], init: { kind: 'constant' as const, value: 4.5 } },
    ];
    const s1 = new ParamStore(7).addAll(specs);
    const s2 = new ParamStore(7).addAll([...specs].reverse());
    const s3 = new ParamStore(8).addAll(specs);
    for (const n of ['a', 'b', 'c']) {
      assert.deepEqual(await s1.get(n).data(), await s2.get(n).data(), `${n}: same seed, any order, same values`);
      assert.notDeepEqual(await s1.get(n).data(), await s3.get(n).data(), `${n}: other seed, other values`);
    }
    const a = Array.from(await s1.get('a').data());
    const mean = a.reduce((x, v) => x + v, 0) / a.length;
    const sd = Math.sqrt(a.reduce((x, v) => x + (v - mean) ** 2, 0) / a.length);
    assert.ok(Math.abs(mean) < 0.02 && Math.abs(sd - 0.5) < 0.02, `normal(0.5): mean ${mean}, sd ${sd}`);
    const b = Array.from(await s1.get('b').data());
    assert.ok(b.every((v) => Math.abs(v) <= 4), 'trunc normal stays within 2 std');
    // Var of N(0,1) truncated to ±2 is 1 − 4φ(2)/(2Φ(2) − 1) ≈ 0.7737.
    const sdB = Math.sqrt(b.reduce((x, v) => x + v * v, 0) / b.length);
    assert.ok(Math.abs(sdB - 2 * Math.sqrt(0.7737)) < 0.05, `trunc normal sd ${sdB}`);
    const c = Array.from(await s1.get('c').data());
    const bound = Math.sqrt(6 / 100);
    assert.ok(c.every((v) => Math.abs(v) <= bound) && Math.max(...c.map(Math.abs)) > 0.95 * bound, 'xavier uniform bound √(6/(30+70))');
    assert.deepEqual(Array.from(await s1.get('d').data()), [1, 1, 1, 1, 1]);
    assert.equal((await s1.get('e').data())[0], 4.5);
    assert.deepEqual(s1.get('e').shape, []);
    assert.equal(s1.count(), 10000 + 4000 + 2100 + 5 + 1);
    assert.deepEqual(initialValues(specs[0], 7), await s1.get('a').data());
    for (const s of [s1, s2, s3]) s.dispose();
  });

  it('snapshot holds the variables; assign checks names and shapes; counts by prefix', async () => {
    const s = new ParamStore(1).addAll([
      { name: 'enc.w', shape: [2, 3], init: { kind: 'zeros' } },
      { name: 'enc.b', shape: [3], init: { kind: 'zeros' } },
      { name: 'head.w', shape: [3, 1], init: { kind: 'zeros' } },
    ]);
    assert.equal(s.snapshot()['enc.w'], s.get('enc.w'));
    assert.deepEqual(s.countByPrefix(1), { enc: 9, head: 3 });
    assert.equal(s.count('enc.'), 9);
    s.assign({ 'enc.b': tf.tensor1d([1, 2, 3]) });
    assert.deepEqual(Array.from(await s.get('enc.b').data()), [1, 2, 3]);
    s.assign({ 'head.w': { shape: [3, 1], data: Float32Array.from([4, 5, 6]) } });
    assert.deepEqual(Array.from(await s.get('head.w').data()), [4, 5, 6]);
    assert.throws(() => s.assign({ 'enc.w': tf.zeros([3, 2]), nope: tf.zeros([1]) }), /'enc.w' has shape \[3,2\], expected \[2,3\][\s\S]*unknown parameter 'nope'/);
    assert.throws(() => s.assign({ 'enc.b': tf.zeros([3]) }, { requireAll: true }), /missing parameter 'enc.w'[\s\S]*missing parameter 'head.w'/);
    assert.throws(() => s.add({ name: 'enc.b', shape: [3], init: { kind: 'zeros' } }), /already exists/);
    assert.throws(() => s.add({ name: 'x', shape: [0], init: { kind: 'zeros' } }), /'x' shape must be positive integers/);
    assert.throws(() => s.get('missing'), /no parameter 'missing'/);
    const before = tf.memory().numTensors;
    s.dispose();
    assert.equal(tf.memory().numTensors, before - 3);
  });
});

describe('nn: layers against plain-JS references', () => {
  it('linear and layer norm match loops', async () => {
    const x = seededUniform(3 * 5, 1, -2, 2);
    const W = seededUniform(5 * 4, 2); const b = seededUniform(4, 3);
    const g = seededUniform(5, 4, 0.5, 1.5); const be = seededUniform(5, 5);
    const p: Params = { 'l.weight': tf.tensor2d(W, [5, 4]), 'l.bias': tf.tensor1d(b), 'n.weight': tf.tensor1d(g), 'n.bias': tf.tensor1d(be) };
    const xt = tf.tensor3d(x, [1, 3, 5]);
    const y = linear(p, 'l', xt);
    const n = layerNorm(p, 'n', xt, 1e-5);
    assert.deepEqual(y.shape, [1, 3, 4]);
    const rows = [0, 1, 2].map((r) => Array.from(x.slice(r * 5, r * 5 + 5)));
    close(await y.data(), rows.flatMap((r) => refLinear(r, W, b, 4)), 1e-5, 'linear');
    close(await n.data(), rows.flatMap((r) => refLayerNorm(r, g, be, 1e-5)), 1e-5, 'layerNorm');
    tf.dispose([...Object.values(p), xt, y, n]);
  });

  it('matMul: value, gradient and Hessian-vector product against finite differences (rank 2 and batched)', () => scoped(async () => {
    for (const [sa, sb] of [[[3, 4], [4, 2]], [[2, 3, 4], [2, 4, 3]]]) {
      const a = tf.tensor(seededUniform(sa.reduce((x, y) => x * y), 11), sa);
      const b = tf.tensor(seededUniform(sb.reduce((x, y) => x * y), 12), sb);
      const ref = tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D);
      close(await matMul(a, b).data(), await ref.data(), 1e-6, 'matMul value');
      const w = tf.tensor(seededUniform(ref.size, 13), ref.shape);
      // Quadratic in a (and in b through the product), so the Hessian is not zero.
      const f = (t: tf.Tensor) => tf.sum(tf.mul(tf.square(matMul(t, b)), w));
      const g = await tidyData(() => tf.grad(f)(a));
      close(g, await fdGrad(f, a, 1e-2), 1e-2, 'matMul gradient');
      const fb = (t: tf.Tensor) => tf.sum(tf.mul(tf.square(matMul(a, t)), w));
      close(await tidyData(() => tf.grad(fb)(b)), await fdGrad(fb, b, 1e-2), 1e-2, 'matMul gradient wrt b');
      const v = tf.tensor(seededUniform(a.size, 14), a.shape);
      const h = await hvpBothWays(f, a, v, 1e-2);
      close(h.auto, h.fd, 2e-2, 'matMul HVP');
      tf.dispose([a, b, ref, w, v]);
    }
    assert.throws(() => matMul(tf.zeros([2, 3]), tf.zeros([2, 3])), /do not multiply/);
  }));

  it('matMulFlagged (matMul on webgpu): every flag pair, rank 2 and batched; value, gradients and HVP against finite differences', () => scoped(async () => {
    const sw = (t: tf.Tensor) => (t.rank === 2 ? tf.transpose(t) : tf.transpose(t, [0, 2, 1]));
    for (const batched of [false, true]) {
      for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
        // op(a) is [3, 4] and op(b) is [4, 2] (with a leading 2 when batched).
        const lead = batched ? [2] : [];
        const sa = [...lead, ...(ta ? [4, 3] : [3, 4])];
        const sb = [...lead, ...(tb ? [2, 4] : [4, 2])];
        const a = tf.tensor(seededUniform(sa.reduce((x, y) => x * y), 31), sa);
        const b = tf.tensor(seededUniform(sb.reduce((x, y) => x * y), 32), sb);
        const what = `transposeA ${ta}, transposeB ${tb}${batched ? ', batched' : ''}`;
        const ref = tf.matMul((ta ? sw(a) : a) as tf.Tensor3D, (tb ? sw(b) : b) as tf.Tensor3D);
        close(await matMulFlagged(a, b, ta, tb).data(), await ref.data(), 1e-6, `value (${what})`);
        const w = tf.tensor(seededUniform(ref.size, 33), ref.shape);
        const fa = (t: tf.Tensor) => tf.sum(tf.mul(tf.square(matMulFlagged(t, b, ta, tb)), w));
        const fb = (t: tf.Tensor) => tf.sum(tf.mul(tf.square(matMulFlagged(a, t, ta, tb)), w));
        close(await tidyData(() => tf.grad(fa)(a)), await fdGrad(fa, a, 1e-2), 1e-2, `gradient wrt a (${what})`);
        close(await tidyData(() => tf.grad(fb)(b)), await fdGrad(fb, b, 1e-2), 1e-2, `gradient wrt b (${what})`);
        const ha = await hvpBothWays(fa, a, tf.tensor(seededUniform(a.size, 34), a.shape), 1e-2);
        close(ha.auto, ha.fd, 2e-2, `HVP wrt a (${what})`);
        const hb = await hvpBothWays(fb, b, tf.tensor(seededUniform(b.size, 35), b.shape), 1e-2);
        close(hb.auto, hb.fd, 2e-2, `HVP wrt b (${what})`);
      }
    }
    assert.throws(() => matMulFlagged(tf.zeros([2, 3]), tf.zeros([2, 3]), false, false), /do not multiply \(|do not multiply$/);
    assert.throws(() => matMulFlagged(tf.zeros([2, 3]), tf.zeros([4, 3]), true, true), /do not multiply \(transposeA true, transposeB true\)/);
  }));

  it('patchify orders patches row-major and each patch as (row, column, channel)', () => scoped(async () => {
    const N = 2; const H = 8; const W = 12; const C = 3; const p = 4;
    const img = seededUniform(N * H * W * C, 21);
    const out = patchify(tf.tensor4d(img, [N, H, W, C]), p);
    assert.deepEqual(out.shape, [N, (H / p) * (W / p), p * p * C]);
    const o = await out.data();
    const gw = W / p;
    let worst = 0;
    for (let n = 0; n < N; n++) for (let gy = 0; gy < H / p; gy++) for (let gx = 0; gx < gw; gx++) {
      for (let ky = 0; ky < p; ky++) for (let kx = 0; kx < p; kx++) for (let c = 0; c < C; c++) {
        const got = o[((n * (H / p) * gw + gy * gw + gx) * p * p + ky * p + kx) * C + c];
        const want = img[((n * H + gy * p + ky) * W + gx * p + kx) * C + c];
        worst = Math.max(worst, Math.abs(got - want));
      }
    }
    assert.equal(worst, 0);
    assert.throws(() => patchify(tf.zeros([1, 10, 10, 3]), 4), /'patch' 4 must divide/);
    out.dispose();
  }));

  it('multi-head attention with key padding and causal masks matches a loop reference', () => scoped(async () => {
    const B = 2; const L = 5; const D = 8; const H = 2;
    const w = { qkvW: seededUniform(D * 3 * D, 31), qkvB: seededUniform(3 * D, 32), outW: seededUniform(D * D, 33), outB: seededUniform(D, 34) };
    const p: Params = {
      'a.qkv.weight': tf.tensor2d(w.qkvW, [D, 3 * D]), 'a.qkv.bias': tf.tensor1d(w.qkvB),
      'a.out.weight': tf.tensor2d(w.outW, [D, D]), 'a.out.bias': tf.tensor1d(w.outB),
    };
    const x = seededUniform(B * L * D, 35);
    const mask = [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]];
    const xt = tf.tensor3d(x, [B, L, D]);
    const kp = tf.tensor2d(mask);
    for (const causal of [false, true]) {
      const bias = attentionBias(B, L, { keyPadding: kp, causal });
      const y = multiHeadAttention(p, 'a', xt, H, bias);
      const want: number[] = [];
      for (let b = 0; b < B; b++) {
        const rows = Array.from({ length: L }, (_, i) => Array.from(x.slice((b * L + i) * D, (b * L + i + 1) * D)));
        want.push(...refAttention(rows, w, H, (i, j) => mask[b][j] === 1 && (!causal || j <= i)).flat());
      }
      close(await y.data(), want, 1e-4, `attention causal=${causal}`);
      tf.dispose([y, bias!]);
    }
    const none = multiHeadAttention(p, 'a', xt, H, attentionBias(B, L, {}));
    const wantNone: number[] = [];
    for (let b = 0; b < B; b++) {
      const rows = Array.from({ length: L }, (_, i) => Array.from(x.slice((b * L + i) * D, (b * L + i + 1) * D)));
      wantNone.push(...refAttention(rows, w, H, () => true).flat());
    }
    close(await none.data(), wantNone, 1e-4, 'attention without mask');
    assert.throws(() => multiHeadAttention(p, 'a', xt, 3), /'heads' 3 must divide the width 8/);
    tf.dispose([...Object.values(p), xt, kp, none]);
  }));

  it('a masked key gets zero weight: changing padded tokens, or later tokens under the causal mask, changes nothing else', () => scoped(async () => {
    const B = 1; const L = 6; const D = 8;
    const p: Params = {
      'a.qkv.weight': tf.tensor2d(seededUniform(D * 3 * D, 41), [D, 3 * D]), 'a.qkv.bias': tf.tensor1d(seededUniform(3 * D, 42)),
      'a.out.weight': tf.tensor2d(seededUniform(D * D, 43), [D, D]), 'a.out.bias': tf.tensor1d(seededUniform(D, 44)),
    };
    const x1 = seededUniform(L * D, 45);
    const x2 = Float32Array.from(x1);
    for (let i = 4 * D; i < L * D; i++) x2[i] += 5; // tokens 4 and 5 change
    const run = (x: Float32Array, mask: tf.Tensor | undefined, causal: boolean) => tidyData(() => multiHeadAttention(p, 'a', tf.tensor3d(x, [B, L, D]), 2, attentionBias(B, L, { keyPadding: mask, causal })));
    const kp = tf.tensor2d([[1, 1, 1, 1, 0, 0]]);
    const a = await run(x1, kp, false); const b = await run(x2, kp, false);
    assert.deepEqual(a.slice(0, 4 * D), b.slice(0, 4 * D), 'padding: real positions are unchanged');
    const c = await run(x1, undefined, true); const d = await run(x2, undefined, true);
    assert.deepEqual(c.slice(0, 4 * D), d.slice(0, 4 * D), 'causal: earlier positions are unchanged');
    const e = await run(x1, undefined, false); const f = await run(x2, undefined, false);
    assert.ok(relErr(e.slice(0, 4 * D), f.slice(0, 4 * D)) > 1e-3, 'without a mask the change does reach them');
    tf.dispose([...Object.values(p), kp]);
  }));
});

describe('nn: dual encoder', () => {
  it('tiny encoders give [B, E]; text pooling reads the last real token, so padding never matters', () => scoped(async () => {
    const cfg = getConfig('tiny');
    const store = initDualEncoder(cfg, 3);
    const p = store.snapshot();
    const frames = framesBatch(2, 3, 32, 51);
    const v = encodeVideo(p, frames, cfg);
    assert.deepEqual(v.shape, [2, 64]);
    const { ids, mask } = textBatch([4, 7], 9, cfg.text.vocabSize, 52);
    const t = encodeText(p, ids, mask, cfg);
    assert.deepEqual(t.shape, [2, 64]);
    // Row 0 alone and unpadded, at length 4, must give the same embedding.
    const ids0 = tf.slice(ids, [0, 0], [1, 4]);
    const alone = encodeText(p, ids0, tf.ones([1, 4]), cfg);
    close(await alone.data(), (await t.data()).slice(0, 64), 1e-5, 'padded vs unpadded row');
    // Garbage in padded positions changes nothing.
    const idsArr = await ids.array(); idsArr[0][6] = 17; idsArr[0][8] = 999;
    const t2 = encodeText(p, tf.tensor2d(idsArr, undefined, 'int32'), mask, cfg);
    assert.deepEqual(await t2.data(), await t.data());
    // The video embedding does depend on every frame (mean pooling over time).
    const frames2 = tf.concat([tf.slice(frames, [0, 0, 0, 0, 0], [2, 2, 32, 32, 3]), tf.zeros([2, 1, 32, 32, 3])], 1);
    assert.ok(relErr(await encodeVideo(p, frames2, cfg).data(), await v.data()) > 1e-3);
    store.dispose();
  }));

  it('temporal transformer pooling and CLS pooling run, with their own parameters', () => scoped(async () => {
    const cfg = getConfig('tiny', { temporal: { pooling: 'transformer' }, text: { causal: false, pooling: 'cls' } });
    const store = initDualEncoder(cfg, 4);
    assert.ok(store.has('video.temporal.pos_embed') && store.has('video.temporal.blocks.0.attn.qkv.weight'));
    const p = store.snapshot();
    assert.deepEqual(encodeVideo(p, framesBatch(3, 2, 32, 53), cfg).shape, [3, 64]);
    const { ids, mask } = textBatch([3, 5], 5, cfg.text.vocabSize, 54);
    const t = encodeText(p, ids, mask, cfg);
    // Bidirectional with CLS: row 0's padded tail is masked out as keys, so its ids do not matter.
    const idsArr = await ids.array(); idsArr[0][4] = 5;
    assert.deepEqual(await encodeText(p, tf.tensor2d(idsArr, undefined, 'int32'), mask, cfg).data(), await t.data());
    assert.throws(() => encodeVideo(p, framesBatch(1, 9, 32, 55), cfg), /9 frames per clip, more than temporal.maxFrames 8/);
    store.dispose();
  }));

  it('vision.motion: each frame\'s patches add the embedded difference to the next frame, so order shows even under mean pooling', () => scoped(async () => {
    const plain = getConfig('tiny');
    const cfg = getConfig('tiny', { vision: { motion: true } });
    const store = initDualEncoder(cfg, 8);
    const p = store.snapshot();
    assert.deepEqual(p['video.temporal.motion_embed.weight'].shape, [8 * 8 * 3, 64]);
    assert.ok(!dualEncoderSpecs(plain).some((s) => s.name.includes('motion')), 'no motion parameter without vision.motion');
    const frames = framesBatch(2, 3, 32, 81);
    const reversed = tf.reverse(frames, 1);
    // Mean pooling of per-frame tokens cannot tell a clip from its reverse; the differences can.
    close(await encodeVideo(p, reversed, plain).data(), await encodeVideo(p, frames, plain).data(), 1e-5, 'plain, reversed');
    const gap = (await tf.max(tf.abs(tf.sub(encodeVideo(p, reversed, cfg), encodeVideo(p, frames, cfg)))).data())[0];
    assert.ok(gap > 1e-2, `motion: a reversed clip embeds differently (max gap ${gap})`);
    // A still clip has no differences: the motion model is the plain one.
    const still = tf.tile(tf.slice(frames, [0, 0, 0, 0, 0], [2, 1, 32, 32, 3]), [1, 3, 1, 1, 1]);
    close(await encodeVideo(p, still, cfg).data(), await encodeVideo(p, still, plain).data(), 1e-5, 'still clip');
    // With W_motion = W_patch, a 2-frame clip [f0, f1] gets patches of f0 + (f1 − f0) and
    // f1 + (f1 − f0) (the last frame repeats the difference before it): the plain model on [f1, 2·f1 − f0].
    const two = framesBatch(2, 2, 32, 82);
    const f0 = tf.slice(two, [0, 0, 0, 0, 0], [2, 1, 32, 32, 3]);
    const f1 = tf.slice(two, [0, 1, 0, 0, 0], [2, 1, 32, 32, 3]);
    const same = { ...p, 'video.temporal.motion_embed.weight': p['video.patch_embed.weight'] };
    close(await encodeVideo(same, two, cfg).data(), await encodeVideo(p, tf.concat([f1, tf.sub(tf.mul(f1, 2), f0)], 1), plain).data(), 1e-4, 'hand-built differences');
    assert.equal(paramGroup('video.temporal.motion_embed.weight').group, 'temporal', 'trained at the temporal rate (no CLIP counterpart)');
    store.dispose();
  }));

  it('vision.motionInput foreground: differences of |f − the clip mean|, the same for a clip and its inverted contrast', () => scoped(async () => {
    const diffCfg = getConfig('tiny', { vision: { motion: true } });
    const fgCfg = getConfig('tiny', { vision: { motion: true, motionInput: 'foreground' } });
    const plain = getConfig('tiny');
    const p = initDualEncoder(fgCfg, 12).snapshot();
    // Only the motion path: with the patch embedding at zero every frame token is its motion.
    const motionOnly = { ...p, 'video.patch_embed.weight': tf.zerosLike(p['video.patch_embed.weight']) };
    const frames = framesBatch(2, 3, 32, 95);
    const inverted = tf.neg(frames);
    close(await encodeVideo(motionOnly, inverted, fgCfg).data(), await encodeVideo(motionOnly, frames, fgCfg).data(), 1e-5, 'foreground: inverted contrast');
    const gap = (await tf.max(tf.abs(tf.sub(encodeVideo(motionOnly, inverted, diffCfg), encodeVideo(motionOnly, frames, diffCfg)))).data())[0];
    assert.ok(gap > 1e-2, `difference: inverted contrast embeds differently (max gap ${gap})`);
    // With W_motion = W_patch, a 3-frame clip with g_k = |f_k − (f0 + f1 + f2)/3| is the plain
    // model on [f0 + g1 − g0, f1 + g2 − g1, f2 + g2 − g1] (the last frame repeats the difference).
    const three = framesBatch(2, 3, 32, 96);
    const f = [0, 1, 2].map((k) => tf.slice(three, [0, k, 0, 0, 0], [2, 1, 32, 32, 3]));
    const m = tf.div(tf.addN(f), 3);
    const g = f.map((fk) => tf.abs(tf.sub(fk, m)));
    const d01 = tf.sub(g[1], g[0]);
    const d12 = tf.sub(g[2], g[1]);
    const same = { ...p, 'video.temporal.motion_embed.weight': p['video.patch_embed.weight'] };
    const handBuilt = tf.concat([tf.add(f[0], d01), tf.add(f[1], d12), tf.add(f[2], d12)], 1);
    close(await encodeVideo(same, three, fgCfg).data(), await encodeVideo(p, handBuilt, plain).data(), 1e-4, 'hand-built foreground differences');
  }));

  it('vision.attention joint: a still clip with equal time embeddings is the per-frame model; frames then see each other and their order; gradients match finite differences', () => scoped(async () => {
    const frameCfg = getConfig('tiny');
    const jointCfg = getConfig('tiny', { vision: { attention: 'joint' } });
    const p = initDualEncoder(jointCfg, 13).snapshot();
    assert.deepEqual(p['video.time_embed'].shape, [8, 64]);
    assert.ok(!dualEncoderSpecs(frameCfg).some((s) => s.name === 'video.time_embed'));
    // Softmax over t copies of each key gives each copy 1/t of the weight it had alone, and the
    // copies carry the same value: attention over a still clip's frames is attention within one.
    const flat = { ...p, 'video.time_embed': tf.zerosLike(p['video.time_embed']) };
    const still = tf.tile(framesBatch(2, 1, 32, 97), [1, 3, 1, 1, 1]);
    close(await encodeVideo(flat, still, jointCfg).data(), await encodeVideo(p, still, frameCfg).data(), 1e-4, 'still clip, equal time embeddings');
    // Mean pooling of per-frame tokens cannot see the order; joint attention with time embeddings does.
    const frames = framesBatch(2, 3, 32, 98);
    const reversed = tf.reverse(frames, 1);
    close(await encodeVideo(p, reversed, frameCfg).data(), await encodeVideo(p, frames, frameCfg).data(), 1e-5, 'per frame, reversed');
    const gap = (await tf.max(tf.abs(tf.sub(encodeVideo(p, reversed, jointCfg), encodeVideo(p, frames, jointCfg)))).data())[0];
    assert.ok(gap > 1e-2, `joint: a reversed clip embeds differently (max gap ${gap})`);
    assert.throws(() => encodeVideo(p, framesBatch(1, 9, 32, 99), jointCfg), /9 frames per clip, more than temporal.maxFrames 8/);

    const microJoint = getConfig('tiny', { ...micro, name: 'micro-joint', vision: { ...micro.vision, attention: 'joint' } });
    const q = initDualEncoder(microJoint, 14).snapshot();
    const clip = framesBatch(2, 3, 8, 100);
    const { ids, mask } = textBatch([4, 6], 6, microJoint.text.vocabSize, 101);
    for (const name of ['video.time_embed', 'video.blocks.0.attn.qkv.weight']) {
      const f = (v: tf.Tensor) => clipLoss({ ...q, [name]: v }, microJoint, clip, ids, mask);
      close(await tidyData(() => tf.grad(f)(q[name])), await fdGrad(f, q[name], 1e-2), 2e-2, `gradient wrt ${name}`);
    }
  }));

  it('vision.stem conv: stride-2 3×3 convolutions match a loop reference, then patches of the feature map; gradients and HVPs match finite differences', () => scoped(async () => {
    const cfg = getConfig('tiny', { vision: { stem: 'conv', patchSize: 8 } });
    const p = initDualEncoder(cfg, 9).snapshot();
    assert.deepEqual(p['video.stem.conv1.weight'].shape, [3, 3, 3, 16]);
    assert.deepEqual(p['video.stem.conv2.weight'].shape, [3, 3, 16, 32]);
    assert.deepEqual(p['video.patch_embed.weight'].shape, [2 * 2 * 32, 64], 'patches of the 8×8×32 map, 2 × 2 features each');
    const withMotion = getConfig('tiny', { vision: { stem: 'conv', motion: true, patchSize: 8 } });
    const specs = dualEncoderSpecs(withMotion);
    assert.deepEqual(specs.find((s) => s.name === 'video.stem.conv1.weight')?.shape, [3, 3, 3, 16], 'the stem sees the frame only');
    assert.ok(specs.some((s) => s.name === 'video.temporal.motion_embed.weight'), 'differences keep their linear embedding');
    assert.equal(paramGroup('video.stem.conv1.weight').group, 'encoder');
    assert.throws(() => validateConfig(getConfig('tiny', { vision: { stem: 'conv', patchSize: 2, imageSize: 32 } })), /multiple of 4/);
    assert.throws(() => clipTensorShapes(cfg), /vision\.stem 'conv', which CLIP has no place for/, 'no CLIP start or export with the stem');

    // Both convolutions by loops: TensorFlow's 'same' padding at stride 2 on an even side pads
    // nothing before and one pixel after, so output (i, j) reads input rows 2i..2i+2.
    const micro2 = getConfig('tiny', {
      name: 'micro-stem',
      vision: { imageSize: 8, patchSize: 4, width: 8, layers: 1, heads: 2, stem: 'conv', motion: true },
      text: { vocabSize: 20, contextLength: 6, width: 8, layers: 1, heads: 2 },
      temporal: { pooling: 'transformer', maxFrames: 3, layers: 1, heads: 2 },
      embedDim: 8,
    });
    const q = initDualEncoder(micro2, 10).snapshot();
    const frames = framesBatch(2, 2, 8, 91);
    const x = await frames.data();
    const [w1, b1, w2, b2] = await Promise.all(['conv1.weight', 'conv1.bias', 'conv2.weight', 'conv2.bias'].map((n) => q[`video.stem.${n}`].data()));
    const at = (b: number, t: number, y: number, xx: number, c: number) => x[(((b * 2 + t) * 8 + y) * 8 + xx) * 3 + c];
    const input = (y: number, xx: number, c: number) => at(1, 1, y, xx, c);
    const conv = (inp: (y: number, xx: number, c: number) => number, side: number, cin: number, cout: number, w: ArrayLike<number>, bias: ArrayLike<number>) => {
      const out: number[][][] = [];
      for (let i = 0; i < side / 2; i++) {
        out.push([]);
        for (let j = 0; j < side / 2; j++) {
          out[i].push([]);
          for (let o = 0; o < cout; o++) {
            let s = bias[o];
            for (let dy = 0; dy < 3; dy++) for (let dx = 0; dx < 3; dx++) {
              const yy = 2 * i + dy; const xx = 2 * j + dx;
              if (yy >= side || xx >= side) continue;
              for (let c = 0; c < cin; c++) s += inp(yy, xx, c) * w[((dy * 3 + dx) * cin + c) * cout + o];
            }
            out[i][j].push(refGelu(s));
          }
        }
      }
      return out;
    };
    const h1 = conv(input, 8, 3, 2, w1, b1);
    const h2 = conv((y, xx, c) => h1[y][xx][c], 4, 2, 4, w2, b2);
    const stem = await tidyData(() => tf.slice(convStem(q, frames, micro2), [3, 0, 0, 0], [1, 2, 2, 4]));
    close(stem, h2.flat(2), 1e-4, 'stem against loops (clip 1, frame 1)');

    const { ids, mask } = textBatch([4, 6], 6, micro2.text.vocabSize, 92);
    for (const name of ['video.stem.conv1.weight', 'video.stem.conv2.bias', 'video.patch_embed.weight', 'video.temporal.motion_embed.weight']) {
      const f = (v: tf.Tensor) => clipLoss({ ...q, [name]: v }, micro2, frames, ids, mask);
      const auto = await tidyData(() => tf.grad(f)(q[name]));
      close(auto, await fdGrad(f, q[name], 1e-2), 2e-2, `gradient wrt ${name}`);
    }
    // Second order through both convolutions (the bilevel step with metaScope 'all' takes it).
    const target = tf.tensor2d(seededUniform(2 * 8, 93), [2, 8]);
    const x0 = q['video.stem.conv1.weight'];
    const f2 = (v: tf.Tensor) => tf.sum(tf.mul(ops.l2Normalize(encodeVideo({ ...q, 'video.stem.conv1.weight': v }, frames, micro2), 1), target));
    const rms = Math.sqrt((await tidyData(() => tf.mean(tf.square(x0))))[0]);
    const v = tf.tensor(seededUniform(x0.size, 94).map((u) => u * rms), x0.shape);
    const { auto, fd } = await hvpBothWays(f2, x0, v, 1e-2);
    assert.ok(Math.max(...Array.from(fd, Math.abs)) > 1e-3, 'the Hessian is not trivially zero');
    close(auto, fd, 1e-2, 'HVP wrt video.stem.conv1.weight');
  }));

  it('the forward takes plain tensors θ′ = θ − α·g and agrees with variables holding the same values', async () => {
    const cfg = getConfig('tiny');
    const store = initDualEncoder(cfg, 5);
    const frames = framesBatch(4, 2, 32, 61);
    const { ids, mask } = textBatch([3, 6, 2, 8], 8, cfg.text.vocabSize, 62);
    const theta = store.snapshot();
    const { value, grads } = valueAndGradsOf((p) => clipLoss(p, cfg, frames, ids, mask), theta);
    const thetaPrime: Params = {};
    for (const n of store.names()) thetaPrime[n] = tf.sub(theta[n], tf.mul(grads[n], 0.1));
    assert.ok(!(thetaPrime['text.proj.weight'] instanceof tf.Variable));
    const other = initDualEncoder(cfg, 99);
    other.assign(thetaPrime, { requireAll: true });
    const vPlain = await encodeVideo(thetaPrime, frames, cfg).data();
    const vVar = await encodeVideo(other.snapshot(), frames, cfg).data();
    assert.deepEqual(vPlain, vVar);
    assert.deepEqual(await encodeText(thetaPrime, ids, mask, cfg).data(), await encodeText(other.snapshot(), ids, mask, cfg).data());
    // And the step lowers the loss (the gradient points the right way).
    const after = (await clipLoss(thetaPrime, cfg, frames, ids, mask).data())[0];
    assert.ok(after < (await value.data())[0], `loss ${(await value.data())[0]} → ${after}`);
    tf.dispose([value, ...Object.values(grads), ...Object.values(thetaPrime), frames, ids, mask]);
    store.dispose(); other.dispose();
  });

  it('gradients wrt every parameter (temporal transformer included) are finite and non-zero', async () => {
    const cfg = getConfig('tiny', { temporal: { pooling: 'transformer' } });
    const store = initDualEncoder(cfg, 6);
    const frames = framesBatch(4, 3, 32, 71);
    const { ids, mask } = textBatch([3, 6, 2, 8], 8, cfg.text.vocabSize, 72);
    await scoped(async () => {
      const { grads } = valueAndGradsOf((p) => clipLoss(p, cfg, frames, ids, mask), store.snapshot());
      assert.equal(Object.keys(grads).length, store.names().length);
      for (const [n, g] of Object.entries(grads)) {
        const d = await g.data();
        assert.ok(d.every(Number.isFinite), `${n}: non-finite gradient`);
        assert.ok(d.some((x) => Math.abs(x) > 0), `${n}: all-zero gradient`);
      }
    });
    tf.dispose([frames, ids, mask]);
    store.dispose();
  });

  it('second order: Hessian-vector products through the whole text and video encoders match finite differences', async () => {
    const store = initDualEncoder(micro, 8);
    const p0 = store.snapshot();
    const frames = framesBatch(2, 2, 8, 81);
    const { ids, mask } = textBatch([4, 6], 6, micro.text.vocabSize, 82);
    const target = tf.tensor2d(seededUniform(2 * 8, 83), [2, 8]);
    const cases: { name: string; loss: (p: Params) => tf.Tensor }[] = [
      // The first block's norm sits before attention, softmax, MLP, EOS pooling and the projection.
      { name: 'text.blocks.0.ln_1.weight', loss: (p) => encodeText(p, ids, mask, micro) },
      { name: 'text.token_embed.weight', loss: (p) => encodeText(p, ids, mask, micro) },
      { name: 'video.patch_embed.weight', loss: (p) => encodeVideo(p, frames, micro) },
      { name: 'video.temporal.blocks.0.attn.qkv.weight', loss: (p) => encodeVideo(p, frames, micro) },
    ];
    for (const c of cases) {
      const x0 = p0[c.name];
      const f = (x: tf.Tensor) => tf.sum(tf.mul(ops.l2Normalize(c.loss({ ...p0, [c.name]: x }), 1), target));
      // Steps relative to the parameter's scale: embeddings start at std 0.01–0.02, where an
      // absolute step of 0.01 would be far outside the quadratic regime of the difference.
      const rms = Math.sqrt((await tidyData(() => tf.mean(tf.square(x0))))[0]);
      const v = tf.tensor(seededUniform(x0.size, 84).map((u) => u * rms), x0.shape);
      const { auto, fd } = await hvpBothWays(f, x0, v, 1e-2);
      assert.ok(Math.max(...Array.from(fd, Math.abs)) > 1e-3, `${c.name}: the Hessian is not trivially zero`);
      close(auto, fd, 1e-2, `HVP wrt ${c.name}`);
      v.dispose();
    }
    tf.dispose([frames, ids, mask, target]);
    store.dispose();
  });

  it('bilevel: the hypergradient of a meta loss through one virtual SGD step of the micro model matches finite differences', async () => {
    const store = initDualEncoder(micro, 9);
    const theta = store.snapshot();
    const names = store.names();
    const frames = framesBatch(3, 2, 8, 91);
    const { ids, mask } = textBatch([3, 6, 4], 6, micro.text.vocabSize, 92);
    const mFrames = framesBatch(3, 2, 8, 93);
    const m = textBatch([5, 2, 6], 6, micro.text.vocabSize, 94);
    const alpha = 0.1;
    const perSample = (p: Params, fr: tf.Tensor, ii: tf.Tensor, mm: tf.Tensor) => {
      const v = ops.l2Normalize(encodeVideo(p, fr, micro), 1);
      const t = ops.l2Normalize(encodeText(p, ii, mm, micro), 1);
      const logits = tf.mul(tf.matMul(v, t, false, true), ops.exp(p.logit_scale));
      return ops.softmaxCrossEntropy(logits, tf.range(0, fr.shape[0], 1, 'int32'));
    };
    const metaLoss = (eps: tf.Tensor) => {
      const { grads } = valueAndGradsOf((p) => tf.sum(tf.mul(perSample(p, frames, ids, mask), eps)) as tf.Scalar, theta, names);
      const prime: Params = {};
      for (const n of names) prime[n] = tf.sub(theta[n], tf.mul(grads[n], alpha));
      return tf.mean(perSample(prime, mFrames, m.ids, m.mask));
    };
    const eps0 = tf.tensor1d([0.5, 0.3, 0.2]);
    const before = tf.memory().numTensors;
    const hyper = await tidyData(() => tf.grad(metaLoss)(eps0));
    assert.equal(tf.memory().numTensors, before, 'no tensors leaked');
    const fd = await fdGrad(metaLoss, eps0, 5e-3);
    assert.ok(Math.max(...Array.from(fd, Math.abs)) > 1e-3, 'the hypergradient is not trivially zero');
    close(hyper, fd, 1e-2, 'hypergradient');
    tf.dispose([frames, ids, mask, mFrames, m.ids, m.mask, eps0]);
    store.dispose();
  });

  it('numTensors stays flat across 5 forward+backward steps', () => {
    const cfg = getConfig('tiny', { temporal: { pooling: 'transformer' } });
    const store = initDualEncoder(cfg, 10);
    const frames = framesBatch(4, 2, 32, 101);
    const { ids, mask } = textBatch([3, 6, 2, 8], 8, cfg.text.vocabSize, 102);
    const counts: number[] = [];
    for (let i = 0; i < 5; i++) {
      tf.tidy(() => {
        const { grads } = valueAndGradsOf((p) => clipLoss(p, cfg, frames, ids, mask), store.snapshot());
        for (const n of store.names()) store.get(n).assign(tf.sub(store.get(n), tf.mul(grads[n], 1e-3)));
      });
      counts.push(tf.memory().numTensors);
    }
    assert.ok(counts.every((c) => c === counts[0]), `numTensors per step: ${counts}`);
    tf.dispose([frames, ids, mask]);
    store.dispose();
  });

  it('base has CLIP ViT-B/16\'s parameter count (formula by hand, and the published 149,620,737), computed without allocating', () => {
    const before = tf.memory().numTensors;
    const base = getConfig('base');
    const block = (d: number) => 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d);
    const vision = 16 * 16 * 3 * 768 + 768 + (1 + 14 * 14) * 768 + 2 * 768 + 12 * block(768) + 2 * 768 + 768 * 512;
    const text = 49408 * 512 + 77 * 512 + 12 * block(512) + 2 * 512 + 512 * 512;
    assert.equal(countDualEncoderParams(base), vision + text + 1);
    assert.equal(countDualEncoderParams(base), 149_620_737);
    assert.equal(countDualEncoderParams(base, 'video.'), vision);
    const withTemporal = getConfig('base', { temporal: { pooling: 'transformer', layers: 4, maxFrames: 12 } });
    assert.equal(countDualEncoderParams(withTemporal) - 149_620_737, 12 * 768 + 4 * block(768));
    assert.equal(tf.memory().numTensors, before);
    assert.deepEqual(dualEncoderSpecs(base).find((s) => s.name === 'video.patch_embed.weight')?.shape, [768, 768]);
  });

  it('parameter groups: heads, temporal, encoder; no decay on biases, norms, logit scale, class embedding', () => {
    assert.deepEqual(paramGroup('video.proj.weight'), { group: 'head', decay: true });
    assert.deepEqual(paramGroup('logit_scale'), { group: 'head', decay: false });
    assert.deepEqual(paramGroup('text.blocks.3.ln_1.weight'), { group: 'encoder', decay: false });
    assert.deepEqual(paramGroup('text.blocks.3.mlp.fc1.bias'), { group: 'encoder', decay: false });
    assert.deepEqual(paramGroup('text.blocks.3.mlp.fc1.weight'), { group: 'encoder', decay: true });
    assert.deepEqual(paramGroup('video.temporal.blocks.0.attn.qkv.weight'), { group: 'temporal', decay: true });
    assert.deepEqual(paramGroup('video.class_embedding'), { group: 'encoder', decay: false });
    const names = dualEncoderSpecs(getConfig('tiny')).map((s) => s.name);
    assert.deepEqual(names.filter((n) => paramGroup(n).group === 'head').sort(), ['logit_scale', 'text.proj.weight', 'video.proj.weight']);
  });

  it('rejects bad configs and inputs with the argument named', () => tf.tidy(() => {
    assert.throws(() => getConfig('tiny', { vision: { patchSize: 5 } }), /vision.patchSize: patchSize 5 must divide imageSize 32/);
    assert.throws(() => validateConfig({ ...getConfig('tiny'), embedDim: 0 }, 'x.json'), /invalid dual-encoder config \(x.json\):\n {2}embedDim/);
    assert.throws(() => getConfig('tiny', { text: { pooling: 'cls' } }), /text.pooling: CLS pooling needs a bidirectional/);
    const cfg = getConfig('tiny');
    const store = initDualEncoder(cfg, 0);
    const p = store.snapshot();
    assert.throws(() => encodeVideo(p, tf.zeros([1, 2, 16, 16, 3]), cfg), /'frames' must be \[B, T, 32, 32, 3\]/);
    assert.throws(() => encodeText(p, tf.zeros([1, 4]), tf.ones([1, 4]), cfg), /'ids' must be an int32/);
    assert.throws(() => encodeText(p, tf.zeros([1, 17], 'int32'), tf.ones([1, 17]), cfg), /length 17, more than text.contextLength 16/);
    assert.throws(() => encodeText(p, tf.zeros([1, 4], 'int32'), tf.ones([1, 3]), cfg), /'mask' must be \[1, 4\]/);
    assert.throws(() => valueAndGradsOf((q) => tf.sum(q['text.proj.weight']) as tf.Scalar, p), /does not depend on every named parameter/);
    const { 'text.proj.weight': _drop, ...rest } = p;
    assert.throws(() => encodeText(rest, tf.zeros([1, 4], 'int32'), tf.ones([1, 4]), cfg), /missing parameter 'text.proj.weight'/);
    store.dispose();
  }));

  it('assertTokenIds: an id outside the vocabulary is named with its flat index; in-range ids pass', async () => {
    const cfg = getConfig('tiny');
    const bad = tf.tensor2d([[1, 1000]], undefined, 'int32');
    await assert.rejects(assertTokenIds(bad, cfg.text.vocabSize), /textFeatures: 'ids' holds 1000 at flat index 1, outside the vocabulary \[0, 1000\)/);
    const neg = tf.tensor2d([[0, 5, -1]], undefined, 'int32');
    await assert.rejects(assertTokenIds(neg, 1000, 'eval', 'tokens'), /eval: 'tokens' holds -1 at flat index 2/);
    const ok = tf.tensor2d([[0, 999]], undefined, 'int32');
    await assertTokenIds(ok, 1000);
    await assert.rejects(assertTokenIds(tf.zeros([1, 2]), 1000), /'ids' must be an int32 tensor, got float32/);
    tf.dispose([bad, neg, ok]);
  });
});
