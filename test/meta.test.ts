import assert from 'node:assert/strict';
import { tf } from '../src/backend/tf.js';
import { acos, exp, l2Normalize, logSumExp, tanh } from '../src/backend/safeOps.js';
import { samContrastiveLoss } from '../src/margin/sam.js';
import { AdamW } from '../src/train/optimizer.js';
import {
  auroc, isMetaStep, l2rwScores, l2rwStep, l2rwWeights, MetaBatchCycler, metaGradient, mwnStep, normalizeWeights,
  weightCurve, weightingInputs, weightingReport, WeightNet, WEIGHT_NET_PARAM_NAMES, type MetaModel, type WeightingInput, type MetaScope, type WeightNormalization,
} from '../src/meta/index.js';
import { getConfig } from '../src/nn/configs.js';
import { initDualEncoder } from '../src/nn/dualEncoder.js';
import { dualEncoderMetaModel, type DualEncoderBatch } from '../src/meta/dualEncoderModel.js';
import { relErr, seededUniform } from './helpers/fd.js';
import { tidyData } from './helpers/read.js';

type Params = Record<string, tf.Tensor>;

// ---- a tiny two-tower model: linear + tanh encoders, linear heads, a SAM-style loss (safe ops only) ----

interface ToyBatch { x: tf.Tensor2D; y: tf.Tensor2D }
const DX = 4; const DY = 3; const HID = 5; const EMB = 3;
const HEADS = ['v.proj', 't.proj', 'logit_scale'];

/** SAM written out directly: logit_ij = s·cos(max(θ_ij − μ[i=j], 0)), ℓᵢ = ½(row CE + column CE). */
function samLike(v: tf.Tensor, t: tf.Tensor, logScale: tf.Tensor, mu: number): tf.Tensor {
  const n = v.shape[0];
  const cos = tf.matMul(l2Normalize(v, 1), l2Normalize(t, 1), false, true);
  const theta = acos(tf.minimum(tf.maximum(cos, -1 + 1e-6), 1 - 1e-6));
  const eye = tf.eye(n);
  const logits = tf.mul(exp(logScale), tf.cos(tf.relu(tf.sub(theta, tf.mul(eye, mu)))));
  const diag = tf.sum(tf.mul(logits, eye), 1);
  return tf.mul(tf.add(tf.sub(logSumExp(logits, 1), diag), tf.sub(logSumExp(logits, 0), diag)), 0.5);
}

type HeadLoss = (v: tf.Tensor, t: tf.Tensor, logScale: tf.Tensor) => tf.Tensor;

function toyModel(headLoss: HeadLoss = (v, t, s) => samLike(v, t, s, 0.2)): MetaModel<ToyBatch> {
  const features = (p: Params, b: ToyBatch) => [
    tanh(tf.add(tf.matMul(b.x, p['v.enc.weight'] as tf.Tensor2D), p['v.enc.bias'])),
    tanh(tf.add(tf.matMul(b.y, p['t.enc.weight'] as tf.Tensor2D), p['t.enc.bias'])),
  ];
  const headPerSampleLoss = (p: Params, f: readonly tf.Tensor[], _b: ToyBatch) =>
    headLoss(tf.matMul(f[0] as tf.Tensor2D, p['v.proj'] as tf.Tensor2D), tf.matMul(f[1] as tf.Tensor2D, p['t.proj'] as tf.Tensor2D), p.logit_scale);
  return {
    headNames: HEADS,
    batchSize: (b) => b.x.shape[0],
    features,
    headPerSampleLoss,
    perSampleLoss: (p, b) => headPerSampleLoss(p, features(p, b), b),
  };
}

function toyParams(seed: number, logScale = Math.log(5)): Record<string, tf.Variable> {
  const v = (shape: number[], k: number, lo: number, hi: number) =>
    tf.variable(tf.tensor(seededUniform(shape.reduce((a, b) => a * b, 1), seed * 16 + k, lo, hi), shape), true);
  return {
    'v.enc.weight': v([DX, HID], 1, -0.9, 0.9), 'v.enc.bias': v([HID], 2, -0.2, 0.2), 'v.proj': v([HID, EMB], 3, -0.9, 0.9),
    't.enc.weight': v([DY, HID], 4, -0.9, 0.9), 't.enc.bias': v([HID], 5, -0.2, 0.2), 't.proj': v([HID, EMB], 6, -0.9, 0.9),
    logit_scale: tf.variable(tf.scalar(logScale), true),
  };
}

function toyBatch(n: number, seed: number): ToyBatch {
  return { x: tf.tensor2d(seededUniform(n * DX, seed, -1, 1), [n, DX]), y: tf.tensor2d(seededUniform(n * DY, seed + 1, -1, 1), [n, DY]) };
}

const disposeBatch = (b: ToyBatch) => tf.dispose([b.x, b.y]);
const disposeAll = (r: Record<string, tf.Tensor>) => tf.dispose(Object.values(r));

// ---- independent references ----

/** The weight net's forward in float64 JS from its parameter values: σ(W2ᵀ relu(W1ᵀ x + b1) + b2), x = ℓ or a row of D inputs. */
function weightNetRef(phi: Record<string, Float64Array>, losses: ArrayLike<number | readonly number[]>): { raw: number[]; minAbsPre: number } {
  const h = phi['fc1.bias'].length;
  let minAbsPre = Infinity;
  const raw = Array.from(losses, (l) => {
    const x = typeof l === 'number' ? [l] : l;
    let z = phi['fc2.bias'][0];
    for (let j = 0; j < h; j++) {
      let a = phi['fc1.bias'][j];
      for (let d = 0; d < x.length; d++) a += x[d] * phi['fc1.weight'][d * h + j];
      minAbsPre = Math.min(minAbsPre, Math.abs(a));
      z += Math.max(a, 0) * phi['fc2.weight'][j];
    }
    return 1 / (1 + Math.exp(-z));
  });
  return { raw, minAbsPre };
}

function normalizeRef(raw: number[], mode: WeightNormalization): number[] {
  const s = raw.reduce((a, b) => a + b, 0);
  return raw.map((r) => (mode === 'sum' ? r / s : r / raw.length));
}

/**
 * L_meta(θ′) recomputed from scratch with fixed weights w: θ′ = θ − α∇θ Σ wᵢℓᵢ over `names`
 * (a plain first-order gradient), then the mean loss of the meta batch at θ′.
 */
