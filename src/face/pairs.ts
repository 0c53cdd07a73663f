/**
 * LFW pairs.txt: a header `folds pairsPerFold` (or one number: the pairs of a single set),
 * then lines `name n1 n2` (same identity, images n1 and n2, 1-based) and
 * `name1 n1 name2 n2` (different identities). Images live at `<dir>/<name>/<name>_000n.<ext>`.
 */
import { access, readFile } from 'node:fs/promises';
import path from 'node:path';

export interface PairImage { name: string; n: number }
export interface VerificationPair {
  a: PairImage;
  b: PairImage;
  /** 1 for a same-identity pair, 0 otherwise. */
  label: 0 | 1;
  /** 1-based line number in the pairs file. */
  line: number;
}
export interface PairsFile {
  folds: number;
  pairsPerFold: number;
  pairs: VerificationPair[];
}

const EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp'];

function positive(s: string, file: string, line: number, what: string): number {
  const v = Number(s);
  if (!/^\d+$/.test(s) || !(v >= 1)) throw new Error(`${file}:${line}: ${what} '${s}' is not a positive integer`);
  return v;
}

/**
 * Parses pairs.txt text; `file` only names the source in errors.
 *
 * @example parsePairs('1\t1\na\t1\t2\na\t1\tb\t3\n').pairs.map((p) => p.label) // [1, 0]
 */
export function parsePairs(text: string, file = 'pairs.txt'): PairsFile {
  if (typeof text !== 'string') throw new Error(`${file}: expected text`);
  const lines = text.split(/\r?\n/);
  let h = 0;
  while (h < lines.length && lines[h].trim() === '') h++;
  if (h === lines.length) throw new Error(`${file}: empty; expected a header 'folds pairsPerFold' and pair lines`);
  const head = lines[h].trim().split(/\s+/);
  if (head.length > 2) throw new Error(`${file}:${h + 1}: header must be 'folds pairsPerFold' (or one count), got '${lines[h].trim()}'`);
  const folds = head.length === 2 ? positive(head[0], file, h + 1, 'folds') : 1;
  const pairsPerFold = positive(head[head.length - 1], file, h + 1, 'pairs per fold');
  const pairs: VerificationPair[] = [];
  for (let i = h + 1; i < lines.length; i++) {
    const t = lines[i].trim();
    if (t === '') continue;
    const f = t.split(/\s+/);
    const line = i + 1;
    if (f.length === 3) {
      pairs.push({ a: { name: f[0], n: positive(f[1], file, line, 'image number') }, b: { name: f[0], n: positive(f[2], file, line, 'image number') }, label: 1, line });
    } else if (f.length === 4) {
      pairs.push({ a: { name: f[0], n: positive(f[1], file, line, 'image number') }, b: { name: f[2], n: positive(f[3], file, line, 'image number') }, label: 0, line });
    } else {
      throw new Error(`${file}:${line}: expected 'name n1 n2' or 'name1 n1 name2 n2', got ${f.length} fields`);
    }
  }
  const expected = folds * pairsPerFold * 2;
  if (pairs.length !== expected) {
    throw new Error(`${file}: header says ${folds} fold(s) of ${pairsPerFold} same + ${pairsPerFold} different pairs (${expected}), found ${pairs.length} pair lines`);
  }
  return { folds, pairsPerFold, pairs };
}

async function exists(p: string): Promise<boolean> {
  try { await access(p); return true; } catch { return false; }
}

/**
 * Reads a pairs file and resolves every image under `imagesDir`. A missing image is an error
 * naming the pairs file, the line and the paths tried (all missing images are listed, up to 10).
 *
 * @example const { pairs, paths } = await readPairs('lfw/pairs.txt', 'lfw/images'); // paths: 'name#n' → file
 */
export async function readPairs(pairsFile: string, imagesDir: string): Promise<PairsFile & { paths: Map<string, string> }> {
  let text: string;
  try {
    text = await readFile(pairsFile, 'utf8');
  } catch (e) {
    throw new Error(`pairs file ${pairsFile}: cannot read (${(e as Error).message})`);
  }
  const parsed = parsePairs(text, pairsFile);
  const paths = new Map<string, string>();
  const missing: string[] = [];
  for (const p of parsed.pairs) {
    for (const im of [p.a, p.b]) {
      const key = `${im.name}#${im.n}`;
      if (paths.has(key)) continue;
      const base = path.join(imagesDir, im.name, `${im.name}_${String(im.n).padStart(4, '0')}`);
      let found: string | undefined;
      for (const ext of EXTENSIONS) if (await exists(base + ext)) { found = base + ext; break; }
      if (found) paths.set(key, found);
      else if (missing.length < 10) missing.push(`line ${p.line}: ${base}{${EXTENSIONS.join(',')}}`);
      else missing.push('');
    }
  }
  if (missing.length) {
    throw new Error(`pairs file ${pairsFile}: ${missing.length} image(s) not found under ${imagesDir}:\n  ${missing.filter(Boolean).join('\n  ')}`);
  }
  return { ...parsed, paths };
}
