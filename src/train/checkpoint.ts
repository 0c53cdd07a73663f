/**
 * Checkpoint folders and run folders of checkpoints.
 *
 * A checkpoint is a folder: `config.json`, `model.safetensors`, optionally
 * `optimizer.safetensors`, and `state.json` (step, data position, RNG state, any other
 * JSON, and the SHA-256 of every other file). It is written in full under a temporary
 * name in the same parent, fsync'ed, then renamed into place, so a process killed at
 * any moment leaves the previous checkpoint as it was. A run keeps several:
 * `<run>/checkpoints/step-000100/`, and resuming falls back past a corrupt newest one.
 *
 * Names used next to a checkpoint folder `X` (all hidden, never listed as checkpoints):
 * `.X.tmp-<pid>-<hex>` a save in progress (or one that was killed), `.X.previous` the
 * old folder while an overwrite swaps it out, `.X.trash-<pid>-<hex>` a pruned folder
 * being deleted.
 */
import { processAlive } from '../util/dirLock.js';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { tf } from '../backend/tf.js';
import { firstNonFinite, fromTensors, readSafetensors, toTensorMap, writeSafetensors, type SafetensorsFile } from './safetensors.js';

/** The resumable position of a run; any extra JSON fields are kept as they are. */
export interface CheckpointState {
  step: number;
  /** Where the data loader stands (epoch, index, shuffled order seed…). */
  dataPosition?: unknown;
  /** RNG state to restore so a resumed run draws the same numbers. */
  rng?: unknown;
  [key: string]: unknown;
}

export interface CheckpointData {
  /** Any JSON value; written to config.json. */
  config: unknown;
  params: Record<string, tf.Tensor>;
  optimizer?: Record<string, tf.Tensor>;
  state: CheckpointState;
}

export interface LoadedCheckpoint extends CheckpointData {
  /** The folder the checkpoint was read from. */
  dir: string;
}

export interface WarningOptions {
  /** Called with a sentence for each recovered problem; default console.warn. */
  onWarning?: (message: string) => void;
}

const FORMAT = 'vlmargin-checkpoint';
const VERSION = 1;
const RESERVED_STATE_KEYS = ['format', 'version', 'sha256'];
const CONFIG_FILE = 'config.json';
const MODEL_FILE = 'model.safetensors';
const OPTIMIZER_FILE = 'optimizer.safetensors';
const STATE_FILE = 'state.json';
const CHECKSUMMED_FILES = [CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE];

const TMP_RE = /^\.(.+)\.tmp-(\d+)-[0-9a-f]+$/;
const TRASH_RE = /^\.(.+)\.trash-\d+-[0-9a-f]+$/;
const PREVIOUS_RE = /^\.(.+)\.previous$/;
const STEP_RE = /^step-(\d+)$/;

const backupPath = (dir: string): string => path.join(path.dirname(dir), `.${path.basename(dir)}.previous`);
const uniqueSuffix = (): string => `${process.pid}-${randomBytes(4).toString('hex')}`;

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

