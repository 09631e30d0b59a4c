"""The injection engine in a real ComfyUI: which steps get the identity under every way of running a sampler,
and Apply next to what users combine it with (caches, other packs' block patches, LoRA, fp8 FLUX, Kontext
reference latents, batches with CFG).

Which steps got the identity is read from the record the pack logs at the end of each sampling run
("identity active on steps [...] of this run's N steps (M model calls)"); which tokens and batch rows it
changed is read from a probe patch (helper_pack/injection_probes.py) chained after Apply."""
import re
import time

import pytest
import torch
from safetensors.torch import save_file

from tests.integration.conftest import EVERY_FAMILY, over_families

SIZE = 64  # 8 x 8 latent: 4 x 4 = 16 image tokens (Chroma Radiance: 64 x 64 pixels in 16-pixel patches, as many)
TEXT_TOKENS = 32
IMAGE_TOKENS = 16
ACTIVE = re.compile(r"PuLID Apply (\d+) \(.*?\): identity active on steps \[([\d, ]*)\] of this run's (\d+) steps "
                    r"\((\d+) model calls, \d+ blocks\)(?:; on steps \[([\d, ]*)\] only some of its blocks ran)?")
NEVER = re.compile(r"PuLID Apply (\d+) \(.*?\): the identity (?:was never active|never reached a FLUX block) in this "
                   r"sampling run of (\d+) steps")
PROBE = re.compile(r"FaceMigrationTest probe (\w+ \d+): tokens (\d+), changed (\d+) in span \[([\d, ]*)\], "
                   r"rows changed \[([\d, ]*)\]")


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def run_logged(comfy, graph, runs: int) -> tuple[dict, list[tuple], list[tuple]]:
    """Run a prompt; returns its history entry, the per-run identity records (steps on which every PuLID
    block ran, run length, model calls in which some ran, and the steps with only some blocks when there are
    any; steps [] and calls 0 when never active) and the probe records, in log order."""
    start = len(comfy.log_text())
    entry = comfy.run(graph)
    deadline = time.monotonic() + 10
    while True:
        log = comfy.log_text()[start:]
        records = []
        for line in log.splitlines():
            if m := ACTIVE.search(line):
                records.append((ints(m[2]), int(m[3]), int(m[4])) + ((ints(m[5]),) if m[5] else ()))
            elif m := NEVER.search(line):
                records.append(([], int(m[2]), 0))
        if len(records) >= runs or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    probes = [(m[1], int(m[2]), int(m[3]), ints(m[4]), ints(m[5])) for m in PROBE.finditer(log)]
    assert len(records) == runs, f"expected {runs} sampling-run records, log:\n{log[-3000:]}"
    return entry, records, probes


def base(graphs, apply=None, seed=42, **kwargs):
    """Tiny FLUX at SIZE, one Apply (inputs from `apply`) or none."""
    return graphs.flux([] if apply is None else [apply], size=SIZE, seed=seed, **kwargs)


def model_out(g: dict) -> list:
    return list(g["sampler"]["inputs"]["model"])


def custom_sampler(g: dict, name: str, sigmas: list, sampler: list, latent: list, add_noise=True) -> str:
    g[name] = {"class_type": "SamplerCustom", "inputs": {
        "model": model_out(g), "add_noise": add_noise, "noise_seed": 42, "cfg": 1.0, "positive": ["positive", 0],
        "negative": ["negative", 0], "sampler": sampler, "sigmas": sigmas, "latent_image": latent}}
    return name


def scheduler(g: dict, steps: int) -> list:
    g["scheduler"] = {"class_type": "BasicScheduler", "inputs": {
        "model": model_out(g), "scheduler": "simple", "steps": steps, "denoise": 1.0}}
    return ["scheduler", 0]


def insert_after_apply(g: dict, name: str, node: dict) -> None:
    """Put a MODEL -> MODEL node between the last Apply (or the loader) and the sampler."""
    node["inputs"]["model"] = model_out(g)
    g[name] = node
    g["sampler"]["inputs"]["model"] = [name, 0]


