"""Workflows made with the other PuLID-FLUX packs' nodes open with this pack's nodes (web/peer_nodes.json).

On the server: every node the table maps to is listed by /object_info, with the peers' names among its search
aliases where ComfyUI has them (0.33), and GET /node_replacements lists the table as core's replacement can apply
it (ComfyUI 0.14 and newer). In ComfyUI's own frontend (headless Chromium, as test_workflows_browser.py): each
fixture of tests/fixtures/peer_workflows (written for this test in the layouts the peers' packs save: node sizes
and positions as in their example workflows, the widget values of each variant of ApplyPulidFlux) is dropped onto
the page and opens with no missing node type, this pack's nodes holding the mapped widget values and links, no
link between sockets of different types, no two nodes overlapping as drawn (the replaced loaders are taller than
the peers'), groups still holding their nodes, and a Note listing what was not carried over, its text within its
box; widget values that fit no known variant are reported and not carried. An API-format prompt of the peers'
nodes dropped on the page opens the same way. With the peer pack installed (its node types registered), nothing
changes.

The server has no model files and no peer pack. Needs what test_workflows_browser.py needs."""
from __future__ import annotations

import importlib.util
import json
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from tests.integration.test_workflows_browser import (ARTIFACTS, DIALOG_TEXTS, DROP_FILE, GRAPH_STATE,
                                                        assert_drawn_without_overlap, close_dialogs,
                                                        launched_chromium)

REPO = Path(__file__).resolve().parents[2]
TABLE = json.loads((REPO / "web" / "peer_nodes.json").read_text())
FIXTURES = REPO / "tests" / "fixtures" / "peer_workflows"
PEER_TYPES = sorted(TABLE["nodes"]) + ["PulidFluxOptions"]
PROPERTY = "Face Migration: opened from"

LOADERS = {"FaceMigration_EvaClipLoader": {"eva_file": "EVA02_CLIP_L_336_psz14_s6B.pt"},
           "FaceMigration_FaceParsingLoader": {"parsing_file": "parsing_bisenet.pth",
                                               "landmark_file": "detection_Resnet50_Final.pth"}}
# The Apply node's inputs and Encode Face's, each linked from a node of this type.
APPLY_LINKS = {"FaceMigration_ApplyPulid": {"model": "UNETLoader", "pulid_model": "FaceMigration_PulidModelLoader",
                                            "pulid_id": "FaceMigration_EncodeFace"},
               "FaceMigration_EncodeFace": {"image": "LoadImage", "eva_clip": "FaceMigration_EvaClipLoader",
                                            "face_analysis": "FaceMigration_FaceAnalysisLoader",
                                            "face_parsing": "FaceMigration_FaceParsingLoader",
                                            "pulid_model": "FaceMigration_PulidModelLoader"}}
APPLIED = Counter(["UNETLoader", "LoadImage", "ModelSamplingFlux", "FaceMigration_PulidModelLoader",
                   "FaceMigration_FaceAnalysisLoader", "FaceMigration_EvaClipLoader", "FaceMigration_FaceParsingLoader",
                   "FaceMigration_ApplyPulid", "FaceMigration_EncodeFace"])
