/**
 * The training step on the native TensorFlow engine, on wasm and on PyTorch's CPU build, in one
 * run on one machine, as one table with the ratios. Each engine times the same step on the same
 * synthetic batch (bench/gpu.ts and tools/reference/sam_reference.py: forward, SAM loss,
 * backward, AdamW, loss read back), every cell in its own process so its peak RSS is its own.
 *
 *   node dist/bench/engines.js [--models tiny,small] [--batches 32,64] [--base-batch 2]
 *       [--steps 5] [--warmup 2] [--engines tensorflow,wasm,torch] [--json out.json]
 *
 * `base` (CLIP ViT-B/16 shapes, 1 frame) runs at --base-batch only; wasm cannot hold it (its
 * heap aborts) and is reported as such. Rows are interleaved by cell (tensorflow, wasm, torch for
 * one model and batch, then the next), so that load from other jobs on a shared machine hits the
 * engines of a cell alike.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ENGINES = ['tensorflow', 'wasm', 'torch'] as const;
type Engine = typeof ENGINES[number];

interface Row { msPerStep: number | null; peakRssBytes?: number | null; error: string | null; params?: number | null }
interface Cell { model: string; batch: number; frames: number; rows: Partial<Record<Engine, Row>> }

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function positiveInt(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}: expected a positive integer, got '${v}'`);
  return n;
}

function lastLine(s: string): string {
  return s.trim().split('\n').filter((l) => l && !/^[IW]\d{4} |^WARNING: All log/.test(l)).pop()?.slice(0, 200) ?? '';
}

async function runEngine(engine: Engine, model: string, batch: number, frames: number, steps: number, warmup: number, timeoutS: number): Promise<Row> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vlmargin-engines-'));
  const json = path.join(dir, 'out.json');
  try {
    const common = ['--models', model, '--batches', String(batch), '--frames', String(frames), '--steps', String(steps), '--warmup', String(warmup), '--json', json];
    const r = engine === 'torch'
      ? spawnSync('python3', [path.join(root, 'tools', 'reference', 'sam_reference.py'), '--device', 'cpu', ...common], { encoding: 'utf8', timeout: timeoutS * 1000 })
      : spawnSync(process.execPath, [path.join(root, 'dist', 'bench', 'gpu.js'), '--backend', engine, '--skip-profile', '--cell-timeout', String(timeoutS), ...common], { encoding: 'utf8', timeout: (timeoutS + 60) * 1000 });
    let report: { rows?: Row[] } = {};
    try { report = JSON.parse(await readFile(json, 'utf8')); } catch { /* reported below */ }
    const row = report.rows?.[0];
    if (row) return row;
    return { msPerStep: null, error: r.error ? r.error.message : `exit ${r.status}: ${lastLine(r.stderr || r.stdout)}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const fmt = (x: number | null | undefined, digits = 0) => (x === null || x === undefined ? '' : x.toFixed(digits));
const ratio = (a?: Row, b?: Row) => (a?.msPerStep && b?.msPerStep ? `${(b.msPerStep / a.msPerStep).toFixed(2)}×` : '');
const gib = (b?: number | null) => (b ? (b / 2 ** 30).toFixed(2) : '');

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      models: { type: 'string', default: 'tiny,small' },
      batches: { type: 'string', default: '32,64' },
      'base-batch': { type: 'string', default: '2' },
      frames: { type: 'string', default: '4' },
      steps: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '2' },
      engines: { type: 'string', default: ENGINES.join(',') },
      'cell-timeout': { type: 'string', default: '600' },
      json: { type: 'string' },
    },
  });
  const engines = values.engines!.split(',').map((e) => e.trim()) as Engine[];
  for (const e of engines) if (!ENGINES.includes(e)) throw new Error(`--engines: unknown engine '${e}' (known: ${ENGINES.join(', ')})`);
  const steps = positiveInt('--steps', values.steps!);
  const warmup = positiveInt('--warmup', values.warmup!);
  const frames = positiveInt('--frames', values.frames!);
  const timeoutS = positiveInt('--cell-timeout', values['cell-timeout']!);
  const cells: Cell[] = [];
  for (const model of values.models!.split(',').map((m) => m.trim()).filter(Boolean)) {
    for (const b of values.batches!.split(',')) cells.push({ model, batch: positiveInt('--batches', b.trim()), frames, rows: {} });
  }
  if (values['base-batch'] !== '0') cells.push({ model: 'base', batch: positiveInt('--base-batch', values['base-batch']!), frames: 1, rows: {} });

  const t0 = performance.now();
  for (const c of cells) {
    for (const e of engines) {
      // base on wasm aborts in its 4 GiB heap; skipping it saves the minutes before it does.
      if (e === 'wasm' && c.model === 'base') { c.rows[e] = { msPerStep: null, error: 'not run: the wasm heap (4 GiB) cannot hold base' }; continue; }
      const isBase = c.model === 'base';
      c.rows[e] = await runEngine(e, c.model, c.batch, c.frames, isBase ? Math.min(steps, 3) : steps, isBase ? 1 : warmup, timeoutS);
      console.error(`${c.model} b${c.batch} ${e}: ${c.rows[e]!.msPerStep ?? c.rows[e]!.error} ms`);
    }
  }
  console.log(`\n${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length} (load average ${os.loadavg()[0].toFixed(1)} at the end), node ${process.version}; `
    + `${steps} timed steps after ${warmup} warm-up (base: ${Math.min(steps, 3)} after 1), median; ${((performance.now() - t0) / 1000).toFixed(0)} s in all\n`);
  console.log('| model | batch | frames | tensorflow ms | wasm ms | PyTorch CPU ms | tensorflow vs wasm | tensorflow vs PyTorch | peak RSS GiB (tf / wasm / torch) |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
  for (const c of cells) {
    const { tensorflow: tf, wasm, torch } = c.rows;
    const cell = (r?: Row) => (r ? (r.msPerStep !== null ? fmt(r.msPerStep) : `— (${(r.error ?? '').slice(0, 60)})`) : '');
    // "tensorflow vs X" is X's step time over tensorflow's: above 1× tensorflow is faster.
    console.log(`| ${c.model} | ${c.batch} | ${c.frames} | ${cell(tf)} | ${cell(wasm)} | ${cell(torch)} | ${ratio(tf, wasm)} | ${ratio(tf, torch)} | ${gib(tf?.peakRssBytes)} / ${gib(wasm?.peakRssBytes)} / ${gib(torch?.peakRssBytes)} |`);
  }
  if (values.json) {
    const { writeFile } = await import('node:fs/promises');
    await writeFile(values.json, JSON.stringify({ tool: 'bench-engines', date: new Date().toISOString(), cpu: os.cpus()[0]?.model, cpus: os.cpus().length, steps, warmup, cells }, null, 2) + '\n');
  }
}

main().then(() => process.exit(0), (e: unknown) => { console.error(`bench-engines: ${(e as Error).message}`); process.exit(1); });
