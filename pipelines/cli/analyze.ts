/**
 * `vlmargin analyze perturbation --checkpoint C --sigma S`: fits a logistic-regression probe
 * (no bias, ‖w‖ = 1) on the checkpoint's embeddings of a binary task and reports angular
 * margins α = y⟨w, x⟩/‖x‖ and the expected flip rate Φ(−|α|/σ) per group under Gaussian noise
 * σ on w, and the gap between the groups' expected flip rates. σ is given (`--sigma`) or
 * derived from a differential-privacy budget (`--epsilon E --delta D [--sensitivity S]`) by the
 * Gaussian mechanism.
 *
 * Task and groups: `--labels FILE` with lines `identity ±1 group`; without it, on the synthetic
 * identity benchmark, y = +1 for identities whose skin is lighter than the median identity's,
 * and the group is `head` (training count ≥ the median count) or `tail`.
 */
import type { Command } from 'commander';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { tf } from '../../src/backend/tf.js';
import { initBackend, parseBackendPreference } from '../../src/backend/init.js';
import { loadFaceCheckpoint } from '../../src/face/checkpoint.js';
import { ImageFolderDataset, isFolder, toFloatImage } from '../../src/face/imageFolder.js';
import { fitLogisticProbe, perturbationByGroup } from '../../src/face/perturbation.js';
import { flipRateGap, gaussianMechanismSigma, type GaussianMechanism } from '../../src/margin/fairness.js';
import { embedFloatImages } from '../../src/face/verify.js';

interface IdentityTask { label: number; group: string }

async function readLabels(file: string): Promise<Map<string, IdentityTask>> {
  let text: string;
  try { text = await readFile(file, 'utf8'); } catch (e) { throw new Error(`--labels ${file}: cannot read (${(e as Error).message})`); }
  const out = new Map<string, IdentityTask>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const t = raw.trim();
    if (t === '' || t.startsWith('#')) return;
    const f = t.split(/\s+/);
    if (f.length !== 3 || (f[1] !== '1' && f[1] !== '-1' && f[1] !== '+1')) throw new Error(`--labels ${file}:${i + 1}: expected 'identity ±1 group', got '${t}'`);
    out.set(f[0], { label: Number(f[1]), group: f[2] });
  });
  return out;
}

async function synthLabels(dataDir: string): Promise<Map<string, IdentityTask>> {
  const file = path.join(dataDir, 'identities.json');
  let j: { train: { name: string; count: number; attributes: { skin: number[] } }[] };
  try { j = JSON.parse(await readFile(file, 'utf8')); } catch {
    throw new Error(`no --labels given and ${file} is missing: pass --labels FILE with 'identity ±1 group' lines`);
  }
  const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
  const light = j.train.map((t) => t.attributes.skin.reduce((a, b) => a + b, 0) / 3);
  const lm = median(light);
  const cm = median(j.train.map((t) => t.count));
  return new Map(j.train.map((t, i) => [t.name, { label: light[i] >= lm ? 1 : -1, group: t.count >= cm ? 'head' : 'tail' }]));
}

/** σ given directly, or from (ε, δ, Δ) by the Gaussian mechanism; exactly one of the two. */
export function sigmaFromOptions(o: { sigma?: string; epsilon?: string; delta?: string; sensitivity?: string; mechanism?: string }): {
  sigma: number; privacy?: { epsilon: number; delta: number; sensitivity: number; mechanism: GaussianMechanism };
} {
  const positive = (v: string | undefined, name: string): number => {
    const n = Number(v);
    if (v === undefined || !(n > 0) || !Number.isFinite(n)) throw new Error(`${name} must be a positive number, got '${v}'`);
    return n;
  };
  const dp = o.epsilon !== undefined || o.delta !== undefined;
  if (o.sigma !== undefined && dp) throw new Error('give either --sigma or --epsilon with --delta, not both');
  if (!dp) return { sigma: positive(o.sigma, '--sigma') };
  const epsilon = positive(o.epsilon, '--epsilon');
  const delta = positive(o.delta, '--delta');
  if (delta >= 1) throw new Error(`--delta must be below 1, got '${o.delta}'`);
  const sensitivity = positive(o.sensitivity ?? '1', '--sensitivity');
  const mechanism = (o.mechanism ?? 'classic') as GaussianMechanism;
  if (mechanism !== 'classic' && mechanism !== 'analytic') throw new Error(`--mechanism must be classic or analytic, got '${o.mechanism}'`);
  if (mechanism === 'classic' && epsilon >= 1) throw new Error(`--epsilon ${epsilon}: the classic Gaussian mechanism needs ε < 1; pass --mechanism analytic`);
  return { sigma: gaussianMechanismSigma(epsilon, delta, sensitivity, mechanism), privacy: { epsilon, delta, sensitivity, mechanism } };
}

