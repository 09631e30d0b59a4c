"""`download` against a stand-in Hugging Face Hub on loopback (tests/fake_hub.py) serving small files, with a
catalogue whose sizes and hashes are those of the small files."""
import argparse
import builtins
import errno
import hashlib
import io
import signal
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from face_migration import check_models, download
from face_migration.catalog import CATALOGUE

from .fake_hub import TOKEN, FakeHub

pytest.importorskip("huggingface_hub")

WORKFLOW = "flux1_dev_pulid"  # FLUX.1-dev (gated), clip_l, t5xxl, ae, PuLID, antelopev2, EVA, BiSeNet


def content(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest() * (4096 if key == "pulid_flux" else 100)


@pytest.fixture
def hub(monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))  # no token or cache of the user's is read
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the gated FLUX.1-dev needs it; one test removes it
    monkeypatch.setattr(check_models, "user_cache_dir", lambda: str(home / "face_migration"))
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.fixture
def catalogue(hub):
    """Every file served by the stand-in and published in the catalogue with its own size and hash."""
    changes = {}
    for model in CATALOGUE.files:
        data = content(model.key)
        change = {"size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if model.hub_file():
            repo, revision, path = model.hub_file()
            hub.add(f"{repo}/resolve/{revision}/{path}", data, gated=repo == "black-forest-labs/FLUX.1-dev")
        else:  # a GitHub release asset: same path on the stand-in
            change["url"] = hub.url + urlsplit(model.url).path
            hub.add(urlsplit(model.url).path, data)
        changes[model.key] = change
    return CATALOGUE.replace(**changes)


@pytest.fixture
def comfy(tmp_path):
    (tmp_path / "models").mkdir()
    return tmp_path


def run(comfy, catalogue, *argv):
    parser = argparse.ArgumentParser()
    download.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = download.run(parser.parse_args([*argv, "--comfyui", str(comfy)]), out, err, catalogue)
    return code, out.getvalue(), err.getvalue()


def where(comfy, catalogue, key):
    model = catalogue.by_key(key)  # models/<folder>, the folder the README names (clip, not text_encoders)
    return comfy / "models" / model.folder / model.subdirs[0] / model.filename


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
    assert "downloading parsing_bisenet.pth: 100%" in err  # the HTTPS progress; the Hub's bar is huggingface_hub's
    assert TOKEN not in out + err + capsys.readouterr().err
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


def test_a_cut_connection_is_resumed_with_a_range_request(hub, catalogue, comfy, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)  # written in chunks, so half of it is on disk
    path = "guozinan/PuLID/resolve/main/pulid_flux_v0.9.1.safetensors"
    hub.cut_once.add("/" + path)
    code, _, err = run(comfy, catalogue, "--missing")
    assert code == 0, err
    half = len(content("pulid_flux")) // 2
    assert hub.gets(path) == [None, f"bytes={half}-"]
    assert where(comfy, catalogue, "pulid_flux").read_bytes() == content("pulid_flux")


def test_a_cut_https_download_continues_on_the_next_run(hub, catalogue, comfy, monkeypatch):
    monkeypatch.setattr(download, "CHUNK", 256)  # written in chunks, so half of it is on disk
    asset = urlsplit(catalogue.by_key("bisenet").url).path
    hub.cut_once.add(asset)
    code, _, err = run(comfy, catalogue, "--missing")
    assert code == 1 and "parsing_bisenet.pth could not be downloaded" in err and "continues where it stopped" in err
    target = where(comfy, catalogue, "bisenet")
    part = target.parent / download.STAGING / (target.name + ".part")
    kept = part.stat().st_size
    assert not target.exists() and 0 < kept <= len(content("bisenet")) // 2
    code, _, err = run(comfy, catalogue, "--missing")
    assert code == 0, err
    assert hub.gets(asset)[-1] == f"bytes={kept}-"
    assert target.read_bytes() == content("bisenet")


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
    assert "huggingface.co refused flux1-dev.safetensors (HTTP 401; no HF_TOKEN is set)" in err
    assert "https://huggingface.co/black-forest-labs/FLUX.1-dev, accept its licence" in err and "HF_TOKEN" in err
    assert not where(comfy, catalogue, "flux1_dev").exists()
    assert where(comfy, catalogue, "clip_l").exists()  # the rest of the workflow's files are fetched
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_secret_value")
    code, _, err = run(comfy, catalogue, WORKFLOW)
    assert code == 1 and "HF_TOKEN is set but was refused" in err and "hf_wrong_secret_value" not in err


def test_disk_too_small_is_refused_before_downloading(hub, catalogue, comfy, monkeypatch):
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: _usage(10))
    code, out, err = run(comfy, catalogue, "--missing")
    assert code == 1 and "needs" in err and "free. Free some space" in err
    assert not [r for r in hub.requests if r[0] == "GET"]  # stopped at the first file, before any transfer


