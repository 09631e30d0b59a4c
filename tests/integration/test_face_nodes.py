"""The face nodes in a real ComfyUI, with tiny models under their real file names (devkit/tiny_face_models.py):
LoadImage -> loaders -> Encode Face -> Apply PuLID -> KSampler (tiny FLUX), previews, info, Face Similarity,
error cases, and ComfyUI's cache keeping the encoded identity while Apply's weight changes."""
import shutil

import pytest
from PIL import Image

ENCODE = "FaceMigration_EncodeFace"
FAST = "none (fast: SCRFD landmarks)"
PREVIEW_SIZE = (1024, 512)  # (width, height): the photo fitted in 512 x 512, then the 512 x 512 EVA input
FACE_NODES = ("face_analysis", "eva_clip", "face_parsing", "photo", "identity_0")


def face_nodes(face, pulid_loader: str, photos=None, landmark=FAST, eva_file=None, parsing_file=None,
               **encode_inputs) -> dict:
    """Loaders, the photos (several are batched with core ImageBatch), Encode Face as node "identity_0" and a
    core PreviewAny showing its info string as node "info"."""
    photos = photos or [face.photo]
    g = {
        "face_analysis": {"class_type": "FaceMigration_FaceAnalysisLoader", "inputs": {"provider": "CPU"}},
        "eva_clip": {"class_type": "FaceMigration_EvaClipLoader", "inputs": {"eva_file": eva_file or face.eva_file}},
        "face_parsing": {"class_type": "FaceMigration_FaceParsingLoader", "inputs": {
            "parsing_file": parsing_file or face.parsing_file, "landmark_file": landmark}},
    }
    for i, name in enumerate(photos):
        g[f"load_{i}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    image = ["load_0", 0]
    for i in range(1, len(photos)):
        g[f"batch_{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": image, "image2": [f"load_{i}", 0]}}
        image = [f"batch_{i}", 0]
    g["photo"] = {"class_type": "ImageScale", "inputs": {  # a no-op resize: one node id for "the photos"
        "image": image, "upscale_method": "nearest-exact", "width": 512, "height": 512, "crop": "disabled"}}
    inputs = {"image": ["photo", 0], "face_analysis": ["face_analysis", 0], "eva_clip": ["eva_clip", 0],
              "face_parsing": ["face_parsing", 0], "pulid_model": [pulid_loader, 0], "face_order": "largest-first",
              "face_index": 0, "combine": "mean", "skip_faceless": False}
    inputs.update(encode_inputs)
    g["identity_0"] = {"class_type": ENCODE, "inputs": inputs}
    g["info"] = {"class_type": "PreviewAny", "inputs": {"source": ["identity_0", 2]}}
    return g


def pulid_loader_id(pulid_file: str) -> str:
    return "pulid_loader_" + pulid_file.split(".")[0]  # as conftest's flux_graph names it


def encode_only(face, pulid_file=None, **kw) -> dict:
    pulid_file = pulid_file or face.pulid_file
    g = {pulid_loader_id(pulid_file): {"class_type": "FaceMigration_PulidModelLoader",
                                       "inputs": {"pulid_file": pulid_file}}}
    g.update(face_nodes(face, pulid_loader_id(pulid_file), **kw))
    return g


def full_graph(graphs, face, apply=None, **kw) -> dict:
    """Photo -> Encode Face -> Apply PuLID -> KSampler (tiny FLUX, 128 px, 3 steps) -> latent digest."""
    g = graphs.flux([{"pulid_file": face.pulid_file, **(apply or {})}])
    g.update(face_nodes(face, pulid_loader_id(face.pulid_file), **kw))  # replaces the random identity
    return g


def info_text(entry) -> str:
    return entry["outputs"]["info"]["text"][0]


def preview_files(comfy, entry, node="identity_0") -> list:
    images = entry["outputs"].get(node, {}).get("images", [])
    return [comfy.base / image["type"] / image["subfolder"] / image["filename"] for image in images]


def test_photo_to_latent_with_preview_and_info(comfy, graphs, tiny_face):
    entry = comfy.run(full_graph(graphs, tiny_face))
    assert graphs.digest(entry)["shape"] == [1, 16, 16, 16]
    (preview,) = preview_files(comfy, entry)
    with Image.open(preview) as image:
        assert image.size == PREVIEW_SIZE and image.mode == "RGB"
        left = image.crop((0, 0, 512, 512))
        assert (40, 220, 60) in {c for _, c in left.getcolors(512 * 512)}, "the chosen face is not boxed in green"
    info = info_text(entry)
    assert "1 face(s) found by SCRFD (scores 0.99)" in info and "used face #0 (largest-first)" in info
    assert "SCRFD keypoints (fast mode)" in info and "32 ID tokens" in info
    without_identity = comfy.run(full_graph(graphs, tiny_face, apply={"weight": 0.0}))
    assert graphs.digest(without_identity)["sha256"] != graphs.digest(entry)["sha256"], \
        "the encoded identity did not change the sampled latent"