async function metaLossFromScratch<B>(model: MetaModel<B>, params: Params, train: B, meta: B, names: string[], w: ArrayLike<number>, alpha: number): Promise<number> {
  return (await tidyData(() => {
    const wt = tf.tensor1d(Float32Array.from(w));
    const g = tf.grads((...ts: tf.Tensor[]) => {
      const p = { ...params };
      names.forEach((n, i) => { p[n] = ts[i]; });
      return tf.sum(tf.mul(wt, model.perSampleLoss(p, train))) as tf.Scalar;
    })(names.map((n) => params[n]));
    const primed = { ...params };
    names.forEach((n, i) => { primed[n] = tf.sub(params[n], tf.mul(g[i], alpha)); });
    return tf.mean(model.perSampleLoss(primed, meta));
  }))[0];
}

async function readPhi(net: WeightNet): Promise<Record<string, Float64Array>> {
  const out: Record<string, Float64Array> = {};
  for (const n of WEIGHT_NET_PARAM_NAMES) out[n] = Float64Array.from(await net.params[n].data());
  return out;
}

/** Central differences of L_meta(θ′(φ)) over every entry of φ, the weights from the float64 reference net. */
async function fdHypergradient(
  model: MetaModel<ToyBatch>, params: Params, train: ToyBatch, meta: ToyBatch, names: string[], net: WeightNet,
  alpha: number, mode: WeightNormalization, h: number,
): Promise<{ fd: Record<string, Float64Array>; minAbsPre: number; maxLoss: number }> {
  const phi = await readPhi(net);
  const losses = await tidyData(() => model.perSampleLoss(params, train));
  const lossAt = (p: Record<string, Float64Array>) => metaLossFromScratch(model, params, train, meta, names, normalizeRef(weightNetRef(p, losses).raw, mode), alpha);
  const fd: Record<string, Float64Array> = {};
  for (const n of WEIGHT_NET_PARAM_NAMES) {
    fd[n] = new Float64Array(phi[n].length);
    for (let k = 0; k < phi[n].length; k++) {
      const plus = { ...phi, [n]: Float64Array.from(phi[n]) }; plus[n][k] += h;
      const minus = { ...phi, [n]: Float64Array.from(phi[n]) }; minus[n][k] -= h;
      fd[n][k] = ((await lossAt(plus)) - (await lossAt(minus))) / (2 * h);
    }
  }
  return { fd, minAbsPre: weightNetRef(phi, losses).minAbsPre, maxLoss: Math.max(...Array.from(losses)) };
}

function concat(r: Record<string, ArrayLike<number>>): number[] {
  return WEIGHT_NET_PARAM_NAMES.flatMap((n) => Array.from(r[n]));
}

/** Per-sample gradients ∇θ ℓᵢ, one backward per sample. */
async function perSampleGrads(model: MetaModel<ToyBatch>, params: Params, batch: ToyBatch): Promise<Record<string, Float32Array>[]> {
  const names = Object.keys(params);
  const n = batch.x.shape[0];
  const out: Record<string, Float32Array>[] = [];
  for (let i = 0; i < n; i++) {
    const g = tf.tidy(() => tf.grads((...ts: tf.Tensor[]) => {
      const p: Params = {};
      names.forEach((k, j) => { p[k] = ts[j]; });
      return tf.sum(tf.slice(model.perSampleLoss(p, batch), [i], [1])) as tf.Scalar;
    })(names.map((k) => params[k])));
    const r: Record<string, Float32Array> = {};
    for (const [j, k] of names.entries()) r[k] = (await g[j].data()) as Float32Array;
    tf.dispose(g);
    out.push(r);
  }
  return out;
}

// ---- tests ----

describe('meta: Meta-Weight-Net hypergradient against finite differences', () => {
  const cases: { scope: MetaScope; mode: WeightNormalization; loss: string }[] = [
    { scope: 'all', mode: 'sum', loss: 'SAM-style (test)' },
    { scope: 'heads', mode: 'sum', loss: 'SAM-style (test)' },
    { scope: 'all', mode: 'none', loss: 'SAM-style (test)' },
    { scope: 'all', mode: 'sum', loss: 'samContrastiveLoss (src/margin)' },
  ];
  for (const c of cases) {
    it(`∂L_meta/∂φ, scope '${c.scope}', normalize '${c.mode}', ${c.loss}`, async () => {
      const headLoss: HeadLoss | undefined = c.loss.startsWith('sam')
        ? (v, t, s) => samContrastiveLoss(v, t, { marginRad: 0.2, logitScale: s }).perSample
        : undefined;
      const model = toyModel(headLoss);
      const params = toyParams(3);
      const train = toyBatch(6, 101);
      const meta = toyBatch(5, 202);
      const net = new WeightNet({ hidden: 6, seed: 2 });
      const alpha = 2;
      const names = c.scope === 'all' ? Object.keys(params) : HEADS;
      const h = 1e-3;
      const { fd, minAbsPre, maxLoss } = await fdHypergradient(model, params, train, meta, names, net, alpha, c.mode, h);
      // No ReLU kink lies within the perturbation, so the central difference is of a smooth function.
      assert.ok(minAbsPre > 2 * h * (maxLoss + 1), `a hidden unit sits at a kink (|pre| ${minAbsPre}); pick another seed`);

      const before = tf.memory().numTensors;
      const { grads, metaLoss } = await metaGradient({ model, params, trainBatch: train, metaBatch: meta, weightNet: net, alpha, normalize: c.mode, metaScope: c.scope });
      const got: Record<string, Float32Array> = {};
      for (const n of WEIGHT_NET_PARAM_NAMES) got[n] = (await grads[n].data()) as Float32Array;
      disposeAll(grads);
      assert.equal(tf.memory().numTensors, before, 'metaGradient leaks no tensors');

      const a = concat(got);
      const b = concat(fd);
      const err = relErr(a, b, 1e-4);
      assert.ok(Math.max(...b.map(Math.abs)) > 1e-3, `hypergradient is not trivially small (max ${Math.max(...b.map(Math.abs))})`);
      assert.ok(err < 2e-2, `hypergradient ${a.map((x) => x.toFixed(5))}\n vs FD ${b.map((x) => x.toFixed(5))}\n rel err ${err}`);
      const uniformW = normalizeRef(weightNetRef(await readPhi(net), await tidyData(() => model.perSampleLoss(params, train))).raw, c.mode);
      const ref = await metaLossFromScratch(model, params, train, meta, names, uniformW, alpha);
      assert.ok(Math.abs(metaLoss - ref) < 1e-4 * Math.max(1, Math.abs(ref)), `metaLoss ${metaLoss} vs ${ref}`);
      net.dispose(); disposeAll(params); disposeBatch(train); disposeBatch(meta);
    });
  }
});

