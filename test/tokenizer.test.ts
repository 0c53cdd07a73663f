import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { loadTokenizer } from '../src/text/tokenizer.js';
import { buildTokenizer, trainSubwords } from '../src/text/buildTokenizer.js';

const TRAIN = [
  'A man is walking in the park.',
  'A woman is talking on the phone.',
  'The dog is running on the grass.',
  'A man is jumping in the park.',
  'A woman is walking the dog.',
  'The man is talking to a woman.',
  'Two dogs are running in the park!',
  'A red car is parked on the street.',
  'The blue car is parked in the park.',
  'A dog walked and jumped.',
  'The man talked and walked.',
  'A woman jumped on the grass.',
  'Runners are running; walkers are walking.',
  'Café owner, talking.',
];
/** Every training word occurs ≥ 3 times, so frequent words become whole tokens. */
const CORPUS = [...TRAIN, ...TRAIN, ...TRAIN];

async function tmpDir(tag: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), `vlmargin-tok-${tag}-`));
}

async function expectReject(p: Promise<unknown>, ...parts: string[]): Promise<void> {
  await assert.rejects(p, (e: Error) => {
    for (const part of parts) assert.ok(e.message.includes(part), `message "${e.message}" lacks "${part}"`);
    return true;
  });
}

function row(a: Int32Array, i: number, n: number): number[] {
  return Array.from(a.subarray(i * n, (i + 1) * n));
}

/** A WordPiece tokenizer.json written by hand, independent of buildTokenizer. */
function handWrittenWordPiece(): { tokenizer: object; config: object } {
  const vocab = { '[PAD]': 0, '[UNK]': 1, '[CLS]': 2, '[SEP]': 3, a: 4, man: 5, run: 6, '##s': 7, '.': 8, dog: 9 };
  const special = (content: string, id: number) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    tokenizer: {
      version: '1.0', truncation: null, padding: null,
      added_tokens: [special('[PAD]', 0), special('[UNK]', 1), special('[CLS]', 2), special('[SEP]', 3)],
      normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
      pre_tokenizer: { type: 'BertPreTokenizer' },
      post_processor: {
        type: 'TemplateProcessing',
        single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
        pair: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } },
          { Sequence: { id: 'B', type_id: 1 } }, { SpecialToken: { id: '[SEP]', type_id: 1 } }],
        special_tokens: { '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] } },
      },
      decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
      model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
    },
    config: { tokenizer_class: 'BertTokenizer', do_lower_case: true, unk_token: '[UNK]', sep_token: '[SEP]', pad_token: '[PAD]', cls_token: '[CLS]', model_max_length: 512 },
  };
}

async function writeFolder(dir: string, files: Record<string, string>): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) await fs.writeFile(path.join(dir, name), text);
}

