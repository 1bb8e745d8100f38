"""What the data-set readers share: a rated pair, the split rule, and the image file check.

``datasets`` (the real data sets) and ``synthetic`` (pairs made from pristine photographs) both build on these;
neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

__all__ = ["PRISTINE_LIST_HELP", "Pair", "Split", "check_image", "split_by_reference"]

Split = Literal["train", "val", "all"]


@dataclass(frozen=True)
class Pair:
    """One rated pair: resolved paths, score (higher = better), distortion type, and label-file line."""

    ref: Path
    dist: Path
    score: float
    dis_type: str
    line: int


def check_image(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """(problem or None, size or None) for one image file: its header, and all of its data."""
    if not path.is_file():
        return "does not exist", None
    try:
        with Image.open(path) as img:
            size = img.size
            # PNG's verify() checks every chunk's CRC, so a truncated or damaged file shows without decoding;
            # BMP's and JPEG's verify() read only the header, so those are decoded (BMP: ~0.3 ms at 512×384).
            if img.format == "PNG":
                img.verify()
            else:
                img.load()
    except Exception as err:  # noqa: BLE001 (Pillow raises many types for damaged files: all mean unreadable)
        return f"cannot be read as an image ({type(err).__name__}: {err})", None
    return None, size


# --pristine-list (synthetic KADID): the split is computed over a list of names rather than a folder's contents.
PRISTINE_LIST_HELP = ("a file naming every pristine image, one per line (or a CSV with a 'file' column, such as "
                      "the photographs' manifest.csv): the split and the validation pairs are computed over it, "
                      "so --pristine may hold only some of the training images and still validate on the same "
                      "pairs")


def split_by_reference(pairs: Sequence[Pair], split: Split, val_fraction: float, seed: int) -> list[Pair]:
    """The pairs of one split; references are assigned wholly to train or val (see the module docstring)."""
    if split == "all":
        return list(pairs)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    refs = sorted({str(p.ref) for p in pairs})
    n_val = 0 if val_fraction == 0 else max(1, round(val_fraction * len(refs)))
    if n_val >= len(refs):
        raise ValueError(f"val_fraction {val_fraction} leaves no reference for training ({len(refs)} references)")
    order = np.random.default_rng(seed).permutation(len(refs))
    val = {refs[i] for i in order[:n_val]}
    return [p for p in pairs if (str(p.ref) in val) == (split == "val")]
