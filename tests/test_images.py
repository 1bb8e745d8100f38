"""Tests for gsn_metric.images: file decoding policy, input conversion and validation."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gsn_metric.images import check_pair, load_image, to_batch


def _rgb(h=4, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png16(path, pixels: np.ndarray, color_type: int):
    """Write a 16-bit PNG by hand (Pillow cannot write 16-bit colour). pixels: H×W×C uint16."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = pixels.shape[:2]
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)  # filter type 0 per row
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------------------------------ files


def test_rgb_png_exact(tmp_path):
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "a.png")
    t = load_image(tmp_path / "a.png")
    assert t.dtype == torch.float32 and t.shape == (3, 4, 5) and t.is_contiguous()
    assert torch.equal(t, torch.from_numpy(a).permute(2, 0, 1).float() / 255)


def test_grayscale_file_replicated(tmp_path):
    g = np.array([[0, 128, 255]], dtype=np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    t = load_image(str(tmp_path / "g.png"))
    assert t.shape == (3, 1, 3)
    for c in range(3):
        assert torch.equal(t[c], torch.tensor([[0.0, 128 / 255, 1.0]]))


def test_gray16_png_exact(tmp_path):
    g = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    t = load_image(tmp_path / "g16.png")
    assert t.shape == (3, 1, 3)
    assert t[0, 0, 2].item() == 1.0
    assert t[0, 0, 1].item() == pytest.approx(0.50000763, abs=1e-8)
    assert torch.equal(t[0], t[2])


@pytest.mark.parametrize("color_type, channels", [(2, 3), (6, 4), (4, 2)])
def test_16bit_colour_png_refused(tmp_path, color_type, channels):
    # Pillow would keep only the high byte of each sample: refuse rather than return a wrong number.
    px = np.full((2, 3, channels), 65535, dtype=np.uint16)
    px[..., 0] = 32768
    _png16(tmp_path / "c16.png", px, color_type)
    with pytest.raises(ValueError, match=r"c16\.png.*16-bit colour.*uint16"):
        load_image(tmp_path / "c16.png")


def test_16bit_colour_as_uint16_array_exact():
    # The documented route for 16-bit colour: a uint16 array.
    a = np.array([[[0, 32768, 65535]]], dtype=np.uint16)
    t = to_batch(a)
    assert t.shape == (1, 3, 1, 1)
    assert t.flatten().tolist() == [0.0, pytest.approx(0.50000763, abs=1e-8), 1.0]


def test_rgba_transparent_refused_opaque_accepted(tmp_path):
    a = np.dstack([_rgb(), np.full((4, 5), 255, np.uint8)])
    Image.fromarray(a, "RGBA").save(tmp_path / "opaque.png")
    t = load_image(tmp_path / "opaque.png")
    assert torch.equal(t, torch.from_numpy(a[..., :3]).permute(2, 0, 1).float() / 255)

    a[0, 0, 3] = 254
    Image.fromarray(a, "RGBA").save(tmp_path / "transparent.png")
    with pytest.raises(ValueError, match=r"transparent\.png.*transparent pixels.*flatten"):
        load_image(tmp_path / "transparent.png")


def test_la_transparent_refused(tmp_path):
    Image.new("LA", (3, 3), (100, 0)).save(tmp_path / "la.png")
    with pytest.raises(ValueError, match="transparent pixels"):
        load_image(tmp_path / "la.png")


def test_palette_png(tmp_path):
    im = Image.new("P", (3, 2))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png")
    t = load_image(tmp_path / "p.png")
    assert t.shape == (3, 2, 3)
    assert t[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert t[:, 0, 1].tolist() == [0.0, 0.0, 1.0]


def test_palette_png_with_transparency_refused(tmp_path):
    im = Image.new("P", (3, 2))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    im.save(tmp_path / "pt.png", transparency=0)
    with pytest.raises(ValueError, match="transparent pixels"):
        load_image(tmp_path / "pt.png")


def test_colour_key_transparency_refused(tmp_path):
    Image.new("RGB", (2, 2), (1, 2, 3)).save(tmp_path / "key.png", transparency=(1, 2, 3))
    with pytest.raises(ValueError, match="transparent pixels"):
        load_image(tmp_path / "key.png")


def test_16bit_ppm_refused(tmp_path):
    (tmp_path / "x.ppm").write_bytes(b"P6 2 2 65535\n" + np.zeros((2, 2, 3), ">u2").tobytes())
    with pytest.raises(ValueError, match="16-bit colour"):
        load_image(tmp_path / "x.ppm")


def test_cmyk_converted(tmp_path):
    Image.new("CMYK", (2, 2), (0, 0, 0, 0)).save(tmp_path / "c.jpg", quality=100)
    t = load_image(tmp_path / "c.jpg")
    assert t.shape == (3, 2, 2) and t.min() > 0.95  # no ink = white


def test_exif_orientation_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    Image.new("RGB", (8, 2), (200, 10, 10)).save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (3, 8, 2)
    # An open PIL image gives the same result as its path.
    with Image.open(tmp_path / "r.jpg") as im:
        assert to_batch(im).shape == (1, 3, 8, 2)


def test_float_mode_file(tmp_path):
    Image.fromarray(np.array([[0.0, 0.25]], np.float32), "F").save(tmp_path / "ok.tif")
    assert load_image(tmp_path / "ok.tif")[:, 0, 1].tolist() == [0.25] * 3
    Image.fromarray(np.array([[0.0, 3.0]], np.float32), "F").save(tmp_path / "hdr.tif")
    with pytest.raises(ValueError, match=r"hdr\.tif.*float image.*\[0, 1\]"):
        load_image(tmp_path / "hdr.tif")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.png.*no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match=r"reference file .*nope\.png"):
        to_batch(str(tmp_path / "nope.png"), name="reference")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(IsADirectoryError, match=r"distorted file .*folder\.png': is a folder, not an image file"):
        to_batch(str(tmp_path / "folder.png"), name="distorted")


def test_garbage_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image" * 10)
    with pytest.raises(ValueError, match=r"junk\.png.*not an image format"):
        load_image(tmp_path / "junk.png")


def test_truncated_png(tmp_path):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.png.*truncated or corrupt"):
        load_image(tmp_path / "cut.png")


# ----------------------------------------------------------------------------------------------- to_batch


def test_tensor_passthrough_no_copy():
    x = torch.rand(2, 3, 4, 5)
    assert to_batch(x) is x
    y = torch.rand(3, 4, 5)
    assert to_batch(y).shape == (1, 3, 4, 5) and to_batch(y).data_ptr() == y.data_ptr()


def test_gradient_flows():
    x = torch.rand(1, 3, 4, 4, requires_grad=True)
    out = to_batch(x * 2 - 1, input_range=(-1, 1))
    out.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))


