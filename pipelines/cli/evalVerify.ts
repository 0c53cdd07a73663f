/**
 * `vlmargin eval verify --checkpoint C --pairs pairs.txt --images DIR [--flip]` and
 * `vlmargin eval scores --scores FILE`: verification metrics (10-fold accuracy, EER, minDCF,
 * TAR@FAR, AUC) as JSON plus ROC and DET PNGs.
 */
import type { Command } from 'commander';
import path from 'node:path';
import { tf } from '../../src/backend/tf.js';
import { initBackend, parseBackendPreference } from '../../src/backend/init.js';
import { loadFaceCheckpoint } from '../../src/face/checkpoint.js';
import { readScores, writeVerificationReport, type VerificationReport } from '../../src/face/report.js';
import { verifyPairs } from '../../src/face/verify.js';

function summary(r: VerificationReport): string {
  const m = r.metrics;
  return JSON.stringify({
    trials: r.trials, genuine: r.genuine, accuracy: m.accuracy, eer: m.eer, minDCF: m.minDCF, auc: m.auc, tarAtFar: m.tarAtFar, files: r.files,
  }, null, 2);
}

export function register(ev: Command): void {
  ev.command('verify')
    .description('cosine-similarity verification of a face checkpoint on an LFW-style pairs file → metrics.json, roc.png, det.png')
    .requiredOption('--checkpoint <dir>', 'a checkpoint folder, or a run folder (its latest checkpoint)')
    .requiredOption('--pairs <file>', 'pairs.txt in LFW format')
    .requiredOption('--images <dir>', 'folder with <name>/<name>_000N.<ext> images')
    .option('--flip', 'average each embedding with its mirrored image\'s')
    .option('--out <dir>', 'report folder (default <checkpoint>/verify-<pairs name>)')
    .option('--backend <name>', 'auto, tensorflow, webgpu, wasm or cpu', 'auto')
    .action(async (o: { checkpoint: string; pairs: string; images: string; flip?: boolean; out?: string; backend: string }) => {
      await initBackend({ prefer: parseBackendPreference(o.backend) });
      const ck = await loadFaceCheckpoint(o.checkpoint);
      try {
        const v = await verifyPairs(ck.params, ck.model, o.pairs, o.images, { flip: !!o.flip });
        const out = o.out ?? path.join(ck.dir, `verify-${path.basename(o.pairs, path.extname(o.pairs))}${o.flip ? '-flip' : ''}`);
        const r = await writeVerificationReport(v.scores, v.labels, out, {
          folds: v.folds, title: path.basename(o.pairs), extra: { checkpoint: ck.dir, pairs: path.resolve(o.pairs), images: path.resolve(o.images), flip: !!o.flip },
        });
        console.log(summary(r));
      } finally {
        tf.dispose(Object.values(ck.params));
      }
    });
  ev.command('scores')
    .description('verification metrics of a score file (one `label score` per line, label 1/0 or target/nontarget) → metrics.json, roc.png, det.png')
    .requiredOption('--scores <file>', 'trials with scores')
    .option('--folds <n>', 'folds for the accuracy (contiguous, threshold from the other folds)', '10')
    .option('--out <dir>', 'report folder (default <scores file>.report)')
    .action(async (o: { scores: string; folds: string; out?: string }) => {
      const folds = Number(o.folds);
      if (!Number.isInteger(folds) || folds < 2) throw new Error(`--folds must be an integer ≥ 2, got '${o.folds}'`);
      const { labels, scores } = await readScores(o.scores);
      const r = await writeVerificationReport(scores, labels, o.out ?? `${o.scores}.report`, { folds, title: path.basename(o.scores), extra: { scores: path.resolve(o.scores) } });
      console.log(summary(r));
    });
}
