"""`check-models`: list every model file the pack and its shipped workflows use, whether this ComfyUI has
it, and which workflow needs it.

Folders are resolved as ComfyUI resolves them (models/<folder>, the legacy aliases, extra_model_paths.yaml)
and files are looked up with the catalogue's own `find_in_folders`, so this command and the loaders'
"not found" errors always agree. Which workflow needs which file is read from the workflows' JSON files
themselves (the loaders' file widgets), so the list cannot drift from what the workflows load."""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
from dataclasses import dataclass

from .catalog import (BY_KEY, CORE_MODEL_FILES, MODEL_FILES, NODE_MODEL_FILES, ModelFile, find_in_folders,
                      missing_file_message, model_by_filename)

# ComfyUI's legacy folder names and the core folders that have more than one default directory
# (folder_paths.py); every other folder is models/<name>.
LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}
DEFAULT_SUBDIRS = {"text_encoders": ("text_encoders", "clip"), "diffusion_models": ("unet", "diffusion_models")}
HASH_CHUNK = 1 << 20
WORKFLOWS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows")
SKIPPED_MODES = (2, 4)  # muted or bypassed nodes load nothing


def canonical_folder(name: str) -> str:
    return LEGACY_FOLDERS.get(name, name)


def default_comfyui_path() -> str | None:
    """COMFYUI_PATH, else the ComfyUI this pack is installed in (<ComfyUI>/custom_nodes/<pack>/face_migration)."""
    if os.environ.get("COMFYUI_PATH"):
        return os.environ["COMFYUI_PATH"]
    pack = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    custom_nodes = os.path.dirname(pack)
    if os.path.basename(custom_nodes) == "custom_nodes":
        return os.path.dirname(custom_nodes)
    return None


def read_extra_model_paths(yaml_path: str) -> list[tuple[str, str, bool]]:
    """(folder, absolute path, is_default) entries of an extra_model_paths.yaml, interpreted as ComfyUI does."""
    import yaml  # a ComfyUI dependency; the caller checks it is importable

    with open(yaml_path, encoding="utf-8") as stream:
        config = yaml.safe_load(stream) or {}
    yaml_dir = os.path.dirname(os.path.abspath(yaml_path))
    entries = []
    for section in config.values():
        if not section:
            continue
        section = dict(section)
        base = section.pop("base_path", None)
        if base:
            base = os.path.expandvars(os.path.expanduser(base))
            if not os.path.isabs(base):
                base = os.path.abspath(os.path.join(yaml_dir, base))
        is_default = bool(section.pop("is_default", False))
        for folder, value in section.items():
            for line in str(value).split("\n"):
                if not line:
                    continue
                if base:
                    path = os.path.join(base, line)
                elif os.path.isabs(line):
                    path = line
                else:
                    path = os.path.join(yaml_dir, line)
                entries.append((canonical_folder(folder), os.path.normpath(path), is_default))
    return entries


@dataclass
class FolderMap:
    """Model folder name -> directories searched, in ComfyUI's order."""
    models_dir: str
    extra: dict[str, list[tuple[str, bool]]]  # folder -> (path, is_default) in reading order
    notes: list[str]

    def roots(self, folder: str) -> list[str]:
        folder = canonical_folder(folder)
        paths = [os.path.join(self.models_dir, sub) for sub in DEFAULT_SUBDIRS.get(folder, (folder,))]
        for path, is_default in self.extra.get(folder, []):  # folder_paths.add_model_folder_path's rules
            if path in paths:
                if is_default:
                    paths.remove(path)
                    paths.insert(0, path)
            elif is_default:
                paths.insert(0, path)
            else:
                paths.append(path)
        return paths


