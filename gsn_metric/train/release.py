"""``python -m gsn_metric.train release``: rated (or synthetic) pairs in, a shippable weight file out, resumably.

Three stages, each done by the module that owns it:

1. **train** (``loop``): ``fit`` with every one of its flags, on a seeded split of validation references
   (recorded in the output). ``--time-limit SECONDS`` stops at a step boundary with a checkpoint written;
   the same command with ``--resume`` continues, and the pieces give the uncut run's weights bit for bit.
   ``--init NAME|PATH`` warm-starts from released weights of the same architecture (fresh optimiser).
2. **measure** (``evaluate``, ``peers``): the exported file, the ``--init`` weights if any, and the classic
   peers (PSNR, SSIM, MS-SSIM, GMSD) on the same validation pairs, five patches each, one pass over the pairs.
3. **install** (``weights``): ``WEIGHTS_DIR/NAME.safetensors`` and its manifest entry (sha256, architecture,
   data, pairs seen, steps, hardware, wall time, commit, and every measured SRCC / KRCC / PLCC), made the
   default with ``--default``. ``pairs_seen``, ``steps`` and ``train_seconds`` count this run; ``pieces`` lists
   every run the weights come from through ``--init`` (each earlier one with the sha256 it ended at) and
   ``*_total`` adds them up; ``score_change`` says how far the validation scores moved from the ``--init``
   weights' and the replaced default's (mean and largest |Δ|, Spearman old vs new). Only when the new weights
   beat every ``--must-beat`` peer's validation SRCC, the ``--init`` weights', and with ``--default`` the
   current default's, on those pairs: otherwise nothing is installed and the exit status is 1.

``OUT/release.json`` keeps the measurements either way.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..weights import _default_file, load_model, resolve, save_weights, sha256_file
from . import loop
from .datasets import open_dataset
from .evaluate import breakdown, predict, score_change
from .outputs import check_writable_dir
from .peers import CLASSIC, PeerModel

__all__ = ["add_arguments", "main"]

RELEASE_RECORD = "release.json"
_PIECE = ("pairs_seen", "steps", "train_seconds", "hardware")  # what one training run records of itself


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``fit``'s flags plus the release's own."""
    loop.add_arguments(parser)
    g = parser.add_argument_group("release")
    g.add_argument("--name", required=True,
                   help="name of the released weights (file NAME.safetensors, GSNScore(weights=NAME)); say what it "
                        "is, e.g. gsn-w0125-synthkadid-cpu")
    g.add_argument("--weights-dir", default="weights",
                   help="folder of released weights and their manifest.json (the repository's weights/)")
    g.add_argument("--default", action="store_true", help="make the new weights the manifest's default")
    g.add_argument("--peers", default=",".join(CLASSIC),
                   help=f"classic metrics measured beside it on the validation pairs ({', '.join(CLASSIC)})")
    g.add_argument("--must-beat", default="MS-SSIM",
                   help="comma-separated peers whose validation SRCC the new weights must exceed to be installed "
                        "('': none); the --init weights, when given, must be beaten too, and with --default the "
                        "current default of --weights-dir")


def _names(text: str, flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CLASSIC]
    if unknown:
        raise ValueError(f"{flag}: unknown peer(s) {unknown}; choose from {', '.join(CLASSIC)}")
    return names


def _finished(ckpt: dict[str, Any], args: argparse.Namespace) -> bool:
    """Whether the checkpoint is the end of the planned run (all epochs, or --max-steps reached)."""
    if args.max_steps is not None and ckpt["step"] >= args.max_steps:
        return True
    return ckpt["epoch"] >= args.epochs and not ckpt.get("epoch_samples")


