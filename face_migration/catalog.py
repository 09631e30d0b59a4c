"""Every model file the pack uses: name, ComfyUI folder, where to download it, licence, and its published
size and SHA-256. The loaders, their error messages, `check-models` and `download` all read this one
table, so they never disagree.

Sizes and hashes are the Hugging Face Hub's LFS records (or the publisher's own list) of the exact file
named; `checksum_source` says where each was read. A file whose values were not found has None: it is
never guessed, and `check-models` says it cannot verify it."""
from __future__ import annotations

import dataclasses
import os
import re
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
    size_bytes: int | None = None  # exact size of `filename` where published
    sha256: str | None = None  # of `filename`, where published
    optional: bool = False
    alternatives: tuple[str, ...] = ()  # other filenames accepted in place of this one (never verified)
    checksum_source: str | None = None  # where size_bytes / sha256 were read
    download_url: str | None = None  # where `download` fetches it, when not `url` (the file the hash is of)

    @property
    def display_folder(self) -> str:
        """models/<folder>/<first sub-folder>, as users see it."""
        if not self.subdirs[0]:
            return f"models/{self.folder}"
        return os.path.join("models", self.folder, self.subdirs[0]).rstrip("/\\")

    def download_hint(self) -> str:
        return (f"Download {self.filename} from {self.url} into ComfyUI/{self.display_folder}/ , or fetch and "
                f"verify every missing file with `python -m face_migration download --missing` in the pack's "
                f"folder.")

    @property
    def source_url(self) -> str:
        return self.download_url or self.url

    def hub_file(self) -> tuple[str, str, str] | None:
        """(repo id, revision, path in the repo) when the download is a Hugging Face Hub file, else None."""
        match = _HUB_URL.match(self.source_url)
        return (match["repo"], match["revision"], match["path"]) if match else None


_HF = "https://huggingface.co"
_HUB_URL = re.compile(r"https://huggingface\.co/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)")
# Where the values were read. Hub values are the LFS object id and size of the file at that revision (the
# "main" file was the same object when these were recorded); the public manifests quoted them pinned.
_PINNED = "Hub LFS record of {}@{}, as pinned by independent public download manifests"
_FACEXLIB = ("SHA-256 in the AUR python-facexlib PKGBUILD's sha256sums for this release asset; size from "
             "public manifests pinning the same hash")

MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile(
        key="pulid_flux", filename="pulid_flux_v0.9.1.safetensors", folder="pulid", subdirs=("",),
        url=f"{_HF}/guozinan/PuLID/resolve/main/pulid_flux_v0.9.1.safetensors",
        licence="Apache-2.0", purpose="PuLID-FLUX IDFormer and cross-attention weights",
        alternatives=("pulid_flux_v0.9.0.safetensors",),  # no published size/hash found for v0.9.0
        size_bytes=1_142_099_520, sha256="92c41c3af322b02e58e1b32842e4601e08c8f16ec1fe80089dbe957df510f51d",
        checksum_source=_PINNED.format("guozinan/PuLID", "492b1451")),
    ModelFile(
        key="scrfd", filename="scrfd_10g_bnkps.onnx", folder="insightface",
        subdirs=("models/antelopev2", "models/antelopev2/antelopev2"),
        url=f"{_HF}/DIAMONIK7777/antelopev2/resolve/main/scrfd_10g_bnkps.onnx",
        licence="insightface antelopev2: non-commercial research use only",
        purpose="SCRFD face detector (antelopev2)",
        size_bytes=16_923_827, sha256="5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
        checksum_source="public manifests of the antelopev2 pack (the same object as buffalo_l's det_10g.onnx)"),
    ModelFile(
        key="glintr100", filename="glintr100.onnx", folder="insightface",
        subdirs=("models/antelopev2", "models/antelopev2/antelopev2"),
        url=f"{_HF}/DIAMONIK7777/antelopev2/resolve/main/glintr100.onnx",
        licence="insightface antelopev2: non-commercial research use only",
        purpose="ArcFace R100 face recognizer (antelopev2)",
        size_bytes=260_665_334, sha256="4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf",
        checksum_source=_PINNED.format("DIAMONIK7777/antelopev2", "ba0c3e10")),
    ModelFile(
        key="eva02_clip_l_336", filename="EVA02_CLIP_L_336_psz14_s6B.pt", folder="clip", subdirs=("",),
        url=f"{_HF}/QuanSun/EVA-CLIP/resolve/main/EVA02_CLIP_L_336_psz14_s6B.pt",
        licence="MIT (EVA-CLIP)", purpose="EVA02-CLIP-L-14-336 vision tower (loaded without pickle code)",
        alternatives=("EVA02_CLIP_L_336_psz14_s6B_visual.safetensors",),  # made locally by convert-eva
        size_bytes=856_461_210, sha256="84c3a17a228c567a155259b2245b0b59072bf7da510260a0a02ec54de6d50b05",
        checksum_source=_PINNED.format("QuanSun/EVA-CLIP", "690a5975 and 11afd202")),
    ModelFile(
        key="retinaface_resnet50", filename="detection_Resnet50_Final.pth", folder="facexlib", subdirs=("",),
        url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
        licence="MIT (facexlib)", purpose="RetinaFace-ResNet50 landmarks for the official 512 alignment",
        optional=True,
        size_bytes=109_497_761, sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
        checksum_source=_FACEXLIB),
    ModelFile(
        key="bisenet", filename="parsing_bisenet.pth", folder="facexlib", subdirs=("",),
        url="https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
        licence="MIT (facexlib)", purpose="BiSeNet face parsing (background removal before EVA-CLIP)",
        size_bytes=53_289_463, sha256="468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567",
        checksum_source=_FACEXLIB),
)

