"""GSN as a loss, judged: does minimising it bring an image back to its reference, and how far does a small
attack move each metric? (Ding, Ma, Wang & Simoncelli, IJCV 2021, compare metrics by such optimisation.)

    python benchmarks/as_loss.py recovery [--steps 120] [--crops 1] [--out runs/as_loss]
    python benchmarks/as_loss.py attack [--eps 2] [--pgd-steps 10] [--weights FILE] [--only GSN]
    python benchmarks/as_loss.py all            # both; what benchmarks/README.md reports
    python benchmarks/as_loss.py table --out runs/as_loss   # its tables, in Markdown, from results.json

**recovery**: 192×192 crops of ``examples/reference.png`` (made here; no ``../shared`` photograph) start
blurred, JPEG-compressed or noisy the KADID-10k way, or as uniform noise; each metric, as a loss (lower =
closer), is the only objective of Adam (lr 0.01) on the pixels, clamped to [0, 1] after each step. At fixed steps the table gives
PSNR, SSIM and ST-LPIPS-alex to the reference, the GSN score (default weights, higher = better; the reference
scores itself ``own``) and the loss's own value. A contact sheet of the final images goes to ``--out``.

**attack**: an L∞ PGD attack (``--pgd-steps`` steps of ε/4, radius ε/255) that makes each metric rate
distorted crops as better as it can; the table gives each value before and after, the reference's own
value, and whether the attacked image passes it.

Losses: GSN ``form="score"`` (gsn-metric 0.1's ``hi − score``), the anchored default (the stem's feature distance
alone), and the anchored form with ``score_weight=0.01`` (gsn-metric 0.2's default); MS-SSIM (pytorch-msssim),
GMSD (plain torch), ST-LPIPS alex and vgg (``stlpips-pytorch``, needs torchvision: run this script in
benchmarks/README.md's peers environment to have them). A missing peer is reported and left out.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import gsn_metric
from gsn_metric.images import load_image
from gsn_metric.train.distortions import distort
from gsn_metric.train.peers import CLASSIC, gmsd, psnr

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a folder of scripts: its shared peers module
import peers

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, ref) -> N values, lower = closer


def crops(n: int, size: int = 192, image: str = "reference.png") -> torch.Tensor:
    """``n`` fixed, spread-out size² crops of examples/``image``: n×3×size×size in [0, 1]."""
    img = load_image(EXAMPLES / image)
    h, w = img.shape[-2:]
    spots = [(96, 160), (0, 0), (h - size, w - size), (0, w - size)]
    if n > len(spots):
        raise SystemExit(f"--crops takes at most {len(spots)}")
    return torch.stack([img[:, t : t + size, l : l + size] for t, l in spots[:n]])


def starts(ref: torch.Tensor) -> dict[str, torch.Tensor]:
    """The starting images of the recovery test, made the KADID-10k way (``gsn_metric.train.distortions``,
    seeded), plus uniform noise."""
    g = torch.Generator().manual_seed(0)
    return {
        "blur": distort(ref, 1, 3.5),  # Gaussian blur σ = 1.5
        "JPEG q7": distort(ref, 10, 4),  # KADID JPEG level 4: Pillow quality 7
        "noise σ=0.1": distort(ref, 11, 5, g),  # KADID white noise level 5: variance 0.01
        "uniform noise": torch.rand(ref.shape, generator=g),
    }


def losses(device: torch.device, weights: str | None = None) -> tuple[dict[str, Loss], dict[str, str]]:
    """Every metric as a loss (x, ref) → N values, lower = closer; and why each missing one is missing."""
    out: dict[str, Loss] = {}
    missing: dict[str, str] = {}
    for name, kwargs in [("GSN score (form='score', 0.1)", {"form": "score"}),
                         ("GSN anchored (default)", {}),
                         ("GSN anchored, score_weight=0.01 (0.2)", {"score_weight": 0.01})]:
        out[name] = gsn_metric.GSNLoss(weights, device=device, reduction="none", **kwargs)
    try:
        import pytorch_msssim  # noqa: F401

        ms_ssim = CLASSIC["MS-SSIM"][0]
        out["MS-SSIM"] = lambda x, r: 1 - ms_ssim(r, x)
    except ImportError:
        missing["MS-SSIM"] = "pip install pytorch-msssim"
    out["GMSD"] = lambda x, r: gmsd(r, x)
    for name in ("ST-LPIPS-alex", "ST-LPIPS-vgg"):
        try:
            f, _ = peers.build(name, device)
            out[name] = lambda x, r, f=f: f(r, x)
        except ImportError as err:
            missing[name] = peers.why_unavailable(err, "stlpips-pytorch, torchvision")
    return out, missing


def _selected(fns: dict[str, Loss], only: str | None) -> dict[str, Loss]:
    """The losses whose name contains one of the comma-separated parts of ``only`` (all if None)."""
    return {k: v for k, v in fns.items() if only is None or any(part in k for part in only.split(","))}


def _ssim(r: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    try:
        return CLASSIC["SSIM"][0](r, x)
    except ImportError:
        return None


def recovery(args: argparse.Namespace, device: torch.device, save: Callable[[dict], None]) -> None:
    """Each loss from each start; ``save`` gets the results so far after every run, and the sheet is redrawn,
    so a run cut short leaves what it measured."""
    refs = crops(args.crops).to(device)
    loss_fns, missing = losses(device, args.weights)
    score = gsn_metric.GSNScore(args.weights, device=device)
    judge = loss_fns.get("ST-LPIPS-alex")
    with torch.no_grad():
        own = score(refs, refs)
    checkpoints = sorted({0, args.steps // 3, args.steps})
    results, finals = [], {}
    start_imgs = starts(refs.cpu())
    sheet = args.out / "recovery_sheet.png"
    for start_name, x0 in start_imgs.items():
        for loss_name, fn in _selected(loss_fns, args.only).items():
            x = x0.to(device).clone().requires_grad_(True)
            opt = torch.optim.Adam([x], lr=args.lr)
            t0 = time.perf_counter()
            for step in range(args.steps + 1):
                value = fn(x, refs)
                if step in checkpoints:
                    with torch.no_grad():
                        gsn = score(refs, x)
                        row = {"start": start_name, "loss": loss_name, "step": step,
                               "psnr": psnr(refs, x).mean().item(),
                               "ssim": None if (s := _ssim(refs, x)) is None else s.mean().item(),
                               "st_lpips_alex": None if judge is None else judge(x, refs).mean().item(),
                               "gsn": gsn.mean().item(), "gsn_max": gsn.max().item(),
                               "own": own.mean().item(), "value": value.mean().item(),
                               "seconds": time.perf_counter() - t0}
                    results.append(row)
                    print(_row(row), flush=True)
                if step == args.steps:
                    break
                opt.zero_grad()
                value.sum().backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
            finals[(start_name, loss_name)] = x.detach()[0].cpu()
            contact_sheet(refs[0].cpu(), {k: v[0] for k, v in start_imgs.items()}, finals, sheet)
            save({"rows": results, "missing": missing})
    print(f"contact sheet: {sheet}")


def _row(r: dict) -> str:
    fmt = lambda v, p=3: "n/a" if v is None else f"{v:.{p}f}"
    return (f"| {r['start']} | {r['loss']} | {r['step']} | {r['psnr']:.2f} | {fmt(r['ssim'])} | "
            f"{fmt(r['st_lpips_alex'])} | {r['gsn']:.2f} (own {r['own']:.2f}) | {r['value']:.4f} | "
            f"{r['seconds']:.0f} |")


def contact_sheet(ref: torch.Tensor, start_imgs: dict[str, torch.Tensor],
                  finals: dict[tuple[str, str], torch.Tensor], path: Path) -> None:
    """Rows: starts; columns: the reference, the start, then each loss's final image; labelled."""
    names = list(dict.fromkeys(k[1] for k in finals))
    size, label = ref.shape[-1], 28
    cols = ["reference", "start", *names]
    sheet = Image.new("RGB", (len(cols) * size, len(start_imgs) * (size + label) + label), "white")
    draw = ImageDraw.Draw(sheet)
    for j, c in enumerate(cols):
        draw.text((j * size + 2, 2), c.replace(" (", "\n("), fill="black")

    def put(img: torch.Tensor, i: int, j: int) -> None:
        arr = (img.clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy()
        sheet.paste(Image.fromarray(arr), (j * size, label + i * (size + label) + label))

    for i, (start_name, x0) in enumerate(start_imgs.items()):
        draw.text((2, label + i * (size + label) + 8), start_name.replace("σ", "sigma "), fill="black")  # font: ASCII
        put(ref, i, 0)
        put(x0, i, 1)
        for j, name in enumerate(names):
            if (start_name, name) in finals:  # not yet run: left blank
                put(finals[(start_name, name)], i, 2 + j)
    sheet.save(path)


def attack(args: argparse.Namespace, device: torch.device, save: Callable[[dict], None]) -> None:
    """PGD towards 'better' for each metric, on distorted crops; before, after, the reference's own value."""
    refs = crops(args.crops).to(device)
    jpeg7 = crops(args.crops, image="distorted.png").to(device)  # the same places as the references
    cases = {"JPEG q7 (examples/distorted.png)": jpeg7, **{k: v.to(device) for k, v in starts(refs.cpu()).items()
                                                            if k in ("blur", "noise σ=0.1")}}
    loss_fns, missing = losses(device, args.weights)
    score = gsn_metric.GSNScore(args.weights, device=device)
    # GSN's own score is the metric under attack (higher = better); the others are their losses.
    metrics: dict[str, Loss] = {"GSN score": lambda x, r: -score(r, x)}
    metrics.update({k: v for k, v in loss_fns.items() if not k.startswith("GSN score")})
    eps = args.eps / 255
    rows = []
    for case, dist in cases.items():
        for name, fn in _selected(metrics, args.only).items():
            with torch.no_grad():
                own, before = fn(refs, refs).mean().item(), fn(dist, refs).mean().item()
            x = dist.clone()
            for _ in range(args.pgd_steps):
                x.requires_grad_(True)
                (grad,) = torch.autograd.grad(fn(x, refs).sum(), x)
                with torch.no_grad():
                    x = dist + (x - eps / 4 * grad.sign() - dist).clamp(-eps, eps)
                    x = x.clamp(0, 1)
            with torch.no_grad():
                after = fn(x, refs)
            sign = -1 if name == "GSN score" else 1  # report GSN as its score, the rest as losses
            row = {"case": case, "metric": name, "before": sign * before, "after": sign * after.mean().item(),
                   "own": sign * own, "passes_own": bool((after < own).any()),
                   "psnr_after": psnr(refs, x).mean().item(), "psnr_before": psnr(refs, dist).mean().item()}
            rows.append(row)
            print(f"| {case} | {name} | {row['before']:.4f} | {row['after']:.4f} | {row['own']:.4f} | "
                  f"{'yes' if row['passes_own'] else 'no'} |", flush=True)
            save({"rows": rows, "missing": missing})


def tables(results: dict) -> str:
    """benchmarks/README.md's tables from a results.json: the recovery summary (PSNR at each checkpoint, the
    GSN score at the last), every recovery checkpoint, and the attack."""
    out = []
    if "recovery" in results:
        rows = results["recovery"]["rows"]
        starts_, losses_ = list(dict.fromkeys(r["start"] for r in rows)), list(dict.fromkeys(r["loss"] for r in rows))
        steps = sorted({r["step"] for r in rows})
        cell = {(r["start"], r["loss"], r["step"]): r for r in rows}
        out.append("| loss | " + " | ".join(f"{st}: PSNR dB {' → '.join(map(str, steps))} (GSN score at {steps[-1]})"
                                            for st in starts_) + " |")
        out.append("|---" * (len(starts_) + 1) + "|")
        for loss in losses_:
            cells = []
            for st in starts_:
                got = [cell.get((st, loss, k)) for k in steps]
                cells.append("not run" if got[-1] is None else
                             " → ".join(f"{g['psnr']:.2f}" for g in got if g) + f" ({got[-1]['gsn']:.2f})")
            out.append(f"| {loss} | " + " | ".join(cells) + " |")
        out.append("\nEvery checkpoint:\n")
        out.append("| start | loss | step | PSNR dB | SSIM | ST-LPIPS-alex | GSN score | loss value |\n|---|---|---|---|---|---|---|---|")
        out += [_row(r).rsplit(" |", 2)[0] + " |" for r in rows]
    if "attack" in results:
        rows = results["attack"]["rows"]
        cases, metrics = list(dict.fromkeys(r["case"] for r in rows)), list(dict.fromkeys(r["metric"] for r in rows))
        cell = {(r["case"], r["metric"]): r for r in rows}
        out.append("\n| metric | " + " | ".join(f"{c}: before → after" for c in cases) +
                   " | reference's own | passes it |\n" + "|---" * (len(cases) + 3) + "|")
        for m in metrics:
            got = [cell[(c, m)] for c in cases if (c, m) in cell]
            out.append(f"| {m} | " + " | ".join(f"{g['before']:.3f} → {g['after']:.3f}" for g in got) +
                       f" | {got[0]['own']:.2f} | {sum(g['passes_own'] for g in got)} of {len(got)} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("recovery", "attack", "all", "table"))
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--crops", type=int, default=1, help="crops of examples/reference.png (1 to 4)")
    p.add_argument("--eps", type=float, default=2.0, help="attack radius in 1/255 steps")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default=None, help="GSN weights (a file or a released name; default: the default)")
    p.add_argument("--out", type=Path, default=Path("runs/as_loss"))
    p.add_argument("--only", default=None,
                   help="only the losses whose name contains one of these comma-separated parts (e.g. GSN)")
    args = p.parse_args(argv)
    if args.part == "table":
        print(tables(json.loads((args.out / "results.json").read_text())))
        return
    args.out.mkdir(parents=True, exist_ok=True)  # before the long work: a folder that cannot be made fails now
    (args.out / "results.json").touch()
    device = torch.device(args.device)
    out = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                      f"torch {torch.__version__}", "args": {k: str(v) for k, v in vars(args).items()}}
    path = args.out / "results.json"

    def saver(part: str) -> Callable[[dict], None]:
        def save(results: dict) -> None:  # after every run: a run cut short keeps what it measured
            out[part] = results
            path.write_text(json.dumps(out, indent=1, ensure_ascii=False))
        return save

    if args.part in ("attack", "all"):
        print("| distorted crop | metric | before | after attack | reference's own | passes own |")
        attack(args, device, saver("attack"))
    if args.part in ("recovery", "all"):
        print("| start | loss | step | PSNR dB | SSIM | ST-LPIPS-alex | GSN score | loss value | s |")
        recovery(args, device, saver("recovery"))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
