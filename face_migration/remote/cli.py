"""`python -m face_migration generate`: the hosted face-migration API from a shell.

Exit status: 0 images written; 2 bad arguments, unreadable image or no API key (nothing was sent);
1 the API or the network failed, or an image could not be written (the message says why, what to do, and
where a billed image was saved as received); 130 interrupted (Ctrl-C)."""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .client import GATEWAY_STATUSES, RETRY_STATUSES, FaceMigrationClient, RetryPolicy
from .errors import InvalidParameterError, RemoteError
from .images import DEFAULT_MAX_UPLOAD_SIDE, ReceivedImage, keep_received_on_failure, save_received
from .keys import ENV_VARS, KEY_FILENAME, find_api_key
from .params import (DEFAULT_MODEL, DEFAULT_SIZE, ENDPOINTS, ID_WEIGHT_FRACTIONS_NOTE, MAX_SEED, RANGES, SIZES,
                     FaceMigrationParams, api_url)

EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DESCRIPTION = ("Generate an image with the face from --image, described by --prompt, through the MoArk / "
               "Gitee AI face-migration API.")
EPILOG = (f"API key: --key-file, else the environment variable {ENV_VARS[0]} (or {ENV_VARS[1]}), else "
          f"ComfyUI/user/{KEY_FILENAME} when this pack sits in ComfyUI/custom_nodes. The key is never "
          f"taken as an argument (shell history would keep it). Each request is billed by the service; a "
          f"message says when a failed one may have been. Exit status: 0 ok, 1 API or network error, 2 bad "
          f"arguments / unreadable image / no key (nothing sent), 130 interrupted.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    ranges = {name: f"{low}..{high}" for name, (low, high, _, _) in RANGES.items()}
    defaults = {name: default for name, (_, _, default, _) in RANGES.items()}
    parser.add_argument("--image", required=True, type=Path, help="face reference photo (any format Pillow reads)")
    parser.add_argument("--prompt", required=True, help="what to generate, e.g. 'portrait, oil painting'")
    parser.add_argument("--out", required=True, type=Path,
                        help="output file (.png, .jpg, .webp); more images from one call go to NAME_2.EXT, ... "
                             "An existing --out stops the command before the request; a later name that is "
                             "taken is skipped for the next free NAME_<n>.EXT")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--size", default=DEFAULT_SIZE, choices=SIZES, metavar="WxH",
                        help=f"output size: {', '.join(SIZES)} (default %(default)s)")
    parser.add_argument("--guidance-scale", type=float, default=defaults["guidance_scale"],
                        help=f"prompt adherence, {ranges['guidance_scale']}, sent rounded to 0.1 as the API's "
                             f"schema steps (default %(default)s)")
    parser.add_argument("--steps", "--num-inference-steps", dest="num_inference_steps", type=int,
                        default=defaults["num_inference_steps"],
                        help=f"denoising steps, {ranges['num_inference_steps']} (default %(default)s)")
    parser.add_argument("--id-weight", type=float, default=defaults["id_weight"],
                        help=f"face strength, {ranges['id_weight']} (default %(default)s); fractions are sent "
                             f"as given, but {ID_WEIGHT_FRACTIONS_NOTE}")
    parser.add_argument("--id-timestep-start", type=int, default=defaults["id_timestep_start"],
                        help=f"step at which the face starts, {ranges['id_timestep_start']}; below --steps "
                             f"(default %(default)s)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"0..{MAX_SEED}; not sent when omitted (the server picks one)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name (default %(default)s)")
    parser.add_argument("--endpoint", default=ENDPOINTS[0],
                        help=f"API base URL: {' or '.join(ENDPOINTS)}, or a compatible server "
                             f"(default %(default)s)")
    parser.add_argument("--timeout", type=_seconds, default=180.0, help="seconds to wait for one answer "
                                                                        "(default %(default)s)")
    parser.add_argument("--max-attempts", type=_at_least(1), default=RetryPolicy.max_attempts,
                        help=f"tries while the server cannot have started the work: no connection, or HTTP "
                             f"{_statuses(RETRY_STATUSES)} (default %(default)s)")
    parser.add_argument("--retry-timeouts", action="store_true",
                        help=f"also send the request again after a read timeout, a broken answer or a gateway's "
                             f"HTTP {_statuses(GATEWAY_STATUSES, 'or')}; the server may have been working on it, so "
                             f"each try may be billed")
    parser.add_argument("--max-total-time", type=_seconds, default=RetryPolicy.max_total_time,
                        help="seconds for all tries and waits together (default %(default)s)")
    parser.add_argument("--max-upload-side", type=_at_least(64), default=DEFAULT_MAX_UPLOAD_SIDE,
                        help="downscale the photo so its longer side is at most this (default %(default)s)")
    parser.add_argument("--key-file", type=Path, default=None, help="file holding only the API token")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each request")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line, only errors")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        params = FaceMigrationParams(prompt=args.prompt, size=args.size, guidance_scale=args.guidance_scale,
                                     num_inference_steps=args.num_inference_steps, id_weight=args.id_weight,
                                     id_timestep_start=args.id_timestep_start, seed=args.seed,
                                     model=args.model).validated()
        api_url(args.endpoint)
        outputs = _Outputs(args.out, args.overwrite)
        image = _read_image(args.image)
        key = find_api_key(user_dir=_comfyui_user_dir(), key_file=args.key_file)
    except RemoteError as exc:
        return _fail(exc, EXIT_USAGE)

    progress = _Progress(enabled=not args.quiet and sys.stderr.isatty())
    client = FaceMigrationClient(key, args.endpoint, timeout=args.timeout, max_upload_side=args.max_upload_side,
                                 retry=RetryPolicy(max_attempts=args.max_attempts, max_total_time=args.max_total_time,
                                                   retry_timeouts=args.retry_timeouts),
                                 on_progress=progress)
    try:  # a failure after an image came (e.g. the next one is unreadable) saves it beside --out
        with keep_received_on_failure(args.out.parent, _received_stem(args.out)) as received:
            images = client.generate(image, params)
    except KeyboardInterrupt:
        progress.done()
        print("face-migration: interrupted; the server may still finish and bill the request.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RemoteError as exc:
        progress.done()
        return _fail(exc, EXIT_API)
    progress.done()
    status = EXIT_OK
    for index, (array, as_received) in enumerate(zip(images, received, strict=True)):
        path = outputs.free_path(index)
        try:
            _write_atomically(path, array)
        except Exception as exc:  # any failure: the image is billed, so it is kept as received
            print(f"face-migration: cannot write {path} ({_reason(exc)}); {_keep(as_received, path)}",
                  file=sys.stderr)
            status = EXIT_API
            continue
        print(path)
    return status


def _statuses(statuses, last: str = "and") -> str:
    ordered = [str(status) for status in sorted(statuses)]
    return ", ".join(ordered[:-1]) + f" {last} {ordered[-1]}" if len(ordered) > 1 else ordered[0]


def _seconds(text: str) -> float:
    """argparse type: a positive, finite number (float() also accepts 'nan' and 'inf')."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive, finite number of seconds, e.g. 120")
    return value


def _at_least(minimum: int):
    """argparse type: a whole number >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {minimum}")
        return value
    return parse


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def _received_stem(path: Path) -> str:
    return f"{path.stem}.received"


def _keep(item: ReceivedImage, path: Path) -> str:
    """Saves a billed image that could not be written as asked; the sentence that says where."""
    try:
        kept = save_received(item, path.parent, _received_stem(path))
    except OSError as exc:
        return (f"the billed image ({item.describe()}) could not be saved anywhere either ({_reason(exc)}) "
                f"and is lost.")
    return f"the billed image was saved as received ({item.describe()}) to {kept}."


def _fail(exc: Exception, code: int) -> int:
    print(f"face-migration: {exc}", file=sys.stderr)
    return code


class _Outputs:
    """Where the images go: --out, then NAME_2.EXT, NAME_3.EXT, ... A file is replaced only with
    --overwrite. Without it, an existing --out stops the command before the (paid) request, and an image
    whose name is taken by then goes to the next free NAME_<n>.EXT, with a note on stderr."""

    def __init__(self, out: Path, overwrite: bool):
        self.out, self.overwrite = out, overwrite
        self._check()

    def _check(self) -> None:
        out, extension = self.out, self.out.suffix.lower()
        kind = Image.registered_extensions().get(extension)
        if kind is None:
            raise InvalidParameterError(f"--out {out}: unknown image extension '{extension}'; use .png, .jpg or .webp")
        if kind not in Image.SAVE:  # Pillow reads many formats it cannot write (PSD, FLI, ...)
            raise InvalidParameterError(f"--out {out}: Pillow reads {kind} images but cannot write them; use .png, "
                                        f".jpg or .webp")
        try:  # some writers refuse a colour image (XBM, MSP) or need a missing plugin: find out before paying
            Image.new("RGB", (16, 16)).save(io.BytesIO(), format=kind)
        except Exception as exc:  # Pillow raises many types for this
            raise InvalidParameterError(f"--out {out}: Pillow cannot write a colour image as {kind} "
                                        f"({_reason(exc)}); use .png, .jpg or .webp") from None
        if out.is_dir():
            raise InvalidParameterError(f"--out {out} is a folder; give a file name such as "
                                        f"{out / ('face' + extension)}")
        if not out.parent.exists():
            raise InvalidParameterError(f"--out {out}: the folder {out.parent} does not exist; create it first")
        if not out.parent.is_dir():
            raise InvalidParameterError(f"--out {out}: {out.parent} is not a folder; choose a file inside a folder")
        if os.path.lexists(out) and not self.overwrite:
            raise InvalidParameterError(f"--out {out} exists; pass --overwrite to replace it, or choose another name")
        try:  # the way the image will be written, so permissions, read-only disks and quotas all show now
            os.unlink(_temp_file_beside(out))
        except OSError as exc:
            raise InvalidParameterError(f"--out {out}: cannot write in the folder {out.parent} "
                                        f"({exc.strerror or type(exc).__name__}); choose a folder you can write "
                                        f"to") from None

    def free_path(self, index: int) -> Path:
        wanted = self._numbered(index + 1)
        if self.overwrite or not os.path.lexists(wanted):
            return wanted
        number = max(index + 1, 2)
        while os.path.lexists(path := self._numbered(number)):
            number += 1
        print(f"face-migration: {wanted} exists; wrote {path} instead (--overwrite replaces files)", file=sys.stderr)
        return path

    def _numbered(self, number: int) -> Path:
        return self.out if number == 1 else self.out.with_name(f"{self.out.stem}_{number}{self.out.suffix}")


def _write_atomically(path: Path, array) -> None:
    """The image into a temporary file beside `path`, then renamed over it: nobody sees half an image,
    and a failed write leaves the old file as it was."""
    temp = _temp_file_beside(path)
    try:
        Image.fromarray(array, "RGB").save(temp)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp made it private; give it a new file's usual mode
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _temp_file_beside(path: Path) -> str:
    """A new, empty, hidden file in the folder of `path` (same disk, so os.replace is atomic)."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    return name


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _read_image(path: Path):
    """The photo as an HxWx3 array, or HxWx4 when it has transparency (the client lays that onto white)."""
    try:
        with Image.open(path) as pil:
            pil = ImageOps.exif_transpose(pil)  # phone photos store their rotation in EXIF
            transparent = pil.mode in ("RGBA", "LA", "PA") or "transparency" in pil.info
            return np.asarray(pil.convert("RGBA" if transparent else "RGB"))
    except FileNotFoundError:
        raise InvalidParameterError(f"--image {path}: no such file") from None
    except Exception as exc:  # Pillow raises many types for unreadable files
        raise InvalidParameterError(f"--image {path}: not a readable image ({type(exc).__name__}: {exc})") from None


def _comfyui_user_dir() -> Path | None:
    """ComfyUI/user when this pack is installed as ComfyUI/custom_nodes/<pack>; the node reads the same file."""
    pack = Path(__file__).resolve().parents[2]
    return pack.parents[1] / "user" if pack.parent.name == "custom_nodes" else None


class _Progress:
    """One rewritten line on a terminal: elapsed time and try number."""

    def __init__(self, enabled: bool):
        self.enabled, self.shown = enabled, False

    def __call__(self, elapsed: float, attempt: int) -> None:
        if self.enabled:
            try_note = f", try {attempt}" if attempt > 1 else ""
            sys.stderr.write(f"\rwaiting for the face-migration server: {elapsed:4.0f} s{try_note} ")
            sys.stderr.flush()
            self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            self.shown = False
