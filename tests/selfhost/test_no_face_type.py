"""The route answers 422 when Encode Face fails with NoFaceError (matched by type, not by message)."""
import numpy as np
import pytest

from face_migration.errors import FaceMigrationError, NoFaceError
from face_migration.face.selection import choose_face


def test_a_photo_without_faces_raises_the_no_face_type():
    with pytest.raises(NoFaceError, match="No face was found in reference image 2"):
        choose_face(np.zeros((0, 5)), "largest-first", 0, "reference image 2")
    assert issubclass(NoFaceError, FaceMigrationError)  # node errors and other callers still catch it


def test_a_face_index_past_the_faces_found_is_not_a_no_face_error():
    with pytest.raises(FaceMigrationError) as caught:
        choose_face(np.array([[0, 0, 10, 10, 0.9]]), "largest-first", 3, "the image")
    assert not isinstance(caught.value, NoFaceError)
