/**
 * Replace a file all at once: write a temporary sibling, optionally flush it to disk, rename it
 * over the target. A reader (or a crash) sees the old file or the new one, never half of one.
 *
 * @example await writeFileAtomic('cache/index.json', JSON.stringify(index), { sync: true });
 */
import { open, rename, rm } from 'node:fs/promises';

export async function writeFileAtomic(file: string, data: Uint8Array | string, opts: { sync?: boolean } = {}): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(data);
      // With `sync`, the bytes reach the disk before the rename, so a rename that survives a
      // power loss never points at a hole (the caches rely on it; a manifest can be rewritten).
      if (opts.sync) await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    // fs errors of a file handle name no file ("ENOSPC: no space left on device, write").
    const code = (e as NodeJS.ErrnoException).code;
    const hint = code === 'ENOSPC' ? '; the disk is full' : code === 'EROFS' ? '; the filesystem is read-only' : '';
    throw Object.assign(new Error(`cannot write ${file} (${(e as Error).message})${hint}`, { cause: e }), { code });
  }
}
