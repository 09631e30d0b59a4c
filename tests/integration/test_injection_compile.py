"""Apply PuLID under core TorchCompileModel (inductor, on the CPU): the compiled run gives the eager run's latent
within TOLERANCE, the identity runs on every step, and what dynamo compiles over a 4-step run is printed and
bounded: nothing after the second step (dynamo recompiles a frame once when an int or size first changes, then
treats it as dynamic), and the pack's own frames only once per kind of block, whatever the number of steps (the
per-call plan must not make dynamo compile again on every step). Counted with dynamo's counters and guard
failures (helper_pack/sampling_probes.py), reset at the start of each prompt."""
import pytest

from tests.integration.test_injection_comfy import run_logged

STEPS = 4
# Inductor fuses and reorders float32 work: max |compiled - eager| over the latent measured
# 7.8e-5 after 4 steps of the tiny FLUX on 0.3.64.
TOLERANCE = 5e-4


def compiled_graph(graphs, steps: int) -> dict:
    """Tiny FLUX 64 px -> Apply -> (dynamo reset) -> TorchCompileModel -> KSampler, plus the same sampler without
    compile ("eager"), their latent difference and the compile counters of the compiled run."""
    g = graphs.flux([{}], size=64, steps=steps, seed=401)
    g["reset"] = {"class_type": "FaceMigrationTest_CompileReset", "inputs": {"model": ["apply_0", 0]}}
    g["compile"] = {"class_type": "TorchCompileModel", "inputs": {"model": ["reset", 0], "backend": "inductor"}}
    g["eager"] = {**g["sampler"], "inputs": {**g["sampler"]["inputs"]}}
    g["sampler"]["inputs"]["model"] = ["compile", 0]
    g["difference"] = {"class_type": "FaceMigrationTest_LatentDifference", "inputs": {
        "a": ["sampler", 0], "b": ["eager", 0]}}
    g["counters"] = {"class_type": "FaceMigrationTest_CompileCounters", "inputs": {"samples": ["sampler", 0]}}
    return g


@pytest.fixture(scope="module")
def compiled_runs(comfy, graphs):
    """steps -> (history entry, identity records of the two runs), for runs of 1, 2 and 4 steps."""
    return {steps: run_logged(comfy, compiled_graph(graphs, steps), 2)[:2] for steps in (1, 2, STEPS)}


def test_compiled_apply_equals_eager_and_runs_on_every_step(compiled_runs):
    entry, records = compiled_runs[STEPS]
    assert records == [(list(range(STEPS)), STEPS, STEPS)] * 2, records
    [difference] = entry["outputs"]["difference"]["max"]
    print(f"max |compiled - eager| over the latent after {STEPS} steps: {difference:.3g}")
    assert difference <= TOLERANCE


def test_no_compilation_per_step(compiled_runs):
    counts = {steps: entry["outputs"]["counters"]["compile"][0] for steps, (entry, _) in compiled_runs.items()}
    print(f"torch.compile: {counts}")
    assert counts[STEPS]["graphs"] == counts[2]["graphs"] > 0, counts
    assert counts[STEPS]["recompiles_ours"] == counts[2]["recompiles_ours"] == counts[1]["recompiles_ours"], counts
