import copy
import io
import warnings

import pytest
import torch

from gsn_metric.train.optim import Lookahead, build_ranger


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _batches(n):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)) for _ in range(n)]


def _train(model, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def test_minimises_a_quadratic_without_warnings():
    target = torch.tensor([1.0, -2.0, 3.0])
    p = torch.nn.Parameter(torch.zeros(3))
    opt = build_ranger([p], lr=0.1, weight_decay=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(1000):
            opt.zero_grad()
            ((p - target) ** 2).sum().backward()
            opt.step()
    assert torch.allclose(p.detach(), target, atol=1e-2)


def test_defaults_are_the_papers():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = build_ranger([p])
    group = opt.param_groups[0]
    assert isinstance(opt.optimizer, torch.optim.RAdam)
    assert group["lr"] == 1e-3 and group["weight_decay"] == 1e-5 and group["decoupled_weight_decay"]
    assert (opt.k, opt.alpha) == (6, 0.5)


def test_slow_weights_sync_every_k_steps():
    p = torch.nn.Parameter(torch.zeros(1))
    inner = torch.optim.SGD([p], lr=1.0)
    opt = Lookahead(inner, k=3, alpha=0.5)
    values = []
    for _ in range(6):
        opt.zero_grad()
        p.grad = torch.ones(1) * -1.0  # each fast step adds +1
        opt.step()
        values.append(p.item())
    # steps 1, 2 move the fast weights; step 3 goes to 3 then back to 0 + 0.5 * (3 - 0) = 1.5
    assert values == [1.0, 2.0, 1.5, 2.5, 3.5, 1.5 + 0.5 * (4.5 - 1.5)]
    assert opt.state[p]["slow"].item() == values[-1]


def test_lr_scheduler_and_param_groups_reach_the_inner_optimiser():
    model = _model()
    opt = build_ranger(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _train(model, opt, _batches(1))
    sched.step()
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    extra = torch.nn.Parameter(torch.zeros(2))
    opt.add_param_group({"params": [extra]})
    assert len(opt.optimizer.param_groups) == 2 and opt.param_groups is opt.optimizer.param_groups


def test_resume_is_bit_identical():
    batches = _batches(17)  # k = 6: interrupt between syncs, continue across two more
    straight = _model()
    opt = build_ranger(straight.parameters(), lr=1e-2)
    _train(straight, opt, batches)

    first = _model()
    opt = build_ranger(first.parameters(), lr=1e-2)
    _train(first, opt, batches[:8])
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed = _model(seed=123)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(checkpoint["model"])
    opt = build_ranger(resumed.parameters(), lr=5.0, weight_decay=0.3)  # overwritten by the state
    opt.load_state_dict(checkpoint["optim"])
    assert opt.lookahead_step == 8
    assert opt.param_groups is opt.optimizer.param_groups
    _train(resumed, opt, batches[8:])

    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_state_dict_is_a_copy():
    model = _model()
    opt = build_ranger(model.parameters())
    _train(model, opt, _batches(2))
    saved = copy.deepcopy(opt.state_dict())
    _train(model, opt, _batches(2))
    assert saved["lookahead"]["step"] == 2 and opt.state_dict()["lookahead"]["step"] == 4


def test_rejects_bad_hyper_parameters():
    inner = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError):
        Lookahead(inner, k=0)
    with pytest.raises(ValueError):
        Lookahead(inner, alpha=1.5)
