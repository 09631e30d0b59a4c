"""Soak of the self-hosted API route: many mixed requests, every one accounted for, nothing growing.

    .venv/bin/python benchmarks/soak_selfhost.py --comfyui /path/to/ComfyUI --python /path/to/ComfyUI/venv/bin/python
        [--requests 300] [--instances 1|2] [--clients 4] [--gpu]

Starts one ComfyUI with this pack (or two behind nginx, configured from docs/nginx-face-migration.conf with
only its placeholders filled in), each in a temporary base directory with the tiny face models
(devkit/tiny_face_models.py), a token and three API templates: `soak-plain` (the upload scaled to the
requested size), `soak-face` (Encode Face on the tiny models, its preview scaled: a faceless photo is a 422)
and `soak-slow` (a chain of blurs that runs a few seconds, for clients that go away and for the UI's queue
deletions and cancels). Every template holds an unconnected EmptyImage whose colour is the request's seed:
the tag that finds a request's prompt in the queue.

The requests, in a seeded random order over --clients concurrent clients: successes of three sizes (each
plain one with a photo of its own colour, which its answer must show), faceless photos (422), bad fields
and unreadable images (400), oversized bodies and pictures (413), wrong tokens (401), clients that close
their connection while their prompt waits or runs, and prompts deleted from the queue or cancelled through
ComfyUI's own API while their client waits (503). Each request ends answered (with which status) or lost.
Prompts are counted in the servers' logs (the route deletes their history entries and ComfyUI sends their start
and end events to no websocket): exactly one queued per request that passed the route's checks, and as many run as
the kinds call for (see account()).

Each instance's RSS, open file descriptors, threads, files in temp/ and output/ and history length are
sampled at the start, after the warm-up and after each of --blocks equal parts of the rest (with every
queue empty); growth per 1,000 requests is the median and min/max over those parts, judged against BOUNDS
(the spread straddling a bound: inconclusive). Before each sample every instance runs the same small
request (LEVELLING: ComfyUI holds the last prompt's outputs). The instances run with glibc's mmap threshold fixed
(ALLOCATOR_ENV): by default glibc raises it after freeing a large block, so later uploads and image buffers of up
to 32 MiB come from the heap and stay in RSS once freed; on a loaded machine, where more requests overlap, an
instance then kept 103 MiB more after 60 requests, against 8 MiB with the threshold fixed, which would hide
or fake a leak. Exit status 1 when a request is lost, answered with a status
its kind does not allow, executed twice (or not at all where it must), a file is left in temp/ or output/
(the report's problems), or a growth is clearly above its bound. --json writes the report.
"""
from __future__ import annotations

import argparse
import base64
import copy
import http.client
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
import method  # noqa: E402
import soak_common  # noqa: E402
from devkit import servers  # noqa: E402
from devkit.tiny_face_models import install as install_face_models, red_face_photo  # noqa: E402
from face_migration.selfhost.access import TOKEN_ENV  # noqa: E402

ROUTE = "/face-migration/v1/images/face-migration"
TOKEN = "soak-token-9d3kq7x2m4"
MAX_BODY = 20 * 1024 * 1024
SLOW_BLURS = 12  # blur nodes of soak-slow: interrupt and queue deletion act between nodes
# Growth per 1,000 requests after the warm-up that a run may show (see docs/benchmarks.md, "Soak"). RSS: the
# long run's steadier instance, median growth plus three times its half-spread, rounded up to a multiple of
# 8 MiB; descriptors: the 2 an instance opened once after its warm-up and kept; no thread, no file.
# Freed buffers above 1 MiB go back to the system, so RSS shows what an instance holds (see the docstring).
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1024 * 1024)}
BOUNDS = {"rss_mib": 24.0, "fds": 2.0, "threads": 1.0, "temp_files": 0.0, "output_files": 0.0}
METRICS = ("rss_mib", "fds", "threads", "temp_files", "output_files", "history")


@dataclass(frozen=True)
class Kind:
    """One kind of request: its template and fields, and the statuses and executions it may end with."""
    name: str
    weight: int
    statuses: frozenset
    must_run: bool = False  # its prompt certainly executed (once)
    may_run: bool = False  # its prompt may have executed (once): cancelled around its start


