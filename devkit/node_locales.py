"""The pack's translations for ComfyUI's frontends: locales/<lang>/nodeDefs.json and main.json.

The English strings have one source, the node schemas: locales/en/nodeDefs.json is derived from the newest
/object_info snapshot of the pack (tests/fixtures/object_info/pack-<version>.json, which the integration tests
keep equal to the live server) by scripts/build_locales.py. Every other language must hold the same keys, so a
node, input, output or tooltip added later without its translation fails tests/test_locales.py, and so does
a translated text whose English changed after it was translated (TRANSLATED_FROM).

Layout, as the frontends read it (1.27 to 1.58): nodeDefs[<node id>] = {display_name, description,
inputs: {<input>: {name, tooltip}}, outputs: {"<index>": {name, tooltip}}}; core merges every pack's
locales/<lang>/*.json into its /i18n answer."""
from __future__ import annotations

import json
import re
from pathlib import Path

from devkit.workflow_validation import pack_snapshot
from face_migration.support import TESTED_COMFYUI

REPO = Path(__file__).resolve().parents[1]
LOCALES = REPO / "locales"
LANGUAGES = ("zh",)  # translations besides English
LOCALE_FILES = ("nodeDefs.json", "main.json")
# The English each translation was made from (a copy of locales/en/ when the translation was last checked),
# kept outside locales/ because core merges every JSON file there into its /i18n answer.
TRANSLATED_FROM = REPO / "tests" / "fixtures" / "translated_from"
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


def leaves(data, prefix=()) -> dict[tuple, object]:
    """Every leaf of a nested dict (an empty dict is one), by its path of keys."""
    if not isinstance(data, dict) or not data:
        return {prefix: data}
    return {path: value for key, item in data.items() for path, value in leaves(item, prefix + (key,)).items()}


def translated_from(language: str, name: str) -> dict:
    record = TRANSLATED_FROM / language / name
    return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}


def stale_translations(language: str) -> list[str]:
    """Texts whose English changed after they were translated: 'file key: translated from ..., English now ...'."""
    stale = []
    for name in LOCALE_FILES:
        english, source = leaves(read_locale("en", name)), leaves(translated_from(language, name))
        for path in leaves(read_locale(language, name)):
            if path in english and source.get(path) != english[path]:
                stale.append(f"{name} {'.'.join(path)}: translated from {source.get(path)!r}, English now "
                             f"{english[path]!r}")
    return stale


def record_translated(language: str) -> Path:
    """Mark the current English as what `language`'s texts were translated from."""
    folder = TRANSLATED_FROM / language
    folder.mkdir(parents=True, exist_ok=True)
    for name in LOCALE_FILES:
        (folder / name).write_text(dumps(read_locale("en", name)), encoding="utf-8")
    return folder
