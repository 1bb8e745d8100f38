"""``python -m gsn_metric export-onnx OUT.onnx``: the folded network as an ONNX model, for ONNX Runtime.

The graph is :class:`~gsn_metric.model.GSN`'s ``forward`` on pairs of patches: inputs ``ref`` and ``dist``,
float32 B×3×S×S in [0, 1] (S = the weights' patch size, 192 for the released ones; B dynamic), output
``score``, B float32 scores (a pair's score is the mean over its patches, as in :class:`GSNScore`; cutting the
patches is :func:`gsn_metric.patches.extract_patches`). ``--int8`` also quantises it with ONNX Runtime
(static, QDQ, per-channel weights), calibrated on the same generated pairs as ``precision="int8"``
(``quantize.py``). Needs the ``onnx`` extra: ``pip install "gsn-metric[onnx]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from .model import GSN
from .quantize import default_float_modules
from .weights import load_model

OPSET = 18  # Resize with antialias (the fusion's downscaling) needs opset 18


def _needs(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise RuntimeError(f"exporting to ONNX needs {module}: pip install \"gsn-metric[onnx]\"") from None


def export_onnx(path: str | os.PathLike, weights: str | os.PathLike | None = None, *, int8: bool = False) -> Path:
    """Write the folded network of ``weights`` (default: the released default) to ``path``; returns it.

    ``int8``: quantise with ONNX Runtime (static QDQ, per-channel int8 weights, uint8 activations) after
    calibrating on :func:`gsn_metric.quantize.calibration_pairs`."""
    _needs("onnx")
    _needs("onnxscript")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"{path}: name the ONNX file *.onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    with open(path, "ab"):  # writable before the export's minutes, not after
        pass
    try:
        model, info = load_model(weights)
        net: GSN = model.fold().eval()
        s = info.patch_size
        example = (torch.rand(2, 3, s, s), torch.rand(2, 3, s, s))
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "fp32.onnx" if int8 else path
            _export(net, example, target)
            if int8:
                _quantize_onnx(target, path, s, default_float_modules(net))
    except BaseException:
        if not existed:  # no empty file left behind to be taken for a model
            path.unlink(missing_ok=True)
        raise
    return path


def _export(net: GSN, example: tuple[torch.Tensor, torch.Tensor], target: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes (e.g. "torchvision is not installed")
        quiet.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(net, example, input_names=["ref", "dist"], output_names=["score"],
                                        dynamic_shapes=({0: batch}, {0: batch}), opset_version=OPSET,
                                        dynamo=True, verbose=False)
        finally:
            quiet.setLevel(level)
    assert program is not None
    program.save(str(target))


def _quantize_onnx(source: Path, out: Path, patch_size: int, float_modules: tuple[str, ...]) -> None:
    """ONNX Runtime static quantisation of ``source`` into ``out``, the branch's ``float_modules`` left in float."""
    _needs("onnxruntime")
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .quantize import calibration_pairs

    ref, dist = calibration_pairs(patch_size)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"ref": r[None].numpy(), "dist": d[None].numpy()} for r, d in zip(ref, dist)])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    prepared = source.with_name("prepared.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    # The layers precision="int8" quantises: the branch's convolutions but those of float_modules, not its
    # attention's nor the fusion's (the initialisers keep the torch parameter names). Percentile (99.999 %)
    # activation ranges moved the example pair's scores about half as far as min-max ones (largest 0.27
    # against 0.53 on the 1-5 scale, with the whole branch quantised).
    graph = onnx.load(str(prepared)).graph
    kept = tuple(f"branch.{m}." for m in float_modules)
    branch = [n.name for n in graph.node if n.op_type == "Conv" and n.input[1].startswith("branch.")
              and not n.input[1].endswith(".conv.weight") and not n.input[1].startswith(kept)]
    with contextlib.redirect_stdout(sys.stderr):  # its calibrator prints its settings
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=branch,
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"ActivationSymmetric": False, "CalibMovingAverage": False})


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gsn_metric export-onnx OUT.onnx [--weights W] [--int8]``; 0 on success."""
    ap = argparse.ArgumentParser(prog="python -m gsn_metric export-onnx", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the ONNX file to write (*.onnx)")
    ap.add_argument("--weights", help="weight file (.safetensors) or released name; default: the released default")
    ap.add_argument("--int8", action="store_true", help="quantise with ONNX Runtime (static, calibrated)")
    args = ap.parse_args(argv)
    try:
        out = export_onnx(args.out, args.weights, int8=args.int8)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"gsn_metric export-onnx: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out} (inputs ref, dist: B×3×S×S float32 in [0, 1]; output score: B)")
    return 0
