/**
 * Learns a subword vocabulary from a caption corpus and writes a Hugging Face tokenizer folder
 * (tokenizer.json, tokenizer_config.json, special_tokens_map.json, and vocab.txt for WordPiece)
 * that `loadTokenizer` (tokenizers.js) and Hugging Face Python read.
 *
 * Text handling, both kinds: NFKC (full-width forms, ligatures), then BERT's normaliser (drop
 * control characters, space around CJK ideographs, lower-case, strip accents by NFD and removing
 * combining marks), then BERT's pre-tokeniser (split on whitespace and on every punctuation
 * character). Training runs the very normaliser and pre-tokeniser tokenizers.js builds from
 * the written tokenizer.json, so the words it learns from are the words encoding will see.
 */
import { writeFileAtomic } from '../util/atomicWrite.js';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

export type TokenizerKind = 'wordpiece' | 'bpe';

export interface BuildTokenizerOptions {
  /** Folder to write; created if missing. Files of the same names in it are replaced. */
  out: string;
  /** Upper bound on the vocabulary, special tokens included (default 4096). */
  vocabSize?: number;
  /** 'wordpiece' (BERT style, [CLS] … [SEP]) or 'bpe' (CLIP style, <|startoftext|> … <|endoftext|>). Default 'wordpiece'. */
  kind?: TokenizerKind;
  /** A pair of pieces is merged only if it occurs at least this often in the corpus (default 2). */
  minFrequency?: number;
}

export interface BuildTokenizerResult {
  dir: string;
  kind: TokenizerKind;
  /** Tokens written, special tokens included (≤ the requested size; smaller when merges ran out). */
  vocabSize: number;
  /** Distinct words (after normalisation and pre-tokenisation) the vocabulary was learnt from. */
  words: number;
  merges: number;
  files: string[];
}

export interface SubwordTrainOptions {
  kind: TokenizerKind;
  vocabSize: number;
  minFrequency: number;
  /** Ids 0…k-1, in this order. */
  specials: string[];
}

export interface SubwordVocab {
  /** Token strings in id order: specials, the alphabet, then merge results in the order learnt. */
  vocab: string[];
  /** Merges in the order learnt, as [left, right] pieces. */
  merges: [string, string][];
}

const WORDPIECE_SPECIALS = { pad: '[PAD]', unk: '[UNK]', bos: '[CLS]', eos: '[SEP]', mask: '[MASK]' };
const BPE_SPECIALS = { pad: '<|pad|>', unk: '<|unk|>', bos: '<|startoftext|>', eos: '<|endoftext|>' };
const CONTINUATION = '##';
const END_OF_WORD = '</w>';
/** tokenizers.js (and HF) turn a longer word into a single [UNK]; learning from such words only wastes merges. */
const MAX_WORD_CHARS = 100;
const MODEL_MAX_LENGTH = 512;
const PAIR_SHIFT = 2 ** 21;

interface HeapEntry { count: number; a: number; b: number; }

/**
 * Learn a subword vocabulary from word counts by greedy pair merging (the BPE procedure of
 * Sennrich et al. 2016, which is also how HF `tokenizers` trains WordPiece vocabularies):
 *
 * 1. Alphabet: every character seen, in two forms — word-initial `c` and continuation `##c`
 *    (WordPiece), or inside-word `c` and word-final `c</w>` (BPE) — so any later word written in
 *    these characters can be spelt out without [UNK]. If the alphabet alone overflows the budget,
 *    the most frequent characters are kept.
 * 2. Each word starts as its character pieces. Repeatedly take the adjacent pair with the highest
 *    corpus count (word count × occurrences), ties broken by the smaller (left, right) string
 *    pair, and merge it everywhere; the joined piece (`walk`+`##ed` → `walked`) joins the
 *    vocabulary. Frequent whole words thus end up as single tokens and frequent stems and
 *    endings as pieces that combine into unseen words.
 * 3. Stop at `vocabSize` tokens or when the best pair occurs fewer than `minFrequency` times.
 *
 * Pair counts are kept incrementally (only words holding the merged pair are re-counted) with a
 * lazily updated max-heap, so training is near-linear in corpus size. The result depends only on
 * the counts, not on word order: the same corpus always gives the same vocabulary.
 * @example
 * trainSubwords(new Map([['low', 5], ['lowest', 2]]), { kind: 'wordpiece', vocabSize: 40, minFrequency: 2, specials: ['[PAD]', '[UNK]'] })
 * // merges start ['l', '##o'], ['lo', '##w'] …
 */
