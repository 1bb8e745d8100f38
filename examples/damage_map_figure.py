"""Where does GSN see damage? Three KADID distortions confined to three regions of one image, and its map.

    python examples/damage_map_figure.py [--weights W] [--image examples/reference.png] [--out FIGURE.png]

The image gets Gaussian blur (type 1) in its top-left quadrant, white noise (type 11) in its bottom-right
quadrant and JPEG (type 10) in a centre box, each at level 4; the rest is untouched. The figure is
reference | distorted | ``GSNScore.damage_map`` over the distorted image (``patches="grid"``: every pixel is
covered), drawn by ``gsn_metric.figure``. Printed: the share of the map's sum in each region.
Needs the train extra's distortions (``gsn_metric.train.distortions``: torch, numpy, Pillow only).
"""

import argparse
from pathlib import Path

import torch

import gsn_metric
from gsn_metric.figure import damage_figure
from gsn_metric.images import load_image
from gsn_metric.patches import patch_boxes
from gsn_metric.train.distortions import distort_region

HERE = Path(__file__).parent


def regions(h: int, w: int) -> dict[str, tuple[int, int, int, int, int]]:
    """name → (KADID type, top, left, height, width)."""
    return {"blur, top-left": (1, 0, 0, h // 2, w // 2),
            "noise, bottom-right": (11, h // 2, w // 2, h - h // 2, w - w // 2),
            "JPEG, centre": (10, h // 4 + h // 8, w // 4 + w // 8, h // 4, w // 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="weight file; default: the released default weights")
    p.add_argument("--image", type=Path, default=HERE / "reference.png")
    p.add_argument("--out", type=Path, default=HERE / "damage_map.png")
    p.add_argument("--level", type=float, default=4)
    args = p.parse_args()
    ref = load_image(args.image)
    h, w = ref.shape[-2:]
    dist = ref
    g = torch.Generator().manual_seed(0)
    for kind, top, left, bh, bw in regions(h, w).values():
        dist = distort_region(dist, kind, args.level, (top, left, bh, bw), generator=g)
    metric = gsn_metric.GSNScore(weights=args.weights, device="cpu", patches="grid")
    score = metric(ref[None], dist[None]).item()
    damage = metric.damage_map(ref[None], dist[None])[0, 0]
    total = damage.sum().item()
    print(f"score {score:.4f}; damage (score lost) {total:.4f}")
    for name, (_, top, left, bh, bw) in regions(h, w).items():
        part = damage[top : top + bh, left : left + bw].sum().item()
        print(f"  {name:20s} {part:+.4f} ({100 * part / total:.0f} % of the damage, {100 * bh * bw / (h * w):.0f} % "
              f"of the pixels)")
    boxes = patch_boxes(h, w, "grid", metric.info.patch_size)
    title = (f"{args.image.name}: blur top-left, noise bottom-right, JPEG centre (KADID level {args.level:g}); "
             f"weights {metric.info.name or args.weights}")
    damage_figure(ref, dist, damage, score, metric.info.score_name, boxes, title=title).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
