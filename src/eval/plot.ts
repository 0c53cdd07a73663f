/**
 * PNG plots from Vega-Lite specs: compiled by vega-lite, rendered to SVG by vega's headless
 * view (no canvas, no browser), rasterised by sharp.
 *
 * @example
 * await savePlot({ mark: 'line', data: { values }, encoding: { x: { field: 'k', type: 'quantitative' }, y: { field: 'r', type: 'quantitative' } } }, 'runs/x/recall.png');
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import * as vega from 'vega';
import * as vl from 'vega-lite';

export type VegaLiteSpec = vl.TopLevelSpec;

/** The SVG text of a Vega-Lite spec. */
export async function renderSvg(spec: VegaLiteSpec): Promise<string> {
  if (!spec || typeof spec !== 'object') throw new Error('renderSvg: spec must be a Vega-Lite spec object');
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Writes a PNG (or an SVG when `file` ends in .svg) of the spec; `scale` multiplies the resolution. */
export async function savePlot(spec: VegaLiteSpec, file: string, opts: { scale?: number } = {}): Promise<string> {
  if (typeof file !== 'string' || !/\.(png|svg)$/i.test(file)) throw new Error(`savePlot: file must end in .png or .svg, got '${file}'`);
  const scale = opts.scale ?? 2;
  if (!(scale > 0 && scale <= 8)) throw new Error(`savePlot: scale must be in (0, 8], got ${scale}`);
  const svg = await renderSvg(spec);
  await mkdir(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  if (/\.svg$/i.test(file)) await writeFile(tmp, svg);
  else await sharp(Buffer.from(svg), { density: 72 * scale }).png().toFile(tmp);
  await rename(tmp, file);
  return file;
}
