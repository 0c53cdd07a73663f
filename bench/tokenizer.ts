/**
 * Caption encoding throughput of a built tokenizer: builds one from synthetic captions, then
 * encodes 10 000 other synthetic captions in batches of 256 and prints captions/s.
 *
 *   node dist/bench/tokenizer.js [--kind wordpiece|bpe] [--captions 10000] [--batch 256] [--max-len 32] [--passes 3]
 */
import { mulberry32 } from '../src/util/rng.js';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { buildTokenizer, type TokenizerKind } from '../src/text/buildTokenizer.js';
import { loadTokenizer } from '../src/text/tokenizer.js';

const Args = z.object({
  kind: z.enum(['wordpiece', 'bpe']),
  captions: z.coerce.number().int().min(1),
  batch: z.coerce.number().int().min(1),
  maxLen: z.coerce.number().int().min(3),
  passes: z.coerce.number().int().min(1),
});

const SUBJECTS = ['a man', 'a woman', 'the child', 'two dogs', 'a cat', 'an old man', 'the chef', 'a girl', 'the team', 'a musician', 'the player', 'a crowd of people'];
const VERBS = ['is walking', 'is running', 'is cooking', 'is playing', 'talks', 'dances', 'jumps', 'is singing', 'is driving', 'swims', 'is riding', 'is painting'];
const OBJECTS = ['a red car', 'the guitar', 'a football', 'some pasta', 'a bicycle', 'the piano', 'a small boat', 'a blue kite', 'the drums', 'a horse'];
const PLACES = ['in the park', 'on the beach', 'in a kitchen', 'on a stage', 'at night', 'in the rain', 'near a river', 'on the street', 'in a stadium', 'under a bridge'];
const EXTRAS = ['', '', ' while people watch', ' and smiles', ', slowly', ' in slow motion', ' for the camera', ' with friends'];

/** A seeded generator, so every run benchmarks the same captions. */
const rng = mulberry32;

function captions(n: number, seed: number): string[] {
  const r = rng(seed);
  const pick = <T>(a: T[]): T => a[Math.floor(r() * a.length)];
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const c = `${pick(SUBJECTS)} ${pick(VERBS)}${r() < 0.5 ? ` ${pick(OBJECTS)}` : ''} ${pick(PLACES)}${pick(EXTRAS)}.`;
    out.push(r() < 0.3 ? c[0].toUpperCase() + c.slice(1) : c);
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      kind: { type: 'string', default: 'wordpiece' }, captions: { type: 'string', default: '10000' },
      batch: { type: 'string', default: '256' }, 'max-len': { type: 'string', default: '32' }, passes: { type: 'string', default: '3' },
    },
  });
  const parsed = Args.safeParse({ ...values, maxLen: values['max-len'] });
  if (!parsed.success) throw new Error(`bench-tokenizer: ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}`);
  const a = parsed.data;

  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vlmargin-bench-tok-'));
  try {
    const t0 = performance.now();
    const built = await buildTokenizer(captions(20_000, 1), { out: dir, vocabSize: 4096, kind: a.kind as TokenizerKind });
    const buildS = (performance.now() - t0) / 1000;
    const tok = await loadTokenizer(dir);
    const test = captions(a.captions, 2);

    const rates: number[] = [];
    let realTokens = 0;
    for (let p = 0; p < a.passes; p++) {
      realTokens = 0;
      const start = performance.now();
      for (let i = 0; i < test.length; i += a.batch) {
        const { mask } = tok.encode(test.slice(i, i + a.batch), a.maxLen);
        for (let j = 0; j < mask.length; j++) realTokens += mask[j];
      }
      rates.push(test.length / ((performance.now() - start) / 1000));
    }
    const sorted = [...rates].sort((x, y) => x - y);
    const result = {
      kind: a.kind, vocabSize: built.vocabSize, buildSeconds: +buildS.toFixed(3), captions: test.length, batch: a.batch, maxLen: a.maxLen,
      meanRealTokens: +(realTokens / test.length).toFixed(2),
      captionsPerSecondFirstPass: Math.round(rates[0]),
      captionsPerSecondMedian: Math.round(sorted[Math.floor(sorted.length / 2)]),
      node: process.version, cpus: os.cpus().length,
    };
    console.log(`${a.kind}: ${result.captionsPerSecondMedian} captions/s (median of ${a.passes} passes; first pass ${result.captionsPerSecondFirstPass}), ` +
      `batch ${a.batch}, maxLen ${a.maxLen}, ${result.meanRealTokens} real tokens/caption; build ${result.buildSeconds} s for 20 000 captions → ${built.vocabSize} tokens`);
    console.log(JSON.stringify(result));
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => { console.error((e as Error).message); process.exit(1); });
