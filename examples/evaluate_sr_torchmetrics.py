"""Evaluate a super-resolution model's outputs with GSN beside torchmetrics' own image metrics.

    pip install "gsn-metric[torchmetrics]"
    python examples/evaluate_sr_torchmetrics.py [--weights path/to/gsn.safetensors] [--crops 8]

The "model" here is bicubic ×2 upsampling and the ground truth random 192×192 crops of examples/reference.png;
put your model and data loader in their place. GSNMetric is a torchmetrics.Metric: in a Lightning module, log
it like any other (``self.log("val/gsn", self.gsn)``); under DDP its states sync across processes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

import gsn_metric
from gsn_metric.images import load_image


def evaluate(weights: str | None, crops: int = 8, batch: int = 4, device: str = "cpu") -> dict[str, float]:
    metrics = MetricCollection({"gsn": gsn_metric.GSNMetric(weights),
                                "psnr": PeakSignalNoiseRatio(data_range=1.0),
                                "ssim": StructuralSimilarityIndexMeasure(data_range=1.0)}).to(device)
    image = load_image(Path(__file__).parent / "reference.png").to(device)
    g = torch.Generator().manual_seed(0)
    for start in range(0, crops, batch):
        n = min(batch, crops - start)
        tops = torch.randint(image.shape[1] - 192 + 1, (n,), generator=g)
        lefts = torch.randint(image.shape[2] - 192 + 1, (n,), generator=g)
        hr = torch.stack([image[:, t : t + 192, left : left + 192] for t, left in zip(tops, lefts)])
        lr = F.interpolate(hr, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
        with torch.no_grad():
            sr = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)  # your model
        metrics.update(sr, hr)  # (preds, target)
    return {k: v.item() for k, v in metrics.compute().items()}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights")
    p.add_argument("--crops", type=int, default=8)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    for name, value in evaluate(a.weights, a.crops, device=a.device).items():
        print(f"{name}: {value:.4f}")
