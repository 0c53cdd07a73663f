/**
 * Training-step throughput and memory of the dual encoder on one backend (the GPU path), per model preset and batch size, with the same synthetic inputs as
 * `tools/reference/sam_reference.py` so the two JSON files join on
 * (model, batch, frames, variant).
 *
 *   node dist/bench/gpu.js [--backend webgpu|tensorflow|wasm|cpu|auto] [--models tiny,base]
 *       [--batches 64,256] [--frames N] [--steps 10] [--warmup 3] [--meta] [--json out.json]
 *       [--flags WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE=30,...] [--cell-timeout 300] [--budget 0]
 *       [--in-process] [--skip-profile]
 *
 * One step is what pretraining does without weighting: fresh batch tensors from host arrays,
 * forward through both encoders, the SAM loss (μ = 0.1), backward, AdamW with the pretraining
 * decay groups, the logit-scale clamp, and the loss read back (which waits for the GPU).
 * `--meta` adds the Meta-Weight-Net step (mwnStep, metaScope `heads` and `all`, meta batch of
 * the same size) and its ratio to the plain step. Frames default to 4 per clip, 1 for `base`
 * (4 × 256 ViT-B/16 images do not fit in 80 GB in float32, in PyTorch either).
 *
 * Every (model, batch) runs in its own child process unless `--in-process`: an out-of-memory
 * or a lost device then ends that cell alone, its peak memory is its own, and a cell that
 * outlives `--cell-timeout` seconds is killed and reported. Memory: `peakBytes` is tf.profile's
 * peak of live tensor bytes over one extra step (parameters, optimizer state and activations:
 * the analogue of torch.cuda.max_memory_allocated); `numBytesAllocatedInGPU` is the webgpu
 * buffer pool after the timed steps (the analogue of max_memory_reserved). The profiled step
 * also counts kernels per step and the kernels with the most total time.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { tf } from '../src/backend/tf.js';
import { initBackend, parseBackendPreference, type BackendChoice } from '../src/backend/init.js';
import { assertNoWebGPUErrors, webgpuCounters } from '../src/backend/webgpuGuard.js';
import { acosViaAtan2 } from '../src/backend/safeOps.js';
import { samContrastiveLoss } from '../src/margin/sam.js';
import { dualEncoderMetaModel } from '../src/meta/dualEncoderModel.js';
import { mwnStep } from '../src/meta/metaStep.js';
import { WeightNet } from '../src/meta/weightNet.js';
import { getConfig, PRESET_NAMES, type DualEncoderConfig, type PresetName } from '../src/nn/configs.js';
import { countDualEncoderParams, encodeText, encodeVideo, initDualEncoder, paramGroup } from '../src/nn/dualEncoder.js';
import { valueAndGradsOf } from '../src/nn/params.js';
import { clampLogitScale } from '../src/train/gradients.js';
import { AdamW } from '../src/train/optimizer.js';
import { disposeBatch, hostBatch, toTensors } from './lib/hostBatch.js';

// tfjs's own frames fill the default 10 before the call site in vlmargin is reached.
Error.stackTraceLimit = 60;

const VARIANTS = ['plain', 'mwn-heads', 'mwn-all'] as const;
type Variant = typeof VARIANTS[number];

/** SAM's μ for every step here (the value does not change the work). */
const MARGIN_RAD = 0.1;
const LR = 1e-4;
const WEIGHT_DECAY = 0.2;
const META_ALPHA = 1e-3;

