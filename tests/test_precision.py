"""precision= for GSNScore / gsn() / GSNLoss / the CLI, int8 quantisation, ONNX export, channel padding.

Tiny networks made here (conftest); CPU, seconds. The GPU-only TF32 test skips without CUDA."""

from __future__ import annotations

import warnings

import pytest
import torch

from gsn_metric import GSNLoss, GSNScore, gsn
from gsn_metric import precision as P
from gsn_metric.cli import main as cli_main
from gsn_metric.quantize import calibration_pairs


def pairs(n: int = 4, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ref = torch.rand(n, 3, size, size, generator=g)
    dist = (ref + torch.linspace(0.02, 0.3, n).view(-1, 1, 1, 1) * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    return ref, dist


needs_bf16 = pytest.mark.skipif(not P.cpu_has_fast_bf16(), reason="this CPU has no native bfloat16")


@needs_bf16
def test_bf16_is_close_to_fp32_and_keeps_the_score_in_float32(tiny_weights):
    ref, dist = pairs()
    fp32 = GSNScore(tiny_weights, device="cpu")(ref, dist)
    bf16 = GSNScore(tiny_weights, device="cpu", precision="bf16")(ref, dist)
    assert bf16.dtype == torch.float32
    assert not torch.equal(fp32, bf16), "bf16 must really run in bfloat16"
    assert torch.allclose(fp32, bf16, atol=0.05)
    # the FC head is float32: a bf16 score would sit on a grid of 1/64 on this 1-5 scale
    assert ((bf16 * 64) - (bf16 * 64).round()).abs().max() > 1e-3


def test_bf16_refused_on_a_cpu_without_native_bfloat16(monkeypatch, tiny_weights):
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(ValueError, match="native bfloat16.*slower than float32"):
        GSNScore(tiny_weights, device="cpu", precision="bf16")


def test_bf16_refused_on_a_gpu_without_native_bfloat16_and_int8_without_x86_kernels(monkeypatch):
    # no GPU needed: the check reads the device's compute capability, which is faked here (a Turing card)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(ValueError, match="Ampere.*Tesla T4 would emulate it"):
        P.check_precision("bf16", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    P.check_precision("bf16", torch.device("cuda"))  # a Hopper card: accepted
    assert P.has_x86_int8()  # this project's CPU build has them; an ARM build would not
    monkeypatch.setattr(P, "has_x86_int8", lambda: False)
    with pytest.raises(ValueError, match="x86 quantised kernels"):
        P.check_precision("int8", torch.device("cpu"))


def test_precision_is_checked_again_where_the_module_runs(monkeypatch, tiny_weights):
    # built where bf16 is fast, then run where it is not (as after .to(device)): refused, not slowly emulated
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: True)
    metric = GSNScore(tiny_weights, device="cpu", precision="bf16")
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(ValueError, match="native bfloat16"):
        metric(*pairs(1))


def test_precision_names_and_devices_are_checked(tiny_weights):
    with pytest.raises(ValueError, match="precision must be one of"):
        GSNScore(tiny_weights, device="cpu", precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CPU only"):
        P.check_precision("int8", torch.device("cuda"))
    with pytest.raises(ValueError, match="no gradients"):
        GSNLoss(tiny_weights, device="cpu", precision="int8")
    with pytest.raises(ValueError, match="folded"):
        GSNScore(tiny_weights, device="cpu", precision="int8", fold=False)


@needs_bf16
def test_amp_is_a_deprecated_alias_of_bf16(tiny_weights):
    ref, dist = pairs(2)
    with pytest.warns(DeprecationWarning, match="precision='bf16'"):
        old = gsn(ref, dist, weights=tiny_weights, device="cpu", amp=True)
    assert torch.equal(old, gsn(ref, dist, weights=tiny_weights, device="cpu", precision="bf16"))
    with pytest.raises(ValueError, match="disagree"):
        GSNScore(tiny_weights, device="cpu", precision="int8", amp=True)


def test_int8_scores_follow_fp32_and_refuse_gradients(tiny_weights):
    ref, dist = pairs(6)
    fp32 = GSNScore(tiny_weights, device="cpu")
    with pytest.warns(UserWarning, match="experimental"):  # it changes rankings: said when it is built
        int8 = GSNScore(tiny_weights, device="cpu", precision="int8")
    a, b = fp32(ref, dist), int8(ref, dist)
    assert not torch.equal(a, b), "int8 must really be quantised"
    # The quantised branch's features follow float32's at every level. Loose bound: 4-8 random channels make
    # coarse int8 steps (18 % here); a broken quantisation is off by ~100 %. The real network's deviation is
    # measured in benchmarks/variants.py.
    with torch.no_grad():
        for f, q in zip(fp32.net.branch(ref[:, :, :32, :32]), int8.net.branch(ref[:, :, :32, :32])):
            assert float((f - q).norm() / f.norm()) < 0.3
    assert (a - b).abs().max() < 0.05
    # reference reuse and maps go through the same quantised branch
    assert torch.allclose(int8.encode_reference(ref[0])(dist[:1]), b[:1], atol=1e-4)
    assert torch.allclose(int8.quality_map(ref, dist).sum((1, 2, 3)), b, atol=1e-3)
    with pytest.raises(ValueError, match="requires grad.*int8"):
        int8(ref, dist.clone().requires_grad_())


def test_int8_quantises_the_stem_and_first_block_by_default_and_checks_module_names(tiny_model):
    from gsn_metric.quantize import quantize_int8

    net = tiny_model.fold()

    def quantised_convs(q) -> dict[str, bool]:
        """The branch's conv(+ReLU) units, stem.0 and blocks.i.j.0 (not the attention's): int8 or not."""
        return {n: ".quantized." in type(m).__module__ for n, m in q.branch.named_modules()
                if n == "stem.0" or (n.startswith("blocks.") and n.count(".") == 3 and n.endswith(".0"))}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default, everything = quantize_int8(net, 32), quantize_int8(net, 32, float_modules=())
    convs = quantised_convs(default)
    assert convs and all(v == n.startswith(("stem", "blocks.0.")) for n, v in convs.items()), convs
    assert all(quantised_convs(everything).values())
    with pytest.raises(ValueError, match="no module 'blocks.9'"):
        quantize_int8(net, 32, float_modules=("blocks.9",))


def test_calibration_pairs_are_fixed_images_in_range():
    r1, d1 = calibration_pairs(32, 5)
    r2, d2 = calibration_pairs(32, 5)
    assert torch.equal(r1, r2) and torch.equal(d1, d2)
    assert r1.shape == d1.shape == (5, 3, 32, 32)
    assert 0 <= float(torch.cat([r1, d1]).min()) and float(torch.cat([r1, d1]).max()) <= 1
    assert float((r1 - d1).abs().mean()) > 0.005  # every pair is distorted


def test_cli_precision_is_recorded_and_a_resume_with_another_is_refused(tmp_path, tiny_weights, capsys):
    from PIL import Image

    ref, dist = pairs(1, 48)
    for name, img in (("r.png", ref[0]), ("d.png", dist[0])):
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(tmp_path / name)
    (tmp_path / "pairs.csv").write_text("ref,dist\nr.png,d.png\n")
    out = tmp_path / "scores.csv"
    base = ["--pairs", str(tmp_path / "pairs.csv"), "--weights", tiny_weights, "--device", "cpu", "--no-progress",
            "--out", str(out)]
    assert cli_main(base) == 0
    assert cli_main([*base, "--resume", "--precision", "int8"]) == 1
    assert "precision" in capsys.readouterr().err


def test_cli_suggests_bf16_once_on_a_long_cpu_run(monkeypatch, tmp_path, tiny_weights, capsys):
    from PIL import Image

    from gsn_metric import cli

    ref, dist = pairs(1, 48)
    for name, img in (("r.png", ref[0]), ("d.png", dist[0])):
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(tmp_path / name)
    (tmp_path / "pairs.csv").write_text("ref,dist\nr.png,d.png\nr.png,d.png\n")
    base = ["--pairs", str(tmp_path / "pairs.csv"), "--weights", tiny_weights, "--device", "cpu", "--no-progress"]
    monkeypatch.setattr(cli, "_LONG_CPU_RUN", 2)
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: True)
    assert cli_main(base) == 0
    assert capsys.readouterr().err.count("--precision") == 1
    assert cli_main([*base, "--precision", "int8"]) == 0
    assert "--precision" not in capsys.readouterr().err
    monkeypatch.setattr(cli, "_LONG_CPU_RUN", 3)
    assert cli_main(base) == 0
    assert "--precision" not in capsys.readouterr().err
    monkeypatch.setattr(cli, "_LONG_CPU_RUN", 2)
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: False)  # int8 is never suggested
    assert cli_main(base) == 0
    assert "--precision" not in capsys.readouterr().err


def test_padded_channels_give_the_same_scores(tiny_model):
    net = tiny_model.fold()
    padded = net.pad_channels(4)
    for before, after in zip(net.branch.blocks, padded.branch.blocks):
        old = [layer[0].out_channels for layer in before if isinstance(layer, torch.nn.Sequential)]
        new = [layer[0].out_channels for layer in after if isinstance(layer, torch.nn.Sequential)]
        assert all(w % 4 == 0 for w in new[:-1]) and new[-1] == old[-1]  # block outputs stay as they are
    assert [6, 8, 6] == [layer[0].out_channels for layer in net.branch.blocks[0][:3]]  # TINY: 6 is padded to 8
    wide_input = net.pad_channels(8, inputs=8)  # the image's 3 channels and 5 zero ones into the stem
    assert wide_input.branch.stem[0].in_channels == 8 and net.branch.stem[0].in_channels == 3
    ref, dist = pairs(3, 32)
    with torch.no_grad():
        expected = net(ref, dist)
        assert torch.allclose(padded(ref, dist), expected, atol=1e-5, rtol=0)
        assert torch.allclose(wide_input(ref, dist), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="fold"):
        tiny_model.pad_channels(4)
    with pytest.raises(ValueError, match="already takes 8"):
        wide_input.pad_channels(8, inputs=4)


def test_padding_is_exact_on_the_default_weights():
    # the widths the tiny network has are not the paper's 204/153/179: check the shipped network itself
    from gsn_metric.weights import load_model

    net = load_model(None)[0].fold().eval()
    ref, dist = pairs(1, 192)
    with torch.no_grad():
        expected = net(ref, dist)
        padded = net.pad_channels(8, inputs=8)
        assert [layer[0].out_channels for layer in padded.branch.blocks[0][:3]] == [128, 208, 128]
        assert torch.allclose(padded(ref, dist), expected, atol=1e-5, rtol=0)


def test_onnx_export_matches_torch(tmp_path, tiny_weights):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from gsn_metric.onnx_export import export_onnx
    from gsn_metric.weights import load_model

    path = export_onnx(tmp_path / "tiny.onnx", tiny_weights)
    net = load_model(tiny_weights)[0].fold().eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):  # the batch is dynamic
        ref, dist = pairs(n, 32)
        with torch.no_grad():
            expected = net(ref, dist).numpy()
        got = session.run(["score"], {"ref": ref.numpy(), "dist": dist.numpy()})[0]
        assert got.shape == (n,)
        assert abs(got - expected).max() < 1e-4
    assert cli_main(["export-onnx", str(tmp_path / "bad.txt"), "--weights", tiny_weights]) == 1


