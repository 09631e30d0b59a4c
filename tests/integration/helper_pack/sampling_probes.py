"""Test-only nodes that look at a sampling run from outside: where two latents differ (per batch row and
latent half), which models ComfyUI's model management holds while the diffusion model runs, and a PULID_ID
whose rows are picked from another (per-image identities in a chosen order)."""
import dataclasses
import logging

import comfy.model_management
import comfy.patcher_extension

CATEGORY = "face_migration/testing"
LOADED_LOG = "FaceMigrationTest loaded while sampling:"


class FaceMigrationTest_LatentDifference:
    """Output node: per batch row, the mean absolute difference of two latents on the left and on the right
    half of the latent's width."""
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    FUNCTION = "compare"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("LATENT",), "b": ("LATENT",)}}

    def compare(self, a, b):
        difference = (a["samples"].float() - b["samples"].float()).abs()
        half = difference.shape[-1] // 2
        rows = [[float(row[..., :half].mean()), float(row[..., half:].mean())] for row in difference]
        return {"ui": {"latent_difference": rows}}


class LoggingWrapper:
    """DIFFUSION_MODEL wrapper: logs the class of every model model management holds, once per model call."""

    def __call__(self, executor, *args, **kwargs):
        held = [type(loaded.model.model).__name__ for loaded in comfy.model_management.current_loaded_models
                if loaded.model is not None]
        logging.info("%s %s", LOADED_LOG, ", ".join(sorted(held)))
        return executor(*args, **kwargs)


class FaceMigrationTest_LoadedModels:
    """Adds LoggingWrapper to the model; with unload_first, first unloads every model (earlier prompts' leftovers
    are not counted)."""
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "unload_first": ("BOOLEAN", {"default": False})}}

    def patch(self, model, unload_first):
        if unload_first:
            comfy.model_management.unload_all_models()
        patched = model.clone()
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "face_migration_test_loaded",
                                     LoggingWrapper())
        return (patched,)


class FaceMigrationTest_IdentityRows:
    """PULID_ID made of the given rows of another, e.g. "1,0" swaps a two-image identity."""
    CATEGORY = CATEGORY
    RETURN_TYPES = ("PULID_ID",)
    FUNCTION = "pick"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pulid_id": ("PULID_ID",), "rows": ("STRING", {"default": "0"})}}

    def pick(self, pulid_id, rows):
        picked = [int(r) for r in rows.split(",")]
        return (dataclasses.replace(pulid_id, cond=pulid_id.cond[picked], uncond=pulid_id.uncond[picked]),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (FaceMigrationTest_LatentDifference,
                                                     FaceMigrationTest_LoadedModels, FaceMigrationTest_IdentityRows)}
