import numpy as np
import pytest
import torch
from PIL import Image

import gsn_metric
from gsn_metric import GSNScore
from gsn_metric.patches import extract_patches


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(5)
    ref = torch.rand(3, 3, 50, 60, generator=g)
    return ref, (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)


def test_score_is_the_mean_over_the_five_patches(tiny_weights, tiny_model, pair):
    ref, dist = pair
    scores = gsn_metric.GSNScore(tiny_weights, device="cpu")(ref, dist)
    r, d = extract_patches(ref, "five", 32), extract_patches(dist, "five", 32)
    with torch.no_grad():
        expected = tiny_model(r.flatten(0, 1), d.flatten(0, 1)).view(3, 5).mean(1)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)


def test_batch_size_folding_and_input_kinds_do_not_change_scores(tiny_weights, pair, tmp_path):
    ref, dist = pair
    base = gsn_metric.GSNScore(tiny_weights, device="cpu", batch_size=64)(ref, dist)
    for kwargs in ({"batch_size": 1}, {"batch_size": 7}, {"fold": False}):
        torch.testing.assert_close(gsn_metric.GSNScore(tiny_weights, device="cpu", **kwargs)(ref, dist), base,
                                   rtol=1e-4, atol=1e-5)
    metric = gsn_metric.GSNScore(tiny_weights, device="cpu")
    # 3×H×W → one score; (-1, 1) input range; the functional form
    torch.testing.assert_close(metric(ref[0], dist[0]), base[:1])
    minus_one = gsn_metric.GSNScore(tiny_weights, device="cpu", input_range=(-1, 1))
    torch.testing.assert_close(minus_one(ref * 2 - 1, dist * 2 - 1), base, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gsn_metric.gsn(ref, dist, weights=tiny_weights, device="cpu"), base)
    assert gsn_metric.gsn(ref, dist, weights=tiny_weights, device="cpu", reduction="mean").shape == ()
    # files, PIL and numpy: the same pixels (8-bit) give the same score
    ref8, dist8 = [(x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for x in (ref, dist)]
    Image.fromarray(ref8).save(tmp_path / "r.png")
    Image.fromarray(dist8).save(tmp_path / "d.png")
    from_files = metric(tmp_path / "r.png", tmp_path / "d.png")
    torch.testing.assert_close(metric(Image.fromarray(ref8), dist8), from_files)
    torch.testing.assert_close(from_files, base[:1], rtol=0.05, atol=0.05)


def test_iter_scores_batches_pairs_of_different_sizes(tiny_weights, pair):
    ref, dist = pair
    metric = gsn_metric.GSNScore(tiny_weights, device="cpu", batch_size=8)
    small_ref, small_dist = torch.rand(3, 20, 40), torch.rand(3, 20, 40)
    pairs = [(ref[0], dist[0]), (small_ref, small_dist), (ref[2], dist[2])]
    got = list(metric.iter_scores(pairs))
    expected = [metric(r, d).item() for r, d in pairs]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["grid", "full"])
def test_other_patch_modes(tiny_weights, pair, mode):
    ref, dist = pair
    metric = gsn_metric.GSNScore(tiny_weights, device="cpu", patches=mode)
    scores = metric(ref, dist)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    assert list(metric.iter_scores([(ref[0], dist[0])])) == pytest.approx(scores[:1].tolist(), rel=1e-4, abs=1e-5)


def test_images_smaller_than_a_patch_are_scored(tiny_weights):
    metric = gsn_metric.GSNScore(tiny_weights, device="cpu")
    assert metric.info.patch_size == 32
    assert torch.isfinite(metric(torch.rand(2, 3, 10, 64), torch.rand(2, 3, 10, 64))).all()


def test_reductions_and_bad_arguments(tiny_weights, pair):
    ref, dist = pair
    scores = gsn_metric.GSNScore(tiny_weights, device="cpu")(ref, dist)
    torch.testing.assert_close(gsn_metric.GSNScore(tiny_weights, device="cpu", reduction="sum")(ref, dist),
                               scores.sum())
    with pytest.raises(ValueError, match="reduction must be"):
        gsn_metric.GSNScore(tiny_weights, device="cpu", reduction="max")
    with pytest.raises(ValueError, match="patches must be one of"):
        gsn_metric.GSNScore(tiny_weights, device="cpu", patches="seven")
    with pytest.raises(ValueError, match="batch_size"):
        gsn_metric.GSNScore(tiny_weights, device="cpu", batch_size=0)


