"""The hosted request parsed and checked as the route receives it, and the answers it sends."""
import base64
import io

import pytest
from PIL import Image, ImageFile

import logging

from face_migration.errors import (ApiImageTooLargeError, ApiPromptFailedError, ApiRequestError, ApiSetupError,
                                   ApiTokenError, ApiUnavailableError)
from face_migration.remote.params import MAX_SEED, RANGES, SIZES
from face_migration.selfhost import protocol
from face_migration.selfhost.protocol import error_answer, image_answer, parse_request

# The documented example's fields, as requests sends them (numbers become their str()).
EXAMPLE = {"model": "flux-1-schnell", "size": "1024x1024", "guidance_scale": "4", "num_inference_steps": "4",
           "id_weight": "1", "id_timestep_start": "0", "prompt": "Portrait painting, delicate sketch style"}


def png(width=32, height=24, mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128 if mode != "RGB" else (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def form(image=None, **changes):
    fields = {**EXAMPLE, **changes}
    return ({k: [v] for k, v in fields.items() if v is not None}, {"image": [image or png()]})


def test_the_documented_example_parses_to_its_values():
    request = parse_request(*form())
    p = request.params
    assert (p.model, p.size, p.guidance_scale, p.num_inference_steps, p.id_weight, p.id_timestep_start) == \
        ("flux-1-schnell", "1024x1024", 4, 4, 1, 0)
    assert p.prompt == EXAMPLE["prompt"]
    assert (request.image_suffix, request.width, request.height) == ("png", 32, 24)
    assert 0 <= p.seed <= MAX_SEED  # none sent: the server picks one


def test_defaults_are_the_hosted_schema_defaults_and_numbers_may_carry_a_decimal_point():
    fields, files = form(size=None, guidance_scale=None, num_inference_steps="4.0", id_weight="1.5",
                         id_timestep_start=None, model=None, seed="7")
    p = parse_request(fields, files).params
    assert (p.size, p.guidance_scale, p.model, p.seed) == ("1024x1024", RANGES["guidance_scale"][2], "flux-1-schnell", 7)
    assert p.num_inference_steps == 4 and isinstance(p.num_inference_steps, int) and p.id_weight == 1.5


@pytest.mark.parametrize("changes, named", [
    ({"guidance_scale": "11"}, "guidance_scale: 11.0 is outside 1.0..10.0"),
    ({"num_inference_steps": "2.5"}, "num_inference_steps: 2.5 must be a whole number"),
    ({"id_weight": "heavy"}, "id_weight: 'heavy' is not a number"),
    ({"id_weight": "nan"}, "id_weight: 'nan' is not a finite number"),
    ({"size": "640x640"}, "size: '640x640' is not offered"),
    ({"prompt": "  "}, "prompt: empty"),
    ({"seed": "-3"}, "seed: -3 must be a whole number"),
    ({"id_timestep_start": "4"}, "id_timestep_start: 4 is not below num_inference_steps"),
    ({"response_format": "url"}, "unknown field(s) response_format"),
])
def test_a_bad_field_is_a_400_naming_it(changes, named):
    with pytest.raises(ApiRequestError) as caught:
        parse_request(*form(**changes))
    assert type(caught.value) is ApiRequestError and caught.value.status == 400
    assert named in str(caught.value)


def test_width_and_height_ask_for_any_size_the_hosted_schema_allows():
    request = parse_request(*form(size=None, width="512", height="272"))
    assert request.params.width_height == (512, 272)
    assert parse_request(*form(size=None, width="16", height="1024")).params.width_height == (16, 1024)


@pytest.mark.parametrize("changes, named", [
    ({"width": "512", "height": "512"}, "size: sent together with width/height"),
    ({"size": None, "width": "512"}, "height: missing"),
    ({"size": None, "width": "500", "height": "512"}, "width: 500 must be a multiple of 16 in 16..1024"),
    ({"size": None, "width": "512", "height": "2048"}, "height: 2048 must be a multiple of 16 in 16..1024"),
    # The hosted API takes these (8..1024 in steps of 8); the templates' latent node does not (16, steps of 16).
    ({"size": None, "width": "8", "height": "512"}, "width: 8 must be a multiple of 16 in 16..1024"),
    ({"size": None, "width": "512", "height": "520"}, "height: 520 must be a multiple of 16 in 16..1024"),
    ({"size": None, "width": "wide", "height": "512"}, "width: 'wide' is not a number"),
])
def test_a_bad_width_or_height_is_a_400_naming_it(changes, named):
    with pytest.raises(ApiRequestError) as caught:
        parse_request(*form(**changes))
    assert caught.value.status == 400 and named in str(caught.value)


def test_every_offered_size_is_accepted():
    for size in SIZES:
        assert parse_request(*form(size=size)).params.width_height == tuple(map(int, size.split("x")))


def test_image_missing_repeated_or_sent_as_text():
    fields, _ = form()
    with pytest.raises(ApiRequestError, match="image: missing"):
        parse_request(fields, {})
    with pytest.raises(ApiRequestError, match="image: missing"):
        parse_request({**fields, "image": ["photo.png"]}, {})
    with pytest.raises(ApiRequestError, match="image sent more than once"):
        parse_request(fields, {"image": [png(), png()]})
    with pytest.raises(ApiRequestError, match=r"unknown field\(s\) mask"):
        parse_request(fields, {"image": [png()], "mask": [png()]})


def test_an_upload_over_the_byte_limit_is_a_413(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_UPLOAD_BYTES", 1000)
    with pytest.raises(ApiImageTooLargeError) as caught:
        parse_request(*form(image=b"\0" * 1001))
    assert caught.value.status == 413
    protocol.check_upload_size(1000)  # at the limit: fine


def test_too_many_pixels_is_a_413_before_any_pixel_is_decoded(monkeypatch):
    huge = png(6000, 5000, mode="1")  # 30 M pixels, a few kB of PNG
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("the image was decoded"))
    with pytest.raises(ApiImageTooLargeError, match="6000x5000 pixels is over the limit of 25000000") as caught:
        parse_request(*form(image=huge))
    assert caught.value.status == 413


@pytest.mark.parametrize("data, named", [
    (b"not an image at all", "not a readable image"),
    (png()[:60], "not a readable image"),  # truncated: the header reads, the pixels do not
])
def test_an_unreadable_upload_is_a_400(data, named):
    with pytest.raises(ApiRequestError, match=named) as caught:
        parse_request(*form(image=data))
    assert caught.value.status == 400


def test_a_format_outside_the_list_is_a_400():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PPM")
    with pytest.raises(ApiRequestError, match="PPM files are not accepted"):
        parse_request(*form(image=buffer.getvalue()))


def test_jpeg_uploads_keep_their_suffix():
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG")
    assert parse_request(*form(image=buffer.getvalue())).image_suffix == "jpg"


def test_answers_have_the_hosted_shapes():
    answer = image_answer([b"one", b"two"], created=1700000000.7)
    assert answer == {"data": [{"b64_json": base64.b64encode(b"one").decode()},
                               {"b64_json": base64.b64encode(b"two").decode()}], "created": 1700000000}
    assert error_answer(ApiImageTooLargeError("image: too big")) == (413, {"message": "image: too big"})


def test_a_503_says_whether_sending_it_again_can_help():
    assert error_answer(ApiUnavailableError("queue full")) == (503, {"message": "queue full", "retryable": True})
    assert error_answer(ApiSetupError("models missing", detail="/srv/models/x")) == (
        503, {"message": "models missing", "retryable": False})


def test_the_details_go_to_the_log_in_one_line_and_never_to_the_client(caplog):
    caplog.set_level(logging.INFO, logger=protocol.__name__)
    error = ApiTokenError("Authorization: missing or wrong Bearer token", detail="the token is in /srv/user/t.txt")
    status, body = error_answer(error)
    assert (status, body) == (401, {"message": "Authorization: missing or wrong Bearer token"})
    (record,) = caplog.records
    assert "/srv/user/t.txt" in record.getMessage() and "401" in record.getMessage()
    assert "\n" not in record.getMessage() and record.exc_info is None and record.levelno == logging.INFO
    caplog.clear()
    error_answer(ApiPromptFailedError("the prompt failed in node 3 (KSampler)", detail="CUDA out of memory"))
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "CUDA out of memory" in record.getMessage() and not record.exc_info


def test_a_client_gone_mid_upload_is_one_line_without_a_traceback(caplog):
    caplog.set_level(logging.INFO, logger=protocol.__name__)
    try:
        raise ConnectionResetError("Connection lost")
    except ConnectionResetError as exc:
        status, body = error_answer(exc)
    assert status == 400 and set(body) == {"message"}
    (record,) = caplog.records
    assert record.exc_info is None and record.levelno == logging.INFO and "went away" in record.getMessage()


def test_a_fault_of_the_route_is_a_500_with_the_traceback_in_the_log_only(caplog):
    try:
        raise KeyError("/srv/comfy/secret/path")
    except KeyError as exc:
        status, body = error_answer(exc)
    assert status == 500 and set(body) == {"message"} and "/srv" not in body["message"]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info[1] is not None
