"""``python -m gsn_metric.train fit``: train GSN on a rated data set and export the best model.

The paper's recipe by default (Ranger, batch 32, lr 1e-3, weight decay 1e-5, 300 epochs, random 192×192 paired
crops + flips, loss MSE + 0.1·pair + 0.1·list). Choices of ours, each also stated where it is made:

* **Score scale.** Targets are mapped linearly from the data set's nominal ``score_range`` [lo, hi] to [0, 1]
  while training (the loss's MSE and list terms want a unit-ish scale, and PIPAL's Elo ~1000–1600 would
  otherwise dominate the first epochs with bias fitting). The export folds the inverse map into the last
  (linear) layer, so exported weights score on the data set's own scale, higher = better, as their metadata
  says.
* **Determinism.** The sampler order and every crop are functions of ``(seed, epoch)`` only (see
  ``datasets``), so a run resumed from its checkpoint continues exactly as the uninterrupted run would.
* **Checkpoint** ``OUT/checkpoint.pt`` is written atomically (temp file + ``os.replace``) after every epoch,
  and where ``--max-steps`` ends one early (it records how many of the epoch's pairs were done, and a resumed
  run skips those); a killed run relaunched with ``--resume`` loses at most the epoch in progress. It holds only what
  ``torch.load(weights_only=True)`` accepts (tensors, dicts, lists, numbers, strings, None): model, optimiser
  (inner RAdam and Lookahead's slow weights), grad scaler, epoch, step, RNG states as tensors, best score,
  history and every CLI flag.
* **Export.** ``OUT/best.safetensors`` (+ ``OUT/manifest.json``) is the model with the best validation main
  score (SRCC + PLCC); with ``--val-fraction 0`` (the paper's train-on-everything protocol) it is the latest.
* **Multi-GPU.** ``torchrun --nproc_per_node N -m gsn_metric.train fit ...`` runs DDP (NCCL on CUDA,
  Gloo on CPU), detected from ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; the same command without torchrun runs
  one process. ``--batch-size`` is the global batch (each process takes ``batch-size / N``; the loss's batch
  terms are computed per process). Validation, checkpoints and exports happen on rank 0.
* **AMP** (``--amp``, default on) applies on CUDA only: bfloat16 autocast where the GPU supports it, else
  float16 with a gradient scaler (V100, the paper's GPU, has no fast bfloat16).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import math
import os
import pickle
import random
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from ..model import GSN, GSNConfig
from ..weights import save_weights
from .adversarial import perturb
from .datasets import RatedPairs, add_dataset_arguments, open_dataset
from .kept import keep
from .losses import GSNTrainingLoss
from .optim import build_ranger
from .outputs import check_writable_dir
from .speedups import SPEEDUPS, apply_to_model, parse_speedups, wrap_for_training
from .synthetic import SyntheticKADID

__all__ = ["TINY", "add_arguments", "load_checkpoint", "main", "model_config", "train_step", "training_autocast"]

CHECKPOINT = "checkpoint.pt"
EXPORT = "best.safetensors"
CHECKPOINT_FORMAT = "gsn-metric-train-checkpoint-1"
# The test-size network of tests/conftest.py: the paper's structure at a thousandth of the cost.
TINY = GSNConfig(stem=4, blocks=((6, 8, 6), (6, 6), (6,)), fusion_channels=4, fusion_size=6)
_WARM_STEPS = 5  # steps of an epoch before its steady rate is measured (``history.json``'s "steady")
# Steps between reads of the loss on the host. Each read waits for the GPU to finish, which then idles while the
# next step is launched and its batch copied; the sums stay on the device in between. A non-finite loss is
# caught at the next read (and at the epoch's end), before anything is exported.
_READ_EVERY = 20
# Flags that may change between a run and its resumption without changing what is trained.
_RESUMABLE_CHANGES = {"epochs", "workers", "device", "resume", "max_steps", "val_every", "out", "root", "labels",
                      "pristine", "time_limit", "init", "speedups",
                      "name", "weights_dir", "default", "peers", "must_beat"}  # release's own: not training
# Flags that may not: they change the train/val split, the validation items or the patch size, so the run
# would train on what it validated on before, and its "best" would compare scores of different val sets.
_FIXED_ON_RESUME = {"dataset", "seed", "draw_offset", "val_fraction", "patch_size", "lower_is_better",
                    "type_weights", "resize_short", "pristine_list"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``fit`` flags (data-set flags from :func:`datasets.add_dataset_arguments`)."""
    add_dataset_arguments(parser)
    g = parser.add_argument_group("optimisation (defaults: the paper)")
    g.add_argument("--epochs", type=int, default=300, help="number of epochs in all (also when resuming)")
    g.add_argument("--batch-size", type=int, default=32, help="pairs per step, over all processes")
    g.add_argument("--lr", type=float, default=1e-3, help="Ranger learning rate (the peak with a schedule)")
    g.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="'constant' (the paper's, for 300 GPU epochs) or 'cosine': decay from --lr to 0 over the "
                        "planned run (--epochs x steps per epoch), for short budgets")
    g.add_argument("--warmup-steps", type=int, default=0,
                   help="ramp the learning rate linearly from 0 over this many first steps")
    g.add_argument("--weight-decay", type=float, default=1e-5, help="decoupled weight decay")
    g.add_argument("--mse-weight", type=float, default=1.0, help="weight of the MSE on (rescaled) scores")
    g.add_argument("--alpha", type=float, default=0.1, help="weight of the Norm-in-Norm pair term")
    g.add_argument("--beta", type=float, default=0.1, help="weight of the listwise KL term")
    g.add_argument("--rank-loss", type=float, default=0.0,
                   help="weight of ASNA's differentiable SRCC surrogate (0: off, as in the paper)")
    g.add_argument("--anchor-weight", type=float, default=0.0,
                   help="weight of the reference anchor (not in the paper; issue 16): each reference scored "
                        "against itself is taught the top of the scale, and a distorted image scored above its "
                        "reference is penalised (one more fusion head per pair)")
    g.add_argument("--adversarial-weight", type=float, default=0.0,
                   help="weight of the adversarial hinge (not in the paper; issue 16): each distorted image is "
                        "also attacked (--adversarial-steps of L-inf gradient ascent on the model's score, radius "
                        "--adversarial-eps) and taught to score no higher than unperturbed; a step costs about "
                        "(2 + steps)× a plain one")
    g.add_argument("--adversarial-eps", type=float, default=2.0, metavar="GREY_LEVELS",
                   help="radius of that attack in 1/255 steps (2: invisible; benchmarks/as_loss.py attacks at 2)")
    g.add_argument("--adversarial-steps", type=int, default=2, help="gradient steps of that attack")
    g.add_argument("--clip-grad", type=float, default=10.0,
                   help="clip the gradient's global L2 norm to this (a guard against rare spikes; 0: off)")
    g = parser.add_argument_group("model")
    g.add_argument("--tiny", action="store_true", help="the test-size network (tests and smoke runs only)")
    g.add_argument("--width", type=float, default=1.0,
                   help="multiply every channel count of the paper's network by this (1: the paper's)")
    g.add_argument("--init", default=None,
                   help="start from these weights (a .safetensors file or a released name) of the same architecture, "
                        "with a fresh optimiser (ignored when resuming: the checkpoint holds the run's own)")
    g = parser.add_argument_group("run")
    g.add_argument("--out", required=True, help="output folder: checkpoint.pt, best.safetensors, history.json")
    g.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt if there is one (else start), so the same command can "
                        "be relaunched after a kill; without it an existing checkpoint is an error")
    g.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ...")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision on CUDA (bfloat16, or float16 + grad scaler where bf16 is slow)")
    g.add_argument("--speedups", type=lambda t: ",".join(parse_speedups(t)), default="", metavar="LIST",
                   help=f"faster forms of the same step, comma-separated: {', '.join(SPEEDUPS)} (speedups.py; "
                        "benchmarks/train_step.py times them); default none: the eager step")
    g.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader worker processes per GPU/process (0: load in the main process)")
    g.add_argument("--val-every", type=int, default=1,
                   help="validate every N epochs (and after the last); 0: never while training, export the last "
                        "epoch (release measures it afterwards)")
    g.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop at the first step boundary after this many seconds of training, checkpoint written, "
                        "no validation; relaunch with --resume to go on: the result equals an uncut run's")
    g.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many optimiser steps in all, ending the epoch there (a later --resume "
                        "with a higher value, or none, continues that epoch where it stopped)")
    g.add_argument("--draw-offset", type=int, default=0, metavar="EPOCHS",
                   help="draw order, crops and distortions as epoch N+EPOCHS would: a run continued with --init "
                        "from weights trained EPOCHS epochs on the same --seed sees new pairs, not the same again "
                        "(validation items do not depend on it)")