def test_input_range_mapping():
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    out = to_batch(x, input_range=(-1, 1))
    assert out[0, 0, 0].tolist() == [0.0, 0.5, 1.0]


def test_tolerance_clamped_beyond_refused():
    x = torch.full((1, 3, 2, 2), 0.5)
    x[0, 0, 0, 0] = 1.0005
    x[0, 0, 0, 1] = -0.0005
    out = to_batch(x)
    assert out.max().item() == 1.0 and out.min().item() == 0.0
    x[0, 0, 0, 0] = 1.01
    with pytest.raises(ValueError, match=r"distorted: values span \[.*1\.01\], outside input_range=\(0, 1\)"):
        to_batch(x, name="distorted")


def test_range_hints():
    with pytest.raises(ValueError, match="divide by 255"):
        to_batch(torch.full((3, 2, 2), 200.0))
    with pytest.raises(ValueError, match=r"input_range=\(-1, 1\)"):
        to_batch(torch.full((3, 2, 2), -0.8))


@pytest.mark.parametrize(
    "bad, word", [(float("nan"), "NaN"), (float("inf"), "infinite"), (-float("inf"), "infinite")]
)
def test_nan_inf(bad, word):
    x = torch.rand(1, 3, 2, 2)
    x[0, 1, 1, 1] = bad
    with pytest.raises(ValueError, match=f"reference: contains {word} values"):
        to_batch(x, name="reference")


def test_wrong_dims():
    with pytest.raises(ValueError, match=r"image: expected .*N×3×H×W.*got shape \(4, 4\).*x\[None, None\]"):
        to_batch(torch.rand(4, 4))
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 3, 4, 4\)"):
        to_batch(torch.rand(1, 1, 3, 4, 4))


