/**
 * Synthetic speech corpora written by the project's source-filter synthesiser
 * (audio/synthSpeech.ts), small enough for tests and the README's example.
 *
 * Speakers (VoxCeleb layout): `out/train/<spk>/<session>/<utt>.wav` (training speakers),
 * `out/test/<spk>/…` (disjoint test speakers), `out/trials.txt` (`label path path`, every pair
 * of test utterances, paths relative to out/test) and `out/corpus.json`.
 *
 * Anti-spoofing (ASVspoof LA layout): `out/<split>/wav/<utt>.wav` and `out/<split>/protocol.txt`
 * (`speaker utt - attack label`) for split train and eval (disjoint speakers). Attack A01
 * resynthesises with a vocoder's buzzy excitation, A02 with a smoothed, band-limited envelope.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { writeWav } from '../audio/decode.js';
import { drawVoice, drawWord, synthesizeUtterance, type SpeakerVoice, type SpoofKind } from '../audio/synthSpeech.js';
import { mulberry32 } from '../util/rng.js';

export interface SynthSpeakerOptions {
  out: string;
  /** Training speakers (default 16). */
  trainSpeakers?: number;
  /** Test speakers, disjoint from training (default 8). */
  testSpeakers?: number;
  /** Sessions per speaker (default 2) and utterances per session (default 3). */
  sessions?: number;
  uttsPerSession?: number;
  /** Utterance length in seconds (default 1.5). */
  seconds?: number;
  seed?: number;
}

const VOCABULARY = 40;

function checkCount(v: number, name: string, fn: string, min = 1): void {
  if (!Number.isInteger(v) || v < min) throw new Error(`${fn}: '${name}' must be an integer ≥ ${min}, got ${v}`);
}

/** Reads a corpus.json's options, or undefined when absent or unreadable. */
async function readCorpus(out: string): Promise<Record<string, unknown> | undefined> {
  try { return JSON.parse(await readFile(path.join(out, 'corpus.json'), 'utf8')) as Record<string, unknown>; } catch { return undefined; }
}

async function sameOptions(out: string, kind: string, options: Record<string, unknown>): Promise<boolean> {
  const have = await readCorpus(out);
  return !!have && have.kind === kind && JSON.stringify(have.options) === JSON.stringify(options);
}

/**
 * Writes the synthetic speaker corpus (skipped when `out` already holds one made with the same options).
 *
 * @example const c = await generateSynthSpeakers({ out: 'data/synth-speakers' }); // c.trials
 */
export async function generateSynthSpeakers(opts: SynthSpeakerOptions): Promise<{ train: string; test: string; trials: string; utterances: number; reused: boolean }> {
  const fn = 'generateSynthSpeakers';
  const { trainSpeakers = 16, testSpeakers = 8, sessions = 2, uttsPerSession = 3, seconds = 1.5, seed = 1 } = opts;
  checkCount(trainSpeakers, 'trainSpeakers', fn, 2);
  checkCount(testSpeakers, 'testSpeakers', fn, 2);
  checkCount(sessions, 'sessions', fn);
  checkCount(uttsPerSession, 'uttsPerSession', fn);
  if (!(seconds >= 0.2)) throw new Error(`${fn}: 'seconds' must be ≥ 0.2, got ${seconds}`);
  if (sessions * uttsPerSession < 2) throw new Error(`${fn}: need at least 2 utterances per speaker for target trials`);
  const out = path.resolve(opts.out);
  const options = { trainSpeakers, testSpeakers, sessions, uttsPerSession, seconds, seed };
  const files = { train: path.join(out, 'train'), test: path.join(out, 'test'), trials: path.join(out, 'trials.txt') };
  if (await sameOptions(out, 'speakers', options)) return { ...files, utterances: (trainSpeakers + testSpeakers) * sessions * uttsPerSession, reused: true };
  await rm(files.train, { recursive: true, force: true });
  await rm(files.test, { recursive: true, force: true });
  const rand = mulberry32(seed);
  const vocab = Array.from({ length: VOCABULARY }, () => drawWord(rand));
  const voices: Record<string, SpeakerVoice> = {};
  const testUtts: { speaker: string; rel: string }[] = [];
  let count = 0;
  for (let s = 0; s < trainSpeakers + testSpeakers; s++) {
    const isTrain = s < trainSpeakers;
    const name = `${isTrain ? 'spk' : 'tst'}${String(s).padStart(3, '0')}`;
    const voice = drawVoice(rand);
    voices[name] = voice;
    for (let k = 0; k < sessions; k++) {
      const sess = `sess${k}`;
      const dir = path.join(isTrain ? files.train : files.test, name, sess);
      await mkdir(dir, { recursive: true });
      for (let u = 0; u < uttsPerSession; u++) {
        const words = Array.from({ length: 4 }, () => vocab[Math.floor(rand() * vocab.length)]);
        const pcm = synthesizeUtterance(voice, rand, { seconds, words });
        const file = `${String(u + 1).padStart(5, '0')}.wav`;
        await writeWav(path.join(dir, file), pcm);
        if (!isTrain) testUtts.push({ speaker: name, rel: `${name}/${sess}/${file}` });
        count++;
      }
    }
  }
  const lines: string[] = [];
  for (let i = 0; i < testUtts.length; i++) {
    for (let j = i + 1; j < testUtts.length; j++) lines.push(`${testUtts[i].speaker === testUtts[j].speaker ? 1 : 0} ${testUtts[i].rel} ${testUtts[j].rel}`);
  }
  await writeFile(files.trials, lines.join('\n') + '\n');
  await writeFile(path.join(out, 'corpus.json'), JSON.stringify({ kind: 'speakers', options, voices }, null, 1) + '\n');
  return { ...files, utterances: count, reused: false };
}

