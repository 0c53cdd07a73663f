/**
 * Time and peak memory of the blocked retrieval evaluator on random unit embeddings.
 *
 *   node dist/bench/eval.js [--sizes 1000,10000,50000] [--d 256] [--block 1024] [--backend wasm]
 *
 * Wall and CPU seconds cover the evaluator only (not the embedding generation); on a shared
 * machine the CPU figure is the steadier one. Each size runs in its own child process so that its peak RSS (getrusage maxrss) is its
 * own and not the high-water mark of an earlier, larger run. Texts are noisy copies of
 * their videos so the metrics are not trivially at chance.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { initBackend, parseBackendPreference } from '../src/backend/init.js';
import { retrievalMetricsBlocked } from '../src/eval/retrieval.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}: expected a positive integer, got '${value}'`);
  return n;
}

/** Unit vectors; with `base`, each row is base row + noise, renormalised. Seeded LCG + Box–Muller. */
function unitRows(n: number, d: number, seed: number, base?: Float32Array, noise = 1): Float32Array {
  let state = seed >>> 0;
  const uniform = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state + 0.5) / 4294967296;
  };
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    let norm = 0;
    for (let k = 0; k < d; k++) {
      const g = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
      const v = (base ? base[i * d + k] : 0) + noise * g * (base ? 1 / Math.sqrt(d) : 1);
      out[i * d + k] = v;
      norm += v * v;
    }
    const inv = 1 / Math.sqrt(norm);
    for (let k = 0; k < d; k++) out[i * d + k] *= inv;
  }
  return out;
}

async function child(n: number, d: number, block: number, backend: string): Promise<void> {
  const choice = await initBackend({ prefer: parseBackendPreference(backend) });
  const video = unitRows(n, d, 1);
  const text = unitRows(n, d, 2, video, 3);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const m = await retrievalMetricsBlocked(text, video, d, { blockRows: block });
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const peakRssMiB = process.resourceUsage().maxRSS / 1024;
  console.log(JSON.stringify({ n, d, block, backend: choice.name, info: choice.info, seconds, cpuSeconds, peakRssMiB, t2v: m.t2v, v2t: m.v2t }));
}

async function main(): Promise<void> {
  const d = positiveInt('--d', arg('--d', '256'));
  const block = positiveInt('--block', arg('--block', '1024'));
  const backend = arg('--backend', 'wasm');
  if (process.argv.includes('--child')) {
    await child(positiveInt('--child', arg('--child', '')), d, block, backend);
    return;
  }
  const sizes = arg('--sizes', '1000,10000,50000').split(',').map((s) => positiveInt('--sizes', s.trim()));
  const self = fileURLToPath(import.meta.url);
  console.log(`bench-eval: blocked t2v + v2t, d = ${d}, blockRows = ${block}, backend ${backend}`);
  console.log('N\twall s\tCPU s\tpeak RSS MiB\tdense N×N float32 MiB\tt2v R1/MdR\tv2t R1/MdR');
  for (const n of sizes) {
    const r = spawnSync(process.execPath, [self, '--child', String(n), '--d', String(d), '--block', String(block), '--backend', backend], {
      encoding: 'utf8', maxBuffer: 1 << 20,
    });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (r.status !== 0 || !line.startsWith('{')) {
      console.log(`${n}\tfailed (exit ${r.status}, signal ${r.signal}): ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
      continue;
    }
    const x = JSON.parse(line) as { seconds: number; cpuSeconds: number; peakRssMiB: number; info: unknown; t2v: { R1: number; MdR: number }; v2t: { R1: number; MdR: number } };
    const denseMiB = (n * n * 4) / 2 ** 20;
    console.log([n, x.seconds.toFixed(2), x.cpuSeconds.toFixed(2), x.peakRssMiB.toFixed(0), denseMiB.toFixed(0),
      `${x.t2v.R1.toFixed(1)}/${x.t2v.MdR}`, `${x.v2t.R1.toFixed(1)}/${x.v2t.MdR}`].join('\t'));
    if (n === sizes[0]) console.log(`backend info: ${JSON.stringify(x.info)}`);
  }
}

main().catch((e: unknown) => {
  console.error(`bench-eval: ${(e as Error).message}`);
  process.exit(1);
});
