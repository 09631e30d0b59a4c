"""`download` against a stand-in Hugging Face Hub on loopback (tests/fake_hub.py) serving small files, with a
catalogue whose sizes and hashes are those of the small files."""
import argparse
import errno
import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from face_migration import check_models, download
from face_migration.catalog import CATALOGUE

from .fake_hub import TOKEN, FakeHub

WORKFLOW = "flux1_dev_pulid"  # FLUX.1-dev (gated), clip_l, t5xxl, ae, PuLID, antelopev2, EVA, BiSeNet
REPO = Path(__file__).resolve().parents[1]


def content(key: str) -> bytes:
    """A small stand-in for a model file; each of its own size, as the published files are."""
    index = [m.key for m in CATALOGUE.files].index(key)
    return hashlib.sha256(key.encode()).digest() * (4096 if key == "pulid_flux" else 100 + index)


@pytest.fixture
def hub(monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))  # no token or cache of the user's is read
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the gated FLUX.1-dev needs it; some tests remove it
    monkeypatch.setattr(check_models, "user_cache_dir", lambda: str(home / "face_migration"))
    monkeypatch.setattr(download, "CHUNK", 1024)  # written in small chunks, so a cut leaves bytes on disk
    monkeypatch.setattr(download, "RETRY_WAIT_S", 0)
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def served_path(model) -> str:
    """The path the stand-in serves a catalogue file's bytes under (its Hub path, or the asset's path)."""
    if model.hub_file():
        repo, revision, path = model.hub_file()
        return f"/{repo}/resolve/{revision}/{path}"
    return urlsplit(model.url).path


