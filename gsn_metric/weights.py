"""GSN weight files: the registry of released weights, name/path resolution, safetensors load and save.

A weight file is a ``.safetensors`` file (never a pickle) whose metadata carries everything needed to
rebuild and interpret the network:

========================  =====================================================================
``format``                ``"gsn-metric"``
``format_version``        ``"1"``
``config``                :class:`~gsn_metric.model.GSNConfig` as JSON (architecture hyper-parameters)
``training_data``         what it was trained on, free text (e.g. ``"KADID-10k (all 10,125 pairs)"``)
``score_name``            the scale of its scores (e.g. ``"KADID-10k DMOS"``)
``score_range``           JSON ``[lo, hi]`` of that scale; higher = better always
``patch_size``            the side of the square patches it was trained on and scores (the paper: 192)
``gsn_metric_version``    the library version that wrote it
``content_sha256``        sha256 of the tensors (names, dtypes, shapes, bytes) and of every other metadata
                          entry, checked on load: a file shared without its manifest still refuses a
                          flipped byte (files written before it existed have none; their manifest's
                          sha256 covers them)
========================  =====================================================================

A manifest (``manifest.json``) lists files by name with their sha256 and measured results. The bundled
manifest (``weights/manifest.json`` in the repository, ``gsn_metric._bundled`` once installed) is the
registry of released weights; a training run writes one beside its export, which is honoured the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ._version import __version__
from .model import GSN, GSNConfig
from .patches import PATCH_SIZE

FORMAT = "gsn-metric"
FORMAT_VERSION = "1"
MANIFEST = "manifest.json"

_NO_WEIGHTS = (
    "This installation of gsn-metric lists no default GSN weights (its bundled manifest names none), so GSN "
    "cannot score without a weight file. Reinstall gsn-metric (its wheel bundles the default weights), or pass "
    "weights='path/to/gsn.safetensors' (or --weights on the command line): train one with "
    "`python -m gsn_metric.train fit ...` (see the README's 'Retrain' section) or use one a colleague shared."
)


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """What a loaded weight file says about itself."""

    path: Path
    sha256: str
    config: GSNConfig
    training_data: str
    score_name: str
    score_range: tuple[float, float]
    patch_size: int
    version: str
    name: str | None = None
    results: dict[str, Any] = dataclasses.field(default_factory=dict)


def _bundled_dir() -> Path:
    try:
        return Path(str(resources.files("gsn_metric._bundled")))
    except ModuleNotFoundError:  # a source checkout on PYTHONPATH, not pip-installed: the files are in its weights/
        return Path(__file__).resolve().parent.parent / "weights"


def _read_manifest(directory: Path) -> dict[str, Any]:
    """``{"format": 1, "default": name or None, "weights": {name: entry}}``; empty if there is no manifest."""
    path = directory / MANIFEST
    if not path.is_file():
        return {"format": 1, "default": None, "weights": {}}
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        problem: str | None = str(err)
    else:
        problem = _manifest_problem(manifest)
    if problem:
        raise ValueError(f"{path} is not a valid gsn-metric manifest ({problem}); restore or delete it")
    return manifest


def _manifest_beside(directory: Path) -> list[dict[str, Any]]:
    """Entries of the gsn-metric manifest in the folder of an explicit weight file. Another tool's
    ``manifest.json`` there (JSON without a ``weights`` mapping, or not JSON) is not ours and is ignored: the
    file's own ``content_sha256`` still guards it. A gsn-metric manifest with bad entries is an error."""
    try:
        raw = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(raw, dict) or "weights" not in raw:
        return []
    return list(_read_manifest(directory)["weights"].values())


def _manifest_problem(manifest: Any) -> str | None:
    if not isinstance(manifest, dict) or not isinstance(manifest.get("weights"), dict):
        return "no 'weights' mapping"
    bad = sorted(name for name, entry in manifest["weights"].items() if not isinstance(entry, dict))
    return f"entries {bad} are not mappings" if bad else None


def _default_file(directory: str | os.PathLike) -> Path | None:
    """The file of the default named by ``directory``'s manifest (a weights folder), or None if it names none."""
    manifest = _read_manifest(Path(directory))
    entry = manifest["weights"].get(manifest.get("default"))
    return Path(directory) / entry["file"] if entry else None


