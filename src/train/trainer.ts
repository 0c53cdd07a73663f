/**
 * The training loop shared by every pipeline: gradient accumulation, clipping, the
 * non-finite guard, the optimizer step with its schedule, the logit-scale clamp, metrics,
 * periodic evaluation and checkpoints, and a clean stop on SIGINT/SIGTERM.
 *
 * What a step computes is the pipeline's business (`computeGrads`); the loop owns when and
 * how parameters change and what is written to disk, so every pipeline resumes the same way.
 *
 * @example
 * const result = await runTraining({ runDir, params, optimizer, schedule, totalSteps: 100, … },
 *   { computeGrads: async () => ({ loss, grads, samples: 32 }), dataState: () => loader.state() });
 */
import { tf } from '../backend/tf.js';
import { assertNoWebGPUErrors } from '../backend/webgpuGuard.js';
import { saveRunCheckpoint } from './checkpoint.js';
import { clampLogitScale, clipToNorm, GradAccumulator, gradNormAsync, NonFiniteGuard } from './gradients.js';
import type { MetricsLogger } from './logger.js';
import type { NamedGradients, Optimizer } from './optimizer.js';
import type { LrSchedule } from './schedule.js';

export interface MicroStep {
  /** Scalar loss of this micro-batch (a plain number, already read). */
  loss: number;
  /** Gradients by parameter name; the loop disposes them. */
  grads: NamedGradients;
  samples: number;
  /** Time spent waiting for the batch, in ms. */
  dataWaitMs?: number;
  /** Extra scalars to log with the step (weights' mean, meta loss…). */
  extra?: Record<string, number>;
}

export interface TrainingHooks {
  /** Forward and backward of one micro-batch at `step`. */
  computeGrads(step: number, micro: number): Promise<MicroStep>;
  /** Loader position after the batches consumed so far (goes into state.json). */
  dataState(): unknown;
  /** Evaluation at `step`; its scalars are logged. */
  evaluate?(step: number): Promise<Record<string, number>>;
  /** Extra JSON state for the checkpoint (weight net, meta cycler…). */
  extraState?(): Record<string, unknown>;
  /** Extra tensors saved beside the optimizer state (weight net parameters…). */
  extraTensors?(): Record<string, tf.Tensor>;
}

export interface TrainingOptions {
  runDir: string;
  params: Record<string, tf.Variable>;
  optimizer: Optimizer;
  schedule: LrSchedule;
  totalSteps: number;
  /** Step to start from (a resumed run's checkpoint step). */
  startStep?: number;
  accumSteps?: number;
  clipNorm?: number;
  evalEvery?: number;
  checkpointEvery?: number;
  keepCheckpoints?: number;
  maxNonFinite?: number;
  /** JSON written as the checkpoint's config.json. */
  config: unknown;
  logger: MetricsLogger;
  /** Name of the learnable log-scale to clamp to [0, ln 200] after each step. */
  logitScaleName?: string;
  /** Stop handling: listen for SIGINT/SIGTERM (default true). */
  handleSignals?: boolean;
}

export interface TrainingResult {
  step: number;
  stopped: 'done' | 'signal';
  skippedSteps: number;
  lastLoss: number;
  seconds: number;
}

function check(cond: boolean, msg: string): void {
  if (!cond) throw new Error(`runTraining: ${msg}`);
}

