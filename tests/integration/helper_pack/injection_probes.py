"""Test-only nodes for the injection tests: another pack's `dit` block patch (one that replaces whatever is on
the block, one that chains to it, and a probe that logs which tokens the patches before it changed), a
DIFFUSION_MODEL wrapper that appends a reference latent, and a sampler that visits some steps twice, as
restart-style samplers do."""
import logging

import comfy.patcher_extension
import comfy.samplers
import torch

CATEGORY = "face_migration/testing"
PROBE_LOG = "FaceMigrationTest probe"


class ForeignDitPatch:
    """replace: calls the original block only (drops any patch that was there); chain: calls the patch that was
    there; probe: chains, and logs the token positions where that patch's output differs from the plain block.
    Then scales img by `scale`."""

    def __init__(self, mode: str, scale: float, previous, name: str):
        self.mode, self.scale, self.previous, self.name = mode, scale, previous, name

    def __deepcopy__(self, memo):
        return self

    def models(self):
        return self.previous.models() if hasattr(self.previous, "models") else []

    def to(self, device_or_dtype):
        if hasattr(self.previous, "to"):
            self.previous = self.previous.to(device_or_dtype)
        return self

    def __call__(self, args, extra):
        plain = {}
        if self.mode == "probe":  # the block runs once (a KV cache must see one call); its output is kept
            original = extra["original_block"]

            def block_once(block_args):
                out = original(block_args)
                plain["img"] = out["img"].clone()
                return out
            extra = {**extra, "original_block": block_once}
        chained = self.previous if self.mode != "replace" else None
        out = chained(args, extra) if chained is not None else extra["original_block"](args)
        if self.mode == "probe":
            plain = plain["img"]
            difference = (out["img"] - plain).abs()
            changed = (difference.amax(dim=(0, 2)) > 0).nonzero().flatten().tolist()
            rows = (difference.amax(dim=(1, 2)) > 0).nonzero().flatten().tolist()
            span = [changed[0], changed[-1] + 1] if changed else []
            logging.info("%s %s: tokens %d, changed %d in span %s, rows changed %s", PROBE_LOG, self.name,
                         out["img"].shape[1], len(changed), span, rows)
        if self.scale != 1.0:
            out = {**out, "img": out["img"] * self.scale}
        return out


class FaceMigrationTest_DitPatch:
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "block": (["double_block", "single_block"],),
            "index": ("INT", {"default": 0, "min": 0, "max": 100}),
            "mode": (["replace", "chain", "probe"],),
            "scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.001}),
        }}

    def patch(self, model, block, index, mode, scale):
        patched = model.clone()
        previous = patched.model_options["transformer_options"].get("patches_replace", {}).get("dit", {}).get(
            (block, index))
        patched.set_model_patch_replace(ForeignDitPatch(mode, scale, previous, f"{block} {index}"), "dit", block, index)
        return (patched,)


class AppendReference:
    """DIFFUSION_MODEL wrapper: adds a zero reference latent of the given size to the call's ref_latents (as a
    Kontext-style pack installed after Apply might), before the model sees them."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width

    def __call__(self, executor, x, timestep, context, y=None, guidance=None, ref_latents=None, *args, **kwargs):
        reference = x.new_zeros(x.shape[0], x.shape[1], self.height, self.width)
        return executor(x, timestep, context, y, guidance, list(ref_latents or []) + [reference], *args, **kwargs)


class FaceMigrationTest_AppendReference:
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "height": ("INT", {"default": 8, "min": 1, "max": 256}),
                             "width": ("INT", {"default": 8, "min": 1, "max": 256})}}

    def patch(self, model, height, width):
        patched = model.clone()
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "face_migration_test",
                                     AppendReference(height, width))
        return (patched,)


@torch.no_grad()
def revisit_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Euler down to the middle of the schedule, then back up to sigmas[1] and Euler to the end: the model is
    called at sigmas[0 .. middle-1], then again at sigmas[1 .. n-2]."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])

    def euler(x, schedule):
        for i in range(len(schedule) - 1):
            denoised = model(x, schedule[i] * s_in, **extra_args)
            x = x + (x - denoised) / schedule[i] * (schedule[i + 1] - schedule[i])
        return x

    return euler(euler(x, sigmas[:len(sigmas) // 2 + 1]), sigmas[1:])


class FaceMigrationTest_RevisitSampler:
    CATEGORY = CATEGORY
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def make(self):
        return (comfy.samplers.KSAMPLER(revisit_euler),)


class FaceMigrationTest_PatchModels:
    """Output node: the models ComfyUI loads beside the diffusion model for this MODEL's patches
    (ModelPatcher.model_patches_models), as module class names and parameter counts."""
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    FUNCTION = "list_models"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    def list_models(self, model):
        unique = {id(p): p for p in model.model_patches_models()}.values()
        found = [{"module": type(p.model).__name__, "children": sorted({type(c).__name__ for c in p.model.children()}),
                  "parameters": sum(t.numel() for t in p.model.parameters())} for p in unique]
        return {"ui": {"patch_models": found}}


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    FaceMigrationTest_DitPatch, FaceMigrationTest_RevisitSampler, FaceMigrationTest_PatchModels,
    FaceMigrationTest_AppendReference)}
