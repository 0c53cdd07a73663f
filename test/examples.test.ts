import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { main as arcface } from '../examples/arcface-head.js';
import { main as samLoss } from '../examples/sam-loss.js';
import { tf } from '../src/backend/tf.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const backend = () => tf.getBackend() as 'wasm' | 'cpu';

describe('examples/', function () {
  this.timeout(60000);

  it('import tf and the API from vlmargin only (no second tfjs)', async () => {
    for (const f of ['sam-loss.ts', 'arcface-head.ts']) {
      const text = await readFile(path.join(root, 'examples', f), 'utf8');
      assert.match(text, /from 'vlmargin';/, f);
      assert.doesNotMatch(text, /@tensorflow/, f);
    }
  });

  it('sam-loss: the SAM loss falls and no tensor is left behind', async () => {
    const before = tf.memory().numTensors;
    const losses = await samLoss(30, backend());
    assert.equal(tf.memory().numTensors, before);
    assert.equal(losses.length, 30);
    assert.ok(losses[29] < losses[0] / 4, `${losses[0]} → ${losses[29]}`);
  });

  it('arcface-head: the ArcFace loop learns to classify new points', async () => {
    const before = tf.memory().numTensors;
    const r = await arcface(60, backend());
    assert.equal(tf.memory().numTensors, before);
    assert.ok(r.lossLast < r.lossFirst / 2, JSON.stringify(r));
    assert.ok(r.accuracy >= 0.9, JSON.stringify(r));
  });
});
