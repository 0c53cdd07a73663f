/**
 * One training step's gradients of the SAM loss on a dual encoder, plain or weighted by the
 * meta-learner (MW-Net or L2RW, docs/DESIGN.md §6): what pretraining and fine-tuning share.
 */
import { tf } from '../../src/backend/tf.js';
import { samContrastiveLoss } from '../../src/margin/sam.js';
import { dualEncoderMetaModel, type DualEncoderBatch } from '../../src/meta/dualEncoderModel.js';
import { l2rwStep } from '../../src/meta/l2rw.js';
import { isMetaStep, mwnStep } from '../../src/meta/metaStep.js';
import type { WeightNet } from '../../src/meta/weightNet.js';
import { needsSimilarities, weightingInputs } from '../../src/meta/weightingInputs.js';
import type { DualEncoderConfig } from '../../src/nn/configs.js';
import { encodeText, encodeVideo } from '../../src/nn/dualEncoder.js';
import type { Recompute } from '../../src/nn/transformer.js';
import { valueAndGradsOf } from '../../src/nn/params.js';
import type { CaptionsConfig, WeightingConfig } from '../config.js';
import { captionSourcesOf } from '../../src/data/manifest.js';
import type { ManifestEntry } from '../../src/data/types.js';

export interface SamStepArgs {
  modelCfg: DualEncoderConfig;
  params: Record<string, tf.Variable>;
  /** Parameters that get gradients (default all); a weighted step computes all and drops the rest. */
  trainable?: string[];
  batch: DualEncoderBatch;
  /** Which video of the batch each text row belongs to, when a video brings several captions (all its captions are positives). */
  captionVideo?: Int32Array;
  step: number;
  marginRad: number;
  detachMargin: boolean;
  weighting: WeightingConfig;
  /** The MW-Net (method `mwn`). */
  weightNet?: WeightNet;
  /** The next meta batch (methods `mwn` and `l2rw`); the step disposes it. */
  nextMetaBatch?: () => Promise<DualEncoderBatch>;
  /** Training progress in [0, 1], for a weight net that sees `progress`. */
  progress?: number;
  /** Per sample 1 for a human caption, 0 for another source, for a weight net that sees `source`. */
  source?: ArrayLike<number>;
  /** Activation recomputation of the encoders' blocks (plain step only: the weighted steps differentiate twice). */
  recompute?: Recompute;
}

/**
 * Each caption-table row's source and draw weight (rows in `encodeCaptions` order). `weights` is
 * undefined when every caption is human and no source weight is set, so the loader draws as it
 * always has.
 */
export function captionSourceTable(entries: ManifestEntry[], captions: CaptionsConfig): { rowSource: string[]; weights?: number[] } {
  const rowSource = entries.flatMap(captionSourcesOf);
  const any = entries.some((e) => e.captionSources) || Object.keys(captions.sourceWeights).length > 0;
  return { rowSource, weights: any ? rowSource.map((s) => captions.sourceWeights[s] ?? 1) : undefined };
}

/** Mean loss per caption source of a batch's rows, as metric fields `loss_<source>`. */
export function lossBySource(perSample: ArrayLike<number>, sources: readonly string[]): Record<string, number> {
  const sum = new Map<string, [number, number]>();
  for (let i = 0; i < perSample.length; i++) {
    const s = sum.get(sources[i]) ?? [0, 0];
    s[0] += perSample[i];
    s[1] += 1;
    sum.set(sources[i], s);
  }
  return Object.fromEntries([...sum].map(([k, [t, n]]) => [`loss_${k}`, t / n]));
}

export interface SamStepResult {
  loss: number;
  /** Per-sample SAM losses of the batch's text rows (the plain mean's terms, or the weighted step's ℓᵢ). */
  perSample: Float32Array;
  grads: Record<string, tf.Tensor>;
  /** Per-sample weights of the batch, normalised to sum 1 (weighted steps only). */
  weights?: ArrayLike<number>;
  /** Mean SAM loss of the meta batch at θ′ (steps that took a meta step). */
  metaLoss?: number;
  /** The weight net's input row of each sample, in `weightNet.inputs` order (mwn). */
  inputRows?: number[][];
}

