import numpy as np
import pytest
import torch

from gsn_metric.train.losses import (
    GSNTrainingLoss,
    listwise_kl_loss,
    norm_in_norm_loss,
    soft_rank,
    soft_srcc_loss,
)

PRED = np.array([0.2, 0.9, 0.4, 0.7])
MOS = np.array([0.1, 0.8, 0.6, 0.5])


def _t(a, grad=False):
    return torch.tensor(a, dtype=torch.float32, requires_grad=grad)


def _norm(x):
    c = x - x.mean()
    return c / np.sqrt((c ** 2).sum())


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_norm_in_norm_matches_hand_computation():
    expected = ((_norm(PRED) - _norm(MOS)) ** 2).sum() / 4
    plcc = np.corrcoef(PRED, MOS)[0, 1]
    assert expected == pytest.approx((1 - plcc) / 2)
    got = norm_in_norm_loss(_t(PRED), _t(MOS)).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_norm_in_norm_is_scale_and_shift_invariant_and_zero_when_linear():
    assert norm_in_norm_loss(_t(3 * PRED + 7), _t(MOS)).item() == pytest.approx(
        norm_in_norm_loss(_t(PRED), _t(MOS)).item(), rel=1e-5)
    assert norm_in_norm_loss(_t(2 * MOS - 1), _t(MOS)).item() == pytest.approx(0, abs=1e-6)
    assert norm_in_norm_loss(_t(-MOS), _t(MOS)).item() == pytest.approx(1, abs=1e-6)


def test_listwise_kl_matches_hand_computation():
    w_hat, w = _softmax(PRED), _softmax(MOS)
    expected = (w_hat * np.log(w_hat / w)).sum()
    assert listwise_kl_loss(_t(PRED), _t(MOS)).item() == pytest.approx(expected, rel=1e-5)
    w_hat, w = _softmax(PRED / 0.5), _softmax(MOS / 0.5)
    expected = (w_hat * np.log(w_hat / w)).sum()
    assert listwise_kl_loss(_t(PRED), _t(MOS), temperature=0.5).item() == pytest.approx(expected, rel=1e-5)


def test_listwise_kl_is_stable_for_large_scores():
    value = listwise_kl_loss(_t(PRED * 1000), _t(MOS * 1000))
    assert torch.isfinite(value)


def test_soft_rank_tends_to_average_ranks():
    x = _t([3.0, 1.0, 2.0, 2.0])
    assert torch.allclose(soft_rank(x, temperature=1e-4), _t([4.0, 1.0, 2.5, 2.5]))
    # scale invariant: t is in units of the batch std
    assert torch.allclose(soft_rank(x, 0.3), soft_rank(100 * x, 0.3), atol=1e-5)


def test_soft_srcc_matches_hand_computation():
    t = 0.1
    scale = t * PRED.std(ddof=1)
    r_pred = 0.5 + (1 / (1 + np.exp(-(PRED[:, None] - PRED[None, :]) / scale))).sum(1)
    r_mos = np.array([1.0, 4.0, 3.0, 2.0])
    expected = (1 - (_norm(r_pred) * _norm(r_mos)).sum()) / 2
    assert soft_srcc_loss(_t(PRED), _t(MOS), temperature=t).item() == pytest.approx(expected, rel=1e-5)
    # perfectly monotone: the surrogate approaches 0 as t -> 0
    assert soft_srcc_loss(_t(np.exp(MOS)), _t(MOS), temperature=1e-3).item() == pytest.approx(0, abs=1e-6)


