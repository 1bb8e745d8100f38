"""Agreement with human scores: GSN weight files and peer metrics on the same rated pairs, in one table.

    python benchmarks/quality.py --dataset NAME [data flags] [--weights A.safetensors ...] [--peers ...]
        [--as-loss] [--split val --val-fraction F --seed S]

Any data set ``python -m gsn_metric.train evaluate`` reads (KADID-10k, PIPAL, TID2013, CSIQ, LIVE, a CSV, or
synthetic KADID pairs; same data flags). Needs the ``train`` extra (scipy) and, for the peers, the ``bench``
extra and benchmarks/README.md's torchvision environment.

Protocol: every metric sees the same pairs cut into the same five ``--patch-size`` patches (the paper's
corners + centre) and is the mean over them, so the rows differ by the metric, not by the protocol. Peers rated
lower = better (GMSD, LPIPS, DISTS) are negated, so every correlation is positive for a metric that agrees with
people. Correlations are those of ``gsn_metric.train.evaluate`` (SRCC, KRCC, PLCC after the 4-parameter
logistic fit, main = SRCC + PLCC). LPIPS and DISTS built without their pretrained backbones (offline) are not
the metric and are refused. ``--as-loss`` adds each weight file's ``GSNLoss`` (the anchored default, negated):
how well the training loss itself agrees with people when used as a metric.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

import gsn_metric
from gsn_metric.train.datasets import add_dataset_arguments, open_dataset
from gsn_metric.train.evaluate import breakdown, predict, write_json
from gsn_metric.train.peers import PeerModel
from gsn_metric.weights import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a folder of scripts: its shared peers module
from peers import PEERS, RANDOM_BACKBONE, Peer, why_unavailable


def _peer_model(peer: Peer, device: torch.device) -> tuple[PeerModel, str]:
    """A peer as ``predict`` wants a model (higher = better), and its build note."""
    f, note = peer.build(device)
    return PeerModel(f, peer.higher_is_better), note


def _row(name: str, results: dict, note: str = "") -> list[str]:
    r = results["all"]
    return [name, str(r["n"]), *(f"{r[k]:.4f}" for k in ("srcc", "krcc", "plcc", "main")), note]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(ap)
    ap.set_defaults(val_fraction=0.0)  # score every pair: nothing is being trained here
    ap.add_argument("--split", choices=("all", "val"), default="all",
                    help="'val' with --val-fraction F --seed S: the pairs a training run held out (as evaluate)")
    ap.add_argument("--as-loss", action="store_true",
                    help="also rate with each --weights file's GSNLoss (anchored, negated): the loss as a metric")
    ap.add_argument("--weights", nargs="*", default=[], help="GSN weight files (or released names) to compare")
    ap.add_argument("--peers", nargs="*", default=[p.name.split(" ")[0] for p in PEERS],
                    help="peer metrics by first word of their name (default: all)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=40, help="patches per forward pass")
    ap.add_argument("--per-type", action="store_true", help="also print each metric's per-distortion-type SRCC")
    ap.add_argument("--json", help="write every metric's overall and per-type correlations to this JSON file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dataset = open_dataset(args, split=args.split, train=False)
    print(f"data: {dataset!r}; {len(dataset)} pairs, five {args.patch_size}² patches each\n")

    models: list[tuple[str, nn.Module | None, str]] = []
    for w in args.weights:
        model, info = load_model(w, device=device)
        models.append((f"GSN {Path(str(info.path)).name}", model.fold(), f"trained on {info.training_data}"))
        if args.as_loss:  # each patch is one GSNLoss image (a patch-sized image is one patch)
            loss = gsn_metric.GSNLoss(w, device=device, reduction="none")
            models.append((f"GSNLoss {Path(str(info.path)).name} (anchored, negated)",
                           PeerModel(lambda r, d, loss=loss: loss(d, r), higher_is_better=False),
                           "the training loss as a metric"))
    wanted = {name.lower() for name in args.peers}
    for peer in (p for p in PEERS if p.name.split(" ")[0].lower() in wanted):
        try:
            m, note = _peer_model(peer, device)
            models.append((peer.name, m, "") if note != RANDOM_BACKBONE else
                          (peer.name, None, "pretrained backbone not available (offline): not the metric"))
        except Exception as err:  # noqa: BLE001 -- an absent peer is a row that says so, never a silent skip
            models.append((peer.name, None, why_unavailable(err, peer.needs)))

    rows, everything = [], {}
    for name, model, note in models:
        if model is None:
            rows.append([name, "–", "–", "–", "–", "–", note])
            continue
        pred, mos, types = predict(model, dataset, batch_size=args.batch_size, device=device)
        everything[name] = breakdown(pred, mos, types)
        rows.append(_row(name, everything[name], note))
    header = ["metric", "pairs", "SRCC", "KRCC", "PLCC", "SRCC + PLCC", "note"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    if args.per_type and everything:
        types = [t for t in next(iter(everything.values())) if t != "all"]
        print("\n| type | " + " | ".join(everything) + " |\n|" + "---|" * (len(everything) + 1))
        for t in types:
            print(f"| {t} | " + " | ".join(f"{res[t]['srcc']:.3f}" for res in everything.values()) + " |")
    if args.json:
        write_json(everything, args.json, metadata={"dataset": args.dataset, "root": args.root,
                                                    "labels": args.labels, "pristine": args.pristine,
                                                    "patch_size": args.patch_size, "pairs": len(dataset)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
