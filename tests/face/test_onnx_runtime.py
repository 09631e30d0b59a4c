import logging
import sys

import pytest

from face_migration.errors import FaceMigrationError
from face_migration.face import onnx_runtime
from devkit import onnx_graphs

CPU, CUDA, DML = "CPUExecutionProvider", "CUDAExecutionProvider", "DmlExecutionProvider"


@pytest.mark.parametrize("choice, available, expected", [
    ("auto", [CUDA, CPU], [CUDA, CPU]),
    ("auto", [DML, CPU], [DML, CPU]),
    ("CPU", [CUDA, CPU], [CPU]),
    ("CUDA", [CUDA, CPU], [CUDA, CPU]),
    ("DirectML", [DML, CPU], [DML, CPU]),
    ("CoreML", ["CoreMLExecutionProvider", CPU], ["CoreMLExecutionProvider", CPU]),
    ("ROCm", ["ROCMExecutionProvider", CPU], ["ROCMExecutionProvider", CPU]),
])
def test_resolve_providers_on_a_gpu_machine(choice, available, expected):
    assert onnx_runtime.resolve_providers(choice, available, gpu_present=True) == (expected, None)


@pytest.mark.parametrize("available, wheels", [([CUDA, CPU], ["onnxruntime-gpu"]), ([CPU], ["onnxruntime"]),
                                               ([CPU], ["onnxruntime", "onnxruntime-gpu"])])
def test_auto_without_a_gpu_is_the_cpu_quietly(available, wheels):
    assert onnx_runtime.resolve_providers("auto", available, wheels, gpu_present=False) == ([CPU], None)


def test_auto_warns_when_a_gpu_exists_but_onnxruntime_offers_no_gpu_provider():
    providers, warning = onnx_runtime.resolve_providers("auto", [CPU], ["onnxruntime"], gpu_present=True)
    assert providers == [CPU]
    assert "has a GPU" in warning and "only CPUExecutionProvider" in warning and "pip install onnxruntime-gpu" in warning


def test_missing_gpu_provider_falls_back_with_the_fix():
    providers, warning = onnx_runtime.resolve_providers("CUDA", [CPU], ["onnxruntime", "onnxruntime-gpu"],
                                                        gpu_present=True)
    assert providers == [CPU]
    assert "pip install onnxruntime-gpu" in warning and "CPUExecutionProvider" in warning
    assert "onnxruntime, onnxruntime-gpu" in warning and "keep only one" in warning


def test_auto_warns_when_two_onnxruntime_wheels_shadow_the_gpu_one():
    providers, warning = onnx_runtime.resolve_providers("auto", [CPU], ["onnxruntime", "onnxruntime-gpu"],
                                                        gpu_present=True)
    assert providers == [CPU]
    assert "keep only one" in warning and "pip install onnxruntime-gpu" in warning


def test_unknown_choice():
    with pytest.raises(FaceMigrationError, match="auto, CPU, CUDA"):
        onnx_runtime.resolve_providers("cuda:0", [CPU], gpu_present=True)


def test_session_falls_back_to_cpu_with_a_logged_warning(tmp_path, caplog):
    path = onnx_graphs.save(onnx_graphs.arcface_model(), tmp_path / "glintr100.onnx")
    with caplog.at_level(logging.WARNING):
        session = onnx_runtime.create_session(path, "CUDA" if CUDA not in _available() else "ROCm", gpu_present=True)
    assert session.get_providers() == [CPU]
    assert "run on the CPU" in caplog.text and "onnxruntime-gpu" in caplog.text


@pytest.fixture
def gpu_onnxruntime(monkeypatch):
    """onnxruntime-gpu as installed on a machine without a GPU: it lists CUDA (asking for it there fills the
    log with CUDA load errors). Returns the provider lists sessions were asked for."""
    import onnxruntime
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, CPU])
    asked = []
    real_session = onnxruntime.InferenceSession
    monkeypatch.setattr(onnxruntime, "InferenceSession",
                        lambda p, sess_options, providers: asked.append(providers) or real_session(
                            p, sess_options=sess_options, providers=providers))
    return asked


def test_auto_session_on_a_machine_without_gpu_never_asks_for_cuda(tmp_path, caplog, gpu_onnxruntime):
    path = onnx_graphs.save(onnx_graphs.arcface_model(), tmp_path / "glintr100.onnx")
    with caplog.at_level(logging.DEBUG, logger="face_migration"):
        session = onnx_runtime.create_session(path, "auto", gpu_present=False)
    assert gpu_onnxruntime == [[CPU]] and session.get_providers() == [CPU]
    assert not caplog.records, caplog.text


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")
def test_gpu_presence_is_asked_of_torch_when_not_given(tmp_path, monkeypatch, gpu_onnxruntime):
    path = onnx_graphs.save(onnx_graphs.arcface_model(), tmp_path / "glintr100.onnx")
    monkeypatch.setattr(onnx_runtime, "torch_sees_gpu", lambda: False)
    onnx_runtime.create_session(path, "auto")
    monkeypatch.setattr(onnx_runtime, "torch_sees_gpu", lambda: True)
    onnx_runtime.create_session(path, "auto")
    assert gpu_onnxruntime == [[CPU], [CUDA, CPU]]


def _available():
    import onnxruntime
    return onnxruntime.get_available_providers()


def test_missing_onnxruntime_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(FaceMigrationError, match="pip install onnxruntime-gpu"):
        onnx_runtime.import_onnxruntime()


def test_installed_wheels_lists_the_cpu_package():
    assert "onnxruntime" in onnx_runtime.installed_onnxruntime_wheels()
