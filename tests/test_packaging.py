"""What ComfyUI Manager and the Comfy Registry read: requirements, pyproject, the lazy entry point."""
import importlib.util
import json
import pathlib
import re
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10, the oldest supported: its backport
    import tomli as tomllib

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
    from face_migration.catalog import CATALOGUE, MODEL_FILES

    readme = (ROOT / "README.md").read_text()
    blocks = readme.split("```")
    install, tests = blocks[1], blocks[3]
    assert "custom_nodes" in install and "pip install -r" in install and "requirements.txt" in install
    assert "bash .ci/run" in tests
    assert "pytest" in (ROOT / ".ci" / "run").read_text()
    for model in MODEL_FILES:
        assert model.filename in readme and model.url in readme and model.display_folder in readme, model.key
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    for model in CATALOGUE.files:  # the FLUX files too: a row each, its folder, published size and source
        row = next((r for r in rows if r.startswith(f"| `{model.filename}`")), "")
        assert f"`{model.display_folder}/`" in row and model.source_url in row, model.key
        assert f"| {readable_size(model.size_bytes)} |" in row, (model.key, readable_size(model.size_bytes))


def readable_size(size: int) -> str:
    """As the README's Models table writes sizes: decimal units, three significant digits."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            value = size / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{size} bytes"


def test_readme_says_how_much_a_local_workflow_downloads():
    from face_migration.check_models import workflow_needs

    local = {name: files for name, files in workflow_needs().items() if files}
    words = {8: "eight", 9: "nine", 10: "ten", 11: "eleven", 12: "twelve"}

    def need(workflows) -> tuple[str, str]:
        counts = {len(files) for files in workflows}
        totals = {f"{sum(m.size_bytes for m in files) / 1e9:.1f} GB" for files in workflows}
        assert len(counts) == 1 and len(totals) == 1, (counts, totals)  # else the sentence needs rewriting
        return words[counts.pop()], totals.pop()
    chroma = [files for files in local.values() if any(m.key == "chroma1_hd" for m in files)]
    flux = [files for files in local.values() if files not in chroma]
    (flux_count, flux_total), (chroma_count, chroma_total) = need(flux), need(chroma)
    sentence = (f"Each local FLUX.1 workflow needs {flux_count} files, {flux_total} in all (the Chroma one "
                f"{chroma_count}, {chroma_total})")
    assert sentence in " ".join((ROOT / "README.md").read_text().split()), sentence


def pack_nodes() -> dict[str, str]:
    """node id -> display name, from the newest schema snapshot of the pack's nodes."""
    snapshot = max((ROOT / "tests" / "fixtures" / "object_info").glob("pack-*.json"),
                   key=lambda p: tuple(int(x) for x in p.stem.split("-", 1)[1].split(".")))
    return {node_id: schema["display_name"] for node_id, schema in json.loads(snapshot.read_text()).items()}


def test_readme_node_table_and_nodes_page_name_every_node():
    readme = (ROOT / "README.md").read_text()
    reference = (ROOT / "docs" / "nodes.md").read_text()
    for node_id, title in pack_nodes().items():
        short = node_id.removeprefix("FaceMigration_")
        assert f"| {title} | `{short}` |" in readme, node_id
        assert f"(`{node_id}`)" in reference or f"`{node_id}`" in reference, node_id


