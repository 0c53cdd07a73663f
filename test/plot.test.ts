import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
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

  it('refuses a file name that is neither .png nor .svg', async () => {
    await assert.rejects(() => savePlot(spec, 'x.jpg'), /must end in \.png or \.svg/);
  });
});
