import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { renderSvg, savePlot } from '../src/eval/plot.js';

describe('plots', () => {
  const spec = {
    width: 200, height: 100,
    data: { values: [{ k: 1, r: 10 }, { k: 5, r: 30 }, { k: 10, r: 45 }] },
    mark: 'line' as const,
    encoding: { x: { field: 'k', type: 'quantitative' as const }, y: { field: 'r', type: 'quantitative' as const, title: 'recall %' } },
  };

  it('renders a Vega-Lite spec to SVG with its axis title', async () => {
    const svg = await renderSvg(spec);
    assert.match(svg, /^<svg/);
    assert.match(svg, /recall %/);
  });

  it('writes a PNG of the asked scale', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-plot-'));
    const file = await savePlot(spec, path.join(dir, 'a.png'), { scale: 2 });
    const bytes = await readFile(file);
    assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const meta = await sharp(bytes).metadata();
    assert.ok(meta.width! >= 400 && meta.height! >= 200, `${meta.width}x${meta.height}`);
  });

  /** A folder with register.mjs, which makes module resolution refuse 'sharp', as where its native binary is absent. */
  async function withoutSharp(prefix: string): Promise<{ dir: string; nodeArgs: string[] }> {
    const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
    await writeFile(path.join(dir, 'hooks.mjs'), "export async function resolve(s, c, next) { if (s === 'sharp') throw new Error('sharp refused for this test'); return next(s, c); }\n");
    await writeFile(path.join(dir, 'register.mjs'), "import { register } from 'node:module'; register('./hooks.mjs', import.meta.url);\n");
    return { dir, nodeArgs: ['--import', pathToFileURL(path.join(dir, 'register.mjs')).href] };
  }

  it('without sharp (its load fails) writes the SVG beside the asked PNG, warns once, and the run goes on', async () => {
    const { dir, nodeArgs } = await withoutSharp('vlmargin-plot-nosharp-');
    const plotJs = pathToFileURL(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/eval/plot.js')).href;
    await writeFile(path.join(dir, 'child.mjs'), `import { savePlot } from ${JSON.stringify(plotJs)};
const spec = ${JSON.stringify(spec)};
const a = await savePlot(spec, ${JSON.stringify(path.join(dir, 'a.png'))});
const b = await savePlot(spec, ${JSON.stringify(path.join(dir, 'b.png'))});
console.log(JSON.stringify([a, b]));
`);
    const r = spawnSync(process.execPath, [...nodeArgs, path.join(dir, 'child.mjs')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), [path.join(dir, 'a.svg'), path.join(dir, 'b.svg')]);
    assert.match(await readFile(path.join(dir, 'a.svg'), 'utf8'), /^<svg[\s\S]*recall %/);
    assert.equal(r.stderr.match(/savePlot: no PNG \(.*sharp refused for this test.*\); writing SVG plots instead/g)?.length, 1, r.stderr);
    assert.deepEqual((await readdir(dir)).filter((f) => f.endsWith('.png') || f.includes('.tmp-')), []);
  });

  it('with sharp stubbed out (as in the GPU bundle), `vlmargin eval scores` prints the SVG plots it wrote, not the PNGs it could not', async () => {
    const { dir, nodeArgs } = await withoutSharp('vlmargin-plot-nosharp-cli-');
    // The CLI imports sharp statically (face images), so here it resolves to a stub that throws when called, as tools/gpu/pack.sh's does.
    await writeFile(path.join(dir, 'sharp-stub.mjs'), "export default function sharp() { throw new Error('sharp stubbed for this test'); }\n");
    await writeFile(path.join(dir, 'hooks.mjs'), "export async function resolve(s, c, next) { if (s === 'sharp') return { url: new URL('./sharp-stub.mjs', import.meta.url).href, shortCircuit: true }; return next(s, c); }\n");
    const scores = path.join(dir, 'trials.txt');
    await writeFile(scores, ['1 0.9', '1 0.8', '1 0.4', '0 0.5', '0 0.2', '0 0.1'].join('\n') + '\n');
    const out = path.join(dir, 'report');
    const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../pipelines/cli/main.js');
    const r = spawnSync(process.execPath, [...nodeArgs, main, 'eval', 'scores', '--scores', scores, '--folds', '2', '--out', out], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const printed = JSON.parse(r.stdout) as { files: { json: string; roc: string; det: string } };
    assert.deepEqual(printed.files, { json: path.join(out, 'metrics.json'), roc: path.join(out, 'roc.svg'), det: path.join(out, 'det.svg') });
    for (const f of Object.values(printed.files)) assert.ok((await readFile(f)).length > 0, f);
    assert.deepEqual((await readdir(out)).sort(), ['det.svg', 'metrics.json', 'roc.svg']);
  });

  it('refuses a file name that is neither .png nor .svg', async () => {
    await assert.rejects(() => savePlot(spec, 'x.jpg'), /must end in \.png or \.svg/);
  });
});
