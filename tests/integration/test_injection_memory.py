"""What ComfyUI's model management holds while FLUX samples with Apply PuLID: the CA modules only when an Apply
has a weight, and never the face networks, EVA02-CLIP or the IDFormer once Encode Face is done. Read from a
probe wrapper (helper_pack/sampling_probes.py) that logs comfy.model_management.current_loaded_models at every
model call."""
import re
import time

from tests.integration.test_face_nodes import face_nodes, pulid_loader_id

LOADED = re.compile(r"FaceMigrationTest loaded while sampling: (.*)")
FLUX = "Flux"  # comfy.model_base's class for FLUX.1
CA_MODULES = "ModuleList"  # PulidFlux.pulid_ca
ENCODE_MODELS = {"IDFormer", "EvaVisionTower", "ModuleDict"}  # IDFormer, EVA02-CLIP, BiSeNet (+ RetinaFace)


def held_while_sampling(comfy, g: dict, unload_first: bool) -> tuple[dict, set]:
    """Runs `g` with the probe between the sampler and its model; returns the history entry and the model
    classes held at any model call. unload_first: unload every model before (leftovers of earlier prompts)."""
    g["loaded"] = {"class_type": "FaceMigrationTest_LoadedModels", "inputs": {
        "model": g["sampler"]["inputs"]["model"], "unload_first": unload_first}}
    g["sampler"]["inputs"]["model"] = ["loaded", 0]
    start = len(comfy.log_text())
    entry = comfy.run(g)
    deadline = time.monotonic() + 10
    while not (found := LOADED.findall(comfy.log_text()[start:])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert found, "the probe logged no model call"
    return entry, {name for line in found for name in line.split(", ") if name}


def test_weight_zero_loads_nothing_beside_flux(comfy, graphs):
    """Weight 0 returns the model as it came: no patch models, only FLUX held while sampling (weight 1 adds the
    CA modules)."""
    held = {}
    for weight in (0.0, 1.0):
        g = graphs.flux([{"weight": weight}], size=64, steps=2, seed=301)
        g["patch_models"] = {"class_type": "FaceMigrationTest_PatchModels", "inputs": {"model": ["apply_0", 0]}}
        entry, held[weight] = held_while_sampling(comfy, g, unload_first=True)
        if weight == 0:
            assert entry["outputs"]["patch_models"]["patch_models"] == []
    assert held == {0.0: {FLUX}, 1.0: {FLUX, CA_MODULES}}, held


def test_encode_face_models_are_not_held_while_sampling(comfy, graphs, tiny_face):
    """Photo -> Encode Face -> Apply -> KSampler: once the identity is encoded, EVA02-CLIP, the face parsing
    networks and the IDFormer leave the compute device; FLUX and the CA modules are what sampling holds."""
    g = graphs.flux([{"pulid_file": tiny_face.pulid_file}], size=64, steps=2, seed=302)
    g.update(face_nodes(tiny_face, pulid_loader_id(tiny_face.pulid_file)))
    g["photo"]["inputs"]["upscale_method"] = "bilinear"  # a new input: Encode Face is not taken from the cache
    entry, held = held_while_sampling(comfy, g, unload_first=False)
    assert graphs.executed(entry, "identity_0")
    assert {FLUX, CA_MODULES} <= held and not held & ENCODE_MODELS, held