export function trainSubwords(wordCounts: Map<string, number>, opts: SubwordTrainOptions): SubwordVocab {
  const { kind, vocabSize, minFrequency, specials } = opts;
  if (kind !== 'wordpiece' && kind !== 'bpe') throw new Error(`trainSubwords: kind must be 'wordpiece' or 'bpe', got ${JSON.stringify(kind)}`);
  if (!Number.isInteger(minFrequency) || minFrequency < 1) throw new Error(`trainSubwords: minFrequency must be an integer ≥ 1, got ${minFrequency}`);
  if (!Number.isInteger(vocabSize) || vocabSize < specials.length + 2 || vocabSize >= PAIR_SHIFT) {
    throw new Error(`trainSubwords: vocabSize must be an integer in [${specials.length + 2}, ${PAIR_SHIFT}), got ${vocabSize}`);
  }
  for (const [w, c] of wordCounts) {
    if (w.length === 0 || !Number.isInteger(c) || c < 1) throw new Error(`trainSubwords: word counts must map non-empty words to integers ≥ 1, got ${JSON.stringify(w)} → ${c}`);
  }

  const charCounts = new Map<string, number>();
  for (const [w, c] of wordCounts) for (const ch of w) charCounts.set(ch, (charCounts.get(ch) ?? 0) + c);
  const maxChars = Math.floor((vocabSize - specials.length) / 2);
  const kept = [...charCounts].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0)).slice(0, maxChars).map(([ch]) => ch);
  const alphabet = new Set(kept);
  kept.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));

  const symbols: string[] = [];
  const symbolId = new Map<string, number>();
  const intern = (s: string): number => {
    let id = symbolId.get(s);
    if (id === undefined) { id = symbols.length; symbols.push(s); symbolId.set(s, id); }
    return id;
  };
  const vocab: string[] = [...specials];
  const inVocab = new Set(vocab);
  const addToVocab = (s: string): void => { if (!inVocab.has(s)) { inVocab.add(s); vocab.push(s); } };
  // WordPiece marks pieces that continue a word (`##c`); BPE marks the piece that ends one (`c</w>`).
  const pieceAt = (ch: string, i: number, last: number): string =>
    kind === 'wordpiece' ? (i === 0 ? ch : CONTINUATION + ch) : (i === last ? ch + END_OF_WORD : ch);
  for (const ch of kept) {
    addToVocab(ch);
    addToVocab(kind === 'wordpiece' ? CONTINUATION + ch : ch + END_OF_WORD);
  }

  const words: number[][] = [];
  const freqs: number[] = [];
  const sortedWords = [...wordCounts].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  for (const [w, c] of sortedWords) {
    const chars = [...w];
    if (chars.length > MAX_WORD_CHARS || chars.some((ch) => !alphabet.has(ch))) continue;
    words.push(chars.map((ch, i) => intern(pieceAt(ch, i, chars.length - 1))));
    freqs.push(c);
  }

  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  let touched = new Set<number>();
  const countPairs = (w: number, sign: 1 | -1): void => {
    const syms = words[w];
    for (let j = 0; j + 1 < syms.length; j++) {
      const key = syms[j] * PAIR_SHIFT + syms[j + 1];
      const c = (pairCount.get(key) ?? 0) + sign * freqs[w];
      if (c === 0) { pairCount.delete(key); pairWords.delete(key); continue; }
      pairCount.set(key, c);
      if (sign > 0) {
        let set = pairWords.get(key);
        if (!set) { set = new Set(); pairWords.set(key, set); }
        set.add(w);
        touched.add(key);
      }
    }
  };

  // Max-heap on (count desc, left string asc, right string asc); entries may be stale (see below).
  const heap: HeapEntry[] = [];
  const before = (x: HeapEntry, y: HeapEntry): boolean => {
    if (x.count !== y.count) return x.count > y.count;
    const xa = symbols[x.a], ya = symbols[y.a];
    if (xa !== ya) return xa < ya;
    return symbols[x.b] < symbols[y.b];
  };
  const push = (e: HeapEntry): void => {
    heap.push(e);
    let i = heap.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(heap[i], heap[p])) break;
      [heap[i], heap[p]] = [heap[p], heap[i]];
      i = p;
    }
  };
  const pop = (): HeapEntry => {
    const top = heap[0];
    const lastEntry = heap.pop() as HeapEntry;
    if (heap.length > 0) {
      heap[0] = lastEntry;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < heap.length && before(heap[l], heap[m])) m = l;
        if (r < heap.length && before(heap[r], heap[m])) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m], heap[i]];
        i = m;
      }
    }
    return top;
  };
  const flushTouched = (): void => {
    for (const key of touched) {
      const c = pairCount.get(key);
      if (c !== undefined) push({ count: c, a: Math.floor(key / PAIR_SHIFT), b: key % PAIR_SHIFT });
    }
    touched = new Set();
  };

  for (let w = 0; w < words.length; w++) countPairs(w, 1);
  flushTouched();

  const merges: [string, string][] = [];
  // Every pair with a positive count has a heap entry whose count is ≥ its current count (counts of
  // existing pairs only fall, and every rise pushes a fresh entry), so a popped entry whose count is
  // current is the true maximum; an out-of-date one is pushed back with its current count.
  while (heap.length > 0 && vocab.length < vocabSize) {
    const top = pop();
    const key = top.a * PAIR_SHIFT + top.b;
    const current = pairCount.get(key) ?? 0;
    if (current === 0) continue;
    if (current !== top.count) { push({ count: current, a: top.a, b: top.b }); continue; }
    if (current < minFrequency) break;
    const left = symbols[top.a], right = symbols[top.b];
    const joined = intern(kind === 'wordpiece' ? left + right.slice(CONTINUATION.length) : left + right);
    merges.push([left, right]);
    addToVocab(symbols[joined]);
    for (const w of [...(pairWords.get(key) ?? [])]) {
      const syms = words[w];
      let holds = false;
      for (let j = 0; j + 1 < syms.length; j++) if (syms[j] === top.a && syms[j + 1] === top.b) { holds = true; break; }
      if (!holds) continue;
      countPairs(w, -1);
      const next: number[] = [];
      for (let j = 0; j < syms.length; j++) {
        if (j + 1 < syms.length && syms[j] === top.a && syms[j + 1] === top.b) { next.push(joined); j++; } else next.push(syms[j]);
      }
      words[w] = next;
      countPairs(w, 1);
    }
    pairWords.delete(key);
    flushTouched();
  }
  return { vocab, merges };
}

