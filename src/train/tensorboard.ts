/**
 * TensorBoard event files: scalars and histograms that `tensorboard --logdir runs/` reads.
 *
 * Where the native engine is running (the `tensorflow` backend, @tensorflow/tfjs-node-gpu),
 * its own summary writer does the work (TensorFlow's C++ writer). Everywhere else (wasm, cpu,
 * webgpu: no npm package writes TensorBoard files without TensorFlow) this module encodes the
 * records itself: TFRecord framing (length, masked CRC-32C, payload, masked CRC-32C) around
 * `Event` protobufs holding a `Summary` of `simple_value`s or `HistogramProto`s, fields in
 * number order and zero values left out, as protobuf's own serialiser writes them
 * (test/tensorboard.test.ts compares the bytes with files written by Python's tensorboardX,
 * and reads ours back with TensorBoard's EventAccumulator: tools/tensorboard_check.py).
 *
 * @example
 * const w = await openEventWriter('runs/a/events');
 * w.scalar('train/loss', 0.42, 10);
 * w.histogram('weighting/sample_weight', weights, 10);
 * w.close();
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tf } from '../backend/tf.js';

export interface EventSink {
  /** Which writer: 'tfjs-node' (the native engine's) or 'vlmargin' (this module's encoder). */
  readonly writer: 'tfjs-node' | 'vlmargin';
  scalar(tag: string, value: number, step: number): void;
  histogram(tag: string, values: ArrayLike<number>, step: number): void;
  flush(): void;
  close(): void;
}

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32C (Castagnoli), as TFRecord frames use it. */
export function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC32C_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function maskedCrc(bytes: Uint8Array): number {
  const c = crc32c(bytes);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** A minimal protobuf writer: the few wire types an Event needs. */
class Pb {
  private readonly parts: Uint8Array[] = [];

  private varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    const out: number[] = [];
    while (x >= 0x80n) { out.push(Number(x & 0x7fn) | 0x80); x >>= 7n; }
    out.push(Number(x));
    this.parts.push(Uint8Array.from(out));
  }

  private key(field: number, wire: number): void { this.varint((field << 3) | wire); }

  double(field: number, v: number): this {
    if (v === 0) return this;
    this.key(field, 1);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    this.parts.push(b);
    return this;
  }

  float(field: number, v: number): this {
    if (v === 0) return this;
    this.key(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.parts.push(b);
    return this;
  }

  int64(field: number, v: number): this {
    if (v === 0) return this;
    this.key(field, 0);
    this.varint(v);
    return this;
  }

  bytes(field: number, b: Uint8Array): this {
    this.key(field, 2);
    this.varint(b.length);
    this.parts.push(b);
    return this;
  }

  string(field: number, s: string): this { return this.bytes(field, new TextEncoder().encode(s)); }

  packedDoubles(field: number, xs: number[]): this {
    if (!xs.length) return this;
    const b = new Uint8Array(8 * xs.length);
    const dv = new DataView(b.buffer);
    xs.forEach((x, i) => dv.setFloat64(8 * i, x, true));
    return this.bytes(field, b);
  }

  finish(): Uint8Array {
    return Buffer.concat(this.parts);
  }
}

/** TensorBoard's default histogram bucket limits (…, -1.1^k, …, 0, …, 1.1^k, …, ±1e20). */
const BUCKET_LIMITS = (() => {
  const pos: number[] = [];
  for (let v = 1e-12; v < 1e20; v *= 1.1) pos.push(v);
  return [...pos.map((v) => -v).reverse(), 0, ...pos, 1e20].map((v) => +v.toPrecision(15));
})();

/** One `HistogramProto` of `values` (TensorBoard's bucketing; empty buckets at the ends cut). */
export function histogramProto(values: ArrayLike<number>): Uint8Array {
  const xs = Array.from(values).filter(Number.isFinite);
  const counts = new Array<number>(BUCKET_LIMITS.length).fill(0);
  let min = Infinity; let max = -Infinity; let sum = 0; let sumSq = 0;
  for (const x of xs) {
    min = Math.min(min, x); max = Math.max(max, x); sum += x; sumSq += x * x;
    let lo = 0; let hi = BUCKET_LIMITS.length - 1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (BUCKET_LIMITS[mid] > x) hi = mid; else lo = mid + 1; }
    counts[lo] += 1;
  }
  let first = counts.findIndex((c) => c > 0);
  let last = counts.length - 1 - [...counts].reverse().findIndex((c) => c > 0);
  if (first < 0) { first = 0; last = -1; }
  const start = Math.max(0, first - 1);
  return new Pb()
    .double(1, xs.length ? min : 0).double(2, xs.length ? max : 0).double(3, xs.length).double(4, sum).double(5, sumSq)
    .packedDoubles(6, BUCKET_LIMITS.slice(start, last + 1)).packedDoubles(7, counts.slice(start, last + 1))
    .finish();
}