def test_changing_only_apply_weight_reuses_encode_and_loaders(comfy, graphs, tiny_face):
    first = comfy.run(full_graph(graphs, tiny_face, apply={"weight": 0.9}))
    second = comfy.run(full_graph(graphs, tiny_face, apply={"weight": 0.6}))
    for node in FACE_NODES + (pulid_loader_id(tiny_face.pulid_file),):
        assert not graphs.executed(second, node), f"{node} ran again although only Apply's weight changed"
    assert graphs.executed(second, "apply_0") and graphs.executed(second, "sampler")
    assert graphs.digest(second)["sha256"] != graphs.digest(first)["sha256"]
    assert preview_files(comfy, second), "the cached Encode Face no longer shows its preview"


def test_two_references_mean_and_concat(comfy, tiny_face):
    photos = [tiny_face.photo, tiny_face.two_faces_photo]
    mean = comfy.run(encode_only(tiny_face, photos=photos))
    assert len(preview_files(comfy, mean)) == 2
    assert "reference image 0" in info_text(mean) and "reference image 1" in info_text(mean)
    assert "2 reference(s), mean, 32 ID tokens" in info_text(mean)
    concat = comfy.run(encode_only(tiny_face, photos=photos, combine="concat"))
    assert "2 reference(s), concat, 64 ID tokens" in info_text(concat)


def test_face_order_and_index(comfy, tiny_face):
    entry = comfy.run(encode_only(tiny_face, photos=[tiny_face.two_faces_photo], face_order="left-right",
                                  face_index=1))
    assert "2 face(s) found" in info_text(entry) and "used face #1 (left-right)" in info_text(entry)
    error = comfy.run_error(encode_only(tiny_face, photos=[tiny_face.two_faces_photo], face_index=2))
    assert error["node_type"] == ENCODE and "Face index 2" in error["exception_message"]


def test_faceless_image_is_named_or_skipped(comfy, tiny_face):
    photos = [tiny_face.photo, tiny_face.faceless_photo]
    error = comfy.run_error(encode_only(tiny_face, photos=photos))
    assert error["node_type"] == ENCODE and "No face was found in reference image 1" in error["exception_message"]
    skipped = comfy.run(encode_only(tiny_face, photos=photos, skip_faceless=True))
    assert "reference image 1: skipped, no face" in info_text(skipped)
    assert "1 reference(s)" in info_text(skipped) and len(preview_files(comfy, skipped)) == 2
    error = comfy.run_error(encode_only(tiny_face, photos=[tiny_face.faceless_photo], skip_faceless=True))
    assert "No face was found in any reference image" in error["exception_message"]


def test_retinaface_alignment_and_official_fallback(comfy, graphs, tiny_face):
    entry = comfy.run(full_graph(graphs, tiny_face, landmark=tiny_face.landmark_file))
    assert "aligned with RetinaFace landmarks (official)" in info_text(entry)
    assert graphs.digest(entry)["shape"] == [1, 16, 16, 16]
    # SCRFD misses the faceless photo; the tiny RetinaFace finds "faces" everywhere: the official fallback runs.
    fallback = comfy.run(encode_only(tiny_face, photos=[tiny_face.photo, tiny_face.faceless_photo],
                                     landmark=tiny_face.landmark_file))
    assert "reference image 1: 0 face(s) found by SCRFD" in info_text(fallback)
    assert "(official fallback)" in info_text(fallback)


