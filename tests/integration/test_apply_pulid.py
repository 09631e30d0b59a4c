"""The PuLID loader and Apply node in a real ComfyUI: UNETLoader (tiny FLUX.1-dev, and for the tests over
families also tiny Chroma and Chroma Radiance) -> Apply -> KSampler. A Chroma model call costs about 180 GFLOP
per batch row whatever the image size (its modulation approximator), Radiance's more: tests that check nothing
Radiance does differently from Chroma (model sampling, CFG rows) leave it out."""
import pytest

from tests.integration.conftest import EVERY_FAMILY, over_families

LOADER = "FaceMigration_PulidModelLoader"
APPLY = "FaceMigration_ApplyPulid"
SIMPLE = "FaceMigration_ApplyPulidSimple"
APPLY_INPUTS = {"model", "pulid_model", "pulid_id", "weight", "timing", "start_step", "end_step",
                "start_percent", "end_percent", "uncond_id", "mask"}


@pytest.fixture(scope="module")
def plain(comfy, graphs):
    """plain(family): digest of the graph without Apply (batch 1, cfg 1, 3 steps) on that family's tiny model,
    the reference for 'no identity' (run once per family)."""
    found = {}

    def digest(family: str = "flux1") -> dict:
        if family not in found:
            found[family] = graphs.digest(comfy.run(graphs.flux(family=family)))
        return found[family]
    return digest


def test_pack_imports_and_every_node_input_and_output_has_a_tooltip(comfy, graphs):
    log = comfy.log_text()
    assert "IMPORT FAILED" not in "\n".join(l for l in log.splitlines() if graphs.PACK_NAME in l)
    info = comfy.object_info()
    ours = {k: v for k, v in info.items() if v.get("python_module", "").startswith(f"custom_nodes.{graphs.PACK_NAME}")}
    assert {LOADER, APPLY, SIMPLE} <= set(ours), f"pack nodes in /object_info: {sorted(ours)}"
    assert all(k.startswith("FaceMigration_") for k in ours)
    apply_inputs = info[APPLY]["input"]
    assert set(apply_inputs["required"]) | set(apply_inputs.get("optional", {})) == APPLY_INPUTS
    assert info[APPLY]["output"] == ["MODEL"]
    simple_inputs = info[SIMPLE]["input"]
    assert list(simple_inputs["required"]) == ["model", "pulid_model", "pulid_id", "weight", "start_step"]
    assert list(simple_inputs["optional"]) == ["mask"]
    assert (info[SIMPLE]["display_name"], info[APPLY]["display_name"]) == \
        ("Apply PuLID-FLUX", "Apply PuLID-FLUX (Advanced)")
    assert info[LOADER]["output"] == ["FACE_MIGRATION_PULID_MODEL"]
    missing = []
    for node_id, node in ours.items():
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                if len(spec) < 2 or not spec[1].get("tooltip"):
                    missing.append(f"{node_id}.{name}")
        tips = node.get("output_tooltips") or []
        if len(tips) != len(node["output"]) or not all(tips):
            missing.append(f"{node_id} outputs")
    assert not missing, f"inputs/outputs without a tooltip: {missing}"


def test_loader_lists_the_pulid_folder(comfy, graphs):
    options = comfy.object_info()[LOADER]["input"]["required"]["pulid_file"]
    choices = options[0] if isinstance(options[0], list) else options[1]["options"]
    assert {"tiny_pulid.safetensors", graphs.PULID_MISMATCH_FILE} <= set(choices)


@EVERY_FAMILY
def test_apply_changes_the_image_and_leaves_the_input_model_untouched(comfy, graphs, plain, family):
    reference = plain(family)["sha256"]  # sampled before any Apply on this model
    with_id = comfy.run(graphs.flux([{}], family=family))
    assert graphs.digest(with_id)["sha256"] != reference
    assert graphs.digest(with_id)["shape"] == ([1, 3, 128, 128] if family == "chroma_radiance" else [1, 16, 16, 16])
    after = comfy.run(graphs.flux(family=family))
    assert graphs.executed(after, "sampler"), "the plain KSampler came from the cache; nothing was re-sampled"
    assert graphs.digest(after)["sha256"] == reference, "sampling without Apply changed after a run with Apply"


@pytest.mark.parametrize("change", [{"weight": 0.0}, {"start_step": 5}, {"mask": "zero"}],
                         ids=["weight0", "start_after_last_step", "empty_mask"])
