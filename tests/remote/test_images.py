"""Pixels in and out of the client."""
import io

import numpy as np
import pytest
from PIL import Image

from face_migration.remote import BadResponseError, InvalidParameterError, to_uint8_rgb
from face_migration.remote.images import decode_image, encode_upload


def test_float_and_gray_inputs_become_uint8_rgb():
    assert to_uint8_rgb(np.array([[[0.0, 0.5, 1.0]]], np.float32)).tolist() == [[[0, 128, 255]]]
    assert to_uint8_rgb(np.array([[[2.0, -1.0, np.nan]]])).tolist() == [[[255, 0, 0]]]
    assert to_uint8_rgb(np.full((2, 2), 7, np.uint8)).shape == (2, 2, 3)


def test_alpha_is_composited_onto_white():
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[..., 0] = 200  # red under every alpha
    rgba[0, :, 3] = [0, 128, 255]
    assert to_uint8_rgb(rgba).tolist() == [[[255, 255, 255], [227, 127, 127], [200, 0, 0]]]
    float_rgba = np.array([[[0.0, 0.0, 0.0, 0.5]]], np.float32)
    assert to_uint8_rgb(float_rgba).tolist() == [[[128, 128, 128]]]


@pytest.mark.parametrize("array", [np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8),
                                   np.zeros((4, 4, 3), np.int64), np.zeros((2, 4, 4, 3), np.uint8)])
def test_unusable_arrays_are_refused(array):
    with pytest.raises(InvalidParameterError, match="image"):
        to_uint8_rgb(array)


def test_upload_is_lossless_png_when_small_and_downscaled_with_aspect_when_large():
    small = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    data, size = encode_upload(small, 1024)
    assert size == (70, 50)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), small)
    _, size = encode_upload(np.zeros((3000, 1200, 3), np.uint8), 1024)
    assert size == (410, 1024)


def test_decode_gives_rgb_uint8_from_any_format():
    buffer = io.BytesIO()
    Image.new("RGBA", (5, 3), (10, 20, 30, 40)).save(buffer, format="WEBP", lossless=True)
    image = decode_image(buffer.getvalue(), "x")
    assert image.shape == (3, 5, 3) and image.dtype == np.uint8 and image[0, 0].tolist() == [10, 20, 30]


def test_decode_of_non_image_bytes_names_the_field():
    with pytest.raises(BadResponseError, match=r"data\[0\].b64_json is not a readable image"):
        decode_image(b"\x89PNG\r\n\x1a\n truncated", "data[0].b64_json")
