"""Hand-written API prompts (no `_meta`) that use another PuLID-FLUX pack's node types, posted to /prompt. On a core
with node replacements (0.33) the pack registers its replacements, and core's own replacement answered such a prompt
with HTTP 500 (KeyError '_meta'); the pack's on-prompt handler (nodes/peer_prompts.py) replaces those nodes first.
On 0.3.64 nothing is replaced on the server: the prompt gets core's 400 for an unknown node."""
from __future__ import annotations

import json
import urllib.error
import urllib.request


def post_prompt(comfy, prompt: dict) -> tuple[int, dict]:
    request = urllib.request.Request(comfy.url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        return exc.code, json.loads(body) if body.startswith("{") else {"text": body}


def replaces_on_the_server(comfy) -> bool:
    try:
        comfy._get("/node_replacements")
        return True
    except urllib.error.HTTPError:
        return False


def with_peer_loader(graphs) -> tuple[dict, str]:
    """A tiny-FLUX graph whose PuLID loader is written as the peers' PulidFluxModelLoader, without `_meta`."""
    prompt = graphs.flux([{}], steps=1)
    loader = next(node_id for node_id, node in prompt.items() if node["class_type"] == "FaceMigration_PulidModelLoader")
    prompt[loader]["class_type"] = "PulidFluxModelLoader"
    assert all("_meta" not in node for node in prompt.values())
    return prompt, loader


def test_a_prompt_without_meta_using_a_peers_loader_runs_or_gets_a_clear_400(comfy, graphs):
    prompt, loader = with_peer_loader(graphs)
    if replaces_on_the_server(comfy):
        entry = comfy.run(prompt)  # was HTTP 500: KeyError '_meta' in core's copy_node_struct
        assert entry["prompt"][2][loader]["class_type"] == "FaceMigration_PulidModelLoader"
        assert graphs.digest(entry)["shape"]
    else:
        status, body = post_prompt(comfy, prompt)
        # "invalid_prompt" on 0.3.64, "missing_node_type" on later cores: either names the unknown node type.
        assert status == 400 and body["error"]["type"] in {"invalid_prompt", "missing_node_type"}, body
        assert "PulidFluxModelLoader" in body["error"]["message"]


def test_a_peers_node_missing_an_input_gets_a_400_naming_it(comfy, graphs):
    prompt, loader = with_peer_loader(graphs)
    del prompt[loader]["inputs"]["pulid_file"]
    status, body = post_prompt(comfy, prompt)
    assert status == 400, body  # was 500 on 0.33: KeyError 'pulid_file'
    if replaces_on_the_server(comfy):
        # The answer the same prompt gets when written with the pack's own loader, which names the input.
        prompt[loader]["class_type"] = "FaceMigration_PulidModelLoader"
        own_status, own_body = post_prompt(comfy, prompt)
        assert (status, body["node_errors"]) == (own_status, own_body["node_errors"])
        assert "pulid_file" in json.dumps(body["node_errors"][loader])
