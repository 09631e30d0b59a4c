"""Each shipped workflow loaded into ComfyUI's own frontend in headless Chromium, as a user loads it.

The file is dropped onto a freshly loaded page (the frontend's drop handler, as when dragging it from a file
manager) of a server that has none of the real model files (a fresh install: `no_face_models` takes away the
face models an earlier test may have installed). Then: no missing-node
dialog, every node type registered in LiteGraph; the Missing Models dialog lists each missing file of the
workflow's `models` list (the pack's PuLID file included) and has no error row (a download the frontend
refuses, an unknown folder); the saved view opens at a legible zoom; no node is smaller than the frontend
needs for it and no two nodes overlap as the frontend draws them; and the prompt the frontend would queue
equals tests/workflow_validation.to_api's conversion; the Notes' text is at least 12 px on screen, none is cut
off, and the first one (How to use) opens in sight. Opened as the template browser opens it (frontends 1.49 and
later fit the whole graph to the screen), each workflow is drawn above the scale where text disappears and the
first Note's text is at least 9 px on screen, in sight and not covered; the template browser lists the pack's
workflows by title, in the pack's order. In 1.49 and later the EVA-CLIP .pt row of Missing Models has a
download button that opens the file's page in a new tab. A prompt queued from the page shows Encode Face's, Save
Identity's and Face Similarity's text results on the nodes, also when it is queued again and they come from
ComfyUI's cache. Screenshots go to artifacts/browser/<frontend version>/.

Frontends: the one ComfyUI bundles (1.27.10 with ComfyUI 0.3.64), and any other given to the server with
COMFYUI_EXTRA_ARGS="--cpu --front-end-root PATH/comfyui_frontend_package/static" (checked with 1.58.1, the
newest on PyPI in November 2026). The newest one flags a model when the chosen value is absent from the
loader's list, so there the test reads its missing-model store: each loader whose file is not on disk
(the pack's loaders included) must be flagged. The layout checks run on the bundled frontend.

Needs COMFYUI_PATH (the integration server), the `playwright` Python package and a Chromium: the one at
CHROMIUM_PATH if set, else /usr/bin/chromium if present (Debian: apt-get install chromium), else
the one `python -m playwright install chromium` downloads."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

from devkit.workflow_validation import (CORE_MODEL_COMBOS, PACK_MODEL_COMBOS, frontend_can_download, load_schemas,
                                        to_api, widget_slots)

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
ARTIFACTS = REPO / "artifacts" / "browser"
SYSTEM_CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Widgets the frontend adds on its own (display-only values the server ignores).
FRONTEND_ONLY_INPUTS = {("PreviewAny", "preview")}

DROP_FILE = """([name, text]) => {
    const data = new DataTransfer();
    data.items.add(new File([text], name, {type: 'application/json'}));
    const target = document.querySelector('#graph-canvas') || document;
    target.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
}"""
DIALOG_TEXTS = "() => [...document.querySelectorAll('.p-dialog, [role=dialog]')].map(d => d.innerText)"
BUNDLED_FRONTEND = "1.27."
# The newest frontends keep the models they flag in a Pinia store ("missingModel").
MISSING_MODEL_CANDIDATES = """() => {
    const host = [...document.querySelectorAll('*')].find(e => e.__vue_app__);
    const store = host?.__vue_app__.config.globalProperties.$pinia?._s.get('missingModel');
    return store ? JSON.parse(JSON.stringify(store.missingModelCandidates ?? [])) : null;
}"""
GRAPH_STATE = """() => ({
    title: app.graph.extra?.title ?? null,
    scale: app.canvas.ds.scale,
    offset: [...app.canvas.ds.offset],
    nodes: app.graph.nodes.map(n => ({id: n.id, type: n.type, title: n.title,
                                      registered: n.type in LiteGraph.registered_node_types,
                                      pos: [...n.pos], size: [...n.size], needed: [...n.computeSize()],
                                      title_height: LiteGraph.NODE_TITLE_HEIGHT})),
})"""
# Texts of the Missing Models dialog's error rows (frontend 1.27.10, MissingModelsWarning): its refusal to
# download a file (a listed file all the same), and a folder no node registers (a broken entry).
REFUSAL_ROWS = ("Only allowed suffixes", "Download not allowed")
INVALID_FOLDER_ROW = "Invalid directory"
MIN_SCALE = 0.75  # LiteGraph stops drawing text below 0.6
NOTE_MIN_PX = 12  # Note text on screen at the saved zoom
FITTED_NOTE_MIN_PX = 9  # the first Note's text on screen as the template browser opens a workflow
# Every Markdown Note on screen (the frontends hide those outside the view): its text size (font size times the
# canvas zoom it is drawn at), its box in page pixels and whether its text overflows the box.
NOTES_ON_SCREEN = """() => [...document.querySelectorAll('.comfy-markdown')].filter(el => el.offsetWidth).map(el => {
    const box = el.getBoundingClientRect(), text = el.querySelector('p, li') || el;
    const px = parseFloat(getComputedStyle(text).fontSize) * box.width / el.offsetWidth;
    return {text: el.innerText.slice(0, 40), px, box: [box.left, box.top, box.right, box.bottom],
            cut: el.scrollHeight > el.clientHeight + 2};
})"""
CANVAS_BOX = "() => { const r = app.canvas.canvas.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }"
# As the template browser of frontends 1.49 and later opens a workflow (loadTemplateGraph).
OPEN_AS_TEMPLATE = """async ([data, name]) => {
    await app.loadGraphData(data, true, true, name, {openSource: 'template'});
    await new Promise(r => setTimeout(r, 1500));  // the fit runs after the first frame
    return {scale: app.canvas.ds.scale, low_quality: app.canvas.low_quality};
}"""
# Whether what is drawn at five points of a box (centre and inset corners) is the element of the Note there, not
# a panel, toast or dialog over it.
UNCOVERED = """([left, top, right, bottom]) => {
    const inset = 12, at = [[(left + right) / 2, (top + bottom) / 2], [left + inset, top + inset],
        [right - inset, top + inset], [left + inset, bottom - inset], [right - inset, bottom - inset]];
    return at.every(([x, y]) => document.elementFromPoint(x, y)?.closest('.comfy-markdown'));
}"""
PACK_FOLDER = "comfyui-face-migration"  # the pack's folder in the test server's custom_nodes (conftest)


@pytest.fixture(scope="module")
def schemas(comfyui):
    return load_schemas(comfyui.version)


@contextlib.contextmanager
def launched_chromium():
    """A headless Chromium driven by playwright (skips the test, saying what is missing, without either)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the browser test needs the playwright package (pip install playwright) and a Chromium "
                    "(README, Tests)")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium(driver.chromium.executable_path),
                                         args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(comfy):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with launched_chromium() as browser:
        # Large enough that a fitted graph is drawn above LiteGraph's low-quality zoom (text visible).
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.console_errors = []
        page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
        open_app(page, comfy)
        yield page


