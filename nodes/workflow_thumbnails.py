"""The template browser's thumbnails of the shipped workflows (workflows/<name>.jpg), served by the pack itself.

Every frontend asks for a custom template's thumbnail at /api/workflow_templates/<pack>/<name>.jpg. Up to 0.33 the
core serves the whole workflows/ folder there; later cores (app/custom_node_manager.py, Comfy-Org/ComfyUI fcd026b)
serve only .json files on that path. So web/workflow_templates.js sends the frontends to ROUTE instead, which
serves on every core exactly the .jpg beside a shipped workflow and nothing else."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

ROUTE = "/face-migration/workflow_thumbnails"  # also in web/workflow_templates.js (THUMBNAILS)
WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
SUFFIX = ".jpg"
NODES = []  # routes only (nodes/__init__.py calls register_routes of each module it lists)
_registered = False


def register_routes() -> None:
    """Once per process (aiohttp refuses a second handler for the same path); ComfyUI mirrors it under /api."""
    global _registered
    from server import PromptServer

    if not _registered:
        PromptServer.instance.routes.get(ROUTE + "/{filename}")(thumbnail)
        _registered = True


async def thumbnail(request: web.Request) -> web.StreamResponse:
    name = request.match_info["filename"]
    path = WORKFLOWS / name
    # The name is compared with the folder's own files, so no request reaches a path outside it.
    shipped = {entry.name for entry in WORKFLOWS.glob(f"*{SUFFIX}") if entry.with_suffix(".json").is_file()}
    if name not in shipped:
        raise web.HTTPNotFound(text=f"no thumbnail {name!r} among the pack's workflows")
    return web.FileResponse(path)
