"""The hosted request and answer, exactly: a multipart form (file `image`; fields `model`, `size` or
`width`+`height`, `guidance_scale`, `num_inference_steps`, `id_weight`, `id_timestep_start`, `prompt`, optional
`seed`) in,
{"data": [{"b64_json": ...}], "created": ...} or {"message": ...} out; a 503's body also says whether
sending the request again can help ("retryable"). Ranges and sizes are the remote client's
(remote/params.py), so both sides of the wire agree. Error bodies never hold a server path, file name or
traceback: those go to the server's log, one line per refused request, a traceback only for a fault of
the route itself."""
from __future__ import annotations

import base64
import dataclasses
import io
import logging
import math
import random
import time
from dataclasses import dataclass

from PIL import Image

from ..errors import ApiImageTooLargeError, ApiRequestError, ApiUnavailableError
from ..remote.params import DEFAULT_MODEL, DEFAULT_SIZE, MAX_SEED, RANGES, FaceMigrationParams

logger = logging.getLogger(__name__)

IMAGE_FIELD = "image"
TEXT_FIELDS = ("model", "size", "width", "height", *RANGES, "prompt", "seed")
# The hosted schema's other way to ask for a size: width and height together, never with `size`. The hosted
# API takes 8..1024 in steps of 8; the templates' latent node (EmptySD3LatentImage) takes at least 16 in
# steps of 16, so the route accepts what both allow: 16..1024 in steps of 16.
DIMENSION_MIN, DIMENSION_MAX, DIMENSION_STEP = 16, 1024, 16
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 25_000_000  # about 5000 x 5000
# What Pillow may decode for us; the suffix the upload gets in ComfyUI's temp folder.
IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tiff"}


@dataclass(frozen=True)
class FaceMigrationRequest:
    params: FaceMigrationParams  # seed always set: the server picks one when the request has none
    image: bytes
    image_suffix: str
    width: int
    height: int


def check_upload_size(received: int) -> None:
    """Called while the upload streams in, so an oversized body is refused before it is all read."""
    if received > MAX_UPLOAD_BYTES:
        raise ApiImageTooLargeError(f"image: the upload is over {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB; send a "
                                    f"smaller file (the face only needs about 1024 pixels on its long side)")


def parse_request(fields: dict[str, list[str]], files: dict[str, list[bytes]]) -> FaceMigrationRequest:
    """Validate a received form: `fields` are the text parts, `files` the file parts, by name, in order.
    Raises ApiRequestError (400) naming every bad field, or ApiImageTooLargeError (413)."""
    unknown = sorted((set(fields) - set(TEXT_FIELDS) - {IMAGE_FIELD}) | (set(files) - {IMAGE_FIELD}))
    if unknown:
        raise ApiRequestError(f"unknown field(s) {', '.join(unknown)}; the API accepts the file '{IMAGE_FIELD}' "
                              f"and the fields {', '.join(TEXT_FIELDS)}")
    repeated = sorted(name for name, values in [*fields.items(), *files.items()] if len(values) > 1)
    if repeated:
        raise ApiRequestError(f"field(s) {', '.join(repeated)} sent more than once; send each field once")
    if IMAGE_FIELD in fields or IMAGE_FIELD not in files:
        raise ApiRequestError(f"{IMAGE_FIELD}: missing; send the face photo as the multipart file field "
                              f"'{IMAGE_FIELD}' (files={{'{IMAGE_FIELD}': (name, open(path, 'rb'))}} with requests)")
    params = _params({name: values[0] for name, values in fields.items()})
    image = files[IMAGE_FIELD][0]
    check_upload_size(len(image))
    suffix, width, height = inspect_image(image)
    return FaceMigrationRequest(params, image, suffix, width, height)


def _params(values: dict[str, str]) -> FaceMigrationParams:
    problems, numbers = [], {}
    for name, (_, _, default, integer) in RANGES.items():
        numbers[name] = _number(name, values.get(name), default, integer, problems)
    seed = _number("seed", values.get("seed"), None, True, problems)
    dimensions = _dimensions(values, problems)
    if problems:
        raise ApiRequestError("; ".join(problems))
    params = FaceMigrationParams(prompt=values.get("prompt", ""), size=values.get("size", DEFAULT_SIZE),
                                 model=values.get("model", DEFAULT_MODEL).strip(), seed=seed, **numbers)
    problems = params.problems()
    if problems:
        raise ApiRequestError("; ".join(problems))
    if dimensions:  # checked by _dimensions; `size` keeps the offered list for the client side of the wire
        params = dataclasses.replace(params, size="{}x{}".format(*dimensions))
    if seed is None:
        params = dataclasses.replace(params, seed=random.randint(0, MAX_SEED))
    return params


