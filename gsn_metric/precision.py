"""The arithmetic a GSN network runs in: ``precision="fp32" | "bf16" | "int8"`` for every entry point.

* ``"fp32"`` (the default everywhere): float32 and nothing else. On CUDA, cuDNN may run float32
  convolutions in TF32 (10-bit mantissa) when ``torch.backends.cudnn.allow_tf32`` is on, which it is by
  default; :func:`precision_context` turns TF32 off for the metric's own passes, so a GSN score does not
  depend on the GPU that computed it (LPIPS and DISTS give the same numbers everywhere; so must we).
* ``"bf16"``: ``torch.autocast`` with bfloat16 on CPU or CUDA; the fusion's resize and the FC head stay in
  float32 (``model.py``). Fast on GPUs and on CPUs with native bfloat16 (AVX512-BF16 or AMX); elsewhere
  oneDNN emulates it, slower than float32, so it is refused there rather than silently slow (and on GPUs
  older than Ampere, which emulate it too).
* ``"int8"``: post-training static quantisation of the folded network's branch (``quantize.py``): CPU only,
  no gradients, experimental: the stem and first block in int8, the rest float (bf16 where the CPU has it);
  2.8× fp32 on a 2-core Zen 4, and on 375 held-out synthetic KADID pairs SRCC 0.8759 against fp32's
  0.8794 (scores moved by up to 0.52).

How far each one moves scores, and how fast it is, is measured in ``benchmarks/speed.py`` and the README.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags (Linux's /proc/cpuinfo), None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in ("flags", "Features"):  # x86, ARM
            return frozenset(line.split(":", 1)[1].split())
    return None


def cpu_has(*features: str) -> bool:
    """Whether this CPU reports any of ``features`` (names as in /proc/cpuinfo); False where it cannot tell."""
    flags = _cpu_flags()
    return flags is not None and not flags.isdisjoint(features)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: AVX512-BF16 or AMX-BF16 (x86), BF16 (ARMv8.6)."""
    return cpu_has("avx512_bf16", "amx_bf16", "bf16")


def has_x86_int8() -> bool:
    """Whether this PyTorch build has the x86 (fbgemm + oneDNN) quantised kernels that int8 runs on."""
    return "x86" in torch.backends.quantized.supported_engines


def check_precision(precision: str, device: torch.device, *, differentiable: bool = False) -> None:
    """Refuse, with the reason and what to use instead, a precision the device cannot run fast or at all.

    ``differentiable``: the caller needs gradients (``GSNLoss``), which int8 has not."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        cpu = platform.processor() or platform.machine() or "this CPU"
        raise ValueError(
            f"precision='bf16' on the CPU needs native bfloat16 (AVX512-BF16 or AMX on x86, BF16 on ARM); "
            f"{cpu} does not report it, and emulated bfloat16 is slower than float32. Use precision='fp32', "
            "or precision='int8' for speed on the CPU")
    if precision == "bf16" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        raise ValueError(
            f"precision='bf16' on CUDA needs native bfloat16 (compute capability 8.0, Ampere, or newer); "
            f"{torch.cuda.get_device_name(device)} would emulate it, slower than float32. Use precision='fp32'")
    if precision == "int8":
        if not has_x86_int8():
            raise ValueError("precision='int8' needs PyTorch's x86 quantised kernels, which this build "
                             f"({platform.machine()}) lacks; use precision='fp32' (or 'bf16' where supported)")
        if device.type != "cpu":
            raise ValueError(f"precision='int8' runs on the CPU only (the x86/oneDNN quantised kernels), not on "
                             f"{device}; use precision='bf16' on a GPU, or device='cpu'")
        if differentiable:
            raise ValueError("precision='int8' has no gradients, so it cannot be a loss; use 'fp32' or 'bf16'")


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Around the network's forward passes: bf16 autocast, or float32 without TF32 on CUDA (see the module
    docstring). int8 networks carry their own arithmetic in their quantised layers; their float layers (the deeper
    blocks, the head) run in bf16 where the CPU has it natively (measured 1.4× faster, ``quantize.py``)."""
    if precision == "bf16" or (precision == "int8" and device.type == "cpu" and cpu_has_fast_bf16()):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    elif precision == "fp32" and device.type == "cuda":
        matmul = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False,
                                            benchmark=torch.backends.cudnn.benchmark,
                                            deterministic=torch.backends.cudnn.deterministic):
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = matmul
    else:
        yield
