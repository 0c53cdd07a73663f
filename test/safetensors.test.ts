import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tf } from '../src/backend/tf.js';
import {
  bf16ToF32, f16ToF32, fromTensors, parseSafetensors, readSafetensors, toTensorMap, writeSafetensors,
} from '../src/train/index.js';

/** A safetensors file assembled from a header string and data bytes, independent of the writer. */
function assemble(header: string, data: number[] | Buffer, headerLen?: bigint): Buffer {
  const json = Buffer.from(header, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(headerLen ?? BigInt(json.length));
  return Buffer.concat([prefix, json, Buffer.from(data)]);
}

describe('safetensors', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(path.join(os.tmpdir(), 'vlm-st-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  // Header written out by hand: 194 bytes of JSON, padded with 6 spaces to 200.
  const HAND_HEADER = '{"__metadata__":{"format":"pt"},'
    + '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
    + '"b":{"dtype":"I32","shape":[],"data_offsets":[8,12]},'
    + '"c":{"dtype":"BOOL","shape":[3],"data_offsets":[12,15]}}';
  const HAND_FILE = Buffer.concat([
    Buffer.from([200, 0, 0, 0, 0, 0, 0, 0]),
    Buffer.from(HAND_HEADER + '      ', 'utf8'),
    // 1.5f = 0x3FC00000, -2f = 0xC0000000, int32 7, bools 1 0 1 — all little-endian.
    Buffer.from([0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0x07, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]),
  ]);

  it('writes a tiny file byte for byte as the hand-built one', async () => {
    assert.equal(HAND_HEADER.length, 194);
    assert.equal(HAND_FILE.length, 223);
    const file = path.join(dir, 'tiny.safetensors');
    const res = await writeSafetensors(file, {
      a: { dtype: 'F32', shape: [2], data: new Float32Array([1.5, -2]) },
      b: { dtype: 'I32', shape: [], data: new Int32Array([7]) },
      c: { dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) },
    }, { format: 'pt' });
    const bytes = readFileSync(file);
    assert.deepEqual(bytes, HAND_FILE);
    assert.equal(res.bytes, 223);
    assert.equal(res.sha256, createHash('sha256').update(HAND_FILE).digest('hex'));
    assert.deepEqual(readdirSync(dir).filter((n) => n.includes('.tmp-')), [], 'no temp file left');
  });

  it('writes tf tensors (read with data()) to the same bytes, without leaking tensors', async () => {
    const a = tf.tensor1d([1.5, -2]);
    const b = tf.scalar(7, 'int32');
    const c = tf.tensor1d([true, false, true], 'bool');
    const before = tf.memory().numTensors;
    const file = path.join(dir, 'tf.safetensors');
    await writeSafetensors(file, new Map<string, tf.Tensor>([['a', a], ['b', b], ['c', c]]), { format: 'pt' });
    assert.equal(tf.memory().numTensors, before);
    assert.deepEqual(readFileSync(file), HAND_FILE);
    tf.dispose([a, b, c]);
  });

  it('reads a hand-built file whose data order differs from the header order', async () => {
    const header = JSON.stringify({
      __metadata__: { note: 'hand' },
      f64: { dtype: 'F64', shape: [1], data_offsets: [8, 16] },
      i64: { dtype: 'I64', shape: [1], data_offsets: [0, 8] },
      h: { dtype: 'F16', shape: [2], data_offsets: [16, 20] },
      u8: { dtype: 'U8', shape: [2, 1], data_offsets: [20, 22] },
      empty: { dtype: 'F32', shape: [0, 3], data_offsets: [22, 22] },
    });
    const data = [
      0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // int64 -2
      0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // float64 1.0 = 0x3FF0000000000000
      0x00, 0x3c, 0x00, 0xc0, // f16 1.0, -2.0
      200, 3,
    ];
    const file = path.join(dir, 'hand.safetensors');
    writeFileSync(file, assemble(header, data));
    const { tensors, metadata } = await readSafetensors(file);
    assert.deepEqual(metadata, { note: 'hand' });
    assert.deepEqual([...tensors.keys()], ['i64', 'f64', 'h', 'u8', 'empty'], 'ordered by data offset');
    assert.deepEqual(tensors.get('i64'), { dtype: 'I64', shape: [1], data: new BigInt64Array([-2n]) });
    assert.deepEqual(tensors.get('f64'), { dtype: 'F64', shape: [1], data: new Float64Array([1]) });
    assert.deepEqual(tensors.get('h'), { dtype: 'F16', shape: [2], data: new Uint16Array([0x3c00, 0xc000]) });
    assert.deepEqual(tensors.get('u8'), { dtype: 'U8', shape: [2, 1], data: new Uint8Array([200, 3]) });
    assert.deepEqual(tensors.get('empty'), { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) });
  });

  it('converts F16 and BF16 bit patterns to the hand-computed float32 values', async () => {
    const f16 = f16ToF32(new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x3555, 0x7c00, 0xfc00, 0x8000, 0x0000, 0x7e00]));
    const want = [1, -2, 65504, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, 0.333251953125, Infinity, -Infinity, -0, 0];
    want.forEach((w, i) => assert.ok(Object.is(f16[i], w), `f16[${i}] = ${f16[i]}, want ${w}`));
    assert.ok(Number.isNaN(f16[11]));
    const bf = bf16ToF32(new Uint16Array([0x3f80, 0x4049, 0xc2f7, 0x0001, 0x7f80, 0x8000]));
    const wantBf = [1, 3.140625, -123.5, 2 ** -133, Infinity, -0];
    wantBf.forEach((w, i) => assert.ok(Object.is(bf[i], w), `bf16[${i}] = ${bf[i]}, want ${w}`));
  });

  it('makes tf tensors from a read file and back, with no tensor left behind', async () => {
    const file = parseSafetensors(assemble(JSON.stringify({
      h: { dtype: 'F16', shape: [2], data_offsets: [0, 4] },
      ids: { dtype: 'I64', shape: [3], data_offsets: [4, 28] },
      m: { dtype: 'BOOL', shape: [2], data_offsets: [28, 30] },
    }), [0x00, 0x3c, 0x00, 0xc0,
      0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      1, 0]), 'conv.safetensors');
    const before = tf.memory().numTensors;
    const ts = toTensorMap(file);
    assert.equal(ts.h.dtype, 'float32');
    assert.deepEqual([...(await ts.h.data())], [1, -2]);
    assert.equal(ts.ids.dtype, 'int32');
    assert.deepEqual([...(await ts.ids.data())], [0, 5, -1]);
    assert.equal(ts.m.dtype, 'bool');
    assert.deepEqual([...(await ts.m.data())], [1, 0]);
    const back = await fromTensors({ ids: ts.ids, h: ts.h });
    assert.deepEqual(back.get('ids'), { dtype: 'I32', shape: [3], data: new Int32Array([0, 5, -1]) });
    assert.deepEqual(back.get('h'), { dtype: 'F32', shape: [2], data: new Float32Array([1, -2]) });
    const str = tf.tensor1d(['a']);
    await assert.rejects(fromTensors({ s: str }), /fromTensors: 's' has tf dtype string/);
    str.dispose();
    tf.dispose(Object.values(ts));
    assert.equal(tf.memory().numTensors, before);

    const big = parseSafetensors(assemble(JSON.stringify({ x: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }),
      [0, 0, 0, 0x80, 0, 0, 0, 0]), 'big.safetensors');
    assert.throws(() => toTensorMap(big), /tensor 'x' \(I64\) has value 2147483648 .*int32/);
    assert.equal(tf.memory().numTensors, before);
  });

  describe('refuses malformed files, naming the file', () => {
    const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
    const eight = [0, 0, 0x80, 0x3f, 0, 0, 0, 0x40];
    const cases: [string, () => Buffer, RegExp][] = [
      ['empty file', () => Buffer.alloc(0), /truncated: 0 bytes/],
      ['shorter than 8 bytes', () => Buffer.from([1, 0, 0]), /truncated: 3 bytes/],
      ['header length larger than the file', () => assemble(JSON.stringify(ok), eight, 10_000n), /header length 10000 is larger than the file/],
      ['header length near 2^64', () => assemble(JSON.stringify(ok), eight, 0xffffffffffffffffn), /header length 18446744073709551615 is larger/],
      ['data shorter than the header says', () => assemble(JSON.stringify(ok), eight.slice(0, 6)), /out of range.*only 6 bytes.*truncated/],
      ['header not JSON', () => assemble('{"a": {"dtype": "F32",', eight), /header is not valid JSON/],
      ['header not UTF-8', () => Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]), /not valid UTF-8/],
      ['header an array', () => assemble('[1,2]', []), /must be a JSON object, got an array/],
      ['header null', () => assemble('null', []), /must be a JSON object, got null/],
      ['tensor entry not an object', () => assemble('{"a":3}', []), /tensor 'a' must be an object/],
      ['unknown dtype', () => assemble(JSON.stringify({ a: { dtype: 'F128', shape: [2], data_offsets: [0, 8] } }), eight), /tensor 'a' has unknown dtype "F128"/],
      ['negative shape', () => assemble(JSON.stringify({ a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }), eight), /shape must be an array of non-negative integers/],
      ['offsets begin > end', () => assemble(JSON.stringify({ a: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }), eight), /data_offsets must be \[begin, end\]/],
      ['offsets not two numbers', () => assemble(JSON.stringify({ a: { dtype: 'F32', shape: [2], data_offsets: [0] } }), eight), /data_offsets must be/],
      ['offsets beyond data', () => assemble(JSON.stringify({ a: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }), eight), /\[4,12\] out of range/],
      ['size not dtype×shape', () => assemble(JSON.stringify({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }), eight), /F32 \[3\] = 12 bytes, but data_offsets \[0,8\] span 8/],
      ['overlapping tensors', () => assemble(JSON.stringify({
        a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
        b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
      }), eight), /'a' \[0,8\] and 'b' \[4,8\] overlap/],
      ['gap in the data', () => assemble(JSON.stringify({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }), eight), /4 unused bytes before tensor 'a'/],
      ['trailing bytes', () => assemble(JSON.stringify({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }), eight), /4 trailing bytes after the last tensor/],
      ['metadata value not a string', () => assemble(JSON.stringify({ __metadata__: { n: 3 }, ...ok }), eight), /__metadata__ value for 'n' must be a string/],
    ];
    for (const [label, make, pattern] of cases) {
      it(label, async () => {
        const file = path.join(dir, `bad-${label.replace(/\W+/g, '-')}.safetensors`);
        writeFileSync(file, make());
        await assert.rejects(readSafetensors(file), (e: Error) => {
          assert.ok(e.message.includes(file), `message names the file: ${e.message}`);
          assert.match(e.message, pattern);
          return true;
        });
      });
    }
    it('a missing file', async () => {
      const file = path.join(dir, 'nope.safetensors');
      await assert.rejects(readSafetensors(file), (e: Error) => e.message.includes(file) && /cannot read/.test(e.message));
    });
  });

  it('refuses bad tensors on write, naming the file and tensor, and leaves nothing behind', async () => {
    const file = path.join(dir, 'w.safetensors');
    await assert.rejects(writeSafetensors(file, { a: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }),
      /w\.safetensors: tensor 'a' has shape \[3\] = 3 elements but data has 2/);
    await assert.rejects(writeSafetensors(file, { a: { dtype: 'I32', shape: [2], data: new Float32Array(2) } }),
      /tensor 'a' is I32, so data must be a Int32Array, got Float32Array/);
    await assert.rejects(writeSafetensors(file, { a: { dtype: 'X' as 'F32', shape: [1], data: new Float32Array(1) } }), /unknown dtype "X"/);
    const t = tf.tensor1d([1, 2]);
    t.dispose();
    await assert.rejects(writeSafetensors(file, { t }), /tensor 't' is a disposed tf tensor/);
    await assert.rejects(writeSafetensors(file, {}, { n: 1 as unknown as string }), /metadata value for 'n' must be a string/);
    const inMissing = path.join(dir, 'no-such-dir', 'x.safetensors');
    await assert.rejects(writeSafetensors(inMissing, {}), (e: Error) => e.message.startsWith(`writeSafetensors ${inMissing}: cannot write`));
    assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith('w.safetensors') || n.startsWith('.w.safetensors')), []);
  });

  it('round-trips every dtype exactly through write and read', async () => {
    const tensors = {
      bool: { dtype: 'BOOL' as const, shape: [2], data: new Uint8Array([1, 0]) },
      u8: { dtype: 'U8' as const, shape: [2], data: new Uint8Array([0, 255]) },
      i8: { dtype: 'I8' as const, shape: [2], data: new Int8Array([-128, 127]) },
      u16: { dtype: 'U16' as const, shape: [1], data: new Uint16Array([65535]) },
      i16: { dtype: 'I16' as const, shape: [1], data: new Int16Array([-32768]) },
      f16: { dtype: 'F16' as const, shape: [1], data: new Uint16Array([0x7e01]) },
      bf16: { dtype: 'BF16' as const, shape: [1], data: new Uint16Array([0xff81]) },
      u32: { dtype: 'U32' as const, shape: [1], data: new Uint32Array([4294967295]) },
      i32: { dtype: 'I32' as const, shape: [1, 1], data: new Int32Array([-2147483648]) },
      f32: { dtype: 'F32' as const, shape: [], data: new Float32Array([-0]) },
      u64: { dtype: 'U64' as const, shape: [1], data: new BigUint64Array([18446744073709551615n]) },
      i64: { dtype: 'I64' as const, shape: [1], data: new BigInt64Array([-9223372036854775808n]) },
      f64: { dtype: 'F64' as const, shape: [1], data: new Float64Array([Math.PI]) },
    };
    const file = path.join(dir, 'all.safetensors');
    await writeSafetensors(file, tensors);
    const back = await readSafetensors(file);
    assert.deepEqual(Object.fromEntries(back.tensors), tensors);
    assert.deepEqual(back.metadata, {});
  });
});
