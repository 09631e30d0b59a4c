"""Installed the way users install it: ComfyUI Manager's own command line (`python -m cm_cli install URL`,
comfyui-manager 4.3) clones the pack from a git URL into the custom_nodes of a throwaway copy of the
checkout, installs its requirements (markers only, nothing to compile, no post-install step), and that
ComfyUI then starts with the pack's nodes. The URL is served on loopback by `git daemon` from a bare clone
of this repository's committed HEAD."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import PACK_NAME, REPO, ComfyInstall, start_comfy


def has_manager(python: str) -> bool:
    return subprocess.run([python, "-c", "import cm_cli"], capture_output=True).returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


@pytest.fixture
def git_url(tmp_path):
    """git://127.0.0.1:PORT/comfyui-face-migration.git, served until the test ends."""
    if shutil.which("git") is None:
        pytest.skip("needs the git binary (ComfyUI Manager installs packs with git)")
    served = tmp_path / "served"
    subprocess.run(["git", "clone", "-q", "--bare", str(REPO), str(served / f"{PACK_NAME}.git")], check=True)
    port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={served}",
                               "--listen=127.0.0.1", f"--port={port}", str(served)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert daemon.poll() is None and time.monotonic() < deadline, "git daemon did not start"
                time.sleep(0.1)
        yield f"git://127.0.0.1:{port}/{PACK_NAME}.git"
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_comfyui_manager_installs_the_pack_and_comfyui_loads_it(comfyui, git_url, tmp_path):
    if not has_manager(comfyui.python):
        pytest.skip(f"needs the comfyui-manager package in {comfyui.python} (pip install comfyui-manager; "
                    f"it provides `python -m cm_cli`)")
    copy = tmp_path / "ComfyUI"
    user_folders = {"custom_nodes", "models", "input", "output", "temp", "user"}  # the user's, at the top only
    shutil.copytree(comfyui.path, copy, copy_function=link_or_copy,
                    ignore=lambda folder, names: {n for n in names if n in {".git", "__pycache__"}
                                                  or (Path(folder) == comfyui.path and n in user_folders)})
    (copy / "custom_nodes").mkdir()
    done = subprocess.run([comfyui.python, "-m", "cm_cli", "install", git_url, "--exit-on-fail",
                           "--user-directory", str(tmp_path / "manager_user")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COMFYUI_PATH": str(copy)})
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "[INSTALLED]" in output, output[-4000:]
    installed = copy / "custom_nodes" / PACK_NAME
    assert (installed / "__init__.py").is_file() and (installed / ".git").is_dir()
    assert "Building wheel" not in output, "installing the requirements compiled something"
    server = start_comfy(ComfyInstall(copy, comfyui.python, comfyui.version, comfyui.commit), copy)
    try:
        nodes = server.object_info()
    finally:
        server.stop()
    assert {"FaceMigration_ApplyPulid", "FaceMigration_EncodeFace", "FaceMigration_PulidModelLoader"} <= set(nodes)
    assert nodes["FaceMigration_ApplyPulid"]["python_module"] == f"custom_nodes.{PACK_NAME}"