export function register(program: Command): void {
  const an = program.command('analyze').description('analyses of trained checkpoints');
  an.command('perturbation')
    .description('angular margins of a linear probe on the embeddings and the expected flip rate per group under Gaussian noise σ on its weights')
    .requiredOption('--checkpoint <dir>', 'a train-classifier checkpoint (or its run folder)')
    .option('--sigma <s>', 'standard deviation of the noise on the unit-norm probe weights')
    .option('--epsilon <e>', 'privacy budget ε: σ from the Gaussian mechanism instead of --sigma (with --delta)')
    .option('--delta <d>', 'privacy budget δ (with --epsilon)')
    .option('--sensitivity <s>', "L2 sensitivity Δ of the released weights (default 1, the unit-norm probe's)", '1')
    .option('--mechanism <m>', 'classic (ε < 1: σ = Δ√(2 ln(1.25/δ))/ε) or analytic (Balle & Wang 2018, any ε)', 'classic')
    .option('--images <dir>', 'folder-per-identity images to embed (default: the run\'s data test/ split, else train/)')
    .option('--labels <file>', "lines 'identity ±1 group' (default: the synthetic benchmark's skin-lightness task, head/tail groups)")
    .option('--out <file>', 'JSON report (default <checkpoint>/perturbation-sigma<S>.json)')
    .option('--backend <name>', 'auto, tensorflow, webgpu, wasm or cpu', 'auto')
    .action(async (o: {
      checkpoint: string; sigma?: string; epsilon?: string; delta?: string; sensitivity: string; mechanism: string;
      images?: string; labels?: string; out?: string; backend: string;
    }) => {
      const { sigma, privacy } = sigmaFromOptions(o);
      await initBackend({ prefer: parseBackendPreference(o.backend) });
      const ck = await loadFaceCheckpoint(o.checkpoint);
      try {
        const dataDir = String(((ck.config.trainClassifier as { data?: { dir?: string } } | undefined)?.data?.dir) ?? '');
        let images = o.images;
        if (!images) {
          if (dataDir && (await isFolder(path.join(dataDir, 'test')))) images = path.join(dataDir, 'test');
          else if (dataDir && (await isFolder(path.join(dataDir, 'train')))) images = path.join(dataDir, 'train');
          else throw new Error('--images is required: the checkpoint names no data folder with test/ or train/');
        }
        const task = o.labels ? await readLabels(o.labels) : await synthLabels(dataDir);
        const ds = await ImageFolderDataset.open(images, { size: ck.model.imageSize });
        const keep = Array.from({ length: ds.length }, (_, i) => i).filter((i) => task.has(ds.classes[ds.labels[i]]));
        if (keep.length < 2) throw new Error(`${images}: fewer than 2 images of identities named in the task`);
        const per = ck.model.imageSize ** 2 * 3;
        const floats = keep.map((i) => toFloatImage(ds, i, new Float32Array(per)));
        const X = await embedFloatImages(ck.params, ck.model, floats);
        const d = ck.model.embedDim;
        const y = keep.map((i) => task.get(ds.classes[ds.labels[i]])!.label);
        const groups = keep.map((i) => task.get(ds.classes[ds.labels[i]])!.group);
        const w = fitLogisticProbe(X, keep.length, d, y);
        const r = await perturbationByGroup(w, X, keep.length, d, y, groups, sigma);
        const out = o.out ?? path.join(ck.dir, `perturbation-sigma${sigma}.json`);
        await mkdir(path.dirname(out), { recursive: true });
        await writeFile(out, JSON.stringify({
          checkpoint: ck.dir, images, sigma, ...(privacy && { privacy }), probe: 'logistic regression on embeddings, no bias, ‖w‖ = 1', groups: r.groups,
          flipRateGap: flipRateGap(r.groups),
          examples: keep.map((i, k) => ({ file: ds.files[i], identity: ds.classes[ds.labels[i]], y: y[k], group: groups[k], margin: r.margins[k], flipProbability: r.flip[k] })),
        }, null, 1) + '\n');
        console.log(JSON.stringify({ sigma, ...(privacy && { privacy }), groups: r.groups, flipRateGap: flipRateGap(r.groups), report: out }, null, 2));
      } finally {
        tf.dispose(Object.values(ck.params));
      }
    });
}