def test_apply_that_does_nothing_gives_the_plain_latent(comfy, graphs, plain, change):
    assert graphs.digest(comfy.run(graphs.flux([change])))["sha256"] == plain()["sha256"]


@over_families("flux1", "chroma")
def test_percent_mode(comfy, graphs, plain, family):
    """Percents become sigmas through the family's own model sampling (Chroma's differs from FLUX.1's)."""
    full_steps = graphs.digest(comfy.run(graphs.flux([{}], family=family)))["sha256"]
    full_percent = graphs.digest(comfy.run(graphs.flux([{"timing": "percent"}], family=family)))["sha256"]
    assert full_percent == full_steps, "percent 0..1 must inject on every step, as steps 0..end"
    first_half = graphs.digest(comfy.run(graphs.flux([{"timing": "percent", "end_percent": 0.5}],
                                                     family=family)))["sha256"]
    assert first_half not in (plain(family)["sha256"], full_steps)


# A masked identity's change is this many times larger in its half of the latent than in the other half
# (attention carries some of it across; measured on the tiny FLUX, 0.3.64: about 4 to 5x).
OWN_HALF_RATIO = 3.0
# Rows that got the same identity and noise in two batches differ by at most this fraction of a changed row.
SAME_ROW = 1e-4


def with_differences(graphs, g: dict, pairs: dict) -> dict:
    """Adds a sampler copy per entry of `pairs` (name -> MODEL of the copy, e.g. ["unet", 0] for no Apply) and
    a LatentDifference of each against the graph's own sampler (output node `name` + "_vs")."""
    for name, model in pairs.items():
        g[name] = {**g["sampler"], "inputs": {**g["sampler"]["inputs"], "model": model}}
        g[f"{name}_vs"] = {"class_type": "FaceMigrationTest_LatentDifference", "inputs": {
            "a": ["sampler", 0], "b": [name, 0]}}
    return g


def differences(entry: dict, name: str) -> list[list[float]]:
    """Per batch row, [left half, right half] mean absolute difference (see with_differences)."""
    return entry["outputs"][f"{name}_vs"]["latent_difference"]


def in_own_half(row: list[float], half: str) -> bool:
    own, other = row if half == "left" else row[::-1]
    return own > OWN_HALF_RATIO * other


@EVERY_FAMILY
def test_two_identities_with_left_and_right_masks(comfy, graphs, family):
    """Each masked identity changes its half of the latent (Radiance: of the image) against the same graph
    without Apply; together, each half changes as with its own identity alone. Fails when the mask is laid on
    the tokens in another order (flipped, transposed) or on another token grid."""
    left = {"identity_seed": 11, "mask": "left"}
    right = {"identity_seed": 22, "mask": "right"}
    found = {}
    for name, applies in {"left": [left], "right": [right], "both": [left, right]}.items():
        g = with_differences(graphs, graphs.flux(applies, family=family), {"plain": ["unet", 0]})
        [found[name]] = differences(comfy.run(g), "plain")
    assert in_own_half(found["left"], "left") and in_own_half(found["right"], "right"), found
    for half, alone in ((0, found["left"]), (1, found["right"])):
        assert found["both"][half] > 0.5 * alone[half], found


def two_image_mask(graphs, g: dict) -> list:
    """A [2, H, W] MASK in `g`: image 0's left half, image 1's right half (conftest's masks, batched)."""
    halves = graphs.flux([{"mask": "left"}, {"mask": "right"}])
    g.update({k: v for k, v in halves.items() if k.startswith("mask_")})
    for i in (0, 1):
        g[f"mask_image_{i}"] = {"class_type": "MaskToImage", "inputs": {"mask": [f"mask_{i}", 0]}}
    g["mask_images"] = {"class_type": "ImageBatch", "inputs": {"image1": ["mask_image_0", 0],
                                                               "image2": ["mask_image_1", 0]}}
    g["mask_batch"] = {"class_type": "ImageToMask", "inputs": {"image": ["mask_images", 0], "channel": "red"}}
    return ["mask_batch", 0]


