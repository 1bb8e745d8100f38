"""Agreement of predicted scores with human scores: SRCC, KRCC, PLCC after the logistic fit, main = SRCC + PLCC.

``python -m gsn_metric.train evaluate --dataset NAME --root DIR --weights FILE [--csv OUT] [--json OUT]`` scores
every pair of a rated data set (or, with ``--split val --val-fraction F --seed S``, a training run's held-out
references) with the five fixed patches, prints the correlations overall and per distortion type, and writes
them as CSV / JSON.

PLCC follows VQEG (2000): the predictions are first mapped to the MOS scale by the monotone 4-parameter
logistic ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` fitted by least squares (``curve_fit``,
Levenberg-Marquardt), and PLCC is Pearson's r between ``f(pred)`` and MOS. Details:

- The fit runs on standardised predictions ``(x - mean) / std`` (the same family of curves, better
  conditioned whatever the score scale) from ``b1 = max MOS, b2 = min MOS, b3 = 0, b4 = 1``, with b1 and
  b2 swapped when the predictions fall as MOS rises.
- f may come out decreasing (a metric where higher = worse); PLCC then takes that sign, so an inverted metric
  gets a negative PLCC just as it gets a negative SRCC, and ``main = SRCC + PLCC`` does not mix directions.
- The fit needs at least 5 values (4 parameters). If there are fewer, or ``curve_fit`` does not converge in
  ``maxfev`` evaluations, or gives non-finite or constant values, PLCC is the linear Pearson r and the
  result's ``"fit"`` says ``"linear (<why>)"`` instead of ``"logistic"``. ``"plcc_linear"`` is always given.
- With fewer than 2 values or constant predictions or MOS every correlation is NaN (``"fit": "none (...)"``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import optimize, special, stats
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "add_arguments",
    "breakdown",
    "correlations",
    "format_table",
    "logistic4",
    "main",
    "predict",
    "score_change",
    "write_csv",
    "write_json",
    "write_scores",
]

FIT_MAXFEV = 10_000
COLUMNS = ("n", "srcc", "krcc", "plcc", "plcc_linear", "main", "fit")


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG's 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` (overflow-free via expit)."""
    return (b1 - b2) * special.expit((x - b3) / (abs(b4) + 1e-12)) + b2


def _fit_logistic(pred: np.ndarray, mos: np.ndarray, linear: float) -> tuple[float, str]:
    """``(PLCC after the logistic fit, "logistic")``, or ``(linear PLCC, "linear (<why>)")`` if it fails."""
    if pred.size < 5:
        return linear, "linear (fewer than 5 values for a 4-parameter fit)"
    z = (pred - pred.mean()) / pred.std()
    hi, lo = float(mos.max()), float(mos.min())
    p0 = [hi, lo, 0.0, 1.0] if linear >= 0 else [lo, hi, 0.0, 1.0]
    with warnings.catch_warnings():
        # OptimizeWarning: the covariance is not needed; overflow inside expit's argument is harmless.
        warnings.simplefilter("ignore")
        try:
            params, _ = optimize.curve_fit(logistic4, z, mos, p0=p0, maxfev=FIT_MAXFEV)
        except (RuntimeError, ValueError) as err:  # maxfev reached / bad input
            return linear, f"linear (logistic fit failed: {err})"
    fitted = logistic4(z, *params)
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(fitted))) or np.ptp(fitted) == 0:
        return linear, "linear (logistic fit gave non-finite or constant values)"
    direction = 1.0 if params[0] >= params[1] else -1.0
    return direction * float(stats.pearsonr(fitted, mos)[0]), "logistic"


def correlations(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Agreement of N predictions with N human scores (both higher = better).

    Returns ``{"n": int, "srcc", "krcc" (tau-b), "plcc" (after the logistic fit), "plcc_linear",
    "main" (= srcc + plcc): float, "fit": "logistic" | "linear (<why>)" | "none (<why>)"}``.
    Correlations lie in [-1, 1] (NaN when undefined, see the module docstring).
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    mos = np.asarray(mos, dtype=np.float64).reshape(-1)
    if pred.shape != mos.shape:
        raise ValueError(f"pred and mos differ in length: {pred.size} and {mos.size}")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(mos))):
        raise ValueError("pred and mos must be finite")
    n = int(pred.size)
    if n < 2 or np.ptp(pred) == 0 or np.ptp(mos) == 0:
        nan = math.nan
        return {"n": n, "srcc": nan, "krcc": nan, "plcc": nan, "plcc_linear": nan, "main": nan,
                "fit": "none (fewer than 2 values, or constant predictions or scores)"}
    srcc = float(stats.spearmanr(pred, mos)[0])
    krcc = float(stats.kendalltau(pred, mos)[0])
    linear = float(stats.pearsonr(pred, mos)[0])
    plcc, fit = _fit_logistic(pred, mos, linear)
    return {"n": n, "srcc": srcc, "krcc": krcc, "plcc": plcc, "plcc_linear": linear, "main": srcc + plcc,
            "fit": fit}


