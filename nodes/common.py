"""Shared pieces of the ComfyUI adapter: socket types, model folders, log prefix."""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, TypeVar

import comfy.model_management
import comfy.model_patcher
import folder_paths
import torch
from comfy_api.v0_0_2 import io

from ..face_migration.catalog import ModelFile, find_in_folders, missing_file_message
from ..face_migration.errors import ModelFileError

T = TypeVar("T")

LOG_PREFIX = "[Face Migration]"
CATEGORY = "face_migration"

# Socket types. PULID_ID is the identity value every producer and consumer of this pack agrees on.
PulidModel = io.Custom("FACE_MIGRATION_PULID_MODEL")
PulidId = io.Custom("PULID_ID")

# ComfyUI model folders this pack reads (clip already exists in core): name -> default sub-folder of models/.
MODEL_FOLDERS = {"pulid": "pulid", "insightface": "insightface", "facexlib": "facexlib",
                 "pulid_identities": "pulid_identities"}  # saved face identities (Save / Load Identity)


def schema_extras(**options) -> dict:
    """io.Schema keywords that only newer ComfyUI versions know (has_intermediate_output, search_aliases: 0.33
    has them, 0.3.64 does not): the ones the running ComfyUI's Schema has, so one node definition loads on
    every supported version and gets each feature where it exists."""
    known = {field.name for field in dataclasses.fields(io.Schema)}
    return {name: value for name, value in options.items() if name in known}


def register_model_folders() -> None:
    """Add our default folders without touching what ComfyUI, extra_model_paths.yaml or other packs set."""
    for name, sub in MODEL_FOLDERS.items():
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, sub))


def folder_hint(name: str) -> str:
    """Where a user should put files of a model folder, for error messages."""
    return " or ".join(folder_paths.get_folder_paths(name))


def model_choices(folder: str, model: ModelFile, extensions: tuple[str, ...]) -> list[str]:
    """Files of a model folder with one of the extensions, the catalogue's first. Only files on disk are
    listed, so a frontend flags a workflow's absent file before it is queued; the loader's validate_inputs
    (check_file_choice) then explains it with the download instructions instead of a bare 'not in list'."""
    files = [f for f in folder_paths.get_filename_list(folder) if f.lower().endswith(extensions)]
    preferred = [n for n in (model.filename, *model.alternatives) if n in files]
    return preferred + [f for f in files if f not in preferred]


REFRESH_HINT = "Then press R in the browser to refresh the file lists."


def check_file_choice(folder: str, filename: str, model: ModelFile) -> bool | str:
    """A loader's validate_inputs answer: True when the file is there, else where to download it."""
    if folder_paths.get_full_path(folder, filename) is not None:
        return True
    return (f"'{filename}' is not in {folder_hint(folder)}. {model.download_hint()} Licence: {model.licence}. "
            f"{REFRESH_HINT}")


def resolve_model_file(folder: str, filename: str, model: ModelFile) -> str:
    path = folder_paths.get_full_path(folder, filename)
    if path is None:
        raise ModelFileError(f"'{filename}' is not in {folder_hint(folder)}. {model.download_hint()} "
                             f"Licence: {model.licence}.")
    return path


def find_catalog_file(model: ModelFile, filename: str | None = None) -> str:
    """A catalogue file (or the file of that name in its place) found the way ComfyUI finds models: all roots
    of its folder, the accepted sub-folders."""
    roots = folder_paths.get_folder_paths(model.folder)
    path = find_in_folders(model, roots, filename)
    if path is None:
        raise ModelFileError(missing_file_message(model, roots, filename))
    return path


def subfolder_choices(model: ModelFile, extension: str) -> list[str]:
    """Names of the files with the extension in a catalogue file's accepted sub-folders, the catalogue's first:
    antelopev2's .onnx files live in models/insightface/models/antelopev2, below what ComfyUI lists. Only files
    on disk, so a frontend flags an absent one (as model_choices)."""
    names = set()
    for root in folder_paths.get_folder_paths(model.folder):
        for sub in model.subdirs:
            folder = os.path.join(root, sub)
            if os.path.isdir(folder):
                names.update(f for f in os.listdir(folder)
                             if f.lower().endswith(extension) and os.path.isfile(os.path.join(folder, f)))
    preferred = [model.filename] if model.filename in names else []
    return preferred + sorted(names - set(preferred))


_loaded: dict[str, tuple[tuple, object]] = {}


def load_cached(slot: str, paths: tuple[str, ...], options: tuple, load: Callable[[], T]) -> T:
    """Load once per slot, file versions and options; a changed file or option loads again and replaces
    the old value (one of each kind of model in RAM)."""
    key = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths) + options
    if slot not in _loaded or _loaded[slot][0] != key:
        _loaded.pop(slot, None)
        _loaded[slot] = (key, load())
        logging.info("%s loaded %s", LOG_PREFIX, _loaded[slot][1])
    return _loaded[slot][1]


def managed(module: torch.nn.Module):
    """A patcher so ComfyUI moves the module to the GPU when used, counts its memory and offloads it: the
    class core uses for its auxiliary models (CLIP vision, upscale models). Since 0.16 that is
    CoreModelPatcher, which main.py points at ModelPatcherDynamic unless --disable-dynamic-vram; it is
    read at call time because main.py sets it after start. 0.3.64 has only ModelPatcher."""
    patcher = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    return patcher(module, load_device=comfy.model_management.get_torch_device(),
                   offload_device=comfy.model_management.unet_offload_device())
