"""The client against a local fake of the API: the exact request, every failure mode, retries, cancel,
and that the key never leaks."""
import base64
import dataclasses
import email.utils
import io
import logging
import random
import socket
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from face_migration.remote import (ApiKeyError, BadResponseError, FaceMigrationClient, FaceMigrationParams,
                                   InvalidParameterError, RateLimitError, RemoteCancelled, RemoteConnectionError,
                                   RemoteError, RemoteTimeoutError, RequestRejectedError, RetryPolicy, ServerError)
from tests.remote.conftest import SECRET
from tests.remote.fake_moark import FakeMoArk, Reply, b64_png, gradient_image, png_bytes

PARAMS = FaceMigrationParams(prompt="portrait, oil painting")


class Sleeps(list):
    """Records requested waits instead of sleeping."""

    def __call__(self, seconds):
        self.append(seconds)


def make_client(key, fake, sleeps=None, retry=None, **kw):
    return FaceMigrationClient(key, fake.base_url, timeout=kw.pop("timeout", 5.0),
                               retry=retry or RetryPolicy(max_attempts=4, base_delay=0.01, max_total_time=30),
                               sleep=sleeps if sleeps is not None else Sleeps(), rng=random.Random(0), **kw)


def face(width=40, height=30):
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


def assert_no_key(*texts):
    """Not the key, nor any 10 characters of it in any letter case (a truncated or case-changed echo)."""
    windows = {SECRET[i:i + 10] for i in range(len(SECRET) - 9)}
    for text in texts:
        lowered = str(text).lower()
        assert not [w for w in windows if w in lowered]


def full_error_text(exc: BaseException) -> str:
    """Message, repr, args and every chained exception: all places a key could hide."""
    parts = []
    while exc is not None:
        parts += [str(exc), repr(exc), repr(exc.args), repr(vars(exc))]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


# ---- success and the exact request ------------------------------------------------------------------

def test_success_returns_the_served_image_and_sends_the_documented_request(key, fake):
    served = gradient_image(48, 32)
    fake.queue(Reply.image_b64(served))
    upload = face()
    images = make_client(key, fake).generate(upload, PARAMS)

    assert len(images) == 1 and images[0].dtype == np.uint8
    np.testing.assert_array_equal(images[0], served)
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/images/face-migration")
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert request.fields == [("model", "flux-1-schnell"), ("size", "1024x1024"), ("guidance_scale", "4"),
                              ("num_inference_steps", "4"), ("id_weight", "1"), ("id_timestep_start", "0"),
                              ("prompt", "portrait, oil painting")]
    assert "seed" not in dict(request.fields)
    filename, kind, data = request.files["image"]
    assert (filename, kind) == ("face.png", "image/png") and list(request.files) == ["image"]
    with Image.open(io.BytesIO(data)) as sent:
        assert sent.format == "PNG"
        np.testing.assert_array_equal(np.asarray(sent.convert("RGB")), upload)


def test_every_parameter_and_the_seed_reach_the_form(key, fake):
    params = FaceMigrationParams(prompt="  a knight  ", size="768x1024", guidance_scale=3.5, num_inference_steps=8,
                                 id_weight=0.85, id_timestep_start=2, seed=1234, model="flux-1-schnell")
    make_client(key, fake).generate(face(), params)
    assert fake.requests[0].fields == [
        ("model", "flux-1-schnell"), ("size", "768x1024"), ("guidance_scale", "3.5"), ("num_inference_steps", "8"),
        ("id_weight", "0.85"), ("id_timestep_start", "2"), ("seed", "1234"), ("prompt", "a knight")]


def test_float_input_is_converted_and_a_large_upload_downscaled_with_its_aspect(key, fake):
    big = np.random.default_rng(2).random((1000, 2000, 3), dtype=np.float32)
    make_client(key, fake, max_upload_side=512).generate(big, PARAMS)
    with Image.open(io.BytesIO(fake.requests[0].files["image"][2])) as sent:
        assert sent.size == (512, 256)


