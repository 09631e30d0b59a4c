"""Images across the client boundary: numpy arrays in (uint8 0..255 or float 0..1, HxW, HxWx1/3/4), a
PNG upload out, and decoded results back as uint8 HxWx3."""
from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image

from .errors import BadResponseError, InvalidParameterError

logger = logging.getLogger(__name__)

# The API makes images of at most 1024 px a side and reads the face from a crop of the photo; a bigger
# upload only costs time and risks 413 (payload too large).
DEFAULT_MAX_UPLOAD_SIDE = 1024


def to_uint8_rgb(image, what: str = "image") -> np.ndarray:
    """HxWx3 uint8 from uint8 or float (0..1) arrays with 1, 3 or 4 channels (alpha composited onto white)."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidParameterError(f"{what}: expected an HxWx3 image, got an array of shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise InvalidParameterError(f"{what}: expected uint8 or float pixels, got {array.dtype}")
        array = np.clip(np.nan_to_num(array, nan=0.0), 0.0, 1.0)
    if array.shape[2] == 4:
        array = _onto_white(array)
    if array.dtype != np.uint8:
        array = (array * 255.0 + 0.5).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def _onto_white(rgba: np.ndarray) -> np.ndarray:
    """RGB in 0..1 of an RGBA image laid over white. Transparent pixels often keep black or leftover
    colour, which dropping the alpha would upload; white is the usual backdrop of cut-out portraits and
    ID photos, and unlike black it does not merge with dark hair at the edge of the face."""
    unit = rgba.astype(np.float32) / (255.0 if rgba.dtype == np.uint8 else 1.0)
    alpha = unit[:, :, 3:]
    return unit[:, :, :3] * alpha + (1.0 - alpha)


def encode_upload(image, max_side: int = DEFAULT_MAX_UPLOAD_SIDE) -> tuple[bytes, tuple[int, int]]:
    """PNG bytes of the image, downscaled (aspect kept) so its longer side is at most `max_side`;
    also returns the uploaded (width, height)."""
    pil = Image.fromarray(to_uint8_rgb(image), "RGB")
    longest = max(pil.size)
    if max_side and longest > max_side:
        scale = max_side / longest
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))),
                         Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", compress_level=4)  # fast; the PNG is only in flight
    return buffer.getvalue(), pil.size


def decode_image(data: bytes, what: str) -> np.ndarray:
    """uint8 HxWx3 from encoded image bytes (PNG, JPEG, WebP, ...), or BadResponseError naming `what`."""
    failure = None
    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil.load()
            rgb = pil.convert("RGB")
    except Exception as exc:  # Pillow raises many types for broken data; all mean "not an image"
        failure = type(exc).__name__
    if failure:  # raised here, not in the except, so no server bytes ride along as __context__
        raise BadResponseError(f"{what} is not a readable image ({failure}, {len(data)} bytes). The server "
                               f"may have changed its response format.")
    return np.asarray(rgb, dtype=np.uint8)


def stack_images(images: list[np.ndarray]) -> np.ndarray:
    """One NxHxWx3 uint8 batch; an image of another size than the first is resized to it (ComfyUI
    batches need one size), with a warning."""
    height, width = images[0].shape[:2]
    same = []
    for index, image in enumerate(images):
        if image.shape[:2] != (height, width):
            logger.warning("result %d is %dx%d, resized to %dx%d to fit one batch", index, image.shape[1],
                           image.shape[0], width, height)
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))
        same.append(image)
    return np.stack(same)
