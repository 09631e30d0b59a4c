"""The shipped workflows in a real ComfyUI: the pack's schema snapshot is current, and each workflow,
converted to API format as the frontend would queue it, runs headless with tiny random models.

Substitutions (the real files are gigabytes): the FLUX UNet -> the session's tiny FLUX, ae.safetensors ->
a random VAE with FLUX's VAE layout, the PuLID, EVA-CLIP, BiSeNet and antelopev2 files -> tiny random
ones with the real layouts (the ONNX detector "sees" a red square painted on the photo), CLIP/T5 text
encoding -> seeded random conditioning (the test helper node), the image size -> 128 px, the step count
-> 2, and the API endpoint -> the local fake API. The face models come from devkit/tiny_face_models.py. Everything else (node types, links, widget values) is the workflow's."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.remote.fake_moark import FakeMoArk, Reply
from devkit.tiny_face_models import FACE, LEFT_FACE, RIGHT_FACE, red_face_photo
from devkit.workflow_validation import (USER_FILE_COMBOS, input_specs, load_schemas, model_file_folder, pack_snapshot,
                                        nodes_in_group, to_api)

REPO = Path(__file__).resolve().parents[2]
TINY_VAE = "tiny_flux_ae.safetensors"
SIZE, STEPS = 128, 2
PHOTOS = {"face_reference.png": FACE, "person_left.png": LEFT_FACE, "person_right.png": RIGHT_FACE}

# The FLUX VAE (AutoencodingEngine, 16 latent channels) as ComfyUI's VAE loader detects it, random weights.
MAKE_TINY_VAE = r"""
import sys, torch
from comfy.cli_args import args
args.cpu = True
from comfy.ldm.models.autoencoder import AutoencodingEngine
from safetensors.torch import save_file
config = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
part = lambda kind: {"target": f"comfy.ldm.modules.diffusionmodules.model.{kind}", "params": config}
model = AutoencodingEngine(regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
                           encoder_config=part("Encoder"), decoder_config=part("Decoder"))
gen = torch.Generator().manual_seed(0)
state = {}
for name, tensor in model.state_dict().items():
    if name.endswith("bias"):
        value = torch.zeros(tensor.shape)
    elif tensor.dim() == 1:  # normalisation scales
        value = torch.ones(tensor.shape)
    else:
        value = torch.randn(tensor.shape, generator=gen) * 0.02
    state[name] = value.to(torch.float16)
save_file(state, sys.argv[1])
"""


@pytest.fixture(scope="module")
def schemas(comfyui):
    return load_schemas(comfyui.version)


@pytest.fixture(scope="module")
def tiny_vae(comfy, comfyui):
    target = comfy.base / "models" / "vae" / TINY_VAE
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([comfyui.python, "-c", MAKE_TINY_VAE, str(target)], cwd=comfyui.path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"tiny VAE generation failed:\n{done.stderr[-3000:]}"
    return TINY_VAE


def test_pack_snapshot_matches_the_live_server(comfy, comfyui):
    """tests/fixtures/object_info/pack-<version>.json is what this pack registers now (refresh it with
    scripts/dump_pack_object_info.py). Model-file lists show the files on disk, so their options are left
    out of the comparison, and so are the user's own files (identities saved by an earlier test)."""
    snapshot = json.loads(pack_snapshot(comfyui.version).read_text())
    live = {k: {f: v for f, v in entry.items() if f != "python_module"}
            for k, entry in comfy.object_info().items() if k.startswith("FaceMigration_")}
    assert sorted(live) == sorted(snapshot), "node list changed: re-run scripts/dump_pack_object_info.py"
    for node_id, entry in live.items():
        for spec in input_specs(snapshot[node_id]):
            if model_file_folder(node_id, spec) is not None or (node_id, spec.name) in USER_FILE_COMBOS:
                for schema in (entry, snapshot[node_id]):
                    schema["input"]["required" if spec.required else "optional"][spec.name][1].pop("options", None)
        assert entry == snapshot[node_id], (f"{node_id} differs from tests/fixtures/object_info/pack-"
                                            f"{comfyui.version}.json: re-run scripts/dump_pack_object_info.py "
                                            f"--comfyui PATH")


