"""The self-hosted face-migration API in a real ComfyUI with tiny random models.

The session server (loopback, no token) gets an API template `flux-1-schnell` in its user folder that
overrides the shipped one: the shipped graph's Encode Face -> Apply PuLID -> KSampler on the tiny FLUX, with
seeded random conditioning instead of the text encoders and a stand-in decode instead of the VAE (see
helper_pack). A second server listens on 0.0.0.0 without a token, with the hosted path enabled: it must
refuse every request, and its remote node is the client of the first server."""
from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.integration.test_face_nodes import full_graph

REPO = Path(__file__).resolve().parents[2]
ROUTE = "/face-migration/v1/images/face-migration"
HOSTED_PATH = "/v1/images/face-migration"
TOKEN = "selfhost-integration-token-6f2k9q4w"
FAST = {"size": "256x256", "num_inference_steps": "1"}

# The hosted API's documented Python example (MoArk's face-migration page: requests multipart, Bearer header,
# result in data[0].b64_json). The tests run it unchanged except for API_URL.
HOSTED_URL = "https://moark.ai/v1/images/face-migration"
EXAMPLE = '''
import requests
import base64
from PIL import Image
from io import BytesIO

API_URL = "https://moark.ai/v1/images/face-migration"
headers = {
    "Authorization": "Bearer <your token>",
}

def query(payload):
    files = {
        "image": (payload["image"], open(payload["image"], "rb"))
    }
    data = {key: value for key, value in payload.items() if key not in files}
    response = requests.post(API_URL, headers=headers, files=files, data=data)
    return response.json()

output = query({
    "model": "flux-1-schnell",
    "image": "face.png",
    "size": "1024x1024",
    "guidance_scale": 4,
    "num_inference_steps": 4,
    "id_weight": 1,
    "id_timestep_start": 0,
    "prompt": "Portrait painting, delicate sketch style, colored painting, ultra-high-definition, ultra-high pixel count",
})
image = Image.open(BytesIO(base64.b64decode(output["data"][0]["b64_json"])))
'''


@pytest.fixture(scope="module")
def api(comfy, graphs, tiny_face):
    """The session server with the test templates; returns (route URL, photo bytes). For speed the tiny
    FLUX samples a 128 px latent whatever the size; the image is then scaled to the requested size.
    Model `slow-test` samples 500 steps with a random identity, whatever the request says: a prompt that
    is still sampling (where ComfyUI's interrupt acts at each step) when the test disconnects."""
    g = full_graph(graphs, tiny_face)
    g["load_0"]["inputs"]["image"] = "{{image}}"
    g["apply_0"]["inputs"].update(weight="{{id_weight}}", start_step="{{id_timestep_start}}")
    g["positive"]["inputs"]["guidance"] = "{{guidance_scale}}"
    g["sampler"]["inputs"].update(seed="{{seed}}", steps="{{num_inference_steps}}")
    for unused in ("digest", "info"):
        del g[unused]
    g["decode"] = {"class_type": "FaceMigrationTest_LatentToImage", "inputs": {"samples": ["sampler", 0]}}
    g["size"] = {"class_type": "ImageScale", "inputs": {
        "image": ["decode", 0], "upscale_method": "nearest-exact", "width": "{{width}}", "height": "{{height}}",
        "crop": "disabled"}}
    g["result"] = {"class_type": "FaceMigration_ApiResult",
                   "inputs": {"images": ["size", 0], "request_id": "{{request_id}}"}}
    folder = comfy.base / "user" / "face_migration" / "api_templates"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flux-1-schnell.json").write_text(json.dumps(g))
    slow = graphs.flux([{"pulid_file": tiny_face.pulid_file}], steps=500)  # a random identity: no encoding
    slow.pop("digest")
    slow["load_0"], slow["decode"] = g["load_0"], g["decode"]
    slow["result"] = {**g["result"], "inputs": {"images": ["decode", 0], "request_id": "{{request_id}}"}}
    (folder / "slow-test.json").write_text(json.dumps(slow))
    return comfy.url + ROUTE, (comfy.base / "input" / tiny_face.photo).read_bytes()


