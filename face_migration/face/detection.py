"""SCRFD face detection (antelopev2 scrfd_10g_bnkps.onnx) on onnxruntime, decoded as insightface does
at det_size 640 (pulid-spec 7.2): letterbox, 9 outputs, anchor-distance decoding, score >= 0.5, NMS 0.4.

Images are RGB uint8 HxWx3. Results: boxes [n, 5] (x1, y1, x2, y2, score) and keypoints [n, 5, 2]
(left eye, right eye, nose, left mouth corner, right mouth corner), float32, in the image's pixels,
highest score first.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelFileError
from .onnx_runtime import create_session
from .resample import resize_linear

DETECT_SIZE = 640
SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.4
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
_OUTPUT_KINDS = (("score", 1), ("bbox", 4), ("kps", 10))  # output groups in order, values per anchor


def letterbox(image: np.ndarray, size: int = DETECT_SIZE) -> tuple[np.ndarray, float]:
    """Scale the image to fit size x size keeping its aspect ratio (int-truncated sides, bilinear) and
    paste it at the top-left of a black canvas. Returns (canvas, scale); image = canvas / scale."""
    h, w = image.shape[:2]
    if h / w > 1:
        new_h, new_w = size, int(size / (h / w))
    else:
        new_w, new_h = size, int(size * (h / w))
    # A sliver of an image (e.g. 1x1000) would truncate to 0 pixels; keep one.
    new_w, new_h = max(new_w, 1), max(new_h, 1)
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:new_h, :new_w] = resize_linear(image, (new_w, new_h))
    return canvas, new_h / h


def detector_blob(canvas: np.ndarray) -> np.ndarray:
    """RGB uint8 HxWx3 -> float32 [1, 3, H, W], (x - 127.5) / 128."""
    return ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]


def anchor_centers(height: int, width: int, stride: int, anchors: int = ANCHORS_PER_CELL) -> np.ndarray:
    """[height * width * anchors, 2] (x, y) = (col * stride, row * stride): rows outer, columns inner,
    each repeated per anchor. No half-pixel offset (SCRFD's convention)."""
    ys, xs = np.mgrid[:height, :width]
    centers = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centers, anchors, axis=0)


def decode(outputs: list[np.ndarray], input_hw: tuple[int, int], threshold: float = SCORE_THRESHOLD
           ) -> tuple[np.ndarray, np.ndarray]:
    """The 9 raw SCRFD outputs [score s8, s16, s32, bbox s8, s16, s32, kps s8, s16, s32] -> candidates
    with score >= threshold, in input (letterbox) pixels: boxes [n, 5], keypoints [n, 5, 2], in level
    then anchor order (not sorted, no NMS). Distances are in stride units."""
    boxes, points = [], []
    n = len(STRIDES)
    for level, stride in enumerate(STRIDES):
        # Batched exports have a leading batch axis; this detector runs one image.
        scores, dist, kdist = (np.asarray(o[0] if np.ndim(o) == 3 else o, np.float32)
                               for o in (outputs[level], outputs[level + n], outputs[level + 2 * n]))
        centers = anchor_centers(input_hw[0] // stride, input_hw[1] // stride, stride)
        keep = np.nonzero(scores.reshape(-1) >= threshold)[0]
        c = centers[keep]
        d = dist.reshape(-1, 4)[keep] * stride
        k = kdist.reshape(-1, 10)[keep].reshape(-1, 5, 2) * stride
        boxes.append(np.column_stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2],
                                      c[:, 1] + d[:, 3], scores.reshape(-1)[keep]]))
        points.append(c[:, None, :] + k)
    return np.concatenate(boxes).astype(np.float32), np.concatenate(points).astype(np.float32)


