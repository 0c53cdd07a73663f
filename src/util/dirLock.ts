/**
 * One writer per folder across processes: a `.lock` file created exclusively (O_EXCL) holding
 * its owner as JSON `{ pid, host, startedAt, boot?, procStart? }`. Two runs that build the same
 * cache at once otherwise interleave their shard numbers and indexes (seen here: duplicated and
 * missing clips); with the lock the second waits and then finds the first one's work done, or
 * (`wait: false`, a run folder) is refused at once.
 *
 * A pid alone does not identify a process: after a container or machine restart the pid in an
 * old lock may belong to anything, even to the process reading it. So the owner is the pid
 * together with the machine's boot id and the process's start time (Linux `/proc`); a lock
 * whose owner is not that same process is taken over, and said so.
 *
 * @example const summary = await withDirLock('data/frames', () => build(), { what: 'frame cache' });
 */
import { readFileSync } from 'node:fs';
import { open, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** Who holds a lock, as written in the lock file. */
export interface LockHolder {
  pid: number;
  host: string;
  /** When the lock was taken (ISO time). */
  startedAt: string;
  /** The machine's boot id (Linux); a different one means the holder died in a reboot. */
  boot?: string;
  /** The holder process's start time since boot, in clock ticks (Linux); tells a reused pid apart. */
  procStart?: string;
}

export interface DirLockOptions {
  /** What the folder holds, for messages. */
  what?: string;
  /** How often a waiting process looks again (ms). */
  pollMs?: number;
  /** Give up after this long (ms) with an error naming the lock file and its holder. */
  timeoutMs?: number;
  /** Refuse at once, naming the holder, instead of waiting (a run folder has one writer for hours). */
  wait?: boolean;
  /** Told when this process starts waiting for another, then every `waitNoticeMs` while it waits. */
  onWait?: (holder: LockHolder, waitedMs: number) => void;
  /** Interval of `onWait` notices (ms, default 30 000). */
  waitNoticeMs?: number;
  /** Told when a lock left by a process that no longer exists is taken over. */
  onTakeover?: (holder: LockHolder, reason: string) => void;
}

/** Whether a process with this pid exists (EPERM: it does, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readProc(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** Field 22 of /proc/<pid>/stat: the start time in ticks since boot (the name in field 2 may hold spaces). */
export function processStartTime(pid: number): string | undefined {
  const text = readProc(`/proc/${pid}/stat`);
  if (!text) return undefined;
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return rest[19];
}

let self: LockHolder | undefined;

/** This process as a lock holder (host, pid, boot id, start time). */
export function currentHolder(): LockHolder {
  self ??= {
    pid: process.pid,
    host: os.hostname(),
    startedAt: '',
    ...(readProc('/proc/sys/kernel/random/boot_id') ? { boot: readProc('/proc/sys/kernel/random/boot_id')!.trim() } : {}),
    ...(processStartTime(process.pid) ? { procStart: processStartTime(process.pid) } : {}),
  };
  return { ...self, startedAt: new Date().toISOString() };
}

/** "process 123 on host h (since 2026-…)". */
export function describeHolder(h: LockHolder): string {
  return `process ${h.pid}${h.host ? ` on host ${h.host}` : ''}${h.startedAt ? ` (since ${h.startedAt})` : ''}`;
}

/** null: no lock; 'partial': empty or unparseable (being written, or garbage). */
async function holderOf(lock: string): Promise<LockHolder | 'partial' | null> {
  const text = await readFile(lock, 'utf8').catch(() => null);
  if (text === null) return null;
  const trimmed = text.trim();
  // A bare pid: the lock of an older build.
  if (/^\d+$/.test(trimmed)) return { pid: Number(trimmed), host: '', startedAt: '' };
  try {
    const h = JSON.parse(trimmed) as LockHolder;
    if (Number.isInteger(h.pid) && h.pid > 0 && typeof h.host === 'string') return h;
  } catch {
    // fall through
  }
  return 'partial';
}

/** Why `h` cannot be holding its lock any more, or null when it may be. */
function staleReason(h: LockHolder): string | null {
  const me = currentHolder();
  if (!h.host) {
    // An older build's lock holds only a pid; this process never writes one, so its own pid there is a leftover.
    if (h.pid === me.pid) return `its pid ${h.pid} is this process's own, left from before a restart`;
    return processAlive(h.pid) ? null : `process ${h.pid} no longer exists`;
  }
  // Another machine sharing the folder: its processes cannot be checked from here.
  if (h.host !== me.host) return null;
  if (h.boot && me.boot && h.boot !== me.boot) return `host ${h.host} has restarted since`;
  if (!processAlive(h.pid)) return `process ${h.pid} no longer exists`;
  if (h.procStart && me.procStart) {
    const now = processStartTime(h.pid);
    if (now !== undefined && now !== h.procStart) return `pid ${h.pid} now belongs to another process (restart or pid reuse)`;
  }
  return null;
}

/** The error of a folder whose lock another process holds. */
export class DirLockedError extends Error {
  readonly holder: LockHolder;
  readonly lock: string;
  constructor(message: string, lock: string, holder: LockHolder) {
    super(message);
    this.name = 'DirLockedError';
    this.lock = lock;
    this.holder = holder;
  }
}

/**
 * Takes `dir/.lock` (the folder must exist) and returns the function that releases it.
 *
 * @example const release = await acquireDirLock('runs/a', { what: 'run folder', wait: false }); try { … } finally { await release(); }
 */
export async function acquireDirLock(dir: string, opts: DirLockOptions = {}): Promise<() => Promise<void>> {
  if (typeof dir !== 'string' || dir === '') throw new Error('acquireDirLock: dir must be a folder path');
  const lock = path.join(path.resolve(dir), '.lock');
  const pollMs = opts.pollMs ?? 200;
  const timeoutMs = opts.timeoutMs ?? 60 * 60 * 1000;
  const noticeMs = opts.waitNoticeMs ?? 30_000;
  const what = opts.what ?? 'folder';
  const t0 = Date.now();
  let lastNotice = -Infinity;
  let mine: LockHolder;
  for (;;) {
    mine = currentHolder();
    try {
      const fh = await open(lock, 'wx');
      try { await fh.writeFile(`${JSON.stringify(mine)}\n`); } finally { await fh.close(); }
      break;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') {
        const hint = code === 'EROFS' || code === 'EACCES' || code === 'EPERM' ? ' (the folder is read-only for this process)' : code === 'ENOSPC' ? ' (the disk is full)' : '';
        throw new Error(`${what} ${dir}: cannot create the lock ${lock} (${(e as Error).message})${hint}`);
      }
    }
    const holder = await holderOf(lock);
    if (holder === null) continue;
    if (holder === 'partial') {
      // Empty or garbage and older than a few seconds: left by a process killed between create and write.
      const age = Date.now() - ((await stat(lock).catch(() => null))?.mtimeMs ?? Date.now());
      if (age > 5000) {
        await rm(lock, { force: true });
        opts.onTakeover?.({ pid: 0, host: '', startedAt: '' }, 'the lock file was empty or unreadable');
        continue;
      }
    } else {
      const stale = staleReason(holder);
      if (stale) {
        await rm(lock, { force: true });
        opts.onTakeover?.(holder, stale);
        continue;
      }
      if (opts.wait === false) {
        throw new DirLockedError(`${what} ${path.resolve(dir)} is in use by ${describeHolder(holder)}; wait for that run to end, or choose another folder (if no such run is going on, delete ${lock})`, lock, holder);
      }
      const waited = Date.now() - t0;
      if (waited > timeoutMs) {
        throw new DirLockedError(`${what} ${dir}: still locked by ${describeHolder(holder)} after ${Math.round(timeoutMs / 1000)} s; if no such run is going on, delete ${lock}`, lock, holder);
      }
      if (waited - lastNotice >= noticeMs) {
        opts.onWait?.(holder, waited);
        lastNotice = waited;
      }
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
  const owner = mine;
  return async () => {
    const h = await holderOf(lock);
    if (h && h !== 'partial' && h.pid === owner.pid && h.startedAt === owner.startedAt) await rm(lock, { force: true });
  };
}

/**
 * Runs `fn` while holding `dir/.lock`; the folder must exist.
 *
 * @example await withDirLock(out, async () => writeShards(), { what: 'frame cache', timeoutMs: 60_000 });
 */
export async function withDirLock<T>(dir: string, fn: () => Promise<T>, opts: DirLockOptions = {}): Promise<T> {
  if (typeof dir !== 'string' || dir === '') throw new Error('withDirLock: dir must be a folder path');
  const release = await acquireDirLock(dir, opts);
  try {
    return await fn();
  } finally {
    await release();
  }
}
