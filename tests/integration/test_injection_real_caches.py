"""Apply beside the real TeaCache pack (welltop-cn/ComfyUI-TeaCache), whose own FLUX forward calls the
block patches without transformer_options: the identity must reach the blocks on the steps TeaCache computes,
and the log must list those steps. Opt-in: set TEACACHE_PATH to a checkout of that pack (it is not on PyPI);
the behaviour itself is tested without it by tests/test_injection.py's stand-ins."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.integration.conftest import PULID_FILE, TINY_FLUX_NAME, install_packs, start_comfy

TEACACHE = os.environ.get("TEACACHE_PATH")
ACTIVE = re.compile(r"identity active on steps \[([\d, ]*)\] of this run's (\d+) steps")


@pytest.fixture(scope="module")
def teacache_comfy(comfy, comfyui, tmp_path_factory):
    """A ComfyUI with this pack, the test helpers and TeaCache, sharing the session server's tiny models."""
    if not TEACACHE:
        pytest.skip("set TEACACHE_PATH to a checkout of welltop-cn/ComfyUI-TeaCache to run Apply beside it")
    base = tmp_path_factory.mktemp("teacache_base")
    install_packs(base)
    (base / "custom_nodes" / "ComfyUI-TeaCache").symlink_to(Path(TEACACHE).resolve())
    for folder, name in (("diffusion_models", TINY_FLUX_NAME), ("pulid", PULID_FILE)):
        (base / "models" / folder / name).symlink_to((comfy.base / "models" / folder / name).resolve())
    server = start_comfy(comfyui, base)
    try:
        if "TeaCache" not in server.object_info():  # e.g. on 0.33 TeaCache imports a function core removed
            reason = next((line.strip() for line in server.log_text().splitlines()
                           if line.strip().startswith(("ImportError", "ModuleNotFoundError"))), "see the log")
            pytest.skip(f"TeaCache from {TEACACHE} does not load in ComfyUI {comfyui.version}: {reason} (if it "
                        f"names a missing module, install TeaCache's requirements.txt into {comfyui.python})")
        yield server
    finally:
        server.stop()


def with_teacache(graph: dict, threshold: float) -> dict:
    graph["teacache"] = {"class_type": "TeaCache", "inputs": {
        "model": list(graph["sampler"]["inputs"]["model"]), "model_type": "flux", "rel_l1_thresh": threshold,
        "start_percent": 0.0, "end_percent": 1.0, "cache_device": "cpu"}}
    graph["sampler"]["inputs"]["model"] = ["teacache", 0]
    return graph


@pytest.mark.parametrize("threshold", [0.4, 1.0])
def test_the_identity_runs_on_the_steps_teacache_computes(teacache_comfy, graphs, threshold):
    plain = teacache_comfy.history(with_teacache(graphs.flux(steps=4), threshold))
    failed = teacache_comfy.messages(plain, "execution_error")
    if failed:
        pytest.skip(f"TeaCache fails on this ComfyUI without Apply: {failed[0].get('exception_message')}")
    start = len(teacache_comfy.log_text())
    applied = teacache_comfy.run(with_teacache(graphs.flux([{}], steps=4), threshold))
    log = teacache_comfy.log_text()[start:]
    assert graphs.digest(applied)["sha256"] != graphs.digest(plain)["sha256"], "the identity vanished"
    assert "never reached a FLUX block" not in log
    found = ACTIVE.search(log)
    assert found, log[-3000:]
    steps = [int(s) for s in found[1].split(",") if s.strip()]
    print(f"TeaCache {threshold}: identity on steps {steps} of {found[2]}")
    assert steps and set(steps) <= set(range(4)) and steps[0] == 0  # the first step is always computed