def post(url, photo: bytes, token=None, **fields):
    data = {"model": "flux-1-schnell", "guidance_scale": 4, "id_weight": 1, "id_timestep_start": 0,
            "prompt": "portrait, oil painting", **FAST, **fields}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url, headers=headers, files={"image": ("face.png", photo)}, data=data, timeout=300)


def decoded(response) -> Image.Image:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "created"} and abs(body["created"] - time.time()) < 600
    return Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))


def api_prompts(comfy) -> dict:
    """History entries of prompts the route queued, by prompt id."""
    history = comfy._get("/history")
    return {pid: e for pid, e in history.items()
            if any(n["class_type"] == "FaceMigration_ApiResult" for n in e["prompt"][2].values())}


class ExampleFailed(Exception):
    """The hosted example ended with an exception; the message is its last line (the exception's type and text)."""


def run_example(code: str, folder: Path, name: str = "hosted_example") -> Image.Image:
    """Run the hosted example as a script of its own in `folder` (where it opens face.png), with one line added
    that saves the image it decoded; return that image, or raise ExampleFailed with the script's error."""
    script = folder / f"{name}.py"
    script.write_text(f"{code}\nimage.save({name + '.png'!r})\n")
    done = subprocess.run([sys.executable, script.name], cwd=folder, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "NO_PROXY": "127.0.0.1"})
    if done.returncode != 0:
        raise ExampleFailed((done.stderr.strip().splitlines() or ["no error output"])[-1])
    image = Image.open(folder / f"{name}.png")
    image.load()
    return image


def test_the_hosted_python_example_runs_with_only_its_url_changed(api, comfy, tmp_path):
    url, photo = api
    (tmp_path / "face.png").write_bytes(photo)
    code = EXAMPLE.replace(HOSTED_URL, url)
    assert code.count(url) == 1
    outputs = set((comfy.base / "output").rglob("*"))
    assert run_example(code, tmp_path).size == (1024, 1024)
    assert set((comfy.base / "output").rglob("*")) == outputs, "the route must not write into the output folder"
    assert not list((comfy.base / "temp" / "face_migration_api").iterdir()), "the upload must be removed"


def route_items(items: list) -> list:
    """The route's prompts among /queue's items."""
    return [item for item in items if any(n["class_type"] == "FaceMigration_ApiResult" for n in item[2].values())]


def test_four_concurrent_requests_all_complete_one_after_another(api, comfy):
    """All four are queued at once and run one at a time (the queue, watched while they run, never holds two
    route prompts running, and held some waiting)."""
    url, photo = api
    seeds = [101, 102, 103, 104]
    responses, seen = {}, []
    threads = [threading.Thread(target=lambda s=s: responses.update({s: post(url, photo, seed=s)})) for s in seeds]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        queue = comfy._get("/queue")
        seen.append((len(route_items(queue["queue_running"])), len(route_items(queue["queue_pending"]))))
        time.sleep(0.02)
    images = {seed: decoded(responses[seed]) for seed in seeds}
    assert all(image.size == (256, 256) for image in images.values())
    assert len({image.tobytes() for image in images.values()}) == 4  # four seeds, four pictures
    assert max(running for running, _ in seen) == 1 and max(waiting for _, waiting in seen) >= 1, seen


def test_a_bad_field_is_a_400(api):
    url, photo = api
    response = post(url, photo, guidance_scale=11)
    assert response.status_code == 400
    assert "guidance_scale: 11.0 is outside 1.0..10.0" in response.json()["message"]
    response = post(url, photo, model="flux-9")
    assert response.status_code == 400 and "model: no template for 'flux-9'" in response.json()["message"]


def test_an_image_over_the_pixel_limit_is_a_413(api):
    url, _ = api
    buffer = io.BytesIO()
    Image.new("1", (6000, 5000)).save(buffer, format="PNG")
    response = post(url, buffer.getvalue())
    assert response.status_code == 413 and "6000x5000 pixels" in response.json()["message"]


def test_a_photo_without_a_face_is_a_422(api, comfy, tiny_face):
    url, _ = api
    response = post(url, (comfy.base / "input" / tiny_face.faceless_photo).read_bytes())
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith("image: No face was found")


def test_missing_models_are_a_503_for_the_model(api):
    """Which files are missing is for the server's log (test_selfhost_hardening), not for the client."""
    url, photo = api
    response = post(url, photo, model="flux-1-dev")  # the shipped template: none of its files are here
    assert response.status_code == 503
    assert "models missing on this server for model 'flux-1-dev'" in response.json()["message"]