BY_KEY = {m.key: m for m in MODEL_FILES}

# ComfyUI's own FLUX files that the shipped workflows load with core nodes (UNETLoader, DualCLIPLoader,
# VAELoader): the build script writes them into the workflows, check-models looks for them. `url` is what
# every message, Note, Missing Models entry and the README link: the sources of ComfyUI's own FLUX templates.
# The FLUX models are verified against the SHA-256 Black Forest Labs publishes for their own files, so
# `download` fetches those files (`download_url`), from the repository where FLUX.1-dev's licence is accepted
# (it is gated).
_BFL = "SHA-256 published by Black Forest Labs (github.com/black-forest-labs/flux, docs/text-to-image.md); size: "
CORE_MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile(
        key="flux1_dev", filename="flux1-dev.safetensors", folder="diffusion_models", subdirs=("",),
        url=f"{_HF}/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors",
        licence="FLUX.1 [dev] Non-Commercial License", purpose="FLUX.1 [dev] diffusion model",
        download_url=f"{_HF}/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors",
        size_bytes=23_802_932_552, sha256="4610115bb0c89560703c892c59ac2742fa821e60ef5871b33493ba544683abd7",
        checksum_source=_BFL + "Hub record of black-forest-labs/FLUX.1-dev, quoted by public manifests; a public "
                               "manifest pins Comfy-Org/flux1-dev@40a8a3d7's flux1-dev.safetensors at the same "
                               "size and SHA-256"),
    ModelFile(
        key="flux1_schnell", filename="flux1-schnell.safetensors", folder="diffusion_models", subdirs=("",),
        url=f"{_HF}/Comfy-Org/flux1-schnell/resolve/main/flux1-schnell.safetensors",
        licence="Apache-2.0", purpose="FLUX.1 [schnell] diffusion model",
        download_url=f"{_HF}/black-forest-labs/FLUX.1-schnell/resolve/main/flux1-schnell.safetensors",
        size_bytes=23_782_506_688, sha256="9403429e0052277ac2a87ad800adece5481eecefd9ed334e1f348723621d2a0a",
        checksum_source=_BFL + "Hub record of black-forest-labs/FLUX.1-schnell@a91e3eb2, quoted by a public manifest"),
    ModelFile(
        key="clip_l", filename="clip_l.safetensors", folder="text_encoders", subdirs=("",),
        url=f"{_HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
        licence="MIT", purpose="CLIP-L text encoder for FLUX",
        size_bytes=246_144_152, sha256="660c6f5b1abae9dc498ac2d21e1347d2abdb0cf6c0c0c8576cd796491d9a6cdd",
        checksum_source=_PINNED.format("comfyanonymous/flux_text_encoders", "6af2a98e")),
    ModelFile(
        key="t5xxl_fp16", filename="t5xxl_fp16.safetensors", folder="text_encoders", subdirs=("",),
        url=f"{_HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
        licence="Apache-2.0", purpose="T5-XXL text encoder for FLUX",
        size_bytes=9_787_841_024, sha256="6e480b09fae049a72d2a8c5fbccb8d3e92febeb233bbe9dfe7256958a9167635",
        checksum_source=_PINNED.format("comfyanonymous/flux_text_encoders", "main")),
    ModelFile(
        key="t5xxl_fp8", filename="t5xxl_fp8_e4m3fn.safetensors", folder="text_encoders", subdirs=("",),
        url=f"{_HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp8_e4m3fn.safetensors",
        licence="Apache-2.0", purpose="T5-XXL text encoder for FLUX, fp8 weights (half the memory)",
        size_bytes=4_893_934_904, sha256="7d330da4816157540d6bb7838bf63a0f02f573fc48ca4d8de34bb0cbfd514f09",
        checksum_source=_PINNED.format("comfyanonymous/flux_text_encoders", "6af2a98e")),
    ModelFile(
        key="flux_ae", filename="ae.safetensors", folder="vae", subdirs=("",),
        url=f"{_HF}/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors",
        licence="Apache-2.0", purpose="FLUX VAE",
        size_bytes=335_304_388, sha256="afc8e28272cd15db3919bacdb6918ce9c1ed22e96cb12c4d5ed0fba823529e38",
        checksum_source=_PINNED.format("Comfy-Org/Lumina_Image_2.0_Repackaged", "22e393d7")),
    # Chroma (chroma_pulid workflow): lodestones' FLUX.1-schnell descendant; it reads T5-XXL only (t5xxl_fp16
    # above, with CLIPLoader's type 'chroma') and decodes with the FLUX VAE above.
    ModelFile(
        key="chroma1_hd", filename="Chroma1-HD.safetensors", folder="diffusion_models", subdirs=("",),
        url=f"{_HF}/lodestones/Chroma1-HD/resolve/main/Chroma1-HD.safetensors",
        licence="Apache-2.0", purpose="Chroma1-HD diffusion model (FLUX.1 family, T5-XXL text encoder only)",
        size_bytes=17_800_038_288, sha256="d446d9695d08276f61e53653e025289dd96f7a489c27982a1fa54ecabc06642a",
        checksum_source=_PINNED.format("lodestones/Chroma1-HD", "0e0c60ec")),
)

