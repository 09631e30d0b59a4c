"""PuLID model loader and the Apply node: identity into ComfyUI's FLUX.1 or Chroma through block patches on a
clone."""
from __future__ import annotations

import logging
import os

import comfy.ops
import comfy.patcher_extension
from comfy_api.v0_0_2 import io

from ..face_migration.catalog import BY_KEY
from ..face_migration.errors import IncompatibleModelError
from ..face_migration.injection import (MAX_STEP, WEIGHT_MAX, WEIGHT_MIN, Injection, PercentRange, PulidBlockPatch,
                                        PulidCallWrapper, PulidEvaluationWrapper, PulidRunWrapper, StepRange,
                                        UncondMode, block_patches)
from ..face_migration.model_family import flux1_family
from ..face_migration.pulid.model import FP8_CAST_TO, widen_fp8
from ..face_migration.pulid.weights import load_pulid_flux
from .common import (CATEGORY, LOG_PREFIX, PulidId, PulidModel, check_file_choice, folder_hint, load_cached, managed,
                     model_choices, resolve_model_file, schema_extras)

WRAPPER_KEY = "face_migration_pulid"


class PulidModelHandle:
    """The PULID model value: the library model plus the ModelPatcher that lets ComfyUI load it onto the
    sampling device, count their memory and offload them. The two halves have their own patchers: the
    IDFormer is loaded only to encode faces, the CA modules only to sample with FLUX."""

    def __init__(self, path: str):
        self.name = os.path.basename(path)
        # comfy.ops layers compute in the activations' dtype (fp16, bf16, fp32) whatever the file's dtype.
        self.model, self.fingerprint = load_pulid_flux(path, folder_hint("pulid"), ops=comfy.ops.manual_cast)
        if widen_fp8(self.model):
            logging.info("%s %s is stored in fp8: its weights are cast to %s once at load.", LOG_PREFIX,
                         self.name, FP8_CAST_TO)
        self.encoder_patcher = managed(self.model.pulid_encoder)
        self.ca_patcher = managed(self.model.pulid_ca)

    def __repr__(self):
        return f"PuLID-FLUX model {self.name} ({self.model.cfg.num_ca} CA modules, weights {self.fingerprint})"


def load_handle(filename: str) -> PulidModelHandle:
    path = resolve_model_file("pulid", filename, BY_KEY["pulid_flux"])
    return load_cached("pulid", (path,), (), lambda: PulidModelHandle(path))


class PulidModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        files = model_choices("pulid", BY_KEY["pulid_flux"], (".safetensors",))
        return io.Schema(
            node_id="FaceMigration_PulidModelLoader",
            display_name="Load PuLID-FLUX Model",
            **schema_extras(search_aliases=["PuLID", "PuLID-FLUX model", "Load PuLID Flux Model",
                                            "PulidFluxModelLoader"]),
            category=CATEGORY,
            description="Loads pulid_flux_v0.9.1.safetensors (or v0.9.0) from models/pulid, checked key by key. "
                        "Weights stay in the file's dtype (fp32, fp16 or bf16; fp8 files are cast to bf16 once) "
                        "and compute in the dtype of what they meet. ComfyUI loads the cross-attention modules "
                        "onto the sampling device with FLUX, and the IDFormer only while encoding faces.",
            inputs=[io.Combo.Input("pulid_file", options=files,
                                   tooltip="PuLID-FLUX weights in models/pulid (pulid_flux_v0.9.1.safetensors "
                                           "from huggingface.co/guozinan/PuLID).")],
            outputs=[PulidModel.Output(display_name="pulid_model",
                                       tooltip="The PuLID IDFormer and cross-attention modules, for Encode Face "
                                               "and Apply PuLID.")],
        )

    @classmethod
    def validate_inputs(cls, pulid_file):
        return check_file_choice("pulid", pulid_file, BY_KEY["pulid_flux"])

    @classmethod
    def execute(cls, pulid_file):
        return io.NodeOutput(load_handle(pulid_file))


