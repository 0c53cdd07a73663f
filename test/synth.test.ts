import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { readManifest, writeManifest } from '../src/data/manifest.js';
import { DEFAULT_META_SET_DIR, drawMetaSet, drawRecipePath, readMetaSet } from '../src/data/metaSet.js';
import { generateSynthCorpus, planSynthCorpus, synthManifestEntries, SynthParamsSchema } from '../src/data/synth.js';
import { drawClip, type ClipSpec } from '../src/data/synthDraw.js';
import type { ManifestEntry } from '../src/data/types.js';
import { ffmpegBinary, ffprobeBinary } from '../src/video/binaries.js';

/** Caption words and the concept each one states, written out independently of the generator's templates. */
const WORD_CONCEPT: Record<string, string> = {
  small: 'size:small', little: 'size:small', tiny: 'size:small', large: 'size:large', big: 'size:large',
  slowly: 'speed:slow', gently: 'speed:slow', slow: 'speed:slow',
  quickly: 'speed:fast', rapidly: 'speed:fast', fast: 'speed:fast', quick: 'speed:fast',
  left: 'dir:left', leftward: 'dir:left', right: 'dir:right', rightward: 'dir:right',
  up: 'dir:up', upward: 'dir:up', down: 'dir:down', downward: 'dir:down',
  red: 'color:red', green: 'color:green', blue: 'color:blue', yellow: 'color:yellow', purple: 'color:purple', cyan: 'color:cyan',
  circle: 'shape:circle', square: 'shape:square', triangle: 'shape:triangle', cross: 'shape:cross',
};
function statedConcepts(caption: string): string[] {
  return [...new Set(caption.toLowerCase().split(/[^a-z]+/).filter((w) => w in WORD_CONCEPT).map((w) => WORD_CONCEPT[w]))].sort();
}
const sorted = (xs: readonly string[]) => [...xs].sort();
const countBy = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());
const valuesWithPrefix = (entries: ManifestEntry[], prefix: string) => entries.map((e) => e.concepts!.find((c) => c.startsWith(prefix))!);

