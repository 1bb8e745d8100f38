"""The public face of the metric: ``GSNScore`` (scores) and ``gsn()`` (functional); the loss is in ``loss.py``.

Flow: inputs → validated N×3×H×W tensors in [0, 1] (``images``) → patches (``patches``) → the folded Siamese
network in chunks of ``batch_size`` patches (memory bounded whatever N is) → mean over each pair's patches.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import numbers
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from . import maps
from .images import _validate_range, check_pair, to_batch
from .model import GSN
from .patches import PATCH_MODES, PatchMode, check_stride, count_patches, extract_patches
from .precision import Precision, check_precision, precision_context
from .weights import WeightsInfo, load_model

Reduction = Literal["none", "mean", "sum"]


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device ({err}); use 'cpu', 'cuda' or 'cuda:1'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(device)!r} was asked for, but this torch ({torch.__version__}) sees no CUDA GPU. "
            "Use device='cpu' (or leave device unset to pick the GPU when there is one), or install a CUDA "
            "build of torch on a machine with an NVIDIA GPU."
        )
    return device


def _precision_alias(precision: Precision, amp: bool) -> Precision:
    """``amp=True`` (gsn-metric ≤ 0.2, bf16 on CUDA only) as ``precision="bf16"``, with a warning."""
    if not amp:
        return precision
    if precision != "fp32":
        raise ValueError(f"amp=True and precision={precision!r} disagree; amp is deprecated: pass precision only")
    warnings.warn("amp=True is deprecated: use precision='bf16' (which also runs on CPUs with native bfloat16)",
                  DeprecationWarning, stacklevel=3)
    return "bf16"


def _reduce(scores: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "none":
        return scores
    if reduction == "mean":
        return scores.mean()
    if reduction == "sum":
        return scores.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


class GSNScore(nn.Module):
    """GSN full-reference image quality: one score per (reference, distorted) pair, higher = better.

    Args:
        weights: a weight file path, a released weights name (``gsn_metric.list_weights()``), or ``None``
            for the default released weights (bundled in the package; the README's "Status of the weights"
            says how they were trained and measured).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…; default the GPU if there is one, else the CPU.
        patches: ``"five"`` (the paper's four corners + centre; default), ``"grid"`` (overlapping tiles
            covering the whole image, ``stride`` apart, default half a patch) or ``"full"`` (the whole image at
            once). Patches are ``info.patch_size`` square, the size the weights were trained on (the paper's
            192). Images with a side under that are reflect-padded to it (see ``patches.py``).
        batch_size: patches per forward pass (each patch runs twice: reference and distorted); bounds memory.
        input_range: the value range of tensor/float inputs, e.g. ``(-1, 1)`` for GAN outputs.
        reduction: ``"none"`` (N scores), ``"mean"`` or ``"sum"``.
        stride: for ``patches="grid"`` only: the largest gap between tiles, 1 to the patch size (default half
            a patch); larger gaps would leave pixels unscored.
        fold: run the network with CDC and BatchNorm folded into plain convs (same scores, ~2× faster).
        precision: ``"fp32"`` (default; on CUDA without TF32, so scores do not depend on the GPU), ``"bf16"``
            (autocast; GPUs and CPUs with native bfloat16, refused elsewhere; scores within about 0.02 of fp32,
            the same validation SRCC) or ``"int8"`` (experimental, CPU only, no gradients; quantises the
            network at construction, some seconds; it changes rankings: strong blur is scored far too high,
            warned at construction). README, "Precision", has the measurements.
        amp: deprecated alias of ``precision="bf16"``.

    ``forward(ref, dist)`` takes N×3×H×W or 3×H×W tensors, PIL images, numpy arrays, file paths, or lists of
    those (see ``images.to_batch``); both of the same size. Returns a float32 tensor of N scores on the
    scale in ``self.info.score_name`` / ``score_range`` (or a scalar, with ``reduction``). Gradients flow to
    tensor inputs that require them (for a ready-made loss, lower = better and 0 at the reference, see :class:`~gsn_metric.GSNLoss`).
    """

    #: pyiqa's convention: False, GSN scores are higher = better (``GSNLoss`` is the lower-is-better form).
    lower_better = False
    info: WeightsInfo
    net: GSN
    patches: PatchMode
    batch_size: int
    stride: int | None
    input_range: tuple[float, float]
    reduction: Reduction
    precision: Precision
    _layout: torch.memory_format

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        patches: PatchMode = "five",
        batch_size: int = 32,
        input_range: tuple[float, float] = (0.0, 1.0),
        reduction: Reduction = "none",
        stride: int | None = None,
        fold: bool = True,
        precision: Precision = "fp32",
        amp: bool = False,
    ) -> None:
        super().__init__()
        precision = _precision_alias(precision, amp)
        if patches not in PATCH_MODES:
            raise ValueError(f"patches must be one of {PATCH_MODES}, got {patches!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}")
        if stride is not None and patches != "grid":
            raise ValueError(f"stride only applies to patches='grid', got stride={stride!r} with patches={patches!r}")
        _reduce(torch.zeros(1), reduction)  # validates the name now rather than at the first call
        input_range = _validate_range(input_range)  # now, not at the first call
        device = _resolve_device(device)
        check_precision(precision, device)
        if precision == "int8" and not fold:
            raise ValueError("precision='int8' quantises the folded network: leave fold=True")
        model, self.info = load_model(weights)
        if stride is not None:
            check_stride(stride, self.info.patch_size)
        # channels_last is the fast layout for convolutions on both cuDNN and oneDNN (CPU: 0.55–0.65× the time
        # of contiguous NCHW, benchmarks/README.md); Module.to(device) keeps it.
        self._layout = torch.channels_last
        net = model.fold() if fold else model
        if precision == "int8":
            from .quantize import quantize_int8  # only then: FX quantisation is a heavy import

            net = quantize_int8(net, self.info.patch_size)
            warnings.warn("precision='int8' is experimental: on 375 held-out synthetic KADID pairs it lowered "
                          "SRCC from 0.8794 to 0.8759 and moved scores by up to 0.52 on the 1-5 scale (mean "
                          "0.031); use precision='bf16' where the device has it", UserWarning, stacklevel=2)
        self.net = net.to(memory_format=self._layout)
        self.net.requires_grad_(False)
        self.patches, self.batch_size, self.stride = patches, int(batch_size), stride
        self.input_range, self.reduction, self.precision = input_range, reduction, precision
        self.to(device)
        self.eval()

    @property
    def _param(self) -> torch.Tensor:
        return next(self.net.parameters())

    def _prepare(self, ref: Any, dist: Any) -> tuple[torch.Tensor, torch.Tensor]:
        ref, dist = self._prepare_one(ref, "reference"), self._prepare_one(dist, "distorted")
        check_pair(ref, dist)
        return ref, dist

    def _prepare_one(self, x: Any, name: str) -> torch.Tensor:
        p = self._param
        x = to_batch(x, input_range=self.input_range, name=name)
        if self.precision == "int8" and x.requires_grad and torch.is_grad_enabled():
            raise ValueError(f"the {name} image requires grad, but precision='int8' has no gradients; use "
                             "precision='fp32' or 'bf16' to differentiate, or score under torch.no_grad()")
        return x.to(device=p.device, dtype=p.dtype)

    def _precision(self) -> contextlib.AbstractContextManager:
        # Checked at every call, not only in __init__: `.to(device)` may since have moved the module to a device
        # that cannot run its precision (int8 on CUDA, bf16 on a CPU without native bfloat16).
        device = self._param.device
        check_precision(self.precision, device)
        return precision_context(self.precision, device)

    def _patch_scores(self, ref: torch.Tensor, dist: torch.Tensor, fn: Any = None) -> torch.Tensor:
        """Scores of M pairs of patches (M×3×h×w each), ``batch_size`` patches per forward pass; ``fn(net, r, d)``
        in place of ``net(r, d)`` computes something else per patch (e.g. :func:`maps.patch_maps`)."""
        fn = fn or (lambda net, r, d: net(r, d))
        fmt = self._layout
        out = []
        with self._precision():
            for r, d in zip(ref.split(self.batch_size), dist.split(self.batch_size)):
                out.append(fn(self.net, r.contiguous(memory_format=fmt), d.contiguous(memory_format=fmt)).float())
        return torch.cat(out)

    def _patchify(self, img: torch.Tensor, select: slice = slice(None)) -> torch.Tensor:
        return extract_patches(img, self.patches, self.info.patch_size, self.stride, select)

    def _per_pair(self, ref: torch.Tensor, dist: torch.Tensor, fn: Any = None) -> Iterator[torch.Tensor]:
        """``_patch_scores`` of prepared N×3×H×W pairs, k×P×… for a few pairs at a time. Patches are cut only
        ``batch_size`` at a time (a few pairs, or a slice of one pair's many grid tiles), so that memory is
        bounded by ``batch_size`` whatever N and the number of tiles."""
        h, w = ref.shape[-2:]
        per_patch = count_patches(h, w, self.patches, self.info.patch_size, self.stride)
        if per_patch > self.batch_size:
            for i in range(ref.shape[0]):
                parts = [self._patch_scores(self._patchify(ref[i : i + 1], select)[0],
                                            self._patchify(dist[i : i + 1], select)[0], fn)
                         for select in (slice(s, s + self.batch_size) for s in range(0, per_patch, self.batch_size))]
                out = torch.cat(parts)
                yield out.view(1, per_patch, *out.shape[1:])
            return
        pairs_per_step = self.batch_size // per_patch
        if self.patches == "full":
            pairs_per_step = self._full_pairs_that_fit(h, w, pairs_per_step, torch.is_grad_enabled())
        for i in range(0, ref.shape[0], pairs_per_step):
            r, d = self._patchify(ref[i : i + pairs_per_step]), self._patchify(dist[i : i + pairs_per_step])
            out = self._patch_scores(r.flatten(0, 1), d.flatten(0, 1), fn)
            yield out.view(r.shape[0], per_patch, *out.shape[1:])

    def _full_pairs_that_fit(self, height: int, width: int, wanted: int, grad: bool) -> int:
        """``patches="full"`` runs whole images through the network: how many pairs of H×W fit one forward pass
        (at most ``wanted``), from an estimate of the full-resolution activations against the memory available
        now; ``RuntimeError`` with the estimate when not even one pair fits (never an allocator crash).

        Estimate: both sides × the widest full-resolution layer's input + output (inference), or every
        full-resolution layer's output twice (autograd keeps them, BatchNorm and ReLU included), in the
        network's dtype, per pixel of the padded image."""
        c = self.net.config
        widths = [3, c.stem, *c.blocks[0]]
        per_pixel = max(a + b for a, b in itertools.pairwise(widths)) if not grad else 2 * sum(widths[1:])
        pixels = max(height, self.info.patch_size) * max(width, self.info.patch_size)
        need = 2 * per_pixel * pixels * self._param.element_size()
        free = _available_memory(self._param.device)
        if free is None or need * wanted <= free:
            return wanted
        if need > free:
            raise RuntimeError(
                f"patches='full' on a {width}×{height} pair needs about {need / 2**30:.1f} GiB for one forward pass "
                f"(the network's full-resolution layers), more than the {free / 2**30:.1f} GiB available on "
                f"{self._param.device}; use patches='grid' (tiles of {self.info.patch_size} px covering the whole "
                "image, memory bounded by batch_size) or downscale the images")
        return max(1, int(free // need))

    def forward(self, ref: Any, dist: Any) -> torch.Tensor:
        ref, dist = self._prepare(ref, dist)
        scores = []
        # Runs of consecutive pairs with the same reference run its branch once (ReferenceEncoding).
        for start, end, shared in _runs(ref):
            if shared:
                scores.append(ReferenceEncoding(self, ref[start : start + 1])._scores(dist[start:end]))
            else:
                scores += [chunk.mean(1) for chunk in self._per_pair(ref[start:end], dist[start:end])]
        return _reduce(torch.cat(scores), self.reduction)

    def encode_reference(self, ref: Any) -> ReferenceEncoding:
        """Run the reference branch on one reference's patches once, to score many distorted images against it
        at about half the cost of scoring pairs (the Siamese branch is shared, so its reference half can be
        reused): ``enc = metric.encode_reference(ref); scores = enc(dists)``.

        ``ref``: one image (3×H×W or 1×3×H×W tensor, PIL image, array or path) in ``input_range``. Gradients
        flow to tensor inputs that require them, distorted images and reference alike. See
        :class:`ReferenceEncoding` for the memory it holds.
        """
        ref = self._prepare_one(ref, "reference")
        if ref.shape[0] != 1:
            raise ValueError(f"encode_reference takes one reference image, got a batch of {ref.shape[0]}")
        return ReferenceEncoding(self, ref)

    @torch.no_grad()
    def quality_map(self, ref: Any, dist: Any) -> torch.Tensor:
        """Where the score comes from: an N×1×H×W float32 map in image coordinates whose sum over each image
        is that pair's score, ``quality_map(ref, dist).sum((1, 2, 3)) == self(ref, dist)`` (reduction
        ``"none"``; up to float rounding), for every ``patches`` mode.

        Each patch's score is ``bias + Σ w_i·m_i`` over its 36×36 fused cells: every cell's term is spread over
        the pixels that cell covers, the bias evenly over the patch, divided by the number of patches, and
        overlapping patches add up (see ``gsn_metric.maps``). Pixels no patch covers are 0: the paper's five
        192×192 patches leave most of a 512×384 image out (a band between the corner patches and the centre
        one); use ``patches="grid"`` for a map of every pixel. Units: score per pixel. Inputs as
        :meth:`forward`; no gradients.
        """
        ref, dist = self._prepare(ref, dist)
        size = tuple(ref.shape[-2:])
        out = [maps.to_image(chunk, size, self.patches, self.info.patch_size, self.stride)
               for chunk in self._per_pair(ref, dist, maps.patch_maps)]
        return torch.cat(out)

    def damage_map(self, ref: Any, dist: Any) -> torch.Tensor:
        """What the distortion cost, and where: ``quality_map(ref, ref) − quality_map(ref, dist)``, N×1×H×W.

        Its sum over each image is ``self(ref, ref) − self(ref, dist)``, the score lost to the distortion (on
        the weights' scale, ``info.score_name``); positive where the distorted image lost quality, negative
        where GSN rates it above the reference. Inputs as :meth:`forward`; no gradients.
        """
        return self.quality_map(ref, ref) - self.quality_map(ref, dist)

    # As a decorator (not a ``with`` block) so that inference mode is on only while the generator runs, not in
    # the caller's loop body between two scores.
    @torch.inference_mode()
    def iter_scores(self, pairs: Iterable[tuple[Any, Any]]) -> Iterator[float]:
        """Scores many pairs of possibly different sizes (paths, PIL images, arrays or 3×H×W tensors),
        batching the patches of consecutive pairs; yields one float per pair, in order, without gradients.

        Consecutive pairs whose reference is the same object or the same file path share one
        :class:`ReferenceEncoding`: the reference is read and its branch run once for all of them."""
        queue: list[tuple[torch.Tensor, torch.Tensor]] = []
        it = iter(pairs)
        item = next(it, None)
        while item is not None:
            ref, dist = item
            item = next(it, None)
            r, d = self._prepare(ref, dist)
            if r.shape[0] != 1:
                raise ValueError(f"iter_scores takes one image per side of each pair, got a batch of {r.shape[0]}")
            if item is not None and _same_source(item[0], ref):
                yield from self._flush(queue)
                queue = []
                encoding, group = ReferenceEncoding(self, r), [d]
                while item is not None and _same_source(item[0], ref):
                    group.append(self._prepare_one(item[1], "distorted"))
                    check_pair(r, group[-1])
                    item = next(it, None)
                    if len(group) * encoding.patches >= self.batch_size:
                        yield from encoding._scores(torch.cat(group)).tolist()
                        group = []
                if group:
                    yield from encoding._scores(torch.cat(group)).tolist()
                continue
            queue.append((self._patchify(r)[0], self._patchify(d)[0]))
            # "full" patches differ in size from pair to pair, so they cannot share a batch.
            if self.patches == "full" or sum(len(q[0]) for q in queue) >= self.batch_size:
                yield from self._flush(queue)
                queue = []
        yield from self._flush(queue)

    def _flush(self, queue: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[float]:
        if not queue:
            return
        scores = self._patch_scores(torch.cat([q[0] for q in queue]), torch.cat([q[1] for q in queue]))
        for chunk in scores.split([len(q[0]) for q in queue]):
            yield chunk.mean().item()

    def extra_repr(self) -> str:
        return (f"weights={str(self.info.path)!r}, patches={self.patches!r}, batch_size={self.batch_size}, "
                f"input_range={self.input_range}, reduction={self.reduction!r}, precision={self.precision!r}")


def _available_memory(device: torch.device) -> int | None:
    """Bytes that can be allocated now on ``device`` (CUDA: free device memory; CPU: Linux's MemAvailable);
    None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device.index)[0]  # None: the current GPU; a bare "cuda" device is refused
    try:
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024


def _same_source(a: Any, b: Any) -> bool:
    """The same image for reference reuse: the same object, or the same file path."""
    if a is b:
        return True
    paths = (str, os.PathLike)
    return isinstance(a, paths) and isinstance(b, paths) and os.fspath(a) == os.fspath(b)


def _runs(ref: torch.Tensor) -> list[tuple[int, int, bool]]:
    """``(start, end, shared)`` segments of a batch of references: ``shared`` runs of ≥ 2 equal consecutive
    images, and the stretches between them."""
    n = ref.shape[0]
    same = [False] + ((ref[1:] == ref[:-1]).flatten(1).all(1).tolist() if n > 1 else [])
    runs: list[tuple[int, int, bool]] = []
    i = 0
    while i < n:
        j = i + 1
        while j < n and same[j]:
            j += 1
        if j - i > 1:
            runs.append((i, j, True))
        elif runs and not runs[-1][2]:
            runs[-1] = (runs[-1][0], j, False)
        else:
            runs.append((i, j, False))
        i = j
    return runs


class ReferenceEncoding:
    """One reference image's branch features, computed once; ``encoding(dist)`` scores distorted images of its
    size against it. Made by :meth:`GSNScore.encode_reference`.

    Scores equal those of ``metric(ref, dist)`` (to float rounding) at about half the cost, since only the
    distorted half of the Siamese branch runs per image. Memory held: the (low, mid, high) features of every
    patch, ``nbytes``; for the paper's network in float32, 128·(96² + 48² + 24²)·4 B ≈ 6.2 MB per 192×192
    patch, so ≈ 31 MB for the five patches, more for ``patches="grid"``.
    """

    def __init__(self, metric: GSNScore, ref: torch.Tensor) -> None:
        self._metric = metric
        self._ref = ref  # 1×3×H×W, prepared
        patches = metric._patchify(ref)[0]
        self.patches = patches.shape[0]
        with metric._precision():
            parts = [metric.net.branch(p.contiguous(memory_format=metric._layout))
                     for p in patches.split(metric.batch_size)]
        self.levels = [torch.cat(level) for level in zip(*parts)]

    @property
    def nbytes(self) -> int:
        """Bytes of the features held."""
        return sum(t.numel() * t.element_size() for t in self.levels)

    def _scores(self, dist: torch.Tensor) -> torch.Tensor:
        """N scores of prepared N×3×H×W distorted images (the reference's size)."""
        m = self._metric
        count = self.patches
        step = max(1, m.batch_size // count)  # whole pairs per pass, or one pair whose many tiles are sliced
        out = []
        for i in range(0, dist.shape[0], step):
            chunk, scores = dist[i : i + step], []
            with m._precision():
                for start in range(0, count, m.batch_size):  # patches cut batch_size at a time, as in _per_pair
                    select = slice(start, start + m.batch_size)
                    d = m._patchify(chunk, select)  # k×p×3×S×S
                    k, p = d.shape[:2]
                    ref_levels = [level[select].repeat(k, 1, 1, 1) for level in self.levels]
                    d = d.flatten(0, 1).contiguous(memory_format=m._layout)
                    scores.append(m.net.head(ref_levels, m.net.branch(d)).float().view(k, p))
            out.append(torch.cat(scores, dim=1).mean(1))
        return torch.cat(out)

    def __call__(self, dist: Any) -> torch.Tensor:
        """Scores of distorted images (N×3×H×W or 3×H×W tensors, PIL images, arrays, paths or lists, in the
        metric's ``input_range``) against the encoded reference: N scores, or a scalar with the metric's
        ``reduction``; gradients flow to tensor inputs that require them."""
        dist = self._metric._prepare_one(dist, "distorted")
        check_pair(self._ref.expand(dist.shape[0], -1, -1, -1), dist)
        return _reduce(self._scores(dist), self._metric.reduction)


@functools.lru_cache(maxsize=4)
def _cached_metric(weights: str | None, stamp: tuple[int, int] | None, device: str | None, patches: str,
                   batch_size: int, input_range: tuple[float, float], stride: int | None, fold: bool,
                   precision: Precision) -> GSNScore:
    """``stamp`` is only part of the cache key (see :func:`_weights_key`)."""
    return GSNScore(weights, device, patches, batch_size, input_range, stride=stride,  # type: ignore[arg-type]
                    fold=fold, precision=precision)


def _weights_key(weights: str | os.PathLike | None) -> tuple[str | None, tuple[int, int] | None]:
    """A weight file as its absolute path and (mtime, size), so that the cache of :func:`gsn` neither outlives a
    re-exported file nor confuses two files of the same relative name; names and ``None`` stay as they are."""
    if weights is None:
        return None, None
    path = Path(weights).expanduser()
    if not path.is_file():
        return str(weights), None
    stat = path.stat()
    return str(path.resolve()), (stat.st_mtime_ns, stat.st_size)


def gsn(
    ref: Any,
    dist: Any,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    patches: PatchMode = "five",
    batch_size: int = 32,
    input_range: tuple[float, float] = (0.0, 1.0),
    reduction: Reduction = "none",
    stride: int | None = None,
    fold: bool = True,
    precision: Precision = "fp32",
    amp: bool = False,
) -> torch.Tensor:
    """Functional GSN: ``GSNScore(weights, device, patches, ...)(ref, dist)``, the module cached between calls
    (a weight file is re-read when it changes on disk).

    Same inputs and returns as :class:`GSNScore`; gradients flow to tensor inputs that require them.
    """
    metric = _cached_metric(*_weights_key(weights), None if device is None else str(device), patches, batch_size,
                            tuple(input_range), stride, fold, _precision_alias(precision, amp))
    return _reduce(metric(ref, dist), reduction)
