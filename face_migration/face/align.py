"""Face alignment: 5-point templates, similarity transforms and the aligned crops (pulid-spec 5.1, 5.2).

Points are (x, y) in pixels, ordered left eye, right eye, nose, left mouth corner, right mouth corner
(the order SCRFD and RetinaFace both output). Matrices are 2x3 float64, mapping image -> crop, as cv2
and skimage return them. Images are RGB uint8.
"""
from __future__ import annotations

import numpy as np

from .resample import warp_affine

ARCFACE_SIZE = 112
# insightface arcface_dst: where norm_crop puts the 5 points in the 112x112 recognition crop.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32)

FFHQ_SIZE = 512
# facexlib FaceRestoreHelper 5-point template for face_size 512 (crop_ratio 1, no shift).
FFHQ_TEMPLATE = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]],
    dtype=np.float32)
# facexlib fills outside the photo with BGR (135, 133, 132); the same colour in RGB.
FFHQ_BORDER_RGB = (132, 133, 135)


def _point_pairs(src, dst) -> tuple[np.ndarray, np.ndarray]:
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two arrays of the same number (>= 2) of (x, y) points, got {src.shape} and "
                         f"{dst.shape}")
    return src, dst


def _similarity_matrix(a: float, b: float, tx: float, ty: float) -> np.ndarray:
    return np.array([[a, -b, tx], [b, a, ty]], dtype=np.float64)


def similarity_least_squares(src, dst) -> np.ndarray:
    """The rotation + uniform scale + translation that maps src onto dst with the least squared error:
    Umeyama's solution without reflection, i.e. skimage SimilarityTransform.estimate (insightface's
    norm_crop). In 2-D it has a closed form in (a, b) = scale * (cos, sin)."""
    src, dst = _point_pairs(src, dst)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    var = float((s ** 2).sum())
    if var <= 1e-12:
        raise ValueError("the source points all coincide; no similarity transform fits them")
    a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / var
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / var
    tx = dst_mean[0] - (a * src_mean[0] - b * src_mean[1])
    ty = dst_mean[1] - (b * src_mean[0] + a * src_mean[1])
    return _similarity_matrix(a, b, tx, ty)


class _OpenCvRng:
    """cv::RNG (multiply-with-carry), seeded as cv::LMeDSPointSetRegistrator seeds it."""

    def __init__(self, state: int = (1 << 64) - 1):
        self.state = state

    def uniform(self, low: int, high: int) -> int:
        self.state = ((self.state & 0xFFFFFFFF) * 4164903690 + (self.state >> 32)) & ((1 << 64) - 1)
        return (self.state & 0xFFFFFFFF) % (high - low) + low


def _two_point_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The exact similarity through two point pairs."""
    (x1, y1), (x2, y2) = src
    (u1, v1), (u2, v2) = dst
    dx, dy, du, dv = x1 - x2, y1 - y2, u1 - u2, v1 - v2
    norm = dx * dx + dy * dy
    if norm == 0:
        return None
    a = (dx * du + dy * dv) / norm
    b = (dx * dv - dy * du) / norm
    return _similarity_matrix(a, b, u1 - (a * x1 - b * y1), v1 - (b * x1 + a * y1))


def _squared_errors_f32(matrix: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    m = matrix.astype(np.float32)
    ex = m[0, 0] * src[:, 0] + m[0, 1] * src[:, 1] + m[0, 2] - dst[:, 0]
    ey = m[1, 0] * src[:, 0] + m[1, 1] * src[:, 1] + m[1, 2] - dst[:, 1]
    return ex * ex + ey * ey


def similarity_lmeds(src, dst) -> tuple[np.ndarray, np.ndarray]:
    """cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS) (facexlib's FFHQ alignment), reproduced:
    13 random 2-point models drawn with OpenCV's generator and seed, the one with the least median
    squared error kept, inliers within 2.5 * 1.4826 * (1 + 5 / (n - 2)) * sqrt(median), then the least
    squares similarity over the inliers (OpenCV refines it with 10 Levenberg-Marquardt steps, which
    converge to the same solution for this linear problem). Returns (matrix, inlier mask)."""
    src, dst = _point_pairs(src, dst)
    # OpenCV works on float32 points.
    src32, dst32 = src.astype(np.float32), dst.astype(np.float32)
    count = len(src)
    if count == 2:
        model = _two_point_similarity(src32.astype(np.float64), dst32.astype(np.float64))
        if model is None:
            raise ValueError("the two source points coincide; no similarity transform fits them")
        return model, np.ones(2, dtype=bool)
    # RANSACUpdateNumIters(confidence 0.99, outlier ratio 0.45, 2 points per model), at least 3.
    iterations = max(3, int(np.rint(np.log(0.01) / np.log(1.0 - 0.55 ** 2))))
    rng = _OpenCvRng()
    best, best_median = None, np.inf
    for _ in range(iterations):
        i = rng.uniform(0, count)
        j = rng.uniform(0, count)
        while j == i:
            j = rng.uniform(0, count)
        model = _two_point_similarity(src32[[i, j]].astype(np.float64), dst32[[i, j]].astype(np.float64))
        if model is None:
            continue
        median = np.sort(_squared_errors_f32(model, src32, dst32))[count // 2]
        if median < best_median:
            best, best_median = model, median
    if best is None:
        raise ValueError("the source points all coincide; no similarity transform fits them")
    sigma = max(2.5 * 1.4826 * (1 + 5.0 / (count - 2)) * np.sqrt(float(best_median)), 0.001)
    inliers = _squared_errors_f32(best, src32, dst32) <= np.float32(sigma * sigma)
    return similarity_least_squares(src32[inliers], dst32[inliers]), inliers


def transform_points(points, matrix) -> np.ndarray:
    """Apply a 2x3 matrix to (x, y) points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def arcface_crop(image: np.ndarray, keypoints) -> tuple[np.ndarray, np.ndarray]:
    """insightface norm_crop: the 112x112 recognition crop from 5 SCRFD keypoints (least-squares
    similarity onto ARCFACE_TEMPLATE, black border). Returns (crop, matrix)."""
    matrix = similarity_least_squares(keypoints, ARCFACE_TEMPLATE)
    return warp_affine(image, matrix, (ARCFACE_SIZE, ARCFACE_SIZE), border_value=0), matrix


def ffhq_crop(image: np.ndarray, landmarks, robust: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """facexlib align_warp_face: the 512x512 FFHQ crop from 5 landmarks, grey border.
    robust=True fits like cv2 LMEDS (official); False is the plain least-squares fit over all 5 points
    (identical whenever LMEDS keeps every point, which is the usual case for a real face).
    Returns (crop, matrix)."""
    if robust:
        matrix, _ = similarity_lmeds(landmarks, FFHQ_TEMPLATE)
    else:
        matrix = similarity_least_squares(landmarks, FFHQ_TEMPLATE)
    return warp_affine(image, matrix, (FFHQ_SIZE, FFHQ_SIZE), border_value=FFHQ_BORDER_RGB), matrix