/** One serialised `Event`: wall time, step, and a summary value or the file version. */
export function eventBytes(e: { wallTime: number; step: number; fileVersion?: string; tag?: string; scalar?: number; histogram?: Uint8Array }): Uint8Array {
  const pb = new Pb().double(1, e.wallTime).int64(2, e.step);
  if (e.fileVersion !== undefined) return pb.string(3, e.fileVersion).finish();
  const value = new Pb().string(1, e.tag ?? '');
  if (e.scalar !== undefined) value.float(2, e.scalar);
  if (e.histogram) value.bytes(5, e.histogram);
  return pb.bytes(5, new Pb().bytes(1, value.finish()).finish()).finish();
}

/** One TFRecord frame around `data`. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const head = new Uint8Array(12);
  const dv = new DataView(head.buffer);
  dv.setBigUint64(0, BigInt(data.length), true);
  dv.setUint32(8, maskedCrc(head.subarray(0, 8)), true);
  const tail = new Uint8Array(4);
  new DataView(tail.buffer).setUint32(0, maskedCrc(data), true);
  return Buffer.concat([head, data, tail]);
}

/** This module's writer: one `events.out.tfevents.<time>.<host>.<pid>` file per writer. */
class OwnEventWriter implements EventSink {
  readonly writer = 'vlmargin' as const;
  readonly file: string;
  private fd: number | null;

  constructor(dir: string, private readonly now: () => number = () => Date.now() / 1000) {
    fs.mkdirSync(dir, { recursive: true });
    const t = this.now();
    this.file = path.join(dir, `events.out.tfevents.${Math.floor(t)}.${os.hostname()}.${process.pid}.vlmargin`);
    this.fd = fs.openSync(this.file, 'a');
    this.write(eventBytes({ wallTime: t, step: 0, fileVersion: 'brain.Event:2' }));
  }

  private write(event: Uint8Array): void {
    if (this.fd === null) throw new Error(`EventWriter: ${this.file} is closed`);
    fs.writeSync(this.fd, tfRecord(event));
  }

  scalar(tag: string, value: number, step: number): void {
    if (!Number.isFinite(value)) return;
    this.write(eventBytes({ wallTime: this.now(), step, tag, scalar: value }));
  }

  histogram(tag: string, values: ArrayLike<number>, step: number): void {
    this.write(eventBytes({ wallTime: this.now(), step, tag, histogram: histogramProto(values) }));
  }

  flush(): void { if (this.fd !== null) fs.fsyncSync(this.fd); }

  close(): void {
    if (this.fd !== null) { fs.closeSync(this.fd); this.fd = null; }
  }
}

interface NodeSummaryWriter {
  scalar(name: string, value: number, step: number): void;
  histogram(name: string, data: tf.Tensor, step: number): void;
  flush(): void;
}

/**
 * An event writer for `dir`: the native engine's summary writer when the `tensorflow` backend
 * is running, else this module's encoder.
 */
export async function openEventWriter(dir: string): Promise<EventSink> {
  if (tf.getBackend() === 'tensorflow') {
    try {
      const mod = (await import('@tensorflow/tfjs-node-gpu' as string)) as { node?: { summaryFileWriter(dir: string): NodeSummaryWriter } };
      if (mod.node?.summaryFileWriter) {
        const w = mod.node.summaryFileWriter(dir);
        return {
          writer: 'tfjs-node',
          scalar: (tag, value, step) => { if (Number.isFinite(value)) w.scalar(tag, value, step); },
          histogram: (tag, values, step) => { const t = tf.tensor1d(Float32Array.from(values)); try { w.histogram(tag, t, step); } finally { t.dispose(); } },
          flush: () => w.flush(),
          close: () => w.flush(),
        };
      }
    } catch { /* the encoder below serves */ }
  }
  return new OwnEventWriter(dir);
}

/** This module's encoder with a given clock (tests compare bytes with another writer's). */
export function openOwnEventWriter(dir: string, now?: () => number): EventSink & { file: string } {
  return new OwnEventWriter(dir, now);
}
