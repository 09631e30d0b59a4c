"""Tiny stand-ins for every model file of the face pipeline, under the REAL file names and folders of a
ComfyUI models directory, plus test photos, so loaders, Encode Face and the shipped workflows run in a real
ComfyUI without the gigabytes of real weights.

    from devkit.tiny_face_models import install
    files = install(models_dir, input_dir)   # idempotent; returns the names to put in prompts

What is written (all seeded, so files are reproducible; about 30 MB in all, most of it the PuLID file):
- insightface/models/antelopev2/scrfd_10g_bnkps.onnx, glintr100.onnx: the tiny graphs of
  devkit/onnx_graphs.py. The detector "sees a face" on each stride-32 cell of its 640 input that is
  pure red (only fully red cells fire), with a 3 x 3 cell box centred on the cell's centre and face-like
  keypoints. The photos below place red squares so that exactly one cell per square is fully red.
- clip/EVA02_CLIP_L_336_psz14_s6B_visual.safetensors: an EVA02 tower 64 wide, 21 blocks, 336 px input,
  768-d head, keys with the `visual.` prefix (what `convert-eva` writes).
- facexlib/parsing_bisenet.pth, detection_Resnet50_Final.pth: tiny BiSeNet and RetinaFace state dicts
  (torch.save, as the facexlib releases; RetinaFace keys with DataParallel's `module.` prefix). RetinaFace's
  heads are constant: every stride-16 anchor of the smaller size is a face (score 1.0) with a 64 px box and
  face-like landmarks, so the official-alignment path finds a face next to SCRFD's, and the official
  fallback (SCRFD misses, RetinaFace finds) runs on a faceless photo.
- pulid/pulid_flux_tiny_face.safetensors: a tiny PuLID-FLUX whose IDFormer fits the tiny EVA (vit_dim 64,
  id input 512 + 768) and whose 2 CA modules fit the compat tiny FLUX (hidden 3072, 1 double + 1 single block).
- input/: astronaut_red_face.png (one "face"), astronaut_two_faces.png (two, left and right),
  astronaut_no_face.png (scikit-image's astronaut as is: SCRFD finds nothing), all 512 x 512 RGB.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data

from face_migration.face.bisenet import BiSeNet, BiSeNetConfig
from face_migration.face.eva_clip import VISUAL_PREFIX, EvaVisionConfig, expected_layout
from face_migration.face.retinaface import RetinaFace, RetinaFaceConfig
from devkit import onnx_graphs
from devkit.tiny_pulid import TINY_CFG_FOR_COMPAT_FLUX, write_tiny_pulid

ANTELOPEV2 = "insightface/models/antelopev2"
SCRFD_PATH = f"{ANTELOPEV2}/scrfd_10g_bnkps.onnx"
ARCFACE_PATH = f"{ANTELOPEV2}/glintr100.onnx"
EVA_FILE = "EVA02_CLIP_L_336_psz14_s6B_visual.safetensors"
EVA_PATH = f"clip/{EVA_FILE}"
BISENET_FILE = "parsing_bisenet.pth"
RETINAFACE_FILE = "detection_Resnet50_Final.pth"
PULID_FILE = "pulid_flux_tiny_face.safetensors"

PHOTO = "astronaut_red_face.png"
TWO_FACES_PHOTO = "astronaut_two_faces.png"
FACELESS_PHOTO = "astronaut_no_face.png"

EVA_CFG = EvaVisionConfig(width=64, layers=21, mlp_hidden=96, patch_size=14, image_size=336, embed_dim=768)
PULID_CFG = dataclasses.replace(TINY_CFG_FOR_COMPAT_FLUX, vit_dim=EVA_CFG.width, id_input_dim=512 + EVA_CFG.embed_dim)
BISENET_CFG = BiSeNetConfig(width=8, context=16, fuse=32, head=16, aux_head=8)
RETINAFACE_CFG = RetinaFaceConfig(width=8, blocks=(1, 1, 1, 1), fpn_channels=16)

# SCRFD stand-in: a stride-32 cell fires when its mean red (normalised to [-1, 1]) exceeds 0.95. SCRFD's
# anchor point is the cell's top-left corner, so distances (left, top, right, bottom) of 1, 1, 2, 2 cells
# centre a 3-cell box on the cell; keypoints (eyes, nose, mouth corners) likewise, in stride units.
SCRFD_BOX = (1.0, 1.0, 2.0, 2.0)
SCRFD_KEYPOINTS = (0.1, 0.2, 0.9, 0.2, 0.5, 0.6, 0.2, 1.0, 0.8, 1.0)
# Red squares (x, y, size) in the 512 photo. The detector sees the photo at 640 (x 1.25): a 40 px square at
# 172 covers 215..265 there, so only the cell 224..256 is fully red; its box is [153.6, 230.4] in photo px.
FACE = (172, 172, 40)
LEFT_FACE, RIGHT_FACE = (95, 300, 40), (351, 300, 40)  # cells 128..160 and 448..480 in detector pixels

# RetinaFace stand-in heads (per level; anchors 0 and 1 of each cell): class logits (no face, face), landmark
# offsets in units of 0.1 x the 64 px prior (facexlib's variance), i.e. about +-19 px eyes, 19 px mouth below.
_RETINA_FACE_LEVEL = 1  # stride 16, prior sizes 64 and 128
_RETINA_LANDMARKS = (-3.0, -2.0, 3.0, -2.0, 0.0, 0.5, -2.5, 3.0, 2.5, 3.0)


def red_face_photo(squares=(FACE,)) -> np.ndarray:
    """scikit-image's astronaut (512 x 512 RGB uint8) with pure-red squares, the tiny detector's faces."""
    image = data.astronaut().copy()
    for x, y, size in squares:
        image[y:y + size, x:x + size] = (255, 0, 0)
    return image


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights that keep activations of order one: scales ~1 (LayerNorm / BatchNorm weights and
    running variances), means and biases small, matrices and kernels ~ 1/sqrt(fan-in)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in sorted(shapes.items()):
        name = key.rsplit(".", 1)[-1]
        noise = torch.randn(shape, generator=gen) if shape else torch.zeros(())
        if name == "num_batches_tracked":
            value = torch.zeros((), dtype=torch.long)
        elif name == "running_var" or (name == "weight" and len(shape) == 1):
            value = 1.0 + 0.05 * noise.abs() if name == "running_var" else 1.0 + 0.05 * noise
        elif len(shape) >= 2 and not key.endswith(("cls_token", "pos_embed")):
            value = noise / max(1, int(np.prod(shape[1:]))) ** 0.5
        else:
            value = 0.02 * noise
        state[key] = value.contiguous()
    return state


def eva_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    state = _random_state(expected_layout(EVA_CFG), seed)
    return {VISUAL_PREFIX + k: v for k, v in state.items()}


def bisenet_state_dict(seed: int = 2) -> dict[str, torch.Tensor]:
    return _random_state({k: tuple(v.shape) for k, v in BiSeNet(BISENET_CFG).state_dict().items()}, seed)


def retinaface_state_dict(seed: int = 3) -> dict[str, torch.Tensor]:
    state = _random_state({k: tuple(v.shape) for k, v in RetinaFace(RETINAFACE_CFG).state_dict().items()}, seed)
    for level in range(3):  # constant heads: the outputs do not depend on the image
        for head in ("ClassHead", "BboxHead", "LandmarkHead"):
            state[f"{head}.{level}.conv1x1.weight"].zero_()
            state[f"{head}.{level}.conv1x1.bias"].zero_()
        logits = [0.0, 12.0, 12.0, 0.0] if level == _RETINA_FACE_LEVEL else [12.0, 0.0] * 2  # anchor 0 only
        state[f"ClassHead.{level}.conv1x1.bias"].copy_(torch.tensor(logits))
        state[f"LandmarkHead.{level}.conv1x1.bias"].copy_(torch.tensor(_RETINA_LANDMARKS * 2))
    return {"module." + k: v for k, v in state.items()}  # the release was saved from DataParallel


def model_paths(models_dir) -> dict[str, Path]:
    """Where each tiny model file goes under models_dir (a ComfyUI models folder). PuLID comes last: it is
    written last, so its presence means the set is complete."""
    models = Path(models_dir)
    return {key: models / rel for key, rel in (
        ("scrfd", SCRFD_PATH), ("arcface", ARCFACE_PATH), ("eva", EVA_PATH),
        ("bisenet", f"facexlib/{BISENET_FILE}"), ("retinaface", f"facexlib/{RETINAFACE_FILE}"),
        ("pulid", f"pulid/{PULID_FILE}"))}


def write_face_models(models_dir) -> dict[str, Path]:
    """Write every tiny face model file under models_dir; returns their paths (see model_paths)."""
    paths = model_paths(models_dir)
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    scrfd = onnx_graphs.scrfd_model(score_gain={32: 100.0}, score_bias={32: -95.0}, box=SCRFD_BOX,
                                     kps=SCRFD_KEYPOINTS)
    onnx_graphs.save(scrfd, paths["scrfd"])
    onnx_graphs.save(onnx_graphs.arcface_model(), paths["arcface"])
    save_file(eva_state_dict(), str(paths["eva"]))
    torch.save(bisenet_state_dict(), paths["bisenet"])
    torch.save(retinaface_state_dict(), paths["retinaface"])
    write_tiny_pulid(paths["pulid"], PULID_CFG, seed=4)
    return paths


def photos() -> dict[str, np.ndarray]:
    """The test photos by file name."""
    return {PHOTO: red_face_photo(), TWO_FACES_PHOTO: red_face_photo((LEFT_FACE, RIGHT_FACE)),
            FACELESS_PHOTO: red_face_photo(())}


def write_photos(input_dir) -> dict[str, Path]:
    """The test photos as PNG files in input_dir (ComfyUI's input folder, for LoadImage)."""
    folder = Path(input_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in photos().items():
        Image.fromarray(image).save(folder / name)
    return {name: folder / name for name in photos()}


@dataclasses.dataclass(frozen=True)
class TinyFaceFiles:
    """File names to put in prompts (as the loaders and LoadImage list them) and the paths of the models."""
    paths: dict
    eva_file: str = EVA_FILE
    parsing_file: str = BISENET_FILE
    landmark_file: str = RETINAFACE_FILE
    pulid_file: str = PULID_FILE
    photo: str = PHOTO
    two_faces_photo: str = TWO_FACES_PHOTO
    faceless_photo: str = FACELESS_PHOTO


def install(models_dir, input_dir) -> TinyFaceFiles:
    """Write the tiny face models and the photos unless already there (a second call, e.g. from another
    test module of the same session, changes nothing)."""
    paths = model_paths(models_dir)
    if not paths["pulid"].is_file():
        write_face_models(models_dir)
    if not all((Path(input_dir) / name).is_file() for name in (PHOTO, TWO_FACES_PHOTO, FACELESS_PHOTO)):
        write_photos(input_dir)
    return TinyFaceFiles(paths)
