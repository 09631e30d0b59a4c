"""Test-only ComfyUI nodes for the integration tests (installed into a temporary ComfyUI by conftest.py).

They stand in for what the tests cannot have here: text encoders (random FLUX-shaped conditioning),
face photos (random PuLID identities from the real IDFormer) and image outputs (a latent digest)."""
import hashlib
import importlib
import sys

import torch

CATEGORY = "face_migration/testing"


class FaceMigrationTest_RandomConditioning:
    """FLUX-shaped CONDITIONING from seeded noise: [1, tokens, context_dim] + pooled_output + guidance."""
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF}),
            "tokens": ("INT", {"default": 32, "min": 1, "max": 4096}),
            "context_dim": ("INT", {"default": 4096, "min": 1, "max": 16384}),
            "pooled_dim": ("INT", {"default": 768, "min": 1, "max": 16384}),
            "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1}),
        }}

    def make(self, seed, tokens, context_dim, pooled_dim, guidance):
        gen = torch.Generator().manual_seed(seed)
        cond = torch.randn((1, tokens, context_dim), generator=gen)
        pooled = torch.randn((1, pooled_dim), generator=gen)
        return ([[cond, {"pooled_output": pooled, "guidance": guidance}]],)


def _identity_module(pulid_model):
    """The pack's own `face_migration.pulid.identity`, found from the model object's class.

    ComfyUI imports the pack under a module name derived from its folder path, so a plain
    `import face_migration` would load a second copy of the library whose classes differ from the
    pack's. Going through the loaded model's module gives exactly the classes the Apply node uses."""
    model_module = sys.modules[type(pulid_model.model).__module__]  # ...face_migration.pulid.model
    return importlib.import_module(".identity", model_module.__package__)


class FaceMigrationTest_RandomPulidId:
    """PULID_ID from the real IDFormer of the given PuLID model, run on seeded random embeddings."""
    CATEGORY = CATEGORY
    RETURN_TYPES = ("PULID_ID",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pulid_model": ("FACE_MIGRATION_PULID_MODEL",),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF}),
            "count": ("INT", {"default": 1, "min": 1, "max": 16}),
        }}

    def make(self, pulid_model, seed, count):
        cfg = pulid_model.model.cfg
        gen = torch.Generator().manual_seed(seed)
        id_vector = torch.randn((count, cfg.id_input_dim), generator=gen)
        vit_hidden = [torch.randn((count, 577, cfg.vit_dim), generator=gen) for _ in range(cfg.num_vit_scales)]
        identity = _identity_module(pulid_model).identity_from_embeddings(
            pulid_model.model, pulid_model.fingerprint, id_vector, vit_hidden, {"source": f"random seed {seed}"})
        return (identity,)


class FaceMigrationTest_LatentDigest:
    """Output node: sha256 of the latent's float32 bytes plus shape/mean/std; fails on NaN/Inf."""
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    FUNCTION = "digest"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def digest(self, samples):
        x = samples["samples"].detach().to("cpu", torch.float32).contiguous()
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"latent {list(x.shape)} contains NaN or Inf")
        info = {"sha256": hashlib.sha256(x.numpy().tobytes()).hexdigest(), "shape": list(x.shape),
                "mean": float(x.mean()), "std": float(x.std())}
        return {"ui": {"latent_digest": [info]}}


class FaceMigrationTest_LatentToImage:
    """A stand-in VAE decode: the latent's first 3 channels through a sigmoid, each latent pixel repeated
    8 x 8 (the size a FLUX VAE would give) without the cost of a VAE."""
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def decode(self, samples):
        x = samples["samples"][:, :3].detach().to("cpu", torch.float32)
        image = torch.sigmoid(x).repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
        return (image.permute(0, 2, 3, 1).contiguous(),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    FaceMigrationTest_RandomConditioning, FaceMigrationTest_RandomPulidId, FaceMigrationTest_LatentDigest,
    FaceMigrationTest_LatentToImage)}

from .injection_probes import NODE_CLASS_MAPPINGS as _INJECTION_PROBES  # noqa: E402

NODE_CLASS_MAPPINGS.update(_INJECTION_PROBES)
from .sampling_probes import NODE_CLASS_MAPPINGS as _SAMPLING_PROBES  # noqa: E402

NODE_CLASS_MAPPINGS.update(_SAMPLING_PROBES)
from .core_auth_standin import NODE_CLASS_MAPPINGS as _CORE_AUTH_STANDIN, install as _install_core_auth  # noqa: E402

NODE_CLASS_MAPPINGS.update(_CORE_AUTH_STANDIN)
_install_core_auth()