def score_change(new: Sequence[float] | np.ndarray, old: Sequence[float] | np.ndarray) -> dict[str, float]:
    """How far N scores moved from N others of the same pairs (new weights against old ones, a variant against
    the default): ``{"mean_abs", "max_abs": |new − old|, "spearman": the two lists' rank correlation}``."""
    new, old = np.asarray(new, dtype=np.float64), np.asarray(old, dtype=np.float64)
    delta = np.abs(new - old)
    same = bool(np.array_equal(new, old))  # identical lists rank alike even when constant, where spearmanr gives NaN
    return {"mean_abs": float(delta.mean()), "max_abs": float(delta.max()),
            "spearman": 1.0 if same else float(stats.spearmanr(new, old)[0])}


def breakdown(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray,
              types: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{"all": correlations(...), type: correlations(of that type's pairs), ...}``, types sorted."""
    pred, mos, types_arr = np.asarray(pred), np.asarray(mos), np.asarray(types, dtype=object)
    if not pred.shape[0] == mos.shape[0] == types_arr.shape[0]:
        raise ValueError(f"pred, mos and types differ in length: {len(pred)}, {len(mos)}, {len(types_arr)}")
    results = {"all": correlations(pred, mos)}
    for name in sorted(set(types)):
        mask = types_arr == name
        results[name] = correlations(pred[mask], mos[mask])
    return results


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table, one row per group (e.g. the output of :func:`breakdown`)."""
    header = ["group", "n", "SRCC", "KRCC", "PLCC", "PLCC lin", "main", "fit"]
    rows = [[str(group), str(r["n"])] + [f"{r[k]:.4f}" for k in ("srcc", "krcc", "plcc", "plcc_linear", "main")]
            + [r["fit"]] for group, r in results.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # text columns left-aligned, numbers right-aligned; the free-text fit column is not padded
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells[:-1], widths))]
        return "  ".join([*padded, cells[-1]])

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def write_csv(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> None:
    """One row per group with columns ``group, n, srcc, krcc, plcc, plcc_linear, main, fit``."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["group", *COLUMNS])
        for group, r in results.items():
            writer.writerow([group, *(r[k] for k in COLUMNS)])


def _json_safe(value: Any) -> Any:
    """NaN/inf become null (strict JSON has no NaN); containers are walked; other objects become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def write_json(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, *,
               metadata: Mapping[str, Any] | None = None) -> None:
    """``{"metadata": {...}, "results": {group: {...}}}``, strict JSON (undefined correlations are null)."""
    with open(path, "w") as f:
        json.dump(_json_safe({"metadata": dict(metadata or {}), "results": results}), f, indent=2)
        f.write("\n")


def predict(model: nn.Module | Sequence[nn.Module], dataset: Dataset, *, batch_size: int = 64, device: str | torch.device = "cpu",
            num_workers: int = 0, progress: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Score every pair of ``dataset`` as the mean of its patches' scores.

    Args:
        model: ``model(ref, dist)`` maps two P×3×S×S tensors to P scores (a :class:`gsn_metric.model.GSN`),
            already on ``device``; it is put in eval mode and its previous mode restored afterwards. A list of
            M models scores every pair with each (the pairs are loaded, or synthesised, once).
        dataset: items ``{"ref", "dist": P×3×S×S (or 3×S×S, one patch) float tensors in [0, 1],
            "score": float scalar tensor (higher = better), "dis_type": str}``; P = 5 for the paper's patches.
        batch_size: patches per forward call (bounds memory); pairs are loaded about ``batch_size // 5``
            at a time.
        device: where the patches are sent.
        num_workers, progress: DataLoader workers; a tqdm bar over the batches.

    Returns:
        ``(pred, mos, types)``: (N,) float64 predictions ((N, M) for a list of models) and human scores, and N
        distortion types, in dataset order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    loader: Any = DataLoader(dataset, batch_size=max(1, batch_size // 5), shuffle=False, num_workers=num_workers,
                             pin_memory=device.type == "cuda")
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc="scoring", unit="batch", leave=False, disable=None)  # None: off when not a TTY
    preds: list[torch.Tensor] = []
    scores: list[torch.Tensor] = []
    types: list[str] = []
    models = [model] if isinstance(model, nn.Module) else list(model)
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.inference_mode():
            for batch in loader:
                ref, dist = batch["ref"], batch["dist"]
                if ref.dim() == 4:  # one patch per pair
                    ref, dist = ref.unsqueeze(1), dist.unsqueeze(1)
                pairs, patches = ref.shape[:2]
                chunks = list(zip(ref.flatten(0, 1).split(batch_size), dist.flatten(0, 1).split(batch_size)))
                flat = [torch.cat([m(r.to(device, non_blocking=True), d.to(device, non_blocking=True)).float().cpu()
                                   for r, d in chunks]) for m in models]
                preds.append(torch.stack(flat, dim=1).reshape(pairs, patches, len(models)).mean(dim=1))
                scores.append(batch["score"].reshape(-1))
                types.extend(batch["dis_type"])
    finally:
        for m, mode in zip(models, was_training):
            m.train(mode)
    if not preds:
        raise ValueError("the dataset is empty")
    pred = torch.cat(preds).double()
    return (pred.squeeze(1) if isinstance(model, nn.Module) else pred).numpy(), torch.cat(scores).double().numpy(), \
        list(types)


def write_scores(dataset: Dataset, pred: np.ndarray, mos: np.ndarray, types: Sequence[str],
                 path: str | os.PathLike) -> None:
    """One CSV row per pair, in dataset order: ``pair, ref, dist, dis_type, score, prediction`` (human score and
    prediction both higher = better; ref/dist the files where the data set has them, for significance tests
    and error analysis)."""
    files = getattr(dataset, "pairs", None)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["pair", "ref", "dist", "dis_type", "score", "prediction"])
        for i, (p, m, t) in enumerate(zip(pred, mos, types)):
            ref, dist = (str(files[i].ref), str(files[i].dist)) if files is not None else ("", "")
            writer.writerow([i, ref, dist, t, f"{m:.6g}", f"{p:.6g}"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m gsn_metric.train evaluate``."""
    from .datasets import add_dataset_arguments

    add_dataset_arguments(parser, training=False)
    parser.add_argument("--weights", required=True, help="weight file (.safetensors) or registered name")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device to run the network on")
    parser.add_argument("--batch-size", type=int, default=64, help="patches per forward pass")
    parser.add_argument("--num-workers", "--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="image-loading worker processes")
    parser.add_argument("--csv", help="write the correlations table to this CSV file")
    parser.add_argument("--json", help="write the correlations (and what was evaluated) to this JSON file")
    parser.add_argument("--scores", help="write every pair's prediction to this CSV file (columns pair, ref, dist, "
                                         "dis_type, score, prediction; ref and dist empty for synthetic pairs)")


def main(args: argparse.Namespace) -> int:
    """Run the evaluation the parsed flags describe; 0 on success, 2 on a user error (message on stderr)."""
    from ..weights import load_model
    from .datasets import open_dataset
    from .outputs import check_writable_file

    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was asked for, but CUDA is not available; use --device cpu", file=sys.stderr)
        return 2
    try:
        for flag in ("csv", "json", "scores"):  # now, not after scoring everything
            check_writable_file(getattr(args, flag), f"--{flag}")
        model, info = load_model(args.weights, device=args.device)
        if args.patch_size is None:
            args.patch_size = info.patch_size
        dataset = open_dataset(args, split=args.split, train=False)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Folding CDC + BatchNorm into plain convs gives the same scores about twice as fast.
    pred, mos, types = predict(model.fold(), dataset, batch_size=args.batch_size, device=args.device,
                               num_workers=args.num_workers, progress=True)
    results = breakdown(pred, mos, types)
    print(f"weights: {info.path} (trained on {info.training_data}, scores {info.score_name})")
    print(f"data:    {dataset!r}")
    print(format_table(results))
    metadata = {"weights": str(info.path), "weights_sha256": info.sha256, "training_data": info.training_data,
                "dataset": args.dataset, "root": args.root, "labels": args.labels, "split": args.split,
                "patch_size": args.patch_size,
                "pairs": len(pred), "device": str(args.device)}
    if args.csv:
        write_csv(results, args.csv)
    if args.json:
        write_json(results, args.json, metadata=metadata)
    if args.scores:
        write_scores(dataset, pred, mos, types, args.scores)
    return 0
