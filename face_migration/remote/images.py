"""Images across the client boundary: numpy arrays in (uint8 0..255 or float 0..1, HxW, HxWx1/3/4), a
PNG upload out, and decoded results back as uint8 HxWx3; every received image's bytes kept when the
caller fails after it was billed."""
from __future__ import annotations

import contextlib
import contextvars
import copy
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import BadResponseError, InvalidParameterError, RemoteError

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


def with_transparency(images, mask) -> np.ndarray:
    """NxHxWx4 float images: `images` (NxHxWx3 or 4, uint8 or float) with alpha 1 - `mask`. The mask is
    ComfyUI's MASK as LoadImage makes it from a file's alpha channel (1 = transparent), HxW or NxHxW,
    one for every image or one per image. A mask of zeros of any size (LoadImage's 64x64 stand-in for a
    photo without alpha) makes nothing transparent."""
    unit = np.asarray(images)
    unit = unit.astype(np.float32) / 255.0 if unit.dtype == np.uint8 else unit.astype(np.float32)
    if unit.ndim != 4 or unit.shape[3] not in (3, 4):
        raise InvalidParameterError(f"image: expected an NxHxWx3 batch, got an array of shape {unit.shape}")
    masks = np.asarray(mask, dtype=np.float32)
    masks = masks[None] if masks.ndim == 2 else masks
    if masks.ndim != 3:
        raise InvalidParameterError(f"mask: expected an HxW or NxHxW mask, got an array of shape {masks.shape}")
    masks = np.clip(np.nan_to_num(masks, nan=0.0), 0.0, 1.0)
    count, height, width = unit.shape[:3]
    if masks.shape[1:] != (height, width):
        if not masks.any():
            masks = np.zeros((1, height, width), np.float32)
        else:
            raise InvalidParameterError(
                f"mask: {masks.shape[2]}x{masks.shape[1]} does not match the image's {width}x{height}; connect "
                f"the MASK output of the Load Image node that loads this photo, or leave mask unconnected")
    if masks.shape[0] not in (1, count):
        raise InvalidParameterError(f"mask: {masks.shape[0]} masks for {count} images; give one mask, or one "
                                    f"per image")
    alpha = 1.0 - masks[:, :, :, None]
    if unit.shape[3] == 4:
        alpha = alpha * unit[:, :, :, 3:]
    return np.concatenate([unit[:, :, :, :3], np.broadcast_to(alpha, (count, height, width, 1))], axis=3)


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


@dataclass(frozen=True)
class ReceivedImage:
    """One image's bytes as the server sent them; `format` is Pillow's name for them (None: not recognised)."""
    data: bytes
    format: str | None

    @property
    def extension(self) -> str:
        """The usual file extension of the format; .bin for bytes Pillow does not recognise."""
        names = [ext for ext, name in Image.registered_extensions().items() if name == self.format]
        return ".jpg" if ".jpg" in names else names[0] if names else ".bin"

    def describe(self) -> str:
        return f"{self.format or 'unrecognised format'}, {len(self.data)} bytes"


# The list the current `keep_received_on_failure` block collects into (decoding runs in the caller's thread).
_received: contextvars.ContextVar[list[ReceivedImage] | None] = contextvars.ContextVar("received", default=None)


def decode_image(data: bytes, what: str) -> np.ndarray:
    """uint8 HxWx3 from encoded image bytes (PNG, JPEG, WebP, ...), or BadResponseError naming `what`.
    Inside `keep_received_on_failure` the bytes are also kept, decodable or not."""
    failure, kind = None, None
    try:
        with Image.open(io.BytesIO(data)) as pil:
            kind = pil.format
            pil.load()
            rgb = pil.convert("RGB")
    except Exception as exc:  # Pillow raises many types for broken data; all mean "not an image"
        failure = type(exc).__name__
    collected = _received.get()
    if collected is not None:
        collected.append(ReceivedImage(data, kind))
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


@contextlib.contextmanager
def keep_received_on_failure(folder: Path, stem: str):
    """Collects the images decoded inside the block (the yielded list). When the block fails after an
    image was received, the request was billed, so every received image is saved as received (see
    `save_received`): a RemoteError is raised again with where in its message, any other exception
    (a cancel, for one) unchanged after a warning that says where."""
    received: list[ReceivedImage] = []
    token = _received.set(received)
    try:
        yield received
    except RemoteError as error:
        if not received:
            raise
        amended = copy.copy(error)  # same type and attributes (status, maybe_billed, ...), longer message
        amended.args = (f"{error} {_save_all(received, folder, stem)}",)
        raise amended from None
    except BaseException:
        if received:
            logger.warning("%s", _save_all(received, folder, stem))
        raise
    finally:
        _received.reset(token)


def _save_all(received: list[ReceivedImage], folder: Path, stem: str) -> str:
    saved, failures = [], []
    for item in received:
        try:
            saved.append(str(save_received(item, folder, stem)))
        except OSError as exc:
            failures.append(exc.strerror or str(exc))
    note = f"The {len(received)} image(s) received were billed"
    if saved:
        note += f"; saved as received to {', '.join(saved)}"
    if failures:
        note += f"; {len(failures)} could not be saved ({'; '.join(failures)}) and are lost"
    return note + "."


def save_received(item: ReceivedImage, folder: Path, stem: str) -> Path:
    """The bytes unchanged in a new file <stem><ext> in `folder` (<stem>_2<ext>, ... when taken; no file is
    ever replaced), or, when that folder cannot take it (full, gone, read-only), in the system's
    temporary folder. OSError when neither can."""
    try:
        number = 1
        while True:
            path = Path(folder) / (f"{stem}{item.extension}" if number == 1 else f"{stem}_{number}{item.extension}")
            try:
                handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # a new file, the umask's mode
            except FileExistsError:
                number += 1
                continue
            return _fill(handle, path, item.data)
    except OSError as exc:
        logger.warning("cannot save the received image in %s (%s); saving it in the temporary folder", folder,
                       exc.strerror or exc)
    handle, name = tempfile.mkstemp(prefix=f"{stem}_", suffix=item.extension)  # private there: others share it
    return _fill(handle, Path(name), item.data)


def _fill(handle: int, path: Path, data: bytes) -> Path:
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)  # no half file left behind
        raise
    return path
