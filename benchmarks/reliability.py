"""Reliability in figures: what the library was made to survive, counted.

    python benchmarks/reliability.py [--quick]

Parts (a tiny GSN made here, except where said: the checks are about the library's handling, not the
network's values):

1. **bad inputs**: a generated corpus of files and in-memory inputs through the API (and the files through the
   command line too), each labelled "must be refused" or "must score": a refusal must be a clear error (an
   exception of the documented kinds with a message; the CLI: exit status 1 or 2, a message, no traceback), a
   score must be finite. Anything else is a *crash*; a score where a refusal was due is *silent*.
2. **fuzzing** (hypothesis): random shapes, dtypes, value ranges and sizes: finite scores or clear errors.
3. **kills**: a tiny ``fit`` killed with SIGKILL at a random moment, then resumed, several times: the final
   weights must be bit-identical to an uninterrupted run's.
4. **tampering**: weight files with a flipped header or data byte, truncated, extended, a pickle renamed to
   .safetensors, wrong metadata: every one must be refused.
5. **memory**: peak RSS of five-patch and grid scoring of many large pairs (files streamed through
   ``iter_scores``), one fresh process each: bounded by ``batch_size``, not by the number of pairs; ``full``
   mode on the largest: scored or refused, never an allocator crash. Then the paper-width network (random
   weights: activations, not values, set the memory) at the default ``batch_size``, and ``GSNLoss`` forward +
   backward on batches of crops, whose kept activations grow with the batch.
6. **threads**: one ``GSNScore`` shared by 4 threads gives the serial scores.
7. **scoring runs** (``--out``/``--resume``, torchrun): pairs that fail are error rows and the rest is scored; a
   resume with other weights, patches or pairs is refused; a run killed with SIGKILL 3 times, and a 2-process
   torchrun run one of whose processes is killed, each finish with ``--resume`` into exactly the file of an
   uninterrupted run.

The last line reads ``reliability: T tried, C crashes, S silent, K/K kills bit-identical, W/W tampered refused,
R/R scoring runs as required``.
``--quick`` (under a minute) shrinks every part. Needs the ``bench`` extra (hypothesis) and ``train`` (fit).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gsn_metric import GSNLoss, GSNScore
from gsn_metric.cli import main as cli_main
from gsn_metric.model import GSN, GSNConfig
from gsn_metric.weights import save_weights

ROOT = Path(__file__).resolve().parent.parent
TINY = GSNConfig(stem=4, blocks=((6, 8, 6), (6, 6), (6,)), fusion_channels=4, fusion_size=6)
CLEAR = (ValueError, TypeError, OSError, RuntimeError)  # the documented kinds of refusal


class Tally:
    """Counts of what was tried and how it went; the details of every failure."""

    def __init__(self) -> None:
        self.tried = self.crashes = self.silent = 0
        self.failures: list[str] = []

    def outcome(self, what: str, must_refuse: bool, run: Callable[[], Any]) -> None:
        self.tried += 1
        try:
            value = run()
        except CLEAR as err:
            if not str(err).strip():
                self._crash(what, f"{type(err).__name__} without a message")
            elif not must_refuse:
                self._crash(what, f"refused an input it should score: {type(err).__name__}: {err}")
            return
        except Exception as err:  # noqa: BLE001 -- any other exception is what this counts
            self._crash(what, f"{type(err).__name__}: {err}")
            return
        finite = value is not None and bool(torch.isfinite(torch.as_tensor(value)).all())
        if must_refuse:
            self.silent += 1
            self.failures.append(f"SILENT {what}: scored {value}")
        elif not finite:
            self._crash(what, f"non-finite score {value}")

    def _crash(self, what: str, why: str) -> None:
        self.crashes += 1
        self.failures.append(f"CRASH {what}: {why}")


# ---------------------------------------------------------------------------------------------------------
# 1. bad inputs


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path)
    return path


def make_files(folder: Path, size: int) -> list[tuple[str, Path, bool]]:
    """(name, file, must_refuse) for image files whose partner is a valid RGB image of the same size."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    good = _png(folder / "good.png", rgb)
    cases: list[tuple[str, Path, bool]] = [("valid RGB PNG", good, False)]
    cases.append(("grayscale PNG", _png(folder / "gray.png", rgb[..., 0]), False))
    cases.append(("16-bit grayscale PNG", _png(folder / "gray16.png", (rgb[..., 0].astype(np.uint16) * 257)),
                  False))
    cases.append(("JPEG", folder / "ok.jpg", False))
    Image.fromarray(rgb).save(folder / "ok.jpg", quality=90)
    cases.append(("BMP", folder / "ok.bmp", False))
    Image.fromarray(rgb).save(folder / "ok.bmp")
    cases.append(("palette PNG", folder / "pal.png", False))
    Image.fromarray(rgb).convert("P").save(folder / "pal.png")
    cases.append(("CMYK JPEG", folder / "cmyk.jpg", False))
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    opaque = np.dstack([rgb, np.full((size, size), 255, np.uint8)])
    cases.append(("RGBA fully opaque", _png(folder / "opaque.png", opaque), False))
    translucent = opaque.copy()
    translucent[0, 0, 3] = 10
    cases.append(("RGBA with transparency", _png(folder / "rgba.png", translucent), True))
    cases.append(("LA with transparency", folder / "la.png", True))
    Image.fromarray(translucent[..., [0, 3]], "LA").save(folder / "la.png")
    cases.append(("16-bit RGB PNG", folder / "rgb16.png", True))
    _write_rgb16_png(folder / "rgb16.png", rgb.astype(np.uint16) * 257)
    raw = good.read_bytes()
    for name, data in (("truncated PNG", raw[: len(raw) // 2]), ("empty file", b""),
                       ("text named .png", b"hello, not an image\n"), ("PNG header only", raw[:60]),
                       ("flipped byte in PNG data", raw[:200] + bytes([raw[200] ^ 0xFF]) + raw[201:])):
        path = folder / f"{name.replace(' ', '_').replace('.', '')}.png"
        path.write_bytes(data)
        cases.append((name, path, True))
    jpg = (folder / "ok.jpg").read_bytes()
    (folder / "trunc.jpg").write_bytes(jpg[: len(jpg) // 3])
    cases.append(("truncated JPEG", folder / "trunc.jpg", True))
    (folder / "mislabelled.png").write_bytes(jpg)  # a JPEG named .png: decodable, so it must score
    cases.append(("JPEG named .png", folder / "mislabelled.png", False))
    cases.append(("missing file", folder / "nope.png", True))
    cases.append(("a folder", folder, True))
    (folder / "broken_link.png").symlink_to(folder / "gone.png")
    cases.append(("broken symlink", folder / "broken_link.png", True))
    (folder / "link.png").symlink_to(good)
    cases.append(("symlink to a valid PNG", folder / "link.png", False))
    cases.append(("1×1 image", _png(folder / "one.png", rgb[:1, :1]), True))
    cases.append(("other size", _png(folder / "other.png", rgb[: size // 2]), True))
    return cases


def _write_rgb16_png(path: Path, array: np.ndarray) -> None:
    """A real 16-bit-per-channel RGB PNG (Pillow cannot write one): zlib + the chunks, by hand."""
    import struct
    import zlib

    h, w, _ = array.shape
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) +
                     chunk(b"IEND", b""))


def memory_cases(size: int) -> list[tuple[str, Callable[[], tuple[Any, Any]], bool]]:
    """(name, () -> (ref, dist), must_refuse) for in-memory inputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, size, size, generator=g)
    nan, inf = x.clone(), x.clone()
    nan[0, 0, 0, 0], inf[1, 2, 3, 4] = float("nan"), float("inf")
    arr = (x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    return [
        ("float32 NCHW in [0, 1]", lambda: (x, x.flip(-1)), False),
        ("float64", lambda: (x.double(), x.double().flip(-1)), False),
        ("float16", lambda: (x.half(), x.half()), False),
        ("CHW", lambda: (x[0], x[1]), False),
        ("1-channel", lambda: (x[:, :1], x[:, :1]), False),
        ("numpy uint8 HWC", lambda: (arr, arr), False),
        ("numpy uint16 HWC", lambda: (arr.astype(np.uint16) * 257, arr.astype(np.uint16) * 257), False),
        ("PIL RGB", lambda: (Image.fromarray(arr), Image.fromarray(arr)), False),
        ("list of CHW", lambda: ([x[0], x[1]], [x[1], x[0]]), False),
        ("values in [0, 255]", lambda: (x * 255, x * 255), True),
        ("values in [-1, 1]", lambda: (x * 2 - 1, x * 2 - 1), True),
        ("NaN", lambda: (nan, x), True),
        ("Inf", lambda: (x, inf), True),
        ("uint8 tensor", lambda: ((x * 255).byte(), (x * 255).byte()), True),
        ("int64 tensor", lambda: ((x * 255).long(), (x * 255).long()), True),
        ("bool tensor", lambda: (x > 0.5, x > 0.5), True),
        ("4 channels", lambda: (torch.rand(1, 4, size, size), torch.rand(1, 4, size, size)), True),
        ("2 channels", lambda: (torch.rand(1, 2, size, size), torch.rand(1, 2, size, size)), True),
        ("5-D tensor", lambda: (x[None], x[None]), True),
        ("2-D tensor", lambda: (x[0, 0], x[0, 0]), True),
        ("empty batch", lambda: (x[:0], x[:0]), True),
        ("batch sizes 2 and 1", lambda: (x, x[:1]), True),
        ("sizes differ", lambda: (x, x[..., :-1]), True),
        ("1×1 images", lambda: (x[..., :1, :1], x[..., :1, :1]), True),
        ("1×N images", lambda: (x[..., :1, :], x[..., :1, :]), True),
        ("None", lambda: (None, x), True),
        ("a number", lambda: (3.0, x), True),
        ("a string that is no file", lambda: ("no/such/file.png", x), True),
        ("empty list", lambda: ([], []), True),
        ("list of different sizes", lambda: ([x[0], x[0, :, :-2]], [x[0], x[0, :, :-2]]), True),
        ("numpy float NaN", lambda: (np.full((size, size, 3), np.nan, np.float32), arr), True),
        ("numpy int16", lambda: (arr.astype(np.int16), arr.astype(np.int16)), True),
        ("meta tensor", lambda: (torch.empty(1, 3, size, size, device="meta"),) * 2, True),
        ("sparse tensor", lambda: (x[0, 0].to_sparse(), x[0, 0].to_sparse()), True),
        ("complex tensor", lambda: (x.to(torch.complex64), x.to(torch.complex64)), True),
    ]


def bad_inputs(metric: GSNScore, weights: str, folder: Path, size: int, tally: Tally) -> None:
    for name, make, must_refuse in memory_cases(size):
        tally.outcome(f"API {name}", must_refuse, lambda make=make: metric(*make()))
    good = folder / "good.png"
    for name, path, must_refuse in make_files(folder, size):
        tally.outcome(f"API file: {name}", must_refuse, lambda p=path: metric(good, p))
        tally.outcome(f"CLI file: {name}", must_refuse, lambda p=path: _cli_score(good, p, weights))


def _cli_score(ref: Path, dist: Path, weights: str) -> float:
    """The CLI on one pair: its score, or a ValueError carrying its message (exit 1 or 2 with a message and no
    traceback is a clear refusal)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli_main([str(ref), str(dist), "--weights", weights, "--no-progress"])
        except SystemExit as exit_:  # argparse
            status = exit_.code
    if status == 0:
        return float(out.getvalue())
    message = err.getvalue().strip()
    if status in (1, 2) and message and "Traceback" not in message:
        raise ValueError(message)
    raise AssertionError(f"exit status {status}: {message[-300:]}")


# ---------------------------------------------------------------------------------------------------------
# 2. fuzzing


def fuzz(metric: GSNScore, examples: int, tally: Tally) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int32, torch.bool]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(n=st.integers(0, 3), c=st.integers(1, 5), h=st.integers(1, 70), w=st.integers(1, 70),
           dtype=st.sampled_from(dtypes), scale=st.sampled_from([1.0, 1.0005, 255.0, -1.0, 1e30]),
           special=st.sampled_from([None, "nan", "inf", "-inf"]), same=st.booleans(), seed=st.integers(0, 2**16))
    def run(n: int, c: int, h: int, w: int, dtype: torch.dtype, scale: float, special: str | None, same: bool,
            seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        ref = torch.rand(n, c, h, w, generator=g) * scale
        dist = ref.clone() if same else torch.rand(n, c, h, w, generator=g) * scale
        if special and ref.numel():
            ref.view(-1)[0] = float(special)
        ref, dist = ref.to(dtype), dist.to(dtype)
        valid = (n > 0 and c in (1, 3) and min(h, w) >= 2 and dtype.is_floating_point and special is None
                 and scale in (1.0, 1.0005) and dtype != torch.bool)
        tally.outcome(f"fuzz n={n} c={c} {h}×{w} {dtype} ×{scale} {special}", not valid, lambda: metric(ref, dist))

    run()


# ---------------------------------------------------------------------------------------------------------
# 3. kills


def _fit_argv(data: Path, out: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "gsn_metric.train", "fit", "--dataset", "kadid10k", "--root", str(data),
            "--patch-size", "32", "--tiny", "--batch-size", "2", "--val-fraction", "0.25", "--seed", "0",
            "--device", "cpu", "--workers", "0", "--epochs", str(epochs), "--out", str(out), "--resume"]


def kills(work: Path, count: int, epochs: int) -> tuple[int, int]:
    """(bit-identical, tried): each trial kills a fit once at a random moment, resumes it to the end, and
    compares its final weights with an uninterrupted run's."""
    data = work / "data"
    subprocess.run([sys.executable, str(ROOT / "tests" / "train_fixtures.py"), str(data), "--refs", "4",
                    "--size", "48"], check=True, capture_output=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(_fit_argv(data, work / "whole", epochs), check=True, capture_output=True, env=env)
    duration = time.perf_counter() - start
    from gsn_metric.train.loop import load_checkpoint

    whole = load_checkpoint(work / "whole" / "checkpoint.pt")["model"]
    rng = random.Random(0)
    same = 0
    for k in range(count):
        out = work / f"killed{k}"
        proc = subprocess.Popen(_fit_argv(data, out, epochs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env)
        time.sleep(rng.uniform(0.3, 0.9) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        subprocess.run(_fit_argv(data, out, epochs), check=True, capture_output=True, env=env)
        final = load_checkpoint(out / "checkpoint.pt")["model"]
        same += all(torch.equal(v, final[key]) for key, v in whole.items())
    return same, count


# ---------------------------------------------------------------------------------------------------------
# 4. tampering


def tampering(work: Path) -> tuple[int, int, list[str]]:
    """(refused, tried, what loaded): damaged weight files, each alone in its folder (no manifest)."""
    from safetensors.torch import save_file

    from gsn_metric.weights import load_model

    torch.manual_seed(0)
    good = work / "good" / "w.safetensors"
    good.parent.mkdir(parents=True)
    save_weights(GSN(TINY).eval(), good, training_data="t", score_name="s", score_range=(1.0, 5.0), patch_size=32)
    raw = good.read_bytes()
    header = int.from_bytes(raw[:8], "little")
    cases: dict[str, bytes | Callable[[Path], None]] = {
        "flipped header byte": raw[:8] + raw[8:20] + bytes([raw[20] ^ 0x01]) + raw[21:],
        "flipped metadata value byte": raw.replace(b'"patch_size":"32"', b'"patch_size":"33"'),
        "flipped data byte (first tensor)": raw[: 8 + header + 5] + bytes([raw[8 + header + 5] ^ 0x40])
        + raw[8 + header + 6:],
        "flipped data byte (last tensor)": raw[:-2] + bytes([raw[-2] ^ 0x01]) + raw[-1:],
        "truncated": raw[: len(raw) - 100],
        "extended": raw + b"\x00" * 64,
        "empty": b"",
        "header length too large": (len(raw) * 2).to_bytes(8, "little") + raw[8:],
    }
    refused, loaded = 0, []
    for name, data in cases.items():
        path = work / name.replace(" ", "_").replace("(", "").replace(")", "") / "w.safetensors"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        refused += _refused(load_model, path, name, loaded)
    # a pickle renamed, and valid safetensors with wrong metadata or tensors
    model = GSN(TINY)
    odd: dict[str, Callable[[Path], None]] = {
        "torch.save pickle renamed": lambda p: torch.save(model.state_dict(), p),
        "safetensors without metadata": lambda p: save_file(model.state_dict(), str(p)),
        "metadata of another architecture": lambda p: save_file(
            model.state_dict(), str(p), metadata={**_meta(good), "config": GSNConfig().to_json()}),
        "score_range reversed": lambda p: save_file(model.state_dict(), str(p),
                                                    metadata={**_meta(good), "score_range": "[5, 1]"}),
        "NaN weights": lambda p: save_file({**model.state_dict(), "fc.bias": torch.tensor([float("nan")])},
                                           str(p), metadata=_meta(good)),
    }
    for name, write in odd.items():
        path = work / name.replace(" ", "_") / "w.safetensors"
        path.parent.mkdir(parents=True)
        write(path)
        refused += _refused(load_model, path, name, loaded)
    return refused, len(cases) + len(odd), loaded


def _meta(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


def _refused(load: Callable[[Path], Any], path: Path, name: str, loaded: list[str]) -> int:
    try:
        load(path)
    except CLEAR as err:
        return int(bool(str(err).strip()))
    except Exception as err:  # noqa: BLE001
        loaded.append(f"{name}: crashed with {type(err).__name__}: {err}")
        return 0
    loaded.append(f"{name}: LOADED")
    return 0


# ---------------------------------------------------------------------------------------------------------
# 5. memory


def big_pair(work: Path, side: tuple[int, int]) -> tuple[Path, Path]:
    """A random reference of ``side`` (H, W) and a brightened copy, as PNG files in ``work``."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*side, 3), dtype=np.uint8)
    ref, dist = work / "big_ref.png", work / "big_dist.png"
    Image.fromarray(img).save(ref, compress_level=1)
    Image.fromarray(np.clip(img.astype(int) + 8, 0, 255).astype(np.uint8)).save(dist, compress_level=1)
    return ref, dist


def _alternating(ref: Path, dist: Path, n: int) -> list[list[str]]:
    """``n`` pairs whose sides alternate, so that no two consecutive pairs share a reference (no reuse: the
    general path)."""
    return [[str(ref), str(dist)] if i % 2 == 0 else [str(dist), str(ref)] for i in range(n)]


def memory(weights: str, ref: Path, dist: Path, counts: dict[str, list[int]]) -> list[list[str]]:
    """Rows: mode, pairs, peak RSS MiB, note; each configuration in a fresh process reading files."""
    rows = []
    for mode in ("five", "grid"):
        for n in counts[mode]:
            spec = {"weights": weights, "mode": mode, "pairs": _alternating(ref, dist, n)}
            rows.append([mode, str(n), *_child(spec)])
    rows.append(["full", "1", *_child({"weights": weights, "mode": "full", "pairs": [[str(ref), str(dist)]]})])
    return rows


def paper_width_memory(weights: str, ref: Path, dist: Path, pairs: list[int], crops: list[int]) -> list[list[str]]:
    """Rows as :func:`memory`'s for the paper-width network: five-patch scoring of ``pairs`` pairs of files, and
    ``GSNLoss`` forward + backward on batches of ``crops`` 192×192 crops (its activations are kept for backward)."""
    rows = []
    for n in pairs:
        spec = {"weights": weights, "mode": "five", "pairs": _alternating(ref, dist, n)}
        rows.append(["five, paper width", str(n), *_child(spec)])
    for n in crops:
        rows.append(["GSNLoss + backward, paper width", f"{n} crops", *_child({"weights": weights, "loss": n})])
    return rows


def _child(spec: dict) -> list[str]:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return ["–", f"CRASH (exit {done.returncode}): {done.stderr.strip()[-200:]}"]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return [f"{result['peak_mib']:.0f}", result["note"]]


def child(spec: dict) -> dict:
    def peak() -> float:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    if "loss" in spec:
        loss_fn = GSNLoss(spec["weights"], device="cpu")
        base = peak()
        g = torch.Generator().manual_seed(0)
        output = torch.rand(spec["loss"], 3, 192, 192, generator=g, requires_grad=True)
        loss_fn(output, torch.rand(spec["loss"], 3, 192, 192, generator=g)).backward()
        finite = bool(torch.isfinite(output.grad).all())
        return {"peak_mib": peak() - base, "note": "finite gradients" if finite else "NON-FINITE"}
    metric = GSNScore(spec["weights"], device="cpu", patches=spec["mode"], batch_size=32)
    base = peak()
    try:
        scores = list(metric.iter_scores(spec["pairs"]))
        note = f"{len(scores)} finite scores" if all(np.isfinite(scores)) else "NON-FINITE"
    except CLEAR as err:
        note = f"refused: {str(err)[:120]}"
    return {"peak_mib": peak() - base, "note": note}


# ---------------------------------------------------------------------------------------------------------
# 6. threads


def threads(metric: GSNScore, size: int, tally: Tally) -> str:
    g = torch.Generator().manual_seed(1)
    pairs = [(torch.rand(1, 3, size, size, generator=g), torch.rand(1, 3, size, size, generator=g)) for _ in range(16)]
    with torch.inference_mode():
        serial = [metric(r, d) for r, d in pairs]
    results: dict[int, torch.Tensor] = {}
    errors: list[str] = []

    def work(i: int) -> None:
        try:
            with torch.inference_mode():
                results[i] = metric(*pairs[i])
        except Exception as err:  # noqa: BLE001
            errors.append(f"{type(err).__name__}: {err}")

    pool = [threading.Thread(target=lambda k=k: [work(i) for i in range(k, 16, 4)]) for k in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    tally.tried += 1
    same = not errors and all(torch.equal(results[i], serial[i]) for i in range(16))
    if not same:
        tally.crashes += 1
        tally.failures.append(f"CRASH threads: {errors[:2] or 'scores differ from the serial ones'}")
    return "4 threads × 4 pairs: the serial scores exactly" if same else "DIFFERENT"


# ---------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------
# 7. scoring runs: --out, --resume, torchrun


def _run_cli(args: list[str], procs: int = 1) -> subprocess.Popen:
    launcher = [sys.executable, "-m", "gsn_metric"] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), "-m",
         "gsn_metric"]
    return subprocess.Popen([*launcher, *args, "--no-progress", "--device", "cpu"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                    "PYTHONPATH": str(ROOT)})


def _worker(launcher: int, rank: int) -> int | None:
    """The pid of torchrun ``launcher``'s worker process of this rank (from its environment), if it is up."""
    found = subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True, text=True, check=False).stdout
    for pid in map(int, found.split()):
        with contextlib.suppress(OSError):
            if f"RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return pid
    return None


def _two_tiny(work: Path) -> tuple[str, str]:
    """Two different tiny weight files in ``work`` (seeds 0 and 1): the suite's, and another."""
    paths = []
    for seed, name in ((0, "tiny.safetensors"), (1, "other.safetensors")):
        torch.manual_seed(seed)
        path = work / name
        if not path.exists():
            save_weights(GSN(TINY).eval(), path, training_data=f"random (reliability suite, seed {seed})",
                         score_name="test", score_range=(1.0, 5.0), patch_size=32)
        paths.append(str(path))
    return paths[0], paths[1]


def scoring_runs(work: Path, weights: str, other_weights: str, kills_wanted: int) -> tuple[int, int, list[str]]:
    """(as required, tried, failures) for long CLI runs: pairs that fail are error rows and the rest is
    scored; a resume with other weights, patch mode or pairs is refused with the reason; a run killed
    (SIGKILL) at random moments, and a torchrun run one of whose processes is killed, both finish with
    ``--resume`` into exactly an uninterrupted run's file."""
    work.mkdir(parents=True)
    rng_np = np.random.default_rng(0)
    rows = []
    for r in range(20):
        ref = rng_np.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        _png(work / f"r{r}.png", ref)
        for d in range(15):
            _png(work / f"r{r}_{d}.png", np.clip(ref + rng_np.normal(0, 2 * d + 1, ref.shape), 0, 255).astype(np.uint8))
            rows.append(f"r{r}.png,r{r}_{d}.png")
    (work / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    _png(work / "wide.png", rng_np.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    bad = ["r0.png,missing.png", "r1.png,corrupt.png", "r2.png,wide.png"]
    for i, row in enumerate(bad):
        rows.insert(40 * (i + 1), row)
    pairs = work / "pairs.csv"
    pairs.write_text("ref,dist\n" + "\n".join(rows) + "\n")
    base = ["--pairs", str(pairs), "--weights", weights, "--batch-size", "1", "--out"]
    ok, tried, failures = 0, 0, []

    def check(what: str, good: bool, detail: str = "") -> None:
        nonlocal ok, tried
        tried += 1
        ok += good
        if not good:
            failures.append(f"SCORING RUN {what}: {detail[-300:]}")

    whole = work / "whole.csv"
    _run_cli([*base, str(whole)]).communicate(timeout=300)
    text = whole.read_text().splitlines()
    errors = [line for line in text[1:] if not line.split(",")[2]]
    check("failing rows are error rows, the rest scored", len(text) == len(rows) + 1 and len(errors) == len(bad),
          f"{len(text) - 1} rows, {len(errors)} errors")
    for what, args in [("other weights", ["--weights", other_weights]), ("other patches", ["--patches", "full"])]:
        proc = _run_cli([*base, str(whole), "--resume", *args])
        _, err = proc.communicate(timeout=300)
        check(f"resume with {what} refused", proc.returncode == 1 and "other settings" in err, err)
    fewer = work / "fewer.csv"
    fewer.write_text("ref,dist\n" + "\n".join(rows[:50]) + "\n")
    proc = _run_cli(["--pairs", str(fewer), "--weights", weights, "--out", str(whole), "--resume"])
    _, err = proc.communicate(timeout=300)
    check("resume with other pairs refused", proc.returncode == 1 and "does not list" in err, err)

    rng, killed, landed = random.Random(0), work / "killed.csv", 0
    for k in range(kills_wanted):
        before = max(0, len(killed.read_text().splitlines()) - 1) if killed.exists() else 0
        proc = _run_cli([*base, str(killed), "--resume"])
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and \
                (not killed.exists() or len(killed.read_text().splitlines()) - 1 <= before):
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.1))
        if proc.poll() is None:  # a run that ended before its kill is not counted as killed
            proc.kill()
            landed += 1
        proc.communicate(timeout=60)
    _run_cli([*base, str(killed), "--resume"]).communicate(timeout=300)
    check(f"{kills_wanted} kills then --resume equal an uninterrupted run",
          landed == kills_wanted and killed.read_text() == whole.read_text(),
          f"{landed} of the {kills_wanted} runs were still running when killed")

    dead = work / "dead.csv"
    launcher = _run_cli([*base, str(dead)], procs=2)
    deadline, victim = time.monotonic() + 120, None
    while launcher.poll() is None and time.monotonic() < deadline:
        part = work / "dead.csv.part-1"
        if part.exists() and len(part.read_text().splitlines()) > 10:
            victim = _worker(launcher.pid, 1)
            if victim:
                os.kill(victim, signal.SIGKILL)
                break
        time.sleep(0.01)
    launcher.communicate(timeout=120)
    kept = sum(max(0, len(p.read_text().splitlines()) - 1) for p in work.glob("dead.csv.part-*"))
    _run_cli([*base, str(dead), "--resume"]).communicate(timeout=300)
    check("a torchrun process killed: the others' rows kept, --resume finishes into the uninterrupted file",
          victim is not None and kept > 0 and dead.read_text() == whole.read_text(),
          f"victim {victim}, {kept} rows kept")
    return ok, tried, failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller everything: under a minute")
    ap.add_argument("--scoring-runs-only", action="store_true", help="part 7 alone (about a minute)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    torch.set_num_threads(1)
    if args.scoring_runs_only:
        with tempfile.TemporaryDirectory() as tmp:
            weights, other = _two_tiny(Path(tmp))
            runs_ok, runs_tried, run_failures = scoring_runs(Path(tmp) / "runs", weights, other, 3)
        print("\n".join(run_failures))
        print(f"7. scoring runs (--out, --resume, torchrun): {runs_ok}/{runs_tried} as required")
        return 0 if runs_ok == runs_tried else 1
    tally = Tally()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        weights = str(work / "tiny.safetensors")
        save_weights(GSN(TINY).eval(), weights, training_data="random (reliability suite)", score_name="test",
                     score_range=(1.0, 5.0), patch_size=32)
        metric = GSNScore(weights, device="cpu")
        (work / "files").mkdir()
        t0 = time.perf_counter()
        bad_inputs(metric, weights, work / "files", 48, tally)
        print(f"1. bad inputs: {tally.tried} tried ({time.perf_counter() - t0:.0f} s)")
        before = tally.tried
        fuzz(metric, 60 if args.quick else 400, tally)
        print(f"2. fuzzing: {tally.tried - before} examples")
        same, tried_kills = kills(work / "kills", 2 if args.quick else 5, 2 if args.quick else 4)
        print(f"3. kills: {same}/{tried_kills} resumed runs bit-identical to the uninterrupted one")
        refused, tampered, loaded = tampering(work / "tamper")
        print(f"4. tampering: {refused}/{tampered} refused" + (f"; {loaded}" if loaded else ""))
        big_weights = str(work / "tiny192.safetensors")
        save_weights(GSN(TINY).eval(), big_weights, training_data="random", score_name="test",
                     score_range=(1.0, 5.0), patch_size=192)
        # grid of 64 12-MP pairs is left out of the full run: ~1,300 tiles a side per pair, ~14 min on 2 cores
        side, counts = (((1000, 1000), {"five": [1, 4], "grid": [1, 4]}) if args.quick else
                        ((3000, 4000), {"five": [1, 8, 64], "grid": [1, 8]}))
        ref, dist = big_pair(work / "files", side)
        rows = memory(big_weights, ref, dist, counts)
        paper = str(work / "paper.safetensors")  # activations, not weights, set the memory: random weights do
        save_weights(GSN().eval(), paper, training_data="random", score_name="test", score_range=(1.0, 5.0))
        rows += paper_width_memory(paper, ref, dist, [1] if args.quick else [1, 8], [1] if args.quick else [1, 8])
        print(f"5. memory: peak RSS increase while scoring {side[1]}×{side[0]} pairs streamed from files "
              "(batch_size 32, 192-px patches, tiny network unless said; fresh process each)\n")
        print("| patches | pairs | peak RSS increase MiB | result |\n|---|---|---|---|")
        print("\n".join("| " + " | ".join(r) + " |" for r in rows))
        for r in rows:
            tally.tried += 1
            if "CRASH" in r[-1] or "NON-FINITE" in r[-1]:
                tally.crashes += 1
                tally.failures.append(f"CRASH memory {r[0]} {r[1]}: {r[-1]}")
        print(f"\n6. threads: {threads(metric, 48, tally)}")
        _, other = _two_tiny(work)
        runs_ok, runs_tried, run_failures = scoring_runs(work / "runs", weights, other, 3)
        tally.failures += run_failures
        print(f"7. scoring runs (--out, --resume, torchrun): {runs_ok}/{runs_tried} as required")
    for failure in tally.failures:
        print(failure)
    print(f"reliability: {tally.tried} tried, {tally.crashes} crashes, {tally.silent} silent, "
          f"{same}/{tried_kills} kills bit-identical, {refused}/{tampered} tampered refused, "
          f"{runs_ok}/{runs_tried} scoring runs as required")
    return 0 if not (tally.crashes or tally.silent or loaded or same < tried_kills or runs_ok < runs_tried) else 1


if __name__ == "__main__":
    sys.exit(main())
