"""Training loss of GSN (paper eq. 3-9): ``MSE + alpha * L_pair + beta * L_list`` (+ an optional rank term).

All terms act on one batch of N predicted scores ``pred`` and N human scores ``mos`` (higher = better).

- ``mse``: plain mean squared error on the scores (the paper's "common mean square error supervision").
  It is the only term that fixes the scale and offset of the prediction, so MOS should be on a unit-ish
  scale (the training loop rescales it; the weights' metadata records how).
- ``pair``: Norm-in-Norm (Li et al., ACM MM 2020) with p = q = 2. Both vectors are centred and divided by
  their L2 norm, ``S = (Q - mean Q) / (eps + ||Q - mean Q||_2)``, and the loss is Li et al.'s scaled form
  ``(||S_hat - S||_2 / 2) ** 2``. Since ``||S_hat - S||^2 = 2 - 2 * PLCC``, this equals ``(1 - PLCC) / 2``,
  lies in [0, 1], and does not depend on N. The paper prints ``MSE(S_hat, S)``, which is the same
  quantity times ``4 / N`` (1/8 of ours at the paper's batch of 32); we keep Li et al.'s scale so that
  alpha means the same at any batch size, including a short last batch.
- ``list``: listwise KL (paper eq. 7-9), ``W = softmax(Q / t)``, ``W_hat = softmax(Q_hat / t)`` over the
  batch, ``KL = sum W_hat * (log W_hat - log W)`` in the paper's direction, computed with log_softmax.
  The softmax is not scale invariant: t = 1 is the paper's choice for MOS on a unit-ish scale.
- ``rank`` (optional, from ASNA, NTIRE 2021): ``(1 - SRCC_soft) / 2`` where SRCC_soft is the Pearson
  correlation between soft ranks of the predictions and the exact (average-tie) ranks of MOS. Soft ranks
  are ``r_i = 1/2 + sum_j sigmoid((x_i - x_j) / (t * std(x)))``: O(N^2), exact gradients, no compiled
  extension (``torchsort`` ships only as a C++ source build on CPU; ``fast-soft-sort`` is not on PyPI),
  and dividing by the batch std makes it scale invariant, so it cannot be lowered by spreading the
  predictions apart.

- ``anchor`` (optional, issue 16): ``mean((own − 1)²) + mean(relu(pred − own))`` where ``own`` is each
  reference's score against itself: identity pairs are taught the top of the (unit) scale, and a distorted
  image scored above its own reference is penalised. The paper's loss has neither, so nothing in it makes the
  reference GSN's best input; without them the score can be driven far past the top of its scale.
- ``adversarial`` (optional, issue 16): ``mean(relu(pred_adv − pred))`` with ``pred`` detached, where
  ``pred_adv`` scores the distorted images after a small L∞ attack that raised the model's score
  (``adversarial.perturb``): a perturbation people cannot see may not make an image score better.

With N = 1 the pair, list and rank terms are 0 (they compare items within the batch). The terms are
computed in float64 (float32 on MPS): then the mean of N equal float32 values is exact, all-equal
predictions centre to exactly 0, and the eps in the norm keeps values and gradients finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GSNTrainingLoss",
    "adversarial_loss",
    "anchor_loss",
    "listwise_kl_loss",
    "norm_in_norm_loss",
    "normalize_scores",
    "soft_rank",
    "soft_srcc_loss",
]


def _prepare(pred: Tensor, mos: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten both to (N,) in a wide float dtype; raise if the sizes differ or the batch is empty."""
    pred, mos = pred.reshape(-1), mos.reshape(-1)
    if pred.numel() != mos.numel() or pred.numel() == 0:
        raise ValueError(f"pred and mos must hold the same non-zero number of scores, "
                         f"got {pred.numel()} and {mos.numel()}")
    dtype = torch.float32 if pred.device.type == "mps" else torch.float64  # MPS has no float64
    return pred.to(dtype), mos.to(device=pred.device, dtype=dtype)


def _zero(pred: Tensor) -> Tensor:
    """A 0 that stays attached to the graph, so ``backward()`` works for terms that vanish."""
    return pred.sum() * 0.0