def _dimensions(values: dict[str, str], problems: list[str]) -> tuple[int, int] | None:
    """(width, height) when the request asks for its size that way, else None (then `size` applies)."""
    given = [name for name in ("width", "height") if name in values]
    if not given:
        return None
    if "size" in values:
        problems.append("size: sent together with width/height; send either size or both width and height")
        return None
    if len(given) == 1:
        missing = "height" if given == ["width"] else "width"
        problems.append(f"{missing}: missing; width and height are sent together (or send size instead)")
        return None
    dimensions = []
    for name in ("width", "height"):
        value = _number(name, values[name], None, True, problems)
        if value is None:
            continue
        if not isinstance(value, int) or not DIMENSION_MIN <= value <= DIMENSION_MAX or value % DIMENSION_STEP:
            problems.append(f"{name}: {value} must be a multiple of {DIMENSION_STEP} in "
                            f"{DIMENSION_MIN}..{DIMENSION_MAX} (the steps this server's models work in)")
        dimensions.append(value)
    return tuple(dimensions) if len(dimensions) == 2 and not problems else None


def _number(name: str, text: str | None, default, integer: bool, problems: list[str]):
    """A form value as a number; "4" and "4.0" are both 4 for whole-number fields (clients format numbers
    differently). Range checks are FaceMigrationParams.problems()'s."""
    if text is None or (name == "seed" and not text.strip()):
        return default
    try:
        value = float(text.strip())
    except ValueError:
        problems.append(f"{name}: {text[:40]!r} is not a number")
        return default
    if not math.isfinite(value):
        problems.append(f"{name}: {text[:40]!r} is not a finite number")
        return default
    if integer and value == int(value):
        return int(value)
    return value


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """(suffix, width, height) of an upload. The pixel count is read from the header and checked before
    any pixel is decoded; then the whole image is decoded once so a broken file is a 400 here rather than
    a failed prompt later."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in IMAGE_FORMATS:
                raise ApiRequestError(f"image: {image.format} files are not accepted; send "
                                      f"{', '.join(IMAGE_FORMATS)}")
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ApiImageTooLargeError(f"image: {width}x{height} pixels is over the limit of "
                                            f"{MAX_IMAGE_PIXELS} pixels; send a smaller image")
            image.load()
    except ApiRequestError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ApiRequestError(f"image: not a readable image ({type(exc).__name__}); send a PNG, JPEG or "
                              f"WEBP photo") from None
    return IMAGE_FORMATS[image.format], width, height


def image_answer(images: list[bytes], created: float | None = None) -> dict:
    """The hosted answer: one data item per image (PNG bytes)."""
    return {"data": [{"b64_json": base64.b64encode(png).decode("ascii")} for png in images],
            "created": int(time.time() if created is None else created)}


def error_answer(error: BaseException) -> tuple[int, dict]:
    """The status and body for whatever a request ended with, and its log line. A refusal (ApiRequestError)
    is one line with the details only the log gets; a client gone mid-request (a ConnectionError while its
    body is read) is one line; anything else is a fault of the route: a 500 and the traceback in the log."""
    if isinstance(error, ApiRequestError):
        said = f"{error} [{error.detail}]" if error.detail else str(error)
        logger.log(logging.WARNING if error.status >= 500 else logging.INFO, "face-migration API: %d %s",
                   error.status, said)
        body = {"message": str(error)}
        if isinstance(error, ApiUnavailableError):
            body["retryable"] = error.retryable
        return error.status, body
    if isinstance(error, ConnectionError):
        logger.info("face-migration API: the client went away during its request (%s)", type(error).__name__)
        return 400, {"message": "the request was cut off before it was read; send it again"}
    logger.error("face-migration API: the route failed", exc_info=error)
    return 500, {"message": "the face-migration route failed on this server; its owner finds the cause in the "
                            "server log"}