describe('synth: corpus plan', () => {
  const plan = planSynthCorpus({ seed: 11 });
  const entries = synthManifestEntries(plan, '/corpus');
  const train = entries.filter((e) => e.split === 'train');

  it('uses the documented default sizes: 720 clips = 504 train, 72 meta, 144 test', () => {
    assert.deepEqual([train.length, entries.filter((e) => e.split === 'meta').length, entries.filter((e) => e.split === 'test').length], [504, 72, 144]);
  });

  it('is deterministic for a seed and differs for another seed', () => {
    const again = synthManifestEntries(planSynthCorpus({ seed: 11 }), '/corpus');
    assert.deepEqual(again, entries);
    const other = synthManifestEntries(planSynthCorpus({ seed: 12 }), '/corpus');
    assert.notDeepEqual(other.map((e) => e.captions[0]), entries.map((e) => e.captions[0]));
  });

  it('misaligns round(0.3 · 504) = 151 train captions, exactly the flagged ones', () => {
    let contradicted = 0;
    for (const e of train) {
      const wrong = statedConcepts(e.captions[0]).join() !== sorted(e.concepts!).join();
      assert.equal(wrong, e.noisy, `${e.id}: "${e.captions[0]}" vs ${e.concepts!.join(',')}`);
      if (wrong) contradicted += 1;
    }
    assert.equal(contradicted, 151);
  });

  it('gives clean captions that state all five attributes of their clip', () => {
    for (const e of entries.filter((x) => !x.noisy)) assert.deepEqual(statedConcepts(e.captions[0]), sorted(e.concepts!), e.captions[0]);
  });

  it('long-tails the train split over colours with head/tail close to --imbalance', () => {
    for (const imbalance of [20, 5]) {
      const t = synthManifestEntries(planSynthCorpus({ seed: 3, imbalance }), '/c').filter((e) => e.split === 'train');
      const counts = ['red', 'green', 'blue', 'yellow', 'purple', 'cyan'].map((c) => countBy(valuesWithPrefix(t, 'color:')).get(`color:${c}`) ?? 0);
      for (let i = 1; i < counts.length; i++) assert.ok(counts[i] <= counts[i - 1], `colour counts not decreasing: ${counts}`);
      const ratio = counts[0] / counts[counts.length - 1];
      assert.ok(Math.abs(ratio - imbalance) / imbalance < 0.1, `head/tail ${ratio} for imbalance ${imbalance} (${counts})`);
    }
  });

  it('keeps meta and test clean, balanced over every attribute, and without repeated combinations', () => {
    for (const [split, n] of [['meta', 72], ['test', 144]] as const) {
      const s = entries.filter((e) => e.split === split);
      assert.equal(s.length, n);
      assert.ok(s.every((e) => e.noisy === false));
      for (const [prefix, values] of [['color:', 6], ['shape:', 4], ['size:', 2], ['dir:', 4], ['speed:', 2]] as const) {
        const counts = [...countBy(valuesWithPrefix(s, prefix)).values()];
        assert.equal(counts.length, values, `${split} ${prefix}`);
        assert.ok(counts.every((c) => c === n / values), `${split} ${prefix} counts ${counts}`);
      }
      assert.equal(new Set(s.map((e) => sorted(e.concepts!).join())).size, n);
    }
  });

  it('labels each misaligned pair: a swap is another train clip\'s clean caption, an attribute error differs in one attribute', () => {
    const cleanCaptions = synthManifestEntries(planSynthCorpus({ seed: 11, noise: 0 }), '/corpus').filter((e) => e.split === 'train');
    const check = (es: ManifestEntry[]) => {
      const kinds = countBy(es.filter((e) => e.noisy).map((e) => e.noiseKind ?? 'none'));
      for (const e of es) {
        assert.equal(e.noiseKind !== undefined, e.noisy === true, e.id);
        const stated = statedConcepts(e.captions[0]);
        if (e.noiseKind === 'swap') {
          const donors = cleanCaptions.filter((c) => c.id !== e.id && c.captions[0] === e.captions[0]);
          assert.ok(donors.length >= 1, `${e.id}: "${e.captions[0]}" is no other clip's clean caption`);
          assert.notEqual(stated.join(), sorted(e.concepts!).join());
        } else if (e.noiseKind === 'attribute') {
          const own = new Set(e.concepts!);
          assert.deepEqual([stated.filter((c) => !own.has(c)).length, e.concepts!.filter((c) => !stated.includes(c)).length], [1, 1], `${e.id}: "${e.captions[0]}"`);
        }
      }
      return kinds;
    };
    const mixed = check(train);
    assert.equal(mixed.get('swap')! + mixed.get('attribute')!, 151);
    assert.deepEqual([mixed.get('swap'), mixed.get('attribute')], [planSynthCorpus({ seed: 11 }).counts.noisySwap, planSynthCorpus({ seed: 11 }).counts.noisyAttribute]);
    // The default share is 0.5: naming it changes nothing.
    assert.deepEqual(synthManifestEntries(planSynthCorpus({ seed: 11, swapFraction: 0.5 }), '/corpus'), entries);
    const swapped = check(synthManifestEntries(planSynthCorpus({ seed: 11, noise: 0.4, swapFraction: 1 }), '/corpus').filter((e) => e.split === 'train'));
    assert.deepEqual([...swapped.entries()], [['swap', Math.round(0.4 * 504)]]);
  });

  it('refuses bad parameters with a message naming them', () => {
    assert.throws(() => planSynthCorpus({ swapFraction: -0.1 }), /swapFraction/);
    assert.throws(() => planSynthCorpus({ noise: 1.5 }), /noise/);
    assert.throws(() => planSynthCorpus({ size: 63 }), /even/);
    assert.throws(() => planSynthCorpus({ testVideos: 100 }), /testVideos must be a multiple of 6/);
    assert.throws(() => planSynthCorpus({ videos: 200, testVideos: 144, metaVideos: 54 }), /leaves 2 train clips/);
  });

  it('with fixed meta and test sizes, more videos grow the train split alone and leave meta and test clips identical', () => {
    const small = planSynthCorpus({ seed: 11, videos: 720, metaVideos: 72, testVideos: 144 });
    const large = planSynthCorpus({ seed: 11, videos: 2000, metaVideos: 72, testVideos: 144 });
    assert.deepEqual([large.counts.train, large.counts.meta, large.counts.test], [2000 - 72 - 144, 72, 144]);
    // 72 and 144 are what the ≈10 % / 20 % rule gives for 720, so the small plan is the default one.
    assert.deepEqual(small.clips, plan.clips);
    const heldOut = (p: typeof plan) => p.clips.filter((c) => c.split !== 'train');
    assert.deepEqual(heldOut(large), heldOut(plan));
    assert.equal(large.counts.noisy, Math.round(0.3 * 1784));
  });
});