/** Runs optimizer steps from `startStep` to `totalSteps`, checkpointing as configured. */
export async function runTraining(opts: TrainingOptions, hooks: TrainingHooks): Promise<TrainingResult> {
  const start = opts.startStep ?? 0;
  const accum = opts.accumSteps ?? 1;
  const clipNorm = opts.clipNorm ?? 0;
  const evalEvery = opts.evalEvery ?? 0;
  const ckptEvery = opts.checkpointEvery ?? 0;
  check(Number.isInteger(opts.totalSteps) && opts.totalSteps >= 0, `totalSteps must be a non-negative integer, got ${opts.totalSteps}`);
  check(Number.isInteger(start) && start >= 0, `startStep must be a non-negative integer, got ${start}`);
  check(Number.isInteger(accum) && accum >= 1, `accumSteps must be an integer >= 1, got ${accum}`);
  check(clipNorm >= 0, `clipNorm must be >= 0, got ${clipNorm}`);
  const guard = new NonFiniteGuard({ maxConsecutive: opts.maxNonFinite ?? 5 });
  const logitScale = opts.logitScaleName ? opts.params[opts.logitScaleName] : undefined;
  const t0 = performance.now();

  let stopRequested = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopRequested) return;
    stopRequested = true;
    opts.logger.log(`${sig}: finishing the current step, saving a checkpoint, then stopping`);
  };
  if (opts.handleSignals !== false) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }

  const saveCheckpoint = async (step: number): Promise<void> => {
    const params: Record<string, tf.Tensor> = { ...opts.params };
    const optimizer: Record<string, tf.Tensor> = { ...opts.optimizer.state(), ...(hooks.extraTensors?.() ?? {}) };
    try {
      await saveRunCheckpoint(opts.runDir, step, {
        config: opts.config,
        params,
        optimizer,
        state: {
          step,
          optimizerStep: opts.optimizer.stepCount,
          dataPosition: hooks.dataState(),
          skippedSteps: guard.total,
          ...(hooks.extraState?.() ?? {}),
        },
      }, { keep: opts.keepCheckpoints ?? 3 });
    } catch (e) {
      // A refused save (non-finite weights, full disk) keeps the previous checkpoint; say so loudly.
      opts.logger.log(`checkpoint at step ${step} NOT written: ${(e as Error).message}`);
    }
  };

  let step = start;
  let lastLoss = NaN;
  opts.logger.start(opts.totalSteps, start);
  try {
    while (step < opts.totalSteps && !stopRequested) {
      const stepStart = performance.now();
      const acc = new GradAccumulator(accum);
      let lossSum = 0;
      let samples = 0;
      let dataWaitMs = 0;
      const extra: Record<string, number> = {};
      for (let m = 0; m < accum; m++) {
        const r = await hooks.computeGrads(step, m);
        acc.add(r.grads, r.samples);
        tf.dispose(Object.values(r.grads));
        lossSum += r.loss * r.samples;
        samples += r.samples;
        dataWaitMs += r.dataWaitMs ?? 0;
        for (const [k, v] of Object.entries(r.extra ?? {})) extra[k] = v;
      }
      const grads = acc.mean();
      acc.reset();
      const loss = lossSum / Math.max(samples, 1);
      // One asynchronous read per step for the guard and clipping (webgpu in Node cannot read
      // synchronously, and every read drains the GPU queue): a non-finite value anywhere, or a
      // norm that overflows float32, makes the global norm non-finite.
      const { norm: gradNorm, finite } = await gradNormAsync(grads);
      // A GPU validation or memory error leaves zeros, not NaN: stop before they are applied.
      assertNoWebGPUErrors(`training step ${step}`);
      const verdict = guard.check(loss, finite, step);
      const lr = opts.schedule(step);
      if (verdict === 'ok') {
        let toApply = grads;
        if (clipNorm > 0) {
          toApply = clipToNorm(grads, gradNorm, clipNorm);
          tf.dispose(Object.values(grads));
        }
        opts.optimizer.step(toApply, lr);
        tf.dispose(Object.values(toApply));
        if (logitScale) clampLogitScale(logitScale);
        lastLoss = loss;
      } else {
        tf.dispose(Object.values(grads));
        opts.logger.log(`step ${step}: non-finite loss or gradients (loss=${loss}); step skipped (${guard.total} so far)`);
      }
      step += 1;
      const seconds = (performance.now() - stepStart) / 1000;
      const logitScaleValue = logitScale ? (await logitScale.data())[0] : undefined;
      assertNoWebGPUErrors(`the optimizer update of step ${step}`);
      opts.logger.write({
        step, loss, lr,
        logitScale: logitScaleValue,
        samplesPerSec: samples / seconds,
        dataWaitMs,
        gradNorm,
        skipped: verdict === 'skip' ? 1 : 0,
        ...extra,
      });
      if (hooks.evaluate && evalEvery > 0 && step % evalEvery === 0 && step < opts.totalSteps) {
        const ev = await hooks.evaluate(step);
        opts.logger.write({ step, loss, lr, eval: 1, ...ev });
      }
      if (ckptEvery > 0 && step % ckptEvery === 0 && step < opts.totalSteps) await saveCheckpoint(step);
    }
    await saveCheckpoint(step);
  } finally {
    opts.logger.close();
    if (opts.handleSignals !== false) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
  return {
    step,
    stopped: stopRequested && step < opts.totalSteps ? 'signal' : 'done',
    skippedSteps: guard.total,
    lastLoss,
    seconds: (performance.now() - t0) / 1000,
  };
}
