import assert from 'node:assert/strict';
import { tf } from '../src/backend/tf.js';
import {
  dualSoftmax, metricsFromRanks, qbNorm, retrievalMetrics, retrievalMetricsBlocked, retrievalMetricsBoth, retrievalMetricsV2T, retrievalRanks, retrievalRanksBlocked, retrievalRanksV2T, type DenseMatrix,
} from '../src/eval/retrieval.js';

function close(actual: number, expected: number, tol = 1e-9, what = ''): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what} ${actual} vs ${expected}`);
}

function closeMatrix(actual: number[][], expected: number[][], tol = 1e-9): void {
  assert.equal(actual.length, expected.length);
  actual.forEach((row, i) => row.forEach((v, j) => close(v, expected[i][j], tol, `[${i}][${j}]`)));
}

/** Small deterministic PRNG (mulberry32) so the random cases are reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Independent reference: sort each query's candidates, ties placing the true item(s) last. */
function referenceRanks(sim: number[][], q2v: number[]): { t2v: number[]; v2t: number[] } {
  const nv = sim[0].length;
  const t2v = sim.map((row, i) => {
    const order = row.map((s, j) => ({ s, truth: j === q2v[i] ? 1 : 0 }))
      .sort((a, b) => b.s - a.s || a.truth - b.truth);
    return order.findIndex((e) => e.truth === 1) + 1;
  });
  const v2t: number[] = [];
  for (let j = 0; j < nv; j++) {
    const order = sim.map((row, i) => ({ s: row[j], own: q2v[i] === j ? 1 : 0 }))
      .sort((a, b) => b.s - a.s || a.own - b.own);
    v2t.push(order.findIndex((e) => e.own === 1) + 1);
  }
  return { t2v, v2t };
}

function dot(a: Float32Array, i: number, b: Float32Array, j: number, d: number): number {
  let s = 0;
  for (let k = 0; k < d; k++) s += a[i * d + k] * b[j * d + k];
  return s;
}

function simOf(text: Float32Array, video: Float32Array, nq: number, nv: number, d: number): number[][] {
  return Array.from({ length: nq }, (_, i) => Array.from({ length: nv }, (_, j) => dot(text, i, video, j, d)));
}

describe('eval/retrieval', () => {
  // True video of query i is column i.
  // q0: 0.9 beats all others                      → rank 1
  // q1: 0.5 ties with column 0 (tie counts)       → rank 2
  // q2: 0.6 is beaten by 0.8, 0.7, 0.9            → rank 4
  // q3: all four equal, three others ≥            → rank 4
  // v2t, column j against captions:
  // v0 [0.9,0.5,0.8,0.4] own 0.9 → 1;  v1 [0.1,0.5,0.7,0.4] own 0.5 < 0.7 → 2
  // v2 [0.3,0.1,0.6,0.4] own 0.6 → 1;  v3 [0.2,0.0,0.9,0.4] own 0.4 < 0.9 → 2
  const square = [
    [0.9, 0.1, 0.3, 0.2],
    [0.5, 0.5, 0.1, 0.0],
    [0.8, 0.7, 0.6, 0.9],
    [0.4, 0.4, 0.4, 0.4],
  ];

  it('ranks a square matrix with ties counted against the model', () => {
    assert.deepEqual(Array.from(retrievalRanks(square)), [1, 2, 4, 4]);
    // R1 = 1/4; MdR = (2 + 4)/2; MnR = 11/4
    assert.deepEqual(retrievalMetrics(square), { R1: 25, R5: 100, R10: 100, R50: 100, MdR: 3, MnR: 2.75 });
    assert.deepEqual(Array.from(retrievalRanksV2T(square)), [1, 2, 1, 2]);
    assert.deepEqual(retrievalMetricsV2T(square), { R1: 50, R5: 100, R10: 100, R50: 100, MdR: 1.5, MnR: 1.5 });
  });

  // Five captions of three videos: captions 0,1 → v0, 2 → v1, 3,4 → v2.
  // t2v: c0 0.9 top → 1; c1 true 0.3 < 0.5, 0.6 → 3; c2 true 0.5 ties v2 0.5 → 2; c3 0.7 top → 1; c4 true 0.4 < 0.8 → 2
  // v2t: v0 column [0.9,0.3,0.2,0.1,0.8], best own 0.9 (c0), no other caption ≥ → 1
  //      v1 column [0.2,0.5,0.5,0.2,0.1], own c2 0.5 tied by c1 (a v0 caption) → 2
  //      v2 column [0.75,0.6,0.5,0.7,0.4], best own 0.7 (c3), c0 0.75 above → 2
  const multi = [
    [0.9, 0.2, 0.75],
    [0.3, 0.5, 0.6],
    [0.2, 0.5, 0.5],
    [0.1, 0.2, 0.7],
    [0.8, 0.1, 0.4],
  ];
  const multiQ2v = [0, 0, 1, 2, 2];

  it('handles several captions per video in both directions', () => {
    assert.deepEqual(Array.from(retrievalRanks(multi, { queryToVideo: multiQ2v })), [1, 3, 2, 1, 2]);
    // ranks sorted 1,1,2,2,3: R1 = 2/5, MdR = 2, MnR = 9/5
    const t2v = retrievalMetrics(multi, { queryToVideo: Int32Array.from(multiQ2v) });
    assert.deepEqual(t2v, { R1: 40, R5: 100, R10: 100, R50: 100, MdR: 2, MnR: 1.8 });
    assert.deepEqual(Array.from(retrievalRanksV2T(multi, multiQ2v)), [1, 2, 2]);
    const both = retrievalMetricsBoth(multi, { queryToVideo: multiQ2v });
    assert.deepEqual(both.t2v, t2v);
    close(both.v2t.R1, 100 / 3);
    close(both.v2t.MnR, 5 / 3);
    assert.equal(both.v2t.MdR, 2);
  });

  it('does not let a video\'s own captions tied at the top push each other down', () => {
    // v0's two captions both score 0.5 on v0; the only other caption scores 0.3 → rank 1, not 2.
    assert.deepEqual(Array.from(retrievalRanksV2T([[0.5, 0.1], [0.5, 0.2], [0.3, 0.9]], [0, 0, 1])), [1, 1]);
  });

  it('summarises ranks at the R@K boundaries', () => {
    // 1,5,6,10,11,50,51: ≤1: 1, ≤5: 2, ≤10: 4, ≤50: 6 of 7; median 10; mean 134/7
    const m = metricsFromRanks([51, 1, 10, 5, 50, 6, 11]);
    close(m.R1, 100 / 7); close(m.R5, 200 / 7); close(m.R10, 400 / 7); close(m.R50, 600 / 7);
    assert.equal(m.MdR, 10);
    close(m.MnR, 134 / 7);
  });

  it('accepts nested arrays and {data, rows, cols} alike; a tensor is refused with how to read it', () => {
    const dense: DenseMatrix = { data: Float32Array.from(square.flat()), rows: 4, cols: 4 };
    assert.deepEqual(Array.from(retrievalRanks(dense)), [1, 2, 4, 4]);
    assert.deepEqual(Array.from(retrievalRanksV2T(dense)), [1, 2, 1, 2]);
    const t = tf.tensor2d(square);
    assert.throws(() => retrievalRanks(t as unknown as DenseMatrix), /sim: a tensor is read by the caller, once and asynchronously: pass \{ data: await t\.data\(\), rows, cols \}/);
    t.dispose();
  });

  // Dual softmax with temperature ln 2, so exp(T·s) = 2^s on integer scores.
  // column 0: 2^2, 2^0, 2^1 = 4, 1, 2 → softmax 4/7, 1/7, 2/7
  // column 1: 8, 8, 8                 → 1/3 each
  // column 2: 2^0, 2^1, 2^3 = 1, 2, 8 → 1/11, 2/11, 8/11
  // out = sim ⊙ softmax: [[8/7, 1, 0], [0, 1, 2/11], [2/7, 1, 24/11]]
  const dslSim = [[2, 3, 0], [0, 3, 1], [1, 3, 3]];

  it('dual softmax matches a 3×3 hand calculation and lowers the hub column', () => {
    const out = dualSoftmax(dslSim, { temperature: Math.LN2 }) as number[][];
    closeMatrix(out, [[8 / 7, 1, 0], [0, 1, 2 / 11], [2 / 7, 1, 24 / 11]]);
    // raw: q0 loses to the hub (3 > 2), q2 ties with it → ranks 2, 1, 2; after DSL all first.
    assert.deepEqual(Array.from(retrievalRanks(dslSim)), [2, 1, 2]);
    assert.deepEqual(Array.from(retrievalRanks(out)), [1, 1, 1]);
    // axis 1, row 0: 2^2, 2^3, 2^0 = 4, 8, 1 → 4/13, 8/13, 1/13 → [8/13, 24/13, 0]
    const rowWise = dualSoftmax(dslSim, { temperature: Math.LN2, axis: 1 }) as number[][];
    closeMatrix([rowWise[0]], [[8 / 13, 24 / 13, 0]]);
  });

  // QB-Norm with beta = ln 2 (exp(β·s) = 2^s). Bank rows [3,1,0] and [2,1,1].
  // Sums over the bank per gallery item: g0 2^3+2^2 = 12, g1 2+2 = 4, g2 1+2 = 3.
  const bank = [[3, 1, 0], [2, 1, 1]];
  const queries = [[2, 1, 0], [0, 2, 1], [3, 0, 2]];

  it('QB-Norm (k = 1) normalises only rows whose top item is in the activation set', () => {
    // k = 1: both bank rows pick g0 → A = {g0}.
    // q0 top g0 ∈ A → [4/12, 2/4, 1/3]; q1 top g1 ∉ A → unchanged; q2 top g0 ∈ A → [8/12, 1/4, 4/3]
    const out = qbNorm(queries, bank, { beta: Math.LN2 }) as number[][];
    closeMatrix(out, [[1 / 3, 1 / 2, 1 / 3], [0, 2, 1], [2 / 3, 1 / 4, 4 / 3]]);
  });

  it('QB-Norm (k = 2) widens the activation set, ties to the lower index', () => {
    // bank row 0 top-2 {g0, g1}; bank row 1 [2,1,1]: g0, then g1 and g2 tie → g1. A = {g0, g1}.
    // q1 top g1 ∈ A now → [1/12, 4/4, 2/3]
    const out = qbNorm(queries, bank, { beta: Math.LN2, k: 2 }) as number[][];
    closeMatrix(out, [[1 / 3, 1 / 2, 1 / 3], [1 / 12, 1, 2 / 3], [2 / 3, 1 / 4, 4 / 3]]);
  });

  it('QB-Norm stays finite for large beta·s (log-space sum)', () => {
    // exp(20·50) overflows a double, yet the ratio exp(20·50)/(exp(20·50)+exp(20·49)) = 1/(1+e^-20) does not.
    const out = qbNorm([[50, 0]], [[50, 0], [49, 0]], { beta: 20 }) as number[][];
    close(out[0][0], 1 / (1 + Math.exp(-20)));
  });

  it('blocked evaluator equals a sort-based dense reference on integer embeddings (exact ties)', async () => {
    const r = rng(7);
    const d = 6;
    const nv = 37;
    const nq = 90;
    const q2v = Array.from({ length: nq }, (_, i) => (i < nv ? i : Math.floor(r() * nv)));
    // Integers in [-2, 2]: dot products are exact in float32 and collide often, so ties are exercised.
    const text = Float32Array.from({ length: nq * d }, () => Math.floor(r() * 5) - 2);
    const video = Float32Array.from({ length: nv * d }, () => Math.floor(r() * 5) - 2);
    const sim = simOf(text, video, nq, nv, d);
    const ref = referenceRanks(sim, q2v);
    let tiedRows = 0;
    sim.forEach((row, i) => { if (row.some((s, j) => j !== q2v[i] && s === row[q2v[i]])) tiedRows++; });
    assert.ok(tiedRows > 10, `the case should contain ties (${tiedRows} rows tied)`);

    assert.deepEqual(Array.from(retrievalRanks(sim, { queryToVideo: q2v })), ref.t2v);
    assert.deepEqual(Array.from(retrievalRanksV2T(sim, q2v)), ref.v2t);
    const before = tf.memory().numTensors;
    for (const blockRows of [1, 16, 1000]) {
      const blocked = await retrievalMetricsBlocked(text, video, d, { blockRows, queryToVideo: q2v });
      assert.deepEqual(blocked.t2v, metricsFromRanks(ref.t2v), `t2v, blockRows ${blockRows}`);
      assert.deepEqual(blocked.v2t, metricsFromRanks(ref.v2t), `v2t, blockRows ${blockRows}`);
      const ranks = await retrievalRanksBlocked(text, video, d, { blockRows, queryToVideo: q2v });
      assert.deepEqual([Array.from(ranks.t2v), Array.from(ranks.v2t)], [ref.t2v, ref.v2t], `ranks, blockRows ${blockRows}`);
    }
    assert.equal(tf.memory().numTensors, before);
  });

  it('blocked evaluator equals the dense reference on random unit vectors (square, diagonal truth)', async () => {
    const r = rng(11);
    const n = 300;
    const d = 32;
    const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
    const unit = (count: number, noise: Float32Array | null) => {
      const x = new Float32Array(count * d);
      for (let i = 0; i < count; i++) {
        let norm = 0;
        for (let k = 0; k < d; k++) {
          // Texts are noisy copies of their videos so the ranks span 1…n rather than being uniform.
          const v = (noise ? noise[i * d + k] : 0) + gauss();
          x[i * d + k] = v; norm += v * v;
        }
        for (let k = 0; k < d; k++) x[i * d + k] /= Math.sqrt(norm);
      }
      return x;
    };
    const video = unit(n, null);
    const text = unit(n, video);
    const ref = referenceRanks(simOf(text, video, n, n, d), Array.from({ length: n }, (_, i) => i));
    const blocked = await retrievalMetricsBlocked(text, video, d, { blockRows: 64 });
    assert.deepEqual(blocked.t2v, metricsFromRanks(ref.t2v));
    assert.deepEqual(blocked.v2t, metricsFromRanks(ref.v2t));
    assert.ok(blocked.t2v.R1 > 0 && blocked.t2v.R1 < 100, 'a case where some queries miss');
    // A zero error band leaves nearly every video's float32 best score outside it (the float32
    // product rarely equals the float64 dot product), as a TF32 matMul would: those videos take
    // the second, video × caption pass, and the ranks must not change.
    const strict = await retrievalMetricsBlocked(text, video, d, { blockRows: 64, matMulRelativeError: 0 });
    assert.deepEqual(strict.t2v, metricsFromRanks(ref.t2v));
    assert.deepEqual(strict.v2t, metricsFromRanks(ref.v2t));
  });

  it('rejects bad input with errors naming the argument', async () => {
    assert.throws(() => retrievalMetrics([[1, 2, 3], [4, 5, 6]]), /not square; pass queryToVideo/);
    assert.throws(() => retrievalMetrics([[1, 2], [3]]), /sim: row 1 has 1 entries/);
    assert.throws(() => retrievalMetrics([[1, NaN], [3, 4]]), /sim\[0\]\[1\] is NaN/);
    assert.throws(() => retrievalMetrics(multi, { queryToVideo: [0, 0, 1, 2] }), /queryToVideo: length 4/);
    assert.throws(() => retrievalMetrics(multi, { queryToVideo: [0, 3, 1, 2, 2] }), /queryToVideo\[1\] = 3/);
    assert.throws(() => retrievalMetricsV2T(multi, [0, 0, 1, 1, 1]), /queryToVideo: video column 2 has no caption/);
    assert.throws(() => retrievalMetrics({ data: new Float32Array(5), rows: 2, cols: 3 }), /sim\.data: length 5/);
    assert.throws(() => qbNorm(queries, [[1, 2]]), /bankSim: has 2 gallery columns/);
    assert.throws(() => qbNorm(queries, bank, { k: 4 }), /k must be an integer in \[1, 3\]/);
    assert.throws(() => dualSoftmax(dslSim, { temperature: 0 }), /temperature/);
    await assert.rejects(retrievalMetricsBlocked(new Float32Array(7), new Float32Array(6), 3), /textEmb: length 7/);
    await assert.rejects(retrievalMetricsBlocked(new Float32Array(6), Float32Array.of(1, 2, NaN), 3), /videoEmb\[0\]\[2\]/);
    await assert.rejects(retrievalMetricsBlocked(new Float32Array(6), new Float32Array(3), 3), /textEmb × videoEmb: 2 × 1 is not square/);
    await assert.rejects(retrievalMetricsBlocked(new Float32Array(6), new Float32Array(6), 3, { blockRows: 0 }), /blockRows/);
    await assert.rejects(retrievalMetricsBlocked(new Float32Array(6), new Float32Array(6), 3, { matMulRelativeError: -1 }), /matMulRelativeError/);
  });
});
