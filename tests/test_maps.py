"""Quality and damage maps: an exact decomposition of the score, for every patch mode and image size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsn_metric import GSNScore
from gsn_metric.images import load_image
from gsn_metric.maps import _spread
from gsn_metric.train.distortions import distort_region

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


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


@pytest.fixture(scope="module")
def default_metric():
    """The released default weights (a trained network: the property is about trained weights, which a random
    tiny model does not have)."""
    return GSNScore(device="cpu", patches="grid")


@pytest.mark.parametrize("kind", [1, 11, 10], ids=["blur", "white-noise", "jpeg"])
def test_damage_lies_in_the_distorted_quadrant(default_metric, kind):
    # The example photograph (CC0, in the repository), 384×384, distorted at KADID level 4 in its top-left
    # quadrant only: most of what the distortion cost must be found there (a quarter of the pixels).
    ref = load_image(EXAMPLES / "reference.png")[:, :384, :384]
    dist = distort_region(ref, kind, 4, (0, 0, 192, 192), generator=torch.Generator().manual_seed(0))
    damage = default_metric.damage_map(ref[None], dist[None])[0, 0]
    share = float(damage[:192, :192].sum() / damage.sum())
    assert damage.sum() > 0 and share > 0.5, (float(damage.sum()), share)
