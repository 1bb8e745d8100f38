"""Human calibration of the KADID-10k distortions: mean, std and count of DMOS per (type, level).

Computed from a KADID-10k label CSV (columns ``dis_img_path, dis_type, ref_img_path, score``; distorted
file names ``Irr_tt_ll.png`` give reference, type and level), never typed in by hand::

    python -m gsn_metric.train.calibration /path/to/KADID-10k.csv     # prints the markdown table
"""

from __future__ import annotations

import csv
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .distortions import NAMES

__all__ = ["Calibration", "human_score", "kadid_calibration", "main", "markdown_table"]

_NAME = re.compile(r"I(\d+)_(\d+)_(\d+)\.\w+$", re.IGNORECASE)


@dataclass(frozen=True)
class Calibration:
    """DMOS statistics of one (type, level) cell: ``mean``, sample ``std`` (ddof=1) and ``n`` images."""

    mean: float
    std: float
    n: int


def kadid_calibration(label_file: str | Path) -> dict[tuple[int, int], Calibration]:
    """Read a KADID-10k label CSV and return ``{(dist_type, level): Calibration(mean, std, n)}``.

    Type and level come from the distorted file name (``Irr_tt_ll``); rows whose name does not match are
    an error (they would silently bias the table)."""
    scores: dict[tuple[int, int], list[float]] = defaultdict(list)
    with open(label_file, newline="") as f:
        for row in csv.DictReader(f):
            m = _NAME.search(row["dis_img_path"].strip())
            if m is None:
                raise ValueError(f"not a KADID distorted-image name: {row['dis_img_path']!r}")
            scores[(int(m.group(2)), int(m.group(3)))].append(float(row["score"]))
    table = {}
    for key, s in sorted(scores.items()):
        mean = sum(s) / len(s)
        std = math.sqrt(sum((v - mean) ** 2 for v in s) / (len(s) - 1)) if len(s) > 1 else 0.0
        table[key] = Calibration(mean, std, len(s))
    return table


def human_score(table: dict[tuple[int, int], Calibration], dist_type: int, level: float) -> float:
    """Mean DMOS of ``dist_type`` at ``level`` in [1, 5], linear between the integer levels."""
    level = float(level)
    if not 1 <= level <= 5:
        raise ValueError(f"level must be in [1, 5], got {level}")
    lo = min(int(math.floor(level)), 4)
    a, b = table[(dist_type, lo)].mean, table[(dist_type, lo + 1)].mean
    return a + (level - lo) * (b - a)


def markdown_table(table: dict[tuple[int, int], Calibration]) -> str:
    """The table as markdown: one row per type, ``mean ± std`` per level, and the images per cell."""
    types = sorted({t for t, _ in table})
    lines = ["| # | type | level 1 | level 2 | level 3 | level 4 | level 5 | n per level |",
             "|---|---|---|---|---|---|---|---|"]
    for t in types:
        cells = [f"{table[(t, lv)].mean:.2f} ± {table[(t, lv)].std:.2f}" for lv in range(1, 6)]
        ns = sorted({table[(t, lv)].n for lv in range(1, 6)})
        lines.append(f"| {t} | {NAMES.get(t, '?')} | " + " | ".join(cells) + f" | {'/'.join(map(str, ns))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m gsn_metric.train.calibration KADID-10k.csv", file=sys.stderr)
        return 2
    print(markdown_table(kadid_calibration(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
