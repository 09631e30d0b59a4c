"""Face Migration library: PuLID-FLUX model, face pipeline and remote client.

Nothing here imports ComfyUI; the ComfyUI nodes in ../nodes are a thin layer over it."""
__version__ = "0.1.0"
