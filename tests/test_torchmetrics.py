"""gsn_metric.GSNMetric: torchmetrics' protocol, equal to GSNScore, and synced across 2 DDP processes (gloo)."""

from __future__ import annotations

import pytest
import torch

torchmetrics = pytest.importorskip("torchmetrics")

import gsn_metric


def _pairs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(n, 3, 40, 48, generator=g)
    return ref, (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)


def test_equal_to_gsnscore_over_several_updates(tiny_weights):
    ref, dist = _pairs(7)
    expected = gsn_metric.GSNScore(tiny_weights, device="cpu")(ref, dist)
    for reduction, want in [("mean", expected.mean()), ("sum", expected.sum()), ("none", expected)]:
        metric = gsn_metric.GSNMetric(tiny_weights, reduction=reduction)
        metric.update(dist[:3], ref[:3])  # (preds, target): the judged images first, as torchmetrics' metrics
        metric.update(dist[3:], ref[3:])
        torch.testing.assert_close(metric.compute(), want.float(), rtol=1e-5, atol=1e-6)
        metric.reset()
        metric.update(dist[:2], ref[:2])
        torch.testing.assert_close(metric.compute(), {"mean": expected[:2].mean(), "sum": expected[:2].sum(),
                                                      "none": expected[:2]}[reduction], rtol=1e-5, atol=1e-6)
    assert gsn_metric.GSNMetric.higher_is_better and gsn_metric.GSNMetric.is_differentiable
    assert gsn_metric.GSNMetric.full_state_update is False
    with pytest.raises(ValueError, match="reduction"):
        gsn_metric.GSNMetric(tiny_weights, reduction="max")


def test_precision_is_passed_on_and_checked_where_the_metric_runs(monkeypatch, tiny_weights):
    from gsn_metric import precision as P

    ref, dist = _pairs(2)
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: False)
    metric = gsn_metric.GSNMetric(tiny_weights, precision="bf16")  # built on such a CPU, as if bound for a GPU
    with pytest.raises(ValueError, match="native bfloat16"):
        metric.update(dist, ref)  # but not run on it
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: True)
    metric.update(dist, ref)
    expected = gsn_metric.GSNScore(tiny_weights, device="cpu", precision="bf16")(ref, dist).mean()
    torch.testing.assert_close(metric.compute(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="precision must be one of"):
        gsn_metric.GSNMetric(tiny_weights, precision="fp16")  # type: ignore[arg-type]


def test_in_a_metric_collection_and_differentiable(tiny_weights):
    from torchmetrics.image import PeakSignalNoiseRatio

    ref, dist = _pairs(4)
    collection = torchmetrics.MetricCollection({"gsn": gsn_metric.GSNMetric(tiny_weights),
                                                "psnr": PeakSignalNoiseRatio(data_range=1.0)})
    collection.update(dist, ref)
    out = collection.compute()
    assert set(out) == {"gsn", "psnr"} and torch.isfinite(out["gsn"])
    metric = gsn_metric.GSNMetric(tiny_weights)
    x = dist.clone().requires_grad_(True)
    metric(x, ref).backward()  # forward(): this batch's value, with gradients to the judged images
    assert x.grad is not None and x.grad.abs().sum() > 0


def _ddp_worker(rank: int, init: str, weights: str, reduction: str, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        ref, dist = _pairs(6)
        mine = slice(0, 4) if rank == 0 else slice(4, 6)  # uneven shares, as a last batch gives
        metric = gsn_metric.GSNMetric(weights, reduction=reduction)
        metric.update(dist[mine], ref[mine])
        # plain floats, not a tensor: a tensor travels as a shared-memory handle that dies with this process,
        # which may exit before the parent has read it
        queue.put((rank, metric.compute().tolist()))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_two_process_ddp_sync_equals_one_process(tiny_weights, tmp_path, reduction):
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_ddp_worker, args=(r, init, tiny_weights, reduction, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    ref, dist = _pairs(6)
    single = gsn_metric.GSNMetric(tiny_weights, reduction=reduction)
    single.update(dist, ref)
    for rank in (0, 1):  # every process gets the synced value
        torch.testing.assert_close(torch.tensor(results[rank]), single.compute(), rtol=1e-5, atol=1e-6)
