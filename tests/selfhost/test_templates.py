"""API workflow templates: lookup by model name with user overrides, placeholder checks, typed filling,
and the two shipped templates."""
import json
from pathlib import Path

import pytest

from face_migration.catalog import BY_KEY
from face_migration.errors import ApiRequestError, ApiTemplateError
from face_migration.remote.params import FaceMigrationParams
from face_migration.selfhost.templates import (PLACEHOLDERS, RESULT_NODE, TemplateCatalog, check_template, fill,
                                               load_template, request_values, user_templates_folder)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "api_templates"


def minimal(unet="a.safetensors") -> dict:
    return {
        "photo": {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}},
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "sampler": {"class_type": "KSampler", "inputs": {"seed": "{{seed}}", "steps": "{{num_inference_steps}}",
                                                         "cfg": 1.0, "model": ["unet", 0]}},
        "result": {"class_type": RESULT_NODE, "inputs": {"images": ["photo", 0], "request_id": "{{request_id}}"}},
    }


def write(folder: Path, name: str, prompt) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(prompt) if not isinstance(prompt, str) else prompt)
    return path


def test_user_templates_override_shipped_ones_by_model_name(tmp_path):
    shipped, user = tmp_path / "shipped", user_templates_folder(tmp_path / "user")
    write(shipped, "flux-1-schnell", minimal("shipped.safetensors"))
    write(shipped, "flux-1-dev", minimal("dev.safetensors"))
    catalog = TemplateCatalog([shipped, user])  # the user folder does not exist yet: shipped ones only
    assert catalog.template("flux-1-schnell")["unet"]["inputs"]["unet_name"] == "shipped.safetensors"
    write(user, "flux-1-schnell", minimal("fp8.safetensors"))  # no restart needed
    assert catalog.template("flux-1-schnell")["unet"]["inputs"]["unet_name"] == "fp8.safetensors"
    assert catalog.template("flux-1-dev")["unet"]["inputs"]["unet_name"] == "dev.safetensors"
    assert sorted(catalog.files()) == ["flux-1-dev", "flux-1-schnell"]


def test_an_unknown_model_is_a_400_listing_the_models_and_never_a_path(tmp_path):
    write(tmp_path, "flux-1-schnell", minimal())
    write(tmp_path.parent, "escape", minimal())
    catalog = TemplateCatalog([tmp_path])
    for model in ("flux-2", "../escape", str(tmp_path.parent / "escape"), "flux-1-schnell.json"):
        with pytest.raises(ApiRequestError, match="model: no template for .*use one of flux-1-schnell") as caught:
            catalog.template(model)
        assert caught.value.status == 400
        assert str(tmp_path) not in str(caught.value) and str(tmp_path) in caught.value.detail  # for the log


def test_a_broken_template_tells_the_client_its_model_and_only_the_log_its_file(tmp_path):
    path = write(tmp_path, "flux-1-schnell", "{not json")
    with pytest.raises(ApiTemplateError) as caught:
        TemplateCatalog([tmp_path]).template("flux-1-schnell")
    message = str(caught.value)
    assert "'flux-1-schnell'" in message and str(tmp_path) not in message and ".json" not in message
    assert str(path) in caught.value.detail and "not readable JSON" in caught.value.detail
    assert caught.value.status == 503 and caught.value.retryable is False


def test_fill_puts_typed_values_in_place_of_placeholders_and_leaves_the_template_alone():
    template = minimal()
    params = FaceMigrationParams(prompt=" a portrait ", size="1024x768", guidance_scale=3.5, num_inference_steps=4,
                                 id_weight=1, id_timestep_start=1, seed=99)
    values = request_values(params, "face_migration_api/x.png [temp]", "req1")
    assert set(values) == set(PLACEHOLDERS)
    assert (values["width"], values["height"], values["prompt"], values["id_weight"]) == (1024, 768, "a portrait", 1.0)
    prompt = fill(template, values)
    assert prompt["photo"]["inputs"]["image"] == "face_migration_api/x.png [temp]"
    assert prompt["sampler"]["inputs"] == {"seed": 99, "steps": 4, "cfg": 1.0, "model": ["unet", 0]}
    assert prompt["result"]["inputs"]["request_id"] == "req1"
    assert template == minimal()