GR_LAYOUT = "GraftingRayman/ComfyUI-PuLID-Flux-GR"
# Per fixture: node types (with counts) after loading, widget values and links expected on the node of each type,
# phrases the Note must have and must not have, how many things were not carried over, and the variant read.
EXPECTED = {
    "balazik_apply_pulid_flux": dict(
        types=APPLIED, links=APPLY_LINKS, values={
            **LOADERS, "FaceMigration_PulidModelLoader": {"pulid_file": "pulid_flux_v0.9.1.safetensors"},
            "FaceMigration_FaceAnalysisLoader": {"provider": "CUDA"},
            "FaceMigration_ApplyPulid": {"weight": 0.85, "timing": "percent", "start_percent": 0.1, "end_percent": 0.9,
                                         "uncond_id": "uncond ID"},
            "FaceMigration_EncodeFace": {"face_order": "largest-first", "face_index": 0, "combine": "mean",
                                         "skip_faceless": True}},
        note=[], not_note=[], not_carried=0, layout="balazik/ComfyUI-PuLID-Flux"),
    "sipie800_apply_pulid_flux": dict(
        types=APPLIED + Counter(["SolidMask", "Note", "FaceMigration_ApplyPulid_note"]),
        links={**APPLY_LINKS, "FaceMigration_ApplyPulid": {**APPLY_LINKS["FaceMigration_ApplyPulid"],
                                                           "mask": "SolidMask"}},
        values={**LOADERS, "FaceMigration_PulidModelLoader": {"pulid_file": "pulid_flux_v0.9.0.safetensors"},
                "FaceMigration_FaceAnalysisLoader": {"provider": "ROCm"},
                "FaceMigration_ApplyPulid": {"weight": 1.2, "timing": "percent", "start_percent": 0.0,
                                             "end_percent": 0.75},
                "FaceMigration_EncodeFace": {"combine": "mean"}},
        note=['fusion = "auto_weight"', "fusion_weight_max = 3", "use_gray = false", "input prior_image"],
        not_note=["train_step", "fusion_weight_min"], not_carried=4, layout="sipie800/ComfyUI-PuLID-Flux-Enhanced"),
    "graftingrayman_apply_pulid_flux_12_widgets": dict(
        types=APPLIED + Counter(["FaceMigration_ApplyPulid_note"]), links=APPLY_LINKS, values={
            **LOADERS, "FaceMigration_ApplyPulid": {"weight": 0.9, "start_percent": 0.05, "end_percent": 0.95},
            "FaceMigration_EncodeFace": {"face_order": "largest-first", "combine": "mean"}},
        note=['face_select = "normal"'], not_note=["fusion =", "train_step", "use_face_number", "blur"],
        not_carried=1, layout=GR_LAYOUT),
    "unknown_apply_pulid_flux_layout": dict(
        types=APPLIED + Counter(["FaceMigration_ApplyPulid_note"]), links=APPLY_LINKS, values={
            # This pack's defaults, none of the five saved values.
            "FaceMigration_ApplyPulid": {"weight": 1.0, "timing": "percent", "start_percent": 0.0, "end_percent": 1.0},
            "FaceMigration_EncodeFace": {"face_order": "largest-first", "combine": "mean"}},
        note=["[0.7,0.2,0.8,\"mean\",2]", "fit no known layout of ApplyPulidFlux", "this pack's defaults are used"],
        not_note=["fusion =", "fusion_weight_min"], not_carried=1, layout=None),
    "lldacing_face_detector_and_options": dict(
        types=APPLIED + Counter({"PreviewImage": 3, "Note": 1}),
        links={**APPLY_LINKS, "PreviewImage": {"images": "FaceMigration_EncodeFace"}},
        values={**LOADERS, "FaceMigration_FaceAnalysisLoader": {"provider": "CUDA"},
                "FaceMigration_ApplyPulid": {"weight": 0.9, "start_percent": 0.1, "end_percent": 1.0},
                "FaceMigration_EncodeFace": {"face_order": "right-left", "face_index": 1}},
        note=[], not_note=[], not_carried=0, layout="lldacing/ComfyUI_PuLID_Flux_ll"),
    "lldacing_face_detector_only": dict(
        types=Counter(["LoadImage", "FaceMigration_FaceAnalysisLoader", "FaceMigration_EncodeFace",
                       "FaceMigration_EvaClipLoader", "FaceMigration_FaceParsingLoader",
                       "FaceMigration_PulidModelLoader", "PreviewImage", "PreviewImage"]),
        links={"FaceMigration_EncodeFace": {k: v for k, v in APPLY_LINKS["FaceMigration_EncodeFace"].items()},
               "PreviewImage": {"images": "FaceMigration_EncodeFace"}},
        values={**LOADERS, "FaceMigration_FaceAnalysisLoader": {"provider": "CPU"},
                "FaceMigration_PulidModelLoader": {"pulid_file": "pulid_flux_v0.9.1.safetensors"},
                "FaceMigration_EncodeFace": {"face_order": "left-right", "face_index": 2}},
        note=[], not_note=[], not_carried=0, layout="lldacing/ComfyUI_PuLID_Flux_ll"),
}
GRAPH = """() => app.graph.nodes.map(n => ({
    id: n.id, type: n.type, registered: n.type in LiteGraph.registered_node_types,
    widgets: Object.fromEntries((n.widgets ?? []).map(w => [w.name, w.value])),
    inputs: Object.fromEntries((n.inputs ?? []).map(i => [i.name,
        i.link == null ? null : app.graph.getNodeById(app.graph.links[i.link]?.origin_id)?.type ?? '?'])),
    properties: n.properties, text: n.type === 'Note' ? n.widgets?.[0]?.value ?? n.widgets_values?.[0] ?? null : null,
}))"""
# Links whose origin output and target input have different types.
MISTYPED_LINKS = """() => app.graph.nodes.flatMap(n => (n.inputs ?? []).filter(i => i.link != null).map(i => {
    const link = app.graph.links[i.link], origin = app.graph.getNodeById(link?.origin_id);
    return {to: `${n.type}.${i.name}`, takes: i.type, from: origin?.type,
            gives: origin?.outputs?.[link.origin_slot]?.type};
}).filter(l => l.takes !== l.gives && l.takes !== '*' && l.gives !== '*'))"""
# Each Note brought into view: whether its text fits its box (the multiline widget's textarea).
NOTE_TEXT_FITS = """async () => {
    const out = [];
    for (const node of app.graph.nodes.filter(n => n.type === 'Note')) {
        app.canvas.centerOnNode(node);
        app.canvas.setDirty(true, true);
        await new Promise(r => setTimeout(r, 500));
        const widget = node.widgets?.[0], el = widget?.inputEl ?? widget?.element;
        const area = el?.tagName === 'TEXTAREA' ? el : el?.querySelector?.('textarea');
        out.push({id: node.id, text: String(node.widgets_values?.[0] ?? '').slice(0, 50), shown: !!area?.offsetParent,
                  scroll: area?.scrollHeight ?? null, client: area?.clientHeight ?? null});
    }
    return out;
}"""
GROUPS = """() => (app.graph.groups ?? app.graph._groups ?? [])
    .map(g => ({title: g.title, bounding: [...(g._bounding ?? g.bounding)]}))"""
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