@pytest.fixture(scope="module")
def tiny_files(comfy, tiny_vae, tiny_face) -> dict:
    """Tiny model files and photos in the server's folders; returns the loader values to use."""
    for name, square in PHOTOS.items():
        Image.fromarray(red_face_photo((square,))).save(comfy.base / "input" / name)
    return {"unet_name": comfy.object_info()["UNETLoader"]["input"]["required"]["unet_name"][0][0],
            "vae_name": tiny_vae, "pulid_file": tiny_face.pulid_file, "eva_file": tiny_face.eva_file,
            "parsing_file": tiny_face.parsing_file}  # landmark_file: the workflows' fast alignment needs no file


@pytest.fixture
def fake_api(comfy):
    (comfy.base / "user" / "moark_api_key.txt").write_text("WORKFLOWTESTKEY0123456789\n")
    server = FakeMoArk().start()
    yield server
    server.stop()


def substitute(prompt: dict, schemas: dict, files: dict, api_url: str | None = None) -> dict:
    """The API prompt with tiny models and a small, short sampling (see the module docstring)."""
    prompt = json.loads(json.dumps(prompt))
    for node_id, node in list(prompt.items()):
        kind, inputs = node["class_type"], node["inputs"]
        for name in set(inputs) & set(files):
            inputs[name] = files[name]
        if kind == "DualCLIPLoader":
            del prompt[node_id]
        elif kind == "CLIPTextEncode":
            prompt[node_id] = {"class_type": "FaceMigrationTest_RandomConditioning", "inputs": {
                "seed": int(node_id), "tokens": 32, "context_dim": 4096, "pooled_dim": 768, "guidance": 3.5}}
        elif kind == "EmptySD3LatentImage":
            inputs.update(width=SIZE, height=SIZE)
        elif kind == "KSampler":
            inputs["steps"] = STEPS
        elif kind == "SolidMask":  # two-people masks are drawn for the workflow's image size
            inputs.update(width=max(1, inputs["width"] * SIZE // 1024), height=max(1, inputs["height"] * SIZE // 1024))
        elif kind == "MaskComposite":
            inputs.update(x=inputs["x"] * SIZE // 1024, y=inputs["y"] * SIZE // 1024)
        elif kind == "FaceMigration_MoArkFaceMigration":
            assert api_url, "a workflow with the API node needs the fake API"
            inputs.update(endpoint="custom", custom_base_url=api_url, timeout=30.0)
    for node in prompt.values():
        if node["class_type"] not in schemas and not node["class_type"].startswith("FaceMigrationTest_"):
            raise AssertionError(f"unknown node {node['class_type']}")
    return prompt


def run_workflow(comfy, schemas, files, name, api_url=None) -> tuple[dict, dict]:
    workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    prompt = substitute(to_api(workflow, schemas), schemas, files, api_url)
    return prompt, comfy.run(prompt)


def outputs_of(prompt: dict, entry: dict, kind: str) -> list[dict]:
    return [out for node_id, out in entry["outputs"].items() if prompt[node_id]["class_type"] == kind]


def saved_images(comfy, prompt, entry) -> list[Path]:
    saved = outputs_of(prompt, entry, "SaveImage")
    assert saved and all(out["images"] for out in saved), entry["outputs"]
    return [comfy.base / "output" / i["subfolder"] / i["filename"] for out in saved for i in out["images"]]


def similarity_reports(prompt, entry) -> list[str]:
    """The Face Similarity reports, as the nodes show them on themselves."""
    return [" ".join(out["text"]) for out in outputs_of(prompt, entry, "FaceMigration_FaceSimilarity")]


@pytest.mark.parametrize("name", ["flux1_schnell_pulid_4steps", "flux1_dev_pulid", "flux1_dev_pulid_two_people"])
def test_local_workflow_runs_with_tiny_models(comfy, schemas, tiny_files, name):
    prompt, entry = run_workflow(comfy, schemas, tiny_files, name)
    for path in saved_images(comfy, prompt, entry):
        with Image.open(path) as image:
            assert image.size == (SIZE, SIZE)
            assert np.asarray(image).std() > 0, "a flat image: the VAE or sampler produced nothing"
    previews = outputs_of(prompt, entry, "FaceMigration_EncodeFace")
    assert previews and all(out["images"] for out in previews), "Encode Face's preview is not shown"
    encoders = sum(1 for n in prompt.values() if n["class_type"] == "FaceMigration_EncodeFace")
    assert len(similarity_reports(prompt, entry)) == (2 if encoders == 2 else 1), entry["outputs"]


def test_identity_workflow_saves_then_applies_from_the_file(comfy, schemas, tiny_files):
    """Step 1 as shipped writes the identity file; step 2 (the muted part, switched on, step 1 muted) samples
    from that file with no face model in the prompt."""
    workflow = json.loads((REPO / "workflows" / "identity_round_trip.json").read_text())
    first = substitute(to_api(workflow, schemas), schemas, tiny_files)
    comfy.run(first)
    name = next(n for n in first.values() if n["class_type"] == "FaceMigration_SaveIdentity")["inputs"]["name"]
    assert (comfy.base / "models" / "pulid_identities" / f"{name}.safetensors").is_file()
    step_one = nodes_in_group(workflow, "Face: encode once and save")
    for node in workflow["nodes"]:
        node["mode"] = 2 if node["id"] in step_one else 0
    second = substitute(to_api(workflow, schemas), schemas, tiny_files)
    assert not {n["class_type"] for n in second.values()} & {"FaceMigration_EncodeFace", "FaceMigration_EvaClipLoader"}
    entry = comfy.run(second)
    (path,) = saved_images(comfy, second, entry)
    with Image.open(path) as image:
        assert image.size == (SIZE, SIZE) and np.asarray(image).std() > 0


def test_remote_workflow_runs_against_the_fake_api(comfy, schemas, tiny_files, fake_api):
    prompt, entry = run_workflow(comfy, schemas, tiny_files, "remote_api_face_migration", fake_api.base_url)
    assert len(saved_images(comfy, prompt, entry)) == 1
    (request,) = fake_api.api_requests()
    fields = dict(request.fields)
    workflow_node = next(n for n in prompt.values() if n["class_type"] == "FaceMigration_MoArkFaceMigration")
    assert fields["prompt"] == workflow_node["inputs"]["prompt"] and fields["num_inference_steps"] == "4"


def test_local_vs_remote_runs_and_scores_both(comfy, schemas, tiny_files, fake_api):
    # The fake API answers with the reference photo itself, so the remote side has a face to score.
    with Image.open(comfy.base / "input" / "face_reference.png") as photo:
        fake_api.queue(Reply.image_b64(np.asarray(photo.convert("RGB"))))
    prompt, entry = run_workflow(comfy, schemas, tiny_files, "local_vs_remote", fake_api.base_url)
    assert len(saved_images(comfy, prompt, entry)) == 2  # the local image, and local | remote side by side
    reports = similarity_reports(prompt, entry)
    assert len(reports) == 2 and any(r.startswith("image 0: similarity 1.000") for r in reports), reports
    (request,) = fake_api.api_requests()
    text = next(n for n in prompt.values() if n["class_type"] == "PrimitiveStringMultiline")["inputs"]["value"]
    assert dict(request.fields)["prompt"] == text


def test_input_specs_cover_every_substituted_input(schemas):
    """The substitutions only touch inputs these nodes really have (guards against renames)."""
    names = {kind: {s.name for s in input_specs(schemas[kind])} for kind in
             ("UNETLoader", "VAELoader", "FaceMigration_PulidModelLoader", "EmptySD3LatentImage", "KSampler",
              "SolidMask", "MaskComposite", "FaceMigration_EvaClipLoader", "FaceMigration_FaceParsingLoader",
              "FaceMigration_MoArkFaceMigration")}
    assert {"unet_name"} <= names["UNETLoader"] and {"vae_name"} <= names["VAELoader"]
    assert {"pulid_file"} <= names["FaceMigration_PulidModelLoader"] and {"eva_file"} <= names["FaceMigration_EvaClipLoader"]
    assert {"parsing_file", "landmark_file"} <= names["FaceMigration_FaceParsingLoader"]
    assert {"endpoint", "custom_base_url", "timeout"} <= names["FaceMigration_MoArkFaceMigration"]
    assert {"width", "height"} <= names["EmptySD3LatentImage"] and {"steps"} <= names["KSampler"]
    assert {"width", "height"} <= names["SolidMask"] and {"x", "y"} <= names["MaskComposite"]


def test_check_models_agrees_with_the_loaders(comfy, tiny_files):
    """check-models on the server's folders: what it finds the loaders load, what it misses they refuse."""
    import argparse
    import io

    from face_migration import check_models

    parser = argparse.ArgumentParser()
    check_models.add_arguments(parser)
    out = io.StringIO()
    assert check_models.run(parser.parse_args(["--comfyui", str(comfy.base), "--no-hash"]), out, io.StringIO()) == 1
    report = out.getvalue()
    antelope = comfy.base / "models" / "insightface" / "models" / "antelopev2"
    # The tiny stand-in sits under the real name: found where the loader looks, and told apart by its size.
    assert "[PROBLEM] scrfd_10g_bnkps.onnx" in report and "truncated" in report
    assert str(antelope / "scrfd_10g_bnkps.onnx") in report
    assert "[ok] EVA02_CLIP_L_336_psz14_s6B" in report  # the converted .safetensors is an accepted name
    assert "[MISSING] pulid_flux_v0.9.1.safetensors" in report
    found = {"photo": {"class_type": "LoadImage", "inputs": {"image": "face_reference.png"}},
             "faces": {"class_type": "FaceMigration_FaceAnalysisLoader", "inputs": {"provider": "CPU"}},
             "score": {"class_type": "FaceMigration_FaceSimilarity", "inputs": {
                 "face_analysis": ["faces", 0], "reference": ["photo", 0], "images": ["photo", 0]}}}
    assert "similarity 1.000" in " ".join(comfy.run(found)["outputs"]["score"]["text"])
    missing = {"pulid": {"class_type": "FaceMigration_PulidModelLoader",
                         "inputs": {"pulid_file": "pulid_flux_v0.9.1.safetensors"}},
               "show": {"class_type": "PreviewAny", "inputs": {"source": ["pulid", 0]}}}
    with pytest.raises(AssertionError, match=r"pulid_flux_v0\.9\.1\.safetensors.*huggingface\.co/guozinan/PuLID"):
        comfy.submit(missing)  # refused before anything runs, with the download instructions


def test_loaders_list_only_files_on_disk(comfy, tiny_files):
    """So a frontend that flags a workflow's file when it is absent from the list (the newest ones) shows
    the pack's missing files before queueing; an absent choice is explained (test above)."""
    info = comfy.object_info()
    options = {(node, name): info[node]["input"]["required"][name][1]["options"]
               for node, name in (("FaceMigration_PulidModelLoader", "pulid_file"),
                                  ("FaceMigration_EvaClipLoader", "eva_file"),
                                  ("FaceMigration_FaceParsingLoader", "parsing_file"),
                                  ("FaceMigration_FaceParsingLoader", "landmark_file"))}
    models = comfy.base / "models"
    for (node, name), listed in options.items():
        assert "pulid_flux_v0.9.1.safetensors" not in listed and "EVA02_CLIP_L_336_psz14_s6B.pt" not in listed
        for value in listed:
            assert value == "none (fast: SCRFD landmarks)" or list(models.rglob(value)), (node, name, value)
    assert tiny_files["pulid_file"] in options[("FaceMigration_PulidModelLoader", "pulid_file")]
