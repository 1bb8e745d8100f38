"""The examples run (with a tiny weight file standing in for trained weights)."""

import runpy
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_example_pair_is_there_and_scores(tiny_weights):
    out = subprocess.run([sys.executable, str(EXAMPLES / "score_pair.py"), "--weights", tiny_weights, "--device", "cpu"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("GSN(reference.png, distorted.png) = ")


def test_sr_example_trains_with_the_gsn_loss(tiny_weights):
    train = runpy.run_path(str(EXAMPLES / "sr_perceptual_loss.py"))["train"]
    logs = train(tiny_weights, steps=3, crop=64, batch=2, device="cpu")
    assert len(logs) == 3 and all(0 <= log["l1"] < 1 for log in logs)


def test_torchmetrics_example_evaluates_with_a_metric_collection(tiny_weights):
    import pytest

    pytest.importorskip("torchmetrics")
    evaluate = runpy.run_path(str(EXAMPLES / "evaluate_sr_torchmetrics.py"))["evaluate"]
    out = evaluate(tiny_weights, crops=3, batch=2)
    assert set(out) == {"gsn", "psnr", "ssim"} and 20 < out["psnr"] < 60
