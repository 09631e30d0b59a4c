"""Check UI-format (version 0.4) workflows against node schemas and convert them to API format.

Schemas are /object_info entries, one snapshot per tested ComfyUI version: core from
tests/fixtures/object_info/core-<version>.json and this pack from tests/fixtures/object_info/pack-<version>.json
(both written by scripts/dump_pack_object_info.py, --core for the first).
The checks mirror what ComfyUI's frontend does when it loads a workflow (node types, widget order,
control-after-generate values) and what the server's validate_prompt does when it is queued (link types,
required inputs, ranges, combo membership), plus the pack's own rules for model files (catalogue name,
`models` entry, named in a Note).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from face_migration.catalog import MODEL_FILES, model_by_filename
from face_migration.support import TESTED_COMFYUI

REPO = Path(__file__).resolve().parents[1]
SNAPSHOTS = REPO / "tests" / "fixtures" / "object_info"


def core_snapshot(version: str) -> Path:
    return SNAPSHOTS / f"core-{version}.json"


def pack_snapshot(version: str) -> Path:
    return SNAPSHOTS / f"pack-{version}.json"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
NOTE_TYPES = {"Note", "MarkdownNote"}
VIRTUAL_TYPES = NOTE_TYPES | {"Reroute", "PrimitiveNode"}  # resolved by the frontend, never sent to the server
MODE_MUTED, MODE_BYPASS = 2, 4
# Core loader inputs naming a model file, and the ComfyUI folder the file belongs in. A pack (or core)
# combo that lists nothing in the snapshot is a model-file combo as well: the snapshot is made with
# empty model folders, so only folder listings come out empty.
CORE_MODEL_COMBOS = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
}
# The pack's loader inputs naming a catalogue file (their lists hold only the files on disk, so a snapshot
# made with empty folders lists none, or only the 'none' choice).
PACK_MODEL_COMBOS = {("FaceMigration_PulidModelLoader", "pulid_file"), ("FaceMigration_EvaClipLoader", "eva_file"),
                     ("FaceMigration_FaceParsingLoader", "parsing_file"),
                     ("FaceMigration_FaceParsingLoader", "landmark_file"),
                     ("FaceMigration_FaceAnalysisLoader", "detector_file"),
                     ("FaceMigration_FaceAnalysisLoader", "recognizer_file")}
LEGACY_FOLDERS = {"clip": "text_encoders", "unet": "diffusion_models"}
# What the bundled frontend (1.27.10, its Missing Models dialog) downloads. It lists an absent file outside
# these with its refusal ("Only allowed suffixes", "Download not allowed from source") instead of a button.
DOWNLOAD_SOURCES = ("https://huggingface.co/", "https://civitai.com/")
DOWNLOAD_SUFFIXES = (".safetensors", ".sft")
# What ComfyUI's model listing (/experiment/models, folder_paths.supported_pt_extensions) shows. 1.27 checks a
# workflow-level `models` entry against that listing, so an entry of another kind (antelopev2's .onnx) would
# be called missing forever: those are named only on their loader node, where web/missing_models.js drops
# the ones the server lists as installed.
MODEL_LISTING_SUFFIXES = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")
UPLOAD_KINDS = {"image_upload": "image", "video_upload": "video", "audio_upload": "audio"}
# Combos listing files the user makes (empty in any snapshot): node input -> the extension they must have.
USER_FILE_COMBOS = {("FaceMigration_LoadIdentity", "identity_file"): ".safetensors"}


def load_schemas(version: str = TESTED_COMFYUI[-1], core: Path | None = None, pack: Path | None = None) -> dict:
    """Core + pack schemas of a ComfyUI version (default: the newest tested). A missing snapshot is an error,
    never a skip: those of the tested versions are in the repository."""
    core, pack = core or core_snapshot(version), pack or pack_snapshot(version)
    if not core.is_file():
        raise FileNotFoundError(f"core node schemas of ComfyUI {version} not found at {core}: run "
                                f"scripts/dump_pack_object_info.py --core --comfyui PATH")
    if not pack.is_file():
        raise FileNotFoundError(f"{pack} is missing: run scripts/dump_pack_object_info.py --comfyui PATH")
    schemas = json.loads(core.read_text())
    overlap = set(schemas) & set(pack_schemas := json.loads(pack.read_text()))
    if overlap:
        raise ValueError(f"pack snapshot redefines core nodes: {sorted(overlap)}")
    schemas.update(pack_schemas)
    return schemas


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str  # "COMBO" for an option list
    options: tuple | None
    config: dict
    required: bool

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.config.get("forceInput")

    @property
    def has_control(self) -> bool:
        return bool(self.config.get("control_after_generate"))

    @property
    def upload_kind(self) -> str | None:
        return next((kind for key, kind in UPLOAD_KINDS.items() if self.config.get(key)), None)


def input_specs(schema: dict) -> list[InputSpec]:
    """Inputs in the order the frontend creates them: required then optional, each in input_order."""
    specs = []
    for section in ("required", "optional"):
        entries = schema["input"].get(section, {})
        order = schema.get("input_order", {}).get(section, list(entries))
        for name in order:
            raw = entries[name]
            config = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
            if isinstance(raw[0], list):
                kind, options = "COMBO", tuple(raw[0])
            elif raw[0] == "COMBO":
                kind, options = "COMBO", tuple(config.get("options", ()))
            else:
                kind, options = raw[0], None
            specs.append(InputSpec(name, kind, options, config, section == "required"))
    return specs


@dataclass(frozen=True)
class WidgetSlot:
    spec: InputSpec
    role: str  # "value" | "control" (control_after_generate) | "upload" (upload button)


def widget_slots(schema: dict) -> list[WidgetSlot]:
    """The positions of a node's widgets_values, as the frontend serialises them."""
    slots = []
    for spec in input_specs(schema):
        if not spec.is_widget:
            continue
        slots.append(WidgetSlot(spec, "value"))
        if spec.has_control:
            slots.append(WidgetSlot(spec, "control"))
        if spec.upload_kind:
            slots.append(WidgetSlot(spec, "upload"))
    return slots


