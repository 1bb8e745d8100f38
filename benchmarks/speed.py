"""GSN speed: latency of one pair, throughput and peak memory by batch size, and peers, all in one run.

    python benchmarks/speed.py [--device cpu|cuda] [--repeats N] [--batch-sizes 1 8 64] [--quick] [--weights W]

Prints markdown tables. The network is the paper's full-size GSN (``GSNConfig()``, five 192×192 patches per
pair) with RANDOM weights: timing does not depend on weight values, so the numbers are speed only, never
scores. The random network is saved with ``save_weights`` and loaded through ``GSNScore`` like real weights.
Inputs are float tensors already in memory (image decoding is not timed). Every time is the median of
``--repeats`` runs after one warm-up run, under ``torch.inference_mode()``, with CUDA synchronised around
each run. Throughput and peak memory are measured in a fresh subprocess per configuration, so that one
configuration's memory peak does not carry over into the next. ``--quick`` runs a tiny network on small
images (a smoke test of this script, meaningless as a benchmark). ``--weights`` times a trained weight file
instead of the random network and, on CUDA, adds how far its bf16 scores are from its fp32 scores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gsn_metric import GSNScore
from gsn_metric.model import GSN, GSNConfig
from gsn_metric.weights import save_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a folder of scripts: its shared peers module
import speed_precision
from peers import PEERS, why_unavailable

FULL = {"config": GSNConfig(), "patch_size": 192, "size": (384, 512)}  # the paper's network on 512×384 pairs
QUICK = {"config": GSNConfig(stem=4, blocks=((6, 8), (6,), (6,)), fusion_channels=4, fusion_size=6),
         "patch_size": 32, "size": (48, 64)}


def timeit(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call; CUDA synchronised around each."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """Prints a markdown table under a bold title."""
    print(f"\n**{title}**\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def make_pairs(n: int, size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(n, 3, *size, generator=g)
    dist = (ref + 0.05 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    return ref.to(device), dist.to(device)


def make_weights(directory: Path, config: GSNConfig, patch_size: int) -> str:
    torch.manual_seed(0)
    path = directory / "gsn-random.safetensors"
    save_weights(GSN(config).eval(), path, training_data="RANDOM WEIGHTS (speed benchmark only)",
                 score_name="none (random weights)", score_range=(0.0, 1.0), patch_size=patch_size)
    return str(path)


def peak_rss_mb() -> float:
    """This process's peak RSS. On Linux ru_maxrss starts at the PARENT's peak after fork + exec, so the
    per-process high-water mark VmHWM is read instead where /proc has it."""
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux (bytes on macOS)


def child(spec: dict) -> dict:
    """One throughput configuration, run in its own process: pairs/s and peak memory."""
    device = torch.device(spec["device"])
    with torch.inference_mode():
        metric = GSNScore(spec["weights"], device=device, batch_size=5 * spec["pairs"], precision="bf16" if spec["amp"] else "fp32")
        ref, dist = make_pairs(spec["pairs"], tuple(spec["size"]), device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before = peak_rss_mb()
        seconds = timeit(lambda: metric(ref, dist), spec["repeats"], device)
        if device.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            peak_mb = peak_rss_mb() - before
    return {"pairs_per_s": spec["pairs"] / seconds, "peak_mb": peak_mb}


def run_child(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (median), after 1 warm-up")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                    help="pairs per call for the throughput table (default 1 8 64 on CUDA, 1 8 on CPU)")
    ap.add_argument("--quick", action="store_true", help="tiny network, small images: a smoke test, not a benchmark")
    ap.add_argument("--weights", help="a trained weight file to time (and, on CUDA, compare bf16 with fp32 on)")
    ap.add_argument("--reuse-pairs", type=int, default=64, help="pairs of the reuse / compile table")
    ap.add_argument("--reuse-repeats", type=int, default=3, help="timed runs of the reuse / compile table")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="also time torch.compile of the folded network (needs a C++ compiler on the CPU)")
    ap.add_argument("--precisions", action=argparse.BooleanOptionalAction, default=True,
                    help="table 6: fp32 / bf16 / int8 / ONNX Runtime (CPU) or padded / graphs / compile (CUDA)")
    ap.add_argument("--precision-pairs", type=int, default=8, help="pairs per call in table 6")
    ap.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                    help="ONNX Runtime rows in table 6 (the onnx extra; exporting takes a minute or two)")
    ap.add_argument("--only-precisions", action="store_true", help="table 6 alone")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: this torch sees no CUDA GPU")
    device, setup = torch.device(args.device), QUICK if args.quick else FULL
    cuda = device.type == "cuda"
    batch_sizes = args.batch_sizes or ([1, 8, 64] if cuda else [1, 8])
    h, w = setup["size"]
    gpu = f", {torch.cuda.get_device_name(device)}" if cuda else ""
    network = "QUICK smoke run: tiny network" if args.quick else \
        ("the network of --weights" if args.weights else "full-size GSNConfig()")
    print(f"# GSN speed ({network})\n")
    print(f"{datetime.date.today()}; {platform.processor() or platform.machine()}; torch {torch.__version__}; "
          f"device {device}{gpu}; torch threads {torch.get_num_threads()}; median of {args.repeats} runs "
          f"after 1 warm-up.\n")
    what = f"weights {args.weights}" if args.weights else \
        "**WEIGHTS ARE RANDOM: these numbers are speed only, not scores.**"
    print(f"{what} One pair = {w}×{h} reference + distorted, five {setup['patch_size']}×{setup['patch_size']} "
          f"patches each.")

    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        weights = args.weights or make_weights(Path(tmp), setup["config"], setup["patch_size"])
        ref, dist = make_pairs(1, setup["size"], device)

        if not args.only_precisions:
            # 1. Latency of one pair, GSN variants.
            variants = [("folded (library default)", {"fold": True}, None),
                        ("folded, contiguous NCHW layout", {"fold": True}, torch.contiguous_format),
                        ("unfolded (CDC + BatchNorm as trained)", {"fold": False}, None)]
            if cuda:
                variants.insert(1, ("folded, amp bf16", {"fold": True, "precision": "bf16"}, None))
            latency = {}
            for name, kwargs, memory_format in variants:
                metric = GSNScore(weights, device=device, batch_size=5, **kwargs)
                if memory_format is not None:  # overrides the library's channels_last, weights and inputs alike
                    metric._layout = memory_format
                    metric.net.to(memory_format=memory_format)
                latency[name] = timeit(lambda m=metric: m(ref, dist), args.repeats, device)
            base = latency["folded (library default)"]
            table(f"1. Latency of one {w}×{h} pair (GSNScore, batch_size=5 patches; library layout: channels_last)",
                  ["GSN variant", "ms / pair", "× folded default"],
                  [[n, f"{t * 1e3:.1f}", f"{t / base:.2f}"] for n, t in latency.items()])

            # 2. Throughput and peak memory, one fresh process per configuration.
            rows = []
            for amp in [False, True] if cuda else [False]:
                for b in batch_sizes:
                    spec = {"weights": weights, "device": str(device), "pairs": b, "amp": amp, "size": [h, w],
                            "repeats": args.repeats}
                    r = run_child(spec)
                    rows.append([b, 5 * b, "on" if amp else "off", f"{r['pairs_per_s']:.3g}", f"{r['peak_mb']:.0f}"])
            mem = "peak allocated MiB (torch.cuda.max_memory_allocated)" if cuda else \
                "peak RSS increase MiB (VmHWM / ru_maxrss, fresh process)"
            table(f"2. Throughput, folded GSN, {w}×{h} pairs (GSNScore batch_size = 5 × pairs: one forward per call)",
                  ["pairs / call", "patches / forward", "amp", "pairs / s", mem], rows)

            # 3. Peers on the same pair, same run.
            rows = [[f"GSN {n}", f"{t * 1e3:.1f}", f"{base / t:.2f}", ""] for n, t in latency.items()]
            for peer in PEERS:
                try:
                    f, note = peer.build(device)
                    t = timeit(lambda f=f: f(ref, dist), args.repeats, device)
                    ratio = f"{base / t:,.0f}" if base / t >= 10 else f"{base / t:.2f}"
                    rows.append([peer.name, f"{t * 1e3:.2f}", ratio, note])
                except Exception as err:  # noqa: BLE001 -- an absent or broken peer is a row that says so, never a silent skip
                    rows.append([peer.name, "–", "–", why_unavailable(err, peer.needs)])
            table(f"3. One {w}×{h} pair: GSN vs peers (ratio = GSN folded time / this metric's time)",
                  ["metric", "ms / pair", "GSN folded / this", "note"], rows)

            # 5. Reference reuse and torch.compile, same run: pairs/s on n pairs sharing one reference.
            n = args.reuse_pairs
            refs, dists = make_pairs(n, setup["size"], device)
            metric = GSNScore(weights, device=device, batch_size=40)
            pairwise = timeit(lambda: metric(refs, dists), args.reuse_repeats, device)  # n different references
            one = refs[:1].expand(n, -1, -1, -1)
            reused = timeit(lambda: metric(one, dists), args.reuse_repeats, device)  # one reference, encoded once
            rows = [[f"pairwise ({n} pairs, {n} references)", f"{n / pairwise:.3g}", "1.00", ""],
                    [f"reference reused (1 reference × {n})", f"{n / reused:.3g}", f"{pairwise / reused:.2f}",
                     f"automatic; {metric.encode_reference(refs[0]).nbytes / 2**20:.0f} MiB of features held"]]
            if args.compile:
                compiled = GSNScore(weights, device=device, batch_size=40)
                compiled.net = torch.compile(compiled.net)
                start = time.perf_counter()
                compiled(refs[:8], dists[:8])
                first = time.perf_counter() - start
                t = timeit(lambda: compiled(refs, dists), args.reuse_repeats, device)
                diff = ((compiled(refs, dists) - metric(refs, dists)).abs() / metric(refs, dists).abs()).max()
                rows.append([f"torch.compile, pairwise ({n} pairs)", f"{n / t:.3g}", f"{pairwise / t:.2f}",
                             f"first call {first:.0f} s (compile); max relative score difference {diff:.1e}"])
            table(f"5. {n} pairs of {w}×{h}: pairwise, reference reused, compiled (GSNScore batch_size=40; "
                  f"median of {args.reuse_repeats})", ["mode", "pairs / s", "× pairwise", "note"], rows)

        if args.precisions:
            n = args.precision_pairs
            if cuda:
                table(f"6. Precisions and GPU variants, {n} pairs of {w}×{h} per call (max |Δ| against fp32 "
                      "unpadded GSNScore on the same pairs)", ["variant", "pairs / s", "max |Δscore|", "note"],
                      speed_precision.cuda_rows(weights, setup, timeit, make_pairs, args.repeats, n))
            else:
                gflop, rows = speed_precision.cpu_rows(weights, setup, timeit, make_pairs, args.repeats, n,
                                                       args.onnx)
                table(f"6. Precisions on this CPU: one {w}×{h} pair ({gflop:.0f} GFLOP, five patches) and {n} "
                      "pairs per call", ["GSN", "ms / pair", f"pairs / s ({n} pairs)", "pairs / s, reference reused",
                                         "× fp32 (one pair)", "of the measured matmul peak (GFLOP/s)", "note"], rows)

        if cuda and args.weights:
            refs, dists = make_pairs(64, setup["size"], device)
            dists = (refs + torch.linspace(0, 0.3, 64, device=device).view(-1, 1, 1, 1) * (dists - refs)).clamp(0, 1)
            fp32, bf16 = (GSNScore(weights, device=device, precision=p)(refs, dists).double().cpu() for p in ("fp32", "bf16"))
            lo, hi = GSNScore(weights, device=device).info.score_range
            dev = (bf16 - fp32).abs()
            rank = torch.corrcoef(torch.stack([fp32.argsort().argsort().double(), bf16.argsort().argsort().double()]))
            table("4. bf16 (precision='bf16') against fp32 scores of the same 64 pairs (noise of 64 strengths)",
                  ["max |bf16 − fp32|", "mean |bf16 − fp32|", "max, % of the score range", "rank correlation"],
                  [[f"{dev.max():.4g}", f"{dev.mean():.4g}", f"{100 * dev.max() / (hi - lo):.3f}",
                    f"{rank[0, 1]:.6f}"]])


if __name__ == "__main__":
    main()
