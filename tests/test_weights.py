import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import gsn_metric
from gsn_metric import weights as W
from gsn_metric.model import GSN

from .conftest import TINY


def test_round_trip_keeps_scores_and_metadata(tiny_weights, tiny_model):
    model, info = W.load_model(tiny_weights)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(x, y), tiny_model(x, y))
    assert info.config == TINY and info.score_range == (1.0, 5.0) and info.training_data.startswith("random")
    manifest = json.loads((Path(tiny_weights).parent / "manifest.json").read_text())
    assert manifest["weights"]["tiny"]["sha256"] == info.sha256 == W.sha256_file(tiny_weights)


def test_no_released_weights_says_so_plainly(no_release):
    assert gsn_metric.list_weights() == []
    with pytest.raises(RuntimeError, match="lists no default GSN weights.*Reinstall.*python -m gsn_metric.train"):
        gsn_metric.GSNScore(device="cpu")
    with pytest.raises(ValueError, match="unknown GSN weights 'gsn-kadid'"):
        W.load_model("gsn-kadid")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        W.load_model("missing/gsn.safetensors")


def test_hash_mismatch_names_the_file(tiny_weights):
    manifest = Path(tiny_weights).parent / "manifest.json"
    data = json.loads(manifest.read_text())
    data["weights"]["tiny"]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"tiny\.safetensors has sha256 .* manifest says 0000"):
        W.load_model(tiny_weights)


def test_corrupt_and_pickle_files_are_refused(tmp_path, tiny_weights):
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(Path(tiny_weights).read_bytes()[:500])
    with pytest.raises(ValueError, match="cut.safetensors"):
        W.load_model(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"hello world, not weights")
    with pytest.raises(ValueError, match="not a safetensors file"):
        W.load_model(garbage)
    pickled = tmp_path / "gsn.pth"
    torch.save(GSN(TINY).state_dict(), pickled)
    with pytest.raises(ValueError, match="pickled PyTorch checkpoint"):
        W.load_model(pickled)


def _rewrite(path, tmp_path, state_edit=None, meta_edit=None):
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, "pt") as f:
        meta = dict(f.metadata())
    state = load_file(path)
    state_edit and state_edit(state)
    meta_edit and meta_edit(meta)
    out = tmp_path / "edited.safetensors"
    save_file(state, str(out), metadata=meta)
    return out


def test_missing_keys_wrong_shapes_and_foreign_files(tmp_path, tiny_weights):
    with pytest.raises(ValueError, match=r"edited.safetensors does not match.*missing \['fc.bias'\]"):
        W.load_model(_rewrite(tiny_weights, tmp_path, state_edit=lambda s: s.pop("fc.bias")))
    wider = json.loads(TINY.to_json())
    wider["stem"] = 5
    with pytest.raises(ValueError, match="wrong shapes"):
        W.load_model(_rewrite(tiny_weights, tmp_path, meta_edit=lambda m: m.update(config=json.dumps(wider))))
    with pytest.raises(ValueError, match="not gsn-metric weights"):
        W.load_model(_rewrite(tiny_weights, tmp_path, meta_edit=lambda m: m.update(format="lpips")))


def _release(monkeypatch, tmp_path, entry):
    """Pretend the wheel's manifest lists one released weights file, named 'gsn-test'."""
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    (bundled / "manifest.json").write_text(json.dumps({"format": 1, "default": "gsn-test",
                                                       "weights": {"gsn-test": entry}}))
    monkeypatch.setattr(W, "_bundled_dir", lambda: bundled)
    return bundled


def test_names_resolve_bundled_then_cache_then_hub(monkeypatch, tmp_path, tiny_weights):
    import huggingface_hub.constants

    blob = Path(tiny_weights).read_bytes()
    entry = {"file": "gsn-test.safetensors", "sha256": W.sha256_file(tiny_weights), "repo_id": "someone/gsn"}
    bundled = _release(monkeypatch, tmp_path, entry)
    assert gsn_metric.list_weights() == ["gsn-test"]

    # not bundled, not cached: offline → a clear error that says what to do
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(RuntimeError, match="neither bundled nor cached.*someone/gsn"):
        W.load_model(None)

    # in the huggingface-hub cache (what an earlier download leaves): found offline
    snapshot = tmp_path / "hub" / "models--someone--gsn" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "gsn-test.safetensors").write_bytes(blob)
    (tmp_path / "hub" / "models--someone--gsn" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--gsn" / "refs" / "main").write_text("abc123")
    _, info = W.load_model(None)
    assert info.path == snapshot / "gsn-test.safetensors" and info.name == "gsn-test"

    # bundled in the wheel: wins over the cache
    (bundled / "gsn-test.safetensors").write_bytes(blob)
    assert W.load_model("gsn-test")[1].path == bundled / "gsn-test.safetensors"

    # a corrupted bundled file is caught by the manifest's hash
    (bundled / "gsn-test.safetensors").write_bytes(blob[:-1] + b" ")
    with pytest.raises(ValueError, match="has sha256"):
        W.load_model("gsn-test")


def test_hub_download_is_used_when_nothing_is_local(monkeypatch, tmp_path, tiny_weights):
    import huggingface_hub

    entry = {"file": "gsn-test.safetensors", "sha256": W.sha256_file(tiny_weights), "repo_id": "someone/gsn"}
    _release(monkeypatch, tmp_path, entry)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, file, revision=None: calls.append(
        (repo, file)) or tiny_weights)
    assert W.load_model("gsn-test")[1].path == Path(tiny_weights)
    assert calls == [("someone/gsn", "gsn-test.safetensors")]


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.pop("config"), "no 'config'"),
    (lambda m: m.update(config="{"), "JSONDecodeError"),
    (lambda m: m.pop("score_range"), "no 'score_range'"),
    (lambda m: m.update(score_range="[5, 1]"), "lo < hi"),  # would flip the sign of GSNLoss
    (lambda m: m.pop("patch_size"), "no 'patch_size'"),  # a default of 192 would change every score
    (lambda m: m.update(patch_size="big"), "invalid literal"),
    (lambda m: m.update(patch_size="0"), "at least 8"),
])
def test_damaged_metadata_names_the_file(tmp_path, tiny_weights, edit, match):
    with pytest.raises(ValueError, match=r"edited\.safetensors has gsn-metric metadata .*" + match):
        W.load_model(_rewrite(tiny_weights, tmp_path, meta_edit=edit))


