/**
 * One writer per folder across processes: a `.lock` file created exclusively (O_EXCL) holding
 * the owner's pid. Two runs that build the same cache at once otherwise interleave their shard
 * numbers and indexes (seen here: duplicated and missing clips); with the lock the second waits
 * and then finds the first one's work done. A lock left by a process that no longer exists is
 * taken over.
 *
 * @example const summary = await withDirLock('data/frames', () => build(), { what: 'frame cache' });
 */
import { open, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';

export interface DirLockOptions {
  /** What the folder holds, for messages. */
  what?: string;
  /** How often a waiting process looks again (ms). */
  pollMs?: number;
  /** Give up after this long (ms) with an error naming the lock file. */
  timeoutMs?: number;
  /** Told once when this process starts waiting for another. */
  onWait?: (holderPid: number) => void;
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

async function holderOf(lock: string): Promise<number | null> {
  const text = await readFile(lock, 'utf8').catch(() => null);
  if (text === null) return null;
  const pid = Number.parseInt(text, 10);
  return Number.isInteger(pid) && pid > 0 ? pid : 0;
}

/**
 * Runs `fn` while holding `dir/.lock`; the folder must exist.
 *
 * @example await withDirLock(out, async () => writeShards(), { what: 'frame cache', timeoutMs: 60_000 });
 */
export async function withDirLock<T>(dir: string, fn: () => Promise<T>, opts: DirLockOptions = {}): Promise<T> {
  if (typeof dir !== 'string' || dir === '') throw new Error('withDirLock: dir must be a folder path');
  const lock = path.join(path.resolve(dir), '.lock');
  const pollMs = opts.pollMs ?? 200;
  const timeoutMs = opts.timeoutMs ?? 60 * 60 * 1000;
  const what = opts.what ?? 'folder';
  const t0 = Date.now();
  let told = false;
  for (;;) {
    try {
      const fh = await open(lock, 'wx');
      try { await fh.writeFile(String(process.pid)); } finally { await fh.close(); }
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`${what} ${dir}: cannot create the lock ${lock} (${(e as Error).message})`);
    }
    const pid = await holderOf(lock);
    // 0: a lock being written right now (empty) or garbage; null: just released. Look again.
    const stale = pid !== null && pid > 0 && pid !== process.pid && !processAlive(pid);
    // An empty lock older than a few seconds was left by a process killed between create and write.
    const orphan = pid === 0 && Date.now() - ((await stat(lock).catch(() => null))?.mtimeMs ?? Date.now()) > 5000;
    if (stale || orphan) {
      await rm(lock, { force: true });
      continue;
    }
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`${what} ${dir}: still locked by process ${pid} after ${Math.round(timeoutMs / 1000)} s; if no such run is going on, delete ${lock}`);
    }
    if (!told && pid) { opts.onWait?.(pid); told = true; }
    await new Promise((r) => setTimeout(r, pollMs));
  }
  try {
    return await fn();
  } finally {
    if ((await holderOf(lock)) === process.pid) await rm(lock, { force: true });
  }
}