/** Cosines [B, B] of the toy model's projected embeddings (rows: x side, columns: y side). */
function toySims(model: MetaModel<ToyBatch>, params: Params, b: ToyBatch): tf.Tensor {
  return tf.tidy(() => {
    const [fx, fy] = model.features!(params, b);
    return tf.matMul(l2Normalize(tf.matMul(fx as tf.Tensor2D, params['v.proj'] as tf.Tensor2D), 1), l2Normalize(tf.matMul(fy as tf.Tensor2D, params['t.proj'] as tf.Tensor2D), 1), false, true);
  });
}

/** Columns `names` of `rows` as z-scores over the rows (population std), in float64. */
function zScoreColumns(rows: number[][], cols: number[]): number[][] {
  const out = rows.map((r) => [...r]);
  for (const c of cols) {
    const v = rows.map((r) => r[c]);
    const m = v.reduce((a, b) => a + b, 0) / v.length;
    const sd = Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length);
    out.forEach((r, i) => { r[c] = (v[i] - m) / (sd + 1e-6); });
  }
  return out;
}

/** The weight net's input rows in float64 JS, straight from the definitions (one positive per row: the diagonal; cosine and margins z-scored). */
function inputRowsRef(inputs: readonly WeightingInput[], losses: ArrayLike<number>, sims: number[][], source: number[], progress: number): number[][] {
  const n = sims.length;
  const standardised = inputs.flatMap((x, c) => (['cosine', 'rowMargin', 'columnMargin'].includes(x) ? [c] : []));
  return zScoreColumns(sims.map((row, i) => inputs.map((x) => {
    const others = (k: number) => Array.from({ length: n }, (_, j) => j).filter((j) => j !== k);
    const rowNeg = others(i).map((j) => row[j]);
    const colNeg = others(i).map((j) => sims[j][i]);
    switch (x) {
      case 'loss': return losses[i];
      case 'cosine': return row[i];
      case 'rowMargin': return row[i] - Math.max(...rowNeg);
      case 'columnMargin': return row[i] - Math.max(...colNeg);
      case 'rank': return (rowNeg.filter((v) => v > row[i]).length + colNeg.filter((v) => v > row[i]).length) / (2 * (n - 1));
      case 'source': return source[i];
      default: return progress;
    }
  })), standardised);
}

describe('meta: weighting inputs beyond the loss', () => {
  it('weightingInputs: cosine, margins to the hardest negative (z-scored), rank and progress of a hand-worked batch (groups keep a video\'s captions out of its negatives)', async () => {
    // Rows: videos; columns: captions. Rows 0 and 1 are the same video (group 7).
    const sims = tf.tensor2d([[0.9, 0.5, 0.95], [0.6, 0.4, 0.1], [0.2, 0.3, 0.8]]);
    const groups = tf.tensor1d([7, 7, 8], 'int32');
    const x = weightingInputs(['cosine', 'loss', 'rowMargin', 'columnMargin', 'rank', 'source', 'progress'], { similarities: sims, groups, source: [1, 0, 1], progress: 0.25 })!;
    assert.deepEqual(x.shape, [3, 6]);
    const got = await x.array() as number[][];
    // Pair 0: row negatives {0.95}, column negatives {0.2}: margins 0.9 − 0.95, 0.9 − 0.2; 1 of 2 negatives outscore it.
    // Pair 1: row {0.1}, column {0.3}: 0.4 − 0.1, 0.4 − 0.3; none outscore it.
    // Pair 2: row {0.2, 0.3}, column {0.95, 0.1}: 0.8 − 0.3, 0.8 − 0.95; 1 of 4.
    // Cosine and both margins (columns 0–2) are then z-scored over the batch.
    const want = zScoreColumns([[0.9, -0.05, 0.7, 0.5, 1, 0.25], [0.4, 0.3, 0.1, 0, 0, 0.25], [0.8, 0.5, -0.15, 0.25, 1, 0.25]], [0, 1, 2]);
    got.forEach((row, i) => row.forEach((v, j) => assert.ok(Math.abs(v - want[i][j]) < 1e-5, `[${i}][${j}] = ${v}, expected ${want[i][j]}`)));
    assert.equal(weightingInputs(['loss'], {}), undefined, 'loss only: nothing beyond the loss');
    assert.throws(() => weightingInputs(['loss', 'rank'], { progress: 0 }), /need 'similarities'/);
    assert.throws(() => weightingInputs(['loss', 'loss'], {}), /listed twice/);
    assert.throws(() => new WeightNet({ inputs: ['loss', 'colour' as WeightingInput] }), /unknown weighting input "colour"/);
    tf.dispose([sims, groups, x]);
  });

  it('∂L_meta/∂φ matches central differences with every input (loss, cosine, margins, rank, source, progress), scope \'heads\'', async () => {
    const inputs: WeightingInput[] = ['cosine', 'loss', 'rowMargin', 'columnMargin', 'rank', 'source', 'progress'];
    const model = toyModel();
    const params = toyParams(3);
    const train = toyBatch(6, 101);
    const meta = toyBatch(5, 202);
    const net = new WeightNet({ hidden: 6, seed: 2, inputs });
    assert.deepEqual(net.params['fc1.weight'].shape, [7, 6], 'the input width follows the list');
    const alpha = 2;
    const source = [1, 0, 1, 1, 0, 1];
    const progress = 0.4;
    const sims = toySims(model, params, train);
    const extra = weightingInputs(inputs, { similarities: sims, source, progress })!;
    const losses = await tidyData(() => model.perSampleLoss(params, train));
    const rows = inputRowsRef(inputs, losses, (await sims.array()) as number[][], source, progress);
    const phi = await readPhi(net);
    const h = 1e-3;
    const lossAt = (p: Record<string, Float64Array>) => metaLossFromScratch(model, params, train, meta, HEADS, normalizeRef(weightNetRef(p, rows).raw, 'sum'), alpha);
    const fd: Record<string, Float64Array> = {};
    for (const n of WEIGHT_NET_PARAM_NAMES) {
      fd[n] = new Float64Array(phi[n].length);
      for (let k = 0; k < phi[n].length; k++) {
        const plus = { ...phi, [n]: Float64Array.from(phi[n]) }; plus[n][k] += h;
        const minus = { ...phi, [n]: Float64Array.from(phi[n]) }; minus[n][k] -= h;
        fd[n][k] = ((await lossAt(plus)) - (await lossAt(minus))) / (2 * h);
      }
    }
    const maxAbsInput = Math.max(...rows.flat().map(Math.abs));
    assert.ok(weightNetRef(phi, rows).minAbsPre > 2 * h * (maxAbsInput + 1), 'no ReLU kink within the perturbation');

    const before = tf.memory().numTensors;
    const { grads } = await metaGradient({ model, params, trainBatch: train, metaBatch: meta, weightNet: net, alpha, metaScope: 'heads', sampleInputs: extra });
    const got: Record<string, Float32Array> = {};
    for (const n of WEIGHT_NET_PARAM_NAMES) got[n] = (await grads[n].data()) as Float32Array;
    disposeAll(grads);
    assert.equal(tf.memory().numTensors, before, 'metaGradient leaks no tensors');
    const a = concat(got);
    const b = concat(fd);
    // The non-loss inputs reach the hypergradient: their rows of fc1.weight get gradient too.
    const cosRow = Array.from(got['fc1.weight'].slice(0, 6));
    assert.ok(Math.max(...cosRow.map(Math.abs)) > 1e-4, `the cosine input's weights get a hypergradient (${cosRow})`);
    const err = relErr(a, b, 1e-4);
    assert.ok(Math.max(...b.map(Math.abs)) > 1e-3, 'hypergradient is not trivially small');
    assert.ok(err < 2e-2, `hypergradient ${a.map((x) => x.toFixed(5))}\n vs FD ${b.map((x) => x.toFixed(5))}\n rel err ${err}`);
    await assert.rejects(() => metaGradient({ model, params, trainBatch: train, metaBatch: meta, weightNet: net, alpha }), /'sampleInputs' must be a tensor \[B, 6\]/);
    net.dispose(); disposeAll(params); disposeBatch(train); disposeBatch(meta); tf.dispose([sims, extra]);
  });
});

