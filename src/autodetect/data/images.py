"""Image decoding with the safety checks every path shares (training, evaluation, serving):
a pixel limit against decompression bombs, truncated and non-image data refused."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from autodetect.errors import ImageError

MAX_PIXELS = 40_000_000  # about 6300 x 6300; larger is refused before any pixel is decoded


def _pil_open(fp):
    """PIL's own Image.open. ultralytics, once imported, replaces it with a wrapper that answers an
    unidentified file by importing (or pip-installing, when online) a HEIF plugin: an upload that
    is not an image must fail here, not install packages or raise ModuleNotFoundError."""
    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", Image.open)(fp)


def _open(source: Path | bytes, max_pixels: int) -> Image.Image:
    name = str(source) if isinstance(source, Path) else "the upload"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _pil_open(source if isinstance(source, Path) else io.BytesIO(source))
    except FileNotFoundError:
        raise ImageError(f"{name}: no such image") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError(f"{name}: too many pixels (decompression bomb refused)") from None
    except (Image.UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc.__class__.__name__})") from None
    if image.width * image.height > max_pixels:
        raise ImageError(f"{name}: {image.width}x{image.height} is over the limit of {max_pixels} pixels")
    return image


def image_pixels(data: bytes, max_pixels: int = MAX_PIXELS) -> int:
    """Width x height of an upload from its header (nothing decoded); ImageError as load_rgb would raise."""
    with _open(data, max_pixels) as image:
        return image.width * image.height


def read_size(path: Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int, str]:
    """Width, height and format from the header, without decoding the pixels."""
    with _open(path, max_pixels) as image:
        return image.width, image.height, (image.format or "").lower()


def reduction(width: int, height: int, fit: tuple[int, int]) -> int:
    """The integer factor an image may shrink by and still cover fit = (longer, shorter side) the model takes."""
    long_side, short_side = max(width, height), min(width, height)
    return max(1, min(long_side // max(1, fit[0]), short_side // max(1, fit[1])))


def load_rgb(source: Path | bytes, max_pixels: int = MAX_PIXELS, fit: tuple[int, int] | None = None) -> np.ndarray:
    """Decode to an HxWx3 uint8 RGB array; truncated or corrupt data raises ImageError. With fit (the longer and
    shorter side the model takes), a larger image is decoded smaller, by whole factors that keep it covering fit:
    JPEG in draft mode (decoded at 1/2 to 1/8), others reduced right after decoding."""
    image = _open(source, max_pixels)
    name = str(source) if isinstance(source, Path) else "the upload"
    try:
        with image:
            factor = reduction(image.width, image.height, fit) if fit else 1
            if factor == 1 and image.format == "JPEG" and image.mode == "RGB":
                return _decode_jpeg(source, name)
            if factor > 1 and image.format == "JPEG":
                image.draft("RGB", (-(-image.width // factor), -(-image.height // factor)))
                factor = reduction(image.width, image.height, fit)
            image.load()
            if factor > 1:
                return np.asarray(image.reduce(factor).convert("RGB"))
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: truncated or corrupt image ({exc})") from None


def _decode_jpeg(source: Path | bytes, name: str) -> np.ndarray:
    """A colour JPEG through OpenCV: the same pixels as PIL's decoder (both are libjpeg-turbo) straight into an
    array, in half the time of PIL's decode and copy out. The header has been checked by PIL; EXIF orientation is
    ignored, as PIL ignores it, so boxes keep to the stored pixels."""
    import cv2

    data = np.frombuffer(source if isinstance(source, bytes) else source.read_bytes(), np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if decoded is None:
        raise ImageError(f"{name}: truncated or corrupt image")
    return decoded
