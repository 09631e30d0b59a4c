"""ArcFace recognition (antelopev2 glintr100.onnx) on onnxruntime (pulid-spec 7.3), and the cosine
similarity the Face Similarity node reports.

Input crops: RGB uint8 [N, 112, 112, 3] (see align.arcface_crop). Output: [N, 512] float32 raw
embeddings; PuLID uses them un-normalised.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelFileError
from .onnx_runtime import create_session

EMBEDDING_SIZE = 512
CROP_SIZE = 112


def recognizer_blob(crops: np.ndarray) -> np.ndarray:
    """RGB uint8 [N, H, W, 3] (or one HxWx3 crop) -> float32 [N, 3, H, W], (x - 127.5) / 127.5."""
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    return ((crops.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)


def check_arcface_io(inputs, outputs, path: str) -> None:
    """Raise ModelFileError naming path unless the model has ArcFace I/O: one input [N, 3, 112, 112]
    and one output [N, 512]. inputs/outputs are onnxruntime NodeArgs (anything with .name, .shape)."""
    fix = ("Expected antelopev2's glintr100.onnx (input [N, 3, 112, 112], output [N, 512]); download it again "
           "from the source in the README.")
    if len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, CROP_SIZE, CROP_SIZE]:
        got = ", ".join(f"{i.name} {list(i.shape)}" for i in inputs)
        raise ModelFileError(f"{path} is not an ArcFace recognizer: its inputs are {got}. {fix}")
    if len(outputs) != 1 or not outputs[0].shape or outputs[0].shape[-1] != EMBEDDING_SIZE:
        got = ", ".join(f"{o.name} {list(o.shape)}" for o in outputs)
        raise ModelFileError(f"{path} is not a 512-d ArcFace recognizer: its outputs are {got}. {fix}")


class ArcFaceRecognizer:
    """ArcFace on an onnxruntime session (see load_arcface)."""

    def __init__(self, session, path: str):
        check_arcface_io(session.get_inputs(), session.get_outputs(), path)
        self.session, self.path = session, path
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        # A model exported with a fixed batch of 1 runs one crop at a time.
        self.one_at_a_time = session.get_inputs()[0].shape[0] == 1

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """RGB uint8 crops [N, 112, 112, 3] (or one 112x112x3 crop) -> raw embeddings [N, 512] float32."""
        blob = recognizer_blob(crops)
        if blob.shape[1:] != (3, CROP_SIZE, CROP_SIZE):
            raise ValueError(f"ArcFace needs 112x112 RGB crops, got {blob.shape[2]}x{blob.shape[3]}x{blob.shape[1]}")
        if self.one_at_a_time:
            out = np.concatenate([self.session.run([self.output_name], {self.input_name: blob[i:i + 1]})[0]
                                  for i in range(len(blob))])
        else:
            out = self.session.run([self.output_name], {self.input_name: blob})[0]
        return np.asarray(out, np.float32).reshape(len(blob), EMBEDDING_SIZE)


def load_arcface(path: str, providers: str = "auto", gpu_present: bool | None = None) -> ArcFaceRecognizer:
    """Load glintr100.onnx on the chosen execution provider (see onnx_runtime.PROVIDER_CHOICES)."""
    return ArcFaceRecognizer(create_session(path, providers, gpu_present), path)


def cosine_similarity(reference: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Cosine similarity between one embedding [512] and each row of others [N, 512] -> [N] float32,
    in [-1, 1]; a zero vector gives 0."""
    ref = np.asarray(reference, np.float64).reshape(-1)
    others = np.asarray(others, np.float64).reshape(-1, ref.size)
    denom = np.linalg.norm(others, axis=1) * np.linalg.norm(ref)
    dots = others @ ref
    return np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0).astype(np.float32)
