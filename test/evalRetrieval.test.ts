import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { tf } from '../src/backend/tf.js';
import { embeddingCacheKey, readEmbeddingCache, writeEmbeddingCache } from '../src/eval/embeddingCache.js';
import { dualSoftmax, qbNorm, retrievalRanks, retrievalRanksV2T } from '../src/eval/retrieval.js';
import { conceptRecall, recallCurve, scoreRetrieval } from '../src/eval/retrievalEval.js';
import { evaluateCheckpointRetrieval } from '../pipelines/eval-retrieval.js';
import { makeSmallRun, type SmallRun } from './helpers/smallRun.js';

// 3 videos, 4 captions (video 0 has two), 2-D unit embeddings; ranks worked by hand:
//   sims caption×video: c0 [1, 0, -1], c1 [0, 1, 0], c2 [.6, .8, -.6], c3 [.8, .6, -.8]
//   t2v: c0 → v0 rank 1; c1 → v0 scores 0, v1 (1) and v2 (0, a tie) are ≥ → rank 3; c2 → v1 rank 1; c3 → v2 rank 3.
//   v2t: v0's best own caption is c0 (1), no other caption ≥ 1 → 1; v1's own c2 = .8, c1 (1) ≥ → 2;
//        v2's own c3 = −.8, c1 (0) and c2 (−.6) ≥ → 3.
const hand = {
  d: 2,
  videoIds: ['v0', 'v1', 'v2'],
  videoEmb: Float32Array.of(1, 0, 0, 1, -1, 0),
  queryToVideo: Int32Array.of(0, 0, 1, 2),
  textEmb: Float32Array.of(1, 0, 0, 1, 0.6, 0.8, 0.8, 0.6),
};
const concepts = [['color:red', 'speed:fast'], ['color:red'], ['color:blue', 'speed:fast']];

/** The caption × video dot products of `e`, computed here in float64. */
function handSim(e: typeof hand): number[][] {
  return Array.from({ length: e.queryToVideo.length }, (_, i) => Array.from({ length: e.videoIds.length }, (_, j) => {
    let s = 0;
    for (let k = 0; k < e.d; k++) s += e.textEmb[i * e.d + k] * e.videoEmb[j * e.d + k];
    return s;
  }));
}

