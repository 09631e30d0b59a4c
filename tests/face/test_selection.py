import numpy as np
import pytest

from face_migration.errors import FaceMigrationError, NoFaceError
from face_migration.face import selection

# Three faces: middle-sized on the right, small top-left, large bottom-middle.
BOXES = np.array([[400, 100, 500, 220, 0.9],
                  [10, 10, 60, 70, 0.8],
                  [200, 300, 380, 500, 0.7]], np.float32)


@pytest.mark.parametrize("order, expected", [
    ("largest-first", [2, 0, 1]),
    ("left-right", [1, 2, 0]),
    ("right-left", [0, 2, 1]),
    ("top-bottom", [1, 0, 2]),
])
def test_orders(order, expected):
    assert list(selection.face_order(BOXES, order)) == expected
    assert [selection.choose_face(BOXES, order, i) for i in range(3)] == expected


def test_default_is_the_largest_face():
    assert selection.choose_face(BOXES) == 2


def test_equal_areas_pick_the_later_detection_like_the_official_code():
    boxes = np.array([[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.8]], np.float32)
    assert selection.choose_face(boxes) == 1


def test_index_out_of_range_says_how_many_faces():
    with pytest.raises(FaceMigrationError, match=r"reference image 2 has 3 face\(s\).*at most 2"):
        selection.choose_face(BOXES, "left-right", 3, image_label="reference image 2")
    with pytest.raises(FaceMigrationError, match="Face index -1"):
        selection.choose_face(BOXES, "left-right", -1)


def test_no_face():
    with pytest.raises(NoFaceError, match="No face was found in reference image 1"):
        selection.choose_face(np.zeros((0, 5)), image_label="reference image 1")


def test_unknown_order():
    with pytest.raises(FaceMigrationError, match="largest-first, left-right"):
        selection.face_order(BOXES, "biggest")
