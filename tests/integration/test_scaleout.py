"""Scale-out for real: nginx, configured from docs/nginx-face-migration.conf with only its placeholders filled
in, in front of two ComfyUI instances with this pack; the client is the hosted API's own Python example.

Backend A is the session server with test_selfhost_api's templates (tiny FLUX, tiny face models); backend B is
a second ComfyUI with the same templates and models (the tiny FLUX linked, not copied) and the same token: A
reads it from its token file (written for this module only), B from the environment. Both listen on loopback,
where the route would answer without a token, and nginx would pass anyone's request on: hence the token.
nginx runs from a prefix in pytest's temporary folder, in the foreground, with one worker."""
from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests

from face_migration.selfhost.access import TOKEN_ENV, TOKEN_FILENAME
from devkit.servers import NGINX_SITE as SITE_TEMPLATE, ServerStartError, nginx_binary, start_nginx
from tests.integration.conftest import TINY_FLUX_NAME, install_packs, start_comfy
# `api`: test_selfhost_api's fixture (the session server with the test templates), used here as well.
from tests.integration.test_selfhost_api import (EXAMPLE, HOSTED_URL, ROUTE, TOKEN, ExampleFailed,  # noqa: F401
                                                 api, run_example)
from devkit.tiny_face_models import install as install_face_models

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(nginx_binary() is None, reason="no nginx binary: the scale-out test runs nginx in "
                                                               "front of two ComfyUIs (Debian/Ubuntu: apt-get install "
                                                               "nginx)")

LOG_LINE = re.compile(r'^(\d{3}) "([^"]*)" "([^"]*)" "([^"]*)"$')


def hostport(server) -> str:
    return server.url.removeprefix("http://")


@pytest.fixture(scope="module")
def backends(api, comfy, comfyui, tmp_path_factory):
    """(A, B): the session server and a second ComfyUI, both with the test templates, models and TOKEN."""
    base = tmp_path_factory.mktemp("scaleout_backend")
    install_packs(base)
    tiny_flux = comfy.base / "models" / "diffusion_models" / TINY_FLUX_NAME
    (base / "models" / "diffusion_models" / TINY_FLUX_NAME).symlink_to(tiny_flux.resolve())
    install_face_models(base / "models", base / "input")
    shutil.copytree(comfy.base / "user" / "face_migration", base / "user" / "face_migration")
    token_file = comfy.base / "user" / TOKEN_FILENAME
    token_file.write_text(TOKEN)
    try:
        second = start_comfy(comfyui, base, env={TOKEN_ENV: TOKEN})
        try:
            yield comfy, second
        finally:
            second.stop()
    finally:
        token_file.unlink()