def slow_prompt(graphs) -> dict:
    return graphs.flux(size=128, steps=500, seed=int(time.time()))


def clear_queue(comfy) -> None:
    for route, body in (("/queue", {"clear": True}), ("/interrupt", {})):
        urllib.request.urlopen(urllib.request.Request(comfy.url + route, data=json.dumps(body).encode(),
                                                      method="POST"), timeout=10)
    deadline = time.monotonic() + 60
    while comfy._get("/queue")["queue_running"]:
        assert time.monotonic() < deadline, "the queue did not empty"
        time.sleep(0.1)


def test_a_full_queue_is_a_503(api, comfy, graphs):
    url, photo = api
    try:
        for _ in range(8):  # the default limit
            comfy.submit(slow_prompt(graphs))
        started = time.monotonic()
        response = post(url, photo)
        assert response.status_code == 503, response.text
        assert "queue full: 8 prompts waiting" in response.json()["message"]
        assert "FACE_MIGRATION_API_MAX_QUEUE" in response.json()["message"]
        assert time.monotonic() - started < 5
    finally:
        clear_queue(comfy)


def raw_request(url: str, photo: bytes) -> socket.socket:
    """Send a slow request over a socket that the test then closes, as a client that goes away does."""
    prepared = requests.Request("POST", url, files={"image": ("face.png", photo)},
                                data={"prompt": "portrait", "model": "slow-test"}).prepare()
    host, port = url.split("//")[1].split("/")[0].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = [f"POST {prepared.path_url} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in prepared.headers.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + prepared.body)
    return sock


def wait_for(condition, what: str, seconds: float = 120):
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return found


def test_a_client_that_disconnects_cancels_its_prompt(api, comfy):
    url, photo = api
    before = set(api_prompts(comfy))
    sock = raw_request(url, photo)
    running = wait_for(lambda: comfy._get("/queue")["queue_running"], "the request's prompt never ran")
    prompt_id = running[0][1]
    time.sleep(2)  # past the model loading, into the sampling steps
    closed = time.monotonic()
    sock.close()
    wait_for(lambda: not comfy._get("/queue")["queue_running"], "the prompt did not stop", 120)
    # ComfyUI's interrupt acts at the next sampling step (seconds each on a busy 2-core CPU); all 500 would
    # take many minutes.
    assert time.monotonic() - closed < 60
    assert f"its prompt {prompt_id} was cancelled" in comfy.log_text()
    wait_for(lambda: prompt_id not in comfy._get("/history"), "the cancelled prompt's history entry stayed", 10)
    assert set(api_prompts(comfy)) <= before


def test_a_queued_request_whose_client_goes_is_removed_from_the_queue(api, comfy, graphs):
    url, photo = api
    try:
        comfy.submit(slow_prompt(graphs))
        sock = raw_request(url, photo)
        queued = wait_for(lambda: comfy._get("/queue")["queue_pending"], "the request was never queued", 30)
        sock.close()
        wait_for(lambda: not comfy._get("/queue")["queue_pending"], "the request's prompt stayed queued", 5)
        assert queued[0][1] not in comfy._get("/history")
    finally:
        clear_queue(comfy)


def test_cancel_in_comfyui_stops_the_request_with_a_503(api, comfy):
    url, photo = api
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(response=post(url, photo, model="slow-test")))
    thread.start()
    wait_for(lambda: comfy._get("/queue")["queue_running"], "the request's prompt never ran")
    time.sleep(2)
    urllib.request.urlopen(urllib.request.Request(comfy.url + "/interrupt", data=b"{}", method="POST"), timeout=10)
    thread.join(60)
    assert answer["response"].status_code == 503
    assert "the prompt was cancelled on the server" in answer["response"].json()["message"]


@pytest.fixture
def token_file(comfy):
    path = comfy.base / "user" / "face_migration_api_token.txt"
    path.write_text(TOKEN + "\n")
    yield path
    path.unlink()