def list_weights() -> list[str]:
    """Names of the released weights this installation knows (usable as ``GSNScore(weights=name)``)."""
    return sorted(_read_manifest(_bundled_dir())["weights"])


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve(spec: str | os.PathLike | None) -> tuple[Path, dict[str, Any] | None, str | None]:
    """Find a weight file: explicit path → bundled file → local huggingface-hub cache → download.

    Returns ``(path, manifest entry or None, name or None)``. ``None`` asks for the default released
    weights. ``HF_HUB_OFFLINE=1`` makes the last step use the cache only.
    """
    manifest = _read_manifest(_bundled_dir())
    bundled = manifest["weights"]
    if spec is None:
        if not manifest.get("default"):
            raise RuntimeError(_NO_WEIGHTS)
        spec = manifest["default"]
    path = Path(spec).expanduser()
    if path.is_file():
        beside = _manifest_beside(path.parent)
        return path, next((e for e in beside if e.get("file") == path.name), None), None
    if path.is_dir():
        found = ", ".join(sorted(p.name for p in path.glob("*.safetensors"))[:5]) or "none"
        raise IsADirectoryError(f"weights={os.fspath(spec)!r} is a folder; pass the .safetensors file in it "
                                f"(found: {found}; a training run exports best.safetensors)")
    name = str(spec)
    if name not in bundled:
        if path.suffix or os.sep in name or "/" in name:
            raise FileNotFoundError(f"weight file {name} does not exist; check the path")
        known = ", ".join(sorted(bundled)) or "none in this installation"
        raise ValueError(f"unknown GSN weights {name!r} (released: {known}). " + ("" if bundled else _NO_WEIGHTS))
    entry = bundled[name]
    local = _bundled_dir() / entry["file"]
    if local.is_file():
        return local, entry, name
    import huggingface_hub  # only needed for weights not in the wheel

    cached = huggingface_hub.try_to_load_from_cache(entry["repo_id"], entry["file"], revision=entry.get("revision"))
    if isinstance(cached, str):
        return Path(cached), entry, name
    try:
        fetched = huggingface_hub.hf_hub_download(entry["repo_id"], entry["file"], revision=entry.get("revision"))
    except Exception as err:  # offline, no network, hub down: all mean "not available here"
        raise RuntimeError(
            f"GSN weights {name!r} are neither bundled nor cached, and downloading {entry['file']} from "
            f"huggingface.co/{entry['repo_id']} failed ({type(err).__name__}: {err}). Download it on a machine "
            f"with internet and pass weights='path/to/{entry['file']}'."
        ) from err
    return Path(fetched), entry, name


