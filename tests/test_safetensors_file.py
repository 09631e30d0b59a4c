"""Malformed .safetensors headers: every loader that reads one answers with ModelFileError naming the
file and the fix, never a raw TypeError, KeyError or SafetensorError."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from face_migration.catalog import BY_KEY
from face_migration.errors import ModelFileError
from face_migration.face.bisenet import load_bisenet
from face_migration.face.eva_clip import load_eva_clip
from face_migration.face.retinaface import load_retinaface
from face_migration.pulid.weights import load_pulid_flux
from face_migration.safetensors_file import read_header

F32_2x2 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


def raw_file(path, header, data: bytes = bytes(16)) -> str:
    """A file laid out as safetensors (8-byte little-endian header length, JSON, data) with any header."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return str(path)


# (case, header, data): each is a header the safetensors format does not allow.
MALFORMED = [
    ("a JSON list", [F32_2x2], bytes(16)),
    ("a JSON string", "weights", bytes(16)),
    ("an entry that is a number", {"w": 3}, bytes(16)),
    ("no data_offsets", {"w": {"dtype": "F32", "shape": [2, 2]}}, bytes(16)),
    ("no shape", {"w": {"dtype": "F32", "data_offsets": [0, 16]}}, bytes(16)),
    ("no dtype", {"w": {"shape": [2, 2], "data_offsets": [0, 16]}}, bytes(16)),
    ("an unknown dtype", {"w": {**F32_2x2, "dtype": "F33"}}, bytes(16)),
    ("an edited dtype (F32 -> F16, offsets kept)", {"w": {**F32_2x2, "dtype": "F16"}}, bytes(16)),
    ("a negative dimension", {"w": {**F32_2x2, "shape": [-2, -2]}}, bytes(16)),
    ("a text dimension", {"w": {**F32_2x2, "shape": ["2", 2]}}, bytes(16)),
    ("offsets that are not two integers", {"w": {**F32_2x2, "data_offsets": [0, "16"]}}, bytes(16)),
    ("negative offsets", {"w": {**F32_2x2, "data_offsets": [-16, 0]}}, bytes(16)),
    ("offsets in reverse", {"a": {**F32_2x2, "shape": [0], "data_offsets": [16, 0]},
                            "b": F32_2x2}, bytes(16)),
    ("overlapping tensors", {"a": F32_2x2, "b": F32_2x2}, bytes(16)),
    ("a gap between tensors", {"a": {**F32_2x2, "data_offsets": [16, 32]}}, bytes(32)),
    ("bytes after the last tensor", {"a": F32_2x2}, bytes(24)),
    ("metadata that is not text", {"__metadata__": {"format": 1}, "w": F32_2x2}, bytes(16)),
]


@pytest.mark.parametrize("case, header, data", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_header_names_the_file_and_the_fix(tmp_path, case, header, data):
    path = raw_file(tmp_path / "model.safetensors", header, data)
    with pytest.raises(ModelFileError) as info:
        read_header(path, "models/pulid")
    message = str(info.value)
    assert "model.safetensors" in message and "download it again into models/pulid" in message, message


def test_offsets_past_the_end_of_the_file(tmp_path):
    path = raw_file(tmp_path / "model.safetensors", {"w": {**F32_2x2, "shape": [1 << 38],
                                                                  "data_offsets": [0, 1 << 40]}})
    with pytest.raises(ModelFileError, match="model.safetensors is truncated"):
        read_header(path, "models/pulid")


def test_valid_files_pass_with_their_entries(tmp_path):
    save_file({"a": torch.zeros(2, 3, dtype=torch.bfloat16), "b": torch.zeros(0), "c": torch.zeros((), dtype=torch.int64)},
              str(tmp_path / "ok.safetensors"), metadata={"format": "pt"})
    header = read_header(str(tmp_path / "ok.safetensors"), "models/pulid")
    assert {k: (v["dtype"], v["shape"]) for k, v in header.items()} == {"a": ("BF16", [2, 3]), "b": ("F32", [0]),
                                                                       "c": ("I64", [])}


# Every loader that opens a .safetensors file goes through the same checks.
LOADERS = [
    ("pulid_flux_v0.9.1.safetensors", lambda p: load_pulid_flux(p, "models/pulid"), "models/pulid"),
    ("EVA02_CLIP_L_336_psz14_s6B_visual.safetensors", lambda p: load_eva_clip(p, folder_hint="models/clip"),
     "models/clip"),
    ("parsing_bisenet.pth", load_bisenet, BY_KEY["bisenet"].display_folder),
    ("detection_Resnet50_Final.pth", load_retinaface, BY_KEY["retinaface_resnet50"].display_folder),
]


@pytest.mark.parametrize("name, load, folder", LOADERS, ids=[n for n, _, _ in LOADERS])
@pytest.mark.parametrize("case, header, data", [MALFORMED[0], MALFORMED[3], MALFORMED[7], MALFORMED[13]],
                         ids=["list", "no offsets", "edited dtype", "overlap"])
def test_every_loader_reports_a_malformed_header(tmp_path, name, load, folder, case, header, data):
    path = raw_file(tmp_path / name, header, data)
    with pytest.raises(ModelFileError) as info:
        load(path)
    message = str(info.value)
    assert name in message and folder in message and "ownload" in message, message
