"""Smoke tests of benchmarks/: speed.py's tables come out on a tiny network in seconds (no timing assertions);
quality.py scores a tiny rated data set with a GSN weight file and PSNR; as_loss.py and sr_loss.py run their
protocol at toy size."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gsn_metric
from gsn_metric.train.distortions import NAMES
from gsn_metric.train.synthetic import SyntheticKADID

from .train_fixtures import make_kadid_like, reference_image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_speed_quick_prints_all_tables(capsys):
    speed = load_script("speed")
    speed.main(["--quick", "--device", "cpu", "--repeats", "1", "--batch-sizes", "1", "2", "--reuse-pairs", "4",
                "--reuse-repeats", "1", "--no-compile", "--no-onnx", "--precision-pairs", "2"])
    out = capsys.readouterr().out
    assert "WEIGHTS ARE RANDOM" in out
    for title in ("1. Latency", "2. Throughput", "3. One", "5. 4 pairs", "6. Precisions on this CPU"):
        assert title in out
    assert "| GSNScore fp32 |" in out and "| GSNScore int8 |" in out
    assert "| reference reused (1 reference × 4) |" in out
    for row in ("folded (library default)", "unfolded", "channels_last", "PSNR (plain torch)", "LPIPS", "DISTS"):
        assert row in out
    throughput = [line for line in out.splitlines() if line.startswith(("| 1 | 5 |", "| 2 | 10 |"))]
    assert len(throughput) == 2


def test_quality_table_for_gsn_and_psnr(tmp_path, tiny_weights, capsys):
    make_kadid_like(tmp_path, n_refs=3, size=64)
    quality = load_script("quality")
    out_json = tmp_path / "q.json"
    assert quality.main(["--dataset", "kadid10k", "--root", str(tmp_path), "--patch-size", "32", "--weights",
                         tiny_weights, "--peers", "PSNR", "--device", "cpu", "--json", str(out_json), "--as-loss"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| GSN tiny", "| GSNLoss tiny", "| PSNR"))]
    assert len(rows) == 3 and all("| 18 |" in r for r in rows)  # 3 references x 2 types x 3 levels
    results = json.loads(out_json.read_text())["results"]
    # PSNR falls with blur and noise strength, as the fixture's scores do: it must agree with them.
    assert results["PSNR (plain torch)"]["all"]["srcc"] > 0.5


def test_reliability_bad_inputs_and_tampering(tmp_path, tiny_weights):
    rel = load_script("reliability")
    tally = rel.Tally()
    (tmp_path / "files").mkdir()
    metric = gsn_metric.GSNScore(tiny_weights, device="cpu")
    rel.bad_inputs(metric, tiny_weights, tmp_path / "files", 48, tally)
    assert tally.tried >= 60 and (tally.crashes, tally.silent) == (0, 0), tally.failures
    refused, tried, loaded = rel.tampering(tmp_path / "tamper")
    assert refused == tried and not loaded, loaded


def test_as_loss_recovery_and_attack_on_a_tiny_network(tmp_path, tiny_weights, capsys):
    as_loss = load_script("as_loss")
    as_loss.main(["all", "--steps", "2", "--pgd-steps", "1", "--weights", tiny_weights, "--only", "GSN",
                  "--out", str(tmp_path)])
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    recovery, attack = results["recovery"]["rows"], results["attack"]["rows"]
    # 4 starts × 3 GSN loss forms × steps {0, 2}; 3 distorted crops × (the score + 2 anchored forms)
    assert len(recovery) == 4 * 3 * 2 and len(attack) == 3 * 3
    assert {r["loss"] for r in recovery} == {"GSN score (form='score', 0.1)", "GSN anchored (default)",
                                             "GSN anchored, score_weight=0.01 (0.2)"}
    # the anchored loss is ≥ 0 with 0 at the reference: no attack can take it past the reference's own value
    assert all(not r["passes_own"] for r in attack if "anchored" in r["metric"])
    assert all(r["own"] == 0 for r in attack if "anchored" in r["metric"])
    assert (tmp_path / "recovery_sheet.png").stat().st_size > 0
    assert "| blur | GSN anchored (default) | 2 |" in out


def test_sr_loss_trains_and_judges_each_run(tmp_path, tiny_weights, capsys):
    sr_loss = load_script("sr_loss")
    photos = tmp_path / "photos"  # made here: no ../shared photograph in a test
    photos.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        img = (torch.rand(3, 200, 240, generator=g) * 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(img).save(photos / f"p{i}.png")
    sr_loss.main(["--pristine", str(photos), "--held-out", "1", "--steps", "2", "--batch", "2",
                  "--runs", "l1", "gsn:0.5", "--weights", tiny_weights, "--out", str(tmp_path / "out")])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(results["rows"]) == ["bicubic", "l1", "gsn:0.5"]
    assert results["own"]["PSNR"] == 100  # the judges see the high-resolution crops as perfect
    assert all(row["PSNR"] < 100 for row in results["rows"].values())
    assert (tmp_path / "out" / "sr_sheet.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="NAME:λ"):
        sr_loss.main(["--runs", "gsn:high", "--pristine", str(photos), "--out", str(tmp_path / "bad")])


def test_scale_rss_samples_a_whole_out_run(capsys):
    load_script("scale").main(["rss", "--pairs", "150"])
    out = capsys.readouterr().out
    assert "| pairs written | RSS MiB |" in out and "slope over the second half" in out


@pytest.mark.parametrize("name, package", [("ST-LPIPS-alex", "stlpips_pytorch"), ("ST-LPIPS-vgg", "stlpips_pytorch"),
                                           ("ColorVideoVDP", "pycvvdp")])
def test_learned_peer_adapter_scores_in_its_direction(name, package):
    """Each learned peer (benchmarks/peers.py) where it is installed: a value per pair, the identical pair at its
    best, and a noisier copy worse than a cleaner one in the peer's own direction."""
    pytest.importorskip("torchvision")
    pytest.importorskip(package)
    peers = load_script("peers")
    peer = next(p for p in peers.PEERS if p.name.startswith(name + " "))
    f, _ = peer.build(torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, 64, 64, generator=g).repeat(3, 1, 1, 1)
    noise = torch.randn(ref.shape, generator=g) * torch.tensor([0.0, 0.05, 0.2]).view(3, 1, 1, 1)
    values = f(ref, (ref + noise).clamp(0, 1)).float()
    assert values.shape == (3,) and torch.isfinite(values).all()
    ordered = values if peer.higher_is_better else -values
    assert ordered[0] >= ordered[1] > ordered[2], values