def _check_is_safetensors(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":  # 8-byte header length, then the JSON header
        return
    # torch.save writes a zip (PK…) since torch 1.6, a bare pickle (protocol 2+ starts 0x80) before.
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        raise ValueError(
            f"{path} is a pickled PyTorch checkpoint; gsn-metric loads only safetensors (pickles can run code). "
            "Convert a trusted checkpoint with safetensors.torch.save_file(torch.load(f, weights_only=True), out)."
        )
    raise ValueError(f"{path} is not a safetensors file (corrupt or truncated?); download or export it again")


def load_model(
    spec: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> tuple[GSN, WeightsInfo]:
    """Build a :class:`GSN` from a weight file (name or path, see :func:`resolve`), in eval mode on ``device``.

    Every failure names the file: a pickle, a corrupt file, a sha256 that differs from its manifest, metadata
    that is not gsn-metric's, missing, unexpected or mis-shaped tensors.
    """
    path, entry, name = resolve(spec)
    _check_is_safetensors(path)
    digest = sha256_file(path)
    if entry and entry.get("sha256") and entry["sha256"] != digest:
        raise ValueError(
            f"{path} has sha256 {digest}, but its manifest says {entry['sha256']}: the file is corrupt or not the "
            "released one. Delete it and download or export it again."
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except SafetensorError as err:
        raise ValueError(f"{path} could not be read as safetensors ({err}); download or export it again") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is a safetensors file but not gsn-metric weights (metadata format={meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has weights format {meta.get('format_version')!r}; this gsn-metric reads {FORMAT_VERSION!r}")
    try:
        config, score_range, patch_size = _parse_metadata(meta)
    except (KeyError, TypeError, ValueError) as err:
        problem = f"no {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise ValueError(
            f"{path} has gsn-metric metadata this version ({__version__}) cannot use ({problem}). If a newer "
            f"gsn-metric wrote it (it says {meta.get('gsn_metric_version', 'unknown')}), upgrade; otherwise the file "
            "is damaged: export it again with gsn_metric.weights.save_weights"
        ) from err
    model = GSN(config)
    _load_state(model, state, path)  # first: missing keys, shapes and NaN have the more useful messages
    if "content_sha256" in meta and _content_sha256(state, meta) != meta["content_sha256"]:
        raise ValueError(f"{path} is corrupt: its tensors or metadata do not match the checksum in its own "
                         "metadata (content_sha256); download or export it again")
    info = WeightsInfo(
        path=path,
        sha256=digest,
        config=config,
        training_data=meta.get("training_data", "unknown"),
        score_name=meta.get("score_name", "unknown"),
        score_range=score_range,
        patch_size=patch_size,
        version=meta.get("gsn_metric_version", "unknown"),
        name=name,
        results=(entry or {}).get("results", {}),
    )
    return model.to(device).eval(), info


def _parse_metadata(meta: dict[str, str]) -> tuple[GSNConfig, tuple[float, float], int]:
    """The architecture, score range and patch size a weight file needs; every one is required, since a
    default would silently change the scores (patch size) or flip the sign of ``GSNLoss`` (score range)."""
    config = GSNConfig.from_json(meta["config"])
    lo, hi = (float(v) for v in json.loads(meta["score_range"]))
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"score_range must be finite [lo, hi] with lo < hi, got {meta['score_range']}")
    patch_size = int(meta["patch_size"])
    if patch_size < 8:  # three stride-2 poolings (model.GSN)
        raise ValueError(f"patch_size must be at least 8, got {patch_size}")
    return config, (lo, hi), patch_size


def _content_sha256(state: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """sha256 of the metadata entries (but ``content_sha256`` itself) and of the tensors, both in name order:
    name, dtype, shape and raw bytes of each tensor."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "content_sha256"},
                                       sort_keys=True).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _load_state(model: GSN, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not match the GSN architecture in its own metadata: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}. "
            "The file is damaged or was edited; export it again."
        )
    # A diverged training run exports NaN weights, which would score every image NaN.
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise ValueError(f"{path} holds NaN or infinite values in {bad[:5]}: its training diverged; "
                         "export an earlier checkpoint or train again")
    model.load_state_dict(state)


def _sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its metadata keys sorted, in place: safetensors writes them in hash
    order, different on every run, so identical tensors would get a new sha256 at each export. Only the order
    changes, so the header keeps its length and the tensor data its offsets."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        raw = f.read(size)
        header = json.loads(raw)
        header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size or len(text.rstrip()) != len(raw.rstrip()):
            raise RuntimeError(f"could not rewrite the safetensors header of {path} in place")
        f.seek(8)
        f.write(text.ljust(size))


def save_weights(
    model: GSN,
    path: str | os.PathLike,
    *,
    training_data: str,
    score_name: str,
    score_range: tuple[float, float],
    patch_size: int = PATCH_SIZE,
    name: str | None = None,
    results: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    default: bool = False,
) -> str:
    """Write ``model`` (unfolded) as gsn-metric safetensors and record it in the manifest beside it.

    The manifest entry (key ``name``, default the file's stem) holds the sha256 and ``results``, so
    ``GSNScore(weights=path)`` verifies the file, and any ``details`` (how it was made: architecture, data,
    hardware, ...). ``default=True`` makes it the manifest's default. Returns the sha256.
    """
    path = Path(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_json(),
        "training_data": training_data,
        "score_name": score_name,
        "score_range": json.dumps([float(score_range[0]), float(score_range[1])]),
        "patch_size": str(patch_size),
        "gsn_metric_version": __version__,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta["content_sha256"] = _content_sha256(state, meta)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    _sort_metadata(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors writes 0600; a shared weight file must be readable by others
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    digest = sha256_file(path)
    manifest = _read_manifest(path.parent)
    manifest["weights"][name or path.stem] = {
        "file": path.name,
        "sha256": digest,
        "training_data": training_data,
        "score_name": score_name,
        "results": results or {},
        **(details or {}),
    }
    if default:
        manifest["default"] = name or path.stem
    tmp_manifest = path.parent / (MANIFEST + ".tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_manifest, path.parent / MANIFEST)
    return digest
