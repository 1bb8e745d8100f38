import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gsn_metric.train.evaluate import (
    add_arguments,
    breakdown,
    correlations,
    format_table,
    logistic4,
    main,
    predict,
    write_csv,
    write_json,
)

from .train_fixtures import make_kadid_like

RNG = np.random.default_rng(0)
MOS = np.linspace(1.0, 5.0, 40)


def test_monotone_nonlinear_is_perfect_after_the_fit():
    pred = MOS ** 3  # non-linear, strictly increasing
    r = correlations(pred, MOS)
    assert r["srcc"] == pytest.approx(1) and r["krcc"] == pytest.approx(1)
    assert r["fit"] == "logistic"
    # the map back (a cube root) is not exactly a logistic, but close; linear is clearly worse
    assert r["plcc"] > 0.99 and r["plcc"] > r["plcc_linear"]
    assert r["main"] == pytest.approx(r["srcc"] + r["plcc"])
    assert r["n"] == 40


def test_logistic_pred_is_recovered_exactly():
    x = RNG.normal(size=200)
    mos = logistic4(x, 5.0, 1.0, 0.3, 0.7)
    assert correlations(x, mos)["plcc"] == pytest.approx(1, abs=1e-6)


def test_anti_correlated_gives_negative_correlations():
    pred = -np.exp(MOS)
    r = correlations(pred, MOS)
    assert r["srcc"] == pytest.approx(-1) and r["krcc"] == pytest.approx(-1)
    assert r["fit"] == "logistic" and r["plcc"] < -0.99
    assert r["main"] == pytest.approx(r["srcc"] + r["plcc"])


def test_ties_use_average_ranks_and_tau_b():
    pred, mos = [1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]
    r = correlations(pred, mos)
    ranks = np.array([1.5, 1.5, 3.0, 4.0])
    assert r["srcc"] == pytest.approx(np.corrcoef(ranks, [1, 2, 3, 4])[0, 1])
    # 5 concordant pairs, 0 discordant, 1 tie in pred: tau-b = 5 / sqrt((6 - 1) * 6)
    assert r["krcc"] == pytest.approx(5 / math.sqrt(30))
    assert r["fit"].startswith("linear") and r["plcc"] == r["plcc_linear"]  # 4 values: no 4-parameter fit


def test_noisy_data_matches_scipy():
    from scipy import stats

    pred = MOS + RNG.normal(scale=0.8, size=MOS.size)
    r = correlations(pred, MOS)
    assert r["srcc"] == pytest.approx(stats.spearmanr(pred, MOS)[0])
    assert r["krcc"] == pytest.approx(stats.kendalltau(pred, MOS)[0])
    assert r["plcc_linear"] == pytest.approx(stats.pearsonr(pred, MOS)[0])
    assert r["fit"] == "logistic" and 0 < r["plcc"] <= 1


def test_failed_fit_falls_back_to_linear(monkeypatch):
    from scipy import optimize

    def fail(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found: maxfev reached")

    monkeypatch.setattr(optimize, "curve_fit", fail)
    r = correlations(np.exp(MOS), MOS)
    assert r["fit"].startswith("linear (logistic fit failed") and r["plcc"] == r["plcc_linear"]


@pytest.mark.parametrize("pred, mos", [([1.0], [2.0]), ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]),
                                       ([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])])
def test_undefined_correlations_are_nan(pred, mos):
    r = correlations(pred, mos)
    assert math.isnan(r["srcc"]) and math.isnan(r["plcc"]) and r["fit"].startswith("none")


