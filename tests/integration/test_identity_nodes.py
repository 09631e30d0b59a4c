"""Save Identity / Load Identity in a real ComfyUI: a face encoded once, saved, loaded in a new prompt that
has no face model at all, samples bit-identically to the identity straight from Encode Face; wrong PuLID
model, missing, corrupt and clashing files give errors that name the file; a saved file gets the umask's
mode; a model file put among the identities gets a short error."""
import os

import torch
from PIL import Image
from safetensors.torch import save_file

from tests.integration.test_face_nodes import face_nodes, full_graph, pulid_loader_id

FOLDER = "pulid_identities"
FACE_MODEL_NODES = {"FaceMigration_FaceAnalysisLoader", "FaceMigration_EvaClipLoader",
                    "FaceMigration_FaceParsingLoader", "FaceMigration_EncodeFace", "LoadImage"}


def save_node(name, overwrite=False, thumbnail=True) -> dict:
    return {"class_type": "FaceMigration_SaveIdentity", "inputs": {
        "pulid_id": ["identity_0", 0], "name": name, "thumbnail": thumbnail, "overwrite": overwrite,
        "preview": ["identity_0", 1]}}


def encode_apply_save(graphs, face, name, **save) -> dict:
    """Photo -> Encode Face -> Apply -> KSampler -> digest, and Save Identity on the same identity."""
    g = graphs.flux([{"pulid_file": face.pulid_file}])
    g.update(face_nodes(face, pulid_loader_id(face.pulid_file)))
    g["save"] = save_node(name, **save)
    return g


def load_apply(graphs, face, filename, pulid_file=None) -> dict:
    """The same sampling with the identity from Load Identity instead of Encode Face (no face model)."""
    pulid_file = pulid_file or face.pulid_file
    g = graphs.flux([{"pulid_file": pulid_file}])
    loader = pulid_loader_id(pulid_file)
    g["identity_0"] = {"class_type": "FaceMigration_LoadIdentity",
                       "inputs": {"identity_file": filename, "pulid_model": [loader, 0]}}
    g["info"] = {"class_type": "PreviewAny", "inputs": {"source": ["identity_0", 1]}}
    return g


def test_saved_identity_samples_bit_identically(comfy, graphs, tiny_face):
    encoded = comfy.run(encode_apply_save(graphs, tiny_face, "round_trip", overwrite=True))
    path = comfy.base / "models" / FOLDER / "round_trip.safetensors"
    assert path.is_file(), "Save Identity wrote nothing in models/pulid_identities"
    assert "saved round_trip.safetensors" in " ".join(encoded["outputs"]["save"]["text"])

    prompt = load_apply(graphs, tiny_face, "round_trip.safetensors")
    assert not {n["class_type"] for n in prompt.values()} & FACE_MODEL_NODES, "the loaded side needs no face model"
    loaded = comfy.run(prompt)
    assert graphs.digest(loaded) == graphs.digest(encoded)  # sha256 of the sampled latent
    info = " ".join(loaded["outputs"]["info"]["text"])
    assert "references: 1, faces used: 1, combine: mean" in info and "128 x 128 aligned face crop" in info
    (thumb,) = loaded["outputs"]["identity_0"]["images"]
    with Image.open(comfy.base / thumb["type"] / thumb["subfolder"] / thumb["filename"]) as image:
        assert image.size == (128, 128)


def test_identity_from_another_pulid_model_is_refused(comfy, graphs, tiny_face):
    comfy.run(encode_apply_save(graphs, tiny_face, "for_other_model", overwrite=True))
    error = comfy.run_error(load_apply(graphs, tiny_face, "for_other_model.safetensors",
                                       pulid_file="tiny_pulid.safetensors"))
    assert error["exception_type"].endswith("IncompatibleModelError")
    message = error["exception_message"]
    assert "The face identity file for_other_model.safetensors was made with PuLID weights" in message
    assert "Load Identity" in message and "encode node" not in message


