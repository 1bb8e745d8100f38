"""Smoke test of benchmarks/speed.py: its tables come out on a tiny network in seconds (no timing assertions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def test_speed_quick_prints_all_tables(capsys):
    spec = importlib.util.spec_from_file_location("bench_speed", SPEED)
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    speed.main(["--quick", "--device", "cpu", "--repeats", "1", "--batch-sizes", "1", "2"])
    out = capsys.readouterr().out
    assert "WEIGHTS ARE RANDOM" in out
    for title in ("1. Latency", "2. Throughput", "3. One"):
        assert title in out
    for row in ("folded (library default)", "unfolded", "channels_last", "PSNR (plain torch)", "LPIPS", "DISTS"):
        assert row in out
    throughput = [line for line in out.splitlines() if line.startswith(("| 1 | 5 |", "| 2 | 10 |"))]
    assert len(throughput) == 2