def types_compatible(output_type: str, input_type: str) -> bool:
    """ComfyUI's rule: '*' joins anything, otherwise the comma-separated type sets must share a type."""
    if output_type == "*" or input_type == "*":
        return True
    return bool(set(output_type.split(",")) & set(input_type.split(",")))


def models_entry(model) -> dict:
    """A `models` entry (node-level or workflow-level) of a catalogue file, named as its loader's widget names it."""
    return {"name": model.filename, "url": model.url, "directory": models_directory(model.folder)}


def models_directory(folder: str) -> str:
    return LEGACY_FOLDERS.get(folder, folder)


def frontend_can_download(name: str, url: str) -> bool:
    return name.endswith(DOWNLOAD_SUFFIXES) and url.startswith(DOWNLOAD_SOURCES)


def listed_by_model_folders(name: str) -> bool:
    return name.endswith(MODEL_LISTING_SUFFIXES)


def nodes_in_group(workflow: dict, title: str) -> set[int]:
    """Ids of the nodes whose position lies in the group of that title (as the frontend assigns them)."""
    x, y, w, h = next(g["bounding"] for g in workflow["groups"] if g["title"] == title)
    return {n["id"] for n in workflow["nodes"] if x <= n["pos"][0] <= x + w and y <= n["pos"][1] <= y + h}


def note_text(workflow: dict) -> str:
    return "\n".join(str(v) for n in workflow.get("nodes", []) if n.get("type") in NOTE_TYPES
                     for v in n.get("widgets_values") or [])


class Problems(list):
    def add(self, node: dict | None, message: str) -> None:
        where = f"node {node.get('id')} ({node.get('type')}" + (f" '{node['title']}'" if node.get("title") else "") + ")" \
            if node else "workflow"
        self.append(f"{where}: {message}")


