"""``fit --speedups``: faster forms of the same training step, each the same computation up to rounding.

* ``fold-cdc``: every CDC as one 3×3 convolution with its folded kernel (``CDCConv2d.fold_centre``) instead of
  a 3×3 and a 1×1 convolution: the same function of the weights, so the same gradients up to rounding.
* ``foreach``: multi-tensor (``torch._foreach_*``) updates in RAdam and Lookahead (on CUDA RAdam already
  uses them by default; Lookahead did not).
* ``compile``: ``torch.compile`` of the training network (inductor fuses the BatchNorm / ReLU / attention
  element-wise work); the first steps compile (tens of seconds).

Each is checked against the eager step (``tests/test_speedups.py``: losses and weights after a few steps) and
timed by ``benchmarks/train_step.py``, which the GPU lease's probe runs to choose among them.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ..model import CDCConv2d

SPEEDUPS: tuple[str, ...] = ("fold-cdc", "foreach", "compile")


def parse_speedups(text: str) -> tuple[str, ...]:
    """``"fold-cdc,compile"`` → ("fold-cdc", "compile"); ``""`` or ``"none"`` → (); unknown names refused."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"))
    unknown = [n for n in names if n not in SPEEDUPS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown speedup(s) {unknown}; choose from {', '.join(SPEEDUPS)}")
    return names


def apply_to_model(model: nn.Module, speedups: tuple[str, ...]) -> None:
    """The speedups that change how the model computes (``fold-cdc``), in place."""
    for m in model.modules():
        if isinstance(m, CDCConv2d):
            m.fold_centre = "fold-cdc" in speedups


def wrap_for_training(net: nn.Module, speedups: tuple[str, ...]) -> nn.Module:
    """The module the training step calls: ``net`` compiled under ``compile``, else ``net`` itself."""
    return torch.compile(net) if "compile" in speedups else net  # type: ignore[return-value]
