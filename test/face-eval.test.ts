import assert from 'node:assert/strict';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseScores, probit, readScores, writeVerificationReport } from '../src/face/report.js';

describe('face: eval scores (score files, hand-worked EER, ROC/DET report)', function () {
  let tmp: string;
  before(async () => { tmp = await mkdtemp(path.join(os.tmpdir(), 'vlm-face-eval-')); });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  async function report(text: string, folds = 2) {
    const f = path.join(tmp, `s${Math.random().toString(36).slice(2)}.txt`);
    await writeFile(f, text);
    const { labels, scores } = await readScores(f);
    return writeVerificationReport(scores, labels, `${f}.report`, { folds });
  }

  it('hand-worked file: EER 1/3 at the crossing, AUC 8/9, minDCF 1/3', async () => {
    // Accept ≥ 0.7: FAR 1/3 (0.7), miss 1/3 (0.6) → EER 1/3. Genuine>impostor in 8 of 9 pairs.
    // minDCF at p = 0.01: τ = 0.8 gives (1/3·0.01 + 0·0.99)/0.01 = 1/3.
    const r = await report('target 0.9\n1 0.8\n# comment\n\nnontarget 0.7\n1 0.6\nspoof 0.5\n0 0.4\n');
    assert.ok(Math.abs(r.metrics.eer - 1 / 3) < 1e-12);
    assert.ok(Math.abs(r.metrics.auc - 8 / 9) < 1e-12);
    assert.ok(Math.abs(r.metrics.minDCF - 1 / 3) < 1e-12);
    assert.equal(r.trials, 6);
    assert.equal(r.genuine, 3);
    const json = JSON.parse(await readFile(r.files.json, 'utf8'));
    assert.equal(json.impostor, 3);
    await access(r.files.roc);
    await access(r.files.det);
  });

  it('ties, perfect separation and all-equal scores', async () => {
    // A genuine and an impostor tie at 0.5: both neighbouring points are 0.5 from balance, value ¼.
    const tie = await report('1 0.9\n1 0.5\n0 0.5\n0 0.1\n');
    assert.equal(tie.metrics.eer, 0.25);
    assert.equal(tie.metrics.auc, 0.875);
    // Interleaved so that each contiguous fold holds both kinds and the other fold sets τ = 0.45.
    const perfect = await report('1 0.9\n0 0.2\n1 0.8\n0 0.1\n');
    assert.equal(perfect.metrics.eer, 0);
    assert.equal(perfect.metrics.auc, 1);
    assert.equal(perfect.metrics.tarAtFar['1e-3'], 1);
    assert.equal(perfect.metrics.accuracy.mean, 1);
    const flat = await report('1 0.3\n0 0.3\n1 0.3\n0 0.3\n');
    assert.equal(flat.metrics.eer, 0.5);
    assert.equal(flat.metrics.auc, 0.5);
    assert.equal(flat.metrics.tarAtFar['1e-1'], 0);
  });

  it('bad lines are errors with the file and line number', () => {
    assert.throws(() => parseScores('1 0.5\nmaybe 0.2\n', 'f.txt'), /f\.txt:2: label 'maybe'/);
    assert.throws(() => parseScores('1 0.5\n0 abc\n', 'f.txt'), /f\.txt:2: score 'abc' is not a finite number/);
    assert.throws(() => parseScores('1 0.5 7\n', 'f.txt'), /f\.txt:1: expected 'label score', got 3 field/);
    assert.throws(() => parseScores('\n# only a comment\n', 'f.txt'), /f\.txt: no 'label score' lines/);
  });

  it('probit inverts the normal CDF (table values)', () => {
    assert.equal(probit(0.5), 0);
    assert.ok(Math.abs(probit(0.975) - 1.959963985) < 1e-8);
    assert.ok(Math.abs(probit(0.001) + 3.090232306) < 1e-8);
  });
});
