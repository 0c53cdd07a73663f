/**
 * Does the webgpu backend compute what wasm computes? One training step of the dual encoder
 * (SAM forward, backward, AdamW) and the two Meta-Weight-Net steps (second order through the
 * heads or through everything), from the same initial weights and the same host batch, on the
 * backend under test and on a reference backend; then the differences.
 *
 *   node dist/bench/check-webgpu.js [--backend webgpu] [--reference wasm] [--models tiny,base]
 *       [--batch tiny:16,base:2] [--frames tiny:4,base:1] [--meta tiny] [--layers N] [--budget S] [--json out.json]
 *
 * `--layers N` keeps a preset's widths, heads, patch, image size, vocabulary and context but
 * gives each tower N layers: the same kernels on the same shapes at a fraction of the cost.
 * The wasm reference cannot hold all of `base` (its heap aborts on the first matMul at 149.6 M
 * parameters), so base is compared with `--layers 1` or 2.
 *
 * `--budget S` starts no new comparison after S seconds (those left get an error row); the JSON
 * is rewritten after every row, so a run cut short keeps what it finished.
 *
 * Per model and step kind it reports the loss and the global gradient norm on both backends,
 * the largest relative gradient difference over the parameters (max |Δg| / max |g| of each
 * tensor), the largest parameter difference after one AdamW step, and for the meta steps the
 * largest per-sample weight difference. `ok` is a loose bar (loss and norm within 1e-3
 * relative, gradients within 1e-2): float32 on a GPU sums in another order, and anything past
 * the bar is a wrong kernel, not rounding.
 */
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { tf } from '../src/backend/tf.js';
import { initBackend, parseBackendPreference } from '../src/backend/init.js';
import { assertNoWebGPUErrors } from '../src/backend/webgpuGuard.js';
import { samContrastiveLoss } from '../src/margin/sam.js';
import { dualEncoderMetaModel } from '../src/meta/dualEncoderModel.js';
import { mwnStep } from '../src/meta/metaStep.js';
import { WeightNet } from '../src/meta/weightNet.js';
import { getConfig, PRESET_NAMES, type DualEncoderConfig, type PresetName } from '../src/nn/configs.js';
import { encodeText, encodeVideo, initDualEncoder, paramGroup } from '../src/nn/dualEncoder.js';
import { valueAndGradsOf } from '../src/nn/params.js';
import { globalNorm } from '../src/train/gradients.js';
import { AdamW } from '../src/train/optimizer.js';
import { disposeBatch, hostBatch, toTensors } from './lib/hostBatch.js';

const MARGIN_RAD = 0.1;
const LR = 1e-3;
const KINDS = ['plain', 'mwn-heads', 'mwn-all'] as const;
type Kind = typeof KINDS[number];

/** What one step produced, read back to the host. */
interface StepOut {
  loss: number;
  gradNorm: number;
  grads: Record<string, Float32Array>;
  /** Parameters after one AdamW step with `grads`. */
  after: Record<string, Float32Array>;
  weights: Float32Array | null;
  ms: number;
}

async function read(x: Record<string, tf.Tensor>): Promise<Record<string, Float32Array>> {
  const out: Record<string, Float32Array> = {};
  for (const [k, t] of Object.entries(x)) out[k] = Float32Array.from(await t.data() as Float32Array);
  return out;
}

