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
import { configHash, runCheckpointDir, saveRunCheckpoint } from './checkpoint.js';
import { clampLogitScale, clipToNorm, GradAccumulator, gradNorm, NonFiniteGuard } from './gradients.js';
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
  /** Stop when more than this fraction of the last `nonFiniteWindow` steps were skipped (default 0.2). */
  maxNonFiniteRate?: number;
  /** Steps over which the skipped-step rate is counted (default 50). */
  nonFiniteWindow?: number;
  /** Called with a second SIGINT/SIGTERM, after the message: quit now (default process.exit(130)). */
  forceQuit?: () => void;
  /** JSON written as the checkpoint's config.json. */
  config: unknown;
  /**
   * Stored as `configHash` in each checkpoint's state.json, for the pipeline to compare on
   * resume (default: `configHash(config)`); give the hash of the settings a resume must keep.
   */
  configHash?: string;
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

/** A checkpoint that could not be written after a retry: the run stops rather than lose its work. */
export class CheckpointSaveError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointSaveError';
  }
}

function isDiskFull(e: unknown): boolean {
  return (e as NodeJS.ErrnoException)?.code === 'ENOSPC' || /ENOSPC|no space left/i.test(String((e as Error)?.message));
}

/**
 * The message of an out-of-memory error in words: the wasm backend reports a full heap as
 * "memory access out of bounds" or an allocation failure, which names neither the cause nor a fix.
 */
export function describeOutOfMemory(e: unknown, where: string): string | undefined {
  const msg = String((e as Error)?.message ?? e);
  if (!/memory access out of bounds|out of memory|Array buffer allocation failed|Cannot allocate Wasm memory|Invalid typed array length|WebAssembly\.Memory|OOM/i.test(msg)) return undefined;
  return `${where}: out of memory (${msg.split('\n')[0]}). The wasm backend's heap holds at most 4 GB; lower train.batchSize, `
    + 'frames.count or frames.size, use a smaller model.preset, or accumulate gradients (train.accumSteps) over smaller batches';
}

function check(cond: boolean, msg: string): void {
  if (!cond) throw new Error(`runTraining: ${msg}`);
}

/**
 * One guarded update: reads the gradients' global norm once, asks `guard` about the step, and
 * only when the loss and every gradient are finite hands them to `apply` (scaled down to
 * `clipNorm` first when that is > 0). A skipped step leaves the parameters untouched; the
 * guard throws when too many steps were skipped. Disposes `grads` (and the clipped copies).
 * Every loop that updates parameters goes through here, so none can apply a NaN.
 *
 * @example
 * const guard = new NonFiniteGuard({ maxConsecutive: 5 });
 * const { verdict } = await guardedUpdate(grads, loss, step, guard, (g) => opt.step(g));
 */
export async function guardedUpdate(
  grads: NamedGradients, loss: number, step: number, guard: NonFiniteGuard, apply: (grads: NamedGradients) => void, clipNorm = 0,
): Promise<{ verdict: 'ok' | 'skip'; norm: number }> {
  try {
    // One asynchronous read per step for the guard and clipping (webgpu in Node cannot read
    // synchronously, and every read drains the GPU queue): a non-finite value anywhere, or a
    // norm that overflows float32, makes the global norm non-finite.
    const { norm, finite } = await gradNorm(grads);
    // A GPU validation or memory error leaves zeros, not NaN: stop before they are applied.
    assertNoWebGPUErrors(`training step ${step}`);
    const verdict = guard.check(loss, finite, step);
    if (verdict === 'ok') {
      const toApply = clipNorm > 0 ? clipToNorm(grads, norm, clipNorm) : grads;
      try {
        apply(toApply);
      } finally {
        if (toApply !== grads) tf.dispose(Object.values(toApply));
      }
    }
    return { verdict, norm };
  } finally {
    tf.dispose(Object.values(grads));
  }
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
  const guard = new NonFiniteGuard({ maxConsecutive: opts.maxNonFinite ?? 5, window: opts.nonFiniteWindow ?? 50, maxRate: opts.maxNonFiniteRate ?? 0.2 });
  const logitScale = opts.logitScaleName ? opts.params[opts.logitScaleName] : undefined;
  const t0 = performance.now();

  let stopRequested = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopRequested) {
      // The checkpoint being written (if any) is written under a temporary name, so quitting
      // now keeps the previous one whole.
      opts.logger.log(`${sig} again: quitting now without a checkpoint; --resume continues from the last one saved`);
      opts.logger.close();
      (opts.forceQuit ?? (() => process.exit(130)))();
      return;
    }
    stopRequested = true;
    opts.logger.log(`${sig}: finishing the current step, saving a checkpoint, then stopping (${sig === 'SIGINT' ? 'Ctrl-C' : sig} again quits at once)`);
  };
  if (opts.handleSignals !== false) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }

  const saveOnce = async (step: number): Promise<void> => {
    const params: Record<string, tf.Tensor> = { ...opts.params };
    const optimizer: Record<string, tf.Tensor> = { ...opts.optimizer.state(), ...(hooks.extraTensors?.() ?? {}) };
    await saveRunCheckpoint(opts.runDir, step, {
        config: opts.config,
        params,
        optimizer,
        state: {
          step,
          optimizerStep: opts.optimizer.stepCount,
          dataPosition: hooks.dataState(),
          skippedSteps: guard.total,
          configHash: opts.configHash ?? configHash(opts.config),
          ...(hooks.extraState?.() ?? {}),
        },
      }, { keep: opts.keepCheckpoints ?? 3 });
  };
  // A run whose checkpoints cannot be written is losing its work: one retry (a transient
  // error, a moment of a full disk), then the run fails, naming the folder and the error.
  const saveCheckpoint = async (step: number): Promise<void> => {
    const dir = runCheckpointDir(opts.runDir, step);
    try {
      await saveOnce(step);
    } catch (first) {
      opts.logger.log(`checkpoint at step ${step} could not be written to ${dir} (${(first as Error).message}); trying once more`);
      try {
        await saveOnce(step);
      } catch (e) {
        throw new CheckpointSaveError(`checkpoint at step ${step} could not be written to ${dir}: ${(e as Error).message}`
          + `${isDiskFull(e) ? `${/disk is full/.test((e as Error).message) ? '' : '; the disk is full'}: free space, then --resume continues from the last checkpoint written` : ''}`);
      }
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
      const lr = opts.schedule(step);
      const { verdict, norm } = await guardedUpdate(grads, loss, step, guard, (g) => {
        opts.optimizer.step(g, lr);
        if (logitScale) clampLogitScale(logitScale);
      }, clipNorm);
      if (verdict === 'ok') lastLoss = loss;
      else opts.logger.log(`step ${step}: non-finite loss or gradients (loss=${loss}); step skipped (${guard.total} so far)`);
      step += 1;
      const seconds = (performance.now() - stepStart) / 1000;
      const logitScaleValue = logitScale ? (await logitScale.data())[0] : undefined;
      assertNoWebGPUErrors(`the optimizer update of step ${step}`);
      opts.logger.write({
        step, loss, lr,
        logitScale: logitScaleValue,
        samplesPerSec: samples / seconds,
        dataWaitMs,
        gradNorm: norm,
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
  } catch (e) {
    const oom = describeOutOfMemory(e, `training step ${step}`);
    if (oom) throw new Error(oom, { cause: e });
    throw e;
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
