"""Quality maps: where GSN's score comes from, as an exact decomposition of it.

Each patch ends in one linear layer over its f×f fused map (f = 36), so a patch's score is exactly
``bias + Σ_cells w_i·m_i`` (:meth:`GSN.contributions`), and a pair's score is the mean of its patches' scores.
A map puts every cell's term on the pixels the cell is fused from, in proportion to how much of each pixel
the cell covers (cells are 192/36 = 5⅓ pixels wide), spreads the bias evenly over the patch, divides by the
number of patches, and adds the patches up where they lie in the image: the map's sum is the score.

Placing patch maps back into the image is the adjoint of cutting the patches out (reflect padding of small
images included), which autograd gives exactly: the vector-Jacobian product of :func:`patches.extract_patches`.
A padded pixel's share goes to the pixel it reflects, so the identity holds for every image size.
"""

from __future__ import annotations

import torch

from .model import GSN
from .patches import PatchMode, extract_patches

__all__ = ["patch_maps", "to_image"]


def _spread(cells: int, pixels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """cells×pixels: the share of cell a's value that pixel p receives (their overlap over the cell's length);
    each row sums to 1, so spreading keeps the total."""
    edges = torch.arange(cells + 1, device=device, dtype=torch.float64) * (pixels / cells)
    p = torch.arange(pixels, device=device, dtype=torch.float64)
    overlap = (torch.minimum(edges[1:, None], p[None] + 1) - torch.maximum(edges[:-1, None], p[None])).clamp_min(0)
    return (overlap / (pixels / cells)).to(dtype)


def patch_maps(net: GSN, ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """M×h×w maps of M pairs of patches (M×3×h×w each) whose sums are the patches' scores."""
    contributions = net.contributions(ref, dist).float()  # M×f×f
    h, w = ref.shape[-2:]
    f = contributions.shape[-1]
    rows = _spread(f, h, ref.device, contributions.dtype)
    cols = _spread(f, w, ref.device, contributions.dtype)
    return rows.t() @ contributions @ cols + net.fc.bias.float() / (h * w)


def to_image(maps: torch.Tensor, image_size: tuple[int, int], mode: PatchMode, size: int,
             stride: int | None = None) -> torch.Tensor:
    """N×P×h×w patch maps → N×1×H×W image maps: each patch's map divided by P (a pair's score is the mean
    over its patches) and added where :func:`extract_patches` cut that patch from an H×W image."""
    n, count = maps.shape[:2]
    with torch.enable_grad():
        canvas = torch.zeros(n, 1, *image_size, device=maps.device, dtype=maps.dtype, requires_grad=True)
        patches = extract_patches(canvas, mode, size, stride)  # N×P×1×h×w, a linear function of the canvas
        (grad,) = torch.autograd.grad(patches, canvas, grad_outputs=(maps / count).unsqueeze(2))
    return grad
