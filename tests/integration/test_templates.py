"""The shipped workflows appear in ComfyUI's template browser (Custom Nodes -> the pack's folder name):
ComfyUI lists custom_nodes/*/workflows/*.json at /workflow_templates and serves each file; the thumbnails come
from the pack's own route (nodes/workflow_thumbnails.py), where web/workflow_templates.js points the frontends,
since cores after 0.33 serve only the .json files of that folder."""
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.test_template_thumbnails import INDEX, thumbnail_path

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))


def test_every_workflow_is_listed_and_served_as_a_template(comfy, graphs):
    listed = comfy._get("/workflow_templates")
    assert sorted(listed.get(graphs.PACK_NAME, [])) == [p.stem for p in WORKFLOWS]
    for path in WORKFLOWS:
        url = f"{comfy.url}/api/workflow_templates/{graphs.PACK_NAME}/{path.name}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert json.load(resp) == json.loads(path.read_text()), path.name


def test_every_thumbnail_the_frontends_ask_for_is_served_by_the_pack(comfy):
    assert INDEX["templates"]
    for entry in INDEX["templates"]:
        path = thumbnail_path(entry["name"])
        with urllib.request.urlopen(f"{comfy.url}/api{path}", timeout=30) as resp:
            assert resp.headers["Content-Type"] == "image/jpeg", path
            assert resp.read() == (WORKFLOWS[0].parent / f"{entry['name']}.jpg").read_bytes(), path


@pytest.mark.parametrize("name", ["flux1_dev_pulid.json", "nothing.jpg", "..%2Fpyproject.toml", "%2Fetc%2Fpasswd"])
def test_the_thumbnail_route_serves_nothing_else(comfy, name):
    route = thumbnail_path("x").rsplit("/", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{comfy.url}/api{route}/{name}", timeout=30)
    assert caught.value.code == 404
