import assert from 'node:assert/strict';
import { tf } from '../src/backend/tf.js';
import { samContrastiveLoss } from '../src/margin/sam.js';

// Why the pretrain config has a margin schedule: with every pair at the same angle θ ≈ π/2
// (nothing learnt), the subtractive margin alone separates each positive from its negatives
// by s·(cos(θ − μ) − cos θ) ≈ s·μ, so SAM is almost satisfied by a collapsed model while
// InfoNCE stays at log B.
describe('SAM on a collapsed configuration', () => {
  it('is nearly zero at μ = 0.1, s = 100 while InfoNCE is log B (hand calculation)', async () => {
    const B = 8;
    const d = 2 * B;
    // Video i = e_i, text i = e_{B+i}: every video-text cosine is exactly 0.
    const v = tf.tidy(() => tf.cast(tf.oneHot(tf.range(0, B, 1, 'int32'), d), 'float32') as tf.Tensor2D);
    const t = tf.tidy(() => tf.cast(tf.oneHot(tf.range(B, 2 * B, 1, 'int32'), d), 'float32') as tf.Tensor2D);
    const s = 100;
    const sam = samContrastiveLoss(v, t, { marginRad: 0.1, logitScale: Math.log(s) });
    const info = samContrastiveLoss(v, t, { marginRad: 0, logitScale: Math.log(s) });
    const pos = s * Math.cos(Math.PI / 2 - 0.1);
    const expected = Math.log(Math.exp(pos) + (B - 1)) - pos;
    assert.ok(Math.abs((await sam.loss.data())[0] - expected) < 1e-3, `${(await sam.loss.data())[0]} vs ${expected}`);
    assert.ok(expected < 1e-3);
    assert.ok(Math.abs((await info.loss.data())[0] - Math.log(B)) < 1e-4);
    tf.dispose([v, t, sam.loss, sam.perSample, info.loss, info.perSample]);
  });
});
