"""Turn user input (files, PIL images, numpy arrays, tensors) into validated float tensors.

Everything leaving this module is a floating-point tensor of shape N×3×H×W with values in [0, 1].

Conversion policy (documented in the README):

* Files are decoded with Pillow; the EXIF orientation is applied. Embedded ICC profiles are ignored (pixel
  values are taken as sRGB, as LPIPS/DISTS/pyiqa do). Multi-frame files (GIF, APNG, multi-page TIFF) use the
  first frame.
* Grayscale (files, PIL images, numpy H×W or H×W×1, 1-channel tensors) is replicated to 3 channels, so a gray
  photo is scored the same whichever way it is passed.
* 16-bit grayscale is scaled by 1/65535 exactly. 16-bit colour files are refused: Pillow decodes them to 8 bits
  (a 16-bit RGB PNG is silently truncated to its high byte), so pass them as uint16 numpy arrays instead.
* An alpha channel that is fully opaque is dropped; any transparency is an error, because the score would
  depend on a background colour we cannot know: flatten the image onto a background first.
* Palette images become RGB (RGBA if they carry transparency, then the alpha rule applies); CMYK, YCbCr, LAB,
  HSV and 1-bit images are converted to RGB with Pillow's conversions.
* 32-bit float grayscale files (mode ``F``) are accepted only when their values already lie in [0, 1].
* Integer torch tensors are refused (divide by 255 yourself): in a training loop an integer tensor is almost
  always a forgotten normalisation, and it cannot carry gradients. Integer numpy arrays follow the image-file
  convention instead: uint8 is divided by 255, uint16 by 65535; other integer dtypes are refused.
* Float tensors and float numpy arrays are read in ``input_range`` (default (0, 1); (-1, 1) for tanh outputs)
  and mapped to [0, 1]. Values up to 1e-3 of the range width outside it are clamped (rounding, resampling
  overshoot); anything further out, NaN or Inf is an error.
"""

from __future__ import annotations

import math
import os
import re
from typing import cast

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["check_pair", "load_image", "to_batch"]

# Out-of-range values within this fraction of the range width are clamped rather than refused.
_RANGE_TOLERANCE = 1e-3

