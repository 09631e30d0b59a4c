"""nodes/peer_prompts.py: API prompts naming the other PuLID-FLUX packs' nodes are replaced by the pack (with the
replacements it registers with ComfyUI) before core's own replacement, which fails with a KeyError (HTTP 500) on a
node without `_meta` or without one of the mapped inputs."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    # Loaded on their own: the nodes package needs ComfyUI, these modules do not.
    spec = importlib.util.spec_from_file_location(name, REPO / "nodes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peer_prompts, peer_replacements = load("peer_prompts"), load("peer_replacements")
REPLACEMENTS = peer_replacements.server_replacements(peer_replacements.load_table())
PACK_TYPES = {r["new_node_id"] for r in REPLACEMENTS} | {"KSampler"}


def test_a_peer_loader_without_meta_becomes_the_packs_as_core_would_make_it():
    prompt = {"1": {"class_type": "PulidFluxModelLoader", "inputs": {"pulid_file": "pulid_flux_v0.9.1.safetensors"}},
              "2": {"class_type": "KSampler", "inputs": {"model": ["1", 0]}}}
    assert peer_prompts.replace_peer_nodes(prompt, REPLACEMENTS, PACK_TYPES) == ["1"]
    assert prompt["1"] == {"class_type": "FaceMigration_PulidModelLoader",
                           "inputs": {"pulid_file": "pulid_flux_v0.9.1.safetensors"}}
    assert prompt["2"] == {"class_type": "KSampler", "inputs": {"model": ["1", 0]}}


def test_meta_and_every_other_key_stay_and_set_values_are_given():
    prompt = {"7": {"class_type": "PulidFluxInsightFaceLoader", "inputs": {"provider": "CUDA"},
                    "_meta": {"title": "mine"}}}
    peer_prompts.replace_peer_nodes(prompt, REPLACEMENTS, PACK_TYPES)
    assert prompt["7"] == {"class_type": "FaceMigration_FaceAnalysisLoader", "inputs": {"provider": "auto"},
                           "_meta": {"title": "mine"}}


def test_an_input_the_prompt_lacks_stays_out_for_validation_to_name():
    prompt = {"3": {"class_type": "ApplyPulidFlux", "inputs": {"model": ["9", 0], "weight": 0.8}}}
    peer_prompts.replace_peer_nodes(prompt, REPLACEMENTS, PACK_TYPES)
    inputs = prompt["3"]["inputs"]
    assert prompt["3"]["class_type"] == "FaceMigration_ApplyPulid"
    assert inputs["model"] == ["9", 0] and inputs["weight"] == 0.8
    assert "pulid_model" not in inputs and "start_percent" not in inputs


def test_installed_peer_nodes_and_everything_else_are_left_alone():
    prompt = {"1": {"class_type": "PulidFluxModelLoader", "inputs": {"pulid_file": "x"}},
              "2": {"class_type": "SomethingElse", "inputs": {}}, "extra": 5, "4": {"class_type": "KSampler"}}
    before = copy.deepcopy(prompt)
    assert peer_prompts.replace_peer_nodes(prompt, REPLACEMENTS, PACK_TYPES | {"PulidFluxModelLoader"}) == []
    assert peer_prompts.replace_peer_nodes(prompt, REPLACEMENTS, {"KSampler"}) == []  # the pack's own node missing
    assert prompt == before


def test_links_follow_an_output_mapping():
    replacements = [{"old_node_id": "Old", "new_node_id": "New", "input_mapping": None,
                     "output_mapping": [{"old_idx": 0, "new_idx": 1}, {"old_idx": 1, "new_idx": 0}]}]
    prompt = {"1": {"class_type": "Old", "inputs": {}},
              "2": {"class_type": "Use", "inputs": {"a": ["1", 0], "b": ["1", 1], "c": ["5", 0], "d": "1"}}}
    peer_prompts.replace_peer_nodes(prompt, replacements, {"New", "Use"})
    assert prompt["2"]["inputs"] == {"a": ["1", 1], "b": ["1", 0], "c": ["5", 0], "d": "1"}
