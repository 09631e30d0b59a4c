"""The hosted face-migration API on ComfyUI's own server.

POST /face-migration/v1/images/face-migration (and /v1/images/face-migration itself when
FACE_MIGRATION_API_HOSTED_PATH=1) takes the hosted multipart request, fills the API template of the
request's model, and queues it through this server's own POST /prompt (on the address it listens on), so
it is validated and queued exactly as that ComfyUI version queues any prompt and shares the GPU, the model
cache, the progress bar, Cancel and the queue panel with the UI (its history entry is deleted once it
ended: it holds what the client sent). The API Result
node at the end of the template hands the image back in memory. Wire format, access rules and templates
live in face_migration.selfhost; this module only connects them to aiohttp and the prompt queue."""
from __future__ import annotations

import asyncio
import io as bytes_io
import logging
import os
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import folder_paths
import numpy as np
from aiohttp import BodyPartReader, web
from comfy.cli_args import args
from comfy_api.v0_0_2 import io
from PIL import Image

from ..face_migration.errors import (ApiNoFaceError, ApiPromptFailedError, ApiRequestError, ApiSetupError,
                                     ApiUnavailableError, ModelFileError, NoFaceError)
from ..face_migration.remote.params import API_PATH
from ..face_migration.selfhost.access import authorize, core_token, listens_beyond_loopback, route_token
from ..face_migration.selfhost.mailbox import Mailbox
from ..face_migration.selfhost.protocol import check_upload_size, error_answer, image_answer, parse_request
from ..face_migration.selfhost.templates import (RESULT_NODE, TemplateCatalog, fill, request_values,
                                                 user_templates_folder)
from .common import CATEGORY, LOG_PREFIX, schema_extras

logger = logging.getLogger(__name__)

ROUTE = "/face-migration" + API_PATH
HOSTED_PATH_ENV = "FACE_MIGRATION_API_HOSTED_PATH"
MAX_QUEUE_ENV = "FACE_MIGRATION_API_MAX_QUEUE"
DEFAULT_MAX_QUEUE = 8
TEMP_SUBFOLDER = "face_migration_api"
SHIPPED_TEMPLATES = Path(__file__).resolve().parents[1] / "api_templates"
CHECK_INTERVAL_S = 0.05  # how often a waiting request looks for its images and a client gone
STATUS_INTERVAL_S = 0.25  # how often it asks the server whether its prompt ended without images
OWN_API_TIMEOUT_S = 30
FORGET_WAIT_S = 3600  # a cancelled prompt still running is waited for this long before its files are removed
FORGET_POLL_S = 0.5
ENCODE_FACE_NODE = "FaceMigration_EncodeFace"
TRUE_WORDS = ("1", "true", "yes", "on")

MAILBOX = Mailbox()
FORGETTING: set[asyncio.Future] = set()
_catalog: TemplateCatalog | None = None
_registered = False
_session: aiohttp.ClientSession | None = None


