"""GSN's own variants on the same rated pairs: patch modes, flip averaging, precisions; agreement and cost.

    python benchmarks/variants.py --dataset kadid10k --root DIR [--variant SPEC ...] [--json OUT] [--limit N]

Each ``--variant`` is ``GSNScore`` keyword arguments as ``key=value`` joined by commas (``default`` for none),
plus ``flip`` (the mean of the pair's score and its left-right mirror's), e.g. ``patches=grid,stride=48`` or
``precision=bf16``. Every variant scores every pair of the data set (whole images, one pair per call, no
reference reuse) with the released default weights (or ``--weights``); per variant the table gives SRCC, KRCC
and PLCC against the labels (``gsn_metric.train.evaluate``'s), ms per pair (scoring only: images are decoded
beforehand, the same for all), and against the FIRST variant: largest and mean |Δscore| and Spearman between
the two score lists. ``--json`` keeps every variant's scores as soon as it finishes, and a rerun with the same
file skips variants already in it (a long CPU run can be cut and continued). ``--no-cpu-bf16`` runs every
variant as on a CPU without native bfloat16 (int8's float layers in fp32, bf16 refused); its variants are
labelled so in the table and the JSON. ``onnx=fp32`` and ``onnx=int8`` score with ONNX Runtime on the
exported network (``gsn_metric.onnx_export``, the mean of the five patches' scores; needs the ``onnx`` extra).
Needs the ``train`` extra (scipy).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import gsn_metric.precision
from gsn_metric import GSNScore
from gsn_metric.images import load_image
from gsn_metric.patches import extract_patches
from gsn_metric.train.datasets import load_dataset
from gsn_metric.train.evaluate import breakdown, score_change

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a folder of scripts: speed.py's ONNX session
import speed_precision

DEFAULT_VARIANTS = ["default", "flip", "patches=grid", "patches=grid,stride=48", "patches=full"]


def parse_variant(spec: str) -> tuple[dict[str, Any], bool]:
    """``"patches=grid,stride=48,flip"`` → (GSNScore keyword arguments, flip)."""
    kwargs: dict[str, Any] = {}
    flip = False
    for part in filter(None, spec.split(",")):
        if part in ("default", "flip"):
            flip = flip or part == "flip"
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"variant {spec!r}: {part!r} is not key=value, 'flip' or 'default'")
        kwargs[key] = int(value) if value.isdigit() else value
    return kwargs, flip


class OnnxScorer:
    """ONNX Runtime on the exported network, called like GSNScore on one 3×H×W pair: five patches' mean."""

    def __init__(self, weights: str | None, kind: str, folder: Path) -> None:
        if kind not in ("fp32", "int8"):
            raise SystemExit(f"onnx={kind}: use onnx=fp32 or onnx=int8")
        from gsn_metric.weights import load_model

        self.patch_size = load_model(weights)[1].patch_size
        self.session = speed_precision.onnx_session(weights, folder, kind == "int8")

    def __call__(self, ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        r, d = (extract_patches(x[None], "five", self.patch_size)[0] for x in (ref, dist))
        return torch.from_numpy(self.session.run(["score"], {"ref": r.numpy(), "dist": d.numpy()})[0]).mean()


def score_all(metric: GSNScore | OnnxScorer, flip: bool, images: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[float], float]:
    """Every pair's score and the seconds spent scoring."""
    scores, seconds = [], 0.0
    with torch.inference_mode():
        for ref, dist in images:
            start = time.perf_counter()
            s = metric(ref, dist)
            if flip:
                s = (s + metric(ref.flip(-1), dist.flip(-1))) / 2
            seconds += time.perf_counter() - start
            scores.append(float(s))
    return scores, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="kadid10k", help="a data set kind gsn_metric.train reads (default kadid10k)")
    ap.add_argument("--root", required=True, help="its folder (e.g. the output of gsn_metric.train synthesize)")
    ap.add_argument("--labels", help="label file, if not the data set's default")
    ap.add_argument("--weights", help="weight file or released name (default: the released default)")
    ap.add_argument("--variant", action="append", help=f"a variant (repeatable; default {DEFAULT_VARIANTS})")
    ap.add_argument("--limit", type=int, help="only the first N pairs")
    ap.add_argument("--json", type=Path, help="keep each variant's scores here; a rerun skips those already in it")
    ap.add_argument("--no-cpu-bf16", action="store_true",
                    help="as on a CPU without native bfloat16: int8's float layers run in fp32, bf16 is refused")
    args = ap.parse_args(argv)
    asked = args.variant or DEFAULT_VARIANTS
    parsed = [parse_variant(s) for s in asked]
    specs = [s + " (no CPU bf16)" * args.no_cpu_bf16 for s in asked]
    if args.no_cpu_bf16:
        gsn_metric.precision.cpu_has_fast_bf16 = lambda: False  # what precision_context and check_precision ask
    done: dict[str, Any] = {}
    if args.json:
        if args.json.exists():
            done = json.loads(args.json.read_text())
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(done))  # writable now, not after the first hour
    data = load_dataset(args.dataset, args.root, args.labels)
    pairs = data.pairs[: args.limit]
    mos = np.array([p.score for p in pairs])
    types = [p.dis_type for p in pairs]
    print(f"{len(pairs)} pairs of {args.root}; {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads\n", flush=True)
    images = [(load_image(p.ref), load_image(p.dist)) for p in pairs]

    for spec, (kwargs, flip) in zip(specs, parsed):
        if spec in done:
            continue
        if "onnx" in kwargs:
            with tempfile.TemporaryDirectory() as tmp:
                scores, seconds = score_all(OnnxScorer(args.weights, kwargs["onnx"], Path(tmp)), flip, images)
        else:
            scores, seconds = score_all(GSNScore(args.weights, device="cpu", **kwargs), flip, images)
        done[spec] = {"scores": scores, "ms_per_pair": 1e3 * seconds / len(pairs)}
        print(f"{spec}: {done[spec]['ms_per_pair']:.0f} ms/pair", flush=True)
        if args.json:
            args.json.write_text(json.dumps(done))

    first = np.array(done[specs[0]]["scores"])
    header = ["variant", "pairs", "SRCC", "KRCC", "PLCC", "ms / pair", f"max |Δ| vs {specs[0]}", "mean |Δ|",
              "Spearman vs first"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    per_type = {}
    for spec in specs:
        s = np.array(done[spec]["scores"])
        r = breakdown(s, mos, types)
        per_type[spec] = r
        c = score_change(s, first)
        print(f"| {spec} | {len(s)} | {r['all']['srcc']:.4f} | {r['all']['krcc']:.4f} | {r['all']['plcc']:.4f} | "
              f"{done[spec]['ms_per_pair']:.0f} | {c['max_abs']:.4f} | {c['mean_abs']:.4f} | {c['spearman']:.6f} |")
    print("\n| type | " + " | ".join(specs) + " |\n|" + "---|" * (len(specs) + 1))
    for t in sorted(set(types)):
        print(f"| {t} | " + " | ".join(f"{per_type[s][t]['srcc']:.3f}" for s in specs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
