"""Integration tests against real, headless ComfyUI installations: a version matrix.

Skipped unless COMFYUI_PATH names ComfyUI checkouts (folders with main.py), several separated by os.pathsep
(":" on Linux and macOS, ";" on Windows), e.g. the oldest and the newest supported. COMFYUI_PYTHON names the
Python that runs each (likewise separated; one entry serves every checkout; default: this interpreter); it
needs torch and that ComfyUI's requirements. Every integration test runs once per checkout, and its id names
the version (`[comfyui-0.33.0]`); a path that holds no ComfyUI fails the run with a message. One server per
checkout is shared by the tests; it gets a temporary --base-directory holding this pack and the test helper
pack in custom_nodes/, a tiny random FLUX in models/diffusion_models (written by tests/make_tiny_flux.py,
1.1 GB; set COMFY_TINY_FLUX to such a file to reuse it) and tiny PuLID files in models/pulid; a test
parametrised with EVERY_FAMILY adds a tiny Chroma (1.3 GB) and Chroma Radiance (2.5 GB) when it first runs
(COMFY_TINY_CHROMA and COMFY_TINY_CHROMA_RADIANCE reuse such files); the
`tiny_face` fixture adds the face models and test photos (for the rest of the session). A test that needs a
state of the shared server makes it itself, whatever ran before: `no_face_models` takes the face models away
for one test.

Other settings: COMFYUI_EXTRA_ARGS (default "--cpu"), COMFYUI_START_TIMEOUT (s, default 180),
COMFYUI_PROMPT_TIMEOUT (s, default 600).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HELPER_NAME = "face_migration_test_helpers"
TINY_FLUX_NAME = "tiny_flux.safetensors"
PULID_FILE = "tiny_pulid.safetensors"  # matches the compat tiny FLUX (2 CA modules)
PULID_MISMATCH_FILE = "tiny_pulid_5ca.safetensors"  # 5 CA modules: does not fit that FLUX

from devkit import servers  # noqa: E402
from devkit.tiny_pulid import TINY_CFG_FOR_COMPAT_FLUX, write_tiny_pulid  # noqa: E402
from face_migration.support import checkout_version  # noqa: E402

PACK_NAME = servers.PACK_NAME  # the folder name under custom_nodes/

sys.path.insert(0, str(REPO / "tests"))  # make_tiny_flux.py
from make_tiny_flux import flux_layout, write_tiny_flux  # noqa: E402


@dataclasses.dataclass(frozen=True)
class ComfyInstall:
    """One ComfyUI checkout of the matrix and the Python that runs it."""
    path: Path
    python: str
    version: str
    commit: str | None

    @property
    def id(self) -> str:
        return f"comfyui-{self.version}"


def _read_install(path: Path, python: str) -> ComfyInstall:
    version = checkout_version(path)
    if not (path / "main.py").is_file() or version is None:
        raise pytest.UsageError(f"COMFYUI_PATH entry {path} is not a ComfyUI checkout (no main.py and "
                                f"comfyui_version.py with a __version__ there); name the folder that holds "
                                f"ComfyUI's main.py")
    done = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = done.stdout.strip() if done.returncode == 0 else None
    return ComfyInstall(path.resolve(), python, version, commit)


def comfy_installs() -> list[ComfyInstall]:
    """The checkouts COMFYUI_PATH names, with their Pythons from COMFYUI_PYTHON; [] when it is unset."""
    paths = [Path(p) for p in os.environ.get("COMFYUI_PATH", "").split(os.pathsep) if p.strip()]
    pythons = [p for p in os.environ.get("COMFYUI_PYTHON", "").split(os.pathsep) if p.strip()]
    if len(pythons) > 1 and len(pythons) != len(paths):
        raise pytest.UsageError(f"COMFYUI_PYTHON names {len(pythons)} Pythons for {len(paths)} COMFYUI_PATH "
                                f"entries: give one for all, or one per checkout in the same order")
    pythons = pythons * len(paths) if len(pythons) == 1 else pythons or [sys.executable] * len(paths)
    installs = [_read_install(path, python) for path, python in zip(paths, pythons)]
    if len({install.id for install in installs}) != len(installs):
        raise pytest.UsageError("COMFYUI_PATH names two checkouts of the same ComfyUI version")
    return installs


def pytest_generate_tests(metafunc):
    """Every integration test runs once per checkout (through the autouse `comfyui` fixture)."""
    if "comfyui" in metafunc.fixturenames:
        installs = comfy_installs()
        if installs:
            metafunc.parametrize("comfyui", installs, ids=[i.id for i in installs], indirect=True, scope="session")


@pytest.fixture(scope="session", autouse=True)
def comfyui(request) -> ComfyInstall:
    """The checkout this test runs against."""
    if not hasattr(request, "param"):
        pytest.skip("integration tests need env COMFYUI_PATH set to ComfyUI checkouts (folders with main.py) "
                    "and COMFYUI_PYTHON to the Pythons that run them (README, Tests)")
    return request.param


# Tiny diffusion models per FLUX.1-family member: file name in models/diffusion_models, the environment variable
# naming a ready-made one to reuse (written by tests/make_tiny_flux.py --family ...).
TINY_MODELS = {"flux1": (TINY_FLUX_NAME, "COMFY_TINY_FLUX"),
               "chroma": ("tiny_chroma.safetensors", "COMFY_TINY_CHROMA"),
               "chroma_radiance": ("tiny_chroma_radiance.safetensors", "COMFY_TINY_CHROMA_RADIANCE")}


def _tiny_model(models: Path, family: str = "flux1") -> str:
    """Puts the tiny model of `family` into models/diffusion_models (once); returns its file name."""
    name, variable = TINY_MODELS[family]
    target = models / "diffusion_models" / name
    given = os.environ.get(variable)
    if target.exists():
        return name
    if given:
        if not Path(given).is_file():
            pytest.fail(f"{variable}={given} is not a file")
        target.symlink_to(Path(given).resolve())
    else:
        write_tiny_flux(target, layout=flux_layout(family=family))
    return name


class ComfyServer:
    """A running ComfyUI: HTTP helpers to post API-format prompts and read their history."""

    def __init__(self, url: str, base: Path, log: Path, process: subprocess.Popen):
        self.url, self.base, self.log, self.process = url, base, log, process

    def _get(self, route: str):
        with urllib.request.urlopen(self.url + route, timeout=30) as resp:
            return json.load(resp)

    def object_info(self) -> dict:
        return self._get("/object_info")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def submit(self, prompt: dict) -> str:
        """POST /prompt; a rejected prompt fails the test with ComfyUI's validation errors."""
        body = json.dumps({"prompt": prompt, "client_id": uuid.uuid4().hex}).encode()
        req = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.load(resp)["prompt_id"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"ComfyUI rejected the prompt: {exc.read().decode(errors='replace')}") from None

    def history(self, prompt: dict) -> dict:
        """Run a prompt to the end and return its /history entry (outputs, status, messages)."""
        prompt_id = self.submit(prompt)
        deadline = time.monotonic() + float(os.environ.get("COMFYUI_PROMPT_TIMEOUT", 600))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"ComfyUI died while running a prompt; log tail:\n{self.log_text()[-4000:]}")
            entry = self._get(f"/history/{prompt_id}").get(prompt_id)
            if entry and (entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
                return entry
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish in time; log tail:\n{self.log_text()[-4000:]}")

    @staticmethod
    def messages(entry: dict, kind: str) -> list[dict]:
        return [data for name, data in entry["status"].get("messages", []) if name == kind]

    def run(self, prompt: dict) -> dict:
        """Run a prompt that must succeed; returns its history entry. Fails with the server's error text."""
        entry = self.history(prompt)
        errors = self.messages(entry, "execution_error")
        if errors or entry["status"].get("status_str") != "success":
            detail = "\n".join(f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_type')}: "
                               f"{e.get('exception_message')}\n{''.join(e.get('traceback', []))[-3000:]}"
                               for e in errors)
            raise AssertionError(f"prompt failed ({entry['status'].get('status_str')}):\n{detail}")
        return entry

    def run_error(self, prompt: dict) -> dict:
        """Run a prompt that must fail at execution time; returns the execution_error message."""
        entry = self.history(prompt)
        errors = self.messages(entry, "execution_error")
        assert errors, f"expected the prompt to fail, it finished with {entry['status'].get('status_str')}"
        return errors[0]

    def stop(self) -> None:
        servers.stop(self.process)


def install_packs(base: Path) -> None:
    """A --base-directory with this pack and the test helper pack in custom_nodes/, no models."""
    servers.install_packs(base, {HELPER_NAME: Path(__file__).resolve().parent / "helper_pack"})


def start_comfy(install: ComfyInstall, base: Path, listen: str = "127.0.0.1",
                env: dict | None = None) -> ComfyServer:
    """Start the ComfyUI of `install` on `base` (see install_packs) with --listen `listen` and extra environment
    variables, and wait until it answers on 127.0.0.1; fails the test with the log tail if it does not."""
    process, url, log = servers.launch_comfyui(install.python, install.path, base, listen, env,
                                               os.environ.get("COMFYUI_EXTRA_ARGS", "--cpu"))
    server = ComfyServer(url, base, log, process)
    try:
        try:
            servers.wait_for_comfyui(url, process, log, float(os.environ.get("COMFYUI_START_TIMEOUT", 180)))
        except servers.ServerStartError as error:
            pytest.fail(str(error))
        failed = [line for line in server.log_text().splitlines()
                  if "IMPORT FAILED" in line and (PACK_NAME in line or HELPER_NAME in line)]
        if failed:
            pytest.fail("custom node import failed:\n" + "\n".join(failed) + "\n" + server.log_text()[-4000:])
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def comfy(comfyui, tmp_path_factory) -> ComfyServer:
    base = tmp_path_factory.mktemp(f"comfy_base_{comfyui.version}")
    install_packs(base)
    _tiny_model(base / "models")
    pulid = base / "models" / "pulid"
    write_tiny_pulid(pulid / PULID_FILE, TINY_CFG_FOR_COMPAT_FLUX, seed=0)
    write_tiny_pulid(pulid / PULID_MISMATCH_FILE, dataclasses.replace(TINY_CFG_FOR_COMPAT_FLUX, num_ca=5), seed=0)
    server = start_comfy(comfyui, base)
    try:
        yield server
    finally:
        server.stop()
        # The generated FLUX is 1.1 GB; pytest keeps the last temp dirs, so keep only the log.
        shutil.rmtree(base / "models", ignore_errors=True)


@pytest.fixture
def family(request, comfy) -> str:
    """The FLUX.1-family member a test samples ("flux1" unless parametrised with EVERY_FAMILY); its tiny model
    is in the server's models folder."""
    name = getattr(request, "param", "flux1")
    _tiny_model(comfy.base / "models", name)
    return name


def over_families(*families: str):
    """Parametrises a test over these FLUX.1-family members (the `family` fixture)."""
    return pytest.mark.parametrize("family", families, indirect=True)


EVERY_FAMILY = over_families(*TINY_MODELS)


@pytest.fixture(scope="module")
def another_comfy(comfyui, tmp_path_factory):
    """Starts more servers with the packs and no models (e.g. another --listen or environment):
    `another_comfy(listen="0.0.0.0", env={...})`; they stop after the test module."""
    started = []

    def start(listen: str = "127.0.0.1", env: dict | None = None) -> ComfyServer:
        base = tmp_path_factory.mktemp("another_comfy_base")
        install_packs(base)
        started.append(start_comfy(comfyui, base, listen, env))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def tiny_face(comfy):
    """Tiny face-pipeline models under their real names in the server's models folder (antelopev2, EVA-CLIP,
    facexlib, a PuLID file fitting both the tiny EVA and the tiny FLUX) and test photos in its input folder:
    see devkit/tiny_face_models.py. Returns the file names to use in prompts."""
    from devkit.tiny_face_models import install
    return install(comfy.base / "models", comfy.base / "input")


@pytest.fixture
def no_face_models(comfy):
    """A fresh install's models folder for one test, whatever ran before: the face models `tiny_face` installs
    (some under the real names a workflow asks for) are moved out of the server's models folder for the test and
    put back after it. ComfyUI lists a folder again when it changes."""
    from devkit.tiny_face_models import model_paths
    models, aside = comfy.base / "models", comfy.base / "face_models_aside"
    moved = []
    for path in model_paths(models).values():
        if path.is_file():
            kept = aside / path.relative_to(models)
            kept.parent.mkdir(parents=True, exist_ok=True)
            moved.append((path.rename(kept), path))
    try:
        yield
    finally:
        for kept, path in moved:
            kept.rename(path)


# ---------------------------------------------------------------------------------------------
# API-format graphs: tiny FLUX -> (Apply PuLID)* -> KSampler -> latent digest.

def flux_graph(applies=(), *, batch=1, cfg=1.0, steps=3, size=128, seed=42, tokens=32, family="flux1") -> dict:
    """A prompt sampling the tiny model of `family` (FLUX.1-dev unless the test's `family` fixture says
    otherwise; Chroma Radiance samples pixels: a size x size image is as many tokens as FLUX.1's latent of it).
    Each entry of `applies` adds one Apply node (chained in order): a dict of Apply inputs to override, plus
    optional keys `identity_seed`, `identity_count`, `pulid_file` and `mask` ("left" | "right" | "zero" | None:
    a region of the size x size image)."""
    guidance = 3.5 if family == "flux1" else 0.0  # Chroma's default: it samples with real CFG instead
    empty = "EmptyChromaRadianceLatentImage" if family == "chroma_radiance" else "EmptySD3LatentImage"
    g = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_MODELS[family][0],
                                                        "weight_dtype": "default"}},
        "positive": {"class_type": "FaceMigrationTest_RandomConditioning", "inputs": {
            "seed": 1, "tokens": tokens, "context_dim": 4096, "pooled_dim": 768, "guidance": guidance}},
        "negative": {"class_type": "FaceMigrationTest_RandomConditioning", "inputs": {
            "seed": 2, "tokens": tokens, "context_dim": 4096, "pooled_dim": 768, "guidance": guidance}},
        "latent": {"class_type": empty, "inputs": {"width": size, "height": size, "batch_size": batch}},
    }
    model = ["unet", 0]
    for i, spec in enumerate(applies):
        spec = dict(spec)
        pulid_file = spec.pop("pulid_file", PULID_FILE)
        loader = "pulid_loader_" + pulid_file.split(".")[0]
        g[loader] = {"class_type": "FaceMigration_PulidModelLoader", "inputs": {"pulid_file": pulid_file}}
        identity = f"identity_{i}"
        g[identity] = {"class_type": "FaceMigrationTest_RandomPulidId", "inputs": {
            "pulid_model": [loader, 0], "seed": spec.pop("identity_seed", 7), "count": spec.pop("identity_count", 1)}}
        inputs = {"model": model, "pulid_model": [loader, 0], "pulid_id": [identity, 0], "weight": 1.0,
                  "timing": "steps", "start_step": 0, "end_step": 10000, "start_percent": 0.0,
                  "end_percent": 1.0, "uncond_id": "uncond ID"}
        mask = spec.pop("mask", None)
        if mask is not None:
            inputs["mask"] = [_add_mask(g, f"mask_{i}", mask, size), 0]
        inputs.update(spec)
        g[f"apply_{i}"] = {"class_type": "FaceMigration_ApplyPulid", "inputs": inputs}
        model = [f"apply_{i}", 0]
    g["sampler"] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": ["positive", 0], "negative": ["negative", 0], "latent_image": ["latent", 0],
        "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
    g["digest"] = {"class_type": "FaceMigrationTest_LatentDigest", "inputs": {"samples": ["sampler", 0]}}
    return g


