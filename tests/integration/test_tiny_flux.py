"""The tiny FLUX of tests/make_tiny_flux.py loads in each ComfyUI of the matrix the way a user's file does
(comfy.sd.load_diffusion_model, what UNETLoader calls): detected as FLUX.1-dev with one double and one
single block, FLUX.1's width, and no tensor missing or left over. The file keeps the real files' names
(BFL's `.scale` RMSNorm keys); each ComfyUI version converts them as it converts a real FLUX file, so the
check holds across releases that rename internal parameters."""
import json
import subprocess

from tests.integration.conftest import TINY_FLUX_NAME

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
                  "hidden": flux.hidden_size, "guidance": getattr(flux.params, "guidance_embed", None)}))
"""


def test_tiny_flux_loads_as_flux_dev_with_no_key_missing_or_left_over(comfy, comfyui):
    path = comfy.base / "models" / "diffusion_models" / TINY_FLUX_NAME
    done = subprocess.run([comfyui.python, "-c", LOAD, str(path)], cwd=comfyui.path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["class"] == "Flux"  # FLUX.1-dev (schnell would be FluxSchnell)
    assert found["warnings"] == []
    assert (found["hidden"], found["double"], found["single"], found["guidance"]) == (3072, 1, 1, True)
