"""A real photograph through the whole pipeline, with tiny random networks and tiny ONNX graphs that
have antelopev2's interfaces. The SCRFD stand-in "sees a face" where the image is pure red."""
import numpy as np
import pytest
import torch
from skimage import data

from tests.face import onnx_graphs
from face_migration.errors import FaceMigrationError
from face_migration.face import pipeline
from face_migration.face.bisenet import BiSeNet, BiSeNetConfig
from face_migration.face.detection import load_scrfd
from face_migration.face.eva_clip import EvaVisionConfig, EvaVisionTower
from face_migration.face.recognition import load_arcface
from face_migration.face.retinaface import FaceDetections
from face_migration.pulid.model import PulidConfig, PulidFlux

EVA = EvaVisionConfig(width=64, layers=21, mlp_hidden=96, patch_size=14, image_size=56, embed_dim=768)
PULID = PulidConfig(encoder_dim=64, encoder_depth=5, id_mapping_dim=32, vit_dim=64, vit_mapping_dim=32,
                    token_dim=48, flux_hidden=32, ca_inner_dim=128, num_ca=2)
# Face-like keypoints in stride units around the anchor (eyes, nose, mouth corners).
KEYPOINTS = (-0.4, -0.3, 0.4, -0.3, 0.0, 0.1, -0.3, 0.5, 0.3, 0.5)


def _randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g) if name.endswith("norm1.weight") or
                    ".weight" in name and p.ndim == 1 else 0.05 * torch.randn(p.shape, generator=g))
    return module.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("antelopev2")
    scrfd = onnx_graphs.scrfd_model(score_gain={32: 100.0}, score_bias={32: -95.0}, kps=KEYPOINTS)
    detector = load_scrfd(onnx_graphs.save(scrfd, folder / "scrfd_10g_bnkps.onnx"), "CPU")
    recognizer = load_arcface(onnx_graphs.save(onnx_graphs.arcface_model(), folder / "glintr100.onnx"), "CPU")
    return pipeline.FaceModels(detector, recognizer, _randomised(EvaVisionTower(EVA), 1),
                               _randomised(BiSeNet(BiSeNetConfig(width=8, context=16, fuse=32, head=16, aux_head=8)), 2),
                               landmarker=None)


@pytest.fixture(scope="module")
def pulid():
    return _randomised(PulidFlux(PULID), 3)


def photo_with_face(x=200, y=200, size=90):
    image = data.astronaut().copy()  # 512x512 RGB uint8
    image[y:y + size, x:x + size] = (255, 0, 0)
    return image


def test_astronaut_to_identity_preview_and_info(models, pulid):
    identity, previews, info = pipeline.encode_identity(models, pulid, "fp", [photo_with_face()])
    assert identity.cond.shape == identity.uncond.shape == (1, 32, PULID.token_dim)
    assert torch.isfinite(identity.cond).all() and not torch.equal(identity.cond, identity.uncond)
    (preview,) = previews
    assert preview.shape == (512, 1024, 3) and preview.dtype == np.uint8
    assert ((preview[:, :512] == (40, 220, 60)).all(axis=-1)).sum() > 100  # the chosen face is boxed in green
    eva_view = preview[:, 512:].astype(int)
    assert (eva_view[..., 0] == eva_view[..., 1]).all() and (eva_view[..., 1] == eva_view[..., 2]).all()
    assert "face(s) found by SCRFD" in info and "SCRFD keypoints (fast mode)" in info


