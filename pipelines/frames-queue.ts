/**
 * Frame extraction across machines on a BullMQ queue (Redis). The coordinator plans the cache
 * (one job per shard of `planFrameCache`), enqueues the shards not yet committed and waits;
 * workers on any machine that sees the cache folder run `buildFrameCacheShard` for each job.
 *
 * Why this is safe to crash anywhere: a shard is written under temporary names and committed
 * by renaming its .json last, and every builder of a shard writes the same bytes, so a job
 * done twice (a worker that stalled and came back, a re-run) changes nothing. A worker killed
 * mid-shard stops renewing its job's lock; BullMQ's stalled-job check puts the job back in
 * the queue for another worker, and the killed worker's temporary files are never committed
 * (the next coordinator run removes them).
 */
import { createHash } from 'node:crypto';
import { mkdir, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue, QueueEvents, Worker, type Job } from 'bullmq';
import pLimit from 'p-limit';
import {
  buildFrameCacheShard, finishFrameCache, prepareFrameCache, type FrameCacheConfig, type FrameCachePlan,
  type FrameCacheShardPlan, type ShardBuildResult,
} from '../src/data/frameCache.js';
import { withDirLock } from '../src/util/dirLock.js';

/** Queue name used when none is given (one Redis can carry several under other names). */
export const DEFAULT_FRAMES_QUEUE = 'vlmargin-frames';

/** Connection settings from `redis://[user:password@]host[:port][/db]`. */
export interface RedisTarget {
  host: string;
  port: number;
  db: number;
  username?: string;
  password?: string;
  /** The URL without its password, for messages. */
  display: string;
}

/**
 * Parses a Redis URL.
 *
 * @example parseRedisUrl('redis://10.0.0.5:6379/2') // { host: '10.0.0.5', port: 6379, db: 2, … }
 */
export function parseRedisUrl(url: string): RedisTarget {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`--queue: "${url}" is not a URL; expected redis://HOST:PORT[/DB]`);
  }
  if (u.protocol !== 'redis:') throw new Error(`--queue: "${url}" must start with redis:// (expected redis://HOST:PORT[/DB])`);
  if (!u.hostname) throw new Error(`--queue: "${url}" names no host; expected redis://HOST:PORT[/DB]`);
  const port = u.port ? Number(u.port) : 6379;
  const dbText = u.pathname.replace(/^\//, '');
  const db = dbText === '' ? 0 : Number(dbText);
  if (!Number.isInteger(db) || db < 0) throw new Error(`--queue: database "${dbText}" in "${url}" must be a number (redis://HOST:PORT/DB)`);
  const t: RedisTarget = { host: u.hostname.replace(/^\[|\]$/g, ''), port, db, display: `redis://${u.host}/${db}` };
  if (u.username) t.username = decodeURIComponent(u.username);
  if (u.password) t.password = decodeURIComponent(u.password);
  return t;
}

function connectionOf(t: RedisTarget, failFast: boolean): Record<string, unknown> {
  return {
    host: t.host, port: t.port, db: t.db, username: t.username, password: t.password,
    // Workers must keep retrying (BullMQ's requirement for blocking commands); the
    // coordinator's first contact fails fast so a wrong URL is an error, not a hang.
    maxRetriesPerRequest: null,
    ...(failFast ? { retryStrategy: (times: number) => (times > 3 ? null : 200 * times) } : {}),
  };
}

/** What a job carries: everything a worker needs to build one shard, nothing it must look up. */
export interface FramesJobData {
  out: string;
  config: FrameCacheConfig;
  timeoutMs?: number;
  shard: FrameCacheShardPlan;
}

export interface QueueProgress {
  shards: number;
  /** Shards committed (before this run or by it). */
  done: number;
  failed: number;
  remaining: number;
  /** Seconds left at this run's rate so far, or null before the first shard. */
  etaSeconds: number | null;
}

export interface EnqueueOptions {
  out: string;
  queue: string;
  /** Queue name (default DEFAULT_FRAMES_QUEUE); workers must use the same. */
  name?: string;
  timeoutMs?: number;
  /** Attempts per shard before it counts as failed (default 3). */
  attempts?: number;
  onProgress?: (p: QueueProgress) => void;
  /** How often progress is reported and job states are reconciled (ms, default 1000). */
  pollMs?: number;
}

export interface QueueSummary {
  out: string;
  shards: number;
  /** Shards committed before this run. */
  reused: number;
  /** Shards committed by workers during this run. */
  built: number;
  /** Shards whose job failed every attempt (a write error, not a bad clip), with the last reason. */
  failed: { shard: string; reason: string }[];
  clips: number;
  /** Items recorded as failed in the committed shards, and manifest entries left out of the plan. */
  skipped: number;
  seconds: number;
}

