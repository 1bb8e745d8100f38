import pytest
import torch

import gsn_metric


def test_loss_is_differentiable_and_optimising_it_raises_the_score(tiny_weights):
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 3, 64, 64, generator=g)
    dist = (ref + 0.2 * torch.randn(ref.shape, generator=g)).clamp(0, 1).requires_grad_(True)
    loss_fn = gsn_metric.GSNLoss(tiny_weights, device="cpu")
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
    per_pair = gsn_metric.GSNLoss(tiny_weights, device="cpu", reduction="none")(dist, ref)
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
    loss = gsn_metric.GSNLoss(tiny_weights, device="cpu", patches="grid", stride=8, fold=False)
    lo, hi = metric.info.score_range
    torch.testing.assert_close(loss(dist, ref), (hi - metric(ref, dist)[0]) / (hi - lo))
    torch.testing.assert_close(gsn_metric.gsn(ref, dist, tiny_weights, "cpu", "grid", stride=8, fold=False),
                               metric(ref, dist))
    with pytest.raises(ValueError, match="input_range"):
        gsn_metric.GSNScore(tiny_weights, device="cpu", input_range=(1, 0))