def _usage(free):
    return type("Usage", (), {"free": free, "total": free, "used": 0})()


@pytest.mark.parametrize("key", ["pulid_flux", "bisenet"])  # through huggingface_hub, and plain HTTPS
def test_disk_full_while_writing(hub, catalogue, comfy, monkeypatch, key):
    """The disk fills up half-way through the file. Plain HTTPS is written by the command itself (its open()
    is given a file whose writes fail); huggingface_hub writes in its own ways, which differ between its
    versions and Pythons, so there its download writes half the file and fails as a full disk makes it."""
    import huggingface_hub

    real_open = io.open

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def full_disk(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return Full(handle) if download.STAGING in str(file) and set(mode) & set("wa") else handle

    def hub_fills_the_disk(repo, path, *, local_dir, **kwargs):
        target = Path(local_dir) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "open", full_disk)
    monkeypatch.setattr(builtins, "open", full_disk)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub_fills_the_disk)
    only = type(catalogue)(tuple(m for m in catalogue.pack if m.key == key), ())
    code, out, err = run(comfy, only, "--missing")
    assert code == 1 and "is full" in err and "Free some space" in err
    assert not where(comfy, catalogue, key).exists()


def test_ctrl_c_leaves_no_partial_file_under_the_real_name(hub, catalogue, comfy):
    hub.hold.add("/guozinan/PuLID/resolve/main/pulid_flux_v0.9.1.safetensors")

    def interrupt():
        if hub.holding.wait(10):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    code, out, err = run(comfy, catalogue, "--missing")
    hub.release.set()
    assert code == download.EXIT_INTERRUPTED
    target = where(comfy, catalogue, "pulid_flux")
    assert f"interrupted; nothing was saved under {target}" in err
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if p.is_file()] == []


def test_choosing_what_to_download(hub, catalogue, comfy):
    assert run(comfy, catalogue)[0] == 2
    assert run(comfy, catalogue, "--all", "--missing")[0] == 2
    code, _, err = run(comfy, catalogue, "nope")
    assert code == 2 and "no shipped workflow named nope" in err and WORKFLOW in err
    assert run(comfy, catalogue, "remote_api_face_migration")[1].splitlines()[-3:] == [
        "Nothing to download.", "", "All the requested model files are in place."]


def test_without_huggingface_hub_the_message_says_how_to_install_it(hub, catalogue, comfy, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    code, _, err = run(comfy, catalogue, "--missing")
    assert code == 1 and "needs the Python package huggingface_hub" in err and "pip install huggingface_hub" in err
    assert where(comfy, catalogue, "bisenet").exists()  # files not on the Hub need no huggingface_hub


def test_nothing_in_the_pack_starts_a_download():
    """Only the command line imports the download module: no node, loader or import runs it."""
    root = Path(__file__).resolve().parents[1]
    users = [p for p in [*root.glob("face_migration/**/*.py"), *root.glob("nodes/**/*.py"), root / "__init__.py"]
             if "download" in p.read_text() and p.name not in ("download.py", "__main__.py")
             and ("import download" in p.read_text() or ".download import" in p.read_text())]
    assert users == []
