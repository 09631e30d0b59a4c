"""Save Identity / Load Identity in a real ComfyUI: a face encoded once, saved, loaded in a new prompt that
has no face model at all, samples bit-identically to the identity straight from Encode Face; wrong PuLID
model, missing, corrupt and clashing files give errors that name the file."""
from PIL import Image

from tests.integration.test_face_nodes import face_nodes, pulid_loader_id

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
    assert "for_other_model.safetensors" in error["exception_message"]
    assert "the PuLID file it was saved with" in error["exception_message"]


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
