import numpy as np
import pytest

from face_migration.face import align


def _similarity(angle, scale, tx, ty):
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _face_landmarks(rng, noise, outlier=False):
    """FFHQ template points moved into a photo by a random similarity, plus noise (and one outlier)."""
    m = _similarity(rng.uniform(-0.8, 0.8), rng.uniform(0.2, 3), *rng.uniform(100, 900, 2))
    pts = align.transform_points(align.FFHQ_TEMPLATE - 256, m) + rng.normal(0, noise, (5, 2))
    if outlier:
        pts[rng.integers(5)] += rng.normal(0, 80, 2)
    return pts.astype(np.float32)


def test_least_squares_recovers_an_exact_similarity():
    m = _similarity(0.3, 1.7, 12.0, -40.0)
    src = np.random.default_rng(0).uniform(0, 300, (5, 2))
    np.testing.assert_allclose(align.similarity_least_squares(src, align.transform_points(src, m)), m, atol=1e-9)


def test_least_squares_matches_skimage():
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(1)
    for _ in range(50):
        # Random point sets, including ones that a reflection would fit better.
        src = rng.uniform(0, 500, (5, 2))
        tf = transform.SimilarityTransform()
        if hasattr(transform.SimilarityTransform, "from_estimate"):
            tf = transform.SimilarityTransform.from_estimate(src, align.ARCFACE_TEMPLATE.astype(np.float64))
        else:
            tf.estimate(src, align.ARCFACE_TEMPLATE.astype(np.float64))
        np.testing.assert_allclose(align.similarity_least_squares(src, align.ARCFACE_TEMPLATE), tf.params[:2],
                                   atol=1e-9)


def test_least_squares_is_the_minimum():
    rng = np.random.default_rng(2)
    src, dst = rng.uniform(0, 100, (5, 2)), rng.uniform(0, 100, (5, 2))
    m = align.similarity_least_squares(src, dst)
    best = ((align.transform_points(src, m) - dst) ** 2).sum()
    a, b = m[0, 0], m[1, 0]
    for da, db, dt in rng.normal(0, 0.01, (20, 3)):
        other = np.array([[a + da, -(b + db), m[0, 2] + dt], [b + db, a + da, m[1, 2] - dt]])
        assert ((align.transform_points(src, other) - dst) ** 2).sum() > best


def test_lmeds_matches_cv2():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    corners = np.array([[0, 0], [512, 0], [0, 512], [512, 512]], np.float64)
    dropped = 0
    for i in range(300):
        lm = _face_landmarks(rng, noise=rng.choice([0.5, 5, 20]), outlier=i % 3 == 0)
        ref = cv2.estimateAffinePartial2D(lm, align.FFHQ_TEMPLATE, method=cv2.LMEDS)[0]
        ours, inliers = align.similarity_lmeds(lm, align.FFHQ_TEMPLATE)
        dropped += not inliers.all()
        # Compare where the crop's corners come from in the photo (OpenCV 5 stops its refinement a
        # little earlier than 4.x: about 0.01 px; 4.x agrees to 1e-9 px).
        photo_ref = align.transform_points(corners, cv2.invertAffineTransform(ref))
        photo_ours = align.transform_points(corners, cv2.invertAffineTransform(ours))
        assert np.abs(photo_ref - photo_ours).max() < 0.02
    assert dropped > 50  # the robust branch (points left out) was exercised


def test_lmeds_leaves_out_an_outlier():
    rng = np.random.default_rng(4)
    lm = _face_landmarks(rng, noise=0.0).astype(np.float64)
    clean, inliers = align.similarity_lmeds(lm, align.FFHQ_TEMPLATE)
    assert inliers.all()
    lm[2] += (60.0, -45.0)  # the nose far off
    robust, inliers = align.similarity_lmeds(lm, align.FFHQ_TEMPLATE)
    assert list(inliers) == [True, True, False, True, True]
    np.testing.assert_allclose(robust, clean, atol=1e-4)
    assert np.abs(align.similarity_least_squares(lm, align.FFHQ_TEMPLATE) - clean).max() > 0.01


def test_arcface_crop_puts_keypoints_on_the_template():
    photo = np.random.default_rng(5).integers(0, 256, (400, 300, 3), dtype=np.uint8)
    m = _similarity(-0.2, 0.6, 50, 80)
    kps = align.transform_points(align.ARCFACE_TEMPLATE, m)  # template -> photo
    crop, matrix = align.arcface_crop(photo, kps)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(align.transform_points(kps, matrix), align.ARCFACE_TEMPLATE, atol=1e-4)


def test_ffhq_crop_border_is_facexlib_grey_in_rgb():
    photo = np.full((100, 100, 3), 255, np.uint8)
    # A small face at the photo's top-left corner: the crop's top-left lies outside the photo.
    kps = align.FFHQ_TEMPLATE / 10 - 30
    crop, _ = align.ffhq_crop(photo, kps)
    assert crop.shape == (512, 512, 3)
    assert tuple(crop[0, 0]) == (132, 133, 135)
    assert (crop[-1, -1] == 255).all()


def test_degenerate_points_are_refused():
    with pytest.raises(ValueError, match="coincide"):
        align.similarity_least_squares(np.zeros((5, 2)), align.ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match="coincide"):
        align.similarity_lmeds(np.zeros((5, 2)), align.FFHQ_TEMPLATE)


# Rough landmarks of the astronaut's face in skimage's photo (any plausible points would do).
ASTRONAUT_KPS = np.array([[190, 110], [240, 108], [215, 140], [195, 165], [235, 163]], np.float32)


def test_crops_match_the_official_cv2_path():
    cv2 = pytest.importorskip("cv2")
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.astronaut()
    bgr = np.ascontiguousarray(photo[..., ::-1])
    # OpenCV 4.x: our warp is its arithmetic; 5.x rounds positions differently (a few levels on edges).
    tolerance = 1 if int(cv2.__version__.split(".")[0]) < 5 else 4
    m = cv2.estimateAffinePartial2D(ASTRONAUT_KPS, align.FFHQ_TEMPLATE, method=cv2.LMEDS)[0]
    ref = cv2.warpAffine(bgr, m, (512, 512), borderValue=(135, 133, 132))[..., ::-1]
    ours, _ = align.ffhq_crop(photo, ASTRONAUT_KPS)
    assert np.abs(ours.astype(int) - ref).max() <= tolerance
    m = align.similarity_least_squares(ASTRONAUT_KPS, align.ARCFACE_TEMPLATE)
    ref = cv2.warpAffine(bgr, m, (112, 112), borderValue=0.0)[..., ::-1]
    ours, _ = align.arcface_crop(photo, ASTRONAUT_KPS)
    assert np.abs(ours.astype(int) - ref).max() <= tolerance
