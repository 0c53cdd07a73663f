import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { captionSourcesOf, humanCaptions, readManifest, writeManifest } from '../src/data/manifest.js';
import { CsvParser, readCsvManifest, readMsrvtt, readMsrvtt1kA, readMsrvttSplits, readWebvid } from '../src/data/readers.js';
import type { ManifestEntry } from '../src/data/types.js';

// Compiled to dist/test; fixtures stay in the source tree.
const FIX = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test/fixtures/manifests');

const lines = (errors: { line?: number }[]) => errors.map((e) => e.line);

describe('manifest: native JSONL', () => {
  const file = path.join(FIX, 'native', 'manifest.jsonl');
  const root = path.join(FIX, 'native');

  it('reads good lines, resolving paths against the manifest folder', async () => {
    const m = await readManifest(file);
    assert.equal(m.root, root);
    assert.deepEqual(m.entries, [
      { id: 'a', video: path.join(root, 'clips/a.mp4'), captions: ['a dog runs'], split: 'train', concepts: ['animal:dog'] },
      { id: 'b', video: path.join(root, 'clips/b.mp4'), captions: ['a cat sleeps', 'the cat naps'], start: 1.5, end: 4, split: 'test', noisy: false },
      { id: 'j', video: path.join(root, 'clips/j.mp4'), captions: ['last good line'], split: 'train', noisy: true },
    ]);
  });

  it('reports each bad line with file and line number instead of failing', async () => {
    const m = await readManifest(file);
    assert.deepEqual(lines(m.errors), [4, 5, 6, 7, 8, 9, 10, 11, 12]);
    for (const e of m.errors) assert.equal(e.source, file);
    const reason = (line: number) => m.errors.find((e) => e.line === line)!.reason;
    assert.match(reason(4), /missing "caption"/);
    assert.match(reason(5), /invalid JSON/);
    assert.match(reason(6), /duplicate id "a" \(first on line 1\)/);
    assert.match(reason(7), /outside the manifest root/);
    assert.match(reason(8), /outside the manifest root/);
    assert.match(reason(9), /"id" must be a non-empty string, got a number/);
    assert.match(reason(10), /"end" \(2\) must be after "start" \(5\)/);
    assert.match(reason(11), /"noisy" must be true or false/);
    assert.match(reason(12), /expected a JSON object, got an array/);
    assert.equal(m.errors.find((e) => e.line === 6)!.id, 'a');
  });

  it('accepts paths outside the root only when allowed', async () => {
    const m = await readManifest(file, { allowOutsideRoot: true });
    assert.deepEqual(m.entries.map((e) => e.id), ['a', 'b', 'e', 'f', 'j']);
    assert.equal(m.entries[2].video, path.join(FIX, 'outside', 'e.mp4'));
    assert.equal(m.entries[3].video, path.resolve('/elsewhere/f.mp4'));
    assert.deepEqual(lines(m.errors), [4, 5, 6, 9, 10, 11, 12]);
  });

  it('filters by split', async () => {
    const m = await readManifest(file, { split: 'train' });
    assert.deepEqual(m.entries.map((e) => e.id), ['a', 'j']);
  });

  it('counts lines correctly in a CRLF file with a byte-order mark', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vlm-manifest-'));
    try {
      const f = path.join(dir, 'm.jsonl');
      await writeFile(f, '\uFEFF{"id":"x","video":"x.mp4","caption":"one"}\r\n{"id":"y"}\r\n\r\n{"id":"z","video":"z.mp4","caption":"two"}\r\n');
      const m = await readManifest(f);
      assert.deepEqual(m.entries.map((e) => [e.id, e.video]), [['x', path.join(dir, 'x.mp4')], ['z', path.join(dir, 'z.mp4')]]);
      assert.deepEqual(lines(m.errors), [2]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('throws an error naming a missing file', async () => {
    const missing = path.join(os.tmpdir(), 'vlm-no-such-dir', 'nothing.jsonl');
    await assert.rejects(readManifest(missing), (e: Error) => e.message.includes(missing));
  });

  it('keeps a noisy pair\'s noiseKind through a write and a read, and refuses one on a clean pair', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vlm-manifest-'));
    try {
      const f = path.join(dir, 'm.jsonl');
      const e: ManifestEntry = { id: 'n', video: path.join(dir, 'n.mp4'), captions: ['x'], noisy: true, noiseKind: 'swap' };
      await writeManifest(f, [e]);
      assert.equal(await readFile(f, 'utf8'), '{"id":"n","video":"n.mp4","caption":"x","noisy":true,"noiseKind":"swap"}\n');
      assert.deepEqual((await readManifest(f)).entries, [e]);
      await writeFile(f, '{"id":"c","video":"c.mp4","caption":"x","noisy":false,"noiseKind":"swap"}\n{"id":"d","video":"d.mp4","caption":"x","noisy":true,"noiseKind":3}\n');
      const m = await readManifest(f);
      assert.deepEqual(m.entries, []);
      assert.match(m.errors[0].reason, /"noiseKind" is only meaningful with "noisy": true/);
      assert.match(m.errors[1].reason, /"noiseKind" must be a non-empty string, got a number/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('writes paths relative to the manifest folder, absolute outside it, in a fixed key order', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vlm-manifest-'));
    try {
      const f = path.join(dir, 'sub', 'out.jsonl');
      const entries: ManifestEntry[] = [
        { id: 'p', video: path.join(dir, 'sub', 'clips', 'p.mp4'), captions: ['one'], split: 'train', concepts: ['k:v'], noisy: false },
        { id: 'q', video: path.join(dir, 'q.mp4'), captions: ['two', 'three'], start: 0, end: 2.5 },
      ];
      await writeManifest(f, entries);
      const text = await readFile(f, 'utf8');
      assert.equal(text,
        '{"id":"p","video":"clips/p.mp4","caption":"one","concepts":["k:v"],"split":"train","noisy":false}\n'
        + `{"id":"q","video":${JSON.stringify(path.join(dir, 'q.mp4'))},"captions":["two","three"],"start":0,"end":2.5}\n`);
      await assert.rejects(writeManifest(f, [entries[0], entries[0]]), /duplicate id "p"/);
      await writeManifest(f, entries, { root: dir });
      assert.match(await readFile(f, 'utf8'), /"video":"sub\/clips\/p\.mp4".*\n.*"video":"q\.mp4"/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('manifest: caption sources', () => {
  it('a caption may be { text, source }: read, written back, errors named; evaluation keeps human captions only', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vlm-sources-'));
    try {
      const file = path.join(dir, 'm.jsonl');
      writeFileSync(file, [
        JSON.stringify({ id: 'a', video: 'a.mp4', captions: ['a dog runs', { text: 'a brown dog running on grass', source: 'generated' }, { text: 'dog', source: 'human' }] }),
        JSON.stringify({ id: 'b', video: 'b.mp4', caption: { text: 'only generated', source: 'generated' } }),
        JSON.stringify({ id: 'c', video: 'c.mp4', captions: ['plain'] }),
        JSON.stringify({ id: 'd', video: 'd.mp4', captions: [{ text: 'x', source: 'bad source!' }] }),
        JSON.stringify({ id: 'e', video: 'e.mp4', captions: [{ txt: 'x' }] }),
      ].join('\n'));
      const m = await readManifest(file);
      assert.deepEqual(m.entries.map((e) => [e.id, e.captions, e.captionSources]), [
        ['a', ['a dog runs', 'a brown dog running on grass', 'dog'], ['human', 'generated', 'human']],
        ['b', ['only generated'], ['generated']],
        ['c', ['plain'], undefined],
      ]);
      assert.match(m.errors[0].reason, /"captions"\[0\]\.source must be a name/);
      assert.match(m.errors[1].reason, /"captions"\[0\] must be a non-empty string or \{ "text"/);
      assert.deepEqual(captionSourcesOf(m.entries[2]), ['human']);
      assert.deepEqual(humanCaptions(m.entries).map((e) => [e.id, e.captions, e.captionSources]), [['a', ['a dog runs', 'dog'], undefined], ['c', ['plain'], undefined]]);
      const out = path.join(dir, 'out.jsonl');
      await writeManifest(out, m.entries);
      const back = await readManifest(out);
      assert.deepEqual(back.entries, m.entries);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('manifest: CSV parser', () => {
  it('handles quotes, doubled quotes and CRLF split across chunks', () => {
    const p = new CsvParser();
    const recs = [...p.push('a,"b'), ...p.push('""c",d\r'), ...p.push('\ne,f'), ...p.end()];
    assert.deepEqual(recs, [{ line: 1, fields: ['a', 'b"c', 'd'] }, { line: 2, fields: ['e', 'f'] }]);
  });

  it('keeps line breaks inside quotes and numbers records by their first line', () => {
    const p = new CsvParser();
    const recs = [...p.push('x,"l1\r\nl2"\r\n\r\ny,z\r\n,\n""\n'), ...p.end()];
    assert.deepEqual(recs, [
      { line: 1, fields: ['x', 'l1\r\nl2'] },
      { line: 4, fields: ['y', 'z'] },
      { line: 5, fields: ['', ''] },
      { line: 6, fields: [''] },
    ]);
  });

  it('reports an unterminated quote and text after a closing quote', () => {
    const p = new CsvParser();
    const recs = [...p.push('a,b\n"x"y,c\n"open,\nstill'), ...p.end()];
    assert.equal(recs.length, 3);
    assert.deepEqual(recs[0], { line: 1, fields: ['a', 'b'] });
    assert.equal(recs[1].line, 2);
    assert.match((recs[1] as { error: string }).error, /after a closing quote in field 1/);
    assert.equal(recs[2].line, 3);
    assert.match((recs[2] as { error: string }).error, /unterminated/);
  });
});

describe('manifest: MSR-VTT reader', () => {
  const json = path.join(FIX, 'msrvtt', 'MSRVTT_data.json');
  const videoDir = path.join(FIX, 'msrvtt', 'videos');

  it('reads MSRVTT_data.json: one entry per video, captions by sen_id, category concept', async () => {
    const m = await readMsrvtt(json, { videoDir });
    assert.equal(m.root, videoDir);
    assert.deepEqual(m.entries, [
      { id: 'video0', video: path.join(videoDir, 'video0.mp4'), captions: ['first caption of video zero', 'second caption of video zero'], split: 'train', concepts: ['category:9'] },
      { id: 'video1', video: path.join(videoDir, 'video1.mp4'), captions: ['a man drives a car'], split: 'train', concepts: ['category:16'] },
      { id: 'video2', video: path.join(videoDir, 'video2.mp4'), captions: ['people dance'], split: 'validate', concepts: ['category:9'] },
      { id: 'video3', video: path.join(videoDir, 'video3.mp4'), captions: ['a chef cooks', 'someone is cooking'], split: 'test', concepts: ['category:3'] },
    ]);
    const reasons = m.errors.map((e) => e.reason).join('\n');
    assert.equal(m.errors.length, 5, reasons);
    assert.match(reasons, /sentences\[7\] needs .* non-empty caption/);
    assert.match(reasons, /video "video4" has no sentences/);
    assert.match(reasons, /videos\[5\] needs a video_id/);
    assert.match(reasons, /videos\[6\] needs a video_id that is a plain file name/);
    assert.match(reasons, /video "video99", which is not in "videos"/);
  });

  it('filters by split', async () => {
    const m = await readMsrvtt(json, { videoDir, split: 'train' });
    assert.deepEqual(m.entries.map((e) => e.id), ['video0', 'video1']);
  });

  it('reads the 1k-A test CSV (CRLF, quoted sentence with commas and quotes)', async () => {
    const csv = path.join(FIX, 'msrvtt', 'MSRVTT_JSFUSION_test.csv');
    const m = await readMsrvtt1kA(csv, { videoDir });
    assert.deepEqual(m.entries, [
      { id: 'video7579', video: path.join(videoDir, 'video7579.mp4'), captions: ['a girl, wearing red, sings "hello" to the crowd'], split: 'test' },
      { id: 'video7725', video: path.join(videoDir, 'video7725.mp4'), captions: ['a man is talking about cars'], split: 'test' },
    ]);
    assert.deepEqual(lines(m.errors), [4, 5]);
    assert.match(m.errors[0].reason, /empty sentence/);
    assert.match(m.errors[1].reason, /not a plain file name/);
  });

  it('the 9k/1k-A protocol: train + validate less the 1k-A videos, the 1k-A list as test; "full" keeps the JSON\'s splits', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vlm-msrvtt-'));
    try {
      copyFileSync(json, path.join(dir, 'MSRVTT_data.json'));
      // The test list beside the annotations holds video1 (a JSON train video) and video3.
      writeFileSync(path.join(dir, 'MSRVTT_JSFUSION_test.csv'), 'key,vid_key,video_id,sentence\nret0,msr1,video1,a man drives\nret1,msr3,video3,a chef cooks\n');
      const s = await readMsrvttSplits(path.join(dir, 'MSRVTT_data.json'), { videoDir });
      assert.deepEqual(s.train.map((e) => e.id), ['video0', 'video2']);
      assert.deepEqual(s.train[0].captions, ['first caption of video zero', 'second caption of video zero']);
      assert.deepEqual(s.test.map((e) => [e.id, e.captions]), [['video1', ['a man drives']], ['video3', ['a chef cooks']]]);
      const full = await readMsrvttSplits(path.join(dir, 'MSRVTT_data.json'), { videoDir, protocol: 'full' });
      assert.deepEqual(full.train.map((e) => e.id), ['video0', 'video1']);
      assert.deepEqual(full.val.map((e) => e.id), ['video2']);
      assert.deepEqual(s.val, []);
      assert.deepEqual(full.test.map((e) => e.id), ['video3']);
      await assert.rejects(readMsrvttSplits(json, { videoDir, testCsv: path.join(dir, 'missing.csv') }), /missing\.csv does not exist[\s\S]*data\.testCsv/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('throws for a file that is not MSR-VTT JSON', async () => {
    await assert.rejects(readMsrvtt(path.join(FIX, 'native', 'manifest.jsonl'), { videoDir }), /not valid JSON/);
  });
});

describe('manifest: WebVid reader', () => {
  const csv = path.join(FIX, 'webvid', 'results_2M_val.csv');

  it('reads videoid/page_dir/name with multi-line and quoted captions', async () => {
    const videoDir = '/data/webvid';
    const m = await readWebvid(csv, { videoDir, split: 'val' });
    assert.deepEqual(m.entries, [
      { id: '1066692580', video: path.resolve('/data/webvid/028751_028800/1066692580.mp4'), captions: ['Young woman, smiling, walks on the beach'], split: 'val' },
      { id: '21179416', video: path.resolve('/data/webvid/028751_028800/21179416.mp4'), captions: ['Aerial shot of a city at night'], split: 'val' },
      { id: '1234', video: path.resolve('/data/webvid/000001_000050/1234.mp4'), captions: ['A caption\non two lines'], split: 'val' },
      { id: '77', video: path.resolve('/data/webvid/000001_000050/77.mp4'), captions: ['dog "rex" runs'], split: 'val' },
    ]);
    assert.deepEqual(lines(m.errors), [6, 7]);
    assert.match(m.errors[0].reason, /page_dir "\.\." is not a plain folder name/);
    assert.match(m.errors[1].reason, /expected 5 fields as in the header, found 3/);
  });

  it('keeps only videos present on disk when asked', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vlm-webvid-'));
    try {
      await mkdir(path.join(dir, '028751_028800'));
      await mkdir(path.join(dir, '000001_000050'));
      await writeFile(path.join(dir, '028751_028800', '21179416.mp4'), 'x');
      await writeFile(path.join(dir, '000001_000050', '77.mp4'), 'x');
      const m = await readWebvid(csv, { videoDir: dir, onlyExisting: true });
      assert.deepEqual(m.entries.map((e) => e.id), ['21179416', '77']);
      assert.ok(m.errors.some((e) => /^2 rows skipped/.test(e.reason)), JSON.stringify(m.errors));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('names the missing column', async () => {
    await assert.rejects(readWebvid(path.join(FIX, 'generic', 'pairs.csv'), { videoDir: '/x' }), /no column "videoid"/);
  });
});

describe('manifest: generic CSV reader', () => {
  const csv = path.join(FIX, 'generic', 'pairs.csv');
  const root = path.join(FIX, 'generic');
  const options = {
    delimiter: ';', idColumn: 'clip', videoColumn: 'file', captionColumn: 'text', startColumn: 't0', endColumn: 't1',
    splitColumn: 'part', conceptsColumn: 'tags',
  };

  it('maps columns, merges rows of the same video and reports bad rows by line', async () => {
    const m = await readCsvManifest(csv, options);
    assert.deepEqual(m.entries, [
      { id: 'c1', video: path.join(root, 'videos/c1.mp4'), captions: ['a person cooks', 'someone is cooking pasta'], start: 0, end: 5, split: 'train', concepts: ['kitchen', 'cooking'] },
      { id: 'c2', video: path.join(root, 'videos/c2.mp4'), captions: ['text; with semicolon'], split: 'test' },
      { id: 'c6', video: path.join(root, 'videos/c6.mp4'), captions: ['fine again'], start: 1.25, end: 3.5, split: 'val', concepts: ['x'] },
    ]);
    assert.deepEqual(lines(m.errors), [5, 6, 7, 8]);
    assert.match(m.errors[0].reason, /start "abc" is not a number/);
    assert.match(m.errors[1].reason, /already used on line 2 for a different video/);
    assert.match(m.errors[2].reason, /outside the manifest root/);
    assert.match(m.errors[3].reason, /after a closing quote/);
  });

  it('filters by split and needs the split column for that', async () => {
    const m = await readCsvManifest(csv, { ...options, split: 'val' });
    assert.deepEqual(m.entries.map((e) => e.id), ['c6']);
    await assert.rejects(readCsvManifest(csv, { delimiter: ';', split: 'val' }), /needs options.splitColumn/);
  });

  it('throws naming the file when it is missing', async () => {
    const missing = path.join(root, 'absent.csv');
    await assert.rejects(readCsvManifest(missing), (e: Error) => e.message.includes(missing));
  });
});
