"""The tiny FLUX writer (tests/make_tiny_flux.py) writes a safetensors file that reads back exactly.
Its layout against ComfyUI's own FLUX is checked in tests/integration/test_tiny_flux.py."""
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.make_tiny_flux import flux_layout, write_tiny_flux


def test_small_layout_reads_back_with_shapes_dtype_and_values(tmp_path):
    layout = flux_layout(hidden=64, heads=2, double_blocks=2, single_blocks=3)
    path = write_tiny_flux(tmp_path / "flux.safetensors", seed=3, dtype=torch.bfloat16, layout=layout)
    state = load_file(str(path))
    assert {k: tuple(v.shape) for k, v in state.items()} == layout
    assert {v.dtype for v in state.values()} == {torch.bfloat16}
    assert torch.equal(state["single_blocks.2.norm.key_norm.scale"], torch.ones(32, dtype=torch.bfloat16))
    assert not state["double_blocks.1.txt_attn.qkv.bias"].any()
    weight = state["double_blocks.1.img_mlp.2.weight"].float()
    assert 0.015 < float(weight.std()) < 0.025
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["seed"] == "3"


def test_same_seed_same_file_other_seed_other_weights(tmp_path):
    layout = flux_layout(hidden=32, heads=2, double_blocks=1, single_blocks=1)
    first = write_tiny_flux(tmp_path / "a.safetensors", seed=0, layout=layout).read_bytes()
    again = write_tiny_flux(tmp_path / "b.safetensors", seed=0, layout=layout).read_bytes()
    other = write_tiny_flux(tmp_path / "c.safetensors", seed=1, layout=layout).read_bytes()
    assert first == again and first != other


def test_default_layout_is_flux1_dev_width_with_one_block_of_each_kind():
    layout = flux_layout()
    assert layout["img_in.weight"] == (3072, 64) and layout["txt_in.weight"] == (3072, 4096)
    assert "guidance_in.in_layer.weight" in layout
    assert {k.split(".")[1] for k in layout if k.startswith(("double_blocks.", "single_blocks."))} == {"0"}
