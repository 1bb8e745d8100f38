import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from gsn_metric.cli import main


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    for side in ("refs", "dists"):
        (tmp_path / side).mkdir()
    for name in ("a.png", "b.png"):
        ref = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
        Image.fromarray(ref).save(tmp_path / "refs" / name)
        Image.fromarray((ref // 2).astype(np.uint8)).save(tmp_path / "dists" / name)
    Image.fromarray(ref).save(tmp_path / "refs" / "lonely.png")
    return tmp_path


def test_one_pair_prints_its_score(images, tiny_weights, capsys):
    assert main([str(images / "refs/a.png"), str(images / "dists/a.png"), "--weights", tiny_weights]) == 0
    float(capsys.readouterr().out.strip())


def test_folders_pair_by_name_and_csv_json_output(images, tiny_weights, capsys):
    assert main([str(images / "refs"), str(images / "dists"), "--weights", tiny_weights, "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0] == "ref,dist,score,error" and len(lines) == 3
    assert "lonely.png" in err
    (images / "pairs.csv").write_text("ref,dist\nrefs/a.png,dists/a.png\nrefs/b.png,dists/b.png\n")
    assert main(["--pairs", str(images / "pairs.csv"), "--weights", tiny_weights, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["dist"].endswith(n) for p, n in zip(data["pairs"], ("a.png", "b.png"))] == [True, True]
    assert data["higher_is_better"] is True


def test_errors_and_exit_codes(images, tiny_weights, capsys, no_release):
    assert main([str(images / "refs/a.png"), str(images / "nope.png"), "--weights", tiny_weights]) == 1
    assert "nope.png does not exist" in capsys.readouterr().err
    assert main([str(images / "refs/a.png"), str(images / "dists/a.png")]) == 1
    assert "lists no default GSN weights" in capsys.readouterr().err
    assert main([str(images / "refs"), str(images / "dists/a.png"), "--weights", tiny_weights]) == 2
    assert main(["--weights", tiny_weights]) == 2
    (images / "bad.png").write_bytes(b"not an image")
    assert main([str(images / "refs/a.png"), str(images / "bad.png"), "--weights", tiny_weights]) == 1
    assert "bad.png" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["a", "b", "--format", "xml"])
    assert exit_.value.code == 2


def test_pair_errors_name_both_files(images, tiny_weights, capsys):
    Image.fromarray(np.zeros((70, 91, 3), np.uint8)).save(images / "dists" / "b.png")
    assert main([str(images / "refs"), str(images / "dists"), "--weights", tiny_weights]) == 1
    err = capsys.readouterr().err
    assert f"pair {images / 'refs' / 'b.png'} | {images / 'dists' / 'b.png'}: " in err and "different sizes" in err


def test_a_bad_pair_does_not_lose_the_others(images, tiny_weights, capsys):
    """10,000 pairs and one corrupt file: the rest are scored and printed, the bad one reported, exit status 1."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "refs" / "c.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "dists" / "c.png")
    (images / "dists" / "a.png").write_bytes(b"not an image")
    args = [str(images / "refs"), str(images / "dists"), "--weights", tiny_weights]
    assert main([*args, "--format", "csv"]) == 1
    out, err = capsys.readouterr()
    rows = {r["dist"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out.splitlines())}
    assert rows["a.png"]["score"] == "" and "a.png" in rows["a.png"]["error"]
    assert math.isfinite(float(rows["b.png"]["score"])) and math.isfinite(float(rows["c.png"]["score"]))
    assert "1 of 3 pairs could not be scored" in err
    assert main([*args, "--format", "json"]) == 1
    pairs = json.loads(capsys.readouterr().out)["pairs"]
    assert pairs[0]["score"] is None and "error" in pairs[0] and "error" not in pairs[1]
    assert main(args) == 1  # text: the scored pairs only
    assert [line.split("\t")[0].rsplit("/", 1)[-1] for line in capsys.readouterr().out.splitlines()] == ["b.png", "c.png"]


def test_hidden_files_in_folders_are_skipped(images, tiny_weights, capsys):
    for side in ("refs", "dists"):  # what macOS leaves beside images on shared drives
        (images / side / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert main([str(images / "refs"), str(images / "dists"), "--weights", tiny_weights, "--format", "csv"]) == 0
    assert "._a.png" not in capsys.readouterr().out


def test_pairs_csv_with_a_byte_order_mark_or_a_short_row(images, tiny_weights, capsys):
    (images / "bom.csv").write_text("\ufeffref,dist\nrefs/a.png,dists/a.png\n", encoding="utf-8")
    assert main(["--pairs", str(images / "bom.csv"), "--weights", tiny_weights]) == 0
    float(capsys.readouterr().out)
    (images / "short.csv").write_text("ref,dist\nrefs/a.png,dists/a.png\nrefs/b.png\n")
    assert main(["--pairs", str(images / "short.csv"), "--weights", tiny_weights]) == 2
    assert "short.csv line 3: needs both a ref and a dist path" in capsys.readouterr().err


def test_csv_and_json_output_survive_awkward_paths(images, tiny_weights, capsys):
    for side in ("refs", "dists"):
        (images / side / "a.png").rename(images / side / 'x, "y".png')
    assert main([str(images / "refs"), str(images / "dists"), "--weights", tiny_weights, "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))  # sorted by name: b.png, then x…
    assert rows[1]["dist"].endswith('x, "y".png') and math.isfinite(float(rows[1]["score"]))
    assert main([str(images / "refs"), str(images / "dists"), "--weights", tiny_weights, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"][1]["ref"].endswith('x, "y".png')


def test_map_draws_one_picture_per_pair(images, tiny_weights, tmp_path):
    out = tmp_path / "one.png"
    assert main([str(images / "refs/a.png"), str(images / "dists/a.png"), "--weights", tiny_weights,
                 "--map", str(out)]) == 0
    picture = Image.open(out)
    assert picture.mode == "RGB" and picture.width > 3 * 90 and picture.height > 70
    # three panels: the left one is the reference itself
    ref = np.asarray(Image.open(images / "refs/a.png"))
    assert (np.asarray(picture)[44:44 + 70, 8:8 + 90] == ref).all()
    folder = tmp_path / "maps"
    assert main([str(images / "refs"), str(images / "dists"), "--weights", tiny_weights, "--map", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["0000_a.png", "0001_b.png"]
    assert main([str(images / "refs"), str(images / "dists"), "--weights", tiny_weights, "--map", str(out)]) == 2


def test_one_bad_pair_does_not_lose_the_run(images, tiny_weights, capsys, monkeypatch):
    # A 1×1 pair (passes the size-match check, fails in the network's padding) and a pair whose forward pass
    # fails (a simulated out-of-memory on its size): the others are scored and printed, the errors name the files.
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(images / "refs" / "c.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(images / "dists" / "c.png")
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(images / "refs" / "d.png")
    Image.fromarray(np.full((40, 50, 3), 9, np.uint8)).save(images / "dists" / "d.png")
    from gsn_metric.metric import GSNScore

    real = GSNScore._patch_scores

    def flaky(self, ref, dist, fn=None):
        if ref.shape[-1] == 50:
            raise RuntimeError("DefaultCPUAllocator: not enough memory (simulated)")
        return real(self, ref, dist, fn)

    monkeypatch.setattr(GSNScore, "_patch_scores", flaky)
    assert main([str(images / "refs"), str(images / "dists"), "--weights", tiny_weights, "--patches", "full",
                 "--format", "csv"]) == 1
    out, err = capsys.readouterr()
    rows = {row["dist"].rsplit("/", 1)[-1]: row for row in csv.DictReader(out.splitlines())}
    assert rows["a.png"]["score"] and rows["b.png"]["score"]
    assert not rows["c.png"]["score"] and "reference" in rows["c.png"]["error"] and "c.png" in rows["c.png"]["error"]
    assert "1×1 pixels" in rows["c.png"]["error"]
    assert not rows["d.png"]["score"] and "not enough memory" in rows["d.png"]["error"]
    assert "2 of 4 pairs could not be scored" in err


def test_folder_pairing_by_stem_case_hint_and_broken_links(tmp_path, tiny_weights, capsys):
    rng = np.random.default_rng(1)
    for side in ("refs", "dists"):
        (tmp_path / side).mkdir()
    img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "refs" / "a.png")
    Image.fromarray(img).save(tmp_path / "dists" / "a.jpg")  # other extension: paired by stem
    Image.fromarray(img).save(tmp_path / "refs" / "B.png")
    Image.fromarray(img).save(tmp_path / "dists" / "b.png")  # other case: not paired, hinted
    (tmp_path / "dists" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert main([str(tmp_path / "refs"), str(tmp_path / "dists"), "--weights", tiny_weights, "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1].startswith(f"{tmp_path / 'refs' / 'a.png'},{tmp_path / 'dists' / 'a.jpg'},")
    assert "paired a.png with a.jpg" in err and "B.png / b.png" in err and "--pairs" in err
    assert "broken symbolic link" in err and "gone.png" in err


def test_pairs_csv_header_in_any_case_and_spaces(images, tiny_weights, capsys):
    (images / "pairs.csv").write_text("Ref, DIST\nrefs/a.png, dists/a.png\n")
    assert main(["--pairs", str(images / "pairs.csv"), "--weights", tiny_weights]) == 0
    float(capsys.readouterr().out.strip())
    # the output echoes the CSV's own values, not the paths joined with the CSV's folder
    assert main(["--pairs", str(images / "pairs.csv"), "--weights", tiny_weights, "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)["pairs"][0]
    assert (row["ref"], row["dist"]) == ("refs/a.png", "dists/a.png")


def test_pairs_csv_row_naming_a_folder(images, tiny_weights, capsys):
    (images / "pairs.csv").write_text("ref,dist\nrefs/a.png,dists\nrefs/a.png,dists/a.png\n")
    assert main(["--pairs", str(images / "pairs.csv"), "--weights", tiny_weights]) == 1
    out, err = capsys.readouterr()
    float(out.strip().split()[-1])  # the good row is scored
    assert "distorted file" in err and "dists': is a folder, not an image file" in err


def test_stride_and_device_usage(images, tiny_weights, capsys):
    a = [str(images / "refs/a.png"), str(images / "dists/a.png"), "--weights", tiny_weights]
    assert main([*a, "--patches", "grid", "--stride", "8"]) == 0
    assert main([*a, "--stride", "8"]) == 2  # five patches have no stride
    assert main([*a, "--device", "gpu"]) == 2
    assert "not a torch device" in capsys.readouterr().err


def test_installed_console_script_and_licence():
    from importlib.metadata import distribution, entry_points

    assert [ep.value for ep in entry_points(group="console_scripts", name="gsn-metric")] == ["gsn_metric.cli:main"]
    dist = distribution("gsn-metric")
    assert dist.metadata["License"] == "MIT"
    assert any(f.name == "LICENSE" for f in dist.files or [])


def test_help_names_the_options_and_the_export_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert done.value.code == 0
    assert all(flag in out for flag in ("--precision", "--patches", "--out", "--resume", "export-onnx OUT.onnx"))