KINDS = [
    Kind("ok-plain-64", 6, frozenset({200}), must_run=True),
    Kind("ok-plain-256", 4, frozenset({200}), must_run=True),
    Kind("ok-face-512", 4, frozenset({200}), must_run=True),
    Kind("no-face", 3, frozenset({422}), must_run=True),
    Kind("bad-field", 2, frozenset({400})),
    Kind("bad-image", 1, frozenset({400})),
    Kind("big-body", 1, frozenset({413})),
    Kind("big-picture", 1, frozenset({413})),
    Kind("wrong-token", 2, frozenset({401})),
    Kind("gone-queued", 1, frozenset({"gone"}), may_run=True),
    Kind("gone-running", 1, frozenset({"gone"}), must_run=True),
    Kind("ui-delete", 1, frozenset({503, 200}), may_run=True),  # 200: it had started before the delete came
    Kind("ui-cancel", 1, frozenset({503}), must_run=True),
]
BY_NAME = {kind.name: kind for kind in KINDS}


@dataclass
class Outcome:
    tag: int
    kind: str
    status: int | str | None = None  # an HTTP status, "gone" (the client left on purpose) or "lost: ..."
    seen: str = ""  # where the client or the UI found the prompt before acting: "pending" or "running"
    seconds: float = 0.0
    problem: str = ""


def templates(face) -> dict[str, dict]:
    """The three API templates, with the seed tag."""
    def ending(image: list, width="{{width}}", height="{{height}}") -> dict:
        return {"size": {"class_type": "ImageScale", "inputs": {"image": image, "upscale_method": "nearest-exact",
                                                               "width": width, "height": height, "crop": "disabled"}},
                "result": {"class_type": "FaceMigration_ApiResult",
                           "inputs": {"images": ["size", 0], "request_id": "{{request_id}}"}},
                "tag": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                               "color": "{{seed}}"}}}

    photo = {"photo": {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}}}
    face_graph = {
        **photo,
        "photo_512": {"class_type": "ImageScale", "inputs": {"image": ["photo", 0], "upscale_method": "bilinear",
                                                             "width": 512, "height": 512, "crop": "disabled"}},
        "pulid": {"class_type": "FaceMigration_PulidModelLoader", "inputs": {"pulid_file": face.pulid_file}},
        "analysis": {"class_type": "FaceMigration_FaceAnalysisLoader", "inputs": {"provider": "CPU"}},
        "eva": {"class_type": "FaceMigration_EvaClipLoader", "inputs": {"eva_file": face.eva_file}},
        "parsing": {"class_type": "FaceMigration_FaceParsingLoader", "inputs": {
            "parsing_file": face.parsing_file, "landmark_file": "none (fast: SCRFD landmarks)"}},
        "encode": {"class_type": "FaceMigration_EncodeFace", "inputs": {
            "image": ["photo_512", 0], "face_analysis": ["analysis", 0], "eva_clip": ["eva", 0],
            "face_parsing": ["parsing", 0], "pulid_model": ["pulid", 0], "face_order": "largest-first",
            "face_index": 0, "combine": "mean", "skip_faceless": False}},
        **ending(["encode", 1]),
    }
    slow = {**photo, "blur_0": {"class_type": "ImageScale", "inputs": {
        "image": ["photo", 0], "upscale_method": "bilinear", "width": 768, "height": 768, "crop": "disabled"}}}
    for i in range(1, SLOW_BLURS + 1):
        slow[f"blur_{i}"] = {"class_type": "ImageBlur", "inputs": {"image": [f"blur_{i - 1}", 0], "blur_radius": 15,
                                                                   "sigma": 5.0}}
    return {"soak-plain": {**photo, **ending(["photo", 0])}, "soak-face": face_graph,
            "soak-slow": {**slow, **ending([f"blur_{SLOW_BLURS}", 0])}}


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def colour_of(tag: int) -> tuple[int, int, int]:
    return (tag * 37) % 256, (tag * 101) % 256, (tag // 7) % 256


class Instance:
    """One ComfyUI of the soak: its process, URL and base directory, and what is sampled from it."""

    def __init__(self, process, url: str, base: Path):
        self.process, self.url, self.base = process, url, base

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.load(response)

    def post(self, path: str, body: dict) -> None:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=60).close()

    def find(self, tag: int) -> tuple[str, str] | None:
        """(prompt id, "pending" | "running") of the queued prompt with this tag, or None."""
        queue = self.get("/queue")
        for state in ("running", "pending"):
            for item in queue[f"queue_{state}"]:
                if tag_of(item[2]) == tag:
                    return item[1], state
        return None

    def sample(self) -> dict[str, float]:
        pid = self.process.pid
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        files = {folder: sum(1 for path in (self.base / folder).rglob("*") if path.is_file())
                 for folder in ("temp", "output")}
        return {"rss_mib": int(status["VmRSS"].split()[0]) / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd")),
                "threads": int(status["Threads"]), "temp_files": files["temp"], "output_files": files["output"],
                "history": len(self.get("/history"))}

    def idle(self) -> bool:
        queue = self.get("/queue")
        return not queue["queue_running"] and not queue["queue_pending"]


