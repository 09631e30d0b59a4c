"""The pack's translations for ComfyUI's frontends: locales/<lang>/nodeDefs.json and main.json.

The English strings have one source, the node schemas: locales/en/nodeDefs.json is derived from the newest
/object_info snapshot of the pack (tests/fixtures/object_info/pack-<version>.json, which the integration tests
keep equal to the live server) by scripts/build_locales.py. Every other language must hold the same keys, so a
node, input, output or tooltip added later without its translation fails tests/test_locales.py.

Layout, as the frontends read it (1.27 to 1.58): nodeDefs[<node id>] = {display_name, description,
inputs: {<input>: {name, tooltip}}, outputs: {"<index>": {name, tooltip}}}; core merges every pack's
locales/<lang>/*.json into its /i18n answer."""
from __future__ import annotations

import json
import re
from pathlib import Path

from face_migration.support import TESTED_COMFYUI
from devkit.workflow_validation import pack_snapshot

REPO = Path(__file__).resolve().parents[1]
LOCALES = REPO / "locales"
LANGUAGES = ("zh",)  # translations besides English
INPUT_SECTIONS = ("required", "optional")  # hidden inputs are never shown
# vue-i18n compiles every message: these characters are syntax there ({name}, @:link, a|b plurals) and are
# written as literals, as the frontends' own locale files do ({'@'}).
I18N_SYNTAX = re.compile(r"[{}@|]")


def i18n_text(text: str) -> str:
    """text as a vue-i18n message that shows exactly `text`."""
    return I18N_SYNTAX.sub(lambda m: "{'" + m.group() + "'}", text)


def pack_schemas(version: str = TESTED_COMFYUI[-1]) -> dict:
    return json.loads(pack_snapshot(version).read_text())


def node_defs(schemas: dict) -> dict:
    """nodeDefs.json for the given /object_info entries, in English: the strings users see."""
    defs = {}
    for node_id, entry in sorted(schemas.items()):
        inputs = {}
        for section in INPUT_SECTIONS:
            for name, spec in entry["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                tooltip = options.get("tooltip")
                inputs[name] = {"name": name, **({"tooltip": i18n_text(tooltip)} if tooltip else {})}
        outputs = {}
        for index, name in enumerate(entry["output_name"]):
            tooltip = entry["output_tooltips"][index] if index < len(entry.get("output_tooltips", [])) else None
            outputs[str(index)] = {"name": name, **({"tooltip": i18n_text(tooltip)} if tooltip else {})}
        defs[node_id] = {"display_name": i18n_text(entry["display_name"]),
                         "description": i18n_text(entry["description"]),
                         "inputs": dict(sorted(inputs.items())), "outputs": outputs}
    return defs


def locale_file(language: str, name: str) -> Path:
    return LOCALES / language / name


def read_locale(language: str, name: str) -> dict:
    return json.loads(locale_file(language, name).read_text(encoding="utf-8"))


def dumps(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def key_paths(data, prefix=()) -> set[tuple]:
    """Every leaf of a nested dict, as its path of keys."""
    if not isinstance(data, dict):
        return {prefix}
    return set().union(*(key_paths(value, prefix + (key,)) for key, value in data.items())) if data else {prefix}