# --- what start_step counts ----------------------------------------------------------------------------------

def test_ksampler_counts_the_runs_steps_and_a_linked_start_step_is_accepted(comfy, graphs):
    """start_step comes from a primitive node: validate_inputs gets None for it and must not reject the prompt."""
    g = base(graphs, {}, seed=101, steps=4)
    g["start"] = {"class_type": "PrimitiveInt", "inputs": {"value": 1}}
    g["apply_0"]["inputs"]["start_step"] = ["start", 0]
    _, records, _ = run_logged(comfy, g, 1)
    assert records == [([1, 2, 3], 4, 3)]


def test_ksampler_advanced_counts_from_its_start_at_step(comfy, graphs):
    """start_at_step 2 of 6 (end 5): the sampler is given sigmas 2..5, a run of 3 steps; start_step 1 is its
    second step (step 3 of the full schedule)."""
    g = base(graphs, {"start_step": 1}, seed=102)
    g["sampler"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": model_out(g), "add_noise": "enable", "noise_seed": 42, "steps": 6, "cfg": 1.0,
        "sampler_name": "euler", "scheduler": "simple", "positive": ["positive", 0], "negative": ["negative", 0],
        "latent_image": ["latent", 0], "start_at_step": 2, "end_at_step": 5, "return_with_leftover_noise": "disable"}}
    _, records, _ = run_logged(comfy, g, 1)
    assert records == [([1, 2], 3, 2)]


def test_denoise_below_one_counts_the_steps_it_runs(comfy, graphs):
    g = base(graphs, {"start_step": 1}, seed=103, steps=4)
    g["sampler"]["inputs"]["denoise"] = 0.5
    _, records, _ = run_logged(comfy, g, 1)
    assert records == [([1, 2, 3], 4, 3)]