def test_total_is_weighted_sum_and_logs_terms():
    loss = GSNTrainingLoss(alpha=0.1, beta=0.2, mse_weight=1.0, rank_weight=0.3)
    total, terms = loss(_t(PRED, grad=True), _t(MOS))
    assert set(terms) == {"total", "mse", "pair", "list", "rank"}
    expected = terms["mse"] + 0.1 * terms["pair"] + 0.2 * terms["list"] + 0.3 * terms["rank"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["mse"].item() == pytest.approx(((PRED - MOS) ** 2).mean(), rel=1e-5)
    assert total.dtype == torch.float32 and not terms["pair"].requires_grad


def test_accepts_n_by_1_predictions():
    loss = GSNTrainingLoss()
    a, _ = loss(_t(PRED)[:, None], _t(MOS))
    b, _ = loss(_t(PRED), _t(MOS))
    assert a.item() == pytest.approx(b.item())


def test_size_mismatch_raises():
    with pytest.raises(ValueError):
        GSNTrainingLoss()(_t(PRED), _t(MOS[:3]))


@pytest.mark.parametrize("pred, mos", [
    ([0.3], [0.7]),                          # batch of one
    ([0.5, 0.5, 0.5, 0.5], MOS),             # all-equal predictions
    (PRED, [0.5, 0.5, 0.5, 0.5]),            # all-equal MOS
    ([0.1, 0.1, 0.1], [0.1, 0.1, 0.1]),      # both
])
def test_degenerate_batches_give_finite_values_and_gradients(pred, mos):
    p = _t(pred, grad=True)
    total, terms = GSNTrainingLoss(rank_weight=0.1)(p, _t(mos))
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(v) for v in terms.values())
    assert torch.isfinite(p.grad).all()
    if len(pred) == 1:
        assert terms["pair"] == 0 and terms["list"] == 0 and terms["rank"] == 0


def test_gradients_are_finite_and_descend():
    p = _t(PRED, grad=True)
    loss = GSNTrainingLoss(rank_weight=0.1)
    opt = torch.optim.SGD([p], lr=0.05)
    first = None
    for _ in range(50):
        opt.zero_grad()
        total, _ = loss(p, _t(MOS))
        total.backward()
        assert torch.isfinite(p.grad).all()
        opt.step()
        first = total.item() if first is None else first
    assert total.item() < first


def test_anchor_loss_is_zero_only_when_references_top_the_scale_and_lead_their_distortions():
    from gsn_metric.train.losses import GSNTrainingLoss, anchor_loss

    own = torch.ones(4)
    assert anchor_loss(torch.tensor([0.2, 0.5, 0.9, 1.0]), own) == 0
    # a reference at 0.8 (0.04 below the top, squared) and one distorted image 0.3 above its reference
    value = anchor_loss(torch.tensor([0.5, 1.3]), torch.tensor([0.8, 1.0]))
    assert value.item() == pytest.approx((0.04 + 0.0) / 2 + (0.0 + 0.3) / 2)
    with pytest.raises(ValueError, match="needs own"):
        GSNTrainingLoss(anchor_weight=1.0)(torch.rand(4), torch.rand(4))
    total, terms = GSNTrainingLoss(anchor_weight=2.0)(torch.tensor([0.5, 1.3]), torch.tensor([0.4, 0.6]),
                                                      torch.tensor([0.8, 1.0]))
    assert terms["anchor"].item() == pytest.approx(value.item())
    base, _ = GSNTrainingLoss()(torch.tensor([0.5, 1.3]), torch.tensor([0.4, 0.6]))
    assert total.item() == pytest.approx(base.item() + 2.0 * value.item())


def test_adversarial_loss_pushes_only_the_attacked_scores_down():
    from gsn_metric.train.losses import GSNTrainingLoss, adversarial_loss

    pred = torch.tensor([0.5, 0.7], requires_grad=True)
    pred_adv = torch.tensor([0.4, 0.9], requires_grad=True)
    value = adversarial_loss(pred_adv, pred)
    assert value.item() == pytest.approx(0.1)  # only the second attack helped, by 0.2; the mean of (0, 0.2)
    value.backward()
    assert pred.grad is None and pred_adv.grad.tolist() == [0.0, 0.5]  # the clean scores are not pulled up
    with pytest.raises(ValueError, match="pred_adv"):
        GSNTrainingLoss(adversarial_weight=1.0)(torch.rand(4), torch.rand(4))
    _, terms = GSNTrainingLoss(adversarial_weight=1.0)(pred, torch.rand(2), pred_adv=pred_adv)
    assert terms["adversarial"].item() == pytest.approx(0.1)