def open_app(page, comfy) -> None:
    """(Re)load the frontend: it reads the node definitions, the model lists in the loaders' choices included,
    once, when the page loads."""
    page.goto(comfy.url + "/")
    page.wait_for_function("() => window.app?.graph && window.LiteGraph"
                           " && Object.keys(LiteGraph.registered_node_types).length > 100", timeout=90_000)
    page.wait_for_timeout(3000)  # the template browser greets a fresh page late
    close_dialogs(page)


@pytest.fixture
def fresh_install_page(page, comfy, no_face_models):
    """The page as a newcomer opens it: a server with none of the real model files, the page loaded after that."""
    open_app(page, comfy)
    return page


def chromium(playwright_own: str) -> str:
    """The Chromium to drive: CHROMIUM_PATH, else the system one, else playwright's own download."""
    given = os.environ.get("CHROMIUM_PATH")
    if given and not Path(given).is_file():
        pytest.skip(f"the browser test needs a Chromium: CHROMIUM_PATH={given} is not a file")
    for candidate in (given, SYSTEM_CHROMIUM, playwright_own):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip(f"the browser test needs a Chromium: set CHROMIUM_PATH, install {SYSTEM_CHROMIUM} (Debian: "
                f"apt-get install chromium) or run `python -m playwright install chromium`")


