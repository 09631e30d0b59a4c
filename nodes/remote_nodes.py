"""Face Migration (MoArk API): the hosted PuLID-FLUX service as a node, for machines that cannot run FLUX.

All behaviour (key lookup, request, retries, decoding, validation) is in face_migration.remote; this
module reads the widgets, wires ComfyUI's cancel and progress into the client and converts tensors.
A failure after an image came back (billed) saves every received image to ComfyUI's output folder."""
from __future__ import annotations

import logging
import time

import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy_api.v0_0_2 import io

from ..face_migration.remote import (CUSTOM_ENDPOINT, DEFAULT_MAX_UPLOAD_SIDE, DEFAULT_MODEL, DEFAULT_SIZE,
                                     ENDPOINTS, ENV_VARS, KEY_FILENAME, MAX_SEED, NO_SEED, RANGES, SIZES,
                                     FaceMigrationClient, FaceMigrationParams, RetryPolicy, endpoint_url,
                                     find_api_key)
from ..face_migration.remote.images import keep_received_on_failure, with_transparency
from ..face_migration.remote.params import ID_WEIGHT_FRACTIONS_NOTE, early_problems, widget_seed
from .common import CATEGORY, LOG_PREFIX, schema_extras

logger = logging.getLogger(__name__)

RECEIVED_STEM = "face_migration_received"  # file name of billed images kept after a failure


def _send_text(text: str, node_id) -> None:
    """Text under the node in the UI; silently nothing outside a running server (e.g. scripts)."""
    try:
        from server import PromptServer

        if node_id is not None and PromptServer.instance is not None:
            PromptServer.instance.send_progress_text(text, node_id)
    except Exception as exc:  # progress text is a nicety; never fail the generation for it
        logger.debug("%s progress text not sent: %s", LOG_PREFIX, exc)


def _should_cancel() -> bool:
    # Raises ComfyUI's InterruptProcessingException (and clears the flag) when the user pressed cancel;
    # the client lets it through unchanged.
    comfy.model_management.throw_exception_if_processing_interrupted()
    return False