def test_train_step_profiles_probes_and_chooses(tmp_path, capsys):
    train_step = load_script("train_step")
    chosen = tmp_path / "speedups.txt"
    assert train_step.main(["--device", "cpu", "--tiny", "--patch-size", "32", "--batch-size", "4", "--seconds",
                            "0.2", "--warmup", "1", "--profile", "--candidates", "fold-cdc", "no-such-speedup",
                            "--choose", str(chosen)]) == 0
    out = capsys.readouterr().out
    assert "| convolution (3×3), forward + backward |" in out and "| optimiser (RAdam + Lookahead) |" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert "pass" in rows["eager"] and "pass" in rows["fold-cdc"]  # eager is always probed, first
    assert "failed: ArgumentTypeError" in rows["no-such-speedup"]  # a bad candidate is a row, not a crash
    assert chosen.read_text() in ("", "fold-cdc")


def test_train_step_probes_the_anchored_step_when_asked(capsys):
    train_step = load_script("train_step")
    common = argparse.Namespace(tiny=True, width=1.0, batch_size=4, patch_size=32, amp=True)
    losses = {}
    for w in (0.0, 1.0):
        args = argparse.Namespace(**vars(common), anchor_weight=w)
        losses[w] = float(train_step._step(train_step._setup(args, torch.device("cpu"), ()),
                                           train_step._batch(args, torch.device("cpu"))))
    assert losses[1.0] > losses[0.0]  # the anchor's terms are in the probed step's loss
    assert train_step.main(["--device", "cpu", "--tiny", "--patch-size", "32", "--batch-size", "4", "--seconds",
                            "0.2", "--warmup", "1", "--anchor-weight", "1", "--candidates", "fold-cdc"]) == 0
    out = capsys.readouterr().out
    assert "anchor weight 1" in out
    assert "pass" in next(line for line in out.splitlines() if line.startswith("| fold-cdc |"))