def drop_workflow(page, path: Path) -> None:
    """Drop a workflow file onto the page and wait until it is loaded and checked for missing models."""
    nodes = len(json.loads(path.read_text())["nodes"])
    page.evaluate(DROP_FILE, [path.name, path.read_text()])
    page.wait_for_function(f"() => app.graph.nodes.length === {nodes}", timeout=30_000)
    page.wait_for_timeout(3000)  # the missing-model check is asynchronous


def close_dialogs(page) -> None:
    for _ in range(5):
        if not page.evaluate(DIALOG_TEXTS):
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_loads_in_the_frontend(fresh_install_page, comfy, schemas, path):
    page = fresh_install_page
    text = path.read_text()
    workflow = json.loads(text)
    close_dialogs(page)  # the template browser may open late on the first visit
    page.console_errors.clear()  # the frontend's own start-up errors are not this workflow's
    drop_workflow(page, path)
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
    dialogs = page.evaluate(DIALOG_TEXTS)
    state = page.evaluate(GRAPH_STATE)
    candidates = page.evaluate(MISSING_MODEL_CANDIDATES)
    queued = page.evaluate("async () => (await app.graphToPrompt()).output")
    notes, canvas = page.evaluate(NOTES_ON_SCREEN), page.evaluate(CANVAS_BOX)
    close_dialogs(page)
    page.wait_for_timeout(300)
    artifacts = ARTIFACTS / version
    artifacts.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifacts / f"{path.stem}.png"))  # the view a user gets on opening it
    (artifacts / f"{path.stem}.dialogs.txt").write_text("\n\n".join(dialogs))

    assert not [d for d in dialogs if "missing" in d.lower() and "node" in d.lower()], dialogs
    unregistered = [n for n in state["nodes"] if not n["registered"]]
    assert not unregistered, f"node types the frontend does not know: {unregistered}"
    saved_view = workflow["extra"]["ds"]
    assert state["scale"] == pytest.approx(saved_view["scale"]) and state["scale"] >= MIN_SCALE
    check_queued_prompt(workflow, queued, schemas)
    assert not page.console_errors, page.console_errors
    assert_notes_readable(workflow, notes, canvas)
    if not version.startswith(BUNDLED_FRONTEND):
        assert candidates is not None, f"frontend {version}: no missing-model store found"
        flagged = {(c["nodeType"], c["widgetName"], c["name"]) for c in candidates if c.get("isMissing")}
        assert absent_model_choices(workflow, comfy.object_info(), schemas) <= flagged, f"frontend {version}: {flagged}"
        # Each flagged file of a pack loader carries the folder and URL of the node's entry (its row's details).
        declared = {e["name"]: e for n in workflow["nodes"] for e in n.get("properties", {}).get("models", [])}
        for c in candidates:
            if c.get("isMissing") and c["nodeType"].startswith("FaceMigration_"):
                assert (c.get("directory"), c.get("url")) == (declared[c["name"]]["directory"],
                                                              declared[c["name"]]["url"]), c
        return
    assert_missing_models_listed(workflow, "\n".join(dialogs), comfy.object_info())
    saved_view = workflow["extra"]["ds"]
    assert state["offset"] == pytest.approx(saved_view["offset"]), "the saved view was not restored"
    assert_drawn_without_overlap(state["nodes"], {n["id"]: n["size"] for n in workflow["nodes"]})


def assert_missing_models_listed(workflow: dict, text: str, object_info: dict) -> None:
    """Frontend 1.27's Missing Models dialog: every file of the workflow (its `models` and its loaders') that
    the server does not list, each once, downloadable or with the frontend's refusal (only .safetensors from
    Hugging Face or Civitai), and no file it lists, nor a folder it does not know."""
    installed = {choice for node in workflow["nodes"] if node["type"] in object_info
                 for spec in {**object_info[node["type"]]["input"].get("required", {}),
                              **object_info[node["type"]]["input"].get("optional", {})}.values()
                 for choice in combo_options(spec)}
    entries = {(e["directory"], e["name"]): e for e in workflow["models"]}
    entries.update({(e["directory"], e["name"]): e for n in workflow["nodes"] if n.get("mode") not in (2, 4)
                    for e in n.get("properties", {}).get("models", [])})
    missing = {key: e for key, e in entries.items() if e["name"] not in installed}
    listed = {key for key in entries if f"{key[0]} / {key[1]}" in text}
    assert listed == set(missing), f"listed {sorted(listed)}, missing {sorted(missing)}:\n{text}"
    refused = [e for e in missing.values() if not frontend_can_download(e["name"], e["url"])]
    assert sum(text.count(row) for row in REFUSAL_ROWS) == len(refused), (refused, text)
    assert INVALID_FOLDER_ROW not in text, text
    if any(n["type"] == "FaceMigration_FaceAnalysisLoader" for n in workflow["nodes"]) and missing:
        assert "insightface / scrfd_10g_bnkps.onnx" in text, "antelopev2 is not flagged"


