"""Quality and damage maps: an exact decomposition of the score, for every patch mode and image size."""

from __future__ import annotations

import pytest
import torch

from gsn_metric import GSNScore
from gsn_metric.maps import _spread


def test_spread_keeps_every_cells_total():
    for cells, pixels in ((36, 192), (36, 32), (6, 7), (6, 40)):
        m = _spread(cells, pixels, torch.device("cpu"), torch.float64)
        torch.testing.assert_close(m.sum(1), torch.ones(cells, dtype=torch.float64))
        assert (m >= 0).all()


@pytest.mark.parametrize("mode, size", [("five", (48, 64)), ("grid", (48, 64)), ("full", (40, 56)),
                                        ("five", (20, 70)), ("grid", (32, 32))])
def test_map_sums_to_the_score(tiny_weights, mode, size):
    torch.manual_seed(0)
    ref = torch.rand(3, 3, *size)
    dist = (ref + 0.2 * torch.randn_like(ref)).clamp(0, 1)
    metric = GSNScore(tiny_weights, device="cpu", patches=mode, batch_size=7)
    q = metric.quality_map(ref, dist)
    assert q.shape == (3, 1, *size) and q.dtype == torch.float32
    torch.testing.assert_close(q.sum((1, 2, 3)), metric(ref, dist), rtol=1e-4, atol=1e-5)
    damage = metric.damage_map(ref, dist)
    torch.testing.assert_close(damage.sum((1, 2, 3)), metric(ref, ref) - metric(ref, dist), rtol=1e-4, atol=1e-5)


def test_five_patches_leave_pixels_uncovered(tiny_weights):
    # 32-px patches of a 48×128 image: corners cover columns 0–31 and 96–127, the centre 48–79; 32–47 are unscored.
    ref = torch.rand(1, 3, 48, 128)
    q = GSNScore(tiny_weights, device="cpu").quality_map(ref, ref.flip(-1))
    assert (q[..., 40] == 0).all() and (q[..., 0] != 0).any()
