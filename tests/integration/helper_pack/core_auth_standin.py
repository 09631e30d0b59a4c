"""A stand-in for the Bearer auth of newer ComfyUI cores (middleware/wrapper_auth.py, read at Comfy-Org/ComfyUI
727bd8f): when WRAPPER_AUTH_TOKEN is set, every request needs 'Authorization: Bearer <token>' (OPTIONS aside)
and is otherwise answered 401 with a JSON body. The cores run here (0.3.64, 0.33.0) have no such middleware,
so this test pack adds an equivalent one to the server's aiohttp application while ComfyUI loads the custom
nodes (before the application starts). One difference, for the test harness only: GET /system_stats, its
readiness probe, passes without the header (the self-hosted route never calls it). Each refusal is logged, so a
test can see which of the route's own calls lacked the header.

FaceMigrationTest_SlowImage passes an image through after waiting, interruptible: a prompt that is still running
when a test cancels it."""
import hmac
import logging
import os
import time

from aiohttp import web

TOKEN_ENV = "WRAPPER_AUTH_TOKEN"
REFUSED_LOG = "core auth stand-in: refused"
PROBE = ("GET", "/system_stats")


def bearer_auth(token: str):
    expected = token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler):
        scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
        if request.method == "OPTIONS" or (request.method, request.path) == PROBE or (
                scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), expected)):
            return await handler(request)
        logging.warning("%s %s %s", REFUSED_LOG, request.method, request.path)
        return web.json_response({"error": {"type": "unauthorized", "message": "missing or invalid bearer token"}},
                                 status=401, headers={"WWW-Authenticate": "Bearer"})

    return middleware


def install() -> None:
    token = os.environ.get(TOKEN_ENV)
    if token:
        from server import PromptServer
        PromptServer.instance.app.middlewares.append(bearer_auth(token))
        logging.info("core auth stand-in: every route needs the %s Bearer token", TOKEN_ENV)


class FaceMigrationTest_SlowImage:
    CATEGORY = "face_migration/testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "wait"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "seconds": ("FLOAT", {"default": 300.0, "min": 0.0})}}

    def wait(self, image, seconds):
        import comfy.model_management

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(0.05)
        return (image,)


NODE_CLASS_MAPPINGS = {"FaceMigrationTest_SlowImage": FaceMigrationTest_SlowImage}
