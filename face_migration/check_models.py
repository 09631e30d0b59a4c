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
import time
from dataclasses import dataclass

from .catalog import CATALOGUE, NODE_MODEL_FILES, Catalogue, ModelFile, find_in_folders, missing_file_message

# ComfyUI's legacy folder names and the core folders that have more than one default directory
# (folder_paths.py); every other folder is models/<name>.
LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}
DEFAULT_SUBDIRS = {"text_encoders": ("text_encoders", "clip"), "diffusion_models": ("unet", "diffusion_models")}
HASH_CHUNK = 1 << 20
PAGE_SNIFF = 512
PAGE_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")  # web and CDN error pages
WORKFLOWS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows")
SKIPPED_MODES = (2, 4)  # muted or bypassed nodes load nothing
TTY_REFRESH_S = 1.0


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

    def download_root(self, folder: str) -> str:
        """Where a new file of a folder goes: an extra folder marked is_default, else models/<folder> (the
        folder the README and the workflows' Notes name, one of ComfyUI's defaults)."""
        if any(is_default for _, is_default in self.extra.get(canonical_folder(folder), [])):
            return self.roots(folder)[0]
        named = os.path.join(self.models_dir, folder)
        return named if named in self.roots(folder) else self.roots(folder)[0]


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


def workflow_needs(directory: str | None = None, catalogue: Catalogue = CATALOGUE) -> dict[str, list[ModelFile]]:
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
            found = [catalogue.by_filename(v) for v in values if isinstance(v, str)]
            found += [catalogue.by_key(key) for key in NODE_MODEL_FILES.get(node.get("type"), ())]
            files += [m for m in dict.fromkeys(found) if m is not None and m not in files]
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


def user_cache_dir() -> str:
    """The per-user cache folder of the pack, where each platform keeps such files."""
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser(os.path.join("~", "AppData", "Local"))
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "face_migration")


