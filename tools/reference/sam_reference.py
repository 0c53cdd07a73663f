#!/usr/bin/env python3
"""PyTorch reference of vlmargin's dual encoder and SAM training step, for the speed gap.

Mirrors src/nn/configs.ts (presets tiny and base), src/nn/dualEncoder.ts, attention.ts,
transformer.ts, layers.ts and src/margin/sam.ts, and times the same step as
bench/gpu.ts on the same synthetic inputs (bit for bit): forward, SAM loss
(mu = 0.1), backward, AdamW (betas 0.9/0.98, eps 1e-6, decay 0.2 on matrices only, as the
pretraining optimizer), the logit-scale clamp, and the loss read back. Rows have the field
names of bench-gpu's JSON rows, so the two join on (model, batch, frames, variant).

    python3 tools/reference/sam_reference.py [--device cuda|cpu] [--models tiny,base]
        [--batches 64,256] [--frames N] [--steps 10] [--warmup 3] [--attention manual|sdpa]
        [--tf32] [--json out.json]

peakBytes is torch.cuda.max_memory_allocated over the warm-up and timed steps (parameters,
gradients, optimizer state, activations); reservedBytes is max_memory_reserved. On the CPU
both are null. `--attention manual` computes attention as vlmargin does (matmul, additive
-1e9 mask, softmax, matmul); `sdpa` uses F.scaled_dot_product_attention with the same mask,
what an idiomatic PyTorch model would use. Matmuls are float32 unless --tf32.
"""
import argparse
import datetime
import json
import math
import platform
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# src/nn/configs.ts, presets tiny, small and base.
PRESETS = {
    "tiny": dict(
        vision=dict(imageSize=32, patchSize=8, width=64, layers=2, heads=4, mlpRatio=4),
        text=dict(vocabSize=1000, contextLength=16, width=64, layers=2, heads=4, mlpRatio=4, causal=True, pooling="eos"),
        temporal=dict(pooling="mean", maxFrames=8, layers=1, heads=4),
        embedDim=64, activation="gelu", layerNormEps=1e-5, logitScaleInit=math.log(100),
    ),
    "small": dict(
        vision=dict(imageSize=112, patchSize=16, width=256, layers=6, heads=4, mlpRatio=4),
        text=dict(vocabSize=8192, contextLength=32, width=256, layers=6, heads=4, mlpRatio=4, causal=True, pooling="eos"),
        temporal=dict(pooling="mean", maxFrames=16, layers=2, heads=4),
        embedDim=256, activation="gelu", layerNormEps=1e-5, logitScaleInit=math.log(100),
    ),
    "base": dict(
        vision=dict(imageSize=224, patchSize=16, width=768, layers=12, heads=12, mlpRatio=4),
        text=dict(vocabSize=49408, contextLength=77, width=512, layers=12, heads=8, mlpRatio=4, causal=True, pooling="eos"),
        temporal=dict(pooling="mean", maxFrames=32, layers=4, heads=12),
        embedDim=512, activation="quickGelu", layerNormEps=1e-5, logitScaleInit=math.log(100),
    ),
}

MARGIN_RAD = 0.1  # bench-gpu's MARGIN_RAD
LR = 1e-4
WEIGHT_DECAY = 0.2
COS_EPS = 1e-6  # src/margin/core.ts COS_EPS
MAX_LOGIT_SCALE = math.log(200)
MASKED_SCORE = -1e9  # src/nn/attention.ts


def default_frames(model):
    """bench-gpu's default: 4 frames per clip, 1 for base."""
    return 1 if model == "base" else 4


def activate(x, kind):
    if kind == "gelu":
        return F.gelu(x)  # exact (erf), as safeOps.gelu
    if kind == "quickGelu":
        return x * torch.sigmoid(1.702 * x)
    raise ValueError(f"activation: unknown '{kind}' (gelu or quickGelu)")


class Linear(nn.Module):
    """y = x W (+ b) with W stored [in, out] as in vlmargin (layers.ts linear), N(0, std^2) init."""

    def __init__(self, din, dout, std, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(din, dout) * std)
        self.bias = nn.Parameter(torch.zeros(dout)) if bias else None

    def forward(self, x):
        y = x @ self.weight
        return y + self.bias if self.bias is not None else y


class Attention(nn.Module):
    """attention.ts: qkv [D, 3D] with heads as contiguous column slices, scores / sqrt(dh) plus an additive mask."""

    def __init__(self, width, heads, in_std, out_std, mode):
        super().__init__()
        self.heads = heads
        self.mode = mode
        self.qkv = Linear(width, 3 * width, in_std)
        self.out = Linear(width, width, out_std)

    def forward(self, x, bias):
        b, l, d = x.shape
        h = self.heads
        dh = d // h
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (t.reshape(b, l, h, dh).transpose(1, 2) for t in (q, k, v))  # [B, H, L, dh]
        if self.mode == "sdpa":
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(dh))
            if bias is not None:
                scores = scores + bias
            ctx = torch.softmax(scores, dim=-1) @ v
        return self.out(ctx.transpose(1, 2).reshape(b, l, d))


