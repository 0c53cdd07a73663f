/**
 * Reading and writing the safetensors format, with no library.
 *
 * Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {string: string}}`
 * (padded with spaces so the data starts on an 8-byte boundary), then the raw
 * little-endian tensor bytes; offsets count from the start of the data section.
 *
 * The reader is strict in the way the reference implementation is: the data section
 * must be covered exactly (no overlaps, gaps or trailing bytes), because a file that
 * breaks these rules is almost always truncated or written by a buggy tool, and
 * loading it silently would hand garbage weights to training.
 */
import { createHash, randomBytes } from 'node:crypto';
import { endianness } from 'node:os';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { tf } from '../backend/tf.js';

/** The dtypes of the safetensors format that this module reads and writes. */
export const SAFETENSORS_DTYPES = ['BOOL', 'U8', 'I8', 'U16', 'I16', 'F16', 'BF16', 'U32', 'I32', 'F32', 'U64', 'I64', 'F64'] as const;
export type SafetensorsDtype = (typeof SAFETENSORS_DTYPES)[number];

/**
 * The typed array holding a tensor's elements. F16 and BF16 stay raw bit patterns in a
 * Uint16Array (see `f16ToF32`, `bf16ToF32`); BOOL is a Uint8Array of 0/1.
 */
export type SafetensorsData =
  | Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array
  | Float32Array | Float64Array | BigInt64Array | BigUint64Array;

export interface SafetensorsTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: SafetensorsData;
}

export interface SafetensorsFile {
  /** Tensors in the order of their data in the file. */
  tensors: Map<string, SafetensorsTensor>;
  /** The `__metadata__` map; empty when the file has none. */
  metadata: Record<string, string>;
}

/** What `writeSafetensors` accepts per name: a tensor read from a file, or a tf tensor. */
export type SafetensorsInput = SafetensorsTensor | tf.Tensor;

type ArrayCtor = { new (length: number): SafetensorsData; readonly name: string };

const DTYPE_INFO: Record<SafetensorsDtype, { bytes: number; ctor: ArrayCtor }> = {
  BOOL: { bytes: 1, ctor: Uint8Array },
  U8: { bytes: 1, ctor: Uint8Array },
  I8: { bytes: 1, ctor: Int8Array },
  U16: { bytes: 2, ctor: Uint16Array },
  I16: { bytes: 2, ctor: Int16Array },
  F16: { bytes: 2, ctor: Uint16Array },
  BF16: { bytes: 2, ctor: Uint16Array },
  U32: { bytes: 4, ctor: Uint32Array },
  I32: { bytes: 4, ctor: Int32Array },
  F32: { bytes: 4, ctor: Float32Array },
  U64: { bytes: 8, ctor: BigUint64Array },
  I64: { bytes: 8, ctor: BigInt64Array },
  F64: { bytes: 8, ctor: Float64Array },
};

const METADATA_KEY = '__metadata__';

// Typed arrays use the host byte order; the format is little-endian.
function assertLittleEndianHost(): void {
  if (endianness() !== 'LE') throw new Error('safetensors: big-endian hosts are not supported (the format is little-endian)');
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describeJson(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return `a ${typeof v}`;
}

function elementCount(shape: readonly number[], fail: (msg: string) => never): number {
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (!Number.isSafeInteger(n)) fail(`shape [${shape.join(',')}] has too many elements`);
  }
  return n;
}

function isDimList(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((d) => Number.isSafeInteger(d) && d >= 0);
}

/**
 * Parses safetensors bytes already in memory. `source` names the file in errors.
 * The returned arrays are copies, so `bytes` may be reused afterwards.
 *
 * @example
 * const { tensors } = parseSafetensors(await readFile('model.safetensors'), 'model.safetensors');
 * tensors.get('proj.weight'); // { dtype: 'F32', shape: [512, 256], data: Float32Array(131072) }
 */
