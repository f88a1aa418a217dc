"""Image and mask decoding shared by every reader: mode-, bit-depth- and EXIF-aware.

PIL's plain ``convert("RGB")`` / ``convert("L")`` clips 16-bit grey (``I;16``, ``I``) at 255,
so a 16-bit photo becomes pure white and a 16-bit soft mask loses its fractions; it also drops
transparency without looking at it. Here:

- photos (:func:`decode_rgb`, :func:`as_rgb`): 16- and 32-bit grey are scaled by their bit
  depth (``v * 255 / 65535``), float images must lie in [0, 1], images with transparency
  (``RGBA``, ``LA``, ``PA``, ``P`` or ``L``/``RGB`` with a transparent colour) are composited
  over white, ``CMYK``/``YCbCr``/``1`` go through PIL's conversion; 16-bit RGB(A) PNGs are
  already reduced to 8 bits by PIL (high byte). EXIF orientation is applied.
- masks (:func:`decode_gray`): one channel at its own bit depth, returned with its full-scale
  value (255 or 65535), so callers can scale to [0, 1] without losing precision.
- file errors of every kind (unreadable, truncated, not an image, over PIL's
  decompression-bomb pixel limit) become :class:`~matbench.errors.DatasetFormatError` naming
  the file.

Only PIL and numpy are imported: the scene generator's worker processes use this too (the
torch-level readers build on it in :mod:`matbench.datasets.utils`).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from matbench.errors import DatasetFormatError

#: Image file endings every folder reader accepts (lower case, with the dot).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: EXIF tag of the orientation, and the orientations that swap width and height.
EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}
#: Full-scale value of the 16-bit integer modes.
UINT16_MAX = 65535
_GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: What transparent pixels of a photo are composited over.
BACKGROUND = (255, 255, 255)


@contextmanager
def open_image(path: str | Path, what: str = "an image") -> Iterator[Image.Image]:
    """``Image.open(path)`` whose failures (inside the ``with`` block too) raise
    :class:`DatasetFormatError` naming ``path``."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            yield im
    except DatasetFormatError:
        raise
    except FileNotFoundError as err:
        raise DatasetFormatError(path, "file is missing") from err
    except Image.DecompressionBombError as err:
        raise DatasetFormatError(
            path,
            f"refused as a possible decompression bomb ({err}); raise "
            "PIL.Image.MAX_IMAGE_PIXELS if the image is genuine",
        ) from err
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
        raise DatasetFormatError(path, f"cannot be decoded as {what} ({err})") from err


def oriented_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image after its EXIF orientation, without decoding pixels."""
    with open_image(path) as im:
        width, height = im.size
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    return (height, width) if orientation in _SWAPS_AXES else (width, height)


def header_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` as stored (EXIF orientation not applied), without decoding pixels."""
    with open_image(path) as im:
        return im.size


def _grey_levels(im: Image.Image, path: Path) -> tuple[np.ndarray, int] | None:
    """Integer grey values and their full scale for the >8-bit grey modes, else None."""
    if im.mode in _GREY16_MODES:
        return np.asarray(im).astype(np.uint16), UINT16_MAX
    if im.mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > UINT16_MAX):
            raise DatasetFormatError(
                path,
                f"32-bit integer image with values {values.min()}..{values.max()}: only "
                "0..65535 (16-bit) is understood",
            )
        return values.astype(np.uint16), UINT16_MAX
    if im.mode == "F":
        values = np.asarray(im, dtype=np.float64)
        if values.size and not (
            np.isfinite(values).all() and 0 <= values.min() <= values.max() <= 1
        ):
            raise DatasetFormatError(path, "floating-point image with values outside [0, 1]")
        return np.rint(values * UINT16_MAX).astype(np.uint16), UINT16_MAX
    return None


def _to_uint8(values: np.ndarray, scale: int) -> np.ndarray:
    if scale == 255:
        return values.astype(np.uint8)
    return np.rint(values.astype(np.float64) * (255.0 / scale)).astype(np.uint8)