def test_url_result_on_the_same_server_is_downloaded_with_the_key(key, fake):
    served = gradient_image(20, 10)
    fake.files["/files/out.png"] = (png_bytes(served), "image/png")
    fake.queue(Reply.json({"data": [{"url": fake.base_url + "/files/out.png"}]}))
    (image,) = make_client(key, fake).generate(face(), PARAMS)
    np.testing.assert_array_equal(image, served)
    download = fake.requests[1]
    assert (download.method, download.path) == ("GET", "/files/out.png")
    assert download.headers["authorization"] == f"Bearer {SECRET}"


def test_url_result_on_another_host_is_downloaded_without_the_key(key, fake):
    storage = FakeMoArk().start()
    try:
        served = gradient_image(16, 16)
        storage.files["/bucket/x.png"] = (png_bytes(served), "image/png")
        fake.queue(Reply.json({"data": [{"url": storage.base_url + "/bucket/x.png"}]}))
        (image,) = make_client(key, fake).generate(face(), PARAMS)
        np.testing.assert_array_equal(image, served)
        assert "authorization" not in storage.requests[0].headers
    finally:
        storage.stop()


def test_every_image_in_data_is_returned(key, fake):
    a, b = gradient_image(8, 8), gradient_image(8, 8)[::-1].copy()
    fake.queue(Reply.json({"data": [{"b64_json": b64_png(x)} for x in (a, b)]}))
    images = make_client(key, fake).generate(face(), PARAMS)
    assert len(images) == 2
    np.testing.assert_array_equal(images[1], b)


# ---- errors that are not retried ------------------------------------------------------------------

def test_401_names_the_key_source_and_is_not_retried(key, fake):
    fake.queue(Reply.json({"message": "invalid token"}, status=401))
    with pytest.raises(ApiKeyError) as caught:
        make_client(key, fake).generate(face(), PARAMS)
    text = str(caught.value)
    assert "HTTP 401: invalid token" in text and "environment variable MOARK_API_KEY" in text
    assert caught.value.status == 401 and len(fake.requests) == 1


@pytest.mark.parametrize("document, expected", [
    ({"message": "prompt is too long"}, "prompt is too long"),
    ({"error_message": "size must be one of ..."}, "size must be one of ..."),
    ({"error": {"message": "bad id_weight", "type": "invalid_request"}}, "bad id_weight"),
    ({"detail": [{"loc": ["body", "size"], "msg": "field required"}]}, "field required"),
])
def test_400_reports_the_servers_message_and_is_not_retried(key, fake, document, expected):
    fake.queue(Reply.json(document, status=400))
    with pytest.raises(RequestRejectedError) as caught:
        make_client(key, fake).generate(face(), PARAMS)
    assert f"HTTP 400: {expected}" in str(caught.value)
    assert caught.value.server_message == expected and len(fake.requests) == 1


@pytest.mark.parametrize("status, error_type", [(403, ApiKeyError), (404, RequestRejectedError),
                                                (413, RequestRejectedError), (422, RequestRejectedError)])
def test_client_errors_are_not_retried(key, fake, status, error_type):
    fake.queue(Reply.json({"message": "no"}, status=status))
    with pytest.raises(error_type) as caught:
        make_client(key, fake).generate(face(), PARAMS)
    assert caught.value.status == status and len(fake.requests) == 1


def test_invalid_inputs_fail_before_any_request(key, fake):
    with pytest.raises(InvalidParameterError, match="prompt: empty"):
        make_client(key, fake).generate(face(), FaceMigrationParams(prompt="  "))
    with pytest.raises(InvalidParameterError, match="expected an HxWx3 image"):
        make_client(key, fake).generate(np.zeros((4, 4, 2), np.uint8), PARAMS)
    assert fake.requests == []


# ---- retries ----------------------------------------------------------------------------------------

def test_429_waits_at_least_retry_after_then_succeeds(key, fake):
    fake.queue(Reply.json({"message": "too many requests"}, status=429, headers={"Retry-After": "2"}))
    sleeps = Sleeps()
    images = make_client(key, fake, sleeps).generate(face(), PARAMS)
    assert len(images) == 1 and len(fake.requests) == 2
    assert sum(sleeps) == pytest.approx(2.0, abs=1e-6)  # the backoff (~0.01 s) is below Retry-After
    assert max(sleeps) <= 0.1 + 1e-9  # waited in short steps, so a cancel is seen quickly


