"""Build the shipped workflows (workflows/*.json, UI format 0.4) and their .jpg thumbnails.

    python scripts/build_workflows.py [--only NAME ...] [--thumbnails-only]

The graphs are written from the node schemas (tests/fixtures/object_info/, the oldest tested ComfyUI), so
widget order, defaults and socket types come from the nodes themselves; tests/test_workflows.py then
validates the files independently. Edit the graph functions below, run this, commit JSON and JPG.
"""
from __future__ import annotations

import argparse
import json
import sys
import re
import textwrap
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from face_migration.catalog import BY_KEY, model_by_filename  # noqa: E402
from face_migration.support import TESTED_COMFYUI  # noqa: E402
from devkit.workflow_validation import (assert_valid, input_specs, listed_by_model_folders, load_schemas,  # noqa: E402
                                       models_entry, widget_slots)
from workflow_text_zh import template_locales, wide_chars, with_chinese_note  # noqa: E402  (this folder)

OUT = REPO / "workflows"
TEMPLATE_INDEX = REPO / "web" / "workflow_templates.json"  # read by web/workflow_templates.js
TEMPLATE_CATEGORY = "Face Migration (PuLID-FLUX)"
# The template browser's order: the first image first, then the variations, then the hosted API.
TEMPLATE_ORDER = ["flux1_dev_pulid", "flux1_schnell_pulid_4steps", "flux1_dev_pulid_two_people",
                  "chroma_pulid", "identity_round_trip", "remote_api_face_migration", "local_vs_remote"]
PACK_ID = "comfyui-face-migration"
CORE_VERSION = "0.3.64"
PACK_VERSION = next(line.split('"')[1] for line in (REPO / "pyproject.toml").read_text().splitlines()
                    if line.startswith("version"))


# Link colours of ComfyUI's default palette, for the thumbnails.
TYPE_COLOURS = {"MODEL": "#B39DDB", "CLIP": "#FFD500", "VAE": "#FF6E6E", "CONDITIONING": "#FFA931",
                "LATENT": "#FF9CF9", "IMAGE": "#64B5F6", "MASK": "#81C784", "PULID_ID": "#4DD0E1",
                "FACE_MIGRATION_PULID_MODEL": "#9575CD", "STRING": "#C5E1A5", "FLOAT": "#AED581"}
GROUP_COLOURS = {"Models": "#3f789e", "Face": "#a1309b", "Prompt": "#b58b2a", "Sampling": "#88A", "Output": "#444"}

# Geometry of ComfyUI's frontend (LiteGraph): a node's title bar is drawn ABOVE its pos; a group's title
# bar takes the top of its bounding box. The layout keeps every title bar clear of its neighbours.
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT
GROUP_HEADER = 50  # group title (font 24) plus a margin above the first node's title bar
GROUP_PAD = 20
GAP = 30  # between a node and the next title bar: room for the frontend's source badge below a node
GROUP_GAP = 30  # between two groups
# Saved zoom: the Notes' Markdown is 10 px in every tested frontend (1.27.10, 1.49.6, 1.58.1), 12 px on screen here.
VIEW_SCALE = 1.2
VIEW_MARGIN = 80  # newer frontends draw the canvas under their side and top bars: keep the Notes clear of them
# Frontends 1.49 and later open a template fitted: scale = FIT_ZOOM * min(1920 / width, 1080 / height) of the
# nodes' bounds on a 1920x1080 screen (LGraphCanvas fitToBounds). They draw text from a scale of 8 / 14 (their
# 8 px minimum font over the 14 px node font): the layout aims above that (tests/test_workflows.py).
FIT_ZOOM, FIT_SCREEN = 0.75, (1920, 1080)
# Note text: the frontends' Markdown default, and the first Note's (How to use), which web/note_text.js sets from the
# node's TEXT_PX_PROPERTY so that it reads at 9 px or more in that fitted view (about 0.6) as well.
NOTE_PX, FIRST_NOTE_PX, FITTED_NOTE_MIN_PX = 10, 16, 9
TEXT_PX_PROPERTY = "face_migration_text_px"
MUTED = 2  # LiteGraph mode "never": the node is not sent with the prompt