def validate(workflow: dict, schemas: dict) -> list[str]:
    """Every problem found in a UI-format workflow (empty list = valid)."""
    problems = Problems()
    if workflow.get("version") != 0.4:
        problems.add(None, f"version is {workflow.get('version')!r}, expected 0.4 (the UI/graph format)")
    nodes = workflow.get("nodes") or []
    links = workflow.get("links") or []
    node_ids = [n.get("id") for n in nodes]
    if len(set(node_ids)) != len(node_ids):
        problems.add(None, f"duplicate node ids: {sorted(i for i in set(node_ids) if node_ids.count(i) > 1)}")
    link_ids = [link[0] for link in links]
    if len(set(link_ids)) != len(link_ids):
        problems.add(None, "duplicate link ids")
    if node_ids and workflow.get("last_node_id", -1) < max(node_ids):
        problems.add(None, f"last_node_id {workflow.get('last_node_id')} < highest node id {max(node_ids)}")
    if link_ids and workflow.get("last_link_id", -1) < max(link_ids):
        problems.add(None, f"last_link_id {workflow.get('last_link_id')} < highest link id {max(link_ids)}")
    by_id = {n.get("id"): n for n in nodes}
    _check_models_list(workflow, problems)
    for node in nodes:
        for key in ("id", "type", "pos", "size", "mode", "inputs", "outputs", "properties"):
            if key not in node:
                problems.add(node, f"has no '{key}'")
        if node.get("type") in VIRTUAL_TYPES:
            continue
        schema = schemas.get(node.get("type"))
        if schema is None:
            problems.add(node, "node type is not registered (not in the core snapshot nor this pack's)")
            continue
        _check_sockets(node, schema, problems)
        _check_widgets(node, schema, workflow, problems)
    for link in links:
        _check_link(link, by_id, schemas, problems)
    if not problems:  # the API form is only defined for a structurally sound graph
        _check_required(workflow, schemas, problems)
    return problems


def assert_valid(workflow: dict, schemas: dict, name: str = "workflow") -> None:
    problems = validate(workflow, schemas)
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)


def _check_models_list(workflow: dict, problems: Problems) -> None:
    for entry in workflow.get("models", []):
        if not {"name", "url", "directory"} <= set(entry):
            problems.add(None, f"models entry {entry} needs name, url and directory")
        elif not entry["url"].startswith("https://"):
            problems.add(None, f"models entry {entry['name']}: url {entry['url']} is not https")
        elif not listed_by_model_folders(entry["name"]):
            problems.add(None, f"models entry {entry['name']}: ComfyUI's model listing never shows such a file, so "
                               f"the frontend would call it missing forever; name it on its loader node only")


def _check_sockets(node: dict, schema: dict, problems: Problems) -> None:
    specs = {s.name: s for s in input_specs(schema)}
    for slot in node.get("inputs", []):
        spec = specs.get(slot.get("name"))
        if spec is None:
            problems.add(node, f"input '{slot.get('name')}' is not an input of {schema['name']}")
        elif spec.is_widget and "widget" not in slot:
            problems.add(node, f"input '{spec.name}' is a widget; as a socket it needs widget: {{name}}")
        elif not spec.is_widget and slot.get("type") != spec.type:
            problems.add(node, f"input '{spec.name}' declared as {slot.get('type')}, schema says {spec.type}")
    outputs = node.get("outputs", [])
    # Newer ComfyUI versions append outputs (0.33's SaveImage and PreviewAny pass their input on); a workflow
    # saved with the older, shorter list loads there with the new outputs unlinked.
    if len(outputs) > len(schema["output"]) or (len(outputs) < len(schema["output"]) and not schema.get("output_node")):
        problems.add(node, f"{len(outputs)} outputs, schema has {len(schema['output'])}")
    for slot, expected in zip(outputs, schema["output"]):
        kind = "COMBO" if isinstance(expected, list) else expected
        if slot.get("type") != kind:
            problems.add(node, f"output '{slot.get('name')}' declared as {slot.get('type')}, schema says {kind}")


def _check_widgets(node: dict, schema: dict, workflow: dict, problems: Problems) -> None:
    slots = widget_slots(schema)
    values = node.get("widgets_values")
    if values is None:
        values = []
    if isinstance(values, dict):
        problems.add(node, "widgets_values is a dict; this pack's workflows use the positional list form")
        return
    if len(values) != len(slots):
        expected = [f"{s.spec.name}" + ("" if s.role == "value" else f"({s.role})") for s in slots]
        problems.add(node, f"{len(values)} widget values, expected {len(slots)}: {expected}")
        return
    for slot, value in zip(slots, values):
        message = _widget_problem(node, slot, value, workflow)
        if message:
            problems.add(node, f"widget '{slot.spec.name}'{'' if slot.role == 'value' else ' ' + slot.role}: {message}")


def model_file_folder(node_type: str, spec: InputSpec) -> str | None:
    """The folder a model-file combo lists ('' = a pack combo, folder from the catalogue); None if not one."""
    if (node_type, spec.name) in CORE_MODEL_COMBOS:
        return CORE_MODEL_COMBOS[(node_type, spec.name)]
    return "" if (node_type, spec.name) in PACK_MODEL_COMBOS else None


