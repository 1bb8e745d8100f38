"""The Gradient Siamese Network (Cong et al., NTIRE 2022), as PAPER.md fixes it.

Pairs of patches in, one score per pair out::

    ref, dist: P×3×h×w float in [0, 1]  ──► SiameseBranch (shared weights) ──► low, mid, high features
                                         ──► MultiLevelFusion ──► 1×36×36 map ──► FC ──► P scores

Choices where the paper is ambiguous (each also stated where it is made):

* **Fusion size.** The paper flattens one 36×36 map (1296 values) into its FC head. 36 is the size of the
  high-level features for PIPAL's 288×288 images (288 / 2³); for the 192×192 patches of its own test
  protocol the high level is 24×24. Following CDCN (which resizes all three levels to 32×32 bilinearly),
  every level is resized bilinearly to ``fusion_size`` = 36, so the FC head has the paper's 1296 inputs
  whatever the patch size, and the network accepts any input size (``patches="full"``). Downsampling uses
  ``antialias=True`` so that large inputs are low-passed, not aliased.
* **Residual features.** The conclusion speaks of "residual features" between the pair. At every level
  the fusion sees ``[f_ref, f_dist, f_ref − f_dist]``: the difference makes "how far apart are the two" a
  direct input rather than something the reducing CDC must learn to compute.
* **Reduction width.** Each reducing CDC goes to ``fusion_channels`` = 128, the branch's own width.
* **Head.** The last CDC to one channel has no BatchNorm/ReLU (the FC after it is linear, so a ReLU would
  only discard half of the map); the FC has a bias, the CDCs have none (BatchNorm follows them).
* **Input.** Patches in [0, 1], no mean/std normalisation: the stem's BatchNorm absorbs the scale.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GSN", "CDCConv2d", "GSNConfig", "MultiLevelFusion", "SiameseBranch", "SpatialAttention"]


@dataclasses.dataclass(frozen=True)
class GSNConfig:
    """Architecture hyper-parameters; the defaults are Table 1 of the paper.

    ``blocks[i]`` lists the output channels of block *i*'s CDC layers (its input is the previous block's
    last width); ``attention_kernels[i]`` is block *i*'s spatial-attention kernel.
    """

    theta: float = 0.7
    stem: int = 64
    blocks: tuple[tuple[int, ...], ...] = ((128, 204, 128), (153, 128, 179, 128), (128, 153, 128))
    attention_kernels: tuple[int, ...] = (7, 5, 3)
    fusion_channels: int = 128
    fusion_size: int = 36

    def __post_init__(self) -> None:
        if len(self.blocks) != 3 or len(self.attention_kernels) != 3:
            raise ValueError("GSN has exactly three blocks (low, mid, high) and one attention kernel each")
        if not all(k % 2 == 1 for k in self.attention_kernels):
            raise ValueError(f"attention kernels must be odd, got {self.attention_kernels}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GSNConfig:
        raw = json.loads(text)
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown GSN architecture keys {sorted(unknown)}: the weights need a newer gsn-metric")
        raw["blocks"] = tuple(tuple(b) for b in raw.get("blocks", cls.blocks))
        raw["attention_kernels"] = tuple(raw.get("attention_kernels", cls.attention_kernels))
        return cls(**raw)


class CDCConv2d(nn.Module):
    """Central Difference Convolution (CDCN, Yu et al. 2020), 3×3, stride 1, padding 1, no bias.

    ``y(p0) = θ·Σ w(pn)·(x(p0+pn) − x(p0)) + (1−θ)·Σ w(pn)·x(p0+pn) = conv(x, w) − θ·x(p0)·Σw``,
    computed as such (two convolutions) while training, or with ``fold_centre`` as one convolution with the
    folded kernel of :meth:`folded_weight`, the same function of the weights (same outputs and gradients up to
    rounding; ``fit --speedups fold-cdc``).
    """

    #: one 3×3 convolution with the folded kernel instead of a 3×3 and a 1×1 one (see the class docstring)
    fold_centre: bool = False

    def __init__(self, in_channels: int, out_channels: int, theta: float = 0.7) -> None:
        super().__init__()
        self.theta = theta
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold_centre or self.theta == 0:
            return F.conv2d(x, self._folded(), padding=1)
        y = F.conv2d(x, self.weight, padding=1)
        return y - self.theta * F.conv2d(x, self.weight.sum(dim=(2, 3), keepdim=True))

    def _folded(self) -> torch.Tensor:
        """The folded kernel, differentiable in the weights: centre tap ``w_c − θ·Σw``."""
        if self.theta == 0:
            return self.weight
        return self.weight - self.theta * F.pad(self.weight.sum(dim=(2, 3), keepdim=True), (1, 1, 1, 1))

    def folded_weight(self) -> torch.Tensor:
        """The 3×3 kernel of a plain conv equal to this CDC: centre tap ``w_c − θ·Σw``."""
        return self._folded().detach().clone()


def _cdc_bn_relu(cin: int, cout: int, theta: float) -> nn.Sequential:
    return nn.Sequential(CDCConv2d(cin, cout, theta), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``F ⊙ σ(conv_k([mean_c F, max_c F]))``, a plain conv, no BatchNorm."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class SiameseBranch(nn.Module):
    """Stem and three CDC blocks; returns the (low, mid, high) features at 1/2, 1/4 and 1/8 of the input."""

    def __init__(self, config: GSNConfig) -> None:
        super().__init__()
        self.stem = _cdc_bn_relu(3, config.stem, config.theta)
        self.input_channels = 3  # more after pad_channels(inputs=...): the image gets zero channels appended
        blocks = []
        cin = config.stem
        for widths, k in zip(config.blocks, config.attention_kernels):
            layers: list[nn.Module] = []
            for cout in widths:
                layers.append(_cdc_bn_relu(cin, cout, config.theta))
                cin = cout
            layers += [nn.MaxPool2d(3, stride=2, padding=1), SpatialAttention(k)]
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.features(x)[1:]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem's full-resolution output, then the (low, mid, high) features that :meth:`forward` returns."""
        if self.input_channels > 3:  # a plain int, not the tensor's shape: FX (int8) traces through it
            x = F.pad(x, (0, 0, 0, 0, 0, self.input_channels - 3))
        x = self.stem(x)
        levels = [x]
        for block in self.blocks:
            x = block(x)
            levels.append(x)
        return levels


