/**
 * Training metrics: one JSON line per logged step, appended and flushed as it is written,
 * and a progress bar (ETA, samples/s) on a terminal.
 *
 * Each line: { step, loss, lr, logitScale?, samplesPerSec?, dataWaitMs?, ...extra,
 * memory: { numTensors, numBytes, rssMB }, time }. JSON has no NaN/Infinity, so non-finite
 * numbers are written as null.
 */
import fs from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { tf } from '../backend/tf.js';

/** What the trainer reports for one step; any further fields are written as given. */
export interface MetricsRecord {
  /** Optimizer steps completed (the optimizer's stepCount after this update). */
  step: number;
  loss: number;
  lr: number;
  /** The learnable log scale (s = e^logitScale), not s itself. */
  logitScale?: number;
  samplesPerSec?: number;
  /** Time this step waited for its batch. */
  dataWaitMs?: number;
  [extra: string]: unknown;
}

/** A writable text stream; `isTTY`/`columns` as on process.stderr. */
export interface LogStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface MetricsLoggerOptions {
  /** No progress bar and no periodic status lines (log() messages still print). Default false. */
  quiet?: boolean;
  /** Where the bar, status lines and messages go. Default process.stderr. */
  stream?: LogStream;
  /** Off a terminal: print a one-line status every this many steps. Default 50. */
  printEvery?: number;
  /**
   * A run resumed from the checkpoint of this step: rows of later steps (written after that
   * checkpoint by the interrupted run) are dropped, and a line `{ event: 'resume', step }` marks
   * where the resumed run's rows begin.
   */
  resumeAt?: number;
  /**
   * TensorBoard scalars: every finite number of a record goes to `train/<field>` (the fields
   * of records with `eval: 1` other than loss and lr to `eval/<field>`) at its step.
   */
  events?: { scalar(tag: string, value: number, step: number): void };
}

const RESERVED = ['memory', 'time'];

/**
 * Appends metrics to a JSONL file and shows progress.
 *
 * @example
 * const logger = new MetricsLogger('runs/a/metrics.jsonl');
 * logger.start(totalSteps, resumedStep);
 * logger.write({ step, loss, lr, logitScale, samplesPerSec, dataWaitMs });
 * logger.log('saved checkpoint step-1000');
 * logger.close();
 */
export class MetricsLogger {
  readonly path: string;
  private fd: number | null;
  private readonly quiet: boolean;
  private readonly stream: LogStream;
  private readonly printEvery: number;
  private readonly events?: MetricsLoggerOptions['events'];
  private multiBar: cliProgress.MultiBar | null = null;
  private bar: cliProgress.SingleBar | null = null;
  private totalSteps: number | null = null;
  private startStep = 0;
  private startTime = 0;
  /** Rows dropped because they came after the checkpoint a resumed run starts from. */
  readonly droppedOnResume: number = 0;

