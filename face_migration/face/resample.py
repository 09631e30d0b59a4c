"""Image resampling without OpenCV: the resizes and the affine warp the official face pipeline does
with cv2, reproduced in numpy (ComfyUI does not install opencv, so it cannot be a dependency).

Every function takes and returns HxWxC (or HxW) uint8 arrays and uses OpenCV's pixel-centre
convention, so coordinates, landmarks and matrices carry over unchanged from the official code.
Sizes are (width, height), as in cv2.
"""
from __future__ import annotations

import numpy as np

# cv2.warpAffine (OpenCV 4.x, INTER_LINEAR, 8-bit): source positions are rounded to 1/32 pixel
# (INTER_BITS = 5) through a 10-bit fixed-point map (AB_BITS = 10), and the four bilinear weights
# are integers summing to 2**15.
_AB_BITS = 10
_INTER_BITS = 5
_WEIGHT_BITS = 15


def _as_hwc(image: np.ndarray) -> tuple[np.ndarray, bool]:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        return image[:, :, None], True
    if image.ndim != 3:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {image.shape}")
    return image, False


def _to_uint8(values: np.ndarray, squeeze: bool) -> np.ndarray:
    out = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return out[:, :, 0] if squeeze else out


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ValueError(f"output size must be at least 1x1, got {width}x{height}")
    return width, height