class Node:
    def __init__(self, graph: Graph, node_id: int, kind: str, pos, title=None, widgets=None, size=None, linked=()):
        self.graph, self.id, self.type, self.pos = graph, node_id, kind, list(pos)
        self.title, self.mode = title, 0
        if kind in ("Note", "MarkdownNote"):
            self.schema, self.inputs, self.outputs = None, [], []
            self.text_px = NOTE_PX
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
        # The frontend's minimum height (LGraphNode.computeSize): 20 px per socket row, 24 per widget (a
        # control_after_generate included), a multiline text box of about 100; a smaller saved size is grown
        # on load, over the node below. The browser test checks the saved size is at least that.
        n_widgets = sum(1 for s in widget_slots(self.schema) if s.role != "upload")
        # A multiline widget fed by a link (`linked`) is a socket row, its text box gone; frontend 1.27 still
        # counts about 20 px more for it (measured: CLIPTextEncode 88, Face Migration (MoArk API) 396).
        multiline = sum(1 for s in input_specs(self.schema)
                        if s.is_widget and s.config.get("multiline") and s.name not in linked)
        rows = max(len(self.inputs) + len(linked), len(self.outputs), 1)
        self.size = list(size or (360, 14 + 20 * rows + 24 * n_widgets + 100 * multiline + 20 * len(linked)))

    def out(self, name_or_index) -> tuple[Node, int]:
        if isinstance(name_or_index, int):
            return self, name_or_index
        names = [o["name"] for o in self.outputs]
        return self, names.index(name_or_index)

    def to_json(self, order: int) -> dict:
        data = {"id": self.id, "type": self.type, "pos": self.pos, "size": self.size, "flags": {}, "order": order,
                "mode": self.mode, "inputs": self.inputs, "outputs": self.outputs}
        if self.title:
            data["title"] = self.title
        if self.schema is None:
            data["properties"] = {TEXT_PX_PROPERTY: self.text_px} if self.text_px != NOTE_PX else {}
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
    def __init__(self, schemas: dict, title: str, name: str):
        self.schemas, self.title, self.name = schemas, title, name
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def add(self, kind: str, pos, title=None, size=None, linked=(), **widgets) -> Node:
        node = Node(self, len(self.nodes) + 1, kind, pos, title, widgets, size, linked)
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

    def group(self, title: str, members: list[Node]) -> int:
        """A group around its members' full rectangles (title bars included); returns the x where the next
        group may start."""
        x0 = min(n.pos[0] for n in members) - GROUP_PAD
        y0 = min(n.pos[1] - TITLE_HEIGHT for n in members) - GROUP_HEADER
        x1 = max(n.pos[0] + n.size[0] for n in members) + GROUP_PAD
        y1 = max(n.pos[1] + n.size[1] for n in members) + GROUP_PAD
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": GROUP_COLOURS[title.split(":")[0]], "font_size": 24, "flags": {}})
        return x1 + GROUP_GAP + GROUP_PAD

    def view(self) -> dict:
        """The saved view (extra.ds): Notes legible, the graph's top-left corner (How to use) in sight."""
        left = min([n.pos[0] for n in self.nodes] + [g["bounding"][0] for g in self.groups])
        top = min([n.pos[1] - TITLE_HEIGHT for n in self.nodes] + [g["bounding"][1] for g in self.groups])
        return {"scale": VIEW_SCALE, "offset": [VIEW_MARGIN - left, VIEW_MARGIN - top]}

    def models_of(self, node: Node) -> list[dict]:
        """`models` entries for the catalogue files a loader node's widgets name: the frontends flag an absent
        one in Missing Models, with a download button where they allow it (.safetensors from Hugging Face)."""
        entries = []
        for slot, value in zip(widget_slots(node.schema), node.widgets_values):
            model = model_by_filename(value) if slot.role == "value" and isinstance(value, str) else None
            if model is not None and value == model.filename:
                entries.append(models_entry(model))
        return entries

    def fitted_scale(self) -> float:
        """The scale frontends 1.49+ open this graph at from their template browser (see FIT_ZOOM)."""
        width = max(n.pos[0] + n.size[0] for n in self.nodes) - min(n.pos[0] for n in self.nodes)
        height = max(n.pos[1] + n.size[1] for n in self.nodes) - min(n.pos[1] - TITLE_HEIGHT for n in self.nodes)
        return FIT_ZOOM * min(FIT_SCREEN[0] / width, FIT_SCREEN[1] / height)

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

    def to_json(self) -> dict:
        models, seen = [], set()
        for node in self.nodes:
            for entry in (self.models_of(node) if node.schema else []):
                if entry["name"] not in seen and listed_by_model_folders(entry["name"]):
                    seen.add(entry["name"])
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
            "extra": {"title": self.title, "ds": self.view()},
            "models": models,
            "version": 0.4,
        }


# --------------------------------------------------------------------------------------------------
# Layout and shared pieces


class Column:
    """Stacks nodes top to bottom at one x, each below the previous one's bottom plus the next title bar."""

    def __init__(self, g: Graph, x: int, width: int, y: int = 0):
        self.g, self.x, self.width, self.y = g, x, width, y
        self.nodes: list[Node] = []

    def _stack(self, node: Node) -> Node:
        self.y = node.pos[1] + node.size[1] + GAP
        self.nodes.append(node)
        return node

    def add(self, kind: str, title=None, min_height=None, linked=(), **widgets) -> Node:
        node = self.g.add(kind, (self.x, self.y + TITLE_HEIGHT), title, linked=linked, **widgets)
        node.size = [self.width, max(min_height or 0, node.size[1])]
        return self._stack(node)

    def below(self) -> Column:
        """A new column at the same x for a group below this one's nodes (room for its title bar)."""
        return Column(self.g, self.x, self.width, self.y - GAP + GROUP_PAD + GROUP_GAP + GROUP_HEADER)

    def under_group(self) -> Column:
        """A new column at the same x for nodes right under the group around this one's nodes."""
        return Column(self.g, self.x, self.width, self.y + GROUP_PAD)

    def note(self, text: str, title: str, px: int = NOTE_PX) -> Node:
        """A Markdown Note as high as its text needs at `px` (see note_height)."""
        size = (self.width, note_height(text, self.width, px))
        node = self.g.note(text, (self.x, self.y + TITLE_HEIGHT), size=size, title=title)
        node.text_px = px
        return self._stack(node)


def columns(g: Graph, x: int, *widths: int) -> list[Column]:
    """Side-by-side columns starting at x, GAP apart."""
    result = []
    for width in widths:
        result.append(Column(g, x, width))
        x += width + GAP
    return result


def model_note_lines(names: list[str]) -> str:
    """Markdown lines naming each file (linked to its download) under its folder, in the order given."""
    folders: dict[str, list[str]] = {}
    for name in names:
        model = BY_KEY.get(name) or model_by_filename(name)
        folders.setdefault(model.display_folder, []).append(f"[{model.filename}]({model.url}) → "
                                                            f"`{model.display_folder}/`")
    return "\n".join(f"- {', '.join(files)}" for files in folders.values())