def check_flux_model(diffusion_model, handle: PulidModelHandle) -> tuple[int, int]:
    """(double, single) block counts of a FLUX.1-family model (FLUX.1, Chroma, Chroma Radiance: told by
    structure) the PuLID weights fit, or a typed error naming the model, the file and the reason."""
    cfg = handle.model.cfg
    model = flux1_family(diffusion_model)
    placed = len(block_patches(model.double_blocks, model.single_blocks))
    if model.hidden != cfg.flux_hidden or placed != cfg.num_ca:
        raise IncompatibleModelError(
            f"The connected {model.name} model (hidden size {model.hidden}, {model.double_blocks} double + "
            f"{model.single_blocks} single blocks, needs {placed} PuLID modules) does not fit {handle.name} "
            f"(hidden size {cfg.flux_hidden}, {cfg.num_ca} PuLID modules). Full-size FLUX.1 and Chroma models "
            f"have 19 double + 38 single blocks and take pulid_flux_v0.9.1.safetensors (20 modules); a pruned or "
            f"distilled variant with fewer blocks does not fit it.")
    return model.double_blocks, model.single_blocks


def apply_pulid(model, handle: PulidModelHandle, identity, weight: float, timing: str, start_step: int,
                end_step: int, start_percent: float, end_percent: float, uncond_id: str, mask=None):
    """A clone of `model` with the identity injected (`model` itself at weight 0); `model` is left untouched."""
    doubles, singles = check_flux_model(model.get_model_object("diffusion_model"), handle)
    identity.check_against(handle.model, handle.fingerprint)
    # Percents become sigmas when sampling starts, with the model sampling the sampler uses (as ControlNet's).
    gate = PercentRange(start_percent, end_percent) if timing == "percent" else StepRange(start_step, end_step)
    injection = Injection(handle.model, identity, weight, gate, UncondMode(uncond_id), mask)  # checks weight, mask
    if injection.weight == 0:  # no patch: nothing is loaded with FLUX for it and sampling is the plain model's
        return model

    patched = model.clone()
    existing = patched.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    for kind, block, ca_index in block_patches(doubles, singles):
        previous = existing.get((f"{kind}_block", block))
        if isinstance(previous, PulidBlockPatch) and previous.ca_index == ca_index:
            patch = previous.extended(injection, (handle.ca_patcher,))
        else:  # first PuLID on this block; a foreign patch is chained, not replaced
            patch = PulidBlockPatch(kind, ca_index, (injection,), previous, (handle.ca_patcher,))
        patched.set_model_patch_replace(patch, "dit", f"{kind}_block", block)
    # One call wrapper plans every Apply on the model: it is replaced by one that also holds this Apply (the
    # clone has its own wrapper lists, so `model` keeps its wrapper).
    call_kind = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
    earlier = tuple(i for w in patched.get_wrappers(call_kind, WRAPPER_KEY) for i in w.injections)
    patched.remove_wrappers_with_key(call_kind, WRAPPER_KEY)
    patched.add_wrapper_with_key(call_kind, WRAPPER_KEY, PulidCallWrapper(earlier + (injection,)))
    for kind, wrapper in ((comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, PulidRunWrapper),
                          (comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, PulidEvaluationWrapper)):
        if not patched.get_wrappers(kind, WRAPPER_KEY):
            patched.add_wrapper_with_key(kind, WRAPPER_KEY, wrapper())
    return patched


STEP_MEANING = ("Steps are counted from 0 in the sigmas the sampler of this run is given: KSampler's steps (with "
                "denoise < 1, the steps it really runs), KSamplerAdvanced's from its start_at_step, each part of "
                "a SplitSigmas on its own (the log warns). A step is the one the sampler is in: a second-order "
                "sampler's extra calls (Heun's corrector) belong to their step; a sampler that goes back up "
                "(restart) counts the step whose sigma range holds the call, each time it is visited. The server "
                "log names the steps on which the identity really ran after every run.")


def model_inputs() -> list:
    """The inputs the simple and the advanced Apply share, in their order on the node."""
    return [
        io.Model.Input("model", tooltip="A FLUX.1 model (dev, schnell, Krea, Kontext) or Chroma (Chroma1-HD, "
                                        "Base, Radiance), in fp32, fp16, bf16 or fp8 weights; the identity is "
                                        "computed in the model's activation dtype."),
        PulidModel.Input("pulid_model", tooltip="From Load PuLID-FLUX Model; the same one the identity "
                                                "was encoded with."),
        PulidId.Input("pulid_id", tooltip="The face identity from Encode Face (PuLID)."),
        io.Float.Input("weight", default=1.0, min=WEIGHT_MIN, max=WEIGHT_MAX, step=0.05,
                       tooltip="Identity strength (the hosted API's id_weight). 1 = official default; "
                               "0 = off (no work at all). Higher copies the face harder at the cost of prompt "
                               "freedom; below 0 pushes the face away from the identity (-1 at most)."),
    ]


