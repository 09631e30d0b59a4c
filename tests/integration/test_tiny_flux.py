"""The tiny FLUX.1-dev, Chroma and Chroma Radiance of tests/make_tiny_flux.py load in each ComfyUI of the
matrix the way a user's file does (comfy.sd.load_diffusion_model, what UNETLoader calls): detected as Flux,
Chroma and ChromaRadiance with one double and one single block, FLUX.1's width, and no tensor missing or left
over. The files keep the real files' names (BFL's `.scale` RMSNorm keys); each ComfyUI version converts them
as it converts a real file, so the check holds across releases that rename internal parameters."""
import json
import subprocess

from tests.integration.conftest import EVERY_FAMILY, TINY_MODELS

# argv[1]: the file. Prints what ComfyUI detected and every load warning about missing or unexpected keys.
LOAD = r"""
import json, logging, sys
from comfy.cli_args import args
args.cpu = True
import comfy.sd

warnings = []
class Keep(logging.Handler):
    def emit(self, record):
        if "missing" in record.getMessage() or "unexpected" in record.getMessage():
            warnings.append(record.getMessage()[:500])
logging.getLogger().addHandler(Keep())
patcher = comfy.sd.load_diffusion_model(sys.argv[1])
flux = patcher.model.diffusion_model
print(json.dumps({"class": type(patcher.model.model_config).__name__, "warnings": warnings,
                  "double": len(flux.double_blocks), "single": len(flux.single_blocks),
                  "hidden": flux.hidden_size, "guidance": getattr(flux.params, "guidance_embed", None),
                  "patch": flux.patch_size}))
"""


# Per family: ComfyUI's model config class, FLUX.1-dev's guidance embedder or none, the patch size.
EXPECTED = {"flux1": ("Flux", True, 2), "chroma": ("Chroma", None, 2), "chroma_radiance": ("ChromaRadiance", None, 16)}


@EVERY_FAMILY
def test_tiny_model_loads_as_its_family_with_no_key_missing_or_left_over(comfy, comfyui, family):
    path = comfy.base / "models" / "diffusion_models" / TINY_MODELS[family][0]
    done = subprocess.run([comfyui.python, "-c", LOAD, str(path)], cwd=comfyui.path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    kind, guidance, patch = EXPECTED[family]
    assert found["class"] == kind  # FLUX.1-dev would be FluxSchnell without guidance_in
    assert found["warnings"] == []
    assert (found["hidden"], found["double"], found["single"]) == (3072, 1, 1)
    assert (found["guidance"], found["patch"]) == (guidance, patch)
