/**
 * Loads a local Hugging Face tokenizer folder (`tokenizer.json` + `tokenizer_config.json`) with
 * Hugging Face's tokenizers.js (`@huggingface/tokenizers`, the tokenizer half of transformers.js),
 * and turns caption batches into the fixed-shape id/mask arrays the text encoder takes. The files
 * are read here and handed over as objects: nothing is fetched and nothing is cached.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

/** A padded, truncated batch: row-major `[N, maxLen]`; `mask` is 1 on real tokens, 0 on padding. */
export interface EncodedBatch {
  ids: Int32Array;
  mask: Int32Array;
  shape: [number, number];
}

export interface Tokenizer {
  /** Absolute path of the folder it was loaded from. */
  readonly dir: string;
  /** Size of the id space (largest id + 1): the text encoder's embedding rows. */
  readonly vocabSize: number;
  readonly padId: number;
  /** The token the template puts first ([CLS] / <|startoftext|>), or null when it puts none. */
  readonly bosId: number | null;
  /** The token the template puts last and the text encoder pools on: [SEP] (WordPiece) or <|endoftext|> (CLIP BPE). */
  readonly eosId: number;
  readonly unkId: number | null;
  /**
   * Encode captions to `[N, maxLen]` ids and mask, padded on the right and truncated so that the
   * template's end token stays last.
   * @example tok.encode(['a man runs'], 8).ids // [CLS] a man runs [SEP] [PAD] [PAD] [PAD]
   */
  encode(captions: string[], maxLen: number): EncodedBatch;
  /**
   * The caption's tokens as strings, without special tokens.
   * @example tok.tokenize('Walked') // ['walk', '##ed']
   */
  tokenize(caption: string): string[];
  /**
   * Ids back to text; special tokens (padding included) are dropped unless `skipSpecialTokens` is false.
   * @example tok.decode(tok.encode(['A man runs.'], 8).ids) // 'a man runs.'
   */
  decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string;
}

/** Keys tokenizers.js reads from tokenizer.json without checking; a missing one would crash it unhelpfully. */
const TOKENIZER_JSON_KEYS = ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder'] as const;

async function readJsonFile(file: string, expected: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error(`loadTokenizer: ${file} is missing; expected ${expected}`);
    throw new Error(`loadTokenizer: cannot read ${file} (${(e as Error).message}); expected ${expected}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new Error(`loadTokenizer: ${file} is not valid JSON (${(e as Error).message}); expected ${expected}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new Error(`loadTokenizer: ${file} holds ${Array.isArray(parsed) ? 'an array' : String(parsed)}; expected ${expected}`);
  }
  return parsed as Record<string, unknown>;
}

async function readFolder(dir: string): Promise<{ json: Record<string, unknown>; config: Record<string, unknown> }> {
  const tjFile = path.join(dir, 'tokenizer.json');
  const tj = await readJsonFile(tjFile, 'a Hugging Face tokenizer.json object (model, added_tokens, normalizer, pre_tokenizer, post_processor, decoder)');
  const model = tj.model as Record<string, unknown> | undefined;
  if (model === null || typeof model !== 'object' || Array.isArray(model) || typeof model.vocab !== 'object' || model.vocab === null) {
    throw new Error(`loadTokenizer: ${tjFile} has no "model" object with a "vocab"; expected a Hugging Face tokenizer.json`);
  }
  if (!Array.isArray(tj.added_tokens)) {
    throw new Error(`loadTokenizer: ${tjFile} has no "added_tokens" array; expected a Hugging Face tokenizer.json (use [] when there are none)`);
  }
  for (const k of TOKENIZER_JSON_KEYS) {
    if (!(k in tj)) throw new Error(`loadTokenizer: ${tjFile} has no "${k}" field; expected an object or null`);
  }
  const config = await readJsonFile(path.join(dir, 'tokenizer_config.json'), 'a Hugging Face tokenizer_config.json object (tokenizer_class, special tokens)');
  return { json: tj, config };
}

/** A special token of tokenizer_config.json: a string, or an AddedToken object `{ content }`. */
function specialId(tok: HfTokenizer, config: Record<string, unknown>, key: string): number | null {
  const v = config[key];
  const content = typeof v === 'string' ? v : v !== null && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : null;
  if (content === null) return null;
  return tok.token_to_id(content) ?? null;
}

