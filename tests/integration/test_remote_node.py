"""Face Migration (MoArk API) in a real ComfyUI against the local fake API: schema, a batch run, cache,
validation before queueing, cancel (which hangs up on the server), a slow server asked only once, an
API error without the key, transparency through Load Image's MASK, and billed images kept on failure."""
import base64
import io
import json
import os
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devkit.workflow_validation import load_schemas, to_api
from face_migration.support import TESTED_COMFYUI
from tests.remote.fake_moark import FakeMoArk, Reply, gradient_image, png_bytes

REPO = Path(__file__).resolve().parents[2]

NODE = "FaceMigration_MoArkFaceMigration"
INPUTS = ["image", "prompt", "size", "guidance_scale", "num_inference_steps", "id_weight", "id_timestep_start",
          "seed", "model", "endpoint", "custom_base_url", "timeout"]
FILE_KEY = "integration-test-key-0123456789-abcdefgh"


@pytest.fixture
def fake(comfy):
    # The server reads ComfyUI/user/moark_api_key.txt when no key variable is set in its environment.
    (comfy.base / "user" / "moark_api_key.txt").write_text(FILE_KEY + "\n")
    server = FakeMoArk().start()
    yield server
    server.stop()


def expected_key() -> str:
    return os.environ.get("MOARK_API_KEY", "").strip() or os.environ.get("GITEE_AI_API_KEY", "").strip() or FILE_KEY


def graph(fake, batch=1, seed=5, prompt="portrait, oil painting"):
    return {
        "face": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": batch, "color": 0}},
        "migrate": {"class_type": NODE, "inputs": {
            "image": ["face", 0], "prompt": prompt, "size": "512x512", "guidance_scale": 7.33,
            "num_inference_steps": 4, "id_weight": 1.0, "id_timestep_start": 0, "seed": seed,
            "model": "flux-1-schnell", "endpoint": "custom", "custom_base_url": fake.base_url, "timeout": 30.0}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["migrate", 0]}},
    }


def test_schema_in_object_info(comfy):
    info = comfy.object_info()[NODE]
    assert info["display_name"] == "Face Migration (MoArk API)" and info["output"] == ["IMAGE"]
    assert list(info["input"]["required"]) == INPUTS
    required = info["input"]["required"]
    assert required["size"][1]["options"][0] == "1024x1024" and len(required["size"][1]["options"]) == 9
    assert required["seed"][1]["default"] == -1 and required["seed"][1]["control_after_generate"] is True
    assert required["endpoint"][1]["options"] == ["https://moark.ai", "https://ai.gitee.com", "custom"]
    assert (required["guidance_scale"][1]["min"], required["guidance_scale"][1]["max"]) == (1.0, 10.0)
    assert "handling of fractions is unverified" in required["id_weight"][1]["tooltip"]
    assert info["input"]["optional"]["retry_timeouts"][0] == "BOOLEAN"
    assert info["input"]["optional"]["retry_timeouts"][1]["default"] is False
    assert info["input"]["optional"]["mask"][0] == "MASK"
    assert "laid over white" in info["input"]["optional"]["mask"][1]["tooltip"]
    assert FILE_KEY not in json.dumps(info)


def test_a_batch_makes_one_request_per_image_and_is_cached(comfy, fake):
    entry = comfy.run(graph(fake, batch=2, seed=11))
    images = entry["outputs"]["preview"]["images"]
    assert len(images) == 2
    with Image.open(comfy.base / "temp" / images[0]["subfolder"] / images[0]["filename"]) as out:
        assert out.size == gradient_image().shape[1::-1]
    requests = fake.api_requests()
    assert len(requests) == 2
    assert all(r.headers["authorization"] == f"Bearer {expected_key()}" for r in requests)
    assert [dict(r.fields)["seed"] for r in requests] == ["11", "12"]
    assert dict(requests[0].fields)["guidance_scale"] == "7.3"  # 7.33 rounded to the schema's 0.1 step

    comfy.run(graph(fake, batch=2, seed=11))  # identical inputs: ComfyUI's cache, no new request
    assert len(fake.api_requests()) == 2
    comfy.run(graph(fake, batch=2, seed=12))  # a new seed: a new call
    assert len(fake.api_requests()) == 4
    assert expected_key() not in comfy.log_text()


def test_an_empty_prompt_is_refused_before_queueing(comfy, fake):
    with pytest.raises(AssertionError, match="prompt: empty"):
        comfy.submit(graph(fake, prompt="  "))
    assert fake.requests == []


def test_an_api_error_reaches_the_ui_without_the_key(comfy, fake):
    fake.queue(Reply.json({"message": f"token {expected_key()} is not valid"}, status=401))
    error = comfy.run_error(graph(fake, seed=99))
    assert "HTTP 401: token <API key> is not valid" in error["exception_message"]
    assert "moark_api_key.txt" in error["exception_message"] or "MOARK_API_KEY" in error["exception_message"]
    assert expected_key() not in json.dumps(error) and expected_key() not in comfy.log_text()


