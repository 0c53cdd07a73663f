#!/usr/bin/env python3
"""Builds the tiny Hugging Face CLIP fixture: a complete CLIP model folder, as
`CLIPModel.save_pretrained` and `CLIPProcessor.save_pretrained` write one, plus inputs and
the embeddings Hugging Face computes from them.

A randomly initialised transformers CLIPModel (width 32, 2 layers, 2 heads, patch 8, 32 px,
context 16, projection 16, quick_gelu; fixed seed), every parameter redrawn so that no layer
norm is the identity and no bias is zero (a swapped weight/bias or a wrong transpose then
changes the output). Its tokenizer is a real CLIP byte-level BPE (CLIPTokenizer: OpenAI's
byte alphabet, each byte also with `</w>`, then merges, then <|startoftext|> and
<|endoftext|>), with a small set of merges learnt here from a few captions, so the model's
vocabulary stays small. Its image processor has a non-default mean and std, so a loader that
ignores the folder's preprocessing is caught. Needs torch, transformers, safetensors and
pillow; no GPU and no network (nothing is downloaded).

    python3 tools/reference/make_clip_fixture.py [--out test/fixtures/clip-tiny] [--seed 0]

The token ids are checked against an independent implementation of OpenAI's CLIP tokenizer
(`simple_tokenizer.py`'s BPE, written out below) before anything is written.

Writes to --out:
  model.safetensors, config.json          CLIPModel, HF names (what mapClipWeights reads)
  tokenizer.json, tokenizer_config.json, vocab.json, merges.txt, special_tokens_map.json
                                          the CLIPTokenizer
  preprocessor_config.json                CLIPImageProcessor (size 32, crop 32, own mean/std)
  inputs.safetensors   pixel_values F32 [N, 3, 32, 32] (random, HF NCHW) and frames F32
                       [N, 1, 32, 32, 3] (the same values in vlmargin's layout); input_ids I32
                       [C, 16] and attention_mask I32 [C, 16] (the captions tokenised by HF with
                       padding to 16 and truncation); images U8 [M, 32, 48, 3] (RGB pictures
                       wider than the model's input: the processor crops their centre)
  expected.safetensors image_embeds F32 [N, 16] and text_embeds F32 [C, 16] (get_image_features /
                       get_text_features, not normalised), image_pooled / text_pooled (before the
                       projections), picture_embeds F32 [M, 16] (get_image_features of the
                       processor's output for each picture)
  fixture.json         seed, versions, captions, shapes, and the vlmargin DualEncoderConfig it matches
"""
import argparse
import html
import json
import math
import os
import sys

import numpy as np
import regex
import torch
from safetensors.torch import save_file

try:
    import transformers
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
except ImportError as e:
    sys.exit(f"make_clip_fixture: transformers and pillow are required ({e})")

WIDTH = 32
LAYERS = 2
HEADS = 2
PATCH = 8
IMAGE = 32
CONTEXT = 16
PROJ = 16
MERGES = 200
MEAN = [0.5, 0.4, 0.3]
STD = [0.2, 0.25, 0.3]
PICTURE_HW = (32, 48)

# The corpus the merges are learnt from, and the captions whose ids and embeddings are fixed.
CORPUS = [
    "a man is running on a beach",
    "a woman is cooking pasta in a kitchen",
    "two dogs are playing with a red ball",
    "a person is talking about the weather",
    "children are singing a song on a stage",
    "a man is driving a car down the road",
    "a cat is sleeping on the sofa",
    "people are dancing at a party",
]
CAPTIONS = [
    "A man is running on the beach.",
    "a cat's   sleeping\ton 2 sofas!!",
    "Zebras (3) jump over a café fence",
    "a woman is cooking pasta in a kitchen while two dogs are playing with a red ball outside",
]


# ---------------------------------------------------------------- OpenAI's CLIP BPE, written out
# The reference algorithm (openai/CLIP simple_tokenizer.py, without ftfy: these captions need
# no mojibake repair) that the HF tokenizer's ids are checked against.

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


PAT = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


def clean(text):
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


def words(text, byte_encoder):
    return ["".join(byte_encoder[b] for b in tok.encode("utf-8")) for tok in regex.findall(PAT, clean(text))]


def bpe(word, ranks):
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        best = min(pairs)[0]
        if best == math.inf:
            break
        first, second = [p for p, r in ranks.items() if r == best][0]
        out, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and parts[i] == first and parts[i + 1] == second:
                out.append(first + second)
                i += 2
            else:
                out.append(parts[i])
                i += 1
        parts = out
    return parts


def reference_ids(text, encoder, ranks, byte_encoder, max_len):
    ids = [encoder[p] for w in words(text, byte_encoder) for p in bpe(w, ranks)]
    ids = [encoder["<|startoftext|>"]] + ids[: max_len - 2] + [encoder["<|endoftext|>"]]
    return ids + [encoder["<|endoftext|>"]] * (max_len - len(ids))


def learn_merges(corpus, byte_encoder, count):
    """Greedy BPE on the corpus words (most frequent adjacent pair first, ties by the pair)."""
    freq = {}
    for line in corpus:
        for w in words(line, byte_encoder):
            key = tuple(list(w[:-1]) + [w[-1] + "</w>"])
            freq[key] = freq.get(key, 0) + 1
    merges = []
    while len(merges) < count:
        pairs = {}
        for w, f in freq.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + f
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], tuple(-ord(c) for c in kv[0][0] + " " + kv[0][1])))[0]
        merges.append(best)
        merged = {}
        for w, f in freq.items():
            out, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + f
        freq = merged
    return merges


