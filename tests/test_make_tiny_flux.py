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


def test_chroma_layouts_have_the_keys_comfyuis_detection_reads_and_no_flux1_modulation():
    """ComfyUI (0.3.64, 0.33.0) tells Chroma by `distilled_guidance_layer.norms.0.scale` and Radiance by
    `nerf_blocks.0.norm.scale` (Radiance has no img_in); Chroma has no per-block or vector modulation."""
    flux, chroma, radiance = (flux_layout(family=f) for f in ("flux1", "chroma", "chroma_radiance"))
    assert chroma["distilled_guidance_layer.norms.0.scale"] == (5120,)
    assert chroma["distilled_guidance_layer.out_proj.weight"] == (3072, 5120)
    assert "nerf_blocks.0.norm.scale" not in chroma and chroma["img_in.weight"] == flux["img_in.weight"]
    flux1_only = {k for k in flux if k.startswith(("time_in", "vector_in", "guidance_in")) or "mod" in k}
    assert flux1_only and not flux1_only & (set(chroma) | set(radiance))
    assert radiance["img_in_patch.weight"] == (3072, 3, 16, 16) and "img_in.weight" not in radiance
    assert radiance["nerf_blocks.3.param_generator.weight"] == (3 * 64 * 64 * 4, 3072)
    assert set(chroma) - set(radiance) == {"img_in.weight", "img_in.bias", "final_layer.linear.weight",
                                           "final_layer.linear.bias"}
