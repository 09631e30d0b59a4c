"""nodes/__init__.py: a missing requirement disables its node module with an "install requirements" hint;
an ImportError from the pack's own code is logged with its traceback, never passed off as a missing package.

The real nodes need ComfyUI, so the adapter's __init__.py runs here in a stand-in package with stub node
modules and a stub comfy_api."""
from __future__ import annotations

import asyncio
import importlib
import logging
import re
import shutil
import sys
import types
from pathlib import Path

import pytest

from face_migration.support import TESTED_COMFYUI

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "stand_in_pack"

STUBS = {
    "common.py": 'LOG_PREFIX = "[Face Migration]"\n\ndef register_model_folders():\n    pass\n',
    "good_nodes.py": 'NODES = ["GoodNode"]\n',
    "needs_onnxruntime.py": "import onnxruntime  # noqa: F401\nNODES = ['NeverListed']\n",
    "wrong_name.py": "from .common import no_such_name  # noqa: F401\nNODES = ['NeverListed']\n",
    "wrong_module.py": "from ..no_such_module import thing  # noqa: F401\nNODES = ['NeverListed']\n",
}


@pytest.fixture
def adapter(tmp_path, monkeypatch):
    """nodes/__init__.py as the adapter of a stand-in pack whose node modules are STUBS."""
    nodes = tmp_path / PACKAGE / "nodes"
    nodes.mkdir(parents=True)
    (nodes.parent / "__init__.py").write_text("")
    shutil.copyfile(REPO / "nodes" / "__init__.py", nodes / "__init__.py")
    library = tmp_path / PACKAGE / "face_migration"
    library.mkdir()
    (library / "__init__.py").write_text("")
    shutil.copyfile(REPO / "face_migration" / "support.py", library / "support.py")
    for name, text in STUBS.items():
        (nodes / name).write_text(text)
    comfy_api, v0_0_2 = types.ModuleType("comfy_api"), types.ModuleType("comfy_api.v0_0_2")
    v0_0_2.ComfyExtension = object
    monkeypatch.setitem(sys.modules, "comfy_api", comfy_api)
    monkeypatch.setitem(sys.modules, "comfy_api.v0_0_2", v0_0_2)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    running = types.ModuleType("comfyui_version")  # ComfyUI's own root module
    running.__version__ = TESTED_COMFYUI[-1]
    monkeypatch.setitem(sys.modules, "comfyui_version", running)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module(f"{PACKAGE}.nodes")
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def node_list(adapter, modules) -> list:
    adapter.NODE_MODULES = modules
    return asyncio.run(adapter.FaceMigrationExtension().get_node_list())


def test_missing_requirement_disables_only_its_module(adapter, caplog):
    with caplog.at_level(logging.WARNING):
        assert node_list(adapter, ("needs_onnxruntime", "good_nodes")) == ["GoodNode"]
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "needs_onnxruntime disabled: the Python package onnxruntime-gpu or onnxruntime is not installed" \
        in record.getMessage() and "requirements.txt" in record.getMessage()


@pytest.mark.parametrize("module", ["wrong_name", "wrong_module"])
def test_import_error_in_the_pack_is_logged_with_its_traceback(adapter, caplog, module):
    with caplog.at_level(logging.WARNING):
        assert node_list(adapter, (module, "good_nodes")) == ["GoodNode"]
    (record,) = caplog.records
    message = record.getMessage()
    assert record.levelno == logging.ERROR and "not a missing requirement" in message
    assert "requirements.txt" not in message
    assert re.search(rf'File ".*{module}\.py", line 1', caplog.text), caplog.text  # the traceback


def test_every_requirement_is_recognised(adapter):
    """Each package of requirements.txt has its import name listed, so its absence reads as a requirement."""
    packages = {re.split(r"[;<>=\s]", line)[0] for line in (REPO / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    named = {name for names in adapter.REQUIREMENT_MODULES.values() for name in names.split(" or ")}
    assert packages <= named, packages - named


@pytest.mark.parametrize("version, says", [("0.3.40", "older than 0.3.64"), ("0.40.1", "newer than 0.33.0")])
def test_a_comfyui_outside_the_tested_range_gets_one_log_line_and_the_nodes(adapter, caplog, monkeypatch,
                                                                            version, says):
    monkeypatch.setattr(sys.modules["comfyui_version"], "__version__", version)
    with caplog.at_level(logging.WARNING):
        assert node_list(adapter, ("good_nodes",)) == ["GoodNode"]
    (record,) = caplog.records
    assert f"ComfyUI {version} is {says}" in record.getMessage()


@pytest.mark.parametrize("version", [*TESTED_COMFYUI, "0.16.2", "0.33.0+local"])
def test_a_comfyui_in_the_tested_range_logs_nothing(adapter, caplog, monkeypatch, version):
    monkeypatch.setattr(sys.modules["comfyui_version"], "__version__", version)
    with caplog.at_level(logging.WARNING):
        assert node_list(adapter, ("good_nodes",)) == ["GoodNode"]
    assert not caplog.records