def test_bad_input_raises():
    with pytest.raises(ValueError):
        correlations([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        correlations([1.0, np.nan], [1.0, 2.0])


def _grouped():
    pred = np.concatenate([MOS, -MOS])
    mos = np.concatenate([MOS, MOS])
    types = ["good"] * 40 + ["inverted"] * 40
    return pred, mos, types


def test_breakdown_per_type():
    results = breakdown(*_grouped())
    assert list(results) == ["all", "good", "inverted"]
    assert results["good"]["srcc"] == pytest.approx(1) and results["inverted"]["srcc"] == pytest.approx(-1)
    assert results["all"]["n"] == 80 and results["good"]["n"] == 40
    with pytest.raises(ValueError):
        breakdown([1.0, 2.0], [1.0, 2.0], ["a"])


def test_table_csv_and_json(tmp_path):
    results = breakdown(*_grouped())
    results["tiny"] = correlations([1.0], [1.0])  # NaN row
    table = format_table(results)
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["group", "n", "SRCC", "KRCC", "PLCC"]
    assert len(lines) == 2 + len(results) and "inverted" in lines[4] and "-1.0000" in lines[4]

    write_csv(results, tmp_path / "r.csv")
    with open(tmp_path / "r.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["group"] for row in rows] == list(results)
    assert float(rows[1]["srcc"]) == pytest.approx(1) and rows[1]["fit"] == "logistic"

    write_json(results, tmp_path / "r.json", metadata={"weights": "x.safetensors"})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["metadata"]["weights"] == "x.safetensors"
    assert data["results"]["tiny"]["srcc"] is None
    assert data["results"]["good"]["srcc"] == pytest.approx(1)


class MeanDifference(torch.nn.Module):
    """Stand-in for GSN: P×3×S×S, P×3×S×S → P scores; records the chunk sizes it is called with."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(-1.0))
        self.calls = []

    def forward(self, ref, dist):
        assert ref.shape == dist.shape and ref.dim() == 4
        assert not torch.is_grad_enabled()
        self.calls.append(ref.shape[0])
        return self.scale * (dist - ref).abs().mean(dim=(1, 2, 3))


def _pairs(n=7, patches=5, size=8):
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        ref = torch.rand(patches, 3, size, size, generator=g)
        dist = (ref + 0.1 * i * torch.rand(patches, 3, size, size, generator=g)).clamp(0, 1)
        items.append({"ref": ref, "dist": dist, "score": torch.tensor(5.0 - i / 2, dtype=torch.float32),
                      "dis_type": "noise" if i % 2 else "blur"})
    return items


def test_predict_averages_patches_in_bounded_chunks():
    items = _pairs()
    model = MeanDifference().train()
    pred, mos, types = predict(model, items, batch_size=3)
    expected = [-(it["dist"] - it["ref"]).abs().mean(dim=(1, 2, 3)).mean().item() for it in items]
    assert pred.dtype == np.float64 and pred.shape == (7,)
    np.testing.assert_allclose(pred, expected, rtol=1e-6)
    np.testing.assert_allclose(mos, [5.0 - i / 2 for i in range(7)])
    assert types == ["blur", "noise"] * 3 + ["blur"]
    assert max(model.calls) <= 3 and sum(model.calls) == 7 * 5
    assert model.training  # mode restored


def test_predict_feeds_breakdown():
    pred, mos, types = predict(MeanDifference(), _pairs(), batch_size=64)
    results = breakdown(pred, mos, types)
    assert results["all"]["srcc"] == pytest.approx(1)


def test_cli_end_to_end(tmp_path, tiny_weights, capsys):
    make_kadid_like(tmp_path, n_refs=2, size=64)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--dataset", "kadid10k", "--root", str(tmp_path), "--weights", tiny_weights,
                              "--device", "cpu", "--num-workers", "0", "--batch-size", "16",
                              "--csv", str(tmp_path / "out.csv"), "--json", str(tmp_path / "out.json"),
                              "--scores", str(tmp_path / "scores.csv")])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "SRCC" in out and "GBLUR" in out and "AWGN" in out
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["results"]["all"]["n"] == 12 and data["metadata"]["patch_size"] == 32
    with open(tmp_path / "out.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["group"] for row in rows] == ["all", "AWGN", "GBLUR"]
    with open(tmp_path / "scores.csv") as f:
        per_pair = list(csv.DictReader(f))
    assert len(per_pair) == 12 and all(Path(row["dist"]).is_file() for row in per_pair)
    # the per-pair predictions are the ones the correlations were computed from
    redone = correlations([float(r["prediction"]) for r in per_pair], [float(r["score"]) for r in per_pair])
    assert redone["srcc"] == pytest.approx(data["results"]["all"]["srcc"], abs=1e-6)


def test_cli_scores_a_training_runs_val_split_and_lists_only_its_own_flags(tmp_path, tiny_weights):
    # --val-fraction and --seed were listed by `evaluate --help` but ignored (every pair was scored), and the
    # training-only --epoch-length / --continuous-levels were accepted and ignored.
    from gsn_metric.train.datasets import load_dataset

    make_kadid_like(tmp_path, n_refs=4, size=64)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert "--epoch-length" not in parser.format_help() and "--continuous-levels" not in parser.format_help()
    args = parser.parse_args(["--dataset", "kadid10k", "--root", str(tmp_path), "--weights", tiny_weights,
                              "--device", "cpu", "--workers", "0", "--split", "val", "--val-fraction", "0.25",
                              "--seed", "3", "--json", str(tmp_path / "val.json")])
    assert main(args) == 0
    data = json.loads((tmp_path / "val.json").read_text())
    val = load_dataset("kadid10k", tmp_path, split="val", val_fraction=0.25, seed=3)
    assert data["results"]["all"]["n"] == len(val) == 6 and data["metadata"]["split"] == "val"


def test_cli_reports_a_missing_weight_file(tmp_path, capsys):
    make_kadid_like(tmp_path, n_refs=1, size=64)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--dataset", "kadid10k", "--root", str(tmp_path), "--device", "cpu",
                              "--weights", str(tmp_path / "missing.safetensors")])
    assert main(args) == 2
    assert "error" in capsys.readouterr().err
