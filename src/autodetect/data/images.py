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


def read_size(path: Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int, str]:
    """Width, height and format from the header, without decoding the pixels."""
    with _open(path, max_pixels) as image:
        return image.width, image.height, (image.format or "").lower()


def load_rgb(source: Path | bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode to an HxWx3 uint8 RGB array; truncated or corrupt data raises ImageError."""
    image = _open(source, max_pixels)
    name = str(source) if isinstance(source, Path) else "the upload"
    try:
        with image:
            image.load()
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: truncated or corrupt image ({exc})") from None