/** The template's special tokens around a caption, found by encoding a probe with and without them. */
function templateOf(tok: HfTokenizer, dir: string): { prefix: number; suffix: number } {
  for (const probe of ['a', 'the', 'x', '1']) {
    const full = tok.encode(probe).ids;
    const content: number[] = tok.encode(probe, { add_special_tokens: false }).ids;
    if (content.length === 0) continue;
    for (let p = 0; p + content.length <= full.length; p++) {
      if (content.every((id, j) => full[p + j] === id)) return { prefix: p, suffix: full.length - p - content.length };
    }
    throw new Error(`loadTokenizer: the post_processor of ${dir} does not keep the caption's tokens in one piece; expected a template like [CLS] $A [SEP]`);
  }
  throw new Error(`loadTokenizer: the tokenizer in ${dir} produces no tokens for simple words ("a", "the"); expected a working vocabulary`);
}

function wrap(tok: HfTokenizer, config: Record<string, unknown>, dir: string): Tokenizer {
  const { prefix, suffix } = templateOf(tok, dir);
  if (suffix === 0) {
    throw new Error(`loadTokenizer: the tokenizer in ${dir} adds no end token after a caption; expected a post_processor that appends [SEP] or an EOS token (the text encoder pools on it)`);
  }
  const template = tok.encode('a').ids;
  const eosId = template[template.length - 1];
  const bosId = prefix > 0 ? template[0] : null;
  let maxId = -1;
  for (const id of tok.get_vocab(true).values()) if (id > maxId) maxId = id;
  const vocabSize = maxId + 1;
  // CLIP's folders name <|endoftext|> as the pad token; a folder without one pads with its end token.
  const padId = specialId(tok, config, 'pad_token') ?? eosId;
  const unkId = specialId(tok, config, 'unk_token');

  return {
    dir, vocabSize, padId, bosId, eosId, unkId,
    encode(captions: string[], maxLen: number): EncodedBatch {
      if (!Array.isArray(captions)) throw new Error(`encode: captions must be an array of strings, got ${typeof captions}`);
      if (!Number.isInteger(maxLen) || maxLen <= prefix + suffix) {
        throw new Error(`encode: maxLen must be an integer > ${prefix + suffix} (the template's ${prefix + suffix} special tokens plus at least one caption token), got ${maxLen}`);
      }
      const n = captions.length;
      const ids = new Int32Array(n * maxLen).fill(padId);
      const mask = new Int32Array(n * maxLen);
      for (let i = 0; i < n; i++) {
        const c = captions[i];
        if (typeof c !== 'string') throw new Error(`encode: captions[${i}] must be a string, got ${c === null ? 'null' : typeof c}`);
        let row = tok.encode(c).ids;
        if (row.length > maxLen) {
          // Cut caption tokens, never the template's end: the encoder pools on the last real token.
          row = row.slice(0, maxLen - suffix).concat(row.slice(row.length - suffix));
        }
        const base = i * maxLen;
        for (let j = 0; j < row.length; j++) { ids[base + j] = row[j]; mask[base + j] = 1; }
      }
      return { ids, mask, shape: [n, maxLen] };
    },
    tokenize(caption: string): string[] {
      if (typeof caption !== 'string') throw new Error(`tokenize: caption must be a string, got ${typeof caption}`);
      return tok.encode(caption, { add_special_tokens: false }).tokens;
    },
    decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string {
      const list = Array.from(ids);
      for (let i = 0; i < list.length; i++) {
        if (!Number.isInteger(list[i]) || list[i] < 0 || list[i] >= vocabSize) {
          throw new Error(`decode: ids[${i}] = ${list[i]} is not a token id in [0, ${vocabSize})`);
        }
      }
      if (list.length === 0) return '';
      return tok.decode(list, { skip_special_tokens: opts.skipSpecialTokens ?? true });
    },
  };
}

/**
 * Load a tokenizer folder through tokenizers.js (the folder's own files; nothing fetched or cached).
 * Errors name the folder or file and what was expected.
 * @example
 * const tok = await loadTokenizer('runs/tok');
 * const { ids, mask, shape } = tok.encode(['a man runs'], 16); // shape [1, 16]
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  if (typeof dir !== 'string' || dir.length === 0) throw new Error(`loadTokenizer: dir must be a non-empty folder path, got ${JSON.stringify(dir)}`);
  const abs = path.resolve(dir);
  let stat;
  try {
    stat = await fs.stat(abs);
  } catch {
    throw new Error(`loadTokenizer: tokenizer folder ${abs} does not exist; expected a folder with tokenizer.json and tokenizer_config.json (write one with \`vlmargin tokenizer build\`)`);
  }
  if (!stat.isDirectory()) throw new Error(`loadTokenizer: ${abs} is a file; expected a folder with tokenizer.json and tokenizer_config.json`);
  const { json, config } = await readFolder(abs);
  let tok: HfTokenizer;
  try {
    tok = new HfTokenizer(json, config);
  } catch (e) {
    throw new Error(`loadTokenizer: tokenizers.js could not build a tokenizer from ${abs}: ${(e as Error).message}`);
  }
  return wrap(tok, config, abs);
}
