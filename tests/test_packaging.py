"""What ComfyUI Manager and the Comfy Registry read: requirements, pyproject, the lazy entry point."""
import importlib.util
import pathlib
import sys
import tomllib

import pytest
from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

PLATFORMS = {
    "linux-x86_64": {"sys_platform": "linux", "platform_machine": "x86_64"},
    "linux-aarch64": {"sys_platform": "linux", "platform_machine": "aarch64"},
    "windows": {"sys_platform": "win32", "platform_machine": "AMD64"},
    "macos-arm64": {"sys_platform": "darwin", "platform_machine": "arm64"},
}


def requirement_lines():
    return [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def test_requirements_txt_matches_pyproject():
    assert [str(Requirement(r)) for r in requirement_lines()] == \
        [str(Requirement(r)) for r in PYPROJECT["project"]["dependencies"]]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_exactly_one_onnxruntime_per_platform_and_no_torch(platform):
    env = PLATFORMS[platform]
    chosen = []
    for line in requirement_lines():
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            chosen.append(req.name)
    assert len([n for n in chosen if n.startswith("onnxruntime")]) == 1, chosen
    assert "onnxruntime-gpu" in chosen if platform in ("linux-x86_64", "windows") else "onnxruntime" in chosen
    assert not {"torch", "insightface", "facexlib", "opencv-python"} & set(chosen)


def test_registry_metadata():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert project["name"] == "comfyui-face-migration"
    major, minor, patch = (int(x) for x in project["version"].split("."))
    assert (major, minor, patch) >= (0, 1, 0)
    assert comfy["DisplayName"] == "Face Migration (PuLID-FLUX)"
    assert comfy["PublisherId"] and comfy["requires-comfyui"].startswith(">=")
    assert "Repository" in project["urls"]
    assert (ROOT / "LICENSE").is_file()


def test_entry_point_imports_without_comfyui_and_loads_nothing_heavy():
    name = "face_migration_pack_probe"
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        assert callable(module.comfy_entrypoint)
        assert not any(m.startswith(f"{name}.") for m in sys.modules)  # node modules load on demand only
    finally:
        sys.modules.pop(name, None)


def test_readme_opens_with_install_and_test_commands_and_lists_every_model_file():
    from face_migration.catalog import MODEL_FILES

    readme = (ROOT / "README.md").read_text()
    blocks = readme.split("```")
    install, tests = blocks[1], blocks[3]
    assert "custom_nodes" in install and "pip install -r" in install and "requirements.txt" in install
    assert "bash .ci/run" in tests
    assert "pytest" in (ROOT / ".ci" / "run").read_text()
    for model in MODEL_FILES:
        assert model.filename in readme and model.url in readme and model.display_folder in readme, model.key