class HashCache:
    """SHA-256 of files, remembered by real path, size and modification time in a small JSON file, so a
    second `--verify` reads no file again unless it changed."""

    def __init__(self, path: str | None = None):
        self.path = path or os.path.join(user_cache_dir(), "sha256.json")
        try:
            with open(self.path, encoding="utf-8") as stream:
                self.entries = dict(json.load(stream))
        except (OSError, ValueError, TypeError):  # none yet, or unreadable: start afresh
            self.entries = {}

    def known(self, path: str) -> str | None:
        """The SHA-256 computed earlier for the file as it is now (same size and time), else None."""
        stat = os.stat(path)
        entry = self.entries.get(os.path.realpath(path))
        if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            return entry["sha256"]
        return None

    def sha256(self, path: str, progress) -> str:
        digest = self.known(path)
        if digest is None:
            digest = sha256_of(path, progress)
            self.record(path, digest)
        return digest

    def record(self, path: str, digest: str) -> None:
        stat = os.stat(path)
        self.entries[os.path.realpath(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            temporary = f"{self.path}.{os.getpid()}.tmp"
            with open(temporary, "w", encoding="utf-8") as stream:
                json.dump(self.entries, stream)
            os.replace(temporary, self.path)
        except OSError:  # a read-only home only costs hashing again next time
            pass


class Progress:
    """Hashing (or download) progress on stderr: one updating line on a terminal (each percent, and at least
    every TTY_REFRESH_S with its detail, such as bytes and speed, so a slow download is seen to move), a line
    per 25 % otherwise (a log or a pipe)."""

    def __init__(self, name: str, stream=None, verb: str = "hashing"):
        self.name, self.stream, self.shown, self.verb = name, stream or sys.stderr, -1, verb
        self.written, self.width = 0.0, 0

    def __call__(self, fraction: float, detail: str = ""):
        percent = int(fraction * 100)
        tty = self.stream.isatty()
        step = percent if tty else percent - percent % 25
        now = time.monotonic()
        if step == self.shown and not (tty and detail and now - self.written >= TTY_REFRESH_S):
            return
        self.shown, self.written = step, now
        line = f"  {self.verb} {self.name}: {step:3d}%" + (f" ({detail})" if detail else "")
        if tty:  # padded over a longer line drawn before
            line, self.width = "\r" + line.ljust(self.width), len(line)
        self.stream.write(line + ("\n" if percent >= 100 or not tty else ""))
        self.stream.flush()


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def published(model: ModelFile, path: str) -> tuple[int | None, str | None]:
    """(size, SHA-256) the catalogue publishes for the file at path: those of the model's own file name;
    an accepted alternative name has none."""
    if os.path.basename(path) != model.filename:
        return None, None
    return model.size_bytes, model.sha256


def looks_like_page(path: str) -> bool:
    """Whether a file starts as an HTML or XML page does (what a site sends instead of a refused file)."""
    with open(path, "rb") as handle:
        head = handle.read(PAGE_SNIFF).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith(PAGE_STARTS)


def file_problem(path: str, model: ModelFile, catalogue: Catalogue = CATALOGUE) -> str | None:
    """What is wrong with a model file that can be told without hashing it (its size and its first bytes):
    a web page saved under the model's name, another catalogue file (known by its size), a truncated
    download, another file. None when nothing is."""
    size = os.path.getsize(path)
    expected, _ = published(model, path)
    if looks_like_page(path):
        return (f"an HTML page ({size:,} bytes), not the model: a browser or a download tool saved a web or "
                f"error page under the model's name")
    if expected is None or size == expected:
        return None
    twin = other_file_of_size(model, size, catalogue)
    if twin is not None:
        return (f"this is {twin.filename}, not {model.filename}: {size:,} bytes is the published size of "
                f"{twin.filename} ({twin.purpose}), {model.filename} has {expected:,}")
    if size < expected:
        return f"truncated: {size:,} of {expected:,} bytes ({size / expected:.0%}), an interrupted download"
    return f"another file: {size:,} bytes, the published {model.filename} has {expected:,}"


def other_file_of_size(model: ModelFile, size: int, catalogue: Catalogue = CATALOGUE) -> ModelFile | None:
    """The catalogue's other file published with exactly this size (a file saved under the wrong name)."""
    if size == model.size_bytes:
        return None
    return next((m for m in catalogue.files if m.size_bytes == size and m.filename != model.filename), None)


def examine(path: str, model: ModelFile, cache: HashCache, compute: bool, stream=None,
            catalogue: Catalogue = CATALOGUE) -> tuple[str | None, str | None]:
    """(what is wrong with the file, its SHA-256 where known): `check-models` and `download` both call a file
    wrong by this one rule. Size and first bytes always; the SHA-256 where it is published and was computed
    before (the hash cache) or `compute` asks for it (--verify)."""
    problem = file_problem(path, model, catalogue)
    expected = published(model, path)[1]
    if problem or not expected:
        return problem, None
    digest = cache.sha256(path, Progress(os.path.basename(path), stream)) if compute else cache.known(path)
    if digest is not None and digest != expected.lower():
        problem = (f"another file: same size, but SHA-256 {digest} differs from the published {expected} "
                   f"(a corrupt or different file)")
    return problem, digest


@dataclass
class Report:
    model: ModelFile
    path: str | None
    problems: list[str]
    lines: list[str]
    verified: bool = False  # size and SHA-256 both match the published values

    @property
    def ok(self) -> bool:
        return self.path is not None and not self.problems

    @property
    def unverifiable(self) -> bool:
        """Found, but the catalogue publishes no size or hash for it, so it cannot be verified."""
        return self.path is not None and published(self.model, self.path) == (None, None)


def check_model(model: ModelFile, folders: FolderMap, cache: HashCache, verify: bool, progress_stream=None,
                catalogue: Catalogue = CATALOGUE) -> Report:
    """verify: compute the SHA-256 of files not hashed before (otherwise only remembered ones are compared)."""
    roots = folders.roots(model.folder)
    path = find_in_folders(model, roots)
    where = f"folder: {model.display_folder}   licence: {model.licence}"
    if path is None:
        return Report(model, None, [], [missing_file_message(model, roots), where])
    size = os.path.getsize(path)
    expected_size, expected_hash = published(model, path)
    lines = [f"path: {path}", f"size: {human_size(size)} ({size:,} bytes)"]
    fix = f"Fix: python -m face_migration download --missing, or: {model.download_hint()}"
    problem, digest = examine(path, model, cache, verify, progress_stream, catalogue)
    twin = other_file_of_size(model, size, catalogue) if problem else None
    if twin is not None:
        fix = (f"Fix: rename it to {twin.filename} (in {twin.display_folder}/) if you meant to have that file, "
               f"then fetch {model.filename}: python -m face_migration download --missing")
    if problem:
        lines.append(f"WRONG FILE: {problem}")
    elif expected_size is None and expected_hash is None:
        lines.append("size/hash not published in the catalogue; not verified")
    elif digest is None:
        lines.append("size matches the published one; SHA-256 not computed (--verify compares it)"
                     if expected_hash else "size matches the published one (no SHA-256 published)")
    else:
        lines.append(f"sha256: {digest} (matches the published value)")
    verified = digest is not None and not problem
    lines += [where, f"url: {model.url}"]
    if model.checksum_source and expected_size is not None:
        lines.append(f"published size/hash: {model.checksum_source}")
    return Report(model, path, [fix] if problem else [], lines, verified)


def add_folder_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say which ComfyUI, and so which model folders (check-models and download)."""
    parser.add_argument("--comfyui", metavar="PATH", default=None,
                        help="ComfyUI folder (default: $COMFYUI_PATH, else the ComfyUI this pack is installed in)")
    parser.add_argument("--extra-model-paths-config", metavar="YAML", action="append", default=[],
                        help="an extra_model_paths.yaml passed to ComfyUI with the same flag (repeatable); "
                             "<comfyui>/extra_model_paths.yaml is always read")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("List every model file the pack and its shipped workflows use: found or missing, its "
                          "size against the published one (and a web page or truncated download saved under a "
                          "model's name), with --verify its SHA-256, the folder it belongs in, where to "
                          "download it and which workflow needs it. Exit status 1 when a required file of the "
                          "pack (or, with --workflow, any file of those workflows) is missing, or a file is "
                          "wrong.")
    add_folder_arguments(parser)
    parser.add_argument("--verify", action="store_true",
                        help="also compare each file's SHA-256 with the published value (reads every file once; "
                             "remembered by path, size and time, so the next --verify is instant)")
    # Hashing is off unless --verify; the old switch is still accepted so scripts written for it keep working.
    parser.add_argument("--no-hash", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workflow", metavar="NAME", action="append", default=[],
                        help="check only the files this shipped workflow needs, all of them required "
                             "(repeatable; a name from the pack's workflows/ folder, without .json)")


def resolve_folders(args: argparse.Namespace, out, err, command: str) -> FolderMap | None:
    """The ComfyUI folders of --comfyui / $COMFYUI_PATH / the installed pack, with its notes printed; None
    (with the reason on err) when there is no such folder."""
    comfyui = args.comfyui or default_comfyui_path()
    if not comfyui:
        err.write(f"{command}: no ComfyUI folder given. Pass --comfyui PATH (the folder holding main.py "
                  "and models/) or set COMFYUI_PATH.\n")
        return None
    if not os.path.isdir(comfyui):
        err.write(f"{command}: {comfyui} is not a folder. Pass --comfyui with the ComfyUI folder.\n")
        return None
    folders = build_folder_map(os.path.abspath(comfyui), args.extra_model_paths_config)
    out.write(f"ComfyUI: {os.path.abspath(comfyui)}\n")
    for note in folders.notes:
        out.write(f"note: {note}\n")
    return folders


def run(args: argparse.Namespace, out=None, err=None, catalogue: Catalogue = CATALOGUE) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    folders = resolve_folders(args, out, err, "check-models")
    if folders is None:
        return 2
    needs = workflow_needs(catalogue=catalogue)
    unknown = [name for name in args.workflow if name not in needs]
    if unknown:
        err.write(f"check-models: no shipped workflow named {', '.join(unknown)}; choose from: "
                  f"{', '.join(needs)}.\n")
        return 2
    if args.workflow:
        needs = {name: needs[name] for name in args.workflow}
    in_workflows = [m for files in needs.values() for m in files]
    checked = list(dict.fromkeys(in_workflows if args.workflow else [*catalogue.pack, *in_workflows]))
    cache = HashCache()
    reports = []
    for model in checked:
        report = check_model(model, folders, cache, args.verify, err, catalogue)
        status = "ok" if report.ok else ("MISSING" if report.path is None else "PROBLEM")
        required = _required(model, args, catalogue)
        need = "required" if required else "optional" if model.optional else "used by workflows"
        users = [name for name, files in needs.items() if model in files]
        out.write(f"\n[{status}] {model.filename} ({need}): {model.purpose}\n")
        for line in report.lines + report.problems:
            out.write(f"    {line}\n")
        out.write(f"    workflows: {', '.join(users) if users else 'none of the shipped ones'}\n")
        reports.append((report, required))
    found = {r.model for r, _ in reports if r.ok}
    out.write("\nShipped workflows:\n")
    for name, files in needs.items():
        missing = [m.filename for m in files if m not in found]
        state = "needs no model file" if not files else f"missing {', '.join(missing)}" if missing else "ready"
        out.write(f"    {name}: {state}\n")
    out.write("\n" + _summary(reports, args.verify) + "\n")
    return 1 if any(r.problems or (r.path is None and required) for r, required in reports) else 0


def _required(model: ModelFile, args: argparse.Namespace, catalogue: Catalogue) -> bool:
    return bool(args.workflow) or (model in catalogue.pack and not model.optional)


def _summary(reports: list[tuple[Report, bool]], verify: bool) -> str:
    """The last line: what is missing or wrong, else what was verified and what could not be."""
    wrong = [r.model.filename for r, _ in reports if r.problems]
    missing_required = [r.model.filename for r, required in reports if r.path is None and required]
    missing_other = [r.model.filename for r, required in reports
                     if r.path is None and not required and not r.model.optional]
    fetch = "python -m face_migration download --missing fetches them."
    if wrong or missing_required:
        parts = ([f"missing: {', '.join(missing_required)}"] if missing_required else []) + \
                ([f"wrong: {', '.join(wrong)}"] if wrong else [])
        return f"{len(wrong) + len(missing_required)} file(s) missing or wrong ({'; '.join(parts)}). {fetch}"
    if missing_other:
        return (f"Missing for the shipped workflows: {', '.join(missing_other)} ({fetch[:-1]}); the files the "
                f"pack's nodes load are in place.")
    unverifiable = [r.model.filename for r, _ in reports if r.unverifiable]
    found = [r for r, _ in reports if r.path is not None]
    checked = (f"SHA-256 verified for {sum(r.verified for r in found)} of {len(found)}" if verify
               else "sizes match the published ones; --verify also compares SHA-256")
    tail = f"; not verifiable (no published size/hash): {', '.join(unverifiable)}" if unverifiable else ""
    return f"All required model files are in place ({checked}{tail})."


if __name__ == "__main__":  # python -m face_migration.check_models
    _parser = argparse.ArgumentParser(prog="python -m face_migration check-models")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
