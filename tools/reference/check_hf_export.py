#!/usr/bin/env python3
"""Checks a `vlmargin export hf` folder with transformers: it loads as a plain CLIPModel with no
missing, unexpected or mis-shaped keys, and gives vlmargin's embeddings.

Needs torch, transformers and safetensors; no GPU and no network (nothing is downloaded).

    python3 tools/reference/check_hf_export.py EXPORT_DIR --inputs INPUTS --expected EXPECTED [--tol 1e-4]
        [--f32 F32_EXPORT_DIR]

EXPORT_DIR  the folder `vlmargin export hf` wrote.
--inputs    safetensors with pixel_values F32 [N, 3, H, W], input_ids I32 [N, L], attention_mask
            I32 [N, L]; its metadata may hold "captions" (a JSON list), then the folder's tokenizer
            must turn them into exactly these input_ids / attention_mask (so must the "captions"
            of a fixture.json beside INPUTS, as in test/fixtures/clip-tiny).
--expected  safetensors with image_embeds and text_embeds F32 [N, E]: vlmargin's embeddings
            (bench/hf-export-probe.ts writes both files) or CLIPModel's own (the committed
            test/fixtures/clip-tiny, made by make_clip_fixture.py, has both files).
--tol       largest allowed absolute difference (default 1e-4; an F16/BF16 export is computed
            in float32 from its rounded weights and needs more).
--f32       an F32 export of the same model: every F16/BF16 tensor of EXPORT_DIR must be
            PyTorch's own rounding of its F32 tensor (`.to(torch.float16 / bfloat16)`), bit for bit.

Prints one JSON line with the figures, exits 1 if a check fails.
"""
import argparse
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

try:
    import transformers
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel
except ImportError as e:
    sys.exit(f"check_hf_export: transformers is required ({e})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("export_dir")
    ap.add_argument("--inputs")
    ap.add_argument("--expected")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--f32")
    args = ap.parse_args()
    if bool(args.inputs) != bool(args.expected):
        sys.exit("check_hf_export: give --inputs and --expected together")

    report = {"export": args.export_dir, "transformers": transformers.__version__, "torch": torch.__version__}
    failures = []

    # Float32 whatever the stored type, so the comparison measures the stored weights, not float16 arithmetic.
    model, info = CLIPModel.from_pretrained(args.export_dir, output_loading_info=True, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    report["loading"] = {k: sorted(v) if isinstance(v, (list, set)) else v for k, v in info.items()}
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(k):
            failures.append(f"{k}: {sorted(info[k])[:10]}")

    with safe_open(os.path.join(args.export_dir, "model.safetensors"), "pt") as f:
        report["stored_dtypes"] = sorted({str(f.get_slice(k).get_dtype()) for k in f.keys()})

    extra = os.path.join(args.export_dir, "vlmargin_extra.safetensors")
    if os.path.exists(extra):
        with safe_open(extra, "pt") as f:
            report["extra_tensors"] = len(list(f.keys()))
            report["extra_metadata_keys"] = sorted((f.metadata() or {}).keys())

    tokenizer = None
    if os.path.exists(os.path.join(args.export_dir, "tokenizer.json")):
        tokenizer = AutoTokenizer.from_pretrained(args.export_dir)
        report["tokenizer"] = {"class": type(tokenizer).__name__, "size": len(tokenizer), "model_max_length": tokenizer.model_max_length}
        if len(tokenizer) > model.config.text_config.vocab_size:
            failures.append(f"tokenizer has {len(tokenizer)} tokens, the model's vocab_size is {model.config.text_config.vocab_size}")
    if os.path.exists(os.path.join(args.export_dir, "preprocessor_config.json")):
        proc = CLIPImageProcessor.from_pretrained(args.export_dir)
        crop = dict(proc.crop_size)
        report["preprocessor"] = {"class": type(proc).__name__, "crop_size": crop, "size": dict(proc.size)}
        if crop["height"] != model.config.vision_config.image_size:
            failures.append(f"preprocessor crop {crop} is not the model's image_size {model.config.vision_config.image_size}")

    if args.inputs:
        inputs = load_file(args.inputs)
        expected = load_file(args.expected)
        ids = inputs["input_ids"].long()
        mask = inputs["attention_mask"].long()
        with safe_open(args.inputs, "pt") as f:
            meta = dict(f.metadata() or {})
        beside = os.path.join(os.path.dirname(args.inputs), "fixture.json")
        if "captions" not in meta and os.path.exists(beside):
            with open(beside) as f:
                recorded = json.load(f).get("captions")
            if recorded is not None:
                meta["captions"] = json.dumps(recorded)
        if "captions" in meta:
            if tokenizer is None:
                failures.append("--inputs has captions but the export has no tokenizer")
            else:
                captions = json.loads(meta["captions"])
                enc = tokenizer(captions, padding="max_length", max_length=ids.shape[1], truncation=True, return_tensors="pt")
                same = torch.equal(enc["input_ids"][mask.bool()], ids[mask.bool()]) and torch.equal(enc["attention_mask"], mask)
                report["tokenizer_ids_equal"] = bool(same)
                if not same:
                    failures.append(f"the exported tokenizer encodes the captions differently: {enc['input_ids'][0].tolist()} vs {ids[0].tolist()}")
        with torch.no_grad():
            image = model.get_image_features(pixel_values=inputs["pixel_values"])
            text = model.get_text_features(input_ids=ids, attention_mask=mask)
        # transformers 5 returns a model output here; 4.x the projected tensor.
        image = getattr(image, "pooler_output", image)
        text = getattr(text, "pooler_output", text)
        di = (image - expected["image_embeds"]).abs().max().item()
        dt = (text - expected["text_embeds"]).abs().max().item()
        report["max_abs_diff"] = {"image_embeds": di, "text_embeds": dt}
        report["max_abs"] = {"image_embeds": expected["image_embeds"].abs().max().item(), "text_embeds": expected["text_embeds"].abs().max().item()}
        if not (di <= args.tol and dt <= args.tol):
            failures.append(f"embeddings differ by {di:.3g} (image), {dt:.3g} (text), more than --tol {args.tol}")

    if args.f32:
        ours = load_file(os.path.join(args.export_dir, "model.safetensors"))
        ref = load_file(os.path.join(args.f32, "model.safetensors"))
        mismatched = 0
        for k, v in ours.items():
            if v.dtype == torch.float32:
                continue
            if not torch.equal(ref[k].to(v.dtype).view(torch.int16), v.view(torch.int16)):
                mismatched += 1
        report["dtype_rounding_vs_torch"] = {"tensors": len(ours), "mismatched": mismatched}
        if mismatched:
            failures.append(f"{mismatched} tensors differ from PyTorch's rounding of the F32 export")

    report["ok"] = not failures
    report["failures"] = failures
    print(json.dumps(report))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
