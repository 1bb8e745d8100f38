"""Ranger (Wright, 2019) = ``torch.optim.RAdam`` inside Lookahead (Zhang et al., NeurIPS 2019), as in the paper.

Why not a package: ``pytorch-ranger`` 0.1.1 (2020) and ``torch-optimizer`` 0.3.0 (2021, which re-exports
the same Ranger) are unmaintained; with torch 2.13 their Ranger still runs but through the deprecated
``addcmul_(scalar, t1, t2)`` overloads (a UserWarning on every run, and an error once torch drops them),
and its RAdam duplicates what ``torch.optim.RAdam`` now does natively. So Lookahead is the only new code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["Lookahead", "build_ranger"]


class Lookahead(Optimizer):
    """Lookahead around any inner optimiser: every k inner steps, ``slow += alpha * (fast - slow)``,
    then ``fast = slow``. The slow weights start at the parameters' values before their first step.

    The wrapper shares the inner optimiser's param-group dicts, so LR schedulers, ``zero_grad`` and
    ``add_param_group`` given this object act on the optimiser that steps. ``state_dict()`` holds the
    inner state, the slow weights and the step counter, so a run resumed from it is bit-identical to an
    uninterrupted one.

    Args:
        optimizer: the inner ("fast") optimiser.
        k: inner steps between synchronisations (Ranger: 6).
        alpha: slow-weight step size in (0, 1] (Ranger: 0.5).
    """

    def __init__(self, optimizer: Optimizer, k: int = 6, alpha: float = 0.5, foreach: bool = False) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.optimizer = optimizer
        self.k, self.alpha, self.foreach = k, alpha, foreach
        self.lookahead_step = 0
        super().__init__(optimizer.param_groups, {})  # routes through add_param_group below
        self.defaults = optimizer.defaults

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # Optimizer.__init__ hands the inner optimiser's own groups back here; a new group goes to the
        # inner optimiser. Either way both objects then see the same list of the same dicts.
        if not any(group is param_group for group in self.optimizer.param_groups):
            self.optimizer.add_param_group(param_group)
        self.param_groups = self.optimizer.param_groups

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One inner step; every k-th also pulls the slow weights towards the fast ones and resets."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad and "slow" not in self.state[p]:
                    self.state[p]["slow"] = p.detach().clone()
        loss = self.optimizer.step(closure)
        self.lookahead_step += 1
        if self.lookahead_step % self.k == 0:
            fast = [p for group in self.param_groups for p in group["params"] if "slow" in self.state[p]]
            slow = [self.state[p]["slow"] for p in fast]
            if self.foreach:  # two multi-tensor kernels instead of two per parameter; lerp rounds differently
                torch._foreach_lerp_(slow, fast, self.alpha)
                torch._foreach_copy_(fast, slow)
            else:
                for p, s in zip(fast, slow):
                    s.add_(p - s, alpha=self.alpha)
                    p.copy_(s)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """``{"optimizer": inner state_dict, "slow": {index: {"slow": tensor}}, "lookahead": {k, alpha, step}}``."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "slow": super().state_dict()["state"],  # indexed like the inner state
            "lookahead": {"k": self.k, "alpha": self.alpha, "step": self.lookahead_step},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict()`` returned; slow weights move to each parameter's device and dtype."""
        self.optimizer.load_state_dict(state_dict["optimizer"])
        # Optimizer.load_state_dict maps indices to our parameters and casts the tensors, but installs
        # fresh group dicts; share the inner ones again afterwards.
        super().load_state_dict({"state": state_dict["slow"],
                                 "param_groups": state_dict["optimizer"]["param_groups"]})
        self.param_groups = self.optimizer.param_groups
        lookahead = state_dict["lookahead"]
        self.k, self.alpha, self.lookahead_step = lookahead["k"], lookahead["alpha"], lookahead["step"]


def build_ranger(params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 weight_decay: float = 1e-5, *, betas: tuple[float, float] = (0.95, 0.999),
                 eps: float = 1e-5, k: int = 6, alpha: float = 0.5, foreach: bool | None = None) -> Lookahead:
    """The paper's optimiser: Ranger with lr 1e-3 and weight decay 1e-5.

    betas, eps, k and alpha are Ranger's defaults. Weight decay is decoupled (``p *= 1 - lr * wd``)
    as in Ranger's code, not added to the gradient. ``foreach``: multi-tensor updates in RAdam and Lookahead
    (``fit --speedups foreach``); None: torch's default for RAdam (foreach on CUDA, per tensor on the CPU),
    per tensor in Lookahead.
    """
    inner = torch.optim.RAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                              decoupled_weight_decay=True, foreach=foreach)
    return Lookahead(inner, k=k, alpha=alpha, foreach=bool(foreach))
