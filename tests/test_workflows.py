"""The shipped workflows (workflows/*.json) against the core + pack node schemas, and the validator itself.

Every workflow check runs against the schemas of each tested ComfyUI version (tests/fixtures/object_info/):
without them these tests FAIL, they never skip."""
import json
from pathlib import Path

import pytest
from PIL import Image

from face_migration.catalog import BY_KEY, MODEL_FILES, model_by_filename
from devkit.workflow_validation import (CONTROL_VALUES, assert_valid, input_specs,
                                       load_schemas, nodes_in_group, note_text, output_node_ids, pack_snapshot,
                                       to_api, validate, widget_slots)
from face_migration.support import TESTED_COMFYUI

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {"flux1_dev_pulid", "flux1_schnell_pulid_4steps", "remote_api_face_migration",
            "flux1_dev_pulid_two_people", "local_vs_remote", "identity_round_trip", "chroma_pulid"}
LOCAL = sorted(EXPECTED - {"remote_api_face_migration"})
WORKFLOWS = [REPO / "workflows" / f"{name}.json" for name in sorted(EXPECTED)]
PACK_PREFIX = "FaceMigration_"


@pytest.fixture(scope="module", params=TESTED_COMFYUI, ids=[f"comfyui-{v}" for v in TESTED_COMFYUI])
def schemas(request):
    """The node schemas of each tested ComfyUI: a workflow must load and validate on every one."""
    return load_schemas(request.param)


def load(name):
    return json.loads((REPO / "workflows" / f"{name}.json").read_text())


def nodes_of(workflow, kind):
    return [n for n in workflow["nodes"] if n["type"] == kind]


def widgets(node, schemas):
    """{input name: value} of a node's widgets (control values as '<name>:control')."""
    result = {}
    for slot, value in zip(widget_slots(schemas[node["type"]]), node["widgets_values"]):
        result[slot.spec.name + ("" if slot.role == "value" else ":" + slot.role)] = value
    return result


def test_exactly_the_expected_workflows_are_shipped():
    assert {p.stem for p in (REPO / "workflows").glob("*.json")} == EXPECTED


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_is_valid_and_converts_to_api(path, schemas):
    workflow = json.loads(path.read_text())
    assert_valid(workflow, schemas, path.name)
    prompt = to_api(workflow, schemas)
    assert output_node_ids(prompt, schemas), "nothing to run: no output node"
    assert all(n["class_type"] in schemas for n in prompt.values())
    uses = {n["type"] for n in workflow["nodes"]}
    assert all(t in schemas or t in ("Note", "MarkdownNote") for t in uses), "only core and this pack's nodes"
    assert any(t.startswith(PACK_PREFIX) for t in uses)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_thumbnail_beside_workflow(path):
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"{thumb.name} missing: run scripts/build_workflows.py"
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and image.width >= 256 and image.height >= 160
    assert thumb.stat().st_size < 200_000


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_models_list_matches_the_loaders(path, schemas):
    """Every file a loader names is in `models` (checked by the validator) and nothing else is."""
    workflow = json.loads(path.read_text())
    used = {v for n in workflow["nodes"] for v in n.get("widgets_values") or [] if isinstance(v, str)}
    for entry in workflow["models"]:
        assert entry["name"] in used, entry
    notes = note_text(workflow)
    for entry in workflow["models"]:
        assert entry["url"] in notes, f"the Note does not link {entry['name']}'s download"


def test_local_workflows_name_every_required_catalogue_file(schemas):
    for name in LOCAL:
        notes = note_text(load(name))
        for model in MODEL_FILES:
            if not model.optional:
                assert model.filename in notes and model.display_folder in notes, (name, model.filename)
        assert "non-commercial" in notes.lower(), f"{name}: antelopev2's licence is not mentioned"


# What ComfyUI's model listing (app/model_manager.py, folder_paths.supported_pt_extensions) shows. A
# `models` entry it cannot show is reported missing by the frontend on every load, even when present.
LISTED_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_models_entries_are_files_comfyui_lists(path):
    for entry in json.loads(path.read_text())["models"]:
        assert entry["name"].endswith(LISTED_EXTENSIONS), entry