class MultiLevelFusion(nn.Module):
    """Fuses the pair's low, mid and high features into one ``fusion_size``² map (see the module docstring)."""

    def __init__(self, config: GSNConfig) -> None:
        super().__init__()
        self.size = config.fusion_size
        widths = [b[-1] for b in config.blocks]
        c = config.fusion_channels
        self.reduce = nn.ModuleList(
            [_cdc_bn_relu(3 * w + (c if i else 0), c, config.theta) for i, w in enumerate(widths)]
        )
        self.head = CDCConv2d(c, 1, config.theta)
        # The head is linear (no ReLU after it): Kaiming fan_out (std 0.47 for one output channel over 9·c
        # inputs) would start the network with outputs of several units; fan_in keeps the variance.
        nn.init.kaiming_normal_(self.head.weight, mode="fan_in", nonlinearity="linear")

    def forward(self, ref_levels: Sequence[torch.Tensor], dist_levels: Sequence[torch.Tensor]) -> torch.Tensor:
        fused = None
        for reduce, r, d in zip(self.reduce, ref_levels, dist_levels):
            pair = torch.cat([r, d, r - d], dim=1)
            # antialias only acts when shrinking; growing (24 → 36 for 192² patches) is plain bilinear.
            # The antialiased kernel has no half-precision CPU implementation, hence float32 under autocast.
            resized = F.interpolate(pair.float(), size=(self.size, self.size), mode="bilinear", align_corners=False,
                                    antialias=pair.shape[-1] > self.size or pair.shape[-2] > self.size)
            pair = resized.to(pair.dtype)
            fused = reduce(pair if fused is None else torch.cat([fused, pair], dim=1))
        return self.head(fused)


