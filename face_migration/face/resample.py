"""Image resampling without OpenCV: the resizes and the affine warp the official face pipeline does
with cv2, reproduced in numpy (ComfyUI does not install opencv, so it cannot be a dependency).

Every function takes and returns HxWxC (or HxW) uint8 arrays and uses OpenCV's pixel-centre
convention, so coordinates, landmarks and matrices carry over unchanged from the official code.
Sizes are (width, height), as in cv2. The integer arithmetic of OpenCV's 8-bit paths is reproduced,
so the outputs are bit-identical to cv2 (see tests/face/test_resample.py for the versions checked).
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


# cv2.resize (8-bit): weights rounded to 11 bits (INTER_RESIZE_COEF_BITS), integer sums, one rounding
# at the end. Source positions are computed in float32 as OpenCV does.
_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


def _source_positions(src_len: int, dst_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Left source pixel and float32 fraction of each output pixel centre (OpenCV's convention)."""
    scale = 1.0 / (dst_len / src_len)
    pos = ((np.arange(dst_len) + 0.5) * scale - 0.5).astype(np.float32)
    left = np.floor(pos)
    return left.astype(np.int64), pos - left


def _linear_taps(src_len: int, dst_len: int, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray]:
    """INTER_LINEAR along one axis: [dst, 2] source indices and integer weights (sum 2048).
    Along x OpenCV snaps positions outside the source to the edge pixel; along y it keeps the
    weights and only clamps the row indices (the sum is the same, the rounding below is not)."""
    left, frac = _source_positions(src_len, dst_len)
    if clamp_weights:
        frac[left < 0] = 0
        left[left < 0] = 0
        beyond = left >= src_len - 1
        frac[beyond] = 0
        left[beyond] = src_len - 1
    idx = np.clip(np.stack([left, left + 1], axis=1), 0, src_len - 1)
    weights = np.rint(np.stack([np.float32(1) - frac, frac], axis=1) * np.float32(_COEF_SCALE))
    return idx, weights.astype(np.int64)


# (cos, sin) of -3*pi*i/4 for the 8 taps, written out so the multiples of pi/2 are exact: with them
# OpenCV evaluates every tap's sin(pi t) sin(pi t / 4) from one sin/cos pair.
_S45 = float(np.sqrt(0.5))
_LANCZOS_ROT = np.array([[1, 0], [-_S45, -_S45], [0, 1], [_S45, -_S45], [-1, 0], [_S45, _S45], [0, -1],
                         [-_S45, _S45]], dtype=np.float64)


def _lanczos4_taps(src_len: int, dst_len: int) -> tuple[np.ndarray, np.ndarray]:
    """INTER_LANCZOS4 along one axis: [dst, 8] source indices (edges replicated) and integer weights.
    8 taps at source resolution (OpenCV does not widen the kernel when downscaling); the weights are
    evaluated, normalised and rounded in OpenCV's precision and order so they come out identical."""
    left, frac = _source_positions(src_len, dst_len)
    taps = np.arange(8)
    y0 = -(frac + np.float32(3)).astype(np.float64) * np.pi * 0.25
    y = -(frac[:, None] + np.float32(3) - taps[None, :].astype(np.float32)).astype(np.float64) * np.pi * 0.25
    numerator = _LANCZOS_ROT[:, 0][None, :] * np.sin(y0)[:, None] + _LANCZOS_ROT[:, 1][None, :] * np.cos(y0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = (numerator / (y * y)).astype(np.float32)
    # An exact grid hit copies the pixel (OpenCV special-cases positions closer than float epsilon).
    on_grid = frac < np.finfo(np.float32).eps
    weights[on_grid] = (taps == 3).astype(np.float32)
    total = weights[:, 0].copy()
    for k in range(1, 8):  # float32 sum in OpenCV's order
        total += weights[:, k]
    weights = weights * (np.float32(1) / total)[:, None]
    idx = np.clip(left[:, None] + taps[None, :] - 3, 0, src_len - 1)
    return idx, np.rint(weights * np.float32(_COEF_SCALE)).astype(np.int64)


def resize_linear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.resize(image, size) with INTER_LINEAR: bilinear, no antialiasing (the SCRFD letterbox and
    the 512 -> 112 resize of the ArcFace fallback). Bit-exact with OpenCV 4.x and 5.0 (its vectorised
    8-bit path, which rounds the vertical pass in two halves)."""
    img, squeeze = _as_hwc(image)
    width, height = _check_size(size)
    xidx, xw = _linear_taps(img.shape[1], width, clamp_weights=True)
    yidx, yw = _linear_taps(img.shape[0], height, clamp_weights=False)
    # Horizontal pass only on the rows the vertical pass reads.
    rows_needed, where = np.unique(yidx, return_inverse=True)
    src = img[rows_needed].astype(np.int64)
    rows = src[:, xidx[:, 0]] * xw[None, :, 0, None] + src[:, xidx[:, 1]] * xw[None, :, 1, None]
    where = where.reshape(yidx.shape)
    top, bottom = rows[where[:, 0]] >> 4, rows[where[:, 1]] >> 4
    out = (((top * yw[:, 0, None, None]) >> 16) + ((bottom * yw[:, 1, None, None]) >> 16) + 2) >> 2
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out[:, :, 0] if squeeze else out


def resize_lanczos4(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.resize(image, size, interpolation=INTER_LANCZOS4) (the official long-edge pre-resize).
    Bit-exact with OpenCV 4.x and 5.0: integer weights, one rounding at the end."""
    img, squeeze = _as_hwc(image)
    width, height = _check_size(size)
    xidx, xw = _lanczos4_taps(img.shape[1], width)
    yidx, yw = _lanczos4_taps(img.shape[0], height)
    # Integer arithmetic is exact, so the vertical pass can go first (cheaper when shrinking); its
    # sums stay below 255 * 2048 * 1.3 and fit int32.
    cols = np.zeros((height, img.shape[1], img.shape[2]), np.int32)
    for k in range(8):
        cols += img[yidx[:, k]].astype(np.int32) * yw[:, k, None, None].astype(np.int32)
    cols = cols.astype(np.int64)
    out = np.zeros((height, width, img.shape[2]), np.int64)
    for k in range(8):
        out += cols[:, xidx[:, k]] * xw[None, :, k, None]
    out = np.clip((out + (1 << (2 * _COEF_BITS - 1))) >> (2 * _COEF_BITS), 0, 255).astype(np.uint8)
    return out[:, :, 0] if squeeze else out


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