def apply_nodes(workflow):
    return [n for n in workflow["nodes"] if n["type"].startswith("FaceMigration_ApplyPulid")]


def test_schnell_mirrors_the_hosted_api_defaults(schemas):
    workflow = load("flux1_schnell_pulid_4steps")
    sampler = widgets(nodes_of(workflow, "KSampler")[0], schemas)
    assert sampler["steps"] == 4 and sampler["cfg"] == 1.0
    apply = widgets(apply_nodes(workflow)[0], schemas)
    assert apply["weight"] == 1.0 and apply.get("timing", "steps") == "steps" and apply["start_step"] == 0
    assert widgets(nodes_of(workflow, "UNETLoader")[0], schemas)["unet_name"] == "flux1-schnell.safetensors"


def linked_from(workflow, node, input_name):
    """The node whose output feeds `input_name` of `node`."""
    [link] = [i["link"] for i in node["inputs"] if i["name"] == input_name]
    [source] = [l[1] for l in workflow["links"] if l[0] == link]
    return next(n for n in workflow["nodes"] if n["id"] == source)


def test_chroma_workflow_reads_t5_only_and_samples_with_cfg_a_negative_prompt_and_the_uncond_id(schemas):
    """As ComfyUI's own Chroma template: T5-XXL through CLIPLoader 'chroma' (padding 1), no CLIP-L and no
    FluxGuidance; CFG about 4 with a written negative prompt; the community's PuLID settings on Chroma (768²,
    26 steps, weight 0.9-1.0) and the official uncond ID on the negative pass."""
    workflow = load("chroma_pulid")
    [unet], [clip], [t5] = (nodes_of(workflow, k) for k in ("UNETLoader", "CLIPLoader", "T5TokenizerOptions"))
    assert model_by_filename(widgets(unet, schemas)["unet_name"]).key == "chroma1_hd"
    assert widgets(clip, schemas)["type"] == "chroma" and widgets(t5, schemas)["min_padding"] == 1
    assert model_by_filename(widgets(clip, schemas)["clip_name"]).key == "t5xxl_fp16"
    assert not nodes_of(workflow, "DualCLIPLoader") and not nodes_of(workflow, "FluxGuidance")
    [sampler] = nodes_of(workflow, "KSampler")
    settings = widgets(sampler, schemas)
    assert 3.5 <= settings["cfg"] <= 4.5 and settings["steps"] == 26
    latent = widgets(linked_from(workflow, sampler, "latent_image"), schemas)
    assert (latent["width"], latent["height"]) == (768, 768)
    negative = linked_from(workflow, sampler, "negative")
    assert negative["type"] == "CLIPTextEncode" and widgets(negative, schemas)["text"].strip()
    assert linked_from(workflow, negative, "clip")["id"] == t5["id"]
    [apply] = apply_nodes(workflow)
    assert apply["type"] == "FaceMigration_ApplyPulidSimple"  # its negative pass always takes the uncond ID
    assert 0.9 <= widgets(apply, schemas)["weight"] <= 1.0
    assert linked_from(workflow, apply, "model")["id"] == unet["id"]
    assert "has not been measured" in note_text(workflow)


@pytest.mark.parametrize("name", ["flux1_schnell_pulid_4steps", "local_vs_remote"])
def test_schnell_workflows_have_no_guidance_node_and_say_why(name):
    """FLUX.1-schnell has no guidance embedding: a FluxGuidance node there does nothing."""
    workflow = load(name)
    assert not nodes_of(workflow, "FluxGuidance")
    assert "FLUX.1-schnell has no guidance input" in note_text(workflow)


def test_two_people_has_two_identities_and_two_masks(schemas):
    workflow = load("flux1_dev_pulid_two_people")
    prompt = to_api(workflow, schemas)
    applies = [n for n in prompt.values() if n["class_type"] == "FaceMigration_ApplyPulid"]
    assert len(applies) == 2
    assert len({tuple(a["inputs"]["pulid_id"]) for a in applies}) == 2, "both Apply nodes get the same identity"
    assert all("mask" in a["inputs"] for a in applies)
    assert applies[0]["inputs"]["mask"] != applies[1]["inputs"]["mask"]
    chained = {tuple(a["inputs"]["model"]) for a in applies}
    assert any(prompt[src]["class_type"] == "FaceMigration_ApplyPulid" for src, _ in chained), "not chained"
    samplers = [n for n in prompt.values() if n["class_type"] == "KSampler"]
    assert len(samplers) == 1, "one image"