def test_retry_after_as_an_http_date(key, fake):
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    fake.queue(Reply.json({}, status=503, headers={"Retry-After": when}))
    sleeps = Sleeps()
    make_client(key, fake, sleeps).generate(face(), PARAMS)
    assert 1.0 < sum(sleeps) <= 3.0


def test_503s_are_retried_with_growing_jittered_backoff(key, fake):
    fake.queue(*[Reply.json({"message": "boom"}, status=503)] * 3)
    sleeps = Sleeps()
    retry = RetryPolicy(max_attempts=4, base_delay=0.2, max_total_time=30)
    images = make_client(key, fake, sleeps, retry=retry).generate(face(), PARAMS)
    assert len(images) == 1 and len(fake.requests) == 4
    total = sum(sleeps)
    assert 0.1 + 0.2 + 0.4 <= total + 1e-9 <= 0.2 + 0.4 + 0.8  # each delay in [ceiling/2, ceiling]


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_502_or_504_is_sent_once_and_may_be_billed(key, fake, status):
    """nginx in front of two self-hosted servers answers 502 when one stops mid-request
    (tests/integration/test_scaleout.py): the work may have started, so a second try could bill twice."""
    fake.queue(Reply(status, b"<html>bad gateway</html>"), Reply.image_b64(gradient_image()))
    with pytest.raises(ServerError) as caught:
        make_client(key, fake).generate(face(), PARAMS)
    assert len(fake.requests) == 1 and caught.value.maybe_billed and not caught.value.retryable
    assert "retry_timeouts" in str(caught.value) or "--retry-timeouts" in str(caught.value)


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_502_or_504_is_sent_again_when_the_user_allows_it(key, fake, status):
    fake.queue(Reply(status, b""), Reply.image_b64(gradient_image()))
    client = make_client(key, fake, retry=RetryPolicy(retry_timeouts=True))
    assert len(client.generate(face(), PARAMS)) == 1 and len(fake.requests) == 2


def test_503s_until_the_tries_run_out_were_never_billed(key, fake, caplog):
    fake.queue(*[Reply.json({"message": "inference backend down"}, status=503)] * 5)
    with pytest.raises(ServerError) as caught:
        make_client(key, fake).generate(face(), PARAMS)
    assert len(fake.requests) == 4
    assert "HTTP 503: inference backend down" in str(caught.value) and "Gave up after 4 tries" in str(caught.value)
    assert sum("Trying again" in r.getMessage() for r in caplog.records) == 3
    assert not caught.value.maybe_billed and "billed" not in str(caught.value)


def test_a_503_marked_not_retryable_is_sent_once(key, fake):
    """The self-hosted route's 503 for models or a template it lacks: another try gets the same answer."""
    fake.queue(Reply.json({"message": "models missing on this server for model 'flux-1-dev'", "retryable": False},
                          status=503), Reply.image_b64(gradient_image()))
    with pytest.raises(ServerError) as caught:
        make_client(key, fake).generate(face(), PARAMS)
    assert len(fake.requests) == 1 and not caught.value.retryable and not caught.value.maybe_billed
    assert "models missing on this server" in str(caught.value) and "will not help" in str(caught.value)


def test_a_503_marked_retryable_is_retried(key, fake):
    fake.queue(Reply.json({"message": "queue full", "retryable": True}, status=503), Reply.image_b64(gradient_image()))
    assert len(make_client(key, fake).generate(face(), PARAMS)) == 1 and len(fake.requests) == 2


def test_429_until_the_tries_run_out_mentions_the_quota(key, fake):
    fake.queue(*[Reply.json({"message": "quota"}, status=429)] * 2)
    with pytest.raises(RateLimitError, match="quota or resource package"):
        make_client(key, fake, retry=RetryPolicy(max_attempts=2, base_delay=0.01)).generate(face(), PARAMS)