/** One step of `kind` on the current backend, from fresh weights (seed 1) and the fixed batch. */
async function step(cfg: DualEncoderConfig, batch: number, frames: number, kind: Kind): Promise<StepOut> {
  const store = initDualEncoder(cfg, 1);
  const params = store.snapshot() as Record<string, tf.Variable>;
  const optimizer = new AdamW(params, { lr: LR, weightDecay: 0.2, groups: (n) => ({ weightDecay: paramGroup(n).decay ? 0.2 : 0 }) });
  const train = toTensors(hostBatch(cfg, batch, frames, 7), batch);
  const meta = toTensors(hostBatch(cfg, batch, frames, 11), batch);
  const weightNet = kind === 'plain' ? null : new WeightNet({ hidden: 100, seed: 1 });
  const t0 = performance.now();
  try {
    let loss: number;
    let grads: Record<string, tf.Tensor>;
    let weights: Float32Array | null = null;
    if (kind === 'plain') {
      const r = valueAndGradsOf((p) => samContrastiveLoss(
        encodeVideo(p, train.frames, cfg), encodeText(p, train.ids, train.mask, cfg), { marginRad: MARGIN_RAD, logitScale: p.logit_scale },
      ).loss as tf.Scalar, params);
      loss = (await r.value.data())[0];
      r.value.dispose();
      grads = r.grads;
    } else {
      const r = await mwnStep({
        model: dualEncoderMetaModel(cfg, { marginRad: MARGIN_RAD }), params, trainBatch: train, metaBatch: meta,
        weightNet: weightNet!, alpha: 1e-3, metaScope: kind === 'mwn-heads' ? 'heads' : 'all', step: 0,
      });
      loss = r.loss;
      grads = r.grads;
      weights = Float32Array.from(r.weights);
    }
    const normT = globalNorm(grads);
    const gradNorm = (await normT.data())[0];
    normT.dispose();
    const g = await read(grads);
    optimizer.step(grads, LR);
    tf.dispose(Object.values(grads));
    const after = await read(params);
    assertNoWebGPUErrors(`the ${kind} step of ${cfg.name}`);
    return { loss, gradNorm, grads: g, after, weights, ms: performance.now() - t0 };
  } finally {
    disposeBatch(train);
    disposeBatch(meta);
    weightNet?.dispose();
    optimizer.dispose();
    store.dispose();
  }
}

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const v of a) m = Math.max(m, Math.abs(v));
  return m;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);

export interface CheckRow {
  model: string; batch: number; frames: number; kind: Kind;
  /** Layers per tower when --layers cut them; null for the preset's own. */
  layers?: number | null;
  loss: number | null; lossRef: number | null; lossRelDiff: number | null;
  gradNorm: number | null; gradNormRef: number | null; gradNormRelDiff: number | null;
  /** max over parameters of max|Δg| / max|g_ref|, and the parameter it was found in. */
  gradMaxRelDiff: number | null; gradWorstParam: string | null;
  /** max |Δp| after one AdamW step (lr 1e-3). */
  paramMaxAbsDiff: number | null;
  weightMaxAbsDiff: number | null;
  ms: number | null; msRef: number | null;
  ok: boolean; error: string | null;
}

function compare(model: string, batch: number, frames: number, kind: Kind, t: StepOut, r: StepOut): CheckRow {
  let worst = 0;
  let worstName = '';
  for (const [k, gr] of Object.entries(r.grads)) {
    const d = maxAbsDiff(t.grads[k], gr) / Math.max(maxAbs(gr), 1e-30);
    if (d > worst) { worst = d; worstName = k; }
  }
  let pd = 0;
  for (const [k, pr] of Object.entries(r.after)) pd = Math.max(pd, maxAbsDiff(t.after[k], pr));
  const row: CheckRow = {
    model, batch, frames, kind,
    loss: t.loss, lossRef: r.loss, lossRelDiff: rel(t.loss, r.loss),
    gradNorm: t.gradNorm, gradNormRef: r.gradNorm, gradNormRelDiff: rel(t.gradNorm, r.gradNorm),
    gradMaxRelDiff: worst, gradWorstParam: worstName || null, paramMaxAbsDiff: pd,
    weightMaxAbsDiff: t.weights && r.weights ? maxAbsDiff(t.weights, r.weights) : null,
    ms: Math.round(t.ms), msRef: Math.round(r.ms), ok: false, error: null,
  };
  row.ok = row.lossRelDiff! <= 1e-3 && row.gradNormRelDiff! <= 1e-3 && worst <= 1e-2 && Number.isFinite(t.loss);
  return row;
}