describe('text tokenizer', () => {
  let root: string;
  before(async () => { root = await tmpDir('suite'); });
  after(async () => { await fs.rm(root, { recursive: true, force: true }); });

  describe('trainSubwords', () => {
    // Sennrich et al. 2016's toy corpus; merges derived by hand from pair counts
    // (l o:7, e s:9, s t</w>:9, …), ties broken by the smaller (left, right) strings.
    const toy = new Map([['low', 5], ['lower', 2], ['newest', 6], ['widest', 3]]);

    it('BPE (end-of-word suffix) merges in the hand-derived order', () => {
      const { merges, vocab } = trainSubwords(toy, { kind: 'bpe', vocabSize: 100, minFrequency: 2, specials: ['<unk>'] });
      assert.deepEqual(merges.slice(0, 8), [
        ['e', 's'], ['es', 't</w>'], ['l', 'o'], ['e', 'w'], ['ew', 'est</w>'], ['n', 'ewest</w>'], ['lo', 'w</w>'], ['d', 'est</w>'],
      ]);
      // alphabet d e i l n o r s t w, each as inside and word-final piece, after the special token
      assert.deepEqual(vocab.slice(0, 5), ['<unk>', 'd', 'd</w>', 'e', 'e</w>']);
      assert.equal(vocab[21], 'es');
    });

    it('WordPiece (## continuation) merges in the hand-derived order', () => {
      const { merges } = trainSubwords(toy, { kind: 'wordpiece', vocabSize: 100, minFrequency: 2, specials: ['[UNK]'] });
      assert.deepEqual(merges.slice(0, 8), [
        ['##e', '##s'], ['##es', '##t'], ['##o', '##w'], ['l', '##ow'], ['##e', '##w'], ['##ew', '##est'], ['n', '##ewest'], ['##d', '##est'],
      ]);
    });

    it('stops at vocabSize and at minFrequency', () => {
      const small = trainSubwords(toy, { kind: 'wordpiece', vocabSize: 23, minFrequency: 1, specials: ['[UNK]'] });
      assert.equal(small.vocab.length, 23); // 1 special + 2×10 alphabet + 2 merges
      assert.equal(small.merges.length, 2);
      // with minFrequency 6 only pairs counted ≥ 6 merge: ##e##s, ##es##t (9), ##o##w, l##ow (7), ##e##w, ##ew##est, n##ewest (6)
      const frequent = trainSubwords(toy, { kind: 'wordpiece', vocabSize: 100, minFrequency: 6, specials: ['[UNK]'] });
      assert.equal(frequent.merges.length, 7);
    });
  });

  describe('loadTokenizer on a hand-written tokenizer.json', () => {
    it('encodes, pads, truncates keeping [SEP], decodes, without touching the network', async () => {
      const dir = path.join(root, 'hand');
      const { tokenizer, config } = handWrittenWordPiece();
      await writeFolder(dir, { 'tokenizer.json': JSON.stringify(tokenizer), 'tokenizer_config.json': JSON.stringify(config) });
      const realFetch = globalThis.fetch;
      const fetched: string[] = [];
      globalThis.fetch = ((input: unknown) => { fetched.push(String(input)); return Promise.reject(new Error('network used')); }) as typeof fetch;
      let tok;
      try {
        tok = await loadTokenizer(dir);
      } finally {
        globalThis.fetch = realFetch;
      }
      assert.deepEqual(fetched, []);

      assert.equal(tok.vocabSize, 10);
      assert.equal(tok.padId, 0);
      assert.equal(tok.unkId, 1);
      assert.equal(tok.bosId, 2);
      assert.equal(tok.eosId, 3);
      const e = tok.encode(['A man runs.', 'dog runs fast', 'a a a a a a a a'], 8);
      assert.deepEqual(e.shape, [3, 8]);
      assert.equal(e.ids.length, 24);
      assert.deepEqual(row(e.ids, 0, 8), [2, 4, 5, 6, 7, 8, 3, 0]);
      assert.deepEqual(row(e.ids, 1, 8), [2, 9, 6, 7, 1, 3, 0, 0]); // "fast" is not in the vocabulary
      assert.deepEqual(row(e.ids, 2, 8), [2, 4, 4, 4, 4, 4, 4, 3]); // 10 tokens cut to 8, [SEP] kept
      assert.deepEqual(row(e.mask, 0, 8), [1, 1, 1, 1, 1, 1, 1, 0]);
      assert.deepEqual(row(e.mask, 1, 8), [1, 1, 1, 1, 1, 1, 0, 0]);
      assert.deepEqual(row(e.mask, 2, 8), [1, 1, 1, 1, 1, 1, 1, 1]);
      assert.equal(tok.decode(row(e.ids, 0, 8)), 'a man runs.');
      assert.equal(tok.decode(row(e.ids, 0, 8), { skipSpecialTokens: false }), '[CLS] a man runs. [SEP] [PAD]');
      assert.deepEqual(tok.tokenize('Dog runs'), ['dog', 'run', '##s']);
    });
  });

  describe('built WordPiece tokenizer', () => {
    let dir: string;
    let vocabIds: Map<string, number>;
    before(async () => {
      dir = path.join(root, 'wp');
      await buildTokenizer(CORPUS, { out: dir, vocabSize: 400, kind: 'wordpiece' });
      const lines = (await fs.readFile(path.join(dir, 'vocab.txt'), 'utf8')).split('\n').slice(0, -1);
      vocabIds = new Map(lines.map((t, i) => [t, i]));
    });

    it('writes the four files, with specials first', async () => {
      for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt']) {
        assert.ok((await fs.stat(path.join(dir, f))).size > 0, f);
      }
      assert.deepEqual([...vocabIds.keys()].slice(0, 5), ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']);
      const tok = await loadTokenizer(dir);
      assert.equal(tok.vocabSize, vocabIds.size);
      assert.equal(tok.bosId, vocabIds.get('[CLS]'));
      assert.equal(tok.eosId, vocabIds.get('[SEP]'));
      assert.equal(tok.padId, vocabIds.get('[PAD]'));
    });

    it('round-trips held-out captions (new combinations, case, accents, punctuation)', async () => {
      const tok = await loadTokenizer(dir);
      const cases: [string, string][] = [
        ['The woman is running in the park.', 'the woman is running in the park.'],
        ['A DOG walked on the Street!', 'a dog walked on the street!'],
        ['Café dogs, jumping.', 'cafe dogs, jumping.'],
        ['  a   man talked\tto the  dog ', 'a man talked to the dog'],
      ];
      const e = tok.encode(cases.map((c) => c[0]), 16);
      cases.forEach(([, want], i) => {
        const ids = row(e.ids, i, 16);
        assert.ok(!ids.includes(tok.unkId as number), `[UNK] in ${cases[i][0]}`);
        assert.equal(tok.decode(ids), want);
      });
    });

    it('splits a word never seen into known pieces, not [UNK]', async () => {
      const tok = await loadTokenizer(dir);
      for (const word of ['jumper', 'parking', 'walks']) {
        assert.ok(!vocabIds.has(word), `${word} should be unseen`);
        const pieces = tok.tokenize(word);
        assert.ok(pieces.length >= 2, `${word} → ${pieces.join(' ')}`);
        assert.ok(!pieces.includes('[UNK]'), `${word} → ${pieces.join(' ')}`);
        assert.ok(!pieces[0].startsWith('##') && pieces.slice(1).every((p) => p.startsWith('##')), pieces.join(' '));
        assert.equal(pieces.map((p, i) => (i === 0 ? p : p.slice(2))).join(''), word);
        assert.equal(tok.decode(tok.encode([`a ${word}`], 12).ids), `a ${word}`);
      }
    });

    it('pads and truncates to [N, maxLen] with masks matching hand counts and [SEP] last', async () => {
      const tok = await loadTokenizer(dir);
      const words = ['a', 'man', 'is', 'walking', 'the', 'dog', 'running', 'in', 'park', 'on', 'grass', '.'];
      for (const w of words) assert.ok(vocabIds.has(w), `precondition: "${w}" is a whole token`);
      const id = (t: string) => vocabIds.get(t) as number;
      const captions = [
        'a man is walking', // 4 words + [CLS] [SEP] = 6
        'the dog is running in the park.', // 7 words + "." + 2 = 10 = maxLen
        'a man is walking in the park on the grass', // 10 words + 2 = 12 → cut to 10
        '', // [CLS] [SEP]
      ];
      const n = 10;
      const e = tok.encode(captions, n);
      assert.deepEqual(e.shape, [4, n]);
      assert.equal(e.ids.length, 4 * n);
      assert.equal(e.mask.length, 4 * n);
      const sums = [0, 1, 2, 3].map((i) => row(e.mask, i, n).reduce((s, v) => s + v, 0));
      assert.deepEqual(sums, [6, 10, 10, 2]);
      for (let i = 0; i < 4; i++) {
        const r = row(e.ids, i, n), m = row(e.mask, i, n);
        assert.deepEqual(m, Array.from({ length: n }, (_, j) => (j < sums[i] ? 1 : 0)));
        assert.equal(r[0], id('[CLS]'));
        assert.equal(r[sums[i] - 1], id('[SEP]'));
        for (let j = sums[i]; j < n; j++) assert.equal(r[j], id('[PAD]'));
      }
      assert.deepEqual(row(e.ids, 0, n), [id('[CLS]'), id('a'), id('man'), id('is'), id('walking'), id('[SEP]'), 0, 0, 0, 0]);
      assert.deepEqual(row(e.ids, 2, n), ['[CLS]', 'a', 'man', 'is', 'walking', 'in', 'the', 'park', 'on', '[SEP]'].map(id));
      assert.equal(tok.decode(row(e.ids, 2, n)), 'a man is walking in the park on');
      // the tightest legal length keeps one caption token between [CLS] and [SEP]
      assert.deepEqual(row(tok.encode(['man is walking'], 3).ids, 0, 3), [id('[CLS]'), id('man'), id('[SEP]')]);
    });

    it('rejects bad encode/decode arguments with named errors', async () => {
      const tok = await loadTokenizer(dir);
      assert.throws(() => tok.encode(['a'], 2), /maxLen must be an integer > 2/);
      assert.throws(() => tok.encode(['a', 3 as unknown as string], 8), /captions\[1\] must be a string/);
      assert.throws(() => tok.decode([2, 99999]), /ids\[1\] = 99999 is not a token id/);
      assert.equal(tok.decode([]), '');
    });

    it('building twice gives byte-identical files, whatever the caption order', async () => {
      const again = path.join(root, 'wp-again');
      const shuffled = path.join(root, 'wp-shuffled');
      await buildTokenizer(CORPUS, { out: again, vocabSize: 400, kind: 'wordpiece' });
      await buildTokenizer([...CORPUS].reverse(), { out: shuffled, vocabSize: 400, kind: 'wordpiece' });
      for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt']) {
        const a = await fs.readFile(path.join(dir, f));
        assert.ok(a.equals(await fs.readFile(path.join(again, f))), `${f} differs between two builds`);
        assert.ok(a.equals(await fs.readFile(path.join(shuffled, f))), `${f} depends on caption order`);
      }
    });
  });

  describe('built BPE tokenizer', () => {
    it('uses <|startoftext|> … <|endoftext|>, round-trips, splits unseen words and keeps the end token', async () => {
      const dir = path.join(root, 'bpe');
      await buildTokenizer(CORPUS, { out: dir, vocabSize: 400, kind: 'bpe' });
      const json = JSON.parse(await fs.readFile(path.join(dir, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number>; merges: string[] } };
      const v = json.model.vocab;
      const tok = await loadTokenizer(dir);
      assert.equal(tok.bosId, v['<|startoftext|>']);
      assert.equal(tok.eosId, v['<|endoftext|>']);
      assert.equal(tok.padId, v['<|pad|>']);
      assert.equal(tok.vocabSize, Object.keys(v).length);
      assert.equal(tok.decode(tok.encode(['The woman is running in the park.'], 16).ids), 'the woman is running in the park.');
      assert.equal(tok.decode(tok.encode(['Café dogs, jumping!'], 16).ids), 'cafe dogs, jumping!');
      const pieces = tok.tokenize('jumper');
      assert.ok(!('jumper</w>' in v));
      assert.ok(pieces.length >= 2 && !pieces.includes('<|unk|>'), pieces.join(' '));
      assert.equal(pieces.join('').replace('</w>', ''), 'jumper');
      const e = tok.encode(['a man is walking in the park on the grass'], 5);
      assert.deepEqual(row(e.ids, 0, 5), [v['<|startoftext|>'], v['a</w>'], v['man</w>'], v['is</w>'], v['<|endoftext|>']]);
      assert.deepEqual(row(e.mask, 0, 5), [1, 1, 1, 1, 1]);
    });
  });

  describe('errors name the file and what was expected', () => {
    it('missing folder, missing or malformed files', async () => {
      const missing = path.join(root, 'no-such-folder');
      await expectReject(loadTokenizer(missing), missing, 'does not exist', 'tokenizer.json');
      const empty = path.join(root, 'empty');
      await fs.mkdir(empty);
      await expectReject(loadTokenizer(empty), path.join(empty, 'tokenizer.json'), 'missing');
      const bad = path.join(root, 'bad-json');
      await writeFolder(bad, { 'tokenizer.json': '{"model": {"type": "WordPiece", ', 'tokenizer_config.json': '{}' });
      await expectReject(loadTokenizer(bad), path.join(bad, 'tokenizer.json'), 'not valid JSON', 'expected');
      const notTok = path.join(root, 'not-tokenizer');
      await writeFolder(notTok, { 'tokenizer.json': '[1, 2]', 'tokenizer_config.json': '{}' });
      await expectReject(loadTokenizer(notTok), path.join(notTok, 'tokenizer.json'), 'an array', 'expected');
      const noModel = path.join(root, 'no-model');
      await writeFolder(noModel, { 'tokenizer.json': '{"added_tokens": []}', 'tokenizer_config.json': '{}' });
      await expectReject(loadTokenizer(noModel), path.join(noModel, 'tokenizer.json'), '"model"');
      const noConfig = path.join(root, 'no-config');
      await writeFolder(noConfig, { 'tokenizer.json': JSON.stringify(handWrittenWordPiece().tokenizer) });
      await expectReject(loadTokenizer(noConfig), path.join(noConfig, 'tokenizer_config.json'), 'missing');
      const badConfig = path.join(root, 'bad-config');
      await writeFolder(badConfig, { 'tokenizer.json': JSON.stringify(handWrittenWordPiece().tokenizer), 'tokenizer_config.json': 'nope' });
      await expectReject(loadTokenizer(badConfig), path.join(badConfig, 'tokenizer_config.json'), 'not valid JSON');
    });

    it('buildTokenizer names the bad argument', async () => {
      const out = path.join(root, 'never');
      await expectReject(buildTokenizer(['a', null as unknown as string], { out }), 'captions[1]');
      await expectReject(buildTokenizer(['a'], { out, vocabSize: 3 }), 'options.vocabSize');
      await expectReject(buildTokenizer(['a'], { out, kind: 'unigram' as 'bpe' }), 'options.kind');
      await expectReject(buildTokenizer(['a'], { out: '' }), 'options.out');
      await expectReject(buildTokenizer(['  ', '\t\n'], { out, minFrequency: 1 }), 'no words');
    });
  });

  describe('vlmargin tokenizer build', () => {
    it('reads a manifest (caption and captions, a bad line skipped) and writes a loadable folder', async () => {
      const dir = await tmpDir('cli');
      const manifest = path.join(dir, 'manifest.jsonl');
      const lines = [
        JSON.stringify({ id: 'v1', video: 'v1.mp4', caption: 'A man is walking his dog.' }),
        '{ this line is broken',
        JSON.stringify({ id: 'v2', video: 'v2.mp4', captions: ['A dog is walking.', 'The man walks a dog.'] }),
        JSON.stringify({ id: 'v3', video: 'v3.mp4', caption: 'The dog is running.' }),
      ];
      await fs.writeFile(manifest, lines.join('\n') + '\n');
      const out = path.join(dir, 'tok');
      const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'pipelines', 'cli', 'main.js');
      const { stdout, stderr } = await promisify(execFile)(process.execPath, [main, 'tokenizer', 'build', '--manifest', manifest, '--out', out, '--vocab-size', '100']);
      assert.match(stdout, /wordpiece tokenizer: \d+ tokens .* from 4 captions of 3 entries/);
      assert.match(stderr, /manifest\.jsonl:2/);
      const tok = await loadTokenizer(out);
      const e = tok.encode(['The man is walking.'], 8);
      assert.equal(tok.decode(e.ids), 'the man is walking.');
      await fs.rm(dir, { recursive: true, force: true });
    });
  });
});
