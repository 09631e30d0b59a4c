"""The template browser's thumbnails point where the pack serves them (static: web/workflow_templates.js against
nodes/workflow_thumbnails.py and the shipped files; tests/integration/test_templates.py fetches them over HTTP).

Every frontend (1.27, 1.49, 1.58) builds a custom template's thumbnail URL as
api.apiURL(`/workflow_templates/${module}/${name}`) + "." + mediaSubtype; the pack's script sends apiURL calls for
its own templates' thumbnails to the pack's route instead, and leaves the .json requests alone."""
import ast
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = (REPO / "web" / "workflow_templates.js").read_text(encoding="utf-8")
INDEX = json.loads((REPO / "web" / "workflow_templates.json").read_text(encoding="utf-8"))


def js_constant(name: str) -> str:
    found = re.search(rf'^const {name} = ["`]([^"`]*)["`];', SCRIPT, re.MULTILINE)
    assert found, f"web/workflow_templates.js has no const {name}"
    return found.group(1)


def py_constant(name: str) -> str:
    tree = ast.parse((REPO / "nodes" / "workflow_thumbnails.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"nodes/workflow_thumbnails.py has no {name}")


def thumbnail_path(name: str) -> str:
    """The path (under /api) a frontend asks for: apiURL's route for the thumbnail, rewritten as the script does,
    plus the entry's media subtype."""
    subtype = re.search(r'mediaSubtype: "(\w+)"', SCRIPT).group(1)
    return f"{js_constant('THUMBNAILS')}{name}.{subtype}"


def test_the_script_sends_thumbnails_to_the_packs_route_and_json_to_the_core():
    assert js_constant("THUMBNAILS") == py_constant("ROUTE") + "/"
    assert js_constant("TEMPLATE_FILES") == "/workflow_templates/${PACK}/"  # what the frontends pass to apiURL
    assert 'route.startsWith(TEMPLATE_FILES) && !route.endsWith(".json")' in SCRIPT
    assert re.search(r'mediaSubtype: "(\w+)"', SCRIPT).group(1) == py_constant("SUFFIX").lstrip(".")


def test_every_template_of_the_index_has_the_thumbnail_the_route_serves():
    folder = REPO / "workflows"  # nodes/workflow_thumbnails.py WORKFLOWS
    for entry in INDEX["templates"]:
        path = thumbnail_path(entry["name"])
        assert path.startswith(py_constant("ROUTE") + "/")
        served = folder / path.rsplit("/", 1)[1]
        assert served.is_file() and served.with_suffix(".json").is_file(), f"{entry['name']}: no {served}"
        assert served.read_bytes()[:3] == b"\xff\xd8\xff", f"{served} is not a JPEG"
