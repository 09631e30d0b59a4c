"""The declared support range is one fact: face_migration/support.py, pyproject.toml and the test set-up agree."""
import pathlib
import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest

from face_migration.support import PYTHONS, TESTED_COMFYUI, checkout_version, outside_support, version_tuple

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_declares_the_tested_comfyui_range_and_pythons():
    assert PYPROJECT["tool"]["face-migration"]["tested-comfyui"] == list(TESTED_COMFYUI)
    assert PYPROJECT["tool"]["comfy"]["requires-comfyui"] == f">={TESTED_COMFYUI[0]}"
    assert PYPROJECT["project"]["requires-python"] == f">={PYTHONS[0]}"
    declared = [c.rsplit(" :: ", 1)[1] for c in PYPROJECT["project"]["classifiers"]
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    oldest, newest = (version_tuple(v)[1] for v in PYTHONS)
    assert declared == [f"3.{minor}" for minor in range(oldest, newest + 1)]


def test_every_tested_comfyui_has_its_node_schemas():
    for version in TESTED_COMFYUI:
        for kind in ("core", "pack"):
            assert (ROOT / "tests" / "fixtures" / "object_info" / f"{kind}-{version}.json").is_file()


@pytest.mark.parametrize("version, expected", [
    ("0.3.64", None), ("0.16.0", None), ("0.33.0", None), ("0.33.0-rc1", None),
    ("0.3.63", "older"), ("0.34.0", "newer"), ("1.0", "newer"), (None, "could not read")])
def test_outside_support(version, expected):
    notice = outside_support(version)
    assert notice is None if expected is None else expected in notice


def test_checkout_version_reads_comfyui_version_py(tmp_path):
    assert checkout_version(tmp_path) is None
    (tmp_path / "comfyui_version.py").write_text("# generated\n__version__ = '0.33.0'\n")
    assert checkout_version(tmp_path) == "0.33.0"
    (tmp_path / "comfyui_version.py").write_text("nothing here\n")
    assert checkout_version(tmp_path) is None