def build_folder_map(comfyui: str, extra_configs: list[str]) -> FolderMap:
    notes: list[str] = []
    configs = [p for p in [os.path.join(comfyui, "extra_model_paths.yaml"), *extra_configs] if os.path.isfile(p)]
    missing = [p for p in extra_configs if not os.path.isfile(p)]
    notes += [f"extra model paths file {p} does not exist; ignored" for p in missing]
    extra: dict[str, list[tuple[str, bool]]] = {}
    if configs:
        try:
            import yaml  # noqa: F401
        except ImportError:
            notes.append(f"PyYAML is not installed, so {', '.join(configs)} was not read; run this command "
                         f"with ComfyUI's Python to include those folders")
            configs = []
    for config in configs:
        for folder, path, is_default in read_extra_model_paths(config):
            extra.setdefault(folder, []).append((path, is_default))
        notes.append(f"read {config}")
    return FolderMap(os.path.join(comfyui, "models"), extra, notes)


def workflow_needs(directory: str | None = None) -> dict[str, list[ModelFile]]:
    """Shipped workflow name -> the catalogue files it loads: file names in its nodes' widgets, and the
    files a pack node loads by itself."""
    needs = {}
    for path in sorted(glob.glob(os.path.join(directory or WORKFLOWS_DIR, "*.json"))):
        with open(path, encoding="utf-8") as stream:
            workflow = json.load(stream)
        files: list[ModelFile] = []
        for node in workflow.get("nodes", []):
            if node.get("mode") in SKIPPED_MODES:
                continue
            values = node.get("widgets_values") or []
            values = list(values.values()) if isinstance(values, dict) else values
            found = [model_by_filename(v) for v in values if isinstance(v, str)]
            found += [BY_KEY[key] for key in NODE_MODEL_FILES.get(node.get("type"), ())]
            files += [m for m in found if m is not None and m not in files]
        needs[os.path.splitext(os.path.basename(path))[0]] = files
    return needs


def sha256_of(path: str, progress) -> str:
    digest = hashlib.sha256()
    total = os.path.getsize(path) or 1
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress(done / total)
    return digest.hexdigest()


class Progress:
    """Hashing progress on stderr: one updating line on a terminal, a line per 25 % otherwise."""

    def __init__(self, name: str, stream=None):
        self.name, self.stream, self.shown = name, stream or sys.stderr, -1

    def __call__(self, fraction: float):
        percent = int(fraction * 100)
        tty = self.stream.isatty()
        step = percent if tty else percent - percent % 25
        if step == self.shown:
            return
        self.shown = step
        line = f"  hashing {self.name}: {step:3d}%"
        self.stream.write("\r" + line + ("\n" if percent >= 100 else "") if tty else line + "\n")
        self.stream.flush()


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


@dataclass
class Report:
    model: ModelFile
    path: str | None
    problems: list[str]
    lines: list[str]

    @property
    def ok(self) -> bool:
        return self.path is not None and not self.problems


