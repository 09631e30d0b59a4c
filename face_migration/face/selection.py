"""Which detected face to use: an order over the boxes and an index into it, and the matching of one
face across two detectors (so the ArcFace and the EVA crops come from the same person).

Boxes are [n, >=4] arrays (x1, y1, x2, y2, ...) in image pixels.
"""
from __future__ import annotations

import numpy as np

from ..errors import FaceMigrationError, NoFaceError

# largest-first with index 0 is the official choice (insightface's largest box).
FACE_ORDERS = ("largest-first", "left-right", "right-left", "top-bottom")


def face_order(boxes: np.ndarray, order: str = "largest-first") -> np.ndarray:
    """Indices of the boxes in the given order (one of FACE_ORDERS). Positions use the box centre;
    ties keep detection order, except largest-first, which like the official code
    (sorted by area, last taken) puts the later of two equal boxes first."""
    if order not in FACE_ORDERS:
        raise FaceMigrationError(f"Unknown face order {order!r}; expected one of {', '.join(FACE_ORDERS)}.")
    boxes = np.asarray(boxes, dtype=np.float64)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    if order == "largest-first":
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return np.argsort(area, kind="stable")[::-1]
    key = {"left-right": cx, "right-left": -cx, "top-bottom": cy}[order]
    return np.argsort(key, kind="stable")


def choose_face(boxes: np.ndarray, order: str = "largest-first", index: int = 0,
                image_label: str = "the image") -> int:
    """Row of boxes holding the face at position index of the order. image_label names the image
    in errors (e.g. "reference image 2")."""
    n = len(boxes)
    if n == 0:
        raise NoFaceError(f"No face was found in {image_label}. Use a photo where the face is clearly "
                                 "visible, frontal and at least about 64 pixels wide.")
    if index < 0 or index >= n:
        raise FaceMigrationError(
            f"Face index {index} was asked for, but {image_label} has {n} face(s) (valid indices 0 to {n - 1}, "
            f"counted {order}). Fix: set the face index to at most {n - 1}.")
    return int(face_order(boxes, order)[index])


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with each of boxes (plain pixel areas) -> [n]."""
    box = np.asarray(box, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    if len(boxes) == 0:
        return np.zeros(0)
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
