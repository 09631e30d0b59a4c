"""ComfyUI adapter: V3 node classes over the `face_migration` library.

Each node module exposes `NODES`. A module whose optional dependency is missing is skipped with a
logged reason; the rest of the pack (and ComfyUI) keeps working."""
from __future__ import annotations

import importlib
import logging

from comfy_api.v0_0_2 import ComfyExtension

from .common import LOG_PREFIX, register_model_folders

NODE_MODULES = ("pulid_nodes", "face_nodes", "remote_nodes", "identity_nodes")


class FaceMigrationExtension(ComfyExtension):
    async def get_node_list(self):
        register_model_folders()
        nodes = []
        for name in NODE_MODULES:
            try:
                module = importlib.import_module(f".{name}", __name__)
            except ImportError as exc:
                logging.warning("%s %s disabled: %s. Install the pack's requirements.txt "
                                "into ComfyUI's Python to enable them.", LOG_PREFIX, name, exc)
                continue
            nodes.extend(module.NODES)
        return nodes
