"""Overhead of the self-hosted API route over queueing the same workflow through ComfyUI's own API.

    /path/to/ComfyUI/venv/bin/python benchmarks/bench_selfhost_route.py --comfyui /path/to/ComfyUI [--rounds 20]

Run it with ComfyUI's Python (it needs aiohttp and torch). It starts a headless ComfyUI (CPU) with this pack
in a temporary base directory and an API template `bench`: LoadImage -> ImageScale to the requested size ->
API Result. No model runs, so the difference between the two paths is the route's own work, whatever the
model. Per round, in paired alternating order (benchmarks/method.py), the same 512 x 512 photo and the same
graph go through:

- direct: what a client of ComfyUI's plain API does: POST /upload/image, POST /prompt with the filled
  template, wait on the websocket for the prompt's end (the image itself is not fetched);
- route:  one multipart POST /face-migration/v1/images/face-migration, whose answer holds the image.

Prints the extra milliseconds per request (median and per-round min/max), the ratio and the method's verdict
on the target: under 50 ms per request.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
import method  # noqa: E402
from face_migration.selfhost.templates import fill  # noqa: E402

ROUTE = "/face-migration/v1/images/face-migration"
SIZE = 256
TARGET_MS = 50.0
TEMPLATE = {
    "photo": {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}},
    "size": {"class_type": "ImageScale", "inputs": {"image": ["photo", 0], "upscale_method": "bilinear",
                                                    "width": "{{width}}", "height": "{{height}}", "crop": "disabled"}},
    "result": {"class_type": "FaceMigration_ApiResult", "inputs": {"images": ["size", 0],
                                                                   "request_id": "{{request_id}}"}},
}


def photo_png() -> bytes:
    """A smooth 512 x 512 picture with some noise: compresses like a photo rather than like a flat fill."""
    y, x = np.mgrid[0:512, 0:512]
    rng = np.random.default_rng(0)
    pixels = np.stack([x / 2, y / 2, (x + y) / 4], axis=-1) + rng.normal(0, 8, (512, 512, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def start_comfyui(comfyui: Path, base: Path) -> tuple[subprocess.Popen, str]:
    for sub in ("custom_nodes", "input", "output", "temp", "user/face_migration/api_templates"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "comfyui-face-migration").symlink_to(REPO)
    (base / "user" / "face_migration" / "api_templates" / "bench.json").write_text(json.dumps(TEMPLATE))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(base / "server.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
         "--base-directory", str(base), "--database-url", f"sqlite:///{base}/user/comfyui.db"],
        cwd=comfyui, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


async def wait_ready(session: aiohttp.ClientSession, url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise SystemExit(f"ComfyUI exited with {process.returncode}; see its server.log")
        try:
            async with session.get(url + "/system_stats") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("ComfyUI did not start in time")
        await asyncio.sleep(0.5)


class Clients:
    def __init__(self, session: aiohttp.ClientSession, url: str, photo: bytes):
        self.session, self.url, self.photo = session, url, photo
        self.client_id = uuid.uuid4().hex
        self.ws = None

    async def connect(self) -> None:
        self.ws = await self.session.ws_connect(f"{self.url}/ws?clientId={self.client_id}")

    async def direct(self) -> None:
        form = aiohttp.FormData()
        form.add_field("image", self.photo, filename=f"bench_{uuid.uuid4().hex}.png", content_type="image/png")
        async with self.session.post(self.url + "/upload/image", data=form) as response:
            name = (await response.json())["name"]
        prompt = fill(TEMPLATE, {"image": name, "request_id": uuid.uuid4().hex, "width": SIZE, "height": SIZE})
        async with self.session.post(self.url + "/prompt", json={"prompt": prompt, "client_id": self.client_id}) as r:
            prompt_id = (await r.json())["prompt_id"]
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            if event["data"].get("prompt_id") == prompt_id and event["type"] in ("execution_success",
                                                                                 "execution_error"):
                if event["type"] == "execution_error":
                    raise SystemExit(f"direct prompt failed: {event['data']}")
                return

    async def route(self) -> None:
        form = aiohttp.FormData()
        form.add_field("image", self.photo, filename="face.png", content_type="image/png")
        for name, value in (("model", "bench"), ("size", f"{SIZE}x{SIZE}"), ("prompt", "a portrait"),
                            ("num_inference_steps", "4"), ("seed", "1")):
            form.add_field(name, value)
        async with self.session.post(self.url + ROUTE, data=form) as response:
            body = await response.json()
        if response.status != 200:
            raise SystemExit(f"route answered {response.status}: {body}")


def timed_cases(loop: asyncio.AbstractEventLoop, clients: Clients) -> dict:
    return {"direct /prompt": lambda: loop.run_until_complete(clients.direct()),
            "route": lambda: loop.run_until_complete(clients.route())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI folder (with main.py)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--start-timeout", type=float, default=300.0)
    options = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench_selfhost_"))
    process, url = start_comfyui(options.comfyui, base)
    loop = asyncio.new_event_loop()
    try:
        session = loop.run_until_complete(_session())  # created inside the loop it is used on
        loop.run_until_complete(wait_ready(session, url, process, options.start_timeout))
        clients = Clients(session, url, photo_png())
        loop.run_until_complete(clients.connect())
        times = method.paired_rounds(timed_cases(loop, clients), rounds=options.rounds, warmup=options.warmup)
        comparison = method.Comparison(times["direct /prompt"], times["route"])
        machine = method.Machine.now()
        extra = comparison.extra_seconds
        print(comparison.line("route over direct /prompt", machine, per="request"))
        print(f"  extra per request: {1000 * extra.median:+.1f} ms (per-round min {1000 * extra.low:+.1f}, "
              f"max {1000 * extra.high:+.1f})")
        # The target in ms, as a share of this run's base, so the method judges it with the ratio's spread.
        base_s = statistics.median(times["direct /prompt"])
        method.print_verdict(f"route overhead < {TARGET_MS:.0f} ms (+{100 * TARGET_MS / 1000 / base_s:.0f} % of the "
                             f"{base_s:.3f} s base)", comparison.verdict(target=TARGET_MS / 1000 / base_s))
        loop.run_until_complete(clients.ws.close())
        loop.run_until_complete(session.close())
    finally:
        loop.close()
        process.terminate()
        process.wait(30)
        shutil.rmtree(base, ignore_errors=True)
    return 0


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


if __name__ == "__main__":
    sys.exit(main())
