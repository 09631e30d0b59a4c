"""The self-hosted route on a core whose every route needs a Bearer token (WRAPPER_AUTH_TOKEN, newer cores'
middleware/wrapper_auth.py), with the test pack's stand-in of that middleware (helper_pack/core_auth_standin.py).
The route's own calls to /prompt, /queue, /history and /interrupt must carry the core's token, and the route
takes that token as its own: a client sends one Authorization header, which the core checks first.

The server has no models: its API templates return the uploaded photo (`echo`) or hold it for minutes first
(`slow`), which is enough for the route to queue, watch, cancel and forget its prompts."""
from __future__ import annotations

import io
import json
import time

import pytest
import requests
from PIL import Image

ROUTE = "/face-migration/v1/images/face-migration"
CORE_TOKEN = "core-wrapper-token-5h8d2k"
CORE = {"Authorization": f"Bearer {CORE_TOKEN}"}
REFUSED_LOG = "core auth stand-in: refused"  # helper_pack/core_auth_standin.py (which imports ComfyUI's server)


def photo_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def guarded(another_comfy):
    server = another_comfy(env={"WRAPPER_AUTH_TOKEN": CORE_TOKEN})
    folder = server.base / "user" / "face_migration" / "api_templates"
    folder.mkdir(parents=True)
    photo = {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}}
    result = {"class_type": "FaceMigration_ApiResult",
              "inputs": {"images": ["photo", 0], "request_id": "{{request_id}}"}}
    (folder / "echo.json").write_text(json.dumps({"photo": photo, "result": result}))
    slow = {"class_type": "FaceMigrationTest_SlowImage", "inputs": {"image": ["photo", 0], "seconds": 300.0}}
    (folder / "slow.json").write_text(json.dumps({
        "photo": photo, "slow": slow, "result": {**result, "inputs": {**result["inputs"], "images": ["slow", 0]}}}))
    return server


def post(server, headers=None, model="echo", timeout=120):
    return requests.post(server.url + ROUTE, headers=headers or {}, files={"image": ("face.png", photo_bytes())},
                         data={"model": model, "prompt": "portrait"}, timeout=timeout)


def get(server, path: str):
    return requests.get(server.url + path, headers=CORE, timeout=30).json()


def refused(server) -> list[str]:
    return [line for line in server.log_text().splitlines() if REFUSED_LOG in line]


def test_the_standin_guards_every_route(guarded):
    assert requests.get(guarded.url + "/queue", timeout=30).status_code == 401
    assert requests.get(guarded.url + "/queue", headers=CORE, timeout=30).status_code == 200
    assert post(guarded).status_code == 401


def test_the_route_runs_with_the_cores_token_and_its_own_calls_carry_it(guarded):
    before = len(refused(guarded))
    response = post(guarded, CORE)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1
    assert refused(guarded)[before:] == [], "the route's own calls to its server were refused"


def test_a_request_cancelled_by_its_client_is_interrupted_through_the_guarded_api(guarded):
    """The client goes while its prompt runs: the route's POST /queue and POST /interrupt reach the core."""
    before = len(refused(guarded))
    with pytest.raises(requests.ReadTimeout):  # requests closes the connection: the client is gone
        post(guarded, CORE, model="slow", timeout=(10, 6))
    deadline = time.monotonic() + 60  # the node would hold the photo for 300 s
    while get(guarded, "/queue")["queue_running"]:
        assert time.monotonic() < deadline, "the prompt of a client that went away still runs"
        time.sleep(0.2)
    assert refused(guarded)[before:] == []
    assert "was cancelled" in guarded.log_text()


def test_a_route_token_other_than_the_cores_refuses_with_the_fix(guarded):
    token_file = guarded.base / "user" / "face_migration_api_token.txt"
    token_file.write_text("another-token-of-the-route\n")
    try:
        response = post(guarded, CORE)
    finally:
        token_file.unlink()
    assert response.status_code == 403
    message = response.json()["message"]
    assert "WRAPPER_AUTH_TOKEN" in message and "FACE_MIGRATION_API_TOKEN" in message
    assert CORE_TOKEN not in response.text and "another-token" not in response.text
