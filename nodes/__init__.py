"""ComfyUI adapter: V3 node classes over the `face_migration` library.

Each node module exposes `NODES`. A module that cannot be imported because a package of requirements.txt
is missing is skipped with a logged reason; the rest of the pack (and ComfyUI) keeps working. Any other
ImportError is a bug in the pack (or a ComfyUI API it needs): it is logged with its traceback, which
ComfyUI would otherwise reduce to one line, and that module is skipped."""
from __future__ import annotations

import importlib
import logging

from comfy_api.v0_0_2 import ComfyExtension

from ..face_migration.support import outside_support
from .common import LOG_PREFIX, register_model_folders

NODE_MODULES = ("pulid_nodes", "face_nodes", "remote_nodes", "identity_nodes", "server_route", "workflow_thumbnails")
# Top-level module -> the requirements.txt package that provides it.
REQUIREMENT_MODULES = {"numpy": "numpy", "safetensors": "safetensors", "requests": "requests", "PIL": "pillow",
                       "onnxruntime": "onnxruntime-gpu or onnxruntime"}


def missing_requirement(exc: ImportError) -> str | None:
    """The requirements.txt package whose absence raised exc, or None when exc is something else."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    return REQUIREMENT_MODULES.get(exc.name.split(".")[0])


def running_comfyui_version() -> str | None:
    try:
        from comfyui_version import __version__  # ComfyUI's own root module, on every supported version
    except ImportError:
        return None
    return __version__


class FaceMigrationExtension(ComfyExtension):
    async def on_load(self):
        from .peer_prompts import register_peer_prompt_handler
        from .peer_replacements import register_peer_replacements
        await register_peer_replacements()
        register_peer_prompt_handler()

    async def get_node_list(self):
        notice = outside_support(running_comfyui_version())
        if notice:
            logging.warning("%s %s", LOG_PREFIX, notice)
        register_model_folders()
        nodes = []
        for name in NODE_MODULES:
            try:
                module = importlib.import_module(f".{name}", __name__)
            except ImportError as exc:
                package = missing_requirement(exc)
                if package is None:
                    logging.error("%s %s could not be imported: %s. This is not a missing requirement but an "
                                  "error in the pack or the ComfyUI API it uses; please report it with this "
                                  "traceback.", LOG_PREFIX, name, exc, exc_info=exc)
                else:
                    logging.warning("%s %s disabled: the Python package %s is not installed (%s). Install the "
                                    "pack's requirements.txt into ComfyUI's Python to enable them.",
                                    LOG_PREFIX, name, package, exc)
                continue
            nodes.extend(module.NODES)
            # server_route: the self-hosted API; workflow_thumbnails: the template browser's thumbnails
            getattr(module, "register_routes", lambda: None)()
        return nodes
