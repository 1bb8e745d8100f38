"""Contact sheet of the 25 KADID-10k distortion types at levels 1, 3 and 5 on one reference image.

    python examples/kadid_contact_sheet.py [REFERENCE.png] [--out examples/kadid_contact_sheet.png]

The reference defaults to ``examples/reference.png`` when it exists, otherwise a generated test image.
Random types use a fixed seed (``--seed``). Needs only torch, numpy and Pillow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from gsn_metric.train.distortions import NAMES, distort

HERE = Path(__file__).resolve().parent
LEVELS = (1, 3, 5)


def generated_image(h: int = 384, w: int = 512) -> np.ndarray:
    """A colourful H x W x 3 float image in [0, 1]: gradients, hard edges, a disc and fine texture."""
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = np.stack([xx, yy, 1 - 0.5 * (xx + yy)], -1)
    img[(xx > 0.55) & (yy < 0.45)] = (0.85, 0.2, 0.15)
    img[((xx - 0.3) ** 2 + (yy - 0.65) ** 2) < 0.03] = (0.1, 0.55, 0.2)
    img += 0.12 * np.sin(2 * np.pi * 25 * xx)[..., None] * (yy > 0.75)[..., None]
    return np.clip(img, 0, 1)


def load(path: Path | None, size=(512, 384)) -> torch.Tensor:
    if path is not None and path.exists():
        a = np.asarray(Image.open(path).convert("RGB").resize(size, Image.BICUBIC), dtype=np.float32) / 255
    else:
        a = generated_image(size[1], size[0]).astype(np.float32)
    return torch.from_numpy(a).permute(2, 0, 1)


def contact_sheet(ref: torch.Tensor, thumb: int = 192, seed: int = 0) -> Image.Image:
    """Rows = types 1..25, columns = reference + levels 1, 3, 5; each tile scaled to ``thumb`` px wide."""
    h, w = ref.shape[1:]
    th = round(thumb * h / w)
    label_w, cap = 170, 14
    sheet = Image.new("RGB", (label_w + thumb * (1 + len(LEVELS)), cap + 25 * th), "white")
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(["reference"] + [f"level {lv}" for lv in LEVELS]):
        draw.text((label_w + j * thumb + 4, 1), title, fill="black")
    to_pil = lambda t: Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    ref_tile = to_pil(ref).resize((thumb, th), Image.LANCZOS)
    for t in range(1, 26):
        y0 = cap + (t - 1) * th
        draw.text((4, y0 + th // 2 - 6), f"{t:2d} {NAMES[t]}", fill="black")
        sheet.paste(ref_tile, (label_w, y0))
        for j, lv in enumerate(LEVELS):
            g = torch.Generator().manual_seed(seed)
            sheet.paste(to_pil(distort(ref, t, lv, g)).resize((thumb, th), Image.LANCZOS),
                        (label_w + (j + 1) * thumb, y0))
    return sheet


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", nargs="?", type=Path, default=HERE / "reference.png")
    ap.add_argument("--out", type=Path, default=HERE / "kadid_contact_sheet.png")
    ap.add_argument("--thumb", type=int, default=192, help="tile width in px")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.reference.exists():
        print(f"{args.reference} not found: using a generated image")
    contact_sheet(load(args.reference), args.thumb, args.seed).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
