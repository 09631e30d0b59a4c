"""Numerical parity of our IDFormer and CA modules with the official PuLID code (fp32, 1e-5 relative).

The fixture holds the official outputs (scripts/make_pulid_fixtures.py); the weights are rebuilt from
the seed in devkit/parity_data.py and go through our loader from a real .safetensors file."""
import json

import pytest
import torch
from safetensors.torch import save_file

from face_migration.pulid.identity import identity_from_embeddings
from face_migration.pulid.model import ca_block_placement
from face_migration.pulid.weights import expected_layout, load_pulid_flux
from devkit import parity_data as pd

RTOL = 1e-5


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref.double()).abs().max() / ref.double().abs().max())


@pytest.fixture(scope="module")
def fixture():
    return pd.load_fixture(pd.PULID_FIXTURE)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, fixture):
    _, meta = fixture
    sd = pd.state_dict_for(expected_layout(pd.PULID_CFG))
    assert pd.checksum(sd) == pytest.approx(float(meta["pulid_checksum"]), rel=1e-12), \
        "devkit/parity_data.py no longer makes the weights the fixture was made with: rerun make_pulid_fixtures.py"
    path = tmp_path_factory.mktemp("pulid") / "pulid_parity.safetensors"
    save_file(sd, str(path))
    return load_pulid_flux(str(path))


def test_fixture_inputs_are_the_seeded_ones(fixture):
    tensors, meta = fixture
    for key, value in pd.pulid_inputs().items():
        assert torch.equal(tensors[key], value), key
    assert meta["reference"] == "ToTheBeginning/PuLID"


def test_loader_reads_the_parity_sizes(loaded):
    model, _ = loaded
    assert model.cfg == pd.PULID_CFG
    assert all(p.dtype == torch.float32 for p in model.parameters())


def vit_inputs(tensors):
    return [tensors[f"vit_hidden.{i}"] for i in range(pd.PULID_CFG.num_vit_scales)]


def test_idformer_cond_and_uncond_match_official(fixture, loaded):
    tensors, _ = fixture
    model, _ = loaded
    cond, uncond = model.encode(tensors["id_vector"], vit_inputs(tensors))
    assert cond.shape == tensors["out.cond"].shape == (pd.BATCH, pd.PULID_CFG.num_queries, pd.PULID_CFG.token_dim)
    assert rel_err(cond, tensors["out.cond"]) < RTOL
    assert rel_err(uncond, tensors["out.uncond"]) < RTOL


def test_identity_carries_official_tokens(fixture, loaded):
    tensors, _ = fixture
    model, fingerprint = loaded
    ident = identity_from_embeddings(model, fingerprint, tensors["id_vector"], vit_inputs(tensors))
    assert ident.model_fingerprint == fingerprint
    assert rel_err(ident.cond, tensors["out.cond"]) < RTOL
    assert rel_err(ident.uncond, tensors["out.uncond"]) < RTOL
    # The official uncond is the encoder on zeros: far from zero tokens, and far from cond.
    assert float(ident.uncond.abs().mean()) > 0.1
    assert rel_err(ident.cond, ident.uncond) > 0.1


def test_cross_attention_matches_official(fixture, loaded):
    tensors, _ = fixture
    model, _ = loaded
    with torch.no_grad():
        out = model.pulid_ca[1](tensors["ca_id_tokens"], tensors["ca_img"])
    assert rel_err(out, tensors["out.ca_1"]) < RTOL
    # Another module's weights give another answer: the test sees which module ran.
    with torch.no_grad():
        other = model.pulid_ca[0](tensors["ca_id_tokens"], tensors["ca_img"])
    assert rel_err(other, tensors["out.ca_1"]) > 0.1


def test_flux_fixture_records_official_placement():
    _, meta = pd.load_fixture(pd.FLUX_FIXTURE)
    doubles, singles = ca_block_placement(pd.FLUX_PARAMS["depth"], pd.FLUX_PARAMS["depth_single_blocks"])
    assert (doubles, singles) == (json.loads(meta["double_ca_blocks"]), json.loads(meta["single_ca_blocks"]))
    assert len(doubles) + len(singles) == pd.PULID_CFG.num_ca