/** One (model, batch, variant); field names shared with sam_reference.py's rows. */
export interface BenchRow {
  model: string;
  batch: number;
  frames: number;
  imageSize: number;
  contextLength: number;
  variant: Variant;
  params: number;
  warmup: number;
  steps: number;
  /** Median over the timed steps. */
  msPerStep: number | null;
  msPerStepMean: number | null;
  msPerStepMin: number | null;
  /** batch / median step time. */
  samplesPerSec: number | null;
  /** Peak live tensor bytes over one profiled step. */
  peakBytes: number | null;
  /** The cell's process peak resident set (getrusage maxrss): on CPU engines, the memory the step really took. */
  peakRssBytes?: number | null;
  /** msPerStep of this variant over the plain step's, same cell. */
  ratioVsPlain: number | null;
  error: string | null;
  numBytes: number | null;
  numBytesInGPU: number | null;
  numBytesAllocatedInGPU: number | null;
  /** tf.memory().numTensors after the warm-up and after each timed step: flat when nothing leaks. */
  numTensors: number[];
  tensorsFlat: boolean | null;
  kernelsPerStep: number | null;
  topKernels: { name: string; count: number; totalMs: number }[];
  profileError?: string;
  /** webgpu: GPU programs dispatched per timed step (kernels that only reshape or alias dispatch nothing). */
  dispatchesPerStep?: number | null;
  /** webgpu: shaders compiled during the warm-up, and during the timed steps (0 when shapes are steady). */
  compilesWarmup?: number | null;
  compilesTimed?: number | null;
  /** webgpu: host → GPU uploads per timed step (batch tensors, and every JS number an op turns into a tensor), their KiB, and GPU → host reads. */
  uploadsPerStep?: number | null;
  uploadKiBPerStep?: number | null;
  readsPerStep?: number | null;
  /** plain step: median ms until the step's kernels are all recorded, before the loss read waits for the GPU. */
  msEnqueue?: number | null;
}

interface Settings {
  backend: string;
  steps: number;
  warmup: number;
  frames: number | null;
  meta: boolean;
  profile: boolean;
  flags: Record<string, number | boolean>;
}

function fail(msg: string): never {
  throw new Error(`bench-gpu: ${msg}`);
}

function positiveInt(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) fail(`${name} must be a positive integer, got '${v}'`);
  return n;
}

function intList(name: string, v: string): number[] {
  const out = v.split(',').map((s) => s.trim()).filter(Boolean).map((s) => positiveInt(name, s));
  if (!out.length) fail(`${name} must list at least one positive integer, got '${v}'`);
  return out;
}

function modelList(v: string): PresetName[] {
  const out = v.split(',').map((s) => s.trim()).filter(Boolean);
  for (const m of out) if (!(PRESET_NAMES as string[]).includes(m)) fail(`--models: unknown preset '${m}' (known: ${PRESET_NAMES.join(', ')})`);
  if (!out.length) fail('--models must name at least one preset');
  return out as PresetName[];
}