def model_config(args: argparse.Namespace) -> GSNConfig:
    """The architecture the flags ask for: TINY, or the paper's with every width scaled by ``--width``."""
    if args.tiny:
        return TINY
    if args.width == 1.0:
        return GSNConfig()
    paper = GSNConfig()

    def scale(c: int) -> int:
        return max(1, round(c * args.width))

    return GSNConfig(stem=scale(paper.stem), blocks=tuple(tuple(map(scale, b)) for b in paper.blocks),
                     fusion_channels=scale(paper.fusion_channels))


# ---------------------------------------------------------------------------------------------------------
# process group, seeding, RNG state as tensors


def _setup_distributed(device_flag: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the torchrun process group when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device_flag == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_flag)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"--device {device_flag} was asked for, but this torch sees no CUDA GPU")
        if device.type == "cuda" and world > 1:
            device = torch.device(f"cuda:{local_rank}")  # one GPU per process under torchrun
    if device.type == "cuda":
        if device.index is None:  # set_device refuses a bare "cuda": name the current GPU
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


class _SkipSampler(Sampler):
    """A ``DistributedSampler`` whose current epoch starts ``skip`` indices in (resuming a partial epoch)."""

    def __init__(self, inner: DistributedSampler) -> None:
        self.inner, self.skip = inner, 0

    def __iter__(self):
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return len(self.inner) - self.skip


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    """DataLoader workers: seed numpy and random from the per-worker torch seed the loader derived."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _mix(*numbers: int) -> int:
    """A 63-bit seed from several integers (seed, epoch, rank), well mixed."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors and numbers (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = cast(tuple, np.random.get_state(legacy=True))
    return {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    np_ = state["numpy"]
    np.random.set_state(("MT19937", np_["keys"].numpy().astype(np.uint32), np_["pos"], np_["has_gauss"],
                         np_["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------
# checkpoint and export


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a kill leaves either the old or the new checkpoint, never half of one


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (``weights_only=True``: no code runs); checks its format marker."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:  # truncated zip, empty file, not a checkpoint
        raise ValueError(f"{path} cannot be read as a training checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'empty file'}); it is damaged or truncated: "
                         "restore it, or delete it to start the run again") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a gsn-metric training checkpoint ({CHECKPOINT_FORMAT})")
    return ckpt


def _cli_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags as JSON-able values (private keys such as the sub-command's module dropped)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}


def _check_resumed_flags(args: argparse.Namespace, saved: dict[str, Any], ckpt_path: Path, say: Any) -> None:
    """Refuse to resume with a changed :data:`_FIXED_ON_RESUME` flag; warn about other changes (they apply from
    the next step: hyper-parameters such as ``--lr`` or the loss weights)."""
    changed = {k for k, v in _cli_flags(args).items() if saved.get(k, v) != v} - _RESUMABLE_CHANGES
    was = {k: saved.get(k) for k in sorted(changed)}
    fixed = changed & _FIXED_ON_RESUME
    if fixed:
        saved_flags = ", ".join(f"--{k.replace('_', '-')} {was[k]}" for k in sorted(fixed))
        raise ValueError(f"{ckpt_path} was trained with {saved_flags}: changing them on resume would change the "
                         f"train/val split or the patches; resume with those values, or start a run with another --out")
    if changed:
        say(f"warning: resuming with changed flags, applied from the next step: {sorted(changed)} (checkpoint: "
            f"{was})", file=sys.stderr)


def _export_copy(model: GSN, lo: float, hi: float) -> GSN:
    """An eval-mode copy whose outputs are on the data set's scale: FC ← (hi − lo)·FC + lo (exact, linear)."""
    # (torch's type stubs lack Module.to's memory_format; it exists)
    export = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    with torch.no_grad():
        export.fc.weight.mul_(hi - lo)
        export.fc.bias.mul_(hi - lo).add_(lo)
    return export


# ---------------------------------------------------------------------------------------------------------
# training


def _validate(model: GSN, dataset: Dataset, batch_size: int, device: torch.device,
              workers: int) -> dict[str, Any]:
    """``evaluate.correlations`` of the model's five-patch scores on ``dataset`` (srcc, plcc, main, ...)."""
    from .evaluate import correlations, predict

    # Folding CDC + BatchNorm into plain convs gives the same scores about twice as fast.
    pred, mos, _ = predict(model.fold(), dataset, batch_size=batch_size, device=device, num_workers=workers)
    return correlations(pred, mos)


def learning_rate(args: argparse.Namespace, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of a run planned for ``total_steps``: a function of
    the step alone, so a run cut by ``--time-limit`` and resumed follows the uncut run's schedule."""
    lr = args.lr
    if args.lr_schedule == "cosine":
        lr *= 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    if step < args.warmup_steps:
        lr *= (step + 1) / (args.warmup_steps + 1)
    return lr


def _load_init(model: GSN, spec: str, say: Any) -> None:
    """``--init``: copy released weights of the same architecture into ``model``, their FC mapped back from the
    file's score range to the [0, 1] targets of training (the inverse of :func:`_export_copy`)."""
    from ..weights import load_model

    init, info = load_model(spec, device="cpu")
    if init.config != model.config:
        raise ValueError(f"--init {spec} is a different architecture ({init.config}); pass the --width/--tiny it "
                         f"was trained with")
    lo, hi = info.score_range
    with torch.no_grad():
        init.fc.weight.div_(hi - lo)
        init.fc.bias.sub_(lo).div_(hi - lo)
    model.load_state_dict(init.state_dict())
    say(f"initialised from {info.path} (sha256 {info.sha256[:12]}…)")


def _is_better(main_score: float | None, best: dict[str, Any] | None) -> bool:
    """A defined (non-NaN) validation main score above the best so far (an undefined one never wins)."""
    if main_score is None or math.isnan(main_score):
        return False
    return best is None or best["main"] is None or math.isnan(best["main"]) or main_score > best["main"]


def training_autocast(device: torch.device, amp: bool) -> tuple[contextlib.AbstractContextManager, torch.dtype | None]:
    """The forward pass's autocast context and dtype (None: full precision)."""
    if not amp or device.type != "cuda":
        return contextlib.nullcontext(), None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return torch.autocast("cuda", dtype=dtype), dtype


def main(args: argparse.Namespace) -> int:
    """Train as the flags say (see :func:`add_arguments`); returns 0, raises on bad input."""
    rank, world, device = _setup_distributed(args.device)
    try:
        _train(args, rank, world, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _train(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> None:
    out = Path(args.out)
    ckpt_path = out / CHECKPOINT
    is_main = rank == 0
    say = print if is_main else (lambda *a, **k: None)
    if ckpt_path.exists() and not args.resume:
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
    if args.batch_size % world:
        raise ValueError(f"--batch-size {args.batch_size} is not divisible by the {world} processes")
    if args.adversarial_weight and not (args.adversarial_eps > 0 and args.adversarial_steps >= 1):
        raise ValueError(f"--adversarial-weight needs --adversarial-eps > 0 and --adversarial-steps ≥ 1, got "
                         f"{args.adversarial_eps} and {args.adversarial_steps}")
    check_writable_dir(out, "--out")  # now, not after the first epoch
    _seed_everything(args.seed)

    has_val = args.val_fraction > 0
    train_set = open_dataset(args, "train" if has_val else "all", train=True)
    val_set: Dataset | None = open_dataset(args, "val", train=False) if has_val and is_main else None
    if isinstance(val_set, SyntheticKADID) and args.val_every:  # made on the fly, fixed by the seed: make them once
        val_set = keep(val_set, num_workers=args.workers)
    lo, hi = (float(v) for v in train_set.score_range)
    local_batch = args.batch_size // world
    sampler: DistributedSampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    if len(sampler) < local_batch:
        raise ValueError(f"the training split has {len(train_set)} pairs, fewer than one batch of {local_batch} "
                         f"per process: lower --batch-size or --val-fraction")
    loader_rng = torch.Generator()
    resumable = _SkipSampler(sampler)
    loader = DataLoader(train_set, batch_size=local_batch, sampler=resumable, num_workers=args.workers,
                        pin_memory=device.type == "cuda", drop_last=True,  # BatchNorm and batch loss terms
                        worker_init_fn=_seed_worker, generator=loader_rng)

    config = model_config(args)
    model = GSN(config)
    model = model.to(device)
    # channels_last: the fast layout for cuDNN and for oneDNN on the CPU too (full network, batch 8, forward +
    # backward on 2 cores: 0.42–0.46 pairs/s against 0.31–0.34 contiguous).
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (as in _export_copy)
    speedups = parse_speedups(args.speedups)
    apply_to_model(model, speedups)
    optimizer = build_ranger(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                             foreach=True if "foreach" in speedups else None)
    autocast, amp_dtype = training_autocast(device, args.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = GSNTrainingLoss(alpha=args.alpha, beta=args.beta, mse_weight=args.mse_weight,
                                rank_weight=args.rank_loss, anchor_weight=args.anchor_weight,
                                adversarial_weight=args.adversarial_weight)

    start_epoch, step, best, history, skip_samples = 0, 0, None, [], 0
    resuming = args.resume and ckpt_path.exists()
    if args.init and not resuming:
        _load_init(model, args.init, say)
    elif not resuming:
        # A calm head: at GSN's default init the predictions already spread with std ~0.27 around 0.5 (the
        # targets' own std is ~0.25), and the first hundreds of steps are spent undoing that noise. A tenth of
        # it starts near the constant guess: epoch-1 MSE 0.064 against 0.237 (16 steps of batch 16, 1/16-width
        # network, synthetic KADID; runs/ab of the weights issue's session).
        with torch.no_grad():
            model.fc.weight.mul_(0.1)
    if resuming:
        # Read on the host: the RNG states must stay there, and load_state_dict below moves the model's and the
        # optimiser's tensors to their parameters' devices (the optimiser's step counts stay on the host, as in
        # an uninterrupted run).
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["architecture"] != config.to_json():
            raise ValueError(f"{ckpt_path} holds a different architecture ({ckpt['architecture']}); "
                             "use the run's --tiny/--width flags or another --out")
        _check_resumed_flags(args, ckpt["args"], ckpt_path, say)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:  # the flags, not the checkpoint, say what the next steps use
            group["lr"], group["weight_decay"] = args.lr, args.weight_decay
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start_epoch, step, best, history = ckpt["epoch"], ckpt["step"], ckpt["best"], ckpt["history"]
        skip_samples = ckpt.get("epoch_samples", 0)
        say(f"resumed from {ckpt_path}: {start_epoch} epoch(s)"
            + (f" and {skip_samples} pairs of the next" if skip_samples else "") + f", {step} steps done")
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    net = wrap_for_training(net, speedups)

    validating = repr(val_set) if val_set is not None else "nothing (--val-fraction 0: the last epoch is exported)"
    say(f"training {train_set!r}\n  validating on {validating}\n  {config}\n  on {device} × {world}, "
        f"batch {args.batch_size}, {len(loader)} steps/epoch, amp {amp_dtype}, speedups {args.speedups or 'none'}")
    total_steps = args.epochs * len(loader)
    deadline = math.inf if args.time_limit is None else time.monotonic() + args.time_limit
    out_of_time = False  # --time-limit reached: end this launch at the step boundary
    done_epochs = start_epoch
    for epoch in range(start_epoch, args.epochs):
        if (args.max_steps is not None and step >= args.max_steps) or out_of_time:
            break
        # The epoch alone decides order and crops (resume = uninterrupted run); see the module docstring.
        draw = epoch + args.draw_offset
        sampler.set_epoch(draw)
        # A partial epoch (--max-steps) continues after its last pair: the order is the uninterrupted run's.
        resumable.skip, skip_samples = skip_samples, 0
        train_set.set_epoch(draw)
        loader_rng.manual_seed(_mix(args.seed, draw, rank))
        net.train()
        sums: dict[str, torch.Tensor] = {}  # on the device: read every _READ_EVERY steps
        n_batches, n_pairs, t0 = 0, 0, time.perf_counter()
        steady: tuple[float, int] | None = None  # (time, pairs) after the first steps (compiling, warming up)
        # rank 0 only; into a log file (stderr not a terminal) one update a minute rather than constant redraws
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not is_main, leave=False,
                   dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 60)
        for batch in bar:
            ref = batch["ref"].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            dis = batch["dist"].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            # non_blocking too: a blocking copy waits for the previous step's kernels (it is queued behind them)
            target = (batch["score"].to(device, non_blocking=True) - lo) / (hi - lo)
            attack = (args.adversarial_eps / 255, args.adversarial_steps) if args.adversarial_weight else None
            terms = train_step(net, model, optimizer, criterion, scaler, autocast, ref, dis, target,
                               lr=learning_rate(args, step, total_steps), clip_grad=args.clip_grad,
                               anchor=bool(args.anchor_weight), attack=attack)
            step += 1
            n_batches += 1
            n_pairs += ref.shape[0] * world
            if n_batches == _WARM_STEPS:
                steady = (time.perf_counter(), n_pairs)
            for k, v in terms.items():
                v = v.double()  # summed in float64, as the host's floats were
                sums[k] = sums[k] + v if k in sums else v
            if n_batches % _READ_EVERY == 0:
                total = float(sums["total"])
                _check_diverged(total, epoch, step, out, amp_dtype)
                # refresh=False: a refresh here would print the stale count of a bar that only syncs every minute
                bar.set_postfix(loss=f"{total / n_batches:.4f}", refresh=False)
            if args.max_steps is not None and step >= args.max_steps:
                break
            if time.monotonic() >= deadline:
                out_of_time = True
                break
        bar.close()
        means = {k: float(v) / max(n_batches, 1) for k, v in sums.items()}  # waits for the last step
        if means:
            _check_diverged(means["total"], epoch, step, out, amp_dtype)
        seconds = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "seconds": round(seconds, 2),
                                  "pairs_per_s": round(n_pairs / seconds, 2), "train": means}
        if steady is not None and n_batches > 2 * _WARM_STEPS:
            # the rate once compiled and warm, and when that began: what a time-limited epoch is planned on
            record["steady"] = {"pairs_per_s": round((n_pairs - steady[1]) / (time.perf_counter() - steady[0]), 2),
                                "after_s": round(steady[0] - t0, 2)}
        last = epoch + 1 == args.epochs or (args.max_steps is not None and step >= args.max_steps)
        # pairs of this epoch done (per process) if --max-steps ended it early, else 0 (complete)
        partial = resumable.skip + n_batches * local_batch if n_batches < len(loader) else 0
        cut = out_of_time and partial  # a pause, not an epoch's end: checkpoint only, no validation
        done_epochs = epoch + (not partial)
        if is_main:
            # The last step's update can be non-finite with a finite loss: never export or checkpoint that.
            if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):
                _check_diverged(math.nan, epoch, step, out, amp_dtype)
            export = _export_copy(model, lo, hi)
            if val_set is not None and not cut and args.val_every and ((epoch + 1) % args.val_every == 0 or last):
                record["val"] = _validate(export, val_set, 5 * local_batch, device, args.workers)
            main_score = record.get("val", {}).get("main")
            # Without validation (or if no epoch had a defined score by the end) the latest model is exported.
            if val_set is None or _is_better(main_score, best) or (last and best is None):
                best = {"epoch": epoch + 1, "main": main_score, "val": record.get("val", {})}
                save_weights(export, out / EXPORT, training_data=_describe(train_set, args),
                             score_name=train_set.score_name, score_range=(lo, hi), patch_size=args.patch_size,
                             results={"validation": best["val"], "epoch": epoch + 1} if best["val"] else {})
            history.append(record)
            _save_atomic({
                "format": CHECKPOINT_FORMAT, "epoch": done_epochs, "epoch_samples": partial, "step": step,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "rng": _rng_state(), "best": best, "history": history, "args": _cli_flags(args),
                "architecture": config.to_json(), "score_range": [lo, hi],
            }, ckpt_path)
            (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
            say(_summary(record))
        if world > 1:
            dist.barrier()  # the others wait for rank 0's validation and checkpoint
    if out_of_time and done_epochs < args.epochs:
        say(f"--time-limit {args.time_limit:g} s reached after step {step}: {ckpt_path} written; relaunch with "
            f"--resume to continue")
    elif best is not None:
        say(f"best: epoch {best['epoch']}" + (f", val main {best['main']:.4f}" if best["main"] is not None else "")
            + f" → {out / EXPORT}")


def train_step(net: nn.Module, model: GSN, optimizer: torch.optim.Optimizer, criterion: GSNTrainingLoss,
               scaler: torch.amp.GradScaler, autocast: contextlib.AbstractContextManager, ref: torch.Tensor,
               dis: torch.Tensor, target: torch.Tensor, *, lr: float, clip_grad: float, anchor: bool = False,
               attack: tuple[float, int] | None = None) -> dict[str, torch.Tensor]:
    """One optimisation step on a batch (B×3×S×S patches, B targets in [0, 1]); returns the loss terms.

    ``net`` is what the forward calls (``model`` itself, or wrapped by DDP / ``torch.compile``); ``model`` the
    parameters' owner. ``attack``: (L∞ radius, steps) of the adversarial pairs (``--adversarial-weight``)."""
    n, pred_adv = ref.shape[0], None
    if attack is not None:
        # clean and attacked pairs in one forward (one DDP pass; BatchNorm sees both, as in Madry et al.)
        adv = perturb(model, ref, dis, attack[0], attack[1], autocast)
        ref, dis = torch.cat([ref, ref]), torch.cat([dis, adv])
    with autocast:
        pred, own = net(ref, dis, anchor=True) if anchor else (net(ref, dis), None)
    if attack is not None:
        pred, pred_adv, own = pred[:n], pred[n:].float(), None if own is None else own[:n]
    loss, terms = criterion(pred.float(), target, None if own is None else own.float(), pred_adv)
    optimizer.zero_grad(set_to_none=True)
    for group in optimizer.param_groups:
        group["lr"] = lr
    scaler.scale(loss).backward()
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    return terms


def _check_diverged(loss: float, epoch: int, step: int, out: Path, amp_dtype: torch.dtype | None) -> None:
    """Stop a run whose loss (or, given NaN, whose weights) stopped being finite, before it writes anything
    more: ``FloatingPointError`` saying where, what to change, and that OUT still holds the last good epoch."""
    if math.isfinite(loss):
        return
    hint = "lower --lr (or --clip-grad)" + (", or --no-amp" if amp_dtype == torch.float16 else "")
    raise FloatingPointError(
        f"training diverged: non-finite loss or weights in epoch {epoch + 1} at step {step}; {hint}. "
        f"{out / CHECKPOINT} and {out / EXPORT} (if present) are from the last finite epoch: relaunch with --resume "
        f"to continue from there")


def _describe(dataset: RatedPairs, args: argparse.Namespace) -> str:
    """Free-text ``training_data`` for the weights' metadata."""
    title = getattr(dataset, "title", args.dataset)
    split = "all pairs" if args.val_fraction == 0 else f"train split, {1 - args.val_fraction:.0%} of references"
    refs = getattr(dataset, "references", None)  # fewer than the split's share when --pristine-list left some out
    count = "" if refs is None else f", {len(refs)} reference images"
    return f"{title} ({len(dataset)} pairs, {split}{count}, seed {args.seed})"


def _summary(record: dict[str, Any]) -> str:
    train = record["train"]
    text = (f"epoch {record['epoch']}: loss {train.get('total', math.nan):.4f} "
            f"(mse {train.get('mse', math.nan):.4f}, pair {train.get('pair', math.nan):.4f}, "
            f"list {train.get('list', math.nan):.4f}), {record['pairs_per_s']:.1f} pairs/s")
    if "val" in record:
        v = record["val"]
        text += f"; val SRCC {v.get('srcc', math.nan):.4f} PLCC {v.get('plcc', math.nan):.4f}"
    return text
