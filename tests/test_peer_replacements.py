"""web/peer_nodes.json (the other PuLID-FLUX packs' nodes -> this pack's) against this pack's node schemas
(the snapshot devkit.workflow_validation.load_schemas reads), and the node replacements nodes/peer_replacements.py
derives from it for ComfyUI's server."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from devkit.workflow_validation import PACK_MODEL_COMBOS, load_schemas
from face_migration.catalog import MODEL_FILES

REPO = Path(__file__).resolve().parents[1]


def load_module():
    # Loaded on its own: the nodes package needs ComfyUI, this module does not.
    spec = importlib.util.spec_from_file_location("peer_replacements", REPO / "nodes" / "peer_replacements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peer = load_module()
TABLE = peer.load_table()
SCHEMAS = load_schemas()  # the newest tested ComfyUI's


def inputs_of(node_type: str) -> dict:
    spec = SCHEMAS[node_type]["input"]
    return {**spec.get("required", {}), **spec.get("optional", {})}


def accepts(node_type: str, name: str, value) -> bool:
    """Whether a widget of the node takes the value; a model file combo (empty in the snapshot, made without
    models) takes the catalogue's file names."""
    if (node_type, name) in PACK_MODEL_COMBOS:
        return value in {m.filename for m in MODEL_FILES} | {n for m in MODEL_FILES for n in m.alternatives}
    spec = inputs_of(node_type)[name]
    kind, options = spec[0], spec[1] if len(spec) > 1 else {}
    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else options.get("options", [])
        return value in choices or not choices
    checks = {"INT": lambda v: isinstance(v, int) and not isinstance(v, bool), "FLOAT": lambda v: isinstance(v, float),
              "BOOLEAN": lambda v: isinstance(v, bool), "STRING": lambda v: isinstance(v, str)}
    return checks[kind](value) and options.get("min", value) <= value <= options.get("max", value)


def widget_names(spec: dict) -> list[str]:
    """Every widget of every layout of a peer node, in first-seen order."""
    return list(dict.fromkeys(name for layout in spec["layouts"] for name, _kind in layout["widgets"]))


def specs():
    """(peer node, its widgets, spec, this pack's node type) for each node the table makes from a peer node."""
    for old_type, entry in TABLE["nodes"].items():
        yield old_type, widget_names(entry), entry, entry["new_type"]
        for loader in entry.get("loaders", {}).values():
            yield old_type, [], loader, loader["new_type"]
        encoder = entry.get("encoder")
        if encoder:
            yield old_type, widget_names(entry), encoder, encoder["new_type"]
            for loader in encoder["loaders"].values():
                yield old_type, [], loader, loader["new_type"]
            for fold in encoder["folds"].values():
                yield fold["type"], widget_names(fold), fold, encoder["new_type"]


def layouts():
    """(peer node, its layouts) for each peer node of the table, folded ones included."""
    for old_type, entry in TABLE["nodes"].items():
        yield old_type, entry["layouts"]
        for fold in entry.get("encoder", {}).get("folds", {}).values():
            yield fold["type"], fold["layouts"]


@pytest.mark.parametrize("old_type, variants", list(layouts()), ids=lambda v: v if isinstance(v, str) else "")
def test_each_variant_of_a_peer_node_has_its_own_layout(old_type, variants):
    """web/peer_nodes.js reads a saved node's widget values by the one layout whose count and kinds they fit: two
    variants with the same kinds in the same order could not be told apart, and a kind it cannot check would never
    fit."""
    kinds = [tuple(kind for _name, kind in layout["widgets"]) for layout in variants]
    assert len(set(kinds)) == len(kinds), f"{old_type}: two variants share a layout: {kinds}"
    assert {kind for layout in kinds for kind in layout} <= {"FLOAT", "INT", "COMBO", "BOOLEAN"}, kinds
    assert all(layout["packs"] for layout in variants), f"{old_type}: a variant names no pack"
    for layout in variants:
        names = [name for name, _kind in layout["widgets"]]
        assert len(set(names)) == len(names), names


def test_apply_pulid_flux_variants_are_the_peers_layouts():
    """The three saved layouts of ApplyPulidFlux (read in the packs' INPUT_TYPES): balazik's and lldacing's three
    floats, sipie800's eight, and the twelve of GraftingRayman's first version, whose fourth widget is a boolean and
    seventh a face choice (read by sipie800's order they gave fusion = false and train_step = "normal")."""
    variants = TABLE["nodes"]["ApplyPulidFlux"]["layouts"]
    widgets = {len(v["widgets"]): [name for name, _kind in v["widgets"]] for v in variants}
    assert widgets[3] == ["weight", "start_at", "end_at"]
    assert widgets[8] == widgets[3] + ["fusion", "fusion_weight_max", "fusion_weight_min", "train_step", "use_gray"]
    assert widgets[12] == widgets[3] + ["use_face_number", "face_number", "blur", "face_select"] + widgets[8][3:]


