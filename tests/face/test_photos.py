"""ComfyUI IMAGE batches -> RGB uint8 photos: every precision and channel count, an error naming the input
and the image for what cannot be used, and bounded memory and time for a large photo."""
import time
import tracemalloc

import numpy as np
import pytest
import torch

from face_migration.errors import InvalidInputError
from face_migration.face.photos import CHUNK_BYTES, photos_from_batch, to_rgb_uint8


def expected_uint8(image: np.ndarray) -> np.ndarray:
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    return np.clip(np.rint(rgb.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("image", [
    np.random.default_rng(0).random((64, 48, 4), np.float32),  # RGBA: alpha dropped
    np.random.default_rng(1).random((64, 48, 1), np.float32),  # greyscale: repeated
    np.random.default_rng(2).random((64, 48, 3), np.float32) * 1.4 - 0.2,  # out of 0..1: clipped
])
def test_comfy_images_become_rgb_uint8(image):
    rgb = to_rgb_uint8(image)
    assert rgb.shape == (64, 48, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, expected_uint8(image))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_batches_are_converted(dtype):
    batch = torch.rand(2, 40, 30, 3, generator=torch.Generator().manual_seed(0)).to(dtype)
    photos = photos_from_batch(batch, "Encode Face", "image")
    assert len(photos) == 2
    for photo, image in zip(photos, batch):
        np.testing.assert_array_equal(photo, expected_uint8(image.float().numpy()))


def test_rows_are_converted_in_chunks_that_cover_the_image():
    rows = CHUNK_BYTES // (700 * 3 * 4)
    image = torch.rand(2 * rows + 5, 700, 3, generator=torch.Generator().manual_seed(1))  # 2 full chunks + rest
    np.testing.assert_array_equal(to_rgb_uint8(image), expected_uint8(image.numpy()))


def _error(batch, node="Encode Face", name="image") -> str:
    with pytest.raises(InvalidInputError) as info:
        photos_from_batch(batch, node, name)
    return str(info.value)


def test_empty_batch_has_its_own_error():
    message = _error(torch.zeros(0, 64, 64, 3))
    assert "Encode Face input 'image' is an empty batch (0 images)" in message and "No face" not in message


@pytest.mark.parametrize("shape", [(1, 0, 64, 3), (1, 64, 0, 3), (2, 0, 0, 3)])
def test_image_without_pixels_is_named(shape):
    assert "has no pixels" in _error(torch.zeros(shape), "Face Similarity", "reference")
    assert "Face Similarity input 'reference'" in _error(torch.zeros(shape), "Face Similarity", "reference")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixels_name_the_image(bad):
    batch = torch.rand(3, 32, 32, 3)
    batch[1, 5, 7, 0] = batch[1, 5, 7, 2] = bad
    message = _error(batch)
    assert "Encode Face input 'image', image 1 has 2 non-finite pixel values (NaN or infinity) in 1 pixel(s)" \
        in message and "--fp32-vae" in message


def test_all_nan_photo_is_refused_not_zeroed():
    assert "has 3072 non-finite" in _error(torch.full((1, 32, 32, 3), float("nan")))


def test_large_finite_values_are_clipped_not_called_non_finite():
    image = torch.full((64, 64, 3), 1e36)  # x 255 overflows float32 in the chunk's sum, not per pixel
    assert (to_rgb_uint8(image) == 255).all()


@pytest.mark.parametrize("shape", [(64, 64, 3), (1, 64, 64, 2), (1, 64, 64, 5)])
def test_wrong_layout_is_named(shape):
    assert "expected a ComfyUI IMAGE [batch, height, width, channels]" in _error(torch.zeros(shape))


def _cpu_seconds(fn) -> float:
    """Best of two runs, in CPU time of this process: other processes on a loaded machine do not count."""
    times = []
    for _ in range(2):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def test_8000x6000_photo_converts_in_bounded_memory_and_time():
    batch = torch.full((1, 6000, 8000, 3), 0.5)
    batch[0, 1000:2000, 3000:4000] = torch.tensor([1.0, 0.0, 0.0])
    uint8_bytes = 6000 * 8000 * 3
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        (photo,) = photos_from_batch(batch, "Encode Face", "image")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert photo[1500, 3500].tolist() == [255, 0, 0] and photo[0, 0].tolist() == [128, 128, 128]
    assert peak <= 2 * uint8_bytes, f"converting used {peak / 2**20:.0f} MiB extra, the photo is " \
                                     f"{uint8_bytes / 2**20:.0f} MiB"
    # Time relative to reading the photo once (so a slower or busier machine scales both): the chunked
    # conversion is a few passes over each chunk (measured 3.5x); a full-size float copy is several times more.
    frame, buffer = batch[0].numpy(), np.empty((CHUNK_BYTES // (8000 * 12), 8000, 3), np.float32)

    def read_once():
        for top in range(0, 6000, len(buffer)):
            np.multiply(frame[top:top + len(buffer)], 255.0, out=buffer[:len(frame[top:top + len(buffer)])])

    ratio = _cpu_seconds(lambda: photos_from_batch(batch, "Encode Face", "image")) / _cpu_seconds(read_once)
    assert ratio < 8, f"converting took {ratio:.1f} times as long as reading the photo once"