function pairs(v: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const part of v.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [k, n] = part.split(':');
    const x = Number(n);
    if (!(PRESET_NAMES as string[]).includes(k) || !Number.isInteger(x) || x < 1) {
      throw new Error(`check-webgpu: ${name} expects preset:positive-integer pairs (e.g. tiny:16,base:2), got '${part}'`);
    }
    out.set(k, x);
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'webgpu' },
      reference: { type: 'string', default: 'wasm' },
      models: { type: 'string', default: 'tiny,base' },
      batch: { type: 'string', default: 'tiny:16,base:2' },
      frames: { type: 'string', default: 'tiny:4,base:1' },
      meta: { type: 'string', default: 'tiny' },
      budget: { type: 'string', default: '0' },
      layers: { type: 'string' },
      json: { type: 'string' },
    },
  });
  const backend = parseBackendPreference(values.backend, '--backend');
  const reference = parseBackendPreference(values.reference, '--reference');
  const models = values.models!.split(',').map((s) => s.trim()).filter(Boolean);
  for (const m of models) if (!(PRESET_NAMES as string[]).includes(m)) throw new Error(`check-webgpu: --models: unknown preset '${m}' (known: ${PRESET_NAMES.join(', ')})`);
  const batches = pairs(values.batch!, '--batch');
  const frameCounts = pairs(values.frames!, '--frames');
  const rows: CheckRow[] = [];
  const info: Record<string, unknown> = {};
  const metaModels = new Set(values.meta!.split(',').map((s) => s.trim()).filter(Boolean));
  const layers = values.layers === undefined ? null : Number(values.layers);
  if (layers !== null && !(Number.isInteger(layers) && layers >= 1)) throw new Error(`check-webgpu: --layers must be a positive integer, got '${values.layers}'`);
  const budget = Number(values.budget);
  if (!(budget >= 0)) throw new Error(`check-webgpu: --budget must be a number of seconds ≥ 0 (0: none), got '${values.budget}'`);
  const t0 = performance.now();
  const save = async () => {
    if (!values.json) return;
    await writeFile(values.json, JSON.stringify({ tool: 'check-webgpu', date: new Date().toISOString(), backend: values.backend, reference: values.reference, info, rows }, null, 2) + '\n');
  };

  for (const model of models as PresetName[]) {
    const batch = batches.get(model) ?? 4;
    const frames = frameCounts.get(model) ?? 1;
    const base = getConfig(model);
    const cfg = getConfig(model, {
      temporal: { maxFrames: Math.max(frames, base.temporal.maxFrames), ...(layers ? { layers: Math.min(layers, base.temporal.layers) } : {}) },
      ...(layers ? { vision: { layers }, text: { layers } } : {}),
    });
    for (const kind of KINDS) {
      if (kind !== 'plain' && !metaModels.has(model)) continue;
      const failed = (error: string): CheckRow => ({
        model, batch, frames, kind, loss: null, lossRef: null, lossRelDiff: null, gradNorm: null, gradNormRef: null,
        gradNormRelDiff: null, gradMaxRelDiff: null, gradWorstParam: null, paramMaxAbsDiff: null, weightMaxAbsDiff: null,
        ms: null, msRef: null, ok: false, error,
      });
      if (budget > 0 && (performance.now() - t0) / 1000 > budget) {
        rows.push(failed(`skipped: the --budget of ${budget} s was spent`));
        await save();
        continue;
      }
      console.error(`check-webgpu: ${model} batch ${batch} × ${frames} frames, ${kind}`);
      try {
        const choiceT = await initBackend({ prefer: backend });
        info[choiceT.name] = choiceT.info;
        const t = await step(cfg, batch, frames, kind);
        const choiceR = await initBackend({ prefer: reference });
        info[choiceR.name] = choiceR.info;
        const r = await step(cfg, batch, frames, kind);
        rows.push({ ...compare(model, batch, frames, kind, t, r), layers });
      } catch (e) {
        rows.push(failed((e as Error).message.split('\n')[0].slice(0, 400)));
      }
      await save();
    }
  }
  const e = (x: number | null) => (x === null ? '' : x.toExponential(1));
  console.log(`${values.backend} against ${values.reference}${layers ? ` (${layers} layer${layers > 1 ? 's' : ''} per tower)` : ''}`);
  console.log('| model | batch | frames | step | loss | loss rel. diff | grad norm rel. diff | max grad rel. diff (param) | max Δparam after AdamW | max Δweight | ms (test/ref) | ok |');
  console.log('| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |');
  for (const r of rows) {
    console.log(`| ${r.model} | ${r.batch} | ${r.frames} | ${r.kind} | ${r.loss?.toFixed(5) ?? ''} | ${e(r.lossRelDiff)} | ${e(r.gradNormRelDiff)} | ${e(r.gradMaxRelDiff)}${r.gradWorstParam ? ` (${r.gradWorstParam})` : ''} | ${e(r.paramMaxAbsDiff)} | ${e(r.weightMaxAbsDiff)} | ${r.ms ?? ''}/${r.msRef ?? ''} | ${r.ok ? 'yes' : `NO${r.error ? `: ${r.error.replace(/\|/g, '/')}` : ''}`} |`);
  }
  if (values.json) {
    await save();
    console.log(`wrote ${values.json}`);
  }
}

main().then(() => process.exit(0), (e: unknown) => { console.error(`check-webgpu: ${(e as Error).message}`); process.exit(1); });