def note_height(text: str, width: int, px: int = NOTE_PX) -> int:
    """The height a MarkdownNote needs for `text` at `width` with `px` text (10 px text: about 4.6 px a character,
    15.5 px lines, larger headings; measured in frontends 1.27.10 and 1.49.6, whose text is the taller), as the
    frontends render it: link targets and markup are not shown. The browser test checks nothing is cut off."""
    shown = re.sub(r"\]\([^)]*\)", "", text).replace("**", "").replace("`", "").replace("[", "")
    zoom = px / NOTE_PX
    per_line = (width - 30) / (4.6 * zoom)
    lines = 0.0
    for line in shown.splitlines():
        if line.startswith("## "):
            lines += 2.2
        elif line.strip():
            lines += max(1, -(-(len(line) + wide_chars(line)) // per_line))
        else:
            lines += 0.6  # paragraph spacing
    return int(50 + 15.5 * zoom * lines)


PHOTO = "face_reference.png"
FACE_FILES = ["pulid_flux", "scrfd", "glintr100", "eva02_clip_l_336", "bisenet"]
FLUX_FILES = ["clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors"]
FAST_ALIGNMENT = "none (fast: SCRFD landmarks)"
REMOTE_SEED = 42
KEY_FILE = "ComfyUI/user/moark_api_key.txt"
PROMPT = ("portrait photo of the person as an astronaut in a white space suit on the moon, earth in the sky, "
          "soft rim light, 85mm lens, highly detailed")
LOADER_WIDTH = 400  # "landmark_file  none (fast: SCRFD landmarks)" without truncation
NOTE_WIDTH = 400
FACE_WIDTH = 320
PROMPT_WIDTH = 360
SAMPLING_WIDTH = 320
OUTPUT_WIDTH = 460  # "filename_prefix  face_migration/flux1_schnell_pulid"
PHOTO_HEIGHT = 340  # frontend 1.27 needs 326 for Load Image once the photo is there (its preview)
APPLY_NODE = "FaceMigration_ApplyPulidSimple"  # weight and start_step: the hosted API's two identity settings
ADVANCED_APPLY_NODE = "FaceMigration_ApplyPulid"  # timing, end, uncond ID as well


def models_note(g: Graph, column: Column, unet: str | None, face_files=FACE_FILES, extra="") -> Node:
    """Every file the workflow loads, its folder and source, the licences to know; the command that fetches them."""
    parts = ["## Model files",
             (f"`python -m face_migration download {g.name}` (in the pack's folder) fetches them into these folders "
              "and checks each; `check-models` says which are missing. Then press **R** in the browser.")]
    names = ([unet] + FLUX_FILES if unet else []) + list(face_files)
    parts += ["", model_note_lines(names)]
    licences = []
    if unet == "flux1-dev.safetensors":
        licences.append("FLUX.1-dev: FLUX.1 [dev] Non-Commercial License; gated: accept it on Hugging Face and set "
                        "HF_TOKEN before `download`.")
    if "scrfd" in face_files:
        licences.append("antelopev2 (scrfd, glintr100): **non-commercial** research use only.")
    if licences:
        parts += [""] + licences
    if "scrfd" in face_files:
        parts += ["", (f"The optional detection_Resnet50_Final.pth ([facexlib]({BY_KEY['retinaface_resnet50'].url}), "
                       f"`models/facexlib/`) gives the official alignment; here **Load Face Parsing (facexlib)** "
                       f"uses *{FAST_ALIGNMENT}*.")]
    if extra:
        parts += ["", extra]
    text = "\n".join(parts)
    return column.note(text, "Model files")


def flux_loaders(column: Column, unet: str) -> tuple[Node, Node, Node]:
    model = column.add("UNETLoader", unet_name=unet, weight_dtype="default")
    clip = column.add("DualCLIPLoader", clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors",
                      type="flux")
    vae = column.add("VAELoader", vae_name="ae.safetensors")
    return model, clip, vae


def face_pipeline_loaders(column: Column) -> dict:
    """The face pipeline's loaders (fast alignment: no optional file)."""
    return {
        "analysis": column.add("FaceMigration_FaceAnalysisLoader", provider="auto"),
        "eva": column.add("FaceMigration_EvaClipLoader", eva_file=BY_KEY["eva02_clip_l_336"].filename),
        "parsing": column.add("FaceMigration_FaceParsingLoader", parsing_file=BY_KEY["bisenet"].filename,
                              landmark_file=FAST_ALIGNMENT),
    }


def face_loaders(column: Column) -> dict:
    """The PuLID model and the face pipeline's loaders."""
    pulid = column.add("FaceMigration_PulidModelLoader", pulid_file=BY_KEY["pulid_flux"].filename)
    return {"pulid": pulid, **face_pipeline_loaders(column)}


def encode_face(g: Graph, column: Column, models: dict, photo: Node, title=None, min_height=460) -> Node:
    """Encode Face: its preview of the aligned crop and its info text show on the node (web/node_results.js)."""
    encode = column.add("FaceMigration_EncodeFace", title=title, min_height=min_height)
    g.link(photo.out(0), encode, "image")
    g.link(models["analysis"].out(0), encode, "face_analysis")
    g.link(models["eva"].out(0), encode, "eva_clip")
    g.link(models["parsing"].out(0), encode, "face_parsing")
    g.link(models["pulid"].out(0), encode, "pulid_model")
    return encode


def face_similarity(g: Graph, column: Column, models: dict, reference: Node, generated, title=None) -> Node:
    """Face Similarity; its report shows on the node itself (web/node_results.js)."""
    score = column.add("FaceMigration_FaceSimilarity", title=title, min_height=170)
    g.link(models["analysis"].out(0), score, "face_analysis")
    g.link(reference.out(0), score, "reference")
    g.link(generated, score, "images")
    return score


def apply_pulid(g: Graph, column: Column, model, pulid: Node, identity: Node, mask=None, title=None,
                kind=APPLY_NODE, **widgets):
    apply = column.add(kind, title=title, **widgets)
    g.link(model, apply, "model")
    g.link(pulid.out(0), apply, "pulid_model")
    g.link(identity.out(0), apply, "pulid_id")
    if mask is not None:
        g.link(mask, apply, "mask")
    return apply


def prompt_nodes(g: Graph, column: Column, clip: Node, text: str, guidance: float | None, linked_text=None):
    """(positive, negative): the prompt (with FluxGuidance unless None: schnell has no guidance input) and
    a zeroed negative (cfg 1)."""
    encode = column.add("CLIPTextEncode", title="Prompt", min_height=None if linked_text else 150, text=text,
                        linked=("text",) if linked_text else ())
    g.link(clip.out(0), encode, "clip")
    if linked_text is not None:
        g.link(linked_text, encode, "text")
    positive = encode
    if guidance is not None:
        positive = column.add("FluxGuidance", guidance=guidance)
        g.link(encode.out(0), positive, "conditioning")
    negative = column.add("ConditioningZeroOut")
    g.link(encode.out(0), negative, "conditioning")
    return positive, negative


def sampler_nodes(g: Graph, column: Column, model, positive, negative, vae, width, height, steps, seed, cfg=1.0,
                  scheduler="simple") -> Node:
    """Empty latent -> KSampler (cfg 1 unless given, euler) -> VAE Decode; returns the decode node."""
    latent = column.add("EmptySD3LatentImage", width=width, height=height, batch_size=1)
    sampler = column.add("KSampler", seed=seed, steps=steps, cfg=cfg, sampler_name="euler", scheduler=scheduler,
                         denoise=1.0)
    g.link(model, sampler, "model")
    g.link(positive.out(0), sampler, "positive")
    g.link(negative.out(0), sampler, "negative")
    g.link(latent.out(0), sampler, "latent_image")
    decode = column.add("VAEDecode")
    g.link(sampler.out(0), decode, "samples")
    g.link(vae.out(0), decode, "vae")
    return decode


def save_image(g: Graph, column: Column, image, prefix: str, title=None, min_height=380) -> Node:
    save = column.add("SaveImage", title=title, min_height=min_height, filename_prefix=prefix)
    g.link(image, save, "images")
    return save


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
        if node["mode"] == MUTED:
            fill = "#262626"
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


def nodes_of(*cols: Column) -> list[Node]:
    return [node for column in cols for node in column.nodes]


def notes_column(g: Graph, unet: str | None, notes: list[tuple[str, str]], face_files=FACE_FILES,
                 extra="") -> Column:
    """The Notes, left of every group: `notes` as (title, markdown), the first (How to use) at the top of the
    opening view, then the model files when the graph loads any. Returns the column, for a group below them."""
    column = Column(g, 0, NOTE_WIDTH)
    for i, (title, text) in enumerate(with_chinese_note(g.name, notes)):
        text = textwrap.dedent(text).strip()
        column.note(text, title, FIRST_NOTE_PX if i == 0 else NOTE_PX)
    if unet or face_files:
        models_note(g, column, unet, face_files, extra)
    return column


FIRST_GROUP_X = NOTE_WIDTH + GROUP_GAP + 2 * GROUP_PAD


def model_group(g: Graph, x: int, unet: str) -> tuple[int, tuple[Node, Node, Node], dict]:
    loaders = Column(g, x, LOADER_WIDTH)
    flux = flux_loaders(loaders, unet)
    models = face_loaders(loaders)
    return g.group("Models", loaders.nodes), flux, models


def one_face_graph(g: Graph, unet_file: str, guidance: float | None, size: tuple[int, int], steps: int,
                   prefix: str, notes: list, **apply_widgets) -> dict:
    """Photo -> Encode Face -> Apply -> KSampler -> Save, with Face Similarity; one group per stage, Sampling
    below Prompt."""
    notes_column(g, unet_file, notes)
    x, (unet, clip, vae), models = model_group(g, FIRST_GROUP_X, unet_file)
    face = Column(g, x, FACE_WIDTH)
    photo = face.add("LoadImage", title="Reference photo", min_height=PHOTO_HEIGHT, image=PHOTO)
    identity = encode_face(g, face, models, photo)
    x = g.group("Face", face.nodes)
    prompt = Column(g, x, PROMPT_WIDTH)
    positive, negative = prompt_nodes(g, prompt, clip, PROMPT, guidance)
    g.group("Prompt", prompt.nodes)
    sampling = prompt.below()
    apply = apply_pulid(g, sampling, unet.out(0), models["pulid"], identity, **apply_widgets)
    decode = sampler_nodes(g, sampling, apply.out(0), positive, negative, vae, *size, steps, 42)
    x = g.group("Sampling", sampling.nodes)
    output = Column(g, x, OUTPUT_WIDTH)
    save_image(g, output, decode.out(0), prefix)
    face_similarity(g, output, models, photo, decode.out(0))
    g.group("Output", output.nodes)
    return g.to_json()


# One line each: they are put into indented Notes, which are dedented afterwards.
APPLY_HELP = ("**Apply PuLID-FLUX**: weight 1 is the official default; raise it (1.2-1.5) for a closer likeness, "
              "lower it for more prompt freedom. start_step 0 gives the highest fidelity; 1-4 leaves the first "
              "steps to the prompt (more editable; the official advice is 4 for photos).")


@workflow("flux1_dev_pulid", "FLUX.1-dev + PuLID: one face",
          "photo → Encode Face → Apply PuLID → KSampler → Save, with Face Similarity")
def build_dev(g: Graph) -> dict:
    how = f"""
        ## How to use
        1. Load a clear photo of one face in **Reference photo**.
        2. Write the prompt in **Prompt**; describe the setting, not the face.
        3. Queue. **Encode Face (PuLID)** shows the aligned face it used; **Face Similarity (ArcFace)** scores
           the result (ArcFace cosine: above ~0.4 is usually the same person).

        {APPLY_HELP}

        FLUX.1-dev: 20 steps, guidance 3.5 (**FluxGuidance**), cfg 1. FLUX.1-dev is under the
        FLUX.1 [dev] Non-Commercial License."""
    return one_face_graph(g, "flux1-dev.safetensors", 3.5, (896, 1152), 20, "face_migration/flux1_dev_pulid",
                          [("How to use", how)], weight=1.0, start_step=0)


SCHNELL_GUIDANCE = ("FLUX.1-schnell has no guidance input: the hosted API's guidance_scale (4) has no effect on "
                    "schnell, and ComfyUI would ignore a FluxGuidance node, so this graph has none.")


@workflow("flux1_schnell_pulid_4steps", "FLUX.1-schnell + PuLID: 4 steps",
          "the hosted API's defaults locally: 4 steps, identity weight 1, start step 0")
def build_schnell(g: Graph) -> dict:
    about = f"""
        ## Same settings as the hosted API
        1. Load a clear photo of one face in **Reference photo**, write the **Prompt**, queue.
        2. This graph mirrors the MoArk / Gitee AI face-migration defaults: FLUX.1-schnell, **4 steps**,
           **id_weight 1** (the weight of **Apply PuLID-FLUX**), **id_timestep_start 0** (its start_step),
           1024×1024, cfg 1. Compare it with the *remote_api_face_migration* workflow.

        {SCHNELL_GUIDANCE}

        FLUX.1-schnell is Apache-2.0."""
    return one_face_graph(g, "flux1-schnell.safetensors", None, (1024, 1024), 4,
                          "face_migration/flux1_schnell_pulid", [("About", about)], weight=1.0, start_step=0)


@workflow("flux1_dev_pulid_two_people", "Two people, two faces",
          "two identities, each limited by a mask to its half of one FLUX.1-dev image")
def build_two_people(g: Graph) -> dict:
    how = """
        ## Two identities in one image
        1. Load **two photos**, one face each: the person for the left of the image in **Left person**, the
           one for the right in **Right person**.
        2. Queue. **Apply left face** and **Apply right face** each get one face and a mask (white = where
           that face may appear): the masks split the 1024×768 image into a left and a right half, and the
           prompt asks for two people side by side. The second Apply takes the first one's MODEL.

        For other layouts change x/y in **left half mask** and **right half mask**, or draw masks with Load
        Image (as Mask); keep them the size of the image (**EmptySD3LatentImage**). FLUX.1-dev is under the FLUX.1 [dev]
        Non-Commercial License."""
    notes = notes_column(g, None, [("How to use", how)], face_files=[])  # Model files: right of Output
    face_models = notes.below()  # the Notes column has room below; the graph is too wide for a Models column
    models = face_pipeline_loaders(face_models)
    g.group("Models: face", face_models.nodes)
    flux = Column(g, FIRST_GROUP_X, LOADER_WIDTH)
    unet, clip, vae = flux_loaders(flux, "flux1-dev.safetensors")
    models["pulid"] = flux.add("FaceMigration_PulidModelLoader", pulid_file=BY_KEY["pulid_flux"].filename)
    x = g.group("Models: FLUX and PuLID", flux.nodes)
    prompt = flux.below()
    text = ("two friends standing side by side in a sunny park, a woman on the left and a man on the right, "
            "both smiling at the camera, candid photo, natural light")
    positive, negative = prompt_nodes(g, prompt, clip, text, 3.5)
    g.group("Prompt", prompt.nodes)
    width, height = 1024, 768
    left, right = columns(g, x, FACE_WIDTH - 30, FACE_WIDTH - 30)  # narrow enough to fit the graph at >= 0.6
    ids, photos = [], []
    for column, side in ((left, "Left"), (right, "Right")):
        photo = column.add("LoadImage", title=f"{side} person", min_height=PHOTO_HEIGHT,
                           image=f"person_{side.lower()}.png")
        ids.append(encode_face(g, column, models, photo, title=f"Encode {side.lower()} face"))
        photos.append(photo)
    # One empty canvas and one white half serve both masks; each composite puts the half on its side.
    canvas = left.add("SolidMask", title="empty canvas", value=0.0, width=width, height=height)
    half = right.add("SolidMask", title="white half", value=1.0, width=width // 2, height=height)
    masks = []
    for column, side, x_offset in ((left, "left", 0), (right, "right", width // 2)):
        mask = column.add("MaskComposite", title=f"{side} half mask", x=x_offset, y=0, operation="add")
        g.link(canvas.out(0), mask, "destination")
        g.link(half.out(0), mask, "source")
        masks.append(mask)
    x = g.group("Face", nodes_of(left, right))
    sampling = Column(g, x, SAMPLING_WIDTH)
    first = apply_pulid(g, sampling, unet.out(0), models["pulid"], ids[0], mask=masks[0].out(0),
                        title="Apply left face", kind=ADVANCED_APPLY_NODE)
    second = apply_pulid(g, sampling, first.out(0), models["pulid"], ids[1], mask=masks[1].out(0),
                         title="Apply right face", kind=ADVANCED_APPLY_NODE)
    decode = sampler_nodes(g, sampling, second.out(0), positive, negative, vae, width, height, 20, 7)
    x = g.group("Sampling", sampling.nodes)
    output = Column(g, x, 390)  # "filename_prefix  face_migration/two_people"
    save_image(g, output, decode.out(0), "face_migration/two_people")
    for side, photo in zip(("Left", "Right"), photos):
        face_similarity(g, output, models, photo, decode.out(0), title=f"{side} face similarity")
    g.group("Output", output.nodes)
    models_note(g, output.under_group(), "flux1-dev.safetensors")
    return g.to_json()

API_KEY_NOTE = f"""
    ## API key
    **Face Migration (MoArk API)** calls the hosted MoArk / Gitee AI face-migration API (FLUX.1-schnell
    and PuLID on their servers): no local model file is needed for it. Create a key at moark.ai (or
    ai.gitee.com), then either set the environment variable **MOARK_API_KEY** (or GITEE_AI_API_KEY) before
    starting ComfyUI, or save the key alone in `{KEY_FILE}`. The key is never a widget, so it never
    ends up in a workflow or in an image's metadata. Each run is a paid request; a new seed makes a new one."""


def remote_node(g: Graph, column: Column, photo: Node, prompt_from=None) -> Node:
    """The API node with the hosted API's defaults, a fixed seed and the shared prompt (typed or linked).
    The photo's MASK goes along: IMAGE has no alpha, and the node lays transparent pixels over white."""
    node = column.add("FaceMigration_MoArkFaceMigration", prompt=PROMPT, seed=REMOTE_SEED,
                      linked=("prompt",) if prompt_from is not None else ())
    g.link(photo.out("IMAGE"), node, "image")
    g.link(photo.out("MASK"), node, "mask")
    if prompt_from is not None:
        g.link(prompt_from, node, "prompt")
    return node


@workflow("remote_api_face_migration", "Face migration through the hosted API",
          "MoArk / Gitee AI: photo + prompt → image, no local models")
def build_remote(g: Graph) -> dict:
    how = """
        ## How to use
        Load a photo of one face in **Reference photo**, write the prompt in **Face Migration (MoArk API)**
        and queue. The result is saved by **Save Image**."""
    notes_column(g, None, [("How to use", how), ("Set up the API key", API_KEY_NOTE)], face_files=[])
    face = Column(g, FIRST_GROUP_X, FACE_WIDTH)
    photo = face.add("LoadImage", title="Reference photo", min_height=PHOTO_HEIGHT, image=PHOTO)
    x = g.group("Face", face.nodes)
    sampling = Column(g, x, 420)
    remote = remote_node(g, sampling, photo)
    x = g.group("Sampling", sampling.nodes)
    output = Column(g, x, 520)
    save_image(g, output, remote.out(0), "face_migration/remote")
    g.group("Output", output.nodes)
    return g.to_json()


@workflow("local_vs_remote", "Local PuLID vs the hosted API",
          "same photo, same prompt: FLUX.1-schnell locally and remotely, side by side with similarity scores")
def build_side_by_side(g: Graph) -> dict:
    about = f"""
        ## About the comparison
        One photo (**Reference photo**) and one prompt (**Prompt (shared)**) go to both sides: local PuLID
        on FLUX.1-schnell (4 steps, **Apply PuLID-FLUX** weight 1, start_step 0) and the hosted API with its
        defaults (4 steps, id_weight 1, id_timestep_start 0). **Local | Remote** shows the two images side
        by side; **Local similarity** and **Remote similarity** score each against the photo.

        The two images are not expected to match pixel for pixel: the server makes its own starting noise
        from the seed (and may run other weights or precision), so the same seed number does not give the
        same noise. Compare likeness (the two scores) and prompt following, not pixels.

        {SCHNELL_GUIDANCE}"""
    # Four columns of Notes and models, then Face over Prompt, Sampling (local over hosted), Output: the widest
    # graph still fits the template browser's fitted view at a scale that draws text.
    notes = notes_column(g, None, [("About the comparison", about)], face_files=[])
    face_models = notes.below()
    models = face_pipeline_loaders(face_models)
    g.group("Models: face", face_models.nodes)
    files = Column(g, FIRST_GROUP_X, LOADER_WIDTH)
    models_note(g, files, "flux1-schnell.safetensors")
    flux = files.below()
    unet, clip, vae = flux_loaders(flux, "flux1-schnell.safetensors")
    models["pulid"] = flux.add("FaceMigration_PulidModelLoader", pulid_file=BY_KEY["pulid_flux"].filename)
    x = g.group("Models: FLUX and PuLID", flux.nodes)
    flux.under_group().note(textwrap.dedent(API_KEY_NOTE).strip(), "Set up the API key")
    face = Column(g, x, FACE_WIDTH)
    photo = face.add("LoadImage", title="Reference photo", min_height=PHOTO_HEIGHT - 10, image=PHOTO)
    identity = encode_face(g, face, models, photo, min_height=380)  # smaller than elsewhere: the tallest column
    g.group("Face", face.nodes)
    prompt = face.below()
    text = prompt.add("PrimitiveStringMultiline", title="Prompt (shared)", min_height=140, value=PROMPT)
    positive, negative = prompt_nodes(g, prompt, clip, PROMPT, None, linked_text=text.out(0))
    x = g.group("Prompt", prompt.nodes)
    sampling = Column(g, x, 400)
    apply = apply_pulid(g, sampling, unet.out(0), models["pulid"], identity, weight=1.0, start_step=0)
    decode = sampler_nodes(g, sampling, apply.out(0), positive, negative, vae, 1024, 1024, 4, REMOTE_SEED)
    remote = remote_node(g, sampling, photo, prompt_from=text.out(0))
    x = g.group("Sampling", sampling.nodes)
    output = Column(g, x, OUTPUT_WIDTH)
    save_image(g, output, decode.out(0), "face_migration/local", title="Local image", min_height=260)
    stitch = output.add("ImageStitch", title="Local | Remote", direction="right", match_image_size=True,
                        spacing_width=16, spacing_color="white")
    g.link(decode.out(0), stitch, "image1")
    g.link(remote.out(0), stitch, "image2")
    save_image(g, output, stitch.out(0), "face_migration/local_vs_remote", title="Side by side", min_height=260)
    face_similarity(g, output, models, photo, decode.out(0), title="Local similarity")
    face_similarity(g, output, models, photo, remote.out(0), title="Remote similarity")
    g.group("Output", output.nodes)
    return g.to_json()


# --- Chroma: FLUX.1's open descendant, T5-XXL only, real CFG with a negative prompt ---------------------------

CHROMA_UNET = "Chroma1-HD.safetensors"
CHROMA_NEGATIVE = ("low quality, blurry, deformed face, distorted features, bad anatomy, extra fingers, watermark, "
                   "text, jpeg artifacts")


def chroma_loaders(g: Graph, column: Column) -> tuple[Node, Node, Node]:
    """(model, text encoder, VAE): Chroma1-HD, T5-XXL alone through CLIPLoader's type 'chroma' with the tokenizer
    options ComfyUI's own Chroma template sets (padding 1), and the FLUX VAE."""
    unet = column.add("UNETLoader", unet_name=CHROMA_UNET, weight_dtype="default")
    clip = column.add("CLIPLoader", clip_name="t5xxl_fp16.safetensors", type="chroma")
    t5 = column.add("T5TokenizerOptions", min_padding=1, min_length=0)
    g.link(clip.out(0), t5, "clip")
    return unet, t5, column.add("VAELoader", vae_name="ae.safetensors")


def chroma_prompt_nodes(g: Graph, column: Column, clip: Node) -> tuple[Node, Node]:
    """(positive, negative): the prompt and a written negative prompt (Chroma samples with real CFG)."""
    texts = []
    for title, text in (("Prompt", PROMPT), ("Negative prompt", CHROMA_NEGATIVE)):
        texts.append(column.add("CLIPTextEncode", title=title, min_height=120, text=text))
        g.link(clip.out(0), texts[-1], "clip")
    return texts[0], texts[1]


@workflow("chroma_pulid", "Chroma1-HD + PuLID: one face",
          "Chroma (FLUX.1's open descendant): T5 only, CFG 4 with a negative prompt, identity on both passes")
def build_chroma(g: Graph) -> dict:
    how = f"""
        ## How to use
        1. Load a clear photo of one face in **Reference photo**, write the **Prompt** (the setting, not the
           face) and the **Negative prompt**, queue.
        2. Chroma reads T5-XXL only: **Load CLIP** with type *chroma*, no CLIP-L, no FluxGuidance. It
           samples with real CFG (cfg 4): on the negative pass **Apply PuLID-FLUX** gives the official
           *uncond ID* (the encoder's empty identity), as PuLID's own code does.

        {APPLY_HELP}

        Settings reported by the community for PuLID on Chroma: 768×768, 26 steps, weight 0.9-1.0. The pack
        applies PuLID-FLUX to Chroma as to FLUX.1 (same blocks, image tokens only), checked with small random
        Chroma models; how well the likeness holds on the real Chroma1-HD has not been measured here.
        Chroma1-Radiance works with Apply as well (pixel space: swap the model, its latent and VAE)."""
    files = [CHROMA_UNET, "t5xxl_fp16.safetensors", "ae.safetensors", *FACE_FILES]
    notes_column(g, None, [("How to use", how)], face_files=files,
                 extra="Chroma1-HD is Apache-2.0 (lodestones, trained from FLUX.1-schnell).")
    loaders = Column(g, FIRST_GROUP_X, LOADER_WIDTH)
    unet, clip, vae = chroma_loaders(g, loaders)
    models = face_loaders(loaders)
    x = g.group("Models", loaders.nodes)
    face = Column(g, x, FACE_WIDTH)
    photo = face.add("LoadImage", title="Reference photo", min_height=PHOTO_HEIGHT, image=PHOTO)
    identity = encode_face(g, face, models, photo)
    x = g.group("Face", face.nodes)
    prompt = Column(g, x, PROMPT_WIDTH)
    positive, negative = chroma_prompt_nodes(g, prompt, clip)
    g.group("Prompt", prompt.nodes)
    sampling = prompt.below()
    apply = apply_pulid(g, sampling, unet.out(0), models["pulid"], identity, weight=1.0, start_step=0)
    decode = sampler_nodes(g, sampling, apply.out(0), positive, negative, vae, 768, 768, 26, 42, cfg=4.0,
                           scheduler="beta")
    x = g.group("Sampling", sampling.nodes)
    output = Column(g, x, OUTPUT_WIDTH)
    save_image(g, output, decode.out(0), "face_migration/chroma_pulid")
    face_similarity(g, output, models, photo, decode.out(0))
    g.group("Output", output.nodes)
    return g.to_json()


IDENTITY_NAME = "my_face"


@workflow("identity_round_trip", "A face identity as a file",
          "encode once → Save Identity; Load Identity → Apply PuLID, no face model loaded")
def build_identity(g: Graph) -> dict:
    how = f"""
        ## Encode once, reuse without the photo
        **Step 1** (as loaded): load a photo in **Reference photo** and queue. **Save Identity (PuLID)**
        writes `ComfyUI/models/pulid_identities/{IDENTITY_NAME}.safetensors`: the ID tokens, the PuLID
        weights they fit and a 128 px thumbnail of the aligned face crop (switch **thumbnail** off for
        none). The photo itself is never stored.

        **Step 2**: right-click the group *Face: encode once and save* → Set Group Nodes to Never (mute),
        and set the muted groups *Face: load the saved identity*, *Prompt*, *Sampling* and *Output* to
        Always. Queue: **Load Identity (PuLID)** feeds **Apply PuLID-FLUX** from the file, with no face
        detector, EVA-CLIP or face parsing loaded; the image is the same as from the encoded photo."""
    sharing = ("Share the identity's .safetensors file to share the face without the photo; `python -m "
               "face_migration identity info FILE` shows what a file holds.")
    notes = notes_column(g, "flux1-dev.safetensors", [("How to use", how)], extra=sharing)
    loaders = Column(g, FIRST_GROUP_X, LOADER_WIDTH)
    unet, clip, vae = flux_loaders(loaders, "flux1-dev.safetensors")
    pulid = loaders.add("FaceMigration_PulidModelLoader", pulid_file=BY_KEY["pulid_flux"].filename)
    x = g.group("Models", loaders.nodes)
    prompt = loaders.below()
    positive, negative = prompt_nodes(g, prompt, clip, PROMPT, 3.5)
    g.group("Prompt", prompt.nodes)
    load_part = notes.below()  # step 2's start, under the Notes that explain it
    loaded = load_part.add("FaceMigration_LoadIdentity", min_height=200,
                           identity_file=f"{IDENTITY_NAME}.safetensors")
    g.link(pulid.out(0), loaded, "pulid_model")
    g.group("Face: load the saved identity", load_part.nodes)
    # The face loaders sit with Encode Face, so muting that group leaves no face model in the prompt.
    face_models, encode_part = columns(g, x, LOADER_WIDTH, FACE_WIDTH)
    models = {"pulid": pulid, **face_pipeline_loaders(face_models)}
    photo = encode_part.add("LoadImage", title="Reference photo", min_height=PHOTO_HEIGHT, image=PHOTO)
    encoded = encode_face(g, encode_part, models, photo)
    save = encode_part.add("FaceMigration_SaveIdentity", min_height=200, name=IDENTITY_NAME)
    g.link(encoded.out(0), save, "pulid_id")
    g.link(encoded.out("preview"), save, "preview")
    x = g.group("Face: encode once and save", nodes_of(face_models, encode_part))
    sampling = Column(g, x, OUTPUT_WIDTH)  # "filename_prefix  face_migration/from_identity_file" below
    apply = apply_pulid(g, sampling, unet.out(0), models["pulid"], loaded, weight=1.0, start_step=0)
    decode = sampler_nodes(g, sampling, apply.out(0), positive, negative, vae, 896, 1152, 20, 42)
    g.group("Sampling", sampling.nodes)
    output = sampling.below()
    save_image(g, output, decode.out(0), "face_migration/from_identity_file", min_height=300)
    g.group("Output", output.nodes)
    for node in nodes_of(load_part, prompt, sampling, output):
        node.mode = MUTED  # step 2 of the Note: needs the file step 1 writes
    return g.to_json()


def write_template_index() -> None:
    """Titles and descriptions for the template browser, in TEMPLATE_ORDER. The frontends turn '-' and '_' in
    a description into spaces, so a hyphen there is written as U+2011 (non-breaking hyphen)."""
    templates = [{"name": name, "title": WORKFLOWS[name][1], "description": WORKFLOWS[name][2].replace("-", "\u2011"),
                  **template_locales(name)} for name in TEMPLATE_ORDER]
    data = {"title": TEMPLATE_CATEGORY, "templates": templates}
    TEMPLATE_INDEX.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="workflow names to build (default: all)")
    args = parser.parse_args()
    schemas = load_schemas(TESTED_COMFYUI[0])  # the oldest tested ComfyUI's; each file must validate on all
    OUT.mkdir(exist_ok=True)
    for name, (build, title, subtitle) in WORKFLOWS.items():
        if args.only and name not in args.only:
            continue
        graph = Graph(schemas, title, name)
        data = build(graph)
        for version in TESTED_COMFYUI:
            assert_valid(data, load_schemas(version), f"{name} on ComfyUI {version}")
        (OUT / f"{name}.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        draw_thumbnail(data, title, subtitle, OUT / f"{name}.jpg")
        first_note_px = graph.fitted_scale() * graph.nodes[0].text_px  # the first node is the first Note
        assert first_note_px >= FITTED_NOTE_MIN_PX, f"{name}: the first Note is {first_note_px:.1f} px when fitted"
        print(f"wrote workflows/{name}.json and .jpg ({len(data['nodes'])} nodes, {len(data['links'])} links, "
              f"fitted template view at {graph.fitted_scale():.2f}, first Note text {first_note_px:.1f} px there)")
    write_template_index()
    return 0


if __name__ == "__main__":
    sys.exit(main())