def combo_options(spec: list) -> list:
    """The choices of an object_info input spec: `[[...], {...}]` or `["COMBO", {"options": [...]}]`."""
    if spec and isinstance(spec[0], list):
        return spec[0]
    return spec[1].get("options", []) if spec and spec[0] == "COMBO" and len(spec) > 1 else []


def absent_model_choices(workflow: dict, object_info: dict, schemas: dict) -> set[tuple[str, str, str]]:
    """(node type, input, file) for every loader choice of the workflow that the server does not list."""
    absent = set()
    for node in workflow["nodes"]:
        if node["type"] not in schemas or node.get("mode") in (2, 4):
            continue
        for slot, value in zip(widget_slots(schemas[node["type"]]), node["widgets_values"]):
            key = (node["type"], slot.spec.name)
            if slot.role != "value" or key not in CORE_MODEL_COMBOS.keys() | PACK_MODEL_COMBOS:
                continue
            inputs = object_info[node["type"]]["input"]
            if value not in combo_options({**inputs.get("required", {}), **inputs.get("optional", {})}[slot.spec.name]):
                absent.add((*key, value))
    return absent


def check_queued_prompt(workflow: dict, queued: dict, schemas: dict) -> None:
    expected = to_api(workflow, schemas)
    assert set(queued) == set(expected), "the frontend would queue other nodes than to_api"
    for node_id, node in expected.items():
        got = queued[node_id]
        assert got["class_type"] == node["class_type"]
        extra = {k for k in set(got["inputs"]) - set(node["inputs"]) if (node["class_type"], k) not in FRONTEND_ONLY_INPUTS}
        assert not extra, f"node {node_id}: the frontend sends inputs the workflow does not set: {extra}"
        shared = {k: got["inputs"][k] for k in node["inputs"] if k in got["inputs"]}
        assert shared == node["inputs"], f"node {node_id} ({node['class_type']}): frontend {shared} != {node['inputs']}"


def assert_drawn_without_overlap(nodes: list[dict], saved: dict) -> None:
    """As the frontend lays them out: each node saved at least the size the frontend computes for its
    widgets and labels (a smaller one is grown on load, over its neighbour), and no two rectangles, title
    bars included, overlap."""
    rects = {}
    for node in nodes:
        size = saved[node["id"]]
        assert size[0] + 1 >= node["needed"][0] and size[1] + 1 >= node["needed"][1], \
            f"{node['title']} is saved as {size}, the frontend needs {node['needed']}"
        x, y = node["pos"]
        top = y - node["title_height"]
        rects[f"{node['title']} (#{node['id']})"] = (x, top, x + node["size"][0], y + node["size"][1])
    names = list(rects)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ra, rb = rects[a], rects[b]
            assert not (ra[0] < rb[2] and rb[0] < ra[2] and ra[1] < rb[3] and rb[1] < ra[3]), f"{a} overlaps {b}"


