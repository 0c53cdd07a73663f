/**
 * docs/CONFIG.md, generated from the zod schemas of the job configs: every key with its type,
 * allowed values, default and meaning. Types, ranges and defaults come from the schemas
 * themselves; the meanings come from DESCRIPTIONS below, and a key without one is an error, so
 * a key added to a schema cannot go undocumented (test/configReference.test.ts compares the
 * file with this output).
 *
 *   node dist/pipelines/configReference.js --write     # rewrites docs/CONFIG.md
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { PretrainConfigSchema } from './config.js';
import { FinetuneQaConfigSchema } from './finetune-qa.js';
import { FinetuneRetrievalConfigSchema } from './finetune-retrieval.js';

/**
 * What each key means. Looked up as `job:path`, then `path`; a key of one data kind as
 * `data(kind).key`, then `data.key`.
 */
const DESCRIPTIONS: Record<string, string> = {
  name: 'Name of the run: the default run folder is `runs/<name>`.',
  seed: 'Seed of every random choice (initialisation, batch order, frame sampling, held-out slices). Same seed, same machine: the same run, bit for bit; another machine may differ in the last bits (float summation order), and those differences grow over a run.',
  backend: '`auto` takes the first that starts of tensorflow (native, optional), webgpu (when a GPU adapter exists), wasm, cpu; naming one makes it an error when it cannot start. `--backend` overrides it.',
  threads: 'TensorFlow\'s intra-op threads on the native engine (`vlmargin setup tensorflow`); unset: one per CPU. `--threads` overrides it.',
  checkpoint: 'The pretrained model: a checkpoint folder (`runs/NAME/checkpoints/step-…`) or a run folder (its newest checkpoint).',
  framesDir: 'Frame cache folder (default: `.vlmargin/` beside the manifest).',
  'finetune-retrieval:framesDir': 'Frame cache folder (default: `.vlmargin/` beside the manifest; `<run>/frames` for MSR-VTT).',

  'data.kind': 'Which reader: `synth` (the built-in synthetic corpus), `manifest` (your own videos, a JSONL manifest) or `msrvtt` (MSR-VTT as distributed).',
  'data(synth).dir': 'Folder of the generated corpus, its frame caches and tokenizer; generated on first use, reused after (when its parameters match).',
  'data(synth).videos': 'Number of clips in the corpus (train, meta and test together).',
  'data(synth).metaVideos': 'Clips in the meta split, a multiple of 6 (the colours); unset, about 10 % of `videos`.',
  'data(synth).testVideos': 'Clips in the test split, a multiple of 6; unset, about 20 % of `videos`. With both set, `videos` grows the train split alone and the meta and test clips stay the same.',
  'data(synth).noise': 'Fraction of training pairs whose caption does not match the clip.',
  'data(synth).swapFraction': 'Of the misaligned pairs, the fraction that get another clip\'s caption; the rest get one attribute wrong.',
  'data(synth).imbalance': 'Head-to-tail ratio of the colour counts in the training split (1 = balanced).',
  'data(synth).seed': 'Seed of the corpus (independent of the run\'s seed).',
  'data(synth).size': 'Frame width and height of the generated clips, in pixels.',
  'data(synth).frames': 'Frames per generated clip.',
  'data(synth).fps': 'Frame rate of the generated clips.',
  'data.manifest': 'The JSONL manifest: one `{"id","video","caption"|"captions","split",…}` per line; relative video paths resolve against its folder (README, "Your own videos").',
  'data(manifest).dir': 'Folder for the frame cache and the built tokenizer (default: `.vlmargin/` beside the manifest).',
  'data.trainSplit': 'The `split` value of the training entries.',
  'data.valSplit': 'The `split` value of the validation entries, which `train.evalEvery` scores for model selection. Without any, `eval.valFraction` of the training videos is held out instead.',
  'data.testSplit': 'The `split` value of the test entries, scored once after training (eval.json).',
  'data.metaSplit': 'The `split` value of the clean meta set the sample weighting learns from (`weighting.method` mwn or l2rw).',
  'data.allowOutsideRoot': 'Accept video paths that leave the manifest\'s folder (`..`, absolute paths elsewhere); refused by default so a manifest from elsewhere cannot point the job at arbitrary files.',
  'data.annotations': 'MSR-VTT\'s `MSRVTT_data.json` (videos with their split and 20 captions each).',
  'data(msrvtt).protocol': '`9k-1kA`: train on the 9k videos (the JSON\'s train and validate splits less the 1k-A test videos), test on 1k-A (`testCsv`, default `MSRVTT_JSFUSION_test.csv` beside the annotations); `train.evalEvery` then scores `eval.valFraction` of the 9k held out. `full`: the JSON\'s own train, validate (scored by `evalEvery`) and test splits.',
  'data.videoDir': 'Folder with MSR-VTT\'s `<video_id>.mp4`.',
  'data.testCsv': 'The 1k-A test CSV (`key,vid_key,video_id,sentence`) of the `9k-1kA` protocol: the usual 1,000-video test (default: `MSRVTT_JSFUSION_test.csv` beside the annotations).',
  'data(msrvtt).dir': 'Folder for the frame cache and the built tokenizer.',

  'frames.count': 'Frames sampled per clip.',
  'frames.strategy': 'Where the frames are taken: `uniform` (evenly over the clip), `random` (training clips: new frames every epoch, one from each of `count` segments of `count × candidates` cached ones, seeded; validation and test frames stay uniform), `fps` (at a fixed rate), `head` / `tail` (the first / last frames).',
  'frames.candidates': 'With `strategy: random`: cached candidate frames per frame a step uses (unset: 4).',
  'frames.size': 'Frames are resized (shorter side) and centre-cropped to size × size pixels; also the vision model\'s input size. Unset: the `model.init` model\'s input size, else 32.',
  'finetune-retrieval:frames.count': 'Frames sampled per clip. Unset: 12 for a CLIP folder; a checkpoint keeps its own (a different value is an error).',
  'tokenizer.maxLen': 'Tokens per caption (longer captions are cut); also the text model\'s context length. Unset: the `model.init` model\'s, else 24.',
  'frames.shuffleBuffer': 'Clips in the shuffle buffer of a streaming loader (shards read in a seeded order; memory stays flat however large the data set). Unset: the whole frame cache is shuffled by random access.',
  'frames.concurrency': 'Clips decoded at once by ffmpeg while the frame cache is built.',
  'tokenizer.dir': 'An existing Hugging Face tokenizer folder (`tokenizer.json`); without it one is built from the training captions (never the test captions).',
  'tokenizer.vocabSize': 'Vocabulary size of the built tokenizer.',
  'tokenizer.kind': 'Algorithm of the built tokenizer: `wordpiece` (BERT-like) or `bpe`.',
  'pretrain:model.init': 'Start from a Hugging Face CLIP folder (its shapes, tokenizer and frame normalisation) or a vlmargin checkpoint instead of random weights; `preset` and the tokenizer settings are then the model\'s. `--init DIR` sets it.',
  'finetune-retrieval:model.init': 'The start: a Hugging Face CLIP folder, a vlmargin checkpoint folder, or a run folder (its newest checkpoint). `--init DIR` sets it.',
  'model.temporalLayers': 'Layers of the temporal transformer put on top of a CLIP folder (with `temporalPooling: transformer`; it starts as the mean). A checkpoint keeps its own.',
  'model.motion': 'Add frame differences to the video encoder\'s patch tokens (each frame\'s patches also see their change to the next frame; docs/DESIGN.md §4).',
  'model.motionInput': 'What `model.motion` embeds: `difference` (f[k+1] − f[k], signed by the object\'s contrast with the background) or `foreground` (the difference of each frame\'s distance to the clip\'s mean frame: positive where the object arrives whatever its colour; docs/DESIGN.md §4).',
  'model.videoAttention': '`frame` (CLIP: the video blocks attend within each frame) or `joint`: over all frames\' tokens of a clip at once, each frame\'s marked by a learnt time embedding, so a patch sees where the object is in the other frames (docs/DESIGN.md §4).',
  'train.captionGroups': 'Harder batches: each epoch is arranged in groups of this many videos whose drawn captions share the most tokens (within pools of 8 batches), so pairs that differ in a word or two meet in one batch. 1 or unset: a plain shuffle. Not with `frames.shuffleBuffer`.',
  'model.stem': '`patch` (CLIP\'s linear patch embedding) or `conv`: two stride-2 3×3 convolutions before the patches, so a small shape gives the same features wherever it sits in a patch (the patch side must be a multiple of 4; docs/DESIGN.md §4).',
  'model.patchSize': 'Replaces the preset\'s vision patch side (it must divide `frames.size`).',
  'model.width': 'Replaces the preset\'s vision and text width (a multiple of their attention heads).',
  'model.preset': 'Model size: `tiny` (CPU smoke tests, about 0.2 M parameters), `small`, `base` (ViT-B/32-like).',
  'model.temporalPooling': 'How frame features become a clip feature: `mean`, or a small `transformer` over the frames.',
  'pretrain:loss.marginRad': 'μ of the subtractive angular margin, in radians: a positive pair counts as aligned once its angle is below μ. 0 is symmetric InfoNCE. Large values from scratch collapse training (docs/RESULTS.md, "The margin default"); the run warns when it sees a collapse.',
  'finetune-retrieval:loss.marginRad': 'μ of the subtractive angular margin, in radians (0 = InfoNCE).',
  'loss.marginStartStep': 'Steps of plain InfoNCE before the margin starts.',
  'loss.marginRampSteps': 'Steps over which μ rises linearly from 0 to `marginRad` after `marginStartStep` (0 = at once).',
  'loss.detachMargin': 'Forward with the margin, backward as plain InfoNCE (the margin shapes the loss value only).',

  'train.epochs': 'Passes over the training split (ignored when `steps` is set).',
  'train.steps': 'Optimizer steps; overrides `epochs`.',
  'train.batchSize': 'Pairs per step; each pair\'s negatives are the batch\'s other pairs.',
  'train.lr': 'Peak learning rate (AdamW) of the heads, after warm-up; cosine decay to `minLr`.',
  'train.encoderLrScale': 'The encoders\' learning rate as a multiple of `lr` (the heads are the projections and the logit scale).',
  'finetune-retrieval:train.encoderLrScale': 'The towers\' (encoders\') learning rate as a multiple of `lr`.',
  'finetune-retrieval:train.headLrScale': 'The projections\' and logit scale\'s learning rate as a multiple of `lr`.',
  'finetune-retrieval:train.lr': 'Peak learning rate of the new layers (the temporal module), after warm-up; the towers and the projections take multiples of it.',
  'train.recompute': 'Activation recomputation (gradient checkpointing): `none` keeps every activation for the backward pass; `blocks` keeps each transformer block\'s input only and runs the block again in the backward, so a step holds one block\'s activations instead of all of them, for about one more forward of compute (figures at CLIP size in docs/PERFORMANCE.md). First-order gradients only: not with `weighting`.',
  'train.captionsPerVideo': '`one`: a caption drawn per video per epoch; `all`: every caption of a video is a positive of it in the batch (SAM\'s groups; not with `weighting`).',
  'train.minLr': 'Learning rate at the end of the cosine decay.',
  'train.warmupSteps': 'Steps of linear warm-up from 0 to `lr`.',
  'train.weightDecay': 'AdamW\'s decoupled weight decay, on matrices only (not on biases, norms or the logit scale).',
  'train.clipNorm': 'Gradients are scaled down to this global norm when above it (0 = no clipping).',
  'train.accumSteps': 'Micro-batches accumulated per optimizer step (an effective batch of accumSteps × batchSize; negatives still come from one micro-batch).',
  'train.evalEvery': 'Score retrieval on the validation split every this many steps (logged to metrics.jsonl as valT2vR1 …); 0 = never. The test split is only scored at the end.',
  'train.checkpointEvery': 'Save a checkpoint every this many steps (and always at the end and on Ctrl-C); 0 = only then.',
  'train.keepCheckpoints': 'How many of the newest checkpoints are kept.',
  'train.maxNonFinite': 'Consecutive steps with a non-finite loss or gradient that are skipped before the run stops with an error.',
  'train.maxNonFiniteRate': 'The run stops when more than this fraction of the last 50 steps were skipped as non-finite.',
  'train.freezeEncoders': 'Train only the heads (projections, temporal module, logit scale).',
  'eval.batchSize': 'Clips or captions encoded at once during evaluation.',
  'eval.valFraction': 'With `train.evalEvery` and no validation split, this fraction of the training videos (a fixed draw from the seed) is held out of training and scored instead.',
  'eval.dsl': 'Re-score with the dual softmax (DSL) as well.',

  'captions.sourceWeights': 'Relative chance of a video\'s caption being drawn, by its source (`human`, `generated`, … from the manifest); a source not named weighs 1. Evaluation uses human captions only.',

  'weighting.method': 'Meta-learned sample weighting: `none`, `mwn` (a small net maps each pair\'s loss to a weight, trained on the meta set) or `l2rw` (weights from one meta gradient per step).',
  'weighting.metaScope': '`heads`: only the projections and logit scale take part in the virtual step (cheap); `all`: every parameter.',
  'weighting.metaEvery': 'Meta update every this many steps (mwn); l2rw needs 1.',
  'weighting.alpha': 'Learning rate of the virtual step.',
  'weighting.hidden': 'Hidden units of the weight net.',
  'weighting.inputs': 'What the weight net sees (mwn), in column order: `loss`, `cosine`, `rowMargin`, `columnMargin`, `rank`, `source`, `progress`; `["loss"]` is MW-Net. It sets the net\'s input width, so it is part of a checkpoint\'s shape (docs/DESIGN.md §6).',
  'weighting.lr': 'Adam learning rate of the weight net.',
  'weighting.metaBatchSize': 'Meta-set pairs per meta step.',
  'weighting.metaManifest': 'The meta set, a JSONL manifest (or one drawn by `vlmargin meta-set`). Unset: the committed meta-data/default for the default synthetic corpus, else the manifest\'s `metaSplit`.',

  'corpus.manifest': 'A synthetic corpus manifest (its concepts `color:`, `shape:`, `dir:`, `speed:` make the questions).',
  'corpus.trainSplit': 'The `split` value of the entries whose questions train.',
  'corpus.testSplit': 'The `split` value of the entries whose questions are scored.',
  'mc.steps': 'Fine-tune steps of multiple choice (cross-entropy over the four candidates); 0 = zero-shot only.',
  'mc.batchSize': 'Questions per multiple-choice step.',
  'mc.lr': 'Learning rate of the heads in the multiple-choice fine-tune.',
  'mc.encoderLrScale': 'The encoders\' rate as a multiple of `mc.lr` (0 = frozen).',
  'open.head.name': 'The margin head of the open-ended answer classifier, by name (arcface, cosface, …); its other options (scale, m2, …) go beside `name`.',
  'open.hidden': 'Hidden units of the fusion MLP.',
  'open.featureDim': 'Width of the fused feature the margin head classifies.',
  'open.steps': 'Training steps of the open-ended head.',
  'open.batchSize': 'Videos per step (each brings one question per type).',
  'open.lr': 'Learning rate of the open-ended head.',
  'open.encoderLrScale': 'The video encoder\'s rate as a multiple of `open.lr` while the head trains; 0 keeps it frozen (embeddings computed once).',
};