def as_rgb(im: Image.Image, path: str | Path = "<image>", exif: bool = True) -> Image.Image:
    """An open image as 8-bit RGB (see the module docstring), EXIF orientation applied unless
    ``exif=False`` (for annotations made in the stored pixel grid)."""
    path = Path(path)
    # exif_transpose returns a copy even when there is nothing to do
    if exif and im.getexif().get(EXIF_ORIENTATION, 1) != 1:
        im = ImageOps.exif_transpose(im)
    grey = _grey_levels(im, path)
    if grey is not None:
        return Image.fromarray(_to_uint8(*grey)).convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def open_rgb(
    path: str | Path, draft_size: int | None = None, reduce: int = 1, exif: bool = True
) -> tuple[Image.Image, float]:
    """An image file as an 8-bit RGB PIL image (see :func:`as_rgb`), and the factor a JPEG was
    reduced by while decoding (1.0 for a full decode).

    A JPEG may be decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling, PIL's
    ``draft``: far less work than a full decode): with ``draft_size`` as long as both stored
    sides stay at least that large, with ``reduce`` by at most that factor.

    Args:
        path: The image file.
        draft_size: Smallest side a reduced JPEG decode may have (the caller resizes after).
        reduce: Largest reduction factor of a JPEG decode.
        exif: Apply the EXIF orientation (False: the stored pixel grid).

    Raises:
        DatasetFormatError: The file is missing, unreadable, not an image, over PIL's pixel
            limit, or of a mode that cannot be an RGB photo.
    """
    with open_image(path) as im:
        scale = 1.0
        if im.format == "JPEG" and (draft_size is not None or reduce > 1):
            width, height = im.size
            if draft_size is not None:
                im.draft("RGB", (draft_size, draft_size))
            else:
                im.draft("RGB", (math.ceil(width / reduce), math.ceil(height / reduce)))
            scale = width / im.size[0]
        rgb = as_rgb(im, path, exif=exif)
        rgb.load()
        return rgb, scale


class _ArrowSchema(ctypes.Structure):
    pass


class _ArrowArray(ctypes.Structure):
    pass


# the Arrow C data interface (a stable ABI): https://arrow.apache.org/docs/format/CDataInterface.html
_ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p),
    ("name", ctypes.c_char_p),
    ("metadata", ctypes.c_char_p),
    ("flags", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))),
    ("dictionary", ctypes.POINTER(_ArrowSchema)),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]
_ArrowArray._fields_ = [
    ("length", ctypes.c_int64),
    ("null_count", ctypes.c_int64),
    ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.POINTER(_ArrowArray)),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _arrow_rgbx(im: Image.Image) -> np.ndarray | None:
    """The pixels of a loaded RGB image as an (H, W, 4) RGBX view of PIL's own memory,
    through its Arrow export (Pillow >= 11.2), or None when it cannot be had that way."""
    export = getattr(im, "__arrow_c_array__", None)
    if export is None or im.mode != "RGB":
        return None
    try:
        schema_capsule, array_capsule = export()
    except (ValueError, TypeError, NotImplementedError):  # e.g. not in one memory block
        return None
    schema = _ArrowSchema.from_address(_capsule_pointer(schema_capsule, b"arrow_schema"))
    array = _ArrowArray.from_address(_capsule_pointer(array_capsule, b"arrow_array"))
    width, height = im.size
    if (
        schema.format != b"+w:4"
        or schema.n_children != 1
        or schema.children[0].contents.format != b"C"
        or array.offset != 0
        or array.n_children != 1
        or array.length != width * height
    ):
        return None
    child = array.children[0].contents
    if child.offset != 0 or child.n_buffers != 2 or child.length != 4 * width * height:
        return None
    memory = (ctypes.c_uint8 * child.length).from_address(child.buffers[1])
    memory.owner = array_capsule  # keeps PIL's memory alive as long as the view
    return np.frombuffer(memory, dtype=np.uint8).reshape(height, width, 4)


def rgb_pixels(im: Image.Image) -> np.ndarray:
    """An 8-bit RGB PIL image (as :func:`open_rgb` returns it) as an (H, W, 3) uint8 array:
    a view of PIL's own memory when its Arrow export gives one (no copy of the pixels:
    ``np.array(im)`` packs them into bytes and copies them again, 0.3 ms for a 640 x 480
    photo, a fifth of its decode), else a copy."""
    rgbx = _arrow_rgbx(im)
    return np.array(im, dtype=np.uint8) if rgbx is None else rgbx[..., :3]


def decode_rgb(path: str | Path, draft_size: int | None = None, exif: bool = True) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 RGB array, EXIF orientation applied (see
    :func:`open_rgb` for the arguments and errors)."""
    return np.array(open_rgb(path, draft_size=draft_size, exif=exif)[0], dtype=np.uint8)


def decode_gray(path: str | Path) -> tuple[np.ndarray, int]:
    """A mask file as one channel at its own bit depth: ``(values, full_scale)``.

    ``values`` is (H, W) uint8 with ``full_scale`` 255, or uint16 with 65535 for 16-bit (and
    32-bit integer or float) files; ``values / full_scale`` is the mask in [0, 1]. Colour files
    are reduced to their luminance; EXIF orientation is applied.
    """
    path = Path(path)
    with open_image(path, "a mask image") as im:
        im = ImageOps.exif_transpose(im)
        grey = _grey_levels(im, path)
        if grey is not None:
            return grey
        if im.mode != "L":
            im = im.convert("L")
        return np.array(im, dtype=np.uint8), 255


def decode_mask_fraction(path: str | Path) -> np.ndarray:
    """A mask file as (H, W) float32 in [0, 1] (see :func:`decode_gray`)."""
    values, scale = decode_gray(path)
    return values.astype(np.float32) / np.float32(scale)
