import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { generateSynthIdentities, identityCounts } from '../src/face/synthIdentities.js';
import { parsePairs, readPairs } from '../src/face/pairs.js';

describe('face: synth-identities and pairs.txt', function () {
  let tmp: string;
  before(async () => { tmp = await mkdtemp(path.join(os.tmpdir(), 'vlm-face-synth-')); });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  const small = { identities: 6, imbalance: 4, maxPerIdentity: 8, testPerIdentity: 1, verifyIdentities: 4, perVerify: 3, folds: 2, pairsPerFold: 3, size: 16 };

  it('long-tailed counts follow max·R^(−i/(N−1)), at least 2', () => {
    // 40·10^(−i/3): 40, 18.57, 8.62, 4 → rounded.
    assert.deepEqual(identityCounts(4, 40, 10), [40, 19, 9, 4]);
    assert.deepEqual(identityCounts(3, 4, 100), [4, 2, 2]);
  });

  it('is deterministic per seed, differs across seeds, and writes the folder-per-identity layout', async () => {
    const a = await generateSynthIdentities({ out: path.join(tmp, 'a'), seed: 3, ...small });
    const b = await generateSynthIdentities({ out: path.join(tmp, 'b'), seed: 3, ...small });
    const c = await generateSynthIdentities({ out: path.join(tmp, 'c'), seed: 4, ...small });
    // 8·4^(−i/5) = 8, 6.06, 4.59, 3.48, 2.64, 2.
    assert.deepEqual(a.trainCounts, [8, 6, 5, 3, 3, 2]);
    assert.equal(a.images, 27 + 6 + 12);
    const ids = await readdir(path.join(a.dir, 'train'));
    assert.equal(ids.length, 6);
    assert.equal((await readdir(path.join(a.dir, 'train', ids[0]))).length, 8);
    const file = 'train/id0001/id0001_0002.png';
    const [fa, fb, fc] = await Promise.all([a, b, c].map((r) => readFile(path.join(r.dir, file))));
    assert.ok(fa.equals(fb), 'same seed, same bytes');
    assert.ok(!fa.equals(fc), 'another seed, another image');
    assert.equal(await readFile(a.pairsPath, 'utf8'), await readFile(b.pairsPath, 'utf8'));
    const meta = await sharp(fa).metadata();
    assert.equal(meta.width, 16);
    assert.equal(meta.height, 16);
    // Verification identities never appear in training.
    const verify = new Set(await readdir(path.join(a.dir, 'verify')));
    for (const id of ids) assert.ok(!verify.has(id));
  });

  it('pairs.txt parses back: header, same pairs then different pairs per fold, every image present', async () => {
    const r = await generateSynthIdentities({ out: path.join(tmp, 'p'), seed: 1, ...small });
    const text = await readFile(r.pairsPath, 'utf8');
    assert.equal(text.split('\n')[0], '2\t3');
    const p = await readPairs(r.pairsPath, path.join(r.dir, 'verify'));
    assert.equal(p.folds, 2);
    assert.equal(p.pairs.length, 12);
    assert.deepEqual(p.pairs.map((q) => q.label), [1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0]);
    for (const q of p.pairs) {
      if (q.label === 1) { assert.equal(q.a.name, q.b.name); assert.notEqual(q.a.n, q.b.n); } else assert.notEqual(q.a.name, q.b.name);
      assert.ok(q.a.n >= 1 && q.a.n <= 3 && q.b.n >= 1 && q.b.n <= 3);
    }
  });

  it('parses the LFW format by hand and rejects bad lines with the line number', () => {
    const p = parsePairs('1\t2\nAaron\t1\t2\nAbe\t3\t4\nAaron\t1\tAbe\t2\nBo\t1\tCy\t1\n', 'x.txt');
    assert.deepEqual(p.pairs[0], { a: { name: 'Aaron', n: 1 }, b: { name: 'Aaron', n: 2 }, label: 1, line: 2 });
    assert.deepEqual(p.pairs[2], { a: { name: 'Aaron', n: 1 }, b: { name: 'Abe', n: 2 }, label: 0, line: 4 });
    assert.throws(() => parsePairs('1\t1\na\t1\t2\na\tb\n', 'x.txt'), /x\.txt:3: expected 'name n1 n2'/);
    assert.throws(() => parsePairs('1\t1\na\t1\tx\nb\t1\tc\t2\n', 'x.txt'), /x\.txt:2: image number 'x'/);
    assert.throws(() => parsePairs('2\t1\na\t1\t2\nb\t1\tc\t2\n', 'x.txt'), /header says 2 fold/);
  });

  it('a pairs file naming a missing image is an error naming the file, the line and the path', async () => {
    const dir = path.join(tmp, 'miss');
    await mkdir(path.join(dir, 'img', 'a'), { recursive: true });
    const png = await sharp({ create: { width: 4, height: 4, channels: 3, background: '#808080' } }).png().toBuffer();
    await writeFile(path.join(dir, 'img', 'a', 'a_0001.png'), png);
    await writeFile(path.join(dir, 'img', 'a', 'a_0002.png'), png);
    const pairs = path.join(dir, 'pairs.txt');
    await writeFile(pairs, '1\t1\na\t1\t2\na\t1\tghost\t7\n');
    await assert.rejects(readPairs(pairs, path.join(dir, 'img')), (e: Error) => {
      assert.match(e.message, /pairs\.txt: 1 image\(s\) not found/);
      assert.match(e.message, /line 3: .*ghost_0007/);
      return true;
    });
  });
});
