/**
 * The run folder of a training job: checked, created and locked for the whole run, so two
 * runs never write checkpoints, metrics and eval.json into one folder, and a run never writes
 * them into the working folder by accident (`--out ""`). A folder that already holds a run is
 * never written over by accident either: the job continues it with `--resume`, replaces it
 * with `--overwrite`, or stops with a message saying both.
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { configChanges, configHash } from '../src/train/checkpoint.js';
import { acquireDirLock, describeHolder } from '../src/util/dirLock.js';

export interface RunFolder {
  runDir: string;
  /** Removes the lock; call once the run has written everything. */
  release: () => Promise<void>;
}

/** How a job may use a folder that already holds a run. */
export interface RunFolderOptions {
  /** The job continues the run in the folder (nothing is removed). */
  resume?: boolean;
  /** Remove the previous run's outputs before starting. */
  overwrite?: boolean;
}

/** Files and folders whose presence marks a folder as holding a run's outputs. */
const RUN_MARKERS = ['checkpoints', 'metrics.jsonl', 'eval.json', 'finetune.json', 'qa.json', 'qa.jsonl', 'events'];

/**
 * Resolves `out` (default `runs/<name>`), refuses an empty path and the working folder or
 * any folder above it, creates it and takes its lock without waiting: a second writer is
 * refused with the first one's pid, host and start time. Then, holding the lock, checks what
 * is there: a previous run (checkpoints/, metrics.jsonl, eval.json …) needs `resume` or
 * `overwrite`; with `overwrite` those outputs are removed (anything else is left alone).
 *
 * @example const { runDir, release } = await openRunFolder(opts.out, cfg.name, log, { resume: opts.resume }); try { … } finally { await release(); }
 */
export async function openRunFolder(
  out: string | undefined, name: string, log: (m: string) => void, opts: RunFolderOptions = {},
): Promise<RunFolder> {
  if (out !== undefined && out.trim() === '') throw new Error('--out: expected a run folder, got an empty path');
  if (opts.resume && opts.overwrite) throw new Error('--resume and --overwrite: give one (continue the run in --out, or replace it)');
  const runDir = path.resolve(out ?? path.join('runs', name));
  const cwd = process.cwd();
  if (runDir === cwd || cwd.startsWith(runDir.endsWith(path.sep) ? runDir : `${runDir}${path.sep}`)) {
    throw new Error(`--out ${JSON.stringify(out ?? name)}: ${runDir} is the working folder or above it; a run writes checkpoints, metrics.jsonl and eval.json into its folder, so give it one of its own (e.g. runs/NAME)`);
  }
  try {
    await mkdir(runDir, { recursive: true });
  } catch (e) {
    throw new Error(`--out: cannot create the run folder ${runDir} (${(e as Error).message})`);
  }
  const release = await acquireDirLock(runDir, {
    what: 'run folder',
    wait: false,
    onTakeover: (h, why) => log(`run folder ${runDir}: took over the lock of ${describeHolder(h)}: ${why}`),
  });
  try {
    await clearPreviousRun(runDir, opts);
  } catch (e) {
    await release();
    throw e;
  }
  return { runDir, release };
}

/** A previous run in `runDir`: kept with `resume`, removed with `overwrite`, else refused. */
async function clearPreviousRun(runDir: string, opts: RunFolderOptions): Promise<void> {
  const names = await readdir(runDir).catch((e: NodeJS.ErrnoException) => {
    throw new Error(`--out ${runDir}: cannot read the folder (${e.code ?? e.message})`);
  });
  const previous = names.filter((n) => RUN_MARKERS.includes(n));
  if (!previous.length || opts.resume) return;
  if (!opts.overwrite) {
    throw new Error(
      `--out ${runDir} already holds a run (${previous.join(', ')}); pass --resume to continue it, `
      + '--overwrite to replace it, or choose another --out',
    );
  }
  for (const n of previous) await rm(path.join(runDir, n), { recursive: true, force: true });
}

/**
 * On --resume: a checkpoint's settings must be the current ones. `settings` is what the
 * pipeline passed as the trainer's `configHash` source; `saved` is the same part of the
 * checkpoint's config.json, for naming the keys that differ. Refuses unless `allow`.
 *
 * @example checkResumeConfig(ck, ck.config.pretrain, cfg, opts.allowConfigChange, log);
 */
export function checkResumeConfig(
  ck: { dir: string; state: Record<string, unknown> }, saved: unknown, settings: unknown, allow: boolean, log: (m: string) => void,
): void {
  const stored = ck.state.configHash;
  if (stored === configHash(settings)) return;
  const changed = saved === undefined ? ['(the checkpoint holds no config to compare)'] : configChanges(saved, settings);
  // A checkpoint of an older build has no hash: its config alone decides.
  if (stored === undefined && changed.length === 0) return;
  const what = `checkpoint ${ck.dir} was saved with other settings: ${changed.join(', ') || '(config hash differs)'}`;
  if (!allow) throw new Error(`--resume: ${what}. Resume with the config it was saved with, choose another --out, or add --allow-config-change to continue anyway`);
  log(`warning: ${what}; continuing (--allow-config-change)`);
}