type JsonObject = Record<string, unknown>;

function specialsFor(kind: TokenizerKind): { list: string[]; pad: string; unk: string; bos: string; eos: string } {
  const s = kind === 'wordpiece' ? WORDPIECE_SPECIALS : BPE_SPECIALS;
  return { list: Object.values(s), pad: s.pad, unk: s.unk, bos: s.bos, eos: s.eos };
}

const NORMALIZER = {
  type: 'Sequence',
  normalizers: [
    { type: 'NFKC' },
    { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: true, lowercase: true },
  ],
};

function tokenizerJson(kind: TokenizerKind, vocab: string[], merges: [string, string][]): JsonObject {
  const sp = specialsFor(kind);
  const vocabObj: Record<string, number> = Object.create(null);
  vocab.forEach((t, i) => { vocabObj[t] = i; });
  const idOf = (t: string): number => vocabObj[t];
  const tokenSpec = (t: string) => ({ id: t, ids: [idOf(t)], tokens: [t] });
  const model = kind === 'wordpiece'
    ? { type: 'WordPiece', unk_token: sp.unk, continuing_subword_prefix: CONTINUATION, max_input_chars_per_word: MAX_WORD_CHARS, vocab: vocabObj }
    : {
      type: 'BPE', dropout: null, unk_token: sp.unk, continuing_subword_prefix: null, end_of_word_suffix: END_OF_WORD,
      fuse_unk: false, byte_fallback: false, vocab: vocabObj, merges: merges.map(([a, b]) => `${a} ${b}`),
    };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: sp.list.map((t) => ({ id: idOf(t), content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: NORMALIZER,
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: sp.bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: sp.eos, type_id: 0 } }],
      pair: [
        { SpecialToken: { id: sp.bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: sp.eos, type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } }, { SpecialToken: { id: sp.eos, type_id: 1 } },
      ],
      special_tokens: { [sp.bos]: tokenSpec(sp.bos), [sp.eos]: tokenSpec(sp.eos) },
    },
    decoder: kind === 'wordpiece' ? { type: 'WordPiece', prefix: CONTINUATION, cleanup: true } : { type: 'BPEDecoder', suffix: END_OF_WORD },
    model,
  };
}