def test_face_similarity_lists_one_score_per_image(comfy, tiny_face):
    g = {
        "face_analysis": {"class_type": "FaceMigration_FaceAnalysisLoader", "inputs": {"provider": "CPU"}},
        "reference": {"class_type": "LoadImage", "inputs": {"image": tiny_face.photo}},
        "two": {"class_type": "LoadImage", "inputs": {"image": tiny_face.two_faces_photo}},
        "none": {"class_type": "LoadImage", "inputs": {"image": tiny_face.faceless_photo}},
        "batch_a": {"class_type": "ImageBatch", "inputs": {"image1": ["reference", 0], "image2": ["two", 0]}},
        "batch_b": {"class_type": "ImageBatch", "inputs": {"image1": ["batch_a", 0], "image2": ["none", 0]}},
        "similarity": {"class_type": "FaceMigration_FaceSimilarity", "inputs": {
            "face_analysis": ["face_analysis", 0], "reference": ["reference", 0], "images": ["batch_b", 0]}},
        "scores": {"class_type": "PreviewAny", "inputs": {"source": ["similarity", 0]}},
    }
    entry = comfy.run(g)
    report = entry["outputs"]["similarity"]["text"][0]
    assert report.splitlines()[0] == "image 0: similarity 1.000" and "image 2: no face found" in report
    scores = [float(s) for s in entry["outputs"]["scores"]["text"]]  # PreviewAny ran once per list item
    assert len(scores) == 3 and scores[0] == pytest.approx(1.0, abs=1e-4) and scores[2] == 0.0
    assert 0.0 < scores[1] <= 1.0
    g["reference"]["inputs"]["image"] = tiny_face.faceless_photo
    error = comfy.run_error(g)
    assert "no face was found in the reference image" in error["exception_message"]


@pytest.fixture(scope="module")
def wrong_files(comfy, tiny_face):
    """A PuLID file put into models/clip by mistake."""
    models = comfy.base / "models"
    misplaced = models / "clip" / "pulid_in_the_clip_folder.safetensors"
    shutil.copyfile(models / "pulid" / tiny_face.pulid_file, misplaced)
    yield misplaced.name
    misplaced.unlink()


def test_wrong_or_missing_files_give_clear_errors(comfy, tiny_face, wrong_files):
    error = comfy.run_error(encode_only(tiny_face, eva_file=wrong_files))
    assert error["node_type"] == "FaceMigration_EvaClipLoader"
    assert wrong_files in error["exception_message"] and "PuLID-FLUX model (it belongs in models/pulid)" in \
        error["exception_message"]
    error = comfy.run_error(encode_only(tiny_face, landmark=tiny_face.parsing_file))
    assert error["node_type"] == "FaceMigration_FaceParsingLoader"
    assert "BiSeNet" in error["exception_message"] and "detection_Resnet50_Final.pth" in error["exception_message"]
    error = comfy.run_error(encode_only(tiny_face, parsing_file=tiny_face.landmark_file))
    assert "RetinaFace" in error["exception_message"] and "parsing_bisenet.pth" in error["exception_message"]
    # An absent catalogue file is not listed; queueing it is refused with the download instructions.
    with pytest.raises(AssertionError, match=r"pulid_flux_v0\.9\.1\.safetensors.*huggingface\.co/guozinan/PuLID"):
        comfy.submit(encode_only(tiny_face, pulid_file="pulid_flux_v0.9.1.safetensors"))


def test_pulid_file_that_does_not_fit_the_eva_tower(comfy, tiny_face):
    """conftest's tiny_pulid.safetensors expects 1024-wide EVA hidden states; the tiny EVA is 64 wide."""
    error = comfy.run_error(encode_only(tiny_face, pulid_file="tiny_pulid.safetensors"))
    assert error["node_type"] == ENCODE
    assert "EVA-CLIP model (hidden width 64, head 768) does not fit the PuLID model, which expects hidden " \
           "width 1024" in error["exception_message"]


def test_face_analysis_files_are_chosen_listed_and_checked(comfy, tiny_face):
    """Load Face Analysis lists antelopev2's .onnx files (the frontends' Missing Models check reads the list),
    loads the chosen ones, refuses an absent one before the run with the download command, and takes a name
    only: a path out of the antelopev2 folder is refused like an absent file."""
    inputs = comfy.object_info()["FaceMigration_FaceAnalysisLoader"]["input"]["optional"]
    for name, expected in (("detector_file", "scrfd_10g_bnkps.onnx"), ("recognizer_file", "glintr100.onnx")):
        options = inputs[name][1]["options"] if inputs[name][0] == "COMBO" else inputs[name][0]
        assert options[0] == expected and set(options) == {"scrfd_10g_bnkps.onnx", "glintr100.onnx"}
    chosen = encode_only(tiny_face)
    chosen["face_analysis"]["inputs"].update(detector_file="scrfd_10g_bnkps.onnx", recognizer_file="glintr100.onnx")
    assert "1 face(s) found by SCRFD" in info_text(comfy.run(chosen))
    for name in ("scrfd_2.5g.onnx", "../../../insightface/models/antelopev2/scrfd_10g_bnkps.onnx"):
        chosen["face_analysis"]["inputs"]["detector_file"] = name
        with pytest.raises(AssertionError, match=r"was not found.*python -m face_migration download --missing"):
            comfy.submit(chosen)
