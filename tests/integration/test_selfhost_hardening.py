"""The self-hosted route towards strangers, in a real ComfyUI: error bodies in the hosted shape that hold
no server path, file name or traceback (the server log keeps the details, one line per refusal); sizes
the templates cannot make are a 400; a 503 for missing models says it is permanent and the pack's own
client sends it once; an unreadable token file is a 403 naming the fix; a faceless upload and a client
gone mid-upload log one line each; and ComfyUI's origin check covers the route (403 for a foreign
Origin on loopback), which --enable-cors-header turns off."""
from __future__ import annotations

import io
import os
import socket
import time

import numpy as np
import pytest
import requests
from PIL import Image

from face_migration.remote.client import FaceMigrationClient, RetryPolicy
from face_migration.remote.errors import ServerError
from face_migration.remote.keys import ApiKey
from face_migration.remote.params import FaceMigrationParams
from tests.integration.test_selfhost_api import ROUTE, post
# The fixture that gives the session server the test templates: (route URL, photo bytes).
from tests.integration.test_selfhost_api import api as templates  # noqa: F401

TOKEN_FILE = "face_migration_api_token.txt"
FOREIGN = "http://evil.example"


class LogWindow:
    """The server log written since it was opened (ComfyUI flushes each record)."""

    def __init__(self, server):
        self.server, self.start = server, len(server.log_text())

    def text(self, settle: float = 0.5) -> str:
        time.sleep(settle)  # a line logged after the answer was sent
        return self.server.log_text()[self.start:]

    def lines(self, marker: str) -> list[str]:
        return [line for line in self.text().splitlines() if marker in line]


def assert_nothing_internal(response, comfy) -> dict:
    """The hosted error shape, and nothing of this server in it."""
    body = response.json()
    assert isinstance(body.get("message"), str) and set(body) <= {"message", "retryable"}, body
    for leak in (str(comfy.base), os.path.realpath(comfy.base), "/tmp", ".json", ".safetensors", "Traceback",
                 "api_templates", "diffusion_models", f"/{TOKEN_FILE}"):
        assert leak not in response.text, f"{leak!r} in a body sent to a client: {response.text}"
    return body


def test_an_unknown_model_names_no_folder(templates, comfy):
    url, photo = templates
    log = LogWindow(comfy)
    response = post(url, photo, model="flux-9")
    assert response.status_code == 400
    assert "model: no template for 'flux-9'" in assert_nothing_internal(response, comfy)["message"]
    (line,) = log.lines("face-migration API: 400")
    assert "api_templates" in line  # the owner learns where templates go


def test_missing_models_are_a_permanent_503_whose_files_only_the_log_names(templates, comfy):
    url, photo = templates
    log = LogWindow(comfy)
    response = post(url, photo, model="flux-1-dev")  # the shipped template: none of its files are here
    assert response.status_code == 503
    body = assert_nothing_internal(response, comfy)
    assert body["retryable"] is False and "models missing on this server for model 'flux-1-dev'" in body["message"]
    (line,) = log.lines("face-migration API: 503")
    assert "flux1-dev.safetensors" in line and "ae.safetensors" in line
    assert "Traceback" not in log.text()


def test_the_packs_client_sends_a_permanent_503_once(templates, comfy):
    url, photo = templates
    log = LogWindow(comfy)
    client = FaceMigrationClient(ApiKey("any-key-the-route-ignores-123456", "the test"),
                                 url.removesuffix("/v1/images/face-migration"), timeout=120,
                                 retry=RetryPolicy(max_attempts=4, base_delay=0.01))
    with Image.open(io.BytesIO(photo)) as image:
        pixels = np.asarray(image.convert("RGB"))
    with pytest.raises(ServerError) as caught:
        client.generate(pixels, FaceMigrationParams(prompt="portrait", model="flux-1-dev", size="256x256"))
    assert caught.value.status == 503 and not caught.value.retryable
    assert len(log.lines("face-migration API: 503")) == 1, "the client sent the request again"


def test_a_broken_user_template_is_a_permanent_503_naming_only_its_model(templates, comfy):
    url, photo = templates
    path = comfy.base / "user" / "face_migration" / "api_templates" / "broken-test.json"
    path.write_text("{not json")
    try:
        log = LogWindow(comfy)
        response = post(url, photo, model="broken-test")
        assert response.status_code == 503
        body = assert_nothing_internal(response, comfy)
        assert body["retryable"] is False and "'broken-test'" in body["message"]
        assert "broken-test.json" not in response.text
        (line,) = log.lines("face-migration API: 503")
        assert str(path) in line and "not readable JSON" in line
    finally:
        path.unlink()


@pytest.mark.parametrize("width, height", [(8, 512), (512, 8), (520, 512), (1040, 512)])
def test_a_size_the_templates_cannot_make_is_a_400_not_a_503(templates, comfy, width, height):
    url, photo = templates
    response = post(url, photo, size=None, width=width, height=height)
    assert response.status_code == 400, response.text
    assert "must be a multiple of 16 in 16..1024" in assert_nothing_internal(response, comfy)["message"]


def test_the_smallest_size_the_templates_make_is_served(templates, comfy):
    url, photo = templates
    response = post(url, photo, size=None, width=16, height=32)
    assert response.status_code == 200, response.text


