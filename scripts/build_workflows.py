"""Build the shipped workflows (workflows/*.json, UI format 0.4) and their .jpg thumbnails.

    python scripts/build_workflows.py [--only NAME ...] [--thumbnails-only]

The graphs are written from the node schemas (core snapshot + tests/fixtures/object_info.pack.json), so
widget order, defaults and socket types come from the nodes themselves; tests/test_workflows.py then
validates the files independently. Edit the graph functions below, run this, commit JSON and JPG.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from face_migration.catalog import BY_KEY, model_by_filename  # noqa: E402
from tests.workflow_validation import (assert_valid, input_specs, load_schemas, models_directory,  # noqa: E402
                                 models_entry_name, widget_slots)

OUT = REPO / "workflows"
PACK_ID = "comfyui-face-migration"
CORE_VERSION = "0.3.64"
PACK_VERSION = next(line.split('"')[1] for line in (REPO / "pyproject.toml").read_text().splitlines()
                    if line.startswith("version"))


# Link colours of ComfyUI's default palette, for the thumbnails.
TYPE_COLOURS = {"MODEL": "#B39DDB", "CLIP": "#FFD500", "VAE": "#FF6E6E", "CONDITIONING": "#FFA931",
                "LATENT": "#FF9CF9", "IMAGE": "#64B5F6", "MASK": "#81C784", "PULID_ID": "#4DD0E1",
                "FACE_MIGRATION_PULID_MODEL": "#9575CD", "STRING": "#C5E1A5", "FLOAT": "#AED581"}
GROUP_COLOURS = {"models": "#3f789e", "face": "#a1309b", "prompt": "#b58b2a", "sample": "#88A", "remote": "#8A8",
                 "result": "#444"}


class Node:
    def __init__(self, graph: Graph, node_id: int, kind: str, pos, title=None, widgets=None, size=None):
        self.graph, self.id, self.type, self.pos = graph, node_id, kind, list(pos)
        self.title = title
        if kind in ("Note", "MarkdownNote"):
            self.schema, self.inputs, self.outputs = None, [], []
            self.widgets_values = [widgets["text"]]
            self.size = list(size or (420, 200))
            return
        self.schema = graph.schemas[kind]
        widgets = dict(widgets or {})
        self.inputs = [{"name": s.name, "type": s.type, "link": None} for s in input_specs(self.schema)
                       if not s.is_widget]
        self.outputs = [{"name": name, "type": kind_, "links": []}
                        for name, kind_ in zip(self.schema["output_name"], self.schema["output"])]
        self.widgets_values = []
        for slot in widget_slots(self.schema):
            spec = slot.spec
            if slot.role == "control":
                self.widgets_values.append(widgets.pop(spec.name + ":control", "fixed"))
            elif slot.role == "upload":
                self.widgets_values.append(spec.upload_kind)
            elif spec.name in widgets:
                self.widgets_values.append(widgets.pop(spec.name))
            elif "default" in spec.config:
                self.widgets_values.append(spec.config["default"])
            elif spec.options:  # the frontend's choice for a combo without a default
                self.widgets_values.append(spec.options[0])
            else:
                raise ValueError(f"{kind}.{spec.name} has no default; give it a value")
        if widgets:
            raise ValueError(f"{kind} has no widgets {sorted(widgets)}")
        n_widgets = sum(1 for s in widget_slots(self.schema) if s.role != "upload")
        multiline = sum(1 for s in input_specs(self.schema) if s.is_widget and s.config.get("multiline"))
        rows = max(len(self.inputs), len(self.outputs))
        self.size = list(size or (320, 30 + 22 * rows + 26 * n_widgets + 90 * multiline))

    def out(self, name_or_index) -> tuple[Node, int]:
        if isinstance(name_or_index, int):
            return self, name_or_index
        names = [o["name"] for o in self.outputs]
        return self, names.index(name_or_index)

    def to_json(self, order: int) -> dict:
        data = {"id": self.id, "type": self.type, "pos": self.pos, "size": self.size, "flags": {}, "order": order,
                "mode": 0, "inputs": self.inputs, "outputs": self.outputs}
        if self.title:
            data["title"] = self.title
        if self.schema is None:
            data["properties"] = {}
            data["color"], data["bgcolor"] = "#432", "#653"
        else:
            pack = self.type.startswith("FaceMigration_")
            data["properties"] = {"Node name for S&R": self.type, "cnr_id": PACK_ID if pack else "comfy-core",
                                  "ver": PACK_VERSION if pack else CORE_VERSION}
            models = self.graph.models_of(self)
            if models:
                data["properties"]["models"] = models
        data["widgets_values"] = self.widgets_values
        return data


class Graph:
    def __init__(self, schemas: dict, title: str):
        self.schemas, self.title = schemas, title
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def add(self, kind: str, pos, title=None, size=None, **widgets) -> Node:
        node = Node(self, len(self.nodes) + 1, kind, pos, title, widgets, size)
        self.nodes.append(node)
        return node

    def note(self, text: str, pos, size=(420, 200), title=None) -> Node:
        return self.add("MarkdownNote", pos, title=title, size=size, text=textwrap.dedent(text).strip())

    def link(self, source: tuple[Node, int], target: Node, input_name: str) -> None:
        src, slot = source
        kind = src.outputs[slot]["type"]
        names = [i["name"] for i in target.inputs]
        if input_name not in names:  # a widget turned into a socket
            spec = next(s for s in input_specs(target.schema) if s.name == input_name)
            target.inputs.append({"name": input_name, "type": spec.type, "widget": {"name": input_name},
                                  "link": None})
            names.append(input_name)
        link_id = len(self.links) + 1
        target.inputs[names.index(input_name)]["link"] = link_id
        src.outputs[slot]["links"].append(link_id)
        self.links.append([link_id, src.id, slot, target.id, names.index(input_name), kind])

    def group(self, title: str, members: list[Node], colour: str, pad: int = 30) -> None:
        x0 = min(n.pos[0] for n in members) - pad
        y0 = min(n.pos[1] for n in members) - pad - 40
        x1 = max(n.pos[0] + n.size[0] for n in members) + pad
        y1 = max(n.pos[1] + n.size[1] for n in members) + pad
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": colour, "font_size": 24, "flags": {}})

    def models_of(self, node: Node) -> list[dict]:
        """`models` entries for the files a loader node's widgets name. antelopev2's .onnx files are left to
        the Note: ComfyUI's model listing never shows .onnx, so the frontend would call them missing forever."""
        entries = []
        for slot, value in zip(widget_slots(node.schema), node.widgets_values):
            if slot.role != "value" or not isinstance(value, str):
                continue
            model = model_by_filename(value)
            if model is not None:
                entries.append({"name": models_entry_name(model), "url": model.url,
                                "directory": models_directory(model.folder)})
        return entries

    def _order(self) -> dict[int, int]:
        """Execution order the frontend would store: a topological order of the links."""
        preds = {n.id: set() for n in self.nodes}
        for _, src, _, dst, _, _ in self.links:
            preds[dst].add(src)
        order, done = {}, set()
        while len(done) < len(self.nodes):
            ready = sorted(i for i in preds if i not in done and preds[i] <= done)
            for i in ready:
                order[i] = len(order)
                done.add(i)
        return order

    def to_json(self, extra_models=()) -> dict:
        models, seen = [], set()
        for node in self.nodes:
            for entry in (self.models_of(node) if node.schema else []):
                if entry["name"] not in seen:
                    seen.add(entry["name"])
                    models.append(entry)
        for entry in extra_models:
            if entry["name"] not in seen:
                models.append(entry)
        order = self._order()
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PACK_ID}/{self.title}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": [n.to_json(order[n.id]) for n in self.nodes],
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"title": self.title},  # no saved view: the frontend fits the graph on load
            "models": models,
            "version": 0.4,
        }