type Json = Record<string, unknown>;

interface Row { key: string; type: string; def: string; text: string }

const used = new Set<string>();
const missing: string[] = [];

function describe(job: string, keyPath: string, kind?: string): string {
  const plain = kind ? keyPath.replace(`data(${kind})`, 'data') : keyPath;
  for (const k of [`${job}:${keyPath}`, keyPath, `${job}:${plain}`, plain]) {
    if (DESCRIPTIONS[k]) { used.add(k); return DESCRIPTIONS[k]; }
  }
  missing.push(`${job}: ${keyPath}`);
  return '';
}

function typeOf(s: Json): string {
  if (s.const !== undefined) return `\`${JSON.stringify(s.const)}\``;
  if (Array.isArray(s.enum)) return s.enum.map((v) => `\`${String(v)}\``).join(', ');
  const t = String(s.type ?? 'any');
  const parts: string[] = [];
  if (typeof s.minimum === 'number') parts.push(`≥ ${s.minimum}`);
  if (typeof s.exclusiveMinimum === 'number') parts.push(`> ${s.exclusiveMinimum}`);
  if (typeof s.maximum === 'number' && s.maximum < Number.MAX_SAFE_INTEGER) parts.push(`≤ ${+(s.maximum as number).toPrecision(6)}`);
  if (typeof s.pattern === 'string') parts.push('letters, digits, `_ . -`');
  return parts.length ? `${t} (${parts.join(', ')})` : t;
}