describe('meta: the dual encoder as a MetaModel', () => {
  const cfg = getConfig('tiny', {
    name: 'micro',
    vision: { imageSize: 8, patchSize: 4, width: 8, layers: 1, heads: 2 },
    text: { vocabSize: 20, contextLength: 6, width: 8, layers: 1, heads: 2 },
    temporal: { pooling: 'transformer', maxFrames: 3, layers: 1, heads: 2 },
    embedDim: 8,
  });
  const batch = (n: number, seed: number): DualEncoderBatch => {
    const L = 6;
    const ids = new Int32Array(n * L);
    const mask = new Float32Array(n * L);
    const u = seededUniform(n * L, seed, 0, 1);
    for (let b = 0; b < n; b++) for (let i = 0; i < 3 + (b % 3); i++) { ids[b * L + i] = 1 + Math.floor(u[b * L + i] * 19); mask[b * L + i] = 1; }
    return {
      frames: tf.tensor(seededUniform(n * 2 * 8 * 8 * 3, seed + 1, -1.5, 1.5), [n, 2, 8, 8, 3]),
      ids: tf.tensor2d(ids, [n, L], 'int32'), mask: tf.tensor2d(mask, [n, L]),
    };
  };

  for (const scope of ['all', 'heads'] as MetaScope[]) {
    it(`∂L_meta/∂φ along a random direction matches finite differences (micro dual encoder + samContrastiveLoss, scope '${scope}')`, async () => {
      const model = dualEncoderMetaModel(cfg, { marginRad: 0.1 });
      assert.deepEqual([...model.headNames].sort(), ['logit_scale', 'text.proj.weight', 'video.proj.weight']);
      const store = initDualEncoder(cfg, 3);
      const params = store.snapshot() as Record<string, tf.Variable>;
      params.logit_scale.assign(tf.scalar(Math.log(5)));
      const train = batch(4, 11);
      const meta = batch(3, 22);
      const direct = await tidyData(() => model.perSampleLoss(params, train));
      const viaHeads = await tidyData(() => model.headPerSampleLoss!(params, model.features!(params, train), train));
      assert.ok(relErr(viaHeads, direct) < 1e-6, 'headPerSampleLoss(features) = perSampleLoss');

      const net = new WeightNet({ hidden: 8, seed: 23 });
      const alpha = 2;
      const names = scope === 'all' ? Object.keys(params) : [...model.headNames];
      const phi = await readPhi(net);
      const dir: Record<string, Float64Array> = {};
      WEIGHT_NET_PARAM_NAMES.forEach((n, k) => { dir[n] = Float64Array.from(seededUniform(phi[n].length, 900 + k, -1, 1)); });
      const h = 1e-2;
      const shifted = (sign: number) => Object.fromEntries(WEIGHT_NET_PARAM_NAMES.map((n) => [n, phi[n].map((v, k) => v + sign * h * dir[n][k])]));
      const lossAt = (p: Record<string, Float64Array>) => metaLossFromScratch(model, params, train, meta, names, normalizeRef(weightNetRef(p, direct).raw, 'sum'), alpha);
      const fd = ((await lossAt(shifted(1))) - (await lossAt(shifted(-1)))) / (2 * h);
      const { minAbsPre } = weightNetRef(phi, direct);
      assert.ok(minAbsPre > 2 * h * (Math.max(...Array.from(direct)) + 1), `no ReLU kink within the perturbation (|pre| ≥ ${minAbsPre})`);

      const before = tf.memory().numTensors;
      const { grads } = await metaGradient({ model, params, trainBatch: train, metaBatch: meta, weightNet: net, alpha, metaScope: scope });
      let dot = 0;
      for (const n of WEIGHT_NET_PARAM_NAMES) (await grads[n].data()).forEach((g, k) => { dot += g * dir[n][k]; });
      disposeAll(grads);
      assert.equal(tf.memory().numTensors, before, 'no tensors leaked');
      assert.ok(Math.abs(fd) > 1e-3, `directional derivative is not trivially small (${fd})`);
      assert.ok(Math.abs(dot - fd) < 5e-3 * Math.abs(fd), `⟨∇φ, d⟩ = ${dot} vs finite difference ${fd}`);
      net.dispose(); store.dispose();
      tf.dispose([train.frames, train.ids, train.mask, meta.frames, meta.ids, meta.mask]);
    });
  }

  it("l2rwStep on the micro dual encoder weighs by l2rwWeights of its scores, leaking nothing (both scopes; 'heads' reads its scores from detached features)", async () => {
    const model = dualEncoderMetaModel(cfg, { marginRad: 0.1 });
    const store = initDualEncoder(cfg, 5);
    const params = store.snapshot() as Record<string, tf.Variable>;
    const train = batch(4, 31);
    const meta = batch(3, 32);
    for (const scope of ['all', 'heads'] as MetaScope[]) {
      const before = tf.memory().numTensors;
      const a = await l2rwStep({ model, params, trainBatch: train, metaBatch: meta, alpha: 2, metaScope: scope });
      assert.ok(a.scores.some((x) => x !== 0), `scope ${scope}: non-trivial scores ${Array.from(a.scores)}`);
      assert.deepEqual(a.weights, l2rwWeights(a.scores), `scope ${scope}: weights`);
      assert.ok(Number.isFinite(a.loss) && Number.isFinite(a.metaLoss), `scope ${scope}: finite losses`);
      disposeAll(a.grads);
      assert.equal(tf.memory().numTensors, before, `scope ${scope}: no tensors leaked`);
    }
    store.dispose();
    tf.dispose([train.frames, train.ids, train.mask, meta.frames, meta.ids, meta.mask]);
  });
});

