import logging
import sys

import pytest

from face_migration.errors import FaceMigrationError
from face_migration.face import onnx_runtime
from tests.face import onnx_graphs

CPU, CUDA, DML = "CPUExecutionProvider", "CUDAExecutionProvider", "DmlExecutionProvider"


@pytest.mark.parametrize("choice, available, expected", [
    ("auto", [CUDA, CPU], [CUDA, CPU]),
    ("auto", ["AzureExecutionProvider", CPU], [CPU]),
    ("auto", [DML, CPU], [DML, CPU]),
    ("CPU", [CUDA, CPU], [CPU]),
    ("CUDA", [CUDA, CPU], [CUDA, CPU]),
    ("DirectML", [DML, CPU], [DML, CPU]),
    ("CoreML", ["CoreMLExecutionProvider", CPU], ["CoreMLExecutionProvider", CPU]),
    ("ROCm", ["ROCMExecutionProvider", CPU], ["ROCMExecutionProvider", CPU]),
])
def test_resolve_providers(choice, available, expected):
    assert onnx_runtime.resolve_providers(choice, available) == (expected, None)


def test_missing_gpu_provider_falls_back_with_the_fix():
    providers, warning = onnx_runtime.resolve_providers("CUDA", [CPU], ["onnxruntime", "onnxruntime-gpu"])
    assert providers == [CPU]
    assert "pip install onnxruntime-gpu" in warning and "CPUExecutionProvider" in warning
    assert "onnxruntime, onnxruntime-gpu" in warning and "keep only one" in warning


def test_auto_warns_when_two_onnxruntime_wheels_shadow_the_gpu_one():
    assert onnx_runtime.resolve_providers("auto", [CPU], ["onnxruntime"]) == ([CPU], None)  # a CPU-only install
    providers, warning = onnx_runtime.resolve_providers("auto", [CPU], ["onnxruntime", "onnxruntime-gpu"])
    assert providers == [CPU]
    assert "keep only one" in warning and "pip install onnxruntime-gpu" in warning


def test_unknown_choice():
    with pytest.raises(FaceMigrationError, match="auto, CPU, CUDA"):
        onnx_runtime.resolve_providers("cuda:0", [CPU])


def test_session_falls_back_to_cpu_with_a_logged_warning(tmp_path, caplog):
    path = onnx_graphs.save(onnx_graphs.arcface_model(), tmp_path / "glintr100.onnx")
    with caplog.at_level(logging.WARNING):
        session = onnx_runtime.create_session(path, "CUDA" if CUDA not in _available() else "ROCm")
    assert session.get_providers() == [CPU]
    assert "run on the CPU" in caplog.text and "onnxruntime-gpu" in caplog.text


def _available():
    import onnxruntime
    return onnxruntime.get_available_providers()


def test_missing_onnxruntime_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(FaceMigrationError, match="pip install onnxruntime-gpu"):
        onnx_runtime.import_onnxruntime()


def test_installed_wheels_lists_the_cpu_package():
    assert "onnxruntime" in onnx_runtime.installed_onnxruntime_wheels()
