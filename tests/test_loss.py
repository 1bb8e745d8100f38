from pathlib import Path

import pytest
import torch

import gsn_metric


def test_score_form_is_differentiable_and_optimising_it_raises_the_score(tiny_weights):
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 3, 64, 64, generator=g)
    dist = (ref + 0.2 * torch.randn(ref.shape, generator=g)).clamp(0, 1).requires_grad_(True)
    loss_fn = gsn_metric.GSNLoss(tiny_weights, device="cpu", form="score")
    assert not any(p.requires_grad for p in loss_fn.parameters())
    loss = loss_fn(dist, ref)
    assert loss.shape == ()
    loss.backward()
    assert torch.isfinite(dist.grad).all() and dist.grad.abs().sum() > 0

    metric = gsn_metric.GSNScore(tiny_weights, device="cpu")
    before = metric(ref, dist.detach())
    opt = torch.optim.Adam([dist], lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        loss_fn(dist, ref).backward()
        opt.step()
        with torch.no_grad():
            dist.clamp_(0, 1)
    assert (metric(ref, dist.detach()) > before).all()


def test_loss_scale_reduction_and_gradient_to_the_reference(tiny_weights):
    ref = torch.rand(3, 3, 48, 48, requires_grad=True)
    dist = torch.rand(3, 3, 48, 48)
    per_pair = gsn_metric.GSNLoss(tiny_weights, device="cpu", reduction="none", form="score")(dist, ref)
    score = gsn_metric.GSNScore(tiny_weights, device="cpu")(ref, dist)
    lo, hi = 1.0, 5.0  # the fixture's score range
    torch.testing.assert_close(per_pair, (hi - score) / (hi - lo))
    per_pair.sum().backward()
    assert torch.isfinite(ref.grad).all() and ref.grad.abs().sum() > 0


def test_loss_works_inside_autocast(tiny_weights):
    ref = torch.rand(1, 3, 48, 48)
    dist = torch.rand(1, 3, 48, 48, requires_grad=True)
    loss_fn = gsn_metric.GSNLoss(tiny_weights, device="cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(dist, ref)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(dist.grad).all()
    # bfloat16 has an 8-bit mantissa; the loss stays close to its float32 value
    assert loss.item() == pytest.approx(loss_fn(dist, ref).item(), abs=0.05)


def test_loss_and_functional_take_the_metric_options(tiny_weights):
    ref, dist = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48)
    metric = gsn_metric.GSNScore(tiny_weights, device="cpu", patches="grid", stride=8, fold=False)
    loss = gsn_metric.GSNLoss(tiny_weights, device="cpu", patches="grid", stride=8, fold=False, form="score")
    lo, hi = metric.info.score_range
    torch.testing.assert_close(loss(dist, ref), (hi - metric(ref, dist)[0]) / (hi - lo))
    torch.testing.assert_close(gsn_metric.gsn(ref, dist, tiny_weights, "cpu", "grid", stride=8, fold=False),
                               metric(ref, dist))
    with pytest.raises(ValueError, match="input_range"):
        gsn_metric.GSNScore(tiny_weights, device="cpu", input_range=(1, 0))


def _minimise(loss_fn, x: torch.Tensor, ref: torch.Tensor, steps: int) -> None:
    """Adam (lr 0.01) on the pixels of ``x`` with ``loss_fn(x, ref)`` as the only objective, clamped to [0, 1]:
    benchmarks/as_loss.py's protocol."""
    opt = torch.optim.Adam([x], lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(x, ref).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)


def test_anchored_loss_is_zero_exactly_at_the_reference_and_positive_elsewhere(tiny_weights):
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(3, 3, 40, 48, generator=g)
    loss_fn = gsn_metric.GSNLoss(tiny_weights, device="cpu", reduction="none")
    assert loss_fn.form == "anchored"
    assert (loss_fn(ref, ref) == 0).all()
    for other in (ref.flip(-1), (ref + 0.01 * torch.randn(ref.shape, generator=g)).clamp(0, 1), ref * 0.5):
        assert (loss_fn(other, ref) > 0).all()


def test_anchored_loss_is_its_two_terms(tiny_weights):
    from gsn_metric.loss import feature_distance

    g = torch.Generator().manual_seed(2)
    ref, dist = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    loss = gsn_metric.GSNLoss(tiny_weights, device="cpu", reduction="none", score_weight=0.5)(dist, ref)
    metric = gsn_metric.GSNScore(tiny_weights, device="cpu")
    stem = metric.net.branch.stem
    lo, hi = metric.info.score_range
    expected = feature_distance(stem(ref), stem(dist)) + 0.5 * (metric(ref, ref) - metric(ref, dist)).abs() / (hi - lo)
    torch.testing.assert_close(loss, expected)
    # The default (score_weight 0) is the feature distance alone, and runs only the stem: no head, no deeper block.
    default = gsn_metric.GSNLoss(tiny_weights, device="cpu", reduction="none")
    assert default.score_weight == 0
    for module in (default.metric.net.fusion, *default.metric.net.branch.blocks):
        module.register_forward_pre_hook(lambda *_: pytest.fail("the default loss ran more than the stem"))
    torch.testing.assert_close(default(dist, ref), feature_distance(stem(ref), stem(dist)))


def test_optimising_the_anchored_loss_brings_the_image_back_to_the_reference(tiny_weights):
    """The property the default form exists for (benchmarks/as_loss.py measures it on the real weights): from a
    noisy start, Adam on the pixels with the loss as the only objective moves towards the reference."""
    from gsn_metric.train.peers import psnr

    g = torch.Generator().manual_seed(3)
    ref = torch.rand(2, 3, 32, 32, generator=g)
    x = (ref + 0.2 * torch.randn(ref.shape, generator=g)).clamp(0, 1).requires_grad_(True)
    before = psnr(ref, x.detach())
    loss_fn = gsn_metric.GSNLoss(tiny_weights, device="cpu")
    _minimise(loss_fn, x, ref, steps=60)
    assert (psnr(ref, x.detach()) > before + 3).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"form": "lpips"}, "form must be one of"),
    ({"score_weight": -1}, "score_weight must be"),
    ({"score_weight": float("nan")}, "score_weight must be"),
    ({"score_weight": True}, "score_weight must be"),
    ({"form": "score", "score_weight": 0.5}, "only applies to form='anchored'"),
    ({"reduction": "max"}, "reduction must be"),
])
def test_loss_options_are_checked(tiny_weights, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gsn_metric.GSNLoss(tiny_weights, device="cpu", **kwargs)


@pytest.mark.slow
def test_default_weights_anchored_loss_recovers_a_blurred_crop_without_passing_the_reference():
    """On the shipped default: 8 Adam steps from a blurred 192×192 crop of the example photo raise PSNR, and
    the GSN score of the result stays at or below the reference's own."""
    import torch.nn.functional as F

    from gsn_metric.images import load_image
    from gsn_metric.train.peers import psnr

    ref = load_image(Path(__file__).resolve().parents[1] / "examples" / "reference.png")[None, :, 96:288, 160:352].contiguous()
    blur = F.avg_pool2d(F.pad(ref, (2, 2, 2, 2), mode="reflect"), 5, 1)
    loss_fn = gsn_metric.GSNLoss(device="cpu")
    x = blur.clone().requires_grad_(True)
    _minimise(loss_fn, x, ref, steps=8)
    with torch.no_grad():
        assert psnr(ref, x) > psnr(ref, blur) + 1
        assert loss_fn.metric(ref, x) <= loss_fn.metric(ref, ref) + 0.05
