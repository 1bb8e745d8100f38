"""Adversarial training pairs (issue 16): distorted images nudged, within an invisible L∞ radius, towards a
higher score by the model being trained, then taught to score no higher than the unperturbed image.

Why: GSN's score can be lifted far past the reference's own by a 2/255 perturbation (``benchmarks/as_loss.py``,
"attack"), and the reference anchor alone does not stop it (its hinge only sees natural distortions). Training
on the very inputs that fool the current model is the standard defence (Madry et al., ICLR 2018); the label
"no better than the clean image" (``losses.adversarial_loss``) asks only that the perturbation not help, which
a perturbation people cannot see should not.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

__all__ = ["perturb"]


def perturb(model: nn.Module, ref: Tensor, dist: Tensor, eps: float, steps: int,
            autocast: contextlib.AbstractContextManager | None = None) -> Tensor:
    """``dist`` moved by ``steps`` steps of L∞ projected gradient ascent on ``model(ref, dist)``'s score (step
    ``2.5·eps/steps``, Madry et al.'s rule, no random start), within ``eps`` of ``dist`` and inside [0, 1].

    ``ref``, ``dist``: N×3×H×W in [0, 1]; ``eps`` in the same units (2/255 for "2 grey levels"). The model runs
    in eval mode for the attack (BatchNorm's running statistics, the network people score with, and no
    update of them), then is put back in the mode it was in; its parameters' ``.grad`` are not touched.
    Returns the perturbed images, detached, same shape and dtype.
    """
    if eps <= 0 or steps < 1:
        raise ValueError(f"perturb needs eps > 0 and steps ≥ 1, got eps={eps}, steps={steps}")
    was_training = model.training
    model.eval()
    alpha = 2.5 * eps / steps
    x = dist.detach().clone()
    try:
        for _ in range(steps):
            x.requires_grad_(True)
            with autocast or contextlib.nullcontext():
                score = model(ref, x)
            (grad,) = torch.autograd.grad(score.float().sum(), x)
            with torch.no_grad():
                x = (dist + (x + alpha * grad.sign() - dist).clamp(-eps, eps)).clamp(0, 1)
    finally:
        model.train(was_training)
    return x.detach()