def nms(boxes: np.ndarray, threshold: float = NMS_THRESHOLD) -> np.ndarray:
    """Greedy non-maximum suppression on [n, 5] boxes (x1, y1, x2, y2, score), the "+1 pixel" area
    convention of insightface; a box is dropped when its IoU with a kept one exceeds threshold.
    Returns the kept indices, highest score first (equal scores in the order numpy's default argsort,
    reversed, leaves them, as insightface does: that decides which of two tied boxes survives)."""
    x1, y1, x2, y2, scores = (boxes[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_scrfd_io(inputs, outputs, path: str) -> None:
    """Raise ModelFileError naming path unless the model has SCRFD-with-keypoints I/O: one input
    [1, 3, H, W] and 9 outputs (score, bbox, keypoints at strides 8, 16, 32). inputs/outputs are
    onnxruntime NodeArgs (anything with .name and .shape)."""
    fix = ("Expected antelopev2's scrfd_10g_bnkps.onnx (one input [1, 3, H, W], 9 outputs: score, box and "
           "5-keypoint maps at strides 8, 16, 32); download it again from the source in the README.")
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (3, "3"):
        got = ", ".join(f"{i.name} {_shape_text(i.shape)}" for i in inputs)
        raise ModelFileError(f"{path} is not an SCRFD face detector: its inputs are {got}. {fix}")
    if len(outputs) != 3 * len(STRIDES):
        raise ModelFileError(f"{path} is not an SCRFD detector with keypoints: it has {len(outputs)} outputs, "
                             f"not 9 (a 6-output SCRFD has no keypoints). {fix}")
    for group, (kind, width) in enumerate(_OUTPUT_KINDS):
        for level, stride in enumerate(STRIDES):
            out = outputs[group * len(STRIDES) + level]
            last = out.shape[-1] if out.shape else None
            if isinstance(last, int) and last != width:
                raise ModelFileError(f"{path}: output {group * len(STRIDES) + level + 1} ({out.name}, "
                                     f"{_shape_text(out.shape)}) should be the stride-{stride} {kind} map with "
                                     f"{width} value(s) per anchor. {fix}")


class ScrfdDetector:
    """SCRFD on an onnxruntime session (see load_scrfd)."""

    def __init__(self, session, path: str):
        check_scrfd_io(session.get_inputs(), session.get_outputs(), path)
        self.session, self.path = session, path
        self.input_name = session.get_inputs()[0].name
        self.output_names = [o.name for o in session.get_outputs()]
        h, w = session.get_inputs()[0].shape[2:]
        # A model exported with a fixed input size must be fed that size; the real one is dynamic.
        if isinstance(h, int) and isinstance(w, int) and h != w:
            raise ModelFileError(f"{self.path} has a fixed non-square input {w}x{h}; expected a dynamic or "
                                 "square SCRFD input.")
        self.size = h if isinstance(h, int) else DETECT_SIZE

    def detect(self, image: np.ndarray, threshold: float = SCORE_THRESHOLD,
               nms_threshold: float = NMS_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
        """Faces in an RGB uint8 HxWx3 image: (boxes [n, 5], keypoints [n, 5, 2]) in its pixels."""
        canvas, scale = letterbox(image, self.size)
        outputs = self.session.run(self.output_names, {self.input_name: detector_blob(canvas)})
        for level, stride in enumerate(STRIDES):
            rows = np.asarray(outputs[level]).reshape(-1).size
            expected = (self.size // stride) ** 2 * ANCHORS_PER_CELL
            if rows != expected:
                raise ModelFileError(
                    f"{self.path}: the stride-{stride} score map has {rows} values for a {self.size}x{self.size} "
                    f"input, expected {expected} (2 anchors per cell). This is not antelopev2's SCRFD; download "
                    "scrfd_10g_bnkps.onnx again.")
        boxes, kps = decode(outputs, (self.size, self.size), threshold)
        # insightface sorts the candidates before NMS sorts them again; with tied scores the second
        # sort sees this order, so both are kept.
        order = boxes[:, 4].argsort()[::-1]
        boxes, kps = boxes[order], kps[order]
        boxes[:, :4] /= scale
        kps /= scale
        keep = nms(boxes, nms_threshold)
        return boxes[keep], kps[keep]


def load_scrfd(path: str, providers: str = "auto", gpu_present: bool | None = None) -> ScrfdDetector:
    """Load scrfd_10g_bnkps.onnx on the chosen execution provider (see onnx_runtime.PROVIDER_CHOICES)."""
    return ScrfdDetector(create_session(path, providers, gpu_present), path)