def test_onnx_int8_quantises_the_layers_torch_int8_does(tmp_path, tiny_weights):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnx

    from gsn_metric.onnx_export import export_onnx

    path = export_onnx(tmp_path / "tiny8.onnx", tiny_weights, int8=True)
    quantised = {i.name.removesuffix(".weight_quantized") for i in onnx.load(str(path)).graph.initializer
                 if i.name.endswith(".weight_quantized")}
    assert quantised and all(n.startswith(("branch.stem.", "branch.blocks.0.")) for n in quantised), quantised


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp32_on_cuda_is_immune_to_tf32(tiny_weights):
    ref, dist = pairs(8, 64)
    metric = GSNScore(tiny_weights, device="cuda")
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        scores = {}
        for tf32 in (False, True):
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
            scores[tf32] = metric(ref.cuda(), dist.cuda()).cpu()
        assert torch.backends.cudnn.allow_tf32  # the user's setting is left as it was
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
    assert torch.equal(scores[False], scores[True])
    cpu = GSNScore(tiny_weights, device="cpu")(ref, dist)
    assert torch.allclose(scores[True], cpu, atol=1e-5)


def test_no_warnings_from_fp32(tiny_weights):
    ref, dist = pairs(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GSNScore(tiny_weights, device="cpu")(ref, dist)
