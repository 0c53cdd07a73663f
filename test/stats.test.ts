import assert from 'node:assert/strict';
import { pairedDifference, signTest, summarize, tQuantile975 } from '../src/eval/stats.js';

// Reference values from SciPy 1.x: scipy.stats.t.ppf(0.975, df), t.interval(0.95, …), binomtest(k, n).pvalue.
describe('eval: small-sample statistics against SciPy', () => {
  it('t quantiles, mean ± std and the 95 % interval of a mean', () => {
    for (const [df, want] of [[1, 12.7062], [4, 2.77645], [9, 2.26216], [29, 2.04523]] as const) {
      assert.ok(Math.abs(tQuantile975(df) - want) < 1e-3, `t(0.975, ${df}) = ${tQuantile975(df)}, SciPy ${want}`);
    }
    const s = summarize([1, 2, 3, 4, 5]);
    assert.equal(s.mean, 3);
    assert.ok(Math.abs(s.std - Math.sqrt(2.5)) < 1e-12);
    assert.ok(Math.abs(s.ci95[0] - 1.03676) < 1e-3 && Math.abs(s.ci95[1] - 4.96324) < 1e-3, `${s.ci95}`);
    assert.deepEqual(summarize([7]), { n: 1, mean: 7, std: 0, ci95: [7, 7] });
    assert.throws(() => summarize([]), /'xs' must be a non-empty array/);
  });

  it('exact two-sided sign test; paired differences drop ties from the test', () => {
    assert.ok(Math.abs(signTest(6, 1) - 0.125) < 1e-12);
    assert.ok(Math.abs(signTest(5, 0) - 0.0625) < 1e-12);
    assert.ok(Math.abs(signTest(1, 8) - 0.0390625) < 1e-12);
    assert.equal(signTest(3, 3), 1);
    assert.equal(signTest(0, 0), 1);
    const d = pairedDifference([5, 6, 7, 4, 9], [4, 4, 4, 4, 1]);
    assert.deepEqual([d.wins, d.losses, d.ties], [4, 0, 1]);
    assert.ok(Math.abs(d.signP - 0.125) < 1e-12, 'four wins, one tie: binomtest(4, 4)');
    assert.ok(Math.abs(d.mean - 2.8) < 1e-12);
    assert.ok(d.ci95[0] < d.mean && d.ci95[1] > d.mean);
    assert.throws(() => pairedDifference([1, 2], [1]), /pair them by seed/);
  });
});
