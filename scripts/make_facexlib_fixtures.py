"""Regenerate the facexlib parity fixtures (tests/fixtures/retinaface_parity.safetensors and
bisenet_parity.safetensors) by running facexlib's own RetinaFace-ResNet50 and BiSeNet on seeded
weights and inputs (devkit/facexlib_data.py).

    python scripts/make_facexlib_fixtures.py --reference /path/to/facexlib-checkout

Needs, in the Python that runs it: torch with its matching torchvision, numpy,
opencv-python-headless, pillow, safetensors (a separate venv: the test venv has no torchvision; the
committed fixtures came from torch 2.14.1 + torchvision 0.29.1 on the CPU). facexlib is imported from the checkout without running its package __init__ (which
pulls in tracking / alignment code needing filterpy and numba, unused here). Nothing from the
checkout is stored, only the networks' outputs and the weight checksum.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import types

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from devkit import facexlib_data as fd  # noqa: E402
from devkit.parity_data import checksum  # noqa: E402

# The score threshold for the decoding reference: low enough that random weights give several
# overlapping boxes, so NMS has work to do (the real pipeline uses 0.97).
DECODE_THRESHOLD = 0.9


def import_facexlib(reference: str):
    """facexlib's detection and parsing modules from a checkout, skipping facexlib/__init__.py."""
    pkg_dir = os.path.join(os.path.abspath(reference), "facexlib")
    if not os.path.isdir(os.path.join(pkg_dir, "detection")):
        sys.exit(f"{reference} is not a facexlib checkout (no facexlib/detection folder)")
    pkg = types.ModuleType("facexlib")
    pkg.__path__ = [pkg_dir]
    sys.modules["facexlib"] = pkg
    return (importlib.import_module("facexlib.detection.retinaface"),
            importlib.import_module("facexlib.detection.retinaface_utils"),
            importlib.import_module("facexlib.parsing.bisenet"))


def seeded(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    sd = fd.state_dict_for({k: tuple(v.shape) for k, v in model.state_dict().items()})
    model.load_state_dict(sd, strict=True)
    model.eval()
    return sd


def retinaface_fixture(rf_mod, rf_utils) -> tuple[dict, dict]:
    model = rf_mod.RetinaFace(network_name="resnet50", half=False, device="cpu")
    sd = seeded(model)
    image_rgb = fd.retinaface_image()
    image_bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
    h, w = image_bgr.shape[:2]
    with torch.no_grad():
        x = torch.from_numpy(image_bgr.astype(np.float32).transpose(2, 0, 1))[None] - model.mean_tensor
        loc, conf, landms = model(x)
        dets = model.detect_faces(image_bgr, conf_threshold=DECODE_THRESHOLD, nms_threshold=0.4)
    priors = rf_utils.PriorBox(model.cfg, image_size=(h, w)).forward()
    passing = conf[0, :, 1][conf[0, :, 1] > DECODE_THRESHOLD]
    if len(passing.unique()) != len(passing):
        sys.exit("tied face scores above the threshold: NMS order would be arbitrary; change the weights")
    n_pass = len(passing)
    print(f"retinaface: {loc.shape[1]} priors, {n_pass} above {DECODE_THRESHOLD}, {len(dets)} after NMS")
    tensors = {"loc": loc[0], "conf": conf[0], "landms": landms[0], "priors": priors,
               "dets": torch.from_numpy(np.ascontiguousarray(dets, dtype=np.float32))}
    meta = {"weights_checksum": repr(checksum(sd)), "decode_threshold": repr(DECODE_THRESHOLD),
            "image_hw": f"{h},{w}"}
    return tensors, meta


def bisenet_fixture(bs_mod) -> tuple[dict, dict]:
    model = bs_mod.BiSeNet(num_class=19)
    sd = seeded(model)
    img = fd.bisenet_input()
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        out, out16, out32 = model((img - mean) / std)
    m, a = fd.BISENET_MAIN_STRIDE, fd.BISENET_AUX_STRIDE
    tensors = {"out": out[0, :, ::m, ::m], "out16": out16[0, :, ::a, ::a], "out32": out32[0, :, ::a, ::a],
               "labels": out[0].argmax(0).to(torch.uint8)}
    print(f"bisenet: logits range {float(out.min()):.3g}..{float(out.max()):.3g}, "
          f"{len(out[0].argmax(0).unique())} distinct labels")
    return tensors, {"weights_checksum": repr(checksum(sd))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="path of a facexlib git checkout")
    ap.add_argument("--out", default=os.path.join(ROOT, fd.FIXTURES))
    args = ap.parse_args()
    torch.set_num_threads(1)  # deterministic summation order
    rf_mod, rf_utils, bs_mod = import_facexlib(args.reference)
    for name, (tensors, meta) in ((fd.RETINAFACE_FIXTURE, retinaface_fixture(rf_mod, rf_utils)),
                                  (fd.BISENET_FIXTURE, bisenet_fixture(bs_mod))):
        path = os.path.join(args.out, name)
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