# --------------------------------------------------------------------------------------------------
# Shared pieces

def model_note_lines(names: list[str]) -> str:
    """Markdown lines naming each file, its folder, source and licence."""
    lines = []
    for name in names:
        model = BY_KEY.get(name) or model_by_filename(name)
        lines.append(f"- [{model.filename}]({model.url}) → `{model.display_folder}/` ({model.licence})")
    return "\n".join(lines)


def flux_loaders(g: Graph, unet: str, x: int, y: int) -> tuple[Node, Node, Node]:
    model = g.add("UNETLoader", (x, y), unet_name=unet, weight_dtype="default")
    clip = g.add("DualCLIPLoader", (x, y + 130), clip_name1="clip_l.safetensors",
                 clip_name2="t5xxl_fp16.safetensors", type="flux")
    vae = g.add("VAELoader", (x, y + 320), vae_name="ae.safetensors")
    return model, clip, vae


def flux_prompt(g: Graph, clip: Node, text: str, guidance: float, x: int, y: int) -> tuple[Node, Node]:
    """(positive, negative) conditioning: the prompt with FLUX guidance, and a zeroed negative (cfg 1)."""
    encode = g.add("CLIPTextEncode", (x, y), title="Prompt", text=text)
    g.link(clip.out(0), encode, "clip")
    positive = g.add("FluxGuidance", (x, y + 230), guidance=guidance)
    g.link(encode.out(0), positive, "conditioning")
    negative = g.add("ConditioningZeroOut", (x, y + 340), size=(320, 60))
    g.link(encode.out(0), negative, "conditioning")
    return positive, negative