def tag_of(prompt: dict) -> int | None:
    node = prompt.get("tag") if isinstance(prompt, dict) else None
    return node["inputs"]["color"] if isinstance(node, dict) and node.get("class_type") == "EmptyImage" else None


class Soak:
    def __init__(self, url: str, instances: list[Instance], face, photo_face: bytes, photo_faceless: bytes):
        self.url, self.instances = url + ROUTE, instances
        self.face, self.photo_face, self.photo_faceless = face, photo_face, photo_faceless
        self.big_picture = _big_picture()

    def on(self, instance: Instance) -> Soak:
        """The same soak sent to one instance directly, not through nginx (its photos not made again)."""
        single = copy.copy(self)
        single.url, single.instances = instance.url + ROUTE, [instance]
        return single

    def fields(self, kind: str, tag: int) -> tuple[dict, bytes, str]:
        """Form fields, upload and token of one request."""
        data = {"model": "soak-plain", "width": 64, "height": 64, "guidance_scale": 4, "id_weight": 1,
                "id_timestep_start": 0, "prompt": f"soak {tag}", "num_inference_steps": 4, "seed": tag}
        photo = png(np.full((96, 96, 3), colour_of(tag), np.uint8))
        token = TOKEN
        if kind == "ok-plain-256":
            data.update(width=256, height=256)
        elif kind in ("ok-face-512", "no-face"):
            data.update(model="soak-face", width=512, height=512)
            photo = self.photo_face if kind == "ok-face-512" else self.photo_faceless
        elif kind == "bad-field":
            data["guidance_scale"] = 11
        elif kind == "bad-image":
            photo = b"this is no picture " * 64
        elif kind == "big-body":
            photo = os.urandom(MAX_BODY + 4096)
        elif kind == "big-picture":
            photo = self.big_picture
        elif kind == "wrong-token":
            token = "wrong-" + TOKEN
        elif kind in ("gone-queued", "gone-running", "ui-delete", "ui-cancel"):
            data["model"] = "soak-slow"
        return data, photo, token

    def prepared(self, kind: str, tag: int) -> requests.PreparedRequest:
        data, photo, token = self.fields(kind, tag)
        return requests.Request("POST", self.url, headers={"Authorization": f"Bearer {token}"},
                                files={"image": ("face.png", photo)}, data=data).prepare()

    def one(self, kind: str, tag: int) -> Outcome:
        outcome, started = Outcome(tag, kind), time.monotonic()
        try:
            if kind.startswith("gone-"):
                self.go_away(outcome)
            else:
                self.answered(outcome)
        except (OSError, requests.RequestException, http.client.HTTPException) as exc:
            outcome.status = f"lost: {type(exc).__name__}: {exc}"[:300]
        outcome.seconds = time.monotonic() - started
        if outcome.status not in BY_NAME[kind].statuses and not outcome.problem:
            outcome.problem = f"status {outcome.status} is not one of {sorted(map(str, BY_NAME[kind].statuses))}"
        return outcome

    def answered(self, outcome: Outcome) -> None:
        ui_action = {"ui-delete": "pending", "ui-cancel": "running"}.get(outcome.kind)
        acting = threading.Thread(target=self.act_from_ui, args=(outcome, ui_action)) if ui_action else None
        if acting:
            acting.start()
        with requests.Session() as session:
            response = session.send(self.prepared(outcome.kind, outcome.tag), timeout=600)
        if acting:
            acting.join()
        outcome.status = response.status_code
        if response.status_code == 200 and outcome.kind.startswith("ok-"):
            outcome.problem = self.check_image(outcome, response.json())
        elif response.status_code != 200:
            body = response.json()  # every answer of the route is JSON, also through nginx
            if not isinstance(body.get("message"), str):
                outcome.problem = f"no message in the error body {body}"

    def check_image(self, outcome: Outcome, body: dict) -> str:
        with Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))) as image:
            image = image.convert("RGB")
            want = {"ok-plain-64": 64, "ok-plain-256": 256, "ok-face-512": 512}[outcome.kind]
            if image.size != (want, want):
                return f"image {image.size}, asked for {want}x{want}"
            if outcome.kind.startswith("ok-plain") and image.getpixel((want // 2, want // 2)) != colour_of(outcome.tag):
                return f"the image is not this request's photo: {image.getpixel((want // 2, want // 2))}"
        return ""

    def locate(self, tag: int, want: str, seconds: float = 120) -> tuple[Instance, str, str] | None:
        """Wait until the tagged prompt is queued somewhere, then (if want is "running") until it runs."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for instance in self.instances:
                found = instance.find(tag)
                if found and (want == "pending" or found[1] == "running"):
                    return instance, *found
            time.sleep(0.02)
        return None

    def act_from_ui(self, outcome: Outcome, want: str) -> None:
        """What a user does in the UI to a route prompt: delete it from the queue, or Cancel it while it runs."""
        found = self.locate(outcome.tag, want)
        if found is None:
            outcome.problem = f"its prompt was never seen {want}"
            return
        instance, prompt_id, outcome.seen = found
        if outcome.kind == "ui-delete":
            instance.post("/queue", {"delete": [prompt_id]})
        else:
            time.sleep(0.3)
            instance.post("/interrupt", {"prompt_id": prompt_id})

    def go_away(self, outcome: Outcome) -> None:
        """Send the request, wait until its prompt is queued (gone-queued) or runs (gone-running), close."""
        request = self.prepared(outcome.kind, outcome.tag)
        parts = urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
        try:
            connection.request("POST", parts.path, body=request.body, headers=dict(request.headers))
            found = self.locate(outcome.tag, "running" if outcome.kind == "gone-running" else "pending")
            if found is None:
                outcome.problem = "its prompt was never seen queued"
            else:
                outcome.seen = found[2]
                if outcome.kind == "gone-running":
                    time.sleep(0.3)
        finally:
            connection.close()
        outcome.status = "gone"


def _big_picture() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (6000, 5000)).save(buffer, format="PNG")  # 30 Mpx in a few kB: refused from its header
    return buffer.getvalue()


def schedule(total: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names, weights = [k.name for k in KINDS], [k.weight for k in KINDS]
    return rng.choices(names, weights=weights, k=total)


def run_requests(soak: Soak, kinds: list[str], first_tag: int, clients: int) -> list[Outcome]:
    outcomes: list[Outcome] = []
    lock, position = threading.Lock(), iter(enumerate(kinds))

    def client():
        while True:
            with lock:
                item = next(position, None)
            if item is None:
                return
            outcome = soak.one(item[1], first_tag + item[0])
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


PRIMING = ("ok-face-512", "no-face", "ok-plain-256", "ok-plain-64")


# Sent to every instance before each sample: ComfyUI holds the outputs of the last prompt it ran (a slow prompt's
# chain of blurred images: one instance sampled after one showed +80 to +95 MiB that was gone a block later), so
# every sample is taken with the same small prompt's outputs held.
LEVELLING = ("ok-plain-64",)


def direct(instances: list[Instance], runner: Soak, kinds: tuple[str, ...], first_tag: int) -> list[Outcome]:
    """Each of `kinds` sent to every instance directly, not through nginx (tags first_tag on, after the soak's
    own). PRIMING at the end of the warm-up, so that the warm-up sample of each has its models loaded."""
    outcomes = []
    for i, instance in enumerate(instances):
        one_instance = runner.on(instance)
        outcomes += [one_instance.one(kind, first_tag + len(kinds) * i + k) for k, kind in enumerate(kinds)]
    return outcomes


def settle(instances: list[Instance], seconds: float = 120) -> None:
    """Until every queue is empty and the route's clean-up after each request (history look-up, file removal)
    has had time to end."""
    deadline = time.monotonic() + seconds
    while not all(instance.idle() for instance in instances):
        if time.monotonic() > deadline:
            raise SystemExit("the queues did not empty")
        time.sleep(0.2)
    time.sleep(2.0)


# What ComfyUI logs for every prompt its POST /prompt accepts, for every prompt that ends (done, failed or
# interrupted) and for every interrupted one. Route prompts are queued without a client id, so ComfyUI sends
# their start and end events to no websocket, and the route deletes their history entries: the logs are where they show.
LOG_LINES = {"queued": "got prompt", "ended": "Prompt executed in", "interrupted": "Processing interrupted"}


def account(outcomes: list[Outcome], instances: list[Instance]) -> tuple[list[str], dict]:
    """Problems (requests lost or answered wrongly, prompts queued twice, run where they must not or not where
    they must) and the counts behind them. Every kind that gets past the route's checks queues exactly one
    prompt (a request sent on a second time, by nginx or the route, would queue two); the prompts that ran
    are at least those that must have, at most those plus the cancelled ones that may have started."""
    problems = [f"request {o.tag} ({o.kind}): {o.problem or o.status}" for o in outcomes
                if o.problem or str(o.status).startswith("lost")]
    logs = [(i.base / "server.log").read_text(errors="replace") for i in instances]
    counts = {name: sum(log.count(line) for log in logs) for name, line in LOG_LINES.items()}
    kinds = [BY_NAME[o.kind] for o in outcomes]
    must, may = sum(kind.must_run for kind in kinds), sum(kind.may_run for kind in kinds)
    counts.update({"queued, expected": must + may, "ended, at least": must, "ended, at most": must + may})
    if counts["queued"] != must + may:
        problems.append(f"{counts['queued']} prompts queued for {must + may} requests that each queue one")
    if not must <= counts["ended"] <= must + may:
        problems.append(f"{counts['ended']} prompts ran, not between the {must} that must and the {must + may} "
                        f"that may have")
    return problems, counts


@dataclass
class Report:
    machine: str
    requests: int
    warmup: int
    instances: int
    seconds: float
    statuses: dict
    seen: dict
    prompts: dict  # queued, ended and interrupted, with what was expected (see account)
    samples: list = field(default_factory=list)  # per instance: [(requests done, sample)]
    growth: dict = field(default_factory=dict)  # per instance, per metric: (median, low, high)
    verdicts: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)


def start_instances(options, root: Path) -> tuple[list[Instance], object]:
    instances, face = [], None
    for i in range(options.instances):
        base = root / f"comfy_{i}"
        servers.install_packs(base)
        face = install_face_models(base / "models", base / "input")
        folder = base / "user" / "face_migration" / "api_templates"
        folder.mkdir(parents=True)
        for name, graph in templates(face).items():
            (folder / f"{name}.json").write_text(json.dumps(graph))
        process, url, _ = servers.launch_comfyui(options.python, options.comfyui, base,
                                                 env={TOKEN_ENV: TOKEN, **ALLOCATOR_ENV}, extra_args=options.comfy_args)
        instances.append(Instance(process, url, base))
    for instance in instances:
        servers.wait_for_comfyui(instance.url, instance.process, instance.base / "server.log", options.start_timeout)
    return instances, face


def soak(options) -> Report:
    machine = method.Machine.now()
    root = Path(tempfile.mkdtemp(prefix="soak_selfhost_"))
    instances, nginx = [], None
    try:
        instances, face = start_instances(options, root)
        url = instances[0].url
        if options.instances == 2:
            (root / "nginx").mkdir()
            nginx, url = servers.start_nginx(root / "nginx", [i.url.removeprefix("http://") for i in instances])
        photos = {name: png(pixels) for name, pixels in
                  ((face.photo, red_face_photo()), (face.faceless_photo, red_face_photo(())))}
        runner = Soak(url, instances, face, photos[face.photo], photos[face.faceless_photo])
        kinds = schedule(options.requests, options.seed)
        warmup = min(options.warmup, len(kinds) // 4)
        samples = [[(0, instance.sample())] for instance in instances]
        outcomes, started = [], time.monotonic()
        blocks = [(0, warmup)] + [(warmup + (len(kinds) - warmup) * b // options.blocks,
                                   warmup + (len(kinds) - warmup) * (b + 1) // options.blocks)
                                  for b in range(options.blocks)]
        next_tag = len(kinds)
        for first, last in blocks:
            outcomes += run_requests(runner, kinds[first:last], first, options.clients)
            extra = PRIMING if first == 0 else ()  # a seeded warm-up (or nginx) may not give each every kind
            outcomes += direct(instances, runner, extra + LEVELLING, next_tag)
            next_tag += len(extra + LEVELLING) * len(instances)
            settle(instances)
            for mine, instance in zip(samples, instances):
                mine.append((last, instance.sample()))
            done = Counter(str(o.status) for o in outcomes)
            print(f"  {last}/{len(kinds)} requests, {time.monotonic() - started:.0f} s: {dict(sorted(done.items()))}; "
                  + "; ".join(f"{i.url}: RSS {s[-1][1]['rss_mib']:.0f} MiB, fds {s[-1][1]['fds']}, history "
                              f"{s[-1][1]['history']}" for i, s in zip(instances, samples)), flush=True)
            if len(samples[0]) > 3 and time.monotonic() - started > 60 * options.max_minutes:
                print(f"  stopped after {last} requests: --max-minutes {options.max_minutes:g} is over")
                break
        problems, counts = account(outcomes, instances)
        report = Report(machine.line(), len(outcomes), warmup, len(instances), time.monotonic() - started,
                        dict(Counter(f"{o.kind} {o.status}" for o in outcomes)),
                        dict(Counter(f"{o.kind} {o.seen}" for o in outcomes if o.seen)), counts)
        report.problems = problems
        report.samples = samples
        judge_growth(report, instances, samples)
        return report
    finally:
        if nginx is not None:
            servers.stop(nginx)
        for instance in instances:
            servers.stop(instance.process)
        if options.keep:
            print(f"  kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def judge_growth(report: Report, instances: list[Instance], samples: list) -> None:
    for instance, mine in zip(instances, samples):
        after_warmup = mine[1:]
        start, end = mine[0][1], mine[-1][1]
        report.growth[instance.url] = {m: asdict(soak_common.growth(after_warmup, m, 1000)) for m in METRICS}
        report.verdicts[instance.url] = {m: soak_common.verdict(soak_common.growth(after_warmup, m, 1000), bound)
                                         for m, bound in BOUNDS.items()}
        for folder in ("temp_files", "output_files"):
            if end[folder] != start[folder]:
                report.problems.append(f"{instance.url}: {folder} went from {start[folder]} to {end[folder]}")


def print_report(report: Report) -> None:
    print(f"soak of the self-hosted route: {report.requests} requests ({report.warmup} warm-up), "
          f"{report.instances} instance(s){' behind nginx' if report.instances == 2 else ''}, "
          f"{report.seconds:.0f} s  {report.machine}")
    print("  answers (kind status):", json.dumps(dict(sorted(report.statuses.items()))))
    print("  found by the client or UI before acting:", json.dumps(dict(sorted(report.seen.items()))))
    print("  prompts (from the servers' logs):", json.dumps(report.prompts))
    for url, metrics in report.growth.items():
        start, warm, end = (report.samples[list(report.growth).index(url)][i][1] for i in (0, 1, -1))
        print(f"  {url}:")
        for metric, spread in metrics.items():
            bound = BOUNDS.get(metric)
            judged = f", bound {bound:g}: {report.verdicts[url][metric].upper()}" if bound is not None else ""
            print(soak_common.metric_line(metric, (start[metric], warm[metric], end[metric]), spread,
                                          "1,000 requests", judged))
    soak_common.print_problems(report.problems)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI folder (with main.py)")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs ComfyUI (default: this one)")
    parser.add_argument("--requests", type=int, default=300, help="requests in all (default 300: ~5 min on 2 cores)")
    parser.add_argument("--gpu", action="store_true", help="5,000 requests, 8 clients, ComfyUI on its GPU")
    parser.add_argument("--instances", type=int, default=1, choices=(1, 2), help="2: behind nginx")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--warmup", type=int, default=40, help="requests before the warm-up sample")
    parser.add_argument("--blocks", type=int, default=10, help="samples after the warm-up (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the order of the kinds")
    parser.add_argument("--comfy-args", default="--cpu", help='ComfyUI\'s own arguments (default "--cpu")')
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--max-minutes", type=float, default=600.0,
                        help="stop after the first part that ends later than this (default 600; at least 2 parts)")
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the base directories and logs")
    options = parser.parse_args(argv)
    if options.gpu:
        options.requests, options.clients, options.comfy_args = max(options.requests, 5000), 8, ""
    return options


def main() -> int:
    options = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stops the servers it started (soak's finally)
    report = soak(options)
    print_report(report)
    if options.json:
        options.json.write_text(json.dumps(asdict(report)))
    grew = [f"{url}: {metric}" for url, verdicts in report.verdicts.items()
            for metric, outcome in verdicts.items() if outcome == method.FAIL]
    return 1 if report.problems or grew else 0


if __name__ == "__main__":
    sys.exit(main())
