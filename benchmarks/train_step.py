"""Where a training step's time goes, and which ``fit --speedups`` make it faster: profile and probe, one run.

    python benchmarks/train_step.py [--device cpu|cuda] [--tiny | --width W] [--batch-size B] [--patch-size S]
        [--anchor-weight W] [--profile] [--candidates "" fold-cdc ...] [--seconds T] [--choose FILE]

The step is ``gsn_metric.train.loop.train_step`` (the one ``fit`` runs: forward, the training loss, backward,
gradient clipping, Ranger) on a fixed batch of generated patch pairs, with ``fit``'s autocast (bf16 on CUDA);
``--anchor-weight`` as ``fit``'s (the reference anchor: one more fusion head per pair), so that the probe checks
and times the step the run will train.
Data loading is not in it (``fit``'s DataLoader workers prepare batches in parallel; its pairs/s include it).

``--profile``: one step under ``torch.profiler`` after warm-up steps, its self time grouped into convolutions
(forward and backward; the CDC's second, 1×1 convolution on its own row), BatchNorm, ReLU, the attention's
element-wise work, the optimiser step, host-device copies, and the rest (Python and everything else).

Probe (``--candidates``): for each set of speedups, from the same initial weights and batch, ``--check-steps``
steps compared with the eager steps (the largest relative difference of the losses, and the distance of the
weights from eager's relative to how far eager's steps moved them: both under ``--tolerance``), then pairs/s over ``--seconds`` after ``--warmup`` steps. A candidate that fails
(compile error, mismatch, out of memory, more than ``--candidate-limit`` seconds) is a row that says so and is
never chosen. ``--choose FILE`` writes
the fastest passing candidate's ``--speedups`` value there (empty: eager), for ``benchmarks/gpu_release.sh``.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from gsn_metric.model import GSN
from gsn_metric.train.loop import model_config, train_step, training_autocast
from gsn_metric.train.losses import GSNTrainingLoss
from gsn_metric.train.optim import build_ranger
from gsn_metric.train.speedups import apply_to_model, parse_speedups, wrap_for_training

DEFAULT_CANDIDATES = ["", "fold-cdc", "fold-cdc,foreach", "compile,fold-cdc,foreach"]


def _batch(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b, s = args.batch_size, args.patch_size
    ref = torch.rand(b, 3, s, s, generator=g)
    strength = torch.rand(b, 1, 1, 1, generator=g) * 0.3
    dist = (ref + strength * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    fmt = torch.channels_last
    return (ref.to(device).contiguous(memory_format=fmt), dist.to(device).contiguous(memory_format=fmt),
            (1 - strength.flatten() / 0.3).to(device))


def _setup(args: argparse.Namespace, device: torch.device, speedups: tuple[str, ...]) -> dict[str, Any]:
    """A fresh seeded model with ``speedups``, its optimiser, loss, scaler and autocast (as ``fit`` builds them)."""
    torch.manual_seed(0)
    model = GSN(model_config(args)).to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    apply_to_model(model, speedups)
    optimizer = build_ranger(model.parameters(), lr=1e-4, foreach=True if "foreach" in speedups else None)
    autocast, dtype = training_autocast(device, args.amp)  # fit's: bf16 where the GPU has it, else fp16
    return {"model": model, "net": wrap_for_training(model, speedups), "optimizer": optimizer,
            "criterion": GSNTrainingLoss(anchor_weight=args.anchor_weight), "autocast": autocast,
            "scaler": torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)}


def _step(parts: dict[str, Any], batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """One step; its loss stays on the device (reading it would wait for the GPU every step, which ``fit``
    does only every few steps)."""
    terms = train_step(parts["net"], parts["model"], parts["optimizer"], parts["criterion"], parts["scaler"],
                       parts["autocast"], *batch, lr=1e-4, clip_grad=10.0, anchor=bool(parts["criterion"].anchor_weight))
    return terms["total"]


def _out_of_time(signum: int, frame: Any) -> None:
    raise TimeoutError("over --candidate-limit")


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe(args: argparse.Namespace, device: torch.device) -> tuple[list[list[str]], str]:
    """The probe table's rows and the chosen ``--speedups`` value (see the module docstring)."""
    batch = _batch(args, device)
    reference: dict[str, Any] = {}
    rows, best = [], ("", 0.0)
    previous = signal.signal(signal.SIGALRM, _out_of_time)
    for text in args.candidates:
        name = text or "eager"
        # a compile that hangs costs this, not the lease (setitimer: fractions of a second too, unlike alarm)
        signal.setitimer(signal.ITIMER_REAL, args.candidate_limit)
        try:
            speedups = parse_speedups(text)
            parts = _setup(args, device, speedups)
            start_weights = _flat(parts["model"])
            start = time.perf_counter()
            losses = [float(_step(parts, batch)) for _ in range(args.check_steps)]
            _sync(device)
            first = time.perf_counter() - start
            weights = _flat(parts["model"])
            if not reference:
                reference = {"losses": losses, "weights": weights, "moved": float((weights - start_weights).norm())}
            loss_diff = max(abs(a - b) / max(abs(b), 1e-8) for a, b in zip(losses, reference["losses"]))
            # how far the candidate's weights are from eager's, relative to how far eager's steps moved them
            weight_diff = float((weights - reference["weights"]).norm()) / max(reference["moved"], 1e-12)
            for _ in range(args.warmup):
                _step(parts, batch)
            _sync(device)
            steps, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds or steps == 0:
                _step(parts, batch)
                steps += 1
                if steps % 5 == 0:
                    _sync(device)
            _sync(device)
            rate = steps * args.batch_size / (time.perf_counter() - start)
            ok = max(loss_diff, weight_diff) <= args.tolerance
            rows.append([name, f"{rate:.4g}", f"{loss_diff:.1e}", f"{weight_diff:.1e}", f"{first:.1f}",
                         "pass" if ok else f"MISMATCH (> {args.tolerance:g})"])
            if ok and rate > best[1]:
                best = (text, rate)
        except Exception as err:  # noqa: BLE001 -- a failing candidate costs its row, never the lease
            rows.append([name, "–", "–", "–", "–", f"failed: {type(err).__name__}: {str(err)[:160]}"])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    signal.signal(signal.SIGALRM, previous)
    base = next((float(r[1]) for r in rows if r[0] == "eager" and r[1] != "–"), None)
    for r in rows:
        r.insert(2, f"{float(r[1]) / base:.2f}" if base and r[1] != "–" else "–")
    return rows, best[0]