  constructor(file: string, opts: MetricsLoggerOptions = {}) {
    if (typeof file !== 'string' || file.length === 0) throw new Error(`MetricsLogger: 'path' must be a non-empty file path`);
    const { quiet = false, stream = process.stderr, printEvery = 50 } = opts;
    if (!stream || typeof stream.write !== 'function') throw new Error(`MetricsLogger: 'stream' must have a write(string) method`);
    if (!Number.isInteger(printEvery) || printEvery < 1) throw new Error(`MetricsLogger: 'printEvery' must be an integer ≥ 1, got ${printEvery}`);
    this.path = file;
    this.quiet = quiet;
    this.stream = stream;
    this.printEvery = printEvery;
    if (opts.resumeAt !== undefined) {
      if (!Number.isInteger(opts.resumeAt) || opts.resumeAt < 0) throw new Error(`MetricsLogger: 'resumeAt' must be an integer ≥ 0, got ${opts.resumeAt}`);
      this.droppedOnResume = dropRowsAfter(file, opts.resumeAt);
    }
    this.events = opts.events;
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      this.fd = fs.openSync(file, 'a');
      // A run killed mid-write leaves a partial last line; start ours on a fresh line so
      // every new record stays parseable (readers skip the one broken line).
      const size = fs.fstatSync(this.fd).size;
      if (size > 0 && lastByte(file, size) !== 0x0a) fs.writeSync(this.fd, '\n');
      if (opts.resumeAt !== undefined) {
        fs.writeSync(this.fd, `${JSON.stringify({ event: 'resume', step: opts.resumeAt, droppedRows: this.droppedOnResume, time: new Date().toISOString() })}\n`);
      }
    } catch (err) {
      throw new Error(`MetricsLogger: cannot open '${file}' for appending: ${(err as Error).message}`);
    }
  }

  /** Starts the progress display for a run of `totalSteps`, resumed at `startStep`. */
  start(totalSteps: number, startStep = 0): void {
    if (!Number.isInteger(totalSteps) || totalSteps < 1) throw new Error(`MetricsLogger.start: 'totalSteps' must be an integer ≥ 1, got ${totalSteps}`);
    if (!Number.isInteger(startStep) || startStep < 0 || startStep > totalSteps) {
      throw new Error(`MetricsLogger.start: 'startStep' must be an integer in [0, totalSteps=${totalSteps}], got ${startStep}`);
    }
    this.stopBar();
    this.totalSteps = totalSteps;
    this.startStep = startStep;
    this.startTime = Date.now();
    if (this.quiet || this.stream.isTTY !== true) return;
    // MultiBar rather than SingleBar: its log() prints above the bar, and it does not restore
    // a saved cursor position on stop (which would jump back over lines logged meanwhile).
    const { format, barsize } = progressFormat(this.stream.columns ?? 80, totalSteps);
    this.multiBar = new cliProgress.MultiBar({
      stream: this.stream as NodeJS.WritableStream,
      format,
      barsize,
      etaBuffer: 50,
      forceRedraw: true,
      hideCursor: false,
      linewrap: true,
    });
    this.bar = this.multiBar.create(totalSteps, startStep, { sps: '-', loss: '-', lr: '-' });
  }

  /** Appends one JSON line (flushed to the file before returning) and updates the display. */
  write(record: MetricsRecord): void {
    if (this.fd === null) throw new Error(`MetricsLogger.write: '${this.path}' is closed`);
    checkRecord(record);
    const mem = tf.memory();
    const { step, loss, lr, logitScale, samplesPerSec, dataWaitMs, ...extra } = record;
    const line = {
      step, loss, lr, logitScale, samplesPerSec, dataWaitMs,
      ...extra,
      memory: {
        numTensors: mem.numTensors,
        numBytes: mem.numBytes,
        rssMB: Math.round(process.memoryUsage().rss / 2 ** 20 * 10) / 10,
      },
      time: new Date().toISOString(),
    };
    try {
      fs.writeSync(this.fd, JSON.stringify(line) + '\n');
    } catch (err) {
      const full = (err as NodeJS.ErrnoException).code === 'ENOSPC';
      throw new Error(`MetricsLogger: cannot append to '${this.path}': ${(err as Error).message}${full ? ' (the disk is full)' : ''}`, { cause: err });
    }
    if (this.events) {
      const evalRecord = record.eval === 1;
      const skip = evalRecord ? ['step', 'eval', 'loss', 'lr'] : ['step'];
      for (const [k, v] of Object.entries(record)) {
        if (!skip.includes(k) && typeof v === 'number' && Number.isFinite(v)) this.events.scalar(`${evalRecord ? 'eval' : 'train'}/${k}`, v, step);
      }
    }
    this.show(record);
  }

  /** Prints a message on its own line, above the bar when one is shown. */
  log(msg: string): void {
    const text = String(msg);
    if (this.multiBar) {
      this.multiBar.log(text + '\n');
      this.multiBar.update(); // flush now rather than at the next redraw tick
    } else {
      this.stream.write(text + '\n');
    }
  }

  /** Stops the bar and closes the file; safe to call twice. */
  close(): void {
    this.stopBar();
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  private show(r: MetricsRecord): void {
    if (this.quiet) return;
    // An evaluation row says what was scored, on its own line (above the bar on a terminal).
    if (r.eval) {
      const figures = Object.entries(r)
        .filter(([k, v]) => !['step', 'loss', 'lr', 'eval', 'logitScale', 'samplesPerSec', 'dataWaitMs'].includes(k) && typeof v === 'number' && Number.isFinite(v))
        .map(([k, v]) => `${k} ${(v as number).toFixed(2)}`);
      if (figures.length) this.log(`step ${r.step}: evaluation | ${figures.join(' | ')}`);
      return;
    }
    const sps = r.samplesPerSec !== undefined && Number.isFinite(r.samplesPerSec) ? r.samplesPerSec.toFixed(1) : '-';
    const loss = Number.isFinite(r.loss) ? r.loss.toFixed(4) : String(r.loss);
    const lr = r.lr.toExponential(2);
    if (this.bar) {
      this.bar.update(r.step, { sps, loss, lr });
      return;
    }
    const done = r.step - this.startStep;
    const last = this.totalSteps !== null && r.step >= this.totalSteps;
    if (done % this.printEvery !== 0 && !last) return;
    let head = `step ${r.step}`;
    let eta = '';
    if (this.totalSteps !== null) {
      head += `/${this.totalSteps} (${(100 * r.step / this.totalSteps).toFixed(1)}%)`;
      if (done > 0) eta = ` | ETA ${formatDuration((Date.now() - this.startTime) / done * Math.max(0, this.totalSteps - r.step))}`;
    }
    this.stream.write(`${head} | loss ${loss} | lr ${lr} | ${sps} samples/s${eta}\n`);
  }

  private stopBar(): void {
    if (this.multiBar) this.multiBar.stop();
    this.multiBar = null;
    this.bar = null;
  }
}