const jobIdOf = (planKey: string, shard: FrameCacheShardPlan): string => `${planKey}-${shard.name}`;

/**
 * Builds a frame cache through a queue: plans it, enqueues one job per uncommitted shard, waits
 * for workers (`runFramesWorker`) to commit them, then writes the index. Holds the cache
 * folder's lock meanwhile, as a local build does. A re-run enqueues only what is missing.
 *
 * @example
 * const plan = planFrameCache(manifest.entries, { frames: 8, size: 224 });
 * const s = await enqueueFrameCache(plan, { out: '/shared/cache', queue: 'redis://10.0.0.5:6379' });
 */
export async function enqueueFrameCache(plan: FrameCachePlan, opts: EnqueueOptions): Promise<QueueSummary> {
  const target = parseRedisUrl(opts.queue);
  const out = path.resolve(opts.out);
  const name = opts.name ?? DEFAULT_FRAMES_QUEUE;
  const attempts = opts.attempts ?? 3;
  const pollMs = opts.pollMs ?? 1000;
  const t0 = performance.now();
  await mkdir(out, { recursive: true });
  return withDirLock(out, async () => {
    const { committed } = await prepareFrameCache(out, plan);
    const todo = plan.shards.filter((s) => !committed.has(s.number));
    const reused = committed.size;
    const planKey = createHash('sha256').update(JSON.stringify({ out, config: plan.config, shardSize: plan.shardSize, ids: plan.idsSha256 })).digest('hex').slice(0, 16);
    const connection = connectionOf(target, true);
    const queue = new Queue<FramesJobData>(name, { connection });
    const events = new QueueEvents(name, { connection });
    const failed = new Map<string, string>();
    const finished = new Set<string>();
    try {
      await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]).catch((e: Error) => {
        throw new Error(`cannot reach the queue at ${target.display} (${e.message}); is redis-server running there?`);
      });
      const byJob = new Map(todo.map((s) => [jobIdOf(planKey, s), s]));
      const settle = async (jobId: string, reason?: string): Promise<void> => {
        const shard = byJob.get(jobId);
        if (!shard || finished.has(jobId)) return;
        const state = await queue.getJobState(jobId);
        if (state === 'completed') {
          finished.add(jobId);
        } else if (state === 'failed') {
          finished.add(jobId);
          failed.set(shard.name, reason ?? (await queue.getJob(jobId))?.failedReason ?? 'failed');
        } else if (state === 'unknown') {
          // Completed jobs are removed from Redis; the shard on disk says whether it was done.
          finished.add(jobId);
          const ok = await stat(path.join(out, `${shard.name}.json`)).then(() => true, () => false);
          if (!ok) failed.set(shard.name, 'the job left the queue without committing its shard (removed by hand?)');
        }
      };
      events.on('completed', ({ jobId }) => { if (byJob.has(jobId)) finished.add(jobId); });
      events.on('failed', ({ jobId, failedReason }) => { void settle(jobId, failedReason).catch(() => undefined); });

      // A job of an earlier run that finished (its shard is missing now) or failed is replaced;
      // one still waiting or running is adopted.
      const fresh: { name: string; data: FramesJobData; opts: { jobId: string } }[] = [];
      const limit = pLimit(64);
      await Promise.all(todo.map((s) => limit(async () => {
        const jobId = jobIdOf(planKey, s);
        const state = await queue.getJobState(jobId);
        if (state === 'completed' || state === 'failed') await queue.remove(jobId);
        else if (state !== 'unknown') return;
        fresh.push({ name: s.name, data: { out, config: plan.config, timeoutMs: opts.timeoutMs, shard: s }, opts: { jobId } });
      })));
      fresh.sort((a, b) => a.data.shard.number - b.data.shard.number);
      const jobOpts = { attempts, backoff: { type: 'exponential', delay: 1000 }, removeOnComplete: true, removeOnFail: { age: 7 * 24 * 3600 } };
      for (let i = 0; i < fresh.length; i += 500) {
        await queue.addBulk(fresh.slice(i, i + 500).map((j) => ({ ...j, opts: { ...j.opts, ...jobOpts } })));
      }

      const progress = (): QueueProgress => {
        const done = reused + finished.size - failed.size;
        const builtNow = finished.size - failed.size;
        const remaining = plan.shards.length - done - failed.size;
        const elapsed = (performance.now() - t0) / 1000;
        return { shards: plan.shards.length, done, failed: failed.size, remaining, etaSeconds: builtNow > 0 ? (remaining * elapsed) / builtNow : null };
      };
      let lastReconcile = performance.now();
      while (finished.size < todo.length) {
        opts.onProgress?.(progress());
        await new Promise((r) => setTimeout(r, pollMs));
        // Events can be missed (a dropped connection); every few polls, ask for the states.
        if (performance.now() - lastReconcile > 5 * pollMs) {
          lastReconcile = performance.now();
          const open = [...byJob.keys()].filter((id) => !finished.has(id));
          await Promise.all(open.map((id) => limit(() => settle(id))));
        }
      }
      opts.onProgress?.(progress());
      const all = await finishFrameCache(out, plan);
      const failedList = [...failed.entries()].map(([shard, reason]) => ({ shard, reason })).sort((a, b) => a.shard.localeCompare(b.shard));
      let clips = 0;
      let skipped = plan.manifestErrors.length;
      for (const c of all.values()) { clips += c.items; skipped += c.errors.length; }
      return {
        out, shards: plan.shards.length, reused, built: finished.size - failed.size, failed: failedList, clips, skipped,
        seconds: (performance.now() - t0) / 1000,
      };
    } finally {
      await events.close().catch(() => undefined);
      await queue.close().catch(() => undefined);
    }
  }, { what: 'frame cache' });
}