def test_train_step_probe_stops_a_candidate_at_its_time_limit(tmp_path, capsys):
    # every candidate (eager too) runs past the limit: each is a failed row, and the choice falls back to eager
    train_step = load_script("train_step")
    chosen = tmp_path / "speedups.txt"
    start = time.perf_counter()
    assert train_step.main(["--device", "cpu", "--tiny", "--patch-size", "32", "--batch-size", "4", "--seconds",
                            "30", "--warmup", "1", "--candidate-limit", "0.5", "--candidates", "fold-cdc",
                            "--choose", str(chosen)]) == 0
    assert time.perf_counter() - start < 20  # two candidates stopped at 0.5 s each, not run for 30 s
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert "failed: TimeoutError" in rows["eager"] and "failed: TimeoutError" in rows["fold-cdc"]
    assert chosen.read_text() == ""


def test_int8_layers_compares_choices_of_float_layers(tmp_path, tiny_weights, capsys):
    make_kadid_like(tmp_path, n_refs=2, size=64)
    int8_layers = load_script("int8_layers")
    out_json = tmp_path / "rows.json"
    assert int8_layers.main(["--root", str(tmp_path), "--reference", "I01", "--min-level", "3", "--weights",
                             tiny_weights, "--float", "", "--float", "blocks.1", "--json", str(out_json)]) == 0
    rows = json.loads(out_json.read_text())
    assert [r["float"] for r in rows] == [[], ["blocks.1"]]
    assert rows[0]["int8_share"] == 1 and 0 < rows[1]["int8_share"] < 1
    assert all(r["mean"] > 0 for r in rows)  # really quantised
    assert "| nothing (all int8) | 100% |" in capsys.readouterr().out
    # each pair calibrated on its own patches: other ranges, so other scores
    assert int8_layers.main(["--root", str(tmp_path), "--reference", "I01", "--min-level", "3", "--weights",
                             tiny_weights, "--float", "", "--self-calibrate", "--json", str(out_json)]) == 0
    own = json.loads(out_json.read_text())[0]
    assert own["mean"] > 0 and own["mean"] != rows[0]["mean"]


def test_variants_compares_against_the_first_and_resumes_from_its_json(tmp_path, tiny_weights, capsys,
                                                                         monkeypatch):
    import gsn_metric.precision

    make_kadid_like(tmp_path, n_refs=2, size=64)
    variants = load_script("variants")
    out_json = tmp_path / "v.json"
    common = ["--root", str(tmp_path), "--weights", tiny_weights, "--json", str(out_json)]
    assert variants.main([*common, "--variant", "default", "--variant", "flip"]) == 0
    done = json.loads(out_json.read_text())
    assert set(done) == {"default", "flip"} and len(done["default"]["scores"]) == 12
    assert done["default"]["scores"] != done["flip"]["scores"]
    out = capsys.readouterr().out
    assert "| default | 12 |" in out and "| 0.0000 | 0.0000 | 1.000000 |" in out  # the first against itself
    # A rerun scores only what the file lacks; --no-cpu-bf16 labels its variants apart and refuses bf16.
    monkeypatch.setattr(variants, "score_all", None)  # nothing left to score: a rerun only prints the tables
    assert variants.main([*common, "--variant", "default", "--variant", "flip"]) == 0
    assert "| flip | 12 |" in capsys.readouterr().out
    monkeypatch.undo()
    # the flag replaces precision.cpu_has_fast_bf16 for the process: restored after the test
    monkeypatch.setattr(gsn_metric.precision, "cpu_has_fast_bf16", gsn_metric.precision.cpu_has_fast_bf16)
    assert variants.main([*common, "--variant", "default", "--no-cpu-bf16"]) == 0
    assert set(json.loads(out_json.read_text())) == set(done) | {"default (no CPU bf16)"}
    with pytest.raises(ValueError, match="bf16"):
        variants.main([*common, "--variant", "precision=bf16", "--no-cpu-bf16"])


