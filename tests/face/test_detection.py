import numpy as np
from devkit import onnx_graphs
import pytest

from face_migration.errors import ModelFileError
from face_migration.face import detection
from face_migration.face.resample import resize_linear


def _detector(tmp_path, **graph_args):
    path = onnx_graphs.save(onnx_graphs.scrfd_model(**graph_args), tmp_path / "scrfd_10g_bnkps.onnx")
    return detection.load_scrfd(path, "CPU")


@pytest.mark.parametrize("hw, new_hw", [((480, 960), (320, 640)), ((1000, 300), (640, 192)), ((50, 50), (640, 640))])
def test_letterbox_keeps_aspect_at_top_left(hw, new_hw):
    image = np.random.default_rng(0).integers(1, 256, (*hw, 3), dtype=np.uint8)
    canvas, scale = detection.letterbox(image)
    assert canvas.shape == (640, 640, 3)
    assert scale == pytest.approx(new_hw[0] / hw[0])
    np.testing.assert_array_equal(canvas[:new_hw[0], :new_hw[1]], resize_linear(image, new_hw[::-1]))
    assert not canvas[new_hw[0]:].any() and not canvas[:, new_hw[1]:].any()


def test_blob_is_rgb_nchw_centered_on_127_5_over_128():
    canvas = np.zeros((4, 4, 3), np.uint8)
    canvas[..., 0], canvas[..., 1], canvas[..., 2] = 255, 0, 128
    blob = detection.detector_blob(canvas)
    assert blob.shape == (1, 3, 4, 4) and blob.dtype == np.float32
    np.testing.assert_allclose(blob[0, :, 0, 0], [127.5 / 128, -127.5 / 128, 0.5 / 128])


def test_anchor_centers_row_major_two_per_cell_no_half_offset():
    centers = detection.anchor_centers(2, 3, 16)
    expected = [(x * 16, y * 16) for y in range(2) for x in range(3) for _ in range(2)]
    np.testing.assert_array_equal(centers, expected)