def _hardware(device: str) -> str:
    if torch.device(device).type == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def _commit() -> str | None:
    """The source's git commit (``+dirty`` when it has uncommitted changes), or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def _lineage(init: str | None, this: dict[str, Any]) -> dict[str, Any]:
    """``pieces``: the training runs behind the weights, oldest first, ending with ``this`` run, and their
    ``*_total``s (None where an earlier run's number is unknown: an ``--init`` file without a manifest entry)."""
    pieces: list[dict[str, Any]] = []
    if init:
        path, entry, _ = resolve(init)
        entry = entry or {}
        pieces = [dict(p) for p in entry.get("pieces") or [{k: entry.get(k) for k in _PIECE}]]
        pieces[-1]["sha256"] = entry.get("sha256") or sha256_file(path)
    pieces.append({k: this[k] for k in _PIECE})
    totals = {f"{k}_total": None if any(p.get(k) is None for p in pieces) else round(sum(p[k] for p in pieces), 1)
              for k in ("pairs_seen", "steps", "train_seconds")}
    return {"pieces": pieces, **totals}


def _rivals(args: argparse.Namespace, weights_dir: Path) -> dict[str, str]:
    """The GSN weights the new ones must beat, by row name: the --init weights, and with --default the current
    default of ``weights_dir`` (once, when it is the --init file itself)."""
    rivals = {f"init ({args.init})": args.init} if args.init else {}
    current = _default_file(weights_dir) if args.default else None
    if current is not None and current.is_file() and not (
            args.init and sha256_file(resolve(args.init)[0]) == sha256_file(current)):
        rivals[f"default ({current.stem})"] = str(current)
    return rivals


def _measure(args: argparse.Namespace, export: Path, peers: list[str],
             rivals: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Correlations (overall and per type) of the export, the ``rivals`` weights and the peers on the validation
    pairs, a description of those pairs, and how far the export's scores moved from each rival's."""
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    model, _ = load_model(export, device=device)
    models: dict[str, nn.Module] = {"GSN": model.fold()}
    for name, spec in rivals.items():
        models[name] = load_model(spec, device=device)[0].fold()
    for name in peers:
        models[name] = PeerModel(*CLASSIC[name])
    val_set = open_dataset(args, "val", train=False)
    pred, mos, types = predict(list(models.values()), val_set, batch_size=5 * args.batch_size,
                               device=device, num_workers=args.workers)
    results = {name: breakdown(pred[:, i], mos, types) for i, name in enumerate(models)}
    changes = {name: score_change(pred[:, 0], pred[:, 1 + i]) for i, name in enumerate(rivals)}
    refs = getattr(val_set, "references", None)
    validation = {"pairs": len(val_set), "patches": f"five {args.patch_size}x{args.patch_size} (4 corners + centre)",
                  "seed": args.seed, "val_fraction": args.val_fraction, "data": repr(val_set)}
    if refs is not None:
        validation["references"] = [Path(r).name for r in refs]
    return results, validation, changes


def _table(results: dict[str, Any]) -> str:
    lines = ["| metric | pairs | SRCC | KRCC | PLCC |", "|---|---|---|---|---|"]
    for name, res in results.items():
        r = res["all"]
        lines.append(f"| {name} | {r['n']} | {r['srcc']:.4f} | {r['krcc']:.4f} | {r['plcc']:.4f} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Train, measure, install (see the module docstring); 0 on success or a clean ``--time-limit`` stop, 1 when
    the new weights do not beat what they must, 2 on a usage error."""
    try:
        peers = _names(args.peers, "--peers")
        must_beat = _names(args.must_beat, "--must-beat")
        if missing := [n for n in must_beat if n not in peers]:
            raise ValueError(f"--must-beat {','.join(missing)} is not among --peers {args.peers}")
        if "MS-SSIM" in peers and (args.patch_size or 0) <= 160:
            raise ValueError(f"MS-SSIM's five scales need patches larger than 160 px (--patch-size "
                             f"{args.patch_size}): drop it from --peers and --must-beat")
        if args.val_fraction <= 0:
            raise ValueError("release measures on held-out references: --val-fraction must be > 0")
        weights_dir = Path(args.weights_dir)
        check_writable_dir(weights_dir, "--weights-dir")  # before training, not after it
        _default_file(weights_dir)  # a broken manifest there, too
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    out = Path(args.out)
    started = out / "release-start.json"  # the code the first piece trained with, kept across --resume pieces
    if not started.exists() or not (out / loop.CHECKPOINT).exists():
        out.mkdir(parents=True, exist_ok=True)
        started.write_text(json.dumps({"commit": _commit()}) + "\n")
    loop.main(args)
    ckpt = loop.load_checkpoint(out / loop.CHECKPOINT)
    if not _finished(ckpt, args):
        print(f"release: training not finished ({ckpt['step']} steps); relaunch the same command with --resume "
              f"to continue, then measure and install")
        return 0
    export = out / loop.EXPORT
    rivals = _rivals(args, weights_dir)
    results, validation, changes = _measure(args, export, peers, rivals)
    print(f"validation: {validation['pairs']} pairs of {validation.get('references', '?')}\n{_table(results)}")
    for name, c in changes.items():
        print(f"scores against {name}: mean |Δ| {c['mean_abs']:.4f}, largest {c['max_abs']:.4f}, "
              f"Spearman {c['spearman']:.4f}")

    ours = results["GSN"]["all"]["srcc"]
    beaten_by = [n for n in must_beat + list(rivals) if not ours > results[n]["all"]["srcc"]]
    history = ckpt["history"]
    details = {
        "architecture": json.loads(ckpt["architecture"]),
        "width": None if args.tiny else args.width,
        "pairs_seen": ckpt["step"] * args.batch_size,
        "steps": ckpt["step"],
        "hardware": _hardware(args.device),
        "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "commit": json.loads(started.read_text())["commit"],
        "recipe": {k: v for k, v in loop._cli_flags(args).items()
                   if k in {"dataset", "epochs", "epoch_length", "batch_size", "lr", "lr_schedule", "warmup_steps",
                            "weight_decay", "alpha", "beta", "mse_weight", "patch_size", "seed", "init", "draw_offset",
                            "continuous_levels", "type_weights", "rank_loss", "anchor_weight", "adversarial_weight",
                            "adversarial_eps", "adversarial_steps"}},
        "validation": validation,
        "score_change": changes,
    }
    details.update(_lineage(args.init, details))
    summary = {name: {k: res["all"][k] for k in ("n", "srcc", "krcc", "plcc")} for name, res in results.items()}
    (out / RELEASE_RECORD).write_text(json.dumps({"name": args.name, "installed": not beaten_by, **details,
                                                  "results": results}, indent=1, default=str) + "\n")
    if beaten_by:
        rival_srcc = ", ".join(f"{n} {results[n]['all']['srcc']:.4f}" for n in beaten_by)
        print(f"release: not installed: validation SRCC {ours:.4f} does not beat {rival_srcc}; see "
              f"{out / RELEASE_RECORD}")
        return 1
    model, info = load_model(export)
    target = weights_dir / f"{args.name}.safetensors"
    digest = save_weights(model, target, training_data=info.training_data, score_name=info.score_name,
                          score_range=info.score_range, patch_size=info.patch_size, name=args.name,
                          results={"validation": summary}, details=details, default=args.default)
    print(f"release: {target} (sha256 {digest}) installed" + (" as the default" if args.default else ""))
    return 0
