"""ComfyUI IMAGE tensors ([batch, height, width, channels], floats in 0..1) as the RGB uint8 photos the
face pipeline reads, with an error naming the input and the image for anything it cannot use.

Accepted: any float precision (fp32, and the bf16 / fp16 a model may output), 1, 3 or 4 channels (grey is
repeated, alpha is dropped), on any device. Refused: an empty batch, an image with no pixels, NaN or
infinite values (they would be silently clipped into a wrong photo). The conversion runs in row chunks,
so the extra memory is the uint8 photo plus one small chunk, whatever the photo's size (a float copy
of an 8000 x 6000 photo would be 550 MiB more).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InvalidInputError

CHANNELS = (1, 3, 4)
# float32 working buffer per chunk of rows: small next to any large photo's uint8 copy.
CHUNK_BYTES = 4 << 20


def to_rgb_uint8(image, label: str = "the image") -> np.ndarray:
    """One image [H, W, 1|3|4] (torch tensor or numpy array, float in 0..1) as RGB uint8 [H, W, 3]
    (rounded to the nearest level, clipped to 0..255). label names the image in errors."""
    image = torch.as_tensor(image)
    if image.ndim != 3 or image.shape[-1] not in CHANNELS:
        raise InvalidInputError(f"{label} has shape {list(image.shape)}; expected an image [height, width, "
                                "channels] with 1, 3 or 4 channels.")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise InvalidInputError(f"{label} is {width} x {height} pixels: it has no pixels. Check the node that "
                                "made it (a crop or resize to 0).")
    out = np.empty((height, width, 3), np.uint8)
    rows = max(1, CHUNK_BYTES // (width * 3 * 4))
    buffer = np.empty((rows, width, 3), np.float32)
    for top in range(0, height, rows):
        chunk = image[top:top + rows, :, :3].float().cpu().numpy()  # one channel broadcasts to three
        work = buffer[:len(chunk)]
        np.multiply(chunk, 255.0, out=work)
        with np.errstate(over="ignore"):  # a sum of huge but finite values may overflow: then look closer
            finite = np.isfinite(work.sum()) or np.isfinite(chunk).all()
        if not finite:
            raise _non_finite(image, label)
        np.rint(work, out=work)
        np.clip(work, 0, 255, out=work)
        out[top:top + len(chunk)] = work
    return out


def _non_finite(image: torch.Tensor, label: str) -> InvalidInputError:
    bad = image[..., :3].isfinite().logical_not()
    return InvalidInputError(
        f"{label} has {int(bad.sum())} non-finite pixel values (NaN or infinity) in {int(bad.any(-1).sum())} "
        "pixel(s); expected numbers in 0..1. The node that made it overflowed (e.g. a VAE decode in fp16: "
        "start ComfyUI with --bf16-vae or --fp32-vae) or divided by zero; fix that node's output.")


def photos_from_batch(images, node: str, input_name: str) -> list[np.ndarray]:
    """Every image of a ComfyUI IMAGE batch as RGB uint8. node and input_name (e.g. "Encode Face",
    "image") name the input in errors."""
    what = f"{node} input '{input_name}'"
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[-1] not in CHANNELS:
        raise InvalidInputError(f"{what} has shape {list(images.shape)}; expected a ComfyUI IMAGE [batch, height, "
                                "width, channels] with 1, 3 or 4 channels.")
    if len(images) == 0:
        raise InvalidInputError(f"{what} is an empty batch (0 images). Connect a node that outputs at least one "
                                "image (e.g. Load Image), or check the node that filtered the batch.")
    return [to_rgb_uint8(image, f"{what}, image {i}" if len(images) > 1 else what) for i, image in enumerate(images)]
