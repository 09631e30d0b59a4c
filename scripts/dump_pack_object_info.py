"""Write tests/fixtures/object_info.pack.json: this pack's node schemas as a real ComfyUI serves them.

    python scripts/dump_pack_object_info.py --comfyui /path/to/ComfyUI [--python /path/to/venv/bin/python]

Starts ComfyUI headless (CPU) with a temporary base directory that holds only this pack and EMPTY model
folders, reads /object_info and keeps this pack's entries. Model-file combos therefore come out empty,
which tests/workflow_validation.py relies on to recognise them. `python_module` is dropped (it depends on
the folder name the pack was installed under). The workflow tests validate against this snapshot; an
integration test compares it with the live server so it cannot go stale silently.
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
OUTPUT = REPO / "tests" / "fixtures" / "object_info.pack.json"
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


def fetch_object_info(comfyui: Path, python: str, timeout: float) -> tuple[dict, str]:
    with tempfile.TemporaryDirectory(prefix="dump-object-info-") as tmp:
        base = Path(tmp)
        for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
            (base / sub).mkdir()
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", required=True, type=Path, help="ComfyUI folder (holds main.py)")
    parser.add_argument("--python", default=sys.executable, help="Python with ComfyUI's requirements")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the server")
    args = parser.parse_args()
    if not (args.comfyui / "main.py").is_file():
        parser.error(f"{args.comfyui} has no main.py")
    info, log = fetch_object_info(args.comfyui.resolve(), args.python, args.timeout)
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
    args.output.write_text(json.dumps(ours, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(ours)} node schemas to {args.output}: {', '.join(ours)}")
    return 1 if disabled else 0


if __name__ == "__main__":
    sys.exit(main())