class Block(nn.Module):
    """transformer.ts: pre-LN, x + attn(ln_1(x)), then x + mlp(ln_2(x)); CLIP's init stds."""

    def __init__(self, width, heads, mlp_ratio, layers, activation, eps, mode):
        super().__init__()
        attn_std = width ** -0.5
        proj_std = width ** -0.5 * (2 * max(layers, 1)) ** -0.5
        fc_std = (2 * width) ** -0.5
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads, attn_std, proj_std, mode)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.fc1 = Linear(width, mlp_ratio * width, fc_std)
        self.fc2 = Linear(mlp_ratio * width, width, proj_std)
        self.activation = activation

    def forward(self, x, bias):
        x = x + self.attn(self.ln_1(x), bias)
        return x + self.fc2(activate(self.fc1(self.ln_2(x)), self.activation))


class Stack(nn.Module):
    def __init__(self, width, heads, mlp_ratio, layers, activation, eps, mode):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, layers, activation, eps, mode) for _ in range(layers))

    def forward(self, x, bias=None):
        for blk in self.blocks:
            x = blk(x, bias)
        return x


def attention_bias(batch, length, key_padding, causal, device):
    """attention.ts attentionBias: -1e9 on future keys and padded keys, clipped at -1e9; [B, 1, L, L]."""
    bias = torch.zeros(1, 1, length, length, device=device)
    if causal:
        i = torch.arange(length, device=device).view(length, 1)
        j = torch.arange(length, device=device).view(1, length)
        bias = bias + (j > i).float().view(1, 1, length, length) * MASKED_SCORE
    if key_padding is not None:
        pad = 1.0 - (key_padding != 0).float()
        bias = bias + (pad * MASKED_SCORE).view(batch, 1, 1, length)
    return torch.clamp(bias, min=MASKED_SCORE)


class DualEncoder(nn.Module):
    """dualEncoder.ts: patches x W (no conv) + class token + positions, ln_pre, ViT blocks per frame,
    ln_post on the class token, temporal pooling (mean, or a transformer then the mean), video.proj;
    tokens + positions, causal transformer, EOS (last real token) or CLS pooling, ln_final, text.proj."""

    def __init__(self, cfg, mode):
        super().__init__()
        v, t, tp = cfg["vision"], cfg["text"], cfg["temporal"]
        self.cfg = cfg
        eps = cfg["layerNormEps"]
        act = cfg["activation"]
        patch_dim = v["patchSize"] ** 2 * 3
        num_patches = (v["imageSize"] // v["patchSize"]) ** 2
        self.patch_embed = Linear(patch_dim, v["width"], patch_dim ** -0.5, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(v["width"]) * v["width"] ** -0.5)
        self.pos_embed = nn.Parameter(torch.randn(1 + num_patches, v["width"]) * v["width"] ** -0.5)
        self.ln_pre = nn.LayerNorm(v["width"], eps=eps)
        self.video_blocks = Stack(v["width"], v["heads"], v["mlpRatio"], v["layers"], act, eps, mode)
        self.ln_post = nn.LayerNorm(v["width"], eps=eps)
        if tp["pooling"] == "transformer":
            self.temporal_pos = nn.Parameter(torch.randn(tp["maxFrames"], v["width"]) * 0.01)
            self.temporal_blocks = Stack(v["width"], tp["heads"], v["mlpRatio"], tp["layers"], act, eps, mode)
        self.video_proj = Linear(v["width"], cfg["embedDim"], v["width"] ** -0.5, bias=False)
        self.token_embed = nn.Parameter(torch.randn(t["vocabSize"], t["width"]) * 0.02)
        self.text_pos = nn.Parameter(torch.randn(t["contextLength"], t["width"]) * 0.01)
        self.text_blocks = Stack(t["width"], t["heads"], t["mlpRatio"], t["layers"], act, eps, mode)
        self.ln_final = nn.LayerNorm(t["width"], eps=eps)
        self.text_proj = Linear(t["width"], cfg["embedDim"], t["width"] ** -0.5, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg["logitScaleInit"])))

    def encode_video(self, frames):
        v = self.cfg["vision"]
        b, t, h, w, c = frames.shape
        n = b * t
        p = v["patchSize"]
        gh, gw = h // p, w // p
        # layers.ts patchify: patch vectors ordered (row in patch, column in patch, channel).
        x = frames.reshape(n * gh, p, gw, p * c).permute(0, 2, 1, 3).reshape(n, gh * gw, p * p * c)
        x = self.patch_embed(x)
        cls = self.class_embedding.view(1, 1, -1).expand(n, 1, v["width"])
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.video_blocks(self.ln_pre(x))
        seq = self.ln_post(x[:, 0, :]).reshape(b, t, v["width"])
        if self.cfg["temporal"]["pooling"] == "transformer":
            seq = self.temporal_blocks(seq + self.temporal_pos[:t])
        return self.video_proj(seq.mean(dim=1))

    def encode_text(self, ids, mask):
        tc = self.cfg["text"]
        b, l = ids.shape
        x = self.token_embed[ids] + self.text_pos[:l]
        h = self.text_blocks(x, attention_bias(b, l, mask, tc["causal"], ids.device))
        if tc["pooling"] == "eos":
            real = (mask != 0).int()
            eos = torch.argmax(real * torch.arange(1, l + 1, device=ids.device, dtype=torch.int32), dim=1)
            pooled = h[torch.arange(b, device=ids.device), eos]
        else:
            pooled = h[:, 0]
        return self.text_proj(self.ln_final(pooled))


