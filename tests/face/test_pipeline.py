"""A real photograph through the whole pipeline, with tiny random networks and tiny ONNX graphs that
have antelopev2's interfaces. The SCRFD stand-in "sees a face" where the image is pure red."""
import dataclasses

import numpy as np
import pytest
import torch
from skimage import data

from devkit import onnx_graphs
from face_migration.errors import FaceMigrationError, InvalidInputError, NoFaceError
from face_migration.face import pipeline
from face_migration.face.bisenet import BiSeNet, BiSeNetConfig
from face_migration.face.detection import load_scrfd
from face_migration.face.eva_clip import EvaVisionConfig, EvaVisionTower
from face_migration.face.recognition import load_arcface
from face_migration.face.retinaface import FaceDetections
from face_migration.pulid.identity import identity_from_embeddings
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


def test_per_image_keeps_one_identity_per_reference(models, pulid):
    photos = [photo_with_face(), photo_with_face(x=300, y=120)]
    concat, _, _ = pipeline.encode_identity(models, pulid, "fp", photos, combine="concat")
    per_image, _, info = pipeline.encode_identity(models, pulid, "fp", photos, combine="per image")
    assert per_image.cond.shape == per_image.uncond.shape == (2, 32, PULID.token_dim)
    torch.testing.assert_close(per_image.cond.reshape(1, 64, -1), concat.cond)
    assert "per image" in info
    with pytest.raises(InvalidInputError, match="'per image' needs a face in every reference photo"):
        pipeline.encode_identity(models, pulid, "fp", photos + [np.zeros((300, 400, 3), np.uint8)],
                                 combine="per image", skip_faceless=True)


def test_faceless_reference_is_named_or_skipped(models, pulid):
    photos = [photo_with_face(), np.zeros((300, 400, 3), np.uint8)]
    with pytest.raises(NoFaceError, match="reference image 1"):
        pipeline.encode_identity(models, pulid, "fp", photos)
    identity, previews, info = pipeline.encode_identity(models, pulid, "fp", photos, skip_faceless=True)
    assert identity.info["faces_used"] == 1 and len(previews) == 2 and "skipped" in info
    with pytest.raises(NoFaceError, match="any reference"):
        pipeline.encode_identity(models, pulid, "fp", photos[1:], skip_faceless=True)


def test_skip_faceless_skips_only_photos_without_a_face(models, pulid):
    """Other errors stop the run even when faceless photos are skipped (a face index beyond the faces)."""
    with pytest.raises(FaceMigrationError, match="Face index 50") as info:
        pipeline.encode_identity(models, pulid, "fp", [photo_with_face()], index=50, skip_faceless=True)
    assert not isinstance(info.value, NoFaceError)


def test_no_reference_image_is_not_called_a_missing_face(models, pulid):
    with pytest.raises(InvalidInputError, match="no reference image") as info:
        pipeline.encode_identity(models, pulid, "fp", [], skip_faceless=True)
    assert "No face" not in str(info.value)


@pytest.mark.parametrize("photo", [np.zeros((0, 40, 3), np.uint8), np.zeros((40, 0, 3), np.uint8),
                                   np.zeros((40, 40, 3), np.float32), np.zeros((40, 40), np.uint8)])
def test_a_photo_without_pixels_or_of_another_kind_is_named(models, photo):
    with pytest.raises(InvalidInputError, match="the reference image: expected an RGB uint8 photo"):
        pipeline.encode_reference(models, photo)


def test_face_index_out_of_range_is_explained(models, pulid):
    with pytest.raises(FaceMigrationError, match="Face index 50"):
        pipeline.encode_identity(models, pulid, "fp", [photo_with_face()], index=50)


def _with_retinaface_finding(models, monkeypatch, boxes, landmarks):
    """models with a RetinaFace stand-in that finds the given faces (boxes [n, 4], landmarks [n, 5, 2])."""
    found = FaceDetections(np.asarray(boxes, np.float32), np.full(len(boxes), 0.99, np.float32),
                           np.asarray(landmarks, np.float32), (512, 512))
    monkeypatch.setattr(pipeline, "detect_faces", lambda model, image: found)
    return pipeline.FaceModels(models.detector, models.recognizer, models.eva, models.parser, landmarker=object())