def test_remote_workflow_needs_no_local_model(schemas):
    workflow = load("remote_api_face_migration")
    kinds = {n["type"] for n in workflow["nodes"]}
    assert "FaceMigration_MoArkFaceMigration" in kinds
    assert not kinds & {"UNETLoader", "DualCLIPLoader", "VAELoader", "FaceMigration_PulidModelLoader"}
    assert workflow["models"] == []
    assert "MOARK_API_KEY" in note_text(workflow)
    for node in workflow["nodes"]:  # a key must never sit in a workflow
        assert not any(isinstance(v, str) and v.startswith(("sk-", "Bearer")) for v in node.get("widgets_values") or [])


def test_local_vs_remote_share_photo_and_prompt_and_score_both(schemas):
    workflow = load("local_vs_remote")
    prompt = to_api(workflow, schemas)
    remote = [n for n in prompt.values() if n["class_type"] == "FaceMigration_MoArkFaceMigration"]
    encode = [n for n in prompt.values() if n["class_type"] == "FaceMigration_EncodeFace"]
    text = [n for n in prompt.values() if n["class_type"] == "CLIPTextEncode"]
    assert len(remote) == len(encode) == 1 and len(text) == 1
    assert remote[0]["inputs"]["image"] == encode[0]["inputs"]["image"], "not the same photo"
    assert isinstance(text[0]["inputs"]["text"], list) and remote[0]["inputs"]["prompt"] == text[0]["inputs"]["text"]
    similarity = [n for n in prompt.values() if n["class_type"] == "FaceMigration_FaceSimilarity"]
    assert len(similarity) == 2


# ---------------------------------------------------------------------------------------------------
# The validator itself, on a small hand-written workflow.

def small_workflow():
    """A valid FLUX text-to-latent graph with a Reroute and a Note, written by hand."""
    def node(i, kind, inputs=(), outputs=(), values=(), mode=0):
        return {"id": i, "type": kind, "pos": [0, 0], "size": [100, 100], "flags": {}, "order": i, "mode": mode,
                "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
                "outputs": [{"name": n, "type": t, "links": links} for n, t, links in outputs],
                "properties": {}, "widgets_values": list(values)}
    model = {"name": "flux1-schnell.safetensors", "url": "https://huggingface.co/example/flux1-schnell.safetensors",
             "directory": "diffusion_models"}
    encoders = [{"name": n, "url": f"https://huggingface.co/example/{n}", "directory": "text_encoders"}
                for n in ("clip_l.safetensors", "t5xxl_fp16.safetensors")]
    return {
        "version": 0.4, "last_node_id": 11, "last_link_id": 9, "models": [model, *encoders],
        "nodes": [
            node(1, "UNETLoader", outputs=[("MODEL", "MODEL", [1])], values=["flux1-schnell.safetensors", "default"]),
            node(2, "Reroute", inputs=[("", "*", 1)], outputs=[("", "MODEL", [2])]),
            node(3, "EmptySD3LatentImage", outputs=[("LATENT", "LATENT", [3])], values=[256, 256, 1]),
            node(4, "SolidMask", outputs=[("MASK", "MASK", [])], values=[1.0, 64, 64]),
            node(5, "ConditioningZeroOut", inputs=[("conditioning", "CONDITIONING", 6)],
                 outputs=[("CONDITIONING", "CONDITIONING", [4, 5])]),
            node(6, "KSampler", inputs=[("model", "MODEL", 2), ("positive", "CONDITIONING", 4),
                                        ("negative", "CONDITIONING", 5), ("latent_image", "LATENT", 3)],
                 outputs=[("LATENT", "LATENT", [7])], values=[7, "fixed", 4, 1.0, "euler", "simple", 1.0]),
            node(7, "PreviewAny", inputs=[("source", "*", 7)], values=[]),
            node(8, "Note", values=["Put flux1-schnell.safetensors in models/diffusion_models and clip_l.safetensors, "
                                    "t5xxl_fp16.safetensors in models/text_encoders."]),
            node(9, "FluxGuidance", inputs=[("conditioning", "CONDITIONING", 8)],
                 outputs=[("CONDITIONING", "CONDITIONING", [6])], values=[4.0]),
            node(10, "CLIPTextEncode", inputs=[("clip", "CLIP", 9)], outputs=[("CONDITIONING", "CONDITIONING", [8])],
                 values=["a photo"]),
            node(11, "DualCLIPLoader", outputs=[("CLIP", "CLIP", [9])],
                 values=["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"]),
        ],
        "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 6, 0, "MODEL"], [3, 3, 0, 6, 3, "LATENT"],
                  [4, 5, 0, 6, 1, "CONDITIONING"], [5, 5, 0, 6, 2, "CONDITIONING"], [6, 9, 0, 5, 0, "CONDITIONING"],
                  [7, 6, 0, 7, 0, "LATENT"], [8, 10, 0, 9, 0, "CONDITIONING"], [9, 11, 0, 10, 0, "CLIP"]],
    }


