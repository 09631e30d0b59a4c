"""Reading a .safetensors header ourselves, so a wrong or broken file gets a precise error
before any tensor is loaded (pickles, truncated downloads, other model families)."""
from __future__ import annotations

import json
import os
import struct

from .errors import ModelFileError

_MAX_HEADER = 100 * 1024 * 1024
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def read_header(path: str, folder_hint: str) -> dict[str, dict]:
    """Tensor entries of a .safetensors file: {key: {"dtype", "shape", "data_offsets"}}.

    folder_hint names where the file should live, for the error messages."""
    name = os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith(_PICKLE_MAGIC):
            raise ModelFileError(
                f"{name} is a PyTorch pickle (.pt/.pth/.ckpt), not a safetensors file. "
                f"Download the .safetensors release and put it in {folder_hint}.")
        if len(head) < 8:
            raise ModelFileError(f"{name} is {size} bytes: empty or cut off. Download it again into {folder_hint}.")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > _MAX_HEADER or header_len + 8 > size:
            raise ModelFileError(
                f"{name} is not a valid safetensors file (header length {header_len} for a {size}-byte file): "
                f"the download is truncated or the file is of another format. Download it again into {folder_hint}.")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{name} has an unreadable safetensors header ({exc}). "
                                 f"Download it again into {folder_hint}.") from None
    header.pop("__metadata__", None)
    data_end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + header_len + data_end > size:
        raise ModelFileError(
            f"{name} is truncated: {size} bytes on disk, the header needs {8 + header_len + data_end}. "
            f"The download did not finish; download it again into {folder_hint}.")
    return header
