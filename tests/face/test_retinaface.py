"""RetinaFace: decoding and NMS on crafted head outputs, face choice, strict loading of .pth files.
Loading tests use a tiny variant (same key layout, small widths) so they run in milliseconds."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from face_migration.errors import ModelFileError
from face_migration.face import bisenet as bs
from face_migration.face import pipeline
from face_migration.face import retinaface as rf
from devkit import facexlib_data as fd

TINY = rf.RetinaFaceConfig(width=8, blocks=(1, 2, 1, 1), fpn_channels=16)
H = W = 64  # crafted outputs: 8x8, 4x4, 2x2 cells x 2 anchors = 168 priors


def _prior(level: int, i: int, j: int, anchor: int) -> int:
    offset, grids = 0, [math.ceil(H / s) for s in rf.STEPS]
    for lv in range(level):
        offset += grids[lv] ** 2 * 2
    return offset + (i * grids[level] + j) * 2 + anchor


def _crafted():
    """Head outputs for a 64x64 image with hand-placed faces; everything else scores 0."""
    p = len(rf.prior_boxes(H, W))
    loc, landms = torch.zeros(p, 4), torch.zeros(p, 10)
    conf = torch.tensor([[1.0, 0.0]]).repeat(p, 1)

    def face(idx, score, dx_px=0.0, size_log2=0.0, min_size=16):
        conf[idx] = torch.tensor([1 - score, score])
        loc[idx, 0] = dx_px / (rf.VARIANCES[0] * min_size)
        loc[idx, 2:] = size_log2 * math.log(2) / rf.VARIANCES[1]

    a = _prior(0, 3, 4, 0)  # 16 px anchor centred at (36, 28): box [28, 20, 44, 36]
    face(a, 0.99)
    landms[a] = torch.tensor([1.0, 0, -1, 0, 0, 2, 1, 1, -1, 1])  # x 0.1*16 = 1.6 px per unit
    face(_prior(0, 3, 5, 0), 0.98, dx_px=-8)  # same box from the next cell: IoU 1, suppressed
    face(_prior(0, 3, 2, 0), 0.985, dx_px=+9)  # shifted 7 px left of A: IoU 0.391 (0.417 with "+1"), kept
    face(_prior(0, 3, 6, 0), 0.975, dx_px=-10)  # shifted 6 px right of A: IoU 0.455, suppressed
    face(_prior(1, 0, 0, 0), 0.972, size_log2=-1, min_size=64)  # 32 px box at (8, 8): kept
    face(_prior(2, 1, 1, 1), 0.96, min_size=512)  # below 0.97: dropped
    return loc, conf, landms


def test_decode_threshold_nms_and_pixel_coordinates():
    dets = rf.decode_detections(*_crafted(), H, W, conf_threshold=0.97, nms_threshold=0.4)
    np.testing.assert_allclose(dets.scores, [0.99, 0.985, 0.972], rtol=1e-6)
    np.testing.assert_allclose(dets.boxes, [[28, 20, 44, 36], [21, 20, 37, 36], [-8, -8, 24, 24]], atol=1e-4)
    np.testing.assert_allclose(dets.landmarks[0], [[37.6, 28], [34.4, 28], [36, 31.2], [37.6, 29.6], [34.4, 29.6]],
                               atol=1e-4)
    assert dets.image_size == (H, W)


def test_decode_keeps_lower_boxes_without_nms_pressure():
    dets = rf.decode_detections(*_crafted(), H, W, conf_threshold=0.5, nms_threshold=1.0)
    assert len(dets) == 6  # every crafted face, including the suppressed ones and the 0.96 one


def test_decode_rejects_outputs_for_another_image_size():
    with pytest.raises(ValueError, match="priors"):
        rf.decode_detections(*_crafted(), H + 32, W, conf_threshold=0.97)


def test_priors_follow_ceil_grid_and_anchor_sizes():
    pri = rf.prior_boxes(50, 70)
    assert len(pri) == (7 * 9 + 4 * 5 + 2 * 3) * 2
    np.testing.assert_allclose(pri[0].numpy(), [4 / 70, 4 / 50, 16 / 70, 16 / 50], rtol=1e-6)
    np.testing.assert_allclose(pri[1, 2:].numpy(), [32 / 70, 32 / 50], rtol=1e-6)
    np.testing.assert_allclose(pri[2, :2].numpy(), [12 / 70, 4 / 50], rtol=1e-6)  # next column, same row


def _dets(boxes, size=(100, 200)):
    boxes = np.asarray(boxes, dtype=np.float32)
    return rf.FaceDetections(boxes, np.linspace(0.99, 0.98, len(boxes)).astype(np.float32),
                             np.zeros((len(boxes), 5, 2), np.float32), size)


def test_center_face_is_nearest_image_centre_not_largest_or_best():
    dets = _dets([[0, 0, 90, 90], [90, 40, 110, 60], [150, 10, 200, 60]])  # centre of 200x100 is (100, 50)
    assert rf.choose_center_face(dets) == 1
    assert rf.choose_center_face(_dets(np.zeros((0, 4)))) is None


def test_nearest_face_is_the_same_face_or_none():
    """With the pipeline's bound, a RetinaFace box counts only when it is the SCRFD face: another person's
    face (no overlap, or a neighbour's box overlapping a little) is never taken for it."""
    dets = _dets([[0, 0, 90, 90], [90, 40, 110, 60], [150, 10, 200, 60]])
    same = pipeline.SAME_FACE_MIN_IOU
    assert rf.choose_nearest_face(dets, [140, 0, 195, 55], min_iou=same) == 2  # IoU 0.58 with the right face
    assert rf.choose_nearest_face(dets, [5, 5, 80, 95], min_iou=same) == 0
    assert rf.choose_nearest_face(dets, [120, 90, 130, 100], min_iou=same) is None  # no overlap at all
    assert rf.choose_nearest_face(dets, [170, 30, 220, 80], min_iou=same) is None  # IoU 0.22 with the right face
    assert rf.choose_nearest_face(_dets(np.zeros((0, 4))), [0, 0, 1, 1], min_iou=same) is None


def _tiny_state(prefix: str = "") -> dict[str, torch.Tensor]:
    model = rf.RetinaFace(TINY)
    sd = fd.state_dict_for({k: tuple(v.shape) for k, v in model.state_dict().items()})
    return {prefix + k: v for k, v in sd.items()}


def _reference_outputs(state, image):
    model = rf.RetinaFace(TINY)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    with torch.no_grad():
        return model.eval()(rf.to_network_input(image, "cpu", torch.float32))


@pytest.mark.parametrize("prefix", ["", "module."])
def test_load_reads_sizes_from_shapes_and_strips_module_prefix(tmp_path, prefix):
    state = _tiny_state(prefix)
    path = tmp_path / "detection_Resnet50_Final.pth"
    torch.save(state, path)
    model = rf.load_retinaface(str(path))
    assert model.cfg == TINY and model.cfg.leaky == 0.1
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    image = fd.retinaface_image()[:40, :56]
    with torch.no_grad():
        ours = model(rf.to_network_input(image, "cpu", torch.float32))
    for a, b in zip(ours, _reference_outputs(state, image)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # BatchNorms folded: equal up to rounding


def test_load_accepts_files_without_batchnorm_counters(tmp_path):
    state = {k: v for k, v in _tiny_state().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "r.pth")
    assert rf.load_retinaface(str(tmp_path / "r.pth")).cfg == TINY


def _load_error(tmp_path, state) -> str:
    torch.save(state, tmp_path / "detection_Resnet50_Final.pth")
    with pytest.raises(ModelFileError) as exc:
        rf.load_retinaface(str(tmp_path / "detection_Resnet50_Final.pth"))
    msg = str(exc.value)
    assert "detection_Resnet50_Final.pth" in msg and "models/facexlib" in msg
    return msg


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path):
    state = _tiny_state()
    del state["fpn.merge1.1.running_var"]
    state["extra.weight"] = torch.zeros(1)
    state["LandmarkHead.2.conv1x1.bias"] = torch.zeros(7)
    msg = _load_error(tmp_path, state)
    assert "fpn.merge1.1.running_var" in msg and "extra.weight" in msg
    assert "LandmarkHead.2.conv1x1.bias: [7] instead of [20]" in msg


def test_bisenet_file_given_as_detector_says_what_it_is(tmp_path):
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in bs.BiSeNet(bs.BiSeNetConfig(width=8, context=16, fuse=32, head=16,
                                                                               aux_head=8)).state_dict().items()}
    assert "BiSeNet" in _load_error(tmp_path, fd.state_dict_for(shapes))


def test_code_carrying_pickle_is_refused(tmp_path):
    torch.save({"body.conv1.weight": torch.zeros(1), "hook": ModelFileError("x")}, tmp_path / "detection_Resnet50_Final.pth")
    with pytest.raises(ModelFileError, match="without running code"):
        rf.load_retinaface(str(tmp_path / "detection_Resnet50_Final.pth"))


def test_safetensors_and_garbage_files_are_refused(tmp_path):
    path = tmp_path / "detection_Resnet50_Final.pth"
    save_file({"body.stage1.0.0.weight": torch.zeros(2)}, str(path))
    with pytest.raises(ModelFileError, match="safetensors.*MobileNet"):
        rf.load_retinaface(str(path))
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(ModelFileError, match="could not be read.*models/facexlib"):
        rf.load_retinaface(str(path))
