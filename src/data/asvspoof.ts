/**
 * ASVspoof 2019 LA protocols: one line per utterance, `speaker utt - attack label`, where
 * attack is `-` for bona fide speech (or A01…A19) and label is `bonafide` or `spoof`; the audio
 * is `<audio dir>/<utt>.flac` (or .wav).
 */
import { access, readFile } from 'node:fs/promises';
import path from 'node:path';

export interface SpoofTrial {
  speaker: string;
  utt: string;
  /** `-` for bona fide. */
  attack: string;
  /** 1 bona fide, 0 spoof (bona fide is the positive class of the countermeasure score). */
  label: 0 | 1;
}

/**
 * Parses protocol text. @example parseAsvspoofProtocol('LA_0079 LA_T_1138215 - - bonafide\n')
 */
export function parseAsvspoofProtocol(text: string, file = 'protocol'): SpoofTrial[] {
  const out: SpoofTrial[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const t = raw.trim();
    if (t === '' || t.startsWith('#')) return;
    const f = t.split(/\s+/);
    if (f.length !== 5) throw new Error(`${file}:${i + 1}: expected 'speaker utt - attack label' (5 fields), got ${f.length}: '${t}'`);
    const l = f[4].toLowerCase();
    if (l !== 'bonafide' && l !== 'spoof') throw new Error(`${file}:${i + 1}: label '${f[4]}' must be 'bonafide' or 'spoof'`);
    if (/[\\/]/.test(f[1]) || f[1] === '.' || f[1] === '..') throw new Error(`${file}:${i + 1}: utterance id '${f[1]}' must be a bare name`);
    out.push({ speaker: f[0], utt: f[1], attack: f[3], label: l === 'bonafide' ? 1 : 0 });
  });
  if (out.length === 0) throw new Error(`${file}: no protocol lines`);
  return out;
}

/** Reads and parses a protocol file. @example await readAsvspoofProtocol('ASVspoof2019.LA.cm.train.trn.txt') */
export async function readAsvspoofProtocol(file: string): Promise<SpoofTrial[]> {
  let text: string;
  try { text = await readFile(file, 'utf8'); } catch (e) { throw new Error(`--protocol ${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`); }
  return parseAsvspoofProtocol(text, file);
}

/**
 * The audio file of an utterance: `<dir>/<utt>.flac`, else `.wav`; undefined when neither exists.
 *
 * @example await asvspoofAudioPath('LA/ASVspoof2019_LA_train/flac', 'LA_T_1138215')
 */
export async function asvspoofAudioPath(dir: string, utt: string): Promise<string | undefined> {
  for (const ext of ['.flac', '.wav']) {
    const p = path.join(dir, utt + ext);
    try { await access(p); return p; } catch { /* next */ }
  }
  return undefined;
}