class ApiResult(io.ComfyNode):
    """The end of an API template: returns the images to the waiting request, writes no file."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=RESULT_NODE,
            display_name="API Result (self-hosted face migration)",
            **schema_extras(search_aliases=["face migration API", "self-hosted", "API result"]),
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

    request_id = uuid.uuid4().hex
    upload = None
    try:
        user_directory = folder_paths.get_user_directory()
        authorize(request.headers.get("Authorization"), route_token(user_directory),
                  listens_beyond_loopback(args.listen), user_directory)
        api_request = parse_request(*await read_form(request))
        template = catalog().template(api_request.params.model)
        upload = Path(folder_paths.get_temp_directory()) / TEMP_SUBFOLDER / f"{request_id}.{api_request.image_suffix}"
        upload.parent.mkdir(parents=True, exist_ok=True)
        upload.write_bytes(api_request.image)
        image_value = f"{TEMP_SUBFOLDER}/{upload.name} [temp]"  # LoadImage's name for a temp-folder file
        prompt = fill(template, request_values(api_request.params, image_value, request_id))
        api = OwnApi(PromptServer.instance, own_session())
        images = await run_prompt(api, request, prompt, request_id, api_request.params.model)
        return web.json_response(image_answer(images))
    except Exception as error:  # error_answer logs it (one line, a traceback only for a fault of the route)
        status, body = error_answer(error)
        return web.json_response(body, status=status)
    finally:
        MAILBOX.close(request_id)
        if upload is not None:
            upload.unlink(missing_ok=True)


def own_session() -> aiohttp.ClientSession:
    """One client session for the route's calls to its own server, made on the server's event loop."""
    global _session
    if _session is None or _session.closed:
        _session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=OWN_API_TIMEOUT_S))
    return _session


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


class OwnApi:
    """This ComfyUI's own public HTTP API, reached on the address it listens on. The route queues, watches,
    cancels and forgets its prompts as any client of /prompt does, so what it queues is exactly what the
    running version's /prompt queues (0.33 adds a sixth queue entry and extra_data["create_time"]; a later
    version may add more) and the UI's queue panel lists its jobs beside the user's own while they wait and run."""

    def __init__(self, server, session: aiohttp.ClientSession):
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(server.address, server.address)
        scheme = "https" if args.tls_keyfile and args.tls_certfile else "http"
        self.base = f"{scheme}://{f'[{host}]' if ':' in host else host}:{server.port}"
        self.session = session
        # A core with Bearer auth (WRAPPER_AUTH_TOKEN) refuses this process's own calls without it.
        token = core_token()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        try:
            # ssl=False: the only peer is this process, whose own (often self-signed) certificate it is.
            async with self.session.request(method, self.base + path, json=body, headers=self.headers,
                                            ssl=False) as response:
                data = await response.json(content_type=None) if response.content_length != 0 else None
                return response.status, data
        except (aiohttp.ClientError, ValueError) as exc:
            logger.error("%s self-hosted API: ComfyUI's own %s %s failed: %s", LOG_PREFIX, method, path, exc)
            raise ApiUnavailableError("this server could not queue the prompt on itself; see its log") from None

    async def queue(self, prompt: dict, model: str) -> str:
        status, answer = await self.call("POST", "/prompt", {"prompt": prompt})
        if status == 200 and isinstance(answer, dict) and "prompt_id" in answer:
            return answer["prompt_id"]
        answer = answer if isinstance(answer, dict) else {}
        if status == 400:
            raise unavailable(answer.get("node_errors") or {}, model, answer.get("error") or {})
        logger.error("%s self-hosted API: POST /prompt answered %s: %s", LOG_PREFIX, status, answer)
        raise ApiUnavailableError(f"this server's /prompt answered {status}; see its log")

    async def waiting(self) -> int:
        _, info = await self.call("GET", "/prompt")
        return int(info["exec_info"]["queue_remaining"]) if isinstance(info, dict) else 0

    async def history(self, prompt_id: str) -> dict | None:
        _, entries = await self.call("GET", f"/history/{prompt_id}")
        return entries.get(prompt_id) if isinstance(entries, dict) else None

    async def queued(self, prompt_id: str) -> bool:
        """Whether the prompt is running or waiting. Any entry of an item equal to the id counts, so the
        position of the id in a queue item does not matter."""
        _, queue = await self.call("GET", "/queue")
        items = [*queue.get("queue_running", []), *queue.get("queue_pending", [])] if isinstance(queue, dict) else []
        return any(prompt_id in item for item in items if isinstance(item, list))

    async def finished_status(self, prompt_id: str) -> dict | None:
        """The history status of a finished prompt; a synthetic error when it left the queue without running
        (deleted from the queue in the UI); None while it waits or runs. History is read before and after
        the queue, so a prompt finishing in between is not taken for a deleted one."""
        for attempt in range(2):
            entry = await self.history(prompt_id)
            if entry is not None:
                return entry.get("status") or {"messages": []}
            if attempt == 0 and await self.queued(prompt_id):
                return None
        return {"messages": [("execution_interrupted", {"removed": True})]}

    async def cancel(self, prompt_id: str) -> None:
        """Out of the queue if it waits, interrupted if it runs (both ask by id, so no other prompt is hit)."""
        await self.call("POST", "/queue", {"delete": [prompt_id]})
        await self.call("POST", "/interrupt", {"prompt_id": prompt_id})
        logger.info("%s API request gone: its prompt %s was cancelled", LOG_PREFIX, prompt_id)

    async def forget(self, prompt_id: str) -> None:
        """Once the prompt has ended: delete every temp image its nodes showed (a user template may hold a
        preview node) and then its history entry, which holds what the client sent (the prompt text, the seed,
        every value filled into the template) and what nodes showed of its photo (Encode Face's detection text).
        So nothing of a request stays in /history, /api/jobs or the UI's panels once it has ended."""
        try:
            await self._forget(prompt_id)
        except ApiRequestError:  # already logged by call(); a later request's forget may still clean up
            pass

    async def _forget(self, prompt_id: str) -> None:
        deadline = time.monotonic() + FORGET_WAIT_S
        entry = await self.history(prompt_id)
        while entry is None and await self.queued(prompt_id) and time.monotonic() < deadline:
            await asyncio.sleep(FORGET_POLL_S)
            entry = await self.history(prompt_id)
        entry = entry or await self.history(prompt_id)
        if entry is None:
            return  # removed from the queue before it ran: no entry
        shown = [image for output in entry.get("outputs", {}).values() if isinstance(output, dict)
                 for image in output.get("images", []) if isinstance(image, dict)]
        for image in shown:
            delete_shown_file(image)
        await self.call("POST", "/history", {"delete": [prompt_id]})


def delete_shown_file(image: dict) -> None:
    """A file a node showed ({"filename", "subfolder", "type"}), removed if it lies inside temp or output."""
    roots = {"temp": folder_paths.get_temp_directory(), "output": folder_paths.get_output_directory()}
    root = roots.get(image.get("type"))
    if root is None:
        return
    root = Path(root).resolve()
    path = (root / str(image.get("subfolder", "")) / str(image.get("filename", ""))).resolve()
    if path.is_file() and path.is_relative_to(root):
        path.unlink(missing_ok=True)


def without_previews(prompt: dict) -> dict:
    """The prompt with Encode Face's on-node preview off: a client's photo is never written to temp/."""
    for node in prompt.values():
        if isinstance(node, dict) and node.get("class_type") == ENCODE_FACE_NODE:
            node.setdefault("inputs", {})["show_preview"] = False
    return prompt


async def run_prompt(api: OwnApi, request: web.Request, prompt: dict, request_id: str, model: str) -> list[bytes]:
    """Queue the prompt through /prompt and wait for its images; cancel it if the client goes. Whatever
    happens, nothing of the request is kept once the prompt has ended (see OwnApi.forget)."""
    waiting = await api.waiting()
    if waiting >= max_queue():
        raise ApiUnavailableError(f"queue full: {waiting} prompts waiting on this server (limit {max_queue()}, "
                                  f"set by {MAX_QUEUE_ENV}); retry later")
    future = MAILBOX.open(request_id)
    prompt_id = await api.queue(without_previews(prompt), model)
    try:
        next_check = 0.0
        while True:
            await asyncio.wait({future}, timeout=CHECK_INTERVAL_S)
            if future.done():
                return future.result()
            if request.transport is None or request.transport.is_closing():
                await api.cancel(prompt_id)
                raise ApiUnavailableError("the client disconnected; its prompt was cancelled")
            if time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + STATUS_INTERVAL_S
            status = await api.finished_status(prompt_id)
            if status is not None:
                await asyncio.wait({future}, timeout=1.0)  # the images may still be on their way
                if future.done():
                    return future.result()
                raise failure(status)
    except asyncio.CancelledError:
        await api.cancel(prompt_id)
        raise
    finally:
        forgetting = asyncio.ensure_future(api.forget(prompt_id))
        FORGETTING.add(forgetting)  # a reference, so the task is not collected before it ends
        forgetting.add_done_callback(FORGETTING.discard)


def failure(status: dict) -> ApiRequestError:
    """The error answer for a prompt that ended without images. A node's own message reaches the client only
    for a photo without a face; any other may name files of this server, so it goes to the log."""
    for event, data in status.get("messages", []):
        if event == "execution_error":
            kind = data.get("exception_type", "").rsplit(".", 1)[-1]
            message = data.get("exception_message", "").strip()
            node = f"node {data.get('node_id')} ({data.get('node_type')})"
            if kind == NoFaceError.__name__:
                return ApiNoFaceError(f"image: {message}")
            if kind == ModelFileError.__name__:
                return ApiSetupError("models missing on this server; sending the request again will not help "
                                     "until its owner installs them (the server log names the files)",
                                     detail=f"{node}: {message}")
            return ApiPromptFailedError(f"the prompt failed in {node} on this server; its owner finds the error "
                                        f"in the server log", detail=message)
        if event == "execution_interrupted":
            return ApiUnavailableError("the prompt was cancelled on the server (Cancel in ComfyUI, or removed "
                                       "from its queue); send the request again")
    return ApiPromptFailedError(f"the prompt finished without images: the template needs a {RESULT_NODE} node "
                                f"with request_id '{{{{request_id}}}}'")


def unavailable(node_errors: dict, model: str, error: dict) -> ApiSetupError:
    """A template that does not validate is the server's problem (503, not retryable), most often a model
    file that is not installed (a core loader's 'not in list', or a loader's own check). The client learns
    which model; the log lists every problem ComfyUI found."""
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
        return ApiSetupError(f"models missing on this server for model {model!r}; sending the request again will "
                             f"not help until its owner installs them (the server log names the files)",
                             detail=f"{detail}; put the files into ComfyUI's models folders or change the API "
                                    f"template")
    return ApiSetupError(f"the API template for model {model!r} does not validate on this server; its owner finds "
                         f"why in the server log", detail=detail)


class QuietFacelessUploads(logging.Filter):
    """ComfyUI logs every exception of a node with its traceback. A route prompt whose upload holds no face
    is the client's error, answered 422 and logged in one line by error_answer, so the core's two records
    of it ("!!! Exception during processing !!!" and the traceback) are dropped; all else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno < logging.ERROR or not isinstance(sys.exc_info()[1], NoFaceError)
                or not route_prompt_running())


def route_prompt_running() -> bool:
    """Whether the prompt ComfyUI runs now was queued by this route (it ends with the API Result node). It runs
    inside a logging call, where an exception would break the caller's own error handling: no server, no."""
    from server import PromptServer

    server = getattr(PromptServer, "instance", None)
    if server is None:
        return False
    running, _ = server.prompt_queue.get_current_queue_volatile()
    return any(isinstance(item[2], dict) and any(isinstance(node, dict) and node.get("class_type") == RESULT_NODE
                                                 for node in item[2].values()) for item in running)


# The core logs with logging.error(), on the root logger, whose own filters see those records.
logging.getLogger().addFilter(QuietFacelessUploads())