function rowsOf(job: string, s: Json, prefix: string, kind: string | undefined, required: boolean, out: Row[]): void {
  const props = s.properties as Record<string, Json> | undefined;
  if (s.type === 'object' && props) {
    const req = new Set((s.required as string[] | undefined) ?? []);
    for (const [k, v] of Object.entries(props)) rowsOf(job, v, prefix ? `${prefix}.${k}` : k, kind, req.has(k), out);
    return;
  }
  const def = s.default !== undefined ? `\`${JSON.stringify(s.default)}\`` : required ? '**required**' : '(unset)';
  out.push({ key: prefix, type: typeOf(s), def, text: describe(job, prefix, kind) });
}

function table(rows: Row[], strip = ''): string[] {
  return [
    '| key | type | default | meaning |',
    '| --- | --- | --- | --- |',
    ...rows.map((r) => `| \`${strip ? r.key.replace(strip, 'data') : r.key}\` | ${r.type} | ${r.def} | ${r.text.replace(/\|/g, '\\|')} |`),
  ];
}

function section(job: string, title: string, command: string, schema: z.ZodType): string[] {
  const j = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Json;
  const props = j.properties as Record<string, Json>;
  const req = new Set((j.required as string[] | undefined) ?? []);
  const lines = [`## ${title}`, '', command, ''];
  const rows: Row[] = [];
  const dataKinds: [string, Row[]][] = [];
  for (const [k, v] of Object.entries(props)) {
    const variants = (v.oneOf ?? v.anyOf) as Json[] | undefined;
    if (k === 'data' && variants) {
      for (const b of variants) {
        const kind = String(((b.properties as Record<string, Json>).kind).const);
        const r: Row[] = [];
        rowsOf(job, b, `data(${kind})`, kind, true, r);
        dataKinds.push([kind, r]);
      }
      continue;
    }
    rowsOf(job, v, k, undefined, req.has(k), rows);
  }
  lines.push(...table(rows), '');
  for (const [kind, r] of dataKinds) lines.push(`### \`data\` with \`kind: "${kind}"\``, '', ...table(r, `data(${kind})`), '');
  return lines;
}