class Balancer:
    def __init__(self, url: str, prefix: Path):
        self.url, self.prefix = url, prefix

    def log(self) -> list[tuple[str, list[str], list[str], list[str]]]:
        """Access log entries: (status, upstream addresses, their statuses, their connect times)."""
        entries = []
        for line in (self.prefix / "access.log").read_text().splitlines():
            status, *upstream = LOG_LINE.match(line).groups()
            entries.append((status, *(field.split(", ") for field in upstream)))
        return entries

    def error_log(self) -> str:
        return (self.prefix / "error.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def balancer(backends, tmp_path_factory):
    """nginx on a free loopback port with the template's configuration for backends A and B."""
    prefix = tmp_path_factory.mktemp("nginx")
    try:
        process, url = start_nginx(prefix, [hostport(server) for server in backends])
    except ServerStartError as error:
        pytest.fail(str(error))
    try:
        yield Balancer(url, prefix)
    finally:
        process.terminate()
        process.wait(10)


def route_prompt_queued(server) -> bool:
    """Whether a route prompt is running or waiting on the server (its request has reached it)."""
    queue = server._get("/queue")
    return any(any(node.get("class_type") == "FaceMigration_ApiResult" for node in item[2].values())
               for item in queue["queue_running"] + queue["queue_pending"])


# What ComfyUI logs for each POST /prompt, each prompt that ended (interrupted too) and each interrupted one. The
# route deletes its prompts' history entries once they end, so the backends' logs count them.
QUEUED, ENDED, INTERRUPTED = "got prompt", "Prompt executed in", "Processing interrupted"


def prompt_counts(servers) -> dict:
    return {server.url: {line: server.log_text().count(line) for line in (QUEUED, ENDED, INTERRUPTED)}
            for server in servers}


def new_prompts(server, before: dict, line: str) -> int:
    """How many `line`s the server logged since prompt_counts gave `before`."""
    return server.log_text().count(line) - before[server.url][line]


def run_examples(code: str, folder: Path, indices, results: dict) -> list[threading.Thread]:
    """Start one thread per index, each running the hosted example once in `folder`; results[index] gets its
    decoded image or its ExampleFailed."""
    def one(index):
        try:
            results[index] = run_example(code, folder, f"hosted_example_{index}")
        except ExampleFailed as exc:  # the test counts which requests failed and how
            results[index] = exc

    threads = [threading.Thread(target=one, args=(index,)) for index in indices]
    for thread in threads:
        thread.start()
    return threads


def join(threads) -> None:
    for thread in threads:
        thread.join(600)
        assert not thread.is_alive(), "a request through nginx did not end in 10 minutes"


def test_the_route_behind_nginx_keeps_its_own_answers(balancer, backends):
    """The token and the upload limit are the route's: its JSON 401 and 413 come through nginx (nginx's own
    body limit sits above the route's, so nginx does not answer with its HTML page first)."""
    url = balancer.url + ROUTE
    files = {"image": ("face.png", b"\x89PNG")}
    refused = requests.post(url, files=files, data={"prompt": "x"}, timeout=60)
    assert refused.status_code == 401 and "token" in refused.json()["message"]
    big = {"image": ("face.png", os.urandom(20 * 1024 * 1024 + 4096))}
    too_big = requests.post(url, headers={"Authorization": f"Bearer {TOKEN}"}, files=big, data={"prompt": "x"},
                            timeout=60)
    assert too_big.status_code == 413 and too_big.headers["Content-Type"].startswith("application/json"), \
        f"nginx answered instead of the route: {too_big.text[:300]}"
    assert "over 20 MiB" in too_big.json()["message"]


def test_a_client_that_goes_away_cancels_its_prompt_behind_nginx(balancer, backends, api):
    """nginx closes its connection to the backend when the client goes (proxy_ignore_client_abort is off), so
    the route cancels the prompt as it does for a direct client. `slow-test` would sample for minutes."""
    before, (_, photo) = prompt_counts(backends), api
    with pytest.raises(requests.ReadTimeout):  # requests closes the connection: the client is gone
        requests.post(balancer.url + ROUTE, headers={"Authorization": f"Bearer {TOKEN}"},
                      files={"image": ("face.png", photo)}, data={"prompt": "portrait", "model": "slow-test"},
                      timeout=(10, 8))
    deadline = time.monotonic() + 90
    while any(route_prompt_queued(server) for server in backends):
        assert time.monotonic() < deadline, "the prompt of a client that went away still runs"
        time.sleep(0.2)
    ended = [new_prompts(server, before, ENDED) for server in backends]
    assert sorted(ended) == [0, 1], "the request ran on one backend (idle: it started at once)"
    assert sum(new_prompts(server, before, INTERRUPTED) for server in backends) == 1


def test_eight_hosted_example_requests_through_nginx_with_a_backend_stopped_midway(balancer, backends, api,
                                                                                 tmp_path):
    """4 requests at once: least_conn gives each backend work. 2 more: one reaches B, which is stopped while
    it runs: nginx answers 502 and does not send that POST to A. After nginx's fail_timeout, 2 more: the one
    nginx tries on B finds no connection and goes to A. Every other answer is a 1024x1024 image, and the
    prompts in the two histories are exactly the answered requests plus the one B was running."""
    first, second = backends
    fail_timeout = int(re.search(r"fail_timeout=(\d+)s", SITE_TEMPLATE.read_text()).group(1))
    (tmp_path / "face.png").write_bytes(api[1])  # the example opens "face.png"
    code = EXAMPLE.replace(HOSTED_URL, balancer.url + ROUTE).replace("<your token>", TOKEN)
    assert code.count(balancer.url) == 1 and code.count(TOKEN) == 1
    before, logged_before = prompt_counts(backends), len(balancer.log())
    results = {}

    join(run_examples(code, tmp_path, range(4), results))
    on_a, on_b = new_prompts(first, before, ENDED), new_prompts(second, before, ENDED)
    assert on_a >= 1 and on_b >= 1, f"both backends serve: A ran {on_a}, B ran {on_b}"
    assert on_a + on_b == 4

    threads = run_examples(code, tmp_path, (4, 5), results)
    deadline = time.monotonic() + 120
    while not route_prompt_queued(second):
        assert time.monotonic() < deadline, "least_conn sent neither of two requests to the idle backend B"
        time.sleep(0.05)
    second.stop()
    stopped_at = time.monotonic()
    join(threads)
    time.sleep(max(0.0, stopped_at + fail_timeout + 1 - time.monotonic()))  # B may be tried again now
    join(run_examples(code, tmp_path, (6, 7), results))

    failed = {index: result for index, result in results.items() if isinstance(result, ExampleFailed)}
    assert len(failed) == 1 and set(failed) <= {4, 5}, f"only the request B was running fails: {failed}"
    assert "JSONDecodeError" in str(next(iter(failed.values()))), "nginx's 502 page is no JSON"
    images = [result for result in results.values() if not isinstance(result, Exception)]
    assert len(images) == 7 and all(image.size == (1024, 1024) for image in images)
    on_a, on_b = new_prompts(first, before, ENDED), new_prompts(second, before, ENDED)
    assert on_a + on_b == len(images), "each answered request ran exactly once"
    assert new_prompts(first, before, QUEUED) + new_prompts(second, before, QUEUED) == 8, \
        "B's unfinished request was not run again on A"
    assert not route_prompt_queued(first)

    log = balancer.log()[logged_before:]
    assert len(log) == 8, log
    a, b = hostport(first), hostport(second)
    cut_off = [entry for entry in log if entry[0] == "502"]
    assert len(cut_off) == 1 and cut_off[0][1] == [b] and cut_off[0][3] != ["-"], \
        f"the request B got before it stopped went nowhere else: {log}"
    retried = [entry for entry in log if entry[1] == [b, a]]
    assert retried and all(entry[0] == "200" and entry[3][0] == "-" for entry in retried), \
        f"a request nginx could not connect to B with went to A: {log}\n{balancer.error_log()[-3000:]}"