def _add_mask(g: dict, name: str, region: str, size: int) -> str:
    """Core SolidMask + MaskComposite: ones on the left or right half of the image, or all zeros."""
    g[f"{name}_canvas"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": size, "height": size}}
    if region == "zero":
        return f"{name}_canvas"
    g[f"{name}_half"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": size // 2, "height": size}}
    g[name] = {"class_type": "MaskComposite", "inputs": {
        "destination": [f"{name}_canvas", 0], "source": [f"{name}_half", 0],
        "x": 0 if region == "left" else size // 2, "y": 0, "operation": "add"}}
    return name


def digest(entry: dict) -> dict:
    """The latent digest (sha256, shape, mean, std) of a flux_graph run."""
    return entry["outputs"]["digest"]["latent_digest"][0]


def executed(entry: dict, node_id: str) -> bool:
    """Whether a node really ran in this prompt (rather than coming from ComfyUI's cache)."""
    cached = {n for m in ComfyServer.messages(entry, "execution_cached") for n in m["nodes"]}
    return node_id not in cached


@pytest.fixture(scope="session")
def graphs():
    """The graph helpers, for test modules (conftest.py cannot be imported by them)."""
    class Graphs:
        flux = staticmethod(flux_graph)
        digest = staticmethod(digest)
        executed = staticmethod(executed)
        PULID_MISMATCH_FILE = globals()["PULID_MISMATCH_FILE"]
        PACK_NAME = globals()["PACK_NAME"]
    return Graphs
