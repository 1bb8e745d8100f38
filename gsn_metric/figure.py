"""The picture behind ``python -m gsn_metric REF DIST --map out.png``: reference | distorted | damage map.

Pillow only (matplotlib would be a new dependency for one figure). The damage map (``GSNScore.damage_map``:
score lost per pixel) is drawn over a dimmed grey copy of the distorted image, red where quality was lost and
blue where GSN rates the distorted image above the reference, on a symmetric scale shown by a colour bar; the
patches GSN looked at are outlined and the pair's score is in the title. Neighbouring cells' terms often
differ in sign (the head's weights do), so the map is drawn averaged over 11×11 pixels (two cells): what
reads as red is where the cells' sum is a loss. The map itself (and the total in the title) is exact.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

__all__ = ["damage_figure"]

_MARGIN, _TITLE, _BAR = 8, 44, 46


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow ≥ 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()


def _rgb(img: torch.Tensor) -> np.ndarray:
    """3×H×W in [0, 1] → H×W×3 uint8."""
    return (img.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def _overlay(dist: torch.Tensor, damage: torch.Tensor, scale: float) -> np.ndarray:
    """The damage (H×W) over a dimmed grey copy of ``dist``: red for loss, blue for gain, opacity ∝ |damage|."""
    grey = (0.299 * dist[0] + 0.587 * dist[1] + 0.114 * dist[2]).clamp(0, 1) * 0.6 + 0.2
    base = grey.unsqueeze(-1).expand(-1, -1, 3).cpu().numpy()
    t = (damage / scale).clamp(-1, 1).cpu().numpy()[..., None]
    red, blue = np.array([0.85, 0.05, 0.05]), np.array([0.1, 0.3, 0.9])
    colour = np.where(t >= 0, red, blue)
    alpha = np.abs(t) ** 0.5 * 0.9  # square root: faint damage stays visible beside the worst
    return ((base * (1 - alpha) + colour * alpha) * 255 + 0.5).astype(np.uint8)


def damage_figure(ref: torch.Tensor, dist: torch.Tensor, damage: torch.Tensor, score: float, score_name: str,
                  boxes: list[tuple[int, int, int, int]], title: str = "") -> Image.Image:
    """A figure a person reads at a glance.

    Args:
        ref, dist: 3×H×W float tensors in [0, 1].
        damage: H×W, score lost per pixel (``GSNScore.damage_map``), summing to score(ref, ref) − score.
        score: the pair's GSN score; score_name: its scale (the weights' ``info.score_name``).
        boxes: (top, left, height, width) of the patches that were scored, outlined on the map.
        title: a first line (e.g. the file names).
    Returns:
        an RGB PIL image: three panels side by side, the title above and a colour bar under the map.
    """
    h, w = ref.shape[-2:]
    lost = float(damage.sum())
    damage = F.avg_pool2d(damage[None, None].float(), 11, stride=1, padding=5, count_include_pad=False)[0, 0]
    scale = float(damage.abs().max()) or 1.0
    panels = [_rgb(ref), _rgb(dist), _overlay(dist, damage, scale)]
    width = 3 * w + 4 * _MARGIN
    fig = Image.new("RGB", (width, _TITLE + h + _BAR), "white")
    draw = ImageDraw.Draw(fig)
    small, big = _font(12), _font(14)
    draw.text((_MARGIN, 4), title or "GSN damage map", fill="black", font=big)
    draw.text((_MARGIN, 22), f"GSN score {score:.4f} ({score_name}, higher = better); the distortion cost "
                             f"{lost:.4f} of it", fill="black", font=big)
    labels = ("reference", "distorted", "damage over distorted (red: quality lost, blue: gained)")
    for i, (panel, label) in enumerate(zip(panels, labels)):
        x = _MARGIN + i * (w + _MARGIN)
        fig.paste(Image.fromarray(panel), (x, _TITLE))
        draw.text((x, _TITLE + h + 2), label, fill="black", font=small)
    x0 = _MARGIN + 2 * (w + _MARGIN)
    for top, left, ph, pw in boxes:
        draw.rectangle([x0 + left, _TITLE + top, x0 + left + pw - 1, _TITLE + top + ph - 1], outline=(255, 200, 0))
    # colour bar: −scale … 0 … +scale under the map
    bar_y, bar_w = _TITLE + h + 18, min(w, 256)
    t = np.linspace(-1, 1, bar_w)
    ramp = _overlay(torch.full((3, 1, bar_w), 0.5), torch.from_numpy(t).float()[None] * scale, scale)
    fig.paste(Image.fromarray(np.repeat(ramp, 10, axis=0)), (x0, bar_y))
    draw.text((x0, bar_y + 11), f"{-scale:.2g}", fill="black", font=small)
    draw.text((x0 + bar_w // 2 - 4, bar_y + 11), "0", fill="black", font=small)
    draw.text((x0 + bar_w - 40, bar_y + 11), f"+{scale:.2g}", fill="black", font=small)
    draw.text((x0 + bar_w + 8, bar_y - 2), "score lost per pixel\n(11 x 11 px mean)", fill="black", font=small)
    return fig