/** `K=V,K2=V2` → tf.env flags; values are numbers or true/false. */
function parseFlags(v: string | undefined): Record<string, number | boolean> {
  const out: Record<string, number | boolean> = {};
  for (const part of (v ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^([A-Z0-9_]+)=(.+)$/.exec(part);
    if (!m) fail(`--flags: expected NAME=value, got '${part}'`);
    const raw = m[2];
    const val = raw === 'true' ? true : raw === 'false' ? false : Number(raw);
    if (typeof val === 'number' && !Number.isFinite(val)) fail(`--flags: ${m[1]} needs a number or true/false, got '${raw}'`);
    out[m[1]] = val;
  }
  return out;
}

function defaultFrames(model: PresetName): number {
  return model === 'base' ? 1 : 4;
}

function configFor(model: PresetName, frames: number): DualEncoderConfig {
  const base = getConfig(model);
  return getConfig(model, { temporal: { maxFrames: Math.max(frames, base.temporal.maxFrames) } });
}

/** The message and the first project frames of the stack: on a GPU host, where it broke matters. */
function errText(e: unknown): string {
  const m = e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e);
  const frames = e instanceof Error && e.stack
    ? e.stack.split('\n').filter((l) => /\/(src|pipelines)\/[^/]/.test(l) && !l.includes('node_modules')).slice(0, 3)
      .map((l) => l.trim().replace(/^at /, '').replace(/(file:\/\/)?[^ (]*\/dist\//, '').replace(/[()]/g, ''))
    : [];
  return `${m.split('\n').slice(0, 3).join(' | ').slice(0, 400)}${frames.length ? ` [at ${frames.join(' < ')}]` : ''}`;
}

function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
}

function gpuMemory(): { numBytes: number; numBytesInGPU: number | null; numBytesAllocatedInGPU: number | null; numTensors: number } {
  const m = tf.memory() as tf.MemoryInfo & { numBytesInGPU?: number; numBytesAllocatedInGPU?: number };
  return { numBytes: m.numBytes, numBytesInGPU: m.numBytesInGPU ?? null, numBytesAllocatedInGPU: m.numBytesAllocatedInGPU ?? null, numTensors: m.numTensors };
}

/** The model, optimizer and step functions of one cell. */
function makeCell(model: PresetName, batch: number, frames: number) {
  const cfg = configFor(model, frames);
  const store = initDualEncoder(cfg, 1);
  const params = store.snapshot() as Record<string, tf.Variable>;
  // The pretraining optimizer's decay rule (matrices only); one learning rate for all.
  const optimizer = new AdamW(params, {
    lr: LR, weightDecay: WEIGHT_DECAY,
    groups: (name) => ({ lrScale: 1, weightDecay: paramGroup(name).decay ? WEIGHT_DECAY : 0 }),
  });
  const train = hostBatch(cfg, batch, frames, 7);
  const meta = hostBatch(cfg, batch, frames, 11);
  const metaModel = dualEncoderMetaModel(cfg, { marginRad: MARGIN_RAD });
  let weightNet: WeightNet | undefined;
  let stepIndex = 0;
  const enqueueMs: number[] = [];

  const plain = async (): Promise<number> => {
    const t0 = performance.now();
    const b = toTensors(train, batch);
    try {
      const { value, grads } = valueAndGradsOf((p) => samContrastiveLoss(
        encodeVideo(p, b.frames, cfg), encodeText(p, b.ids, b.mask, cfg), { marginRad: MARGIN_RAD, logitScale: p.logit_scale },
      ).loss as tf.Scalar, params);
      optimizer.step(grads);
      clampLogitScale(params.logit_scale);
      tf.dispose(Object.values(grads));
      enqueueMs.push(performance.now() - t0);
      const loss = (await value.data())[0];
      value.dispose();
      return loss;
    } finally {
      disposeBatch(b);
    }
  };

  const weighted = (metaScope: 'heads' | 'all') => async (): Promise<number> => {
    weightNet ??= new WeightNet({ hidden: 100, seed: 1 });
    const t = toTensors(train, batch);
    const m = toTensors(meta, batch);
    try {
      const r = await mwnStep({ model: metaModel, params, trainBatch: t, metaBatch: m, weightNet, alpha: META_ALPHA, metaScope, step: stepIndex++ });
      optimizer.step(r.grads);
      clampLogitScale(params.logit_scale);
      tf.dispose(Object.values(r.grads));
      // The step already read its loss; this read waits for the optimizer's kernels.
      await params.logit_scale.data();
      return r.loss;
    } finally {
      disposeBatch(t);
      disposeBatch(m);
    }
  };

  const steps: Record<Variant, () => Promise<number>> = { plain, 'mwn-heads': weighted('heads'), 'mwn-all': weighted('all') };
  return {
    cfg,
    steps,
    /** Enqueue times of the plain steps since the last call. */
    takeEnqueueMs(): number[] { return enqueueMs.splice(0); },
    dispose() {
      optimizer.dispose();
      store.dispose();
      weightNet?.dispose();
    },
  };
}

async function runVariant(step: () => Promise<number>, s: Settings): Promise<Omit<BenchRow, 'model' | 'batch' | 'frames' | 'imageSize' | 'contextLength' | 'variant' | 'params' | 'ratioVsPlain'>> {
  const base = {
    warmup: s.warmup, steps: s.steps, msPerStep: null, msPerStepMean: null, msPerStepMin: null, samplesPerSec: null,
    peakBytes: null, error: null, numBytes: null, numBytesInGPU: null, numBytesAllocatedInGPU: null,
    numTensors: [] as number[], tensorsFlat: null, kernelsPerStep: null, topKernels: [] as BenchRow['topKernels'],
  };
  const times: number[] = [];
  const webgpu = tf.getBackend() === 'webgpu';
  const c0 = webgpuCounters();
  let c1 = c0;
  try {
    for (let i = 0; i < s.warmup; i++) {
      await step();
      assertNoWebGPUErrors(`warm-up step ${i + 1}`);
    }
    base.numTensors.push(tf.memory().numTensors);
    c1 = webgpuCounters();
    for (let i = 0; i < s.steps; i++) {
      const t0 = performance.now();
      const loss = await step();
      times.push(performance.now() - t0);
      base.numTensors.push(tf.memory().numTensors);
      assertNoWebGPUErrors(`timed step ${i + 1}`);
      if (!Number.isFinite(loss)) throw new Error(`non-finite loss ${loss} at timed step ${i + 1}`);
    }
  } catch (e) {
    return { ...base, ...(times.length ? timing(times) : {}), error: errText(e) };
  }
  const c2 = webgpuCounters();
  const mem = gpuMemory();
  const row = {
    ...base, ...timing(times),
    dispatchesPerStep: webgpu ? round((c2.dispatches - c1.dispatches) / s.steps) : null,
    compilesWarmup: webgpu ? c1.compiles - c0.compiles : null,
    compilesTimed: webgpu ? c2.compiles - c1.compiles : null,
    uploadsPerStep: webgpu ? round((c2.uploads - c1.uploads) / s.steps) : null,
    uploadKiBPerStep: webgpu ? round((c2.uploadBytes - c1.uploadBytes) / 1024 / s.steps) : null,
    readsPerStep: webgpu ? round((c2.reads - c1.reads) / s.steps) : null,
    numBytes: mem.numBytes, numBytesInGPU: mem.numBytesInGPU, numBytesAllocatedInGPU: mem.numBytesAllocatedInGPU,
    tensorsFlat: base.numTensors.every((n) => n === base.numTensors[0]),
  };
  if (!s.profile) return row;
  try {
    const info = await tf.profile(async () => { await step(); });
    const byName = new Map<string, { count: number; totalMs: number }>();
    // The profile also lists custom-gradient scopes ('backward', 'unnamed scope'), whose time
    // contains their kernels' time: count registered kernels only.
    const kernels = info.kernels.filter((k) => tf.getKernel(k.name, tf.getBackend()) !== undefined);
    for (const k of kernels) {
      const e = byName.get(k.name) ?? { count: 0, totalMs: 0 };
      e.count += 1;
      e.totalMs += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
      byName.set(k.name, e);
    }
    const topKernels = [...byName.entries()].map(([name, v]) => ({ name, count: v.count, totalMs: Math.round(v.totalMs * 100) / 100 }))
      .sort((a, b) => b.totalMs - a.totalMs || b.count - a.count).slice(0, 10);
    return { ...row, peakBytes: info.peakBytes, kernelsPerStep: kernels.length, topKernels };
  } catch (e) {
    return { ...row, profileError: errText(e) };
  }

  function timing(ts: number[]) {
    const med = median(ts);
    return {
      msPerStep: round(med), msPerStepMean: round(ts.reduce((a, b) => a + b, 0) / ts.length), msPerStepMin: round(Math.min(...ts)),
      samplesPerSec: null as number | null,
    };
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

/** A row with no measurement: the cell failed, timed out or was skipped, as `error` says. */
function failedRow(model: PresetName, batch: number, frames: number, variant: Variant, s: Settings, error: string): BenchRow {
  const cfg = configFor(model, frames);
  return {
    model, batch, frames, imageSize: cfg.vision.imageSize, contextLength: cfg.text.contextLength, variant,
    params: countDualEncoderParams(cfg), warmup: s.warmup, steps: s.steps, msPerStep: null, msPerStepMean: null,
    msPerStepMin: null, samplesPerSec: null, peakBytes: null, ratioVsPlain: null, error, numBytes: null,
    numBytesInGPU: null, numBytesAllocatedInGPU: null, numTensors: [], tensorsFlat: null, kernelsPerStep: null, topKernels: [],
  };
}

/** Every variant of one (model, batch) in this process; a failure is recorded, never thrown. */
async function runCell(model: PresetName, batch: number, s: Settings, onRow?: (rows: BenchRow[]) => Promise<void>): Promise<BenchRow[]> {
  const frames = s.frames ?? defaultFrames(model);
  const variants: Variant[] = s.meta ? [...VARIANTS] : ['plain'];
  const cfg0 = configFor(model, frames);
  const common = {
    model, batch, frames, imageSize: cfg0.vision.imageSize, contextLength: cfg0.text.contextLength,
    params: countDualEncoderParams(cfg0),
  };
  const failed = (variant: Variant, error: string): BenchRow => failedRow(model, batch, frames, variant, s, error);
  let cell: ReturnType<typeof makeCell>;
  try {
    cell = makeCell(model, batch, frames);
  } catch (e) {
    return variants.map((v) => failed(v, `setup: ${errText(e)}`));
  }
  const rows: BenchRow[] = [];
  try {
    for (const variant of variants) {
      console.error(`bench-gpu: ${model} batch ${batch} ${variant}: ${s.warmup} warm-up + ${s.steps} timed steps`);
      cell.takeEnqueueMs();
      const r = await runVariant(cell.steps[variant], s);
      const row: BenchRow = { ...common, variant, ...r, ratioVsPlain: null };
      // The enqueue times of the timed steps: the last s.steps before the profiled step.
      const enq = cell.takeEnqueueMs();
      if (variant === 'plain' && enq.length >= s.steps + s.warmup) row.msEnqueue = round(median(enq.slice(s.warmup, s.warmup + s.steps)));
      row.samplesPerSec = row.msPerStep ? round((1000 * batch) / row.msPerStep) : null;
      const plainMs = rows.find((x) => x.variant === 'plain')?.msPerStep;
      row.ratioVsPlain = plainMs && row.msPerStep ? round(row.msPerStep / plainMs) : null;
      rows.push(row);
      await onRow?.(rows);
    }
  } finally {
    cell.dispose();
  }
  return rows;
}

async function startBackend(s: Settings): Promise<BackendChoice> {
  const choice = await initBackend({ prefer: parseBackendPreference(s.backend) });
  for (const [k, v] of Object.entries(s.flags)) tf.env().set(k, v);
  return choice;
}

interface CellOutput { backend: BackendChoice; rows: BenchRow[]; complete: boolean; numerics?: Numerics }

/** Max |f(x) − arccos x| over 2001 float32 points of [−1, 1], against float64 Math.acos. */
interface Numerics { acosMaxErr: number; acosViaAtan2MaxErr: number }

/**
 * How exact this backend's arccos is, as tf.acos and as the atan2 form safeOps.acos uses on
 * webgpu (WGSL leaves acos's precision to the driver; every margin head depends on it).
 */
async function numerics(): Promise<Numerics> {
  const n = 2001;
  const xs = Array.from({ length: n }, (_, i) => Math.fround(-1 + (2 * i) / (n - 1)));
  const x = tf.tensor1d(xs);
  const a = tf.acos(x);
  const b = acosViaAtan2(x);
  const [va, vb] = [await a.data(), await b.data()];
  tf.dispose([x, a, b]);
  let ea = 0;
  let eb = 0;
  xs.forEach((v, i) => {
    ea = Math.max(ea, Math.abs(va[i] - Math.acos(v)));
    eb = Math.max(eb, Math.abs(vb[i] - Math.acos(v)));
  });
  return { acosMaxErr: ea, acosViaAtan2MaxErr: eb };
}

/** Runs one cell in a child process of this script; a crash, a signal or a timeout becomes an error row. */
async function runCellChild(model: PresetName, batch: number, argv: string[], timeoutS: number): Promise<{ out: CellOutput | null; error: string | null }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-bench-gpu-'));
  const out = path.join(dir, 'cell.json');
  const script = fileURLToPath(import.meta.url);
  try {
    const code = await new Promise<string | null>((resolve) => {
      const child = spawn(process.execPath, [...process.execArgv, script, ...argv, '--cell', `${model}:${batch}`, '--cell-out', out], { stdio: ['ignore', 'inherit', 'inherit'] });
      const timer = setTimeout(() => { child.kill('SIGKILL'); resolve(`killed after the cell timeout of ${timeoutS} s`); }, timeoutS * 1000);
      child.on('exit', (c, sig) => { clearTimeout(timer); resolve(c === 0 ? null : `child exited with ${sig ?? `code ${c}`}`); });
      child.on('error', (e) => { clearTimeout(timer); resolve(`child did not start: ${e.message}`); });
    });
    let result: CellOutput | null = null;
    try {
      result = JSON.parse(await readFile(out, 'utf8')) as CellOutput;
    } catch {
      // No file: the child died before its first variant finished.
    }
    if (result?.complete) return { out: result, error: null };
    return { out: result, error: code ?? 'child stopped before finishing the cell' };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function fmtBytes(n: number | null): string {
  return n === null ? '' : `${(n / 2 ** 20).toFixed(0)}`;
}

function table(rows: BenchRow[]): string {
  const lines = [
    '| model | batch | frames | variant | ms/step | enqueue ms | samples/s | peak tensor MiB | GPU pool MiB | kernels/step | dispatches/step | uploads/step (KiB) | reads/step | shader compiles (warm-up/timed) | vs plain | tensors flat | error |',
    '| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |',
  ];
  for (const r of rows) {
    lines.push(`| ${r.model} | ${r.batch} | ${r.frames} | ${r.variant} | ${r.msPerStep ?? ''} | ${r.msEnqueue ?? ''} | ${r.samplesPerSec ?? ''} | ${fmtBytes(r.peakBytes)} | ${fmtBytes(r.numBytesAllocatedInGPU)} | ${r.kernelsPerStep ?? ''} | ${r.dispatchesPerStep ?? ''} | ${r.uploadsPerStep == null ? '' : `${r.uploadsPerStep} (${r.uploadKiBPerStep})`} | ${r.readsPerStep ?? ''} | ${r.compilesWarmup == null ? '' : `${r.compilesWarmup}/${r.compilesTimed}`} | ${r.variant === 'plain' ? '' : r.ratioVsPlain ?? ''} | ${r.tensorsFlat === null ? '' : r.tensorsFlat ? 'yes' : `NO (${r.numTensors.join(' ')})`} | ${r.error ? r.error.replace(/\|/g, '/') : ''} |`);
  }
  return lines.join('\n');
}

async function versions(): Promise<Record<string, string>> {
  const out: Record<string, string> = { node: process.version, tfjsCore: tf.version_core };
  for (const pkg of ['@tensorflow/tfjs-backend-webgpu', '@tensorflow/tfjs-backend-wasm', 'webgpu', '@tensorflow/tfjs-node-gpu']) {
    try {
      const { createRequire } = await import('node:module');
      const req = createRequire(import.meta.url);
      out[pkg] = (JSON.parse(await readFile(req.resolve(`${pkg}/package.json`), 'utf8')) as { version: string }).version;
    } catch {
      // A package the bundle left out (or an optional one that did not install) is just not listed.
    }
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'auto' },
      models: { type: 'string', default: 'tiny,base' },
      batches: { type: 'string', default: '64,256' },
      frames: { type: 'string' },
      steps: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '3' },
      meta: { type: 'boolean', default: false },
      json: { type: 'string' },
      flags: { type: 'string' },
      'cell-timeout': { type: 'string', default: '300' },
      budget: { type: 'string', default: '0' },
      'in-process': { type: 'boolean', default: false },
      'skip-profile': { type: 'boolean', default: false },
      cell: { type: 'string' },
      'cell-out': { type: 'string' },
    },
  });
  parseBackendPreference(values.backend);
  const s: Settings = {
    backend: values.backend!,
    steps: positiveInt('--steps', values.steps!),
    warmup: Number.isInteger(Number(values.warmup)) && Number(values.warmup) >= 0 ? Number(values.warmup) : fail(`--warmup must be an integer ≥ 0, got '${values.warmup}'`),
    frames: values.frames === undefined ? null : positiveInt('--frames', values.frames),
    meta: values.meta!,
    profile: !values['skip-profile'],
    flags: parseFlags(values.flags),
  };
  const models = modelList(values.models!);
  const batches = intList('--batches', values.batches!);
  const cellTimeout = positiveInt('--cell-timeout', values['cell-timeout']!);
  const budget = Number(values.budget);
  if (!(budget >= 0)) fail(`--budget must be a number of seconds ≥ 0 (0: none), got '${values.budget}'`);

  if (values.cell) {
    // Child mode: one cell, result to --cell-out.
    const [m, b] = values.cell.split(':');
    const model = modelList(m)[0];
    const batch = positiveInt('--cell batch', b);
    if (!values['cell-out']) fail('--cell needs --cell-out');
    const backend = await startBackend(s);
    const num = await numerics();
    const out = values['cell-out'];
    // Written after every variant, so a cell killed in a later variant keeps the earlier rows.
    const save = (rows: BenchRow[]) => writeFile(out, JSON.stringify({ backend, rows, complete: false, numerics: num } satisfies CellOutput));
    const rows = await runCell(model, batch, s, save);
    for (const r of rows) r.peakRssBytes = process.resourceUsage().maxRSS * 1024;
    await writeFile(out, JSON.stringify({ backend, rows, complete: true, numerics: num } satisfies CellOutput));
    return;
  }

  const t0 = performance.now();
  const rows: BenchRow[] = [];
  let backend: BackendChoice | null = null;
  let num: Numerics | null = null;
  if (values['in-process']) {
    backend = await startBackend(s);
    num = await numerics();
  }
  const forward = process.argv.slice(2).filter((a) => a !== '--in-process');
  const jsonIdx = forward.indexOf('--json');
  if (jsonIdx >= 0) forward.splice(jsonIdx, 2);
  for (const model of models) {
    for (const batch of batches) {
      const elapsed = (performance.now() - t0) / 1000;
      const frames = s.frames ?? defaultFrames(model);
      if (budget > 0 && elapsed > budget) {
        rows.push(...(s.meta ? VARIANTS : (['plain'] as const)).map((variant) =>
          failedRow(model, batch, frames, variant, s, `skipped: the --budget of ${budget} s was spent`)));
        continue;
      }
      if (values['in-process']) {
        rows.push(...await runCell(model, batch, s));
        continue;
      }
      const timeout = budget > 0 ? Math.max(1, Math.min(cellTimeout, Math.ceil(budget - elapsed))) : cellTimeout;
      const r = await runCellChild(model, batch, forward, timeout);
      if (r.out) {
        backend ??= r.out.backend;
        num ??= r.out.numerics ?? null;
        rows.push(...r.out.rows);
      }
      if (r.error) {
        const done = new Set(r.out?.rows.map((x) => x.variant) ?? []);
        rows.push(...(s.meta ? VARIANTS : (['plain'] as const)).filter((v) => !done.has(v)).map((variant) =>
          failedRow(model, batch, frames, variant, s, r.error!)));
      }
    }
  }

  const report = {
    tool: 'bench-gpu',
    date: new Date().toISOString(),
    backend: backend?.name ?? null,
    backendInfo: backend?.info ?? null,
    backendSkipped: backend?.skipped ?? [],
    host: { platform: `${os.platform()} ${os.arch()}`, cpu: os.cpus()[0]?.model ?? '', cpus: os.cpus().length },
    versions: await versions(),
    numerics: num,
    settings: { ...s, models, batches, marginRad: MARGIN_RAD, lr: LR, weightDecay: WEIGHT_DECAY, metaAlpha: META_ALPHA, isolated: !values['in-process'] },
    seconds: round((performance.now() - t0) / 1000),
    rows,
  };
  console.log(`backend ${report.backend ?? '(none started)'} ${JSON.stringify(report.backendInfo ?? {})}; ${s.warmup} warm-up + ${s.steps} timed steps per row (median)\n`);
  console.log(table(rows));
  if (num) console.log(`\narccos max error on [−1, 1]: tf.acos ${num.acosMaxErr.toExponential(2)}, atan2 form ${num.acosViaAtan2MaxErr.toExponential(2)} rad`);
  for (const r of rows.filter((x) => x.topKernels.length)) {
    console.log(`\n${r.model} b${r.batch} ${r.variant}: ${r.kernelsPerStep} kernels/step; most time: ${r.topKernels.slice(0, 5).map((k) => `${k.name}×${k.count} ${k.totalMs} ms`).join(', ')}`);
  }
  if (values.json) {
    await writeFile(values.json, JSON.stringify(report, null, 2) + '\n');
    console.log(`\nwrote ${values.json}`);
  }
}

main().then(() => process.exit(0), (e: unknown) => { console.error(`bench-gpu: ${(e as Error).message}`); process.exit(1); });
