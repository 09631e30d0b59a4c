"""The node help pages the frontends show (node library and selection toolbox, 1.27 and later): one per node,
web/docs/<node id>.md in English (the fallback) and web/docs/<node id>/zh.md in Chinese, the URLs the frontends
fetch under /extensions/<pack>/docs/. Each is checked against the node schemas (every input and output named),
against docs/nodes.md (which names them too) and against the other language (the same error messages)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from devkit.node_locales import LANGUAGES, pack_schemas, read_locale
from face_migration.errors import UnsupportedModelError
from face_migration.model_family import flux1_family

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "web" / "docs"
NODES_DOC = ROOT / "docs" / "nodes.md"
SCHEMAS = pack_schemas()
NODE_IDS = sorted(SCHEMAS)
ERROR_SECTION = {"en": "## Common errors", "zh": "## 常见错误"}
CODE = re.compile(r"`([^`]+)`")


def page(node_id: str, language: str = "en") -> str:
    path = DOCS / (f"{node_id}.md" if language == "en" else f"{node_id}/{language}.md")
    return path.read_text(encoding="utf-8")


def slots(node_id: str) -> list[tuple[str, str]]:
    """(kind, name) of every input a user sees and every output."""
    entry = SCHEMAS[node_id]
    inputs = [("inputs", n) for section in ("required", "optional") for n in entry["input"].get(section, {})]
    return inputs + [("outputs", n) for n in entry["output_name"]]


def nodes_doc_section(node_id: str) -> str:
    text = NODES_DOC.read_text(encoding="utf-8")
    start = re.search(rf"^### .*\(`{node_id}`\)$", text, re.MULTILINE)
    assert start, f"docs/nodes.md has no section for {node_id}"
    end = re.search(r"^##", text[start.end():], re.MULTILINE)
    return text[start.end():start.end() + end.start() if end else len(text)]


def error_messages(text: str, language: str) -> list[str]:
    """The messages (first column) of the page's table of common errors."""
    if ERROR_SECTION[language] not in text:
        return []
    section = text.split(ERROR_SECTION[language], 1)[1].split("\n## ", 1)[0]
    return [CODE.match(row.lstrip("| ")).group(1) for row in section.splitlines() if row.startswith("| `")]


def test_one_page_per_node_and_language():
    expected = {f"{n}.md" for n in NODE_IDS} | {f"{n}/{lang}.md" for n in NODE_IDS for lang in LANGUAGES}
    found = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert found == expected, f"missing: {sorted(expected - found)}; not a node's: {sorted(found - expected)}"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_english_page_names_the_node_and_each_input_and_output(node_id):
    text = page(node_id)
    assert text.startswith(f"# {SCHEMAS[node_id]['display_name']}\n")
    missing = [name for _, name in slots(node_id) if f"`{name}`" not in text]
    assert not missing, f"web/docs/{node_id}.md does not explain {missing}"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_nodes_doc_names_the_same_inputs_and_outputs(node_id):
    section = nodes_doc_section(node_id)
    missing = [name for _, name in slots(node_id) if f"`{name}`" not in section]
    assert not missing, f"docs/nodes.md's section on {node_id} does not name {missing}"


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("node_id", NODE_IDS)
def test_translated_page_uses_the_interface_names(node_id, language):
    """The title and each input/output as the translated interface shows them, with the English id beside."""
    defs = read_locale(language, "nodeDefs.json")[node_id]
    text = page(node_id, language)
    assert text.startswith(f"# {defs['display_name']}\n")
    outputs = dict(zip(SCHEMAS[node_id]["output_name"], defs["outputs"].values()))
    shown = {("inputs", n): defs["inputs"][n]["name"] for _, n in slots(node_id) if n in defs["inputs"]}
    shown.update({("outputs", n): spec["name"] for n, spec in outputs.items()})
    missing = [f"**{label}** `{name}`" for (kind, name), label in shown.items() if f"**{label}** `{name}`" not in text]
    assert not missing, f"web/docs/{node_id}/{language}.md lacks rows {missing}"


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("node_id", NODE_IDS)
def test_translated_page_lists_the_same_error_messages(node_id, language):
    """Messages stay English (searchable): both pages list the same ones, each with its fix."""
    assert error_messages(page(node_id, language), language) == error_messages(page(node_id), "en")


@pytest.mark.parametrize("node_id", ["FaceMigration_ApplyPulid", "FaceMigration_ApplyPulidSimple"])
def test_model_refusal_row_matches_the_message_apply_raises(node_id):
    """The row a user finds by the message's first words: a refusal reworded in code (the family check written
    for Chroma) left the old message and its fix on the pages once."""
    with pytest.raises(UnsupportedModelError) as refused:
        flux1_family(object())
    rows = [m for m in error_messages(page(node_id), "en") if refused.value.args[0].startswith(m.split(" …")[0])]
    assert rows, f"web/docs/{node_id}.md has no common-errors row for {refused.value.args[0][:60]!r}"