def check_model(model: ModelFile, folders: FolderMap, skip_hash: str | None, progress_stream=None) -> Report:
    """skip_hash: why the SHA-256 is not computed, or None to compute it."""
    roots = folders.roots(model.folder)
    path = find_in_folders(model, roots)
    where = f"folder: {model.display_folder}   licence: {model.licence}"
    if path is None:
        return Report(model, None, [], [missing_file_message(model, roots), where])
    size = os.path.getsize(path)
    is_catalogued_name = os.path.basename(path) == model.filename  # size/hash are known for that name only
    problems, lines = [], [f"path: {path}"]
    size_line = f"size: {human_size(size)} ({size:,} bytes)"
    if is_catalogued_name and model.size_bytes is not None and size != model.size_bytes:
        problems.append(f"size {size:,} bytes, expected {model.size_bytes:,}: an incomplete or different "
                        f"download. {model.download_hint()}")
        size_line += f"   MISMATCH: expected {model.size_bytes:,}"
    lines.append(size_line)
    if skip_hash:
        lines.append(f"sha256: not computed ({skip_hash})")
    else:
        digest = sha256_of(path, Progress(os.path.basename(path), progress_stream))
        known = model.sha256 if is_catalogued_name else None
        if known is None:
            lines.append(f"sha256: {digest} (known value: unknown)")
        elif digest == known.lower():
            lines.append(f"sha256: {digest} (matches)")
        else:
            lines.append(f"sha256: {digest}   MISMATCH: expected {known}")
            problems.append(f"SHA-256 differs from the published file: a corrupt or different download. "
                            f"{model.download_hint()}")
    lines.append(where)
    lines.append(f"url: {model.url}")
    return Report(model, path, problems, lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("List every model file the pack and its shipped workflows use: found or missing, "
                          "size, SHA-256 against the published value, the folder it belongs in, where to "
                          "download it and which workflow needs it. Exit status 1 when a required file of the "
                          "pack (or, with --workflow, any file of those workflows) is missing or wrong.")
    parser.add_argument("--comfyui", metavar="PATH", default=None,
                        help="ComfyUI folder (default: $COMFYUI_PATH, else the ComfyUI this pack is installed in)")
    parser.add_argument("--extra-model-paths-config", metavar="YAML", action="append", default=[],
                        help="an extra_model_paths.yaml passed to ComfyUI with the same flag (repeatable); "
                             "<comfyui>/extra_model_paths.yaml is always read")
    parser.add_argument("--no-hash", action="store_true", help="skip the SHA-256 of found files (fast)")
    parser.add_argument("--workflow", metavar="NAME", action="append", default=[],
                        help="check only the files this shipped workflow needs, all of them required "
                             "(repeatable; a name from the pack's workflows/ folder, without .json)")


def run(args: argparse.Namespace, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    comfyui = args.comfyui or default_comfyui_path()
    if not comfyui:
        err.write("check-models: no ComfyUI folder given. Pass --comfyui PATH (the folder holding main.py "
                  "and models/) or set COMFYUI_PATH.\n")
        return 2
    if not os.path.isdir(comfyui):
        err.write(f"check-models: {comfyui} is not a folder. Pass --comfyui with the ComfyUI folder.\n")
        return 2
    folders = build_folder_map(os.path.abspath(comfyui), args.extra_model_paths_config)
    out.write(f"ComfyUI: {os.path.abspath(comfyui)}\n")
    for note in folders.notes:
        out.write(f"note: {note}\n")
    needs = workflow_needs()
    unknown = [name for name in args.workflow if name not in needs]
    if unknown:
        err.write(f"check-models: no shipped workflow named {', '.join(unknown)}; choose from: "
                  f"{', '.join(needs)}.\n")
        return 2
    if args.workflow:
        needs = {name: needs[name] for name in args.workflow}
    in_workflows = [m for files in needs.values() for m in files]
    checked = list(dict.fromkeys(in_workflows if args.workflow else [*MODEL_FILES, *in_workflows]))
    failed, found = [], set()
    for model in checked:
        report = check_model(model, folders, _skip_hash_reason(model, args.no_hash), err)
        status = "ok" if report.ok else ("MISSING" if report.path is None else "PROBLEM")
        required = bool(args.workflow) or (model in MODEL_FILES and not model.optional)
        need = "required" if required else "optional" if model.optional else "used by workflows"
        users = [name for name, files in needs.items() if model in files]
        out.write(f"\n[{status}] {model.filename} ({need}): {model.purpose}\n")
        for line in report.lines + report.problems:
            out.write(f"    {line}\n")
        out.write(f"    workflows: {', '.join(users) if users else 'none of the shipped ones'}\n")
        if report.ok:
            found.add(model)
        elif required:
            failed.append(model.filename)
    out.write("\nShipped workflows:\n")
    for name, files in needs.items():
        missing = [m.filename for m in files if m not in found]
        state = "needs no model file" if not files else f"missing {', '.join(missing)}" if missing else "ready"
        out.write(f"    {name}: {state}\n")
    if failed:
        out.write(f"\n{len(failed)} required file(s) missing or wrong: {', '.join(failed)}\n")
        return 1
    out.write("\nAll required model files are in place.\n")
    return 0


def _skip_hash_reason(model: ModelFile, no_hash: bool) -> str | None:
    if no_hash:
        return "--no-hash"
    if model in CORE_MODEL_FILES and model.sha256 is None:  # gigabytes to read for nothing to compare with
        return "a ComfyUI model with no published value recorded here"
    return None


if __name__ == "__main__":  # python -m face_migration.check_models
    _parser = argparse.ArgumentParser(prog="python -m face_migration check-models")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
