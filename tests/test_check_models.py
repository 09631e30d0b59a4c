"""check-models against fake ComfyUI trees made of tiny files."""
import argparse
import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from face_migration import catalog, check_models
from face_migration.catalog import BY_KEY, CORE_MODEL_FILES, MODEL_FILES

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def parse(argv):
    parser = argparse.ArgumentParser()
    check_models.add_arguments(parser)
    return parser.parse_args(argv)


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = check_models.run(parse(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def place(root, model, name=None, data=b"weights"):
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


def fill(comfy, models=MODEL_FILES):
    return {m.key: place(models_root(comfy, m.folder), m) for m in models}


def section(text, filename):
    """The lines check-models printed for one file."""
    start = text.index(f"] {filename} (")
    end = text.find("\n\n", start)
    return text[text.rindex("[", 0, start):end if end >= 0 else None]


def test_all_found_exits_0_and_prints_path_size_hash_folder_url(comfy):
    paths = fill(comfy)
    code, out, _ = run(["--comfyui", comfy])
    assert code == 0, out
    digest = hashlib.sha256(b"weights").hexdigest()
    for model in MODEL_FILES:
        text = section(out, model.filename)
        assert text.startswith("[ok]")
        assert paths[model.key] in text
        assert "(7 bytes)" in text
        assert digest in text and "unknown" in text  # the catalogue has no hashes yet
        assert model.display_folder in text and model.url in text


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


def test_no_hash_skips_hashing(comfy, monkeypatch):
    fill(comfy)
    monkeypatch.setattr(check_models, "sha256_of", lambda *a: pytest.fail("hashed despite --no-hash"))
    code, out, _ = run(["--comfyui", comfy, "--no-hash"])
    assert code == 0 and "not computed (--no-hash)" in out


def test_known_hash_and_size_are_compared(comfy, monkeypatch):
    pulid = BY_KEY["pulid_flux"]
    good = dataclasses.replace(pulid, sha256=hashlib.sha256(b"weights").hexdigest(), size_bytes=7)
    bad = dataclasses.replace(BY_KEY["bisenet"], sha256="0" * 64, size_bytes=1000)
    table = tuple(good if m.key == pulid.key else bad if m.key == bad.key else m for m in MODEL_FILES)
    monkeypatch.setattr(check_models, "MODEL_FILES", table)
    fill(comfy, table)
    code, out, err = run(["--comfyui", comfy])
    assert code == 1
    assert "(matches)" in section(out, good.filename)
    bad_text = section(out, bad.filename)
    assert bad_text.startswith("[PROBLEM]")
    assert "MISMATCH: expected " + "0" * 64 in bad_text and "expected 1,000" in bad_text
    assert "hashing parsing_bisenet.pth: 100%" in err  # progress on stderr


def test_alternative_filename_is_found_and_not_held_to_the_main_hash(comfy, monkeypatch):
    pulid = dataclasses.replace(BY_KEY["pulid_flux"], sha256="0" * 64)
    monkeypatch.setattr(check_models, "MODEL_FILES", (pulid,))
    path = place(models_root(comfy, "pulid"), pulid, name=pulid.alternatives[0])
    code, out, _ = run(["--comfyui", comfy])
    assert code == 0 and path in out and "known value: unknown" in out


def test_clip_folder_uses_comfyui_legacy_directories(comfy, monkeypatch):
    eva = BY_KEY["eva02_clip_l_336"]
    monkeypatch.setattr(check_models, "MODEL_FILES", (eva,))
    path = place(os.path.join(comfy, "models", "clip"), eva)  # models/clip is the second text_encoders dir
    code, out, _ = run(["--comfyui", comfy, "--no-hash"])
    assert code == 0 and path in out


def test_antelopev2_nested_subfolder_is_accepted(comfy, monkeypatch):
    scrfd = BY_KEY["scrfd"]
    monkeypatch.setattr(check_models, "MODEL_FILES", (scrfd,))
    path = os.path.join(comfy, "models", "insightface", scrfd.subdirs[1], scrfd.filename)
    os.makedirs(os.path.dirname(path))
    open(path, "wb").close()
    code, out, _ = run(["--comfyui", comfy, "--no-hash"])
    assert code == 0 and path in out


def test_extra_model_paths_yaml_is_followed(comfy, tmp_path_factory, monkeypatch):
    yaml = pytest.importorskip("yaml")
    elsewhere = tmp_path_factory.mktemp("shared_models")
    pulid, eva = BY_KEY["pulid_flux"], BY_KEY["eva02_clip_l_336"]
    monkeypatch.setattr(check_models, "MODEL_FILES", (pulid, eva))
    pulid_path = place(str(elsewhere / "pulid_weights"), pulid)
    eva_path = place(str(elsewhere / "encoders"), eva)
    config = {"shared": {"base_path": str(elsewhere), "pulid": "pulid_weights",
                         "clip": "nothing_here\nencoders\n"}}  # legacy name and a multi-line value
    with open(os.path.join(comfy, "extra_model_paths.yaml"), "w") as handle:
        yaml.safe_dump(config, handle)
    code, out, _ = run(["--comfyui", comfy, "--no-hash"])
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


def test_core_flux_files_are_not_hashed(comfy, monkeypatch):
    fill(comfy, MODEL_FILES + CORE_MODEL_FILES)
    hashed = []
    monkeypatch.setattr(check_models, "sha256_of", lambda path, progress: hashed.append(path) or "0" * 64)
    run(["--comfyui", comfy])
    assert not [p for p in hashed if os.path.basename(p) in {m.filename for m in CORE_MODEL_FILES}]
    assert len(hashed) == len(MODEL_FILES)