def test_a_slow_server_is_asked_once_and_the_error_says_it_may_be_billed(comfy, fake):
    fake.queue(*[Reply(200, b"{}", {}, delay=30.0)] * 4)
    prompt = graph(fake, seed=4321)
    prompt["migrate"]["inputs"]["timeout"] = 10.0  # the widget's minimum
    error = comfy.run_error(prompt)
    assert "No answer from" in error["exception_message"] and "may have been billed" in error["exception_message"]
    assert len(fake.api_requests()) == 1


def test_cancel_stops_the_wait_within_a_second(comfy, fake):
    fake.queue(Reply(200, b"{}", {}, delay=20.0))
    prompt_id = comfy.submit(graph(fake, seed=1234))
    deadline = time.monotonic() + 60
    while not fake.api_requests():
        assert time.monotonic() < deadline, "the node never sent its request"
        time.sleep(0.05)
    time.sleep(0.3)
    interrupted = time.monotonic()
    urllib.request.urlopen(urllib.request.Request(comfy.url + "/interrupt", data=b"{}", method="POST"), timeout=10)
    while True:
        entry = comfy._get(f"/history/{prompt_id}").get(prompt_id)
        if entry:
            break
        assert time.monotonic() - interrupted < 5, "the prompt did not stop after /interrupt"
        time.sleep(0.05)
    assert time.monotonic() - interrupted < 1.5
    assert comfy.messages(entry, "execution_interrupted"), entry["status"]
    (request,) = fake.api_requests()  # the node hung up rather than waiting for the answer
    while request.client_closed_at is None and time.monotonic() - interrupted < 2.0:
        time.sleep(0.05)
    assert request.client_closed_at is not None and request.client_closed_at - interrupted < 2.0


def cutout_photo(comfy, name: str) -> str:
    """A 56x40 PNG in ComfyUI's input folder: an opaque face on black, fully transparent, background, and one
    half-transparent red pixel at (0, 0)."""
    pixels = np.zeros((40, 56, 4), np.uint8)
    pixels[10:30, 16:40] = [30, 60, 90, 255]
    pixels[0, 0] = [200, 0, 0, 128]
    Image.fromarray(pixels, "RGBA").save(comfy.base / "input" / name)
    return name


def uploaded(request) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(request.files["image"][2])).convert("RGB"))


def assert_laid_over_white(sent: np.ndarray) -> None:
    assert sent.shape == (40, 56, 3)
    assert (sent[30:, :] == 255).all() and (sent[1:, :16] == 255).all()  # transparent: white, not black
    assert sent[20, 20].tolist() == [30, 60, 90] and sent[0, 0].tolist() == [227, 127, 127]


def test_transparent_pixels_from_load_image_are_uploaded_white_through_its_mask(comfy, fake):
    prompt = graph(fake, seed=2468)
    prompt["face"] = {"class_type": "LoadImage", "inputs": {"image": cutout_photo(comfy, "cutout_face.png")}}
    prompt["migrate"]["inputs"]["mask"] = ["face", 1]
    comfy.run(prompt)
    assert_laid_over_white(uploaded(fake.api_requests()[0]))

    del prompt["migrate"]["inputs"]["mask"]  # without the mask ComfyUI's IMAGE holds the hidden black
    comfy.run(prompt)
    assert uploaded(fake.api_requests()[1])[39, 55].tolist() == [0, 0, 0]


def test_the_shipped_remote_workflow_uploads_transparent_pixels_white(comfy, fake):
    workflow = json.loads((REPO / "workflows" / "remote_api_face_migration.json").read_text())
    prompt = to_api(workflow, load_schemas(TESTED_COMFYUI[0]))  # the version the workflows are saved for
    (photo,) = [n for n in prompt.values() if n["class_type"] == "LoadImage"]
    photo["inputs"]["image"] = cutout_photo(comfy, "shipped_workflow_cutout.png")
    (node,) = [n for n in prompt.values() if n["class_type"] == NODE]
    node["inputs"].update(endpoint="custom", custom_base_url=fake.base_url, timeout=30.0)
    comfy.run(prompt)
    (request,) = fake.api_requests()
    assert_laid_over_white(uploaded(request))


@pytest.mark.parametrize("second", ["unreadable image", "HTTP 500"])
def test_images_billed_before_a_failure_are_saved_to_the_output_folder(comfy, fake, second):
    first = png_bytes(gradient_image(16, 16))
    broken = b"\x00 a result in a format Pillow cannot read"
    fake.queue(Reply.json({"data": [{"b64_json": base64.b64encode(first).decode()}]}),
               Reply.json({"data": [{"b64_json": base64.b64encode(broken).decode()}]}) if second == "unreadable image"
               else Reply.json({"message": "internal error"}, status=500))
    error = comfy.run_error(graph(fake, batch=2, seed=1357 if second == "HTTP 500" else 1358))
    message = error["exception_message"]
    assert len(fake.api_requests()) == 2  # nothing was sent twice
    kept = [Path(p) for p in re.search(r"saved as received to (.*)\.$", message).group(1).split(", ")]
    expected = [first, broken] if second == "unreadable image" else [first]
    assert [p.read_bytes() for p in kept] == expected, message
    assert all(p.parent.resolve() == (comfy.base / "output").resolve() for p in kept)
    assert all(p.name.startswith("face_migration_received") for p in kept)
