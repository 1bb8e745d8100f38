"""The peer metrics GSN is compared with, shared by ``speed.py`` and ``quality.py``.

Each peer is built on demand (its package may be missing) into ``f(ref, dist) → N values`` for N×3×H×W float
tensors in [0, 1]. PSNR, SSIM, MS-SSIM and GMSD are the package's classic peers (``gsn_metric.train.peers``:
plain torch and ``pytorch-msssim``, the ones ``release`` measures); FSIM comes from ``piq``, LPIPS from
``lpips`` and DISTS from ``DISTS_pytorch``, which all need torchvision (see benchmarks/README.md for an
environment that has it).

LPIPS and DISTS fetch their ImageNet backbones from download.pytorch.org. Where that fails (offline), they are
built with random backbone weights: the same architecture and so the same speed, but not the metric. Such a
build says so in its note (:data:`RANDOM_BACKBONE`); ``quality.py`` refuses it, ``speed.py`` times it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from gsn_metric.train.peers import CLASSIC

__all__ = ["PEERS", "RANDOM_BACKBONE", "Peer", "why_unavailable"]

Scores = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RANDOM_BACKBONE = "random ImageNet backbone (no download here): speed only"


@dataclass(frozen=True)
class Peer:
    """``build(device)`` → (``f(ref, dist)``, note); ``higher_is_better`` is the direction of ``f``'s values;
    ``needs`` the pip packages it imports. ``build`` may raise (ImportError where a package is missing)."""

    name: str
    build: Callable[[torch.device], tuple[Scores, str]]
    higher_is_better: bool
    needs: str = ""


def _classic(name: str) -> Callable[[torch.device], tuple[Scores, str]]:
    return lambda device: (CLASSIC[name][0], "")


def _piq(name: str) -> Callable[[torch.device], tuple[Scores, str]]:
    def build(device: torch.device) -> tuple[Scores, str]:
        import piq

        f = getattr(piq, name)
        return (lambda r, d: f(d, r, data_range=1.0, reduction="none")), ""
    return build


def _lpips(device: torch.device) -> tuple[Scores, str]:
    import lpips

    try:
        m, note = lpips.LPIPS(net="alex", verbose=False), ""
    except OSError:  # URLError is an OSError: the backbone could not be downloaded
        m, note = lpips.LPIPS(net="alex", verbose=False, pnet_rand=True), RANDOM_BACKBONE
    m = m.to(device).eval()
    return (lambda r, d: m(r, d, normalize=True).flatten()), note


def _dists(device: torch.device) -> tuple[Scores, str]:
    import torchvision
    from DISTS_pytorch import DISTS

    try:
        m, note = DISTS(), ""
    except OSError:
        vgg16 = torchvision.models.vgg16  # DISTS() calls vgg16(pretrained=True): build it untrained instead
        torchvision.models.vgg16 = lambda pretrained=False, **kw: vgg16(weights=None, **kw)
        try:
            m, note = DISTS(), RANDOM_BACKBONE
        finally:
            torchvision.models.vgg16 = vgg16
    m = m.to(device).eval()
    return (lambda r, d: m(r, d, batch_average=False).flatten()), note


PEERS: list[Peer] = [
    Peer("PSNR (plain torch)", _classic("PSNR"), True),
    Peer("SSIM (pytorch-msssim)", _classic("SSIM"), True, "pytorch-msssim"),
    Peer("MS-SSIM (pytorch-msssim)", _classic("MS-SSIM"), True, "pytorch-msssim"),
    Peer("GMSD (plain torch, piq's formula)", _classic("GMSD"), False),
    Peer("FSIM (piq)", _piq("fsim"), True, "piq, torchvision"),
    Peer("LPIPS-Alex (lpips)", _lpips, False, "lpips, torchvision"),
    Peer("DISTS (DISTS_pytorch)", _dists, False, "DISTS_pytorch, torchvision"),
]


def why_unavailable(err: Exception, needs: str) -> str:
    """A table cell saying why a peer could not be built or run."""
    if isinstance(err, ImportError) and "torchvision" in needs:
        try:
            import torchvision  # noqa: F401
        except ImportError:
            return "needs torchvision (not in this environment; see benchmarks/README.md)"
    if isinstance(err, ImportError):
        return f"not installed (pip install {needs.split(',')[0]})"
    return f"unavailable: {type(err).__name__}: {str(err)[:80]}"