describe('retrieval evaluation: scoring', () => {
  it('hand-worked ranks, recalls and per-concept R@1, dense and blocked alike, without leaking tensors', async () => {
    for (const opts of [{}, { denseLimit: 0, blockRows: 1 }, { denseLimit: 0, blockRows: 2 }]) {
      const before = tf.memory().numTensors;
      const r = await scoreRetrieval(hand, { concepts, ...opts });
      assert.equal(tf.memory().numTensors, before, `${JSON.stringify(opts)}: no tensors leaked`);
      assert.deepEqual(Array.from(r.t2vRanks), [1, 3, 1, 3]);
      assert.deepEqual(Array.from(r.v2tRanks), [1, 2, 3]);
      assert.equal(r.t2v.R1, 50);
      assert.equal(r.t2v.MdR, 2);
      assert.ok(Math.abs(r.v2t.R1 - 100 / 3) < 1e-9);
      assert.equal(r.v2t.MnR, 2);
      const by = Object.fromEntries(r.perConcept.map((c) => [c.concept, c]));
      // red: captions c0, c1, c2 (hits c0, c2) and videos v0, v1 (hit v0).
      assert.ok(Math.abs(by['color:red'].t2vR1 - 200 / 3) < 1e-9);
      assert.equal(by['color:red'].v2tR1, 50);
      assert.equal(by['color:red'].captions, 3);
      // fast: captions c0, c1, c3 (hit c0) and videos v0, v2 (hit v0).
      assert.ok(Math.abs(by['speed:fast'].t2vR1 - 100 / 3) < 1e-9);
      assert.equal(by['speed:fast'].v2tR1, 50);
      assert.deepEqual([by['color:blue'].t2vR1, by['color:blue'].v2tR1, by['color:blue'].videos], [0, 0, 1]);
      assert.equal(r.mode, 'denseLimit' in opts ? 'blocked' : 'dense');
    }
    await assert.rejects(scoreRetrieval(hand, { dsl: true, bankTextEmb: hand.textEmb }), /scoreRetrieval: choose dual softmax or QB-Norm, not both/);
    await assert.rejects(scoreRetrieval(hand, { denseLimit: 0, blockRows: 0 }), /scoreRetrieval: blockRows/);
    await assert.rejects(scoreRetrieval(hand, { bankTextEmb: new Float32Array(3) }), /bankTextEmb length 3/);
  });

  it('re-scored rankings are those of dual softmax and QB-Norm applied to the whole similarity matrix', async () => {
    const sim = handSim(hand);
    const before = tf.memory().numTensors;
    const dsl = await scoreRetrieval(hand, { dsl: true, dslTemperature: 3 });
    assert.deepEqual(Array.from(dsl.t2vRanks), Array.from(retrievalRanks(dualSoftmax(sim, { axis: 0, temperature: 3 }), { queryToVideo: hand.queryToVideo })));
    assert.deepEqual(Array.from(dsl.v2tRanks), Array.from(retrievalRanksV2T(dualSoftmax(sim, { axis: 1, temperature: 3 }), hand.queryToVideo)));
    const qb = await scoreRetrieval(hand, { bankTextEmb: hand.textEmb, qbnormBeta: 2 });
    assert.deepEqual(Array.from(qb.t2vRanks), Array.from(retrievalRanks(qbNorm(sim, sim, { beta: 2 }), { queryToVideo: hand.queryToVideo })));
    assert.deepEqual(Array.from(qb.v2tRanks), [1, 2, 3], 'QB-Norm leaves v2t plain');
    assert.equal(tf.memory().numTensors, before);
  });

  it('no concepts, no per-concept table; conceptRecall checks its lengths', async () => {
    assert.deepEqual((await scoreRetrieval(hand)).perConcept, []);
    assert.throws(() => conceptRecall([[]], hand.queryToVideo, Int32Array.of(1, 1, 1, 1), Int32Array.of(1, 1, 1)), /1 concept lists for 3 videos/);
  });

  it('dense and blocked agree with the ranks of the whole matrix on integer embeddings (exact ties), several captions per video', async () => {
    let seed = 7;
    const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return Math.floor((seed / 2147483648) * 5) - 2; };
    const nv = 37; const d = 6; const q2v = Int32Array.from({ length: 90 }, (_, i) => i % nv);
    const e = { d, videoIds: Array.from({ length: nv }, (_, i) => `v${i}`), videoEmb: Float32Array.from({ length: nv * d }, rnd), queryToVideo: q2v, textEmb: Float32Array.from({ length: 90 * d }, rnd) };
    const sim = handSim(e);
    const t2v = Array.from(retrievalRanks(sim, { queryToVideo: q2v }));
    const v2t = Array.from(retrievalRanksV2T(sim, q2v));
    for (const opts of [{}, { denseLimit: 100, blockRows: 10 }]) {
      const r = await scoreRetrieval(e, opts);
      assert.deepEqual(Array.from(r.t2vRanks), t2v, JSON.stringify(opts));
      assert.deepEqual(Array.from(r.v2tRanks), v2t, JSON.stringify(opts));
    }
  });

  it('recall curve counts ranks ≤ K; DSL and QB-Norm are exclusive and dense-only', async () => {
    assert.deepEqual(recallCurve(Int32Array.of(1, 3, 1, 3), 3).map((p) => p.recall), [50, 50, 100]);
    await assert.rejects(scoreRetrieval(hand, { dsl: true, bankTextEmb: hand.textEmb }), /not both/);
    await assert.rejects(scoreRetrieval(hand, { dsl: true, denseLimit: 4 }), /dense limit 4/);
  });
});

describe('retrieval evaluation: embedding cache', () => {
  it('round-trips, keys ignore key order, and a damaged entry reads as absent', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-emb-'));
    assert.equal(embeddingCacheKey({ a: 1, b: { c: 2, d: 3 } }), embeddingCacheKey({ b: { d: 3, c: 2 }, a: 1 }));
    assert.notEqual(embeddingCacheKey({ a: 1 }), embeddingCacheKey({ a: 2 }));
    const key = embeddingCacheKey({ x: 1 });
    assert.equal(await readEmbeddingCache(dir, key), null);
    await writeEmbeddingCache(dir, key, { x: 1 }, hand);
    const back = await readEmbeddingCache(dir, key);
    assert.deepEqual(back, { ...hand, videoEmb: hand.videoEmb, textEmb: hand.textEmb });
    await writeFile(path.join(dir, `${key}.f32`), Buffer.alloc(12));
    assert.equal(await readEmbeddingCache(dir, key), null);
    await assert.rejects(() => writeEmbeddingCache(dir, key, {}, { ...hand, d: 3 }), /videoEmb has 6 values, expected 3 videos × 3/);
    await rm(dir, { recursive: true, force: true });
  });
});