class MoArkFaceMigration(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        low = {name: r[0] for name, r in RANGES.items()}
        high = {name: r[1] for name, r in RANGES.items()}
        default = {name: r[2] for name, r in RANGES.items()}
        return io.Schema(
            node_id="FaceMigration_MoArkFaceMigration",
            display_name="Face Migration (MoArk API)",
            **schema_extras(search_aliases=["PuLID", "face id", "face migration", "MoArk", "Gitee AI"]),
            category=CATEGORY,
            description=(
                "Generates an image with the face of the input photo through the hosted MoArk / Gitee AI "
                "face-migration API (PuLID-FLUX, flux-1-schnell); no local GPU needed. One paid request per "
                f"input image. API key: environment variable {ENV_VARS[0]} (or {ENV_VARS[1]}) before starting "
                f"ComfyUI, or a file ComfyUI/user/{KEY_FILENAME} holding only the token. Never type the key "
                "into a widget: workflows and saved PNGs would carry it. An error says when a failed request "
                "may have been billed."),
            inputs=[
                io.Image.Input("image", tooltip="Face reference photo(s). One request per image in the batch; "
                                                f"images larger than {DEFAULT_MAX_UPLOAD_SIDE} px are "
                                                "downscaled before upload (aspect kept)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="The MASK output of the Load Image node that loads the photo. ComfyUI's "
                                      "IMAGE has no transparency: without this, transparent parts of a cut-out "
                                      "photo are uploaded in their hidden colour, often black. With it, they are "
                                      "laid over white. Mask 1 = transparent, as Load Image makes it."),
                io.String.Input("prompt", multiline=True, default="",
                                placeholder="portrait, oil painting, soft light",
                                tooltip="What to generate. The face comes from the image; describe the scene, "
                                        "style and clothing here. Required."),
                io.Combo.Input("size", options=list(SIZES), default=DEFAULT_SIZE,
                               tooltip="Output size (width x height); the sizes the API offers."),
                io.Float.Input("guidance_scale", default=default["guidance_scale"], min=low["guidance_scale"],
                               max=high["guidance_scale"], step=0.1,
                               tooltip="Prompt adherence: higher follows the prompt more closely. API default 4; "
                                       "sent rounded to 0.1, the step of the API's schema."),
                io.Int.Input("num_inference_steps", default=default["num_inference_steps"],
                             min=low["num_inference_steps"], max=high["num_inference_steps"],
                             tooltip="Denoising steps (FLUX schnell: 4 is the API default; more is slower)."),
                io.Float.Input("id_weight", default=default["id_weight"], min=low["id_weight"],
                               max=high["id_weight"], step=0.05,
                               tooltip="How strongly the reference face shapes the result. 1 = API default; "
                                       "higher copies the face harder at the cost of prompt freedom. "
                                       f"Fractions are sent as given, but {ID_WEIGHT_FRACTIONS_NOTE}."),
                io.Int.Input("id_timestep_start", default=default["id_timestep_start"],
                             min=low["id_timestep_start"], max=high["id_timestep_start"],
                             tooltip="Step at which the face starts to be used (must be below "
                                     "num_inference_steps). 0 = from the start (most faithful); later leaves "
                                     "the first steps to the prompt (more editable)."),
                io.Int.Input("seed", default=NO_SEED, min=NO_SEED, max=MAX_SEED, control_after_generate=True,
                             tooltip="-1: no seed is sent (the server picks one); with control 'fixed' a "
                                     "re-run with the same inputs reuses ComfyUI's cached image. 0 or more: "
                                     "sent as the seed (image i of a batch gets seed + i); 'randomize' makes "
                                     "a new request on every run."),
                io.String.Input("model", default=DEFAULT_MODEL,
                                tooltip=f"Model name sent to the API; '{DEFAULT_MODEL}' is the only one "
                                        "documented for face migration."),
                io.Combo.Input("endpoint", options=[*ENDPOINTS, CUSTOM_ENDPOINT], default=ENDPOINTS[0],
                               tooltip="moark.ai (international) and ai.gitee.com (China) are the same "
                                       "service; 'custom' uses custom_base_url."),
                io.String.Input("custom_base_url", default="",
                                tooltip="Only with endpoint 'custom': base URL of a compatible server, e.g. "
                                        "https://my-proxy.example or http://127.0.0.1:8000 (plain http only "
                                        "for this machine or a private network). "
                                        "/v1/images/face-migration is appended."),
                io.Float.Input("timeout", default=180.0, min=10.0, max=1800.0, step=10.0,
                               tooltip="Seconds to wait for one answer. A request the server cannot have "
                                       "started (no connection; HTTP 408, 429, 502, 503, 504) is sent again "
                                       "with growing pauses, at most 4 tries and 10 minutes (or 3 timeouts, "
                                       "if longer) in all."),
                io.Boolean.Input("retry_timeouts", default=False, optional=True,
                                 tooltip="Off: a request that timed out or broke after it was sent is not sent "
                                         "again, since the server may still be working on it and bill it. On: "
                                         "it is sent again like a busy server's; each try may be billed."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The generated images, one (or more, if "
                                                                    "the API returns several) per input image.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, prompt=None, num_inference_steps=None, id_timestep_start=None, endpoint=None,
                        custom_base_url=None):
        # Named arguments only: ComfyUI still checks the other widgets' ranges itself.
        found = early_problems(prompt, num_inference_steps, id_timestep_start, endpoint, custom_base_url)
        return "; ".join(found) if found else True

    @classmethod
    def execute(cls, image, prompt, size, guidance_scale, num_inference_steps, id_weight, id_timestep_start, seed,
                model, endpoint, custom_base_url, timeout, retry_timeouts=False, mask=None):
        params = FaceMigrationParams(prompt=prompt, size=size, guidance_scale=guidance_scale,
                                     num_inference_steps=num_inference_steps, id_weight=id_weight,
                                     id_timestep_start=id_timestep_start, seed=widget_seed(seed),
                                     model=model).validated()
        url = endpoint_url(endpoint, custom_base_url)
        key = find_api_key(user_dir=folder_paths.get_user_directory())
        node_id = cls.hidden.unique_id
        total = image.shape[0]
        bar = comfy.utils.ProgressBar(total, node_id=node_id)
        state = {"index": 0}

        def on_image(index: int) -> None:
            state["index"] = index
            bar.update_absolute(index, total)  # also a cancel checkpoint in ComfyUI's progress hook

        def on_progress(elapsed: float, attempt: int) -> None:
            try_note = f", try {attempt}" if attempt > 1 else ""
            batch_note = f"image {state['index'] + 1}/{total}: " if total > 1 else ""
            _send_text(f"{batch_note}waiting for MoArk {elapsed:.0f} s{try_note}", node_id)

        client = FaceMigrationClient(key, url, timeout=timeout,
                                     retry=RetryPolicy(max_total_time=max(RetryPolicy.max_total_time, 3 * timeout),
                                                       retry_timeouts=retry_timeouts),
                                     should_cancel=_should_cancel, on_progress=on_progress)
        faces = image.cpu().numpy()
        if mask is not None:
            faces = with_transparency(faces, mask.cpu().numpy())
        started = time.monotonic()
        with keep_received_on_failure(folder_paths.get_output_directory(), RECEIVED_STEM):
            batch = client.generate_batch(faces, params, on_image=on_image)
            pixels = torch.from_numpy(batch.astype(np.float32) / 255.0)
        bar.update_absolute(total, total)
        _send_text(f"{len(batch)} image(s) in {time.monotonic() - started:.0f} s", node_id)
        return io.NodeOutput(pixels.to(comfy.model_management.intermediate_device()))


NODES = [MoArkFaceMigration]