def problems_of(workflow, schemas):
    return "\n".join(validate(workflow, schemas))


def unlink(workflow, link_id):
    """Remove a link from the link table and both ends."""
    workflow["links"] = [link for link in workflow["links"] if link[0] != link_id]
    for node in workflow["nodes"]:
        for slot in node["inputs"]:
            if slot.get("link") == link_id:
                slot["link"] = None
        for slot in node["outputs"]:
            slot["links"] = [i for i in slot["links"] if i != link_id]


def test_validator_accepts_the_small_workflow(schemas):
    assert validate(small_workflow(), schemas) == []


@pytest.mark.parametrize("fault, expected", [
    (lambda w: w["nodes"][2].update(type="EmptyFluxLatent"), "not registered"),
    (lambda w: w["links"][2].__setitem__(5, "IMAGE"), "typed IMAGE but its output is LATENT"),
    (lambda w: (w["links"].append([10, 4, 0, 6, 3, "MASK"]), w["nodes"][3]["outputs"][0]["links"].append(10),
                w["nodes"][5]["inputs"][3].update(link=10), w.update(last_link_id=10)),
     "(LATENT) is linked to a MASK output"),
    (lambda w: unlink(w, 9), "required input 'clip' (CLIP) gets nothing"),
    (lambda w: w["nodes"][10].update(mode=2), "required input 'clip' (CLIP) gets nothing"),
    (lambda w: w["nodes"][5]["widgets_values"].__setitem__(2, 0), "outside [1, 10000]"),
    (lambda w: w["nodes"][5]["widgets_values"].__setitem__(2, 4.5), "is not INT"),
    (lambda w: w["nodes"][5]["widgets_values"].__setitem__(4, "euler_fast"), "'euler_fast' is not one of"),
    (lambda w: w["nodes"][5]["widgets_values"].__setitem__(1, "sometimes"), "control: 'sometimes' is not one of"),
    (lambda w: w["nodes"][5]["widgets_values"].pop(1), "6 widget values, expected 7"),
    (lambda w: w["nodes"][3]["widgets_values"].__setitem__(0, 1.5), "1.5 outside [0.0, 1.0]"),
    (lambda w: w["nodes"][10]["widgets_values"].__setitem__(2, "flux2"), "'flux2' is not one of"),
    (lambda w: w["nodes"][0]["widgets_values"].__setitem__(0, "flux1-dev.safetensors"),
     "flux1-dev.safetensors is not in the workflow's models list"),
    (lambda w: w["nodes"][7]["widgets_values"].__setitem__(0, "see the README"), "is not named in any Note"),
    (lambda w: w["models"][0].update(directory="checkpoints"), "directory 'checkpoints', expected 'diffusion_models'"),
    (lambda w: w["nodes"][5]["inputs"][3].update(link=None), "input 3 does not hold link 3"),
    (lambda w: w.update(last_node_id=5), "last_node_id 5 < highest node id 11"),
    (lambda w: w.update(version=1), "expected 0.4"),
])
def test_validator_catches(fault, expected, schemas):
    workflow = small_workflow()
    fault(workflow)
    assert expected in problems_of(workflow, schemas)


