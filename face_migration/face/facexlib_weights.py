"""Reading facexlib's .pth weight files (RetinaFace-ResNet50, BiSeNet) without running pickle code,
and checking them key by key against the network we build, with errors a user can act on.

The files are plain state dicts. `torch.load(weights_only=True)` refuses anything but tensors and
containers, so a tampered file cannot run code. The RetinaFace release was saved from a
DataParallel model, so its keys may carry a `module.` prefix; it is removed. BatchNorm's
`num_batches_tracked` counters do not affect inference and are accepted whether present or not.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile

import torch
from torch import nn

from ..catalog import ModelFile
from ..errors import ModelFileError
from ..model_layout import describe_model, layout_problems
from ..safetensors_file import read_header

logger = logging.getLogger(__name__)

_MODULE_PREFIX = "module."
_OPTIONAL_SUFFIX = ".num_batches_tracked"

def _fix(entry: ModelFile) -> str:
    return f"{entry.download_hint()} Licence: {entry.licence}."


def read_state_dict(path: str, entry: ModelFile) -> dict[str, torch.Tensor]:
    """The file's tensors on the CPU, `module.` prefix removed. entry: the catalogue row of the file
    the caller expects, used to name the right file and folder in errors."""
    name = os.path.basename(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and not zipfile.is_zipfile(path):
        # A .safetensors file (8-byte header length, then JSON): say which model it is.
        header = read_header(path, entry.display_folder)
        header.pop("__metadata__", None)
        raise ModelFileError(
            f"{name} is a .safetensors file holding {describe_model(header)}, not {entry.purpose}. "
            f"{_fix(entry)}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        # torch's own text suggests turning the safe loader off, which we must never do: log it only.
        logger.debug("torch.load(%s, weights_only=True) failed: %s", path, exc)
        raise ModelFileError(
            f"{name} could not be read as a PyTorch weights file without running code in it "
            f"({type(exc).__name__}). It is truncated, of another format (e.g. an error page saved by a "
            f"failed download), or not the official release. {_fix(entry)}") from None
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(
            f"{name} does not hold a plain state dict of tensors (found {type(obj).__name__}). {_fix(entry)}")
    return {(k[len(_MODULE_PREFIX):] if k.startswith(_MODULE_PREFIX) else k): v for k, v in obj.items()}


def check_and_load(model: nn.Module, state: dict[str, torch.Tensor], path: str, entry: ModelFile) -> nn.Module:
    """Load state into model (built on the meta device or the CPU) after checking that every key and
    shape matches exactly; returns the model in eval mode, on the CPU, gradients off."""
    name = os.path.basename(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    required = {k for k in expected if not k.endswith(_OPTIONAL_SUFFIX)}
    if len(required - set(state)) > len(required) // 2:
        raise ModelFileError(f"{name} holds {describe_model(state)}, not {entry.purpose}. {_fix(entry)}")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    problems = layout_problems(shapes, expected, optional=set(expected) - required)
    if problems:
        raise ModelFileError(f"{name} does not have the layout of {entry.purpose}: {'; '.join(problems)}. "
                             f"Use the official {entry.filename}, unmodified. {_fix(entry)}")
    full = dict(state)
    for k in expected:
        if k not in full:  # only the optional BatchNorm counters can be absent here
            full[k] = torch.zeros((), dtype=torch.long)
    model.load_state_dict(full, strict=True, assign=True)
    return model.float().eval().requires_grad_(False)


def load_network(path: str, entry: ModelFile, config_from_shapes, build, ops=nn) -> nn.Module:
    """Read a facexlib file, size the network from its shapes, build it on the meta device with `ops`
    and load it strictly (see check_and_load)."""
    state = read_state_dict(path, entry)
    cfg = config_from_shapes({k: tuple(v.shape) for k, v in state.items()})
    with torch.device("meta"):
        model = build(cfg, ops)
    return check_and_load(model, state, path, entry)
