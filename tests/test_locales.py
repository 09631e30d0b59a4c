"""The pack in Simplified Chinese (locales/zh/, the template index, the workflows' Chinese Notes), checked against
the one source of the English strings: the node schemas (tests/fixtures/object_info/pack-<version>.json).

A node, input, output or tooltip added without its Chinese text fails here, and so does a Chinese text that uses a
word docs/glossary.zh-CN.md rules out."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from devkit.node_locales import LANGUAGES, leaves, node_defs, pack_schemas, read_locale, stale_translations
from face_migration.support import TESTED_COMFYUI

ROOT = Path(__file__).resolve().parents[1]
CJK = re.compile(r"[\u4e00-\u9fff]")
I18N_LITERAL = re.compile(r"\{'[{}@|]'\}")  # how a vue-i18n message writes {, }, @ and | as text
GLOSSARY = ROOT / "docs" / "glossary.zh-CN.md"
TEMPLATE_INDEX = ROOT / "web" / "workflow_templates.json"
# The two workflows a newcomer opens first: the README's first image, and the hosted API without local models.
FIRST_WORKFLOWS = ("flux1_schnell_pulid_4steps", "remote_api_face_migration")
CHINESE_NOTE_HEADING = "## 中文说明"


def strings(data) -> list[str]:
    if isinstance(data, (dict, list)):
        return [s for value in (data.values() if isinstance(data, dict) else data) for s in strings(value)]
    return [data] if isinstance(data, str) else []


def chinese_texts() -> dict[str, str]:
    """Every Chinese text the pack ships, by where it is."""
    texts = {f"locales/{lang}/{name}": "\n".join(strings(read_locale(lang, name)))
             for lang in LANGUAGES for name in ("nodeDefs.json", "main.json")}
    texts.update({str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
                  for p in sorted((ROOT / "web" / "docs").glob("*/zh.md"))})
    texts["docs/README.zh-CN.md"] = (ROOT / "docs" / "README.zh-CN.md").read_text(encoding="utf-8")
    index = json.loads(TEMPLATE_INDEX.read_text(encoding="utf-8"))
    texts["web/workflow_templates.json"] = "\n".join(s for t in index["templates"]
                                                     for s in strings(t.get("locales", {})))
    for name in FIRST_WORKFLOWS:
        texts[f"workflows/{name}.json"] = "\n".join(chinese_notes(name))
    return texts


def chinese_notes(name: str) -> list[str]:
    workflow = json.loads((ROOT / "workflows" / f"{name}.json").read_text(encoding="utf-8"))
    return [n["widgets_values"][0] for n in workflow["nodes"]
            if n["type"] in ("Note", "MarkdownNote") and n["widgets_values"][0].startswith(CHINESE_NOTE_HEADING)]


def test_english_node_defs_are_the_node_schemas():
    assert read_locale("en", "nodeDefs.json") == node_defs(pack_schemas()), \
        "locales/en/nodeDefs.json differs from the node schemas: run scripts/build_locales.py"


@pytest.mark.parametrize("version", TESTED_COMFYUI)
def test_every_tested_comfyui_shows_the_same_strings(version):
    assert node_defs(pack_schemas(version)) == node_defs(pack_schemas())


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", ["nodeDefs.json", "main.json"])
def test_translation_has_every_key_of_the_english_file(language, name):
    english, translated = set(leaves(read_locale("en", name))), set(leaves(read_locale(language, name)))
    missing = sorted(".".join(p) for p in english - translated)
    extra = sorted(".".join(p) for p in translated - english)
    assert not missing, f"locales/{language}/{name} lacks (add the translation): {missing}"
    assert not extra, f"locales/{language}/{name} has keys English does not (left over from a removed input?): {extra}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_translation_is_older_than_its_english(language):
    """A tooltip reworded in English (a model family added, say) leaves the old Chinese behind unless flagged."""
    stale = stale_translations(language)
    assert not stale, (f"locales/{language}/: the English changed after these were translated; update them, then "
                       f"run scripts/build_locales.py --translated {language}:\n" + "\n".join(stale))


@pytest.mark.parametrize("language", LANGUAGES)
def test_descriptions_and_tooltips_are_translated(language):
    """Names may stay a proper noun (EVA-CLIP); every sentence is in Chinese."""
    defs = read_locale(language, "nodeDefs.json")
    untranslated = []
    for node_id, entry in defs.items():
        texts = {"display_name": entry["display_name"], "description": entry["description"]}
        texts.update({f"{kind}.{slot}.tooltip": spec["tooltip"] for kind in ("inputs", "outputs")
                      for slot, spec in entry[kind].items() if "tooltip" in spec})
        untranslated += [f"{node_id}.{key}" for key, text in texts.items() if not CJK.search(text)]
    assert not untranslated, untranslated


@pytest.mark.parametrize("language", ["en", *LANGUAGES])
def test_messages_are_valid_vue_i18n(language):
    """The frontends compile each message with vue-i18n, where { } @ | are syntax: they appear only as literals."""
    for name in ("nodeDefs.json", "main.json"):
        bad = [s for s in strings(read_locale(language, name)) if re.search(r"[{}@|]", I18N_LITERAL.sub("", s))]
        assert not bad, f"locales/{language}/{name}: {bad}"


def test_every_template_has_a_chinese_title_and_description():
    index = json.loads(TEMPLATE_INDEX.read_text(encoding="utf-8"))
    for template in index["templates"]:
        shown = template.get("locales", {}).get("zh")
        assert shown, f"{template['name']}: no Chinese title (scripts/workflow_text_zh.py TEMPLATES)"
        assert CJK.search(shown["title"]) and CJK.search(shown["description"]), template
        assert "-" not in shown["description"], "the frontends show '-' in descriptions as a space: use U+2011"


@pytest.mark.parametrize("name", FIRST_WORKFLOWS)
def test_first_workflows_have_a_chinese_note_after_how_to_use(name):
    workflow = json.loads((ROOT / "workflows" / f"{name}.json").read_text(encoding="utf-8"))
    notes = sorted((n for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote")), key=lambda n: n["pos"][1])
    assert notes[1]["widgets_values"][0].startswith(CHINESE_NOTE_HEADING), [n.get("title") for n in notes]
    text = notes[1]["widgets_values"][0]
    assert "提示词" in text and "英文" in text, "the Note says why prompts in English work best"


def glossary() -> list[tuple[str, str, list[str]]]:
    rows = []
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and CJK.search(cells[1]) and cells[0] != "English":
            rows.append((cells[0], cells[1], [w.strip() for w in re.split(r"[、,]", cells[2]) if w.strip()]))
    return rows


def test_glossary_is_read():
    assert len(glossary()) >= 20 and ("mask", "遮罩", ["掩码", "蒙版"]) in glossary()


def test_chinese_texts_use_the_glossary_terms():
    avoided = {word: (english, term) for english, term, words in glossary() for word in words}
    found = [f"{where}: '{word}' (use '{avoided[word][1]}' for {avoided[word][0]})"
             for where, text in chinese_texts().items() for word in avoided if word in text]
    assert not found, found


def literal_keywords(source: Path, keywords: tuple[str, ...]) -> list[str]:
    """The constant strings passed as these keyword arguments anywhere in a Python file."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    return [kw.value.value for node in ast.walk(tree) if isinstance(node, ast.Call) for kw in node.keywords
            if kw.arg in keywords and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)]


def test_snapshot_holds_every_tooltip_the_nodes_write():
    """The snapshot (and so locales/en and the Chinese check) is refreshed only by a script that needs a running
    ComfyUI: a tooltip reworded in nodes/*.py without it would reach neither language's check in a unit run."""
    shown = set(strings(pack_schemas()))
    written = {text for source in sorted((ROOT / "nodes").glob("*.py"))
               for text in literal_keywords(source, ("tooltip", "description"))}
    stale = sorted(text[:80] for text in written - shown)
    assert len(written) > 50
    assert not stale, f"not in the pack snapshot (run scripts/dump_pack_object_info.py, then build_locales.py): {stale}"
