"""The hosted face-migration API on ComfyUI's own server.

POST /face-migration/v1/images/face-migration (and /v1/images/face-migration itself when
FACE_MIGRATION_API_HOSTED_PATH=1) takes the hosted multipart request, fills the API template of the
request's model, and queues it exactly as POST /prompt does (the same on_prompt handlers, validation and
queue), so it shares the GPU, the model cache, the progress bar and Cancel with the UI. The API Result
node at the end of the template hands the image back in memory. Wire format, access rules and templates
live in face_migration.selfhost; this module only connects them to aiohttp and the prompt queue."""
from __future__ import annotations

import asyncio
import io as bytes_io
import logging
import os
import uuid
from pathlib import Path

import comfy.model_management
import execution
import folder_paths
import numpy as np
from aiohttp import BodyPartReader, web
from comfy.cli_args import args
from comfy_api.v0_0_2 import io
from PIL import Image

from ..face_migration.errors import (ApiNoFaceError, ApiPromptFailedError, ApiRequestError, ApiUnavailableError,
                                     ModelFileError, NoFaceError)
from ..face_migration.remote.params import API_PATH
from ..face_migration.selfhost.access import authorize, configured_token, listens_beyond_loopback
from ..face_migration.selfhost.mailbox import Mailbox
from ..face_migration.selfhost.protocol import check_upload_size, error_answer, image_answer, parse_request
from ..face_migration.selfhost.templates import (RESULT_NODE, TemplateCatalog, fill, request_values,
                                                 user_templates_folder)
from .common import CATEGORY, LOG_PREFIX

logger = logging.getLogger(__name__)

ROUTE = "/face-migration" + API_PATH
HOSTED_PATH_ENV = "FACE_MIGRATION_API_HOSTED_PATH"
MAX_QUEUE_ENV = "FACE_MIGRATION_API_MAX_QUEUE"
DEFAULT_MAX_QUEUE = 8
TEMP_SUBFOLDER = "face_migration_api"
SHIPPED_TEMPLATES = Path(__file__).resolve().parents[1] / "api_templates"
CHECK_INTERVAL_S = 0.05  # how often a waiting request looks for errors, cancels and a client gone
TRUE_WORDS = ("1", "true", "yes", "on")

MAILBOX = Mailbox()
_catalog: TemplateCatalog | None = None
_registered = False


