"""Every node module of the pack imports in a real ComfyUI. A module that fails is skipped with a logged
reason instead of failing the whole pack (nodes/__init__.py), so ComfyUI's IMPORT FAILED line, which the
session start checks, would not show it: the log is read here."""
import json
import urllib.request

NODE_MODULE_NODES = {  # one node id per node module
    "pulid_nodes": "FaceMigration_PulidModelLoader",
    "face_nodes": "FaceMigration_EncodeFace",
    "remote_nodes": "FaceMigration_MoArkFaceMigration",
}


def test_no_node_module_was_skipped(comfy):
    skipped = [line for line in comfy.log_text().splitlines()
               if "[Face Migration]" in line and ("could not be imported" in line or " disabled: " in line)]
    assert not skipped, "\n".join(skipped)
    with urllib.request.urlopen(comfy.url + "/object_info", timeout=60) as resp:
        registered = json.load(resp)
    missing = {module: node for module, node in NODE_MODULE_NODES.items() if node not in registered}
    assert not missing, f"node modules without their nodes: {missing}"
