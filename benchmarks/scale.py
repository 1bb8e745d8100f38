"""Scoring at scale, measured: the wall time of a pairs-CSV run with 1 and N processes (torchrun), and whether
memory stays flat over a long ``--out`` run.

    python benchmarks/scale.py wall [--pairs 1000] [--procs 2] [--weights FILE]
    python benchmarks/scale.py rss [--pairs 10000]
    python benchmarks/scale.py all

**wall**: ``--pairs`` pairs of 96×128 images (made here, seeded; 10 distorted images per reference, so
reference reuse applies as in a benchmark's outputs), scored by ``python -m gsn_metric --pairs CSV --out FILE``
in one process (all the CPU's threads) and under ``torchrun --standalone --nproc-per-node N`` (threads split
evenly), same run, the output files compared. Default weights: the 1/8-width network of ``training/`` so that a
CPU run takes seconds per configuration (the ratio, not the absolute time, is the point; ``--weights`` for
others).

**rss**: ``--pairs`` pairs of 32×32 images with a tiny random network (the test architecture: memory use of the
run's machinery, not of the network) scored with ``--out``; the process's resident set size is sampled from
``/proc`` as the file grows, and the table gives it at a few points and the least-squares slope over the second
half of the run, in KiB per 1,000 pairs.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = ROOT / "training" / "gsn-w0125-synthkadid-cpu-3" / "best.safetensors"


def make_pairs(folder: Path, n: int, shape: tuple[int, int], per_ref: int = 10) -> Path:
    """``n`` pairs of seeded images of ``shape`` (H, W) in ``folder``, ``per_ref`` per reference; the CSV."""
    rng = np.random.default_rng(0)
    rows = []
    for r in range(-(-n // per_ref)):
        ref = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        Image.fromarray(ref).save(folder / f"r{r}.png")
        for d in range(min(per_ref, n - r * per_ref)):
            noisy = np.clip(ref + rng.normal(0, 3 * d + 1, ref.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / f"r{r}_{d}.png")
            rows.append(f"r{r}.png,r{r}_{d}.png")
    path = folder / "pairs.csv"
    path.write_text("ref,dist\n" + "\n".join(rows) + "\n")
    return path


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), for the tables; the platform's processor string elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}


def wall(args: argparse.Namespace, tmp: Path) -> None:
    csv_path = make_pairs(tmp, args.pairs, (96, 128))
    cores = os.cpu_count() or 1
    weights = str(args.weights)
    runs = [("1 process", 1, [sys.executable, "-m", "gsn_metric"]),
            (f"torchrun, {args.procs} processes", args.procs,
             [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.procs),
              "-m", "gsn_metric"])]
    rows, outputs = [], []
    for name, procs, launcher in runs:
        out = tmp / f"scores-{procs}.csv"
        t0 = time.perf_counter()
        done = subprocess.run([*launcher, "--pairs", str(csv_path), "--weights", weights, "--device", "cpu",
                               "--out", str(out), "--no-progress"], env=_env(max(1, cores // procs)),
                              capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        rows.append((name, max(1, cores // procs), seconds))
        outputs.append(out.read_text())
    print(f"{args.pairs} pairs of 96×128 images, weights {weights}, {cpu_name()}, "
          f"{cores} cores, torch {torch.__version__} (times include start-up: torch import, weights, processes)")
    print("| run | threads per process | wall s | pairs/s | speed-up |\n|---|---|---|---|---|")
    for name, threads, seconds in rows:
        print(f"| {name} | {threads} | {seconds:.1f} | {args.pairs / seconds:.1f} | {rows[0][2] / seconds:.2f}× |")
    print(f"output files identical: {outputs[0] == outputs[1]}")


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return 0


def rss(args: argparse.Namespace, tmp: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from gsn_metric.model import GSN
    from gsn_metric.train.loop import TINY
    from gsn_metric.weights import save_weights

    torch.manual_seed(0)
    tiny = GSN(TINY).eval()
    weights = tmp / "tiny.safetensors"
    save_weights(tiny, weights, training_data="random (benchmark)", score_name="test", score_range=(1.0, 5.0),
                 patch_size=32)
    csv_path = make_pairs(tmp, args.pairs, (32, 32))
    out = tmp / "scores.csv"
    proc = subprocess.Popen([sys.executable, "-m", "gsn_metric", "--pairs", str(csv_path), "--weights", str(weights),
                             "--device", "cpu", "--out", str(out), "--no-progress"], env=_env(os.cpu_count() or 1),
                            stderr=subprocess.DEVNULL)
    samples = []
    while proc.poll() is None:
        kib, n = _rss_kib(proc.pid), _lines(out)
        if kib is not None and n:
            samples.append((n, kib))
        time.sleep(0.2)
    if proc.returncode != 0 or _lines(out) != args.pairs:
        raise SystemExit(f"the run failed ({proc.returncode}) or wrote {_lines(out)} of {args.pairs} rows")
    late = [(n, k) for n, k in samples if n >= args.pairs // 2]
    slope = np.polyfit([n for n, _ in late], [k for _, k in late], 1)[0] * 1000 if len(late) > 2 else float("nan")
    print(f"{args.pairs} pairs of 32×32 images, tiny random network, --out CSV; {len(samples)} RSS samples")
    print("| pairs written | RSS MiB |\n|---|---|")
    for frac in (0.1, 0.25, 0.5, 0.75, 1.0):
        n, kib = min(samples, key=lambda s: abs(s[0] - frac * args.pairs))
        print(f"| {n} | {kib / 1024:.1f} |")
    print(f"slope over the second half: {slope:.1f} KiB per 1,000 pairs")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("wall", "rss", "all"))
    p.add_argument("--pairs", type=int, default=None, help="default 1000 (wall), 10000 (rss)")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    args = p.parse_args(argv)
    for part in ("wall", "rss") if args.part == "all" else (args.part,):
        with tempfile.TemporaryDirectory() as tmp:
            sub = argparse.Namespace(**{**vars(args), "pairs": args.pairs or (1000 if part == "wall" else 10000)})
            (wall if part == "wall" else rss)(sub, Path(tmp))


if __name__ == "__main__":
    main()
