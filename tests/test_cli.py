import json

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
    assert lines[0] == "ref,dist,score" and len(lines) == 3
    assert "lonely.png" in err
    (images / "pairs.csv").write_text("ref,dist\nrefs/a.png,dists/a.png\nrefs/b.png,dists/b.png\n")
    assert main(["--pairs", str(images / "pairs.csv"), "--weights", tiny_weights, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["dist"].endswith(n) for p, n in zip(data["pairs"], ("a.png", "b.png"))] == [True, True]
    assert data["higher_is_better"] is True


def test_errors_and_exit_codes(images, tiny_weights, capsys):
    assert main([str(images / "refs/a.png"), str(images / "nope.png"), "--weights", tiny_weights]) == 1
    assert "nope.png does not exist" in capsys.readouterr().err
    assert main([str(images / "refs/a.png"), str(images / "dists/a.png")]) == 1
    assert "No trained GSN weights" in capsys.readouterr().err
    assert main([str(images / "refs"), str(images / "dists/a.png"), "--weights", tiny_weights]) == 2
    assert main(["--weights", tiny_weights]) == 2
    (images / "bad.png").write_bytes(b"not an image")
    assert main([str(images / "refs/a.png"), str(images / "bad.png"), "--weights", tiny_weights]) == 1
    assert "bad.png" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["a", "b", "--format", "xml"])
    assert exit_.value.code == 2
