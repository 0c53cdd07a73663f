import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildFrameCache, planFrameCache, verifyFrameCache } from '../src/data/frameCache.js';
import type { ManifestEntry } from '../src/data/types.js';
import { ffmpegBinary } from '../src/video/binaries.js';
import { enqueueFrameCache, parseRedisUrl } from '../pipelines/frames-queue.js';
import { redisUnavailable, startTestRedis, type TestRedis } from './helpers/redis.js';
import { makeClip } from './video.test.js';

const cli = new URL('../pipelines/cli/main.js', import.meta.url).pathname;
const NAMES = ['red', 'lime', 'blue', 'yellow', 'white', 'magenta'];

/** Every file of two folders, byte for byte (the lock aside). */
function assertSameFiles(a: string, b: string): void {
  // errors.jsonl is a log appended as shards commit: its line order follows the workers.
  const list = (d: string): string[] => readdirSync(d).filter((n) => n !== '.lock' && n !== 'errors.jsonl').sort();
  assert.deepEqual(list(b), list(a));
  for (const n of list(a)) assert.ok(readFileSync(path.join(a, n)).equals(readFileSync(path.join(b, n))), `${n} differs`);
}

interface WorkerProc { child: ChildProcess; out: () => string; exited: Promise<number | string | null> }

/** `vlmargin worker` as its own process group (so a kill reaches its ffmpeg children too). */
function startWorker(url: string, name: string, env: Record<string, string> = {}, extra: string[] = []): Promise<WorkerProc> {
  const child = spawn(process.execPath, [cli, 'worker', '--queue', url, '--queue-name', name, '--concurrency', '1', ...extra], {
    env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
  });
  let out = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  const exited = new Promise<number | string | null>((resolve) => child.on('exit', (c, sig) => resolve(sig ?? c)));
  return new Promise((resolve, reject) => {
    const t = setInterval(() => {
      if (out.includes('taking jobs')) { clearInterval(t); resolve({ child, out: () => out, exited }); }
      if (child.exitCode !== null) { clearInterval(t); reject(new Error(`worker exited early: ${out}`)); }
    }, 20);
  });
}

async function stopWorker(w: WorkerProc, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (w.child.exitCode !== null || w.child.signalCode !== null) return;
  try { process.kill(-w.child.pid!, signal); } catch { /* already gone */ }
  await w.exited;
}