def assert_notes_readable(workflow: dict, notes: list[dict], canvas: list[float]) -> None:
    """At the saved zoom: Note text at least NOTE_MIN_PX on screen, none cut off, and the first Note (How to
    use) starts inside the canvas as opened."""
    assert notes, "no Note in the opening view"
    for note in notes:
        assert note["px"] >= NOTE_MIN_PX - 0.01, f"Note text is {note['px']:.1f} px on screen: {note['text']!r}"
        assert not note["cut"], f"the Note's text overflows its box: {note['text']!r}"
    first = min(notes, key=lambda n: n["box"][1])
    left, top, right, _ = first["box"]
    assert canvas[0] <= left and canvas[1] <= top and right <= canvas[2] and top + 100 <= canvas[3], (first, canvas)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_template_view_draws_text(page, comfy, path):
    """Opened as the template browser opens it: frontends from 1.49 on fit the whole graph to the screen; the
    fitted scale must be above the one below which they stop drawing titles and widget text (8 px / 14 px), and
    the first Note (how to use), drawn larger by web/note_text.js, must be readable there without zooming: its
    text at least FITTED_NOTE_MIN_PX on screen, its top in the canvas and what is on screen of it covered by no
    panel or toast (a modal dialog, which Escape closes, aside). Frontend 1.27 opens templates at the saved view."""
    close_dialogs(page)
    view = page.evaluate(OPEN_AS_TEMPLATE, [json.loads(path.read_text()), path.stem])
    close_dialogs(page)
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
    page.screenshot(path=str(ARTIFACTS / version / f"{path.stem}.template.png"))
    notes, canvas = page.evaluate(NOTES_ON_SCREEN), page.evaluate(CANVAS_BOX)
    first = min(notes, key=lambda n: (n["box"][0], n["box"][1]))  # the Notes column's top: How to use (or About)
    left, top, right, bottom = first["box"]
    uncovered = page.evaluate(UNCOVERED, [left, top, right, min(bottom, canvas[3])])
    assert not view["low_quality"], f"frontend {version}: {path.stem} opens at {view['scale']:.2f}, text not drawn"
    assert first["px"] >= FITTED_NOTE_MIN_PX, \
        f"frontend {version}: {path.stem}'s first Note is {first['px']:.1f} px on screen"
    assert canvas[0] <= left and canvas[1] <= top and right <= canvas[2] and top + 100 <= canvas[3], (first, canvas)
    assert uncovered, f"frontend {version}: something covers {path.stem}'s first Note ({first['text']!r})"


def test_template_browser_lists_titles_in_order(page, comfy):
    """The template browser shows the pack's workflows under their titles and descriptions, in the pack's
    order (web/workflow_templates.js), in a category named after the pack, not its folder: under 'Custom
    Nodes' in 1.27, 'Extensions' in 1.49 and later (the name from locales/en/main.json)."""
    index = json.loads((REPO / "web" / "workflow_templates.json").read_text())
    assert sorted(t["name"] for t in index["templates"]) == sorted(p.stem for p in WORKFLOWS)
    close_dialogs(page)
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.wait_for_function(f"() => document.body.innerText.includes({json.dumps(index['title'])})", timeout=30_000)
    assert not page.get_by_text(PACK_FOLDER, exact=True).count(), "the category is named after the pack's folder"
    page.get_by_text(index["title"], exact=True).first.click()
    titles = [t["title"] for t in index["templates"]]
    page.wait_for_function(f"() => {json.dumps(titles)}.every(t => document.body.innerText.includes(t))",
                           timeout=30_000)
    text = "\n".join(page.evaluate(DIALOG_TEXTS))
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
    page.screenshot(path=str(ARTIFACTS / version / "template_browser.png"))
    close_dialogs(page)
    assert [text.index(t) for t in titles] == sorted(text.index(t) for t in titles), text
    for name in index["templates"]:
        assert name["name"] not in text.split(), f"{name['name']} shown under its file name"
    if version.startswith(BUNDLED_FRONTEND):  # 1.27 shows the descriptions on the cards
        assert all(t["description"] in text for t in index["templates"]), text


PACK_MODEL_ENTRIES = """() => app.graph.serialize().nodes.filter(n => n.type.startsWith('FaceMigration_'))
    .map(n => [n.id, n.properties.models ?? []])"""


