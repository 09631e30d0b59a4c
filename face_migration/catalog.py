"""Every model file the pack uses: name, ComfyUI folder, where to download it, licence, and what is
known of its size and checksum. The loaders, their error messages and the model-check command all read
this one table, so they never disagree."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFile:
    key: str  # stable identifier used in code
    filename: str
    folder: str  # ComfyUI model folder name (folder_paths key)
    subdirs: tuple[str, ...]  # accepted sub-folders inside that folder, in search order ("" = the folder itself)
    url: str
    licence: str
    purpose: str
    size_bytes: int | None = None  # exact size where known
    sha256: str | None = None  # where known
    optional: bool = False
    alternatives: tuple[str, ...] = ()  # other filenames accepted in place of this one

    @property
    def display_folder(self) -> str:
        """models/<folder>/<first sub-folder>, as users see it."""
        return os.path.join("models", self.folder, self.subdirs[0]).rstrip("/\\") if self.subdirs[0] else f"models/{self.folder}"

    def download_hint(self) -> str:
        return f"Download {self.filename} from {self.url} into ComfyUI/{self.display_folder}/ ."


_HF = "https://huggingface.co"

MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile(
        key="pulid_flux", filename="pulid_flux_v0.9.1.safetensors", folder="pulid", subdirs=("",),
        url=f"{_HF}/guozinan/PuLID/resolve/main/pulid_flux_v0.9.1.safetensors",
        licence="Apache-2.0", purpose="PuLID-FLUX IDFormer and cross-attention weights",
        alternatives=("pulid_flux_v0.9.0.safetensors",)),
    ModelFile(
        key="scrfd", filename="scrfd_10g_bnkps.onnx", folder="insightface",
        subdirs=("models/antelopev2", "models/antelopev2/antelopev2"),
        url=f"{_HF}/DIAMONIK7777/antelopev2/resolve/main/scrfd_10g_bnkps.onnx",
        licence="insightface antelopev2: non-commercial research use only",
        purpose="SCRFD face detector (antelopev2)"),
    ModelFile(
        key="glintr100", filename="glintr100.onnx", folder="insightface",
        subdirs=("models/antelopev2", "models/antelopev2/antelopev2"),
        url=f"{_HF}/DIAMONIK7777/antelopev2/resolve/main/glintr100.onnx",
        licence="insightface antelopev2: non-commercial research use only",
        purpose="ArcFace R100 face recognizer (antelopev2)"),
    ModelFile(
        key="eva02_clip_l_336", filename="EVA02_CLIP_L_336_psz14_s6B.pt", folder="clip", subdirs=("",),
        url=f"{_HF}/QuanSun/EVA-CLIP/resolve/main/EVA02_CLIP_L_336_psz14_s6B.pt",
        licence="MIT (EVA-CLIP)", purpose="EVA02-CLIP-L-14-336 vision tower (loaded without pickle code)",
        alternatives=("EVA02_CLIP_L_336_psz14_s6B_visual.safetensors",)),
    ModelFile(
        key="retinaface_resnet50", filename="detection_Resnet50_Final.pth", folder="facexlib", subdirs=("",),
        url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
        licence="MIT (facexlib)", purpose="RetinaFace-ResNet50 landmarks for the official 512 alignment",
        optional=True),
    ModelFile(
        key="bisenet", filename="parsing_bisenet.pth", folder="facexlib", subdirs=("",),
        url="https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
        licence="MIT (facexlib)", purpose="BiSeNet face parsing (background removal before EVA-CLIP)"),
)

BY_KEY = {m.key: m for m in MODEL_FILES}

# ComfyUI's own FLUX files that the shipped workflows load with core nodes (UNETLoader, DualCLIPLoader,
# VAELoader): the build script writes them into the workflows, check-models looks for them. Same sources
# as ComfyUI's own FLUX templates.
CORE_MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile(
        key="flux1_dev", filename="flux1-dev.safetensors", folder="diffusion_models", subdirs=("",),
        url=f"{_HF}/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors",
        licence="FLUX.1 [dev] Non-Commercial License", purpose="FLUX.1 [dev] diffusion model"),
    ModelFile(
        key="flux1_schnell", filename="flux1-schnell.safetensors", folder="diffusion_models", subdirs=("",),
        url=f"{_HF}/Comfy-Org/flux1-schnell/resolve/main/flux1-schnell.safetensors",
        licence="Apache-2.0", purpose="FLUX.1 [schnell] diffusion model"),
    ModelFile(
        key="clip_l", filename="clip_l.safetensors", folder="text_encoders", subdirs=("",),
        url=f"{_HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
        licence="MIT", purpose="CLIP-L text encoder for FLUX"),
    ModelFile(
        key="t5xxl_fp16", filename="t5xxl_fp16.safetensors", folder="text_encoders", subdirs=("",),
        url=f"{_HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
        licence="Apache-2.0", purpose="T5-XXL text encoder for FLUX"),
    ModelFile(
        key="flux_ae", filename="ae.safetensors", folder="vae", subdirs=("",),
        url=f"{_HF}/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors",
        licence="Apache-2.0", purpose="FLUX VAE"),
)

# Files a pack node loads by itself (no file widget names them), by node id.
NODE_MODEL_FILES = {"FaceMigration_FaceAnalysisLoader": ("scrfd", "glintr100")}


def model_by_filename(name: str) -> ModelFile | None:
    """The catalogue entry (pack or core) a file name belongs to, alternatives included."""
    return next((m for m in MODEL_FILES + CORE_MODEL_FILES if name in (m.filename, *m.alternatives)), None)


def find_in_folders(model: ModelFile, folder_roots: list[str]) -> str | None:
    """First existing path of the model (or an accepted alternative) under any of the folder's roots."""
    for root in folder_roots:
        for sub in model.subdirs:
            for name in (model.filename, *model.alternatives):
                path = os.path.join(root, sub, name)
                if os.path.isfile(path):
                    return path
    return None


def missing_file_message(model: ModelFile, folder_roots: list[str]) -> str:
    searched = ", ".join(os.path.join(r, s) for r in folder_roots for s in model.subdirs) or model.display_folder
    return (f"{model.filename} ({model.purpose}) was not found. Searched: {searched}. "
            f"{model.download_hint()} Licence: {model.licence}.")