// A rename is only durable once the directory holding the entry is flushed; Windows
// cannot open directories for this and orders metadata itself.
async function fsyncDir(dir: string): Promise<void> {
  if (process.platform === 'win32') return;
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function writeFileSynced(file: string, text: string): Promise<string> {
  const bytes = Buffer.from(text, 'utf8');
  const fh = await open(file, 'wx');
  try {
    let done = 0;
    while (done < bytes.length) done += (await fh.write(bytes, done, bytes.length - done)).bytesWritten;
    await fh.sync();
  } finally {
    await fh.close();
  }
  return createHash('sha256').update(bytes).digest('hex');
}

async function checkTensors(what: string, tensors: Record<string, tf.Tensor>): ReturnType<typeof fromTensors> {
  if (typeof tensors !== 'object' || tensors === null || Array.isArray(tensors)) {
    throw new Error(`saveCheckpoint: ${what} must be a record of name → tf.Tensor`);
  }
  // Asynchronous: webgpu in Node cannot read a kernel's output synchronously.
  const read = await fromTensors(tensors);
  for (const [name, t] of read) {
    if (t.dtype !== 'F32') continue;
    const d = t.data as Float32Array;
    for (let i = 0; i < d.length; i++) {
      if (!Number.isFinite(d[i])) {
        throw new Error(`saveCheckpoint: ${what} tensor '${name}' has a non-finite value (${d[i]}) at flat index ${i}; refusing to save diverged weights`);
      }
    }
  }
  return read;
}

function checkState(state: unknown): CheckpointState {
  if (typeof state !== 'object' || state === null || Array.isArray(state)) throw new Error('saveCheckpoint: state must be an object with a step');
  const s = state as CheckpointState;
  if (!Number.isSafeInteger(s.step) || s.step < 0) throw new Error(`saveCheckpoint: state.step must be a non-negative integer, got ${JSON.stringify(s.step)}`);
  for (const k of RESERVED_STATE_KEYS) {
    if (k in s) throw new Error(`saveCheckpoint: state.${k} is reserved for the checkpoint format; rename that field`);
  }
  return s;
}

function toJson(what: string, value: unknown, indent?: number): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value, null, indent);
  } catch (e) {
    throw new Error(`saveCheckpoint: ${what} is not JSON-serialisable (${(e as Error).message})`);
  }
  if (text === undefined) throw new Error(`saveCheckpoint: ${what} must be a JSON value, got ${typeof value}`);
  return text;
}

/**
 * Saves a checkpoint folder atomically: everything is written and fsync'ed under a
 * temporary name beside `dir`, then renamed to `dir`. Refuses non-finite weights (in
 * params or optimizer) and an existing `dir` unless `overwrite`. Tensors are not disposed.
 *
 * @example
 * await saveCheckpoint('runs/a/final', { config, params, optimizer: adam.state(), state: { step: 5000, rng } });
 */
export async function saveCheckpoint(
  dir: string,
  data: CheckpointData,
  options: { overwrite?: boolean } = {},
): Promise<{ dir: string; sha256: Record<string, string> }> {
  if (typeof dir !== 'string' || dir === '') throw new Error('saveCheckpoint: dir must be a non-empty path string');
  if (typeof data !== 'object' || data === null) throw new Error('saveCheckpoint: data must be {config, params, optimizer?, state}');
  const state = checkState(data.state);
  const configText = toJson('config', data.config, 2);
  const stateBody = toJson('state', state);
  const params = await checkTensors('params', data.params);
  if (params.size === 0) throw new Error('saveCheckpoint: params is empty; nothing to save');
  const optimizer = data.optimizer === undefined ? undefined : await checkTensors('optimizer', data.optimizer);

  const target = path.resolve(dir);
  const backup = backupPath(target);
  const targetExists = await exists(target);
  if (targetExists && !(await isDirectory(target))) throw new Error(`saveCheckpoint: ${target} exists and is not a folder`);
  const backupExists = await isDirectory(backup);
  if ((targetExists || backupExists) && !options.overwrite) {
    throw new Error(`saveCheckpoint: ${target} already holds a checkpoint; pass { overwrite: true } to replace it`);
  }

  const parent = path.dirname(target);
  await mkdir(parent, { recursive: true });
  const tmp = path.join(parent, `.${path.basename(target)}.tmp-${uniqueSuffix()}`);
  const sha256: Record<string, string> = {};
  try {
    await mkdir(tmp);
    sha256[CONFIG_FILE] = await writeFileSynced(path.join(tmp, CONFIG_FILE), `${configText}\n`);
    sha256[MODEL_FILE] = (await writeSafetensors(path.join(tmp, MODEL_FILE), params, { format: FORMAT })).sha256;
    if (optimizer) sha256[OPTIMIZER_FILE] = (await writeSafetensors(path.join(tmp, OPTIMIZER_FILE), optimizer, { format: FORMAT })).sha256;
    const stateJson = { format: FORMAT, version: VERSION, ...JSON.parse(stateBody), sha256 };
    await writeFileSynced(path.join(tmp, STATE_FILE), `${JSON.stringify(stateJson, null, 2)}\n`);
    await fsyncDir(tmp);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    const full = (e as NodeJS.ErrnoException).code === 'ENOSPC' || /ENOSPC/.test((e as Error).message);
    throw new Error(`saveCheckpoint: cannot write ${target} (${(e as Error).message})${full ? '; the disk is full' : ''}`, { cause: e });
  }

  // POSIX cannot rename a folder over a non-empty one, so an overwrite parks the old
  // folder as `.X.previous` for the instant between the two renames; loadCheckpoint
  // reads it from there if a kill lands in that instant.
  if (targetExists) {
    if (backupExists) await rm(backup, { recursive: true, force: true });
    await rename(target, backup);
  }
  await rename(tmp, target);
  await fsyncDir(parent);
  if (targetExists || backupExists) await rm(backup, { recursive: true, force: true });
  return { dir: target, sha256 };
}