def test_batch_of_two_with_cfg_gives_each_image_its_identity_and_mask(comfy, graphs):
    """Batch 2, CFG 2 (one model call holds 2 negative and 2 positive rows), identities [A, B], masks [left,
    right]: image 0 changes on its left half, image 1 on its right (against no Apply); against [A, A] only
    image 1 differs, against [B, B] only image 0. Fails when a row takes another image's identity or mask."""
    g = graphs.flux([{"identity_count": 2}], batch=2, cfg=2.0)
    g["apply_0"]["inputs"]["mask"] = two_image_mask(graphs, g)
    models = {"plain": ["unet", 0]}
    for rows in ("0,0", "1,1"):
        name = "rows_" + rows.replace(",", "")
        g[f"{name}_id"] = {"class_type": "FaceMigrationTest_IdentityRows", "inputs": {
            "pulid_id": ["identity_0", 0], "rows": rows}}
        g[f"{name}_apply"] = {**g["apply_0"], "inputs": {**g["apply_0"]["inputs"], "pulid_id": [f"{name}_id", 0]}}
        models[name] = [f"{name}_apply", 0]
    entry = comfy.run(with_differences(graphs, g, models))
    assert graphs.digest(entry)["shape"] == [2, 16, 16, 16]
    image_0, image_1 = differences(entry, "plain")
    assert in_own_half(image_0, "left") and in_own_half(image_1, "right"), (image_0, image_1)
    (same_0, other_1), (other_0, same_1) = (map(sum, differences(entry, n)) for n in ("rows_00", "rows_11"))
    assert same_0 <= SAME_ROW * other_1 and same_1 <= SAME_ROW * other_0, (same_0, other_1, other_0, same_1)


@over_families("flux1", "chroma")
def test_uncond_modes_differ_with_cfg(comfy, graphs, family):
    """With CFG and a negative prompt, the negative pass gets the uncond ID: not the plain model's result, not
    the one where it gets the same identity (which rows change is checked in test_injection_comfy)."""
    plain2 = graphs.digest(comfy.run(graphs.flux(batch=2, cfg=2.0, family=family)))
    uncond_id = graphs.digest(comfy.run(graphs.flux([{"identity_count": 2}], batch=2, cfg=2.0, family=family)))
    same_id = graphs.digest(comfy.run(graphs.flux([{"identity_count": 2, "uncond_id": "same ID"}], batch=2, cfg=2.0,
                                                  family=family)))
    assert len({plain2["sha256"], uncond_id["sha256"], same_id["sha256"]}) == 3


def test_mismatched_pulid_file_names_both_models(comfy, graphs):
    error = comfy.run_error(graphs.flux([{"pulid_file": graphs.PULID_MISMATCH_FILE}]))
    assert error["node_type"] == APPLY
    message = error["exception_message"]
    assert graphs.PULID_MISMATCH_FILE in message and "5 PuLID modules" in message, message
    assert "1 double + 1 single" in message and "hidden size 3072" in message, message


def test_changing_weight_reuses_loader_and_identity(comfy, graphs):
    comfy.run(graphs.flux([{"weight": 1.0}]))
    second = comfy.run(graphs.flux([{"weight": 0.5}]))
    for node in ("pulid_loader_tiny_pulid", "identity_0", "unet"):
        assert not graphs.executed(second, node), f"{node} ran again though only the weight changed"
    for node in ("apply_0", "sampler"):
        assert graphs.executed(second, node), f"{node} did not run again after the weight changed"


@pytest.mark.parametrize("window, inputs", [
    ({"start_step": 4, "end_step": 2}, "start_step (4) and end_step (2)"),
    ({"timing": "percent", "start_percent": 0.6, "end_percent": 0.6}, "start_percent (0.6) and end_percent (0.6)")])
def test_an_empty_identity_window_is_refused_by_apply_once(comfy, graphs, window, inputs):
    """The Apply node refuses it before anything samples, in one message naming the two inputs. (Checked in
    validate_inputs, ComfyUI repeated it once per input the check read: five times, four with a wrong name.)"""
    error = comfy.run_error(graphs.flux([window]))
    assert error["node_type"] == APPLY and error["exception_type"].endswith("InvalidInputError"), error
    assert error["exception_message"].count("must be greater") + error["exception_message"].count("expected 0") == 1
    assert inputs in error["exception_message"]



def test_simple_apply_is_the_advanced_one_with_its_defaults(comfy, graphs):
    """The hosted API's two settings (id_weight, id_timestep_start) on the simple node give exactly what the
    advanced node gives with the same two and everything else at its default."""
    settings = {"weight": 0.8, "start_step": 1, "identity_seed": 33}
    advanced = graphs.flux([settings])
    simple = graphs.flux([settings])
    simple["apply_0"]["class_type"] = SIMPLE
    for name in ("timing", "end_step", "start_percent", "end_percent", "uncond_id"):
        del simple["apply_0"]["inputs"][name]
    assert graphs.digest(comfy.run(simple))["sha256"] == graphs.digest(comfy.run(advanced))["sha256"]
