/**
 * Fault injection for the reliability tests: a disk that fills up after a byte budget (an fs
 * shim over file-handle writes and fs.writeSync, so it works without root and on any CI), and
 * a real small tmpfs where this machine allows mounting one.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

type Writer = (...args: unknown[]) => unknown;

function enospc(): NodeJS.ErrnoException {
  return Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
}

/**
 * Fails every file write with ENOSPC once `budget` bytes have been written since the call
 * (`budget` may be a function saying whether a write of `size` bytes succeeds, given the bytes
 * so far). Covers FileHandle.write/writeFile (fs/promises) and, unless `syncWrites: false`,
 * fs.writeSync (the metrics log). Returns `restore`.
 */
export async function fillDiskAfter(
  budget: number | ((written: number, size: number) => boolean),
  opts: { syncWrites?: boolean } = {},
): Promise<{ restore: () => void; written: () => number; failures: () => number }> {
  const probe = await open(path.join(os.tmpdir(), `vlm-fault-probe-${process.pid}`), 'w');
  const proto = Object.getPrototypeOf(probe) as Record<string, Writer>;
  await probe.close();
  fs.rmSync(path.join(os.tmpdir(), `vlm-fault-probe-${process.pid}`), { force: true });
  let written = 0;
  let failures = 0;
  const full = (size: number): boolean => (typeof budget === 'number' ? written + size > budget : !budget(written, size));
  const sizeOf = (data: unknown, len?: unknown): number => {
    if (typeof len === 'number') return len;
    if (typeof data === 'string') return Buffer.byteLength(data);
    return (data as ArrayBufferView | undefined)?.byteLength ?? 0;
  };
  const orig = { write: proto.write, writeFile: proto.writeFile, writeSync: fs.writeSync };
  proto.write = async function (this: unknown, ...args: unknown[]) {
    const size = sizeOf(args[0], typeof args[0] === 'string' ? undefined : args[2]);
    if (full(size)) { failures++; throw enospc(); }
    written += size;
    return orig.write.apply(this, args);
  };
  proto.writeFile = async function (this: unknown, ...args: unknown[]) {
    const size = sizeOf(args[0]);
    if (full(size)) { failures++; throw enospc(); }
    written += size;
    return orig.writeFile.apply(this, args);
  };
  if (opts.syncWrites !== false) (fs as unknown as Record<string, Writer>).writeSync = function (...args: unknown[]) {
    const size = sizeOf(args[1], typeof args[1] === 'string' ? undefined : args[3]);
    if (full(size)) { failures++; throw enospc(); }
    written += size;
    return (orig.writeSync as Writer)(...args);
  } as Writer;
  return {
    restore: () => {
      proto.write = orig.write;
      proto.writeFile = orig.writeFile;
      (fs as unknown as Record<string, unknown>).writeSync = orig.writeSync;
    },
    written: () => written,
    failures: () => failures,
  };
}

/**
 * Mounts a tmpfs of `kb` KiB at a new folder, or says why it cannot (not root, no mount, a
 * container without the capability). The caller unmounts with `unmount`.
 */
export function smallTmpfs(kb: number): { dir: string; unmount: () => void } | { why: string } {
  if (process.platform !== 'linux') return { why: `tmpfs needs Linux (this is ${process.platform})` };
  if (process.getuid?.() !== 0) return { why: 'mounting a tmpfs needs root' };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${kb}k`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    return { why: `mount -t tmpfs failed here (${String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).trim().split('\n')[0]})` };
  }
  return {
    dir,
    unmount: () => {
      execFileSync('umount', [dir], { stdio: 'pipe' });
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Makes `dir` read-only for this process: a read-only bind mount when root (root ignores file
 * modes), else chmod 0555. Returns `undo`, or why it cannot.
 */
export function makeReadOnly(dir: string): { undo: () => void } | { why: string } {
  if (process.getuid?.() === 0) {
    try {
      execFileSync('mount', ['--bind', dir, dir], { stdio: 'pipe' });
    } catch (e) {
      return { why: `a read-only bind mount needs the mount capability (${String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).trim().split('\n')[0]})` };
    }
    try {
      execFileSync('mount', ['-o', 'remount,ro,bind', dir], { stdio: 'pipe' });
    } catch (e) {
      execFileSync('umount', [dir], { stdio: 'pipe' });
      return { why: `remounting read-only failed (${String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).trim().split('\n')[0]})` };
    }
    return { undo: () => execFileSync('umount', [dir], { stdio: 'pipe' }) };
  }
  fs.chmodSync(dir, 0o555);
  return { undo: () => fs.chmodSync(dir, 0o755) };
}
