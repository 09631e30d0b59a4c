"""The shipped workflows appear in ComfyUI's template browser (Custom Nodes -> the pack's folder name):
ComfyUI lists custom_nodes/*/workflows/*.json at /workflow_templates and serves each file."""
import json
import urllib.request
from pathlib import Path

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))


def test_every_workflow_is_listed_and_served_as_a_template(comfy, graphs):
    listed = comfy._get("/workflow_templates")
    assert sorted(listed.get(graphs.PACK_NAME, [])) == [p.stem for p in WORKFLOWS]
    for path in WORKFLOWS:
        url = f"{comfy.url}/api/workflow_templates/{graphs.PACK_NAME}/{path.name}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert json.load(resp) == json.loads(path.read_text()), path.name
