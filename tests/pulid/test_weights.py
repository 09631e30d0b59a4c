"""Strict loading of PuLID-FLUX files: sizes from shapes, every key checked, precise errors for wrong files."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from face_migration.errors import ModelFileError
from face_migration.pulid.model import PulidConfig, PulidFlux
from face_migration.pulid.weights import (check_layout, config_from_shapes, expected_layout, load_pulid_flux,
                                          weights_fingerprint)
from devkit.tiny_pulid import make_tiny_pulid_state_dict

# The 312 tensors of the real pulid_flux_v0.9.x.safetensors (keys and shapes, from the research notes).
REAL_KEYS = Path("tests/fixtures/pulid_flux_keys.json")
CFG = PulidConfig(encoder_dim=64, encoder_depth=5, num_queries=4, num_id_tokens=2, id_input_dim=24,
                  id_mapping_dim=16, vit_dim=16, vit_mapping_dim=32, token_dim=32, flux_hidden=48,
                  ca_inner_dim=128, num_ca=3)
NAME = "pulid_flux_test.safetensors"


@pytest.fixture(scope="module")
def state_dict():
    return make_tiny_pulid_state_dict(CFG, seed=3)


def write(tmp_path, tensors, name=NAME):
    path = tmp_path / name
    save_file(tensors, str(path))
    return str(path)


def load_error(tmp_path, tensors, name=NAME) -> str:
    with pytest.raises(ModelFileError) as info:
        load_pulid_flux(write(tmp_path, tensors, name))
    message = str(info.value)
    assert name in message  # every error names the file
    return message


# --- the real layout ---------------------------------------------------------------------------

def real_shapes():
    return {k: tuple(v) for k, v in json.loads(REAL_KEYS.read_text()).items()}


def test_real_file_layout_gives_the_official_config():
    shapes = real_shapes()
    assert len(shapes) == 312
    cfg = config_from_shapes(shapes, "pulid_flux_v0.9.1.safetensors")
    assert cfg == PulidConfig()  # the defaults are FLUX.1's PuLID: 1024/10/32/5/2048/3072/2048/20
    assert (cfg.num_ca, cfg.encoder_heads, cfg.ca_heads) == (20, 16, 16)
    assert expected_layout(cfg) == shapes
    check_layout(shapes, cfg, "pulid_flux_v0.9.1.safetensors")


def test_modules_built_for_the_real_layout_hold_exactly_its_tensors():
    with torch.device("meta"):
        model = PulidFlux(config_from_shapes(real_shapes(), "real"))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == real_shapes()
    assert sum(p.numel() for p in model.parameters()) == 571_033_600  # spec 1.2


# --- a good tiny file --------------------------------------------------------------------------

def test_tiny_file_loads_every_tensor(tmp_path, state_dict):
    model, fingerprint = load_pulid_flux(write(tmp_path, state_dict))
    assert model.cfg == CFG
    loaded = model.state_dict()
    assert loaded.keys() == state_dict.keys()
    assert all(torch.equal(loaded[k], state_dict[k]) for k in state_dict)
    assert fingerprint == weights_fingerprint(state_dict)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_file_dtype_is_kept(tmp_path):
    model, _ = load_pulid_flux(write(tmp_path, make_tiny_pulid_state_dict(CFG, seed=3, dtype=torch.bfloat16)))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_fingerprint_tells_weight_files_apart(state_dict):
    other = make_tiny_pulid_state_dict(CFG, seed=4)
    assert weights_fingerprint(state_dict) != weights_fingerprint(other)
    assert weights_fingerprint(state_dict) == weights_fingerprint({k: v.clone() for k, v in state_dict.items()})


# --- wrong files -------------------------------------------------------------------------------

def test_missing_key(tmp_path, state_dict):
    tensors = {k: v for k, v in state_dict.items() if k != "pulid_ca.1.to_kv.weight"}
    message = load_error(tmp_path, tensors)
    assert "1 missing tensors" in message and "pulid_ca.1.to_kv.weight" in message


def test_unexpected_key(tmp_path, state_dict):
    message = load_error(tmp_path, {**state_dict, "pulid_encoder.extra.weight": torch.zeros(3)})
    assert "1 unexpected tensors" in message and "pulid_encoder.extra.weight" in message


def test_wrong_shape(tmp_path, state_dict):
    message = load_error(tmp_path, {**state_dict, "pulid_ca.2.to_out.weight": torch.zeros(48, 64)})
    assert "wrong shape" in message and "pulid_ca.2.to_out.weight: [48, 64] instead of [48, 128]" in message


def test_damaged_size_tensor_is_named(tmp_path, state_dict):
    message = load_error(tmp_path, {**state_dict, "pulid_encoder.proj_out": torch.zeros(64)})
    assert "pulid_encoder.proj_out" in message and "[64]" in message


def test_missing_encoder_layer_is_reported(tmp_path, state_dict):
    tensors = {k: v for k, v in state_dict.items() if not k.startswith("pulid_encoder.layers.4.")}
    assert "inconsistent sizes" in load_error(tmp_path, tensors)


def test_mixed_dtypes(tmp_path, state_dict):
    tensors = {**state_dict, "pulid_ca.0.norm1.bias": state_dict["pulid_ca.0.norm1.bias"].half()}
    assert "mixes" in load_error(tmp_path, tensors)


def test_flux_checkpoint(tmp_path):
    tensors = {"double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2), "img_in.weight": torch.zeros(2, 4)}
    message = load_error(tmp_path, tensors, "flux1-dev.safetensors")
    assert "not a PuLID-FLUX weights file" in message and "FLUX diffusion model" in message
    assert "diffusion_models" in message and "pulid_flux_v0.9.1.safetensors" in message


def test_lora(tmp_path):
    tensors = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.zeros(8, 4)}
    assert "a LoRA" in load_error(tmp_path, tensors, "face_lora.safetensors")


def test_truncated_download(tmp_path, state_dict):
    path = Path(write(tmp_path, state_dict))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=rf"{NAME} is truncated.*download it again"):
        load_pulid_flux(str(path))


def test_pickle_renamed_to_safetensors(tmp_path, state_dict):
    path = tmp_path / NAME
    torch.save(state_dict, str(path))
    with pytest.raises(ModelFileError, match=rf"{NAME} is a PyTorch pickle.*\.safetensors release"):
        load_pulid_flux(str(path))


def test_empty_file(tmp_path):
    path = tmp_path / NAME
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match=rf"{NAME} is 0 bytes"):
        load_pulid_flux(str(path))