describe('synth: drawing', () => {
  const base: ClipSpec = {
    size: 32, frames: 6, shape: 'triangle', rgb: [220, 30, 30], radius: 5, x0: 10.25, y0: 20.5, vx: -1.5, vy: 0,
    background: [60, 62, 58], textureSeed: 7,
  };

  it('a leftward clip played backwards is exactly a rightward clip: no single frame tells the direction', () => {
    const left = drawClip(base);
    // Right-mover starting where the left-mover ends: x0 - 1.5·5 = 2.75 (dyadic values keep the arithmetic exact).
    const right = drawClip({ ...base, vx: 1.5, x0: 2.75 });
    const fb = 32 * 32 * 3;
    for (let t = 0; t < 6; t++) {
      assert.deepEqual(left.subarray(t * fb, (t + 1) * fb), right.subarray((5 - t) * fb, (6 - t) * fb), `frame ${t}`);
    }
    assert.notDeepEqual(left.subarray(0, fb), left.subarray(fb, 2 * fb));
  });

  it('wraps around the edges without losing object pixels', () => {
    const inPixels = (x0: number) => {
      const f = drawClip({ ...base, x0, vx: 0, shape: 'square' }).subarray(0, 32 * 32 * 3);
      let n = 0;
      for (let i = 0; i < f.length; i += 3) if (f[i] - f[i + 1] > 100) n += 1;
      return n;
    };
    assert.equal(inPixels(0.5), inPixels(16.5));
  });
});

/** Decoded frames of a clip as RGB24. */
function decode(file: string, size: number): Uint8Array[] {
  const raw = execFileSync(ffmpegBinary().path, ['-v', 'error', '-i', file, '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'], { maxBuffer: 1 << 26 });
  const fb = size * size * 3;
  return Array.from({ length: raw.length / fb }, (_, t) => new Uint8Array(raw.buffer, raw.byteOffset + t * fb, fb));
}

/** Centroid of saturated (object) pixels as a circular mean, so an object wrapped across an edge still has one centre. */
function centroid(frame: Uint8Array, size: number): [number, number] {
  let sx = 0, cx = 0, sy = 0, cy = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const o = (y * size + x) * 3;
      const sat = Math.max(frame[o], frame[o + 1], frame[o + 2]) - Math.min(frame[o], frame[o + 1], frame[o + 2]);
      if (sat < 90) continue;
      sx += Math.sin((2 * Math.PI * x) / size); cx += Math.cos((2 * Math.PI * x) / size);
      sy += Math.sin((2 * Math.PI * y) / size); cy += Math.cos((2 * Math.PI * y) / size);
    }
  }
  const ang = (s: number, c: number) => ((Math.atan2(s, c) / (2 * Math.PI)) * size + size) % size;
  return [ang(sx, cx), ang(sy, cy)];
}
const wrap = (d: number, size: number) => d - size * Math.round(d / size);