def test_reference_vector_is_raw_arcface_then_unit_eva(models):
    ref = pipeline.encode_reference(models, photo_with_face())
    assert ref.id_vector.shape == (1280,)
    assert torch.linalg.vector_norm(ref.id_vector[512:]).item() == pytest.approx(1.0, abs=1e-5)
    assert len(ref.vit_hidden) == 5 and ref.vit_hidden[0].shape == ((EVA.image_size // 14) ** 2 + 1, EVA.width)


def test_mean_and_concat_of_references(models, pulid):
    photos = [photo_with_face(), photo_with_face(x=300, y=120)]
    mean, _, _ = pipeline.encode_identity(models, pulid, "fp", photos, combine="mean")
    concat, previews, _ = pipeline.encode_identity(models, pulid, "fp", photos, combine="concat")
    assert mean.cond.shape == (1, 32, PULID.token_dim) and concat.cond.shape == (1, 64, PULID.token_dim)
    torch.testing.assert_close(mean.cond[0], (concat.cond[0, :32] + concat.cond[0, 32:]) / 2)
    assert len(previews) == 2


def test_faceless_reference_is_named_or_skipped(models, pulid):
    photos = [photo_with_face(), np.zeros((300, 400, 3), np.uint8)]
    with pytest.raises(FaceMigrationError, match="reference image 1"):
        pipeline.encode_identity(models, pulid, "fp", photos)
    identity, previews, info = pipeline.encode_identity(models, pulid, "fp", photos, skip_faceless=True)
    assert identity.info["faces_used"] == 1 and len(previews) == 2 and "skipped" in info
    with pytest.raises(FaceMigrationError, match="any reference"):
        pipeline.encode_identity(models, pulid, "fp", photos[1:], skip_faceless=True)


def test_face_index_out_of_range_is_explained(models, pulid):
    with pytest.raises(FaceMigrationError, match="Face index 50"):
        pipeline.encode_identity(models, pulid, "fp", [photo_with_face()], index=50)


def test_official_fallback_when_scrfd_misses(models, monkeypatch):
    """RetinaFace finds the face SCRFD missed: ArcFace runs on the aligned crop resized to 112."""
    faceless = data.astronaut()
    landmarks = np.array([[190, 230], [250, 230], [220, 265], [195, 295], [245, 295]], np.float32)
    found = FaceDetections(np.array([[170, 200, 270, 320]], np.float32), np.array([0.99], np.float32),
                           landmarks[None], faceless.shape[:2])
    monkeypatch.setattr(pipeline, "detect_faces", lambda model, image: found)
    with_landmarker = pipeline.FaceModels(models.detector, models.recognizer, models.eva, models.parser,
                                          landmarker=object())
    ref = pipeline.encode_reference(with_landmarker, faceless)
    assert "official fallback" in ref.info
    crop, _ = pipeline.ffhq_crop(faceless, landmarks)
    expected = models.recognizer.embed(pipeline.resize_linear(crop, (112, 112))[None])[0]
    np.testing.assert_allclose(ref.id_vector[:512].numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("image", [
    np.random.default_rng(0).random((64, 48, 4), np.float32),  # RGBA
    np.random.default_rng(1).random((64, 48, 1), np.float32),  # greyscale
])
def test_comfy_images_become_rgb_uint8(image):
    rgb = pipeline.to_rgb_uint8(image)
    assert rgb.shape == (64, 48, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].tolist() == np.clip(np.rint(image[..., 0] * 255), 0, 255).astype(np.uint8).tolist()


def test_tiny_and_8k_images(models, pulid):
    with pytest.raises(FaceMigrationError, match="No face"):
        pipeline.encode_reference(models, np.zeros((40, 30, 3), np.uint8))
    huge = np.zeros((4320, 7680, 3), np.uint8)
    huge[1500:2700, 3000:4200] = (255, 0, 0)
    ref = pipeline.encode_reference(models, huge)
    assert ref.preview.shape == (512, 1024, 3) and "score" in ref.info


def test_face_similarity(models):
    face = photo_with_face()
    scores, text = pipeline.face_similarities(models.detector, models.recognizer, face,
                                              [face, np.zeros((100, 100, 3), np.uint8)])
    assert scores[0] == pytest.approx(1.0, abs=1e-5) and scores[1] == 0.0
    assert "image 1: no face found" in text
    with pytest.raises(FaceMigrationError, match="reference image"):
        pipeline.face_similarities(models.detector, models.recognizer, np.zeros((64, 64, 3), np.uint8), [face])
