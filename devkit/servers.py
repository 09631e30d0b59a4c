"""Headless ComfyUI instances with this pack, and nginx in front of them, as the integration tests and the
benchmarks start them: a temporary --base-directory per instance, loopback only, logs in files beside it.

Errors are ServerStartError (with the log's tail), so a test turns them into a failure and a script into
its exit message."""
from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui-face-migration"
BASE_FOLDERS = ("custom_nodes", "input", "output", "temp", "user", "models/diffusion_models", "models/pulid")

# What goes around a site file such as docs/nginx-face-migration.conf (it belongs inside http { }, as in
# /etc/nginx/conf.d/): files under the prefix, one worker, and an access log that says which backends each
# request went to and whether a connection was made (an upstream_connect_time of "-" means none was).
NGINX_MAIN_CONF = """\
worker_processes 1;
pid nginx.pid;
error_log error.log info;
events { worker_connections 256; }
http {
    log_format scaleout '$status "$upstream_addr" "$upstream_status" "$upstream_connect_time"';
    access_log access.log scaleout;
    client_body_temp_path client_body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    include face-migration.conf;
}
"""
# Run by root, nginx's workers would switch to an unprivileged user that cannot enter private temp folders.
NGINX_AS_ROOT = "user root;\n"
NGINX_SITE = REPO / "docs" / "nginx-face-migration.conf"


class ServerStartError(RuntimeError):
    """A ComfyUI or nginx that exited or did not answer in time; the message holds its log's tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_packs(base: Path, extra_packs: dict[str, Path] | None = None) -> None:
    """A --base-directory with this pack (and `extra_packs`: folder name -> pack) in custom_nodes/, no models."""
    for sub in BASE_FOLDERS:
        (base / sub).mkdir(parents=True)
    (base / "custom_nodes" / PACK_NAME).symlink_to(REPO)
    for name, folder in (extra_packs or {}).items():
        (base / "custom_nodes" / name).symlink_to(folder)


def launch_comfyui(python: str, comfyui: Path, base: Path, listen: str = "127.0.0.1", env: dict | None = None,
                   extra_args: str = "--cpu") -> tuple[subprocess.Popen, str, Path]:
    """Start ComfyUI (not waiting for it): returns the process, its loopback URL and its log file."""
    port = free_port()
    log = base / "server.log"
    cmd = [python, "main.py", *shlex.split(extra_args), "--listen", listen, "--port", str(port),
           "--disable-auto-launch", "--base-directory", str(base), "--database-url", f"sqlite:///{base}/user/comfyui.db"]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(cmd, cwd=comfyui, stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})})
    return process, f"http://127.0.0.1:{port}", log


def wait_for_comfyui(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until GET /system_stats answers; ServerStartError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerStartError(f"ComfyUI exited with {process.returncode} at start; log tail:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url + "/system_stats", timeout=10):
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise ServerStartError(f"ComfyUI not ready after {timeout:.0f} s; log tail:\n{tail(log)}") from None
            time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else f"({path} was not written)"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def fill_site(template: str, **values: str) -> str:
    """The site file with its {{placeholders}} filled; every one must be given."""
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", value)
    if "{{" in template:
        raise ValueError(f"{NGINX_SITE} has a placeholder not given here: {template[template.index('{{'):][:40]}")
    return template


def start_nginx(prefix: Path, backends: list[str], timeout: float = 15) -> tuple[subprocess.Popen, str]:
    """nginx from `prefix` with the committed site file, its placeholders filled with a free loopback port and
    the backends' host:port (the file names two). Returns the process and its URL once it listens."""
    nginx = nginx_binary()
    if nginx is None:
        raise ServerStartError("no nginx binary (Debian/Ubuntu: apt-get install nginx)")
    port = free_port()
    site = fill_site(NGINX_SITE.read_text(), listen=f"127.0.0.1:{port}",
                     **{f"backend_{i + 1}": backend for i, backend in enumerate(backends)})
    (prefix / "face-migration.conf").write_text(site)
    (prefix / "nginx.conf").write_text((NGINX_AS_ROOT if os.geteuid() == 0 else "") + NGINX_MAIN_CONF)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(exist_ok=True)
    # Before it reads its configuration nginx may complain about its compiled-in log file: that goes here.
    with open(prefix / "stderr.log", "wb") as stderr:
        process = subprocess.Popen([nginx, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                                   stdout=stderr, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerStartError(f"nginx exited with {process.returncode}:\n{tail(prefix / 'stderr.log')}\n"
                                   f"{tail(prefix / 'error.log')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                stop(process)
                raise ServerStartError(f"nginx did not listen in time:\n{tail(prefix / 'error.log')}") from None
            time.sleep(0.1)
