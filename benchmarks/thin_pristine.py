"""Make a GPU call's carried folder fit: leave training photographs behind, never a validation one.

    python benchmarks/thin_pristine.py GPU_DIR --val-fraction 0.05 --room BYTES

``GPU_DIR`` is what ``benchmarks/gpu_release.sh prepare`` fills: ``pristine/`` (the photographs),
``pristine-list.txt`` (every photograph's name) and ``KADID-10k.csv``. While the files under ``GPU_DIR`` add up
to more than ``--room`` bytes, training photographs of the split that ``--val-fraction`` and seed 0 make (the
lease's) are deleted from ``pristine/`` in a seeded order; at least one stays. Because the stages pass
``--pristine-list``, the split and the validation pairs stay those of all the photographs (``SyntheticKADID``),
so the release's SRCC still compares with the default's. Prints how many it left behind; exits 1 if even then
the folder does not fit.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from gsn_metric.train.synthetic import SyntheticKADID


def folder_bytes(folder: Path) -> int:
    """The total size of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def thin(gpu_dir: Path, val_fraction: float, room: int) -> tuple[int, int]:
    """Delete training photographs from ``gpu_dir/pristine`` until ``gpu_dir`` holds at most ``room`` bytes (or
    one training photograph is left). Returns (photographs left behind, training photographs there were)."""
    # patch_size 1: which images are big enough is the training's check, not this one's
    train = SyntheticKADID(gpu_dir / "pristine", gpu_dir / "KADID-10k.csv", split="train", train=True, seed=0,
                           val_fraction=val_fraction, pristine_list=gpu_dir / "pristine-list.txt",
                           patch_size=1).images
    order = sorted(train)
    random.Random(0).shuffle(order)  # not by size: the ones that travel stay a fair sample of the sources
    used, left = folder_bytes(gpu_dir), 0
    while used > room and left < len(order) - 1:
        used -= order[left].stat().st_size
        order[left].unlink()
        left += 1
    return left, len(train)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gpu_dir", type=Path)
    parser.add_argument("--val-fraction", type=float, required=True, help="the lease's --val-fraction")
    parser.add_argument("--room", type=int, required=True, help="bytes the folder may hold")
    args = parser.parse_args(argv)
    left, total = thin(args.gpu_dir, args.val_fraction, args.room)
    if left:
        print(f"left {left} of the {total} training photographs behind to fit the call ({total - left} travel, "
              f"and every validation one)")
    if folder_bytes(args.gpu_dir) > args.room:
        print(f"{args.gpu_dir} still holds more than {args.room} bytes with one training photograph left",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
