"""The 25 KADID-10k distortions: shape/range/dtype, strength growing with level, determinism, and the
verified type-1 recipe against an independent float64 scipy computation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from gsn_metric.train.distortions import (
    DISTORTIONS,
    NAMES,
    distort,
    hsv_to_rgb,
    lab_to_rgb,
    level_parameter,
    rgb_to_hsv,
    rgb_to_lab,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)

TYPES = range(1, 26)


def make_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A 3xHxW float32 test image in [0, 1]: colour gradients, hard-edged shapes and fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy, 0.7 - 0.4 * xx * yy], -1)
    img[(xx > 0.55) & (yy < 0.45)] = (0.8, 0.25, 0.2)
    img[((xx - 0.3) ** 2 + (yy - 0.65) ** 2) < 0.04] = (0.15, 0.55, 0.25)
    img[(yy > 0.8)] *= 0.5
    img += 0.06 * np.sin(2 * np.pi * 9 * (xx + yy))[..., None] + 0.02 * rng.standard_normal((h, w, 1))
    return torch.from_numpy(np.clip(img, 0, 1).astype(np.float32)).permute(2, 0, 1).contiguous()


def stretched(x: torch.Tensor) -> torch.Tensor:
    """The generator's min-max stretch, then 8 bits: what a distortion's neutral level returns."""
    return torch.round((x - x.min()) / (x.max() - x.min()) * 255) / 255


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 100.0 if mse == 0 else 10 * math.log10(1 / mse)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def small():
    return make_image(64, 64)


@pytest.fixture(scope="module")
def kadid_size():
    return make_image(384, 512, seed=1)


@pytest.fixture(scope="module")
def medium():
    return make_image(128, 160, seed=2)


def test_registry():
    assert sorted(DISTORTIONS) == list(TYPES)
    assert NAMES[1] == "gaussian blur" and NAMES[25] == "contrast change"
    assert {t for t, d in DISTORTIONS.items() if d.random} == {3, 5, 11, 12, 13, 14, 15, 19, 20, 23}
    assert DISTORTIONS[9].levels == (16, 32, 45, 120, 400)          # not the 170 of one port
    assert DISTORTIONS[18].levels[2] == 0 and DISTORTIONS[25].levels[2] == 0
    assert all(len(d.levels) == 5 for d in DISTORTIONS.values())
    with pytest.raises(dataclass_error()):
        DISTORTIONS[1].name = "x"


def dataclass_error():
    import dataclasses
    return dataclasses.FrozenInstanceError


@pytest.mark.parametrize("t", TYPES)
def test_all_levels_keep_shape_range_dtype(t, small):
    for level in range(1, 6):
        y = distort(small, t, level, seeded())
        assert y.shape == small.shape and y.dtype == small.dtype
        assert float(y.min()) >= 0 and float(y.max()) <= 1
        assert torch.equal(torch.round(y * 255) / 255, y)              # 8-bit values


@pytest.mark.parametrize("t", TYPES)
def test_kadid_size_batched(t, kadid_size):
    # one batched call (N=2) per type at level 3 and level 5 on the 512x384 KADID size
    x = torch.stack([kadid_size, kadid_size.flip(-1)])
    for level in (3, 5):
        y = distort(x, t, level, seeded())
        assert y.shape == x.shape and y.dtype == x.dtype
        assert float(y.min()) >= 0 and float(y.max()) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("t", TYPES)
def test_kadid_size_every_level(t, kadid_size):
    for level in range(1, 6):
        y = distort(kadid_size, t, level, seeded())
        assert y.shape == kadid_size.shape and float(y.min()) >= 0 and float(y.max()) <= 1


def test_float64_and_batch_shapes(small):
    y = distort(small.double()[None].repeat(2, 1, 1, 1), 11, 2, seeded())
    assert y.dtype == torch.float64 and y.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError):
        distort(small, 26, 1)
    with pytest.raises(ValueError):
        distort(small, 1, 6)
    with pytest.raises(ValueError):
        distort(small[:1], 1, 1)


def chroma(x: torch.Tensor) -> float:
    return float(rgb_to_lab(x[None])[:, 1:].norm(dim=1).mean())


def hsv_saturation(x: torch.Tensor) -> float:
    return float(rgb_to_hsv(x[None])[:, 1].mean())


# strength measure per type: a number that must rise with the level (non-decreasing, and strictly from
# level 1 to level 5). Default: -PSNR vs the reference.
MEASURES = {
    18: lambda x, y: -float(y.mean()),              # mean shift runs from +0.15 to -0.15
    25: lambda x, y: -float(y.std()),               # contrast runs from higher to lower
    # pixelate: the share of pixels equal to their right-hand neighbour (PSNR aliases on the pixel grid)
    21: lambda x, y: float((y[..., 1:] == y[..., :-1]).all(0).double().mean()),
}
# allowed dips between neighbouring levels (dB for PSNR): noise-free types are strictly monotone; the
# random patch/block types wobble a little; a colour shift of 8 vs 12 px saturates on a 128 px image
TOLERANCE = {5: 0.6, 20: 0.2, 23: 0.2}


@pytest.mark.parametrize("t", TYPES)
def test_strength_grows_with_level(t, medium):
    measure = MEASURES.get(t, lambda x, y: -psnr(x, y))
    ref = stretched(medium)
    vals = [measure(ref, distort(medium, t, level, seeded(3))) for level in range(1, 6)]
    tol = TOLERANCE.get(t, 0.05)
    assert all(b >= a - tol for a, b in itertools.pairwise(vals)), (NAMES[t], vals)
    assert vals[4] > vals[0], (NAMES[t], vals)


def test_saturation_1_falls_then_inverts(medium):
    s = [hsv_saturation(distort(medium, 7, lv)) for lv in range(1, 6)]
    assert s[0] > s[1] > s[2] > s[3] and s[3] < 0.01 < s[4] < s[0]    # f = 0 grey, f < 0 complementary
    assert hsv_saturation(medium) > s[0]


def test_saturation_2_raises_chroma(medium):
    c = [chroma(distort(medium, 8, lv)) for lv in range(1, 4)]       # beyond f = 3 the gamut clips
    assert abs(c[0] - chroma(stretched(medium))) < 0.5 and c[0] < c[1] < c[2]


@pytest.mark.parametrize("t", [8, 18])
def test_neutral_level_is_identity(t, medium):
    level = 1 if t == 8 else 3                       # factor 1 / shift 0
    ref = stretched(medium)
    assert float((distort(ref, t, level) - ref).abs().max()) <= 1 / 255 + 1e-6


def test_contrast_level_3_nearest_identity(medium):
    ref = stretched(medium)
    err = [psnr(ref, distort(medium, 25, lv)) for lv in range(1, 6)]
    assert max(err[1:4]) == max(err) and err[2] > err[0] and err[2] > err[4]


@pytest.mark.parametrize("t", [t for t, d in DISTORTIONS.items() if d.random])
def test_seeded_is_deterministic(t, small):
    a = distort(small, t, 4, seeded(7))
    b = distort(small, t, 4, seeded(7))
    c = distort(small, t, 4, seeded(8))
    assert torch.equal(a, b)
    if t != 3:                                        # motion blur: another angle may round the same
        assert not torch.equal(a, c)


def test_continuous_level(small):
    assert level_parameter(9, 4.5) == pytest.approx(260)
    assert level_parameter(25, 3.5) == pytest.approx(-0.2)
    assert level_parameter(1, 2) == 0.5
    y = distort(small, 1, 3.5)
    p = [psnr(small, distort(small, 1, lv)) for lv in (3, 3.5, 4)]
    assert p[0] > p[1] > p[2] and y.shape == small.shape


def test_colour_round_trips():
    x = make_image(16, 16)[None].double()
    assert torch.allclose(lab_to_rgb(rgb_to_lab(x)), x, atol=1e-6)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-6)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-6)
    white = torch.ones(1, 3, 1, 1, dtype=torch.float64)
    assert torch.allclose(rgb_to_lab(white).flatten(), torch.tensor([100.0, 0, 0], dtype=torch.float64), atol=1e-3)
    red = torch.tensor([1.0, 0, 0], dtype=torch.float64).view(1, 3, 1, 1)
    assert torch.allclose(rgb_to_lab(red).flatten(), torch.tensor([53.24, 80.09, 67.20], dtype=torch.float64), atol=0.05)
    assert torch.allclose(rgb_to_ycbcr(white).flatten(), torch.tensor([235, 128, 128], dtype=torch.float64) / 255, atol=1e-3)


@pytest.mark.parametrize("sigma, level", [(0.5, 2), (2.0, 4), (5.0, 5)])
def test_gaussian_blur_matches_recipe(sigma, level):
    """Type 1 = stretch -> Gaussian (size 2*ceil(2 sigma)+1, replicated edges) -> stretch -> round, computed
    independently with numpy/scipy in float64."""
    ndimage = pytest.importorskip("scipy.ndimage")
    x = make_image(40, 56, seed=5) * 0.8 + 0.1                      # not already in [0, 1] end to end
    a = x.permute(1, 2, 0).numpy().astype(np.float64)

    def mapmm(v):
        return (v - v.min()) / (v.max() - v.min())

    r = math.ceil(2 * sigma)
    t = np.arange(-r, r + 1, dtype=np.float64)
    k2 = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    k2 /= k2.sum()
    blurred = np.stack([ndimage.correlate(mapmm(a)[..., c], k2, mode="nearest") for c in range(3)], -1)
    expected = np.round(mapmm(blurred) * 255)
    got = (distort(x, 1, level) * 255).round().permute(1, 2, 0).numpy()
    diff = np.abs(got - expected)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999            # float32 vs float64 at .5 ties only