def test_readme_is_short():
    """The README gets a newcomer to the first image; the rest is in docs/ (issue 20)."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


# --- Everything the README, the CI script and the tests name is in the repository -----------------------

# Repository paths as they are written in prose, commands and code: a top-level folder of this repository
# (not preceded by another path character, so ComfyUI/custom_nodes/... or a URL does not count) or a
# top-level file. Folders end with "/"; a file needs an extension or to live in .ci/, so that prefixes such
# as the node category "face_migration/testing" or a module path such as "tests/x.func" are not taken
# for files.
REPO_PATH = re.compile(r"(?<![\w./-])((?:tests|scripts|benchmarks|devkit|workflows|docs|face_migration|nodes|\.ci)/"
                       r"[\w.*/-]*|requirements(?:-test)?\.txt|pyproject\.toml)")
FILE_EXTENSIONS = {"py", "json", "jpg", "png", "txt", "toml", "md", "safetensors", "onnx", "sh", "yaml", "pth", "pt"}
PYTHON_MODULE = re.compile(r"python3?(?:\.exe)? -m ([\w.]+)")
# Where commands and paths are written down for a user or CI to follow.
DOCUMENTED = ["README.md", "docs/*.md", ".ci/run", "tests/**/*.py", "scripts/*.py", "benchmarks/*.py",
              "devkit/*.py"]
# The folder of shared material beside the project checkout: a user's clone has none.
OUTSIDE = re.compile(r"\.\./shared\b|/work/shared\b|parents?\b[^\n]{0,40}[\"']shared[\"']\s*/")


def documented_files() -> list[pathlib.Path]:
    return sorted({f for pattern in DOCUMENTED for f in ROOT.glob(pattern) if "__pycache__" not in f.parts})


def named_paths(text: str) -> set[str]:
    """Repository paths a text names: folders (ending in /) and files, globs kept as written."""
    found = set()
    for match in REPO_PATH.finditer(text):
        path = match.group(1).rstrip(".,:;")
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if path.endswith("/") or path.startswith(".ci/") or name.rsplit(".", 1)[-1] in FILE_EXTENSIONS \
                and "." in name:
            found.add(path)
    return found


def test_path_finder_reads_prose_commands_and_code():
    text = ("Run `bash .ci/run` or python scripts/make_*_fixtures.py; see tests/fixtures/,\n"
            "workflows/flux1_dev_pulid.jpg. ComfyUI/custom_nodes/x/tests/y.py https://host/tests/z.py "
            "CATEGORY = 'face_migration/testing' devkit.workflow_validation.to_api and requirements-test.txt")
    assert named_paths(text) == {".ci/run", "scripts/make_*_fixtures.py", "tests/fixtures/",
                                 "workflows/flux1_dev_pulid.jpg", "requirements-test.txt"}
    assert OUTSIDE.search('REPO.parent / "shared" / "comfyui"') and OUTSIDE.search("see ../" + "shared/x")
    assert not OUTSIDE.search("devkit/parity_data.py: weights shared by the fixtures")


@pytest.mark.parametrize("doc", documented_files(), ids=lambda f: str(f.relative_to(ROOT)))
def test_every_path_a_file_names_is_in_the_repository(doc):
    missing = sorted(p for p in named_paths(doc.read_text()) if not list(ROOT.glob(p.rstrip("/"))))
    assert not missing, f"{doc.relative_to(ROOT)} names paths this repository does not have: {missing}"


@pytest.mark.parametrize("doc", documented_files(), ids=lambda f: str(f.relative_to(ROOT)))
def test_every_python_module_a_file_runs_is_in_the_repository(doc):
    """`python -m face_migration ...` and the like: modules of this repository must exist (pip, pytest,
    playwright and other installed tools are not this repository's)."""
    ours = {"face_migration", "tests", "scripts", "benchmarks", "nodes"}
    missing = []
    for module in PYTHON_MODULE.findall(doc.read_text()):
        parts = module.split(".")
        if parts[0] in ours:
            base = ROOT.joinpath(*parts)
            if not (base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()):
                missing.append(module)
    assert not missing, f"{doc.relative_to(ROOT)} runs modules this repository does not have: {missing}"


def test_nothing_reads_material_from_beside_the_repository():
    """Tests, scripts, benchmarks and CI use only what is in the repository (a user's clone has nothing
    beside it)."""
    offenders = []
    for folder in ("tests", "scripts", "benchmarks", "devkit", ".ci"):
        for path in sorted((ROOT / folder).rglob("*")):
            binary = path.suffix in {".safetensors", ".onnx", ".jpg", ".png", ".pyc"}
            if path.is_file() and not binary and path != pathlib.Path(__file__).resolve():  # this file: the patterns
                for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if OUTSIDE.search(line):
                        offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_scripts_and_benchmarks_do_not_import_from_tests():
    """What scripts and benchmarks share with the tests lives in devkit/, never in tests/."""
    importing_tests = re.compile(r"^\s*(?:from tests\b|import tests\b)", re.MULTILINE)
    offenders = [str(path.relative_to(ROOT)) for folder in ("scripts", "benchmarks", "devkit")
                 for path in sorted((ROOT / folder).glob("*.py")) if importing_tests.search(path.read_text())]
    assert not offenders, offenders


def test_no_code_of_the_pack_assigns_forward_orig():
    """The identity goes in through block patches only; FLUX's forward_orig is never replaced."""
    assignment = re.compile(r"\.forward_orig\s*=(?!=)|setattr\([^)]*[\"']forward_orig[\"']")
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for folder in ("face_migration", "nodes") for path in sorted((ROOT / folder).rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1) if assignment.search(line)]
    assert not offenders, offenders


def test_readme_top_says_where_and_with_which_python_and_how_to_run_the_optional_tests():
    readme = (ROOT / "README.md").read_text()
    blocks = readme.split("```")
    install, tests, after = blocks[1], blocks[3], blocks[4].split("\n\n")[0]
    assert "from the folder that holds ComfyUI/" in install and "python_embeded" in install
    assert "from the pack folder" in tests and "cd ComfyUI/custom_nodes/comfyui-face-migration" in tests
    assert "PYTHON=" in tests
    # the optional suites, as their skip reasons name them ("README, Tests"): a ComfyUI, then docs/testing.md
    assert "## Tests" in readme.split("```")[2] and "(docs/testing.md)" in after
    for needed in ("COMFYUI_PATH", "COMFYUI_PYTHON"):
        assert needed in after, needed
    testing = (ROOT / "docs" / "testing.md").read_text()
    for needed in ("COMFYUI_PATH", "COMFYUI_PYTHON", "pip install playwright", "apt-get install chromium",
                   "playwright install", "--with-deps", "CHROMIUM_PATH", "bash .ci/run tests/integration"):
        assert needed in testing, needed


def test_ci_takes_cpu_torch_on_linux_x86_64_and_reuses_a_torch_it_finds():
    run = (ROOT / ".ci" / "run").read_text()
    assert "https://download.pytorch.org/whl/cpu" in run and "--retries 0" in run
    assert "import torch" in run and "PYTHON" in run