class ApiResult(io.ComfyNode):
    """The end of an API template: returns the images to the waiting request, writes no file."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=RESULT_NODE,
            display_name="API Result (self-hosted face migration)",
            category=CATEGORY,
            description="Last node of an API template (see the README, 'Self-hosted API'): hands the images to "
                        "the request that queued the prompt. Saves nothing; elsewhere it does nothing.",
            inputs=[
                io.Image.Input("images", tooltip="The generated images; each becomes one item of 'data'."),
                io.String.Input("request_id", default="{{request_id}}",
                                tooltip="Filled in by the route; keep the placeholder {{request_id}}."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, request_id):
        pngs = []
        for frame in images:
            pixels = np.clip(frame.cpu().float().numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
            buffer = bytes_io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG", compress_level=4)
            pngs.append(buffer.getvalue())
        if not MAILBOX.deliver(request_id, pngs):
            logger.info("%s API Result: no request waits for id %r; nothing returned", LOG_PREFIX, request_id)
        return io.NodeOutput()


NODES = [ApiResult]


def register_routes() -> None:
    """Once per process (aiohttp refuses a second handler for the same path)."""
    global _registered
    from server import PromptServer

    if _registered:
        return
    _registered = True
    paths = [ROUTE]
    if os.environ.get(HOSTED_PATH_ENV, "").strip().lower() in TRUE_WORDS:
        paths.append(API_PATH)
    for path in paths:
        PromptServer.instance.routes.post(path)(handle)
    logger.info("%s self-hosted API: POST %s", LOG_PREFIX, " and ".join(paths))


def catalog() -> TemplateCatalog:
    global _catalog
    if _catalog is None:
        _catalog = TemplateCatalog([SHIPPED_TEMPLATES, user_templates_folder(folder_paths.get_user_directory())])
    return _catalog


async def handle(request: web.Request) -> web.StreamResponse:
    from server import PromptServer

    server = PromptServer.instance
    request_id = uuid.uuid4().hex
    upload = None
    try:
        user_directory = folder_paths.get_user_directory()
        authorize(request.headers.get("Authorization"), configured_token(user_directory),
                  listens_beyond_loopback(args.listen), user_directory)
        api_request = parse_request(*await read_form(request))
        template = catalog().template(api_request.params.model)
        upload = Path(folder_paths.get_temp_directory()) / TEMP_SUBFOLDER / f"{request_id}.{api_request.image_suffix}"
        upload.parent.mkdir(parents=True, exist_ok=True)
        upload.write_bytes(api_request.image)
        image_value = f"{TEMP_SUBFOLDER}/{upload.name} [temp]"  # LoadImage's name for a temp-folder file
        prompt = fill(template, request_values(api_request.params, image_value, request_id))
        images = await run_prompt(server, request, prompt, request_id, api_request.params.model)
        return web.json_response(image_answer(images))
    except ApiRequestError as error:
        status, body = error_answer(error)
        return web.json_response(body, status=status)
    finally:
        MAILBOX.close(request_id)
        if upload is not None:
            upload.unlink(missing_ok=True)


async def read_form(request: web.Request) -> tuple[dict[str, list[str]], dict[str, list[bytes]]]:
    """The multipart parts, streamed with a running size check (an oversized upload is refused before it
    is read to the end, let alone decoded)."""
    if not request.content_type.startswith("multipart/"):
        raise ApiRequestError(f"Content-Type: {request.content_type or 'none'}; send multipart/form-data (with "
                              f"requests: files={{'image': ...}}, data={{...}}; do not set Content-Type yourself)")
    fields, files, received = {}, {}, 0
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or not part.name:
                raise ApiRequestError("multipart: nested or unnamed part; send flat named form fields")
            chunks = []
            while chunk := await part.read_chunk(1 << 16):
                received += len(chunk)
                check_upload_size(received)
                chunks.append(chunk)
            data = b"".join(chunks)
            if part.filename is not None:
                files.setdefault(part.name, []).append(data)
            else:
                fields.setdefault(part.name, []).append(data.decode(part.get_charset("utf-8")))
    except (ValueError, LookupError, UnicodeDecodeError) as exc:
        raise ApiRequestError(f"multipart: the body is not a valid multipart form ({type(exc).__name__}); "
                              f"send it as an HTTP client's multipart upload does") from None
    return fields, files


def max_queue() -> int:
    try:
        return max(1, int(os.environ.get(MAX_QUEUE_ENV, DEFAULT_MAX_QUEUE)))
    except ValueError:
        return DEFAULT_MAX_QUEUE


async def run_prompt(server, request: web.Request, prompt: dict, request_id: str, model: str) -> list[bytes]:
    """Queue the prompt as POST /prompt does and wait for its images; cancel it if the client goes."""
    queue = server.prompt_queue
    prompt_id = str(uuid.uuid4())
    prompt = server.trigger_on_prompt({"prompt": prompt, "prompt_id": prompt_id})["prompt"]
    valid = await execution.validate_prompt(prompt_id, prompt, None)
    if not valid[0]:
        raise unavailable(valid[3], model, valid[1])
    waiting = queue.get_tasks_remaining()
    if waiting >= max_queue():
        raise ApiUnavailableError(f"queue full: {waiting} prompts waiting on this server (limit {max_queue()}, "
                                  f"set by {MAX_QUEUE_ENV}); retry later")
    future = MAILBOX.open(request_id)
    number = server.number
    server.number += 1
    queue.put((number, prompt_id, prompt, {}, valid[2]))
    try:
        while True:
            await asyncio.wait({future}, timeout=CHECK_INTERVAL_S)
            if future.done():
                return future.result()
            if request.transport is None or request.transport.is_closing():
                cancel(queue, prompt_id)
                raise ApiUnavailableError("the client disconnected; its prompt was cancelled")
            status = finished_status(queue, prompt_id)
            if status is not None:
                await asyncio.wait({future}, timeout=1.0)  # the images may still be on their way
                if future.done():
                    return future.result()
                raise failure(status)
    except asyncio.CancelledError:
        cancel(queue, prompt_id)
        raise


def finished_status(queue, prompt_id: str) -> dict | None:
    """The history status of a finished prompt; a synthetic error when it left the queue without running
    (deleted from the queue in the UI); None while it waits or runs. History is read before and after the
    queue, so a prompt finishing in between is not taken for a deleted one."""
    for attempt in range(2):
        entry = queue.get_history(prompt_id=prompt_id, map_function=lambda item: item["status"])
        if entry:
            return entry[prompt_id] or {"messages": []}
        if attempt == 0:
            running, queued = queue.get_current_queue_volatile()
            if any(item[1] == prompt_id for item in [*running, *queued]):
                return None
    return {"messages": [("execution_interrupted", {"removed": True})]}


def cancel(queue, prompt_id: str) -> None:
    if queue.delete_queue_item(lambda item: item[1] == prompt_id):
        logger.info("%s API request gone: its prompt %s was removed from the queue", LOG_PREFIX, prompt_id)
        return
    running, _ = queue.get_current_queue_volatile()
    if any(item[1] == prompt_id for item in running):
        comfy.model_management.interrupt_current_processing()
        logger.info("%s API request gone: its running prompt %s was interrupted", LOG_PREFIX, prompt_id)


def failure(status: dict) -> ApiRequestError:
    """The error answer for a prompt that ended without images."""
    for event, data in status.get("messages", []):
        if event == "execution_error":
            kind = data.get("exception_type", "").rsplit(".", 1)[-1]
            message = data.get("exception_message", "").strip()
            if kind == NoFaceError.__name__:
                return ApiNoFaceError(f"image: {message}")
            if kind == ModelFileError.__name__:
                return ApiUnavailableError(f"models missing on this server: {message}")
            return ApiPromptFailedError(f"the prompt failed in node {data.get('node_id')} "
                                        f"({data.get('node_type')}): {message}")
        if event == "execution_interrupted":
            return ApiUnavailableError("the prompt was cancelled on the server (Cancel in ComfyUI, or removed "
                                       "from its queue); send the request again")
    return ApiPromptFailedError(f"the prompt finished without images: the template needs a {RESULT_NODE} node "
                                f"with request_id '{{{{request_id}}}}'")


def unavailable(node_errors: dict, model: str, error: dict) -> ApiUnavailableError:
    """A template that does not validate is the server's problem (503), most often a model file that is
    not installed (a core loader's 'not in list', or a loader's own check); the message lists every problem
    ComfyUI found."""
    problems, files_missing = [], False
    for node_id, found in node_errors.items():
        kind = found.get("class_type")
        for problem in found.get("errors", []):
            info = problem.get("extra_info", {})
            if problem.get("type") == "value_not_in_list":
                problems.append(f"{kind}.{info.get('input_name')} = {info.get('received_value')!r} is not installed")
            else:
                problems.append(f"node {node_id} ({kind}): {problem.get('details') or problem.get('message')}")
            files_missing |= problem.get("type") == "value_not_in_list" or str(kind).endswith("Loader")
    detail = "; ".join(problems) or f"{error.get('message')}: {error.get('details')}"
    if files_missing:
        return ApiUnavailableError(f"models missing on this server for model {model!r}: {detail}; put the files "
                                   f"into ComfyUI's models folders or change the API template")
    return ApiUnavailableError(f"the API template for model {model!r} does not validate in ComfyUI: {detail}")
