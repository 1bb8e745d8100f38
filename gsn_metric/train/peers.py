"""The classic full-reference metrics a GSN weight file is measured against: PSNR, SSIM, MS-SSIM, GMSD.

``release`` reports them beside GSN on the same validation pairs and ``benchmarks/`` adds the deep peers.
Each maps ``(ref, dist)``, N×3×H×W float tensors in [0, 1], to N values; :class:`PeerModel` turns one into
what :func:`evaluate.predict` scores (higher = better).

SSIM and MS-SSIM come from ``pytorch-msssim`` (the ``train`` extra). GMSD is written here in plain torch:
piq has it, but ``import piq`` imports torchvision, which is no dependency of this package and cannot load
beside every torch build; the formula (Xue et al. 2014, as piq computes it) is eight lines.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CLASSIC", "PeerModel", "gmsd", "psnr"]

Scores = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def psnr(ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for data range 1; the MSE is floored at 1e-10 (≤ 100 dB) so identical images stay finite."""
    return -10 * torch.log10(F.mse_loss(ref, dist, reduction="none").flatten(1).mean(1).clamp_min(1e-10))


def gmsd(ref: torch.Tensor, dist: torch.Tensor, t: float = 170 / 255**2) -> torch.Tensor:
    """Gradient Magnitude Similarity Deviation (lower = better, 0 for identical images), as piq computes it:
    luma (YIQ's Y), 2×2 average pooling (odd sides padded at the bottom/right), Prewitt gradient magnitudes,
    the standard deviation of their similarity map."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=ref.dtype, device=ref.device).view(1, 3, 1, 1)
    prewitt = torch.tensor([[1.0, 0.0, -1.0]] * 3, dtype=ref.dtype, device=ref.device) / 3
    kernels = torch.stack([prewitt, prewitt.t()]).unsqueeze(1)

    def magnitude(img: torch.Tensor) -> torch.Tensor:
        y = (img * weights).sum(1, keepdim=True)
        y = F.avg_pool2d(F.pad(y, [0, y.shape[-1] % 2, 0, y.shape[-2] % 2]), 2)
        # + 1e-12 under the root (piq has none): a finite gradient where the image is flat, for GMSD as a loss
        return F.conv2d(y, kernels, padding=1).pow(2).sum(1).add(1e-12).sqrt()

    m_ref, m_dist = magnitude(ref), magnitude(dist)
    gms = (2 * m_ref * m_dist + t) / (m_ref**2 + m_dist**2 + t)
    return gms.flatten(1).std(1, unbiased=False)


def _pytorch_msssim(multi_scale: bool) -> Scores:
    def scores(ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        import pytorch_msssim  # the train extra

        f = pytorch_msssim.ms_ssim if multi_scale else pytorch_msssim.ssim
        return f(ref, dist, data_range=1.0, size_average=False)
    return scores


# name -> (f(ref, dist) -> N values, higher_is_better)
CLASSIC: dict[str, tuple[Scores, bool]] = {
    "PSNR": (psnr, True),
    "SSIM": (_pytorch_msssim(False), True),
    "MS-SSIM": (_pytorch_msssim(True), True),
    "GMSD": (gmsd, False),
}


class PeerModel(nn.Module):
    """A peer as :func:`evaluate.predict` wants a model: ``(ref, dist)`` P×3×S×S → P values, higher = better
    (peers rated lower = better are negated, so every correlation is positive for a metric that agrees with
    people)."""

    def __init__(self, scores: Scores, higher_is_better: bool) -> None:
        super().__init__()
        self.scores, self.sign = scores, 1.0 if higher_is_better else -1.0

    def forward(self, ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        return self.sign * self.scores(ref, dist).float().flatten()