/**
 * Gradients of the batch's SAM loss: the plain mean, or the meta-learner's weighted sum.
 *
 * @example const r = await samStep({ modelCfg, params, batch, step, marginRad: 0.01, detachMargin: false, weighting });
 */
export async function samStep(a: SamStepArgs): Promise<SamStepResult> {
  const method = a.weighting.method;
  const recompute = a.recompute ?? 'none';
  if (method === 'none') {
    const run = { recompute };
    const groups = a.captionVideo ? tf.tensor1d(a.captionVideo, 'int32') : undefined;
    try {
      let perSample: tf.Tensor | undefined;
      const { value, grads } = valueAndGradsOf((p) => {
        const video = encodeVideo(p, a.batch.frames, a.modelCfg, run);
        const r = samContrastiveLoss(
          groups ? tf.gather(video, groups) : video, encodeText(p, a.batch.ids, a.batch.mask, a.modelCfg, run),
          { marginRad: a.marginRad, logitScale: p.logit_scale, detachMargin: a.detachMargin, groups },
        );
        perSample = tf.keep(r.perSample);
        return r.loss as tf.Scalar;
      }, a.params, a.trainable);
      try {
        // Asynchronous reads on the step's path: webgpu in Node cannot read synchronously.
        const loss = (await value.data())[0];
        return { loss, grads, perSample: await perSample!.data() as Float32Array };
      } finally {
        tf.dispose([value, perSample!]);
      }
    } finally {
      groups?.dispose();
    }
  }
  if (a.captionVideo) throw new Error(`samStep: weighting '${method}' weighs one caption per video; use captionsPerVideo 'one' with it`);
  if (recompute !== 'none') throw new Error(`samStep: recompute '${recompute}' gives first-order gradients only, and weighting '${method}' differentiates the encoders twice; use recompute 'none' with it`);
  const model = dualEncoderMetaModel(a.modelCfg, { marginRad: a.marginRad, detachMargin: a.detachMargin });
  const wantMeta = method === 'l2rw' || isMetaStep(a.step, a.weighting.metaEvery);
  if (wantMeta && !a.nextMetaBatch) throw new Error(`samStep: weighting '${method}' needs meta batches (nextMetaBatch)`);
  const meta = wantMeta ? await a.nextMetaBatch!() : undefined;
  try {
    const common = { model, params: a.params, trainBatch: a.batch, alpha: a.weighting.alpha, metaScope: a.weighting.metaScope };
    const net = method === 'mwn' ? a.weightNet : undefined;
    // The net's other inputs, off the tape; the similarities cost one more forward of the train batch.
    const sampleInputs = net ? tf.tidy(() => weightingInputs(net.inputs, {
      similarities: needsSimilarities(net.inputs) ? model.similarities(a.params, a.batch) : undefined,
      progress: a.progress ?? 0,
      source: a.source,
    })) : undefined;
    let r;
    let others: Float32Array | undefined;
    try {
      r = net
        ? await mwnStep({ ...common, metaBatch: meta, weightNet: net, normalize: 'sum', step: a.step, metaEvery: a.weighting.metaEvery, sampleInputs })
        : await l2rwStep({ ...common, metaBatch: meta! });
      if (sampleInputs) others = Float32Array.from(await sampleInputs.data());
    } finally {
      sampleInputs?.dispose();
    }
    const losses = r.losses;
    const k = net ? net.inputs.filter((x) => x !== 'loss').length : 0;
    const inputRows = net ? Array.from(losses, (l, i) => {
      let o = 0;
      return net.inputs.map((x) => (x === 'loss' ? l : others![i * k + o++]));
    }) : undefined;
    let grads = r.grads;
    if (a.trainable) {
      const keep = new Set(a.trainable);
      grads = Object.fromEntries(Object.entries(r.grads).filter(([n]) => keep.has(n)));
      tf.dispose(Object.entries(r.grads).filter(([n]) => !keep.has(n)).map(([, g]) => g));
    }
    return { loss: r.loss, perSample: r.losses, grads, weights: r.weights, metaLoss: r.metaLoss ?? undefined, ...(inputRows ? { inputRows } : {}) };
  } finally {
    if (meta) tf.dispose([meta.frames, meta.ids, meta.mask]);
  }
}
