"""ComfyUI entry point of the Face Migration (PuLID-FLUX) pack.

Kept import-light on purpose: ComfyUI imports every pack at start-up, so the node modules (and
anything heavy) are only imported when ComfyUI asks for the node list."""

WEB_DIRECTORY = "./web"  # web/peer_nodes.js: the other PuLID-FLUX packs' nodes open as this pack's


async def comfy_entrypoint():
    from .nodes import FaceMigrationExtension

    return FaceMigrationExtension()
