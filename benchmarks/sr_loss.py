"""GSN as a loss in a real training use: one small ×2 super-resolution network trained with each loss, judged
on held-out crops by metrics other than the one it was trained with.

    python benchmarks/sr_loss.py [--pristine ../shared/data/pristine] [--steps 300] [--out runs/sr_loss]
        [--runs l1 gsn:0.1 gsn:1 st-lpips-alex:0.1] [--weights FILE]

**Training.** ``examples/sr_perceptual_loss.py``'s network (bicubic ×2 plus a learned residual; ``--width``),
from the same seeded initialisation for every run, Adam lr 1e-3, ``--steps`` steps of ``--batch`` random 192×192
high-resolution crops of the photographs in ``--pristine`` (each one's low-resolution input its antialiased
bicubic ÷2), the same crops in the same order for every run. A run is ``l1`` or ``NAME:λ``:
L1 + λ·loss with NAME one of ``gsn`` (the default ``GSNLoss``, anchored), ``gsn-score`` (``GSNLoss(form="score")``,
the old form), ``st-lpips-alex`` / ``st-lpips-vgg`` (shift-tolerant LPIPS, needs the peers environment of
benchmarks/README.md), ``ms-ssim`` (1 − MS-SSIM).

**Judging.** On held-out crops nobody trained on: four 192×192 crops of ``examples/reference.png`` and the
centre 192×192 crop of each of the last ``--held-out`` photographs of ``--pristine`` (sorted by name; left out of
training). Judges: PSNR, MS-SSIM, ST-LPIPS alex and vgg, ColorVideoVDP (JOD) where installed, and the GSN score
of the default weights (1–5; the high-resolution crop scores itself ``own``); bicubic upsampling is the baseline
row. ``--out`` gets results.json (rewritten after every run, so a run cut short keeps what it measured) and
sr_sheet.png: two example crops, their bicubic and every run's output (the photographs of ``../shared`` are for
training and stay out of the sheet).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

import gsn_metric
from gsn_metric.images import load_image
from gsn_metric.train.peers import CLASSIC, psnr

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a folder of scripts: its shared modules
import peers
from as_loss import crops

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (sr, hr) -> scalar, lower = better
SIZE = 192


def _example_sr_network() -> type[torch.nn.Module]:
    """``TinySR`` of examples/sr_perceptual_loss.py: the network the README's example trains."""
    spec = importlib.util.spec_from_file_location("sr_perceptual_loss", EXAMPLES / "sr_perceptual_loss.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.TinySR


def downscale(hr: torch.Tensor) -> torch.Tensor:
    """The low-resolution input: antialiased bicubic ÷2, in [0, 1]."""
    return F.interpolate(hr, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def bicubic(lr: torch.Tensor) -> torch.Tensor:
    return F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)


def photographs(folder: Path, held_out: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(training photographs, held-out ones) of ``folder``'s images sorted by name; at least 192 px a side."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".webp", ".png", ".jpg", ".jpeg"))
    if len(paths) <= held_out:
        raise SystemExit(f"--pristine {folder} has {len(paths)} images; needs more than --held-out {held_out}")
    imgs = [load_image(p) for p in paths]
    small = [str(p) for p, im in zip(paths, imgs) if min(im.shape[-2:]) < SIZE]
    if small:
        raise SystemExit(f"images smaller than {SIZE} px on a side in --pristine: {small[:3]}")
    return imgs[: len(imgs) - held_out], imgs[len(imgs) - held_out :]


def centre(img: torch.Tensor) -> torch.Tensor:
    h, w = img.shape[-2:]
    return img[:, (h - SIZE) // 2 : (h - SIZE) // 2 + SIZE, (w - SIZE) // 2 : (w - SIZE) // 2 + SIZE]


def batches(train: list[torch.Tensor], steps: int, batch: int, seed: int = 0):
    """``steps`` seeded batches of random SIZE² crops (a random photograph each, random place, random flip)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        out = []
        for _ in range(batch):
            img = train[int(torch.randint(len(train), (1,), generator=g))]
            h, w = img.shape[-2:]
            t = int(torch.randint(h - SIZE + 1, (1,), generator=g))
            left = int(torch.randint(w - SIZE + 1, (1,), generator=g))
            crop = img[:, t : t + SIZE, left : left + SIZE]
            out.append(crop.flip(-1) if bool(torch.rand((), generator=g) < 0.5) else crop)
        yield torch.stack(out)


def loss_term(name: str, weights: str | None, device: torch.device) -> Loss:
    """The perceptual term of a run named ``name`` (see the module docstring), as (sr, hr) → scalar."""
    if name in ("gsn", "gsn-score"):
        return gsn_metric.GSNLoss(weights, device=device, form="anchored" if name == "gsn" else "score")
    if name in ("st-lpips-alex", "st-lpips-vgg"):
        try:
            f, _ = peers.build("ST-LPIPS-" + name.rsplit("-", 1)[1], device)
        except ImportError as err:
            raise SystemExit(f"--runs {name}: {peers.why_unavailable(err, 'stlpips-pytorch, torchvision')}") from err
        return lambda sr, hr: f(hr, sr).mean()
    if name == "ms-ssim":
        return lambda sr, hr: 1 - CLASSIC["MS-SSIM"][0](hr, sr).mean()
    raise SystemExit(f"unknown loss {name!r} in --runs (gsn, gsn-score, st-lpips-alex, st-lpips-vgg, ms-ssim)")


def parse_run(spec: str) -> tuple[str, float]:
    """``l1`` → ("l1", 0); ``NAME:λ`` → (NAME, λ)."""
    if spec == "l1":
        return "l1", 0.0
    name, _, lam = spec.partition(":")
    try:
        return name, float(lam)
    except ValueError:
        raise SystemExit(f"--runs takes 'l1' or NAME:λ (e.g. gsn:0.1), got {spec!r}") from None


def judges(device: torch.device, weights: str | None) -> tuple[dict[str, Callable], dict[str, str]]:
    """name → f(hr, sr) → N values (each one's own direction), and why each missing judge is missing."""
    score = gsn_metric.GSNScore(weights, device=device)
    out: dict[str, Callable] = {"PSNR": psnr}
    missing: dict[str, str] = {}
    for name, needs in [("MS-SSIM", "pytorch-msssim"), ("ST-LPIPS-alex", "stlpips-pytorch, torchvision"),
                        ("ST-LPIPS-vgg", "stlpips-pytorch, torchvision"), ("ColorVideoVDP", "cvvdp, torchvision")]:
        try:
            f, _ = peers.build(name, device)
            probe = torch.rand(1, 3, SIZE, SIZE, device=device)
            f(probe, probe)  # imports happen at the first call for some
            out[name] = f
        except ImportError as err:
            missing[name] = peers.why_unavailable(err, needs)
    out["GSN score"] = score
    return out, missing


def judge(fns: dict[str, Callable], hr: torch.Tensor, sr: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        return {name: f(hr, sr).float().mean().item() for name, f in fns.items()}


def train_run(spec: str, args: argparse.Namespace, train: list[torch.Tensor], device: torch.device) -> torch.nn.Module:
    name, lam = parse_run(spec)
    term = None if name == "l1" else loss_term(name, args.weights, device)
    torch.manual_seed(0)  # the same initial network for every run
    model = _example_sr_network()(width=args.width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for step, hr in enumerate(batches(train, args.steps, args.batch)):
        hr = hr.to(device)
        sr = model(downscale(hr))
        l1 = F.l1_loss(sr, hr)
        loss = l1 if term is None else l1 + lam * term(sr, hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"  {spec} step {step}: L1 {l1.item():.4f}, loss {loss.item():.4f}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    return model.eval()


def sheet(hr: torch.Tensor, outputs: dict[str, torch.Tensor], path: Path) -> None:
    """Rows: crops; columns: the high-resolution crop, then each output (bicubic first); labelled."""
    cols = ["high resolution", *outputs]
    label = 16
    img = Image.new("RGB", (len(cols) * SIZE, label + len(hr) * SIZE), "white")
    draw = ImageDraw.Draw(img)
    for j, (name, x) in enumerate([("high resolution", hr), *outputs.items()]):
        draw.text((j * SIZE + 2, 2), name, fill="black")
        for i, crop in enumerate(x):
            arr = (crop.clamp(0, 1).permute(1, 2, 0) * 255).round().byte().cpu().numpy()
            img.paste(Image.fromarray(arr), (j * SIZE, label + i * SIZE))
    img.save(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pristine", type=Path, default=Path("../shared/data/pristine"),
                   help="folder of photographs to train on (and hold out from)")
    p.add_argument("--held-out", type=int, default=8, help="photographs held out for judging")
    p.add_argument("--runs", nargs="+", default=["l1", "gsn:0.1", "gsn:1", "st-lpips-alex:0.1"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--width", type=int, default=32, help="the SR network's width")
    p.add_argument("--weights", default=None, help="GSN weights for the loss and the judge (default: the default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs/sr_loss"))
    args = p.parse_args(argv)
    for spec in args.runs:  # a typo fails now, not after an hour of training
        name, _ = parse_run(spec)
        if name != "l1":
            loss_term(name, args.weights, torch.device("cpu"))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    path.touch()
    device = torch.device(args.device)
    if not args.pristine.is_dir():
        raise SystemExit(f"--pristine {args.pristine} is not a folder of photographs (../shared/data/pristine here)")
    train, held = photographs(args.pristine, args.held_out)
    hr = torch.cat([crops(4), torch.stack([centre(im) for im in held])]).to(device)
    lr = downscale(hr)
    fns, missing = judges(device, args.weights)
    out = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                      f"torch {torch.__version__}", "args": {k: str(v) for k, v in vars(args).items()},
           "held_out": f"4 crops of examples/reference.png + centre crops of {len(held)} photographs",
           "missing": missing, "own": judge(fns, hr, hr), "rows": {}}
    shown = {"bicubic": bicubic(lr[:2])}
    out["rows"]["bicubic"] = judge(fns, hr, bicubic(lr))
    print(f"{out['held_out']}; {len(train)} photographs to train on; judges {list(fns)}; missing {missing}")
    print("bicubic", out["rows"]["bicubic"], flush=True)
    for spec in args.runs:
        t0 = time.perf_counter()
        model = train_run(spec, args, train, device)
        with torch.no_grad():
            sr = model(lr)
        out["rows"][spec] = {**judge(fns, hr, sr), "train_seconds": round(time.perf_counter() - t0, 1)}
        shown[spec] = sr[:2]
        print(spec, out["rows"][spec], flush=True)
        path.write_text(json.dumps(out, indent=1))
        sheet(hr[:2], shown, args.out / "sr_sheet.png")
    print(f"results: {path}; sheet: {args.out / 'sr_sheet.png'}")


if __name__ == "__main__":
    main()
