"""Validation pairs made once and kept in memory as 8-bit.

Synthetic-KADID validation items are distorted on the fly (about 45 ms a pair on one thread) but are fixed by the
seed, so ``fit`` makes them once, when it starts, and reuses them at every validation: on a tiny network the
re-making was about 8× the cost of a training epoch. Their images are multiples of 1/255 (``distort`` rounds to
8 bits), so uint8 holds them exactly; consecutive items that share a reference (the evaluation order is
image-major) share one stored copy of it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .datasets import RatedPairs

__all__ = ["MAX_BYTES", "KeptItems", "keep"]

MAX_BYTES = 2 << 30  # above this the items are made again at each validation instead


def keep(dataset: RatedPairs, *, num_workers: int = 0, max_bytes: int = MAX_BYTES) -> Dataset:
    """:class:`KeptItems` of ``dataset`` when its distorted images fit ``max_bytes`` as uint8 (estimated from the
    first item: N × its size), else ``dataset`` itself (made again at each use, memory bounded)."""
    if len(dataset) * torch.as_tensor(dataset[0]["dist"]).numel() > max_bytes:
        return dataset
    return KeptItems(dataset, num_workers=num_workers)


class KeptItems(Dataset):
    """The items of ``dataset`` (``{"ref", "dist": float in [0, 1], multiples of 1/255; "score"; "dis_type"}``),
    made once with ``num_workers`` DataLoader workers and returned from memory afterwards, equal bit for bit."""

    def __init__(self, dataset: Dataset, *, num_workers: int = 0) -> None:
        self._refs: list[torch.Tensor] = []
        self._items: list[tuple[int, torch.Tensor, torch.Tensor, str]] = []
        loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers)
        for item in loader:
            ref, dist = (_to_uint8(item[k], k) for k in ("ref", "dist"))
            if not self._refs or not torch.equal(self._refs[-1], ref):
                self._refs.append(ref)
            self._items.append((len(self._refs) - 1, dist, item["score"], item["dis_type"]))
        self.description = repr(dataset)
        self.score_range = getattr(dataset, "score_range", None)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref_index, dist, score, dis_type = self._items[index]
        return {"ref": self._refs[ref_index].float() / 255, "dist": dist.float() / 255, "score": score,
                "dis_type": dis_type}

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored images."""
        return sum(t.numel() for t in self._refs) + sum(d.numel() for _, d, _, _ in self._items)

    def __repr__(self) -> str:
        return f"{self.description}, kept in memory ({self.nbytes / 2**20:.0f} MiB)"


def _to_uint8(image: torch.Tensor, name: str) -> torch.Tensor:
    q = (image * 255).round()
    if not torch.equal(q / 255, image):
        raise ValueError(f"'{name}' is not 8-bit (multiples of 1/255): it cannot be kept as uint8 exactly")
    return q.to(torch.uint8)