def sample_and_save(g: Graph, model, positive, negative, vae, x, y, width, height, steps, seed, prefix):
    latent = g.add("EmptySD3LatentImage", (x, y), width=width, height=height, batch_size=1)
    sampler = g.add("KSampler", (x, y + 150), seed=seed, steps=steps, cfg=1.0, sampler_name="euler",
                    scheduler="simple", denoise=1.0)
    g.link(model, sampler, "model")
    g.link(positive.out(0), sampler, "positive")
    g.link(negative.out(0), sampler, "negative")
    g.link(latent.out(0), sampler, "latent_image")
    decode = g.add("VAEDecode", (x + 360, y), size=(220, 60))
    g.link(sampler.out(0), decode, "samples")
    g.link(vae.out(0), decode, "vae")
    save = g.add("SaveImage", (x + 360, y + 100), size=(420, 480), filename_prefix=prefix)
    g.link(decode.out(0), save, "images")
    return latent, sampler, decode, save


# --------------------------------------------------------------------------------------------------
# Thumbnails


def _font(size: int):
    from PIL import ImageFont
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def draw_thumbnail(workflow: dict, title: str, subtitle: str, path: Path, width=768, height=512) -> None:
    """A diagram of the graph: each node a box with its title, links coloured by type, the title on top."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "#1e1e1e")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, 78), fill="#2b2b3a")
    draw.text((18, 10), title, fill="#ffffff", font=_font(26))
    draw.text((18, 46), subtitle, fill="#b0b0c0", font=_font(15))
    nodes = {n["id"]: n for n in workflow["nodes"]}
    boxes = [(n["pos"][0], n["pos"][1], n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in nodes.values()]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    margin, top = 16, 92
    scale = min((width - 2 * margin) / (x1 - x0), (height - top - margin) / (y1 - y0))

    def at(x, y):
        return margin + (x - x0) * scale, top + (y - y0) * scale

    for group in workflow.get("groups", []):
        gx, gy, gw, gh = group["bounding"]
        draw.rectangle((*at(gx, gy), *at(gx + gw, gy + gh)), outline=group["color"], width=2)
    for _, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        a, b = nodes[src], nodes[dst]
        start = at(a["pos"][0] + a["size"][0], a["pos"][1] + 30 + 22 * src_slot)
        end = at(b["pos"][0], b["pos"][1] + 30 + 22 * dst_slot)
        mid = (start[0] + end[0]) / 2
        draw.line([start, (mid, start[1]), (mid, end[1]), end], fill=TYPE_COLOURS.get(kind, "#aaaaaa"), width=3)
    font = _font(max(10, min(15, int(14 * scale / 0.45))))
    for node in nodes.values():
        left, upper = at(*node["pos"])
        right, lower = at(node["pos"][0] + node["size"][0], node["pos"][1] + node["size"][1])
        is_note = node["type"] in ("Note", "MarkdownNote")
        ours = node["type"].startswith("FaceMigration_")
        fill = "#4a3b22" if is_note else ("#3b2a55" if ours else "#353535")
        draw.rounded_rectangle((left, upper, right, lower), radius=6, fill=fill,
                               outline="#c9a0ff" if ours else "#777777", width=2 if ours else 1)
        label = node.get("title") or ("Note" if is_note else node["type"].removeprefix("FaceMigration_"))
        while label and draw.textlength(label, font=font) > right - left - 8:
            label = label[:-2] + "…" if len(label) > 2 else ""
        draw.text((left + 5, upper + 4), label, fill="#ffffff", font=font)
    image.save(path, "JPEG", quality=88)


WORKFLOWS = {}  # file name -> (builder, title, subtitle)


def workflow(name: str, title: str, subtitle: str):
    def register(build):
        WORKFLOWS[name] = (build, title, subtitle)
        return build
    return register


# --------------------------------------------------------------------------------------------------
# Face nodes (nodes/face_nodes.py) and the remote node (nodes/remote_nodes.py)

PHOTO = "face_reference.png"
LOCAL_FILES = ["pulid_flux", "scrfd", "glintr100", "eva02_clip_l_336", "bisenet", "retinaface_resnet50"]
REMOTE_SEED = 42
FLUX_FILES = ["clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors"]
PROMPT = ("portrait photo of the person as an astronaut in a white space suit on the moon, earth in the sky, "
          "soft rim light, 85mm lens, highly detailed")


def face_models(g: Graph, x: int, y: int) -> dict:
    """The PuLID model and the face pipeline's loaders, stacked in one column."""
    return {
        "pulid": g.add("FaceMigration_PulidModelLoader", (x, y), pulid_file=BY_KEY["pulid_flux"].filename),
        "analysis": g.add("FaceMigration_FaceAnalysisLoader", (x, y + 110), provider="auto"),
        "eva": g.add("FaceMigration_EvaClipLoader", (x, y + 220), eva_file=BY_KEY["eva02_clip_l_336"].filename),
        "parsing": g.add("FaceMigration_FaceParsingLoader", (x, y + 330), parsing_file=BY_KEY["bisenet"].filename,
                         landmark_file=BY_KEY["retinaface_resnet50"].filename),
    }


