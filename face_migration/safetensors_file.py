"""Reading a .safetensors header ourselves, so a wrong or broken file gets a precise error
before any tensor is loaded (pickles, truncated downloads, edited headers, other model families).

The checks are those the safetensors format itself imposes (the library refuses such files too, but
with a bare SafetensorError that names neither the file nor the fix): the header is a JSON object of
entries {"dtype", "shape", "data_offsets"} (plus an optional "__metadata__" of text values), each
entry's byte range holds exactly its shape in its dtype, and the ranges tile the data without gaps
or overlaps up to the end of the file.
"""
from __future__ import annotations

import json
import math
import os
import struct

from .errors import ModelFileError

_MAX_HEADER = 100 * 1024 * 1024
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
METADATA_KEY = "__metadata__"
# Bytes per element of the dtypes of the safetensors format.
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry_problem(key: str, entry) -> str | None:
    """What is wrong with one tensor entry of a header, or None."""
    if not isinstance(entry, dict):
        return f"entry {key!r} is a {type(entry).__name__}, not an object"
    missing = [field for field in ("dtype", "shape", "data_offsets") if field not in entry]
    if missing:
        return f"tensor {key!r} has no {' or '.join(missing)}"
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_SIZES:
        return f"tensor {key!r} has the unknown dtype {dtype!r} (expected one of {', '.join(DTYPE_SIZES)})"
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        return f"tensor {key!r} has the shape {shape!r}, not a list of non-negative integers"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        return f"tensor {key!r} has data_offsets {offsets!r}, not two non-negative integers"
    begin, end = offsets
    needed = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != needed:
        return (f"tensor {key!r} ({dtype} {shape}) needs {needed} bytes but its data_offsets {offsets} "
                f"span {end - begin}")
    return None


def _header_problem(header) -> str | None:
    """What is wrong with a parsed header (the JSON value), or None."""
    if not isinstance(header, dict):
        return f"the header is a JSON {type(header).__name__}, not an object of tensor entries"
    metadata = header.get(METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return f"its {METADATA_KEY} is not an object of text values"
    for key, entry in header.items():
        if key != METADATA_KEY and (problem := _entry_problem(key, entry)):
            return problem
    return None


def _layout_problem(entries: dict[str, dict], data_size: int) -> str | None:
    """Gaps or overlaps between the tensors' byte ranges, or data left over after the last one."""
    position = 0
    for key, entry in sorted(entries.items(), key=lambda item: tuple(item[1]["data_offsets"])):
        begin, end = entry["data_offsets"]
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else f"leaves a gap of {begin - position} bytes"
            return f"tensor {key!r} (data_offsets {entry['data_offsets']}) {what}"
        position = end
    if position != data_size:
        return f"{data_size - position} bytes follow the last tensor"
    return None


def _refuse_damaged(name: str, problem: str | None, folder_hint: str, fix: str | None) -> None:
    if problem:
        damaged = f"{name} has a damaged safetensors header: {problem}. The file was edited or written by a broken tool"
        raise ModelFileError(f"{damaged}; download it again into {folder_hint}." if fix is None else
                             _advised(f"{damaged}.", fix, ""))


def _advised(message: str, fix: str | None, download_advice: str) -> str:
    """The message with its fix: the caller's, else the advice for a downloaded file ("" adds none)."""
    advice = download_advice if fix is None else fix
    return f"{message} {advice}" if advice else message


def read_header(path: str, folder_hint: str, fix: str | None = None) -> dict[str, dict]:
    """Tensor entries of a .safetensors file: {key: {"dtype", "shape", "data_offsets"}}, checked as the
    format requires. folder_hint names where the file should live, for the error messages. `fix` replaces
    the advice to download the file again, for files the user writes rather than downloads ("" for none)."""
    name = os.path.basename(path)
    size = os.path.getsize(path)
    again = f"Download it again into {folder_hint}."
    cut = "the download is truncated" if fix is None else "it is cut off"
    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith(_PICKLE_MAGIC):
            raise ModelFileError(_advised(f"{name} is a PyTorch pickle (.pt/.pth/.ckpt), not a safetensors file.",
                                          fix, f"Download the .safetensors release and put it in {folder_hint}."))
        if len(head) < 8:
            raise ModelFileError(_advised(f"{name} is {size} bytes: empty or cut off.", fix, again))
        (header_len,) = struct.unpack("<Q", head)
        if header_len > _MAX_HEADER or header_len + 8 > size:
            raise ModelFileError(_advised(
                f"{name} is not a valid safetensors file (header length {header_len} for a {size}-byte file): "
                f"{cut} or the file is of another format.", fix, again))
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(_advised(f"{name} has an unreadable safetensors header ({exc}).", fix,
                                          again)) from None
    _refuse_damaged(name, _header_problem(header), folder_hint, fix)
    header.pop(METADATA_KEY, None)
    data_size = size - 8 - header_len
    data_end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if data_end > data_size:
        raise ModelFileError(_advised(
            f"{name} is truncated: {size} bytes on disk, the header needs {8 + header_len + data_end}.", fix,
            f"The download did not finish; download it again into {folder_hint}."))
    _refuse_damaged(name, _layout_problem(header, data_size), folder_hint, fix)
    return header
