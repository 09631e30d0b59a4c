"""Shared pieces of the ComfyUI adapter: socket types, model folders, log prefix."""
from __future__ import annotations

import os

import folder_paths
from comfy_api.v0_0_2 import io

LOG_PREFIX = "[Face Migration]"
CATEGORY = "face_migration"

# Socket types. PULID_ID is the identity value every producer and consumer of this pack agrees on.
PulidModel = io.Custom("FACE_MIGRATION_PULID_MODEL")
PulidId = io.Custom("PULID_ID")

# ComfyUI model folders this pack reads (clip already exists in core): name -> default sub-folder of models/.
MODEL_FOLDERS = {"pulid": "pulid", "insightface": "insightface", "facexlib": "facexlib"}


def register_model_folders() -> None:
    """Add our default folders without touching what ComfyUI, extra_model_paths.yaml or other packs set."""
    for name, sub in MODEL_FOLDERS.items():
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, sub))


def folder_hint(name: str) -> str:
    """Where a user should put files of a model folder, for error messages."""
    return " or ".join(folder_paths.get_folder_paths(name))
