import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32c, eventBytes, tfRecord } from '../src/train/tensorboard.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('TensorBoard event files', () => {
  it('CRC-32C matches the standard check value', () => {
    assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
  });

  it('scalar records are byte-identical to tensorboardX\'s (fixture: tools/tensorboard/check.py fixture)', async () => {
    const fixture = await readFile(path.join(root, 'test', 'fixtures', 'tensorboard', 'scalars.tfevents'));
    // The first record is the file version with the writer's own clock: skip it.
    const firstLen = Number(fixture.readBigUInt64LE(0));
    const rest = fixture.subarray(12 + firstLen + 4);
    const ours: Uint8Array[] = [];
    [[4.5, 1e-4], [3.25, 2e-3], [0.015625, 1.5e-3]].forEach(([loss, lr], step) => {
      ours.push(tfRecord(eventBytes({ wallTime: 1700000000.25 + step, step, tag: 'train/loss', scalar: loss })));
      ours.push(tfRecord(eventBytes({ wallTime: 1700000000.5 + step, step, tag: 'train/lr', scalar: lr })));
    });
    assert.deepEqual(Buffer.concat(ours), Buffer.from(rest));
    const version = eventBytes({ wallTime: 0, step: 0, fileVersion: 'brain.Event:2' });
    assert.deepEqual(Buffer.from(version), fixture.subarray(12 + 9, 12 + firstLen), 'file_version event after its wall time');
  });
});