def publish(hub, data: dict, base=CATALOGUE, commit=None):
    """Serve each file's bytes and return the catalogue (base) publishing their sizes and hashes."""
    changes = {}
    for key, blob in data.items():
        model = CATALOGUE.by_key(key)
        change = {"size_bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        if not model.hub_file():  # a GitHub release asset: same path on the stand-in
            change["url"] = hub.url + served_path(model)
        hub.add(served_path(model), blob, gated=model.source_url.startswith(
            "https://huggingface.co/black-forest-labs/FLUX.1-dev/"), **({"commit": commit} if commit else {}))
        changes[key] = change
    return base.replace(**changes)


@pytest.fixture
def catalogue(hub):
    """Every file served by the stand-in and published in the catalogue with its own size and hash."""
    return publish(hub, {m.key: content(m.key) for m in CATALOGUE.files})


@pytest.fixture
def comfy(tmp_path):
    (tmp_path / "models").mkdir()
    return tmp_path


def run(comfy, catalogue, *argv, err=None):
    parser = argparse.ArgumentParser()
    download.add_arguments(parser)
    out, err = io.StringIO(), err or io.StringIO()
    code = download.run(parser.parse_args([*argv, "--comfyui", str(comfy)]), out, err, catalogue)
    return code, out.getvalue(), err.getvalue()


def where(comfy, catalogue, key):
    model = catalogue.by_key(key)  # models/<folder>, the folder the README names (clip, not text_encoders)
    return comfy / "models" / model.folder / model.subdirs[0] / model.filename


def partial_of(comfy, catalogue, key) -> Path:
    target = where(comfy, catalogue, key)
    return target.parent / download.STAGING / (target.name + ".part")


def test_a_workflows_files_are_fetched_verified_and_put_where_comfyui_reads_them(hub, catalogue, comfy,
                                                                                  monkeypatch, capsys):
    code, out, err = run(comfy, catalogue, WORKFLOW)
    assert code == 0, out + err
    keys = [m.key for m in check_models.workflow_needs(catalogue=catalogue)[WORKFLOW]]
    assert len(keys) == 9 and "flux1_schnell" not in keys
    for key in keys:
        assert where(comfy, catalogue, key).read_bytes() == content(key), key
    antelope = comfy / "models" / "insightface" / "models" / "antelopev2"
    assert sorted(p.name for p in antelope.iterdir()) == ["glintr100.onnx", "scrfd_10g_bnkps.onnx"]  # not nested
    assert not list(comfy.rglob(download.STAGING))
    assert "9 file(s) to download" in out and out.endswith("All the requested model files are in place.\n")
    assert "downloading parsing_bisenet.pth: 100%" in err and "downloading flux1-dev.safetensors: 100%" in err
    assert TOKEN not in out + err + capsys.readouterr().err
    assert hub.cdn_authorizations == 0 and any(r[1].startswith("/cdn/") for r in hub.requests)
    # check-models now finds them all, and --verify reads none again (download recorded the hashes)
    monkeypatch.setattr(check_models, "sha256_of", lambda *a: pytest.fail("hashed again"))
    parser = argparse.ArgumentParser()
    check_models.add_arguments(parser)
    report = io.StringIO()
    args = parser.parse_args(["--comfyui", str(comfy), "--workflow", WORKFLOW, "--verify"])
    assert check_models.run(args, report, io.StringIO(), catalogue) == 0, report.getvalue()
    # a second download finds everything in place and fetches nothing
    requests_before = len(hub.requests)
    code, out, _ = run(comfy, catalogue, WORKFLOW)
    assert code == 0 and "Nothing to download." in out and len(hub.requests) == requests_before


def test_a_good_file_is_kept_and_a_wrong_one_replaced(hub, catalogue, comfy):
    pulid, eva = where(comfy, catalogue, "pulid_flux"), where(comfy, catalogue, "eva02_clip_l_336")
    for path, data in ((pulid, content("pulid_flux")), (eva, b"<!DOCTYPE html><html>Sign in</html>")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    code, out, err = run(comfy, catalogue, "--missing")
    assert code == 0, err
    assert f"in place: pulid_flux_v0.9.1.safetensors ({pulid})" in out and not hub.gets(
        "guozinan/PuLID/resolve/main/pulid_flux_v0.9.1.safetensors")
    assert "(replacing the file there: an HTML page" in out and eva.read_bytes() == content("eva02_clip_l_336")
    assert not where(comfy, catalogue, "retinaface_resnet50").exists()  # optional: --all only


def test_all_includes_the_optional_file(hub, catalogue, comfy):
    assert run(comfy, catalogue, "--all")[0] == 0
    assert where(comfy, catalogue, "retinaface_resnet50").read_bytes() == content("retinaface_resnet50")


def test_extra_model_paths_default_folder_is_used(hub, catalogue, comfy, tmp_path_factory):
    pytest.importorskip("yaml")
    shared = tmp_path_factory.mktemp("shared")
    (comfy / "extra_model_paths.yaml").write_text(f"mine:\n  base_path: {shared}\n  is_default: true\n  pulid: pulid\n")
    code, _, err = run(comfy, catalogue, "--missing")
    assert code == 0, err
    assert (shared / "pulid" / "pulid_flux_v0.9.1.safetensors").read_bytes() == content("pulid_flux")


def test_a_cut_connection_is_resumed_with_a_range_request(hub, catalogue, comfy):
    path = served_path(CATALOGUE.by_key("pulid_flux"))
    hub.cut_once.add(path)
    code, _, err = run(comfy, catalogue, "--missing")
    assert code == 0, err
    half = len(content("pulid_flux")) // 2
    assert hub.gets(path) == [None, f"bytes={half}-"] and hub.served[path] == len(content("pulid_flux"))
    assert "connection lost" in err and "trying again" in err
    assert where(comfy, catalogue, "pulid_flux").read_bytes() == content("pulid_flux")


@pytest.mark.parametrize("key", ["pulid_flux", "bisenet"])  # a Hugging Face file, a GitHub release asset
def test_after_the_retries_give_up_the_next_run_fetches_only_the_rest(hub, catalogue, comfy, key):
    path = served_path(CATALOGUE.by_key(key))
    hub.cut_always.add(path)
    code, out, err = run(comfy, catalogue, "--missing")
    filename = CATALOGUE.by_key(key).filename
    assert code == 1 and f"{filename} could not be downloaded" in err and "continues where it stopped" in err
    assert f"the connection failed {download.RETRIES + 1} times" in err
    kept = partial_of(comfy, catalogue, key).stat().st_size
    assert not where(comfy, catalogue, key).exists() and len(content(key)) // 2 < kept < len(content(key))
    hub.cut_always.clear()
    before = hub.served[path]
    code, _, err = run(comfy, catalogue, "--missing")
    assert code == 0, err
    assert hub.gets(path)[-1] == f"bytes={kept}-" and hub.served[path] - before == len(content(key)) - kept
    assert f"continuing from {download.human_size(kept)} fetched before" in err
    assert where(comfy, catalogue, key).read_bytes() == content(key)
    assert not list(comfy.rglob(download.STAGING))


@pytest.mark.parametrize("other", ["fails its check", "finishes"])
def test_another_file_of_the_run_leaves_a_partial_download_alone(hub, catalogue, comfy, other):
    """scrfd and glintr100 share a folder (and so a staging folder): scrfd is cut, then glintr100 is fetched."""
    scrfd = served_path(CATALOGUE.by_key("scrfd"))
    hub.cut_always.add(scrfd)
    first = catalogue.replace(glintr100={"sha256": "0" * 64}) if other == "fails its check" else catalogue
    code, _, err = run(comfy, first, "--missing")
    assert code == 1 and "scrfd_10g_bnkps.onnx could not be downloaded" in err
    assert where(comfy, catalogue, "glintr100").exists() == (other == "finishes")
    kept = partial_of(comfy, catalogue, "scrfd").stat().st_size
    assert kept > len(content("scrfd")) // 2
    hub.cut_always.clear()
    before = hub.served[scrfd]
    assert run(comfy, catalogue, "--missing")[0] == 0
    assert hub.served[scrfd] - before == len(content("scrfd")) - kept
    assert where(comfy, catalogue, "scrfd").read_bytes() == content("scrfd")


@pytest.mark.parametrize("key", ["pulid_flux", "bisenet"])
def test_a_partial_of_another_revision_is_fetched_again_from_0(hub, catalogue, comfy, key):
    """Between the runs the file changed upstream: the Hub names another X-Linked-Etag (and commit) before the
    content server is asked; a plain server sends the whole file for a stale If-Range."""
    path = served_path(CATALOGUE.by_key(key))
    hub.cut_always.add(path)
    assert run(comfy, catalogue, "--missing")[0] == 1 and partial_of(comfy, catalogue, key).stat().st_size
    hub.cut_always.clear()
    new = b"revised " + content(key)
    revised = publish(hub, {key: new}, catalogue, commit="f" * 40)
    before = hub.served[path]
    code, _, err = run(comfy, revised, "--missing")
    assert code == 0, err
    assert hub.served[path] - before == len(new) and where(comfy, revised, key).read_bytes() == new
    assert "are not of this file as it is now (it changed upstream" in err
    if key == "pulid_flux":  # the content server was asked for the whole file only
        assert hub.gets(path)[-1] is None


def test_a_wrong_checksum_keeps_nothing_under_the_real_name(hub, catalogue, comfy):
    wrong = catalogue.replace(glintr100={"sha256": "0" * 64}, bisenet={"sha256": "1" * 64})
    code, out, err = run(comfy, wrong, "--missing")
    assert code == 1
    assert "The download of glintr100.onnx from https://huggingface.co/DIAMONIK7777" in err
    assert "is not the published file (SHA-256" in err and "nothing was saved under its name" in err
    assert "2 file(s) not downloaded: glintr100.onnx, parsing_bisenet.pth" in out
    for key in ("glintr100", "bisenet"):
        target = where(comfy, catalogue, key)
        assert not target.exists() and not (target.parent / download.STAGING).exists(), key
    assert where(comfy, catalogue, "scrfd").exists()  # the others are still fetched


def test_a_gated_file_without_token_says_how_to_get_access(hub, catalogue, comfy, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    code, out, err = run(comfy, catalogue, WORKFLOW)
    assert code == 1
    assert ("huggingface.co refused flux1-dev.safetensors (HTTP 401; no token: HF_TOKEN is not set and no "
            "Hugging Face login is saved)") in err
    assert "https://huggingface.co/black-forest-labs/FLUX.1-dev, accept its licence" in err and "HF_TOKEN" in err
    assert not where(comfy, catalogue, "flux1_dev").exists()
    assert where(comfy, catalogue, "clip_l").exists()  # the rest of the workflow's files are fetched
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_secret_value")
    code, _, err = run(comfy, catalogue, WORKFLOW)
    assert code == 1 and "(HTTP 403; HF_TOKEN is set but was refused)" in err and "hf_wrong_secret_value" not in err


def test_a_refused_login_token_is_named_as_such(hub, catalogue, comfy, monkeypatch):
    """The token `hf auth login` saved ($HF_HOME/token) is sent; refused, the message says so, not 'no HF_TOKEN'."""
    monkeypatch.delenv("HF_TOKEN")
    saved = Path(os.environ["HF_HOME"]) / "token"
    saved.write_text("hf_stored_but_refused\n")
    code, _, err = run(comfy, catalogue, "flux1-dev.safetensors")
    assert code == 1 and "HF_TOKEN is not set and no" not in err and "hf_stored_but_refused" not in err
    assert f"(HTTP 403; the token saved by the Hugging Face login ({saved}) was refused; HF_TOKEN is not set)" in err
    assert "log in again with a read token of that account (hf auth login" in err
    saved.write_text(TOKEN + "\n")
    assert run(comfy, catalogue, "flux1-dev.safetensors")[0] == 0
    assert where(comfy, catalogue, "flux1_dev").read_bytes() == content("flux1_dev")


def test_disk_too_small_is_refused_before_downloading(hub, catalogue, comfy, monkeypatch):
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: _usage(10))
    code, out, err = run(comfy, catalogue, "--missing")
    assert code == 1 and "needs" in err and "free. Free some space" in err
    assert not [r for r in hub.requests if r[0] == "GET"]  # stopped at the first file, before any transfer


def _usage(free):
    return type("Usage", (), {"free": free, "total": free, "used": 0})()


@pytest.mark.parametrize("key", ["pulid_flux", "bisenet"])  # a Hugging Face file, a GitHub release asset
def test_disk_full_while_writing(hub, catalogue, comfy, monkeypatch, key):
    """The disk fills up after the first chunk: the message says so, and the chunk stays for the next run."""
    real_open = open

    class Full:
        def __init__(self, handle):
            self.handle, self.writes = handle, 0

        def write(self, data):
            self.writes += 1
            if self.writes > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def full_disk(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return Full(handle) if str(file).endswith(".part") and "a" in mode else handle

    monkeypatch.setattr(download, "open", full_disk, raising=False)
    only = type(catalogue)(tuple(m for m in catalogue.pack if m.key == key), ())
    code, out, err = run(comfy, only, "--missing")
    assert code == 1 and "is full" in err and "Free some space" in err and "continues where it stopped" in err
    assert not where(comfy, catalogue, key).exists() and partial_of(comfy, catalogue, key).stat().st_size == 1024


def test_ctrl_c_keeps_what_was_fetched_and_the_next_run_continues_it(hub, catalogue, comfy):
    path = served_path(CATALOGUE.by_key("pulid_flux"))
    hub.hold.add(path)
    part, half = partial_of(comfy, catalogue, "pulid_flux"), len(content("pulid_flux")) // 2

    def interrupt():  # once the client has read the half the server sent (all but its write buffer on disk)
        deadline = time.monotonic() + 10
        while hub.holding.wait(10) and time.monotonic() < deadline:
            if part.exists() and part.stat().st_size >= half - 8192:
                time.sleep(0.2)
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                return
            time.sleep(0.01)

    threading.Thread(target=interrupt, daemon=True).start()
    code, out, err = run(comfy, catalogue, "--missing")
    hub.release.set()
    assert code == download.EXIT_INTERRUPTED
    target = where(comfy, catalogue, "pulid_flux")
    assert f"interrupted; nothing was saved under {target}" in err and "run the command again to continue" in err
    assert not target.exists() and [p.name for p in target.parent.iterdir() if p.is_file()] == []
    kept = part.stat().st_size
    assert half - 8192 <= kept <= half  # what the client had read when it was interrupted
    hub.hold.clear()
    before = hub.served[path]
    code, _, err = run(comfy, catalogue, "--missing")
    assert code == 0, err
    assert hub.gets(path)[-1] == f"bytes={kept}-" and hub.served[path] - before == len(content("pulid_flux")) - kept
    assert target.read_bytes() == content("pulid_flux")


def test_choosing_what_to_download(hub, catalogue, comfy):
    assert run(comfy, catalogue)[0] == 2
    assert run(comfy, catalogue, "--all", "--missing")[0] == 2
    code, _, err = run(comfy, catalogue, "nope")
    assert code == 2 and "no shipped workflow or model file named nope" in err and WORKFLOW in err
    assert "t5xxl_fp8_e4m3fn.safetensors" in err
    assert run(comfy, catalogue, "remote_api_face_migration")[1].splitlines()[-3:] == [
        "Nothing to download.", "", "All the requested model files are in place."]


def test_a_file_of_the_table_is_fetched_by_its_name(hub, catalogue, comfy):
    """t5xxl_fp8_e4m3fn.safetensors is in no workflow (nor --missing), yet the README's table lists it."""
    code, out, err = run(comfy, catalogue, "t5xxl_fp8_e4m3fn.safetensors")
    assert code == 0, err
    assert "1 file(s) to download" in out
    assert (comfy / "models" / "text_encoders" / "t5xxl_fp8_e4m3fn.safetensors").read_bytes() == content("t5xxl_fp8")
    readme = (REPO / "README.md").read_text()
    assert "python -m face_migration download t5xxl_fp8_e4m3fn.safetensors" in readme


def test_a_file_check_models_verify_called_wrong_is_replaced(hub, catalogue, comfy, monkeypatch):
    """Same size, another SHA-256: `check-models --verify` says WRONG FILE and `download --missing` replaces it
    (the hash is remembered); without a computed hash `download --verify` computes it."""
    bisenet, scrfd = where(comfy, catalogue, "bisenet"), where(comfy, catalogue, "scrfd")
    for path, key in ((bisenet, "bisenet"), (scrfd, "scrfd")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(len(content(key))))
    parser = argparse.ArgumentParser()
    check_models.add_arguments(parser)
    report = io.StringIO()
    args = parser.parse_args(["--comfyui", str(comfy), "--verify"])
    check_models.run(args, report, io.StringIO(), type(catalogue)((catalogue.by_key("bisenet"),), ()))
    assert "WRONG FILE: another file: same size, but SHA-256" in report.getvalue()
    code, out, err = run(comfy, catalogue, "--missing")
    assert code == 0, err
    assert (f"parsing_bisenet.pth -> {bisenet} (replacing the file there: another file: same size, but SHA-256 "
            f"{hashlib.sha256(bytes(len(content('bisenet')))).hexdigest()} differs from the published") in out
    assert bisenet.read_bytes() == content("bisenet")
    assert f"in place: scrfd_10g_bnkps.onnx ({scrfd})" in out  # never hashed: not known to be wrong
    code, out, err = run(comfy, catalogue, "--missing", "--verify")
    assert code == 0 and "(replacing the file there: another file: same size, but SHA-256" in out
    assert scrfd.read_bytes() == content("scrfd")


def test_another_models_file_under_the_name_is_kept_under_its_own(hub, catalogue, comfy):
    """The fp8 T5 saved as t5xxl_fp16.safetensors: it is named, and kept as t5xxl_fp8_e4m3fn.safetensors."""
    fp16 = where(comfy, catalogue, "t5xxl_fp16")
    fp16.parent.mkdir(parents=True)
    fp16.write_bytes(content("t5xxl_fp8"))
    code, out, err = run(comfy, catalogue, "flux1_schnell_pulid_4steps")
    assert code == 0, err
    assert "(replacing the file there: this is t5xxl_fp8_e4m3fn.safetensors, not t5xxl_fp16.safetensors" in out
    assert "; it is kept as t5xxl_fp8_e4m3fn.safetensors)" in out
    assert fp16.read_bytes() == content("t5xxl_fp16")
    assert (fp16.parent / "t5xxl_fp8_e4m3fn.safetensors").read_bytes() == content("t5xxl_fp8")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_drawn_on_a_terminal(hub, catalogue, comfy):
    """One line redrawn in place (carriage returns) with the percentage, the bytes and the speed."""
    terminal = Terminal()
    code, _, err = run(comfy, catalogue, "pulid_flux_v0.9.1.safetensors", err=terminal)
    assert code == 0, err
    size = download.human_size(len(content("pulid_flux")))
    assert "\r  downloading pulid_flux_v0.9.1.safetensors:  50% (" in err
    assert f"\r  downloading pulid_flux_v0.9.1.safetensors: 100% ({size} of {size}, " in err and "B/s)\n" in err
    assert err.count("\r  downloading") >= 50  # each percent


def test_without_the_packs_requirements_the_hint_is_printed_once():
    """A Python lacking `requests` (the pack's requirements not installed): one hint, no traceback."""
    blocked = ("import sys; sys.modules['requests'] = None; from face_migration.__main__ import main; "
               "sys.exit(main(['download', '--missing', '--comfyui', '.']))")
    result = subprocess.run([sys.executable, "-c", blocked], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("needs the Python package 'requests'") == 1 and "Traceback" not in result.stderr
    assert "pip install -r requirements.txt" in result.stderr and result.stdout == ""


def test_nothing_in_the_pack_starts_a_download():
    """Only the command line imports the download module: no node, loader or import runs it."""
    root = Path(__file__).resolve().parents[1]
    users = [p for p in [*root.glob("face_migration/**/*.py"), *root.glob("nodes/**/*.py"), root / "__init__.py"]
             if "download" in p.read_text() and p.name not in ("download.py", "__main__.py")
             and ("import download" in p.read_text() or ".download import" in p.read_text())]
    assert users == []


def test_the_chroma_workflows_files_are_fetched_without_a_token(hub, catalogue, comfy, monkeypatch):
    """`download chroma_pulid`: Chroma1-HD (lodestones, not gated), T5-XXL alone, the FLUX VAE and the face files,
    each verified against its catalogue entry; no CLIP-L (Chroma reads T5 only)."""
    monkeypatch.delenv("HF_TOKEN")
    code, out, err = run(comfy, catalogue, "chroma_pulid")
    assert code == 0, out + err
    keys = [m.key for m in check_models.workflow_needs(catalogue=catalogue)["chroma_pulid"]]
    assert sorted(keys) == sorted(["chroma1_hd", "t5xxl_fp16", "flux_ae", "pulid_flux", "scrfd", "glintr100",
                                   "eva02_clip_l_336", "bisenet"])
    for key in keys:
        assert where(comfy, catalogue, key).read_bytes() == content(key), key
    assert "8 file(s) to download" in out and "downloading Chroma1-HD.safetensors: 100%" in err