describe('synth: generated corpus', function () {
  this.timeout(120000);
  const params = { videos: 18, size: 64, frames: 8, fps: 8, seed: 5 };
  let dir = '';
  let dir2 = '';
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vlm-synth-'));
    dir2 = await mkdtemp(path.join(os.tmpdir(), 'vlm-synth-'));
    await generateSynthCorpus({ out: dir, ...params });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
    await rm(dir2, { recursive: true, force: true });
  });

  it('writes H.264 clips of the asked size and frame count', async () => {
    const m = await readManifest(path.join(dir, 'manifest.jsonl'));
    assert.equal(m.errors.length, 0);
    assert.equal(m.entries.length, 18);
    const probe = JSON.parse(execFileSync(ffprobeBinary().path, ['-v', 'error', '-count_frames', '-select_streams', 'v:0',
      '-show_entries', 'stream=codec_name,width,height,pix_fmt,nb_read_frames', '-of', 'json', m.entries[0].video], { encoding: 'utf8' }));
    assert.deepEqual(probe.streams[0], { codec_name: 'h264', width: 64, height: 64, pix_fmt: 'yuv420p', nb_read_frames: '8' });
    const corpus = JSON.parse(await readFile(path.join(dir, 'corpus.json'), 'utf8'));
    assert.deepEqual(corpus.params, { ...params, noise: 0.3, swapFraction: 0.5, imbalance: 20 });
    assert.deepEqual([corpus.counts.train, corpus.counts.meta, corpus.counts.test, corpus.counts.noisy], [6, 6, 6, 2]);
  });

  it('moves the object the stated way and distance between the first and last decoded frame', async () => {
    const m = await readManifest(path.join(dir, 'manifest.jsonl'));
    for (const e of m.entries) {
      const frames = decode(e.video, 64);
      assert.equal(frames.length, 8);
      const [x0, y0] = centroid(frames[0], 64);
      const [x1, y1] = centroid(frames[7], 64);
      const dx = wrap(x1 - x0, 64);
      const dy = wrap(y1 - y0, 64);
      const c = Object.fromEntries(e.concepts!.map((s) => s.split(':')));
      // Travel over the clip: slow 0.2 and fast 0.45 of the 64-pixel frame; chroma subsampling moves centroids by up to ~1.2 px.
      const travel = c.speed === 'fast' ? 28.8 : 12.8;
      const want = { left: [-travel, 0], right: [travel, 0], up: [0, -travel], down: [0, travel] }[c.dir as 'left']!;
      assert.ok(Math.abs(dx - want[0]) < 2 && Math.abs(dy - want[1]) < 2, `${e.id} (${e.concepts}): moved (${dx.toFixed(2)}, ${dy.toFixed(2)}), expected ${want}`);
    }
  });

  it('reuses a corpus with the same parameters, re-encodes a lost clip identically, and replaces one with other parameters', async () => {
    const clip = path.join(dir, 'clips', 'train-0001.mp4');
    const before = await readFile(clip);
    const reused = await generateSynthCorpus({ out: dir, ...params });
    assert.equal(reused.reused, true);
    assert.equal(reused.clipsWritten, 0);
    await unlink(clip);
    const refilled = await generateSynthCorpus({ out: dir, ...params });
    assert.deepEqual([refilled.reused, refilled.clipsWritten], [true, 1]);
    assert.deepEqual(await readFile(clip), before);
    // A corpus written before `swapFraction` and `noiseKind` existed is still the same corpus: kept, its manifest brought up to date.
    const manifestText = await readFile(path.join(dir, 'manifest.jsonl'), 'utf8');
    assert.match(manifestText, /"noisy":true,"noiseKind":"(swap|attribute)"/);
    const corpusFile = path.join(dir, 'corpus.json');
    const corpus = JSON.parse(await readFile(corpusFile, 'utf8'));
    delete corpus.params.swapFraction;
    await writeFile(corpusFile, JSON.stringify(corpus));
    await writeFile(path.join(dir, 'manifest.jsonl'), manifestText.replace(/,"noiseKind":"\w+"/g, ''));
    const old = await generateSynthCorpus({ out: dir, ...params });
    assert.deepEqual([old.reused, old.clipsWritten], [true, 0]);
    assert.equal(await readFile(path.join(dir, 'manifest.jsonl'), 'utf8'), manifestText);
    const fresh = await generateSynthCorpus({ out: dir2, ...params, concurrency: 1 });
    assert.equal(fresh.reused, false);
    assert.equal(await readFile(path.join(dir2, 'manifest.jsonl'), 'utf8'), await readFile(path.join(dir, 'manifest.jsonl'), 'utf8'));
    assert.deepEqual(decode(path.join(dir2, 'clips', 'test-0002.mp4'), 64), decode(path.join(dir, 'clips', 'test-0002.mp4'), 64));
    const changed = await generateSynthCorpus({ out: dir2, ...params, videos: 24, noise: 0 });
    assert.equal(changed.reused, false);
    const m = await readManifest(changed.manifestPath);
    assert.equal(m.entries.length, 24);
    assert.ok(m.entries.every((e) => e.noisy === false));
    assert.ok((await stat(path.join(dir2, 'clips', 'train-0011.mp4'))).size > 0);
  });
});

