"""API prompts naming another PuLID-FLUX pack's nodes, replaced by the pack before ComfyUI's node replacement.

Core's replacement (app/node_replace_manager.py, 0.33) copies a replaced node's `_meta` and each mapped input by
key, so a hand-written API prompt without `_meta`, or without one of the peer node's inputs, gets an HTTP 500
(KeyError) for a node type only this pack's registration made replaceable. ComfyUI runs the on-prompt handlers
(PromptServer.add_on_prompt_handler, the public hook for packs) on the request's JSON before it replaces nodes;
this handler applies the same replacements (nodes/peer_replacements.server_replacements) to those nodes, so core
finds nothing left to replace. An input the prompt lacks stays out: validation then answers 400 naming it. Nodes
of a peer pack that is installed are left alone, as core leaves them.

Importable without ComfyUI (the unit test loads this file on its own)."""
from __future__ import annotations

import logging

LOG_PREFIX = "[Face Migration]"  # as nodes/common.py; not imported from there, which needs ComfyUI


def replace_peer_nodes(prompt: dict, replacements: list[dict], installed) -> list[str]:
    """Replace, in place, the prompt's nodes whose type has a replacement and is not installed (`installed`: the
    node types this ComfyUI has) by their replacement's type; returns the ids of the nodes replaced."""
    by_type = {replacement["old_node_id"]: replacement for replacement in replacements}
    replaced, moved_outputs = [], {}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        replacement = by_type.get(node.get("class_type"))
        if replacement is None or node["class_type"] in installed or replacement["new_node_id"] not in installed:
            continue
        inputs = {}
        for mapping in replacement["input_mapping"] or []:
            if "set_value" in mapping:
                inputs[mapping["new_id"]] = mapping["set_value"]
            elif mapping.get("old_id") in node["inputs"]:
                inputs[mapping["new_id"]] = node["inputs"][mapping["old_id"]]
        node["class_type"], node["inputs"] = replacement["new_node_id"], inputs
        replaced.append(node_id)
        if replacement["output_mapping"]:
            moved_outputs[node_id] = {m["old_idx"]: m["new_idx"] for m in replacement["output_mapping"]}
    for node in prompt.values():  # links from a replaced node follow its outputs to their new places
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for value in (inputs.values() if isinstance(inputs, dict) else ()):
            if is_link(value) and value[0] in moved_outputs:
                value[1] = moved_outputs[value[0]].get(value[1], value[1])
    return replaced


def is_link(value) -> bool:
    """An input fed by another node's output: [node id, output index], as the API format writes it."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)
            and not isinstance(value[1], bool))


def register_peer_prompt_handler() -> None:
    """On cores with node replacements (where the pack registers its own), before core applies them."""
    from comfy_api.v0_0_2 import io
    from server import PromptServer

    from .peer_replacements import load_table, server_replacements

    if not hasattr(io, "NodeReplace"):
        return  # before ComfyUI 0.14 nothing is replaced on the server; web/peer_nodes.js does it in the frontend
    replacements = server_replacements(load_table())

    def handler(json_data):
        import nodes  # ComfyUI's own nodes.py: the node types installed now (another pack may load later)

        prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
        if isinstance(prompt, dict):
            replaced = replace_peer_nodes(prompt, replacements, nodes.NODE_CLASS_MAPPINGS)
            if replaced:
                logging.info("%s API prompt: nodes %s of other PuLID-FLUX packs replaced by this pack's", LOG_PREFIX,
                             ", ".join(replaced))
        return json_data

    PromptServer.instance.add_on_prompt_handler(handler)