export function parseSafetensors(bytes: Uint8Array, source = '<buffer>'): SafetensorsFile {
  if (!(bytes instanceof Uint8Array)) throw new Error(`parseSafetensors: bytes must be a Uint8Array or Buffer (source ${source})`);
  assertLittleEndianHost();
  const fail = failFor(source);
  if (bytes.length < 8) fail(`truncated: ${bytes.length} bytes, shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = checkHeaderLength(view.getBigUint64(0, true), bytes.length, fail);
  const dataStart = 8 + n;
  const { entries, metadata } = parseHeader(bytes.subarray(8, 8 + n), bytes.length - dataStart, fail);
  const tensors = new Map<string, SafetensorsTensor>();
  for (const e of entries) {
    const { bytes: size, ctor } = DTYPE_INFO[e.dtype];
    const data = new ctor((e.end - e.begin) / size);
    new Uint8Array(data.buffer).set(bytes.subarray(dataStart + e.begin, dataStart + e.end));
    tensors.set(e.name, { dtype: e.dtype, shape: [...e.shape], data });
  }
  return { tensors, metadata };
}

function failFor(source: string): (msg: string) => never {
  return (msg: string): never => {
    throw new Error(`safetensors file ${source}: ${msg}`);
  };
}

/** Headers above this are refused, as by the reference implementation (a corrupt length would ask for gigabytes). */
const MAX_HEADER_BYTES = 100_000_000;

function checkHeaderLength(headerLen: bigint, fileBytes: number, fail: (msg: string) => never): number {
  if (headerLen > BigInt(fileBytes - 8)) {
    fail(`header length ${headerLen} is larger than the file (${fileBytes} bytes); truncated, or not a safetensors file`);
  }
  if (headerLen > BigInt(MAX_HEADER_BYTES)) fail(`header length ${headerLen} is over ${MAX_HEADER_BYTES} bytes; not a safetensors file`);
  return Number(headerLen);
}

interface HeaderEntry { name: string; dtype: SafetensorsDtype; shape: number[]; begin: number; end: number }

/** The header's tensors in data order, checked to cover the `dataLen` bytes of the data section exactly. */
function parseHeader(headerBytes: Uint8Array, dataLen: number, fail: (msg: string) => never): { entries: HeaderEntry[]; metadata: Record<string, string> } {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    return fail('header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(header)) return fail(`header must be a JSON object, got ${describeJson(header)}`);

  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      if (!isPlainObject(info)) fail(`__metadata__ must be an object of strings, got ${describeJson(info)}`);
      for (const [k, v] of Object.entries(info as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__ value for '${k}' must be a string, got ${describeJson(v)}`);
        metadata[k] = v as string;
      }
      continue;
    }
    if (!isPlainObject(info)) fail(`tensor '${name}' must be an object {dtype, shape, data_offsets}, got ${describeJson(info)}`);
    const { dtype, shape, data_offsets: offsets } = info as Record<string, unknown>;
    if (typeof dtype !== 'string' || !(SAFETENSORS_DTYPES as readonly string[]).includes(dtype)) {
      fail(`tensor '${name}' has unknown dtype ${JSON.stringify(dtype)} (known: ${SAFETENSORS_DTYPES.join(', ')})`);
    }
    if (!isDimList(shape)) fail(`tensor '${name}' shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    if (!isDimList(offsets) || offsets.length !== 2 || offsets[0] > offsets[1]) {
      fail(`tensor '${name}' data_offsets must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as number[];
    if (end > dataLen) {
      fail(`tensor '${name}' data_offsets [${begin},${end}] out of range: the data section has only ${dataLen} bytes (file truncated?)`);
    }
    const dt = dtype as SafetensorsDtype;
    const want = elementCount(shape as number[], (m) => fail(`tensor '${name}' ${m}`)) * DTYPE_INFO[dt].bytes;
    if (end - begin !== want) {
      fail(`tensor '${name}' is ${dt} [${(shape as number[]).join(',')}] = ${want} bytes, but data_offsets [${begin},${end}] span ${end - begin}`);
    }
    entries.push({ name, dtype: dt, shape: shape as number[], begin, end });
  }

  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let prev: HeaderEntry | undefined;
  for (const e of entries) {
    if (e.begin < covered) fail(`tensors '${prev!.name}' [${prev!.begin},${prev!.end}] and '${e.name}' [${e.begin},${e.end}] overlap`);
    if (e.begin > covered) fail(`${e.begin - covered} unused bytes before tensor '${e.name}' at data offset ${covered} (data must be contiguous)`);
    covered = e.end;
    prev = e;
  }
  if (covered !== dataLen) fail(`${dataLen - covered} trailing bytes after the last tensor (data section is ${dataLen} bytes, tensors cover ${covered})`);
  return { entries, metadata };
}