def split_graph(graphs, apply: dict, seed: int) -> dict:
    """BasicScheduler 6 steps -> SplitSigmas at 3 -> two SamplerCustom runs of 3 steps each."""
    g = base(graphs, apply, seed=seed)
    sigmas = scheduler(g, 6)
    g["split"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": sigmas, "step": 3}}
    g["select"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    first = custom_sampler(g, "high", ["split", 0], ["select", 0], ["latent", 0])
    custom_sampler(g, "low", ["split", 1], ["select", 0], [first, 0], add_noise=False)
    g["digest"]["inputs"]["samples"] = ["low", 0]
    del g["sampler"]
    return g


def test_split_sigmas_steps_count_per_run_and_percent_follows_the_schedule(comfy, graphs):
    """Steps mode counts the steps of each sampler's own run; percent mode is tied to sigma, so two split runs
    get the identity exactly where one unsplit run of the same schedule gets it."""
    _, records, _ = run_logged(comfy, split_graph(graphs, {"start_step": 1}, 104), 2)
    assert records == [([1, 2], 3, 2), ([1, 2], 3, 2)]

    window = {"timing": "percent", "start_percent": 0.3, "end_percent": 0.8}
    _, split_records, _ = run_logged(comfy, split_graph(graphs, window, 105), 2)
    whole = base(graphs, window, seed=105)
    sigmas = scheduler(whole, 6)
    whole["select"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    custom_sampler(whole, "one_run", sigmas, ["select", 0], ["latent", 0])
    whole["digest"]["inputs"]["samples"] = ["one_run", 0]
    del whole["sampler"]
    _, [(one_run, _, _)], _ = run_logged(comfy, whole, 1)
    assert 0 < len(one_run) < 6, f"the percent window should cover some steps, got {one_run}"
    (high, _, _), (low, _, _) = split_records
    assert sorted(high + [3 + s for s in low]) == one_run


def test_a_sampler_that_revisits_steps_gets_the_identity_on_each_visit(comfy, graphs):
    """The model is called at sigmas 0, 1, then again 1, 2, 3: step 1 is visited twice; start_step 1 gives
    the identity on 4 of the 5 calls."""
    g = base(graphs, {"start_step": 1}, seed=106)
    g["revisit"] = {"class_type": "FaceMigrationTest_RevisitSampler", "inputs": {}}
    custom_sampler(g, "custom", scheduler(g, 4), ["revisit", 0], ["latent", 0])
    g["digest"]["inputs"]["samples"] = ["custom", 0]
    del g["sampler"]
    _, records, _ = run_logged(comfy, g, 1)
    assert records == [([1, 2, 3], 4, 4)]


@over_families("chroma")
def test_step_and_percent_windows_with_chromas_model_sampling(comfy, graphs, family):
    """Steps 1-3 of 4 on Chroma; a percent window becomes sigmas through Chroma's own model sampling and covers
    a run of whole steps, giving exactly what the step window of those steps gives."""
    _, records, _ = run_logged(comfy, base(graphs, {"start_step": 1, "end_step": 3}, seed=117, steps=4,
                                           family=family), 1)
    assert records == [([1, 2], 4, 2)]
    window = {"timing": "percent", "start_percent": 0.3, "end_percent": 0.8}
    entry, [(steps, total, _)], _ = run_logged(comfy, base(graphs, window, seed=117, steps=4, family=family), 1)
    assert total == 4 and 0 < len(steps) < 4 and steps == list(range(steps[0], steps[-1] + 1)), steps
    as_steps = base(graphs, {"start_step": steps[0], "end_step": steps[-1] + 1}, seed=117, steps=4, family=family)
    assert graphs.digest(comfy.run(as_steps))["sha256"] == graphs.digest(entry)["sha256"]


def test_a_start_step_past_the_last_step_warns(comfy, graphs):
    _, records, _ = run_logged(comfy, base(graphs, {"start_step": 7}, seed=107, steps=3), 1)
    assert records == [([], 3, 0)]


# --- next to other nodes ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain(comfy, graphs):
    return graphs.digest(comfy.run(base(graphs, seed=108, steps=4)))["sha256"]


def sha(comfy, graphs, g, runs=1):
    entry, records, probes = run_logged(comfy, g, runs)
    return graphs.digest(entry)["sha256"], records, probes


@pytest.mark.parametrize("cache", ["EasyCache", "LazyCache"])
def test_comfyui_caches_keep_the_identity_and_leave_the_plain_graph_alone(comfy, graphs, plain, cache):
    settings = {"reuse_threshold": 0.2, "start_percent": 0.15, "end_percent": 0.95, "verbose": False}
    cached_only = base(graphs, seed=108, steps=4)
    insert_after_apply(cached_only, "cache", {"class_type": cache, "inputs": dict(settings)})
    without_id = graphs.digest(comfy.run(cached_only))["sha256"]
    with_id = base(graphs, {}, seed=108, steps=4)
    insert_after_apply(with_id, "cache", {"class_type": cache, "inputs": dict(settings)})
    digest, [(steps, total, calls)], _ = sha(comfy, graphs, with_id)
    assert digest != without_id
    assert 0 in steps and total == 4 and 1 <= calls <= 4  # step 0 is before the cache starts: always computed
    again = comfy.run(base(graphs, seed=108, steps=4))
    assert graphs.executed(again, "sampler") and graphs.digest(again)["sha256"] == plain


def test_a_foreign_patch_installed_before_apply_is_chained(comfy, graphs):
    """The other pack's patch (it scales the block output) still runs under PuLID, and PuLID still adds."""
    def graph(foreign, apply):
        g = base(graphs, {} if apply else None, seed=109, steps=3)
        if foreign:
            g["foreign"] = {"class_type": "FaceMigrationTest_DitPatch", "inputs": {
                "model": ["unet", 0], "block": "double_block", "index": 0, "mode": "replace", "scale": 0.99}}
            (g["apply_0"]["inputs"] if apply else g["sampler"]["inputs"])["model"] = ["foreign", 0]
        return g
    foreign_only = graphs.digest(comfy.run(graph(True, False)))["sha256"]
    apply_only = graphs.digest(comfy.run(graph(False, True)))["sha256"]
    both = graphs.digest(comfy.run(graph(True, True)))["sha256"]
    assert len({foreign_only, apply_only, both}) == 3


def test_a_foreign_patch_after_apply_that_drops_ours_leaves_the_single_blocks_working(comfy, graphs):
    """An unchained patch replaces PuLID's on double block 0: the single blocks still find the image tokens
    (the text length then comes from the call's context), and the log says that only some blocks ran."""
    apply_only = base(graphs, {}, seed=110, steps=3)
    apply_digest = graphs.digest(comfy.run(apply_only))["sha256"]
    g = base(graphs, {}, seed=110, steps=3)
    insert_after_apply(g, "foreign", {"class_type": "FaceMigrationTest_DitPatch", "inputs": {
        "block": "double_block", "index": 0, "mode": "replace", "scale": 1.0}})
    insert_after_apply(g, "probe", {"class_type": "FaceMigrationTest_DitPatch", "inputs": {
        "block": "single_block", "index": 0, "mode": "probe", "scale": 1.0}})
    digest, records, probes = sha(comfy, graphs, g)
    assert records == [([], 3, 3, [0, 1, 2])] and digest != apply_digest
    assert probes and all(p[0] == "single_block 0" and p[3] == [TEXT_TOKENS, TEXT_TOKENS + IMAGE_TOKENS]
                          and p[2] == IMAGE_TOKENS for p in probes)


def test_kontext_reference_tokens_are_never_touched(comfy, graphs):
    """A ReferenceLatent (32 x 64 px: 2 x 4 = 8 tokens) appended after the image: the probes after Apply see
    only the generated image's tokens changed, in both kinds of block."""
    g = base(graphs, {}, seed=111, steps=2)
    g["reference"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 32, "batch_size": 1}}
    g["with_reference"] = {"class_type": "ReferenceLatent", "inputs": {
        "conditioning": ["positive", 0], "latent": ["reference", 0]}}
    g["sampler"]["inputs"]["positive"] = ["with_reference", 0]
    for block in ("double_block", "single_block"):
        insert_after_apply(g, f"probe_{block}", {"class_type": "FaceMigrationTest_DitPatch", "inputs": {
            "block": block, "index": 0, "mode": "probe", "scale": 1.0}})
    _, _, probes = sha(comfy, graphs, g)
    double = [p for p in probes if p[0] == "double_block 0"]
    single = [p for p in probes if p[0] == "single_block 0"]
    assert double and single
    assert all(p[1] == IMAGE_TOKENS + 8 and p[3] == [0, IMAGE_TOKENS] and p[2] == IMAGE_TOKENS for p in double)
    assert all(p[1] == TEXT_TOKENS + IMAGE_TOKENS + 8 and p[3] == [TEXT_TOKENS, TEXT_TOKENS + IMAGE_TOKENS]
               and p[2] == IMAGE_TOKENS for p in single)


@EVERY_FAMILY
def test_the_identity_changes_only_the_image_tokens(comfy, graphs, family):
    """Probes after Apply on double block 0 and single block 0: on Chroma and Chroma Radiance as on FLUX.1, the
    identity changes all 16 image tokens and no text token (single blocks hold [text, image])."""
    g = base(graphs, {}, seed=116, steps=1, family=family)
    for block in ("double_block", "single_block"):
        insert_after_apply(g, f"probe_{block}", {"class_type": "FaceMigrationTest_DitPatch", "inputs": {
            "block": block, "index": 0, "mode": "probe", "scale": 1.0}})
    _, [(steps, _, _)], probes = sha(comfy, graphs, g)
    assert steps == [0]
    double = [p for p in probes if p[0] == "double_block 0"]
    single = [p for p in probes if p[0] == "single_block 0"]
    assert double and single
    assert all(p[1:4] == (IMAGE_TOKENS, IMAGE_TOKENS, [0, IMAGE_TOKENS]) for p in double), double
    assert all(p[1:4] == (TEXT_TOKENS + IMAGE_TOKENS, IMAGE_TOKENS, [TEXT_TOKENS, TEXT_TOKENS + IMAGE_TOKENS])
               for p in single), single


@over_families("flux1", "chroma")
@pytest.mark.parametrize("uncond_id, rows", [("uncond ID", 4), ("no ID", 2)])
def test_batch_of_two_with_cfg_changes_the_expected_rows(comfy, graphs, uncond_id, rows, family):
    """Batch 2, CFG 2 with a negative prompt: one model call holds 2 negative + 2 positive rows; 'uncond ID'
    changes the negative ones too (with the encoder's empty identity), 'no ID' leaves them."""
    g = graphs.flux([{"uncond_id": uncond_id}], batch=2, cfg=2.0, size=SIZE, seed=112, steps=2, family=family)
    insert_after_apply(g, "probe", {"class_type": "FaceMigrationTest_DitPatch", "inputs": {
        "block": "single_block", "index": 0, "mode": "probe", "scale": 1.0}})
    _, [(steps, _, _)], probes = sha(comfy, graphs, g)
    assert steps == [0, 1]
    assert probes and {len(p[4]) for p in probes} == {rows}, probes


def write_tiny_lora(path):
    """A rank-4 LoRA on the tiny FLUX's first double block (hidden 3072), in ComfyUI's generic key format."""
    g = torch.Generator().manual_seed(0)
    key = "diffusion_model.double_blocks.0.img_attn.qkv"
    save_file({f"{key}.lora_up.weight": torch.randn(3 * 3072, 4, generator=g) * 0.05,
               f"{key}.lora_down.weight": torch.randn(4, 3072, generator=g) * 0.05}, str(path))


def test_lora_and_apply_commute(comfy, graphs):
    loras = comfy.base / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    write_tiny_lora(loras / "tiny_flux_lora.safetensors")

    def lora_node(model=None):
        return {"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": model, "lora_name": "tiny_flux_lora.safetensors", "strength_model": 1.0}}
    lora_then_apply = base(graphs, {}, seed=113, steps=2)
    lora_then_apply["lora"] = lora_node(["unet", 0])
    lora_then_apply["apply_0"]["inputs"]["model"] = ["lora", 0]
    apply_then_lora = base(graphs, {}, seed=113, steps=2)
    insert_after_apply(apply_then_lora, "lora", lora_node())
    lora_only = base(graphs, seed=113, steps=2)
    insert_after_apply(lora_only, "lora", lora_node())
    first, second = (graphs.digest(comfy.run(g))["sha256"] for g in (lora_then_apply, apply_then_lora))
    assert first == second
    assert len({first, graphs.digest(comfy.run(lora_only))["sha256"],
                graphs.digest(comfy.run(base(graphs, {}, seed=113, steps=2)))["sha256"]}) == 3


def test_fp8_weight_flux_on_the_cpu(comfy, graphs):
    def fp8(g):
        g["unet"]["inputs"]["weight_dtype"] = "fp8_e4m3fn"
        return g
    plain_fp8 = graphs.digest(comfy.run(fp8(base(graphs, seed=114, steps=2))))["sha256"]
    digest, [(steps, _, _)], _ = sha(comfy, graphs, fp8(base(graphs, {}, seed=114, steps=2)))  # NaN would fail
    assert steps == [0, 1] and digest != plain_fp8


def test_only_the_cross_attention_modules_load_with_flux(comfy, graphs):
    """What ComfyUI loads beside FLUX for the patches is the CA modules alone, not the IDFormer (it used to be
    the whole PuLID model)."""
    g = base(graphs, {}, seed=115, steps=1)
    g["patch_models"] = {"class_type": "FaceMigrationTest_PatchModels", "inputs": {"model": ["apply_0", 0]}}
    found = comfy.run(g)["outputs"]["patch_models"]["patch_models"]
    assert [(m["module"], m["children"]) for m in found] == [("ModuleList", ["PerceiverAttention"])], found
