/**
 * PNG plots from Vega-Lite specs: compiled by vega-lite, rendered to SVG by vega's headless
 * view (no canvas, no browser), rasterised by sharp. Where sharp cannot load (its native
 * binary missing, or the GPU bundle, which leaves it out), the SVG is written instead: a plot
 * never ends a run that has already trained.
 *
 * @example
 * await savePlot({ mark: 'line', data: { values }, encoding: { x: { field: 'k', type: 'quantitative' }, y: { field: 'r', type: 'quantitative' } } }, 'runs/x/recall.png');
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
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

type Rasteriser = (svg: string, density: number, out: string) => Promise<void>;
let rasteriser: Promise<Rasteriser | Error> | undefined;

/** sharp, loaded on first use; the load error when it cannot be. */
function loadRasteriser(): Promise<Rasteriser | Error> {
  rasteriser ??= import('sharp').then(
    (m) => {
      const sharp = m.default;
      return async (svg: string, density: number, out: string) => { await sharp(Buffer.from(svg), { density }).png().toFile(out); };
    },
    (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
  );
  return rasteriser;
}

let warnedNoPng = false;

/**
 * Writes a PNG (or an SVG when `file` ends in .svg) of the spec; `scale` multiplies the
 * resolution. When the PNG cannot be rasterised (sharp missing or failing), writes the SVG
 * beside it (`x.png` → `x.svg`), says so once on stderr, and returns that path.
 */
export async function savePlot(spec: VegaLiteSpec, file: string, opts: { scale?: number } = {}): Promise<string> {
  if (typeof file !== 'string' || !/\.(png|svg)$/i.test(file)) throw new Error(`savePlot: file must end in .png or .svg, got '${file}'`);
  const scale = opts.scale ?? 2;
  if (!(scale > 0 && scale <= 8)) throw new Error(`savePlot: scale must be in (0, 8], got ${scale}`);
  const svg = await renderSvg(spec);
  await mkdir(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  if (/\.svg$/i.test(file)) {
    await writeFile(tmp, svg);
    await rename(tmp, file);
    return file;
  }
  const r = await loadRasteriser();
  try {
    if (r instanceof Error) throw r;
    await r(svg, 72 * scale, tmp);
    await rename(tmp, file);
    return file;
  } catch (e) {
    await rm(tmp, { force: true });
    const svgFile = file.replace(/\.png$/i, '.svg');
    if (!warnedNoPng) {
      warnedNoPng = true;
      process.stderr.write(`savePlot: no PNG (${(e as Error).message.split('\n')[0]}); writing SVG plots instead, e.g. ${svgFile}\n`);
    }
    return savePlot(spec, svgFile, opts);
  }
}