/** Largest single read: one `read` call moves at most 2 GiB − 1 bytes. */
const READ_CHUNK = 1 << 30;

async function readRange(fh: FileHandle, into: Uint8Array, position: number, chunkBytes: number, fail: (msg: string) => never): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const len = Math.min(chunkBytes, into.length - done);
    const { bytesRead } = await fh.read(into, done, len, position + done);
    if (bytesRead === 0) fail(`file ended at byte ${position + done} while reading (truncated while being read?)`);
    done += bytesRead;
  }
}

/**
 * Reads a safetensors file by ranges (header, then each tensor straight into its array), so
 * a file of any size loads, also past the 2 GiB that one `readFile` can return. Every
 * malformed file is refused with an error naming it. With `sha256`, the file's SHA-256 is
 * computed on the way (the tensors cover the file exactly, so every byte passes once).
 *
 * @example
 * const { tensors, metadata } = await readSafetensors('runs/a/model.safetensors');
 */
export async function readSafetensors(file: string, opts: { sha256?: boolean; chunkBytes?: number } = {}): Promise<SafetensorsFile & { sha256?: string }> {
  if (typeof file !== 'string' || file === '') throw new Error('readSafetensors: file must be a non-empty path string');
  assertLittleEndianHost();
  const chunkBytes = opts.chunkBytes ?? READ_CHUNK;
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1 || chunkBytes > READ_CHUNK) throw new Error(`readSafetensors: chunkBytes must be an integer in [1, ${READ_CHUNK}], got ${opts.chunkBytes}`);
  const fail = failFor(file);
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    throw new Error(`safetensors file ${file}: cannot read (${(e as Error).message})`);
  }
  try {
    const size = (await fh.stat()).size;
    if (size < 8) fail(`truncated: ${size} bytes, shorter than the 8-byte header length`);
    const hash = opts.sha256 ? createHash('sha256') : undefined;
    const prefix = new Uint8Array(8);
    await readRange(fh, prefix, 0, chunkBytes, fail);
    hash?.update(prefix);
    const n = checkHeaderLength(new DataView(prefix.buffer).getBigUint64(0, true), size, fail);
    const headerBytes = new Uint8Array(n);
    await readRange(fh, headerBytes, 8, chunkBytes, fail);
    hash?.update(headerBytes);
    const dataStart = 8 + n;
    const { entries, metadata } = parseHeader(headerBytes, size - dataStart, fail);
    const tensors = new Map<string, SafetensorsTensor>();
    for (const e of entries) {
      const { bytes: width, ctor } = DTYPE_INFO[e.dtype];
      const data = new ctor((e.end - e.begin) / width);
      const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      await readRange(fh, view, dataStart + e.begin, chunkBytes, fail);
      hash?.update(view);
      tensors.set(e.name, { dtype: e.dtype, shape: [...e.shape], data });
    }
    return { tensors, metadata, ...(hash ? { sha256: hash.digest('hex') } : {}) };
  } finally {
    await fh.close();
  }
}

/**
 * The flat index of the first NaN or ±Infinity in a floating-point tensor, or -1 (also for
 * integer and bool tensors, which cannot hold one).
 *
 * @example firstNonFinite({ dtype: 'F32', shape: [2], data: new Float32Array([1, NaN]) }) // 1
 */
export function firstNonFinite(t: SafetensorsTensor): number {
  if (t.dtype === 'F32' || t.dtype === 'F64') {
    const d = t.data as Float32Array | Float64Array;
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i])) return i;
    return -1;
  }
  if (t.dtype === 'F16' || t.dtype === 'BF16') {
    // All exponent bits set: ±Inf or NaN.
    const mask = t.dtype === 'F16' ? 0x7c00 : 0x7f80;
    const d = t.data as Uint16Array;
    for (let i = 0; i < d.length; i++) if ((d[i] & mask) === mask) return i;
  }
  return -1;
}

const TF_TO_SAFETENSORS: Partial<Record<tf.DataType, SafetensorsDtype>> = { float32: 'F32', int32: 'I32', bool: 'BOOL' };

interface PreparedTensor { name: string; dtype: SafetensorsDtype; shape: number[]; bytes: () => Uint8Array | Promise<Uint8Array> }

