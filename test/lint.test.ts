import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('lint: one eslint config, the import direction enforced', function () {
  this.timeout(300_000);
  const eslint = new ESLint({ cwd: root });

  it('the repository is clean under eslint.config.js (npm run lint)', async () => {
    const results = await eslint.lintFiles(['.']);
    const problems = results.flatMap((r) => r.messages.map((m) => `${path.relative(root, r.filePath)}:${m.line}:${m.column} ${m.ruleId ?? ''} ${m.message}`));
    assert.ok(results.length > 100, `expected to lint the whole repository, linted ${results.length} files`);
    assert.deepEqual(problems, []);
  });

  const imports: [string, string, boolean][] = [
    ['src/nn/x.ts', '../train/optimizer.js', false],
    ['src/data/x.ts', '../meta/weightNet.js', false],
    ['src/backend/x.ts', '../nn/layers.js', false],
    ['src/util/x.ts', '../margin/core.js', false],
    ['src/eval/x.ts', '../../pipelines/config.js', false],
    ['src/margin/x.ts', '../../bench/eval.js', false],
    ['pipelines/x.ts', '../bench/eval.js', false],
    ['src/eval/x.ts', '../nn/layers.js', true],
    ['src/nn/x.ts', '../backend/tf.js', true],
    ['pipelines/x.ts', '../src/train/trainer.js', true],
  ];
  for (const [file, spec, allowed] of imports) {
    it(`${file} ${allowed ? 'may' : 'may not'} import ${spec}`, async () => {
      const [r] = await eslint.lintText(`import * as m from '${spec}';\nexport const n = m;\n`, { filePath: path.join(root, file) });
      const restricted = r.messages.filter((m) => m.ruleId === 'no-restricted-imports');
      assert.equal(restricted.length, allowed ? 0 : 1, restricted.map((m) => m.message).join('; '));
    });
  }

  it('src/ may not parse flags', async () => {
    const [r] = await eslint.lintText(`import { Command } from 'commander';\nexport const a = process.argv;\nexport const c = Command;\n`, { filePath: path.join(root, 'src/train/x.ts') });
    assert.deepEqual(r.messages.map((m) => m.ruleId).sort(), ['no-restricted-imports', 'no-restricted-syntax']);
  });
});
