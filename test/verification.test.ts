import assert from 'node:assert/strict';
import { rocCurve, verificationMetrics } from '../src/eval/verification.js';
import { classificationMetrics } from '../src/eval/classification.js';

function close(actual: number, expected: number, tol = 1e-12, what = ''): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what} ${actual} vs ${expected}`);
}

describe('eval/verification', () => {
  // Case A: 4 genuine (1) and 4 impostor (0), with one genuine/impostor tie at 0.6.
  const scoresA = [0.9, 0.8, 0.7, 0.6, 0.6, 0.4, 0.3, 0.2];
  const labelsA = [1, 1, 0, 1, 0, 1, 0, 0];
  // Accept when score ≥ τ:   τ:   ∞    .9   .8   .7   .6   .4   .3   .2
  //                          TPR: 0   .25  .5   .5   .75  1    1    1
  //                          FPR: 0   0    0    .25  .5   .5   .75  1

  it('ROC: one point per distinct score, ties entering together', () => {
    const c = rocCurve(scoresA, labelsA);
    assert.deepEqual(Array.from(c.thresholds), [Infinity, 0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2]);
    assert.deepEqual(Array.from(c.tpr), [0, 0.25, 0.5, 0.5, 0.75, 1, 1, 1]);
    assert.deepEqual(Array.from(c.fpr), [0, 0, 0, 0.25, 0.5, 0.5, 0.75, 1]);
  });

  it('AUC, EER, minDCF and TAR@FAR on case A by hand', () => {
    const m = verificationMetrics(scoresA, labelsA, { folds: 2, pTarget: 0.25, farTargets: [0.5, 0.25, 0.1, 1e-6] });
    // AUC by pairs: genuine .9 and .8 beat all 4 impostors (8); .6 beats .3, .2 and ties .6 (2.5); .4 beats 2 → 12.5/16
    close(m.auc, 12.5 / 16);
    // (FPR, FNR): (0,1) (0,.75) (0,.5) (.25,.5) (.5,.25) (.5,0) …; |FPR−FNR| smallest (.25) at τ=.7 and τ=.6, both mean .375
    close(m.eer, 0.375);
    // p = .25: DCF = (.25·Pmiss + .75·Pfa)/.25 = Pmiss + 3·Pfa → 1, .75, .5, 1.25, 1.75, 1.5, 2.25, 3 → min .5
    close(m.minDCF, 0.5);
    // largest TPR with FPR ≤ target: .5 → 1 (τ=.4); .25 → .5 (τ=.7); .1 and 1e-6 → .5 (FPR 0 at τ=.8)
    assert.deepEqual(m.tarAtFar, { '5e-1': 1, '2.5e-1': 0.5, '1e-1': 0.5, '1e-6': 0.5 });
  });

  it('k-fold accuracy: threshold from the other folds, strictest among ties (case A, 2 folds)', () => {
    // Fold 1 = pairs 0–3, fold 2 = pairs 4–7.
    // Train on fold 2 (.6/0, .4/1, .3/0, .2/0): candidates −∞ 1/4, .25 2/4, .35 3/4, .5 2/4, +∞ 3/4
    //   → best 3/4 at .35 and +∞; the larger, +∞, rejects all of fold 1 (labels 1,1,0,1) → 1/4.
    // Train on fold 1 (.9/1, .8/1, .7/0, .6/1): −∞ 3/4, .65 2/4, .75 3/4, .85 2/4, +∞ 1/4
    //   → best 3/4 at −∞ and .75; τ = .75 rejects all of fold 2 (labels 0,1,0,0) → 3/4.
    // mean (1/4 + 3/4)/2 = .5, population std .25
    const m = verificationMetrics(scoresA, labelsA, { folds: 2 });
    close(m.accuracy.mean, 0.5);
    close(m.accuracy.std, 0.25);
  });

  it('EER averages the two points equidistant from the crossing', () => {
    // 5 genuine, 10 impostors. Descending: 10 G, 9 G, 8 I, 7 G, then a tie at 5 of 1 G + 4 I, 3 G, 2 ×5 I.
    // (FPR, FNR) at τ = 7: (.1, .4), gap −.3, mean .25; at τ = 5: (.5, .2), gap +.3, mean .35 → EER .3
    const scores = [10, 9, 8, 7, 5, 5, 5, 5, 5, 3, 2, 2, 2, 2, 2];
    const labels = [1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0];
    const m = verificationMetrics(scores, labels, { folds: 3, pTarget: 0.25, farTargets: [0.1, 0.05, 0.5] });
    close(m.eer, 0.3);
    // (Pfa, Pmiss): (0,1) (0,.8) (0,.6) (.1,.6) (.1,.4) (.5,.2) (.5,0) (1,0); Pmiss + 3·Pfa → min .6 at (0, .6)
    close(m.minDCF, 0.6);
    // FPR ≤ .1 → TPR .6 (τ = 7); ≤ .05 → FPR 0 → .4 (τ = 9); ≤ .5 → 1 (τ = 3)
    assert.deepEqual(m.tarAtFar, { '1e-1': 0.6, '5e-2': 0.4, '5e-1': 1 });
  });

  it('perfect separation gives EER 0, AUC 1, minDCF 0 and 10-fold accuracy 1', () => {
    // Interleave so every contiguous fold holds both classes; impostors in [0, .1], genuine in [.9, 1].
    const scores: number[] = [];
    const labels: number[] = [];
    for (let i = 0; i < 20; i++) { scores.push(0.9 + i / 200, i / 200); labels.push(1, 0); }
    const m = verificationMetrics(scores, labels);
    assert.equal(m.eer, 0);
    assert.equal(m.auc, 1);
    assert.equal(m.minDCF, 0);
    assert.deepEqual(m.accuracy, { mean: 1, std: 0 });
    assert.deepEqual(Object.values(m.tarAtFar), [1, 1, 1, 1, 1, 1]);
    assert.deepEqual(Object.keys(m.tarAtFar), ['1e-1', '1e-2', '1e-3', '1e-4', '1e-5', '1e-6']);
  });

  it('all-equal scores give EER 0.5 and AUC 0.5', () => {
    // ROC has only (0,0) at τ = ∞ and (1,1): both |FPR − FNR| = 1, both means .5
    const m = verificationMetrics([0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0], { folds: 2, pTarget: 0.01 });
    assert.equal(m.eer, 0.5);
    assert.equal(m.auc, 0.5);
    // accept-none: Pmiss 1 → (.01·1)/.01 = 1; accept-all: Pfa 1 → .99/.01 = 99 → min 1
    close(m.minDCF, 1);
  });

  it('rejects bad input with errors naming the argument', () => {
    assert.throws(() => verificationMetrics([0.1, NaN, 0.3], [1, 0, 1]), /scores\[1\] = NaN/);
    assert.throws(() => verificationMetrics([0.1, 0.2, 0.3], [1, 2, 0]), /labels\[1\] = 2: expected 0/);
    assert.throws(() => verificationMetrics([0.1, 0.2, 0.3], [1, 0]), /labels: length 2 ≠ scores length 3/);
    assert.throws(() => verificationMetrics([0.1, 0.2], [1, 1], { folds: 2 }), /labels: need at least one genuine \(1\) and one impostor/);
    assert.throws(() => verificationMetrics([0.1, 0.2, 0.3], [1, 0, 1]), /folds: expected an integer in \[2, 3\]/);
    assert.throws(() => verificationMetrics(scoresA, labelsA, { farTargets: [0] }), /farTargets: 0 is not a rate/);
    assert.throws(() => verificationMetrics(scoresA, labelsA, { folds: 2, pTarget: 1 }), /pTarget/);
    assert.throws(() => rocCurve([0.1, Infinity], [1, 0]), /scores\[1\] = Infinity/);
  });
});

describe('eval/classification', () => {
  it('accuracy, per-class recall and confusion by hand', () => {
    // (true, pred): (0,0) (1,1) (1,2) (2,2) (1,1) (2,0)
    // rows = true class: 0 → [1,0,0]; 1 → [0,2,1]; 2 → [1,0,1]; class 3 has no examples
    const m = classificationMetrics([0, 1, 2, 2, 1, 0], [0, 1, 1, 2, 1, 2], 4);
    assert.deepEqual(m.confusion, [[1, 0, 0, 0], [0, 2, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]]);
    close(m.accuracy, 4 / 6);
    assert.deepEqual(m.perClassRecall.slice(0, 3), [1, 2 / 3, 1 / 2]);
    assert.ok(Number.isNaN(m.perClassRecall[3]));
  });

  it('rejects bad input with errors naming the argument', () => {
    assert.throws(() => classificationMetrics([0, 3], [0, 1], 3), /pred\[1\] = 3/);
    assert.throws(() => classificationMetrics([0, 1], [0, 1.5], 3), /labels\[1\] = 1.5/);
    assert.throws(() => classificationMetrics([0, 1], [0], 3), /labels: length 1 ≠ pred length 2/);
    assert.throws(() => classificationMetrics([0], [0], 0), /numClasses/);
  });
});
