"""Workflows made with the other PuLID-FLUX packs' nodes open with this pack's nodes (web/peer_nodes.json).

On the server: every node the table maps to is listed by /object_info, with the peers' names among its search
aliases where ComfyUI has them (0.33), and GET /node_replacements lists the table as core's replacement can apply
it (ComfyUI 0.14 and newer). In ComfyUI's own frontend (headless Chromium, as test_workflows_browser.py): each
fixture of tests/fixtures/peer_workflows (written for this test in the peers' formats) is dropped onto the page
and opens with no missing node type, this pack's nodes holding the mapped widget values and links, and a Note
listing what was not carried over; with the peer pack installed (its node types registered), nothing changes.

The server has no model files and no peer pack. Needs what test_workflows_browser.py needs."""
from __future__ import annotations

import importlib.util
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tests.integration.test_workflows_browser import (ARTIFACTS, DIALOG_TEXTS, DROP_FILE, close_dialogs,
                                                        launched_chromium)

REPO = Path(__file__).resolve().parents[2]
TABLE = json.loads((REPO / "web" / "peer_nodes.json").read_text())
FIXTURES = REPO / "tests" / "fixtures" / "peer_workflows"
PEER_TYPES = sorted(TABLE["nodes"]) + ["PulidFluxOptions"]

# Per fixture: node type -> widget values expected on it after loading; the Note's expected phrases.
COMMON = {"FaceMigration_EvaClipLoader": {"eva_file": "EVA02_CLIP_L_336_psz14_s6B.pt"},
          "FaceMigration_FaceParsingLoader": {"parsing_file": "parsing_bisenet.pth",
                                              "landmark_file": "detection_Resnet50_Final.pth"},
          "UNETLoader": {}, "LoadImage": {}, "ModelSamplingFlux": {}}
EXPECTED = {
    "balazik_apply_pulid_flux": ({
        **COMMON,
        "FaceMigration_PulidModelLoader": {"pulid_file": "pulid_flux_v0.9.1.safetensors"},
        "FaceMigration_FaceAnalysisLoader": {"provider": "CUDA"},
        "FaceMigration_ApplyPulid": {"weight": 0.85, "timing": "percent", "start_percent": 0.1, "end_percent": 0.9,
                                     "uncond_id": "uncond ID"},
        "FaceMigration_EncodeFace": {"face_order": "largest-first", "face_index": 0, "combine": "mean",
                                     "skip_faceless": True},
    }, []),
    "sipie800_apply_pulid_flux": ({
        **COMMON, "SolidMask": {}, "Note": {},
        "FaceMigration_PulidModelLoader": {"pulid_file": "pulid_flux_v0.9.0.safetensors"},
        "FaceMigration_FaceAnalysisLoader": {"provider": "ROCm"},
        "FaceMigration_ApplyPulid": {"weight": 1.2, "timing": "percent", "start_percent": 0.0, "end_percent": 0.75},
        "FaceMigration_EncodeFace": {"combine": "mean"},
    }, ["fusion = \"max\"", "fusion_weight_max = 3", "use_gray = false", "input prior_image"]),
    "lldacing_apply_pulid_flux": ({
        **COMMON,
        "FaceMigration_PulidModelLoader": {"pulid_file": "pulid_flux_v0.9.1.safetensors"},
        "FaceMigration_FaceAnalysisLoader": {"provider": "CPU"},
        "FaceMigration_ApplyPulid": {"weight": 1.0, "timing": "percent", "start_percent": 0.2, "end_percent": 1.0},
        "FaceMigration_EncodeFace": {"face_order": "right-left", "face_index": 1},
    }, []),
}
# The Apply node's inputs and Encode Face's, each linked from a node of this type.
LINKED = {"FaceMigration_ApplyPulid": {"model": "UNETLoader", "pulid_model": "FaceMigration_PulidModelLoader",
                                       "pulid_id": "FaceMigration_EncodeFace"},
          "FaceMigration_EncodeFace": {"image": "LoadImage", "eva_clip": "FaceMigration_EvaClipLoader",
                                       "face_analysis": "FaceMigration_FaceAnalysisLoader",
                                       "face_parsing": "FaceMigration_FaceParsingLoader",
                                       "pulid_model": "FaceMigration_PulidModelLoader"}}
GRAPH = """() => app.graph.nodes.map(n => ({
    id: n.id, type: n.type, registered: n.type in LiteGraph.registered_node_types,
    widgets: Object.fromEntries((n.widgets ?? []).map(w => [w.name, w.value])),
    inputs: Object.fromEntries((n.inputs ?? []).map(i => [i.name,
        i.link == null ? null : app.graph.getNodeById(app.graph.links[i.link]?.origin_id)?.type ?? '?'])),
    properties: n.properties, text: n.type === 'Note' ? n.widgets_values?.[0] ?? null : null,
}))"""
# Stand-ins for an installed peer pack: its node types registered in LiteGraph.
REGISTER_PEERS = """(types) => {
    for (const type of types) {
        class Peer extends LGraphNode {}
        Peer.title = type;
        LiteGraph.registerNodeType(type, Peer);
    }
}"""


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.load(resp)


@pytest.fixture(scope="module")
def server(another_comfy):
    return another_comfy()


@pytest.fixture(scope="module")
def browser(server):
    with launched_chromium() as launched:
        yield launched


def open_page(browser, server):
    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(f"{exc}\n{exc.stack}"))
    page.goto(server.url + "/")
    page.wait_for_function("() => window.app?.graph && window.LiteGraph"
                           " && Object.keys(LiteGraph.registered_node_types).length > 100", timeout=90_000)
    close_dialogs(page)
    page.errors.clear()  # the frontend's own start-up errors are not the workflow's
    return page