def test_channel_counts():
    gray = torch.rand(2, 1, 4, 4)
    out = to_batch(gray)
    assert out.shape == (2, 3, 4, 4) and torch.equal(out[:, 2], gray[:, 0])
    with pytest.raises(ValueError, match=r"reference: expected 3 colour channels.*4 channels.*RGBA"):
        to_batch(torch.rand(1, 4, 8, 8), name="reference")
    with pytest.raises(ValueError, match="channels-last.*permute"):
        to_batch(torch.rand(1, 8, 8, 3))


def test_integer_tensor_refused():
    with pytest.raises(TypeError, match=r"distorted: .*torch\.uint8.*x\.float\(\) / 255"):
        to_batch(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), name="distorted")


def test_empty():
    with pytest.raises(ValueError, match="empty"):
        to_batch(torch.rand(1, 3, 0, 4))
    with pytest.raises(ValueError, match="empty"):
        to_batch(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="empty list"):
        to_batch([])


def test_numpy_inputs():
    a = _rgb()
    expected = torch.from_numpy(a).permute(2, 0, 1).float()[None] / 255
    assert torch.equal(to_batch(a), expected)
    assert torch.equal(to_batch(a.astype(np.uint16) * 257), expected)  # 8-bit value v ↔ 16-bit v·257
    f = a.astype(np.float32) / 255
    assert torch.equal(to_batch(f), expected)
    assert torch.allclose(to_batch(f * 2 - 1, input_range=(-1, 1)), expected, atol=1e-6)
    gray = to_batch(a[..., 0])
    assert gray.shape == (1, 3, 4, 5) and all(torch.equal(gray[0, c], expected[0, 0]) for c in range(3))
    assert torch.equal(to_batch(np.ascontiguousarray(a[::-1])), expected.flip(2))
    opaque = np.dstack([a, np.full((4, 5), 255, np.uint8)])
    assert torch.equal(to_batch(opaque), expected)


@pytest.mark.parametrize("dtype", [">u2", ">f4", ">f8"])
def test_big_endian_numpy_arrays(dtype):
    a = _rgb().astype(np.uint16) * 257
    native = a if dtype == ">u2" else a.astype(np.float64) / 65535
    torch.testing.assert_close(to_batch(native.astype(dtype)), to_batch(native.astype(dtype.replace(">", "="))))


def test_numpy_errors():
    with pytest.raises(ValueError, match="transparent pixels"):
        to_batch(np.zeros((2, 2, 4), np.uint8))
    with pytest.raises(TypeError, match=r"dtype int64.*uint8"):
        to_batch(np.zeros((2, 2, 3), np.int64))
    with pytest.raises(ValueError, match="channels-first.*transpose"):
        to_batch(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"outside input_range"):
        to_batch(np.full((2, 2, 3), 2.0, np.float32))


def test_list_inputs(tmp_path):
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "a.png")
    t = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    out = to_batch([tmp_path / "a.png", Image.fromarray(a), a, t, t[None]])
    assert out.shape == (5, 3, 4, 5)
    assert all(torch.equal(out[i], t) for i in range(5))


def test_list_size_mismatch():
    with pytest.raises(ValueError, match=r"distorted: list items have different sizes.*0: 4×5, 1: 6×5"):
        to_batch([_rgb(4, 5), _rgb(6, 5)], name="distorted")
    with pytest.raises(ValueError, match=r"distorted\[1\]: contains NaN"):
        to_batch([torch.rand(3, 2, 2), torch.full((3, 2, 2), float("nan"))], name="distorted")


def test_unsupported_type():
    with pytest.raises(TypeError, match=r"image: unsupported input type builtins\.int"):
        to_batch(3)


def test_bad_input_range():
    with pytest.raises(ValueError, match="low < high"):
        to_batch(torch.rand(3, 2, 2), input_range=(1, 0))


# --------------------------------------------------------------------------------------------- check_pair


def test_check_pair():
    check_pair(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(
        ValueError, match=r"different sizes: reference \(1, 3, 8, 8\).*distorted \(1, 3, 6, 8\).*resize"
    ):
        check_pair(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 6, 8))
    with pytest.raises(
        ValueError, match=r"different batch sizes: reference \(2, 3, 8, 8\), distorted \(3, 3, 8, 8\)"
    ):
        check_pair(torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8))