def l2_normalize(x):
    return x / torch.sqrt((x * x).sum(dim=1, keepdim=True) + 1e-12)


def sam_loss(video, text, logit_scale, margin_rad):
    """sam.ts samContrastiveLoss without groups: logit_ij = s cos(max(theta_ij - mu [i = j], 0)),
    s = exp(clamp(logit_scale, 0, ln 200)); per sample 1/2 (row CE + column CE); mean."""
    b = video.shape[0]
    scale = torch.exp(torch.clamp(logit_scale, 0.0, MAX_LOGIT_SCALE))
    cosine = l2_normalize(video) @ l2_normalize(text).t()
    eye = torch.eye(b, device=cosine.device, dtype=cosine.dtype)
    cos_y = (cosine * eye).sum(dim=1)
    theta = torch.acos(torch.clamp(cos_y, -1 + COS_EPS, 1 - COS_EPS))
    delta = torch.cos(torch.relu(theta - margin_rad)) - cos_y
    logits = (cosine + eye * delta.unsqueeze(1)) * scale
    target = (cos_y + delta) * scale
    rows = torch.logsumexp(logits, dim=1) - target
    cols = torch.logsumexp(logits, dim=0) - target
    return (0.5 * (rows + cols)).mean()


def host_batch(cfg, batch, frames, seed):
    """bench-gpu.ts hostBatch, bit for bit: frame value i is 2u - 1, u = ((i * 2654435761 + 40503 seed) mod 2^32) / 2^32;
    token row b has length 4 + (b mod (L - 4)) with id 1 + ((31 b + 7 i + seed) mod (V - 2)), then padding 0."""
    s = cfg["vision"]["imageSize"]
    L = cfg["text"]["contextLength"]
    V = cfg["text"]["vocabSize"]
    n = batch * frames * s * s * 3
    i = np.arange(n, dtype=np.uint64)
    u = ((i * np.uint64(2654435761) + np.uint64(40503 * seed)) % np.uint64(2 ** 32)).astype(np.float64) / 2 ** 32
    data = (2 * u - 1).astype(np.float32).reshape(batch, frames, s, s, 3)
    ids = np.zeros((batch, L), dtype=np.int64)
    mask = np.zeros((batch, L), dtype=np.int64)
    for b in range(batch):
        length = 4 + (b % (L - 4))
        for k in range(length):
            ids[b, k] = 1 + ((31 * b + 7 * k + seed) % (V - 2))
            mask[b, k] = 1
    return data, ids, mask


