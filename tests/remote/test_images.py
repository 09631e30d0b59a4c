"""Pixels in and out of the client."""
import io
import tempfile

import numpy as np
import pytest
from PIL import Image

from face_migration.remote import BadResponseError, InvalidParameterError, RemoteError, to_uint8_rgb
from face_migration.remote.images import (ReceivedImage, decode_image, encode_upload, keep_received_on_failure,
                                          save_received, with_transparency)


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


def load_image_mask(rgba: np.ndarray) -> np.ndarray:
    """The MASK ComfyUI's LoadImage makes of a file's alpha: 1 - alpha, float 0..1."""
    return 1.0 - rgba[:, :, 3].astype(np.float32) / 255.0


def test_a_load_image_mask_lays_transparent_pixels_over_white():
    rgba = np.zeros((4, 6, 4), np.uint8)  # black under full transparency, as cut-outs often store it
    rgba[1:3, 2:4] = [30, 60, 90, 255]
    rgba[0, 0] = [200, 0, 0, 128]
    rgb = rgba[None, :, :, :3].astype(np.float32) / 255.0  # what LoadImage's IMAGE holds: no alpha
    batch = with_transparency(rgb, load_image_mask(rgba)[None])
    assert batch.shape == (1, 4, 6, 4)
    sent = to_uint8_rgb(batch[0])
    assert sent[3, 5].tolist() == [255, 255, 255] and sent[1, 2].tolist() == [30, 60, 90]
    assert sent[0, 0].tolist() == [227, 127, 127]
    np.testing.assert_array_equal(sent, to_uint8_rgb(rgba))  # the same as the command line's RGBA upload


def test_a_mask_of_zeros_of_any_size_changes_nothing_and_one_mask_serves_a_batch():
    rgb = np.random.default_rng(1).random((2, 5, 7, 3)).astype(np.float32)
    unchanged = with_transparency(rgb, np.zeros((1, 64, 64), np.float32))  # LoadImage's mask for a JPEG
    np.testing.assert_array_equal(unchanged[..., :3], rgb)
    assert (unchanged[..., 3] == 1.0).all()
    hole = np.zeros((5, 7), np.float32)
    hole[0, 0] = 1.0
    both = with_transparency(rgb, hole)
    assert both[:, 0, 0, 3].tolist() == [0.0, 0.0] and (both[:, 1:, :, 3] == 1.0).all()


@pytest.mark.parametrize("mask, message", [
    (np.ones((1, 64, 64)), r"mask: 64x64 does not match the image's 7x5"),
    (np.ones((3, 5, 7)), "mask: 3 masks for 2 images"),
    (np.ones((5,)), "mask: expected an HxW or NxHxW mask"),
])
def test_masks_that_do_not_fit_are_refused(mask, message):
    with pytest.raises(InvalidParameterError, match=message):
        with_transparency(np.zeros((2, 5, 7, 3), np.float32), mask)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_received_images_are_kept_when_the_block_fails_and_the_error_says_where(tmp_path):
    first, second = png(np.zeros((2, 2, 3), np.uint8)), b"not an image"
    with pytest.raises(BadResponseError) as caught:
        with keep_received_on_failure(tmp_path, "kept") as received:
            decode_image(first, "data[0]")
            decode_image(second, "data[1]")
    error = caught.value
    assert [r.format for r in received] == ["PNG", None]
    assert (tmp_path / "kept.png").read_bytes() == first and (tmp_path / "kept.bin").read_bytes() == second
    assert str(error).startswith("data[1] is not a readable image")
    assert str(error).endswith(f"The 2 image(s) received were billed; saved as received to "
                               f"{tmp_path / 'kept.png'}, {tmp_path / 'kept.bin'}.")


def test_the_amended_error_keeps_type_and_attributes_and_other_failures_pass_unchanged(tmp_path, caplog):
    with pytest.raises(RemoteError) as caught:
        with keep_received_on_failure(tmp_path, "kept"):
            decode_image(jpeg_bytes(), "data[0]")
            raise RemoteError("timed out", status=504, retryable=True, maybe_billed=True)
    assert type(caught.value) is RemoteError and caught.value.status == 504 and caught.value.maybe_billed
    assert caught.value.retryable and (tmp_path / "kept.jpg").is_file()

    class Cancelled(Exception):
        pass

    with pytest.raises(Cancelled):
        with keep_received_on_failure(tmp_path, "kept"):
            decode_image(jpeg_bytes(), "data[0]")
            raise Cancelled()
    assert (tmp_path / "kept_2.jpg").is_file() and f"saved as received to {tmp_path / 'kept_2.jpg'}" in caplog.text


def test_nothing_is_kept_on_success_or_when_nothing_was_received(tmp_path):
    with keep_received_on_failure(tmp_path, "kept") as received:
        decode_image(png(np.zeros((2, 2, 3), np.uint8)), "data[0]")
    assert len(received) == 1
    with pytest.raises(BadResponseError, match=r"^no data$"):
        with keep_received_on_failure(tmp_path, "kept"):
            raise BadResponseError("no data")
    assert list(tmp_path.iterdir()) == []
    decode_image(png(np.zeros((2, 2, 3), np.uint8)), "data[0]")  # outside a block: nothing collected


def test_save_received_never_replaces_a_file_and_falls_back_to_the_temporary_folder(tmp_path, monkeypatch):
    item = ReceivedImage(b"bytes as sent", "PNG")
    (tmp_path / "x.png").write_bytes(b"earlier work")
    assert save_received(item, tmp_path, "x") == tmp_path / "x_2.png"
    assert (tmp_path / "x.png").read_bytes() == b"earlier work"
    fallback = tmp_path / "temporary"
    fallback.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(fallback))
    kept = save_received(item, tmp_path / "removed meanwhile", "x")
    assert kept.parent == fallback and kept.name.startswith("x_") and kept.suffix == ".png"
    assert kept.read_bytes() == b"bytes as sent"
