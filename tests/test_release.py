"""``release`` and the training pieces it composes: --time-limit pieces equal an uncut run bit for bit, the
learning-rate schedule, --init, the classic peers, and the install gate. Tiny network, 32-px patches, CPU."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

import gsn_metric
from gsn_metric.model import GSN
from gsn_metric.train import loop, release
from gsn_metric.train.__main__ import build_parser
from gsn_metric.train.evaluate import predict
from gsn_metric.train.peers import CLASSIC, PeerModel, gmsd, psnr

from .conftest import TINY
from .train_fixtures import make_kadid_like


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kadid")
    make_kadid_like(root, n_refs=4, size=64)  # 24 pairs; val 0.25 → 18 train pairs, 3 steps of 6
    return root


def run(command: str, root: Path, out: Path, *extra: str) -> int:
    argv = [command, "--dataset", "kadid10k", "--root", str(root), "--patch-size", "32", "--tiny",
            "--batch-size", "6", "--val-fraction", "0.25", "--seed", "0", "--device", "cpu", "--workers", "0",
            "--out", str(out), *extra]
    args = build_parser().parse_args(argv)
    return release.main(args) if command == "release" else loop.main(args)


def test_time_limited_pieces_equal_the_uncut_run(data_root, tmp_path):
    schedule = ("--epochs", "2", "--lr-schedule", "cosine", "--warmup-steps", "2")
    run("fit", data_root, tmp_path / "whole", *schedule)
    whole = loop.load_checkpoint(tmp_path / "whole" / loop.CHECKPOINT)
    # --time-limit 0: every launch stops after its first step (mid-epoch: checkpoint written, no validation).
    for pieces in range(1, 7):
        run("fit", data_root, tmp_path / "cut", *schedule, "--time-limit", "0", "--resume")
        cut = loop.load_checkpoint(tmp_path / "cut" / loop.CHECKPOINT)
        assert cut["step"] == pieces and cut["epoch"] == pieces // 3
    assert whole["step"] == 6
    for k, v in whole["model"].items():
        assert torch.equal(v, cut["model"][k]), k
    for i, s in whole["optimizer"]["slow"].items():
        assert torch.equal(s["slow"], cut["optimizer"]["slow"][i]["slow"])
    # Validation ran at the two epoch ends only, with the same results.
    vals = [h["val"] for h in cut["history"] if "val" in h]
    assert vals == [h["val"] for h in whole["history"]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pieces_resume_on_a_bare_cuda_device(data_root, tmp_path):
    """``--device cuda`` (no index) and a checkpoint loaded onto the GPU: both broke the first GPU lease."""
    for _ in range(2):
        run("fit", data_root, tmp_path / "cut", "--device", "cuda", "--epochs", "1", "--time-limit", "0", "--resume")
    assert loop.load_checkpoint(tmp_path / "cut" / loop.CHECKPOINT)["step"] == 2


def test_learning_rate_schedules():
    args = argparse.Namespace(lr=1e-3, lr_schedule="cosine", warmup_steps=4)
    lrs = [loop.learning_rate(args, s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-3 * 0.2 * 1) and lrs[3] < lrs[4]  # warm-up, then the cosine's peak
    assert lrs[4] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 4 / 100)))
    assert lrs[50] == pytest.approx(5e-4) and lrs[99] < 1e-6 and all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    constant = argparse.Namespace(lr=1e-3, lr_schedule="constant", warmup_steps=0)
    assert {loop.learning_rate(constant, s, 100) for s in range(100)} == {1e-3}


def test_init_starts_from_the_exported_weights(data_root, tmp_path):
    run("fit", data_root, tmp_path / "a", "--epochs", "1")
    export = tmp_path / "a" / loop.EXPORT
    model = GSN(TINY)
    loop._load_init(model, str(export), print)
    exported, info = gsn_metric.weights.load_model(export)
    again = loop._export_copy(model, *info.score_range)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x, y), exported(x, y))
    with pytest.raises(ValueError, match="different architecture"):
        loop._load_init(GSN(), str(export), print)


def test_classic_peers():
    torch.manual_seed(0)
    ref = torch.rand(2, 3, 48, 47)
    noisy = [(ref + s * torch.randn_like(ref)).clamp(0, 1) for s in (0.02, 0.1)]
    assert gmsd(ref, ref).abs().max() < 1e-6 and (gmsd(ref, noisy[0]) < gmsd(ref, noisy[1])).all()
    assert (psnr(ref, noisy[0]) > psnr(ref, noisy[1])).all() and (psnr(ref, ref) == 100).all()
    piq = pytest.importorskip("piq", reason="piq (and the torchvision it imports) is not installed")
    torch.testing.assert_close(gmsd(ref, noisy[1]), piq.gmsd(noisy[1], ref, data_range=1.0, reduction="none"))


def test_predict_scores_a_list_of_models_in_one_pass(data_root):
    from gsn_metric.train.datasets import load_dataset

    data = load_dataset("kadid10k", data_root, split="all", train=False, patch_size=32)
    models = [PeerModel(*CLASSIC["PSNR"]), PeerModel(*CLASSIC["GMSD"])]
    together, mos, _ = predict(models, data, batch_size=10)
    assert together.shape == (len(data), 2)
    for i, m in enumerate(models):
        alone, mos_alone, _ = predict(m, data, batch_size=10)
        assert alone.shape == (len(data),) and (mos_alone == mos).all()
        torch.testing.assert_close(torch.from_numpy(together[:, i]), torch.from_numpy(alone))


def test_release_trains_measures_and_installs(data_root, tmp_path):
    weights = tmp_path / "weights"
    common = ("--epochs", "2", "--name", "gsn-tiny-test", "--weights-dir", str(weights), "--peers", "PSNR,GMSD")
    # Cut into pieces: nothing is measured or installed until the planned run is complete.
    assert run("release", data_root, tmp_path / "out", *common, "--must-beat", "", "--time-limit", "0") == 0
    assert not (weights / "manifest.json").exists()
    assert run("release", data_root, tmp_path / "out", *common, "--must-beat", "", "--resume", "--default") == 0
    manifest = json.loads((weights / "manifest.json").read_text())
    entry = manifest["weights"]["gsn-tiny-test"]
    assert manifest["default"] == "gsn-tiny-test" and entry["file"] == "gsn-tiny-test.safetensors"
    assert entry["steps"] == 6 and entry["pairs_seen"] == 36 and entry["architecture"]["stem"] == TINY.stem
    assert entry["train_seconds"] > 0 and "CPU" in entry["hardware"] and entry["recipe"]["lr_schedule"] == "constant"
    assert set(entry["results"]["validation"]) == {"GSN", "PSNR", "GMSD"}
    assert entry["validation"]["pairs"] == 6
    record = json.loads((tmp_path / "out" / release.RELEASE_RECORD).read_text())
    assert record["installed"] and record["results"]["GSN"]["all"]["n"] == 6
    metric = gsn_metric.GSNScore(weights=str(weights / "gsn-tiny-test.safetensors"), device="cpu")
    assert metric.info.config == TINY

    # A peer it must beat and does not (two epochs of the tiny network are far below GMSD): nothing installed, exit 1.
    assert entry["results"]["validation"]["GSN"]["srcc"] < entry["results"]["validation"]["GMSD"]["srcc"] - 0.5
    assert run("release", data_root, tmp_path / "out2", *common[:-2], "--peers", "PSNR,GMSD", "--name", "other",
               "--must-beat", "GMSD") == 1
    assert "other" not in json.loads((weights / "manifest.json").read_text())["weights"]
    assert not json.loads((tmp_path / "out2" / release.RELEASE_RECORD).read_text())["installed"]

    # Trained on from the installed file: the record lists both runs, the first with the sha256 it ended at.
    assert entry["pieces"] == [{k: entry[k] for k in ("pairs_seen", "steps", "train_seconds", "hardware")}]
    run("release", data_root, tmp_path / "out3", *common[:-2], "--peers", "PSNR", "--name", "more", "--must-beat", "",
        "--epochs", "1", "--init", str(weights / "gsn-tiny-test.safetensors"))
    record = json.loads((tmp_path / "out3" / release.RELEASE_RECORD).read_text())
    first, second = record["pieces"]
    assert first["sha256"] == entry["sha256"] and first["pairs_seen"] == 36 and second["pairs_seen"] == 18
    assert record["pairs_seen_total"] == 54 and record["steps_total"] == 9 and record["pairs_seen"] == 18
    change = record["score_change"][f"init ({weights / 'gsn-tiny-test.safetensors'})"]
    assert change["max_abs"] > 0 and change["max_abs"] >= change["mean_abs"] > 0 and -1 <= change["spearman"] <= 1

    # --default must also beat the current default: the same run again gives the same weights, which do not.
    assert run("release", data_root, tmp_path / "out4", *common, "--must-beat", "", "--default") == 1
    record = json.loads((tmp_path / "out4" / release.RELEASE_RECORD).read_text())
    assert not record["installed"] and "default (gsn-tiny-test)" in record["results"]
    assert record["score_change"] == {"default (gsn-tiny-test)": {"mean_abs": 0.0, "max_abs": 0.0, "spearman": 1.0}}
    assert json.loads((weights / "manifest.json").read_text())["weights"]["gsn-tiny-test"] == entry


def test_release_usage_errors(data_root, tmp_path, capsys):
    assert run("release", data_root, tmp_path / "o", "--name", "x", "--peers", "PSNR", "--must-beat", "FSIM") == 2
    assert "unknown peer" in capsys.readouterr().err
    assert run("release", data_root, tmp_path / "o", "--name", "x", "--peers", "PSNR") == 2  # MS-SSIM not in peers
    assert run("release", data_root, tmp_path / "o", "--name", "x", "--must-beat", "") == 2  # 32 px < MS-SSIM's 161
    assert "larger than 160" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_outputs_are_checked_before_the_work(data_root, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="--out .*cannot be written"):
        run("fit", data_root, blocker / "run", "--epochs", "1")
    assert run("release", data_root, tmp_path / "o", "--name", "x", "--peers", "PSNR", "--must-beat", "",
               "--weights-dir", str(blocker / "w")) == 2
    assert "--weights-dir" in capsys.readouterr().err and not (tmp_path / "o").exists()
    from gsn_metric.train import evaluate

    export = tmp_path / "e.safetensors"
    gsn_metric.weights.save_weights(GSN(TINY), export, training_data="t", score_name="s", score_range=(1.0, 5.0),
                                    patch_size=32)
    args = build_parser().parse_args(["evaluate", "--dataset", "kadid10k", "--root", str(data_root), "--weights",
                                      str(export), "--device", "cpu", "--json", str(tmp_path / "no" / "r.json")])
    assert evaluate.main(args) == 2
    assert "--json" in capsys.readouterr().err


def test_training_cli_errors_are_one_line(data_root, tmp_path, capsys):
    from gsn_metric.train.__main__ import main

    argv = ["fit", "--dataset", "kadid10k", "--root", str(data_root), "--patch-size", "32", "--tiny",
            "--batch-size", "6", "--val-fraction", "0.25", "--device", "cpu", "--workers", "0", "--epochs", "1",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2  # a checkpoint exists, no --resume
    assert "pass --resume" in capsys.readouterr().err
    assert main([*argv, "--resume", "--seed", "1"]) == 2
    assert "trained with --seed 0" in capsys.readouterr().err
    ckpt = tmp_path / loop.CHECKPOINT
    for damage in (ckpt.read_bytes()[:1000], b""):  # truncated, empty
        ckpt.write_bytes(damage)
        assert main([*argv, "--resume"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(ckpt) in err and "damaged or truncated" in err
        assert "Traceback" not in err


def test_train_help_without_the_extra_says_what_to_install():
    import subprocess
    import sys

    code = ("import sys; sys.modules['scipy'] = None; from gsn_metric.train.__main__ import main; "
            "sys.exit(main(['--help']))")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "pip install 'gsn-metric[train]'" in done.stderr, done.stderr[-500:]
