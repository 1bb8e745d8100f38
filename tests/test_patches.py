import itertools

import pytest
import torch

from gsn_metric.patches import extract_patches, five_boxes, grid_boxes, pad_to, paired_random_crop


def test_five_boxes_are_the_corners_and_the_centre():
    assert five_boxes(384, 512, 192) == [(0, 0), (0, 320), (192, 0), (192, 320), (96, 160)]


def test_five_patches_cut_the_right_pixels():
    img = torch.arange(2 * 3 * 300 * 400, dtype=torch.float32).view(2, 3, 300, 400)
    p = extract_patches(img, "five", 192)
    assert p.shape == (2, 5, 3, 192, 192)
    torch.testing.assert_close(p[1, 3], img[1, :, 108:, 208:])
    torch.testing.assert_close(p[0, 4], img[0, :, 54:246, 104:296])


@pytest.mark.parametrize("h,w,stride", [(384, 512, None), (192, 192, None), (200, 1000, 50), (193, 500, 96)])
def test_grid_covers_every_pixel_and_stays_inside(h, w, stride):
    boxes = grid_boxes(h, w, 192, stride)
    covered = torch.zeros(h, w, dtype=torch.bool)
    for t, l in boxes:
        assert 0 <= t <= h - 192 and 0 <= l <= w - 192
        covered[t : t + 192, l : l + 192] = True
    assert covered.all()
    tops = sorted({t for t, _ in boxes})
    assert all(b - a <= (stride or 96) for a, b in itertools.pairwise(tops))


def test_small_images_are_reflect_padded_centred():
    img = torch.rand(1, 3, 100, 300)
    p = pad_to(img, 192)
    assert p.shape == (1, 3, 192, 300)
    # 92 rows added, 46 on top: the original sits in the middle and the pad mirrors it
    torch.testing.assert_close(p[..., 46:146, :], img)
    torch.testing.assert_close(p[..., 45, :], img[..., 1, :])
    torch.testing.assert_close(p[..., 146, :], img[..., -2, :])
    # tiny images need repeated reflection and still work (one patch: their five boxes are the same)
    assert extract_patches(torch.rand(1, 3, 5, 7), "five", 192).shape == (1, 1, 3, 192, 192)
    with pytest.raises(ValueError, match="too small"):
        pad_to(torch.rand(1, 3, 1, 10), 192)


def test_full_mode_keeps_the_image_and_patches_keep_gradients():
    img = torch.rand(2, 3, 200, 250, requires_grad=True)
    assert extract_patches(img, "full", 192).shape == (2, 1, 3, 200, 250)
    extract_patches(img, "five", 192).sum().backward()
    assert img.grad[0, 0, 0, 0] == 1 and img.grad.max() >= 2  # corners once, overlaps more
    with pytest.raises(ValueError, match="patches must be one of"):
        extract_patches(img, "random")


def test_paired_random_crop_is_the_same_for_both_and_seeded():
    ref = torch.rand(3, 220, 260)
    dist = ref * 0.5
    r1, d1 = paired_random_crop(ref, dist, 192, torch.Generator().manual_seed(3))
    r2, _ = paired_random_crop(ref, dist, 192, torch.Generator().manual_seed(3))
    assert r1.shape == (3, 192, 192)
    torch.testing.assert_close(d1, r1 * 0.5)
    torch.testing.assert_close(r1, r2)
    flips = {bool(torch.equal(paired_random_crop(ref, dist, 192, torch.Generator().manual_seed(s))[0],
                              paired_random_crop(ref, dist, 192, torch.Generator().manual_seed(s), flip=False)[0]))
             for s in range(20)}
    assert flips == {True, False}


@pytest.mark.parametrize("stride", [0, -1, 193, 2.5, True])
def test_grid_refuses_strides_that_cannot_cover(stride):
    with pytest.raises(ValueError, match="stride must be an integer from 1 to the patch size 192"):
        grid_boxes(300, 400, 192, stride)


def test_five_patches_of_an_image_no_larger_than_a_patch_are_one():
    img = torch.rand(2, 3, 32, 32)
    once = extract_patches(img, "five", 32)
    assert once.shape == (2, 1, 3, 32, 32) and torch.equal(once[:, 0], img)
    assert extract_patches(torch.rand(1, 3, 20, 25), "five", 32).shape == (1, 1, 3, 32, 32)  # padded to one patch
    assert extract_patches(torch.rand(1, 3, 32, 40), "five", 32).shape[1] == 5  # wider: five distinct boxes
