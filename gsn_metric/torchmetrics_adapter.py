"""``GSNMetric``: GSN as a ``torchmetrics.Metric``, for PyTorch Lightning and ``MetricCollection`` users.

``pip install "gsn-metric[torchmetrics]"``. It follows torchmetrics' image metrics (e.g.
``LearnedPerceptualImagePatchSimilarity``): ``update(preds, target)`` with the restored/generated images first
and the references second, ``compute()`` the mean score over everything updated (or, with ``reduction``, the
sum or all scores), states that torchmetrics syncs across DDP processes. The network is :class:`GSNScore`'s.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
from torchmetrics import Metric

from .metric import GSNScore
from .patches import PatchMode
from .precision import Precision

__all__ = ["GSNMetric"]


class GSNMetric(Metric):
    """GSN scores of (preds, target) pairs, accumulated over batches; higher = better.

    Args:
        weights, patches, batch_size, input_range, stride, precision: as :class:`~gsn_metric.GSNScore`
            (``input_range`` default [0, 1]; torchmetrics' LPIPS calls this ``normalize``). ``precision`` is
            checked against the device the metric runs on at each ``update``: the metric is built on the CPU
            and moved later, as torchmetrics' metrics are.
        reduction: ``"mean"`` (default: the mean score of all pairs updated), ``"sum"``, or ``"none"``: every
            pair's score, in update order (in DDP, each process's in turn), a 1-D tensor.
        kwargs: torchmetrics' own (``sync_on_compute``, ``dist_sync_on_step``, ...).

    ``update(preds, target)``: N×3×H×W float tensors, ``preds`` the images to judge, ``target`` their
    references, the same size. Differentiable: in ``forward`` gradients flow to ``preds``. The network is
    frozen and in eval mode whatever ``.train()`` says (no BatchNorm left: it is folded).
    """

    higher_is_better = True
    is_differentiable = True
    full_state_update = False
    scores: list[torch.Tensor]  # the states (add_state), as torchmetrics keeps them
    score_sum: torch.Tensor
    total: torch.Tensor

    def __init__(self, weights: str | os.PathLike | None = None, patches: PatchMode = "five", batch_size: int = 32,
                 input_range: tuple[float, float] = (0.0, 1.0), stride: int | None = None,
                 reduction: Literal["mean", "sum", "none"] = "mean", precision: Precision = "fp32",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction
        # bf16 is only autocast around an unchanged network, so it is built as fp32 here and checked where it runs
        # (GSNScore checks at every call): a CPU without native bfloat16 must not refuse a metric bound for a GPU.
        self.gsn = GSNScore(weights, device="cpu", patches=patches, batch_size=batch_size, input_range=input_range,
                            reduction="none", stride=stride, precision="fp32" if precision == "bf16" else precision)
        self.gsn.precision = precision
        if reduction == "none":
            self.add_state("scores", default=[], dist_reduce_fx="cat")
        else:
            self.add_state("score_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        scores = self.gsn(target, preds)
        if self.reduction == "none":
            self.scores.append(scores)
        else:
            self.score_sum += scores.double().sum()
            self.total += scores.numel()

    def compute(self) -> torch.Tensor:
        if self.reduction == "none":
            scores = self.scores
            return torch.cat(scores) if isinstance(scores, list) else scores  # a tensor once synced
        if self.reduction == "sum":
            return self.score_sum.float()
        return (self.score_sum / self.total).float()
