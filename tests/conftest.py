"""Shared fixtures: tiny GSN models and weight files made inside the tests (no released weights needed)."""

from __future__ import annotations

import json

import pytest
import torch

from gsn_metric import weights as W
from gsn_metric.model import GSN, GSNConfig
from gsn_metric.weights import save_weights

# Same structure as the paper's network (three blocks, attention 7/5/3, residual fusion), a thousandth the cost.
TINY = GSNConfig(stem=4, blocks=((6, 8, 6), (6, 6), (6,)), fusion_channels=4, fusion_size=6)


def randomise_batchnorm(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial statistics so that folding is really exercised."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0), (m.weight, 0.5, 1.5),
                              (m.bias, -0.5, 0.5)):
                t.data.copy_(torch.rand(t.shape, generator=generator) * (hi - lo) + lo)


@pytest.fixture
def tiny_model() -> GSN:
    torch.manual_seed(0)
    model = GSN(TINY)
    randomise_batchnorm(model, torch.Generator().manual_seed(1))
    return model.eval()


@pytest.fixture
def tiny_weights(tmp_path, tiny_model) -> str:
    """A weight file of the tiny model (32×32 patches), with its manifest beside it; score scale 1–5 like KADID."""
    path = tmp_path / "tiny.safetensors"
    save_weights(tiny_model, path, training_data="random (test fixture)", score_name="test", score_range=(1.0, 5.0),
                 patch_size=32)
    return str(path)


@pytest.fixture
def no_release(monkeypatch, tmp_path) -> None:
    """The package's registry as before the first release: a manifest that lists no weights."""
    empty = tmp_path / "no-release"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({"format": 1, "default": None, "weights": {}}))
    monkeypatch.setattr(W, "_bundled_dir", lambda: empty)
