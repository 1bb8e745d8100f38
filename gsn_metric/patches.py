"""Where GSN looks: the paper's five fixed patches, a dense grid, or the whole image; and training crops.

All functions take float tensors N×3×H×W (any range), keep autograd, and work on any device.

Small-image policy: an image with a side shorter than the patch is first reflect-padded, centred, to the
patch size on that side (``pad_to``); reflection keeps local image statistics, where zero padding would add
hard black edges that the metric would score as distortion. Reflection is repeated for images less than
half a patch wide (one reflection can add at most side − 1 pixels).
"""

from __future__ import annotations

import numbers
from typing import Literal

import torch
import torch.nn.functional as F

PATCH_SIZE = 192
PatchMode = Literal["five", "grid", "full"]
PATCH_MODES: tuple[str, ...] = ("five", "grid", "full")


def pad_to(img: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect-pad N×C×H×W, centred, so that H and W are at least ``size``; unchanged if they already are."""
    while img.shape[-2] < size or img.shape[-1] < size:
        h, w = img.shape[-2:]
        if min(h, w) < 2:
            raise ValueError(f"an image of {h}×{w} pixels is too small to assess; GSN needs at least 2×2")
        dh, dw = max(0, min(size - h, h - 1)), max(0, min(size - w, w - 1))
        img = F.pad(img, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="reflect")
    return img


def five_boxes(height: int, width: int, size: int = PATCH_SIZE) -> list[tuple[int, int]]:
    """(top, left) of the paper's five ``size``² patches: the four corners, then the centre."""
    bottom, right = height - size, width - size
    return [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]


def check_stride(stride: int, size: int = PATCH_SIZE) -> None:
    """Refuse a grid ``stride`` that is not an integer in [1, ``size``]: beyond ``size`` tiles leave gaps."""
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or not 1 <= stride <= size:
        raise ValueError(
            f"stride must be an integer from 1 to the patch size {size} (tiles further apart than a patch would "
            f"leave pixels unscored), got {stride!r}; leave it unset for half a patch"
        )


def grid_boxes(height: int, width: int, size: int = PATCH_SIZE, stride: int | None = None) -> list[tuple[int, int]]:
    """(top, left) of overlapping ``size``² tiles that cover the whole image (both sides ≥ ``size``).

    Tiles are spread evenly, at most ``stride`` (1 to ``size``; default ``size // 2``) apart, the first and
    last touching the image's edges, so every pixel is covered and no tile leaves the image.
    """
    if stride is None:
        stride = max(1, size // 2)
    check_stride(stride, size)

    def starts(extent: int) -> list[int]:
        n = -(-(extent - size) // stride) + 1  # ceil division: enough tiles that gaps are ≤ stride
        return [round(i * (extent - size) / (n - 1)) if n > 1 else 0 for i in range(n)]

    return [(top, left) for top in starts(height) for left in starts(width)]


def patch_boxes(height: int, width: int, mode: PatchMode = "five", size: int = PATCH_SIZE,
                stride: int | None = None) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the patches :func:`extract_patches` cuts from an H×W image, in that
    image's coordinates; an image padded to the patch size (a side under ``size``) or ``"full"`` is one box."""
    if mode == "full" or height < size or width < size or height == width == size:
        return [(0, 0, height, width)]
    boxes = five_boxes(height, width, size) if mode == "five" else grid_boxes(height, width, size, stride)
    return [(top, left, size, size) for top, left in boxes]


def _boxes(height: int, width: int, mode: PatchMode, size: int, stride: int | None) -> list[tuple[int, int]] | None:
    """(top, left) of the patches of an image already padded to at least ``size``; None: the whole image.
    "full", and "five" of an image no larger than a patch (its five boxes are the same box: typical SR crops
    fed to GSNLoss), are one patch: the same mean score at a fifth of the work."""
    if mode not in PATCH_MODES:
        raise ValueError(f"patches must be one of {PATCH_MODES}, got {mode!r}")
    if mode == "full" or (mode == "five" and height == width == size):
        return None
    return five_boxes(height, width, size) if mode == "five" else grid_boxes(height, width, size, stride)


def count_patches(height: int, width: int, mode: PatchMode = "five", size: int = PATCH_SIZE,
                  stride: int | None = None) -> int:
    """How many patches :func:`extract_patches` cuts from an H×W image (without cutting them)."""
    boxes = _boxes(max(height, size), max(width, size), mode, size, stride)
    return 1 if boxes is None else len(boxes)


def extract_patches(
    img: torch.Tensor, mode: PatchMode = "five", size: int = PATCH_SIZE, stride: int | None = None,
    select: slice = slice(None),
) -> torch.Tensor:
    """Cut every image of a batch into the same set of patches.

    Args:
        img: N×C×H×W; padded first if a side is shorter than ``size`` (see the module docstring).
        mode: "five" (4 corners + centre, the paper's protocol), "grid" (``grid_boxes``) or "full" (the
            padded image itself, one "patch" per image).
        select: which of the patches to cut (e.g. ``slice(64, 128)``), so that many grid tiles can be cut a
            batch at a time.
    Returns:
        N×P×C×h×w: P patches per image (h = w = ``size`` except for "full"; P = 1 for "five" of an image no
        larger than a patch, whose five boxes coincide).
    """
    img = pad_to(img, size)
    h, w = img.shape[-2:]
    boxes = _boxes(h, w, mode, size, stride)
    if boxes is None:
        return img.unsqueeze(1)[:, select]
    return torch.stack([img[..., t : t + size, l : l + size] for t, l in boxes[select]], dim=1)


def paired_random_crop(
    ref: torch.Tensor,
    dist: torch.Tensor,
    size: int = PATCH_SIZE,
    generator: torch.Generator | None = None,
    flip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's training augmentation: the same random ``size``² crop (and horizontal flip, p = 0.5)
    of a reference and its distorted version, both C×H×W; returns two C×size×size tensors."""
    if ref.shape != dist.shape:
        raise ValueError(f"reference {tuple(ref.shape)} and distorted {tuple(dist.shape)} differ in shape")
    pair = pad_to(torch.stack([ref, dist]), size)
    h, w = pair.shape[-2:]
    top = int(torch.randint(h - size + 1, (1,), generator=generator))
    left = int(torch.randint(w - size + 1, (1,), generator=generator))
    pair = pair[..., top : top + size, left : left + size]
    if flip and bool(torch.rand((), generator=generator) < 0.5):
        pair = pair.flip(-1)
    return pair[0], pair[1]
