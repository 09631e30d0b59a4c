"""tests/fixtures/object_info/core-<version>.json, which the workflow tests validate against, is what that
ComfyUI version serves. Nodes the server has beyond the snapshot (custom nodes, or core modules whose optional
dependency was missing when it was written, such as the audio nodes without torchaudio) are not checked."""
import copy
import json

from devkit.workflow_validation import core_snapshot, input_specs, model_file_folder

REFRESH = "re-run scripts/dump_pack_object_info.py --core --comfyui PATH"


def without_folder_listings(node_id: str, entry: dict, snapshot_entry: dict) -> dict:
    """The entry with the options of every file-list combo removed: the live server lists the files its
    tests have written. The snapshot was written with empty folders, so a combo that lists nothing there
    is a folder listing, and so is a known model loader's (VAELoader always offers pixel_space too)."""
    entry = copy.deepcopy(entry)
    for spec in input_specs(snapshot_entry):
        if spec.type == "COMBO" and (not spec.options or model_file_folder(node_id, spec) is not None):
            raw = entry["input"]["required" if spec.required else "optional"][spec.name]
            if isinstance(raw[0], list):
                raw[0] = []
            else:
                raw[1].pop("options", None)
    return entry


def test_core_snapshot_matches_the_live_server(comfy, comfyui):
    path = core_snapshot(comfyui.version)
    assert path.is_file(), f"no core snapshot for ComfyUI {comfyui.version}: {REFRESH}"
    snapshot = json.loads(path.read_text())
    live = comfy.object_info()
    assert not sorted(set(snapshot) - set(live)), f"core nodes gone from this ComfyUI: {REFRESH}"
    changed = [node_id for node_id, entry in snapshot.items()
               if without_folder_listings(node_id, live[node_id], entry)
               != without_folder_listings(node_id, entry, entry)]
    assert not changed, f"core nodes whose schema changed: {changed}: {REFRESH}"
