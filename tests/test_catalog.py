"""What the README says about the model files, held to the catalogue that every other place reads: one link per
file (README, check-models, the loaders' messages, the workflows' Missing Models entries), the one place where
`download` fetches from elsewhere and why, and EVA-CLIP's folder under its two names."""
import json
import os
import re
from pathlib import Path

from devkit.workflow_validation import models_directory
from face_migration import check_models
from face_migration.catalog import CATALOGUE, find_in_folders, missing_file_message

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PROSE = " ".join(README.split())


def table_row(filename: str) -> str:
    return next(line for line in README.splitlines() if line.startswith(f"| `{filename}`"))


def test_the_readme_links_what_check_models_the_loaders_and_missing_models_link():
    for model in CATALOGUE.files:
        row = table_row(model.filename)
        first_link = re.search(r"\]\((https?://[^)]+)\)", row.split(" | ")[-1])[1]
        assert first_link == model.url, model.key
        assert model.url in missing_file_message(model, ["/x"])  # a loader's and check-models' message
    for path in sorted((ROOT / "workflows").glob("*.json")):
        for entry in json.loads(path.read_text()).get("models", []):
            assert entry["url"] == CATALOGUE.by_filename(entry["name"]).url, (path.name, entry["name"])


def test_only_the_flux_models_are_fetched_from_elsewhere_and_the_readme_says_where_and_why():
    elsewhere = {m.key: m for m in CATALOGUE.files if m.source_url != m.url}
    assert set(elsewhere) == {"flux1_dev", "flux1_schnell"}
    for model in elsewhere.values():
        repo = model.hub_file()[0]
        assert repo.startswith("black-forest-labs/") and "Comfy-Org/" in model.url
        assert f"`download`: [{repo}]({model.source_url})" in table_row(model.filename)
        assert "published by Black Forest Labs" in model.checksum_source  # the reason the README gives
    assert "Its FLUX links are Comfy-Org's copies" in PROSE
    assert "`download` takes Black Forest Labs' files, whose SHA-256 it publishes" in PROSE
    assert "pins Comfy-Org/flux1-dev@40a8a3d7's flux1-dev.safetensors at the same size and SHA-256" in \
        CATALOGUE.by_key("flux1_dev").checksum_source
    gated = CATALOGUE.by_key("flux1_dev").hub_file()[0]
    assert f"**FLUX.1-dev is gated**: accept its licence at https://huggingface.co/{gated} " in PROSE


def test_eva_clip_goes_in_models_clip_which_missing_models_calls_text_encoders(tmp_path):
    eva = CATALOGUE.by_key("eva02_clip_l_336")
    assert eva.display_folder == "models/clip" and table_row(eva.filename).count("| `models/clip/` |") == 1
    folders = check_models.build_folder_map(str(tmp_path), [])
    models = tmp_path / "models"
    assert folders.roots(eva.folder) == [str(models / "text_encoders"), str(models / "clip")]  # one kind, two dirs
    assert folders.download_root(eva.folder) == str(models / "clip")  # where `download` writes it
    assert models_directory(eva.folder) == "text_encoders"  # the name in the workflows' Missing Models entries
    assert ("EVA-CLIP goes in `models/clip/`: ComfyUI reads it and `models/text_encoders/` as one folder kind, "
            "`text_encoders` (`clip` is the older name), the name Missing Models shows.") in PROSE
    for folder in ("text_encoders", "clip"):  # the loader's lookup finds it in either
        (models / folder).mkdir(parents=True, exist_ok=True)
        path = models / folder / eva.filename
        path.write_bytes(b"x")
        assert find_in_folders(eva, folders.roots(eva.folder)) == str(path)
        os.remove(path)
