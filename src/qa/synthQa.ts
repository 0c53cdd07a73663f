/**
 * A video question-answering set derived from a synthetic corpus's concepts: for each clip,
 * one question per attribute type (colour, direction, shape, speed). Multiple-choice items
 * give four candidate answers of the question's type, one correct (speed has only two
 * values, so it is open-ended only); open-ended items are answered from the answer
 * vocabulary. Generation is deterministic in (seed, clip id, type).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { COLOR_NAMES, DIRECTIONS, SPEEDS, seededRandom } from '../data/synth.js';
import { SHAPES } from '../data/synthDraw.js';
import type { ManifestEntry } from '../data/types.js';

export const QA_TYPES = ['color', 'direction', 'shape', 'speed'] as const;
export type QaType = (typeof QA_TYPES)[number];

/** The question text, the concept prefix it reads, and its possible answers, per type. */
export const QA_QUESTIONS: Record<QaType, { question: string; concept: string; answers: readonly string[] }> = {
  color: { question: 'what colour is the object?', concept: 'color', answers: COLOR_NAMES },
  direction: { question: 'which way does it move?', concept: 'dir', answers: DIRECTIONS },
  shape: { question: 'what shape is it?', concept: 'shape', answers: SHAPES },
  speed: { question: 'is it fast or slow?', concept: 'speed', answers: SPEEDS },
};

/** Every answer of every type, in type order: the open-ended classes. */
export const QA_ANSWER_VOCAB: readonly string[] = QA_TYPES.flatMap((t) => QA_QUESTIONS[t].answers);

export interface QaItem {
  id: string;
  /** Manifest id of the clip. */
  videoId: string;
  split?: string;
  type: QaType;
  kind: 'mc' | 'open';
  question: string;
  answer: string;
  /** Multiple choice: four candidates, `choices[correct] === answer`. */
  choices?: string[];
  correct?: number;
}

/** The text the retrieval scorer embeds for one candidate: question then answer. */
export function qaCandidateText(question: string, answer: string): string {
  return `${question} ${answer}`;
}

/**
 * QA items of a corpus's entries (entries without the concept a type needs get no item of
 * that type). Multiple choice: colour, direction, shape; open-ended: all four types.
 * @example const { mc, open } = generateSynthQa(manifest.entries, { seed: 1 }); mc[0].choices // ['blue', 'red', 'cyan', 'green']
 */
export function generateSynthQa(entries: readonly ManifestEntry[], opts: { seed?: number } = {}): { mc: QaItem[]; open: QaItem[] } {
  if (!Array.isArray(entries as unknown)) throw new Error(`generateSynthQa: entries must be an array of manifest entries`);
  const seed = opts.seed ?? 0;
  const mc: QaItem[] = [];
  const open: QaItem[] = [];
  for (const e of entries) {
    const concepts = new Map((e.concepts ?? []).map((c) => { const k = c.indexOf(':'); return [c.slice(0, k), c.slice(k + 1)] as const; }));
    for (const type of QA_TYPES) {
      const q = QA_QUESTIONS[type];
      const answer = concepts.get(q.concept);
      if (answer === undefined || !q.answers.includes(answer)) continue;
      const base = { videoId: e.id, split: e.split, type, question: q.question, answer };
      open.push({ id: `${e.id}/${type}/open`, kind: 'open', ...base });
      if (q.answers.length < 4) continue;
      const rng = seededRandom(seed, 'qa', e.id, type);
      const others = q.answers.filter((a) => a !== answer);
      for (let i = others.length - 1; i > 0; i--) { const j = Math.floor(rng() * (i + 1)); [others[i], others[j]] = [others[j], others[i]]; }
      const choices = others.slice(0, 3);
      const correct = Math.floor(rng() * 4);
      choices.splice(correct, 0, answer);
      mc.push({ id: `${e.id}/${type}/mc`, kind: 'mc', ...base, choices, correct });
    }
  }
  if (!open.length) throw new Error('generateSynthQa: no entry has the concepts a question needs (color:…, dir:…, shape:…, speed:…); is this a synthetic corpus manifest?');
  return { mc, open };
}

/** Writes items as JSONL (one item a line). */
export async function writeQaJsonl(file: string, items: readonly QaItem[]): Promise<void> {
  await mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await writeFile(file, items.map((i) => JSON.stringify(i)).join('\n') + '\n');
}

/**
 * Reads a QA JSONL file; a bad line is an error naming the file and line.
 * @example const items = await readQaJsonl('runs/qa/qa.jsonl');
 */
export async function readQaJsonl(file: string): Promise<QaItem[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new Error(`QA file ${file} cannot be read (${(e as Error).message})`);
  }
  return text.split('\n').flatMap((line, n) => {
    if (!line.trim()) return [];
    let it: QaItem;
    try {
      it = JSON.parse(line) as QaItem;
    } catch (e) {
      throw new Error(`${file}:${n + 1}: not JSON (${(e as Error).message})`);
    }
    const ok = typeof it.videoId === 'string' && QA_TYPES.includes(it.type) && typeof it.question === 'string' && typeof it.answer === 'string'
      && (it.kind === 'open' || (it.kind === 'mc' && Array.isArray(it.choices) && it.choices[it.correct ?? -1] === it.answer));
    if (!ok) throw new Error(`${file}:${n + 1}: expected a QA item { videoId, type, kind, question, answer, choices?, correct? } with choices[correct] = answer`);
    return [it];
  });
}