def chosen_box(models, photo):
    boxes = models.detector.detect(photo)[0]
    return boxes[pipeline.choose_face(boxes), :4]


def _shifted(box, dx):
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


def test_official_fallback_when_scrfd_misses(models, monkeypatch):
    """RetinaFace finds the face SCRFD missed: ArcFace runs on the aligned crop resized to 112."""
    faceless = data.astronaut()
    landmarks = np.array([[190, 230], [250, 230], [220, 265], [195, 295], [245, 295]], np.float32)
    with_landmarker = _with_retinaface_finding(models, monkeypatch, [[170, 200, 270, 320]], landmarks[None])
    ref = pipeline.encode_reference(with_landmarker, faceless)
    assert "official fallback" in ref.info
    crop, _ = pipeline.ffhq_crop(faceless, landmarks)
    expected = models.recognizer.embed(pipeline.resize_linear(crop, (112, 112))[None])[0]
    np.testing.assert_allclose(ref.id_vector[:512].numpy(), expected, rtol=1e-6)


OTHER_LANDMARKS = [[420, 80], [460, 80], [440, 100], [425, 120], [455, 120]]


@pytest.mark.parametrize("dx_fraction, expected_iou", [(1.5, 0.0), (0.5, 0.33)])
def test_eva_crop_stays_on_the_scrfd_face_when_retinaface_finds_someone_else(models, monkeypatch, dx_fraction,
                                                                           expected_iou):
    """RetinaFace misses the chosen face but finds another (apart, or overlapping less than the same-face
    bound): the EVA crop is aligned on the chosen face's SCRFD keypoints, and the info says why."""
    photo = photo_with_face()
    box = chosen_box(models, photo)
    other = _shifted(box, dx_fraction * (box[2] - box[0]))
    with_landmarker = _with_retinaface_finding(models, monkeypatch, [other], [OTHER_LANDMARKS])
    ref = pipeline.encode_reference(with_landmarker, photo)
    fast = pipeline.encode_reference(models, photo)  # aligned on SCRFD's keypoints
    assert f"best IoU {expected_iou:.2f} < {pipeline.SAME_FACE_MIN_IOU}" in ref.info
    assert "aligned with SCRFD keypoints (RetinaFace found no face overlapping the chosen one" in ref.info
    assert "official" not in ref.info
    np.testing.assert_array_equal(ref.preview[:, 512:], fast.preview[:, 512:])  # the same EVA input
    torch.testing.assert_close(ref.id_vector, fast.id_vector)


