"""The peer metrics GSN is compared with, shared by ``speed.py`` and ``quality.py``.

Each peer is built on demand (its package may be missing) into ``f(ref, dist) → N values`` for N×3×H×W float
tensors in [0, 1]. PSNR, SSIM, MS-SSIM and GMSD are the package's classic peers (``gsn_metric.train.peers``:
plain torch and ``pytorch-msssim``, the ones ``release`` measures); FSIM comes from ``piq``, LPIPS from
``lpips`` and DISTS from ``DISTS_pytorch``; the learned peers with their real weights bundled in their packages
are ST-LPIPS alex and vgg (``stlpips-pytorch``: shift-tolerant LPIPS, the whole network trained on BAPPS
judgements) and ColorVideoVDP (``cvvdp``: JOD, 10 = no visible difference, on its ``standard_4k`` display). All of
these need torchvision (see benchmarks/README.md for an environment that has it).

LPIPS and DISTS fetch their ImageNet backbones from download.pytorch.org. Where that fails (offline), they are
built with random backbone weights: the same architecture and so the same speed, but not the metric. Such a
build says so in its note (:data:`RANDOM_BACKBONE`); ``quality.py`` refuses it, ``speed.py`` times it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from gsn_metric.train.peers import CLASSIC

__all__ = ["PEERS", "RANDOM_BACKBONE", "Peer", "build", "why_unavailable"]

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


def _stlpips(net: str) -> Callable[[torch.device], tuple[Scores, str]]:
    def build(device: torch.device) -> tuple[Scores, str]:
        import contextlib
        import os

        from stlpips_pytorch import stlpips

        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):  # it prints its set-up
            m = stlpips.LPIPS(net=net, variant="shift_tolerant").to(device).eval()
        m.requires_grad_(False)  # differentiable in its inputs (as_loss.py uses it as a loss), frozen itself
        return (lambda r, d: m(d, r, normalize=True).flatten()), ""
    return build


def _cvvdp(device: torch.device) -> tuple[Scores, str]:
    import pycvvdp

    m = pycvvdp.cvvdp(display_name="standard_4k", device=device)
    # predict(test, reference): display-encoded sRGB in [0, 1]; a B×C×H×W batch gives B JODs
    return (lambda r, d: m.predict(d, r, dim_order="BCHW")[0].flatten()), "JOD, standard_4k display"


PEERS: list[Peer] = [
    Peer("PSNR (plain torch)", _classic("PSNR"), True),
    Peer("SSIM (pytorch-msssim)", _classic("SSIM"), True, "pytorch-msssim"),
    Peer("MS-SSIM (pytorch-msssim)", _classic("MS-SSIM"), True, "pytorch-msssim"),
    Peer("GMSD (plain torch, piq's formula)", _classic("GMSD"), False),
    Peer("FSIM (piq)", _piq("fsim"), True, "piq, torchvision"),
    Peer("LPIPS-Alex (lpips)", _lpips, False, "lpips, torchvision"),
    Peer("DISTS (DISTS_pytorch)", _dists, False, "DISTS_pytorch, torchvision"),
    Peer("ST-LPIPS-alex (stlpips-pytorch)", _stlpips("alex"), False, "stlpips-pytorch, torchvision"),
    Peer("ST-LPIPS-vgg (stlpips-pytorch)", _stlpips("vgg"), False, "stlpips-pytorch, torchvision"),
    Peer("ColorVideoVDP (cvvdp)", _cvvdp, True, "cvvdp, torchvision"),
]


def build(name: str, device: torch.device) -> tuple[Scores, str]:
    """The peer whose name starts with ``name`` (e.g. "ST-LPIPS-alex"), built: (``f(ref, dist)``, note)."""
    for peer in PEERS:
        if peer.name.split(" ")[0] == name:
            return peer.build(device)
    raise KeyError(f"no peer {name!r}; the peers: {[p.name.split(' ')[0] for p in PEERS]}")


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