/**
 * Rewrites a metrics file without the rows of steps after `step` (atomically: a temporary
 * file renamed over it); returns how many were dropped. A missing file drops nothing.
 */
function dropRowsAfter(file: string, step: number): number {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw new Error(`MetricsLogger: cannot read '${file}' to resume it: ${(err as Error).message}`);
  }
  const kept: string[] = [];
  let dropped = 0;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let row: { step?: unknown } | null = null;
    try { row = JSON.parse(line) as { step?: unknown }; } catch { /* a partial line of a killed run */ }
    if (row && typeof row.step === 'number' && row.step > step) { dropped++; continue; }
    if (row) kept.push(line);
  }
  if (dropped === 0) return 0;
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    fs.writeFileSync(tmp, kept.map((l) => `${l}\n`).join(''));
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw new Error(`MetricsLogger: cannot rewrite '${file}' to resume it: ${(err as Error).message}`);
  }
  return dropped;
}

/** The widest each field of the bar can print (ETA up to 99h, losses up to 9999.9999). */
const FIELD_WIDTH = { percentage: 3, eta_formatted: 9, sps: 7, loss: 9, lr: 9 };

/**
 * The bar's format for a terminal `columns` wide: fields are dropped (samples/s, then lr, then
 * the labels) and the bar shortened until the widest possible line fits in columns − 1, so the
 * terminal never cuts a number or wraps the line.
 *
 * @example progressFormat(80, 1000) // { format: ' {bar} {percentage}% | step {value}/{total} | ETA …', barsize: … }
 */
export function progressFormat(columns: number, totalSteps: number): { format: string; barsize: number } {
  const digits = String(totalSteps).length;
  const widths: Record<string, number> = { ...FIELD_WIDTH, value: digits, total: digits };
  const widest = (format: string) => format.replace(/\{(\w+)\}/g, (_m, k: string) => (k === 'bar' ? '' : ' '.repeat(widths[k] ?? 0))).length;
  const candidates = [
    ' {bar} {percentage}% | step {value}/{total} | ETA {eta_formatted} | {sps} samples/s | loss {loss} | lr {lr}',
    ' {bar} {percentage}% | step {value}/{total} | ETA {eta_formatted} | loss {loss} | lr {lr}',
    ' {bar} {percentage}% | step {value}/{total} | ETA {eta_formatted} | loss {loss}',
    ' {bar} {percentage}% {value}/{total} ETA {eta_formatted} loss {loss}',
    ' {percentage}% {value}/{total} loss {loss}',
  ];
  const room = Math.max(20, columns) - 1;
  for (const format of candidates) {
    const rest = widest(format);
    const barsize = format.includes('{bar}') ? Math.min(24, room - rest) : 0;
    if (rest + barsize <= room && (barsize >= 8 || !format.includes('{bar}'))) return { format, barsize: Math.max(barsize, 1) };
  }
  return { format: candidates[candidates.length - 1], barsize: 1 };
}

/**
 * A progress message that replaces itself on a terminal (`\r`, cut to the width) and is one
 * whole line per update elsewhere (a log file never gets lines run together).
 */
export function writeProgress(stream: LogStream, text: string, final = false): void {
  if (stream.isTTY === true) {
    const width = Math.max(20, stream.columns ?? 80) - 1;
    stream.write(`\r${text.length > width ? text.slice(0, width) : text.padEnd(width)}${final ? '\n' : ''}`);
  } else {
    stream.write(`${text}\n`);
  }
}

function lastByte(file: string, size: number): number {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(1);
    fs.readSync(fd, buf, 0, 1, size - 1);
    return buf[0];
  } finally {
    fs.closeSync(fd);
  }
}

function checkRecord(r: unknown): asserts r is MetricsRecord {
  if (r === null || typeof r !== 'object') throw new Error('MetricsLogger.write: record must be an object { step, loss, lr, ... }');
  const rec = r as Record<string, unknown>;
  if (!Number.isInteger(rec.step) || (rec.step as number) < 0) throw new Error(`MetricsLogger.write: 'step' must be an integer ≥ 0, got ${String(rec.step)}`);
  for (const key of ['loss', 'lr']) {
    if (typeof rec[key] !== 'number') throw new Error(`MetricsLogger.write: '${key}' must be a number, got ${typeof rec[key]}`);
  }
  for (const key of ['logitScale', 'samplesPerSec', 'dataWaitMs']) {
    if (rec[key] !== undefined && typeof rec[key] !== 'number') throw new Error(`MetricsLogger.write: '${key}' must be a number when given, got ${typeof rec[key]}`);
  }
  for (const key of RESERVED) {
    if (key in rec) throw new Error(`MetricsLogger.write: '${key}' is filled in by the logger; rename that field`);
  }
}

/** 3725000 ms → "1h02m05s". */
function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m${String(sec).padStart(2, '0')}s`;
  if (m > 0) return `${m}m${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}