describe('synth: meta set', () => {
  const e = (id: string, color: string, noisy?: boolean, extra: string[] = []): ManifestEntry =>
    ({ id, video: `/v/${id}.mp4`, captions: [`${color} thing`], concepts: [`color:${color}`, ...extra], ...(noisy === undefined ? {} : { noisy }) });
  const pool = [
    e('r1', 'red', false), e('r2', 'red', true), e('r3', 'red', false), e('r4', 'red', false), e('r5', 'red', false),
    e('g1', 'green', false), e('g2', 'green', false), e('g3', 'green', false),
    e('b1', 'blue', false), e('b2', 'blue', false), e('b3', 'blue', false), e('b4', 'blue', false),
  ];

  it('draws K clean items per concept and never a noisy one', () => {
    const d = drawMetaSet(pool, { perConcept: 2, seed: 1, conceptPrefix: 'color:' });
    assert.deepEqual(d.counts, { 'color:blue': 2, 'color:green': 2, 'color:red': 2 });
    assert.equal(d.entries.length, 6);
    assert.ok(!d.entries.some((x) => x.id === 'r2'));
    assert.deepEqual([d.cleanliness, d.excludedNoisy, d.warnings.length], ['checked', 1, 0]);
  });

  it('does not depend on input order, and warns when a concept has too few clean items', () => {
    const a = drawMetaSet(pool, { perConcept: 4, seed: 9, conceptPrefix: 'color:' });
    const b = drawMetaSet([...pool].reverse(), { perConcept: 4, seed: 9, conceptPrefix: 'color:' });
    assert.deepEqual(a.entries.map((x) => x.id), b.entries.map((x) => x.id));
    assert.deepEqual(a.counts, { 'color:blue': 4, 'color:green': 3, 'color:red': 4 });
    assert.deepEqual(a.warnings, ['concept "color:green" has only 3 clean items, fewer than 4']);
  });

  it('says it cannot check cleanliness when no item carries a flag', () => {
    const d = drawMetaSet(pool.map(({ noisy: _n, ...rest }) => rest), { perConcept: 1, seed: 1 });
    assert.equal(d.cleanliness, 'unchecked');
    assert.match(d.warnings[0], /cleanliness cannot be checked/);
  });

  it('balances several concepts at once to at least K each', () => {
    const items = ['red', 'green'].flatMap((c, i) => ['a', 'b', 'c', 'd'].map((s, j) => e(`${c}-${s}`, c, false, [`shape:${s}`, `size:${(i + j) % 2}`])));
    const d = drawMetaSet(items, { perConcept: 2, seed: 4 });
    for (const [k, v] of Object.entries(d.counts)) assert.ok(v >= 2, `${k} ${v}`);
    assert.deepEqual(Object.keys(d.counts).sort(), ['color:green', 'color:red', 'shape:a', 'shape:b', 'shape:c', 'shape:d', 'size:0', 'size:1']);
  });

  it('reads an overlay meta set against its source and refuses a changed source', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vlm-meta-'));
    try {
      const src = path.join(dir, 'corpus', 'manifest.jsonl');
      const entries = pool.map((x) => ({ ...x, video: path.join(dir, 'corpus', 'clips', `${x.id}.mp4`) }));
      await writeManifest(src, entries);
      const metaFile = path.join(dir, 'elsewhere', 'meta.jsonl');
      const d = drawMetaSet(entries, { perConcept: 1, seed: 2, conceptPrefix: 'color:' });
      await writeManifest(metaFile, d.entries, { root: path.dirname(src) });
      assert.match(await readFile(metaFile, 'utf8'), /"video":"clips\//);
      const meta = await readMetaSet(metaFile, { source: src });
      assert.deepEqual(meta.entries.map((x) => x.video), d.entries.map((x) => x.video));
      await writeManifest(src, entries.map((x) => ({ ...x, captions: ['changed'] })));
      await assert.rejects(readMetaSet(metaFile, { source: src }), /does not match its source/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('matches the committed default meta set: the recipe redraws it from the default corpus plan', async () => {
    const file = path.join(DEFAULT_META_SET_DIR, 'manifest.jsonl');
    const recipe = JSON.parse(await readFile(drawRecipePath(file), 'utf8'));
    assert.deepEqual(recipe.synth, SynthParamsSchema.parse({}), 'the committed meta set was drawn from the default corpus');
    const committed = await readManifest(file);
    assert.equal(committed.errors.length, 0);
    assert.equal(committed.entries.length, 60);
    assert.deepEqual([...countBy(valuesWithPrefix(committed.entries, 'color:')).values()], [10, 10, 10, 10, 10, 10]);
    const corpus = synthManifestEntries(planSynthCorpus(recipe.synth), '/corpus');
    const redrawn = drawMetaSet(corpus.filter((x) => x.split === recipe.split), { perConcept: recipe.perConcept, seed: recipe.seed, conceptPrefix: recipe.conceptPrefix });
    assert.deepEqual(committed.entries.map((x) => x.id), redrawn.entries.map((x) => x.id));
    const byId = new Map(corpus.map((x) => [x.id, x]));
    for (const x of committed.entries) {
      const c = byId.get(x.id)!;
      assert.deepEqual([x.captions, x.concepts, x.noisy, path.relative(committed.root, x.video)], [c.captions, c.concepts, false, path.relative('/corpus', c.video)]);
    }
  });
});
