"""check-models against fake ComfyUI trees made of tiny files."""
import argparse
import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from face_migration import catalog, check_models
from face_migration.catalog import CATALOGUE, Catalogue

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
DATA = b"weights"


def published_as(data: bytes, catalogue: Catalogue = CATALOGUE) -> Catalogue:
    """The catalogue with every file published as `data` (tiny stand-ins for the real weights)."""
    digest = hashlib.sha256(data).hexdigest()
    return catalogue.replace(**{m.key: {"size_bytes": len(data), "sha256": digest} for m in catalogue.files})


SMALL = published_as(DATA)
MODEL_FILES, CORE_MODEL_FILES = SMALL.pack, SMALL.core
BY_KEY = {m.key: m for m in SMALL.files}


def parse(argv):
    parser = argparse.ArgumentParser()
    check_models.add_arguments(parser)
    return parser.parse_args(argv)


def run(argv, catalogue=SMALL):
    out, err = io.StringIO(), io.StringIO()
    code = check_models.run(parse(argv), out, err, catalogue)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def hash_cache(tmp_path_factory, monkeypatch):
    """--verify's cache in a fresh folder per test, never the user's."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setattr(check_models, "user_cache_dir", lambda: str(folder))
    return folder / "sha256.json"


def place(root, model, name=None, data=DATA):
    path = os.path.join(root, model.subdirs[0], name or model.filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def models_root(comfy, folder):
    return os.path.join(comfy, "models", {"clip": "text_encoders"}.get(folder, folder))


@pytest.fixture
def comfy(tmp_path):
    (tmp_path / "models").mkdir()
    return str(tmp_path)


def fill(comfy, models=MODEL_FILES, data=DATA):
    return {m.key: place(models_root(comfy, m.folder), m, data=data) for m in models}


def section(text, filename):
    """The lines check-models printed for one file."""
    start = text.index(f"] {filename} (")
    end = text.find("\n\n", start)
    return text[text.rindex("[", 0, start):end if end >= 0 else None]


def test_all_found_exits_0_and_prints_path_size_hash_folder_url(comfy):
    paths = fill(comfy, MODEL_FILES + CORE_MODEL_FILES)
    code, out, _ = run(["--comfyui", comfy, "--verify"])
    assert code == 0, out
    digest = hashlib.sha256(DATA).hexdigest()
    for model in MODEL_FILES:
        text = section(out, model.filename)
        assert text.startswith("[ok]")
        assert paths[model.key] in text
        assert "(7 bytes)" in text
        assert f"sha256: {digest} (matches the published value)" in text
        assert model.display_folder in text and model.url in text
    assert out.splitlines()[-1] == "All required model files are in place (SHA-256 verified for 12 of 12)."


def test_missing_required_file_exits_1_with_the_loader_message(comfy):
    fill(comfy, [m for m in MODEL_FILES if m.key != "glintr100"])
    code, out, _ = run(["--comfyui", comfy, "--no-hash"])
    assert code == 1
    model = BY_KEY["glintr100"]
    expected = catalog.missing_file_message(model, [os.path.join(comfy, "models", "insightface")])
    assert expected in section(out, model.filename)
    assert section(out, model.filename).startswith("[MISSING]")
    assert "glintr100.onnx" in out.splitlines()[-1]


def test_missing_optional_file_still_exits_0(comfy):
    optional = [m for m in MODEL_FILES if m.optional]
    assert optional, "the catalogue marks facexlib's RetinaFace optional"
    fill(comfy, [m for m in MODEL_FILES if not m.optional])
    code, out, _ = run(["--comfyui", comfy, "--no-hash"])
    assert code == 0
    assert section(out, optional[0].filename).startswith("[MISSING]")


def test_sizes_only_without_verify(comfy, monkeypatch):
    fill(comfy, MODEL_FILES + CORE_MODEL_FILES)
    monkeypatch.setattr(check_models, "sha256_of", lambda *a: pytest.fail("hashed without --verify"))
    for argv in (["--comfyui", comfy], ["--comfyui", comfy, "--no-hash"]):  # the old switch is still accepted
        code, out, _ = run(argv)
        assert code == 0 and "size matches the published one; SHA-256 not computed (--verify compares it)" in out
        assert "sizes match the published ones; --verify also compares SHA-256" in out.splitlines()[-1]


def test_known_hash_and_size_are_compared(comfy):
    table = SMALL.replace(bisenet={"sha256": "0" * 64})  # same size, another hash
    fill(comfy, table.pack)
    code, out, err = run(["--comfyui", comfy, "--verify"], table)
    assert code == 1
    assert "(matches the published value)" in section(out, "pulid_flux_v0.9.1.safetensors")
    bad_text = section(out, "parsing_bisenet.pth")
    assert bad_text.startswith("[PROBLEM]")
    assert "WRONG FILE: another file: same size, but SHA-256" in bad_text and "0" * 64 in bad_text
    assert "python -m face_migration download --missing" in bad_text
    assert "hashing parsing_bisenet.pth: 100%" in err  # progress on stderr
    assert out.splitlines()[-1].startswith("1 file(s) missing or wrong (wrong: parsing_bisenet.pth)")


def test_summary_line_is_true_when_text_encoders_are_missing(comfy):
    fill(comfy, MODEL_FILES + tuple(BY_KEY[k] for k in ("flux1_dev", "flux1_schnell", "chroma1_hd", "flux_ae")))
    code, out, _ = run(["--comfyui", comfy])
    last = out.splitlines()[-1]
    assert code == 0 and not last.startswith("All required")
    missing = last.removeprefix("Missing for the shipped workflows: ").split(" (")[0]
    assert sorted(missing.split(", ")) == ["clip_l.safetensors", "t5xxl_fp16.safetensors"], last
    assert "download --missing" in last


def test_wrong_files_under_the_real_names_say_which_and_how(comfy):
    """The published catalogue: an HTML page, a truncated download and other files under the real names."""
    pulid, scrfd, glint, bisenet = (CATALOGUE.by_key(k) for k in ("pulid_flux", "scrfd", "glintr100", "bisenet"))
    page = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Access denied</body></html>\n"
    place(models_root(comfy, "pulid"), pulid, data=page)
    place(models_root(comfy, "facexlib"), bisenet, data=b"\x80\x02" + bytes(1000))
    for model, size in ((scrfd, scrfd.size_bytes), (glint, glint.size_bytes + 1)):  # sparse, no disk used
        with open(place(models_root(comfy, "insightface"), model, data=b""), "wb") as handle:
            handle.truncate(size)
    code, out, _ = run(["--comfyui", comfy, "--verify"], CATALOGUE)
    assert code == 1
    assert f"WRONG FILE: an HTML page ({len(page)} bytes), not the model" in section(out, pulid.filename)
    assert "WRONG FILE: truncated: 1,002 of 53,289,463 bytes (0%)" in section(out, bisenet.filename)
    assert "WRONG FILE: another file: 260,665,335 bytes, the published glintr100.onnx has 260,665,334" in \
        section(out, glint.filename)
    assert "WRONG FILE: another file: same size, but SHA-256" in section(out, scrfd.filename)
    assert all(section(out, m.filename).startswith("[PROBLEM]") for m in (pulid, scrfd, glint, bisenet))
    assert out.splitlines()[-1].startswith("5 file(s) missing or wrong (missing: EVA02_CLIP_L_336_psz14_s6B.pt; "
                                           "wrong: pulid_flux_v0.9.1.safetensors, scrfd_10g_bnkps.onnx, ")


def test_html_page_is_found_without_a_published_size(comfy):
    pulid = BY_KEY["pulid_flux"]
    place(models_root(comfy, "pulid"), pulid, name=pulid.alternatives[0], data=b"\n  <html><body>404</body></html>")
    code, out, _ = run(["--comfyui", comfy], Catalogue((pulid,), ()))
    assert code == 1 and "WRONG FILE: an HTML page (32 bytes)" in out


def test_verify_remembers_hashes_by_path_size_and_time(comfy, monkeypatch, hash_cache):
    paths = fill(comfy)
    assert run(["--comfyui", comfy, "--verify"])[0] == 0 and hash_cache.is_file()
    real = check_models.sha256_of
    monkeypatch.setattr(check_models, "sha256_of", lambda *a: pytest.fail("hashed again"))
    code, out, err = run(["--comfyui", comfy, "--verify"])
    assert code == 0 and "hashing" not in err and out.count("(matches the published value)") == 6
    stat = os.stat(paths["bisenet"])
    os.utime(paths["bisenet"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a changed file
    hashed = []
    monkeypatch.setattr(check_models, "sha256_of", lambda path, progress: hashed.append(path) or real(path, progress))
    assert run(["--comfyui", comfy, "--verify"])[0] == 0 and hashed == [paths["bisenet"]]


def test_the_published_catalogue_cites_every_value():
    for model in CATALOGUE.files:
        assert isinstance(model.size_bytes, int) and model.size_bytes > 1_000_000, model.key
        assert len(model.sha256) == 64 and int(model.sha256, 16) >= 0, model.key
        assert model.checksum_source, model.key
    # FLUX.1-dev/schnell are verified against BFL's published hashes, so they are fetched from BFL's repositories
    assert CATALOGUE.by_key("flux1_dev").hub_file() == ("black-forest-labs/FLUX.1-dev", "main", "flux1-dev.safetensors")
    assert CATALOGUE.by_key("flux_ae").hub_file()[2] == "split_files/vae/ae.safetensors"
    assert CATALOGUE.by_key("bisenet").hub_file() is None  # a GitHub release asset


def test_alternative_filename_is_found_and_not_held_to_the_main_hash(comfy):
    pulid = BY_KEY["pulid_flux"]
    path = place(models_root(comfy, "pulid"), pulid, name=pulid.alternatives[0], data=b"other size")
    code, out, _ = run(["--comfyui", comfy, "--verify"], Catalogue((pulid,), ()))
    assert code == 0 and path in out
    assert "size/hash not published in the catalogue; not verified" in section(out, pulid.filename)
    assert out.splitlines()[-1].endswith("not verifiable (no published size/hash): pulid_flux_v0.9.1.safetensors).")


def test_clip_folder_uses_comfyui_legacy_directories(comfy):
    eva = BY_KEY["eva02_clip_l_336"]
    path = place(os.path.join(comfy, "models", "clip"), eva)  # models/clip is the second text_encoders dir
    code, out, _ = run(["--comfyui", comfy], Catalogue((eva,), ()))
    assert code == 0 and path in out


def test_antelopev2_nested_subfolder_is_accepted(comfy):
    scrfd = BY_KEY["scrfd"]
    path = os.path.join(comfy, "models", "insightface", scrfd.subdirs[1], scrfd.filename)
    os.makedirs(os.path.dirname(path))
    Path(path).write_bytes(DATA)
    code, out, _ = run(["--comfyui", comfy], Catalogue((scrfd,), ()))
    assert code == 0 and path in out


def test_extra_model_paths_yaml_is_followed(comfy, tmp_path_factory):
    yaml = pytest.importorskip("yaml")
    elsewhere = tmp_path_factory.mktemp("shared_models")
    pulid, eva = BY_KEY["pulid_flux"], BY_KEY["eva02_clip_l_336"]
    pulid_path = place(str(elsewhere / "pulid_weights"), pulid)
    eva_path = place(str(elsewhere / "encoders"), eva)
    config = {"shared": {"base_path": str(elsewhere), "pulid": "pulid_weights",
                         "clip": "nothing_here\nencoders\n"}}  # legacy name and a multi-line value
    with open(os.path.join(comfy, "extra_model_paths.yaml"), "w") as handle:
        yaml.safe_dump(config, handle)
    code, out, _ = run(["--comfyui", comfy], Catalogue((pulid, eva), ()))
    assert code == 0, out
    assert pulid_path in out and eva_path in out


def test_extra_config_flag_relative_paths_and_is_default_order(comfy, tmp_path_factory):
    pytest.importorskip("yaml")
    other = tmp_path_factory.mktemp("other")
    (other / "cfg.yaml").write_text("a:\n  is_default: true\n  pulid: first\nb:\n  pulid: last\n")
    folders = check_models.build_folder_map(comfy, [str(other / "cfg.yaml")])
    assert folders.roots("pulid") == [str(other / "first"), os.path.join(comfy, "models", "pulid"),
                                      str(other / "last")]


def test_yaml_not_importable_is_reported_not_fatal(comfy, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_yaml(name, *args, **kwargs):
        if name == "yaml":
            raise ImportError("no yaml")
        return real_import(name, *args, **kwargs)

    open(os.path.join(comfy, "extra_model_paths.yaml"), "w").write("x:\n  pulid: y\n")
    monkeypatch.setattr(builtins, "__import__", no_yaml)
    folders = check_models.build_folder_map(comfy, [])
    assert "PyYAML is not installed" in folders.notes[0]
    assert folders.roots("pulid") == [os.path.join(comfy, "models", "pulid")]


def test_comfyui_path_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYUI_PATH", "/from/env")
    assert check_models.default_comfyui_path() == "/from/env"
    monkeypatch.delenv("COMFYUI_PATH")
    installed = tmp_path / "ComfyUI" / "custom_nodes" / "face-migration" / "face_migration" / "check_models.py"
    monkeypatch.setattr(check_models, "__file__", str(installed))
    assert check_models.default_comfyui_path() == str(tmp_path / "ComfyUI")
    monkeypatch.setattr(check_models, "__file__", str(tmp_path / "checkout" / "face_migration" / "x.py"))
    code, _, err = run([])
    assert code == 2 and "--comfyui PATH" in err


def test_not_a_folder(tmp_path):
    code, _, err = run(["--comfyui", str(tmp_path / "nope")])
    assert code == 2 and "is not a folder" in err


# ---------------------------------------------------------------------------------------------------
# Files of the shipped workflows (read from workflows/*.json)

def shipped_workflows():
    return {path.stem: json.loads(path.read_text()) for path in sorted(WORKFLOWS.glob("*.json"))}


def test_flux_text_encoders_and_vae_are_checked_with_the_workflows_needing_them(comfy):
    code, out, _ = run(["--comfyui", comfy, "--no-hash"])
    dev = section(out, "flux1-dev.safetensors")
    assert dev.startswith("[MISSING]") and "models/diffusion_models" in dev and "huggingface.co/Comfy-Org" in dev
    assert "workflows: flux1_dev_pulid, flux1_dev_pulid_two_people, identity_round_trip\n" in dev + "\n"
    for name in ("clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors"):
        text = section(out, name)
        assert text.startswith("[MISSING]") and "local_vs_remote" in text and "flux1_schnell_pulid_4steps" in text
    assert "    remote_api_face_migration: needs no model file" in out


def test_every_file_a_shipped_workflow_names_is_checked():
    """Each `models` entry and each catalogue file a workflow's widgets name is in that workflow's needs."""
    needs = check_models.workflow_needs()
    assert set(needs) == set(shipped_workflows())
    for name, workflow in shipped_workflows().items():
        needed = {m.filename for m in needs[name]}
        assert {e["name"].split("/")[-1] for e in workflow["models"]} <= needed, name
        if any(n["type"] == "FaceMigration_FaceAnalysisLoader" for n in workflow["nodes"]):
            assert {"scrfd_10g_bnkps.onnx", "glintr100.onnx"} <= needed, name


def test_needs_come_from_the_workflow_json(tmp_path):
    workflow = {"nodes": [
        {"type": "VAELoader", "mode": 0, "widgets_values": ["ae.safetensors"]},
        {"type": "FaceMigration_FaceAnalysisLoader", "mode": 0, "widgets_values": ["auto"]},
        {"type": "UNETLoader", "mode": 4, "widgets_values": ["flux1-dev.safetensors", "default"]},  # bypassed
        {"type": "FaceMigration_EvaClipLoader", "widgets_values": {"eva_file": "EVA02_CLIP_L_336_psz14_s6B.pt"}},
        {"type": "CLIPTextEncode", "mode": 0, "widgets_values": ["a photo"]}]}
    (tmp_path / "mine.json").write_text(json.dumps(workflow))
    needs = check_models.workflow_needs(str(tmp_path))
    assert [m.filename for m in needs["mine"]] == ["ae.safetensors", "scrfd_10g_bnkps.onnx", "glintr100.onnx",
                                                   "EVA02_CLIP_L_336_psz14_s6B.pt"]


def test_one_workflow_needs_all_its_files(comfy):
    needs = check_models.workflow_needs()["flux1_schnell_pulid_4steps"]
    paths = fill(comfy, needs)
    code, out, _ = run(["--comfyui", comfy, "--no-hash", "--workflow", "flux1_schnell_pulid_4steps"])
    assert code == 0, out
    assert "flux1-dev.safetensors" not in out and "    flux1_schnell_pulid_4steps: ready" in out
    os.remove(paths["flux1_schnell"])
    code, out, _ = run(["--comfyui", comfy, "--no-hash", "--workflow", "flux1_schnell_pulid_4steps"])
    assert code == 1 and section(out, "flux1-schnell.safetensors").startswith("[MISSING]")
    assert "flux1_schnell_pulid_4steps: missing flux1-schnell.safetensors" in out


def test_unknown_workflow_name(comfy):
    code, _, err = run(["--comfyui", comfy, "--workflow", "nope"])
    assert code == 2 and "no shipped workflow named nope" in err and "flux1_dev_pulid" in err


def test_every_found_file_with_a_published_hash_is_hashed_with_verify(comfy, monkeypatch):
    fill(comfy, MODEL_FILES + CORE_MODEL_FILES)
    hashed = []
    monkeypatch.setattr(check_models, "sha256_of", lambda path, progress: hashed.append(path) or "0" * 64)
    run(["--comfyui", comfy, "--verify"])
    needs = check_models.workflow_needs(catalogue=SMALL).values()
    checked = {m.filename for m in MODEL_FILES} | {m.filename for files in needs for m in files}
    assert sorted(os.path.basename(p) for p in hashed) == sorted(checked)


def test_a_missing_files_message_names_the_download_command():
    """What a loader's validation error and a node's missing-file error say (issue: the frontends' Missing
    Models panel cannot download every file, so the node's error must say how to get it)."""
    for model in catalog.MODEL_FILES:
        hint = model.download_hint()
        assert model.url in hint and "python -m face_migration download --missing" in hint


def test_a_chosen_file_is_found_by_name_in_the_accepted_folders_only(tmp_path):
    """Load Face Analysis's file widgets name a file of antelopev2's folders (nested layout too); a path is
    never followed out of them."""
    scrfd = catalog.BY_KEY["scrfd"]
    roots = [str(tmp_path / "insightface")]
    nested = tmp_path / "insightface" / "models" / "antelopev2" / "antelopev2"
    nested.mkdir(parents=True)
    (nested / "scrfd_2.5g.onnx").write_bytes(DATA)
    (tmp_path / "outside.onnx").write_bytes(DATA)
    assert catalog.find_in_folders(scrfd, roots, "scrfd_2.5g.onnx") == str(nested / "scrfd_2.5g.onnx")
    assert catalog.find_in_folders(scrfd, roots) is None  # the catalogue's own name is not there
    for path in ("../../../../outside.onnx", "..\\..\\..\\..\\outside.onnx", str(tmp_path / "outside.onnx")):
        assert catalog.find_in_folders(scrfd, roots, path) is None
    assert "scrfd_2.5g.onnx (SCRFD face detector" in catalog.missing_file_message(scrfd, roots, "scrfd_2.5g.onnx")


def test_another_catalogue_file_is_named_by_its_size_not_called_truncated(comfy):
    """flux1-schnell under flux1-dev's name, the fp8 T5 under the fp16 name (sparse files of the published sizes)."""
    for wrong, right in (("flux1_schnell", "flux1_dev"), ("t5xxl_fp8", "t5xxl_fp16")):
        model, other = CATALOGUE.by_key(right), CATALOGUE.by_key(wrong)
        with open(place(models_root(comfy, model.folder), model, data=b""), "wb") as handle:
            handle.truncate(other.size_bytes)
    code, out, _ = run(["--comfyui", comfy, "--workflow", "flux1_dev_pulid"], CATALOGUE)
    assert code == 1
    dev, t5 = section(out, "flux1-dev.safetensors"), section(out, "t5xxl_fp16.safetensors")
    assert "WRONG FILE: this is flux1-schnell.safetensors, not flux1-dev.safetensors: 23,782,506,688 bytes is the " \
           "published size of flux1-schnell.safetensors" in dev and "truncated" not in dev
    assert "WRONG FILE: this is t5xxl_fp8_e4m3fn.safetensors, not t5xxl_fp16.safetensors" in t5
    assert "truncated" not in t5
    assert "Fix: rename it to t5xxl_fp8_e4m3fn.safetensors (in models/text_encoders/)" in t5


def test_a_hash_computed_before_calls_a_file_wrong_without_verify(comfy, monkeypatch):
    """One rule with `download`: a SHA-256 remembered from an earlier --verify counts without hashing again."""
    table = SMALL.replace(bisenet={"sha256": "0" * 64})
    fill(comfy, table.pack)
    assert run(["--comfyui", comfy, "--verify"], table)[0] == 1
    monkeypatch.setattr(check_models, "sha256_of", lambda *a: pytest.fail("hashed without --verify"))
    code, out, _ = run(["--comfyui", comfy], table)
    assert code == 1 and "WRONG FILE: another file: same size, but SHA-256" in section(out, "parsing_bisenet.pth")
    assert f"sha256: {hashlib.sha256(DATA).hexdigest()} (matches the published value)" in \
        section(out, "pulid_flux_v0.9.1.safetensors")