def test_retinaface_landmarks_are_used_for_the_same_face(models, monkeypatch):
    photo = photo_with_face()
    box = chosen_box(models, photo)
    landmarks = [[225, 230], [265, 230], [245, 250], [230, 270], [260, 270]]
    with_landmarker = _with_retinaface_finding(models, monkeypatch, [_shifted(box, 0.2 * (box[2] - box[0]))],
                                               [landmarks])  # IoU 0.67
    ref = pipeline.encode_reference(with_landmarker, photo)
    assert "aligned with RetinaFace landmarks (official)" in ref.info
    crop, _ = pipeline.ffhq_crop(pipeline.limit_long_edge(photo, pipeline.MAX_EDGE), np.float32(landmarks))
    eva_view = pipeline.eva_input(models.parser, crop, "cpu")
    expected = (eva_view[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    np.testing.assert_array_equal(ref.preview[:, 512:], expected)


def test_tiny_and_8k_images(models, pulid):
    with pytest.raises(NoFaceError, match="No face"):
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
    with pytest.raises(NoFaceError, match="reference image"):
        pipeline.face_similarities(models.detector, models.recognizer, np.zeros((64, 64, 3), np.uint8), [face])


# Batched EVA: photos are prepared one by one, then EVA runs on chunks of at most EVA_BATCH of them.
FIVE_FACES = [(200, 200), (300, 120), (100, 300), (350, 350), (120, 80)]


class CountingEva(torch.nn.Module):
    """The tiny EVA tower, recording the batch size of every forward."""

    def __init__(self, eva):
        super().__init__()
        self.eva, self.cfg, self.batches = eva, eva.cfg, []

    def forward(self, pixels):
        self.batches.append(pixels.shape[0])
        return self.eva(pixels)


class Cancelled(Exception):
    pass


@pytest.fixture
def counting(models):
    return dataclasses.replace(models, eva=CountingEva(models.eva))


@pytest.fixture
def five_photos():
    return [photo_with_face(x, y) for x, y in FIVE_FACES]


def test_eva_runs_on_chunks_of_at_most_eva_batch_photos(counting, pulid, five_photos):
    pipeline.encode_identity(counting, pulid, "fp", five_photos)
    assert counting.eva.batches == [pipeline.EVA_BATCH, len(five_photos) - pipeline.EVA_BATCH]


def test_batched_eva_equals_one_photo_at_a_time(models, pulid, five_photos, monkeypatch):
    """Hidden states, heads and identity tokens of the chunked run match per-photo encode_reference."""
    monkeypatch.setattr(pipeline, "EVA_BATCH", 2)
    labels = [f"reference image {i}" for i in range(len(five_photos))]
    alone = [pipeline.encode_reference(models, photo, label=label) for photo, label in zip(five_photos, labels)]
    batched = pipeline.embed_references(models, [pipeline.prepare_reference(models, photo, label=label)
                                                 for photo, label in zip(five_photos, labels)])
    for one, many in zip(alone, batched, strict=True):
        torch.testing.assert_close(many.id_vector, one.id_vector, atol=1e-5, rtol=1e-5)
        for h_many, h_one in zip(many.vit_hidden, one.vit_hidden, strict=True):
            torch.testing.assert_close(h_many, h_one, atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(many.preview, one.preview)
        assert many.info == one.info
    old = identity_from_embeddings(pulid, "fp", torch.stack([r.id_vector for r in alone]),
                                   [torch.stack([r.vit_hidden[s] for r in alone]) for s in range(5)])
    n, tokens, width = old.cond.shape
    expected = {"mean": old.cond.mean(0, keepdim=True), "concat": old.cond.reshape(1, n * tokens, width),
                "per image": old.cond}
    for combine, cond in expected.items():
        identity, _, _ = pipeline.encode_identity(models, pulid, "fp", five_photos, combine=combine)
        torch.testing.assert_close(identity.cond, cond, atol=1e-5, rtol=1e-5)


def test_cancel_before_a_chunk_stops_further_eva_runs(counting, pulid, five_photos, monkeypatch):
    monkeypatch.setattr(pipeline, "EVA_BATCH", 2)
    calls = []

    def cancel_before_the_second_chunk():
        calls.append(len(counting.eva.batches))
        if len(calls) == len(five_photos) + 2:  # one check per photo, then one per chunk
            raise Cancelled

    with pytest.raises(Cancelled):
        pipeline.encode_identity(counting, pulid, "fp", five_photos, check_cancel=cancel_before_the_second_chunk)
    assert counting.eva.batches == [2]
    assert calls == [0] * (len(five_photos) + 1) + [1]  # photos are all prepared before EVA runs


def test_progress_moves_monotonically_to_completion(counting, pulid, monkeypatch):
    """Each photo counts once when prepared and once through EVA; a skipped photo needs no EVA pass."""
    monkeypatch.setattr(pipeline, "EVA_BATCH", 2)
    faceless = np.zeros((300, 400, 3), np.uint8)
    photos = [photo_with_face(), faceless, photo_with_face(300, 120), photo_with_face(100, 300)]
    progress = []
    pipeline.encode_identity(counting, pulid, "fp", photos, skip_faceless=True,
                             on_progress=lambda done, total: progress.append((done, total)))
    assert progress == [(1, 8), (2, 8), (3, 8), (4, 8), (7, 8), (8, 8)]


def test_a_skipped_faceless_photo_has_a_preview_and_stays_out_of_eva(counting, pulid):
    faceless = np.zeros((300, 400, 3), np.uint8)
    photos = [photo_with_face(), faceless, photo_with_face(300, 120)]
    identity, previews, info = pipeline.encode_identity(counting, pulid, "fp", photos, skip_faceless=True)
    assert counting.eva.batches == [2] and identity.info["faces_used"] == 2
    assert len(previews) == 3 and previews[1].shape == (512, 1024, 3)
    assert not previews[1].any()  # a black photo, no box, and no EVA view
    assert "reference image 1: skipped, no face" in info
