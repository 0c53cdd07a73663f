/**
 * Kernel launches per training step and the share of the step they cost: on each backend,
 * the number of kernels one dual-encoder step launches per phase (forward, backward, optimizer;
 * the loss read at the end is one host transfer), the kernels that only pass their input
 * through (Identity, a reshape to the same shape), the cost of one launch (a loop of adds on
 * 8-element tensors, where the arithmetic is nothing) and of one pass-through (a loop of
 * same-shape reshapes), and their sum over the step as a fraction of the measured step.
 *
 *   node dist/bench/launches.js [--backends tensorflow,wasm] [--presets tiny,small]
 *                               [--batch 32] [--frames 1] [--repeats 3]
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { tf } from '../src/backend/tf.js';
import { initBackend, type BackendName } from '../src/backend/init.js';
import { PRESET_NAMES, type PresetName } from '../src/nn/configs.js';
import { tinyTrainStepTimer } from './lib/tinyStep.js';

function positiveInt(name: string, v: string | undefined): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${v}`);
  return n;
}

/** Microseconds per call of `op` on 8-element tensors (median of 3 loops of 2 000, after a warm-up loop). */
function costUs(op: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor): number {
  const a = tf.ones([8]);
  const b = tf.ones([8]);
  const runs: number[] = [];
  for (let r = 0; r < 4; r++) {
    const n = 2000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) op(a, b).dispose();
    runs.push(((performance.now() - t0) * 1000) / n);
  }
  tf.dispose([a, b]);
  runs.shift();
  return runs.sort((x, y) => x - y)[1];
}

interface Count {
  /** Kernels that computed a new tensor (on tensorflow: calls into TFE_Execute). */
  launches: number;
  /** Kernels whose output shares its input's data (Identity, a reshape or cast that changes nothing): engine bookkeeping only. */
  passThrough: number;
  byName: Map<string, number>;
}

/** The tensorflow backend's methods through which every kernel reaches TFE_Execute. */
const LAUNCHERS = ['executeSingleOutput', 'executeMultipleOutputs'] as const;

/**
 * The kernels `f` runs. On tensorflow the launches are counted where they happen (the
 * backend's two execute methods, shadowed on the instance for the call); on wasm and cpu, Identity and Reshape share their input's data and every other
 * kernel computes. tf.profile also lists custom-gradient scopes, which are not kernels (their
 * inner ops are listed on their own).
 */
async function kernelsOf(f: () => unknown): Promise<Count> {
  const backendName = tf.getBackend();
  const backend = tf.backend() as unknown as Partial<Record<(typeof LAUNCHERS)[number], (...args: unknown[]) => unknown>>;
  const native = LAUNCHERS.every((m) => typeof backend[m] === 'function');
  let launched = 0;
  if (native) {
    for (const m of LAUNCHERS) {
      const original = backend[m]!;
      backend[m] = (...args: unknown[]) => { launched++; return original.apply(backend, args); };
    }
  }
  let info: Awaited<ReturnType<typeof tf.profile>>;
  try {
    info = await tf.profile(f as () => tf.TensorContainer);
  } finally {
    if (native) for (const m of LAUNCHERS) delete backend[m];
  }
  const out: Count = { launches: 0, passThrough: 0, byName: new Map() };
  let dispatched = 0;
  for (const k of info.kernels) {
    if (!tf.getKernel(k.name, backendName)) continue;
    dispatched++;
    if (!native && (k.name === 'Identity' || k.name === 'Reshape')) continue;
    out.byName.set(k.name, (out.byName.get(k.name) ?? 0) + 1);
  }
  out.launches = native ? launched : [...out.byName.values()].reduce((a, b) => a + b, 0);
  out.passThrough = dispatched - out.launches;
  return out;
}

async function msOf(f: () => Promise<void>, repeats: number): Promise<number> {
  await f();
  const t0 = performance.now();
  for (let i = 0; i < repeats; i++) await f();
  return (performance.now() - t0) / repeats;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      backends: { type: 'string', default: 'tensorflow,wasm' },
      presets: { type: 'string', default: 'tiny,small' },
      batch: { type: 'string', default: '32' },
      frames: { type: 'string', default: '1' },
      repeats: { type: 'string', default: '3' },
      top: { type: 'string', default: '8' },
    },
  });
  const batch = positiveInt('batch', values.batch);
  const frames = positiveInt('frames', values.frames);
  const repeats = positiveInt('repeats', values.repeats);
  const top = positiveInt('top', values.top);
  const presets = values.presets!.split(',') as PresetName[];
  for (const p of presets) if (!PRESET_NAMES.includes(p)) throw new Error(`--presets: unknown preset '${p}' (known: ${PRESET_NAMES.join(', ')})`);
  const rows: string[] = [];
  const tops: string[] = [];
  for (const name of values.backends!.split(',') as BackendName[]) {
    try {
      await initBackend({ prefer: name });
    } catch (e) {
      rows.push(`| ${name} | not available: ${(e as Error).message.slice(0, 90)} | | | | | | | | | | |`);
      continue;
    }
    const us = costUs((a, b) => tf.add(a, b));
    const passUs = costUs((a) => tf.reshape(a, [8]));
    for (const preset of presets) {
      const step = await tinyTrainStepTimer({ preset, batch, frames });
      const fwd = await kernelsOf(() => step.forward());
      let grads: Record<string, tf.Tensor> = {};
      const fb = await kernelsOf(() => { const r = step.valueAndGrads(); grads = r.grads; return r.value; });
      const opt = await kernelsOf(() => step.update(grads));
      tf.dispose(Object.values(grads));
      const fwdMs = await msOf(async () => { const l = step.forward(); await l.data(); l.dispose(); }, repeats);
      const stepMs = await msOf(step.run, repeats);
      step.dispose();
      const bwd = fb.launches - fwd.launches;
      // The loss read is one host transfer, not a kernel.
      const total = fb.launches + opt.launches;
      const pass = fb.passThrough + opt.passThrough;
      const overheadMs = (total * us + pass * passUs) / 1000;
      rows.push(`| ${name} | ${preset} | ${fwd.launches} | ${bwd} | ${opt.launches} | ${total} | ${pass} | ${us.toFixed(1)} | ${passUs.toFixed(1)} | ${fwdMs.toFixed(0)} | ${stepMs.toFixed(0)} | ${overheadMs.toFixed(1)} ms = ${((100 * overheadMs) / stepMs).toFixed(1)} % |`);
      const common = [...fb.byName.entries()].sort((x, y) => y[1] - x[1]).slice(0, top);
      tops.push(`${name} ${preset}: ${common.map(([k, n]) => `${k} ${n}`).join(', ')}`);
      console.error(`${name} ${preset} done`);
    }
  }
  console.log(`\nmachine: ${os.cpus()[0]?.model ?? 'unknown cpu'} × ${os.cpus().length}, load ${os.loadavg()[0].toFixed(1)}, node ${process.version}, tfjs ${tf.version_core}; batch ${batch}, ${frames} frame(s)\n`);
  console.log('| backend | preset | forward launches | backward launches | optimizer launches | step launches | pass-through kernels | µs per launch | µs per pass-through | forward ms | step ms | dispatch overhead (share of step) |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) console.log(r);
  console.log('\nmost frequent kernels in forward + backward (on tensorflow, a reshape or cast that changes nothing is dispatched but not launched):');
  for (const t of tops) console.log(`- ${t}`);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