describe('retrieval evaluation of a checkpoint', function () {
  this.timeout(120000);
  let tmp: string;
  let run: SmallRun;
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-evalret-'));
    run = await makeSmallRun(tmp);
  });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  it('matches the pretrain pipeline\'s own test figures, writes eval.json/eval.md/PNGs, and a rerun encodes nothing', async () => {
    const framesDir = path.join(tmp, 'frames-eval');
    const out = path.join(tmp, 'report');
    const r1 = await evaluateCheckpointRetrieval({ checkpoint: run.runDir, manifest: run.manifest, framesDir, out });
    const pre = JSON.parse(await readFile(path.join(run.runDir, 'eval.json'), 'utf8'));
    assert.deepEqual(r1.t2v, pre.t2v);
    assert.deepEqual(r1.v2t, pre.v2t);
    assert.equal(r1.videos, pre.testVideos);
    assert.equal(r1.cache.hit, false);
    assert.deepEqual(r1.encoded, { videos: pre.testVideos, captions: pre.testCaptions });

    const j = JSON.parse(await readFile(path.join(out, 'eval.json'), 'utf8'));
    for (const dir of ['t2v', 'v2t']) for (const k of ['R1', 'R5', 'R10', 'R50', 'MdR', 'MnR']) assert.equal(typeof j[dir][k], 'number', `${dir}.${k}`);
    for (const k of ['checkpoint', 'step', 'manifest', 'split', 'videos', 'captions', 'chanceR1', 'perConcept', 'cache', 'encoded', 'rescoring']) assert.ok(k in j, k);
    assert.equal(j.step, 24);
    assert.equal(j.split, 'test');
    assert.ok(Math.abs(j.chanceR1 - 100 / j.videos) < 1e-9);
    // Every test video of the synthetic corpus has a shape, colour, size, direction and speed.
    const shapes = j.perConcept.filter((c: { concept: string }) => c.concept.startsWith('shape:'));
    assert.equal(shapes.reduce((n: number, c: { videos: number }) => n + c.videos, 0), j.videos);
    const md = await readFile(path.join(out, 'eval.md'), 'utf8');
    assert.match(md, /\| text→video \|/);
    assert.match(md, /\| color:\w+ \|/);
    assert.deepEqual(j.files.plots.map((p: string) => path.basename(p)).sort(), ['concept_r1.png', 'recall_at_k.png']);
    for (const p of j.files.plots) {
      const bytes = await readFile(p);
      assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `${p} is not a PNG`);
    }

    // Without the frame cache the rerun can only succeed by reading the embeddings back.
    await rm(framesDir, { recursive: true, force: true });
    const r2 = await evaluateCheckpointRetrieval({ checkpoint: run.checkpoint, manifest: run.manifest, framesDir, out, plots: false });
    assert.equal(r2.cache.hit, true);
    assert.deepEqual(r2.encoded, { videos: 0, captions: 0 });
    assert.deepEqual(r2.t2v, r1.t2v);
    assert.deepEqual(r2.perConcept, r1.perConcept);

    const dsl = await evaluateCheckpointRetrieval({ checkpoint: run.checkpoint, manifest: run.manifest, framesDir, dsl: true, plots: false });
    assert.equal(dsl.rescoring, 'dsl');
    assert.equal(dsl.encoded.videos, 0);
    const qb = await evaluateCheckpointRetrieval({ checkpoint: run.checkpoint, manifest: run.manifest, framesDir, qbnorm: run.manifest, plots: false });
    assert.equal(qb.rescoring, 'qbnorm');
    assert.deepEqual(qb.v2t, r1.v2t);
    assert.ok(qb.encoded.captions > 0 && qb.encoded.videos === 0);
  });

  it('bad paths and splits are errors that name them', async () => {
    await assert.rejects(() => evaluateCheckpointRetrieval({ checkpoint: path.join(tmp, 'nope'), manifest: run.manifest }), /checkpoint .*nope: does not exist/);
    await assert.rejects(() => evaluateCheckpointRetrieval({ checkpoint: tmp, manifest: run.manifest }), /checkpoint .*: neither a checkpoint folder/);
    await assert.rejects(() => evaluateCheckpointRetrieval({ checkpoint: run.runDir, manifest: path.join(tmp, 'none.jsonl') }), /--manifest: .*none\.jsonl does not exist/);
    await assert.rejects(() => evaluateCheckpointRetrieval({ checkpoint: run.runDir, manifest: run.manifest, split: 'val' }), /no entries with split 'val'/);
    await assert.rejects(() => evaluateCheckpointRetrieval({ checkpoint: run.runDir, manifest: run.manifest, qbnorm: path.join(tmp, 'bank.jsonl') }), /--qbnorm: .*bank\.jsonl does not exist/);
  });
});