export interface SynthSpoofOptions {
  out: string;
  /** Speakers of the train split (default 4) and of the eval split (default 4, disjoint). */
  trainSpeakers?: number;
  evalSpeakers?: number;
  /** Bona fide utterances per speaker (default 6); as many spoofs, half of each attack. */
  perSpeaker?: number;
  seconds?: number;
  seed?: number;
}

const ATTACKS: { id: string; kind: SpoofKind }[] = [{ id: 'A01', kind: 'excitation' }, { id: 'A02', kind: 'smoothing' }];

/**
 * Writes the synthetic bona fide / spoof set (skipped when `out` holds one with the same options).
 *
 * @example const s = await generateSynthSpoof({ out: 'data/synth-spoof' }); // s.train.protocol
 */
export async function generateSynthSpoof(opts: SynthSpoofOptions): Promise<{
  train: { protocol: string; audio: string }; eval: { protocol: string; audio: string }; utterances: number; reused: boolean;
}> {
  const fn = 'generateSynthSpoof';
  const { trainSpeakers = 4, evalSpeakers = 4, perSpeaker = 6, seconds = 1, seed = 1 } = opts;
  checkCount(trainSpeakers, 'trainSpeakers', fn);
  checkCount(evalSpeakers, 'evalSpeakers', fn);
  checkCount(perSpeaker, 'perSpeaker', fn, 2);
  if (!(seconds >= 0.2)) throw new Error(`${fn}: 'seconds' must be ≥ 0.2, got ${seconds}`);
  const out = path.resolve(opts.out);
  const options = { trainSpeakers, evalSpeakers, perSpeaker, seconds, seed };
  const split = (name: string) => ({ protocol: path.join(out, name, 'protocol.txt'), audio: path.join(out, name, 'wav') });
  const result = { train: split('train'), eval: split('eval'), utterances: 2 * perSpeaker * (trainSpeakers + evalSpeakers) };
  if (await sameOptions(out, 'spoof', options)) return { ...result, reused: true };
  const rand = mulberry32(seed);
  const vocab = Array.from({ length: VOCABULARY }, () => drawWord(rand));
  let id = 0;
  for (const [name, speakers] of [['train', trainSpeakers], ['eval', evalSpeakers]] as const) {
    const files = split(name);
    await rm(files.audio, { recursive: true, force: true });
    await mkdir(files.audio, { recursive: true });
    const lines: string[] = [];
    const prefix = name === 'train' ? 'SY_T' : 'SY_E';
    for (let s = 0; s < speakers; s++) {
      const speaker = `${prefix.slice(3)}${String(s).padStart(4, '0')}`;
      const voice = drawVoice(rand);
      for (let u = 0; u < perSpeaker; u++) {
        const words = Array.from({ length: 4 }, () => vocab[Math.floor(rand() * vocab.length)]);
        // The same words in the same voice: bona fide, then its resynthesis by one attack.
        for (const [attack, kind] of [['-', 'none'], [ATTACKS[u % 2].id, ATTACKS[u % 2].kind]] as const) {
          const utt = `${prefix}_${String(id++).padStart(7, '0')}`;
          await writeWav(path.join(files.audio, `${utt}.wav`), synthesizeUtterance(voice, rand, { seconds, words, spoof: kind }));
          lines.push(`${speaker} ${utt} - ${attack} ${kind === 'none' ? 'bonafide' : 'spoof'}`);
        }
      }
    }
    await writeFile(files.protocol, lines.join('\n') + '\n');
  }
  await writeFile(path.join(out, 'corpus.json'), JSON.stringify({ kind: 'spoof', options, attacks: ATTACKS }, null, 1) + '\n');
  return { ...result, reused: false };
}
