/**
 * One fine-tuning step at CLIP size: SAM loss, gradients of every parameter and an AdamW
 * update, on random frames and token ids with CLIP's shapes (the weights' values do not change
 * the cost, so no download is needed). Reports step time (median of the timed steps after one
 * warm-up) with the process's CPU seconds per step beside it (user + sys of every thread: on a
 * shared machine the wall time grows with the load, the CPU time much less), tfjs's peak tensor
 * bytes over a step (tf.profile), the process's peak RSS, and the
 * parameter, gradient and optimizer bytes that any batch needs.
 *
 *   node dist/bench/clip-step.js [--model b32|b16|l14] [--batch 8] [--frames 12] [--steps 2] [--recompute none|blocks] [--backend tensorflow|wasm|cpu]
 *
 * `--recompute blocks` recomputes each transformer block's activations in the backward
 * (`train.recompute` in the training configs).
 *
 * Shapes: b32 openai/clip-vit-base-patch32, b16 clip-vit-base-patch16, l14 clip-vit-large-patch14
 * (224 px, context 77, meanP). A step that does not fit the engine's memory reports the error.
 */
import { parseArgs } from 'node:util';
import { tf } from '../src/backend/tf.js';
import { initBackend, parseBackendPreference } from '../src/backend/init.js';
import { samContrastiveLoss } from '../src/margin/sam.js';
import { encodeText, encodeVideo, initDualEncoder, paramGroup } from '../src/nn/dualEncoder.js';
import { valueAndGradsOf } from '../src/nn/params.js';
import { clipConfigFromHf } from '../src/train/clipFolder.js';
import { AdamW } from '../src/train/optimizer.js';
import { RECOMPUTE_MODES, type Recompute } from '../src/nn/transformer.js';

/** config.json fields that differ from transformers' CLIP defaults (which are ViT-B/32's). */
const MODELS: Record<string, unknown> = {
  b32: {},
  b16: { vision_config: { patch_size: 16 } },
  l14: {
    projection_dim: 768,
    text_config: { hidden_size: 768, intermediate_size: 3072, num_attention_heads: 12 },
    vision_config: { hidden_size: 1024, intermediate_size: 4096, num_attention_heads: 16, num_hidden_layers: 24, patch_size: 14 },
  },
};

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: 'string', default: 'b32' }, batch: { type: 'string', default: '8' }, frames: { type: 'string', default: '12' },
      steps: { type: 'string', default: '2' }, backend: { type: 'string', default: 'auto' }, recompute: { type: 'string', default: 'none' },
    },
  });
  const hf = MODELS[values.model!];
  if (!hf) throw new Error(`--model: expected one of ${Object.keys(MODELS).join(', ')}, got ${values.model}`);
  const recompute = values.recompute as Recompute;
  if (!RECOMPUTE_MODES.includes(recompute)) throw new Error(`--recompute: expected one of ${RECOMPUTE_MODES.join(', ')}, got ${values.recompute}`);
  const B = Number(values.batch);
  const T = Number(values.frames);
  const steps = Number(values.steps);
  if (![B, T, steps].every((n) => Number.isInteger(n) && n >= 1) || B < 2) throw new Error('--batch (≥ 2), --frames and --steps must be positive integers');
  const backend = await initBackend({ prefer: parseBackendPreference(values.backend!) });
  const cfg = clipConfigFromHf(hf, `${values.model} (transformers defaults)`, { pooling: 'mean', maxFrames: T });
  const store = initDualEncoder(cfg, 0);
  const params = store.snapshot();
  const paramBytes = store.count() * 4;
  const opt = new AdamW(params as Record<string, tf.Variable>, {
    lr: 1e-5, weightDecay: 0.2, groups: (n) => ({ lrScale: 1, weightDecay: paramGroup(n).decay ? 0.2 : 0 }),
  });
  const S = cfg.vision.imageSize;
  const L = cfg.text.contextLength;
  const frames = tf.randomNormal([B, T, S, S, 3], 0, 1, 'float32', 1);
  const ids = tf.tidy(() => tf.cast(tf.floor(tf.randomUniform([B, L], 1, cfg.text.vocabSize - 1, 'float32', 2)), 'int32'));
  const mask = tf.ones([B, L], 'int32');
  const step = async (): Promise<number> => {
    const { value, grads } = valueAndGradsOf((p) => samContrastiveLoss(
      encodeVideo(p, frames, cfg, { recompute }), encodeText(p, ids, mask, cfg, { recompute }), { marginRad: 0.01, logitScale: p.logit_scale },
    ).loss as tf.Scalar, params);
    opt.step(grads, 1e-5);
    const loss = (await value.data())[0];
    tf.dispose([value, ...Object.values(grads)]);
    return loss;
  };
  console.log(`${values.model}: ${store.count().toLocaleString('en-US')} parameters, batch ${B} × ${T} frames of ${S} px, context ${L}; backend ${backend.name}; recompute ${recompute}`);
  const times: number[] = [];
  const cpus: number[] = [];
  let peakBytes = 0;
  let rssPeak = 0;
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
  const row = { model: values.model, backend: backend.name, recompute, batch: B, frames: T, imageSize: S, params: store.count(), weightsGradsAdam: gib(paramBytes * 4) };
  for (let i = 0; i <= steps; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    let prof: Awaited<ReturnType<typeof tf.profile>>;
    try {
      prof = await tf.profile(async () => { await step(); });
    } catch (e) {
      // A wasm heap that runs out aborts the module (it prints "Aborted()"); later calls then fail on its remains.
      const msg = String((e as Error).message ?? e).split('\n')[0];
      const oom = /memory access out of bounds|out of memory|allocation failed|Cannot allocate|Aborted|WebAssembly\.Memory|OOM|reading 'map'/i.test(msg);
      console.log(JSON.stringify({ ...row, error: oom ? `out of memory at step ${i} (${msg})` : msg, rssPeak: gib(Math.max(rssPeak, process.memoryUsage().rss)) }));
      process.exit(2);
    }
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    const cpuS = (c.user + c.system) / 1e6;
    peakBytes = Math.max(peakBytes, prof.peakBytes);
    rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
    if (i > 0) { times.push(ms); cpus.push(cpuS); }
    console.log(`step ${i}${i === 0 ? ' (warm-up)' : ''}: ${(ms / 1000).toFixed(1)} s (${cpuS.toFixed(1)} CPU s), tfjs peak ${(prof.peakBytes / 2 ** 30).toFixed(2)} GiB`);
  }
  console.log(JSON.stringify({ ...row, stepSeconds: median(times) / 1000, stepCpuSeconds: median(cpus), tfjsPeak: gib(peakBytes), rssPeak: gib(rssPeak) }));
  tf.dispose([frames, ids, mask]);
  opt.dispose();
  store.dispose();
}

main().then(() => process.exit(0), (e: unknown) => { console.error(`bench-clip-step: ${(e as Error).message}`); process.exit(1); });