function prepare(name: string, value: SafetensorsInput, file: string): PreparedTensor {
  const fail = (msg: string): never => {
    throw new Error(`writeSafetensors ${file}: tensor '${name}' ${msg}`);
  };
  if (value instanceof tf.Tensor) {
    if (value.isDisposed) fail('is a disposed tf tensor');
    const dtype = TF_TO_SAFETENSORS[value.dtype] ?? fail(`has tf dtype ${value.dtype}; only float32, int32 and bool can be written`);
    const t = value;
    // Read when written (one tensor's bytes in memory at a time), asynchronously (webgpu in Node).
    return { name, dtype, shape: [...t.shape], bytes: async () => asBytes((await t.data()) as SafetensorsData) };
  }
  if (!isPlainObject(value)) fail('must be a tf.Tensor or {dtype, shape, data}');
  const { dtype, shape, data } = value;
  if (!(SAFETENSORS_DTYPES as readonly string[]).includes(dtype)) fail(`has unknown dtype ${JSON.stringify(dtype)} (known: ${SAFETENSORS_DTYPES.join(', ')})`);
  if (!isDimList(shape)) fail(`shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  const { ctor } = DTYPE_INFO[dtype];
  if (!(data instanceof ctor)) fail(`is ${dtype}, so data must be a ${ctor.name}, got ${(data as object)?.constructor?.name ?? typeof data}`);
  const count = elementCount(shape, fail);
  if (data.length !== count) fail(`has shape [${shape.join(',')}] = ${count} elements but data has ${data.length}`);
  return { name, dtype, shape: [...shape], bytes: () => asBytes(data) };
}

function asBytes(a: SafetensorsData): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * Writes a safetensors file: to a temporary name beside it, fsync'ed, then renamed, so a
 * crash never leaves a half-written file under `file`. Tensors are laid out in the given
 * order; `__metadata__` comes first in the header. tf tensors are read with `data()`
 * (float32 → F32, int32 → I32, bool → BOOL) and are not disposed.
 * Returns the file size and the SHA-256 of its bytes.
 *
 * @example
 * await writeSafetensors('w.safetensors', { w: tf.ones([2, 2]) }, { format: 'pt' });
 */
export async function writeSafetensors(
  file: string,
  tensors: Record<string, SafetensorsInput> | ReadonlyMap<string, SafetensorsInput>,
  metadata?: Record<string, string>,
): Promise<{ bytes: number; sha256: string }> {
  if (typeof file !== 'string' || file === '') throw new Error('writeSafetensors: file must be a non-empty path string');
  if (!isPlainObject(tensors) && !(tensors instanceof Map)) throw new Error(`writeSafetensors ${file}: tensors must be a record or Map of name → tensor`);
  assertLittleEndianHost();
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) throw new Error(`writeSafetensors ${file}: metadata must be an object of strings`);
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new Error(`writeSafetensors ${file}: metadata value for '${k}' must be a string, got ${describeJson(v)}`);
    }
  }
  const pairs = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const prepared: PreparedTensor[] = [];
  for (const [name, value] of pairs) {
    if (name === '' || name === METADATA_KEY) throw new Error(`writeSafetensors ${file}: tensor name ${JSON.stringify(name)} is not allowed`);
    prepared.push(prepare(name, value, file));
  }

  // Built piece by piece so the header lists tensors in data order even for names that
  // JSON.stringify would reorder (integer-like keys).
  const parts: string[] = [];
  if (metadata !== undefined && Object.keys(metadata).length > 0) parts.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`);
  let offset = 0;
  for (const p of prepared) {
    const size = p.shape.reduce((a, b) => a * b, 1) * DTYPE_INFO[p.dtype].bytes;
    parts.push(`${JSON.stringify(p.name)}:${JSON.stringify({ dtype: p.dtype, shape: p.shape, data_offsets: [offset, offset + size] })}`);
    offset += size;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, 0x20);
  json.copy(padded);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(padded.length));

  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const hash = createHash('sha256');
  let total = 0;
  try {
    const fh = await open(tmp, 'wx');
    try {
      const write = async (chunk: Uint8Array): Promise<void> => {
        hash.update(chunk);
        total += chunk.length;
        let done = 0;
        while (done < chunk.length) done += (await fh.write(chunk, done, chunk.length - done)).bytesWritten;
      };
      await write(prefix);
      await write(padded);
      for (const p of prepared) await write(await p.bytes());
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw new Error(`writeSafetensors ${file}: cannot write (${(e as Error).message})`);
  }
  return { bytes: total, sha256: hash.digest('hex') };
}