/** Descriptions no schema key uses any more (after `configReference()` ran): stale text to remove. */
export function unusedDescriptions(): string[] {
  return Object.keys(DESCRIPTIONS).filter((k) => !used.has(k));
}

/** The whole of docs/CONFIG.md. */
export function configReference(): string {
  missing.length = 0;
  const text = [
    '# Config reference',
    '',
    '<!-- Generated by `node dist/pipelines/configReference.js --write` from the zod schemas; test/configReference.test.ts fails when it is out of date. -->',
    '',
    'Every job reads one JSON config (`--config FILE`, or the name of one in `pipelines/configs/`), validated',
    'before anything runs: an unknown key or a bad value is an error that names the key. Any key can be changed',
    'on the command line with `--set key.path=value` (the value is read as JSON when it parses, else as a',
    'string) and is validated the same way; `--data PATH` points the config at other data (README, "Your own videos").',
    '',
    'A key left out takes its default; "(unset)" means the feature is off or chosen automatically.',
    '',
    ...section('pretrain', 'Pretraining (`vlmargin pretrain`)', 'Shipped: `default` (synthetic corpus), `manifest` (your own videos), `msrvtt`. Outputs go to `runs/<name>/`.', PretrainConfigSchema),
    ...section('finetune-retrieval', 'Retrieval fine-tuning (`vlmargin finetune retrieval`)', 'Shipped: `finetune-retrieval`.', FinetuneRetrievalConfigSchema),
    ...section('finetune-qa', 'Video question answering (`vlmargin finetune qa`)', 'Shipped: `finetune-qa`.', FinetuneQaConfigSchema),
  ].join('\n');
  if (missing.length) throw new Error(`configReference: no description for these config keys; add them to DESCRIPTIONS in pipelines/configReference.ts:\n  ${missing.join('\n  ')}`);
  return text;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const text = configReference();
  if (process.argv.includes('--write')) {
    const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'CONFIG.md');
    fs.writeFileSync(file, text);
    console.error(`wrote ${file}`);
  } else {
    process.stdout.write(text);
  }
}
