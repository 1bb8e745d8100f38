import pytest
import torch

from gsn_metric.model import GSN, CDCConv2d, GSNConfig


def test_paper_configuration():
    cfg = GSNConfig()
    assert cfg.theta == 0.7 and cfg.stem == 64
    assert cfg.blocks == ((128, 204, 128), (153, 128, 179, 128), (128, 153, 128))
    assert cfg.attention_kernels == (7, 5, 3)
    net = GSN(cfg)
    assert net.fc.in_features == 36 * 36 == 1296
    assert [m.conv.kernel_size for m in net.branch.modules() if hasattr(m, "conv")] == [(7, 7), (5, 5), (3, 3)]


def test_cdc_matches_the_definition():
    """y(p0) = θ·Σ w(pn)·(x(p0+pn) − x(p0)) + (1−θ)·Σ w(pn)·x(p0+pn), evaluated literally at one pixel."""
    torch.manual_seed(0)
    cdc = CDCConv2d(2, 3, theta=0.7).double()
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    y = cdc(x)
    w, centre, window = cdc.weight, x[0, :, 2, 2], x[0, :, 1:4, 1:4]
    for o in range(3):
        diff = (w[o] * (window - centre[:, None, None])).sum()
        plain = (w[o] * window).sum()
        assert torch.isclose(y[0, o, 2, 2], 0.7 * diff + 0.3 * plain, atol=1e-12)


def test_folded_net_gives_the_same_scores(tiny_model):
    net = tiny_model.double()
    folded = net.fold()
    assert not any(isinstance(m, (CDCConv2d, torch.nn.BatchNorm2d)) for m in folded.modules())
    g = torch.Generator().manual_seed(2)
    ref, dist = torch.rand(4, 3, 40, 36, generator=g, dtype=torch.float64), torch.rand(4, 3, 40, 36, generator=g,
                                                                                         dtype=torch.float64)
    a, b = net(ref, dist), folded(ref, dist)
    assert a.shape == (4,)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # the original must be untouched by folding
    assert any(isinstance(m, CDCConv2d) for m in net.modules())


def test_any_input_size_reaches_the_fusion_size(tiny_model):
    for h, w in [(8, 8), (32, 48), (100, 20)]:
        x = torch.rand(2, 3, h, w)
        assert tiny_model(x, x).shape == (2,)


def test_pair_shapes_must_match(tiny_model):
    with pytest.raises(ValueError, match="equal shape"):
        tiny_model(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 8))


def test_config_round_trips_through_json():
    cfg = GSNConfig(stem=4, blocks=((6,), (5, 5), (6,)), fusion_size=6)
    assert GSNConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown GSN architecture keys"):
        GSNConfig.from_json('{"stem": 4, "depth": 3}')
