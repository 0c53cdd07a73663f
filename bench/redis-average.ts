/**
 * What averaging parameters (or gradients) between processes through Redis costs: N worker
 * processes each hold a float32 vector of P values and average them, reduce-scatter then
 * all-gather through one Redis (worker j averages slice j of every vector, then everyone
 * fetches the averaged slices). Reports ms per round and the bytes each worker moved, and
 * checks the result against the mean computed here.
 *
 *   node dist/bench/redis-average.js [--sizes 286977,4000000,16000000] [--workers 2,4] [--rounds 3] [--queue redis://…]
 *
 * Without --queue it starts redis-server (from the PATH) on a free loopback port and stops it.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';

const { values: a } = parseArgs({
  options: {
    sizes: { type: 'string', default: '286977,4000000,16000000' }, workers: { type: 'string', default: '2,4' },
    rounds: { type: 'string', default: '3' }, queue: { type: 'string' },
    child: { type: 'string' }, rank: { type: 'string' }, n: { type: 'string' }, size: { type: 'string' }, tag: { type: 'string' },
  },
});

/** A float32 view of a received buffer (copied when Node's buffer pool left it unaligned). */
const floats = (b: Buffer): Float32Array => (b.byteOffset % 4 === 0
  ? new Float32Array(b.buffer, b.byteOffset, b.length / 4)
  : new Float32Array(Uint8Array.from(b).buffer));

/** Worker `rank`'s vector: values whose mean over ranks is known in closed form. */
const valueOf = (rank: number, i: number): number => rank + (i % 7);

async function waitCount(r: Redis, key: string, n: number): Promise<void> {
  while (Number(await r.get(key)) < n) await new Promise((res) => setTimeout(res, 1));
}

async function child(url: string): Promise<void> {
  const rank = Number(a.rank);
  const n = Number(a.n);
  const P = Number(a.size);
  const rounds = Number(a.rounds);
  const r = new Redis(url);
  const v = new Float32Array(P);
  for (let i = 0; i < P; i++) v[i] = valueOf(rank, i);
  const bounds = (j: number): [number, number] => [Math.floor((j * P) / n), Math.floor(((j + 1) * P) / n)];
  const times: number[] = [];
  let moved = 0;
  for (let round = 0; round < rounds; round++) {
    const k = `${a.tag}:${round}`;
    await r.incr(`${k}:start`);
    await waitCount(r, `${k}:start`, n);
    const t0 = performance.now();
    moved = 0;
    // Reduce-scatter: put my slices, then average slice `rank` of everyone's.
    for (let j = 0; j < n; j++) {
      const [lo, hi] = bounds(j);
      const buf = Buffer.from(v.buffer, lo * 4, (hi - lo) * 4);
      await r.set(`${k}:part:${rank}:${j}`, buf);
      moved += buf.length;
    }
    await r.incr(`${k}:put`);
    await waitCount(r, `${k}:put`, n);
    const [lo, hi] = bounds(rank);
    const sum = new Float32Array(hi - lo);
    for (let src = 0; src < n; src++) {
      const b = (await r.getBuffer(`${k}:part:${src}:${rank}`))!;
      moved += b.length;
      const f = floats(b);
      for (let i = 0; i < f.length; i++) sum[i] += f[i];
    }
    for (let i = 0; i < sum.length; i++) sum[i] /= n;
    await r.set(`${k}:avg:${rank}`, Buffer.from(sum.buffer));
    moved += sum.byteLength;
    await r.incr(`${k}:avg`);
    await waitCount(r, `${k}:avg`, n);
    // All-gather the averaged slices.
    for (let j = 0; j < n; j++) {
      const b = (await r.getBuffer(`${k}:avg:${j}`))!;
      moved += b.length;
      const [l2] = bounds(j);
      v.set(floats(b), l2);
    }
    times.push(performance.now() - t0);
    // Restore the inputs for the next round; check the mean once.
    if (round === 0) {
      const mean = (n - 1) / 2;
      for (let i = 0; i < P; i += Math.max(1, Math.floor(P / 1000))) {
        if (Math.abs(v[i] - (mean + (i % 7))) > 1e-5) throw new Error(`rank ${rank}: v[${i}] = ${v[i]}, expected ${mean + (i % 7)}`);
      }
    }
    for (let i = 0; i < P; i++) v[i] = valueOf(rank, i);
    await r.incr(`${k}:done`);
    await waitCount(r, `${k}:done`, n);
    // Only the data: a counter deleted now could hide the last increment from a slower worker.
    await r.del(...Array.from({ length: n }, (_, j) => `${k}:part:${rank}:${j}`), `${k}:avg:${rank}`);
  }
  console.log(JSON.stringify({ rank, times, moved }));
  await r.quit();
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => resolve(p)); });
  });
}

async function main(): Promise<void> {
  if (a.child) { await child(a.child); return; }
  let url = a.queue;
  let stop = (): void => undefined;
  if (!url) {
    const port = await freePort();
    const srv = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    stop = () => { srv.kill('SIGTERM'); };
    url = `redis://127.0.0.1:${port}`;
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 100));
      try { if (execFileSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).includes('PONG')) break; } catch { /* starting */ }
    }
  }
  try {
    console.log('| values P | MB per vector | workers N | ms per round (median) | MB moved per worker | effective GB/s per worker |');
    console.log('| ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const P of a.sizes!.split(',').map(Number)) {
      for (const n of a.workers!.split(',').map(Number)) {
        const tag = `avg-${process.pid}-${P}-${n}`;
        const outs = await Promise.all(Array.from({ length: n }, (_, rank) => new Promise<string>((resolve, reject) => {
          const c = spawn(process.execPath, [fileURLToPath(import.meta.url), '--child', url!, '--rank', String(rank), '--n', String(n),
            '--size', String(P), '--rounds', a.rounds!, '--tag', tag], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          c.stdout.on('data', (d) => { out += d; });
          c.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`worker ${rank} exited ${code}`))));
        })));
        const rows = outs.map((o) => JSON.parse(o.trim()) as { times: number[]; moved: number });
        // A round ends when its slowest worker ends.
        const perRound = rows[0].times.map((_, i) => Math.max(...rows.map((r) => r.times[i]))).sort((x, y) => x - y);
        const med = perRound[Math.floor(perRound.length / 2)];
        const movedMb = rows[0].moved / 1e6;
        console.log(`| ${P.toLocaleString('en-US')} | ${(P * 4 / 1e6).toFixed(1)} | ${n} | ${med.toFixed(1)} | ${movedMb.toFixed(1)} | ${(movedMb / 1e3 / (med / 1e3)).toFixed(2)} |`);
      }
    }
  } finally {
    stop();
  }
}

await main();