/**
 * Converts raw IEEE half-precision bit patterns (F16) to float32, exactly.
 *
 * @example
 * f16ToF32(new Uint16Array([0x3c00, 0xc000])); // Float32Array [1, -2]
 */
export function f16ToF32(bits: Uint16Array): Float32Array {
  if (!(bits instanceof Uint16Array)) throw new Error('f16ToF32: bits must be a Uint16Array of raw F16 values');
  const out = new Float32Array(bits.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    let mant = h & 0x3ff;
    if (exp === 0x1f) {
      u[i] = sign | 0x7f800000 | (mant << 13);
    } else if (exp !== 0) {
      u[i] = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant === 0) {
      u[i] = sign;
    } else {
      // Subnormal half: shift the mantissa up until its leading 1 is the implicit bit.
      let e = 113;
      while ((mant & 0x400) === 0) {
        mant <<= 1;
        e -= 1;
      }
      u[i] = sign | (e << 23) | ((mant & 0x3ff) << 13);
    }
  }
  return out;
}

/**
 * Converts raw bfloat16 bit patterns (BF16) to float32, exactly (they are its top 16 bits).
 *
 * @example
 * bf16ToF32(new Uint16Array([0x3f80])); // Float32Array [1]
 */
export function bf16ToF32(bits: Uint16Array): Float32Array {
  if (!(bits instanceof Uint16Array)) throw new Error('bf16ToF32: bits must be a Uint16Array of raw BF16 values');
  const out = new Float32Array(bits.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) u[i] = bits[i] << 16;
  return out;
}

/**
 * Rounds float32 values to IEEE half precision (F16) bit patterns, to nearest with ties to
 * even (as PyTorch's `.half()`): magnitudes from 65520 up become ±Infinity, below 2⁻²⁵ ±0,
 * and between them the subnormal range keeps what it can. NaN becomes a quiet NaN.
 *
 * @example
 * f32ToF16(new Float32Array([1, -2, 65520])); // Uint16Array [0x3c00, 0xc000, 0x7c00]
 */
export function f32ToF16(values: Float32Array): Uint16Array {
  if (!(values instanceof Float32Array)) throw new Error('f32ToF16: values must be a Float32Array');
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    const mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | (mant ? 0x7e00 : 0x7c00);
      continue;
    }
    const e = exp - 112; // the half-precision biased exponent
    if (e >= 31) {
      out[i] = sign | 0x7c00;
    } else if (e >= 1) {
      const rest = mant & 0x1fff;
      let h = (e << 10) | (mant >>> 13);
      // A carry out of the mantissa moves to the next binade (and from the largest one to Infinity): the bit layout makes that an increment.
      if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h += 1;
      out[i] = sign | h;
    } else {
      // Subnormal result in units of 2⁻²⁴: the full 24-bit significand shifted right.
      const shift = 14 - e;
      if (shift > 24) {
        out[i] = sign;
        continue;
      }
      const sig = mant | 0x800000;
      let h = sig >>> shift;
      const rest = sig & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rest > half || (rest === half && (h & 1))) h += 1;
      out[i] = sign | h;
    }
  }
  return out;
}

/**
 * Rounds float32 values to bfloat16 (BF16) bit patterns, to nearest with ties to even (as
 * PyTorch's `.bfloat16()`): values past bfloat16's largest finite value round to ±Infinity.
 * NaN becomes a quiet NaN.
 *
 * @example
 * f32ToBf16(new Float32Array([1, 1 + 2 ** -8])); // Uint16Array [0x3f80, 0x3f80] (a tie, to even)
 */
export function f32ToBf16(values: Float32Array): Uint16Array {
  if (!(values instanceof Float32Array)) throw new Error('f32ToBf16: values must be a Float32Array');
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) {
      out[i] = (x >>> 16) | 0x0040;
      continue;
    }
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