def test_bad_pairs_get_clear_errors(tiny_weights):
    metric = gsn_metric.GSNScore(tiny_weights, device="cpu")
    with pytest.raises(ValueError, match="different sizes"):
        metric(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 60))
    with pytest.raises(ValueError, match="distorted.*NaN"):
        metric(torch.rand(1, 3, 64, 64), torch.full((1, 3, 64, 64), float("nan")))
    with pytest.raises(ValueError, match="reference"):
        metric(torch.rand(1, 3, 64, 64) * 3, torch.rand(1, 3, 64, 64))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_cuda_asked_for_without_a_gpu(tiny_weights):
    with pytest.raises(RuntimeError, match="sees no CUDA GPU.*device='cpu'"):
        gsn_metric.GSNScore(tiny_weights, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_scores_match_cpu(tiny_weights, pair):
    ref, dist = pair
    assert gsn_metric.metric._available_memory(torch.device("cuda")) > 0  # a bare "cuda": the current GPU
    cpu = gsn_metric.GSNScore(tiny_weights, device="cpu")(ref, dist)
    gpu = gsn_metric.GSNScore(tiny_weights, device="cuda")(ref.cuda(), dist.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)
    metric = gsn_metric.GSNScore(tiny_weights, device="cpu").to("cuda")
    torch.testing.assert_close(metric(ref, dist).cpu(), cpu, rtol=1e-3, atol=1e-3)


def test_iter_scores_leaves_autograd_alone_between_scores(tiny_weights, pair):
    ref, dist = pair
    metric = gsn_metric.GSNScore(tiny_weights, device="cpu")
    for _ in metric.iter_scores([(ref[0], dist[0]), (ref[1], dist[1])]):
        # the caller's loop body: inference mode must not leak out of the generator
        assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
        x = torch.ones(2, requires_grad=True)
        (x * 2).sum().backward()


@pytest.mark.parametrize("kwargs, match", [
    ({"patches": "grid", "stride": 0}, "stride must be an integer from 1 to the patch size 32"),
    ({"patches": "grid", "stride": -5}, "stride must be"),
    ({"patches": "grid", "stride": 33}, "leave pixels unscored"),
    ({"patches": "grid", "stride": 2.5}, "stride must be"),
    ({"patches": "five", "stride": 8}, "stride only applies to patches='grid'"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
])
def test_bad_stride_and_batch_size_are_refused_up_front(tiny_weights, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gsn_metric.GSNScore(tiny_weights, device="cpu", **kwargs)


def test_grid_stride_is_used(tiny_weights, pair):
    ref, dist = pair
    dense = gsn_metric.GSNScore(tiny_weights, device="cpu", patches="grid", stride=np.int64(4))(ref, dist)
    assert not torch.allclose(dense, gsn_metric.GSNScore(tiny_weights, device="cpu", patches="grid")(ref, dist))


def test_bad_device_string_says_what_to_use(tiny_weights):
    with pytest.raises(ValueError, match="device='gpu0' is not a torch device.*'cpu', 'cuda'"):
        gsn_metric.GSNScore(tiny_weights, device="gpu0")


def test_functional_cache_follows_the_weight_file(tmp_path, tiny_weights, pair, monkeypatch):
    from gsn_metric.model import GSN
    from gsn_metric.weights import save_weights

    from .conftest import TINY

    ref, dist = pair
    before = gsn_metric.gsn(ref, dist, weights=tiny_weights, device="cpu")
    torch.manual_seed(7)
    other = tmp_path / "other"
    other.mkdir()
    for path in (tiny_weights, other / "tiny.safetensors"):  # re-exported in place, and a namesake elsewhere
        save_weights(GSN(TINY).eval(), path, training_data="t", score_name="t", score_range=(1, 5), patch_size=32)
    fresh = gsn_metric.GSNScore(tiny_weights, device="cpu")(ref, dist)
    assert not torch.allclose(fresh, before)
    torch.testing.assert_close(gsn_metric.gsn(ref, dist, weights=tiny_weights, device="cpu"), fresh)
    monkeypatch.chdir(other)
    torch.testing.assert_close(gsn_metric.gsn(ref, dist, weights="tiny.safetensors", device="cpu"),
                               gsn_metric.GSNScore(other / "tiny.safetensors", device="cpu")(ref, dist))


def test_scores_are_differentiable_and_say_their_direction(tiny_weights, pair):
    """pyiqa-style: the metric itself backpropagates to its inputs and declares lower_better = False."""
    ref, dist = pair
    metric = gsn_metric.GSNScore(tiny_weights, device="cpu", reduction="sum")
    assert metric.lower_better is False and not any(p.requires_grad for p in metric.parameters())
    dist = dist.clone().requires_grad_(True)
    metric(ref, dist).backward()
    assert dist.grad is not None and torch.isfinite(dist.grad).all() and dist.grad.abs().sum() > 0


def test_reference_reuse_equals_pairwise(tiny_weights):
    torch.manual_seed(0)
    ref = torch.rand(1, 3, 40, 50)
    dists = (ref + 0.1 * torch.randn(7, 3, 40, 50)).clamp(0, 1)
    # grid with batch_size 4: six tiles per image, cut in slices (the reference's features sliced alike)
    for mode, batch in (("five", 8), ("grid", 8), ("grid", 4), ("full", 8)):
        metric = GSNScore(tiny_weights, device="cpu", patches=mode, batch_size=batch)
        pairwise = torch.cat([metric(ref, d[None]) for d in dists])
        encoding = metric.encode_reference(ref[0])
        torch.testing.assert_close(encoding(dists), pairwise, rtol=1e-5, atol=1e-6)
        assert encoding.nbytes == sum(t.numel() * 4 for t in encoding.levels) > 0
        # automatic reuse: a batch whose consecutive references are equal, and iter_scores with one object
        mixed_ref = torch.cat([ref.expand(3, -1, -1, -1), torch.rand(2, 3, 40, 50), ref.expand(2, -1, -1, -1)])
        mixed_dist = torch.cat([dists[:3], dists[3:5], dists[5:]])
        expected = torch.cat([metric(r[None], d[None]) for r, d in zip(mixed_ref, mixed_dist)])
        torch.testing.assert_close(metric(mixed_ref, mixed_dist), expected, rtol=1e-5, atol=1e-6)
        streamed = list(metric.iter_scores([(ref[0], d) for d in dists]))
        torch.testing.assert_close(torch.tensor(streamed), pairwise, rtol=1e-5, atol=1e-6)


def test_reference_reuse_keeps_gradients(tiny_weights):
    metric = GSNScore(tiny_weights, device="cpu")
    ref = torch.rand(1, 3, 32, 32)
    dist = torch.rand(3, 3, 32, 32, requires_grad=True)
    metric.encode_reference(ref)(dist).sum().backward()
    expected = torch.autograd.grad(metric(ref.expand(3, -1, -1, -1), dist).sum(), dist)[0]
    torch.testing.assert_close(dist.grad, expected, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="one reference image"):
        metric.encode_reference(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError):
        metric.encode_reference(ref)(torch.rand(1, 3, 32, 40))


def test_grid_tiles_are_cut_batch_size_at_a_time(tiny_weights, monkeypatch):
    torch.manual_seed(0)
    ref, dist = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    wide = GSNScore(tiny_weights, device="cpu", patches="grid", stride=8, batch_size=64)
    expected = wide(ref, dist)  # 25 tiles per image, all at once
    small = GSNScore(tiny_weights, device="cpu", patches="grid", stride=8, batch_size=7)
    cut = []
    real = extract_patches

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        cut.append(out.shape[0] * out.shape[1])
        return out

    monkeypatch.setattr(gsn_metric.metric, "extract_patches", spy)
    torch.testing.assert_close(small(ref, dist), expected, rtol=1e-5, atol=1e-6)
    assert max(cut) <= 7 and sum(cut) == 2 * 2 * 25
    torch.testing.assert_close(small.quality_map(ref, dist).sum((1, 2, 3)), expected, rtol=1e-4, atol=1e-5)


def test_full_mode_refuses_what_cannot_fit(tiny_weights, monkeypatch):
    metric = GSNScore(tiny_weights, device="cpu", patches="full", batch_size=8)
    ref = torch.rand(4, 3, 64, 80)
    with torch.no_grad():  # the inference estimate (under autograd every layer is kept: a larger one)
        expected = metric(ref, ref.flip(-1))
        # Memory for two pairs at a time: the same scores, fewer pairs per forward pass.
        need = 2 * max(a + b for a, b in zip([3, 4, 6, 8], [4, 6, 8, 6])) * 64 * 80 * 4
        monkeypatch.setattr(gsn_metric.metric, "_available_memory", lambda device: 2 * need + 1)
        assert metric._full_pairs_that_fit(64, 80, 8, False) == 2
        torch.testing.assert_close(metric(ref, ref.flip(-1)), expected)
        # Not even one: a clear refusal naming the estimate and the way out, before any allocation.
        monkeypatch.setattr(gsn_metric.metric, "_available_memory", lambda device: need // 2)
        with pytest.raises(RuntimeError, match=r"patches='full' on a 80×64 pair needs about .* use patches='grid'"):
            metric(ref, ref)
