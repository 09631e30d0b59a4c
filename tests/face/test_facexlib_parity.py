"""Our RetinaFace-ResNet50 and BiSeNet against facexlib's, on the same seeded weights and inputs.

The fixtures hold facexlib's outputs (scripts/make_facexlib_fixtures.py); here the full-size networks
are built with the same weights (devkit/facexlib_data.py) and run once on the same small inputs."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from face_migration.face import bisenet as bs
from face_migration.face import retinaface as rf
from face_migration.face.conv_fold import fold_batch_norms
from devkit import facexlib_data as fd
from devkit.parity_data import checksum

RTOL = 1e-5  # max |ours - facexlib| relative to max |facexlib|, fp32


def _fixture(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = os.path.join(fd.FIXTURES, name)
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _seeded(model: torch.nn.Module, meta: dict[str, str]) -> torch.nn.Module:
    sd = fd.state_dict_for({k: tuple(v.shape) for k, v in model.state_dict().items()})
    assert checksum(sd) == pytest.approx(float(meta["weights_checksum"]), rel=1e-12), \
        "the seeded weights changed: regenerate the fixtures"
    model.load_state_dict(sd, strict=True, assign=True)
    return fold_batch_norms(model.eval())  # as the loaders hand the networks to the pipeline


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def retina():
    tensors, meta = _fixture(fd.RETINAFACE_FIXTURE)
    with torch.device("meta"):
        model = rf.RetinaFace()
    return _seeded(model, meta), tensors, meta


def test_retinaface_raw_outputs_match_facexlib(retina):
    model, ref, _ = retina
    x = rf.to_network_input(fd.retinaface_image(), "cpu", torch.float32)
    with torch.no_grad():
        loc, conf, landms = model(x)
    for name, ours in (("loc", loc[0]), ("conf", conf[0]), ("landms", landms[0])):
        err = _rel_err(ours, ref[name])
        assert err < RTOL, f"{name}: relative error {err:.2e}"


def test_priors_match_facexlib(retina):
    _, ref, meta = retina
    h, w = map(int, meta["image_hw"].split(","))
    assert torch.equal(rf.prior_boxes(h, w), ref["priors"])


def test_decoding_and_nms_match_facexlib(retina):
    _, ref, meta = retina
    h, w = map(int, meta["image_hw"].split(","))
    dets = rf.decode_detections(ref["loc"], ref["conf"], ref["landms"], h, w,
                                conf_threshold=float(meta["decode_threshold"]))
    expected = ref["dets"].numpy()
    assert 10 < len(dets) < int((ref["conf"][:, 1] > float(meta["decode_threshold"])).sum())  # NMS removed some
    assert len(dets) == len(expected)
    np.testing.assert_allclose(dets.boxes, expected[:, :4], rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(dets.scores, expected[:, 4])
    np.testing.assert_allclose(dets.landmarks.reshape(-1, 10), expected[:, 5:], rtol=1e-6, atol=1e-4)


def test_detect_faces_end_to_end_matches_facexlib(retina):
    model, ref, meta = retina
    dets = rf.detect_faces(model, fd.retinaface_image(), conf_threshold=float(meta["decode_threshold"]))
    expected = ref["dets"].numpy()
    assert len(dets) == len(expected)
    scale = np.abs(expected[:, :4]).max()
    assert np.abs(dets.boxes - expected[:, :4]).max() / scale < 1e-4  # decoded from outputs equal to ~1e-6


def test_bisenet_outputs_match_facexlib():
    ref, meta = _fixture(fd.BISENET_FIXTURE)
    with torch.device("meta"):
        model = bs.BiSeNet()
    model = _seeded(model, meta)
    img = fd.bisenet_input()
    with torch.no_grad():
        out, out16, out32 = model(bs.normalize(img), aux=True)
    m, a = fd.BISENET_MAIN_STRIDE, fd.BISENET_AUX_STRIDE
    for name, ours in (("out", out[0, :, ::m, ::m]), ("out16", out16[0, :, ::a, ::a]),
                       ("out32", out32[0, :, ::a, ::a])):
        err = _rel_err(ours, ref[name])
        assert err < RTOL, f"{name}: relative error {err:.2e}"
    labels = bs.parse_labels(model, img)[0]
    top2 = out[0].topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-4  # pixels whose argmax cannot flip within the tolerance
    assert clear.float().mean() > 0.99
    assert torch.equal(labels[clear], ref["labels"].long()[clear])
    assert len(ref["labels"].unique()) > 3
