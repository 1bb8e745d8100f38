"""Scoring under torchrun: which process scores which pairs, and the barriers between the steps.

``torchrun --nproc-per-node N -m gsn_metric --pairs pairs.csv --out scores.csv`` (multi-node as torchrun does
it) starts N processes with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set. Each takes a deterministic shard of the
pairs, scores it on its own device (``cuda:LOCAL_RANK`` where there are GPUs) and writes its own part of the
output (:mod:`.score_file`). The processes only meet at barriers, over gloo (CPU tensors, any device), so the
same code runs on CPUs, GPUs and mixed hosts. Without torchrun (no ``WORLD_SIZE``, or 1) nothing here does
anything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["barrier", "device_for_rank", "finish", "rank_and_world", "shard", "start"]


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) without it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def start() -> None:
    """Join torchrun's process group (gloo) if there is more than one process; a no-op otherwise."""
    import torch.distributed as dist

    if rank_and_world()[1] > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def device_for_rank(device: str | None) -> str | None:
    """The device this process scores on: ``device`` if given; else, under torchrun with GPUs, the local GPU."""
    if device is not None or rank_and_world()[1] == 1:
        return device
    import torch

    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"


def shard(indices: Sequence[int], refs: Sequence[str], rank: int, world: int) -> list[int]:
    """The input indices (from ``indices``, in order) that process ``rank`` of ``world`` scores.

    Pairs are grouped by their reference (``refs[i]``) so that a reference's pairs stay on one process and its
    encoding is reused there; groups go, in order of first appearance, to the process with the fewest pairs so
    far (the lowest rank on a tie). The result depends only on the pairs and ``world``, so every process (and a
    ``--resume`` with the same number of processes) computes the same split.
    """
    if world == 1:
        return list(indices)
    groups: dict[str, list[int]] = {}
    for i in indices:
        groups.setdefault(refs[i], []).append(i)
    load, mine = [0] * world, []
    for members in groups.values():
        target = min(range(world), key=lambda r: (load[r], r))
        load[target] += len(members)
        if target == rank:
            mine.extend(members)
    return sorted(mine)
