"""GSN as a perceptual loss: a tiny ×2 super-resolution network trained a few steps with L1 + GSNLoss.

    python examples/sr_perceptual_loss.py [--weights path/to/gsn.safetensors] [--steps 20]

The high-resolution targets are random crops of examples/reference.png; the inputs are their bicubic
downscales. It prints the L1, the GSN loss and the GSN score of the network's output as training goes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import gsn_metric
from gsn_metric.images import load_image


class TinySR(nn.Module):
    """Bicubic ×2 upsampling plus a learned 3-layer residual."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, 3 * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
        return (up + self.body(lr)).clamp(0, 1)


def train(weights: str | None, steps: int = 20, crop: int = 192, batch: int = 4, device: str | None = None,
          image: Path = Path(__file__).parent / "reference.png", gsn_weight: float = 0.1) -> list[dict[str, float]]:
    """Train TinySR for ``steps`` steps; returns per-step logs (l1, gsn_loss, gsn_score)."""
    torch.manual_seed(0)
    criterion = gsn_metric.GSNLoss(weights=weights, device=device)
    device = next(criterion.parameters()).device
    hr_image = load_image(image).to(device)
    model = TinySR().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    logs = []
    for step in range(steps):
        tops = torch.randint(hr_image.shape[1] - crop + 1, (batch,))
        lefts = torch.randint(hr_image.shape[2] - crop + 1, (batch,))
        hr = torch.stack([hr_image[:, t : t + crop, l : l + crop] for t, l in zip(tops, lefts)])
        lr = F.interpolate(hr, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        sr = model(lr)
        l1 = F.l1_loss(sr, hr)
        perceptual = criterion(sr, hr)  # (input, target), like torch losses; lower = better
        loss = l1 + gsn_weight * perceptual
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # the score itself, for the log (the loss is not a rescaled score)
            score = criterion.metric(hr, sr.detach()).mean().item()
        logs.append({"l1": l1.item(), "gsn_loss": perceptual.item(), "gsn_score": score})
        print(f"step {step:3d}  L1 {l1.item():.4f}  GSN loss {perceptual.item():.4f}  "
              f"GSN score {logs[-1]['gsn_score']:.3f}")
    return logs


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device")
    a = p.parse_args()
    train(a.weights, a.steps, device=a.device)