describe('meta: L2RW', () => {
  for (const scope of ['all', 'heads'] as MetaScope[]) {
    it(`scores equal −∂L_meta/∂εᵢ by finite differences, weights are the clipped normalised scores (scope '${scope}')`, async () => {
      const model = toyModel();
      const params = toyParams(5);
      const train = toyBatch(6, 303);
      const meta = toyBatch(5, 404);
      const alpha = 0.5;
      const names = scope === 'all' ? Object.keys(params) : HEADS;
      const h = 1e-3;
      const fd: number[] = [];
      for (let i = 0; i < 6; i++) {
        const ep = new Float64Array(6); ep[i] = h;
        const em = new Float64Array(6); em[i] = -h;
        fd.push(-((await metaLossFromScratch(model, params, train, meta, names, ep, alpha)) - (await metaLossFromScratch(model, params, train, meta, names, em, alpha))) / (2 * h));
      }
      const { scores } = await l2rwScores({ model, params, trainBatch: train, metaBatch: meta, alpha, metaScope: scope });
      const err = relErr(scores, fd, 1e-4);
      assert.ok(err < 1e-2, `scores ${Array.from(scores)} vs FD ${fd} (rel err ${err})`);
      assert.ok(fd.some((s) => s > 1e-3) && fd.some((s) => s < -1e-3), `the case has positive and negative scores: ${fd}`);

      const before = tf.memory().numTensors;
      const r = await l2rwStep({ model, params, trainBatch: train, metaBatch: meta, alpha, metaScope: scope });
      const pos = fd.map((s) => Math.max(s, 0));
      const sum = pos.reduce((x, y) => x + y, 0);
      assert.ok(relErr(r.weights, pos.map((p) => p / sum), 1e-3) < 2e-2, `weights ${Array.from(r.weights)} vs ${pos.map((p) => p / sum)}`);
      assert.ok(Math.abs(r.weights.reduce((x, y) => x + y, 0) - 1) < 1e-5, 'weights sum to 1');
      disposeAll(r.grads);
      assert.equal(tf.memory().numTensors, before, 'l2rwStep leaks no tensors');
      disposeAll(params); disposeBatch(train); disposeBatch(meta);
    });
  }

  for (const scope of ['all', 'heads'] as MetaScope[]) {
    it(`l2rwStep over 4 optimizer steps keeps a flat tensor count and clips some scores (scope '${scope}')`, async () => {
      const model = toyModel();
      const params = toyParams(13);
      const opt = new AdamW(params, { lr: 5e-2 });
      const train = toyBatch(6, 1313);
      const meta = toyBatch(5, 1414);
      let before = -1;
      let sawPositiveAndNegative = false;
      for (let i = 0; i < 4; i++) {
        if (i === 1) before = tf.memory().numTensors; // the optimizer's state exists after step 0
        const a = await l2rwStep({ model, params, trainBatch: train, metaBatch: meta, alpha: 0.5, metaScope: scope });
        sawPositiveAndNegative ||= a.scores.some((s) => s > 0) && a.scores.some((s) => s < 0);
        assert.deepEqual(a.weights, l2rwWeights(a.scores), `step ${i}: weights`);
        opt.step(a.grads);
        disposeAll(a.grads);
      }
      assert.ok(sawPositiveAndNegative, 'the weights clip some scores (a case where max(s, 0) matters)');
      assert.equal(tf.memory().numTensors, before, 'no tensors leaked over steps 1–3');
      await l2rwScores({ model, params, trainBatch: train, metaBatch: meta, alpha: 0.5, metaScope: scope });
      assert.equal(tf.memory().numTensors, before, 'l2rwScores leaks nothing');
      await assert.rejects(l2rwStep({ model, params, trainBatch: train, metaBatch: meta, alpha: -1 }), /l2rwStep: 'alpha'/);
      opt.dispose(); disposeAll(params); disposeBatch(train); disposeBatch(meta);
    });
  }

  it('l2rwWeights clips, normalises, and falls back to uniform', async () => {
    assert.deepEqual(Array.from(l2rwWeights([0.3, -0.2, 0.1]), (x) => +x.toFixed(6)), [0.75, 0, 0.25]);
    assert.deepEqual(Array.from(l2rwWeights([-1, 0, -0.5, -2])), [0.25, 0.25, 0.25, 0.25]);
    assert.throws(() => l2rwWeights([]), /non-empty/);
    assert.throws(() => l2rwWeights([0.1, NaN]), /scores\[1\]/);
  });
});

