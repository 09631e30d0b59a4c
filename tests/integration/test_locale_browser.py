"""The pack's node help pages and its Chinese interface in ComfyUI's own frontend, in headless Chromium.

English: a node's help page (web/docs/<node id>.md) opens from the selection toolbox's info button. Chinese, with the
interface language set to Chinese (the Comfy.Locale setting, as Settings -> Language does): the node's title, its
inputs' names and an input's tooltip come from locales/zh/nodeDefs.json, the help page from web/docs/<node id>/zh.md,
and the template browser shows the pack's category and template titles in Chinese. Screenshots go to
artifacts/browser/<frontend version>/locale-*.png for a person to look at (Chinese needs a CJK font on the machine,
e.g. Debian's fonts-wqy-microhei or fonts-noto-cjk; the assertions read the page's text, not its pixels).

Frontends as in test_workflows_browser.py: the bundled one, and another given with COMFYUI_EXTRA_ARGS="--cpu
--front-end-root PATH"."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from tests.integration.test_workflows_browser import ARTIFACTS, close_dialogs, launched_chromium

REPO = Path(__file__).resolve().parents[2]
NODE = "FaceMigration_EncodeFace"
WIDGET = "face_index"
ZH = json.loads((REPO / "locales" / "zh" / "nodeDefs.json").read_text(encoding="utf-8"))[NODE]
ZH_CATEGORY = json.loads((REPO / "locales" / "zh" / "main.json").read_text(encoding="utf-8"))[
    "templateWorkflows"]["category"]["comfyui-face-migration"]
TEMPLATES = json.loads((REPO / "web" / "workflow_templates.json").read_text(encoding="utf-8"))["templates"]

ADD_NODE = f"""() => {{
    app.graph.clear();
    const node = LiteGraph.createNode('{NODE}');
    app.graph.add(node);
    node.pos = [400, 400];  // below the top menu, which covers the selection toolbox of a node near the top in 1.27
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [0, 0];
    app.canvas.selectNode(node);
    app.canvas.setDirty(true, true);
    return {{title: node.title, labels: Object.fromEntries(node.widgets.map(w => [w.name, w.label ?? null]))}};
}}"""
# The middle of a widget of the node on the page, to hover it.
WIDGET_POINT = f"""() => {{
    const node = app.graph.nodes.find(n => n.type === '{NODE}'), widget = node.widgets.find(w => w.name === '{WIDGET}');
    const [x, y] = app.canvas.ds.convertCanvasToOffset([node.pos[0] + node.size[0] / 2, node.pos[1] + widget.y + 10]);
    const box = app.canvas.canvas.getBoundingClientRect();
    return [box.left + x, box.top + y];
}}"""
TOOLTIP_TEXT = "() => [...document.querySelectorAll('.node-tooltip')].map(e => e.innerText).join('\\n')"


@pytest.fixture(scope="module")
def server(another_comfy):
    return another_comfy()


@pytest.fixture(scope="module")
def browser():
    with launched_chromium() as chromium:
        yield chromium


def open_app(browser, server, locale: str):
    """A new page of the app with the interface language set (the server keeps the setting per user)."""
    request = urllib.request.Request(f"{server.url}/settings/Comfy.Locale", data=json.dumps(locale).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).close()
    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    page.goto(server.url + "/")
    page.wait_for_function("() => window.app?.graph && window.LiteGraph"
                           " && Object.keys(LiteGraph.registered_node_types).length > 100", timeout=90_000)
    page.wait_for_timeout(2000)  # the template browser greets a first visit
    close_dialogs(page)
    return page


def artifacts(page) -> Path:
    folder = ARTIFACTS / page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_help(page) -> None:
    """The selected node's help page, as a user opens it: the selection toolbox's info button (1.27 to 1.58)."""
    # dispatched on the button itself: in 1.27 the top menu's box overlaps the toolbox, so a click at the
    # button's position is taken by the menu although the button is drawn and usable
    page.locator("[data-testid=info-button]").first.dispatch_event("click")


def body_has(page, text: str, timeout: int = 30_000) -> None:
    page.wait_for_function("t => document.body.innerText.includes(t)", arg=text, timeout=timeout)


def test_help_page_in_english(browser, server):
    page = open_app(browser, server, "en")
    try:
        page.evaluate(ADD_NODE)
        open_help(page)
        body_has(page, "Turns one or more photos of a person into a face identity")
        page.screenshot(path=str(artifacts(page) / "locale-en-help.png"))
        text = page.evaluate("() => document.body.innerText")
        assert "Common errors" in text and "No face was found in" in text, text[-3000:]
    finally:
        page.close()


def test_interface_in_chinese(browser, server):
    page = open_app(browser, server, "zh")
    try:
        shown = page.evaluate(ADD_NODE)
        folder = artifacts(page)
        assert shown["title"] == ZH["display_name"], shown
        assert shown["labels"][WIDGET] == ZH["inputs"][WIDGET]["name"], shown

        page.mouse.move(10, 300)
        page.mouse.move(*page.evaluate(WIDGET_POINT), steps=5)  # the frontends show it once the mouse rests
        page.wait_for_function(f"() => ({TOOLTIP_TEXT})().length > 0", timeout=15_000)
        page.screenshot(path=str(folder / "locale-zh-node.png"))
        assert page.evaluate(TOOLTIP_TEXT).strip() == ZH["inputs"][WIDGET]["tooltip"]

        open_help(page)
        body_has(page, "把一个人的一张或多张照片变成人脸身份")
        body_has(page, "常见错误")
        page.screenshot(path=str(folder / "locale-zh-help.png"))

        page.keyboard.press("Escape")
        page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        body_has(page, ZH_CATEGORY)
        page.get_by_text(ZH_CATEGORY, exact=True).first.click()
        for template in TEMPLATES:
            body_has(page, template["locales"]["zh"]["title"], timeout=15_000)
        page.screenshot(path=str(folder / "locale-zh-templates.png"))
        if folder.name != "1.27.10":  # 1.27's panel header repeats the category's untranslated title
            assert "Face Migration (PuLID-FLUX)" not in page.evaluate("() => document.body.innerText")
    finally:
        page.close()