describe('frame extraction on a queue', function () {
  this.timeout(120000);
  let dir: string;
  let entries: ManifestEntry[];

  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'vlm-queue-'));
    entries = NAMES.map((n) => ({ id: n, video: makeClip(path.join(dir, `${n}.mp4`), `color=c=${n}:s=32x24:r=5:d=2`), captions: [n] }));
    writeFileSync(path.join(dir, 'empty.mp4'), '');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('parses redis:// URLs and refuses others, naming the argument', () => {
    assert.deepEqual(parseRedisUrl('redis://10.0.0.5:6390/3'), { host: '10.0.0.5', port: 6390, db: 3, display: 'redis://10.0.0.5:6390/3' });
    assert.deepEqual(parseRedisUrl('redis://:s3cret@q.local'), { host: 'q.local', port: 6379, db: 0, password: 's3cret', display: 'redis://q.local/0' });
    assert.throws(() => parseRedisUrl('http://q:6379'), /--queue: .*must start with redis:\/\//);
    assert.throws(() => parseRedisUrl('q:6379'), /--queue: .*redis:\/\/HOST:PORT/);
    assert.throws(() => parseRedisUrl('redis://q:6379/x'), /database "x"/);
  });

  it('`frames --queue` with no Redis behind the URL fails with the URL, not a hang', async () => {
    const manifest = path.join(dir, 'one.jsonl');
    writeFileSync(manifest, `${JSON.stringify({ id: 'red', video: 'red.mp4', caption: 'red' })}\n`);
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [cli, 'frames', '--manifest', manifest, '--out', path.join(dir, 'nq'), '--queue', 'redis://127.0.0.1:1', '--no-progress'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => { stderr += d; });
      child.on('exit', (code) => resolve({ code, stderr }));
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach the queue at redis:\/\/127\.0\.0\.1:1\/0/);
  });

  describe('with a real Redis', () => {
    let redis: TestRedis | null = null;
    const workers: WorkerProc[] = [];

    before(async function () {
      const why = redisUnavailable();
      if (why) {
        console.log(`      skipped: ${why}`);
        this.skip();
      }
      redis = await startTestRedis();
    });
    afterEach(async () => { await Promise.all(workers.splice(0).map((w) => stopWorker(w, 'SIGKILL'))); });
    after(async () => { await redis?.stop(); });

    it('two workers build a cache byte-identical to the local build; bad clips are recorded; a re-run enqueues nothing', async () => {
      const all = [...entries.slice(0, 2), { id: 'gone', video: path.join(dir, 'gone.mp4'), captions: ['x'] },
        ...entries.slice(2, 4), { id: 'empty', video: path.join(dir, 'empty.mp4'), captions: ['y'] }, ...entries.slice(4)];
      const opts = { frames: 2, size: 16, shardSize: 1 };
      const local = path.join(dir, 'local');
      await buildFrameCache(all, { out: local, ...opts });
      const name = `t-two-${process.pid}`;
      workers.push(await startWorker(redis!.url, name), await startWorker(redis!.url, name));
      const out = path.join(dir, 'queued');
      const plan = planFrameCache(all, opts);
      const seen: number[] = [];
      const s = await enqueueFrameCache(plan, { out, queue: redis!.url, name, pollMs: 100, onProgress: (p) => seen.push(p.done + p.failed) });
      assert.deepEqual([s.shards, s.built, s.reused, s.failed.length, s.clips, s.skipped], [8, 8, 0, 0, 6, 2]);
      assert.equal(seen.at(-1), 8);
      assertSameFiles(local, out);
      for (const w of workers) assert.match(w.out(), /shard-\d+ of .*: \d clips/, `each worker built a shard:\n${w.out()}`);
      const shardJson = readdirSync(out).filter((n) => /^shard-\d+\.json$/.test(n)).map((n) => JSON.parse(readFileSync(path.join(out, n), 'utf8')) as { errors: { id: string; reason: string }[] });
      const errors = shardJson.flatMap((f) => f.errors);
      assert.deepEqual(errors.map((e) => e.id).sort(), ['empty', 'gone']);
      assert.match(errors.find((e) => e.id === 'gone')!.reason, /file not found/);

      assertSameFiles(local, out);
      // The two shards holding failures get their one retry on the next run; then nothing is left to do.
      const again = await enqueueFrameCache(plan, { out, queue: redis!.url, name, pollMs: 100 });
      assert.deepEqual([again.built, again.reused], [2, 6]);
      const third = await enqueueFrameCache(plan, { out, queue: redis!.url, name, pollMs: 100 });
      assert.deepEqual([third.built, third.reused], [0, 8]);
      const v = await verifyFrameCache(out);
      assert.deepEqual([v.clips, v.failed, v.shards, v.complete, v.problems], [6, 2, 8, true, []]);
    });

    it('a worker killed with SIGKILL mid-shard commits nothing partial; its job completes on the other worker', async () => {
      // The killed worker's ffmpeg waits before each decode, so the kill lands inside a shard.
      const log = path.join(dir, 'slow.log');
      writeFileSync(log, '');
      const slow = path.join(dir, 'slow-ffmpeg.sh');
      writeFileSync(slow, `#!/bin/sh\ncase "$*" in *rawvideo*) echo "$*" >> '${log}'; sleep 0.4;; esac\nexec '${ffmpegBinary().path}' "$@"\n`);
      chmodSync(slow, 0o755);
      const opts = { frames: 2, size: 16, shardSize: 3 };
      const local = path.join(dir, 'local-kill');
      await buildFrameCache(entries, { out: local, ...opts });
      const name = `t-kill-${process.pid}`;
      const out = path.join(dir, 'killed');
      const a = await startWorker(redis!.url, name, { FFMPEG_PATH: slow }, ['--stall-timeout', '1']);
      workers.push(a);
      const run = enqueueFrameCache(planFrameCache(entries, opts), { out, queue: redis!.url, name, pollMs: 100 });
      // Two decodes started: the first clip of a shard is done, the second is running.
      const t0 = Date.now();
      while (readFileSync(log, 'utf8').split('\n').filter(Boolean).length < 2) {
        assert.ok(Date.now() - t0 < 30000, 'the slow worker never started decoding');
        await new Promise((r) => setTimeout(r, 20));
      }
      await stopWorker(a, 'SIGKILL');
      assert.ok(!existsSync(path.join(out, 'shard-00000.json')), 'the shard in progress was not committed before the kill');
      const b = await startWorker(redis!.url, name, {}, ['--stall-timeout', '1']);
      workers.push(b);
      const s = await run;
      assert.deepEqual([s.built, s.failed.length, s.clips], [2, 0, 6]);
      assert.match(b.out(), /shard-00000 of .*: 3 clips/, b.out());
      assert.ok(!readdirSync(out).some((n) => n.includes('.tmp-')), readdirSync(out).join(' '));
      assertSameFiles(local, out);
    });
  });
});
