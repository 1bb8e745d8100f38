"""``speed.py``'s precision tables: GSN in fp32, bf16, int8 and ONNX Runtime on one machine, in one run.

CPU: ``GSNScore(precision=...)`` for fp32 / bf16 (where the CPU has native bfloat16) / int8, and ONNX Runtime
on the exported network (``gsn_metric.onnx_export``, fp32 and int8) where the ``onnx`` extra is installed:
ms per pair (one pair, five patches), pairs/s on a batch of pairs, pairs/s with the reference reused (GSNScore
only: the ONNX graph takes pairs), each row's arithmetic rate as a fraction of this machine's measured peak in
the same precision (a 4096² matmul: ``torch.mm`` in fp32 / bf16, ``torch._int_mm`` in int8).

CUDA (the lease's bench stage): fp32, bf16, both with the inner widths padded to multiples of 8
(``GSN.pad_channels``; and with the stem's 3 input channels padded to 8 as well), CUDA graphs of a fixed
batch shape, and ``torch.compile``; each row with its largest score difference from fp32 unpadded on the same
pairs.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from gsn_metric import GSNScore
from gsn_metric.patches import extract_patches
from gsn_metric.precision import cpu_has_fast_bf16

Timer = Callable[[Callable[[], object], int, torch.device], float]
MakePairs = Callable[[int, tuple[int, int], torch.device], tuple[torch.Tensor, torch.Tensor]]


def gflop_per_pair(metric: GSNScore, ref: torch.Tensor, dist: torch.Tensor) -> float:
    """GFLOP of one pair's forward pass (torch's flop counter: convolutions and matmuls, 2 per MAC)."""
    with FlopCounterMode(display=False) as counter:
        metric(ref, dist)
    return counter.get_total_flops() / 1e9 / ref.shape[0]


def peak_gflops(kind: str, device: torch.device, n: int = 4096) -> float:
    """This machine's measured matmul rate in GFLOP/s (GOP/s for int8): the best of 3 runs of an n×n×n product."""
    if kind == "int8":
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=device)
        op: Callable[[], object] = lambda: torch._int_mm(a, a)
    else:
        a = torch.rand(n, n, device=device, dtype=torch.bfloat16 if kind == "bf16" else torch.float32)
        op = lambda: a @ a
    op()
    best = float("inf")
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        op()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def onnx_session(weights: str | None, folder: Path, int8: bool) -> Any:
    """An ONNX Runtime CPU session (torch's thread count) of ``weights``' network exported into ``folder``."""
    import onnxruntime as ort

    from gsn_metric.onnx_export import export_onnx

    path = export_onnx(folder / f"gsn-{'int8' if int8 else 'fp32'}.onnx", weights, int8=int8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_sessions(weights: str, patch_size: int, folder: Path) -> dict[str, Any]:
    """ONNX Runtime sessions (fp32, int8) of the exported network, or a reason string where not possible."""
    try:
        import onnxruntime  # noqa: F401  -- without it, one row that says so
    except ImportError as err:
        return {"ONNX Runtime": f"not installed ({err.name}): pip install \"gsn-metric[onnx]\""}
    out: dict[str, Any] = {}
    for name, int8 in (("ONNX Runtime fp32", False), ("ONNX Runtime int8", True)):
        try:
            out[name] = onnx_session(weights, folder, int8)
        except Exception as err:  # noqa: BLE001 -- a failed export is a row that says so
            out[name] = f"failed: {type(err).__name__}: {err}"
    return out


def cpu_rows(weights: str, setup: dict, timeit: Timer, make_pairs: MakePairs, repeats: int, pairs: int,
             onnx: bool) -> tuple[float, list[list[str]]]:
    """GFLOP per pair and the CPU precision table's rows (see the module docstring); ``timeit`` and
    ``make_pairs`` are speed.py's."""
    device = torch.device("cpu")
    ref1, dist1 = make_pairs(1, setup["size"], device)
    refs, dists = make_pairs(pairs, setup["size"], device)
    one = refs[:1].expand(pairs, -1, -1, -1)
    s = setup["patch_size"]
    size = 1024 if setup["patch_size"] < 64 else 4096  # speed.py --quick: a smoke test, not a peak
    peaks = {kind: peak_gflops(kind, device, size) for kind in ("fp32", "bf16", "int8")}
    rows: list[list[str]] = []
    base = None
    flops = None
    for precision in ("fp32", "bf16", "int8"):
        if precision == "bf16" and not cpu_has_fast_bf16():
            rows.append(["GSNScore bf16", "–", "–", "–", "–", "–", "refused: no native bfloat16 on this CPU"])
            continue
        metric = GSNScore(weights, device=device, batch_size=5 * pairs, precision=precision)  # type: ignore[arg-type]
        flops = flops or gflop_per_pair(metric, ref1, dist1)
        t1 = timeit(lambda m=metric: m(ref1, dist1), repeats, device)
        tn = timeit(lambda m=metric: m(refs, dists), max(1, repeats // 3), device)
        tr = timeit(lambda m=metric: m(one, dists), max(1, repeats // 3), device)
        base = base or t1
        rows.append([f"GSNScore {precision}", f"{t1 * 1e3:.0f}", f"{pairs / tn:.3g}", f"{pairs / tr:.3g}",
                     f"{base / t1:.2f}", f"{flops / t1 / peaks[precision]:.0%} of {peaks[precision]:.0f}", ""])
    if onnx:
        with tempfile.TemporaryDirectory() as tmp:
            for name, session in _onnx_sessions(weights, s, Path(tmp)).items():
                if isinstance(session, str):
                    rows.append([name, "–", "–", "–", "–", "–", session])
                    continue

                def run(r: torch.Tensor, d: torch.Tensor, session: Any = session) -> object:
                    pr, pd = extract_patches(r, "five", s).flatten(0, 1), extract_patches(d, "five", s).flatten(0, 1)
                    return session.run(["score"], {"ref": pr.numpy(), "dist": pd.numpy()})[0]

                t1 = timeit(lambda run=run: run(ref1, dist1), repeats, device)
                tn = timeit(lambda run=run: run(refs, dists), max(1, repeats // 3), device)
                kind = "int8" if "int8" in name else "fp32"
                rows.append([name, f"{t1 * 1e3:.0f}", f"{pairs / tn:.3g}", "–", f"{(base or t1) / t1:.2f}",
                             f"{(flops or 0) / t1 / peaks[kind]:.0%} of {peaks[kind]:.0f}",
                             "exported network; no reference reuse"])
    return flops or 0.0, rows


def cuda_rows(weights: str, setup: dict, timeit: Timer, make_pairs: MakePairs, repeats: int,
              pairs: int) -> list[list[str]]:
    """The CUDA rows: fp32 / bf16, padded or not, CUDA graphs, torch.compile; pairs/s and max |Δ| vs fp32."""
    device = torch.device("cuda")
    refs, dists = make_pairs(pairs, setup["size"], device)
    fp32 = GSNScore(weights, device=device, batch_size=5 * pairs)(refs, dists)
    rows = []
    for precision in ("fp32", "bf16"):
        for name, build in (("", _plain), ("padded to 8", _padded), ("padded to 8, input too", _padded_input),
                            ("CUDA graph", _graphed), ("torch.compile", _compiled)):
            label = f"{precision}, {name}" if name else precision
            try:  # a variant that fails is a row that says so, never the end of the lease's bench stage
                metric = GSNScore(weights, device=device, batch_size=5 * pairs, precision=precision)  # type: ignore[arg-type]
                fn, note = build(metric, refs, dists)
                t = timeit(fn, repeats, device)
                rows.append([label, f"{pairs / t:.4g}", f"{float((fn() - fp32).abs().max()):.2e}", note])
            except Exception as err:  # noqa: BLE001
                rows.append([label, "–", "–", f"failed: {type(err).__name__}: {err}"[:200]])
    return rows


def _plain(metric: GSNScore, refs: torch.Tensor, dists: torch.Tensor) -> tuple[Callable[[], torch.Tensor], str]:
    return (lambda: metric(refs, dists)), ""


def _padded(metric: GSNScore, refs: torch.Tensor, dists: torch.Tensor) -> tuple[Callable[[], torch.Tensor], str]:
    metric.net = metric.net.pad_channels(8).to(memory_format=torch.channels_last)
    return (lambda: metric(refs, dists)), "inner widths 204/153/179 → 208/160/184 (exact)"


def _padded_input(metric: GSNScore, refs: torch.Tensor,
                  dists: torch.Tensor) -> tuple[Callable[[], torch.Tensor], str]:
    metric.net = metric.net.pad_channels(8, inputs=8).to(memory_format=torch.channels_last)
    return (lambda: metric(refs, dists)), "inner widths and the stem's 3 input channels padded to 8 (exact)"


def _patches(metric: GSNScore, refs: torch.Tensor, dists: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s, fmt = metric.info.patch_size, torch.channels_last
    r = extract_patches(refs, "five", s).flatten(0, 1).contiguous(memory_format=fmt)
    d = extract_patches(dists, "five", s).flatten(0, 1).contiguous(memory_format=fmt)
    return r, d


def _graphed(metric: GSNScore, refs: torch.Tensor, dists: torch.Tensor) -> tuple[Callable[[], torch.Tensor], str]:
    """The network's forward on a fixed batch of patches captured as a CUDA graph; scores per pair."""
    r, d = _patches(metric, refs, dists)
    ctx = metric._precision
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), ctx():
        for _ in range(3):
            metric.net(r, d)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), ctx():
        out = metric.net(r, d)
    n = refs.shape[0]

    def run() -> torch.Tensor:
        graph.replay()
        return out.float().view(n, -1).mean(1)

    return run, "fixed shape; patches cut outside the graph"


def _compiled(metric: GSNScore, refs: torch.Tensor, dists: torch.Tensor) -> tuple[Callable[[], torch.Tensor], str]:
    metric.net = torch.compile(metric.net)  # type: ignore[assignment]  # default mode: compiles in about a minute
    start = time.perf_counter()
    metric(refs, dists)
    return (lambda: metric(refs, dists)), f"first call {time.perf_counter() - start:.0f} s"