class GSN(nn.Module):
    """Gradient Siamese Network: ``forward(ref, dist)`` → one quality score per pair of patches.

    Args (forward):
        ref, dist: P×3×h×w float tensors in [0, 1], the same shape (patches of a reference and of its
            distorted version); h, w ≥ 8 (three stride-2 poolings).
    Returns:
        a tensor of P scores, higher = better, on the scale of the training data (see the weights' metadata).
    """

    def __init__(self, config: GSNConfig | None = None) -> None:
        super().__init__()
        self.config = config or GSNConfig()
        self.branch = SiameseBranch(self.config)
        self.fusion = MultiLevelFusion(self.config)
        self.fc = nn.Linear(self.config.fusion_size**2, 1)
        # Training targets are normalised to [0, 1] (train/loop.py); starting at the middle of that scale
        # keeps the MSE of an offset from swamping the first epochs.
        nn.init.constant_(self.fc.bias, 0.5)

    def forward(self, ref: torch.Tensor, dist: torch.Tensor,
                anchor: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``anchor=True`` (training with ``--anchor-weight``) also returns the P scores of each reference
        against itself, from the same branch pass (one more fusion head)."""
        if ref.shape != dist.shape:
            raise ValueError(f"GSN needs patches of equal shape, got {tuple(ref.shape)} and {tuple(dist.shape)}")
        # One pass through the shared branch for both sides: twice the batch, half the kernel launches.
        levels = self.branch(torch.cat([ref, dist], dim=0))
        n = ref.shape[0]
        ref_levels = [x[:n] for x in levels]
        scores = self.head(ref_levels, [x[n:] for x in levels])
        return (scores, self.head(ref_levels, ref_levels)) if anchor else scores

    def head(self, ref_levels: Sequence[torch.Tensor], dist_levels: Sequence[torch.Tensor]) -> torch.Tensor:
        """P scores from the branch's (low, mid, high) features of P reference and P distorted patches: the
        part of :meth:`forward` after the Siamese branch (reference features can be computed once and reused).
        The FC layer runs in its weights' precision (float32) even under autocast: in bfloat16 its output, the
        score, would be rounded to steps of 1/64 on the 1–5 scale."""
        fused = self.fusion(ref_levels, dist_levels).flatten(1).to(self.fc.weight.dtype)
        with torch.autocast(fused.device.type, enabled=False):
            return self.fc(fused).squeeze(1)

    def contributions(self, ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        """Each fused cell's share of the score: P×f×f (f = ``fusion_size``), ``w_i · m_i`` of the FC layer, so
        that ``contributions(ref, dist).sum((1, 2)) + fc.bias`` equals ``forward(ref, dist)`` exactly (the head is
        linear). Cell (a, b) of a patch of h×w pixels is fused from the pixels [a·h/f, (a+1)·h/f) × [b·w/f,
        (b+1)·w/f) (bilinear resizing, ``align_corners=False``)."""
        levels = self.branch(torch.cat([ref, dist], dim=0))
        n = ref.shape[0]
        fused = self.fusion([x[:n] for x in levels], [x[n:] for x in levels]).flatten(1)
        f = self.config.fusion_size
        return (fused.to(self.fc.weight.dtype) * self.fc.weight).view(n, f, f)

    @torch.no_grad()
    def fold(self) -> GSN:
        """An inference copy with every CDC (and the BatchNorm after it) folded into one plain conv.

        Exact in real arithmetic: CDC is linear (see :class:`CDCConv2d`) and eval-mode BatchNorm is an
        affine map per channel. The copy is in eval mode and must not be trained (BatchNorm is gone).
        """
        folded = copy.deepcopy(self).eval()
        for module in folded.modules():
            for name, child in list(module.named_children()):
                if isinstance(child, nn.Sequential) and len(child) == 3 and isinstance(child[0], CDCConv2d) \
                        and isinstance(child[1], nn.BatchNorm2d):
                    setattr(module, name, nn.Sequential(_fold_cdc_bn(child[0], child[1]), nn.ReLU(inplace=True)))
                elif isinstance(child, CDCConv2d):
                    setattr(module, name, _fold_cdc_bn(child, None))
        return folded

    @torch.no_grad()
    def pad_channels(self, multiple: int = 8, inputs: int = 3) -> GSN:
        """A copy of a folded network whose inner block widths (the paper's 204, 153, 179) are padded with zero
        channels up to multiples of ``multiple``, the shapes GPU tensor cores tile; same scores.

        Exact: a padded channel has zero weights and bias, so it is 0 after ReLU, and the next convolution's
        weights for it are 0. Only widths inside a block are padded: block outputs feed the attention's channel
        mean and the fusion, where a zero channel would change the result. ``inputs`` (e.g. 4 or 8): the stem
        takes that many channels, the image's 3 and zero ones the branch appends (zero weights: exact too);
        inputs stay 3-channel images either way."""
        if any(isinstance(m, (CDCConv2d, nn.BatchNorm2d)) for m in self.modules()):
            raise ValueError("pad_channels works on a folded network: call fold() first")
        padded = copy.deepcopy(self)
        stem = padded.branch.stem[0]
        assert isinstance(stem, nn.Conv2d)
        if inputs < stem.in_channels:
            raise ValueError(f"inputs={inputs}: the stem already takes {stem.in_channels} channels")
        padded.branch.stem[0] = _widen(stem, 0, inputs - stem.in_channels)
        padded.branch.input_channels = inputs
        for block in padded.branch.blocks:
            assert isinstance(block, nn.Sequential)
            layers = [layer for layer in block if isinstance(layer, nn.Sequential)]  # (conv, ReLU) pairs
            for a, b in itertools.pairwise(layers):
                first, second = a[0], b[0]
                assert isinstance(first, nn.Conv2d) and isinstance(second, nn.Conv2d)
                extra = -first.out_channels % multiple
                if extra:
                    a[0] = _widen(first, extra, 0)
                    b[0] = _widen(second, 0, extra)
        return padded


def _widen(conv: nn.Conv2d, out_extra: int, in_extra: int) -> nn.Conv2d:
    """``conv`` with ``out_extra`` zero output channels (zero weights and bias) and ``in_extra`` input channels
    it ignores (zero weights)."""
    w = conv.weight
    wide = nn.Conv2d(conv.in_channels + in_extra, conv.out_channels + out_extra, (w.shape[2], w.shape[3]),
                     padding=w.shape[3] // 2, bias=conv.bias is not None).to(device=w.device, dtype=w.dtype)
    wide.weight.zero_()
    wide.weight[: w.shape[0], : w.shape[1]] = w
    if conv.bias is not None and wide.bias is not None:
        wide.bias.zero_()
        wide.bias[: w.shape[0]] = conv.bias
    return wide


def _fold_cdc_bn(cdc: CDCConv2d, bn: nn.BatchNorm2d | None) -> nn.Conv2d:
    """One plain 3×3 conv equal to ``bn(cdc(x))`` (eval-mode statistics)."""
    weight = cdc.folded_weight()
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1, bias=bn is not None)
    conv = conv.to(device=weight.device, dtype=weight.dtype)
    if bn is None:
        conv.weight.copy_(weight)
        return conv
    assert bn.running_var is not None and bn.running_mean is not None and conv.bias is not None  # tracked stats
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.copy_(weight * scale[:, None, None, None])
    conv.bias.copy_(bn.bias - bn.running_mean * scale)
    return conv