def test_gpu_release_script_parses_and_refuses_an_unknown_stage(tmp_path):
    # the lease runs it once, untried on a GPU: a syntax error must show here, not there
    script = BENCHMARKS / "gpu_release.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    done = subprocess.run(["bash", str(script), "no-such-stage"], check=False, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path / "out"), "RUN": str(tmp_path / "run")})
    assert done.returncode == 2 and "unknown stage no-such-stage" in done.stderr


def test_thin_pristine_leaves_training_photographs_behind_and_keeps_the_validation_ones(tmp_path):
    gpu = tmp_path / ".gpu"
    (gpu / "pristine").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(reference_image(rng, 40)).save(gpu / "pristine" / f"p{i}.png")
    (gpu / "pristine-list.txt").write_text("".join(f"p{i}.png\n" for i in range(10)))
    with open(gpu / "KADID-10k.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dis_img_path", "dis_type", "ref_img_path", "score"])
        writer.writerows([f"KADID-10k/images/I01_{t:02d}_{lv:02d}.png", NAMES[t], "KADID-10k/images/I01.png",
                          f"{5 - 0.8 * lv:.2f}"] for t in range(1, 26) for lv in range(1, 6))
    kw = {"split": "val", "val_fraction": 0.2, "seed": 0, "train": False, "patch_size": 32}
    before = SyntheticKADID(gpu / "pristine", gpu / "KADID-10k.csv", **kw)
    thin = load_script("thin_pristine")
    size = thin.folder_bytes(gpu)
    one = max(p.stat().st_size for p in (gpu / "pristine").iterdir())
    assert thin.main([str(gpu), "--val-fraction", "0.2", "--room", str(size)]) == 0  # fits: nothing to do
    assert len(list((gpu / "pristine").iterdir())) == 10
    assert thin.main([str(gpu), "--val-fraction", "0.2", "--room", str(size - 3 * one)]) == 0
    there = sorted(p.name for p in (gpu / "pristine").iterdir())
    assert 3 <= 10 - len(there) < 8 and thin.folder_bytes(gpu) <= size - 3 * one
    after = SyntheticKADID(gpu / "pristine", gpu / "KADID-10k.csv", pristine_list=gpu / "pristine-list.txt", **kw)
    assert after.images == before.images and {p.name for p in before.images} <= set(there)
    assert torch.equal(after[7]["dist"], before[7]["dist"])
    # never the validation photographs, nor the last training one: a folder that cannot fit says so
    assert thin.main([str(gpu), "--val-fraction", "0.2", "--room", "1"]) == 1
    assert len(list((gpu / "pristine").iterdir())) == 3


def test_variants_scores_with_onnx_runtime_as_torch_does(tmp_path, tiny_weights, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    make_kadid_like(tmp_path, n_refs=1, size=64)
    variants = load_script("variants")
    out_json = tmp_path / "v.json"
    assert variants.main(["--root", str(tmp_path), "--weights", tiny_weights, "--json", str(out_json),
                          "--variant", "default", "--variant", "onnx=fp32"]) == 0
    done = json.loads(out_json.read_text())
    assert len(done["onnx=fp32"]["scores"]) == 6
    assert max(abs(a - b) for a, b in zip(done["default"]["scores"], done["onnx=fp32"]["scores"])) < 1e-4
    assert "| onnx=fp32 | 6 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="onnx=int8"):
        variants.main(["--root", str(tmp_path), "--weights", tiny_weights, "--variant", "onnx=fp16"])


def test_padded_gpu_rows_builders_score_as_the_plain_network(tiny_weights):
    # table 6's CUDA rows run only in a lease; the builders that need no CUDA are checked here
    from gsn_metric import GSNScore

    sp = load_script("speed_precision")
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(2, 3, 48, 64, generator=g)
    dists = (refs + 0.1 * torch.randn(refs.shape, generator=g)).clamp(0, 1)
    plain = GSNScore(tiny_weights, device="cpu")(refs, dists)
    for build in (sp._padded, sp._padded_input):
        fn, note = build(GSNScore(tiny_weights, device="cpu"), refs, dists)
        assert "exact" in note and torch.allclose(fn(), plain, atol=1e-5, rtol=0)
