#!/usr/bin/env python3
"""Builds the tiny Hugging Face CLIP parity fixture for src/nn/clipMapping.ts.

A randomly initialised transformers CLIPModel (width 32, 2 layers, 2 heads, patch 8, 32 px,
vocab 1000, context 16, projection 16, quick_gelu; fixed seed), every parameter redrawn so
that no layer norm is the identity and no bias is zero (a swapped weight/bias or a wrong
transpose then changes the output), fixed inputs, and its embeddings. Needs torch,
transformers and safetensors; no GPU and no network (nothing is downloaded).

    python3 tools/reference/make_clip_fixture.py [--out test/fixtures/clip-tiny] [--seed 0]

Writes to --out:
  model.safetensors   CLIPModel state dict, HF names (what mapClipWeights reads)
  config.json         the CLIPConfig (the fields a loader turns into a DualEncoderConfig)
  inputs.safetensors  pixel_values F32 [N, 3, 32, 32] (HF NCHW), frames F32 [N, 1, 32, 32, 3]
                      (the same values as vlmargin's encodeVideo input: one frame per clip),
                      input_ids I32 [N, 16], attention_mask I32 [N, 16] (EOS = 999 is each row's
                      last real token and its largest id, so HF's two EOS rules agree with
                      vlmargin's last-real-token pooling)
  expected.safetensors image_embeds F32 [N, 16], text_embeds F32 [N, 16] (projected, not
                      normalised: get_image_features / get_text_features), and the pooled
                      features before the projections, image_pooled / text_pooled F32 [N, 32]
  fixture.json        seed, versions, shapes, and the vlmargin DualEncoderConfig it matches
"""
import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

try:
    import transformers
    from transformers import CLIPConfig, CLIPModel
except ImportError as e:  # the GPU host has it; say what is missing elsewhere
    sys.exit(f"make_clip_fixture: transformers is required ({e})")

WIDTH = 32
LAYERS = 2
HEADS = 2
PATCH = 8
IMAGE = 32
VOCAB = 1000
CONTEXT = 16
PROJ = 16
BOS = VOCAB - 2
EOS = VOCAB - 1
PAD = 0


def clip_config():
    common = dict(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  hidden_act="quick_gelu", layer_norm_eps=1e-5)
    return CLIPConfig(
        text_config=dict(common, vocab_size=VOCAB, max_position_embeddings=CONTEXT, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD),
        vision_config=dict(common, image_size=IMAGE, patch_size=PATCH, num_channels=3),
        projection_dim=PROJ,
    )


