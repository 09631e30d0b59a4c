"""The PULID_ID value: cond tokens, the official uncond tokens (IDFormer on zeros), model fingerprint."""
import pytest
import torch

from face_migration.errors import IncompatibleModelError
from face_migration.pulid.identity import PulidIdentity, identity_from_embeddings
from face_migration.pulid.model import PulidConfig
from face_migration.pulid.weights import load_pulid_flux
from devkit.tiny_pulid import write_tiny_pulid

CFG = PulidConfig(encoder_dim=64, encoder_depth=5, num_queries=4, num_id_tokens=2, id_input_dim=24,
                  id_mapping_dim=16, vit_dim=16, vit_mapping_dim=32, token_dim=32, flux_hidden=48,
                  ca_inner_dim=128, num_ca=3)
VIT_TOKENS = 3


@pytest.fixture(scope="module")
def pulid(tmp_path_factory):
    return load_pulid_flux(write_tiny_pulid(tmp_path_factory.mktemp("p") / "pulid.safetensors", CFG, seed=5))


def embeddings(batch, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, CFG.id_input_dim, generator=g),
            [torch.randn(batch, VIT_TOKENS, CFG.vit_dim, generator=g) for _ in range(CFG.num_vit_scales)])


def test_uncond_is_the_encoder_on_zeros_not_zero_tokens(pulid):
    model, fingerprint = pulid
    vec, vit = embeddings(2, seed=0)
    ident = identity_from_embeddings(model, fingerprint, vec, vit, {"faces": 2})
    with torch.no_grad():
        on_zeros = model.pulid_encoder(torch.zeros_like(vec), [torch.zeros_like(h) for h in vit])
        cond = model.pulid_encoder(vec, vit)
    assert ident.cond.shape == ident.uncond.shape == (2, CFG.num_queries, CFG.token_dim)
    torch.testing.assert_close(ident.uncond, on_zeros)
    torch.testing.assert_close(ident.cond, cond)
    assert ident.uncond.abs().mean() > 1e-3  # biases and learned latents make it non-zero
    assert not torch.allclose(ident.cond, ident.uncond)
    assert ident.info == {"faces": 2} and ident.model_fingerprint == fingerprint


def test_uncond_does_not_depend_on_the_face(pulid):
    model, fingerprint = pulid
    a = identity_from_embeddings(model, fingerprint, *embeddings(1, seed=1))
    b = identity_from_embeddings(model, fingerprint, *embeddings(1, seed=2))
    assert not torch.allclose(a.cond, b.cond)
    torch.testing.assert_close(a.uncond, b.uncond)


def test_uncond_is_computed_once_per_input_layout(pulid, monkeypatch):
    model, fingerprint = pulid
    identity_from_embeddings(model, fingerprint, *embeddings(1, seed=3))  # fills the cache
    zero_runs = []
    encoder_forward = type(model.pulid_encoder).forward

    def counting(self, id_vector, vit_hidden):
        zero_runs.append(not id_vector.any())
        return encoder_forward(self, id_vector, vit_hidden)

    monkeypatch.setattr(type(model.pulid_encoder), "forward", counting)
    ident = identity_from_embeddings(model, fingerprint, *embeddings(3, seed=4))
    assert zero_runs == [False]  # only the faces ran; the uncond came from the cache
    assert ident.uncond.shape == (3, CFG.num_queries, CFG.token_dim)


def test_tokens_come_back_float32_on_cpu_from_a_bf16_model(tmp_path):
    model, fingerprint = load_pulid_flux(write_tiny_pulid(tmp_path / "p.safetensors", CFG, 5, torch.bfloat16))
    ident = identity_from_embeddings(model, fingerprint, *embeddings(1, seed=0))
    assert ident.cond.dtype == ident.uncond.dtype == torch.float32
    assert ident.cond.device.type == "cpu"


def test_identity_from_another_model_is_refused(pulid, tmp_path):
    model, fingerprint = pulid
    ident = identity_from_embeddings(model, fingerprint, *embeddings(1, seed=0))
    ident.check_against(model, fingerprint)  # same model: fine
    other, other_fp = load_pulid_flux(write_tiny_pulid(tmp_path / "other.safetensors", CFG, seed=6))
    assert other_fp != fingerprint
    with pytest.raises(IncompatibleModelError, match=rf"weights {fingerprint}.*weights {other_fp}.*same PuLID model"):
        ident.check_against(other, other_fp)


def test_identity_of_another_token_width_is_refused(pulid):
    model, fingerprint = pulid
    wide = PulidIdentity(torch.zeros(1, 4, 16), torch.zeros(1, 4, 16), fingerprint)
    with pytest.raises(IncompatibleModelError, match="token width 16.*token width 32"):
        wide.check_against(model, fingerprint)


def test_malformed_tokens_are_rejected():
    with pytest.raises(ValueError, match="matching uncond"):
        PulidIdentity(torch.zeros(1, 4, 8), torch.zeros(2, 4, 8), "fp")
    with pytest.raises(ValueError):
        PulidIdentity(torch.zeros(4, 8), torch.zeros(4, 8), "fp")
