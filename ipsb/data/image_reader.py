"""ipsb's one image reader: files and arrays -> uint8 RGB ``[H,W,3]`` (and ``[3,H,W]`` tensors in [-1,1]).

Every command and DataModule reads its input images through :func:`read_rgb` (a path) or
:func:`load_rgb` (a path or an array), so an image reads the same everywhere:

* EXIF orientation is applied (PIL ``ImageOps.exif_transpose``): a phone photo stored sideways
  comes out upright;
* 16-bit images (PNG/TIFF ``I;16``, 32-bit ``I`` holding 0..65535) are scaled by the 16-bit range,
  ``v / 257`` rounded, so ``65535 -> 255`` and the 8-bit copy of a 16-bit photo (``v * 257``) reads
  back exactly; nothing saturates;
* CMYK, YCbCr, LAB, HSV, palette (``P``, also with transparency), ``1``, ``L``, ``LA``, ``RGBA`` are
  converted by PIL's own colour conversions; alpha is dropped (the colour channels are kept as
  stored, as PIL's ``convert("RGB")`` does); float images (mode ``F``) must hold values in [0,1];
* a missing, empty, truncated or corrupt file, or one that is no image, raises
  :class:`ImageReadError` (a ValueError) whose one-line message names the file.

Arrays and tensors go through :func:`to_rgb_uint8` (same scaling rules).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch

#: file suffixes taken as images when a command is given a folder of photos
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

#: modes whose pixel values are numbers to scale (not colours to convert): 16/32-bit integer, float
_NUMERIC_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


class ImageReadError(ValueError):
    """An image file cannot be read; the message names the file and what is wrong with it."""


def to_rgb_uint8(image) -> np.ndarray:
    """Any image array -> uint8 RGB ``[H,W,3]``.

    Accepts numpy arrays (HW gray, HW1, HW2 gray+alpha, HW3 RGB, HW4 RGBA; uint8, 16-bit (scaled by
    1/257), bool, or float in [0,1]), torch tensors (uint8 HWC, or float CHW in [-1,1], ipsb's
    convention) and PIL images (converted by their mode like :func:`read_rgb`: CMYK, palette, ...).
    Alpha is dropped.
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.is_floating_point():
            if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
                raise ValueError(f"a float tensor image must be [C,H,W] in [-1,1], got {list(t.shape)}")
            t = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
        image = t.numpy()
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)) or min(a.shape[:2]) < 1:
        raise ValueError(f"expected an image [H,W], [H,W,1|2|3|4], got shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1 or np.isnan(a).any()):
            raise ValueError(f"a float image must hold values in [0,1], got range "
                             f"[{np.nanmin(a)}, {np.nanmax(a)}]")
        a = np.round(a * 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f"integer image values must be in 0..65535, got {lo}..{hi}")
        a = a.astype(np.uint8) if a.dtype.itemsize == 1 else np.round(a / 257.0).astype(np.uint8)
    else:
        raise ValueError(f"unsupported image dtype {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, 2)
    elif a.shape[2] == 2:
        a = np.repeat(a[..., :1], 3, 2)
    elif a.shape[2] == 4:
        a = a[..., :3]
    return np.ascontiguousarray(a)


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 ``[H,W,3]`` -> float32 ``[3,H,W]`` in [-1,1]."""
    rgb = rgb if rgb.flags.writeable else rgb.copy()  # e.g. np.asarray(PIL image) is read-only
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1


def _pil_to_rgb(im) -> np.ndarray:
    """A decoded PIL image of any mode -> uint8 RGB ``[H,W,3]`` (see the module docstring)."""
    if im.mode in _NUMERIC_MODES:
        return to_rgb_uint8(np.asarray(im))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL asks palette transparency to go through RGBA
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.array(im)


def read_rgb(path: Union[str, os.PathLike]) -> np.ndarray:
    """An image file (any format PIL reads) -> uint8 RGB ``[H,W,3]``, upright (EXIF orientation applied).

    Raises :class:`ImageReadError` naming the file when it is missing, empty, truncated, corrupt or
    not an image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"image file '{p}' not found")
    if not p.is_file():
        raise ImageReadError(f"'{p}' is not a file (an image was expected)")
    if p.stat().st_size == 0:
        raise ImageReadError(f"image file '{p}' is empty (0 bytes)")
    try:
        with Image.open(p) as im:
            im.load()  # decode now: a truncated file fails here, not later
            im = ImageOps.exif_transpose(im)
    except UnidentifiedImageError as e:
        raise ImageReadError(f"'{p}' is not an image file PIL can read (png, jpg, webp, tiff, bmp, ...)") from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"image file '{p}' is too large to decode safely: {e}") from e
    except MemoryError:
        raise
    except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageReadError(f"cannot read image '{p}' (truncated or corrupt?): {type(e).__name__}: {e}") from e
    try:
        return _pil_to_rgb(im)
    except ValueError as e:
        raise ImageReadError(f"image file '{p}' (mode {im.mode}): {e}") from e


def load_rgb(image) -> np.ndarray:
    """A path (read with :func:`read_rgb`) or an image array/tensor (:func:`to_rgb_uint8`) -> uint8 RGB ``[H,W,3]``."""
    if isinstance(image, (str, os.PathLike)):
        return read_rgb(image)
    return to_rgb_uint8(image)