def _linear_taps(src_len: int, dst_len: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2 INTER_LINEAR taps along one axis: source index of the 2 taps and their weights."""
    scale = src_len / dst_len
    pos = (np.arange(dst_len, dtype=np.float64) + 0.5) * scale - 0.5
    left = np.floor(pos)
    frac = pos - left
    left = left.astype(np.int64)
    # Outside the source OpenCV snaps to the edge pixel instead of blending with a border.
    frac[left < 0] = 0.0
    left[left < 0] = 0
    beyond = left >= src_len - 1
    frac[beyond] = 0.0
    left[beyond] = src_len - 1
    idx = np.stack([left, np.minimum(left + 1, src_len - 1)], axis=1)
    weights = np.stack([1.0 - frac, frac], axis=1)
    return idx, weights


def _lanczos4_taps(src_len: int, dst_len: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2 INTER_LANCZOS4 taps along one axis: 8 taps at source resolution (OpenCV does not widen the
    kernel when downscaling), edge pixels replicated, weights normalised to sum 1."""
    scale = src_len / dst_len
    pos = (np.arange(dst_len, dtype=np.float64) + 0.5) * scale - 0.5
    left = np.floor(pos)
    frac = pos - left
    offsets = np.arange(-3, 5)
    dist = frac[:, None] - offsets[None, :]
    weights = np.sinc(dist) * np.sinc(dist / 4.0)
    # An exact grid hit copies the pixel (OpenCV special-cases it; the formula would give the same).
    on_grid = frac < np.finfo(np.float32).eps
    weights[on_grid] = (offsets == 0).astype(np.float64)
    weights /= weights.sum(axis=1, keepdims=True)
    idx = np.clip(left.astype(np.int64)[:, None] + offsets[None, :], 0, src_len - 1)
    return idx, weights


def _separable_resize(image: np.ndarray, size: tuple[int, int], taps) -> np.ndarray:
    img, squeeze = _as_hwc(image)
    width, height = _check_size(size)
    yidx, yw = taps(img.shape[0], height)
    xidx, xw = taps(img.shape[1], width)
    rows = np.zeros((height, img.shape[1], img.shape[2]), np.float32)
    for t in range(yidx.shape[1]):
        rows += yw[:, t, None, None].astype(np.float32) * img[yidx[:, t]]
    out = np.zeros((height, width, img.shape[2]), np.float32)
    for t in range(xidx.shape[1]):
        out += xw[None, :, t, None].astype(np.float32) * rows[:, xidx[:, t]]
    return _to_uint8(out, squeeze)


def resize_linear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.resize(image, size) with INTER_LINEAR: bilinear, no antialiasing (the SCRFD letterbox and
    the 512 -> 112 resize of the ArcFace fallback). Within 1 grey level of OpenCV."""
    return _separable_resize(image, size, _linear_taps)


def resize_lanczos4(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.resize(image, size, interpolation=INTER_LANCZOS4). Within 1 grey level of OpenCV (which
    rounds its weights to 11 bits where this keeps them in float)."""
    return _separable_resize(image, size, _lanczos4_taps)


def limit_long_edge(image: np.ndarray, max_edge: int = 1024) -> np.ndarray:
    """The official pre-resize: images whose long edge exceeds max_edge are scaled down with Lanczos-4
    to int(h*k) x int(w*k), k = max_edge / long edge; smaller images are returned unchanged."""
    h, w = np.asarray(image).shape[:2]
    if max(h, w) <= max_edge:
        return image
    k = max_edge / max(h, w)
    return resize_lanczos4(image, (max(1, int(w * k)), max(1, int(h * k))))


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix, computed in the order cv2.warpAffine does (so the fixed-point
    rounding below sees the same doubles)."""
    m = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    a, b, c = m[0]
    d, e, f = m[1]
    det = a * e - b * d
    det = 1.0 / det if det != 0 else 0.0
    ia, ie = e * det, a * det
    ib, id_ = -b * det, -d * det
    return np.array([[ia, ib, -ia * c - ib * f], [id_, ie, -id_ * c - ie * f]])


def _fixed_point_positions(inv: np.ndarray, width: int, height: int):
    """Integer source pixel and 1/32 fraction per output pixel, as OpenCV 4.x computes them."""
    scale = 1 << _AB_BITS
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    round_delta = scale >> (_INTER_BITS + 1)
    x_row = np.rint(inv[0, 0] * xs * scale).astype(np.int64)
    y_row = np.rint(inv[1, 0] * xs * scale).astype(np.int64)
    x_col = np.rint((inv[0, 1] * ys + inv[0, 2]) * scale).astype(np.int64) + round_delta
    y_col = np.rint((inv[1, 1] * ys + inv[1, 2]) * scale).astype(np.int64) + round_delta
    shift = _AB_BITS - _INTER_BITS
    sx = (x_col[:, None] + x_row[None, :]) >> shift
    sy = (y_col[:, None] + y_row[None, :]) >> shift
    mask = (1 << _INTER_BITS) - 1
    return sx >> _INTER_BITS, sy >> _INTER_BITS, sx & mask, sy & mask


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], border_value=0,
                fixed_point: bool = True) -> np.ndarray:
    """cv2.warpAffine(image, matrix, size, flags=INTER_LINEAR, borderMode=BORDER_CONSTANT,
    borderValue=border_value): output pixel (x, y) samples the source at inverse(matrix) @ (x, y, 1)
    bilinearly; neighbours outside the source take border_value (a number or one per channel).

    fixed_point=True reproduces OpenCV 4.x bit for bit (1/32-pixel positions, 15-bit weights), the
    arithmetic the official pipeline ran with; False is exact bilinear, as OpenCV 5 does (within 1 grey
    level of it; the two differ by up to 3 levels near sharp edges).
    """
    img, squeeze = _as_hwc(image)
    width, height = _check_size(size)
    h, w, c = img.shape
    border = np.broadcast_to(np.asarray(border_value, dtype=np.float64).reshape(-1), (c,))
    # One pixel of border around the source, so every neighbour index can be clipped into it.
    padded = np.empty((h + 2, w + 2, c), np.int64 if fixed_point else np.float64)
    padded[:] = np.rint(border) if fixed_point else border
    padded[1:-1, 1:-1] = img
    inv = invert_affine(matrix)
    if fixed_point:
        ix, iy, fx, fy = _fixed_point_positions(inv, width, height)
        one = 1 << _INTER_BITS
        # (32 - fx) * (32 - fy) * 32 etc.: integer weights summing to exactly 2**15.
        wx0, wx1, wy0, wy1 = one - fx, fx, (one - fy) << (_WEIGHT_BITS - 2 * _INTER_BITS), \
            fy << (_WEIGHT_BITS - 2 * _INTER_BITS)
    else:
        xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
        sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
        # Far-away positions are clipped before the integer cast; they land in the border anyway.
        sx = np.clip(sx, -2.0, w + 1.0)
        sy = np.clip(sy, -2.0, h + 1.0)
        ix, iy = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
        wx1, wy1 = sx - ix, sy - iy
        wx0, wy0 = 1.0 - wx1, 1.0 - wy1
    x0 = np.clip(ix, -1, w) + 1
    x1 = np.clip(ix + 1, -1, w) + 1
    y0 = np.clip(iy, -1, h) + 1
    y1 = np.clip(iy + 1, -1, h) + 1
    top = padded[y0, x0] * wx0[..., None] + padded[y0, x1] * wx1[..., None]
    bottom = padded[y1, x0] * wx0[..., None] + padded[y1, x1] * wx1[..., None]
    out = top * wy0[..., None] + bottom * wy1[..., None]
    if fixed_point:
        # OpenCV rounds the integer sum once: (sum + 2**14) >> 15.
        out = (out + (1 << (_WEIGHT_BITS - 1))) >> _WEIGHT_BITS
        out = np.clip(out, 0, 255).astype(np.uint8)
        return out[:, :, 0] if squeeze else out
    return _to_uint8(out, squeeze)
