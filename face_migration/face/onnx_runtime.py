"""onnxruntime sessions for the antelopev2 face models, with an execution-provider choice.

onnxruntime is imported inside the functions: ComfyUI loads the pack without it, and only the face
loaders need it. "auto" follows the machine: without a GPU it is the CPU, quietly (asking onnxruntime
for a GPU provider there only fills the log with CUDA errors); with a GPU it is the first GPU provider
the installed onnxruntime offers. A GPU provider that cannot be used falls back to the CPU with a
warning that says how to fix the installation.
"""
from __future__ import annotations

import logging
from importlib import metadata

import torch

from ..errors import FaceMigrationError, ModelFileError

logger = logging.getLogger(__name__)

PROVIDER_CHOICES = ("auto", "CPU", "CUDA", "ROCm", "CoreML", "DirectML")

_PROVIDER_NAMES = {
    "CPU": "CPUExecutionProvider",
    "CUDA": "CUDAExecutionProvider",
    "ROCm": "ROCMExecutionProvider",
    "CoreML": "CoreMLExecutionProvider",
    "DirectML": "DmlExecutionProvider",
}
# "auto" takes the first GPU provider the installed onnxruntime offers.
_AUTO_ORDER = ("CUDA", "ROCm", "DirectML", "CoreML")

_INSTALL_FIX = {
    "CUDA": "pip uninstall -y onnxruntime onnxruntime-gpu, then pip install onnxruntime-gpu "
            "(in ComfyUI's Python, then restart ComfyUI)",
    "ROCm": "replace onnxruntime with AMD's ROCm build of onnxruntime (onnxruntime-rocm)",
    "CoreML": "pip install onnxruntime (the macOS wheel includes CoreML)",
    "DirectML": "pip uninstall -y onnxruntime, then pip install onnxruntime-directml",
}

# Wheels that all install the same `onnxruntime` module: two of them overwrite each other.
_ONNXRUNTIME_WHEELS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-rocm",
                       "onnxruntime-openvino", "onnxruntime-silicon", "onnxruntime-qnn")


def import_onnxruntime():
    """The onnxruntime module, or an error that says which package to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise FaceMigrationError(
            "The Python package onnxruntime is not installed; the antelopev2 face models (SCRFD, glintr100) "
            "need it. Fix: in ComfyUI's Python run `pip install onnxruntime-gpu` (NVIDIA GPU on Linux or "
            f"Windows) or `pip install onnxruntime` (anything else), then restart ComfyUI. ({exc})") from exc
    return onnxruntime


def installed_onnxruntime_wheels() -> list[str]:
    """The onnxruntime distributions pip has installed (more than one means one shadows the other)."""
    found = []
    for name in _ONNXRUNTIME_WHEELS:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def torch_sees_gpu() -> bool:
    """Whether this machine has a GPU torch can use (CUDA / ROCm, Apple MPS or Intel XPU)."""
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return (torch.cuda.is_available() or bool(mps and mps.is_available())
            or bool(xpu and xpu.is_available()))


def resolve_providers(choice: str, available: list[str], installed_wheels: list[str] | tuple = (), *,
                      gpu_present: bool) -> tuple[list[str], str | None]:
    """onnxruntime provider list for a user choice (one of PROVIDER_CHOICES), given the providers the
    installed onnxruntime offers and whether the machine has a GPU. Returns (providers, warning); the
    warning is None when the choice can be honoured (auto on a machine without a GPU is the CPU, as
    asked), and otherwise names the fix."""
    if choice not in PROVIDER_CHOICES:
        raise FaceMigrationError(f"Unknown execution provider {choice!r}; expected one of {', '.join(PROVIDER_CHOICES)}.")
    cpu = [_PROVIDER_NAMES["CPU"]]
    if choice == "CPU" or (choice == "auto" and not gpu_present):
        return cpu, None
    shadowed = (f"Several onnxruntime packages are installed ({', '.join(installed_wheels)}); they write the "
                "same module and the last one installed wins, so keep only one.") if len(installed_wheels) > 1 else None
    if choice == "auto":
        for gpu in _AUTO_ORDER:
            if _PROVIDER_NAMES[gpu] in available:
                return [_PROVIDER_NAMES[gpu]] + cpu, None
        return cpu, (f"This machine has a GPU, but the installed onnxruntime offers no GPU provider (only "
                     f"{', '.join(available) or 'nothing'}), so the face models run on the CPU."
                     f"{' ' + shadowed if shadowed else ''} Fix for NVIDIA: {_INSTALL_FIX['CUDA']}.")
    wanted = _PROVIDER_NAMES[choice]
    if wanted in available:
        return [wanted] + cpu, None
    warning = (f"Execution provider {choice} was asked for, but the installed onnxruntime only offers "
               f"{', '.join(available) or 'nothing'}; the face models run on the CPU. Fix: {_INSTALL_FIX[choice]}.")
    return cpu, warning + (f" {shadowed}" if shadowed else "")


def create_session(path: str, providers: str = "auto", gpu_present: bool | None = None):
    """An onnxruntime InferenceSession for the model file at path, on the chosen provider (falls back
    to the CPU with a logged warning). gpu_present: whether the machine has a GPU to use (ComfyUI's
    device decides in the nodes); None asks torch."""
    ort = import_onnxruntime()
    gpu_present = torch_sees_gpu() if gpu_present is None else gpu_present
    wanted, warning = resolve_providers(providers, ort.get_available_providers(), installed_onnxruntime_wheels(),
                                        gpu_present=gpu_present)
    if warning:
        logger.warning(warning)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's own warnings repeat what we log, less clearly
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=wanted)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        raise ModelFileError(
            f"onnxruntime could not load {path}: {exc}. The file is probably truncated or not an ONNX model; "
            "download it again.") from exc
    active = session.get_providers()
    if wanted[0] not in active:
        # Listed but not started: without a GPU that is expected; with one, typically the CUDA / cuDNN
        # libraries onnxruntime-gpu needs are missing.
        fix = ("install the CUDA and cuDNN versions your onnxruntime build requires (see onnxruntime.ai, "
               "execution providers), or pick CPU" if gpu_present else "no GPU was found on this machine: pick CPU")
        logger.warning("%s: onnxruntime could not start %s and runs on %s. Fix: %s.",
                       path, wanted[0], ", ".join(active), fix)
    return session
