/**
 * VoxCeleb layout: `ROOT/<speaker>/<session>/<utt>.<audio ext>`, every speaker folder a class;
 * trial lists `label path path` with label 1 (same speaker) or 0, paths relative to ROOT.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

/** File endings taken as audio (anything ffmpeg reads works; these are the ones looked for). */
export const AUDIO_EXTENSIONS = ['.wav', '.flac', '.m4a', '.mp3', '.ogg', '.opus', '.aac', '.mp4', '.webm'];

export interface SpeakerUtterance {
  speaker: string;
  session: string;
  /** Absolute path. */
  path: string;
  /** Path relative to the root, with '/' separators (as trial lists write it). */
  rel: string;
  /** Index of the speaker in the sorted speaker list. */
  label: number;
}

export interface VoxCelebScan {
  root: string;
  /** Speaker folder names, sorted: the class list. */
  speakers: string[];
  utterances: SpeakerUtterance[];
  /** Entries that do not fit the layout, with why. */
  skipped: { path: string; reason: string }[];
}

async function dirents(dir: string): Promise<import('node:fs').Dirent[]> {
  return (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * Lists a VoxCeleb-layout tree. Speakers with no utterance are left out (and reported).
 *
 * @example const { speakers, utterances } = await scanVoxCeleb('data/vox1/dev/wav');
 */
export async function scanVoxCeleb(root: string): Promise<VoxCelebScan> {
  const abs = path.resolve(root);
  let top: import('node:fs').Dirent[];
  try { top = await dirents(abs); } catch (e) {
    throw new Error(`--audio ${root}: cannot list (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); expected <speaker>/<session>/<utt>.wav folders`);
  }
  const skipped: { path: string; reason: string }[] = [];
  const found: Omit<SpeakerUtterance, 'label'>[] = [];
  const speakers: string[] = [];
  for (const s of top) {
    if (s.name.startsWith('.')) continue;
    const sp = path.join(abs, s.name);
    if (!s.isDirectory()) { skipped.push({ path: sp, reason: 'not a speaker folder' }); continue; }
    let n = 0;
    for (const sess of await dirents(sp)) {
      const sessPath = path.join(sp, sess.name);
      if (sess.name.startsWith('.')) continue;
      if (!sess.isDirectory()) { skipped.push({ path: sessPath, reason: 'not in a session folder (expected <speaker>/<session>/<utt>)' }); continue; }
      for (const u of await dirents(sessPath)) {
        const up = path.join(sessPath, u.name);
        if (u.name.startsWith('.')) continue;
        if (!u.isFile() || !AUDIO_EXTENSIONS.includes(path.extname(u.name).toLowerCase())) { skipped.push({ path: up, reason: 'not an audio file' }); continue; }
        found.push({ speaker: s.name, session: sess.name, path: up, rel: [s.name, sess.name, u.name].join('/') });
        n++;
      }
    }
    if (n > 0) speakers.push(s.name);
    else skipped.push({ path: sp, reason: 'speaker folder without utterances' });
  }
  const index = new Map(speakers.map((s, i) => [s, i]));
  return { root: abs, speakers, utterances: found.map((u) => ({ ...u, label: index.get(u.speaker)! })), skipped };
}

export interface Trial {
  /** 1 same speaker, 0 different. */
  label: 0 | 1;
  enrol: string;
  test: string;
}

const TARGET = new Set(['1', 'target', 'true']);
const NONTARGET = new Set(['0', 'nontarget', 'non-target', 'false']);

/**
 * Parses a trial list: `label path path` per line (label 1/0 or target/nontarget); blank lines
 * and `#` comments skipped. A path must stay inside the audio root.
 *
 * @example parseTrials('1 a/s/1.wav b/s/2.wav\n', 'trials.txt')
 */
export function parseTrials(text: string, file = 'trials'): Trial[] {
  const out: Trial[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const t = raw.trim();
    if (t === '' || t.startsWith('#')) return;
    const f = t.split(/\s+/);
    if (f.length !== 3) throw new Error(`${file}:${i + 1}: expected 'label path path', got ${f.length} field(s): '${t}'`);
    const l = f[0].toLowerCase();
    if (!TARGET.has(l) && !NONTARGET.has(l)) throw new Error(`${file}:${i + 1}: label '${f[0]}' must be 1/target or 0/nontarget`);
    for (const p of [f[1], f[2]]) {
      const norm = path.posix.normalize(p.replace(/\\/g, '/'));
      if (path.isAbsolute(p) || norm.startsWith('../') || norm === '..') throw new Error(`${file}:${i + 1}: path '${p}' must be relative to the audio root and stay inside it`);
    }
    out.push({ label: TARGET.has(l) ? 1 : 0, enrol: f[1], test: f[2] });
  });
  if (out.length === 0) throw new Error(`${file}: no trials`);
  return out;
}

/** Reads and parses a trial list. @example const trials = await readTrials('veri_test2.txt'); */
export async function readTrials(file: string): Promise<Trial[]> {
  let text: string;
  try { text = await readFile(file, 'utf8'); } catch (e) { throw new Error(`--trials ${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`); }
  return parseTrials(text, file);
}
