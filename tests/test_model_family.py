"""The model-family check tells FLUX.1's descendants from models that only reuse FLUX's code, by the attributes
ComfyUI's model objects have (comfy.ldm.flux / chroma / chroma_radiance / hunyuan_video, read in 0.3.64 and
0.33.0); the real objects are checked by the integration tests that apply PuLID to tiny Chroma files."""
from types import SimpleNamespace

import pytest

from face_migration.errors import IncompatibleModelError, UnsupportedModelError
from face_migration.model_family import flux1_family


def double_block(gated=False):
    mlp = SimpleNamespace(gate_proj=None) if gated else SimpleNamespace()
    return SimpleNamespace(img_attn=None, txt_attn=None, img_mlp=mlp)


def transformer(doubles=19, singles=38, gated=False, text=4096, patch=2, **extra):
    """A diffusion model object as ComfyUI builds a FLUX-style one; `extra` adds what tells models apart."""
    return SimpleNamespace(double_blocks=[double_block(gated)] * doubles, single_blocks=[None] * singles,
                           hidden_size=3072, patch_size=patch, txt_in=SimpleNamespace(in_features=text), **extra)


@pytest.mark.parametrize("model, name", [
    (transformer(vector_in=None, guidance_in=None), "FLUX.1"),
    (transformer(distilled_guidance_layer=None), "Chroma"),
    (transformer(patch=16, distilled_guidance_layer=None, nerf_blocks=[]), "Chroma Radiance"),
], ids=["flux1", "chroma", "chroma_radiance"])
def test_the_flux1_family_is_told_by_structure(model, name):
    found = flux1_family(model)
    assert (found.name, found.hidden, found.double_blocks, found.single_blocks) == (name, 3072, 19, 38)


@pytest.mark.parametrize("model, names", [
    (transformer(8, 48, double_stream_modulation_img=None, txt_norm=None), ["FLUX.2", "shares one modulation"]),
    (transformer(20, 40, patch=[1, 2, 2]), ["space-time patches"]),
    (transformer(gated=True, text=2048, txt_norm=object()), ["not FLUX.1's"]),
    (transformer(text=3584), ["3584 wide", "another text encoder"]),
    (SimpleNamespace(joint_blocks=[]), ["SimpleNamespace", "no FLUX-style double and single stream blocks"]),
], ids=["flux2", "video", "gated_mlp", "other_text_encoder", "no_flux_blocks"])
def test_other_models_are_refused_with_what_they_are_and_why(model, names):
    with pytest.raises(UnsupportedModelError) as error:
        flux1_family(model)
    message = str(error.value)
    assert isinstance(error.value, IncompatibleModelError) and "input 'model'" in message
    assert all(name in message for name in names), message
    assert "Chroma" in message and "FLUX.1" in message  # what it does work with