def encode_face(g: Graph, models: dict, photo: Node, x: int, y: int, title=None) -> Node:
    """Encode Face with its preview (the aligned crop EVA-CLIP sees) and its info text shown beside it."""
    encode = g.add("FaceMigration_EncodeFace", (x, y), title=title)
    g.link(photo.out(0), encode, "image")
    g.link(models["analysis"].out(0), encode, "face_analysis")
    g.link(models["eva"].out(0), encode, "eva_clip")
    g.link(models["parsing"].out(0), encode, "face_parsing")
    g.link(models["pulid"].out(0), encode, "pulid_model")
    shown = g.add("PreviewImage", (x + 380, y), title="What the encoder saw", size=(300, 300))
    g.link(encode.out("preview"), shown, "images")
    info = g.add("PreviewAny", (x + 380, y + 340), title="Faces found", size=(300, 120))
    g.link(encode.out("info"), info, "source")
    return encode


def face_similarity(g: Graph, models: dict, reference: Node, generated, x: int, y: int, title=None) -> Node:
    score = g.add("FaceMigration_FaceSimilarity", (x, y), title=title)
    g.link(models["analysis"].out(0), score, "face_analysis")
    g.link(reference.out(0), score, "reference")
    g.link(generated, score, "images")
    shown = g.add("PreviewAny", (x, y + 150), title=(title or "Face similarity") + ": report", size=(320, 120))
    g.link(score.out("report"), shown, "source")
    return score


def apply_pulid(g: Graph, model, models: dict, identity: Node, x: int, y: int, mask=None, title=None, **widgets):
    apply = g.add("FaceMigration_ApplyPulid", (x, y), title=title, **widgets)
    g.link(model, apply, "model")
    g.link(models["pulid"].out(0), apply, "pulid_model")
    g.link(identity.out(0), apply, "pulid_id")
    if mask is not None:
        g.link(mask, apply, "mask")
    return apply