export interface WorkerOptions {
  queue: string;
  name?: string;
  /** Shards built at once, each decoding one clip at a time: ffmpeg processes at a time (default 2). */
  concurrency?: number;
  /**
   * Seconds without a lock renewal after which a job counts as stalled and goes to another
   * worker (default 30). A live worker renews every half of it.
   */
  stallSeconds?: number;
  onJob?: (e: { shard: string; out: string; result?: ShardBuildResult; error?: Error; seconds: number }) => void;
}

export interface FramesWorker {
  /** Stops taking jobs and waits for the running ones to finish. */
  close(): Promise<void>;
}

function checkJob(data: FramesJobData): void {
  const ok = data && typeof data.out === 'string' && path.isAbsolute(data.out) && data.config && data.shard && Array.isArray(data.shard.items);
  if (!ok) throw new Error(`not a frame-cache job: ${JSON.stringify(data)?.slice(0, 200)}`);
}

/**
 * Takes frame-cache jobs from the queue and builds their shards, until closed.
 *
 * @example
 * const w = await runFramesWorker({ queue: 'redis://10.0.0.5:6379', concurrency: 4 });
 * process.on('SIGTERM', () => w.close());
 */
export async function runFramesWorker(opts: WorkerOptions): Promise<FramesWorker> {
  const target = parseRedisUrl(opts.queue);
  const concurrency = opts.concurrency ?? 2;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error(`worker: concurrency must be a positive integer, got ${opts.concurrency}`);
  const stallMs = Math.round((opts.stallSeconds ?? 30) * 1000);
  if (!(stallMs >= 500)) throw new Error(`worker: the stall time must be at least 0.5 s, got ${opts.stallSeconds}`);
  const limit = pLimit(concurrency);
  const host = os.hostname();
  const processor = async (job: Job<FramesJobData>): Promise<{ decoded: number; failed: number; reused: boolean }> => {
    checkJob(job.data);
    const { out, config, shard, timeoutMs } = job.data;
    const t0 = performance.now();
    try {
      const index = await stat(path.join(out, 'index.json')).catch(() => null);
      if (!index) throw new Error(`${out}/index.json is not visible from ${host}; workers need the cache folder on a filesystem they share with the coordinator`);
      const result = await buildFrameCacheShard(out, config, shard, { limit, timeoutMs });
      opts.onJob?.({ shard: shard.name, out, result, seconds: (performance.now() - t0) / 1000 });
      return { decoded: result.decoded, failed: result.errors.length, reused: result.reused };
    } catch (e) {
      opts.onJob?.({ shard: shard.name, out, error: e as Error, seconds: (performance.now() - t0) / 1000 });
      throw e;
    }
  };
  const worker = new Worker<FramesJobData>(opts.name ?? DEFAULT_FRAMES_QUEUE, processor, {
    connection: connectionOf(target, false), concurrency,
    lockDuration: stallMs, stalledInterval: Math.max(250, Math.round(stallMs / 2)), maxStalledCount: 2,
  });
  // BullMQ reports connection trouble as 'error' events; unhandled they would crash the worker.
  worker.on('error', (e) => { console.error(`worker: ${target.display}: ${e.message}`); });
  await worker.waitUntilReady();
  return { close: () => worker.close() };
}