# Files a pack node loads when its workflow names none (Face Analysis loaders saved before their file widgets).
NODE_MODEL_FILES = {"FaceMigration_FaceAnalysisLoader": ("scrfd", "glintr100")}


@dataclass(frozen=True)
class Catalogue:
    """The pack's files and ComfyUI's core files the workflows load. `check-models` and `download` take
    one, so a test can hand them its own entries (small files with their own sizes and hashes)."""
    pack: tuple[ModelFile, ...]
    core: tuple[ModelFile, ...]

    @property
    def files(self) -> tuple[ModelFile, ...]:
        return self.pack + self.core

    def by_key(self, key: str) -> ModelFile | None:
        return next((m for m in self.files if m.key == key), None)

    def by_filename(self, name: str) -> ModelFile | None:
        """The entry a file name belongs to, alternatives included."""
        return next((m for m in self.files if name in (m.filename, *m.alternatives)), None)

    def replace(self, **changes: dict) -> "Catalogue":
        """A copy with some entries changed, by key: replace(pulid_flux={"size_bytes": 7, ...})."""
        def change(models):
            return tuple(dataclasses.replace(m, **changes.get(m.key, {})) for m in models)
        return Catalogue(change(self.pack), change(self.core))


CATALOGUE = Catalogue(MODEL_FILES, CORE_MODEL_FILES)


def model_by_filename(name: str) -> ModelFile | None:
    """The catalogue entry (pack or core) a file name belongs to, alternatives included."""
    return CATALOGUE.by_filename(name)


def find_in_folders(model: ModelFile, folder_roots: list[str], filename: str | None = None) -> str | None:
    """First existing path of the model (or an accepted alternative; or of `filename`, a file the user chose in
    its place) under any of the folder's roots."""
    if filename and re.search(r"[\\/]", filename):  # a name, never a path out of the model folders
        return None
    names = (filename,) if filename else (model.filename, *model.alternatives)
    for root in folder_roots:
        for sub in model.subdirs:
            for name in names:
                path = os.path.join(root, sub, name)
                if os.path.isfile(path):
                    return path
    return None


def missing_file_message(model: ModelFile, folder_roots: list[str], filename: str | None = None) -> str:
    searched = ", ".join(os.path.join(r, s) for r in folder_roots for s in model.subdirs) or model.display_folder
    return (f"{filename or model.filename} ({model.purpose}) was not found. Searched: {searched}. "
            f"{model.download_hint()} Licence: {model.licence}.")