_GRAY16_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA")
# Pillow raw modes that unpack 16/32 bits per channel into an 8-bit colour mode, losing the low bits.
# (Packed modes such as BMP's "BGR;16" are 5-6-5 bits and are not matched.)
_WIDE_COLOUR_RAWMODE = re.compile(r"(?:L|LA|RGB|RGBA|RGBX|RGBa|CMYK|YCbCr|LAB);(?:16|32)[A-Z]*")


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file into a float32 tensor of shape 3×H×W with values in [0, 1].

    The EXIF orientation is applied. Grayscale is replicated to 3 channels; 8-bit data is divided by 255 and
    16-bit grayscale by 65535. See the module docstring for the handling of alpha, palettes, 16-bit colour and
    other modes.

    Raises:
        FileNotFoundError: the file does not exist.
        IsADirectoryError, PermissionError: the path is a folder, or cannot be read.
        ValueError: the file is not a readable image, is truncated or corrupt, has transparency, or has a bit
            depth or mode that cannot be converted without losing information.

    Truncated files raise as long as Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` keeps its default (False);
    a program that sets it to True gets Pillow's partial decode.
    """
    return _load_file(path, f"image file '{os.fspath(path)}'")


def to_batch(x, *, input_range: tuple[float, float] = (0.0, 1.0), name: str = "image") -> torch.Tensor:
    """Convert one image or a list of images into a float tensor of shape N×3×H×W with values in [0, 1].

    Args:
        x: one of
            * ``torch.Tensor`` of floats, N×C×H×W or C×H×W with C = 3 (or 1: replicated), values in
              ``input_range``. Integer tensors raise ``TypeError`` (divide by 255 first).
            * ``numpy.ndarray`` H×W×C (C = 3, or 1, or 4 with an opaque alpha, which is dropped) or H×W
              (grayscale), in RGB order (convert OpenCV's BGR first). uint8 is divided by 255, uint16 by
              65535; float arrays are read in ``input_range``.
            * ``PIL.Image.Image`` or a file path (``str``/``os.PathLike``): as :func:`load_image`.
            * a list or tuple of the above with equal height and width, concatenated along N.
        input_range: the (low, high) range of float tensors and float arrays, e.g. ``(-1, 1)`` for generator
            outputs. It does not apply to integer arrays, PIL images or files, whose scale is known.
        name: how errors refer to this input, e.g. ``"reference"`` or ``"distorted"``.

    Returns:
        A tensor N×3×H×W in [0, 1]. For float tensors it stays in the autograd graph (gradients flow back to
        ``x``), keeps ``x``'s dtype and device, and is ``x`` itself (or a view of it) unless mapping from
        ``input_range`` or clamping is needed: do not modify it in place. Other inputs give CPU tensors,
        float32 (float arrays keep their float dtype).

    Raises:
        TypeError: an unsupported type or dtype.
        ValueError: wrong number of dimensions or channels, empty image, NaN/Inf, values outside
            ``input_range``, list items of different sizes, or any :func:`load_image` error.
    """
    lo, hi = _validate_range(input_range)
    if isinstance(x, (list, tuple)):
        return _from_list(x, (lo, hi), name)
    return _from_single(x, (lo, hi), name)


def check_pair(ref: torch.Tensor, dist: torch.Tensor) -> None:
    """Check that two N×3×H×W batches can be scored pairwise: same N and same H×W.

    Raises:
        ValueError: naming both shapes and how to fix the mismatch.
    """
    if ref.shape[0] != dist.shape[0]:
        raise ValueError(
            f"reference and distorted have different batch sizes: reference {tuple(ref.shape)}, "
            f"distorted {tuple(dist.shape)}. Pass one reference per distorted image (repeat the reference "
            "with ref.expand(N, -1, -1, -1) to score several distortions of one image)."
        )
    if ref.shape[-2:] != dist.shape[-2:]:
        h, w = ref.shape[-2:]
        raise ValueError(
            f"reference and distorted have different sizes: reference {tuple(ref.shape)} (H×W = {h}×{w}), "
            f"distorted {tuple(dist.shape)}. GSN compares aligned pixels: resize the distorted image to the "
            f"reference's size first, e.g. torch.nn.functional.interpolate(dist, size=({h}, {w}), "
            f"mode='bicubic', antialias=True) or PIL's img.resize(({w}, {h}), Image.BICUBIC)."
        )


# --------------------------------------------------------------------------------------------- dispatch


def _validate_range(input_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(f"input_range must be a pair of numbers (low, high), got {input_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"input_range must be finite with low < high, got {input_range!r}")
    return lo, hi


def _from_list(items, input_range, name) -> torch.Tensor:
    if len(items) == 0:
        raise ValueError(f"{name}: got an empty list; pass at least one image")
    batches = []
    for i, item in enumerate(items):
        if isinstance(item, (list, tuple)):
            raise TypeError(f"{name}[{i}]: nested lists are not supported; pass a flat list of images")
        batches.append(_from_single(item, input_range, f"{name}[{i}]"))
    sizes = {tuple(b.shape[-2:]) for b in batches}
    if len(sizes) > 1:
        listed = ", ".join(f"{i}: {b.shape[-2]}×{b.shape[-1]}" for i, b in enumerate(batches))
        raise ValueError(
            f"{name}: list items have different sizes (H×W) ({listed}); images batched together must have "
            "the same size: resize or crop them first, or score them in separate calls"
        )
    return batches[0] if len(batches) == 1 else torch.cat(batches, dim=0)


def _from_single(x, input_range, name) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return _from_tensor(x, input_range, name)
    if isinstance(x, np.ndarray):
        return _from_numpy(x, input_range, name)
    if isinstance(x, Image.Image):
        return _pil_to_tensor(x, f"{name} (PIL image)").unsqueeze(0)
    if isinstance(x, (str, os.PathLike)):
        return _load_file(x, f"{name} file '{os.fspath(x)}'").unsqueeze(0)
    raise TypeError(
        f"{name}: unsupported input type {type(x).__module__}.{type(x).__qualname__}; pass a torch.Tensor "
        "(N×3×H×W or 3×H×W), a numpy array (H×W×3 or H×W), a PIL image, a file path, or a list of these"
    )


# ---------------------------------------------------------------------------------------------- tensors


def _from_tensor(x: torch.Tensor, input_range, name) -> torch.Tensor:
    if x.is_complex() or not x.is_floating_point():
        hint = (
            " Convert with x.float() / 255." if x.dtype == torch.uint8 else " Convert it to a float tensor."
        )
        raise TypeError(
            f"{name}: got a tensor of dtype {x.dtype}; GSN expects floating-point values in "
            f"input_range={input_range}.{hint}"
        )
    if x.ndim == 3:
        x = x.unsqueeze(0)
    elif x.ndim != 4:
        hint = " For one grayscale H×W image use x[None, None]." if x.ndim == 2 else ""
        raise ValueError(
            f"{name}: expected a tensor of shape N×3×H×W or 3×H×W, got shape {tuple(x.shape)} "
            f"({x.ndim} dimensions).{hint}"
        )
    _check_channels(x.shape[1], tuple(x.shape), name, channels_last_hint=x.shape[-1] in (1, 3, 4))
    return _normalise(x, input_range, name)


def _check_channels(channels: int, shape: tuple, name: str, *, channels_last_hint: bool) -> None:
    if channels in (1, 3):
        return
    if channels_last_hint:
        hint = (
            " It looks channels-last (…×H×W×C): use x.permute(0, 3, 1, 2) for a batch "
            "or x.permute(2, 0, 1) for one image."
        )
    elif channels == 4:
        hint = " RGBA is not accepted: composite it onto a background, or drop an opaque alpha with x[:, :3]."
    else:
        hint = ""
    raise ValueError(
        f"{name}: expected 3 colour channels (or 1, replicated) in dimension 1 of N×C×H×W, "
        f"got shape {tuple(shape)} with {channels} channels.{hint}"
    )


def _normalise(x: torch.Tensor, input_range, name) -> torch.Tensor:
    """Range-check a float N×C×H×W tensor (C in 1, 3), map it to [0, 1] and replicate gray to 3 channels."""
    if x.numel() == 0:
        raise ValueError(f"{name}: the image is empty (shape {tuple(x.shape)}); check how it was produced")
    lo, hi = input_range
    # One reduction and one device sync; the check itself stays out of the autograd graph.
    with torch.no_grad():
        mn, mx = torch.stack(torch.aminmax(x)).tolist()
    if not (math.isfinite(mn) and math.isfinite(mx)):
        bad = "NaN" if torch.isnan(x).any() else "infinite"
        raise ValueError(
            f"{name}: contains {bad} values; check the computation that produced it (e.g. a division by zero "
            "or a diverging loss)"
        )
    tol = _RANGE_TOLERANCE * (hi - lo)
    if mn < lo - tol or mx > hi + tol:
        raise ValueError(
            f"{name}: values span [{mn:.6g}, {mx:.6g}], outside input_range=({lo:g}, {hi:g})."
            + _range_hint(mn, mx, lo, hi)
        )
    if mn < lo or mx > hi:
        x = x.clamp(lo, hi)
    if (lo, hi) != (0.0, 1.0):
        x = (x - lo) / (hi - lo)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # a view: no copy, gradients still flow
    return x


def _range_hint(mn: float, mx: float, lo: float, hi: float) -> str:
    if mn >= 0.0 and 1.5 < mx <= 255.0:
        return " It looks like 0–255 data: divide by 255 and use input_range=(0, 1)."
    if (lo, hi) == (0.0, 1.0) and -1.0 - 2 * _RANGE_TOLERANCE <= mn < 0.0 and mx <= 1.0 + _RANGE_TOLERANCE:
        return " It looks like [-1, 1] data (e.g. a tanh output): pass input_range=(-1, 1)."
    return " Pass the input_range your data uses, or clamp it."


# ----------------------------------------------------------------------------------------- numpy arrays


def _from_numpy(a: np.ndarray, input_range, name) -> torch.Tensor:
    if a.ndim == 2:
        a = a[:, :, None]
    elif a.ndim != 3:
        raise ValueError(
            f"{name}: expected a numpy array of shape H×W×C or H×W, got shape {a.shape} ({a.ndim} dimensions); "
            "pass a list of arrays for a batch"
        )
    channels = a.shape[2]
    if channels not in (1, 3, 4):
        hint = (
            " It looks channels-first: numpy arrays are read as H×W×C (as PIL, imageio and OpenCV give them), "
            "so use a.transpose(1, 2, 0) or pass torch.from_numpy(a)."
            if a.shape[0] in (1, 3)
            else ""
        )
        raise ValueError(
            f"{name}: expected 1, 3 or 4 channels in the last dimension, got shape {a.shape}.{hint}"
        )

    if not a.dtype.isnative:  # big-endian data (FITS, some TIFF readers): torch only takes native byte order
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype == np.uint8 or a.dtype == np.uint16:
        full = float(np.iinfo(a.dtype).max)
        if channels == 4:
            a = _drop_opaque_alpha(a, full, name)
        # One copy does the cast and the HWC → CHW transpose; the result is writable, so from_numpy does not warn.
        t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)).div_(full)
        return _normalise(t.unsqueeze(0), (0.0, 1.0), name)
    if a.dtype.kind == "f":
        if channels == 4:
            a = _drop_opaque_alpha(a, input_range[1], name)
        if not a.flags.writeable or any(s < 0 for s in a.strides):
            a = a.copy()  # torch.from_numpy needs a writable array with non-negative strides
        t = torch.from_numpy(a).permute(2, 0, 1)
        return _normalise(t.unsqueeze(0), input_range, name)
    raise TypeError(
        f"{name}: numpy arrays of dtype {a.dtype} are not supported; use uint8 (0–255), uint16 (0–65535) "
        f"or a float dtype with values in input_range={input_range}"
    )


def _drop_opaque_alpha(a: np.ndarray, opaque: float, name: str) -> np.ndarray:
    if not np.all(a[:, :, 3] >= opaque):
        raise _transparency_error(name)
    return a[:, :, :3]


def _transparency_error(where: str) -> ValueError:
    return ValueError(
        f"{where}: has transparent pixels. GSN scores RGB images and the result would depend on an unknown "
        "background: flatten it onto a background first, e.g. with PIL: "
        "bg = Image.new('RGB', im.size, (255, 255, 255)); bg.paste(im, mask=im.getchannel('A'))"
    )


# ------------------------------------------------------------------------------------- files and Pillow


def _load_file(path, where: str) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            return _pil_to_tensor(im, where)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{where}: no such file (relative paths are resolved from {os.getcwd()}); check the path"
        ) from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{where}: is a folder, not an image file; name an image file in it") from None
    except PermissionError as err:
        raise PermissionError(f"{where}: cannot be read ({err.strerror}); check its permissions") from None
    except UnidentifiedImageError:
        raise ValueError(
            f"{where}: not an image format Pillow can read (or the file is corrupt); "
            "convert it to PNG or JPEG"
        ) from None


def _pil_to_tensor(im: Image.Image, where: str) -> torch.Tensor:
    """Decode a PIL image into a float32 3×H×W tensor in [0, 1] following the module's conversion policy."""
    _refuse_reduced_bit_depth(im, where)
    try:
        im.load()  # decode now so that truncation or corruption surfaces here, not as a partial image
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ValueError(
            f"{where}: could not decode the image, it is truncated or corrupt ({e}); re-export or re-download it"
        ) from e
    if im.width == 0 or im.height == 0:
        raise ValueError(f"{where}: the image is empty ({im.width}×{im.height} pixels)")
    im = ImageOps.exif_transpose(im)
    mode = im.mode

    if mode in _GRAY16_MODES:
        a = np.asarray(im)
        if "transparency" in im.info and np.any(a == im.info["transparency"]):
            raise _transparency_error(where)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ValueError(
                f"{where}: 32-bit integer image with values in [{lo}, {hi}], outside the 16-bit range "
                "[0, 65535]; normalise it to [0, 1] yourself and pass a float array"
            )
        return _gray_to_tensor(a.astype(np.float32) / np.float32(65535))
    if mode == "F":
        a = np.asarray(im)
        flo, fhi = float(np.min(a)), float(np.max(a))
        if not (0.0 <= flo and fhi <= 1.0):  # also false for NaN
            raise ValueError(
                f"{where}: 32-bit float image with values in [{flo:g}, {fhi:g}]; only float images already in "
                "[0, 1] are accepted, since their scale is unknown: normalise it and pass a float array"
            )
        return _gray_to_tensor(a.astype(np.float32))

    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "La":
        im = im.convert("LA")
    elif mode in ("L", "RGB") and "transparency" in im.info:  # a tRNS colour key
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")

    if im.mode in _ALPHA_MODES:
        alpha_range = cast("tuple[int, int]", im.getchannel("A").getextrema())  # one band: (min, max)
        if alpha_range[0] < 255:
            raise _transparency_error(where)
        im = im.convert("RGB")

    if im.mode == "L":
        return _gray_to_tensor(np.asarray(im, dtype=np.float32) / np.float32(255))
    if im.mode == "RGB":
        a = np.ascontiguousarray(np.asarray(im).transpose(2, 0, 1), dtype=np.float32)
        return torch.from_numpy(a).div_(255)
    raise ValueError(f"{where}: unsupported image mode {im.mode!r}; convert it to RGB first")


def _gray_to_tensor(a: np.ndarray) -> torch.Tensor:
    """H×W float32 array → contiguous 3×H×W tensor (a real copy: callers may write to load_image's result)."""
    return torch.from_numpy(a).unsqueeze(0).repeat(3, 1, 1)


def _refuse_reduced_bit_depth(im: Image.Image, where: str) -> None:
    """Refuse 16-bit colour files, which Pillow would decode to 8 bits without saying so.

    Pillow has no 16-bit colour mode: the decoder's raw mode (e.g. PNG's "RGB;16B") unpacks 16 bits per channel
    into an 8-bit mode by keeping the high byte. Only visible before ``load()``; an image the caller has
    already decoded holds 8-bit data and is taken as it is.
    """
    if im.mode in _GRAY16_MODES or im.mode == "F":
        return
    for tile in getattr(im, "tile", None) or ():
        args = tile.args if isinstance(tile.args, tuple) else (tile.args,)
        wide = any(isinstance(a, str) and _WIDE_COLOUR_RAWMODE.fullmatch(a) for a in args)
        # PPM/PGM files with maxval > 255 are rescaled to 8 bits by Pillow's "ppm" decoder.
        wide = wide or (tile.codec_name == "ppm" and any(isinstance(a, int) and a > 255 for a in args))
        if wide:
            raise ValueError(
                f"{where}: 16-bit colour image; Pillow decodes it to 8 bits per channel, which would lose "
                "precision silently. Read it with a 16-bit capable reader (e.g. imageio.v3.imread, or "
                "cv2.imread(path, cv2.IMREAD_UNCHANGED) then convert BGR to RGB) and pass the uint16 H×W×3 "
                "array, which GSN scales by 1/65535; or save it as 8-bit"
            )