function specialTokensMap(kind: TokenizerKind): JsonObject {
  return kind === 'wordpiece'
    ? { cls_token: WORDPIECE_SPECIALS.bos, mask_token: WORDPIECE_SPECIALS.mask, pad_token: WORDPIECE_SPECIALS.pad, sep_token: WORDPIECE_SPECIALS.eos, unk_token: WORDPIECE_SPECIALS.unk }
    : { bos_token: BPE_SPECIALS.bos, eos_token: BPE_SPECIALS.eos, pad_token: BPE_SPECIALS.pad, unk_token: BPE_SPECIALS.unk };
}

function tokenizerConfig(kind: TokenizerKind): JsonObject {
  const common = { do_lower_case: true, model_max_length: MODEL_MAX_LENGTH, clean_up_tokenization_spaces: true };
  return kind === 'wordpiece'
    ? { tokenizer_class: 'BertTokenizer', ...common, strip_accents: null, tokenize_chinese_chars: true, ...specialTokensMap(kind) }
    // "PreTrainedTokenizerFast": generic loader of tokenizer.json in HF Python; the base class in tokenizers.js.
    : { tokenizer_class: 'PreTrainedTokenizerFast', ...common, ...specialTokensMap(kind) };
}

/** Words of the corpus exactly as the written tokenizer will see them at encoding time. */
function countWords(captions: string[], kind: TokenizerKind): Map<string, number> {
  const sp = specialsFor(kind);
  const skeleton = tokenizerJson(kind, sp.list, []);
  const tok = new HfTokenizer(skeleton, tokenizerConfig(kind));
  if (!tok.pre_tokenizer) throw new Error('buildTokenizer: internal: the tokenizer skeleton has no pre-tokenizer');
  const specials = new RegExp(`(${sp.list.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})`);
  const counts = new Map<string, number>();
  for (const caption of captions) {
    // Literal special tokens in a caption are kept whole at encoding time, so they are not words.
    const sections = caption.split(specials);
    for (const section of sections) {
      if (!section || sp.list.includes(section)) continue;
      const normalized = tok.normalizer ? tok.normalizer.normalize(section) : section;
      if (normalized.length === 0) continue;
      for (const w of tok.pre_tokenizer.pre_tokenize(normalized)) counts.set(w, (counts.get(w) ?? 0) + 1);
    }
  }
  return counts;
}

/**
 * Writes the tokenizer files like a checkpoint: all of them into a temporary sibling folder,
 * flushed, then renamed to `dir` in one step, so a process killed meanwhile leaves either no
 * folder or a whole one (a lone tokenizer.json would be taken for a tokenizer). Into an
 * existing folder the files are renamed in one at a time, tokenizer.json last.
 */
