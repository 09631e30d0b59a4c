"""Workflows made with the other PuLID-FLUX packs' nodes open with this pack's nodes.

The table is web/peer_nodes.json, shared with the frontend extension web/peer_nodes.js, which rewrites those
nodes when a workflow is loaded (ComfyUI 0.3.64 and newer frontends alike). On ComfyUI versions with node
replacements (0.14 and newer) the table is also registered with the server, so API-format prompts naming a peer's
loader are replaced there and GET /node_replacements lists the mappings.

What core's replacement can express is less than the frontend does: one node for one node, no value
translation, and no extra nodes, so
- a widget whose values need translating gets the table's `set` value instead,
- the peer's optional sockets are never mapped by name (core fails with HTTP 500 on a prompt without them),
- ApplyPulidFlux becomes Apply PuLID-FLUX (Advanced) without its identity: an API prompt then fails validation
  on the missing pulid_id, which only Encode Face (added by the frontend rewrite) provides,
- PulidFluxFaceDetector, which the frontend turns into an Encode Face with added loaders, is not registered.

Importable without ComfyUI (the unit test loads this file on its own); comfy_api is imported on registration."""
from __future__ import annotations

import json
import logging
from pathlib import Path

TABLE_PATH = Path(__file__).resolve().parents[1] / "web" / "peer_nodes.json"
LOG_PREFIX = "[Face Migration]"  # as nodes/common.py; not imported from there, which needs ComfyUI


def load_table(path: Path = TABLE_PATH) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def server_replacements(table: dict) -> list[dict]:
    """The io.NodeReplace arguments for each peer node of the table, as core's replacement can apply them."""
    replacements = []
    for old_type, entry in table["nodes"].items():
        if "merge_into" in entry:
            continue  # becomes an Encode Face fed by loaders the frontend adds; core's one-for-one swap cannot
        optional = set(entry.get("optional", ()))
        mapping = [{"new_id": new, "old_id": old} for old, new in entry.get("inputs", {}).items()
                   if old not in optional]
        mapped = {m["new_id"] for m in mapping}
        for old, new in entry.get("values", {}).items():
            if old not in optional and old not in entry.get("choices", {}):
                mapping.append({"new_id": new, "old_id": old})
                mapped.add(new)
        mapping += [{"new_id": new, "set_value": value} for new, value in entry.get("set", {}).items()
                    if new not in mapped]
        replacements.append({
            "new_node_id": entry["new_type"],
            "old_node_id": old_type,
            # Only the widgets every variant of the peer node has, in its order (values are matched by position).
            "old_widget_ids": [w for w in shared_widgets(entry["layouts"]) if w in entry.get("values", {})] or None,
            "input_mapping": mapping or None,
            "output_mapping": output_mapping(entry["outputs"]),
        })
    return replacements


def shared_widgets(layouts: list[dict]) -> list[str]:
    """The widget names at the start of every layout, in order: the positions all variants agree on."""
    names = [[name for name, _kind in layout["widgets"]] for layout in layouts]
    shared = []
    for column in zip(*names):
        if len(set(column)) > 1:
            break
        shared.append(column[0])
    return shared


def output_mapping(outputs: list[int]) -> list[dict] | None:
    """None where every output keeps its index: core then leaves the consumers' links alone. Its remapping looks
    each consumer's input up by name, and raises (HTTP 500) on a consumer already replaced without that input
    (an ApplyPulidFlux's eva_clip)."""
    if outputs == list(range(len(outputs))):
        return None
    return [{"old_idx": old, "new_idx": new} for old, new in enumerate(outputs)]


async def register_peer_replacements() -> None:
    """Registers the table with ComfyUI's node replacements where it has them; never stops the pack loading."""
    try:
        from comfy_api.v0_0_2 import ComfyAPI, io
    except ImportError as exc:
        logging.warning("%s node replacements not registered: %s", LOG_PREFIX, exc)
        return
    if not hasattr(io, "NodeReplace"):
        return  # before ComfyUI 0.14: web/peer_nodes.js rewrites the peers' nodes in the frontend
    api = ComfyAPI()
    try:
        for replacement in server_replacements(load_table()):
            await api.node_replacement.register(io.NodeReplace(**replacement))
    except Exception as exc:  # an API change must not take the pack's nodes down with it
        logging.warning("%s the other PuLID-FLUX packs' nodes are not registered as replaceable: %s",
                        LOG_PREFIX, exc, exc_info=exc)