@pytest.fixture
def token_path(comfy):
    path = comfy.base / "user" / TOKEN_FILE
    yield path
    if path.is_dir():
        path.rmdir()
    else:
        path.unlink(missing_ok=True)


def test_401_names_no_server_path(templates, comfy, token_path):
    url, photo = templates
    token_path.write_text("hardening-token-4x8q2m\n")
    log = LogWindow(comfy)
    response = post(url, photo, token="wrong")
    assert response.status_code == 401
    assert "missing or wrong Bearer token" in assert_nothing_internal(response, comfy)["message"]
    (line,) = log.lines("face-migration API: 401")
    assert str(token_path) in line and "hardening-token" not in log.text()


@pytest.mark.parametrize("make", ["not UTF-8", "a folder", "empty", "white space only"])
def test_an_unreadable_or_blank_token_file_is_a_403_naming_the_fix(templates, comfy, token_path, make):
    url, photo = templates
    if make == "a folder":
        token_path.mkdir()
    else:
        contents = {"not UTF-8": "token".encode("utf-16"), "empty": b"", "white space only": b" \n\t\n"}
        token_path.write_bytes(contents[make])
    log = LogWindow(comfy)
    response = post(url, photo)
    assert response.status_code == 403
    message = assert_nothing_internal(response, comfy)["message"]
    assert TOKEN_FILE in message and "UTF-8" in message and "FACE_MIGRATION_API_TOKEN" in message
    (line,) = log.lines("face-migration API: 403")
    assert str(token_path) in line and "Traceback" not in log.text()


def test_a_faceless_upload_is_one_log_line(templates, comfy, tiny_face):
    url, _ = templates
    log = LogWindow(comfy)
    response = post(url, (comfy.base / "input" / tiny_face.faceless_photo).read_bytes())
    assert response.status_code == 422, response.text
    assert_nothing_internal(response, comfy)
    text = log.text(settle=1.0)
    assert "Traceback" not in text and "Exception during processing" not in text, text
    assert len(log.lines("face-migration API: 422")) == 1


def test_a_client_gone_mid_upload_is_one_log_line(templates, comfy):
    url, photo = templates
    host, port = url.split("//")[1].split("/")[0].split(":")
    prepared = requests.Request("POST", url, files={"image": ("face.png", photo + bytes(200_000))},
                                data={"prompt": "portrait"}).prepare()
    log = LogWindow(comfy)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = [f"POST {prepared.path_url} HTTP/1.1", f"Host: {host}:{port}"]
        head += [f"{k}: {v}" for k, v in prepared.headers.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + prepared.body[:100_000])
        time.sleep(0.5)
    text = log.text(settle=1.0)
    assert "Traceback" not in text and "Error handling request" not in text, text
    assert len(log.lines("face-migration API: the client went away")) == 1, text


# ---- cross-origin -----------------------------------------------------------------------------------

def cross_origin(url: str, origin: str, **headers):
    """The request a web page on `origin` makes: a simple multipart POST (no preflight needed). Its image
    is not one, so a request that gets through is answered 400 by the route at once."""
    return requests.post(url, headers={"Origin": origin, **headers}, files={"image": ("face.png", b"x")},
                         data={"prompt": "portrait"}, timeout=60)


def answered_by_the_route(response) -> bool:
    return response.status_code == 400 and response.json()["message"].startswith("image: not a readable image")


def test_a_web_page_of_another_origin_is_refused_on_loopback(comfy):
    url = comfy.url + ROUTE
    refused = cross_origin(url, FOREIGN)
    assert refused.status_code == 403, refused.text  # ComfyUI's origin check, before the route runs
    assert "Access-Control-Allow-Origin" not in refused.headers
    preflight = requests.options(url, headers={"Origin": FOREIGN, "Access-Control-Request-Method": "POST"},
                                 timeout=60)
    assert preflight.status_code == 403
    assert answered_by_the_route(cross_origin(url, comfy.url))  # the UI's own origin passes the check


@pytest.fixture(scope="module")
def cors_comfy(another_comfy):
    """A loopback ComfyUI started with --enable-cors-header (any origin) and no token."""
    extra = os.environ.get("COMFYUI_EXTRA_ARGS", "--cpu")
    os.environ["COMFYUI_EXTRA_ARGS"] = f"{extra} --enable-cors-header"
    try:
        return another_comfy()
    finally:
        os.environ["COMFYUI_EXTRA_ARGS"] = extra


def test_with_enable_cors_header_any_web_page_reaches_the_route_unless_a_token_is_set(cors_comfy):
    url = cors_comfy.url + ROUTE
    reached = cross_origin(url, FOREIGN)
    assert answered_by_the_route(reached)
    assert reached.headers["Access-Control-Allow-Origin"] == "*"  # and the page may read the answer
    token_path = cors_comfy.base / "user" / TOKEN_FILE
    token_path.write_text("cors-token-7k2m9q\n")
    try:
        assert cross_origin(url, FOREIGN).status_code == 401
        assert answered_by_the_route(cross_origin(url, FOREIGN, Authorization="Bearer cors-token-7k2m9q"))
    finally:
        token_path.unlink()