async function writeFolder(dir: string, files: [string, string][]): Promise<void> {
  const parent = path.dirname(dir);
  const tmp = path.join(parent, `.${path.basename(dir)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await fs.mkdir(tmp, { recursive: true });
    for (const [name, text] of files) await writeFileAtomic(path.join(tmp, name), text, { sync: true });
  } catch (e) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw new Error(`buildTokenizer: cannot write the tokenizer files beside ${dir} (${(e as Error).message})`, { cause: e });
  }
  try {
    await fs.rename(tmp, dir);
    return;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST' && code !== 'ENOTEMPTY' && code !== 'EISDIR' && code !== 'EPERM') {
      await fs.rm(tmp, { recursive: true, force: true });
      throw new Error(`buildTokenizer: cannot move the tokenizer into ${dir} (${(e as Error).message})`, { cause: e });
    }
  }
  try {
    const order = [...files.map(([n]) => n).filter((n) => n !== 'tokenizer.json'), 'tokenizer.json'];
    for (const name of order) await fs.rename(path.join(tmp, name), path.join(dir, name));
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

/**
 * A short hex key of what decides a built tokenizer's files: the captions (in order) and the
 * options. Two corpora with the same vocabulary size get different keys, so a tokenizer
 * folder named by it is never served to the wrong corpus.
 *
 * @example tokenizerKey(['a dog runs'], { kind: 'wordpiece', vocabSize: 1000 }) // '3f2a…' (16 hex digits)
 */
export function tokenizerKey(captions: readonly string[], options: { kind?: TokenizerKind; vocabSize?: number; minFrequency?: number }): string {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ kind: options.kind ?? 'wordpiece', vocabSize: options.vocabSize ?? 4096, minFrequency: options.minFrequency ?? 2, captions: captions.length }));
  for (const c of captions) hash.update(`${JSON.stringify(c)}\n`);
  return hash.digest('hex').slice(0, 16);
}

/**
 * Learn a vocabulary from captions (see `trainSubwords`) and write a tokenizer folder.
 * Deterministic: the same captions and options give byte-identical files.
 * @example
 * await buildTokenizer(['A man runs.', 'A dog runs.'], { out: 'runs/tok', vocabSize: 1000 });
 * const tok = await loadTokenizer('runs/tok');
 */
export async function buildTokenizer(captions: string[], options: BuildTokenizerOptions): Promise<BuildTokenizerResult> {
  if (!Array.isArray(captions)) throw new Error(`buildTokenizer: captions must be an array of strings, got ${typeof captions}`);
  captions.forEach((c, i) => {
    if (typeof c !== 'string') throw new Error(`buildTokenizer: captions[${i}] must be a string, got ${c === null ? 'null' : typeof c}`);
  });
  if (options === null || typeof options !== 'object') throw new Error('buildTokenizer: options must be an object with at least `out`');
  const { out, vocabSize = 4096, kind = 'wordpiece', minFrequency = 2 } = options;
  if (typeof out !== 'string' || out.length === 0) throw new Error(`buildTokenizer: options.out must be a non-empty folder path, got ${JSON.stringify(out)}`);
  if (kind !== 'wordpiece' && kind !== 'bpe') throw new Error(`buildTokenizer: options.kind must be 'wordpiece' or 'bpe', got ${JSON.stringify(kind)}`);
  const sp = specialsFor(kind);
  if (!Number.isInteger(vocabSize) || vocabSize < sp.list.length + 2 || vocabSize >= PAIR_SHIFT) {
    throw new Error(`buildTokenizer: options.vocabSize must be an integer in [${sp.list.length + 2}, ${PAIR_SHIFT}), got ${vocabSize}`);
  }
  if (!Number.isInteger(minFrequency) || minFrequency < 1) throw new Error(`buildTokenizer: options.minFrequency must be an integer ≥ 1, got ${minFrequency}`);

  const counts = countWords(captions, kind);
  if (counts.size === 0) throw new Error(`buildTokenizer: the ${captions.length} captions hold no words after normalisation; expected a caption corpus`);
  const { vocab, merges } = trainSubwords(counts, { kind, vocabSize, minFrequency, specials: sp.list });

  const dir = path.resolve(out);
  const files: [string, string][] = [
    ['tokenizer.json', JSON.stringify(tokenizerJson(kind, vocab, merges), null, 2) + '\n'],
    ['tokenizer_config.json', JSON.stringify(tokenizerConfig(kind), null, 2) + '\n'],
    ['special_tokens_map.json', JSON.stringify(specialTokensMap(kind), null, 2) + '\n'],
  ];
  if (kind === 'wordpiece') files.push(['vocab.txt', vocab.join('\n') + '\n']);
  await writeFolder(dir, files);
  return { dir, kind, vocabSize: vocab.length, words: counts.size, merges: merges.length, files: files.map(([n]) => path.join(dir, n)) };
}