def test_diverged_weights_are_refused(tmp_path, tiny_weights):
    nan = _rewrite(tiny_weights, tmp_path, state_edit=lambda s: s["fc.bias"].fill_(float("nan")))
    with pytest.raises(ValueError, match=r"edited\.safetensors holds NaN or infinite values in \['fc.bias'\]"):
        W.load_model(nan)


def test_a_folder_or_a_home_path_is_understood(tmp_path, tiny_weights, monkeypatch):
    with pytest.raises(IsADirectoryError, match=r"is a folder; pass the .safetensors file in it \(found: tiny"):
        W.load_model(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert W.load_model("~/tiny.safetensors")[1].path == Path(tiny_weights)


@pytest.mark.parametrize("text", ['{"weights": {"tiny": "tiny.safetensors"}}', '{"weights": [1, 2]}'])
def test_malformed_manifest_beside_the_file_is_named(tiny_weights, text):
    (Path(tiny_weights).parent / "manifest.json").write_text(text)
    with pytest.raises(ValueError, match="manifest.json is not a valid gsn-metric manifest"):
        W.load_model(tiny_weights)


def test_exports_are_reproducible_and_readable(tmp_path, tiny_model):
    old = os.umask(0o022)
    digests = set()
    try:
        _export_three(tmp_path, tiny_model, digests)
    finally:
        os.umask(old)
    assert len(digests) == 1
    _, info = W.load_model(tmp_path / "w2" / "gsn.safetensors")
    assert info.training_data == "x" and info.patch_size == 32


def _export_three(tmp_path, tiny_model, digests):
    for i in range(3):
        path = tmp_path / f"w{i}" / "gsn.safetensors"
        path.parent.mkdir()
        digests.add(W.save_weights(tiny_model, path, training_data="x", score_name="y", score_range=(1.0, 5.0),
                                 patch_size=32))
        assert path.stat().st_mode & 0o777 == 0o644  # umask 022: readable by group and others, as files usually are


def test_a_file_shared_alone_refuses_a_flipped_data_byte(tmp_path, tiny_model):
    path = tmp_path / "alone.safetensors"
    W.save_weights(tiny_model, path, training_data="x", score_name="y", score_range=(1.0, 5.0), patch_size=32)
    (tmp_path / "manifest.json").unlink()  # shared without its manifest
    W.load_model(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # a byte of the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="content_sha256"):
        W.load_model(path)
    # and a metadata value changed in place (patch size 32 -> 33: other scores, no other error)
    data[-3] ^= 0x10
    path.write_bytes(bytes(data).replace(b'"patch_size":"32"', b'"patch_size":"33"'))
    with pytest.raises(ValueError, match="content_sha256"):
        W.load_model(path)


def test_another_tools_manifest_beside_a_weight_file_is_ignored(tmp_path, tiny_model):
    path = tmp_path / "w.safetensors"
    W.save_weights(tiny_model, path, training_data="x", score_name="y", score_range=(1.0, 5.0), patch_size=32)
    (tmp_path / "manifest.json").write_text('{"name": "some web app", "icons": []}')
    W.load_model(path)
    (tmp_path / "manifest.json").write_text("not json at all")
    W.load_model(path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    W.load_model(path)
    (tmp_path / "manifest.json").write_text('{"format": 1, "weights": {"w": "not a mapping"}}')
    with pytest.raises(ValueError, match="not a valid gsn-metric manifest"):
        W.load_model(path)


def test_shipped_default_loads_without_arguments_and_ranks_the_example_pair():
    from gsn_metric.images import load_image

    metric = gsn_metric.GSNScore(device="cpu")  # the manifest's default, from the package, sha256 checked
    manifest = json.loads((W._bundled_dir() / "manifest.json").read_text())
    entry = manifest["weights"][manifest["default"]]
    assert metric.info.sha256 == entry["sha256"] == W.sha256_file(W._bundled_dir() / entry["file"])
    examples = Path(__file__).resolve().parent.parent / "examples"
    ref, dist = (load_image(examples / name)[None] for name in ("reference.png", "distorted.png"))
    lo, hi = metric.info.score_range
    undistorted, jpeg = float(metric(ref, ref)), float(metric(ref, dist))
    assert lo - 0.5 < jpeg < undistorted < hi + 0.5, (jpeg, undistorted)
    validation = entry["results"]["validation"]  # the release gate, as recorded
    assert validation["GSN"]["srcc"] > validation["MS-SSIM"]["srcc"] and validation["GSN"]["n"] >= 1000


def test_a_source_checkout_that_is_not_installed_finds_its_weights(monkeypatch):
    """Run from a checkout on PYTHONPATH (as on the GPU machine), ``gsn_metric._bundled`` does not exist: the
    package mapping to ``weights/`` is made by the install. The checkout's own ``weights/`` serves instead."""
    def files(package):
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(W.resources, "files", files)
    assert W._bundled_dir() == Path(__file__).resolve().parent.parent / "weights"
    assert gsn_metric.list_weights() and W.resolve(None)[0].is_file()