def optimizer_for(model):
    """The pretraining decay rule (dualEncoder.ts paramGroup): no decay on biases, layer norms,
    logit_scale and the class embedding; decay on the rest."""
    modules = dict(model.named_modules())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_norm = isinstance(modules.get(name.rsplit(".", 1)[0]), nn.LayerNorm)
        if name in ("logit_scale", "class_embedding") or name.endswith(".bias") or is_norm:
            no_decay.append(p)
        else:
            decay.append(p)
    return torch.optim.AdamW(
        [dict(params=decay, weight_decay=WEIGHT_DECAY), dict(params=no_decay, weight_decay=0.0)],
        lr=LR, betas=(0.9, 0.98), eps=1e-6,
    )


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_cell(model_name, batch, frames, args, device):
    cfg = PRESETS[model_name]
    row = dict(
        model=model_name, batch=batch, frames=frames, imageSize=cfg["vision"]["imageSize"],
        contextLength=cfg["text"]["contextLength"], variant="plain", params=None, warmup=args.warmup,
        steps=args.steps, msPerStep=None, msPerStepMean=None, msPerStepMin=None, samplesPerSec=None,
        peakBytes=None, reservedBytes=None, peakRssBytes=None, ratioVsPlain=None, error=None,
    )
    model = opt = None
    try:
        torch.manual_seed(1)
        model = DualEncoder(cfg, args.attention).to(device)
        row["params"] = sum(p.numel() for p in model.parameters())
        opt = optimizer_for(model)
        frames_h, ids_h, mask_h = host_batch(cfg, batch, frames, 7)
        frames_pin = torch.from_numpy(frames_h)
        ids_pin = torch.from_numpy(ids_h)
        mask_pin = torch.from_numpy(mask_h)
        if device.type == "cuda":
            frames_pin, ids_pin, mask_pin = frames_pin.pin_memory(), ids_pin.pin_memory(), mask_pin.pin_memory()
            torch.cuda.reset_peak_memory_stats(device)

        def step():
            # Fresh device tensors per step, as bench-gpu uploads its host batch each step.
            fr = frames_pin.to(device, non_blocking=True)
            ids = ids_pin.to(device, non_blocking=True)
            mask = mask_pin.to(device, non_blocking=True)
            loss = sam_loss(model.encode_video(fr), model.encode_text(ids, mask), model.logit_scale, MARGIN_RAD)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
            return loss.item()  # waits for the step, like bench-gpu's loss read

        for _ in range(args.warmup):
            step()
        times = []
        for k in range(args.steps):
            sync(device)
            t0 = time.perf_counter()
            loss = step()
            sync(device)
            times.append((time.perf_counter() - t0) * 1000)
            if not math.isfinite(loss):
                raise RuntimeError(f"non-finite loss {loss} at timed step {k + 1}")
        med = statistics.median(times)
        row.update(
            msPerStep=round(med, 2), msPerStepMean=round(sum(times) / len(times), 2), msPerStepMin=round(min(times), 2),
            samplesPerSec=round(1000 * batch / med, 2),
        )
        # The process's high-water mark so far (cells run one after another in this process).
        row["peakRssBytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if device.type == "cuda":
            row["peakBytes"] = torch.cuda.max_memory_allocated(device)
            row["reservedBytes"] = torch.cuda.max_memory_reserved(device)
    except Exception as e:  # an OOM in one cell is reported and the rest go on
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:400] if str(e) else ''}"
    finally:
        del model, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def int_list(name, text):
    try:
        out = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sys.exit(f"sam_reference: {name} must list positive integers, got '{text}'")
    if not out or any(v < 1 for v in out):
        sys.exit(f"sam_reference: {name} must list positive integers, got '{text}'")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test)")
    ap.add_argument("--models", default="tiny,base")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--frames", type=int, default=None, help="frames per clip (default 4, 1 for base)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--attention", choices=["manual", "sdpa"], default="manual")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (default: float32, as tfjs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in PRESETS:
            sys.exit(f"sam_reference: --models: unknown preset '{m}' (known: {', '.join(PRESETS)})")
    batches = int_list("--batches", args.batches)
    if args.steps < 1 or args.warmup < 0 or (args.frames is not None and args.frames < 1):
        sys.exit("sam_reference: --steps must be >= 1, --warmup >= 0, --frames >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("sam_reference: --device cuda but torch.cuda.is_available() is False (use --device cpu for a smoke test)")
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32

    t0 = time.perf_counter()
    rows = []
    for m in models:
        for b in batches:
            frames = args.frames or default_frames(m)
            print(f"sam_reference: {m} batch {b} frames {frames}: {args.warmup} warm-up + {args.steps} timed steps", file=sys.stderr, flush=True)
            rows.append(run_cell(m, b, frames, args, device))
    report = dict(
        tool="sam_reference",
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        device=str(device),
        deviceName=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        versions=dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if device.type == "cuda" else None),
        settings=dict(models=models, batches=batches, steps=args.steps, warmup=args.warmup, frames=args.frames,
                      attention=args.attention, tf32=args.tf32, marginRad=MARGIN_RAD, lr=LR, weightDecay=WEIGHT_DECAY),
        seconds=round(time.perf_counter() - t0, 2),
        rows=rows,
    )
    mib = lambda n: "" if n is None else f"{n / 2 ** 20:.0f}"
    print(f"PyTorch {torch.__version__} on {report['deviceName']} ({device}), attention {args.attention}, tf32 {args.tf32}; "
          f"{args.warmup} warm-up + {args.steps} timed steps per row (median)\n")
    print("| model | batch | frames | ms/step | samples/s | peak allocated MiB | peak reserved MiB | error |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['frames']} | {r['msPerStep'] or ''} | {r['samplesPerSec'] or ''} | "
              f"{mib(r['peakBytes'])} | {mib(r['reservedBytes'])} | {r['error'] or ''} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