@pytest.mark.parametrize("change, named", [
    (lambda t: t["sampler"]["inputs"].update(seed="{{noise}}"), "seed = '{{noise}}' is not a placeholder"),
    (lambda t: t["sampler"]["inputs"].update(seed="x {{seed}}"), "is not a placeholder; a placeholder is a whole"),
    (lambda t: t["photo"]["inputs"].update(image="face.png"), "no {{image}}"),
    (lambda t: t.pop("result"), "no {{request_id}}"),
    (lambda t: t["unet"].pop("class_type"), "node unet needs 'class_type' and 'inputs'"),
])
def test_a_broken_template_is_refused_naming_the_file_and_the_fix(tmp_path, change, named):
    template = minimal()
    change(template)
    path = write(tmp_path, "broken", template)
    with pytest.raises(ApiTemplateError) as caught:
        load_template(path)
    assert named in str(caught.value) and str(path) in str(caught.value)
    assert caught.value.status == 503


def test_a_ui_workflow_or_bad_json_is_refused(tmp_path):
    with pytest.raises(ApiTemplateError, match="not readable JSON"):
        load_template(write(tmp_path, "bad", "{not json"))
    ui = json.loads((REPO / "workflows" / "flux1_schnell_pulid_4steps.json").read_text())
    with pytest.raises(ApiTemplateError, match="export it with 'Save \\(API\\)'"):
        check_template(ui, "ui.json")


def shipped_widgets(workflow_name: str) -> dict:
    workflow = json.loads((REPO / "workflows" / workflow_name).read_text())
    return {node["type"]: node.get("widgets_values") for node in workflow["nodes"]}


@pytest.mark.parametrize("model, workflow, unet", [
    ("flux-1-schnell", "flux1_schnell_pulid_4steps.json", "flux1-schnell.safetensors"),
    ("flux-1-dev", "flux1_dev_pulid.json", "flux1-dev.safetensors"),
])
def test_shipped_templates_use_the_standard_files_and_every_request_value(model, workflow, unet):
    prompt = TemplateCatalog([SHIPPED]).template(model)
    inputs = {node["class_type"]: node["inputs"] for node in prompt.values()}
    assert inputs["UNETLoader"]["unet_name"] == unet
    assert (inputs["DualCLIPLoader"]["clip_name1"], inputs["DualCLIPLoader"]["clip_name2"],
            inputs["VAELoader"]["vae_name"]) == ("clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors")
    assert inputs["FaceMigration_PulidModelLoader"]["pulid_file"] == BY_KEY["pulid_flux"].filename
    assert inputs["FaceMigration_EvaClipLoader"]["eva_file"] == BY_KEY["eva02_clip_l_336"].filename
    # The loaders and Encode Face are set as in the shipped workflow of the same model.
    widgets = shipped_widgets(workflow)
    for kind, names in (("FaceMigration_FaceParsingLoader", ("parsing_file", "landmark_file")),
                        ("FaceMigration_FaceAnalysisLoader", ("provider",)), ("UNETLoader", ("unet_name",)),
                        ("FaceMigration_EncodeFace", ("face_order", "face_index", "combine", "skip_faceless"))):
        assert [inputs[kind][n] for n in names] == widgets[kind][:len(names)]
    text = json.dumps(prompt)
    assert all("{{%s}}" % name in text for name in PLACEHOLDERS)
    assert inputs["FaceMigration_ApplyPulid"]["timing"] == "steps"  # id_timestep_start is a step number
    assert inputs["FaceMigration_ApplyPulid"]["start_step"] == "{{id_timestep_start}}"
    assert inputs["FluxGuidance"]["guidance"] == "{{guidance_scale}}" and inputs["KSampler"]["cfg"] == 1.0
    assert inputs[RESULT_NODE]["images"][0] == next(k for k, n in prompt.items() if n["class_type"] == "ImageScale")