def test_pack_model_combo_must_be_a_catalogue_file(schemas):
    pulid = BY_KEY["pulid_flux"]
    workflow = small_workflow()
    loader = {"id": 20, "type": "FaceMigration_PulidModelLoader", "pos": [0, 0], "size": [1, 1], "flags": {},
              "order": 0, "mode": 0, "inputs": [], "properties": {},
              "outputs": [{"name": "pulid_model", "type": "FACE_MIGRATION_PULID_MODEL", "links": []}],
              "widgets_values": ["my_pulid.safetensors"]}
    workflow["nodes"].append(loader)
    workflow["last_node_id"] = 20
    assert "not a file of the model catalogue" in problems_of(workflow, schemas)
    loader["widgets_values"] = [pulid.filename]
    assert "not in the node's properties.models" in problems_of(workflow, schemas)
    entry = {"name": pulid.filename, "url": pulid.url, "directory": "pulid"}
    loader["properties"]["models"] = [entry]
    assert "the workflow's models list lacks the node's entry" in problems_of(workflow, schemas)
    workflow["models"].append(entry)
    assert "not named in any Note" in problems_of(workflow, schemas)
    workflow["nodes"][7]["widgets_values"][0] += f"\n{pulid.filename} goes in models/pulid"
    assert validate(workflow, schemas) == []


