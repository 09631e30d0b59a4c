"""The tiny face model files (devkit/tiny_face_models.py) load through the library's own loaders under their
real names, and behave as the integration tests and workflow runs rely on: one face per red square, RetinaFace
finding a face beside SCRFD's, and an EVA tower that fits the tiny PuLID file (and not conftest's other one)."""
import numpy as np
import pytest
import torch

from face_migration.errors import IncompatibleModelError
from face_migration.face import pipeline
from face_migration.face.bisenet import load_bisenet
from face_migration.face.detection import load_scrfd
from face_migration.face.eva_clip import load_eva_clip
from face_migration.face.recognition import load_arcface
from face_migration.face.retinaface import load_retinaface
from face_migration.pulid.model import PulidFlux
from face_migration.pulid.weights import load_pulid_flux
from devkit import tiny_face_models as tiny
from devkit.tiny_pulid import TINY_CFG_FOR_COMPAT_FLUX


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy")
    return tiny.install(root / "models", root / "input"), root


@pytest.fixture(scope="module")
def loaded(files):
    paths = files[0].paths
    detector, recognizer = load_scrfd(str(paths["scrfd"]), "CPU"), load_arcface(str(paths["arcface"]), "CPU")
    eva, parser = load_eva_clip(str(paths["eva"])), load_bisenet(str(paths["bisenet"]))
    models = {"fast": pipeline.FaceModels(detector, recognizer, eva, parser, None),
              "official": pipeline.FaceModels(detector, recognizer, eva, parser,
                                                load_retinaface(str(paths["retinaface"])))}
    return models, load_pulid_flux(str(paths["pulid"]), "models/pulid")


def test_real_names_and_folders(files):
    names, root = files
    rel = {str(p.relative_to(root / "models")) for p in names.paths.values()}
    assert rel == {"insightface/models/antelopev2/scrfd_10g_bnkps.onnx", "insightface/models/antelopev2/glintr100.onnx",
                   "clip/EVA02_CLIP_L_336_psz14_s6B_visual.safetensors", "facexlib/parsing_bisenet.pth",
                   "facexlib/detection_Resnet50_Final.pth", "pulid/pulid_flux_tiny_face.safetensors"}
    assert all((root / "input" / n).is_file() for n in (names.photo, names.two_faces_photo, names.faceless_photo))
    assert sum(p.stat().st_size for p in names.paths.values()) < 40e6


def test_one_face_per_red_square(loaded):
    detector = loaded[0]["fast"].detector
    photos = tiny.photos()
    boxes, _ = detector.detect(photos[tiny.PHOTO])
    x, y, size = tiny.FACE
    centre = x + size / 2  # the square's, in x and y; the box is 3 detector cells (96 px / 1.25) wide
    np.testing.assert_allclose(boxes[:, :4], [[centre - 38.4, centre - 38.4, centre + 38.4, centre + 38.4]], atol=1e-3)
    assert len(detector.detect(photos[tiny.TWO_FACES_PHOTO])[0]) == 2
    assert len(detector.detect(photos[tiny.FACELESS_PHOTO])[0]) == 0


@pytest.mark.parametrize("mode, how", [("fast", "SCRFD keypoints (fast mode)"),
                                       ("official", "RetinaFace landmarks (official)")])
def test_encode_with_the_tiny_files(loaded, mode, how):
    models, (pulid, fingerprint) = loaded
    identity, (preview,), info = pipeline.encode_identity(models[mode], pulid, fingerprint, [tiny.red_face_photo()])
    assert identity.cond.shape == (1, 32, tiny.PULID_CFG.token_dim) and torch.isfinite(identity.cond).all()
    assert preview.shape == (512, 1024, 3) and how in info


def test_eva_that_does_not_fit_the_pulid_file_is_named(loaded):
    models, _ = loaded
    other = PulidFlux(TINY_CFG_FOR_COMPAT_FLUX)  # expects 1024-wide EVA hidden states
    with pytest.raises(IncompatibleModelError, match="hidden width 64, head 768.*expects hidden width 1024"):
        pipeline.encode_identity(models["fast"], other, "x", [tiny.red_face_photo()])
