"""EVA02-CLIP visual tower: parity with the official code, strict loading, converter, preprocessing."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from face_migration.errors import ModelFileError
from face_migration.face import convert_eva
from face_migration.face.eva_clip import (CLIP_MEAN, CLIP_STD, EvaVisionConfig, EvaVisionTower, check_layout,
                                          config_from_shapes, expected_layout, load_eva_clip, preprocess,
                                          rope_tables, visual_key_map)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"

# Smallest tower the loader accepts: head width 64 (fixed) -> 1 head; 21 blocks for the 5 hidden states.
TINY = EvaVisionConfig(width=64, layers=21, mlp_hidden=170, patch_size=14, image_size=28, embed_dim=16)


def _fixture_script():
    spec = importlib.util.spec_from_file_location("make_eva_fixtures", REPO / "scripts" / "make_eva_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_state(cfg: EvaVisionConfig = TINY, dtype=torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: (torch.randn(shape, generator=g) * 0.1).to(dtype) for k, shape in expected_layout(cfg).items()}


def _official_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """A whole-CLIP checkpoint shaped like the official .pt: wrapped, `module.`-prefixed, with the
    text tower, logit_scale and RoPE buffers beside the visual tensors."""
    sd = {f"module.visual.{k}": v for k, v in state.items()}
    sd["module.visual.rope.freqs_cos"] = torch.zeros(4, 64)
    sd["module.visual.blocks.0.attn.rope.freqs_sin"] = torch.zeros(4, 64)
    sd["module.text.token_embedding.weight"] = torch.zeros(10, 8)
    sd["module.logit_scale"] = torch.tensor(4.6)
    return {"state_dict": sd}


def _save_safetensors(path, state, prefix="visual."):
    save_file({prefix + k: v.contiguous() for k, v in state.items()}, str(path))
    return str(path)


def _run(model, x):
    with torch.no_grad():
        return model(x)


# ------------------------------------------------------------------------------------------- parity

def test_matches_official_implementation_on_fixture():
    script = _fixture_script()
    fixture = load_file(str(FIXTURES / "eva_tiny_reference.safetensors"))
    with safe_open(str(FIXTURES / "eva_tiny_reference.safetensors"), "pt") as f:
        meta = f.metadata()
    tiny = json.loads(meta["tiny"])
    cfg = EvaVisionConfig(width=tiny["width"], layers=tiny["layers"], mlp_hidden=int(tiny["width"] * tiny["mlp_ratio"]),
                          patch_size=tiny["patch_size"], image_size=tiny["image_size"], embed_dim=tiny["embed_dim"])
    weights = script.fixture_state_dict(expected_layout(cfg), int(meta["seed"]))
    model = EvaVisionTower(cfg)
    model.load_state_dict(weights, strict=True)
    head, hidden = _run(model, fixture["input"])

    assert len(hidden) == 5
    for got, ref in [(head, fixture["head"])] + [(h, fixture[f"hidden.{i}"]) for i, h in enumerate(hidden)]:
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_fixture_weights_are_reproducible():
    # The fixture stores no weights: the generator must give the same numbers on every platform.
    script = _fixture_script()
    a = script.uniform(script.SEED, 3, 4)
    assert a.tolist() == script.uniform(script.SEED, 3, 4).tolist()
    assert -1.0 <= a.min() and a.max() < 1.0
    assert script.uniform(1, 0, 1)[0] != script.uniform(2, 0, 1)[0]


def test_hidden_states_are_block_inputs_and_head_is_unnormalised():
    model = EvaVisionTower(TINY)
    model.load_state_dict(_tiny_state(), strict=True)
    seen = {}
    for i in (4, 8, 12, 16, 20):
        model.blocks[i].register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args[0]))
    head, hidden = _run(model, torch.randn(2, 3, 28, 28))
    for h, i in zip(hidden, (4, 8, 12, 16, 20)):
        assert h.shape == (2, 1 + 4, 64) and torch.equal(h, seen[i])
    assert head.shape == (2, 16)
    assert not torch.allclose(head.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match=r"\[B, 3, 28, 28\]"):
        model(torch.zeros(1, 3, 32, 32))


def test_last_block_computes_only_the_cls_token_the_head_reads():
    model = EvaVisionTower(TINY)
    model.load_state_dict(_tiny_state(), strict=True)
    tokens = {}
    for i in (len(model.blocks) - 2, len(model.blocks) - 1):
        model.blocks[i].mlp.register_forward_pre_hook(lambda m, args, i=i: tokens.__setitem__(i, args[0].shape[1]))
    x = torch.randn(2, 3, 28, 28)
    head, _ = _run(model, x)
    assert tokens == {len(model.blocks) - 2: 5, len(model.blocks) - 1: 1}
    # the same head as running every token through the last block
    with torch.no_grad():
        full = model.patch_embed["proj"](x).flatten(2).transpose(1, 2)
        full = torch.cat((model.cls_token.expand(2, -1, -1), full), dim=1) + model.pos_embed
        cos, sin = rope_tables(TINY.grid, TINY.head_width, TINY.pt_hw_seq_len, x.device)
        for block in model.blocks:
            full = block(full, cos, sin)
        torch.testing.assert_close(head, model.head(model.norm(full[:, 0])), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------- layout

def test_full_size_layout_is_accepted_on_meta_device():
    shapes = {k: tuple(v) for k, v in json.loads((FIXTURES / "eva02_l_336_visual_keys.json").read_text()).items()}
    visual = {k: shapes[orig] for k, orig in visual_key_map(shapes).items()}
    assert len(visual) == 512  # the 50 RoPE tables are dropped
    cfg = config_from_shapes(visual, "full.pt")
    assert cfg == EvaVisionConfig()  # width 1024, 24 blocks, 16 heads, mlp 2730, 336 px, patch 14, head 768
    assert cfg.heads == 16
    check_layout(visual, cfg, "full.pt")
    with torch.device("meta"):
        model = EvaVisionTower(cfg)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == visual
    assert sum(p.numel() for p in model.parameters()) == 304_432_832


def _error_for(tmp_path, state, prefix="visual.", name="eva.safetensors") -> str:
    path = _save_safetensors(tmp_path / name, state, prefix)
    with pytest.raises(ModelFileError) as info:
        load_eva_clip(path)
    return str(info.value)


def test_missing_tensor_is_named(tmp_path):
    state = _tiny_state()
    del state["blocks.3.mlp.w3.bias"]
    msg = _error_for(tmp_path, state)
    assert "eva.safetensors" in msg and "1 missing tensors" in msg and "blocks.3.mlp.w3.bias" in msg
    assert "models/clip" in msg and "convert-eva" in msg


def test_wrong_shape_is_named(tmp_path):
    state = _tiny_state()
    state["blocks.7.attn.k_proj.weight"] = torch.zeros(64, 32)
    msg = _error_for(tmp_path, state)
    assert "blocks.7.attn.k_proj.weight: [64, 32] instead of [64, 64]" in msg


def test_unexpected_tensor_is_named(tmp_path):
    state = _tiny_state()
    state["blocks.0.attn.k_bias"] = torch.zeros(64)
    assert "unexpected tensors (e.g. blocks.0.attn.k_bias)" in _error_for(tmp_path, state)


def test_too_few_blocks_for_pulid(tmp_path):
    cfg = EvaVisionConfig(width=64, layers=12, mlp_hidden=170, patch_size=14, image_size=28, embed_dim=16)
    assert "reads the input of block 20" in _error_for(tmp_path, _tiny_state(cfg))


@pytest.mark.parametrize("keys, what", [
    ({"pulid_encoder.latents": (1, 32, 8), "pulid_ca.0.to_q.weight": (8, 8)}, "PuLID-FLUX model"),
    ({"text_model.encoder.layers.0.mlp.fc1.weight": (8, 8)}, "text encoder"),
    ({"vision_model.encoder.layers.0.mlp.fc1.weight": (8, 8)}, "Hugging Face CLIP vision"),
    ({"visual.trunk.blocks.0.attn.qkv.weight": (8, 8), "text.x": (1,)}, "open_clip/timm EVA02"),
])
def test_foreign_files_are_identified(tmp_path, keys, what):
    msg = _error_for(tmp_path, {k: torch.zeros(s) for k, s in keys.items()}, prefix="", name="other.safetensors")
    assert "other.safetensors is not an EVA02-CLIP vision tower" in msg and what in msg


# ------------------------------------------------------------------------------------------ loading

def test_official_style_pt_loads_visual_only(tmp_path):
    state = _tiny_state(dtype=torch.float16)
    path = tmp_path / "EVA02_CLIP_L_336_psz14_s6B.pt"
    torch.save(_official_checkpoint(state), path)
    model = load_eva_clip(str(path))
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) and loaded[k].dtype == torch.float16 for k, v in state.items())
    assert not model.training and not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("prefix", ["visual.", ""])
def test_safetensors_with_or_without_prefix(tmp_path, prefix):
    state = _tiny_state(dtype=torch.bfloat16)
    model = load_eva_clip(_save_safetensors(tmp_path / "v.safetensors", state, prefix))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    x = torch.randn(1, 3, 28, 28, dtype=torch.bfloat16)
    reference = EvaVisionTower(TINY).to(torch.bfloat16)
    reference.load_state_dict(state)
    assert torch.equal(_run(model, x)[0], _run(reference, x)[0])


def test_legacy_torch_format_loads(tmp_path):
    # torch < 1.6 files cannot be memory-mapped; the loader falls back to a plain read
    state = _tiny_state()
    path = tmp_path / "legacy.pt"
    torch.save(_official_checkpoint(state), path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_eva_clip(str(path)).state_dict()["head.weight"], state["head.weight"])


def test_pickle_with_other_objects_is_refused_without_running_it(tmp_path):
    path = tmp_path / "old.pt"
    checkpoint = _official_checkpoint(_tiny_state())
    checkpoint["args"] = argparse.Namespace(lr=1e-3)  # a global the safe loader refuses
    torch.save(checkpoint, path)
    with pytest.raises(ModelFileError) as info:
        load_eva_clip(str(path))
    msg = str(info.value)
    assert "old.pt" in msg and "weights_only" in msg and "huggingface.co/QuanSun/EVA-CLIP" in msg
    assert "argparse.Namespace" in msg


def test_truncated_pt_asks_for_a_new_download(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(_official_checkpoint(_tiny_state()), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match=r"cut\.pt could not be read.*download it again"):
        load_eva_clip(str(path))


class _CastLinear(nn.Linear):
    """Like comfy.ops.manual_cast.Linear: weights follow the input's dtype at call time."""

    def forward(self, x):
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class _CastLayerNorm(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class _CastConv2d(nn.Conv2d):
    def forward(self, x):
        return self._conv_forward(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


def test_ops_namespace_builds_layers_and_computes_in_input_dtype(tmp_path):
    state = _tiny_state(dtype=torch.float16)
    ops = SimpleNamespace(Linear=_CastLinear, LayerNorm=_CastLayerNorm, Conv2d=_CastConv2d)
    model = load_eva_clip(_save_safetensors(tmp_path / "v.safetensors", state), ops=ops)
    assert isinstance(model.blocks[0].attn.q_proj, _CastLinear) and isinstance(model.norm, _CastLayerNorm)
    assert isinstance(model.patch_embed["proj"], _CastConv2d)
    x = torch.randn(2, 3, 28, 28)
    head, hidden = _run(model, x)  # fp16 weights, fp32 activations: bare parameters must follow x
    assert head.dtype == torch.float32 and hidden[0].dtype == torch.float32
    reference = EvaVisionTower(TINY)
    reference.load_state_dict({k: v.float() for k, v in state.items()})
    torch.testing.assert_close(head, _run(reference, x)[0], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------- converter

def test_converter_round_trip(tmp_path, capsys):
    state = _tiny_state(dtype=torch.float16)
    src = tmp_path / "EVA02_CLIP_L_336_psz14_s6B.pt"
    torch.save(_official_checkpoint(state), src)
    args = argparse.Namespace(src=str(src), dst=None, force=False)
    assert convert_eva.run(args) == 0
    dst = tmp_path / "EVA02_CLIP_L_336_psz14_s6B_visual.safetensors"
    written = load_file(str(dst))
    assert set(written) == {"visual." + k for k in state}  # no text tower, no RoPE tables
    assert all(torch.equal(written["visual." + k], v) and written["visual." + k].dtype == torch.float16
               for k, v in state.items())
    out = capsys.readouterr().out
    assert "MiB" in out and f"{len(state)} tensors" in out and "float16" in out and "verified" in out
    assert not list(tmp_path.glob("*.partial"))
    # the written file loads to the same tower as the source
    a, b = load_eva_clip(str(src)), load_eva_clip(str(dst))
    x = torch.randn(1, 3, 28, 28, dtype=torch.float16)
    assert torch.equal(_run(a, x)[0], _run(b, x)[0])
    # an existing output is kept unless --force
    assert convert_eva.run(args) == 2
    assert convert_eva.run(argparse.Namespace(**{**vars(args), "force": True})) == 0


def test_converter_refuses_pickled_objects_and_wrong_files(tmp_path, capsys):
    src = tmp_path / "old.pt"
    checkpoint = _official_checkpoint(_tiny_state())
    checkpoint["args"] = argparse.Namespace(lr=1e-3)
    torch.save(checkpoint, src)
    dst = tmp_path / "out.safetensors"
    assert convert_eva.run(argparse.Namespace(src=str(src), dst=str(dst), force=False)) == 1
    assert "weights_only" in capsys.readouterr().err and not dst.exists()
    # a wrong file is refused with the loader's message, nothing written
    bad = tmp_path / "pulid.safetensors"
    save_file({"pulid_encoder.latents": torch.zeros(1, 2, 3)}, str(bad))
    assert convert_eva.run(argparse.Namespace(src=str(bad), dst=None, force=False)) == 1
    assert "PuLID-FLUX" in capsys.readouterr().err
    assert not (tmp_path / "pulid_visual.safetensors").exists()


def test_converter_parser():
    parser = argparse.ArgumentParser()
    convert_eva.add_arguments(parser)
    args = parser.parse_args(["a.pt", "--force"])
    assert args.src == "a.pt" and args.dst is None and args.force
    assert convert_eva.default_destination(os.path.join("m", "x.pt")) == os.path.join("m", "x_visual.safetensors")


# ------------------------------------------------------------------------------------ preprocessing

def test_preprocess_normalises_with_clip_statistics():
    x = preprocess(torch.full((2, 3, 512, 512), 0.5))
    assert x.shape == (2, 3, 336, 336) and x.dtype == torch.float32
    expected = [(0.5 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)]
    torch.testing.assert_close(x[0, :, 100, 200], torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_preprocess_antialias_option():
    checker = (torch.arange(512)[:, None] + torch.arange(512)[None, :]) % 2  # finest possible detail
    img = checker.float().expand(1, 3, 512, 512)
    plain, smooth = preprocess(img), preprocess(img, antialias=True)
    # without antialiasing the bicubic kernel samples the checkerboard and keeps strong aliasing;
    # with it the 512->336 filter averages it towards flat grey
    assert plain.std() > 2 * smooth.std()
    # no clamping: bicubic overshoot at an edge is kept, as torchvision does for float images
    step = torch.zeros(1, 3, 512, 512)
    step[..., 256:] = 1.0
    raw = preprocess(step) * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    assert raw.max() > 1.01 and raw.min() < -0.01
    with pytest.raises(ValueError, match="square"):
        preprocess(torch.zeros(1, 3, 512, 400))
