"""Test-only nodes that look at a sampling run from outside: where two latents differ (per batch row and
latent half), which models ComfyUI's model management holds while the diffusion model runs, what torch.compile
compiled, and a PULID_ID whose rows are picked from another (per-image identities in a chosen order)."""
import dataclasses
import logging

import torch

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
        return {"ui": {"latent_difference": rows, "max": [float(difference.max())]}}


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


class FaceMigrationTest_CompileReset:
    """MODEL passthrough that forgets torch.compile's compiled code and dynamo's counters (runs on every prompt)."""
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "reset"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def reset(self, model):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        torch._dynamo.utils.guard_failures.clear()
        return (model,)


class FaceMigrationTest_CompileCounters:
    """Output node on a sampled LATENT: graphs dynamo handed to the compile backend, frames it compiled, graph
    breaks, and recompilations (guard failures) since the last CompileReset, in all and of the pack's own code
    (ours; by file name)."""
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    FUNCTION = "read"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def read(self, samples):
        counters = torch._dynamo.utils.counters
        failures = torch._dynamo.utils.guard_failures
        found = {"graphs": counters["stats"]["unique_graphs"], "frames": counters["frames"]["ok"],
                 "graph_breaks": sum(counters["graph_break"].values()),
                 "recompiles": sum(len(reasons) for reasons in failures.values()),
                 "recompiles_ours": sum(len(reasons) for code, reasons in failures.items()
                                        if "face_migration" in code.co_filename)}
        logging.info("FaceMigrationTest compile counters: %s", found)
        return {"ui": {"compile": [found]}}


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    FaceMigrationTest_LatentDifference, FaceMigrationTest_LoadedModels, FaceMigrationTest_IdentityRows,
    FaceMigrationTest_CompileReset, FaceMigrationTest_CompileCounters)}