def test_retry_after_beyond_the_total_time_gives_up_at_once(key, fake):
    fake.queue(Reply.json({"message": "busy"}, status=503, headers={"Retry-After": "120"}))
    sleeps = Sleeps()
    with pytest.raises(ServerError, match="would pass the 10 s limit"):
        make_client(key, fake, sleeps, retry=RetryPolicy(max_total_time=10)).generate(face(), PARAMS)
    assert len(fake.requests) == 1 and sleeps == []


def test_408_is_retried(key, fake):
    fake.queue(Reply.json({}, status=408))
    assert len(make_client(key, fake).generate(face(), PARAMS)) == 1 and len(fake.requests) == 2


def test_a_slow_server_gets_exactly_one_request_and_the_error_says_it_may_be_billed(key, fake, caplog):
    fake.queue(*[Reply(200, b"{}", {}, delay=3.0)] * 4)
    started = time.monotonic()
    with pytest.raises(RemoteTimeoutError, match=r"No answer from http://127.0.0.1:\d+ within 0.5 s") as caught:
        make_client(key, fake, timeout=0.5).generate(face(), PARAMS)  # 4 tries allowed
    assert time.monotonic() - started < 2.0
    assert len(fake.api_requests()) == 1
    assert caught.value.maybe_billed and "may have been billed" in str(caught.value)
    assert "retry_timeouts" in str(caught.value) and "Trying again" not in caplog.text


def test_timeouts_are_retried_only_when_asked_and_each_try_is_called_billable(key, fake, caplog):
    fake.queue(Reply(200, b"{}", {}, delay=3.0), Reply(200, b"{}", {}, delay=3.0))
    started = time.monotonic()
    retry = RetryPolicy(max_attempts=2, base_delay=0.01, retry_timeouts=True)
    with pytest.raises(RemoteTimeoutError, match=r"No answer from http://127.0.0.1:\d+ within 0.5 s") as caught:
        make_client(key, fake, timeout=0.5, retry=retry).generate(face(), PARAMS)
    assert time.monotonic() - started < 2.5
    assert len(fake.api_requests()) == 2
    assert "may have been billed" in str(caught.value) and "may have been billed" in caplog.text


@pytest.mark.parametrize("reply", [
    Reply(200, b'{"data": [{"b64_json": "AAAA"}]}', {"Content-Type": "application/json"}, cut_after=10),
    Reply(hang_up=True),
])
def test_a_broken_answer_after_the_body_was_sent_is_not_retried(key, fake, reply):
    fake.queue(*[reply] * 4)
    with pytest.raises(RemoteError) as caught:
        make_client(key, fake).generate(face(), PARAMS)
    assert len(fake.api_requests()) == 1
    assert caught.value.maybe_billed and "may have been billed" in str(caught.value)


def test_a_500_is_not_retried_and_may_have_been_billed(key, fake):
    fake.queue(*[Reply.json({"message": "CUDA out of memory"}, status=500)] * 4)
    with pytest.raises(ServerError, match="HTTP 500: CUDA out of memory.*may have been billed") as caught:
        make_client(key, fake).generate(face(), PARAMS)
    assert len(fake.api_requests()) == 1 and caught.value.maybe_billed


@pytest.mark.parametrize("status, billed", [(400, True), (422, True), (401, False), (403, False), (413, False)])
def test_which_refusals_may_have_been_billed(key, fake, status, billed):
    fake.queue(Reply.json({"message": "no"}, status=status))
    with pytest.raises(RemoteError) as caught:
        make_client(key, fake).generate(face(), PARAMS)
    assert caught.value.maybe_billed == billed and ("may have been billed" in str(caught.value)) == billed


def test_an_unusable_200_may_have_been_billed(key, fake):
    fake.queue(Reply(200, b"<html>ok</html>", {}))
    with pytest.raises(BadResponseError, match="may have been billed"):
        make_client(key, fake).generate(face(), PARAMS)