def drop_fixture(page, name: str) -> list[dict]:
    path = FIXTURES / f"{name}.json"
    return drop(page, path)


def node_types(nodes: list[dict]) -> Counter:
    """Types of the graph's nodes; a Note the rewrite added counts as '<type of the node it explains>_note'."""
    apply_notes = sum(1 for n in nodes if n["type"] == "Note"
                      and "was opened as this pack's nodes" in (n["text"] or ""))
    types = Counter(n["type"] for n in nodes)
    types["Note"] -= apply_notes
    types += Counter({"FaceMigration_ApplyPulid_note": apply_notes})
    return +types


def inside(inner: list[float], outer: list[float]) -> bool:
    return (outer[0] <= inner[0] and outer[1] <= inner[1] and inner[0] + inner[2] <= outer[0] + outer[2]
            and inner[1] + inner[3] <= outer[1] + outer[3])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_peer_workflow_opens_with_this_packs_nodes(browser, server, name):
    page = open_page(browser, server)
    nodes = drop_fixture(page, name)
    dialogs = page.evaluate(DIALOG_TEXTS)
    state, mistyped = page.evaluate(GRAPH_STATE), page.evaluate(MISTYPED_LINKS)
    groups = page.evaluate(GROUPS)
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
    (ARTIFACTS / version).mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / version / f"peer_{name}.png"))  # as a user sees it on opening
    notes = page.evaluate(NOTE_TEXT_FITS)
    expected = EXPECTED[name]
    assert not [d for d in dialogs if "missing" in d.lower() and "node" in d.lower()], dialogs
    assert not [n for n in nodes if not n["registered"]], nodes
    assert node_types(nodes) == expected["types"], nodes
    by_type = {n["type"]: n for n in nodes}
    for node_type, values in expected["values"].items():
        got = {k: by_type[node_type]["widgets"].get(k) for k in values}
        assert got == pytest.approx(values), f"{name}: {node_type} {by_type[node_type]['widgets']}"
    for node_type, inputs in expected["links"].items():
        for node in (n for n in nodes if n["type"] == node_type):
            got = {k: node["inputs"].get(k) for k in inputs}
            assert got == inputs, f"{name}: {node_type} #{node['id']} inputs linked from {node['inputs']}"
    assert not mistyped, f"links between sockets of different types: {mistyped}"
    # As drawn: no node covers another (title bars included), none smaller than the frontend needs.
    assert_drawn_without_overlap(state["nodes"], {n["id"]: n["size"] for n in state["nodes"]})
    records = [n["properties"][PROPERTY] for n in nodes if PROPERTY in (n["properties"] or {})]
    main = next(r for r in records if r["type"] in ("ApplyPulidFlux", "PulidFluxFaceDetector"))
    assert (main["layout"] is None) == (expected["layout"] is None), main
    assert expected["layout"] is None or any(expected["layout"] in pack for pack in main["layout"]), main
    assert sum(len(r["not_carried"]) for r in records) == expected["not_carried"], records
    text = "\n".join(n["text"] or "" for n in nodes if n["type"] == "Note")
    for phrase in expected["note"]:
        assert phrase in text, f"the Note does not say {phrase!r}: {text}"
    for phrase in expected["not_note"]:
        assert phrase not in text, f"the Note says {phrase!r}: {text}"
    for note in notes:
        assert note["shown"] and note["scroll"] <= note["client"] + 2, f"the Note's text overflows its box: {note}"
    saved = json.loads((FIXTURES / f"{name}.json").read_text())
    drawn = {n["id"]: [n["pos"][0], n["pos"][1] - n["title_height"], *n["size"]] for n in state["nodes"]}
    for group in saved["groups"]:
        members = [n["id"] for n in saved["nodes"]
                   if inside([n["pos"][0], n["pos"][1] - 30, *n["size"]], group["bounding"])]
        now = next(g for g in groups if g["title"] == group["title"])["bounding"]
        assert members and all(inside(drawn[i], now) for i in members if i in drawn), (group, now, drawn)
    assert not page.errors, page.errors
    page.close()