def test_with_a_token_only_its_bearer_gets_in_and_it_never_shows(api, comfy, token_file):
    url, photo = api
    for token in (None, "wrong-token", TOKEN[:-1]):
        response = post(url, photo, token=token, seed=7)
        assert response.status_code == 401, response.text
        assert "missing or wrong Bearer token" in response.json()["message"]
        assert TOKEN[:-1] not in response.text
    response = post(url, photo, token=TOKEN, seed=8)
    assert decoded(response).size == (256, 256)
    for text in (response.text, comfy.log_text(), json.dumps(comfy._get("/history"))):
        assert TOKEN not in text


@pytest.fixture(scope="module")
def exposed(another_comfy, comfy):
    """A second ComfyUI on 0.0.0.0 without a token, hosted path on; an API key for its remote node."""
    server = another_comfy(listen="0.0.0.0", env={"FACE_MIGRATION_API_HOSTED_PATH": "1"})
    (server.base / "user" / "moark_api_key.txt").write_text("any-key-the-route-ignores-123456\n")
    return server


def test_beyond_loopback_without_a_token_every_request_is_refused(exposed, api):
    _, photo = api
    for path in (ROUTE, HOSTED_PATH):
        response = post(exposed.url + path, photo)
        assert response.status_code == 403
        message = response.json()["message"]
        assert "FACE_MIGRATION_API_TOKEN" in message and "face_migration_api_token.txt" in message


def test_the_hosted_path_is_served_only_when_enabled(api, comfy):
    url, photo = api
    response = post(comfy.url + HOSTED_PATH, photo)
    assert response.status_code in (404, 405)


def test_the_remote_node_of_another_comfyui_uses_this_one(exposed, api, comfy, tiny_face):
    _, photo = api
    (exposed.base / "input" / "face.png").write_bytes(photo)
    spec = exposed.object_info()["FaceMigration_MoArkFaceMigration"]["input"]["required"]
    inputs = {name: options[1].get("default") for name, options in spec.items() if len(options) > 1}
    inputs.update(image=["photo", 0], prompt="portrait, oil painting", size="256x256", num_inference_steps=1,
                  id_timestep_start=0, seed=5, model="flux-1-schnell", endpoint="custom",
                  custom_base_url=comfy.url + "/face-migration", timeout=300.0)
    entry = exposed.run({
        "photo": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "remote": {"class_type": "FaceMigration_MoArkFaceMigration", "inputs": inputs},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["remote", 0]}},
    })
    shown = entry["outputs"]["preview"]["images"][0]
    with Image.open(exposed.base / "temp" / shown["subfolder"] / shown["filename"]) as image:
        assert image.size == (256, 256)