def normalize_scores(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Centre (N,) scores and divide by their L2 norm: ``(x - mean x) / (eps + ||x - mean x||_2)``."""
    centred = x - x.mean()
    return centred / (eps + torch.linalg.vector_norm(centred))


def norm_in_norm_loss(pred: Tensor, mos: Tensor, eps: float = 1e-8) -> Tensor:
    """Norm-in-Norm pair term, p = q = 2: ``(||S_hat - S||_2 / 2) ** 2 = (1 - PLCC) / 2``, in [0, 1].

    pred, mos: (N,) or (N, 1). Returns a scalar; 0 for N = 1.
    """
    pred, mos = _prepare(pred, mos)
    if pred.numel() < 2:
        return _zero(pred)
    diff = normalize_scores(pred, eps) - normalize_scores(mos, eps)
    return diff.pow(2).sum() / 4.0  # Li et al.'s scale 2^max(1, 1/q) * N^max(0, 1/p - 1/q) = 2, squared


def anchor_loss(pred: Tensor, own: Tensor) -> Tensor:
    """The reference anchor: ``mean((own − 1)²) + mean(relu(pred − own))`` for (N,) scores on the unit scale,
    ``pred`` of the distorted images and ``own`` of each reference against itself; 0 when every reference scores
    1 and no distorted image scores above its reference."""
    pred, own = _prepare(pred, own)
    return (own - 1).pow(2).mean() + F.relu(pred - own).mean()


def adversarial_loss(pred_adv: Tensor, pred: Tensor) -> Tensor:
    """``mean(relu(pred_adv − pred))`` for (N,) scores, ``pred`` (the unperturbed pairs) detached: the perturbed
    images are pushed down to their clean score, never the clean ones up; 0 when no perturbation helped."""
    pred_adv, pred = _prepare(pred_adv, pred.detach())
    return F.relu(pred_adv - pred).mean()


def listwise_kl_loss(pred: Tensor, mos: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(softmax(pred / t) || softmax(mos / t))`` over the batch (paper eq. 7-9), >= 0.

    pred, mos: (N,) or (N, 1). Returns a scalar; 0 for N = 1.
    """
    pred, mos = _prepare(pred, mos)
    if pred.numel() < 2:
        return _zero(pred)
    log_w_hat = F.log_softmax(pred / temperature, dim=0)
    log_w = F.log_softmax(mos / temperature, dim=0)
    return (log_w_hat.exp() * (log_w_hat - log_w)).sum()


def soft_rank(x: Tensor, temperature: float = 0.1, eps: float = 1e-8) -> Tensor:
    """Differentiable ranks of (N,) scores, 1 = lowest, ties share the average rank.

    ``r_i = 1/2 + sum_j sigmoid((x_i - x_j) / (t * std(x)))``; t -> 0 gives the exact average ranks.
    t is in units of the batch standard deviation, so the result does not depend on the scale of x.
    """
    x = x.reshape(-1)
    if x.numel() < 2:
        return torch.ones_like(x)
    scale = temperature * (x.std() + eps)
    return 0.5 + torch.sigmoid((x[:, None] - x[None, :]) / scale).sum(dim=1)


def _exact_rank(x: Tensor) -> Tensor:
    """Average-tie ranks of (N,) values, 1 = lowest (the step-function limit of ``soft_rank``)."""
    diff = x[:, None] - x[None, :]
    return 0.5 + (diff > 0).sum(dim=1).to(x.dtype) + 0.5 * (diff == 0).sum(dim=1).to(x.dtype)


def soft_srcc_loss(pred: Tensor, mos: Tensor, temperature: float = 0.1, eps: float = 1e-8) -> Tensor:
    """ASNA-style rank loss ``(1 - SRCC_soft) / 2`` in [0, 1]: soft ranks of pred vs exact ranks of mos.

    pred, mos: (N,) or (N, 1). Returns a scalar; 0 for N = 1.
    """
    pred, mos = _prepare(pred, mos)
    if pred.numel() < 2:
        return _zero(pred)
    rho = (normalize_scores(soft_rank(pred, temperature, eps), eps)
           * normalize_scores(_exact_rank(mos), eps)).sum()
    return (1.0 - rho) / 2.0


class GSNTrainingLoss(nn.Module):
    """``mse_weight * MSE + alpha * L_pair + beta * L_list + rank_weight * L_rank + anchor_weight * L_anchor
    + adversarial_weight * L_adversarial`` (see the module doc).

    Args:
        alpha: weight of the Norm-in-Norm pair term (paper: 0.1).
        beta: weight of the listwise KL term (paper: 0.1).
        mse_weight: weight of the plain MSE on the scores (paper: 1).
        rank_weight: weight of ASNA's soft-SRCC term (paper: 0; the ablation swaps beta for this).
        anchor_weight: weight of the reference anchor (paper: 0; issue 16); needs ``own`` in ``forward``.
        adversarial_weight: weight of the adversarial hinge (paper: 0; issue 16); needs ``pred_adv``.
        list_temperature: t of the softmax in the list term, in MOS units.
        rank_temperature: t of the soft ranks, in units of the batch std of the predictions.
        eps: added to the L2 norms so that constant scores give finite values and gradients.

    ``forward(pred, mos, own=None, pred_adv=None)``: pred (N,) or (N, 1) predicted scores, mos (N,) human
    scores, own (N,) each reference's score against itself (``GSN(..., anchor=True)``; required when
    ``anchor_weight`` > 0), pred_adv (N,) the scores of the attacked distorted images (required when
    ``adversarial_weight`` > 0). Returns ``(total, terms)``: the scalar float32 loss to back-propagate, and a
    dict of detached float32 scalars ``{"total", "mse", "pair", "list", "rank"}`` (and ``"anchor"`` with
    ``own``, ``"adversarial"`` with ``pred_adv``) for logging (tensors, so no device sync until the caller asks
    for ``.item()``). A term whose weight is 0 is logged but left out of the graph.
    """

    def __init__(self, alpha: float = 0.1, beta: float = 0.1, mse_weight: float = 1.0,
                 rank_weight: float = 0.0, anchor_weight: float = 0.0, adversarial_weight: float = 0.0, *,
                 list_temperature: float = 1.0, rank_temperature: float = 0.1, eps: float = 1e-8) -> None:
        super().__init__()
        self.anchor_weight, self.adversarial_weight = anchor_weight, adversarial_weight
        self.alpha, self.beta, self.mse_weight, self.rank_weight = alpha, beta, mse_weight, rank_weight
        self.list_temperature, self.rank_temperature, self.eps = list_temperature, rank_temperature, eps

    def forward(self, pred: Tensor, mos: Tensor, own: Tensor | None = None,
                pred_adv: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        if self.anchor_weight and own is None:
            raise ValueError("anchor_weight > 0 needs own, the references' scores against themselves")
        if self.adversarial_weight and pred_adv is None:
            raise ValueError("adversarial_weight > 0 needs pred_adv, the scores of the attacked images")
        wide_pred, wide_mos = _prepare(pred, mos)
        terms = {
            "mse": F.mse_loss(wide_pred, wide_mos),
            "pair": norm_in_norm_loss(wide_pred, wide_mos, self.eps),
            "list": listwise_kl_loss(wide_pred, wide_mos, self.list_temperature),
            "rank": soft_srcc_loss(wide_pred, wide_mos, self.rank_temperature, self.eps),
        }
        if own is not None:
            terms["anchor"] = anchor_loss(pred, own)
        if pred_adv is not None:
            terms["adversarial"] = adversarial_loss(pred_adv, pred)
        weights = {"mse": self.mse_weight, "pair": self.alpha, "list": self.beta, "rank": self.rank_weight,
                   "anchor": self.anchor_weight, "adversarial": self.adversarial_weight}
        total = sum((weights[k] * v for k, v in terms.items() if weights[k] != 0), _zero(wide_pred))
        total = total.to(torch.float32)
        logged = {"total": total.detach()}
        logged.update({k: v.detach().to(torch.float32) for k, v in terms.items()})
        return total, logged

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, mse_weight={self.mse_weight}, "
                f"rank_weight={self.rank_weight}, anchor_weight={self.anchor_weight}, "
                f"adversarial_weight={self.adversarial_weight}, list_temperature={self.list_temperature}, "
                f"rank_temperature={self.rank_temperature}")
