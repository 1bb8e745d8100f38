"""``fit --speedups``: each faster step equals the eager one within a stated tolerance (issue: faster training).

Unit checks of the folded CDC and the multi-tensor optimiser, then whole ``fit`` runs (tiny network, 2 epochs
of 3 steps, CPU) with each speedup against the eager run: the per-epoch training losses and the final weights.
The compiled run is marked slow (inductor compiles the forward and backward graphs on the CPU)."""

from __future__ import annotations

import argparse

import pytest
import torch

from gsn_metric.model import GSN, CDCConv2d
from gsn_metric.train.optim import build_ranger
from gsn_metric.train.speedups import apply_to_model, parse_speedups

from .conftest import TINY
from .test_train_smoke import data_root, fit  # noqa: F401 -- data_root is a fixture used below


def test_folded_cdc_is_the_same_function_with_the_same_gradients():
    torch.manual_seed(0)
    cdc = CDCConv2d(5, 7).double()
    x = torch.randn(2, 5, 9, 9, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for folded in (False, True):
        cdc.fold_centre = folded
        y = cdc(x)
        gx, gw = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum(),
                                     [x, cdc.weight])
        outs.append(y)
        grads.append((gx, gw))
    assert torch.allclose(outs[0], outs[1], atol=1e-12)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-12)


def test_apply_to_model_sets_every_cdc():
    model = GSN(TINY)
    apply_to_model(model, ("fold-cdc",))
    cdcs = [m for m in model.modules() if isinstance(m, CDCConv2d)]
    assert cdcs and all(m.fold_centre for m in cdcs)
    apply_to_model(model, ())
    assert not any(m.fold_centre for m in cdcs)


def test_foreach_ranger_follows_the_per_tensor_one():
    torch.manual_seed(0)
    params = {f: [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))] for f in (False, True)}
    params[True] = [torch.nn.Parameter(p.detach().clone()) for p in params[False]]
    opts = {f: build_ranger(params[f], lr=1e-2, foreach=f) for f in (False, True)}
    for step in range(13):  # two Lookahead synchronisations (k = 6)
        g = [torch.randn(p.shape, generator=torch.Generator().manual_seed(step * 10 + i))
             for i, p in enumerate(params[False])]
        for f in (False, True):
            for p, gi in zip(params[f], g):
                p.grad = gi.clone()
            opts[f].step()
    for a, b in zip(params[False], params[True]):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    assert opts[True].optimizer.defaults["foreach"] is True


def test_parse_speedups():
    assert parse_speedups("fold-cdc, compile,fold-cdc") == ("fold-cdc", "compile")
    assert parse_speedups("") == parse_speedups("none") == ()
    with pytest.raises(argparse.ArgumentTypeError, match="unknown speedup"):
        parse_speedups("fold-cdc,cudagraphs")


def _compare_to_eager(data_root, tmp_path, speedups: str, tol: float) -> None:  # noqa: F811
    runs = {s: fit(data_root, tmp_path / (s or "eager"), "--epochs", "2", "--workers", "0", "--val-every", "0",
                   "--speedups", s) for s in ("", speedups)}
    eager, fast = runs[""], runs[speedups]
    assert fast["args"]["speedups"] == speedups
    losses = [[r["train"]["total"] for r in run["history"]] for run in (eager, fast)]
    assert losses[0] == pytest.approx(losses[1], rel=tol, abs=tol)
    for k, v in eager["model"].items():
        if v.is_floating_point():
            assert torch.allclose(v, fast["model"][k], atol=tol, rtol=tol), k


@pytest.mark.parametrize("speedups", ["fold-cdc", "foreach", "fold-cdc,foreach"])
def test_fit_with_speedups_equals_eager(data_root, tmp_path, speedups):  # noqa: F811
    _compare_to_eager(data_root, tmp_path, speedups, tol=1e-4)


@pytest.mark.slow
def test_fit_compiled_equals_eager(data_root, tmp_path):  # noqa: F811
    pytest.importorskip("torch._inductor")
    _compare_to_eager(data_root, tmp_path, "compile,fold-cdc", tol=1e-3)
