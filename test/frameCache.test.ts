import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tf } from '../src/backend/tf.js';
import { buildFrameCache, buildFrameCacheShard, openFrameCache, planFrameCache, readNormalizedClips, verifyFrameCache, type FrameCache } from '../src/data/frameCache.js';
import { BatchLoader, encodeCaptions, groupByCaption, loaderKindOf, type CaptionTable } from '../src/data/loader.js';
import { StreamLoader, type StreamLoaderState } from '../src/data/streamLoader.js';
import type { ManifestEntry } from '../src/data/types.js';
import { CLIP_MEAN, CLIP_STD } from '../src/video/transforms.js';
import { countFfmpegCalls, makeClip } from './video.test.js';
import { tidyData } from './helpers/read.js';

/** Known colours of the generated clips, RGB 0–255. */
const COLOURS: Record<string, [number, number, number]> = {
  red: [255, 0, 0], lime: [0, 255, 0], blue: [0, 0, 255], yellow: [255, 255, 0], white: [255, 255, 255], magenta: [255, 0, 255],
};
const NAMES = Object.keys(COLOURS);

function closeTo(rgb: ArrayLike<number>, want: [number, number, number], tol = 20): boolean {
  return Math.abs(rgb[0] - want[0]) <= tol && Math.abs(rgb[1] - want[1]) <= tol && Math.abs(rgb[2] - want[2]) <= tol;
}

/** Which clip files appear in the logged ffmpeg decode commands, and how often. */
function decodesPerClip(lines: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const l of lines) {
    const hit = NAMES.find((n) => l.includes(`/${n}.mp4`));
    if (hit) m.set(hit, (m.get(hit) ?? 0) + 1);
  }
  return m;
}