def test_unreachable_server_is_retried_then_reported(key):
    closed = FakeMoArk()  # bound, never served, then closed: connections are refused
    url = closed.base_url
    closed.stop()
    client = FaceMigrationClient(key, url, retry=RetryPolicy(max_attempts=2, base_delay=0.01), sleep=Sleeps())
    with pytest.raises(RemoteConnectionError, match="Could not reach http://127.0.0.1.*Gave up after 2 tries") as caught:
        client.generate(face(), PARAMS)
    assert not caught.value.maybe_billed and "billed" not in str(caught.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux drops connections to a full accept queue")
def test_a_connect_timeout_is_retried_and_was_never_billed(key):
    # A listening socket that never accepts, its one-slot queue already taken: new connections hang.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        waiting = [socket.socket() for _ in range(2)]
        for connection in waiting:
            connection.setblocking(False)
            connection.connect_ex(listener.getsockname())
        client = FaceMigrationClient(key, "http://%s:%d" % listener.getsockname(), timeout=0.3,
                                     retry=RetryPolicy(max_attempts=2, base_delay=0.01), sleep=Sleeps())
        with pytest.raises(RemoteError, match="Gave up after 2 tries") as caught:
            client.generate(face(), PARAMS)
        for connection in waiting:
            connection.close()
    assert not caught.value.maybe_billed and "billed" not in str(caught.value)


# ---- bad responses ----------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, message", [
    (Reply(200, b"<html>maintenance</html>", {"Content-Type": "text/html"}), "not with JSON"),
    (Reply.json({"created": 1}), "no non-empty 'data' list"),
    (Reply.json({"data": []}), "no non-empty 'data' list"),
    (Reply.json({"data": [{"revised_prompt": "x"}]}), r"neither 'b64_json' nor 'url'"),
    (Reply.json({"data": [{"b64_json": "not base64 at all!"}]}), r"data\[0\].b64_json is not valid base64"),
    (Reply.json({"data": [{"b64_json": base64.b64encode(b"GIF89a but not really").decode()}]}),
     r"data\[0\].b64_json is not a readable image"),
    (Reply.json({"data": [{"url": "ftp://example.com/x.png"}]}), "not an http"),
])
def test_bad_responses_are_clear_errors_and_not_retried(key, fake, reply, message):
    fake.queue(reply)
    with pytest.raises(BadResponseError, match=message):
        make_client(key, fake).generate(face(), PARAMS)
    assert len(fake.requests) == 1


def test_a_200_with_only_an_error_message(key, fake):
    fake.queue(Reply.json({"error_message": "content moderation: unsafe prompt"}))
    with pytest.raises(RequestRejectedError, match="returned no image: content moderation"):
        make_client(key, fake).generate(face(), PARAMS)


def test_a_missing_result_url_is_reported_with_its_status(key, fake):
    fake.queue(Reply.json({"data": [{"url": "/files/gone.png?signature=abc"}]}))
    with pytest.raises(BadResponseError) as caught:
        make_client(key, fake).generate(face(), PARAMS)
    assert "HTTP 404" in str(caught.value) and "/files/gone.png" in str(caught.value)
    assert "signature" not in str(caught.value)


# ---- cancel and progress ----------------------------------------------------------------------------

def test_cancel_stops_the_wait_quickly(key, fake):
    fake.queue(Reply(200, b"{}", {}, delay=5.0))
    started = time.monotonic()
    cancel_at = started + 0.3
    with pytest.raises(RemoteCancelled, match="may have been billed") as caught:
        make_client(key, fake, should_cancel=lambda: time.monotonic() > cancel_at).generate(face(), PARAMS)
    assert time.monotonic() - cancel_at < 0.25
    assert caught.value.maybe_billed


def http_workers() -> set:
    return {t for t in threading.enumerate() if t.name == "face-migration-http" and t.is_alive()}


def assert_hung_up_promptly(fake, since: float, workers_before: set) -> None:
    """The worker thread ends and the server sees the connection closed, both within a second."""
    while http_workers() - workers_before and time.monotonic() - since < 1.0:
        time.sleep(0.02)
    assert not http_workers() - workers_before, "the worker thread still waits for the server"
    (request,) = fake.api_requests()
    while request.client_closed_at is None and time.monotonic() - since < 1.0:
        time.sleep(0.02)
    assert request.client_closed_at is not None and request.client_closed_at - since < 1.0


