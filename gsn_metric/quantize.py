"""``precision="int8"``: the folded network's Siamese branch quantised to int8 (post-training, static).

What is quantised: the branch (stem and three blocks, about nine tenths of the work for 192×192 patches),
with per-channel int8 weights and per-tensor uint8 activations (PyTorch's x86 backend: FBGEMM/oneDNN, VNNI
where the CPU has it), through FX graph mode (``torch.ao.quantization.quantize_fx``). The spatial attention
and the fusion head stay float32: their outputs are products and small maps where int8 steps cost accuracy
and save little time.

Calibration (the activation ranges) uses pairs made here, in the code, from generated pristine-like images
(smooth colour fields with edges and texture, a 1/f spectrum like photographs') and common distortions of
them (blur, noise, JPEG, contrast, colour), so that neither the package nor its users need photographs to
quantise. Calibrating takes some seconds; :class:`~gsn_metric.GSNScore` does it once per module.
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .model import GSN, SpatialAttention
from .precision import cpu_has

#: calibration pairs and their seed: fixed, so int8 scores are reproducible run to run on one machine.
CALIBRATION_PAIRS = 24
_SEED = 20261202


def _pristine_like(size: int, gen: torch.Generator) -> torch.Tensor:
    """A 3×size×size image in [0, 1]: 1/f-spectrum colour noise (photographs' spectrum) plus a few flat
    shapes with sharp edges."""
    freq = torch.fft.fftfreq(size)
    radius = torch.sqrt(freq[:, None] ** 2 + freq[None] ** 2).clamp_min(1.0 / size)
    spectrum = torch.randn(3, size, size, dtype=torch.complex64, generator=gen) / radius ** 1.1
    img = torch.fft.ifft2(spectrum).real
    img = (img - img.mean()) / (img.std() + 1e-8) * 0.18 + torch.rand(3, 1, 1, generator=gen) * 0.6 + 0.2
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for _ in range(int(torch.randint(2, 6, (), generator=gen))):
        cy, cx, r = (torch.rand(3, generator=gen) * torch.tensor([size, size, size / 3])).tolist()
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img = torch.where(mask, torch.rand(3, 1, 1, generator=gen), img)
    return img.clamp(0, 1)


def _distorted(img: torch.Tensor, kind: int, gen: torch.Generator) -> torch.Tensor:
    """One of five common distortions of a 3×H×W image, at a random strength."""
    s = float(torch.rand((), generator=gen))
    if kind == 0:  # Gaussian blur
        sigma = 0.5 + 3 * s
        k = torch.arange(-math.ceil(3 * sigma), math.ceil(3 * sigma) + 1, dtype=torch.float32)
        k = torch.exp(-(k**2) / (2 * sigma**2))
        k = k / k.sum()
        x = F.conv2d(F.pad(img[:, None], (len(k) // 2,) * 4, mode="reflect"), k.view(1, 1, 1, -1))
        return F.conv2d(x, k.view(1, 1, -1, 1))[:, 0]
    if kind == 1:  # white noise
        return (img + torch.randn(img.shape, generator=gen) * (0.02 + 0.15 * s)).clamp(0, 1)
    if kind == 2:  # JPEG
        buf = io.BytesIO()
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
            buf, "JPEG", quality=int(5 + 60 * s))
        return torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1).float() / 255
    if kind == 3:  # contrast and brightness
        return ((img - 0.5) * (0.4 + 1.2 * s) + 0.5 + (s - 0.5) * 0.3).clamp(0, 1)
    grey = img.mean(0, keepdim=True)  # colour saturation
    return (grey + (img - grey) * (2.5 * s)).clamp(0, 1)


def calibration_pairs(size: int, count: int = CALIBRATION_PAIRS) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` generated (reference, distorted) patch pairs, each count×3×size×size in [0, 1], seeded."""
    gen = torch.Generator().manual_seed(_SEED)
    refs = [_pristine_like(size, gen) for _ in range(count)]
    dists = [_distorted(r, i % 5, gen) for i, r in enumerate(refs)]
    return torch.stack(refs), torch.stack(dists)


def default_float_modules(net: GSN) -> tuple[str, ...]:
    """The branch's modules :func:`quantize_int8` keeps in float by default: every block after the first.

    Only the stem and the first block are int8 (for 192² patches, about 70 % of the branch's work, at full
    resolution): quantising the deeper blocks too costs most of the accuracy (over 27 hard held-out pairs,
    mean |Δscore| vs float32 0.13 with every block in int8, 0.017 with these two in float; no single layer of
    them is to blame, each adds its share: ``benchmarks/int8_layers.py``)."""
    return tuple(f"blocks.{i}" for i in range(1, len(net.branch.blocks)))


def quantize_int8(net: GSN, patch_size: int, batch_size: int = 8, *, float_modules: Sequence[str] | None = None,
                  calibration: int | tuple[torch.Tensor, torch.Tensor] = CALIBRATION_PAIRS,
                  minmax: bool = False) -> GSN:
    """An int8 copy of a folded, eval-mode ``net`` (:meth:`GSN.fold`): its branch quantised and calibrated
    on ``calibration`` :func:`calibration_pairs` of ``patch_size`` (or on given (reference, distorted) patches,
    each B×3×S×S in [0, 1]); CPU only, inference only.

    ``float_modules``: names in ``net.branch`` left in float (default :func:`default_float_modules`; ``()``
    quantises the whole branch); ``minmax``: min–max activation ranges instead of histogram (MSE-fit) ones.
    Both are for ``benchmarks/int8_layers.py``, which measured the defaults."""
    from torch.ao.quantization import (
        HistogramObserver,
        MinMaxObserver,
        QConfig,
        QConfigMapping,
        default_per_channel_weight_observer,
    )
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    net = copy.deepcopy(net).cpu().eval()
    ref, dist = calibration_pairs(patch_size, calibration) if isinstance(calibration, int) else calibration
    # The full 8-bit activation range where the CPU has VNNI (no 16-bit overflow of u8×s8 products): measured
    # 3× less score deviation than the 7-bit ``reduce_range`` of the x86 default; histogram ranges (MSE-fit)
    # deviate less than min–max ones.
    observer = MinMaxObserver if minmax else HistogramObserver
    activation = observer.with_args(reduce_range=not cpu_has("avx512_vnni", "avx_vnni", "amx_int8"))
    mapping = QConfigMapping().set_global(QConfig(activation=activation, weight=default_per_channel_weight_observer))
    mapping = mapping.set_object_type(SpatialAttention, None)
    modules = dict(net.branch.named_modules())
    for name in default_float_modules(net) if float_modules is None else float_modules:
        if name not in modules:  # FX would ignore it silently, and quantise what was meant to stay float
            raise ValueError(f"float_modules: the branch has no module {name!r}; it has e.g. "
                             f"{[n for n in modules if n.count('.') < 2 and n][:8]}")
        mapping = mapping.set_module_name(name, None)
    custom = PrepareCustomConfig().set_non_traceable_module_classes([SpatialAttention])
    with warnings.catch_warnings():  # FX quantisation's own deprecation notices are not the user's business
        warnings.simplefilter("ignore")
        prepared = prepare_fx(net.branch, mapping, example_inputs=(ref[:1],), prepare_custom_config=custom)
        with torch.no_grad():
            for x in torch.cat([ref, dist]).split(batch_size):
                prepared(x)
        net.branch = convert_fx(prepared)  # type: ignore[assignment]  # a GraphModule with the branch's forward
    net.requires_grad_(False)
    return net