describe('frame cache', function () {
  this.timeout(60000);
  let dir: string;
  let entries: ManifestEntry[];
  let bad: ManifestEntry[];

  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'vlm-cache-'));
    entries = NAMES.map((n) => ({
      id: n, video: makeClip(path.join(dir, `${n}.mp4`), `color=c=${n}:s=32x24:r=5:d=2`), captions: [`a ${n} clip`],
    }));
    const empty = path.join(dir, 'empty.mp4');
    writeFileSync(empty, '');
    bad = [
      { id: 'gone', video: path.join(dir, 'gone.mp4'), captions: ['missing'] },
      { id: 'empty', video: empty, captions: ['empty'] },
    ];
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('decodes a manifest into shards, records failures, and reads clips back by id', async () => {
    const out = path.join(dir, 'c1');
    const progress: number[] = [];
    const s = await buildFrameCache([...entries.slice(0, 3), ...bad, ...entries.slice(3)], {
      out, frames: 4, size: 16, shardSize: 2, concurrency: 2, onProgress: (p) => progress.push(p.done),
    });
    assert.equal(s.decoded, 6);
    assert.equal(s.reused, 0);
    assert.deepEqual(s.skipped.map((e) => e.id).sort(), ['empty', 'gone']);
    assert.match(s.skipped.find((e) => e.id === 'gone')!.reason, /file not found/);
    assert.equal(s.shards, 4); // 8 items, 2 per shard
    assert.deepEqual(progress, [1, 2, 3, 4, 5, 6, 7, 8]);
    const cache = await openFrameCache(out);
    assert.deepEqual([...cache.ids].sort(), [...NAMES].sort());
    assert.equal(cache.errors.length, 2);
    for (const n of NAMES) {
      const clip = await cache.get(n);
      assert.deepEqual(clip.shape, [4, 16, 16, 3]);
      assert.deepEqual(clip.timestamps, [0.25, 0.75, 1.25, 1.75]);
      for (const t of [0, 3]) {
        const px = clip.data.subarray((t * 256 + 8 * 16 + 8) * 3, (t * 256 + 8 * 16 + 8) * 3 + 3);
        assert.ok(closeTo(px, COLOURS[n]), `${n} frame ${t}: ${[...px]}`);
      }
    }
    await assert.rejects(cache.get('gone'), /no clip with id "gone"/);
    await assert.rejects(buildFrameCache(entries, { out, frames: 4, size: 32, shardSize: 2 }), /was built with .*"size":16.*another frame cache folder/);
  });

  it('two builds of one cache at once (as two runs would start) decode each clip once, one after the other', async () => {
    const out = path.join(dir, 'c-twice');
    const [a, b] = await Promise.all([1, 2].map(() => buildFrameCache(entries, { out, frames: 2, size: 16, shardSize: 2 })));
    assert.deepEqual([a.decoded + b.decoded, a.reused + b.reused], [entries.length, entries.length]);
    const ids = readdirSync(out).filter((n) => /^shard-\d+\.json$/.test(n))
      .flatMap((n) => (JSON.parse(readFileSync(path.join(out, n), 'utf8')) as { items: { id: string }[] }).items.map((it) => it.id));
    assert.deepEqual(ids.sort(), [...NAMES].sort());
    assert.ok(!readdirSync(out).includes('.lock'));
  });

  it('resumes after a half-written shard: keeps committed shards, drops leftovers, decodes nothing twice', async () => {
    const out = path.join(dir, 'c2');
    const first = await buildFrameCache(entries.slice(0, 4), { out, frames: 4, size: 16, shardSize: 2 });
    assert.equal(first.decoded, 4);
    // What a crash leaves: a temp file being written, a .bin renamed without its .json, and a
    // .json whose .bin never arrived.
    writeFileSync(path.join(out, 'shard-00006.bin.tmp-424242'), Buffer.alloc(1000, 7));
    writeFileSync(path.join(out, 'shard-00007.bin'), Buffer.alloc(4 * 16 * 16 * 3, 9));
    writeFileSync(path.join(out, 'shard-00008.json'), JSON.stringify({ format: 'vlmargin-frame-cache-shard', version: 1, clipBytes: 3072, bytes: 3072, items: [{ id: 'white', offset: 0 }], errors: [] }));
    const spy = countFfmpegCalls(dir);
    let s;
    try {
      s = await buildFrameCache([...entries, ...bad], { out, frames: 4, size: 16, shardSize: 2 });
    } finally {
      spy.restore();
    }
    const per = decodesPerClip(spy.calls());
    assert.deepEqual([...per.entries()].sort(), [['magenta', 1], ['white', 1]]);
    assert.equal(s.reused, 4);
    assert.equal(s.decoded, 2);
    assert.equal(s.skipped.length, 2);
    const left = readdirSync(out);
    assert.ok(!left.some((f) => f.includes('.tmp-') || f === 'shard-00007.bin' || f === 'shard-00008.json'), left.join(' '));
    const cache = await openFrameCache(out);
    assert.deepEqual([...cache.ids].sort(), [...NAMES].sort());
    const white = await cache.get('white');
    assert.ok(closeTo(white.data.subarray(0, 3), COLOURS.white));
    // A third run decodes nothing and tries the two failures once more; a fourth has nothing to do.
    const spy2 = countFfmpegCalls(dir);
    try {
      const again = await buildFrameCache([...entries, ...bad], { out, frames: 4, size: 16, shardSize: 2 });
      assert.deepEqual([again.decoded, again.reused, again.retried, again.skipped.length], [0, 6, 2, 2]);
      const fourth = await buildFrameCache([...entries, ...bad], { out, frames: 4, size: 16, shardSize: 2 });
      assert.deepEqual([fourth.decoded, fourth.reused, fourth.retried, fourth.skipped.length], [0, 8, 0, 2]);
    } finally {
      spy2.restore();
    }
    assert.equal(decodesPerClip(spy2.calls()).size, 0);
  });

  it('survives kill -9 mid-run: committed clips are decoded exactly once across both runs', async () => {
    const out = path.join(dir, 'c3');
    const spy = countFfmpegCalls(dir);
    spy.restore(); // the child gets the wrapper through FFMPEG_PATH; this process runs normally
    const wrapper = path.join(dir, 'ffmpeg-wrapper.sh');
    const moduleUrl = new URL('../src/data/frameCache.js', import.meta.url).href;
    const script = `
      const { buildFrameCache } = await import(${JSON.stringify(moduleUrl)});
      const { existsSync } = await import('node:fs');
      const entries = JSON.parse(process.env.ENTRIES);
      await buildFrameCache(entries, { out: ${JSON.stringify(out)}, frames: 4, size: 16, shardSize: 1, concurrency: 1,
        onProgress: (p) => {
          // Die once two shards are committed, with more work in flight.
          if (p.done === 3) setInterval(() => { if (existsSync(${JSON.stringify(path.join(out, 'shard-00001.json'))})) process.kill(process.pid, 'SIGKILL'); }, 1);
        } });
      console.log('finished without being killed');`;
    const code = await new Promise<number | string | null>((resolve) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
        env: { ...process.env, FFMPEG_PATH: wrapper, ENTRIES: JSON.stringify(entries) }, stdio: ['ignore', 'pipe', 'inherit'],
      });
      child.on('exit', (c, sig) => resolve(sig ?? c));
    });
    assert.equal(code, 'SIGKILL');
    const committed = readdirSync(out).filter((f) => /^shard-\d+\.json$/.test(f))
      .flatMap((f) => (JSON.parse(readFileSync(path.join(out, f), 'utf8')) as { items: { id: string }[] }).items.map((it) => it.id));
    assert.ok(committed.length >= 2 && committed.length < 6, `clips committed before the kill: ${committed.join(',')}`);
    const byChild = decodesPerClip(spy.calls());
    const spy2 = countFfmpegCalls(dir);
    let s;
    try {
      s = await buildFrameCache(entries, { out, frames: 4, size: 16, shardSize: 1, concurrency: 1 });
    } finally {
      spy2.restore();
    }
    const byResume = decodesPerClip(spy2.calls());
    assert.equal(s.reused, committed.length);
    assert.equal(s.decoded, 6 - committed.length);
    for (const n of NAMES) {
      if (committed.includes(n)) {
        assert.equal(byChild.get(n), 1, `${n}: decoded once before the kill`);
        assert.equal(byResume.get(n), undefined, `${n}: not decoded again`);
      } else {
        assert.equal(byResume.get(n), 1, `${n}: decoded once by the resumed run`);
      }
    }
    const cache = await openFrameCache(out);
    assert.deepEqual([...cache.ids].sort(), [...NAMES].sort());
    for (const n of NAMES) assert.ok(closeTo((await cache.get(n)).data.subarray(0, 3), COLOURS[n]), n);
    assert.ok(!readdirSync(out).some((f) => f.includes('.tmp-')));
  });

  it('`vlmargin frames` builds, resumes and summarises from a manifest', async () => {
    const manifest = path.join(dir, 'm.jsonl');
    writeFileSync(manifest, [
      JSON.stringify({ id: 'red', video: 'red.mp4', caption: 'a red clip' }),
      JSON.stringify({ id: 'blue', video: 'blue.mp4', captions: ['blue', 'a blue clip'] }),
      JSON.stringify({ id: 'gone', video: 'gone.mp4', caption: 'missing file' }),
      'not json',
    ].join('\n'));
    const cli = new URL('../pipelines/cli/main.js', import.meta.url).pathname;
    const out = path.join(dir, 'c5');
    const runCli = (): Promise<{ code: number | null; stdout: string; stderr: string }> => new Promise((resolve) => {
      const child = spawn(process.execPath, [cli, 'frames', '--manifest', manifest, '--out', out, '--frames', '2', '--size', '16'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => { stdout += d; });
      child.stderr.on('data', (d) => { stderr += d; });
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
    const first = await runCli();
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /2 decoded, 0 reused from an earlier run, 1 skipped/);
    assert.match(first.stdout, /1 {2}file not found/);
    assert.match(first.stderr, /m\.jsonl:4:/);
    const second = await runCli();
    assert.match(second.stdout, /0 decoded, 2 reused from an earlier run, 1 skipped/);
    assert.match(second.stdout, /1 earlier failure tried again/);
    const third = await runCli();
    assert.match(third.stdout, /0 decoded, 3 reused from an earlier run, 1 skipped/);
    const cache = await openFrameCache(out);
    assert.deepEqual([...cache.ids].sort(), ['blue', 'red']);
  });

  it('a shard is one unit of work: built twice (one after the other, or at once) it is the same files, never duplicated', async () => {
    const out = path.join(dir, 'c-shard');
    mkdirSync(out);
    const plan = planFrameCache([...entries, ...bad], { frames: 2, size: 8, shardSize: 3 });
    assert.deepEqual(plan.shards.map((s) => s.items.map((it) => it.id)), [['red', 'lime', 'blue'], ['yellow', 'white', 'magenta'], ['gone', 'empty']]);
    const first = await buildFrameCacheShard(out, plan.config, plan.shards[1]);
    assert.deepEqual([first.decoded, first.reused], [3, false]);
    const bytes = readFileSync(path.join(out, 'shard-00001.bin'));
    const meta = JSON.parse(readFileSync(path.join(out, 'shard-00001.json'), 'utf8')) as { sha256: string; items: { id: string }[] };
    assert.equal(meta.sha256, createHash('sha256').update(bytes).digest('hex'));
    assert.deepEqual(meta.items.map((it) => it.id), ['yellow', 'white', 'magenta']);
    const again = await buildFrameCacheShard(out, plan.config, plan.shards[1]);
    assert.deepEqual([again.decoded, again.reused], [0, true]);
    const both = await Promise.all([0, 0].map(() => buildFrameCacheShard(out, plan.config, plan.shards[0])));
    assert.deepEqual(both.map((r) => r.decoded), [3, 3]);
    const failed = await buildFrameCacheShard(out, plan.config, plan.shards[2]);
    assert.deepEqual([failed.decoded, failed.errors.map((e) => e.id)], [0, ['gone', 'empty']]);
    assert.deepEqual(readdirSync(out).sort(), ['errors.jsonl', 'shard-00000.bin', 'shard-00000.json', 'shard-00001.bin', 'shard-00001.json', 'shard-00002.bin', 'shard-00002.json']);
    assert.ok(readFileSync(path.join(out, 'shard-00001.bin')).equals(bytes));
  });

  it('an edited manifest rebuilds only the shards whose items changed', async () => {
    const out = path.join(dir, 'c-edit');
    await buildFrameCache(entries, { out, frames: 2, size: 8, shardSize: 2 });
    const swapped = [entries[0], entries[1], entries[3], entries[2], entries[4], entries[5]];
    const spy = countFfmpegCalls(dir);
    let s;
    try {
      s = await buildFrameCache([...swapped, bad[0]], { out, frames: 2, size: 8, shardSize: 2 });
    } finally {
      spy.restore();
    }
    // Shard 1 holds the same two clips in another order: kept. Shard 3 is new.
    assert.deepEqual([s.decoded, s.reused, s.shards], [0, 6, 4]);
    const cut = await buildFrameCache([entries[0], entries[2], entries[1], entries[3]], { out, frames: 2, size: 8, shardSize: 2 });
    assert.deepEqual([cut.decoded, cut.reused, cut.shards], [4, 0, 2]);
    assert.deepEqual(readdirSync(out).filter((n) => n.startsWith('shard-')).sort(), ['shard-00000.bin', 'shard-00000.json', 'shard-00001.bin', 'shard-00001.json']);
    assert.deepEqual([...(await openFrameCache(out)).ids].sort(), ['blue', 'lime', 'red', 'yellow']);
  });

  it('--verify: checksums, sizes and the plan; a flipped byte, a lost shard and another manifest\'s shards are found', async () => {
    const out = path.join(dir, 'c-verify');
    await buildFrameCache([...entries, ...bad], { out, frames: 2, size: 8, shardSize: 3 });
    const ok = await verifyFrameCache(out);
    assert.deepEqual([ok.clips, ok.failed, ok.shards, ok.complete, ok.planned, ok.problems], [6, 2, 3, true, { shards: 3, items: 8 }, []]);
    const runVerify = (...args: string[]): Promise<{ code: number | null; stdout: string }> => new Promise((resolve) => {
      const child = spawn(process.execPath, [new URL('../pipelines/cli/main.js', import.meta.url).pathname, 'frames', '--verify', out, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
      let stdout = '';
      child.stdout.on('data', (d) => { stdout += d; });
      child.on('exit', (code) => resolve({ code, stdout }));
    });
    const good = await runVerify('--json');
    assert.equal(good.code, 0);
    const report = JSON.parse(good.stdout) as Record<string, unknown>;
    assert.deepEqual([report.clips, report.failed, report.shards, report.complete], [6, 2, 3, true]);

    const bin = path.join(out, 'shard-00001.bin');
    const bytes = readFileSync(bin);
    const flipped = Buffer.from(bytes);
    flipped[100] ^= 1;
    writeFileSync(bin, flipped);
    const r1 = await verifyFrameCache(out);
    assert.deepEqual([r1.clips, r1.shards, r1.complete], [3, 2, false]);
    assert.match(r1.problems.join('\n'), /shard-00001: shard-00001\.bin has SHA-256 [0-9a-f]{64}, its \.json records/);
    const bad1 = await runVerify();
    assert.equal(bad1.code, 1);
    assert.match(bad1.stdout, /NOT complete[^]*problem: shard-00001/);
    writeFileSync(bin, bytes);

    const json2 = readFileSync(path.join(out, 'shard-00002.json'));
    rmSync(path.join(out, 'shard-00002.json'));
    const r2 = await verifyFrameCache(out);
    assert.deepEqual([r2.shards, r2.complete, r2.leftovers, r2.problems], [2, false, 1, []]);
    writeFileSync(path.join(out, 'shard-00002.json'), json2);

    // Shards of another plan: same number of shards, other ids.
    const other = path.join(dir, 'c-verify-other');
    await buildFrameCache([entries[5], entries[4], entries[3], entries[2], entries[1], entries[0], ...bad], { out: other, frames: 2, size: 8, shardSize: 3 });
    for (const n of ['shard-00000', 'shard-00001']) for (const ext of ['.bin', '.json']) copyFileSync(path.join(other, n + ext), path.join(out, n + ext));
    const r3 = await verifyFrameCache(out);
    assert.deepEqual([r3.shards, r3.complete], [3, false]);
    assert.match(r3.problems.join('\n'), /other ids than the manifest's plan/);
  });

  describe('BatchLoader', () => {
    let cache: FrameCache;
    let table: CaptionTable;
    const L = 4;
    // A toy tokenizer: [length, first char, last char, 0] with mask over the first three.
    const encodeOne = (c: string): number[] => [c.length, c.charCodeAt(0), c.charCodeAt(c.length - 1), 0];
    const captionsOf: Record<string, string[]> = {
      red: ['r1', 'r2', 'r3'], lime: ['l1'], blue: ['b1', 'b2'], yellow: ['y1'], white: ['w1', 'w2'], magenta: ['m1'],
    };

    before(async () => {
      const out = path.join(dir, 'c4');
      await buildFrameCache(entries, { out, frames: 2, size: 8, shardSize: 4 });
      cache = await openFrameCache(out);
      const withCaptions = NAMES.map((id) => ({ id, captions: captionsOf[id] }));
      table = encodeCaptions([...withCaptions, { id: 'not-cached', captions: ['x'] }], (cs) => ({
        ids: Int32Array.from(cs.flatMap(encodeOne)),
        mask: Int32Array.from(cs.flatMap(() => [1, 1, 1, 0])),
      }));
    });

    it('an epoch visits every video once with one of its captions, frames normalised', async () => {
      const loader = new BatchLoader(cache, table, { batchSize: 4, seed: 3, dropLast: false });
      assert.deepEqual(loader.missing, ['not-cached']);
      assert.equal(loader.batchesPerEpoch, 2);
      const seen: string[] = [];
      for await (const b of loader) {
        const B = b.videoId.length;
        assert.deepEqual(b.framesShape, [B, 2, 8, 8, 3]);
        assert.equal(b.frames.length, B * 2 * 8 * 8 * 3);
        assert.deepEqual(b.textShape, [B, L]);
        for (let i = 0; i < B; i++) {
          const v = b.videoId[i];
          seen.push(v);
          assert.equal(table.videoIds[b.index[i]], v);
          const caption = captionsOf[v][b.index[i] - table.videoIds.indexOf(v)];
          assert.deepEqual([...b.ids.subarray(i * L, (i + 1) * L)], encodeOne(caption));
          assert.deepEqual([...b.mask.subarray(i * L, (i + 1) * L)], [1, 1, 1, 0]);
          const px = b.frames.subarray(i * 384 + 36 * 3, i * 384 + 36 * 3 + 3);
          const want = COLOURS[v].map((c, k) => (c / 255 - CLIP_MEAN[k]) / CLIP_STD[k]);
          want.forEach((w, k) => assert.ok(Math.abs(px[k] - w) < 0.3, `${v} channel ${k}: ${px[k]} vs ${w}`));
        }
      }
      assert.deepEqual(seen.sort(), [...NAMES].sort());
      assert.deepEqual(loader.state().epoch, 1);
    });

    it("captionsPerVideo 'all': every caption of the batch's videos, each row mapped to its video", async () => {
      const loader = new BatchLoader(cache, table, { batchSize: 3, seed: 3, captionsPerVideo: 'all' });
      for await (const b of loader) {
        const want = b.videoId.flatMap((v) => captionsOf[v]);
        assert.deepEqual(b.textShape, [want.length, L]);
        assert.deepEqual([...b.captionVideo!], b.videoId.flatMap((v, i) => captionsOf[v].map(() => i)));
        want.forEach((c, r) => assert.deepEqual([...b.ids.subarray(r * L, (r + 1) * L)], encodeOne(c)));
        assert.deepEqual(b.framesShape[0], 3);
      }
    });

    it('captionWeights: a caption of weight 0 is never drawn, a video of all-zero weights draws uniformly', async () => {
      // red's r1 and r3 weigh 0 (r2 always); blue's b1 weighs 3× b2; white's both 0.
      const weights = table.videoIds.map((v, r) => {
        const c = captionsOf[v]?.[r - table.videoIds.indexOf(v)];
        return c === 'r1' || c === 'r3' || c === 'w1' || c === 'w2' ? 0 : c === 'b1' ? 3 : 1;
      });
      const loader = new BatchLoader(cache, table, { batchSize: 6, seed: 9, captionWeights: weights, prefetch: false });
      const drawn = new Map<string, number>();
      for (let e = 0; e < 200; e++) {
        const b = await loader.next();
        b.index.forEach((r, i) => {
          const c = captionsOf[b.videoId[i]][r - table.videoIds.indexOf(b.videoId[i])];
          drawn.set(c, (drawn.get(c) ?? 0) + 1);
        });
      }
      assert.equal(drawn.get('r1'), undefined);
      assert.equal(drawn.get('r3'), undefined);
      assert.equal(drawn.get('r2'), 200);
      // b1 : b2 = 3 : 1 over 200 draws: 150 ± 4σ (σ = √(200·¾·¼) ≈ 6.1).
      assert.ok(Math.abs(drawn.get('b1')! - 150) < 25, `b1 drawn ${drawn.get('b1')} times of 200`);
      assert.ok(drawn.get('w1')! > 60 && drawn.get('w2')! > 60, `white ${drawn.get('w1')}/${drawn.get('w2')}`);
      assert.throws(() => new BatchLoader(cache, table, { batchSize: 2, captionWeights: [1, 2] }), /captionWeights must hold/);
    });

    it('is seeded: same seed same batches, other seed other order; captions vary across epochs', async () => {
      const run = async (seed: number, n: number): Promise<string[]> => {
        const l = new BatchLoader(cache, table, { batchSize: 3, seed });
        const out: string[] = [];
        for (let i = 0; i < n; i++) { const b = await l.next(); out.push(`${b.epoch}:${b.videoId.join(',')}:${b.index.join(',')}`); }
        return out;
      };
      const a = await run(1, 6);
      assert.deepEqual(await run(1, 6), a);
      assert.notDeepEqual(await run(2, 6), a);
      const l = new BatchLoader(cache, table, { batchSize: 6, seed: 9 });
      const redRows = new Set<number>();
      for (let e = 0; e < 30; e++) {
        const b = await l.next();
        redRows.add(b.index[b.videoId.indexOf('red')]);
      }
      assert.equal(redRows.size, 3, 'each of red\'s three captions is picked in some epoch');
    });

    it('captionGroups: greedy groups of the most token-sharing captions (hand-worked), every video once an epoch, exact on resume', async () => {
      // Token sets: 0 {1,2,3}, 1 {7,8,9}, 2 {1,2,4}, 3 {7,8,5}, 4 {1,9,6}, 5 {2,8,6}. From 0 the
      // Jaccard to 1…5 is 0, 2/4, 0, 1/5, 1/5: it takes 2; from 1, to 3, 4, 5: 2/4, 1/5, 1/5: 3; then 4 with 5.
      const sets = [[1, 2, 3], [7, 8, 9], [1, 2, 4], [7, 8, 5], [1, 9, 6], [2, 8, 6]];
      const hand: CaptionTable = {
        videoIds: sets.map((_, i) => `v${i}`), maxLen: 4,
        ids: Int32Array.from(sets.flatMap((t) => [...t, 0])), mask: Int32Array.from(sets.flatMap(() => [1, 1, 1, 0])),
      };
      const grouped = groupByCaption(sets.map((_, row) => ({ row })), hand, 2);
      assert.deepEqual(grouped.map((e) => e.row), [0, 2, 1, 3, 4, 5]);
      assert.deepEqual(groupByCaption(sets.map((_, row) => ({ row })), hand, 1).map((e) => e.row), [0, 1, 2, 3, 4, 5]);

      const loader = new BatchLoader(cache, table, { batchSize: 2, seed: 3, captionGroups: 2 });
      const seen: string[] = [];
      for (let i = 0; i < 3; i++) seen.push(...(await loader.next()).videoId);
      assert.deepEqual([...seen].sort(), [...NAMES].sort(), 'one epoch still visits every video once');
      const saved = JSON.parse(JSON.stringify(loader.state()));
      const want = [await loader.next(), await loader.next()];
      const resumed = new BatchLoader(cache, table, { batchSize: 2, seed: 3, captionGroups: 2, resumeFrom: saved, prefetch: false });
      for (const w of want) {
        const g = await resumed.next();
        assert.deepEqual([g.videoId, g.index], [w.videoId, w.index]);
      }
    });

    it('resumes from a saved state with exactly the same next batches, across an epoch boundary', async () => {
      const a = new BatchLoader(cache, table, { batchSize: 4, seed: 5 }); // 1 batch per epoch (6 videos, drop last)
      const b2 = new BatchLoader(cache, table, { batchSize: 2, seed: 5 }); // 3 batches per epoch
      for (const loader of [a, b2]) {
        for (let i = 0; i < 4; i++) await loader.next();
        const saved = JSON.parse(JSON.stringify(loader.state()));
        const want = [await loader.next(), await loader.next(), await loader.next()];
        const resumed = new BatchLoader(cache, table, { batchSize: loader.batchSize, seed: 999, resumeFrom: saved, prefetch: false });
        for (const w of want) {
          const g = await resumed.next();
          assert.deepEqual(g.videoId, w.videoId);
          assert.deepEqual(g.index, w.index);
          assert.deepEqual([g.epoch, g.step], [w.epoch, w.step]);
          assert.deepEqual(g.ids, w.ids);
          assert.deepEqual(g.frames, w.frames);
        }
        assert.deepEqual(resumed.state(), loader.state());
      }
      assert.throws(() => new BatchLoader(cache, table, { batchSize: 3, resumeFrom: { ...a.state() } }), /saved with batchSize 4/);
    });

    it('hands out tensors on request and leaks none when the caller disposes them', async () => {
      const loader = new BatchLoader(cache, table, { batchSize: 2, seed: 1, asTensor: true });
      const b0 = await loader.next();
      tf.dispose(b0.frames);
      const before = tf.memory().numTensors;
      for (let i = 0; i < 7; i++) {
        const b = await loader.next();
        assert.deepEqual(b.frames.shape, [2, 2, 8, 8, 3]);
        const mean = (await tidyData(() => tf.mean(b.frames)))[0];
        assert.ok(Number.isFinite(mean));
        tf.dispose(b.frames);
        assert.equal(tf.memory().numTensors, before);
      }
    });

    it('a failed read reports the error and leaves the position for a retry', async () => {
      let fail = true;
      const flaky: FrameCache = { ...cache, get: async (id) => { if (fail) throw new Error(`disk gone for ${id}`); return cache.get(id); } };
      const loader = new BatchLoader(flaky, table, { batchSize: 3, seed: 4 });
      await assert.rejects(loader.next(), /disk gone/);
      assert.deepEqual(loader.state(), { ...new BatchLoader(cache, table, { batchSize: 3, seed: 4 }).state() });
      fail = false;
      const got = await loader.next();
      const want = await new BatchLoader(cache, table, { batchSize: 3, seed: 4 }).next();
      assert.deepEqual([got.videoId, got.index, got.step], [want.videoId, want.index, 0]);
      assert.deepEqual(got.frames, want.frames);
    });

    it('randomFrames: per epoch one frame from each segment of the cached candidates, seeded by epoch and video, resumable', async () => {
      // Clips whose brightness rises frame by frame, so that every cached frame can be told apart.
      const ramps = [0, 1, 2, 3].map((k) => ({
        id: `ramp${k}`, video: makeClip(path.join(dir, `ramp${k}.mp4`), `color=c=black:s=16x16:r=8:d=2,format=gray,geq=lum='10+N*14+${k}'`),
        captions: [`ramp${k}`],
      }));
      const out = path.join(dir, 'ramps');
      await buildFrameCache(ramps, { out, frames: 8, size: 8 });
      const rc = await openFrameCache(out);
      const rt = encodeCaptions(ramps, (cs) => ({ ids: Int32Array.from(cs.flatMap(encodeOne)), mask: Int32Array.from(cs.flatMap(() => [1, 1, 1, 0])) }));
      const frameLen = 8 * 8 * 3;
      const full = new Map<string, Float32Array[]>();
      for (const r of ramps) {
        const { data } = await readNormalizedClips(rc, [r.id]);
        const frames = Array.from({ length: 8 }, (_, t) => data.slice(t * frameLen, (t + 1) * frameLen));
        // Precondition: the eight cached frames differ, so a frame's index is found by comparing.
        assert.equal(new Set(frames.map((f) => f[0])).size, 8, `${r.id}: cached frames are not all different`);
        full.set(r.id, frames);
      }
      const indexOf = (id: string, f: Float32Array): number => full.get(id)!.findIndex((g) => g.every((x, i) => x === f[i]));
      const make = (resumeFrom?: ReturnType<BatchLoader['state']>) => new BatchLoader(rc, rt, { batchSize: 2, seed: 5, randomFrames: { count: 2 }, resumeFrom });
      const loader = make();
      const picked = new Map<string, Set<number>>();
      const perEpoch: string[] = [];
      let saved: ReturnType<BatchLoader['state']> | undefined;
      const afterSave: Float32Array[] = [];
      for (let s = 0; s < 80; s++) {
        if (s === 5) saved = loader.state();
        const b = await loader.next();
        assert.deepEqual(b.framesShape, [2, 2, 8, 8, 3]);
        if (s >= 5 && s < 9) afterSave.push(b.frames);
        b.videoId.forEach((v, i) => {
          const idx = [0, 1].map((j) => indexOf(v, b.frames.subarray((i * 2 + j) * frameLen, (i * 2 + j + 1) * frameLen)));
          // Segment j of the 8 candidates is frames 4j … 4j + 3.
          idx.forEach((t, j) => assert.ok(t >= 4 * j && t < 4 * j + 4, `${v} frame ${j} is cached frame ${t}, outside segment ${j}`));
          idx.forEach((t, j) => { const k = `${v}/${j}`; if (!picked.has(k)) picked.set(k, new Set()); picked.get(k)!.add(t); });
          perEpoch[b.epoch] = `${perEpoch[b.epoch] ?? ''}${v}:${idx.join(',')};`;
        });
      }
      // 40 epochs draw every candidate of every segment (a given one is missed with probability (3/4)^40).
      for (const [k, set] of picked) assert.equal(set.size, 4, `${k} drew only candidates ${[...set]}`);
      assert.equal(new Set(perEpoch).size > 30, true, 'the frames drawn should change from epoch to epoch');
      // A resumed loader draws the same frames as the one that went on.
      const resumed = make(saved);
      for (const want of afterSave) assert.deepEqual((await resumed.next()).frames, want);
      assert.throws(() => new BatchLoader(rc, rt, { batchSize: 2, randomFrames: { count: 3 } }), /randomFrames.count must divide the cache's 8 frames per clip, got 3/);
    });

    it('refuses bad arguments with clear messages', () => {
      assert.throws(() => new BatchLoader(cache, table, { batchSize: 0 }), /batchSize must be a positive integer/);
      assert.throws(() => new BatchLoader(cache, table, { batchSize: 7 }), /6 cached videos with captions make no full batch of 7/);
      assert.throws(() => new BatchLoader(cache, { ...table, maxLen: 5 }, { batchSize: 2 }), /need \d+ entries/);
      assert.throws(() => new BatchLoader(cache, table, { batchSize: 2, resumeFrom: { epoch: 0, position: 3, rngState: 1, batchSize: 2 } }), /not a valid state/);
    });
  });

  describe('StreamLoader', () => {
    let out: string;
    let single: string;
    let table: CaptionTable;
    const L = 2;
    const captionsOf: Record<string, string[]> = { red: ['r1', 'r2', 'r3'], lime: ['l1'], blue: ['b1', 'b2'], yellow: ['y1'], white: ['w1'], magenta: ['m1'] };
    const rowOf = (v: string, c: string): number => table.videoIds.indexOf(v) + captionsOf[v].indexOf(c);

    before(async () => {
      out = path.join(dir, 's-3');
      single = path.join(dir, 's-1');
      await buildFrameCache([...entries, ...bad], { out, frames: 2, size: 8, shardSize: 3 });
      await buildFrameCache(entries, { out: single, frames: 2, size: 8, shardSize: 6 });
      const withCaptions = NAMES.map((id) => ({ id, captions: captionsOf[id] }));
      table = encodeCaptions([...withCaptions, { id: 'not-cached', captions: ['x'] }], (cs) => ({
        ids: Int32Array.from(cs.flatMap((c) => [c.charCodeAt(0), Number(c.slice(1))])),
        mask: Int32Array.from(cs.flatMap(() => [1, 1])),
      }));
    });

    it('an epoch hands out every cached video with a caption once, with its frames and one of its captions', async () => {
      const loader = await StreamLoader.open(out, table, { batchSize: 4, shuffleBuffer: 3, seed: 2, dropLast: false });
      assert.deepEqual([loader.clips, loader.batchesPerEpoch], [6, 2]);
      const seen: string[] = [];
      for (let b = 0; b < 2; b++) {
        const batch = await loader.next();
        assert.deepEqual([batch.epoch, batch.step], [0, b]);
        batch.videoId.forEach((v, i) => {
          seen.push(v);
          const [code, k] = [...batch.ids.subarray(i * L, (i + 1) * L)];
          const caption = `${String.fromCharCode(code)}${k}`;
          assert.ok(captionsOf[v].includes(caption), `${v} got caption ${caption}`);
          assert.equal(batch.index[i], rowOf(v, caption));
          const px = batch.frames.subarray(i * 384 + 36 * 3, i * 384 + 36 * 3 + 3);
          COLOURS[v].forEach((c, ch) => assert.ok(Math.abs(px[ch] - (c / 255 - CLIP_MEAN[ch]) / CLIP_STD[ch]) < 0.3, `${v} channel ${ch}`));
        });
      }
      assert.deepEqual(seen.sort(), [...NAMES].sort());
      assert.deepEqual(loader.state(), { epoch: 1, position: 0, seed: 2, batchSize: 4, shuffleBuffer: 3 });
    });

    it('the shuffle buffer: without shuffling, manifest order; with a buffer of K, the i-th clip out is among the first i + K + 1 in', async () => {
      const inOrder = await StreamLoader.open(out, table, { batchSize: 6, shuffleBuffer: 4, shuffle: false });
      assert.deepEqual((await inOrder.next()).videoId, NAMES);
      const firsts = new Set<string>();
      for (let seed = 0; seed < 40; seed++) {
        for (const K of [1, 2]) {
          const l = await StreamLoader.open(single, table, { batchSize: 6, shuffleBuffer: K, seed, prefetch: false });
          const got = (await l.next()).videoId;
          assert.deepEqual([...got].sort(), [...NAMES].sort());
          got.forEach((v, i) => assert.ok(NAMES.indexOf(v) <= i + K, `seed ${seed}, K ${K}: ${got.join(',')}`));
          if (K === 1) assert.deepEqual(got, NAMES);
        }
        firsts.add((await (await StreamLoader.open(single, table, { batchSize: 6, shuffleBuffer: 6, seed })).next()).videoId[0]);
      }
      assert.equal(firsts.size, 6, 'with a buffer as large as the data, any clip can come first');
    });

    it('resumes from a saved state with exactly the same batches, across epochs, and is seeded', async () => {
      const opts = { batchSize: 2, shuffleBuffer: 2, seed: 7 };
      const a = await StreamLoader.open(out, table, opts);
      const run: string[] = [];
      for (let i = 0; i < 4; i++) run.push((await a.next()).videoId.join());
      const saved = JSON.parse(JSON.stringify(a.state()));
      assert.deepEqual(saved, { epoch: 1, position: 1, seed: 7, batchSize: 2, shuffleBuffer: 2 });
      const want = [];
      for (let i = 0; i < 4; i++) want.push(await a.next());
      const resumed = await StreamLoader.open(out, table, { ...opts, resumeFrom: saved });
      for (const w of want) {
        const g = await resumed.next();
        assert.deepEqual([g.videoId, g.index, g.epoch, g.step], [w.videoId, w.index, w.epoch, w.step]);
        assert.deepEqual(g.frames, w.frames);
        assert.deepEqual(g.ids, w.ids);
      }
      const again = await StreamLoader.open(out, table, opts);
      for (let i = 0; i < 4; i++) assert.equal((await again.next()).videoId.join(), run[i]);
      const other = await StreamLoader.open(out, table, { ...opts, seed: 8 });
      const otherRun: string[] = [];
      for (let i = 0; i < 4; i++) otherRun.push((await other.next()).videoId.join());
      assert.notDeepEqual(otherRun, run);
      await assert.rejects(StreamLoader.open(out, table, { ...opts, shuffleBuffer: 3, resumeFrom: saved }), /saved with batchSize 2 and shuffleBuffer 2/);
    });

    it('a position saved by the other loader (BatchLoader ↔ StreamLoader) is refused, naming both', async () => {
      const stream = await StreamLoader.open(out, table, { batchSize: 2, shuffleBuffer: 2, seed: 7 });
      await stream.next();
      const streamPos = JSON.parse(JSON.stringify(stream.state()));
      const cache = await openFrameCache(out);
      const random = new BatchLoader(cache, table, { batchSize: 2, seed: 7 });
      await random.next();
      const randomPos = JSON.parse(JSON.stringify(random.state()));
      assert.deepEqual([loaderKindOf(streamPos), loaderKindOf(randomPos), loaderKindOf({ epoch: 0, position: 0 }), loaderKindOf(null)], ['streaming', 'random-access', undefined, undefined]);
      assert.throws(() => new BatchLoader(cache, table, { batchSize: 2, resumeFrom: streamPos }), /^Error: BatchLoader: resumeFrom .*"shuffleBuffer":2.* is a StreamLoader's position .*resume with StreamLoader/);
      await assert.rejects(StreamLoader.open(out, table, { batchSize: 2, shuffleBuffer: 2, resumeFrom: randomPos }), /^Error: StreamLoader: resumeFrom .*"rngState".* is a BatchLoader's position .*resume with BatchLoader/);
    });

    it('hands out tensors that the caller disposes, leaking none; refuses bad options', async () => {
      const loader = await StreamLoader.open(out, table, { batchSize: 2, shuffleBuffer: 2, asTensor: true, videoIds: ['red', 'lime', 'blue', 'white'] });
      assert.equal(loader.clips, 4);
      const before = tf.memory().numTensors;
      for (let i = 0; i < 5; i++) {
        const b = await loader.next();
        assert.deepEqual(b.frames.shape, [2, 2, 8, 8, 3]);
        tf.dispose(b.frames);
        assert.equal(tf.memory().numTensors, before);
      }
      await assert.rejects(StreamLoader.open(out, table, { batchSize: 2, shuffleBuffer: 0 }), /shuffleBuffer must be a positive integer/);
      await assert.rejects(StreamLoader.open(out, table, { batchSize: 7, shuffleBuffer: 2 }), /6 cached videos with captions .* make no full batch of 7/);
      await assert.rejects(StreamLoader.open(path.join(dir, 'nowhere'), table, { batchSize: 2, shuffleBuffer: 2 }), /index\.json is missing/);
    });

    const captionAt = (row: number): string => `${String.fromCharCode(table.ids[row * L])}${table.ids[row * L + 1]}`;

    it("captionsPerVideo 'all': every caption of each clip, each text row mapped to its clip", async () => {
      const loader = await StreamLoader.open(out, table, { batchSize: 4, shuffleBuffer: 3, seed: 5, captionsPerVideo: 'all', dropLast: false });
      const seen: string[] = [];
      for (let b = 0; b < loader.batchesPerEpoch; b++) {
        const batch = await loader.next();
        const want = batch.videoId.flatMap((v) => captionsOf[v]);
        assert.deepEqual(batch.textShape, [want.length, L]);
        assert.deepEqual(batch.framesShape[0], batch.videoId.length);
        assert.deepEqual(batch.index.map(captionAt), want);
        assert.deepEqual([...batch.captionVideo!], batch.videoId.flatMap((v, i) => captionsOf[v].map(() => i)));
        seen.push(...batch.videoId);
      }
      assert.deepEqual(seen.sort(), [...NAMES].sort());
      const one = await StreamLoader.open(out, table, { batchSize: 4, shuffleBuffer: 3, seed: 5 });
      assert.equal((await one.next()).captionVideo, undefined);
      await assert.rejects(StreamLoader.open(out, table, { batchSize: 2, shuffleBuffer: 2, captionsPerVideo: 'some' as 'all' }), /captionsPerVideo must be 'one' or 'all', got "some"/);
    });

    it('captionWeights: weight 0 never drawn, 1 : 3 drawn about 1 : 3, all-zero drawn uniformly; a resume replays the draws', async () => {
      // red: r1 0, r2 1, r3 3; blue: b1 0, b2 0; the rest 1.
      const wOf: Record<string, number> = { r1: 0, r2: 1, r3: 3, b1: 0, b2: 0 };
      const weights = table.videoIds.map((_, r) => wOf[captionAt(r)] ?? 1);
      const opts = { batchSize: 6, shuffleBuffer: 2, seed: 4, captionWeights: weights, prefetch: false };
      const loader = await StreamLoader.open(out, table, opts);
      const drawn = new Map<string, number>();
      const epochs = 240;
      for (let e = 0; e < epochs; e++) {
        for (const r of (await loader.next()).index) drawn.set(captionAt(r), (drawn.get(captionAt(r)) ?? 0) + 1);
      }
      assert.equal(drawn.get('r1'), undefined);
      // r3 of red's 240 draws with p = ¾: 180 ± 4σ (σ = √(240·¾·¼) ≈ 6.7); b1 and b2 at ½: 120 ± 4σ (σ ≈ 7.7).
      assert.equal(drawn.get('r2')! + drawn.get('r3')!, epochs);
      assert.ok(Math.abs(drawn.get('r3')! - 180) < 27, `r3 drawn ${drawn.get('r3')} times of ${epochs}`);
      assert.ok(Math.abs(drawn.get('b1')! - 120) < 31, `b1 drawn ${drawn.get('b1')} times of ${epochs}`);
      const saved = loader.state();
      const want: number[][] = [];
      for (let i = 0; i < 3; i++) want.push((await loader.next()).index);
      const resumed = await StreamLoader.open(out, table, { ...opts, resumeFrom: saved });
      for (const w of want) assert.deepEqual((await resumed.next()).index, w);
      await assert.rejects(StreamLoader.open(out, table, { ...opts, captionWeights: [1, 2] }), /captionWeights must hold 10 finite weights/);
    });

    it('randomFrames: the frames BatchLoader picks for each video and epoch, one per segment, and again on resume', async () => {
      const ramps = [0, 1, 2, 3].map((k) => ({
        id: `sramp${k}`, video: makeClip(path.join(dir, `sramp${k}.mp4`), `color=c=black:s=16x16:r=8:d=2,format=gray,geq=lum='10+N*14+${k}'`),
        captions: [`r${k}`],
      }));
      const rdir = path.join(dir, 's-ramps');
      await buildFrameCache(ramps, { out: rdir, frames: 8, size: 8, shardSize: 2 });
      const rt = encodeCaptions(ramps, (cs) => ({ ids: Int32Array.from(cs.flatMap((c) => [c.charCodeAt(0), Number(c.slice(1))])), mask: Int32Array.from(cs.flatMap(() => [1, 1])) }));
      const frameLen = 8 * 8 * 3;
      const rc = await openFrameCache(rdir);
      const full = new Map<string, Float32Array>();
      for (const r of ramps) full.set(r.id, (await readNormalizedClips(rc, [r.id])).data);
      const clipFrames = (b: { frames: Float32Array; videoId: string[] }): Map<string, Float32Array> =>
        new Map(b.videoId.map((v, i) => [v, b.frames.slice(i * 2 * frameLen, (i + 1) * 2 * frameLen)]));
      const batchLoader = new BatchLoader(rc, rt, { batchSize: 4, seed: 5, randomFrames: { count: 2 } });
      const opts = { batchSize: 2, shuffleBuffer: 2, seed: 5, randomFrames: { count: 2 } };
      const stream = await StreamLoader.open(rdir, rt, opts);
      assert.equal(stream.frames, 2);
      let saved: StreamLoaderState | undefined;
      const afterSave: Float32Array[] = [];
      const perEpoch = new Set<string>();
      for (let e = 0; e < 12; e++) {
        const want = clipFrames(await batchLoader.next());
        const got = new Map<string, Float32Array>();
        for (let s = 0; s < 2; s++) {
          if (e === 3 && s === 1) saved = stream.state();
          const b = await stream.next();
          assert.deepEqual(b.framesShape, [2, 2, 8, 8, 3]);
          if (saved && afterSave.length < 4) afterSave.push(b.frames);
          for (const [v, f] of clipFrames(b)) got.set(v, f);
        }
        assert.deepEqual([...got.keys()].sort(), ramps.map((r) => r.id));
        for (const [v, f] of got) {
          assert.deepEqual(f, want.get(v), `epoch ${e}, ${v}: StreamLoader picked other frames than BatchLoader`);
          // Frame j comes from segment j (cached frames 4j … 4j + 3).
          const idx = [0, 1].map((j) => [0, 1, 2, 3, 4, 5, 6, 7].find((t) => full.get(v)!.subarray(t * frameLen, (t + 1) * frameLen).every((x, i) => x === f[j * frameLen + i])));
          idx.forEach((t, j) => assert.ok(t !== undefined && t >= 4 * j && t < 4 * j + 4, `${v} frame ${j} is cached frame ${t}`));
          perEpoch.add(`${e}:${v}:${idx.join(',')}`);
        }
      }
      assert.ok(new Set([...perEpoch].map((k) => k.slice(k.indexOf(':') + 1))).size > 8, 'the frames drawn should change from epoch to epoch');
      const resumed = await StreamLoader.open(rdir, rt, { ...opts, resumeFrom: saved });
      for (const want of afterSave) assert.deepEqual((await resumed.next()).frames, want);
      await assert.rejects(StreamLoader.open(rdir, rt, { ...opts, randomFrames: { count: 3 } }), /randomFrames.count must divide the cache's 8 frames per clip, got 3/);
    });

    it('a shard whose bytes no longer match its recorded SHA-256 is named when read', async () => {
      const copy = path.join(dir, 's-corrupt');
      mkdirSync(copy);
      for (const f of readdirSync(out)) copyFileSync(path.join(out, f), path.join(copy, f));
      const bin = path.join(copy, 'shard-00001.bin');
      const bytes = readFileSync(bin);
      bytes[5] ^= 0xff;
      writeFileSync(bin, bytes);
      const loader = await StreamLoader.open(copy, table, { batchSize: 6, shuffleBuffer: 2, shuffle: false });
      await assert.rejects(loader.next(), /shard-00001\.bin is corrupt \(SHA-256 [0-9a-f]{64}, its \.json records/);
      await assert.rejects(loader.next(), /an earlier read failed/);
    });
  });
});