_GROUPS = [("convolution (3×3), forward + backward", lambda n: "conv" in n),
           ("BatchNorm, forward + backward", lambda n: "batch_norm" in n),
           ("ReLU / threshold", lambda n: "relu" in n or "threshold" in n),
           ("attention and pooling (mean, amax, sigmoid, mul, max_pool)",
            lambda n: any(k in n for k in ("sigmoid", "amax", "max_pool", "mean", "aten::mul"))),
           ("host-device copies", lambda n: "copy_" in n or "memcpy" in n.lower() or "to_copy" in n)]


def _group(event: Any) -> str:
    """The profile row of one op: the optimiser's if torch's "Optimizer.step#..." range encloses it, else by
    name (the CDC's 1×1 convolution by its weight's shape)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer."):
            return "optimiser (RAdam + Lookahead)"
        parent = parent.cpu_parent
    shapes = event.input_shapes or []
    # the weight is the 2nd input of a forward convolution, the 3rd of its backward
    if "conv" in event.name and any(len(sh) == 4 and list(sh[-2:]) == [1, 1] for sh in shapes[1:3]):
        return "CDC second convolution (1×1), forward + backward"
    return next((label for label, match in _GROUPS if match(event.name)), "other ops")


def profile(args: argparse.Namespace, device: torch.device, speedups: tuple[str, ...]) -> list[list[str]]:
    """One step's self time by group (see the module docstring)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    parts, batch = _setup(args, device, speedups), _batch(args, device)
    for _ in range(max(args.warmup, 2)):
        _step(parts, batch)
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with torch_profile(activities=activities, record_shapes=True) as prof:
        _step(parts, batch)
        _sync(device)
    wall = time.perf_counter() - start
    cuda = device.type == "cuda"
    times: dict[str, float] = defaultdict(float)
    for e in prof.events():
        if e.name.startswith(("Optimizer.", "ProfilerStep")):  # ranges, not ops: their ops are counted
            continue
        times[_group(e)] += e.self_device_time_total if cuda else e.self_cpu_time_total
    total = sum(times.values())
    rows = [[k, f"{v / 1e3:.1f}", f"{v / total:.0%}"] for k, v in sorted(times.items(), key=lambda kv: -kv[1])]
    rows.append([f"all ops ({'GPU' if cuda else 'CPU'} self time); step wall time under the profiler",
                 f"{total / 1e3:.1f}; {wall * 1e3:.1f}", "100%"])
    # what CUDA graphs could save is launch overhead: count the launches (on the CPU, the leaf ops that would be)
    launches = sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA) if cuda else \
        sum(1 for e in prof.events() if e.name.startswith("aten::") and not e.cpu_children)
    rows.append([f"{'GPU kernels' if cuda else 'leaf aten ops'} in the step", str(launches), ""])
    return rows


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n**{title}**\n\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="the test-size network (a rehearsal, not a benchmark)")
    ap.add_argument("--width", type=float, default=1.0, help="as fit's --width (1: the paper's network)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--patch-size", type=int, default=192)
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on CUDA")
    ap.add_argument("--anchor-weight", type=float, default=0.0, help="as fit's: the step with the reference anchor")
    ap.add_argument("--profile", action="store_true", help="the profile table (of --profile-speedups)")
    ap.add_argument("--profile-speedups", type=parse_speedups, default=(), help="speedups of the profiled step")
    ap.add_argument("--candidates", nargs="*", default=DEFAULT_CANDIDATES,
                    help="--speedups values to probe ('' = eager, always first); none: no probe")
    ap.add_argument("--check-steps", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=2e-2,
                    help="largest relative loss / weight difference from eager after the check steps")
    ap.add_argument("--candidate-limit", type=float, default=150,
                    help="seconds a candidate may take in all (compile included) before it is abandoned")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15.0, help="timed seconds per candidate")
    ap.add_argument("--choose", type=Path, help="write the fastest passing candidate's --speedups value here")
    ap.add_argument("--json", type=Path, help="also write the tables as JSON")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.choose:
        args.choose.write_text("")  # writable now; eager until a candidate wins
    if "" in args.candidates:  # eager first: the reference of every check
        args.candidates = [""] + [c for c in args.candidates if c != ""]
    elif args.candidates:
        args.candidates = ["", *args.candidates]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"# Training step: {'TINY' if args.tiny else f'width {args.width:g}'} network, batch {args.batch_size} "
          f"of {args.patch_size}² pairs, {device} ({where}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, autocast {training_autocast(device, args.amp)[1] or 'off'}, "
          f"anchor weight {args.anchor_weight:g}")
    result: dict[str, Any] = {}
    if args.profile:
        rows = profile(args, device, args.profile_speedups)
        _table(f"Profile of one step (speedups: {','.join(args.profile_speedups) or 'none'})",
               ["part", "ms", "share"], rows)
        result["profile"] = rows
    if args.candidates:
        rows, chosen = probe(args, device)
        _table(f"Probe: {args.check_steps} checked steps, then {args.seconds:g} s timed after {args.warmup} warm-up",
               ["--speedups", "pairs / s", "× eager", "loss Δ (rel)", "weights Δ / eager's move", "check steps s", "check"],
               rows)
        print(f"\nchosen: --speedups '{chosen}'" + ("" if chosen else " (eager)"))
        result.update(probe=rows, chosen=chosen)
        if args.choose:
            args.choose.write_text(chosen)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