describe('meta: mwnStep', () => {
  for (const [scope, variant] of [['all', 'mwnStep'], ['heads', 'mwnStep'], ['all', 'mwnStep'], ['heads', 'mwnStep']] as const) {
    it(`moves φ by the hypergradient, then returns normalised weights of the updated net and Σ wᵢ∇ℓᵢ (${variant}, scope '${scope}')`, async () => {
      const model = toyModel();
      const params = toyParams(7);
      const train = toyBatch(6, 505);
      const meta = toyBatch(5, 606);
      const eta = 0.05;
      const net = new WeightNet({ hidden: 8, seed: 4, optimizer: 'sgd', lr: eta, momentum: 0, weightDecay: 0 });
      const { grads: hyper } = await metaGradient({ model, params, trainBatch: train, metaBatch: meta, weightNet: net, alpha: 1, metaScope: scope });
      const phiBefore = await readPhi(net);
      const thetaBefore: Record<string, Float32Array> = {};
      for (const [k, v] of Object.entries(params)) thetaBefore[k] = Float32Array.from(await v.data());

      const opts = { model, params, trainBatch: train, metaBatch: meta, weightNet: net, alpha: 1, normalize: 'sum', metaScope: scope } as const;
      const r = variant === 'mwnStep' ? await mwnStep(opts) : await mwnStep(opts);
      assert.equal(r.metaUpdated, true);
      assert.ok(r.metaLoss !== null && Number.isFinite(r.metaLoss));
      const phiAfter = await readPhi(net);
      for (const n of WEIGHT_NET_PARAM_NAMES) {
        const step = Array.from(phiAfter[n], (v, k) => (phiBefore[n][k] - v) / eta);
        assert.ok(relErr(step, await hyper[n].data(), 1e-5) < 1e-3, `${n}: φ moved by ${step}, hypergradient ${Array.from(await hyper[n].data())}`);
      }
      disposeAll(hyper);
      for (const [k, v] of Object.entries(params)) assert.deepEqual(await v.data(), thetaBefore[k], `θ (${k}) is not changed by mwnStep`);

      const lossesRef = await tidyData(() => model.perSampleLoss(params, train));
      assert.ok(relErr(r.losses, lossesRef, 1e-3) < 1e-5, 'losses are ℓ(θ)');
      const wRef = normalizeRef(weightNetRef(phiAfter, lossesRef).raw, 'sum');
      assert.ok(relErr(r.weights, wRef, 1e-3) < 1e-4, `weights ${Array.from(r.weights)} vs updated net ${wRef}`);
      assert.ok(Math.abs(r.weights.reduce((a, b) => a + b, 0) - 1) < 1e-5, 'weights sum to 1');
      const lossRef = wRef.reduce((a, w, i) => a + w * lossesRef[i], 0);
      assert.ok(Math.abs(r.loss - lossRef) < 1e-5, `loss ${r.loss} vs Σ wᵢℓᵢ ${lossRef}`);

      const per = await perSampleGrads(model, params, train);
      for (const name of Object.keys(params)) {
        const ref = new Float64Array(per[0][name].length);
        per.forEach((g, i) => g[name].forEach((v, k) => { ref[k] += r.weights[i] * v; }));
        const got = await r.grads[name].data();
        assert.ok(relErr(got, ref, 1e-4) < 1e-3, `grad ${name}: ${Array.from(got)} vs Σ wᵢ∇ℓᵢ ${Array.from(ref)}`);
      }
      disposeAll(r.grads);
      net.dispose(); disposeAll(params); disposeBatch(train); disposeBatch(meta);
    });
  }

  it('metaEvery: skipped steps leave φ alone and weight with the current net', async () => {
    const model = toyModel();
    const params = toyParams(9);
    const train = toyBatch(6, 707);
    const net = new WeightNet({ hidden: 8, seed: 5 });
    const phi = await readPhi(net);
    const r = await mwnStep({ model, params, trainBatch: train, weightNet: net, alpha: 1, step: 3, metaEvery: 2 });
    assert.equal(r.metaUpdated, false);
    assert.equal(r.metaLoss, null);
    for (const n of WEIGHT_NET_PARAM_NAMES) assert.deepEqual((await readPhi(net))[n], phi[n]);
    const wRef = normalizeRef(weightNetRef(phi, r.losses).raw, 'sum');
    assert.ok(relErr(r.weights, wRef, 1e-3) < 1e-4);
    disposeAll(r.grads);
    await assert.rejects(() => mwnStep({ model, params, trainBatch: train, weightNet: net, alpha: 1, step: 4, metaEvery: 2 }), /no 'metaBatch'/);
    assert.equal(isMetaStep(10, 5), true);
    assert.equal(isMetaStep(11, 5), false);
    net.dispose(); disposeAll(params); disposeBatch(train);
  });

  it('normalizeWeights: sum → w/Σw, none → w/B, all-zero stays zero', async () => {
    const t = tf.tensor1d([1, 3]);
    assert.deepEqual(Array.from(await normalizeWeights(t, 'sum').data()), [0.25, 0.75]);
    assert.deepEqual(Array.from(await normalizeWeights(t, 'none').data()), [0.5, 1.5]);
    assert.deepEqual(Array.from(await normalizeWeights(tf.zeros([3]), 'sum').data()), [0, 0, 0]);
    tf.dispose(t);
  });

  it('rejects bad arguments with the argument named', async () => {
    const model = toyModel();
    const params = toyParams(1);
    const train = toyBatch(4, 1);
    const net = new WeightNet({ hidden: 4 });
    await assert.rejects(() => mwnStep({ model, params, trainBatch: train, metaBatch: train, weightNet: net, alpha: 0 }), /'alpha'/);
    await assert.rejects(() => mwnStep({ model, params, trainBatch: train, metaBatch: train, weightNet: net, alpha: 1, metaScope: 'x' as MetaScope }), /'metaScope'/);
    await assert.rejects(() => mwnStep({ model: { ...model, headNames: ['nope'] }, params, trainBatch: train, metaBatch: train, weightNet: net, alpha: 1, metaScope: 'heads' }), /'nope' not in 'params'/);
    await assert.rejects(() => mwnStep({ model: { ...model, features: undefined }, params, trainBatch: train, metaBatch: train, weightNet: net, alpha: 1, metaScope: 'heads' }), /model.features/);
    await assert.rejects(() => mwnStep({ model, params: { a: tf.zeros([1]) as unknown as tf.Variable }, trainBatch: train, metaBatch: train, weightNet: net, alpha: 1 }), /params\['a'\] must be a tf.Variable/);
    await assert.rejects(() => mwnStep({ model: { ...model, batchSize: () => 5 }, params, trainBatch: train, metaBatch: train, weightNet: net, alpha: 1 }), /must have shape \[5\]/);
    const extra = { ...params, unused: tf.variable(tf.zeros([2])) };
    await assert.rejects(() => mwnStep({ model, params: extra, trainBatch: train, metaBatch: train, weightNet: net, alpha: 1 }), /does not depend on every entry of 'params'/);
    extra.unused.dispose();
    assert.throws(() => new WeightNet({ hidden: 0 }), /'hidden'/);
    assert.throws(() => net.forward(tf.zeros([2, 2])), /'inputs' must be a float32 tensor \[B, 1\] or \[B\]/);
    net.dispose(); disposeAll(params); disposeBatch(train);
  });

  for (const scope of ['all', 'heads'] as MetaScope[]) {
    it(`tf.memory().numTensors is flat over 10 steps with the model's optimizer (scope '${scope}', mwnStep with metaEvery 2, then l2rwStep)`, async () => {
      const model = toyModel();
      const params = toyParams(11);
      const opt = new AdamW(params, { lr: 1e-2 });
      const net = new WeightNet({ hidden: 16, seed: 1 });
      const train = toyBatch(8, 808);
      const meta = toyBatch(8, 909);
      const step = async (i: number) => {
        const opts = { model, params, trainBatch: train, metaBatch: meta, weightNet: net, alpha: 0.5, metaScope: scope, step: i, metaEvery: 2 };
        const r = await mwnStep(opts);
        opt.step(r.grads);
        disposeAll(r.grads);
      };
      await step(0); await step(1); // the optimizers' state exists after the first steps
      const before = tf.memory().numTensors;
      for (let i = 2; i < 12; i++) await step(i);
      assert.equal(tf.memory().numTensors, before);
      const r = await l2rwStep({ model, params, trainBatch: train, metaBatch: meta, alpha: 0.5, metaScope: scope });
      disposeAll(r.grads);
      assert.equal(tf.memory().numTensors, before);
      opt.dispose(); net.dispose(); disposeAll(params); disposeBatch(train); disposeBatch(meta);
    });
  }
});