def test_installed_face_models_are_not_flagged(page, comfy, tiny_face):
    """With the face models installed (tiny files under the real names of antelopev2 and BiSeNet), a workflow
    flags none of them and still flags the absent EVA-CLIP .pt. Frontend 1.27 checks `models` entries against
    ComfyUI's model listing, which never shows .onnx: without web/missing_models.js it would call antelopev2
    missing while installed. The loaders keep their entries (a saved workflow still names the files)."""
    open_app(page, comfy)  # the node lists as the server has them now
    path = REPO / "workflows" / "flux1_dev_pulid.json"
    workflow = json.loads(path.read_text())
    drop_workflow(page, path)
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
    text = "\n".join(page.evaluate(DIALOG_TEXTS))
    candidates = page.evaluate(MISSING_MODEL_CANDIDATES)
    kept = dict(page.evaluate(PACK_MODEL_ENTRIES))
    close_dialogs(page)
    installed = ("scrfd_10g_bnkps.onnx", "glintr100.onnx", "parsing_bisenet.pth")
    eva = "EVA02_CLIP_L_336_psz14_s6B.pt"
    if version.startswith(BUNDLED_FRONTEND):
        assert not [name for name in installed if name in text], f"installed files flagged:\n{text}"
        assert f"text_encoders / {eva}" in text, text
    else:
        flagged = {c["name"] for c in candidates if c.get("isMissing")}
        assert not flagged & set(installed) and eva in flagged, candidates
    saved = {n["id"]: n["properties"]["models"] for n in workflow["nodes"] if n["properties"].get("models")
             and n["type"].startswith("FaceMigration_")}
    assert {i: kept[i] for i in saved} == saved, "a loader lost its models entries"


EVA_CLIP_PT = "EVA02_CLIP_L_336_psz14_s6B.pt"
OTHER_SITES = "https://**/*"  # the page stays offline: a new tab gets a stand-in answer from the test


def test_eva_clip_row_has_a_download_button_from_1_49(fresh_install_page, comfy):
    """Missing Models' row for the EVA-CLIP .pt (README, First image): frontend 1.27 shows its refusal on the row
    (only .safetensors); 1.49 and later give it a Download button that opens the file's URL (the loader's entry)
    in a new tab, and none to the antelopev2 .onnx and facexlib .pth rows."""
    page = fresh_install_page
    path = REPO / "workflows" / "flux1_dev_pulid.json"
    entry = next(e for n in json.loads(path.read_text())["nodes"] for e in n.get("properties", {}).get("models", [])
                 if e["name"] == EVA_CLIP_PT)
    drop_workflow(page, path)
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
    if version.startswith(BUNDLED_FRONTEND):
        text = "\n".join(page.evaluate(DIALOG_TEXTS))
        close_dialogs(page)
        row = text.split(f"{entry['directory']} / {EVA_CLIP_PT}")[1].split(" / ")[0]
        assert REFUSAL_ROWS[0] in row, f"frontend {version}: no refusal on the row:\n{text}"
        return
    page.get_by_text("View details").first.click()  # the toast's way to the Missing Models list
    button = page.locator(f'[data-testid="missing-model-download"][aria-label*="{EVA_CLIP_PT}"]')
    button.wait_for(timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / version / "missing_models_eva_row.png"))
    for name in ("scrfd_10g_bnkps.onnx", "glintr100.onnx", "parsing_bisenet.pth"):
        assert not page.locator(f'[data-testid="missing-model-download"][aria-label*="{name}"]').count(), name
    page.context.route(OTHER_SITES, lambda route: route.fulfill(status=200, body="stand-in", content_type="text/plain"))
    try:
        with page.context.expect_page(timeout=10_000) as opened:
            button.click()
        tab = opened.value
        assert tab.url == entry["url"], f"frontend {version}: the new tab opened {tab.url}"
        tab.close()
    finally:
        page.context.unroute(OTHER_SITES)


