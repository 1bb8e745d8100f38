"""adversarial.perturb: a bounded attack that raises the model's score, leaving the model as it found it."""

from __future__ import annotations

import pytest
import torch

from gsn_metric.model import GSN
from gsn_metric.train.adversarial import perturb

from .conftest import TINY


def test_perturb_raises_the_score_within_the_radius_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = GSN(TINY).train()
    ref = torch.rand(3, 3, 32, 32)
    dist = (ref + 0.2 * torch.randn_like(ref)).clamp(0, 1)
    stats = [m.running_mean.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    eps = 4 / 255
    adv = perturb(model, ref, dist, eps, steps=3)
    assert model.training  # put back in the mode it was in
    assert all(torch.equal(a, m.running_mean) for a, m in
               zip(stats, [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]))
    assert all(p.grad is None for p in model.parameters())
    assert (adv - dist).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert not adv.requires_grad and adv.shape == dist.shape
    model.eval()
    with torch.no_grad():
        assert (model(ref, adv) > model(ref, dist)).all()
    with pytest.raises(ValueError, match="eps > 0"):
        perturb(model, ref, dist, 0.0, 1)