describe('meta: MetaBatchCycler', () => {
  it('covers the whole set every pass in full batches, reshuffles between passes, and resumes exactly', async () => {
    const c = new MetaBatchCycler(10, 4, { seed: 3 });
    assert.equal(c.batchesPerPass, 3);
    const passes: number[][][] = [];
    for (let p = 0; p < 3; p++) passes.push([c.next(), c.next(), c.next()]);
    for (const pass of passes) {
      for (const b of pass) {
        assert.equal(b.length, 4);
        assert.equal(new Set(b).size, 4, `no repeats within a batch: ${b}`);
      }
      assert.deepEqual([...new Set(pass.flat())].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'every index in every pass');
      assert.deepEqual(pass[2].slice(2), pass[0].slice(0, 2), 'the short last batch is topped up from the pass start');
    }
    assert.notDeepEqual(passes[0], passes[1], 'reshuffled each pass');
    assert.notDeepEqual(passes[1], passes[2]);

    const a = new MetaBatchCycler(10, 4, { seed: 3 });
    a.next(); a.next(); a.next(); a.next();
    const saved = JSON.parse(JSON.stringify(a.state()));
    assert.equal(saved.pass, 1);
    assert.equal(saved.position, 1);
    const b = new MetaBatchCycler(10, 4, { resumeFrom: saved });
    for (let i = 0; i < 7; i++) assert.deepEqual(b.next(), a.next());
    assert.deepEqual(new MetaBatchCycler(10, 4, { seed: 3 }).next(), passes[0][0], 'seeded');
    assert.notDeepEqual(new MetaBatchCycler(10, 4, { seed: 4 }).next(), passes[0][0]);
  });

  it('rejects bad sizes and states', async () => {
    assert.throws(() => new MetaBatchCycler(0, 1), /'size'/);
    assert.throws(() => new MetaBatchCycler(5, 6), /'batchSize' must be an integer in \[1, 5\]/);
    const s = new MetaBatchCycler(10, 5).state();
    assert.throws(() => new MetaBatchCycler(10, 2, { resumeFrom: s }), /saved for size 10 and batchSize 5/);
    assert.throws(() => new MetaBatchCycler(10, 5, { resumeFrom: { ...s, position: 7 } }), /not a valid state/);
  });
});

describe('meta: analysis', () => {
  it('auroc is the Mann–Whitney statistic with ties as ½ (hand-worked)', async () => {
    // Positive 0.9 beats both negatives (2); positive 0.5 ties 0.5 (½) and beats 0.1 (1): 3.5/4.
    assert.equal(auroc([0.9, 0.5, 0.5, 0.1], [true, true, false, false]), 0.875);
    assert.equal(auroc([1, 2, 3], [false, false, true]), 1);
    assert.equal(auroc([1, 2, 3], [true, false, false]), 0);
    assert.equal(auroc([2, 2, 2, 2], [true, false, true, false]), 0.5);
    // pos {3, 1, 2}, neg {2, 0}: 3 beats 2; 1 beats 1 (0); 2: ½ + 1 → (2 + 1 + 1.5)/6 = 0.75.
    assert.equal(auroc([3, 1, 2, 2, 0], [true, true, true, false, false]), 0.75);
    assert.ok(Number.isNaN(auroc([1, 2], [true, true])));
    assert.throws(() => auroc([1, 2], [true]), /2 booleans/);
  });

  it('weightingReport scores weights for being clean', async () => {
    const r = weightingReport([0.9, 0.8, 0.1, 0.85], [false, false, true, true]);
    assert.equal(r.aurocCleanVsNoisy, 0.75);
    assert.ok(Math.abs(r.meanWeightClean - 0.85) < 1e-12);
    assert.ok(Math.abs(r.meanWeightNoisy - 0.475) < 1e-12);
    assert.equal(r.clean, 2);
    assert.equal(r.noisy, 2);
  });

  it('weightingReport breaks the noisy pairs down by kind when given one', async () => {
    // swap {0.1, 0.5} vs clean {0.9, 0.8}: every clean pair outweighs both → 1; attribute {0.85}: beats 0.8, loses to 0.9 → 0.5.
    const r = weightingReport([0.9, 0.8, 0.1, 0.85, 0.5], [false, false, true, true, true], [undefined, 'ignored', 'swap', 'attribute', 'swap']);
    assert.deepEqual(Object.keys(r.byNoiseKind!), ['attribute', 'swap']);
    assert.equal(r.byNoiseKind!.swap.aurocCleanVsKind, 1);
    assert.equal(r.byNoiseKind!.swap.count, 2);
    assert.ok(Math.abs(r.byNoiseKind!.swap.meanWeight - 0.3) < 1e-12);
    assert.equal(r.byNoiseKind!.attribute.aurocCleanVsKind, 0.5);
    assert.equal(r.byNoiseKind!.attribute.meanWeight, 0.85);
    assert.equal(weightingReport([0.9, 0.1], [false, true], [undefined, undefined]).byNoiseKind!.unknown.count, 1);
    assert.throws(() => weightingReport([0.9, 0.1], [false, true], ['swap']), /'noiseKinds' must be an array of 2 labels/);
  });

  it('weightCurve samples V on an even grid and matches the float64 net', async () => {
    const net = new WeightNet({ hidden: 10, seed: 8 });
    const c = await weightCurve(net, { min: 0, max: 4, points: 5 });
    assert.deepEqual(c.loss, [0, 1, 2, 3, 4]);
    assert.ok(relErr(c.weight, weightNetRef(await readPhi(net), c.loss).raw, 1e-3) < 1e-5);
    await assert.rejects(weightCurve(net, { min: 1, max: 0, points: 3 }), /min ≤ max/);
    net.dispose();
  });
});