def dual_encoder_config(cfg):
    """The DualEncoderConfig (src/nn/configs.ts) for this CLIPConfig, field by field."""
    t, v = cfg.text_config, cfg.vision_config
    act = {"quick_gelu": "quickGelu", "gelu": "gelu"}[v.hidden_act]
    return dict(
        name="clip-tiny",
        vision=dict(imageSize=v.image_size, patchSize=v.patch_size, width=v.hidden_size, layers=v.num_hidden_layers,
                    heads=v.num_attention_heads, mlpRatio=v.intermediate_size // v.hidden_size),
        text=dict(vocabSize=t.vocab_size, contextLength=t.max_position_embeddings, width=t.hidden_size, layers=t.num_hidden_layers,
                  heads=t.num_attention_heads, mlpRatio=t.intermediate_size // t.hidden_size, causal=True, pooling="eos"),
        temporal=dict(pooling="mean", maxFrames=1, layers=0, heads=1),
        embedDim=cfg.projection_dim,
        activation=act,
        layerNormEps=v.layer_norm_eps,
        logitScaleInit=cfg.logit_scale_init_value,
    )


def redraw(model, gen):
    """Every parameter random: layer-norm weights 1 + 0.2 N, biases 0.1 N, the rest N(0, std) with
    std = 1/sqrt(fan_in) (embeddings 0.5), so the fixture exercises every entry of the mapping."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            z = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            is_norm = "norm" in name or "layrnorm" in name
            if is_norm and name.endswith(".weight"):
                p.copy_(1 + 0.2 * z)
            elif name.endswith(".bias"):
                p.copy_(0.1 * z)
            elif "embedding" in name:
                p.copy_(0.5 * z)
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(z / math.sqrt(fan_in))


def inputs(gen):
    n = 3
    pixel_values = torch.randn((n, 3, IMAGE, IMAGE), generator=gen, dtype=torch.float32)
    lengths = [5, 9, CONTEXT]  # short, middle, and a row with no padding at all
    ids = torch.full((n, CONTEXT), PAD, dtype=torch.int64)
    mask = torch.zeros((n, CONTEXT), dtype=torch.int64)
    for b, length in enumerate(lengths):
        body = torch.randint(1, BOS, (length - 2,), generator=gen)
        ids[b, :length] = torch.cat([torch.tensor([BOS]), body, torch.tensor([EOS])])
        mask[b, :length] = 1
    return pixel_values, ids, mask


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join("test", "fixtures", "clip-tiny"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    cfg = clip_config()
    # Eager attention: the plain softmax(QKᵀ/√d + mask)V that vlmargin computes.
    cfg._attn_implementation = "eager"
    model = CLIPModel(cfg).eval()
    redraw(model, gen)
    pixel_values, ids, mask = inputs(gen)

    with torch.no_grad():
        vis = model.vision_model(pixel_values=pixel_values)
        txt = model.text_model(input_ids=ids, attention_mask=mask)
        image_pooled = vis.pooler_output
        text_pooled = txt.pooler_output
        image_embeds = model.visual_projection(image_pooled)
        text_embeds = model.text_projection(text_pooled)
        # vlmargin pools the last real token after ln_final; check HF pooled the same one.
        last = mask.sum(dim=1) - 1
        ours_pooled = txt.last_hidden_state[torch.arange(ids.shape[0]), last]
        if not torch.allclose(ours_pooled, text_pooled, atol=1e-6):
            sys.exit("make_clip_fixture: HF's text pooling did not pick each row's last real token; check eos_token_id handling")

    os.makedirs(args.out, exist_ok=True)
    state = {k: v.detach().contiguous().to(torch.float32) for k, v in model.state_dict().items() if v.is_floating_point()}
    save_file(state, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    cfg.to_json_file(os.path.join(args.out, "config.json"))
    frames = pixel_values.permute(0, 2, 3, 1).unsqueeze(1).contiguous()  # [N, 1, H, W, 3]
    save_file({
        "pixel_values": pixel_values.contiguous(),
        "frames": frames,
        "input_ids": ids.to(torch.int32).contiguous(),
        "attention_mask": mask.to(torch.int32).contiguous(),
    }, os.path.join(args.out, "inputs.safetensors"))
    save_file({
        "image_embeds": image_embeds.contiguous(),
        "text_embeds": text_embeds.contiguous(),
        "image_pooled": image_pooled.contiguous(),
        "text_pooled": text_pooled.contiguous(),
    }, os.path.join(args.out, "expected.safetensors"))
    meta = dict(
        seed=args.seed,
        versions=dict(torch=torch.__version__, transformers=transformers.__version__),
        attnImplementation="eager",
        tensors=len(state),
        skippedNonFloat=[k for k, v in model.state_dict().items() if not v.is_floating_point()],
        inputs=dict(n=int(ids.shape[0]), lengths=[int(x) for x in mask.sum(dim=1)], bos=BOS, eos=EOS, pad=PAD),
        dualEncoderConfig=dual_encoder_config(cfg),
        tolerance=1e-4,
    )
    with open(os.path.join(args.out, "fixture.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out))
    print(f"make_clip_fixture: wrote {args.out} ({len(state)} tensors, {total / 1024:.0f} KiB); "
          f"image_embeds[0,:3] = {image_embeds[0, :3].tolist()}, text_embeds[0,:3] = {text_embeds[0, :3].tolist()}")


if __name__ == "__main__":
    main()
