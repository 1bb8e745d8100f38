"""Which layers ``precision="int8"`` can quantise: score deviation from float32 per choice of float layers.

    python benchmarks/int8_layers.py --root DIR [--reference I02] [--float NAMES ...] [--minmax]
        [--calibration N | --self-calibrate] [--json OUT]

On the hard pairs of one reference of a synthesized validation set (``python -m gsn_metric.train synthesize
... --split val``): its pairs of every distortion type at level ``--min-level`` (default 5) and above, plus
Gaussian blur from level 3 (27 pairs for KADID's 25 types and 5 levels), five patches each, the released
default weights (or ``--weights``). Each ``--float`` is a comma-separated list of module names in the branch
left in float (``""``: all int8; the library's default is ``blocks.1,blocks.2``); every choice is quantised as
``gsn_metric.quantize.quantize_int8`` does it (the same calibration pairs) and its pair scores (the mean of the
patch scores) are compared with float32's: mean and largest |Δscore|, and the score of the strongest blur
(where int8 went most wrong). The float parts run in float32 here (no autocast), so the table isolates the
quantisation. ``--self-calibrate`` calibrates each pair on its own patches instead (one quantisation per pair):
the best activation ranges any calibration set could give that pair, which says whether the ranges are to blame.
``--json`` keeps each row as soon as it is done.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from gsn_metric.images import load_image
from gsn_metric.patches import extract_patches
from gsn_metric.quantize import quantize_int8
from gsn_metric.train.datasets import load_dataset
from gsn_metric.weights import load_model

DEFAULT_CHOICES = ["", "stem", "blocks.0", "blocks.1", "blocks.2", "blocks.1,blocks.2",
                   "blocks.2,blocks.1.0,blocks.1.1", "blocks.2,blocks.1.2,blocks.1.3"]


def hard_pairs(root: str, reference: str, min_level: int,
               patch_size: int) -> list[tuple[str, int, torch.Tensor, torch.Tensor]]:
    """(type, level, reference patches, distorted patches) of ``reference``'s pairs at ``min_level`` and above,
    and of its Gaussian blur from level 3."""
    def cut(path: str) -> torch.Tensor:
        return extract_patches(load_image(path)[None], "five", patch_size)[0]

    out, refs = [], {}  # one reference serves every pair: decoded and cut once
    for p in load_dataset("kadid10k", root).pairs:
        ref_name, kind, level = Path(p.dist).stem.split("_")  # e.g. I02_01_05: reference, type, level
        blur = kind == "01"  # KADID's type 1, Gaussian blur
        if ref_name == reference and int(level) >= (min(3, min_level) if blur else min_level):
            if p.ref not in refs:
                refs[p.ref] = cut(p.ref)
            out.append(("blur" if blur else p.dis_type, int(level), refs[p.ref], cut(p.dist)))
    if not any(kind == "blur" for kind, *_ in out):
        raise SystemExit(f"no Gaussian blur pairs of reference {reference!r} under {root}: pass --reference (and "
                         "--min-level) that it has")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="a synthesized KADID-like folder (gsn_metric.train synthesize)")
    ap.add_argument("--reference", default="I02", help="whose pairs (default I02)")
    ap.add_argument("--min-level", type=int, default=5, help="the lowest level of the other types (default 5)")
    ap.add_argument("--weights", help="weight file or released name (default: the released default)")
    ap.add_argument("--float", dest="choices", action="append",
                    help=f"modules left in float, comma-separated (repeatable; default {DEFAULT_CHOICES})")
    ap.add_argument("--minmax", action="store_true", help="min–max activation ranges instead of histogram ones")
    ap.add_argument("--calibration", type=int, default=24, help="calibration pairs (default 24, the library's)")
    ap.add_argument("--self-calibrate", action="store_true",
                    help="calibrate each pair on its own patches (the ranges' best case), not on generated pairs")
    ap.add_argument("--json", type=Path, help="keep the rows here as they are done")
    args = ap.parse_args(argv)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("[]")  # writable now, not after the first hour
    model, info = load_model(args.weights)
    net = model.fold().eval()
    pairs = hard_pairs(args.root, args.reference, args.min_level, info.patch_size)
    blur = max((level, i) for i, (kind, level, _, _) in enumerate(pairs) if kind == "blur")[1]

    def scores(n: torch.nn.Module) -> torch.Tensor:
        with torch.inference_mode():
            return torch.stack([n(r, d).mean() for _, _, r, d in pairs])

    def int8_scores(names: list[str]) -> torch.Tensor:
        if not args.self_calibrate:
            return scores(quantize_int8(net, info.patch_size, float_modules=names, calibration=args.calibration,
                                        minmax=args.minmax))
        out = []
        for _, _, r, d in pairs:  # quantised outside inference mode: FX's prepare copies the net
            q = quantize_int8(net, info.patch_size, float_modules=names, calibration=(r, d), minmax=args.minmax)
            with torch.inference_mode():
                out.append(q(r, d).mean())
        return torch.stack(out)

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net.branch(pairs[0][2])
    # per module of the branch ("blocks.0.1", ...; "" for the whole branch)
    flops = {name.partition(".")[2]: sum(ops.values()) for name, ops in counter.get_flop_counts().items()
             if name.startswith(type(net.branch).__name__)}
    start = time.perf_counter()
    base = scores(net)
    cpu = platform.processor() or platform.machine()
    print(f"{len(pairs)} pairs of {args.reference} under {args.root}; {cpu}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; float32 in {time.perf_counter() - start:.0f} s, blur level "
          f"{pairs[blur][1]} {base[blur]:.3f}\n", flush=True)
    print("| left in float | int8 share of the branch's FLOP | mean \\|Δscore\\| | largest \\|Δscore\\| | "
          f"blur level {pairs[blur][1]} |\n|---|---|---|---|---|", flush=True)
    rows = []
    for choice in args.choices or DEFAULT_CHOICES:
        names = [n for n in choice.split(",") if n]
        s = int8_scores(names)
        d = (s - base).abs()
        share = 1 - sum(flops.get(n, 0) for n in names) / flops[""]
        rows.append({"float": names, "int8_share": share, "mean": float(d.mean()), "max": float(d.max()),
                     "blur": float(s[blur])})
        print(f"| {', '.join(names) or 'nothing (all int8)'} | {share:.0%} | {d.mean():.4f} | {d.max():.3f} | "
              f"{s[blur]:.3f} |", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
