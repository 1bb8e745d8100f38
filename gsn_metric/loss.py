"""GSN as a training loss: :class:`GSNLoss`, lower = better, whose minimum is the reference itself.

Why not just ``hi − score``: GSN's head is a linear regression over fused features, trained only on pairs whose
reference is pristine, so nothing makes ``dist == ref`` its best input. Minimising ``hi − score`` on an image's
pixels drives the score past the top of its scale (30 and more on a 1–5 scale) while the image gets worse
(``benchmarks/as_loss.py`` measures it). The default ``form="anchored"`` is 0 exactly at ``input == target`` and
positive elsewhere, by construction:

``loss = D(ref, x)  +  score_weight · |s(ref, ref) − s(ref, x)| / (hi − lo)``,   ``score_weight`` 0 by default

* ``D`` is the relative squared error of GSN's own full-resolution features, the Siamese branch's stem (64
  channels of ReLU(3×3 conv), as trained): ``‖f(ref) − f(x)‖² / ‖f(ref)‖²`` per patch. It is 0 where the
  features agree; in the benchmark its gradient led back towards the reference from a blurred, a JPEG, a
  noisy and a uniform-noise start (``benchmarks/README.md``, "as_loss.py").
* the optional **anchored score** term asks for the reference's own score, not for more. Its gradient is the
  adversarial direction the old loss followed: at weight 1 it undid the recovery from a blurred start, and
  even at 0.01 (gsn-metric 0.2's default, 0 since 0.3) it kept Adam circling the reference near 41 dB, with
  the score pushed up to 5.03 against the reference's own 4.40, where ``D`` alone went on to 59 dB at the
  reference's own score (measured, not assumed: ``benchmarks/README.md``, "as_loss.py"). A cap that only penalised scores
  above the reference's own (weight 0.1) held the score down but by the same adversarial direction, at
  34 dB. So the default is ``D`` alone: no part of GSN's *score* is optimised, and the score judges images
  trained with the loss from outside it (the two share only the stem).

Deeper levels of the branch were tried as feature distances too (LPIPS-style unit-normalised and relative
squared error, equal weights) and were fooled like the score: their gradients raised the score and lowered
PSNR from a blurred start. With ``score_weight=0`` only the stem runs (a small fraction of a branch pass); with
a score term both terms share one branch pass per side plus a fusion head for ``s(ref, ref)``.

As a metric the loss is no substitute for the score (``benchmarks/README.md``, "The loss as a metric"). Judge
images with :class:`GSNScore`; train them with this.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import nn

from .metric import GSNScore, Reduction, _precision_alias, _reduce, _resolve_device
from .model import GSN
from .patches import PatchMode
from .precision import Precision, check_precision
from .weights import WeightsInfo

LossForm = Literal["anchored", "score"]
LOSS_FORMS: tuple[str, ...] = ("anchored", "score")


def feature_distance(ref_features: torch.Tensor, dist_features: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Relative squared error of two P×C×h×w feature maps, ``‖f_ref − f_dist‖² / ‖f_ref‖²`` per item: P values
    ≥ 0, 0 where the features agree. Computed in float32."""
    r, d = ref_features.float(), dist_features.float()
    return (r - d).pow(2).sum((1, 2, 3)) / (r.pow(2).sum((1, 2, 3)) + eps)


class GSNLoss(nn.Module):
    """GSN as a differentiable loss for super-resolution / GAN training: lower = better, 0 at the reference.

    Args:
        form: ``"anchored"`` (default; see the module docstring): ``D(ref, x) + score_weight · |s(ref, ref) −
            s(ref, x)| / (hi − lo)``, 0 exactly at ``input == target`` and positive elsewhere (unless all the
            stem's features agree at every pixel).
            ``"score"``: the plain ``(hi − s(ref, x)) / (hi − lo)`` of gsn-metric 0.1, kept for comparison;
            **it is fooled** when optimised on its own: its minimum is not the reference, and it drives the
            score far above the reference's own (``benchmarks/README.md``, "as_loss.py").
        score_weight: weight of the anchored score term in the anchored form (≥ 0; the default 0 is the
            feature distance alone, and runs only the stem). Weights above 0 follow GSN's judgement and its
            adversarial gradient with it (``benchmarks/README.md``, "as_loss.py").
        Others: as :class:`~gsn_metric.GSNScore` (``precision``: ``"fp32"`` or ``"bf16"``; ``"int8"`` has no
        gradients and is refused); ``reduction`` defaults to ``"mean"``; ``[lo, hi]`` is the
        weights' score range (``info.score_range``).

    ``forward(input, target)`` follows torch's loss order: ``input`` the restored/generated images, ``target``
    the references, both N×3×H×W float tensors in ``input_range`` (default [0, 1]), the same size. Returns
    N losses (``reduction="none"``) or a scalar, float32; each pair's loss is the mean over its patches
    (``patches``). Gradients flow to both inputs. The network's weights are frozen and it has no BatchNorm
    left (folded), so ``.train()`` changes nothing. Works inside ``torch.autocast``.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        patches: PatchMode = "five",
        batch_size: int = 32,
        input_range: tuple[float, float] = (0.0, 1.0),
        reduction: Reduction = "mean",
        stride: int | None = None,
        fold: bool = True,
        precision: Precision = "fp32",
        amp: bool = False,
        form: LossForm = "anchored",
        score_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if form not in LOSS_FORMS:
            raise ValueError(f"form must be one of {LOSS_FORMS}, got {form!r}")
        if isinstance(score_weight, bool) or not isinstance(score_weight, (int, float)) or \
                not 0 <= score_weight < float("inf"):
            raise ValueError(f"score_weight must be a finite number ≥ 0, got {score_weight!r}")
        if form == "score" and score_weight != 0:
            raise ValueError("score_weight only applies to form='anchored' (form='score' is the score alone)")
        _reduce(torch.zeros(1), reduction)
        precision = _precision_alias(precision, amp)
        check_precision(precision, _resolve_device(device), differentiable=True)  # before int8's calibration
        self.metric = GSNScore(weights, device, patches, batch_size, input_range, reduction="none", stride=stride,
                               fold=fold, precision=precision)
        self.reduction, self.form, self.score_weight = reduction, form, float(score_weight)

    @property
    def info(self) -> WeightsInfo:
        return self.metric.info

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ref, dist = self.metric._prepare(target, input)
        # The metric's own patch loop (batch_size patches per pass, autocast, layout, "full"-mode memory check).
        losses = [chunk.mean(1) for chunk in self.metric._per_pair(ref, dist, self._patch_losses)]
        return _reduce(torch.cat(losses), self.reduction)

    def _patch_losses(self, net: GSN, ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        """Losses of P pairs of patches (P×3×h×w each), one branch pass for both sides."""
        k = ref.shape[0]
        if self.form == "anchored" and self.score_weight == 0:  # the feature distance alone: only the stem runs
            stem = net.branch.stem(torch.cat([ref, dist]))
            return feature_distance(stem[:k], stem[k:])
        lo, hi = self.info.score_range
        feats = net.branch.features(torch.cat([ref, dist]))
        fr, fd = [f[:k] for f in feats], [f[k:] for f in feats]
        score = net.head(fr[1:], fd[1:]).float()
        if self.form == "score":
            return (hi - score) / (hi - lo)
        own = net.head(fr[1:], fr[1:]).float()
        return feature_distance(fr[0], fd[0]) + self.score_weight * (own - score).abs() / (hi - lo)

    def extra_repr(self) -> str:
        return (f"form={self.form!r}, score_weight={self.score_weight}, reduction={self.reduction!r}, "
                f"precision={self.metric.precision!r}")