@pytest.mark.parametrize("old_type, widgets, spec, new_type", list(specs()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_mapped_name_and_value_exists_on_this_packs_node(old_type, widgets, spec, new_type):
    names = inputs_of(new_type)
    for old, new in {**spec.get("inputs", {}), **spec.get("values", {})}.items():
        assert new in names, f"{old_type}.{old} -> {new_type}.{new}, which has no such input"
        assert old in widgets or old not in spec.get("values", {}), f"{old} is not a widget of {old_type}"
    for new, value in spec.get("set", {}).items():
        assert new in names and accepts(new_type, new, value), f"{new_type}.{new} = {value!r}"
    for old, choices in spec.get("choices", {}).items():
        new = spec["values"][old]
        assert all(accepts(new_type, new, v) for v in choices.values()), f"{new_type}.{new}: {choices}"


@pytest.mark.parametrize("old_type", sorted(TABLE["nodes"]))
def test_every_peer_widget_is_carried_or_explained(old_type):
    entry = TABLE["nodes"][old_type]
    encoder = entry.get("encoder", {})
    carried = set(entry.get("values", {})) | set(encoder.get("values", {}))
    for widget in widget_names(entry):
        assert widget in carried or (widget in entry["same"] and widget in entry["notes"]), widget
    for widget, conditions in entry.get("used_when", {}).items():
        assert widget in entry["same"] and set(conditions) <= set(widget_names(entry)), (widget, conditions)
    for name in entry.get("optional", []):
        assert name in entry.get("inputs", {}) or name in entry["notes"], f"{old_type}.{name} is dropped silently"
    for fold in encoder.get("folds", {}).values():
        for widget in widget_names(fold):
            assert widget in fold["values"] or (widget in fold["same"] and widget in fold["notes"]), widget


def test_the_face_detector_joins_the_apply_nodes_encoder_and_is_not_registered_on_the_server():
    detector = TABLE["nodes"]["PulidFluxFaceDetector"]
    encoder = TABLE["nodes"][detector["merge_into"]]["encoder"]
    assert detector["new_type"] == encoder["new_type"]
    assert detector["outputs_to"] in SCHEMAS[detector["new_type"]]["output_name"]
    required = set(SCHEMAS[detector["new_type"]]["input"]["required"])
    assert set(detector["inputs"].values()) | set(detector["loaders"]) == required - set(detector["set"])
    assert "PulidFluxFaceDetector" not in {r["old_node_id"] for r in peer.server_replacements(TABLE)}


def test_every_peer_node_of_the_table_belongs_to_a_peer_pack():
    listed = {node for nodes in TABLE["packs"].values() for node in nodes}
    folded = {fold["type"] for e in TABLE["nodes"].values() for fold in e.get("encoder", {}).get("folds", {}).values()}
    assert set(TABLE["nodes"]) | folded <= listed


def test_server_replacements_never_map_an_optional_input_by_name():
    # Core's replacement reads every mapped old input; a prompt without an optional one fails with HTTP 500.
    for replacement in peer.server_replacements(TABLE):
        optional = set(TABLE["nodes"][replacement["old_node_id"]].get("optional", []))
        mapped = {m["old_id"] for m in replacement["input_mapping"] or [] if "old_id" in m}
        assert not mapped & optional, replacement


def test_server_replacements_give_every_required_input_but_the_encoders():
    """Each required input of the new node is mapped or set, except what only the frontend's added Encode Face
    provides (ApplyPulidFlux's pulid_id): a widget left out would fail the prompt with a missing input."""
    for replacement in peer.server_replacements(TABLE):
        entry = TABLE["nodes"][replacement["old_node_id"]]
        given = {m["new_id"] for m in replacement["input_mapping"] or []}
        required = set(SCHEMAS[replacement["new_node_id"]]["input"].get("required", {}))
        expected_missing = {entry["encoder"]["into"]} if "encoder" in entry else set()
        assert required - given == expected_missing, replacement
        values = {m["new_id"]: m["set_value"] for m in replacement["input_mapping"] or [] if "set_value" in m}
        assert all(accepts(replacement["new_node_id"], k, v) for k, v in values.items()), values


def test_server_replacement_of_apply_pulid_flux():
    apply = next(r for r in peer.server_replacements(TABLE) if r["old_node_id"] == "ApplyPulidFlux")
    assert apply["new_node_id"] == "FaceMigration_ApplyPulid"
    assert apply["old_widget_ids"] == ["weight", "start_at", "end_at"]  # the widgets all three packs have, in order
    assert {"new_id": "start_percent", "old_id": "start_at"} in apply["input_mapping"]
    assert {"new_id": "timing", "set_value": "percent"} in apply["input_mapping"]
    assert apply["output_mapping"] is None  # outputs keep their index (core's remapping fails on ApplyPulidFlux)


def test_a_widget_whose_values_are_translated_is_set_on_the_server():
    face = next(r for r in peer.server_replacements(TABLE) if r["old_node_id"] == "PulidFluxInsightFaceLoader")
    assert face["input_mapping"] == [{"new_id": "provider", "set_value": "auto"}]  # ROCM is ROCm here