# A graph built in the page and queued from it, so the page's own websocket gets the "executed" messages.
QUEUE_RESULT_NODES = """async (files) => {
    app.graph.clear();
    const add = (type, values = {}) => {
        const node = LiteGraph.createNode(type);
        app.graph.add(node);
        for (const [name, value] of Object.entries(values)) node.widgets.find(w => w.name === name).value = value;
        return node;
    };
    const analysis = add("FaceMigration_FaceAnalysisLoader", {provider: "CPU"});
    const eva = add("FaceMigration_EvaClipLoader", {eva_file: files.eva_file});
    const parsing = add("FaceMigration_FaceParsingLoader", {parsing_file: files.parsing_file,
                                                             landmark_file: files.fast_alignment});
    const pulid = add("FaceMigration_PulidModelLoader", {pulid_file: files.pulid_file});
    const photo = add("LoadImage", {image: files.photo});
    const encode = add("FaceMigration_EncodeFace");
    [photo, analysis, eva, parsing, pulid].forEach((source, slot) => source.connect(0, encode, slot));
    const save = add("FaceMigration_SaveIdentity", {name: files.identity});
    encode.connect(0, save, 0);
    const score = add("FaceMigration_FaceSimilarity");
    analysis.connect(0, score, 0); photo.connect(0, score, 1); photo.connect(0, score, 2);
    await app.queuePrompt(0, 1);
    return {encode: encode.id, save: save.id, score: score.id};
}"""
RESULT_TEXT = "(id) => app.graph.getNodeById(id)?.widgets?.find(w => w.name === 'result')?.value ?? ''"
# The server's history, oldest first, once its queue is empty (a finished prompt leaves the queue as its entry is
# stored); null while a prompt is still queued or running.
SETTLED_HISTORY = """async () => {
    const queue = await (await fetch('/queue')).json();
    if (queue.queue_running.length || queue.queue_pending.length) return null;
    return Object.values(await (await fetch('/history')).json());
}"""


def queue_result_nodes(page, tiny_face) -> tuple[dict, dict]:
    """Build the graph of QUEUE_RESULT_NODES in the page (new nodes, their boxes empty), queue it and wait until
    each result box shows text; returns the node ids and the texts, by name."""
    close_dialogs(page)
    files = {"eva_file": tiny_face.eva_file, "parsing_file": tiny_face.parsing_file, "pulid_file": tiny_face.pulid_file,
             "photo": tiny_face.photo, "fast_alignment": "none (fast: SCRFD landmarks)", "identity": "shown_on_node"}
    ids = page.evaluate(QUEUE_RESULT_NODES, files)
    page.wait_for_function(f"() => {json.dumps(list(ids.values()))}.every(id => ({RESULT_TEXT})(id))", timeout=120_000)
    return ids, {name: page.evaluate(RESULT_TEXT, node_id) for name, node_id in ids.items()}


def test_results_show_on_the_nodes(page, comfy, tiny_face):
    """After a run queued from the page, Encode Face's info, Save Identity's file and folder and Face
    Similarity's report are on the nodes themselves (web/node_results.js)."""
    ids, texts = queue_result_nodes(page, tiny_face)
    assert "face(s) found" in texts["encode"], texts
    assert texts["save"].startswith("saved shown_on_node.safetensors in ") and "pulid_identities" in texts["save"]
    assert "similarity" in texts["score"].lower(), texts
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
    page.screenshot(path=str(ARTIFACTS / version / "results_on_nodes.png"))
    saved = page.evaluate("([id]) => JSON.stringify(app.graph.getNodeById(id).serialize())", [ids["save"]])
    assert texts["save"] not in saved, "the result box is saved with the workflow"
    queued = page.evaluate("async () => (await app.graphToPrompt()).output")
    assert not [n for n in queued.values() if "result" in n["inputs"]], "the result box is sent with the prompt"


def test_cached_results_show_on_the_nodes(page, comfy, tiny_face, graphs):
    """Queued again with nothing changed, Encode Face comes from ComfyUI's cache. ComfyUI 0.3.64 sends no
    "executed" message for a cached node that is not an output node (0.33 does): the box is filled from the
    prompt's history instead (web/node_results.js), so it shows the faces found all the same."""
    queue_result_nodes(page, tiny_face)  # the first run fills ComfyUI's cache (if no earlier test did)
    ids, texts = queue_result_nodes(page, tiny_face)
    for _ in range(150):  # 0.33 fills the boxes before it stores the prompt's history entry
        history = page.evaluate(SETTLED_HISTORY)
        if history:
            break
        page.wait_for_timeout(200)
    assert not graphs.executed(history[-1], str(ids["encode"])), "Encode Face ran again, not from the cache"
    assert "face(s) found" in texts["encode"], texts
