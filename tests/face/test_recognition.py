import numpy as np
import pytest

from face_migration.errors import ModelFileError
from face_migration.face import recognition
from devkit import onnx_graphs


def _recognizer(tmp_path, **graph_args):
    path = onnx_graphs.save(onnx_graphs.arcface_model(**graph_args), tmp_path / "glintr100.onnx")
    return recognition.load_arcface(path, "CPU")


def _crop(r, g, b):
    crop = np.zeros((112, 112, 3), np.uint8)
    crop[..., 0], crop[..., 1], crop[..., 2] = r, g, b
    return crop


@pytest.mark.parametrize("batch", ["None", 1])
def test_embedding_is_raw_rgb_normalised_by_127_5(tmp_path, batch):
    model = _recognizer(tmp_path, batch=batch)
    out = model.embed(np.stack([_crop(255, 0, 100), _crop(0, 255, 255)]))
    assert out.shape == (2, 512) and out.dtype == np.float32
    # The stand-in's first 3 outputs are the mean R, G, B of the blob: RGB order, (x - 127.5) / 127.5.
    np.testing.assert_allclose(out[:, :3], [[1, -1, (100 - 127.5) / 127.5], [-1, 1, 1]], atol=1e-5)
    # Raw, not L2-normalised (PuLID uses the raw vector).
    assert np.linalg.norm(out[0]) > 2


def test_single_crop_gives_one_row(tmp_path):
    assert _recognizer(tmp_path).embed(_crop(1, 2, 3)).shape == (1, 512)


def test_wrong_crop_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="112x112"):
        _recognizer(tmp_path).embed(np.zeros((1, 64, 64, 3), np.uint8))


@pytest.mark.parametrize("graph_args, message", [
    (dict(size=128), "not an ArcFace recognizer"),
    (dict(dim=256), "not a 512-d ArcFace recognizer"),
])
def test_wrong_model_is_rejected_naming_the_file(tmp_path, graph_args, message):
    with pytest.raises(ModelFileError, match=message) as err:
        _recognizer(tmp_path, **graph_args)
    assert "glintr100.onnx" in str(err.value) and "download" in str(err.value)


def test_detector_file_given_as_recognizer_is_rejected(tmp_path):
    path = onnx_graphs.save(onnx_graphs.scrfd_model(), tmp_path / "scrfd_10g_bnkps.onnx")
    with pytest.raises(ModelFileError, match="scrfd_10g_bnkps.onnx is not an ArcFace"):
        recognition.load_arcface(path, "CPU")


def test_cosine_similarity():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=512).astype(np.float32)
    ortho = rng.normal(size=512)
    ortho -= ortho @ ref / (ref @ ref) * ref
    others = np.stack([ref * 3.0, -ref, ortho, np.zeros(512)])
    np.testing.assert_allclose(recognition.cosine_similarity(ref, others), [1, -1, 0, 0], atol=1e-6)