def test_the_command_line_client_uses_this_comfyui(api, comfy, tmp_path):
    _, photo = api
    (tmp_path / "face.png").write_bytes(photo)
    out = tmp_path / "out.png"
    done = subprocess.run(
        [sys.executable, "-m", "face_migration", "generate", "--image", str(tmp_path / "face.png"),
         "--prompt", "portrait, oil painting", "--out", str(out), "--size", "256x256", "--steps", "1",
         "--seed", "9", "--endpoint", comfy.url + "/face-migration"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MOARK_API_KEY": "any-key-the-route-ignores-123456", "NO_PROXY": "127.0.0.1"})
    assert done.returncode == 0, done.stderr
    with Image.open(out) as image:
        assert image.size == (256, 256)


def test_route_prompts_are_queued_as_the_servers_own_post_prompt_queues_them(api, comfy, graphs):
    """The route queues through /prompt, so while its prompt waits behind one of the UI's, its queue entry has
    the shape this ComfyUI's own /prompt gives (0.33: extra_data["create_time"]) and the jobs list (0.33's
    /api/jobs, which the UI's queue panel reads) holds it with every field a waiting job of the UI has."""
    url, photo = api
    answer = {}
    try:
        comfy.submit(slow_prompt(graphs))
        own_id = comfy.submit(graphs.flux(steps=1))
        thread = threading.Thread(target=lambda: answer.update(response=post(url, photo, seed=11)))
        thread.start()
        routed = wait_for(lambda: route_items(comfy._get("/queue")["queue_pending"]), "the request was never queued")[0]
        own = next(item for item in comfy._get("/queue")["queue_pending"] if item[1] == own_id)
        assert len(routed) == len(own)
        assert set(routed[3]) == set(own[3]) - {"client_id"}  # the test's own /prompt call names a client
        jobs = requests.get(comfy.url + "/api/jobs", timeout=30)
        if jobs.status_code != 404:  # 0.3.64 has no jobs list; its panels read /queue and /history
            listed = {job["id"]: job for job in jobs.json()["jobs"]}
            assert set(listed[own[1]]) <= set(listed[routed[1]]) and listed[routed[1]]["create_time"]
    finally:
        urllib.request.urlopen(urllib.request.Request(comfy.url + "/interrupt", data=b"{}", method="POST"), timeout=10)
    thread.join(300)
    assert decoded(answer["response"]).size == (256, 256)


def test_nothing_a_client_sent_stays_in_history_or_the_jobs_list(api, comfy):
    """Once a request is answered, its prompt (with the client's text, seed and Encode Face's detection text of
    its photo) is deleted from /history, so /api/jobs and the UI's panels list nothing of it either."""
    url, photo = api
    marker = "portrait of a client-secret-marker-5k2q"
    assert decoded(post(url, photo, prompt=marker, seed=424242)).size == (256, 256)

    def kept():
        texts = [json.dumps(comfy._get("/history"))]
        jobs = requests.get(comfy.url + "/api/jobs", params={"limit": 100000}, timeout=30)
        if jobs.status_code != 404:
            texts += [jobs.text] + [requests.get(f"{comfy.url}/api/jobs/{job['id']}", timeout=30).text
                                    for job in jobs.json()["jobs"]]
        return [text for text in texts if marker in text or "424242" in text or "FaceMigration_ApiResult" in text]

    deadline = time.monotonic() + 10  # forgetting runs once the prompt has ended
    while (found := kept()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not found, f"the request's values were kept: {found[0][:500]}"


def test_no_image_of_a_request_is_kept_whatever_its_end(api, comfy, tiny_face):
    """Success, no face (422), a bad field (400), a client gone mid-prompt and Cancel in ComfyUI: afterwards
    temp/ and output/ hold no file of these requests and no history entry of theirs shows an image."""
    url, photo = api
    faceless = (comfy.base / "input" / tiny_face.faceless_photo).read_bytes()
    folders = [comfy.base / "temp", comfy.base / "output"]
    before = {path for folder in folders for path in folder.rglob("*") if path.is_file()}
    assert decoded(post(url, photo, seed=21)).size == (256, 256)
    assert post(url, faceless).status_code == 422
    assert post(url, photo, guidance_scale=11).status_code == 400
    sock = raw_request(url, photo)
    wait_for(lambda: comfy._get("/queue")["queue_running"], "the slow request's prompt never ran")
    sock.close()
    wait_for(lambda: not comfy._get("/queue")["queue_running"], "the disconnected request kept running", 120)
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(response=post(url, photo, model="slow-test")))
    thread.start()
    wait_for(lambda: comfy._get("/queue")["queue_running"], "the cancelled request's prompt never ran")
    urllib.request.urlopen(urllib.request.Request(comfy.url + "/interrupt", data=b"{}", method="POST"), timeout=10)
    thread.join(120)
    assert answer["response"].status_code == 503

    def nothing_left():
        left = {path for folder in folders for path in folder.rglob("*") if path.is_file()} - before
        listed = list(api_prompts(comfy))  # the route deletes every history entry of its prompts
        return (left, listed) if (left or listed) else None

    deadline = time.monotonic() + 30  # forgetting runs once each prompt has ended
    while (found := nothing_left()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert found is None, f"files or history images of API requests were kept: {found}"


def test_the_route_survives_100_sequential_and_4_concurrent_requests(api, comfy, graphs):
    """After 104 route requests the server still runs the UI's own prompts, and no history entry of the route's
    is left."""
    url, photo = api
    for seed in range(1000, 1100):
        assert post(url, photo, seed=seed).status_code == 200
    answers = {}
    threads = [threading.Thread(target=lambda s=s: answers.update({s: post(url, photo, seed=s)}))
               for s in range(2000, 2004)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answers[s].status_code for s in sorted(answers)] == [200] * 4
    comfy.run(graphs.flux(steps=1))  # the UI's /prompt still runs prompts
    wait_for(lambda: not api_prompts(comfy), "route prompts stayed in the history", 30)