def _widget_problem(node: dict, slot: WidgetSlot, value, workflow: dict) -> str | None:
    spec, node_type = slot.spec, node["type"]
    if slot.role == "control":
        return None if value in CONTROL_VALUES else f"{value!r} is not one of {CONTROL_VALUES}"
    if slot.role == "upload":
        return None if value == spec.upload_kind else f"{value!r}, expected {spec.upload_kind!r}"
    if spec.type == "INT" or spec.type == "FLOAT":
        allowed = (int,) if spec.type == "INT" else (int, float)
        if isinstance(value, bool) or not isinstance(value, allowed):
            return f"{value!r} is not {spec.type}"
        low, high = spec.config.get("min"), spec.config.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{value} outside [{low}, {high}]"
        return None
    if spec.type == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if spec.type == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    # COMBO
    if spec.upload_kind:
        return None if isinstance(value, str) and value else "empty file name"
    extension = USER_FILE_COMBOS.get((node_type, spec.name))
    if extension:
        ok = isinstance(value, str) and value.endswith(extension)
        return None if ok else f"{value!r} is not a {extension} file"
    folder = model_file_folder(node_type, spec)
    if folder is not None and (folder or model_by_filename(value) or value not in spec.options):
        return _model_file_problem(node, value, folder, workflow)
    # a plain choice (also a non-file entry of a file list, such as "none")
    return None if value in spec.options else f"{value!r} is not one of {list(spec.options)}"


def _model_file_problem(node: dict, value, folder: str, workflow: dict) -> str | None:
    """A model file must be the catalogue's (pack: named in its node's `models`, and in the workflow's where the
    frontend's model listing can show it) or listed in the workflow's `models` (core), and named in a Note."""
    if not isinstance(value, str) or not value:
        return f"{value!r} is not a model file name"
    entries = {e.get("name"): e for e in workflow.get("models", [])}
    model = model_by_filename(value) if folder == "" else None
    if folder == "":
        if model is None or model not in MODEL_FILES:
            return f"{value!r} is not a file of the model catalogue (face_migration/catalog.py)"
        folder = model.folder
        on_node = {e.get("name"): e for e in node.get("properties", {}).get("models", [])}
        entry = on_node.get(value)
        if entry is None:
            return f"{value} is not in the node's properties.models (the frontends' Missing Models check)"
        if entry.get("url") != model.url:
            return f"models entry url {entry.get('url')} differs from the catalogue's {model.url}"
        if listed_by_model_folders(value) and entries.get(value) != entry:
            return f"{value}: the workflow's models list lacks the node's entry {entry}"
    else:
        entry = entries.get(value)
        if entry is None:
            return f"{value} is not in the workflow's models list (name, url, directory)"
    if entry.get("directory") != models_directory(folder):
        return f"models entry directory {entry.get('directory')!r}, expected {models_directory(folder)!r}"
    notes = note_text(workflow)
    if value.split("/")[-1] not in notes:
        return f"{value} is not named in any Note"
    shown_folder = model.display_folder if model else f"models/{folder}"
    if shown_folder not in notes:
        return f"the Notes do not say that {value} goes in {shown_folder}"
    return None


def _output_type(node: dict, slot: int, schemas: dict) -> str | None:
    if node.get("type") in VIRTUAL_TYPES:
        outputs = node.get("outputs", [])
        return outputs[slot].get("type") if slot < len(outputs) else None
    schema = schemas.get(node.get("type"))
    if schema is None or slot >= len(schema["output"]):
        return None
    kind = schema["output"][slot]
    return "COMBO" if isinstance(kind, list) else kind


def _input_type(node: dict, slot: int, schemas: dict) -> str | None:
    inputs = node.get("inputs", [])
    if slot >= len(inputs):
        return None
    if node.get("type") in VIRTUAL_TYPES:
        return inputs[slot].get("type")
    schema = schemas.get(node.get("type"))
    specs = {s.name: s for s in input_specs(schema)} if schema else {}
    spec = specs.get(inputs[slot].get("name"))
    return spec.type if spec else None


