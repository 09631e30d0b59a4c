"""What the Comfy Registry checks before it publishes the pack. `comfy node validate` (comfy-cli 1.23.0) reads
[tool.comfy] of pyproject.toml and runs ruff with the rules S102 (exec), S307 (eval) and E702 (several statements
on one line) over the repository, warning now and announced to refuse later; the same ruff run is made here, and
the icon the Registry and ComfyUI-Manager show is checked to be a committed square image."""
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
REGISTRY_RULES = "S102,S307,E702"  # comfy-cli 1.23.0, comfy_cli/command/custom_nodes/command.py
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def repository_files() -> list[str]:
    """What a published version holds: the files git tracks (the whole folder outside a git checkout)."""
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True)
    return listed.stdout.split() if listed.returncode == 0 and listed.stdout.strip() else ["."]


def test_the_registry_validators_rules_find_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "-q", "--no-cache", "--select", REGISTRY_RULES,
                           *repository_files()], cwd=REPO, capture_output=True, text=True)
    assert "No module named ruff" not in done.stderr, "install requirements-test.txt (it has ruff)"
    assert done.returncode == 0 and not done.stdout.strip(), f"the Registry would warn:\n{done.stdout}{done.stderr}"


def test_the_rules_run_catches_exec_and_eval(tmp_path):
    """The run above would see a use: ruff with these rules flags each of these lines."""
    uses = [f"{builtin}('1')" for builtin in ("exec", "eval")]  # the two builtins, written as calls
    (tmp_path / "uses.py").write_text("\n".join([*uses, "x = 1; y = 2", "model = object()", ""]))
    done = subprocess.run([sys.executable, "-m", "ruff", "check", ".", "-q", "--no-cache", "--isolated", "--select",
                           REGISTRY_RULES, "--output-format", "concise"], cwd=tmp_path, capture_output=True, text=True)
    assert sorted(re.findall(r"\b(S102|S307|E702)\b", done.stdout)) == ["E702", "S102", "S307"], done.stdout


def test_the_icon_is_a_committed_square_image_on_the_repositorys_raw_path():
    icon = PYPROJECT["tool"]["comfy"]["Icon"]
    owner_repo = PYPROJECT["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{owner_repo}/main/"
    assert icon.startswith(prefix), f"Icon {icon!r} is not a file of this repository ({prefix}...)"
    path = REPO / icon.removeprefix(prefix)
    assert path.is_file(), f"{path} is not committed"
    assert repository_files() == ["."] or subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=REPO,
                                                         capture_output=True).returncode == 0, f"{path} is untracked"
    with Image.open(path) as image:
        # The Registry's documented limits: SVG, PNG, JPG or GIF, square, at most 400 x 400 pixels.
        assert image.format in {"PNG", "JPEG", "GIF"} and image.width == image.height <= 400, (image.format, image.size)