def test_cancel_closes_the_connection_and_ends_the_worker_thread(key, fake):
    fake.queue(Reply(200, b"{}", {}, delay=10.0))
    before = http_workers()
    cancel_at = time.monotonic() + 0.3
    with pytest.raises(RemoteCancelled):
        make_client(key, fake, should_cancel=lambda: time.monotonic() > cancel_at).generate(face(), PARAMS)
    assert_hung_up_promptly(fake, time.monotonic(), before)


def test_an_exception_from_should_cancel_also_closes_the_connection(key, fake):
    class Interrupted(Exception):  # as ComfyUI's InterruptProcessingException
        pass

    def should_cancel():
        if time.monotonic() > cancel_at:
            raise Interrupted()
        return False

    fake.queue(Reply(200, b"{}", {}, delay=10.0))
    before = http_workers()
    cancel_at = time.monotonic() + 0.3
    with pytest.raises(Interrupted):
        make_client(key, fake, should_cancel=should_cancel).generate(face(), PARAMS)
    assert_hung_up_promptly(fake, time.monotonic(), before)


def test_an_answer_slower_than_the_timeout_is_hung_up_on(key, fake):
    # Each byte comes within the read timeout, so only the whole-try limit (timeout + 1 s) stops it.
    fake.queue(Reply(200, b"x" * 200, {}, trickle=0.2))
    before = http_workers()
    with pytest.raises(RemoteTimeoutError):
        make_client(key, fake, timeout=0.5).generate(face(), PARAMS)
    assert_hung_up_promptly(fake, time.monotonic(), before)


def test_cancel_during_a_backoff_wait(key, fake):
    fake.queue(Reply.json({}, status=429, headers={"Retry-After": "30"}))
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 3

    started = time.monotonic()
    with pytest.raises(RemoteCancelled) as caught:
        make_client(key, fake, sleeps=time.sleep, should_cancel=should_cancel,
                    retry=RetryPolicy(max_total_time=100)).generate(face(), PARAMS)
    assert time.monotonic() - started < 2.0 and len(fake.requests) == 1
    assert not caught.value.maybe_billed  # the only try was refused with 429


def test_an_exception_from_should_cancel_propagates_unchanged(key, fake):
    class Interrupted(Exception):  # as ComfyUI's InterruptProcessingException
        pass

    def should_cancel():
        raise Interrupted()

    fake.queue(Reply(200, b"{}", {}, delay=2.0))
    with pytest.raises(Interrupted):
        make_client(key, fake, should_cancel=should_cancel).generate(face(), PARAMS)


def test_progress_reports_elapsed_time_and_try_number(key, fake):
    fake.queue(Reply.json({}, status=503, delay=0.35), dataclasses.replace(Reply.image_b64(gradient_image()), delay=0.35))
    seen = []
    make_client(key, fake, on_progress=lambda elapsed, attempt: seen.append((elapsed, attempt)),
                progress_interval=0.1).generate(face(), PARAMS)
    attempts = [a for _, a in seen]
    assert attempts[0] == 1 and attempts[-1] == 2 and attempts == sorted(attempts)
    elapsed = [e for e, _ in seen]
    assert elapsed == sorted(elapsed) and elapsed[-1] >= 0.6 and len(seen) >= 6


# ---- the key never leaks ----------------------------------------------------------------------------