def _check_link(link: list, by_id: dict, schemas: dict, problems: Problems) -> None:
    if len(link) != 6:
        problems.add(None, f"link {link} is not [id, from, from_slot, to, to_slot, type]")
        return
    link_id, src_id, src_slot, dst_id, dst_slot, kind = link
    src, dst = by_id.get(src_id), by_id.get(dst_id)
    if src is None or dst is None:
        problems.add(None, f"link {link_id} joins missing node {src_id if src is None else dst_id}")
        return
    outputs, inputs = src.get("outputs", []), dst.get("inputs", [])
    if src_slot >= len(outputs) or link_id not in (outputs[src_slot].get("links") or []):
        problems.add(src, f"output {src_slot} does not list link {link_id}")
    if dst_slot >= len(inputs) or inputs[dst_slot].get("link") != link_id:
        problems.add(dst, f"input {dst_slot} does not hold link {link_id}")
        return
    out_type, in_type = _output_type(src, src_slot, schemas), _input_type(dst, dst_slot, schemas)
    if out_type is None or in_type is None:
        return  # unknown node types are reported elsewhere
    if not types_compatible(out_type, in_type):
        problems.add(dst, f"input '{inputs[dst_slot].get('name')}' ({in_type}) is linked to a {out_type} output "
                          f"of node {src_id} ({src.get('type')})")
    if kind != out_type and kind != "*":
        problems.add(None, f"link {link_id} is typed {kind} but its output is {out_type}")


def _check_required(workflow: dict, schemas: dict, problems: Problems) -> None:
    """Checked on the API form, so a socket fed by a muted or bypassed node counts as unconnected."""
    by_id = {n["id"]: n for n in workflow["nodes"]}
    for node_id, node in to_api(workflow, schemas).items():
        for spec in input_specs(schemas[node["class_type"]]):
            if spec.required and spec.name not in node["inputs"]:
                problems.add(by_id[int(node_id)], f"required input '{spec.name}' ({spec.type}) gets nothing: "
                                                  f"connect it (a muted or bypassed source passes nothing on)")


# --------------------------------------------------------------------------------------------------
# API format


def _links_by_id(workflow: dict) -> dict:
    return {link[0]: link for link in workflow.get("links") or []}


def _resolve(workflow, by_id, links, link_id, schemas, seen=()):
    """What a link delivers in API format: [node_id, slot], a literal (PrimitiveNode), or None (muted)."""
    if link_id in seen:
        raise ValueError(f"link cycle through {link_id}")
    _, src_id, src_slot, _, _, _ = links[link_id]
    src = by_id[src_id]
    if src["type"] == "Reroute":
        upstream = src["inputs"][0].get("link")
        return None if upstream is None else _resolve(workflow, by_id, links, upstream, schemas, (*seen, link_id))
    if src["type"] == "PrimitiveNode":
        return ("literal", (src.get("widgets_values") or [None])[0])
    if src.get("mode") == MODE_MUTED:
        return None
    if src.get("mode") == MODE_BYPASS:
        # The frontend passes an input of the same type through: the same slot first, else the first match.
        out_type = _output_type(src, src_slot, schemas)
        inputs = src.get("inputs", [])
        order = ([src_slot] if src_slot < len(inputs) else []) + [i for i in range(len(inputs)) if i != src_slot]
        for i in order:
            slot = inputs[i]
            if slot.get("link") is not None and types_compatible(out_type, _input_type(src, i, schemas) or "?"):
                return _resolve(workflow, by_id, links, slot["link"], schemas, (*seen, link_id))
        return None
    return [str(src_id), src_slot]


def to_api(workflow: dict, schemas: dict) -> dict:
    """The prompt ComfyUI's frontend would queue for this workflow ({id: {class_type, inputs, _meta}})."""
    by_id = {n["id"]: n for n in workflow["nodes"]}
    links = _links_by_id(workflow)
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_TYPES or node.get("mode") in (MODE_MUTED, MODE_BYPASS):
            continue
        schema = schemas[node["type"]]
        inputs = {}
        for slot, value in zip(widget_slots(schema), node.get("widgets_values") or []):
            if slot.role == "value":
                inputs[slot.spec.name] = value
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            source = _resolve(workflow, by_id, links, slot["link"], schemas)
            if source is None:
                inputs.pop(slot["name"], None)
            elif isinstance(source, tuple):
                inputs[slot["name"]] = source[1]
            else:
                inputs[slot["name"]] = source
        title = node.get("title") or schema.get("display_name") or node["type"]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": title}}
    return prompt


def output_node_ids(prompt: dict, schemas: dict) -> list[str]:
    return [i for i, n in prompt.items() if schemas[n["class_type"]].get("output_node")]
