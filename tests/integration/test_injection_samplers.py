"""Which model calls get the identity under ComfyUI's own samplers, for a start_step and an end_step: the
second-order ones call their callback after a step's first model evaluation and evaluate the corrector after
it (heun at the next step's sigma, dpm_2 between the two, dpm_2_ancestral at the next step's sigma give or take
rounding); euler is the control. And what the log says when a core cache computes none of the window's steps.

Each model call is seen by a probe patch chained after Apply on single block 0 (helper_pack/injection_probes.py):
it logs, in call order, how many image tokens the identity changed. The run record gives the steps and the
number of model calls the identity ran in."""
import time

import pytest

from tests.integration.test_injection_comfy import base, insert_after_apply, run_logged

STEPS = 4
# Model calls with CFG 1, in order: each step's first evaluation, and its corrector on every step but the last
# (to sigma 0). Per sampler: (the calls' steps).
CALL_STEPS = {
    "euler": [0, 1, 2, 3],
    "heun": [0, 0, 1, 1, 2, 2, 3],
    "dpm_2": [0, 0, 1, 1, 2, 2, 3],
    "dpm_2_ancestral": [0, 0, 1, 1, 2, 2, 3],
}
WINDOWS = {"start_step 2": ({"start_step": 2}, range(2, STEPS)), "end_step 2": ({"end_step": 2}, range(0, 2))}


@pytest.mark.parametrize("window", sorted(WINDOWS))
@pytest.mark.parametrize("sampler", sorted(CALL_STEPS))
def test_each_model_call_gets_the_identity_of_the_step_the_sampler_is_in(comfy, graphs, sampler, window):
    apply, steps = WINDOWS[window]
    g = base(graphs, apply, seed=120, steps=STEPS)
    g["sampler"]["inputs"]["sampler_name"] = sampler
    insert_after_apply(g, "probe", {"class_type": "FaceMigrationTest_DitPatch", "inputs": {
        "block": "single_block", "index": 0, "mode": "probe", "scale": 1.0}})
    _, [(active_steps, total, calls)], probes = run_logged(comfy, g, 1)
    with_identity = [changed > 0 for _, _, changed, _, _ in probes]
    expected = [step in steps for step in CALL_STEPS[sampler]]
    print(f"{sampler}, {window}: identity on calls {with_identity}")
    assert with_identity == expected
    assert (active_steps, total, calls) == (list(steps), STEPS, sum(expected))


@pytest.mark.parametrize("cache, said", [
    # EasyCache skips the model inside Apply's call wrapper: planned, never run
    ("EasyCache", "never reached a FLUX block in this sampling run of 4 steps, though it was planned for 2 model "
                  "calls: FLUX's blocks were computed on steps [0, 1] only"),
    # LazyCache answers the sampler before the model is called: never planned
    ("LazyCache", "never active in this sampling run of 4 steps: the sampler ran steps [2, 3] of this Apply's "
                  "window without calling FLUX")])
def test_a_cache_that_computes_none_of_the_windows_steps_is_named_with_its_settings(comfy, graphs, cache, said):
    """reuse_threshold 3 (the most these caches take) from the start: the cache computes steps 0 and 1 only, and
    the window is steps 2-3. The warnings used to say to move Apply after another node, or to lower start_step."""
    g = base(graphs, {"start_step": 2}, seed=130, steps=STEPS)
    insert_after_apply(g, "cache", {"class_type": cache, "inputs": {
        "reuse_threshold": 3.0, "start_percent": 0.0, "end_percent": 1.0, "verbose": False}})
    start = len(comfy.log_text())
    comfy.run(g)
    deadline = time.monotonic() + 10
    while "PuLID Apply 1" not in comfy.log_text()[start:] and time.monotonic() < deadline:
        time.sleep(0.2)
    [warning] = [line for line in comfy.log_text()[start:].splitlines() if "PuLID Apply 1" in line]
    print(warning)
    assert said in warning and "reuse_threshold" in warning and "start_percent" in warning
