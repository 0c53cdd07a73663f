import assert from 'node:assert/strict';
import { attributeAgreement, conceptMap } from '../src/eval/attributeProbe.js';

describe('eval: attribute agreement of top-1 retrievals', () => {
  it('counts, per attribute, the captions whose top-1 video shares their value (hand-worked example)', () => {
    const concepts = new Map([
      ['a', conceptMap(['shape:circle', 'dir:left'], 'test')],
      ['b', conceptMap(['shape:circle', 'dir:right'], 'test')],
      ['c', conceptMap(['shape:square', 'dir:right'], 'test')],
    ]);
    // Videos on the axes; caption a points at b, caption b at b, caption c at a.
    const videos = [[1, 0, 0], [0, 1, 0], [0, 0, 1]];
    const texts = [[0.1, 0.9, 0], [0, 1, 0], [0.8, 0.2, 0.1]];
    const r = attributeAgreement(texts, ['a', 'b', 'c'], videos, ['a', 'b', 'c'], concepts);
    assert.equal(r.captions, 3);
    assert.equal(r.exact, 1 / 3, 'only caption b finds its own video');
    // shape: a→b circle=circle ✓, b→b ✓, c→a square≠circle ✗ → 2/3.
    // dir: a→b left≠right ✗, b→b ✓, c→a right≠left ✗ → 1/3.
    assert.deepEqual(r.attributes, [
      { name: 'shape', agreement: 2 / 3, values: 2, chance: 1 / 2 },
      { name: 'dir', agreement: 1 / 3, values: 2, chance: 1 / 2 },
    ]);
  });

  it('names a concept that is not attribute:value, and an entry without concepts', () => {
    assert.throws(() => conceptMap(['circle'], 'm.jsonl:3'), /m\.jsonl:3: concept 'circle' must read 'attribute:value'/);
    assert.throws(() => attributeAgreement([[1]], ['x'], [[1]], ['x'], new Map()), /no concepts for entry 'x'/);
  });
});
