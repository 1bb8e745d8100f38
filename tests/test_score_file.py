"""--out FILE and --resume (score_file.py), and scoring under torchrun (sharding.py): a killed run keeps a valid
prefix, a resumed one ends with exactly an uninterrupted run's file, and 2 processes write the same file as 1."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gsn_metric import sharding
from gsn_metric.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pairs_csv(tmp_path) -> Path:
    """6 references × 10 distorted images (40×48 px) and a pairs CSV listing them, one unreadable."""
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = []
    for r in range(6):
        ref = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(ref).save(tmp_path / "img" / f"r{r}.png")
        for d in range(10):
            noisy = np.clip(ref + rng.normal(0, 4 * d + 1, ref.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(tmp_path / "img" / f"r{r}_d{d}.png")
            rows.append(f"img/r{r}.png,img/r{r}_d{d}.png")
    rows.insert(17, "img/r1.png,img/missing.png")
    (tmp_path / "pairs.csv").write_text("ref,dist\n" + "\n".join(rows) + "\n")
    return tmp_path / "pairs.csv"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gsn_metric", *args, "--no-progress"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_out_streams_the_rows_of_format_csv_and_refuses_to_overwrite(pairs_csv, tiny_weights, capsys):
    assert main(["--pairs", str(pairs_csv), "--weights", tiny_weights, "--format", "csv"]) == 1  # the missing file
    expected = capsys.readouterr().out
    out = pairs_csv.parent / "scores.csv"
    assert main(["--pairs", str(pairs_csv), "--weights", tiny_weights, "--out", str(out)]) == 1
    # row for row what --format csv prints, error row included; the scores to rounding, since --out gives each
    # pair its own forward passes where stdout packs several pairs into one (other batch sizes round differently)
    got, want = (list(csv.reader(text.splitlines())) for text in (out.read_text(), expected))
    assert [r[:2] + r[3:] for r in got] == [r[:2] + r[3:] for r in want]
    assert all(a[2] == b[2] or abs(float(a[2]) - float(b[2])) <= 2e-6 for a, b in zip(got[1:], want[1:]))
    record = json.loads((pairs_csv.parent / "scores.csv.gsn.json").read_text())
    assert record["patches"] == "five" and len(record["weights_sha256"]) == 64
    assert main(["--pairs", str(pairs_csv), "--weights", tiny_weights, "--out", str(out)]) == 1
    assert "exists: pass --resume" in capsys.readouterr().err
    # resuming a complete file scores nothing and leaves it as it was
    before = out.read_text()
    assert main(["--pairs", str(pairs_csv), "--weights", tiny_weights, "--out", str(out), "--resume"]) == 1
    assert out.read_text() == before
    jl = pairs_csv.parent / "scores.jsonl"
    main(["--pairs", str(pairs_csv), "--weights", tiny_weights, "--out", str(jl)])
    rows = [json.loads(line) for line in jl.read_text().splitlines()]
    assert len(rows) == 61 and rows[17]["score"] is None and "missing.png" in rows[17]["error"]
    assert main(["--pairs", str(pairs_csv), "--weights", tiny_weights, "--out", str(out.with_suffix(".txt"))]) == 2
    assert main(["--pairs", str(pairs_csv), "--weights", tiny_weights, "--resume"]) == 2


def test_resume_refuses_other_weights_options_and_pairs(pairs_csv, tiny_weights, tmp_path, capsys, tiny_model):
    out = tmp_path / "scores.csv"
    main(["--pairs", str(pairs_csv), "--weights", tiny_weights, "--out", str(out)])
    capsys.readouterr()
    assert main(["--pairs", str(pairs_csv), "--weights", tiny_weights, "--out", str(out), "--resume",
                 "--patches", "full"]) == 1
    assert "other settings (patches: file 'five', now 'full')" in capsys.readouterr().err
    from gsn_metric.weights import save_weights

    with __import__("torch").no_grad():
        tiny_model.fc.bias.add_(1)
    other = tmp_path / "other.safetensors"
    save_weights(tiny_model, other, training_data="t", score_name="test", score_range=(1.0, 5.0), patch_size=32)
    assert main(["--pairs", str(pairs_csv), "--weights", str(other), "--out", str(out), "--resume"]) == 1
    assert "weights_sha256" in capsys.readouterr().err
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("\n".join(pairs_csv.read_text().splitlines()[:10]) + "\n")
    assert main(["--pairs", str(fewer), "--weights", tiny_weights, "--out", str(out), "--resume"]) == 1
    assert "which the input does not list" in capsys.readouterr().err


def test_a_line_cut_short_by_a_kill_is_dropped_and_rescored(pairs_csv, tiny_weights, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    main(["--pairs", str(pairs_csv), "--weights", tiny_weights, "--out", str(out)])
    expected = out.read_text()
    lines = expected.splitlines(keepends=True)
    out.write_text("".join(lines[:30]) + lines[30][:12])  # killed while writing row 30
    main(["--pairs", str(pairs_csv), "--weights", tiny_weights, "--out", str(out), "--resume"])
    assert out.read_text() == expected
    assert "(29 from before this run)" in capsys.readouterr().err


def _rows(path: Path) -> int:
    try:
        return max(0, path.read_text().count("\n") - 1)
    except FileNotFoundError:
        return 0


@pytest.fixture
def many(pairs_csv) -> Path:
    """The pairs five times over (305 rows; repeated pairs are matched to their repeats in order): with one patch
    per pass (--batch-size 1), a run long enough to be stopped in the middle."""
    lines = pairs_csv.read_text().splitlines()
    path = pairs_csv.with_name("many.csv")
    path.write_text("\n".join(lines[:1] + lines[1:] * 5) + "\n")
    return path


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(many, tiny_weights, tmp_path):
    command = [*_cli("--pairs", str(many), "--weights", tiny_weights, "--batch-size", "1"), "--out"]
    reference = tmp_path / "reference.csv"
    subprocess.run([*command, str(reference)], env=_env(), timeout=120, check=False)
    out, kills, rng = tmp_path / "killed.csv", 0, random.Random(0)
    while kills < 3:
        before = _rows(out)
        proc = subprocess.Popen([*command, str(out), "--resume"], env=_env(), stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while _rows(out) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.03))
        assert proc.poll() is None, f"the run ended before its kill (kill {kills + 1}); make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        text = out.read_text()
        # a valid prefix of the uninterrupted file (at most its last line cut short), and not all of it
        assert reference.read_text().startswith(text[: text.rfind("\n") + 1]) and _rows(out) < 305
    done = subprocess.run([*command, str(out), "--resume"], env=_env(), timeout=120, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 1 and "from before this run" in done.stderr  # 1: the missing image's rows
    assert out.read_text() == reference.read_text()


def test_ctrl_c_ends_cleanly_with_a_hint_to_resume(many, tiny_weights, tmp_path):
    out = tmp_path / "scores.csv"
    proc = subprocess.Popen(_cli("--pairs", str(many), "--weights", tiny_weights, "--out", str(out),
                                 "--batch-size", "1"), env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _rows(out) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-1000:]
    assert "run the same command with --resume" in err and "Traceback" not in err
    assert 3 <= _rows(out) < 305 and out.read_text().endswith("\n")


def test_shard_keeps_a_reference_on_one_process_and_covers_every_pair():
    refs = ["a"] * 5 + ["b"] * 2 + ["c"] * 3 + ["a"] + ["d"] * 4
    parts = [sharding.shard(range(len(refs)), refs, r, 3) for r in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(len(refs)))
    for p in parts:
        assert all(p == sorted(p) for p in parts)
        others = {refs[i] for q in parts if q is not p for i in q}
        assert not {refs[i] for i in p} & others
    assert sharding.shard([3, 4], refs, 0, 1) == [3, 4]


@pytest.mark.slow
def test_torchrun_with_two_processes_writes_a_single_process_run_s_file(pairs_csv, tiny_weights, tmp_path):
    single = tmp_path / "single.csv"
    subprocess.run(_cli("--pairs", str(pairs_csv), "--weights", tiny_weights, "--out", str(single)), env=_env(),
                   timeout=120, check=False)
    two = tmp_path / "two.csv"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--standalone",
                          "-m", "gsn_metric", "--pairs", str(pairs_csv), "--weights", tiny_weights, "--out", str(two),
                          "--no-progress", "--device", "cpu"], env=_env(), timeout=180, capture_output=True, check=False,
                         text=True)
    assert "holds all 61 pairs" in run.stderr, run.stderr[-2000:]
    assert two.read_text() == single.read_text()
    assert not list(tmp_path.glob("two.csv.part-*"))
    with open(two, newline="") as f:
        assert len(list(csv.DictReader(f))) == 61
