import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { withDirLock } from '../src/util/dirLock.js';

describe('util: folder lock', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(path.join(os.tmpdir(), 'vlm-lock-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('runs callers one at a time and removes the lock after each, also after a throw', async () => {
    const order: string[] = [];
    const job = (name: string, fail = false) => withDirLock(dir, async () => {
      order.push(`${name}+`);
      await new Promise((r) => setTimeout(r, 30));
      order.push(`${name}-`);
      if (fail) throw new Error(`${name} failed`);
    }, { pollMs: 5 });
    const results = await Promise.allSettled([job('a', true), job('b'), job('c')]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'fulfilled', 'fulfilled']);
    // Each holder finishes before the next starts.
    for (let i = 0; i < order.length; i += 2) assert.equal(order[i].slice(0, -1), order[i + 1].slice(0, -1), order.join(' '));
    assert.deepEqual(readdirSync(dir), []);
  });

  it('takes over a lock whose process is gone, and names the lock when a live one outlasts the timeout', async () => {
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    writeFileSync(path.join(dir, '.lock'), String(dead));
    assert.equal(await withDirLock(dir, async () => 'ran', { pollMs: 5 }), 'ran');
    writeFileSync(path.join(dir, '.lock'), String(process.ppid));
    let waitedFor = 0;
    await assert.rejects(withDirLock(dir, async () => 'ran', { pollMs: 5, timeoutMs: 100, what: 'frame cache', onWait: (h) => { waitedFor = h.pid; } }),
      new RegExp(`frame cache .*still locked by process ${process.ppid} .*delete .*\\.lock`));
    assert.equal(waitedFor, process.ppid);
  });
});