# (reply, whether the server's text is shown in the error, redacted)
LEAK_SCENARIOS = [
    (Reply.json({"message": f"token {SECRET} is invalid"}, status=401), True),
    (Reply.json({"error_message": f"echo Bearer {SECRET}"}, status=400), True),
    (Reply.json({"message": f"{SECRET} over quota"}, status=429), True),
    (Reply(200, f"not json {SECRET}".encode(), {}), True),
    (Reply(200, b'{"data": [{"b64_json": "' + base64.b64encode(SECRET.encode()) + b'"}]}', {}), False),
    (Reply.json({"error": f"moderation {SECRET}"}), True),
    (Reply(500, f"<pre>Authorization: Bearer {SECRET}</pre>".encode(), {}), False),
    (Reply(500, f"traceback ... key={SECRET}".encode(), {}), True),
    # echoed as a JSON object key: named in the "which keys did it send" message
    (Reply.json({SECRET: "ok", "created": 1}), True),
    (Reply.json({"data": [{f"Bearer {SECRET}": 1}]}), True),
    # case-changed, encoded, or cut where a long message is shortened
    (Reply.json({"message": f"token {SECRET.upper()} unknown"}, status=400), True),
    (Reply.json({"message": "token " + "".join(f"%{b:02x}" for b in SECRET.encode())}, status=503), True),
    (Reply.json({"message": "x" * 280 + SECRET}, status=400), True),
    (Reply(500, ("." + " " * 4080 + SECRET).encode(), {}), False),  # the key straddles the end of what is read
    # inside a result URL: never fetched (the key would travel on and reach urllib3's debug log)
    (Reply.json({"data": [{"url": f"/files/out.png?token={SECRET}"}]}), True),
    (Reply.json({"data": [{"url": f"ftp://example.com/{SECRET}.png"}]}), True),
]


@pytest.mark.parametrize("reply, shown", LEAK_SCENARIOS)
def test_the_key_appears_in_no_error_or_log_line(key, fake, caplog, reply, shown):
    caplog.set_level(logging.DEBUG)  # urllib3 and requests included
    fake.queue(*[reply] * 4)
    with pytest.raises(RemoteError) as caught:
        make_client(key, fake, retry=RetryPolicy(max_attempts=2, base_delay=0.01)).generate(face(), PARAMS)
    assert_no_key(full_error_text(caught.value), caplog.text, *[r.getMessage() for r in caplog.records])
    assert ("<API key>" in str(caught.value)) == shown  # the server's echo was redacted, not dropped
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_the_key_is_not_in_the_client_repr_or_in_connection_errors(key, caplog):
    caplog.set_level(logging.DEBUG)
    closed = FakeMoArk()
    url = closed.base_url
    closed.stop()
    client = FaceMigrationClient(key, url, retry=RetryPolicy(max_attempts=1), sleep=Sleeps())
    with pytest.raises(RemoteConnectionError) as caught:
        client.generate(face(), PARAMS)
    assert_no_key(repr(client), repr(key), str(key), full_error_text(caught.value), caplog.text)


def test_no_threads_are_left_waiting_after_a_successful_call(key, fake):
    before = threading.active_count()
    make_client(key, fake).generate(face(), PARAMS)
    time.sleep(0.05)
    assert threading.active_count() <= before


def test_a_batch_is_one_request_per_image_with_consecutive_seeds(key, fake):
    fake.queue(Reply.image_b64(gradient_image(16, 8)), Reply.image_b64(gradient_image(32, 16)))
    started = []
    batch = make_client(key, fake).generate_batch(np.stack([face(), face()]), FaceMigrationParams(prompt="p", seed=7),
                                                  on_image=started.append)
    assert batch.shape == (2, 8, 16, 3) and batch.dtype == np.uint8  # the odd-sized result fits the batch
    assert [dict(r.fields)["seed"] for r in fake.requests] == ["7", "8"] and started == [0, 1]


def test_an_invalid_batch_sends_nothing(key, fake):
    with pytest.raises(InvalidParameterError, match="the batch is empty"):
        make_client(key, fake).generate_batch(np.zeros((0, 8, 8, 3), np.float32), PARAMS)
    with pytest.raises(InvalidParameterError, match="prompt"):
        make_client(key, fake).generate_batch([face()], FaceMigrationParams(prompt=""))
    assert fake.requests == []


@pytest.mark.parametrize("settings, problem", [
    (dict(timeout=float("nan")), "timeout: nan must be a positive, finite number"),
    (dict(timeout=float("inf")), "timeout: inf must be"), (dict(timeout=-1), "timeout: -1 must be"),
    (dict(retry=RetryPolicy(max_total_time=float("nan"))), "max_total_time: nan must be"),
    (dict(retry=RetryPolicy(max_attempts=0)), "max_attempts: 0 must be at least 1"),
])
def test_unusable_client_settings_are_refused(key, settings, problem):
    with pytest.raises(InvalidParameterError, match=problem):
        FaceMigrationClient(key, "https://moark.ai", **settings)
