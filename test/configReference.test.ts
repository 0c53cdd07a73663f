import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { configReference, unusedDescriptions } from '../pipelines/configReference.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('docs/CONFIG.md', () => {
  it('is what the zod schemas generate (regenerate: node dist/pipelines/configReference.js --write)', async () => {
    const generated = configReference();
    const committed = await readFile(path.join(root, 'docs', 'CONFIG.md'), 'utf8');
    assert.equal(committed, generated, 'docs/CONFIG.md is out of date: run `npm run build && node dist/pipelines/configReference.js --write`');
    assert.deepEqual(unusedDescriptions(), [], 'descriptions of keys no schema has');
    for (const key of ['loss.marginRad', 'data.valSplit', 'train.evalEvery', 'eval.valFraction', 'weighting.metaManifest']) assert.ok(generated.includes(`\`${key}\``), key);
  });
});