function toInt32Exact(name: string, t: SafetensorsTensor): Int32Array {
  const out = new Int32Array(t.data.length);
  for (let i = 0; i < t.data.length; i++) {
    const v = Number(t.data[i]);
    if (v < -2147483648 || v > 2147483647) {
      throw new Error(`toTensorMap: tensor '${name}' (${t.dtype}) has value ${t.data[i]} at index ${i}, outside the int32 range of tf tensors`);
    }
    out[i] = v;
  }
  return out;
}

/**
 * Makes tf tensors from tensors read from a file. Floats become float32 (F16/BF16
 * exactly, F64 rounded), integers become int32 (64-bit and U32 values must fit), BOOL
 * becomes bool. The caller owns (and disposes) the returned tensors; on the cpu backend
 * F32/I32/BOOL tensors may share the file's arrays, so do not modify those afterwards.
 *
 * @example
 * const params = toTensorMap(await readSafetensors('model.safetensors'));
 * tf.dispose(Object.values(params));
 */
export function toTensorMap(source: SafetensorsFile | ReadonlyMap<string, SafetensorsTensor>): Record<string, tf.Tensor> {
  const map = source instanceof Map ? source : (source as SafetensorsFile)?.tensors;
  if (!(map instanceof Map)) throw new Error('toTensorMap: source must be a SafetensorsFile or a Map of name → {dtype, shape, data}');
  const out: Record<string, tf.Tensor> = {};
  try {
    for (const [name, t] of map) {
      let values: Float32Array | Int32Array | Uint8Array;
      let dtype: 'float32' | 'int32' | 'bool';
      switch (t.dtype) {
        case 'F32': values = t.data as Float32Array; dtype = 'float32'; break;
        case 'F16': values = f16ToF32(t.data as Uint16Array); dtype = 'float32'; break;
        case 'BF16': values = bf16ToF32(t.data as Uint16Array); dtype = 'float32'; break;
        case 'F64': values = Float32Array.from(t.data as Float64Array); dtype = 'float32'; break;
        case 'I32': values = t.data as Int32Array; dtype = 'int32'; break;
        case 'I8': case 'U8': case 'I16': case 'U16': values = Int32Array.from(t.data as Int8Array); dtype = 'int32'; break;
        case 'U32': case 'I64': case 'U64': values = toInt32Exact(name, t); dtype = 'int32'; break;
        case 'BOOL': values = t.data as Uint8Array; dtype = 'bool'; break;
        default: throw new Error(`toTensorMap: tensor '${name}' has unknown dtype ${JSON.stringify((t as { dtype: unknown }).dtype)}`);
      }
      out[name] = tf.tensor(values, t.shape, dtype);
    }
  } catch (e) {
    tf.dispose(Object.values(out));
    throw e;
  }
  return out;
}

/**
 * Reads tf tensors into safetensors form (float32 → F32, int32 → I32, bool → BOOL),
 * e.g. to inspect or transform them before `writeSafetensors`. The tensors are not disposed.
 *
 * @example
 * const m = await fromTensors({ w: tf.ones([2]) }); // Map { 'w' => { dtype: 'F32', shape: [2], data: Float32Array [1, 1] } }
 */
export async function fromTensors(tensors: Record<string, tf.Tensor>): Promise<Map<string, SafetensorsTensor>> {
  const out = new Map<string, SafetensorsTensor>();
  for (const [name, t, dtype] of checkedForRead('fromTensors', tensors)) {
    // data() may hand back the backend's own buffer (cpu backend); copy so later writes to it cannot alias.
    out.set(name, { dtype, shape: [...t.shape], data: ((await t.data()) as SafetensorsData).slice() });
  }
  return out;
}

function checkedForRead(fn: string, tensors: Record<string, tf.Tensor>): [string, tf.Tensor, SafetensorsDtype][] {
  if (!isPlainObject(tensors)) throw new Error(`${fn}: tensors must be a record of name → tf.Tensor`);
  return Object.entries(tensors).map(([name, t]) => {
    if (!(t instanceof tf.Tensor)) throw new Error(`${fn}: '${name}' is not a tf.Tensor`);
    if (t.isDisposed) throw new Error(`${fn}: '${name}' is a disposed tf tensor`);
    const dtype = TF_TO_SAFETENSORS[t.dtype];
    if (!dtype) throw new Error(`${fn}: '${name}' has tf dtype ${t.dtype}; only float32, int32 and bool are supported`);
    return [name, t, dtype];
  });
}
