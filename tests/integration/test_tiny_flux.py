"""The tiny FLUX of tests/make_tiny_flux.py has exactly the tensors of ComfyUI's own FLUX.1 and is
detected by ComfyUI as FLUX.1-dev with one double and one single block. Runs ComfyUI's model detection
with COMFYUI_PYTHON (it imports every model family, so it needs all of ComfyUI's requirements)."""
import json
import os
import subprocess
import sys

from tests.make_tiny_flux import flux_layout

# Reads {key: shape} on stdin; prints ComfyUI's detected config, its model class and its FLUX's tensors.
DETECT = r"""
import json, sys, torch
from comfy.cli_args import args
args.cpu = True
import comfy.model_detection as detection, comfy.ops
from comfy.ldm.flux.model import Flux
meta = {k: torch.empty(s, device="meta") for k, s in json.load(sys.stdin).items()}
config = detection.detect_unet_config(meta, "")
model_config = detection.model_config_from_unet_config(config, meta)
params = {k: v for k, v in config.items() if k != "image_model"}
model = Flux(operations=comfy.ops.disable_weight_init, device="meta", dtype=torch.bfloat16, **params)
print(json.dumps({"config": config, "class": type(model_config).__name__,
                  "layout": {k: list(v.shape) for k, v in model.state_dict().items()}}))
"""


def test_layout_is_detected_as_flux_dev_and_matches_comfyui_flux():
    layout = flux_layout()
    done = subprocess.run([os.environ.get("COMFYUI_PYTHON", sys.executable), "-c", DETECT],
                          cwd=os.environ["COMFYUI_PATH"], input=json.dumps(layout), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    config = found["config"]
    assert config["image_model"] == "flux" and config["guidance_embed"] is True
    assert (config["hidden_size"], config["depth"], config["depth_single_blocks"]) == (3072, 1, 1)
    assert found["class"] == "Flux"  # FLUX.1-dev (schnell would be FluxSchnell)
    assert {k: tuple(v) for k, v in found["layout"].items()} == layout