def test_apply_with_another_pulid_model_than_the_loaded_identity_names_the_file(comfy, graphs, tiny_face):
    comfy.run(encode_apply_save(graphs, tiny_face, "for_apply_check", overwrite=True))
    other = "tiny_pulid.safetensors"  # fits the tiny FLUX, another fingerprint than the face's PuLID file
    g = load_apply(graphs, tiny_face, "for_apply_check.safetensors", pulid_file=other)
    own_loader = pulid_loader_id(tiny_face.pulid_file)
    g[own_loader] = {"class_type": "FaceMigration_PulidModelLoader", "inputs": {"pulid_file": tiny_face.pulid_file}}
    g["identity_0"]["inputs"]["pulid_model"] = [own_loader, 0]  # Load Identity itself gets the right one
    error = comfy.run_error(g)
    assert error["node_type"] == "FaceMigration_ApplyPulid"
    message = error["exception_message"]
    assert "The face identity file for_apply_check.safetensors was made with PuLID weights" in message


def test_apply_with_another_pulid_model_than_encode_face_says_so_without_a_file(comfy, graphs, tiny_face):
    g = full_graph(graphs, tiny_face, apply={"pulid_file": "tiny_pulid.safetensors"})
    own_loader = pulid_loader_id(tiny_face.pulid_file)
    g[own_loader] = {"class_type": "FaceMigration_PulidModelLoader", "inputs": {"pulid_file": tiny_face.pulid_file}}
    error = comfy.run_error(g)
    assert error["node_type"] == "FaceMigration_ApplyPulid"
    message = error["exception_message"]
    assert message.startswith("This face identity was made with PuLID weights") and "Encode Face" in message


def test_a_saved_identity_gets_the_umasks_mode(comfy, graphs, tiny_face):
    umask = os.umask(0)
    os.umask(umask)  # the server inherited this process's umask
    comfy.run(encode_apply_save(graphs, tiny_face, "mode_check", overwrite=True))
    mode = (comfy.base / "models" / FOLDER / "mode_check.safetensors").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask, oct(mode)


def test_a_model_file_among_the_identities_gets_a_short_error(comfy, graphs, tiny_face):
    folder = comfy.base / "models" / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    save_file({f"double_blocks.{i}.img_attn.qkv.weight": torch.zeros(1) for i in range(3000)},
              str(folder / "flux_by_mistake.safetensors"))
    error = comfy.run_error(load_apply(graphs, tiny_face, "flux_by_mistake.safetensors"))
    message = error["exception_message"]
    assert error["exception_type"].endswith("IdentityFileError") and len(message) < 700, message
    assert "3,000 tensors" in message and "models/pulid" in message


def test_missing_identity_file_is_explained_before_running(comfy, graphs, tiny_face):
    try:
        comfy.submit(load_apply(graphs, tiny_face, "never_saved.safetensors"))
    except AssertionError as exc:
        message = str(exc)
    else:
        raise AssertionError("a prompt naming an absent identity file was accepted")
    assert "never_saved.safetensors" in message and "Save Identity" in message and FOLDER in message


def test_corrupt_identity_file_names_itself(comfy, graphs, tiny_face):
    folder = comfy.base / "models" / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.safetensors").write_bytes(b"\x80\x04this is a pickle, not an identity")
    error = comfy.run_error(load_apply(graphs, tiny_face, "broken.safetensors"))
    assert error["exception_type"].endswith("IdentityFileError")
    assert str(folder / "broken.safetensors") in error["exception_message"]


def test_save_keeps_another_identity_unless_told_to_overwrite(comfy, graphs, tiny_face):
    path = comfy.base / "models" / FOLDER / "clash.safetensors"
    comfy.run(encode_apply_save(graphs, tiny_face, "clash", overwrite=True, thumbnail=False))
    first = path.read_bytes()
    # The same identity with a thumbnail is another file content: refused without overwrite.
    error = comfy.run_error(encode_apply_save(graphs, tiny_face, "clash"))
    assert error["exception_type"].endswith("IdentityFileError") and "overwrite" in error["exception_message"]
    assert path.read_bytes() == first
    comfy.run(encode_apply_save(graphs, tiny_face, "clash", overwrite=True))
    assert path.read_bytes() != first