def start_step_input(mode_note: str) -> io.Int.Input:
    return io.Int.Input("start_step", default=0, min=0, max=MAX_STEP,
                        tooltip=f"{mode_note}The first step with the identity. 0 = from the first step (highest "
                                f"fidelity); 1-4 leaves the first steps to the prompt (more editable, official "
                                f"advice: 4 for photos, 0-1 for stylised). {STEP_MEANING}")


def mask_input() -> io.Mask.Input:
    return io.Mask.Input("mask", optional=True,
                         tooltip="Optional: restrict the identity to this region (white = identity). [H, W] or "
                                 "[B, H, W] with values in [0, 1] (others are refused: strength is 'weight'), "
                                 "resized to the image; one mask or one per image of the sampled batch. Use two "
                                 "Apply nodes with two masks for two people.")


def model_output() -> io.Model.Output:
    return io.Model.Output(display_name="model", tooltip="The FLUX model with the identity applied.")


class ApplyPulidSimple(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaceMigration_ApplyPulidSimple",
            display_name="Apply PuLID-FLUX",
            **schema_extras(search_aliases=["PuLID", "face id", "identity", "Apply PuLID Flux", "ApplyPulidFlux"]),
            category=CATEGORY,
            description="Injects a face identity into a FLUX model from start_step to the end, with the hosted "
                        "API's two settings (id_weight, id_timestep_start). Apply PuLID-FLUX (Advanced) adds an "
                        "end step, percent timing and the negative-pass choice.",
            inputs=[*model_inputs(), start_step_input(""), mask_input()],
            outputs=[model_output()],
        )

    @classmethod
    def execute(cls, model, pulid_model, pulid_id, weight, start_step, mask=None):
        return io.NodeOutput(apply_pulid(model, pulid_model, pulid_id, weight, "steps", start_step, MAX_STEP,
                                         0.0, 1.0, UncondMode.UNCOND_ID.value, mask))


class ApplyPulid(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaceMigration_ApplyPulid",
            display_name="Apply PuLID-FLUX (Advanced)",
            **schema_extras(search_aliases=["PuLID", "face id", "identity", "Apply PuLID Flux", "ApplyPulidFlux"]),
            category=CATEGORY,
            description="Injects a face identity into a FLUX model (returns a patched copy; the input model is "
                        "never changed). Chain several to add identities, each with its own mask.",
            inputs=[
                *model_inputs(),
                io.Combo.Input("timing", options=["steps", "percent"], default="steps",
                               tooltip="steps: start/end are step numbers of the sampler's run (as the hosted "
                                       "API's id_timestep_start). percent: start/end are positions in the model's "
                                       "noise schedule (as ControlNet's), the same whatever sampler, split or "
                                       "denoise runs it: the clear choice with KSamplerAdvanced, SplitSigmas or "
                                       "restart samplers."),
                start_step_input("steps mode. "),
                io.Int.Input("end_step", default=MAX_STEP, min=0, max=MAX_STEP,
                             tooltip="steps mode: the identity stops before this step (counted as start_step). "
                                     "Leave high to keep it to the end."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="percent mode: where in the schedule the identity starts (0 = start), "
                                       "converted when sampling starts with the model the sampler uses."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="percent mode: where in the schedule the identity ends (1 = end)."),
                io.Combo.Input("uncond_id", options=[m.value for m in UncondMode], default=UncondMode.UNCOND_ID.value,
                               tooltip="What the negative (CFG) pass gets when CFG > 1: 'uncond ID' as the official "
                                       "code (the encoder's empty identity), the same identity, or none."),
                mask_input(),
            ],
            outputs=[model_output()],
        )

    @classmethod
    def execute(cls, model, pulid_model, pulid_id, weight, timing, start_step, end_step, start_percent,
                end_percent, uncond_id, mask=None):
        return io.NodeOutput(apply_pulid(model, pulid_model, pulid_id, weight, timing, start_step, end_step,
                                         start_percent, end_percent, uncond_id, mask))


NODES = [PulidModelLoader, ApplyPulidSimple, ApplyPulid]