describe('meta: learning to down-weight noisy pairs', () => {
  // Pairs: y = A x (+ small noise); 40% of the train pairs get the y of another sample. The
  // meta set is 40 further clean pairs. Weight net: the defaults (Adam, lr 1e-3), seed 2, whose
  // initial curve *increases* with the loss, so a passing test means the net turned it round.
  const n = 160; const nMeta = 40; const B = 32;
  const dx = 6; const dy = 6;
  const A = seededUniform(dx * dy, 77, -1, 1);
  const xs = seededUniform((n + nMeta) * dx, 78, -1, 1);
  const ys = new Float32Array((n + nMeta) * dy);
  const jitter = seededUniform((n + nMeta) * dy, 79, -0.05, 0.05);
  for (let i = 0; i < n + nMeta; i++) {
    for (let k = 0; k < dy; k++) {
      let s = jitter[i * dy + k];
      for (let j = 0; j < dx; j++) s += xs[i * dx + j] * A[j * dy + k];
      ys[i * dy + k] = s;
    }
  }
  const noisy = Array.from({ length: n }, (_, i) => i % 5 < 2);
  const yTrain = ys.slice(0, n * dy);
  const noisyIdx = noisy.flatMap((f, i) => (f ? [i] : []));
  noisyIdx.forEach((i, k) => { // a derangement of the noisy rows: each takes the next one's caption
    const j = noisyIdx[(k + 1) % noisyIdx.length];
    yTrain.set(ys.subarray(j * dy, (j + 1) * dy), i * dy);
  });
  const rows = (src: Float32Array, d: number, idx: number[], off = 0) => {
    const out = new Float32Array(idx.length * d);
    idx.forEach((i, r) => out.set(src.subarray((off + i) * d, (off + i + 1) * d), r * d));
    return tf.tensor2d(out, [idx.length, d]);
  };
  const batchOf = (idx: number[], meta: boolean): ToyBatch => (meta
    ? { x: rows(xs, dx, idx, n), y: rows(ys, dy, idx, n) }
    : { x: rows(xs, dx, idx), y: rows(yTrain, dy, idx) });

  for (const scope of ['all', 'heads'] as MetaScope[]) {
    it(`after 100 MWN steps (scope '${scope}') the weights give AUROC ≥ 0.8 for clean vs noisy`, async () => {
      const hid = 16; const emb = 8;
      const pv = (shape: number[], seed: number, s: number) => tf.variable(tf.tensor(seededUniform(shape.reduce((a, b) => a * b, 1), seed, -s, s), shape), true);
      const params: Record<string, tf.Variable> = {
        'v.enc.weight': pv([dx, hid], 1, 0.6), 'v.enc.bias': pv([hid], 2, 0.1), 'v.proj': pv([hid, emb], 3, 0.4),
        't.enc.weight': pv([dy, hid], 4, 0.6), 't.enc.bias': pv([hid], 5, 0.1), 't.proj': pv([hid, emb], 6, 0.4),
        logit_scale: tf.variable(tf.scalar(Math.log(10)), true),
      };
      const model = toyModel((v, t, s) => samLike(v, t, s, 0));
      const opt = new AdamW(params, { lr: 1e-2, weightDecay: 0 });
      const net = new WeightNet({ hidden: 32, seed: 2 });
      const curve0 = (await weightCurve(net, { min: 0, max: 6, points: 7 })).weight;
      assert.ok(curve0[6] > curve0[0], `the initial net up-weights large losses: ${curve0}`);
      const trainCycler = new MetaBatchCycler(n, B, { seed: 1 });
      const metaCycler = new MetaBatchCycler(nMeta, B, { seed: 2 });
      const t0 = Date.now();
      for (let step = 0; step < 100; step++) {
        const train = batchOf(trainCycler.next(), false);
        const meta = batchOf(metaCycler.next(), true);
        const r = await mwnStep({ model, params, trainBatch: train, metaBatch: meta, weightNet: net, alpha: 0.1, metaScope: scope, step });
        opt.step(r.grads);
        disposeAll(r.grads);
        disposeBatch(train); disposeBatch(meta);
      }
      const ms = Date.now() - t0;
      // Weights of the whole train set under the final model, batch by batch in a fixed order.
      const weights: number[] = [];
      const flags: boolean[] = [];
      for (let s = 0; s < n; s += B) {
        const idx = Array.from({ length: B }, (_, k) => s + k);
        const b = batchOf(idx, false);
        const losses = Array.from(await tidyData(() => model.perSampleLoss(params, b)));
        weights.push(...(await net.weightsOf(losses)));
        flags.push(...idx.map((i) => noisy[i]));
        disposeBatch(b);
      }
      const rep = weightingReport(weights, flags);
      const curve = (await weightCurve(net, { min: 0, max: 6, points: 7 })).weight;
      assert.ok(rep.aurocCleanVsNoisy >= 0.8, `AUROC ${rep.aurocCleanVsNoisy}, mean weight clean ${rep.meanWeightClean} noisy ${rep.meanWeightNoisy}; curve ${curve}`);
      assert.ok(rep.meanWeightClean > rep.meanWeightNoisy);
      assert.ok(curve[6] < curve[0], `the learned net down-weights large losses: ${curve}`);
      assert.ok(ms < 20000, `100 steps took ${ms} ms`);
      opt.dispose(); net.dispose(); disposeAll(params);
    });
  }
});