def test_peer_api_prompt_dropped_on_the_page_opens_with_this_packs_nodes(browser, server):
    """File > Export (API) of lldacing's nodes, dropped on the page: rewritten before the frontend reads it (no
    frontend calls an extension hook for an API prompt before it looks for missing node types)."""
    page = open_page(browser, server)
    nodes = drop_fixture(page, "lldacing_api_prompt")
    dialogs, mistyped = page.evaluate(DIALOG_TEXTS), page.evaluate(MISTYPED_LINKS)
    assert not [d for d in dialogs if "missing" in d.lower() and "node" in d.lower()], dialogs
    assert not [n for n in nodes if not n["registered"]], nodes
    assert +(Counter(n["type"] for n in nodes) - Counter(["Note"])) == (
        APPLIED + Counter(["PreviewImage"])), nodes
    by_type = {n["type"]: n for n in nodes}
    assert by_type["FaceMigration_ApplyPulid"]["widgets"]["weight"] == pytest.approx(0.8)
    assert by_type["FaceMigration_ApplyPulid"]["widgets"]["start_percent"] == pytest.approx(0.1)
    assert by_type["FaceMigration_ApplyPulid"]["widgets"]["timing"] == "percent"
    assert by_type["FaceMigration_FaceAnalysisLoader"]["widgets"]["provider"] == "ROCm"
    assert by_type["FaceMigration_EncodeFace"]["widgets"]["face_index"] == 1
    for node_type, inputs in {**APPLY_LINKS, "PreviewImage": {"images": "FaceMigration_EncodeFace"}}.items():
        got = {k: by_type[node_type]["inputs"].get(k) for k in inputs}
        assert got == inputs, f"{node_type} inputs linked from {by_type[node_type]['inputs']}"
    assert not mistyped, mistyped
    assert 'input_faces_order = "bottom-top"' in by_type["Note"]["text"], by_type["Note"]["text"]
    queued = page.evaluate("async () => (await app.graphToPrompt()).output")
    assert "Note" not in {node["class_type"] for node in queued.values()}
    assert not page.errors, page.errors
    page.close()


def test_an_api_prompt_without_peer_nodes_loads_as_before(browser, server, tmp_path):
    page = open_page(browser, server)
    path = tmp_path / "core_only_api.json"
    path.write_text(json.dumps({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}))
    nodes = drop(page, path)
    assert sorted(n["type"] for n in nodes) == ["EmptyImage", "PreviewImage"], nodes
    assert nodes[0]["widgets"].get("width", 64) == 64 and not page.errors, (nodes, page.errors)
    page.close()


def test_nothing_changes_when_the_peer_pack_is_installed(browser, server):
    page = open_page(browser, server)
    page.evaluate(REGISTER_PEERS, PEER_TYPES)
    nodes = drop_fixture(page, "lldacing_face_detector_and_options")
    assert sorted(n["type"] for n in nodes if n["type"] in PEER_TYPES) == sorted(PEER_TYPES), nodes
    assert not [n for n in nodes if n["type"].startswith("FaceMigration_")], nodes
    page.close()