def local_models_note(g: Graph, unet: str, pos, extra="") -> Node:
    text = "\n".join([
        "## Model files",
        "Put each file in the folder shown (inside your ComfyUI folder), then press **R** to refresh.",
        "`python -m face_migration check-models` (run in the pack's folder) checks them all.",
        "", "**FLUX**", model_note_lines([unet] + FLUX_FILES),
        "", "**PuLID and the face pipeline**", model_note_lines(LOCAL_FILES),
        "", "antelopev2 (scrfd_10g_bnkps.onnx, glintr100.onnx) is licensed for **non-commercial** research use only.",
        "detection_Resnet50_Final.pth is optional: choose *none (fast: SCRFD landmarks)* in Load Face Parsing "
        "to align from the detector's landmarks instead (faster, slightly different crop).",
        extra])
    return g.note(text, pos, size=(520, 640), title="Model files")


def one_face_graph(g: Graph, unet_file: str, guidance: float, size: tuple[int, int], steps: int, prefix: str,
                   **apply_widgets) -> dict:
    """The one-face graph below the notes: loaders, photo, Encode Face, Apply PuLID, sampling, Face Similarity."""
    unet, clip, vae = flux_loaders(g, unet_file, 580, 0)
    models = face_models(g, 580, 470)
    photo = g.add("LoadImage", (960, 0), title="Reference photo", size=(340, 420), image=PHOTO)
    identity = encode_face(g, models, photo, 960, 470)
    positive, negative = flux_prompt(g, clip, PROMPT, guidance, 1720, 0)
    apply = apply_pulid(g, unet.out(0), models, identity, 1720, 470, **apply_widgets)
    _, _, decode, _ = sample_and_save(g, apply.out(0), positive, negative, vae, 2100, 0, *size, steps, 42, prefix)
    face_similarity(g, models, photo, decode.out(0), 2460, 640)
    return g.to_json()


@workflow("flux1_dev_pulid", "FLUX.1-dev + PuLID: one face",
          "photo → Encode Face → Apply PuLID → KSampler → Save, with Face Similarity")
def build_dev(g: Graph) -> dict:
    local_models_note(g, "flux1-dev.safetensors", (0, 0))
    g.note("""
        ## How to use
        1. Load a clear photo of one face in **Load Image**.
        2. Write the prompt; describe the person's setting, not their face.
        3. Queue. *What the encoder saw* shows the aligned face; *Face similarity* scores the result
           (ArcFace cosine: above ~0.4 is usually the same person).

        **weight** 1 is the official default; raise it (1.2-1.5) for a closer likeness, lower it for more
        prompt freedom. **start_step** 0 gives the highest fidelity; 1-4 leaves the first steps to the
        prompt (more editable; the official advice is 4 for photos).
        FLUX.1-dev: 20 steps, guidance 3.5-4, cfg 1. FLUX.1-dev is under the FLUX.1 [dev] Non-Commercial License.""",
           (0, 680), size=(520, 360), title="How to use")
    return one_face_graph(g, "flux1-dev.safetensors", 3.5, (896, 1152), 20, "face_migration/flux1_dev_pulid",
                          weight=1.0, start_step=0)


@workflow("flux1_schnell_pulid_4steps", "FLUX.1-schnell + PuLID: 4 steps",
          "the hosted API's defaults locally: 4 steps, guidance 4, id_weight 1, start step 0")
def build_schnell(g: Graph) -> dict:
    local_models_note(g, "flux1-schnell.safetensors", (0, 0), extra="\nFLUX.1-schnell is Apache-2.0.")
    g.note("""
        ## Same settings as the hosted API
        This graph mirrors the MoArk / Gitee AI face-migration defaults: FLUX.1-schnell, **4 steps**,
        **guidance 4**, **id_weight 1** (Apply PuLID's weight), **id_timestep_start 0** (Apply PuLID's
        start_step in *steps* timing), 1024×1024. Compare it with the *remote_api_face_migration* workflow.
        Schnell ignores the negative prompt: keep cfg at 1.""", (0, 680), size=(520, 260), title="About")
    return one_face_graph(g, "flux1-schnell.safetensors", 4.0, (1024, 1024), 4,
                          "face_migration/flux1_schnell_pulid", weight=1.0, timing="steps", start_step=0)