async function readJson(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(code === 'ENOENT' ? `checkpoint ${what} ${file} is missing (incomplete or not a checkpoint folder)` : `cannot read ${file}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`checkpoint ${what} ${file} is not valid JSON (${(e as Error).message})`);
  }
}

/**
 * Loads a checkpoint folder after checking every file against the SHA-256 recorded in
 * its state.json; a mismatch is an error naming the file. The caller owns (and disposes)
 * the returned tensors.
 *
 * @example
 * const ck = await loadCheckpoint('runs/a/final');
 * console.log(ck.state.step); tf.dispose(Object.values(ck.params));
 */
export async function loadCheckpoint(dir: string, options: WarningOptions = {}): Promise<LoadedCheckpoint> {
  if (typeof dir !== 'string' || dir === '') throw new Error('loadCheckpoint: dir must be a non-empty path string');
  const warn = options.onWarning ?? ((m: string) => console.warn(m));
  let from = path.resolve(dir);
  if (!(await isDirectory(from))) {
    const backup = backupPath(from);
    if (!(await isDirectory(backup))) throw new Error(`loadCheckpoint: ${from} is not a checkpoint folder (missing)`);
    warn(`checkpoint ${from} is missing but ${backup} holds it (a save was interrupted while replacing it); loading that`);
    from = backup;
  }

  const statePath = path.join(from, STATE_FILE);
  const raw = await readJson(statePath, 'state file');
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`checkpoint state file ${statePath} must hold a JSON object`);
  const { format, version, sha256, ...state } = raw as Record<string, unknown>;
  if (format !== FORMAT) throw new Error(`checkpoint state file ${statePath}: format is ${JSON.stringify(format)}, expected "${FORMAT}"`);
  if (version !== VERSION) throw new Error(`checkpoint state file ${statePath}: version ${JSON.stringify(version)} is not supported (this build reads ${VERSION})`);
  if (!Number.isSafeInteger(state.step) || (state.step as number) < 0) {
    throw new Error(`checkpoint state file ${statePath}: step must be a non-negative integer, got ${JSON.stringify(state.step)}`);
  }
  if (typeof sha256 !== 'object' || sha256 === null || Array.isArray(sha256)) throw new Error(`checkpoint state file ${statePath}: sha256 must be an object of file → hex digest`);
  const sums = sha256 as Record<string, unknown>;
  for (const name of Object.keys(sums)) {
    if (!CHECKSUMMED_FILES.includes(name)) throw new Error(`checkpoint state file ${statePath}: sha256 lists unexpected file ${JSON.stringify(name)}`);
  }
  for (const name of [CONFIG_FILE, MODEL_FILE]) {
    if (typeof sums[name] !== 'string') throw new Error(`checkpoint state file ${statePath}: no sha256 for ${name}`);
  }

  // Safetensors files are read by ranges, hashing on the way (a file may pass 2 GiB); the
  // small config is read whole.
  const configPath = path.join(from, CONFIG_FILE);
  let configBytes: Buffer;
  try {
    configBytes = await readFile(configPath);
  } catch (e) {
    throw new Error(`checkpoint file ${configPath} cannot be read (${(e as Error).message})`);
  }
  const configSum = createHash('sha256').update(configBytes).digest('hex');
  if (configSum !== sums[CONFIG_FILE]) throw new Error(`checkpoint file ${configPath} is corrupt: its SHA-256 is ${configSum}, state.json recorded ${String(sums[CONFIG_FILE])}`);
  let config: unknown;
  try {
    config = JSON.parse(configBytes.toString('utf8'));
  } catch (e) {
    throw new Error(`checkpoint config ${configPath} is not valid JSON (${(e as Error).message})`);
  }
  const modelFile = await readVerified(path.join(from, MODEL_FILE), String(sums[MODEL_FILE]));
  const optimizerFile = typeof sums[OPTIMIZER_FILE] === 'string' ? await readVerified(path.join(from, OPTIMIZER_FILE), sums[OPTIMIZER_FILE] as string) : undefined;
  // Saving refuses diverged weights; a file that holds them anyway (edited, or written by
  // another tool) would only fail later, far from its cause.
  for (const [file, parsed] of [[MODEL_FILE, modelFile], [OPTIMIZER_FILE, optimizerFile]] as const) {
    for (const [name, t] of parsed?.tensors ?? []) {
      const at = firstNonFinite(t);
      if (at >= 0) throw new Error(`checkpoint file ${path.join(from, file)}: tensor '${name}' has a non-finite value at flat index ${at}; these weights diverged and cannot be used`);
    }
  }
  const params = toTensorMap(modelFile);
  let optimizer: Record<string, tf.Tensor> | undefined;
  try {
    optimizer = optimizerFile ? toTensorMap(optimizerFile) : undefined;
  } catch (e) {
    tf.dispose(Object.values(params));
    throw e;
  }
  const result: LoadedCheckpoint = { dir: from, config, params, state: state as CheckpointState };
  if (optimizer) result.optimizer = optimizer;
  return result;
}

async function sha256OfFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** A checkpoint's safetensors file, read by ranges and checked against its recorded SHA-256. */
async function readVerified(file: string, want: string): Promise<SafetensorsFile> {
  let parsed: SafetensorsFile & { sha256?: string };
  try {
    parsed = await readSafetensors(file, { sha256: true });
  } catch (e) {
    // A file that does not parse is reported as corrupt when its bytes are not the ones saved.
    const got = await sha256OfFile(file).catch(() => null);
    if (got !== null && got !== want) throw new Error(`checkpoint file ${file} is corrupt: its SHA-256 is ${got}, state.json recorded ${want}`);
    throw new Error(`checkpoint file ${file} cannot be read (${(e as Error).message})`);
  }
  if (parsed.sha256 !== want) throw new Error(`checkpoint file ${file} is corrupt: its SHA-256 is ${parsed.sha256}, state.json recorded ${want}`);
  return parsed;
}

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value as object).sort().map((k) => [k, canonical((value as Record<string, unknown>)[k])]));
  }
  return value;
}

/**
 * The SHA-256 (hex) of a JSON config with its keys sorted, so the same settings always give
 * the same hash. Stored with each checkpoint; `--resume` compares it.
 *
 * @example configHash({ lr: 1e-3, seed: 1 }) === configHash({ seed: 1, lr: 1e-3 }) // true
 */
export function configHash(config: unknown): string {
  return createHash('sha256').update(JSON.stringify(canonical(config)) ?? 'undefined').digest('hex');
}

/**
 * The dotted keys whose values differ between two JSON configs (present in one only, or
 * different), sorted; arrays compare whole.
 *
 * @example configChanges({ train: { lr: 1 }, seed: 1 }, { train: { lr: 2 }, seed: 1 }) // ['train.lr']
 */
export function configChanges(saved: unknown, current: unknown, prefix = ''): string[] {
  const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (isObj(saved) && isObj(current)) {
    const keys = [...new Set([...Object.keys(saved), ...Object.keys(current)])].sort();
    return keys.flatMap((k) => configChanges(saved[k], current[k], prefix ? `${prefix}.${k}` : k));
  }
  return JSON.stringify(canonical(saved)) === JSON.stringify(canonical(current)) ? [] : [prefix || '(whole config)'];
}

/** The folder of step `step` in a run: `<runDir>/checkpoints/step-000100`. */
export function runCheckpointDir(runDir: string, step: number): string {
  if (typeof runDir !== 'string' || runDir === '') throw new Error('runCheckpointDir: runDir must be a non-empty path string');
  if (!Number.isSafeInteger(step) || step < 0) throw new Error(`runCheckpointDir: step must be a non-negative integer, got ${JSON.stringify(step)}`);
  return path.join(path.resolve(runDir), 'checkpoints', `step-${String(step).padStart(6, '0')}`);
}

interface RunEntry { step: number; dir: string; actual: string }

async function scanRun(runDir: string): Promise<{ root: string; entries: RunEntry[]; names: string[] }> {
  const root = path.join(path.resolve(runDir), 'checkpoints');
  let names: string[];
  try {
    names = await readdir(root);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { root, entries: [], names: [] };
    throw new Error(`cannot list checkpoints in ${root}: ${(e as Error).message}`);
  }
  const entries: RunEntry[] = [];
  const seen = new Set<number>();
  for (const name of names) {
    const m = STEP_RE.exec(name);
    if (m && (await isDirectory(path.join(root, name)))) {
      entries.push({ step: Number(m[1]), dir: path.join(root, name), actual: path.join(root, name) });
      seen.add(Number(m[1]));
    }
  }
  // A `.step-N.previous` without its `step-N` is the checkpoint caught mid-overwrite.
  for (const name of names) {
    const m = PREVIOUS_RE.exec(name);
    const s = m ? STEP_RE.exec(m[1]) : null;
    if (m && s && !seen.has(Number(s[1])) && (await isDirectory(path.join(root, name)))) {
      entries.push({ step: Number(s[1]), dir: path.join(root, m[1]), actual: path.join(root, name) });
    }
  }
  entries.sort((a, b) => a.step - b.step);
  return { root, entries, names };
}

/**
 * The checkpoints of a run, oldest first; temp, trash and backup folders are not listed
 * (except a backup standing in for its missing folder). An absent run gives [].
 *
 * @example
 * await listCheckpoints('runs/a'); // [{ step: 100, dir: '/…/runs/a/checkpoints/step-000100' }, …]
 */
export async function listCheckpoints(runDir: string): Promise<{ step: number; dir: string }[]> {
  if (typeof runDir !== 'string' || runDir === '') throw new Error('listCheckpoints: runDir must be a non-empty path string');
  return (await scanRun(runDir)).entries.map(({ step, dir }) => ({ step, dir }));
}

/**
 * Saves step `step` of a run to `<runDir>/checkpoints/step-NNNNNN/` (replacing one of the
 * same step), then, once it is complete, deletes all but the newest `keep` checkpoints
 * (never the one just saved). `data.state.step` must equal `step`.
 *
 * @example
 * await saveRunCheckpoint('runs/a', 300, { config, params, state: { step: 300 } }, { keep: 3 });
 */
export async function saveRunCheckpoint(
  runDir: string,
  step: number,
  data: CheckpointData,
  options: { keep?: number } = {},
): Promise<{ dir: string; pruned: string[] }> {
  const keep = options.keep ?? 3;
  if (!(Number.isSafeInteger(keep) && keep >= 1) && keep !== Infinity) throw new Error(`saveRunCheckpoint: keep must be a positive integer or Infinity, got ${keep}`);
  const dir = runCheckpointDir(runDir, step);
  if (data?.state?.step !== step) throw new Error(`saveRunCheckpoint: data.state.step (${JSON.stringify(data?.state?.step)}) must equal step (${step})`);
  await saveCheckpoint(dir, data, { overwrite: true });

  const { root, entries } = await scanRun(runDir);
  const old = entries.filter((e) => e.dir !== dir).sort((a, b) => b.step - a.step).slice(Math.max(0, keep - 1));
  const pruned: string[] = [];
  for (const e of old) {
    // Renamed first so a kill mid-delete leaves a hidden trash folder, not a half-deleted checkpoint.
    const trash = path.join(root, `.${path.basename(e.dir)}.trash-${uniqueSuffix()}`);
    await rename(e.actual, trash);
    await rm(trash, { recursive: true, force: true });
    pruned.push(e.dir);
  }
  return { dir, pruned };
}

/**
 * Loads the newest usable checkpoint of a run, or undefined when the run has none.
 * A newest checkpoint that fails to load (checksum, missing file, bad format) is reported
 * through `onWarning` and the previous one is tried. Leftovers of interrupted saves
 * (temp folders of processes no longer running, trash, redundant backups) are removed.
 * Throws, listing every failure, when checkpoints exist but none loads.
 *
 * @example
 * const ck = await loadLatestCheckpoint('runs/a', { onWarning: (m) => log.warn(m) });
 * const startStep = ck ? ck.state.step + 1 : 0;
 */
export async function loadLatestCheckpoint(
  runDir: string,
  options: WarningOptions = {},
): Promise<(LoadedCheckpoint & { step: number }) | undefined> {
  if (typeof runDir !== 'string' || runDir === '') throw new Error('loadLatestCheckpoint: runDir must be a non-empty path string');
  const warn = options.onWarning ?? ((m: string) => console.warn(m));
  const { root, entries, names } = await scanRun(runDir);

  const stepNames = new Set(entries.filter((e) => e.dir === e.actual).map((e) => path.basename(e.dir)));
  for (const name of names) {
    const tmp = TMP_RE.exec(name);
    const prev = PREVIOUS_RE.exec(name);
    let reason: string | undefined;
    // A live pid may be a save in progress in another process (or this one): leave it.
    if (tmp && !processAlive(Number(tmp[2]))) reason = 'an interrupted save';
    else if (TRASH_RE.test(name)) reason = 'an interrupted prune';
    else if (prev && stepNames.has(prev[1])) reason = `a backup superseded by ${prev[1]}`;
    if (reason) {
      await rm(path.join(root, name), { recursive: true, force: true });
      warn(`removed leftover folder ${path.join(root, name)} (${reason})`);
    }
  }

  const failures: string[] = [];
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i];
    try {
      const ck = await loadCheckpoint(e.dir, { onWarning: warn });
      if (ck.state.step !== e.step) {
        tf.dispose([...Object.values(ck.params), ...Object.values(ck.optimizer ?? {})]);
        throw new Error(`checkpoint ${e.dir} records step ${ck.state.step} in state.json, not ${e.step}`);
      }
      return { ...ck, step: e.step };
    } catch (err) {
      const msg = (err as Error).message;
      failures.push(msg);
      const next = entries[i - 1];
      warn(`checkpoint ${e.dir} is unusable (${msg}); ${next ? `falling back to ${next.dir}` : 'no older checkpoint left'}`);
    }
  }
  if (entries.length > 0) throw new Error(`no usable checkpoint in ${root}:\n  ${failures.join('\n  ')}`);
  return undefined;
}
