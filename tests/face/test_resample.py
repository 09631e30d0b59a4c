import numpy as np
import pytest

from face_migration.face import resample

skimage_data = pytest.importorskip("skimage.data")


def _photo():
    return skimage_data.astronaut()  # 512x512 RGB photograph


def _similarities(n, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        angle, scale = rng.uniform(-0.7, 0.7), rng.uniform(0.3, 2.5)
        c, s = scale * np.cos(angle), scale * np.sin(angle)
        yield np.array([[c, -s, rng.uniform(-200, 200)], [s, c, rng.uniform(-200, 200)]])


def test_identity_and_integer_shift_need_no_interpolation():
    photo = _photo()
    np.testing.assert_array_equal(resample.warp_affine(photo, np.eye(2, 3), (512, 512)), photo)
    shifted = resample.warp_affine(photo, [[1, 0, 10], [0, 1, -20]], (512, 512), border_value=(1, 2, 3))
    np.testing.assert_array_equal(shifted[:492, 10:], photo[20:, :502])
    assert (shifted[:, :10] == [1, 2, 3]).all() and (shifted[492:] == [1, 2, 3]).all()


def test_half_pixel_shift_averages_neighbours():
    row = np.array([[0, 100, 200]], np.uint8)
    out = resample.warp_affine(row, [[1, 0, -0.5], [0, 1, 0]], (2, 1), fixed_point=False)
    np.testing.assert_array_equal(out, [[50, 150]])


def test_warp_matches_cv2():
    cv2 = pytest.importorskip("cv2")
    photo = _photo()
    # OpenCV 4.x (what the official pipeline ran) is reproduced bit for bit; OpenCV 5 switched to exact
    # bilinear arithmetic, reproduced with fixed_point=False.
    fixed = int(cv2.__version__.split(".")[0]) < 5
    for m in _similarities(8):
        ref = cv2.warpAffine(photo, m, (512, 512), borderValue=(135, 133, 132))
        ours = resample.warp_affine(photo, m, (512, 512), border_value=(135, 133, 132), fixed_point=fixed)
        diff = np.abs(ours.astype(int) - ref)
        assert diff.max() <= (0 if fixed else 1)
        gray_ref = cv2.warpAffine(photo[..., 1], m, (112, 112))
        gray = resample.warp_affine(photo[..., 1], m, (112, 112), fixed_point=fixed)
        assert np.abs(gray.astype(int) - gray_ref).max() <= (0 if fixed else 1)


def test_fixed_point_and_exact_warps_stay_close():
    # The two arithmetics differ by 1/64 pixel at most in position: a few grey levels on sharp edges.
    photo = _photo()
    for m in _similarities(3, seed=1):
        a = resample.warp_affine(photo, m, (512, 512))
        b = resample.warp_affine(photo, m, (512, 512), fixed_point=False)
        diff = np.abs(a.astype(int) - b)
        assert 0 < diff.max() <= 4 and diff.mean() < 0.1


@pytest.mark.parametrize("size", [(112, 112), (640, 427), (333, 517), (1200, 800), (256, 256)])
def test_resizes_match_cv2_exactly(size):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(size[0])
    sources = (_photo(), skimage_data.coffee(), skimage_data.camera(),
               rng.integers(0, 256, (77, 131, 3), dtype=np.uint8))
    for src in sources:
        for ours, flag in ((resample.resize_linear, cv2.INTER_LINEAR), (resample.resize_lanczos4, cv2.INTER_LANCZOS4)):
            np.testing.assert_array_equal(ours(src, size), cv2.resize(src, size, interpolation=flag),
                                          err_msg=f"{ours.__name__} {src.shape} -> {size}")


def test_linear_downscale_by_two_averages_blocks():
    img = np.array([[0, 10, 20, 30], [40, 50, 60, 70]], np.uint8)
    np.testing.assert_array_equal(resample.resize_linear(img, (2, 1)), [[25, 45]])


def test_lanczos_upscale_interpolates_through_samples():
    # 2x upscaling of a smooth ramp stays a ramp (Lanczos reproduces linear functions away from edges).
    ramp = np.tile(np.arange(0, 200, 10, dtype=np.uint8), (4, 1))
    out = resample.resize_lanczos4(ramp, (40, 4))
    np.testing.assert_allclose(out[0, 8:32], ((np.arange(8, 32) + 0.5) / 2 - 0.5) * 10, atol=1)


def test_limit_long_edge():
    small = np.zeros((1024, 700, 3), np.uint8)
    assert resample.limit_long_edge(small) is small
    # int-truncated sides, as the official resize_numpy_image_long: 1024 * 1333 / 2000 = 682.5 -> 682.
    assert resample.limit_long_edge(np.zeros((1333, 2000, 3), np.uint8)).shape == (682, 1024, 3)
    assert resample.limit_long_edge(np.zeros((3000, 1001), np.uint8)).shape == (1024, 341)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        resample.resize_linear(np.zeros((4, 4, 3), np.float32), (2, 2))
    with pytest.raises(ValueError, match="at least 1x1"):
        resample.warp_affine(np.zeros((4, 4, 3), np.uint8), np.eye(2, 3), (0, 5))