@workflow("flux1_dev_pulid_two_people", "Two people, two faces",
          "two identities, each limited by a mask to its half of one FLUX.1-dev image")
def build_two_people(g: Graph) -> dict:
    local_models_note(g, "flux1-dev.safetensors", (0, 0))
    g.note("""
        ## Two identities in one image
        Each **Apply PuLID** gets its own face and a **mask** (white = where that face may appear). The
        masks here split the 1024×768 image into a left and a right half; the prompt asks for two people
        side by side. Chain the Apply nodes: the second takes the first one's MODEL.
        For other layouts, change the MaskComposite x/y or draw masks with Load Image (as Mask).
        Keep the masks the size of the image (EmptySD3LatentImage); they are resized to the token grid.""",
           (0, 680), size=(520, 300), title="How it works")
    unet, clip, vae = flux_loaders(g, "flux1-dev.safetensors", 580, 0)
    models = face_models(g, 580, 470)
    width, height = 1024, 768
    left_photo = g.add("LoadImage", (960, 0), title="Left person", size=(320, 380), image="person_left.png")
    right_photo = g.add("LoadImage", (960, 860), title="Right person", size=(320, 380), image="person_right.png")
    left_id = encode_face(g, models, left_photo, 960, 420, title="Encode left face")
    right_id = encode_face(g, models, right_photo, 960, 1280, title="Encode right face")
    masks = []
    for i, (side, x_offset) in enumerate((("left", 0), ("right", width // 2))):
        canvas = g.add("SolidMask", (1720, 880 + 330 * i), title=f"{side}: empty canvas", value=0.0,
                       width=width, height=height)
        half = g.add("SolidMask", (1720, 1010 + 330 * i), title=f"{side}: half", value=1.0,
                     width=width // 2, height=height)
        mask = g.add("MaskComposite", (2060, 880 + 330 * i), title=f"{side} half mask", x=x_offset, y=0,
                     operation="add")
        g.link(canvas.out(0), mask, "destination")
        g.link(half.out(0), mask, "source")
        masks.append(mask)
    text = ("two friends standing side by side in a sunny park, a woman on the left and a man on the right, "
            "both smiling at the camera, candid photo, natural light")
    positive, negative = flux_prompt(g, clip, text, 3.5, 1720, 0)
    first = apply_pulid(g, unet.out(0), models, left_id, 1720, 470, mask=masks[0].out(0), title="Apply left face")
    second = apply_pulid(g, first.out(0), models, right_id, 2060, 470, mask=masks[1].out(0),
                         title="Apply right face")
    _, _, decode, _ = sample_and_save(g, second.out(0), positive, negative, vae, 2440, 0, width, height, 20, 7,
                                      "face_migration/two_people")
    face_similarity(g, models, left_photo, decode.out(0), 2800, 640, title="Left face similarity")
    face_similarity(g, models, right_photo, decode.out(0), 2800, 940, title="Right face similarity")
    return g.to_json()


REMOTE_NOTE = """
    ## API key
    This node calls the hosted MoArk / Gitee AI face-migration API (FLUX.1-schnell + PuLID on their
    servers): no local model files are needed. Create a key at moark.ai (or ai.gitee.com) and set the
    environment variable **MOARK_API_KEY** (or GITEE_AI_API_KEY) before starting ComfyUI, or save the key
    in the key file named in the README. The key is never a widget, so it never ends up in a workflow
    or in an image's metadata. Each run is a paid request; a new seed makes a new one."""


def remote_node(g: Graph, photo: Node, x: int, y: int, prompt_from=None) -> Node:
    """The API node with the hosted API's defaults, a fixed seed and the shared prompt (typed or linked)."""
    node = g.add("FaceMigration_MoArkFaceMigration", (x, y), size=(360, 520), prompt=PROMPT, seed=REMOTE_SEED)
    g.link(photo.out(0), node, "image")
    if prompt_from is not None:
        g.link(prompt_from, node, "prompt")
    return node


@workflow("remote_api_face_migration", "Face migration through the hosted API",
          "MoArk / Gitee AI: photo + prompt → image, no local models")
def build_remote(g: Graph) -> dict:
    g.note(REMOTE_NOTE, (0, 0), size=(460, 330), title="Set up the API key")
    photo = g.add("LoadImage", (520, 0), title="Reference photo", size=(340, 420), image=PHOTO)
    remote = remote_node(g, photo, 900, 0)
    save = g.add("SaveImage", (1320, 0), size=(420, 480), filename_prefix="face_migration/remote")
    g.link(remote.out(0), save, "images")
    return g.to_json()


@workflow("local_vs_remote", "Local PuLID vs the hosted API",
          "same photo, same prompt: FLUX.1-schnell locally and remotely, side by side with similarity scores")
def build_side_by_side(g: Graph) -> dict:
    local_models_note(g, "flux1-schnell.safetensors", (0, 0))
    g.note(textwrap.dedent(REMOTE_NOTE) + "\n\nBoth sides use the API's defaults (4 steps, guidance 4, id_weight 1, start step 0) "
           "and the same seed, so differences come from the two implementations.", (0, 680), size=(520, 380),
           title="About the comparison")
    unet, clip, vae = flux_loaders(g, "flux1-schnell.safetensors", 580, 0)
    models = face_models(g, 580, 470)
    photo = g.add("LoadImage", (960, 0), title="Reference photo", size=(340, 420), image=PHOTO)
    identity = encode_face(g, models, photo, 960, 470)
    text = g.add("PrimitiveString", (1340, -200), title="Prompt (shared)", size=(360, 100), value=PROMPT)
    encode = g.add("CLIPTextEncode", (1720, 0), title="Prompt", text=PROMPT)  # the text comes from the link
    g.link(clip.out(0), encode, "clip")
    g.link(text.out(0), encode, "text")
    positive = g.add("FluxGuidance", (1720, 230), guidance=4.0)
    g.link(encode.out(0), positive, "conditioning")
    negative = g.add("ConditioningZeroOut", (1720, 340), size=(320, 60))
    g.link(encode.out(0), negative, "conditioning")
    apply = apply_pulid(g, unet.out(0), models, identity, 1720, 470, weight=1.0, timing="steps", start_step=0)
    _, _, decode, _ = sample_and_save(g, apply.out(0), positive, negative, vae, 2100, 0, 1024, 1024, 4, REMOTE_SEED,
                                      "face_migration/local")
    remote = remote_node(g, photo, 2100, 700, prompt_from=text.out(0))
    side_by_side = g.add("ImageStitch", (2880, 0), title="Local | Remote", direction="right",
                         match_image_size=True, spacing_width=16, spacing_color="white")
    g.link(decode.out(0), side_by_side, "image1")
    g.link(remote.out(0), side_by_side, "image2")
    save = g.add("SaveImage", (2880, 260), size=(520, 360), filename_prefix="face_migration/local_vs_remote")
    g.link(side_by_side.out(0), save, "images")
    face_similarity(g, models, photo, decode.out(0), 3460, 0, title="Local similarity")
    face_similarity(g, models, photo, remote.out(0), 3460, 320, title="Remote similarity")
    return g.to_json()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="workflow names to build (default: all)")
    args = parser.parse_args()
    schemas = load_schemas()
    OUT.mkdir(exist_ok=True)
    for name, (build, title, subtitle) in WORKFLOWS.items():
        if args.only and name not in args.only:
            continue
        graph = Graph(schemas, title)
        data = build(graph)
        assert_valid(data, schemas, name)
        (OUT / f"{name}.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        draw_thumbnail(data, title, subtitle, OUT / f"{name}.jpg")
        print(f"wrote workflows/{name}.json and .jpg ({len(data['nodes'])} nodes, {len(data['links'])} links)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
