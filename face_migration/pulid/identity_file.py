"""Face identities as files: a PULID_ID saved to, and read back from, a small .safetensors file.

Keeping the identity lets a workflow apply a face without the photo pipeline (detector, EVA-CLIP, face
parsing) and share it without sharing the photo. Layout of format version 1:

  tensors   cond, uncond  float32 [N, T, D], finite, same shape: the ID tokens as Encode Face made them
            thumbnail     uint8 [H, W, 3], optional, at most 256 x 256: the aligned, parsed face crop the
                          encoder saw (grey face on white), never a reference photo
  metadata  format, format_version, model_fingerprint (the PuLID weights it was made with), references,
            combine, pack_version; faces_used when known

Files are read without pickle (safetensors), refused above MAX_FILE_BYTES, and checked key by key before
any tensor is used; every error names the file and, kept short, at most a few of its keys. A file may be
the user's own (Save Identity) or shared, so the advice fits both. New files get the umask's mode, as
ComfyUI's outputs do. Also `python -m face_migration identity info FILE`.
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .. import __version__
from ..errors import IdentityFileError, ModelFileError
from ..face.resample import resize_linear
from ..safetensors_file import read_header
from .identity import PulidIdentity

FORMAT = "face_migration.pulid_identity"
FORMAT_VERSION = "1"
FOLDER = "pulid_identities"  # ComfyUI model folder (models/pulid_identities, extra_model_paths.yaml key)
EXTENSION = ".safetensors"
MAX_FILE_BYTES = 256 * 1024 * 1024  # ~500 references in concat mode at FLUX's token width
THUMBNAIL_SIZE = 128
MAX_THUMBNAIL_EDGE = 256
COMBINE_MODES = ("mean", "concat")
TOKEN_KEYS = ("cond", "uncond")
THUMBNAIL_KEY = "thumbnail"
# metadata key -> (required, check of the string value, what is expected)
_INT = re.compile(r"[1-9][0-9]{0,8}")
METADATA = {
    "format": (True, lambda v: v == FORMAT, f"'{FORMAT}'"),
    "format_version": (True, lambda v: v == FORMAT_VERSION, f"'{FORMAT_VERSION}'"),
    "model_fingerprint": (True, re.compile(r"[0-9a-f]{16}").fullmatch, "16 hexadecimal digits"),
    "references": (True, _INT.fullmatch, "a whole number >= 1"),
    "faces_used": (False, _INT.fullmatch, "a whole number >= 1"),
    "combine": (True, lambda v: v in COMBINE_MODES, f"one of {', '.join(COMBINE_MODES)}"),
    "pack_version": (True, re.compile(r"[0-9A-Za-z.+-]{1,32}").fullmatch, "a version such as 0.1.0"),
}
_DTYPE_NAMES = {torch.float32: "F32", torch.uint8: "U8"}
_SAFE_NAME = re.compile(r"[^\W][\w .()-]{0,119}")  # letters, digits, space and ._-() ; no path separators
SHOWN_KEYS = 3  # keys named in an error; a model file has thousands
SHOWN_VALUE = 40  # characters of a metadata value in an error
# For a file that is cut off or damaged: it may have been saved here or copied from someone.
REWRITE_ADVICE = ("Save the identity again with Save Identity (for a shared file, ask whoever shared it for a "
                  "new copy).")


@dataclass(frozen=True)
class SavedIdentity:
    identity: PulidIdentity
    thumbnail: np.ndarray | None  # [H, W, 3] uint8
    metadata: dict[str, str]


def identity_file_name(name: str) -> str:
    """`name` as a file name in the identities folder, or an error saying which names are allowed."""
    stem = name[:-len(EXTENSION)] if name.endswith(EXTENSION) else name
    if not _SAFE_NAME.fullmatch(stem):
        raise IdentityFileError(
            f"Identity name '{name}' is not allowed: use 1-120 letters, digits, spaces or . _ - ( ), starting "
            f"with a letter or digit, and no folder separators (the file goes in models/{FOLDER}/).")
    return stem + EXTENSION


def face_thumbnail(preview: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """The aligned face crop of an Encode Face preview (right half: what EVA-CLIP saw), size x size uint8.
    The left half, the photo itself, is never kept."""
    height = preview.shape[0]
    if preview.ndim != 3 or preview.shape[2] != 3 or preview.dtype != np.uint8 or preview.shape[1] != 2 * height:
        raise IdentityFileError(
            f"The preview given to Save Identity has shape {tuple(preview.shape)} ({preview.dtype}); expected "
            f"Encode Face's preview: RGB uint8 [H, 2H, 3], photo on the left, aligned face crop on the right. "
            f"Connect Encode Face's 'preview' output, or turn the thumbnail off.")
    crop = preview[:, height:]
    return resize_linear(crop, (size, size))


def _metadata_for(identity: PulidIdentity) -> dict[str, str]:
    info = identity.info
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_fingerprint": identity.model_fingerprint,
                "references": str(int(info.get("references", identity.cond.shape[0]))),
                "combine": str(info.get("combine", "mean")), "pack_version": __version__}
    if "faces_used" in info:
        metadata["faces_used"] = str(int(info["faces_used"]))
    return metadata


def identity_to_bytes(identity: PulidIdentity, thumbnail: np.ndarray | None = None) -> bytes:
    tensors = {key: getattr(identity, key).detach().to("cpu", torch.float32).contiguous() for key in TOKEN_KEYS}
    if thumbnail is not None:
        tensors[THUMBNAIL_KEY] = torch.from_numpy(np.ascontiguousarray(thumbnail, dtype=np.uint8))
    metadata = _metadata_for(identity)
    problems = _tensor_problems({k: (_DTYPE_NAMES[v.dtype], list(v.shape)) for k, v in tensors.items()})
    problems += _metadata_problems(metadata) + _value_problems(tensors)
    if problems:
        raise IdentityFileError(f"This identity cannot be saved: {'; '.join(problems)}.")
    data = save(tensors, metadata)
    if len(data) > MAX_FILE_BYTES:
        raise IdentityFileError(f"This identity would take {len(data):,} bytes, more than the {MAX_FILE_BYTES:,} a "
                                f"face identity file may hold. Encode fewer references, or use combine = mean.")
    return data


def save_identity(identity: PulidIdentity, path: str, thumbnail: np.ndarray | None = None) -> None:
    """Write atomically: a crash or a full disk leaves either the old file or the new one, never half of one."""
    data = identity_to_bytes(identity, thumbnail)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".saving-{secrets.token_hex(8)}.tmp")
    # Mode 0o666 less the umask, as for ComfyUI's outputs (mkstemp's files are 0600, readable by no one else).
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _some(keys: list[str]) -> str:
    """The first few keys in sorted order, quoted, and how many more there are."""
    shown = ", ".join(f"'{k}'" for k in sorted(keys)[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS:,} more" if len(keys) > SHOWN_KEYS else "")


def _tensor_problems(entries: dict[str, tuple[str, list[int]]]) -> list[str]:
    """Key-by-key check of the tensor table {key: (dtype, shape)}."""
    unexpected = [k for k in entries if k not in (*TOKEN_KEYS, THUMBNAIL_KEY)]
    problems = [f"unexpected tensor{'s' if len(unexpected) > 1 else ''} {_some(unexpected)}"] if unexpected else []
    problems += [f"tensor '{k}' is missing" for k in TOKEN_KEYS if k not in entries]
    for key in TOKEN_KEYS:
        if key in entries:
            dtype, shape = entries[key]
            if dtype != "F32" or len(shape) != 3 or 0 in shape:
                problems.append(f"tensor '{key}' is {dtype} {shape}, expected F32 [N, T, D] with no empty dimension")
    if all(k in entries for k in TOKEN_KEYS) and entries["cond"][1] != entries["uncond"][1]:
        problems.append(f"'cond' {entries['cond'][1]} and 'uncond' {entries['uncond'][1]} differ in shape")
    if THUMBNAIL_KEY in entries:
        dtype, shape = entries[THUMBNAIL_KEY]
        if dtype != "U8" or len(shape) != 3 or shape[2] != 3 or not all(0 < s <= MAX_THUMBNAIL_EDGE for s in shape[:2]):
            problems.append(f"tensor 'thumbnail' is {dtype} {shape}, expected U8 [H, W, 3] with H, W in "
                            f"1..{MAX_THUMBNAIL_EDGE}")
    return problems


def _metadata_problems(metadata: dict[str, str]) -> list[str]:
    unexpected = [k for k in metadata if k not in METADATA]
    problems = [f"unexpected metadata {_some(unexpected)}"] if unexpected else []
    for key, (required, accepts, expected) in METADATA.items():
        value = metadata.get(key)
        if value is None:
            if required:
                problems.append(f"metadata '{key}' is missing")
        elif not isinstance(value, str) or not accepts(value):
            shown = repr(value) if len(repr(value)) <= SHOWN_VALUE else repr(value)[:SHOWN_VALUE] + "..."
            problems.append(f"metadata '{key}' is {shown}, expected {expected}")
    return problems


def _value_problems(tensors: dict[str, torch.Tensor]) -> list[str]:
    return [f"tensor '{k}' holds NaN or infinite values" for k in TOKEN_KEYS if not torch.isfinite(tensors[k]).all()]


def _refuse(path: str, problems: list[str]):
    raise IdentityFileError(
        f"{path} is not a valid face identity file ({FORMAT} version {FORMAT_VERSION}): {'; '.join(problems)}. "
        f"{REWRITE_ADVICE}")


def _refuse_other_file(path: str, keys: list[str]):
    """A safetensors file without ID tokens: most likely a model put into the identities folder."""
    raise IdentityFileError(
        f"{path} is not a face identity file: it holds {len(keys):,} tensor{'s' if len(keys) != 1 else ''} "
        f"({_some(keys) or 'none'}) and no ID tokens ('cond', 'uncond'). A model file belongs in its own models "
        f"folder (a PuLID file in models/pulid); models/{FOLDER}/ holds only identities written by Save Identity.")


def load_identity(path: str) -> SavedIdentity:
    """Read and check an identity file; IdentityFileError naming the file when anything is off."""
    if not os.path.isfile(path):
        raise IdentityFileError(f"Face identity file {path} does not exist. Save one with Save Identity, or put "
                                f"a shared .safetensors identity into models/{FOLDER}/ and refresh the browser.")
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        _refuse(path, [f"it is {size:,} bytes, a face identity file holds at most {MAX_FILE_BYTES:,}"])
    try:
        header = read_header(path, f"models/{FOLDER}", fix="")
        entries = {k: (str(v["dtype"]), [int(s) for s in v["shape"]]) for k, v in header.items()}
    except ModelFileError as exc:
        _refuse(path, [str(exc).rstrip(". ")])
    if not any(key in entries for key in TOKEN_KEYS):
        _refuse_other_file(path, list(entries))
    problems = _tensor_problems(entries)
    try:
        with safe_open(path, framework="pt", device="cpu") as reader:
            metadata = reader.metadata() or {}
            problems += _metadata_problems(metadata)
            if problems:
                _refuse(path, problems)
            tensors = {key: reader.get_tensor(key) for key in header}
    except SafetensorError as exc:
        _refuse(path, [f"safetensors could not read it ({exc})"])
    problems = _value_problems(tensors)
    if problems:
        _refuse(path, problems)
    info = {key: (int(metadata[key]) if key in ("references", "faces_used") else metadata[key])
            for key in ("references", "faces_used", "combine") if key in metadata}
    info["file"] = os.path.basename(path)  # named by Apply's error when the PuLID model does not fit
    identity = PulidIdentity(tensors["cond"], tensors["uncond"], metadata["model_fingerprint"], info)
    thumbnail = tensors[THUMBNAIL_KEY].numpy() if THUMBNAIL_KEY in tensors else None
    return SavedIdentity(identity, thumbnail, dict(metadata))


def matches(saved: SavedIdentity, identity: PulidIdentity, thumbnail: np.ndarray | None) -> bool:
    """Whether a file already holds exactly this identity (and thumbnail): saving it again changes nothing."""
    same_thumbnail = (saved.thumbnail is None and thumbnail is None) or (
        saved.thumbnail is not None and thumbnail is not None and np.array_equal(saved.thumbnail, thumbnail))
    return (same_thumbnail and saved.identity.model_fingerprint == identity.model_fingerprint
            and all(torch.equal(getattr(saved.identity, k), getattr(identity, k).to("cpu", torch.float32))
                    for k in TOKEN_KEYS))


def describe(saved: SavedIdentity, path: str) -> str:
    """What an identity file holds, as readable lines."""
    identity, meta = saved.identity, saved.metadata
    n, tokens, width = identity.cond.shape
    lines = [f"file: {path} ({os.path.getsize(path):,} bytes)",
             f"format: {meta['format']} version {meta['format_version']}, "
             f"saved by pack version {meta['pack_version']}",
             f"PuLID weights fingerprint: {meta['model_fingerprint']} "
             "(Load Identity checks it against the PuLID model)",
             f"references: {meta['references']}"
             + (f", faces used: {meta['faces_used']}" if "faces_used" in meta else "")
             + f", combine: {meta['combine']}",
             f"ID tokens: cond and uncond, {n} x {tokens} x {width} float32",
             "thumbnail: " + (f"{saved.thumbnail.shape[1]} x {saved.thumbnail.shape[0]} aligned face crop"
                              if saved.thumbnail is not None else "none")]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (f"Face identity files (models/{FOLDER}/*.safetensors, written by the Save Identity node).")
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    info = actions.add_parser("info", help="print what an identity file holds, after checking it")
    info.add_argument("file", help="a .safetensors identity file")


def run(args: argparse.Namespace, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        saved = load_identity(args.file)
    except IdentityFileError as exc:
        err.write(f"identity info: {exc}\n")
        return 1
    out.write(describe(saved, args.file) + "\n")
    return 0
