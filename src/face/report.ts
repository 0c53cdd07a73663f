/**
 * Score files and verification reports: `label score` lines (speaker and anti-spoofing
 * systems), and the metrics JSON with ROC and DET plots that `eval verify` and `eval scores`
 * write.
 */
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { savePlot } from '../eval/plot.js';
import { rocCurve, verificationMetrics, type VerificationMetrics } from '../eval/verification.js';
import { writeFileAtomic } from '../util/atomicWrite.js';

const GENUINE = new Set(['1', 'target', 'genuine', 'bonafide', 'same', 'true']);
const IMPOSTOR = new Set(['0', 'nontarget', 'non-target', 'impostor', 'imposter', 'spoof', 'different', 'false']);

/**
 * Parses `label score` lines: label 1/target/genuine/bonafide or 0/nontarget/impostor/spoof;
 * blank lines and `#` comments are skipped; a bad line is an error naming the file and line.
 *
 * @example parseScores('1 0.9\n0 0.2\n') // { labels: [1, 0], scores: [0.9, 0.2] }
 */
export function parseScores(text: string, file = 'scores'): { labels: number[]; scores: number[] } {
  const labels: number[] = [];
  const scores: number[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const t = raw.trim();
    if (t === '' || t.startsWith('#')) return;
    const f = t.split(/[\s,]+/);
    if (f.length !== 2) throw new Error(`${file}:${i + 1}: expected 'label score', got ${f.length} field(s): '${t}'`);
    const l = f[0].toLowerCase();
    const label = GENUINE.has(l) ? 1 : IMPOSTOR.has(l) ? 0 : -1;
    if (label < 0) throw new Error(`${file}:${i + 1}: label '${f[0]}' must be 1/target/genuine/bonafide or 0/nontarget/impostor/spoof`);
    const s = Number(f[1]);
    if (f[1] === '' || !Number.isFinite(s)) throw new Error(`${file}:${i + 1}: score '${f[1]}' is not a finite number`);
    labels.push(label);
    scores.push(s);
  });
  if (labels.length === 0) throw new Error(`${file}: no 'label score' lines`);
  return { labels, scores };
}

/** Reads and parses a score file. @example const { labels, scores } = await readScores('trials.txt'); */
export async function readScores(file: string): Promise<{ labels: number[]; scores: number[] }> {
  let text: string;
  try { text = await readFile(file, 'utf8'); } catch (e) { throw new Error(`scores file ${file}: cannot read (${(e as Error).message})`); }
  return parseScores(text, file);
}

/** Φ⁻¹(p) by Acklam's rational approximation (relative error < 1.2e-9), for DET axes. @example probit(0.5) // 0 */
export function probit(p: number): number {
  if (!(p > 0 && p < 1)) throw new Error(`probit: p must be in (0, 1), got ${p}`);
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - lo) return -probit(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

export interface VerificationReport {
  metrics: VerificationMetrics;
  trials: number;
  genuine: number;
  folds: number;
  files: { json: string; roc: string; det: string };
}

/**
 * Metrics of scored trials written to `outDir`: metrics.json, roc.png (TAR vs FAR, log FAR)
 * and det.png (miss vs false-alarm rate on normal-deviate axes). `files` names what was
 * written: roc.svg and det.svg where PNGs cannot be rendered (see savePlot).
 *
 * @example await writeVerificationReport(scores, labels, 'runs/eval', { folds: 10, title: 'LFW' });
 */
export async function writeVerificationReport(
  scores: ArrayLike<number>, labels: ArrayLike<number>, outDir: string, opts: { folds?: number; title?: string; extra?: Record<string, unknown> } = {},
): Promise<VerificationReport> {
  const n = scores.length;
  const folds = Math.min(opts.folds ?? 10, n);
  const metrics = verificationMetrics(scores, labels, { folds });
  const roc = rocCurve(scores, labels);
  await mkdir(outDir, { recursive: true });
  let genuine = 0;
  for (let i = 0; i < n; i++) genuine += labels[i];
  const json = path.join(outDir, 'metrics.json');
  await writeFileAtomic(json, JSON.stringify({ ...metrics, trials: n, genuine, impostor: n - genuine, folds, ...opts.extra }, null, 2) + '\n');
  const impostor = n - genuine;
  const minFar = 1 / Math.max(impostor, 1);
  const rocPoints = Array.from(roc.fpr, (f, k) => ({ far: Math.max(f, minFar / 2), tar: roc.tpr[k] }));
  const title = opts.title ?? 'verification';
  const rocFile = await savePlot({
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: `${title}: ROC (EER ${(100 * metrics.eer).toFixed(2)} %)`,
    data: { values: rocPoints },
    mark: { type: 'line', interpolate: 'step-after' },
    encoding: {
      x: { field: 'far', type: 'quantitative', scale: { type: 'log' }, title: 'false accept rate (FAR)' },
      y: { field: 'tar', type: 'quantitative', scale: { domain: [0, 1] }, title: 'true accept rate (TAR)' },
    },
    width: 360, height: 280,
  }, path.join(outDir, 'roc.png'));
  // DET: rates clipped into (0, 1) by half a trial so that 0 and 1 stay on the probit axes. Both
  // axes share one domain and one set of ticks, so equal rates lie on the diagonal and the EER is
  // where the curve crosses it.
  const eps = (k: number) => 0.5 / Math.max(k, 1);
  const clip = (v: number, k: number) => Math.min(1 - eps(k), Math.max(eps(k), v));
  const detPoints = Array.from(roc.fpr, (f, k) => ({ far: probit(clip(f, impostor)), frr: probit(clip(1 - roc.tpr[k], genuine)) }));
  const edge = -probit(Math.min(eps(impostor), eps(genuine)));
  const ticks = [0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999].filter((t) => Math.abs(probit(t)) <= edge);
  const axis = {
    values: ticks.map(probit), grid: true,
    labelExpr: `{${ticks.map((t) => `'${probit(t)}': '${+(t * 100).toPrecision(3)}%'`).join(', ')}}[datum.value] || ''`,
  };
  // A little room past the clipped rates keeps the curve's ends off the axes.
  const lim = 1.05 * edge;
  const scale = { domain: [-lim, lim], nice: false, zero: false };
  const eerAt = probit(Math.min(1 - 1e-9, Math.max(1e-9, metrics.eer)));
  const eerText = `EER ${(100 * metrics.eer).toFixed(2)} %`;
  const detFile = await savePlot({
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: `${title}: DET (${eerText}, minDCF ${metrics.minDCF.toFixed(3)})`,
    encoding: {
      x: { field: 'far', type: 'quantitative', title: 'false alarm rate (normal deviate scale)', axis, scale },
      y: { field: 'frr', type: 'quantitative', title: 'miss rate (normal deviate scale)', axis, scale },
    },
    layer: [
      { data: { values: [{ far: -lim, frr: -lim }, { far: lim, frr: lim }] }, mark: { type: 'line', color: '#999', strokeDash: [4, 4], strokeWidth: 1 } },
      { data: { values: detPoints }, mark: { type: 'line', interpolate: 'step-after' } },
      { data: { values: [{ far: eerAt, frr: eerAt }] }, mark: { type: 'point', filled: true, color: '#d62728', size: 50 } },
      { data: { values: [{ far: eerAt, frr: eerAt, text: eerText }] }, mark: { type: 'text', align: 'left', dx: 8, dy: -8, color: '#d62728' }, encoding: { text: { field: 'text' } } },
    ],
    width: 320, height: 320,
  }, path.join(outDir, 'det.png'));
  return { metrics, trials: n, genuine, folds, files: { json, roc: rocFile, det: detFile } };
}