def test_api_conversion_follows_reroutes_bypass_and_mute(schemas):
    workflow = small_workflow()
    prompt = to_api(workflow, schemas)
    assert set(prompt) == {"1", "3", "4", "5", "6", "7", "9", "10", "11"}, "Notes and Reroutes are not sent"
    assert prompt["6"] == {"class_type": "KSampler", "_meta": {"title": "KSampler"}, "inputs": {
        "model": ["1", 0], "positive": ["5", 0], "negative": ["5", 0], "latent_image": ["3", 0], "seed": 7,
        "steps": 4, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
    assert prompt["11"]["inputs"] == {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors",
                                      "type": "flux", "device": "default"}
    # Bypassing the zero-out passes FluxGuidance straight through to the sampler.
    workflow["nodes"][4]["mode"] = 4
    prompt = to_api(workflow, schemas)
    assert "5" not in prompt and prompt["6"]["inputs"]["positive"] == ["9", 0]
    # Muting it leaves the sampler without conditioning.
    workflow["nodes"][4]["mode"] = 2
    assert "positive" not in to_api(workflow, schemas)["6"]["inputs"]


def test_api_conversion_takes_primitive_node_values(schemas):
    workflow = small_workflow()
    primitive = {"id": 30, "type": "PrimitiveNode", "pos": [0, 0], "size": [1, 1], "flags": {}, "order": 0,
                 "mode": 0, "inputs": [], "outputs": [{"name": "INT", "type": "INT", "links": [30]}],
                 "properties": {}, "widgets_values": [12, "fixed"]}
    workflow["nodes"].append(primitive)
    workflow["last_node_id"], workflow["last_link_id"] = 30, 30
    workflow["nodes"][5]["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 30})
    workflow["links"].append([30, 30, 0, 6, 4, "INT"])
    assert validate(workflow, schemas) == []
    assert to_api(workflow, schemas)["6"]["inputs"]["steps"] == 12


def test_widget_slots_follow_input_order_and_control_values(schemas):
    slots = widget_slots(schemas["KSampler"])
    assert [(s.spec.name, s.role) for s in slots][:3] == [("seed", "value"), ("seed", "control"), ("steps", "value")]
    load_image = widget_slots(schemas["LoadImage"])
    assert [s.role for s in load_image] == ["value", "upload"]
    assert "randomize" in CONTROL_VALUES
    specs = {s.name: s for s in input_specs(schemas["FaceMigration_ApplyPulid"])}
    assert specs["mask"].required is False and not specs["mask"].is_widget


@pytest.mark.parametrize("version", TESTED_COMFYUI)
def test_pack_snapshot_holds_only_pack_nodes(version):
    snapshot = json.loads(pack_snapshot(version).read_text())
    assert snapshot and all(k.startswith(PACK_PREFIX) for k in snapshot)
    assert all("python_module" not in v for v in snapshot.values())


def test_missing_core_snapshot_fails_loudly():
    with pytest.raises(FileNotFoundError, match="core node schemas of ComfyUI 9.9.9 not found"):
        load_schemas("9.9.9")


# ---------------------------------------------------------------------------------------------------
# What a user sees on opening a workflow: layout, saved view, Notes.

TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar is drawn above a node's pos
GROUP_TITLE_HEIGHT = 34  # a group's title bar (font 24)
GROUPS = ("Models", "Face", "Prompt", "Sampling", "Output")
FAST_ALIGNMENT = "none (fast: SCRFD landmarks)"
# The opening view on a laptop-sized canvas; Notes' Markdown font and the size it must reach on screen.
VIEWPORT, NOTE_FONT_PX, NOTE_MIN_PX = (1600, 900), 10, 12
# The template browser's fit (LGraphCanvas.fitToBounds) and the scale text is drawn from (8 px / 14 px); the
# layouts keep a margin above it, at 0.6.
FIT_ZOOM, FIT_SCREEN, TEXT_MIN_SCALE, FIT_SCALE_AIM = 0.75, (1920, 1080), 8 / 14, 0.6
# Label + value of a combo widget at the frontend's 12 px font, plus arrows and margins (LiteGraph BaseWidget).
CHAR_WIDTH, WIDGET_CHROME = 7.5, 90


def rect(node):
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - TITLE_HEIGHT, x + w, y + h


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(inner, outer) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def group_rects(workflow):
    """title -> (whole rectangle, the part below the title bar where nodes may sit)."""
    result = {}
    for group in workflow["groups"]:
        x, y, w, h = group["bounding"]
        result[group["title"]] = ((x, y, x + w, y + h), (x, y + GROUP_TITLE_HEIGHT, x + w, y + h))
    return result


def is_note(node):
    return node["type"] in ("Note", "MarkdownNote")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_no_node_overlaps_another_or_a_group_title(path):
    workflow = json.loads(path.read_text())
    nodes = workflow["nodes"]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            assert not overlap(rect(a), rect(b)), f"{a.get('title') or a['type']} overlaps " \
                                                  f"{b.get('title') or b['type']}"
    groups = list(group_rects(workflow).items())
    for i, (title, (whole, _)) in enumerate(groups):
        for other, (other_whole, _) in groups[i + 1:]:
            assert not overlap(whole, other_whole), f"groups {title} and {other} overlap"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_node_sits_inside_one_named_group(path):
    """Groups are the stages (Models, Face, Prompt, Sampling, Output); Notes stay outside, beside them."""
    workflow = json.loads(path.read_text())
    groups = group_rects(workflow)
    assert all(title.split(":")[0] in GROUPS for title in groups), list(groups)
    if path.stem != "remote_api_face_migration":
        assert {title.split(":")[0] for title in groups} == set(GROUPS), list(groups)
    for node in workflow["nodes"]:
        holders = [t for t, (_, body) in groups.items() if inside(rect(node), body)]
        touching = [t for t, (whole, _) in groups.items() if overlap(rect(node), whole)]
        name = node.get("title") or node["type"]
        if is_note(node):
            assert not touching, f"Note {name} overlaps group {touching}"
        else:
            assert len(holders) == 1 and touching == holders, f"{name} is not inside exactly one group: {touching}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_saved_view_shows_how_to_use_legibly(path):
    """The Notes' Markdown is 10 px in the tested frontends: the saved zoom draws it at NOTE_MIN_PX; the first
    Note (How to use, or About) opens in sight. The browser test measures both."""
    workflow = json.loads(path.read_text())
    view = workflow["extra"]["ds"]
    scale, (dx, dy) = view["scale"], view["offset"]
    assert scale * NOTE_FONT_PX >= NOTE_MIN_PX
    shown = (-dx, -dy, -dx + VIEWPORT[0] / scale, -dy + VIEWPORT[1] / scale)  # graph area on screen
    notes = [n for n in workflow["nodes"] if is_note(n)]
    first = min(notes, key=lambda n: (n["pos"][0], n["pos"][1]))
    assert first["title"] in ("How to use", "About", "About the comparison"), first["title"]
    x0, y0, x1, _ = rect(first)
    assert inside((x0, y0, x1, y0 + 200), shown), "the first Note is not in the opening view"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_fitted_template_view_draws_text(path):
    """Frontends 1.49 and later open a template fitted to the screen (scale = 0.75 x min(1920 / width,
    1080 / height) of the nodes' bounds); they draw titles and widget text only from 8 / 14 (0.571) up, and
    the layouts aim at 0.6."""
    nodes = json.loads(path.read_text())["nodes"]
    rects = [rect(n) for n in nodes]
    width = max(r[2] for r in rects) - min(r[0] for r in rects)
    height = max(r[3] for r in rects) - min(r[1] for r in rects)
    scale = FIT_ZOOM * min(FIT_SCREEN[0] / width, FIT_SCREEN[1] / height)
    assert scale >= FIT_SCALE_AIM > TEXT_MIN_SCALE, f"fitted at {scale:.3f}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_combo_values_fit_their_nodes(path, schemas):
    """A loader label such as 'eva_file  EVA02_CLIP_L_336_psz14_s6B.pt' is not cut off ('eva_f…')."""
    for node in json.loads(path.read_text())["nodes"]:
        if is_note(node):
            continue
        for name, value in widgets(node, schemas).items():
            if isinstance(value, str) and ":" not in name and len(value) < 80:
                needed = CHAR_WIDTH * (len(name) + len(value)) + WIDGET_CHROME
                assert node["size"][0] >= needed, f"{node['type']}.{name} = {value!r} needs {needed:.0f} px"


# Pack outputs that the node already shows on itself (ui previews): another Preview node would repeat them.
SHOWN_ON_NODE = {("FaceMigration_EncodeFace", "preview"), ("FaceMigration_EncodeFace", "info"),
                 ("FaceMigration_FaceSimilarity", "report")}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_no_output_is_previewed_twice(path):
    workflow = json.loads(path.read_text())
    by_id = {n["id"]: n for n in workflow["nodes"]}
    for _, src, slot, dst, _, _ in workflow["links"]:
        source = by_id[src]
        if by_id[dst]["type"] in ("PreviewImage", "PreviewAny"):
            assert (source["type"], source["outputs"][slot]["name"]) not in SHOWN_ON_NODE, source["type"]


def test_every_loader_file_is_named_for_missing_models():
    """Each file a pack loader's widgets name has a `models` entry on that node (url and folder from the
    catalogue), so both frontends' Missing Models checks list it when absent; antelopev2's .onnx only there
    (ComfyUI's model listing never shows .onnx), every other one in the workflow's list too."""
    for path in WORKFLOWS:
        workflow = json.loads(path.read_text())
        for node in workflow["nodes"]:
            if not node["type"].startswith(PACK_PREFIX):
                continue
            files = [v for v in node["widgets_values"] if isinstance(v, str) and model_by_filename(v)]
            entries = {e["name"]: e for e in node["properties"].get("models", [])}
            assert sorted(entries) == sorted(files), (path.stem, node["type"])
            for name, entry in entries.items():
                assert entry["url"] == model_by_filename(name).url, entry
                assert (entry in workflow["models"]) == (not name.endswith(".onnx")), (path.stem, entry)
        if any(n["type"] == "FaceMigration_FaceAnalysisLoader" for n in workflow["nodes"]):
            assert {"scrfd_10g_bnkps.onnx", "glintr100.onnx"} <= {
                e["name"] for n in workflow["nodes"] for e in n["properties"].get("models", [])}


def test_a_workflow_level_onnx_entry_is_refused(schemas):
    """1.27 would call it missing on every load (ComfyUI's model listing never shows .onnx)."""
    workflow = small_workflow()
    scrfd = BY_KEY["scrfd"]
    workflow["models"].append({"name": scrfd.filename, "url": scrfd.url, "directory": "insightface"})
    assert "model listing never shows such a file" in problems_of(workflow, schemas)


@pytest.mark.parametrize("name", LOCAL)
def test_local_workflows_need_no_optional_file(name, schemas):
    """A user who downloads only the required files can queue: the fast alignment needs no RetinaFace."""
    from face_migration.check_models import workflow_needs
    assert not [m for m in workflow_needs()[name] if m.optional]
    for node in nodes_of(load(name), "FaceMigration_FaceParsingLoader"):
        assert widgets(node, schemas)["landmark_file"] == FAST_ALIGNMENT
    assert "detection_Resnet50_Final.pth" in note_text(load(name)) and "optional" in note_text(load(name))


def test_eva_folder_is_the_same_in_notes_and_readme():
    eva = BY_KEY["eva02_clip_l_336"]
    readme = (REPO / "README.md").read_text()
    assert f"`{eva.display_folder}/`" in readme
    for name in LOCAL:
        workflow = load(name)
        assert f"[{eva.filename}]({eva.url}) → `{eva.display_folder}/`" in note_text(workflow)
        assert {"name": eva.filename, "url": eva.url, "directory": "text_encoders"} in workflow["models"]


@pytest.mark.parametrize("name", ["remote_api_face_migration", "local_vs_remote"])
def test_api_key_note_names_the_key_file(name):
    notes = note_text(load(name))
    assert "ComfyUI/user/moark_api_key.txt" in notes and "named in the README" not in notes


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_notes_name_nodes_by_their_titles(path, schemas):
    """A Note that says **Reference photo** refers to a node with that title (not 'Load Image')."""
    import re
    workflow = json.loads(path.read_text())
    titles = {n.get("title") or schemas[n["type"]]["display_name"] or n["type"] for n in workflow["nodes"]
              if not is_note(n)}
    for text in re.findall(r"\*\*([^*]+)\*\*", note_text(workflow)):
        if text[0].isupper() and text not in NOTE_EMPHASIS:
            assert text in titles, f"a Note names '{text}', which is no node's title in {path.stem}"


# Bold words in the Notes that are not node titles.
NOTE_EMPHASIS = {"FLUX", "PuLID and the face pipeline", "R", "MOARK_API_KEY", "Step 1", "Step 2", "Models"}


def test_two_people_says_to_load_two_photos():
    notes = note_text(load("flux1_dev_pulid_two_people"))
    assert "two photos" in notes and "**Left person**" in notes and "**Right person**" in notes


def test_local_vs_remote_prompt_is_multiline_and_the_note_is_honest(schemas):
    workflow = load("local_vs_remote")
    (shared,) = [n for n in workflow["nodes"] if n.get("title") == "Prompt (shared)"]
    assert schemas[shared["type"]]["input"]["required"]["value"][1].get("multiline")
    about = next(n for n in workflow["nodes"] if n.get("title") == "About the comparison")["widgets_values"][0]
    assert "noise" in about and "not expected to match" in about and "API key" not in about


def test_identity_workflow_round_trip(schemas):
    """Step 1 (as loaded) encodes and saves; step 2 (muted until the file exists) loads and applies, with no
    face model or photo in the part that runs."""
    workflow = load("identity_round_trip")
    prompt = to_api(workflow, schemas)
    kinds = {n["class_type"] for n in prompt.values()}
    assert "FaceMigration_SaveIdentity" in kinds and "FaceMigration_LoadIdentity" not in kinds
    flipped = json.loads(json.dumps(workflow))
    step_one = nodes_in_group(flipped, "Face: encode once and save")
    for node in flipped["nodes"]:
        node["mode"] = 2 if node["id"] in step_one else 0
    assert_valid(flipped, schemas, "identity_round_trip, step 2")
    second = to_api(flipped, schemas)
    used = {n["class_type"] for n in second.values()}
    assert {"FaceMigration_LoadIdentity", "KSampler", "SaveImage"} <= used
    assert not used & {"LoadImage", "FaceMigration_EncodeFace", "FaceMigration_FaceAnalysisLoader",
                       "FaceMigration_EvaClipLoader", "FaceMigration_FaceParsingLoader"}, "a face model in step 2"
    saved = next(n for n in prompt.values() if n["class_type"] == "FaceMigration_SaveIdentity")["inputs"]["name"]
    loaded = next(n for n in second.values() if n["class_type"] == "FaceMigration_LoadIdentity")
    assert loaded["inputs"]["identity_file"] == saved + ".safetensors"
