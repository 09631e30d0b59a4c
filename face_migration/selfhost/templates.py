"""API workflow templates: ComfyUI API-format prompts ("Save (API)" in ComfyUI's menu) in which request
values are written as placeholders. A template is a file MODEL.json, chosen by the request's `model`.

A placeholder is a whole input value, the string "{{name}}", replaced by a value of the right type:
  {{image}}              the uploaded photo, as a LoadImage value ("face_migration_api/<id>.png [temp]")
  {{request_id}}         the request's id: the input `request_id` of the API Result node (required)
  {{prompt}}             text;  {{width}}, {{height}}: integers from `size`
  {{guidance_scale}}, {{id_weight}}: numbers;  {{num_inference_steps}}, {{id_timestep_start}}, {{seed}}: integers
{{image}} and {{request_id}} must appear; the others may be left out (the template then ignores them).

Templates are looked up in the folders given, later folders overriding earlier ones by model name (the
pack's api_templates/, then the user's). The request's model name is only compared with the file names
found; it never becomes part of a path. Errors tell a client the model name only; which file and why go
to the server's log (the errors' `detail`)."""
from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

from ..errors import ApiRequestError, ApiTemplateError

SUFFIX = ".json"
RESULT_NODE = "FaceMigration_ApiResult"
PLACEHOLDERS = ("image", "request_id", "prompt", "width", "height", "guidance_scale", "num_inference_steps",
                "id_weight", "id_timestep_start", "seed")
REQUIRED = ("image", "request_id")
_PLACEHOLDER = re.compile(r"^\{\{(\w+)\}\}$")


class TemplateCatalog:
    """The templates of some folders, re-listed on each lookup (adding a file needs no restart) and
    parsed once per file version."""

    def __init__(self, folders: list[Path]):
        self.folders = [Path(f) for f in folders]
        self._parsed: dict[Path, tuple[tuple[int, int], dict]] = {}

    def files(self) -> dict[str, Path]:
        found = {}
        for folder in self.folders:
            if folder.is_dir():
                for entry in sorted(folder.iterdir()):
                    if entry.name.endswith(SUFFIX) and entry.is_file():
                        found[entry.name[:-len(SUFFIX)]] = entry
        return found

    def template(self, model: str) -> dict:
        """The parsed template for a model name; ApiRequestError (400) for a name without one, ApiTemplateError
        (503, not retryable) for a template that cannot be used."""
        files = self.files()
        if model not in files:
            raise ApiRequestError(
                f"model: no template for {model!r} on this server; use one of {', '.join(sorted(files)) or 'none'}",
                detail=f"the server's owner adds MODEL{SUFFIX} to {self.folders[-1]}")
        path = files[model]
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
        if path not in self._parsed or self._parsed[path][0] != version:
            try:
                self._parsed[path] = (version, load_template(path))
            except ApiTemplateError as exc:
                raise ApiTemplateError(f"the API template for model {model!r} cannot be used on this server; its "
                                       f"owner finds why in the server log", detail=str(exc)) from None
        return self._parsed[path][1]


def load_template(path: Path) -> dict:
    try:
        prompt = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiTemplateError(f"API template {path}: not readable JSON ({exc}); export the workflow with "
                               f"ComfyUI's 'Save (API)' and put placeholders in it") from None
    check_template(prompt, path)
    return prompt


def check_template(prompt, source) -> None:
    """Every node has a class_type and inputs; every placeholder is known; the required ones are there."""
    if not isinstance(prompt, dict) or not prompt:
        raise ApiTemplateError(f"API template {source}: expected an API-format prompt (an object of nodes)")
    seen = set()
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs"), dict):
            raise ApiTemplateError(f"API template {source}: node {node_id} needs 'class_type' and 'inputs' "
                                   f"(is this a UI workflow? export it with 'Save (API)')")
        for name, value in node["inputs"].items():
            if isinstance(value, str) and "{{" in value:
                match = _PLACEHOLDER.match(value)
                if not match or match.group(1) not in PLACEHOLDERS:
                    raise ApiTemplateError(
                        f"API template {source}: node {node_id} input {name} = {value!r} is not a placeholder; "
                        f"a placeholder is a whole value, one of {', '.join('{{%s}}' % p for p in PLACEHOLDERS)}")
                seen.add(match.group(1))
    missing = [p for p in REQUIRED if p not in seen]
    if missing:
        raise ApiTemplateError(f"API template {source}: no {', '.join('{{%s}}' % p for p in missing)}; "
                               f"load the photo with LoadImage(image='{{{{image}}}}') and end with "
                               f"{RESULT_NODE}(request_id='{{{{request_id}}}}')")


def fill(template: dict, values: dict) -> dict:
    """A copy of the template with each placeholder replaced by its typed value."""
    prompt = copy.deepcopy(template)
    for node in prompt.values():
        inputs = node["inputs"]
        for name, value in inputs.items():
            match = _PLACEHOLDER.match(value) if isinstance(value, str) else None
            if match:
                inputs[name] = values[match.group(1)]
    return prompt


def request_values(params, image_value: str, request_id: str) -> dict:
    """Placeholder values of a validated FaceMigrationParams."""
    width, height = params.width_height
    return {"image": image_value, "request_id": request_id, "prompt": params.prompt.strip(), "width": width,
            "height": height, "guidance_scale": float(params.guidance_scale),
            "num_inference_steps": int(params.num_inference_steps), "id_weight": float(params.id_weight),
            "id_timestep_start": int(params.id_timestep_start), "seed": int(params.seed)}


def user_templates_folder(user_directory: str | os.PathLike) -> Path:
    return Path(user_directory) / "face_migration" / "api_templates"
