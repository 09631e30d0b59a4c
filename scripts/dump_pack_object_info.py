"""Write the node-schema snapshots the workflow tests validate against, as a real ComfyUI serves them.

    python scripts/dump_pack_object_info.py --comfyui /path/to/ComfyUI [--python /path/to/venv/bin/python]
    python scripts/dump_pack_object_info.py --core --comfyui /path/to/ComfyUI [--python ...]

Starts ComfyUI headless (CPU) with a temporary base directory that holds EMPTY model folders and, by
default, only this pack: its entries go to tests/fixtures/object_info/pack-<version>.json, without
`python_module` (it depends on the folder name the pack was installed under). With --core no custom node is
installed and the core nodes that the shipped workflows and API templates use go to
tests/fixtures/object_info/core-<version>.json. <version> is the checkout's (comfyui_version.py): run it once
per tested ComfyUI. Model-file combos come out empty, which
devkit/workflow_validation.py relies on to recognise them. Integration tests compare both snapshots with
the live server, so they cannot go stale silently.
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from devkit.workflow_validation import core_snapshot, pack_snapshot  # noqa: E402
from face_migration.support import checkout_version  # noqa: E402

PACK_DIR_NAME = "comfyui-face-migration"


def pack_entries(object_info: dict, pack_dir_name: str) -> dict:
    """The entries registered by the pack installed as custom_nodes/<pack_dir_name>, without python_module."""
    module = f"custom_nodes.{pack_dir_name}"
    ours = {}
    for node_id, entry in object_info.items():
        owner = entry.get("python_module", "")
        if owner == module or owner.startswith(module + "."):
            ours[node_id] = {k: v for k, v in entry.items() if k != "python_module"}
    return dict(sorted(ours.items()))


def fetch_object_info(comfyui: Path, python: str, timeout: float, with_pack: bool = True) -> tuple[dict, str]:
    with tempfile.TemporaryDirectory(prefix="dump-object-info-") as tmp:
        base = Path(tmp)
        for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
            (base / sub).mkdir()
        if with_pack:
            (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(REPO)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log_path = base / "server.log"
        cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
               "--base-directory", str(base), "--database-url", f"sqlite:///{base}/user/comfyui.db"]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(cmd, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"ComfyUI exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info", timeout=30) as resp:
                        return json.load(resp), log_path.read_text(errors="replace")
                except (urllib.error.URLError, ConnectionError):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"ComfyUI not ready in {timeout:.0f}s:\n{log_path.read_text()[-4000:]}")
                    time.sleep(0.5)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def used_core_types() -> set[str]:
    """The node types the shipped workflows and API templates use: what the pack relies on in core."""
    used = set()
    for path in (REPO / "workflows").glob("*.json"):
        used |= {node["type"] for node in json.loads(path.read_text())["nodes"]}
    for path in (REPO / "api_templates").glob("*.json"):
        used |= {node["class_type"] for node in json.loads(path.read_text()).values() if isinstance(node, dict)}
    return used


def core_entries(object_info: dict) -> dict:
    """ComfyUI's own entries (nodes, comfy_extras, comfy_api_nodes: everything no custom node registered) of
    the node types the pack's workflows and templates use."""
    used = used_core_types()
    return {k: v for k, v in sorted(object_info.items())
            if k in used and not v.get("python_module", "").startswith("custom_nodes.")}


def write_snapshot(entries: dict, output: Path) -> None:
    output.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(entries)} node schemas to {output}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", required=True, type=Path, help="ComfyUI folder (holds main.py)")
    parser.add_argument("--python", default=sys.executable, help="Python with ComfyUI's requirements")
    parser.add_argument("--core", action="store_true",
                        help="dump ComfyUI's own nodes without this pack (default output core-<version>.json)")
    parser.add_argument("--output", type=Path, help="default: pack-<version>.json or core-<version>.json in "
                                                    "tests/fixtures/object_info/")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the server")
    args = parser.parse_args()
    version = checkout_version(args.comfyui)
    if not (args.comfyui / "main.py").is_file() or version is None:
        parser.error(f"{args.comfyui} has no main.py and comfyui_version.py with a __version__: name a ComfyUI "
                     f"checkout")
    info, log = fetch_object_info(args.comfyui.resolve(), args.python, args.timeout, with_pack=not args.core)
    if args.core:
        # A core module whose dependency is missing (e.g. torchaudio for the audio nodes) is left out; the
        # workflow tests only need the nodes the workflows use, so say so rather than fail.
        for line in log.splitlines():
            if "Cannot import" in line:
                print(f"warning: not in the snapshot: {line.strip()}", file=sys.stderr)
        write_snapshot(core_entries(info), args.output or core_snapshot(version))
        return 0
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line and PACK_DIR_NAME in line]
    if failed:
        print("\n".join(failed) + "\n" + log[-4000:], file=sys.stderr)
        return 1
    ours = pack_entries(info, PACK_DIR_NAME)
    if not ours:
        print(f"no node from custom_nodes.{PACK_DIR_NAME} in /object_info; server log:\n{log[-4000:]}",
              file=sys.stderr)
        return 1
    disabled = [line for line in log.splitlines() if "disabled:" in line]
    for line in disabled:  # a node module skipped for a missing dependency would silently shrink the snapshot
        print(f"warning: {line}", file=sys.stderr)
    write_snapshot(ours, args.output or pack_snapshot(version))
    return 1 if disabled else 0


if __name__ == "__main__":
    sys.exit(main())