def _raw_outputs(hits: dict, size: int = 640, batched: bool = False):
    """Zero SCRFD outputs except hits {(stride, row): (score, box distances, kps offsets)}."""
    outs = []
    for width in (1, 4, 10):
        for s in detection.STRIDES:
            outs.append(np.zeros(((size // s) ** 2 * 2, width), np.float32))
    for (s, row), (score, box, kps) in hits.items():
        level = detection.STRIDES.index(s)
        outs[level][row, 0] = score
        outs[level + 3][row] = box
        outs[level + 6][row] = kps
    return [o[None] for o in outs] if batched else outs


@pytest.mark.parametrize("batched", [False, True])
def test_decode_distances_scaled_by_stride_from_anchor_center(batched):
    # stride 16, cell (row 3, col 5), anchor 1 -> row (3 * 40 + 5) * 2 + 1; center (80, 48).
    row = (3 * 40 + 5) * 2 + 1
    kps = np.arange(10, dtype=np.float32) / 10
    boxes, points = detection.decode(_raw_outputs({(16, row): (0.9, [1, 2, 3, 4], kps)}, batched=batched), (640, 640))
    np.testing.assert_allclose(boxes, [[80 - 16, 48 - 32, 80 + 48, 48 + 64, 0.9]], rtol=1e-6)
    np.testing.assert_allclose(points[0], np.array([80, 48]) + kps.reshape(5, 2) * 16, rtol=1e-6)


def test_decode_threshold_is_inclusive():
    outs = _raw_outputs({(8, 0): (0.5, [1] * 4, [0] * 10), (8, 2): (0.4999, [1] * 4, [0] * 10)})
    boxes, _ = detection.decode(outs, (640, 640))
    assert len(boxes) == 1 and boxes[0, 4] == 0.5


def test_nms_uses_plus_one_areas_and_score_order():
    # a and b: with +1 areas IoU = 6*10 / (100 + 100 - 60) = 0.43 > 0.4, so the better b suppresses a;
    # with plain areas it would be 5*9 / (81 + 81 - 45) = 0.385 and a would stay. c is elsewhere.
    a = [0, 0, 9, 9, 0.8]
    b = [4, 0, 13, 9, 0.9]
    c = [0, 20, 9, 29, 0.7]
    keep = detection.nms(np.array([a, b, c], np.float32), 0.4)
    assert list(keep) == [1, 2]


def test_nms_keeps_overlap_equal_to_threshold():
    # +1 areas 10*14 = 140 each, intersection 10*8 = 80: IoU = 80 / 200 = 0.4, not above 0.4.
    a = [0, 0, 9, 13, 0.9]
    b = [0, 6, 9, 19, 0.8]
    assert list(detection.nms(np.array([a, b], np.float32), 0.4)) == [0, 1]


def _red_square(hw, x0, y0, side):
    image = np.zeros((*hw, 3), np.uint8)
    image[y0:y0 + side, x0:x0 + side, 0] = 255
    return image


def test_detects_one_face_at_known_box_in_image_pixels(tmp_path):
    detector = _detector(tmp_path)
    # 480x960 -> letterbox scale 2/3; a red square on letterbox cell (row 3, col 5) of stride 32
    # covers letterbox pixels [160, 192) x [96, 128), i.e. image pixels [240, 288) x [144, 192).
    boxes, kps = detector.detect(_red_square((480, 960), 240, 144, 48))
    assert boxes.shape == (1, 5) and kps.shape == (1, 5, 2)
    cx, cy, scale = 160, 96, 2 / 3  # anchor center = cell corner (no +0.5)
    np.testing.assert_allclose(boxes[0, :4], np.array([cx - 48, cy - 48, cx + 48, cy + 48]) / scale, rtol=1e-5)
    assert boxes[0, 4] > 0.99
    expected_kps = (np.array([cx, cy]) + np.linspace(-1, 1, 10).reshape(5, 2) * 32) / scale
    np.testing.assert_allclose(kps[0], expected_kps, rtol=1e-5)


def test_detector_feeds_rgb(tmp_path):
    # The stand-in only sees the first channel: a blue square fed as BGR would be "found".
    image = np.zeros((480, 960, 3), np.uint8)
    image[144:192, 240:288, 2] = 255
    boxes, _ = _detector(tmp_path).detect(image)
    assert len(boxes) == 0


def test_overlapping_candidates_across_strides_reduce_to_the_best(tmp_path):
    # Stride 16 fires on the 4 cells of each square too (lower score, 2 anchors each) with boxes that
    # overlap the stride-32 box by IoU 0.53 to 1: NMS keeps one box per square, the stride-32 one.
    detector = _detector(tmp_path, score_gain={16: 3.0, 32: 4.0}, score_bias={16: 0.0, 32: 0.0},
                         box={16: (2.0, 2.0, 4.0, 4.0), 32: (1.0, 1.0, 2.0, 2.0)})
    image = _red_square((640, 640), 320, 320, 32)
    image[64:96, 64:96, 0] = 255
    boxes, _ = detector.detect(image)
    # Equal scores keep decoding order: the upper-left square's cell comes first.
    np.testing.assert_allclose(boxes[:, :4], [[64 - 32, 64 - 32, 64 + 64, 64 + 64],
                                              [320 - 32, 320 - 32, 320 + 64, 320 + 64]])
    np.testing.assert_allclose(boxes[:, 4], 1 / (1 + np.exp(-4 * 127.5 / 128)), rtol=1e-5)


def test_no_face_gives_empty_arrays(tmp_path):
    boxes, kps = _detector(tmp_path).detect(np.zeros((300, 200, 3), np.uint8))
    assert boxes.shape == (0, 5) and kps.shape == (0, 5, 2)


@pytest.mark.parametrize("graph_args, message", [
    (dict(with_kps=False), "6 outputs"),
    (dict(input_channels=1), "not an SCRFD face detector"),
])
def test_wrong_model_is_rejected_naming_the_file(tmp_path, graph_args, message):
    with pytest.raises(ModelFileError, match=message) as err:
        _detector(tmp_path, **graph_args)
    assert "scrfd_10g_bnkps.onnx" in str(err.value)


def test_wrong_anchor_count_is_rejected_on_first_run(tmp_path):
    detector = _detector(tmp_path, anchors=1)
    with pytest.raises(ModelFileError, match="2 anchors per cell"):
        detector.detect(np.zeros((64, 64, 3), np.uint8))


def test_output_width_checked_in_order():
    class Arg:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape
    outputs = [Arg(str(i), ["n", w]) for i, w in enumerate((1, 1, 1, 4, 4, 4, 10, 10, 10))]
    outputs[3], outputs[6] = outputs[6], outputs[3]  # a bbox and a kps map swapped
    with pytest.raises(ModelFileError, match="stride-8 bbox map with 4 value"):
        detection.check_scrfd_io([Arg("input.1", [1, 3, "?", "?"])], outputs, "x.onnx")


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "scrfd_10g_bnkps.onnx"
    path.write_bytes(b"not an onnx model")
    with pytest.raises(ModelFileError, match="scrfd_10g_bnkps.onnx"):
        detection.load_scrfd(str(path), "CPU")