def drop(page, path: Path) -> list[dict]:
    """Drops the workflow file onto the page; the graph's nodes once it is loaded."""
    close_dialogs(page)
    before = page.evaluate("() => window.__peerLoads = (window.__peerLoads ?? 0) + 1")
    page.evaluate("(n) => app.graph.extra.__loaded = n", before)
    page.evaluate(DROP_FILE, [path.name, path.read_text()])
    page.wait_for_function("(n) => app.graph.extra?.__loaded !== n && app.graph.nodes.length > 0", arg=before,
                           timeout=30_000)
    page.wait_for_timeout(1500)
    return page.evaluate(GRAPH)


def test_object_info_lists_every_node_the_table_maps_to(server):
    info = server.object_info()
    for old_type, entry in TABLE["nodes"].items():
        assert entry["new_type"] in info, f"{old_type} maps to {entry['new_type']}, which the server does not list"
        aliases = info[entry["new_type"]].get("search_aliases")
        if aliases is not None:  # 0.33; 0.3.64 has no search aliases
            assert {old_type, entry["title"]} <= set(aliases), f"{entry['new_type']}: {aliases}"
    encoder = TABLE["nodes"]["ApplyPulidFlux"]["encoder"]
    assert {encoder["new_type"], *(loader["new_type"] for loader in encoder["loaders"].values())} <= set(info)


def node_replacements(server) -> dict:
    try:
        return get_json(server.url + "/node_replacements")
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and "search_aliases" not in json.dumps(server.object_info()):
            pytest.skip("this ComfyUI has no node replacements (before 0.14): the frontend rewrite alone applies")
        raise


def test_node_replacements_endpoint_lists_the_table(server):
    spec = importlib.util.spec_from_file_location("peer_replacements", REPO / "nodes" / "peer_replacements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    listed = node_replacements(server)
    for replacement in module.server_replacements(TABLE):
        assert replacement in listed.get(replacement["old_node_id"], []), (replacement, listed)


def test_an_api_prompt_with_peer_nodes_is_validated_as_this_packs(server):
    """Core replaces the peer nodes of an API prompt: the loader is checked as this pack's (its file), and
    ApplyPulidFlux, which has no identity input here, is refused for the identity Encode Face would give."""
    node_replacements(server)
    meta = {"_meta": {"title": "peer node"}}
    prompt = {
        "1": {"class_type": "PulidFluxModelLoader", "inputs": {"pulid_file": "pulid_flux_v0.9.1.safetensors"}, **meta},
        "2": {"class_type": "PulidFluxEvaClipLoader", "inputs": {}, **meta},
        "3": {"class_type": "PulidFluxInsightFaceLoader", "inputs": {"provider": "ROCM"}, **meta},
        "4": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "5": {"class_type": "UNETLoader", "inputs": {"unet_name": "absent.safetensors", "weight_dtype": "default"}},
        "6": {"class_type": "ApplyPulidFlux", "inputs": {
            "model": ["5", 0], "pulid_flux": ["1", 0], "eva_clip": ["2", 0], "face_analysis": ["3", 0],
            "image": ["4", 0], "weight": 0.8, "start_at": 0.1, "end_at": 0.9}, **meta},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}},
    }
    body = json.dumps({"prompt": prompt}).encode()
    request = urllib.request.Request(server.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 400, server.log_text()[-2000:]
    errors = json.load(refused.value)["node_errors"]
    assert errors["6"]["class_type"] == "FaceMigration_ApplyPulid"
    assert [e["details"] for e in errors["6"]["errors"]] == ["pulid_id"], errors["6"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_peer_workflow_opens_with_this_packs_nodes(browser, server, name):
    page = open_page(browser, server)
    nodes = drop(page, FIXTURES / f"{name}.json")
    dialogs = page.evaluate(DIALOG_TEXTS)
    expected, note_phrases = EXPECTED[name]
    assert not [d for d in dialogs if "missing" in d.lower() and "node" in d.lower()], dialogs
    assert not [n for n in nodes if not n["registered"]], nodes
    assert sorted(n["type"] for n in nodes) == sorted(expected), nodes
    by_type = {n["type"]: n for n in nodes}
    for node_type, values in expected.items():
        got = {k: by_type[node_type]["widgets"].get(k) for k in values}
        assert got == pytest.approx(values), f"{name}: {node_type} {by_type[node_type]['widgets']}"
    for node_type, inputs in LINKED.items():
        got = {k: by_type[node_type]["inputs"].get(k) for k in inputs}
        assert got == inputs, f"{name}: {node_type} inputs linked from {by_type[node_type]['inputs']}"
    apply = by_type["FaceMigration_ApplyPulid"]
    assert apply["properties"]["Face Migration: opened from"]["type"] == "ApplyPulidFlux"
    if name.startswith("sipie800"):
        assert apply["inputs"]["mask"] == "SolidMask"
        text = by_type["Note"]["text"]
        for phrase in note_phrases:
            assert phrase in text, f"the Note does not say {phrase!r}: {text}"
        assert len(apply["properties"]["Face Migration: opened from"]["not_carried"]) == len(note_phrases)
    assert not page.errors, page.errors
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
    (ARTIFACTS / version).mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / version / f"peer_{name}.png"))  # as a user sees it on opening
    page.close()


def test_nothing_changes_when_the_peer_pack_is_installed(browser, server):
    page = open_page(browser, server)
    page.evaluate(REGISTER_PEERS, PEER_TYPES)
    nodes = drop(page, FIXTURES / "lldacing_apply_pulid_flux.json")
    assert sorted(n["type"] for n in nodes if n["type"] in PEER_TYPES) == sorted(PEER_TYPES), nodes
    assert not [n for n in nodes if n["type"].startswith("FaceMigration_")], nodes
    page.close()