def build_tokenizer(out):
    byte_encoder = bytes_to_unicode()
    alphabet = list(byte_encoder.values())
    merges = learn_merges(CORPUS, byte_encoder, MERGES)
    vocab = alphabet + [v + "</w>" for v in alphabet] + ["".join(m) for m in merges]
    vocab = list(dict.fromkeys(vocab)) + ["<|startoftext|>", "<|endoftext|>"]
    encoder = {v: i for i, v in enumerate(vocab)}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(encoder, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tok = CLIPTokenizer(vocab=encoder, merges=merges, model_max_length=CONTEXT)
    ranks = {m: i for i, m in enumerate(merges)}
    return tok, encoder, ranks, byte_encoder


# ---------------------------------------------------------------- the model

def clip_config(vocab_size, bos, eos):
    common = dict(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  hidden_act="quick_gelu", layer_norm_eps=1e-5)
    return CLIPConfig(
        text_config=dict(common, vocab_size=vocab_size, max_position_embeddings=CONTEXT, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos),
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join("test", "fixtures", "clip-tiny"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    tok, encoder, ranks, byte_encoder = build_tokenizer(args.out)
    enc = tok(CAPTIONS, padding="max_length", truncation=True, max_length=CONTEXT, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    for i, c in enumerate(CAPTIONS):
        want = reference_ids(c, encoder, ranks, byte_encoder, CONTEXT)
        if ids[i].tolist() != want:
            sys.exit(f"make_clip_fixture: HF ids for {c!r} are {ids[i].tolist()}, the reference BPE gives {want}")
    if mask.sum(dim=1).max() != CONTEXT:
        sys.exit("make_clip_fixture: no caption is truncated; the truncation case would go untested")

    cfg = clip_config(len(tok), tok.bos_token_id, tok.eos_token_id)
    # Eager attention: the plain softmax(QKᵀ/√d + mask)V that vlmargin computes.
    cfg._attn_implementation = "eager"
    model = CLIPModel(cfg).eval()
    redraw(model, gen)
    processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}, image_mean=MEAN, image_std=STD)

    n = 3
    pixel_values = torch.randn((n, 3, IMAGE, IMAGE), generator=gen, dtype=torch.float32)
    pictures = torch.randint(0, 256, (2, *PICTURE_HW, 3), generator=gen, dtype=torch.uint8)
    picture_pixels = processor(images=[p.numpy() for p in pictures], return_tensors="pt")["pixel_values"]
    left = (PICTURE_HW[1] - IMAGE) // 2
    by_hand = (pictures[:, :, left:left + IMAGE, :].float() / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    if not torch.allclose(picture_pixels, by_hand.permute(0, 3, 1, 2), atol=1e-5):
        sys.exit("make_clip_fixture: the image processor did not crop the centre and normalise as expected")

    with torch.no_grad():
        vis = model.vision_model(pixel_values=pixel_values)
        txt = model.text_model(input_ids=ids, attention_mask=mask)
        image_pooled = vis.pooler_output
        text_pooled = txt.pooler_output
        image_embeds = model.visual_projection(image_pooled)
        text_embeds = model.text_projection(text_pooled)
        if not torch.allclose(model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output, text_embeds, atol=1e-6):
            sys.exit("make_clip_fixture: get_text_features disagrees with text_model + text_projection")
        picture_embeds = model.get_image_features(pixel_values=picture_pixels).pooler_output
        # vlmargin pools the last real token after ln_final; check HF pooled the same one.
        last = mask.sum(dim=1) - 1
        ours_pooled = txt.last_hidden_state[torch.arange(ids.shape[0]), last]
        if not torch.allclose(ours_pooled, text_pooled, atol=1e-6):
            sys.exit("make_clip_fixture: HF's text pooling did not pick each row's last real token; check eos_token_id handling")

    state = {k: v.detach().contiguous().to(torch.float32) for k, v in model.state_dict().items() if v.is_floating_point()}
    save_file(state, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    cfg.to_json_file(os.path.join(args.out, "config.json"))
    tok.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    frames = pixel_values.permute(0, 2, 3, 1).unsqueeze(1).contiguous()  # [N, 1, H, W, 3]
    save_file({
        "pixel_values": pixel_values.contiguous(),
        "frames": frames,
        "input_ids": ids.to(torch.int32).contiguous(),
        "attention_mask": mask.to(torch.int32).contiguous(),
        "images": pictures.contiguous(),
    }, os.path.join(args.out, "inputs.safetensors"))
    save_file({
        "image_embeds": image_embeds.contiguous(),
        "text_embeds": text_embeds.contiguous(),
        "image_pooled": image_pooled.contiguous(),
        "text_pooled": text_pooled.contiguous(),
        "picture_embeds": picture_embeds.contiguous(),
    }, os.path.join(args.out, "expected.safetensors"))
    meta = dict(
        seed=args.seed,
        versions=dict(torch=torch.__version__, transformers=transformers.__version__),
        attnImplementation="eager",
        tensors=len(state),
        captions=CAPTIONS,
        tokenizer=dict(vocabSize=len(tok), merges=len(ranks), bos=tok.bos_token_id, eos=tok.eos_token_id, pad=tok.pad_token_id,
                       lengths=[int(x) for x in mask.sum(dim=1)]),
        pictures=dict(n=int(pictures.shape[0]), height=PICTURE_HW[0], width=PICTURE_HW[1], mean=MEAN, std=STD),
        dualEncoderConfig=dual_encoder_config(cfg),
        tolerance=1e-4,
    )
    with open(os.path.join(args.out, "fixture.json"), "w") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out))
    print(f"make_clip_fixture: wrote {args.out} ({len(state)} tensors, vocabulary {len(tok)}, {total / 1024:.0f} KiB); "
          f"ids[0] = {ids[0].tolist()}")


if __name__ == "__main__":
    main()
