"""ComfyUI's FLUX with our block patches against the official PuLID FLUX forward (flux/model.py).

The official outputs are in tests/fixtures/flux_pulid_parity.safetensors (scripts/make_pulid_fixtures.py):
a tiny FLUX (hidden 256, 4 double + 8 single blocks, CA after double 0, 2 and single 0, 4) with seeded
weights, run plain and with `pulid_ca` / `id_weight`, positive pass with the cond ID and negative pass
with the uncond ID. Here ComfyUI's comfy.ldm.flux.model.Flux gets the same weights, one batch holding
both passes as ComfyUI's sampler builds it (uncond chunk first), and our PulidBlockPatch +
PulidCallWrapper through transformer_options. Needs COMFYUI_PATH (a ComfyUI checkout and its Python
dependencies); skipped otherwise.
"""
import copy
import dataclasses
import json
import os
import sys

import pytest
import torch
from safetensors.torch import save_file

from face_migration.injection import Injection, PulidBlockPatch, PulidCallWrapper, StepRange, block_patches
from face_migration.pulid.identity import PulidIdentity
from face_migration.pulid.weights import expected_layout, load_pulid_flux
from devkit import parity_data as pd

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set (needs a ComfyUI checkout)")

# Measured: ComfyUI's FLUX port differs from the official one by ~1e-6 relative in fp32 (attention
# and RoPE arithmetic); the injection must not add more than that.
FLUX_RTOL = 1e-5


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref.double()).abs().max() / ref.double().abs().max())


def import_comfy_flux():
    """ComfyUI's Flux class, imported on the CPU. Its folder goes last on sys.path: it has its own `tests`
    package, which must not shadow ours. (comfy.sd would need all of ComfyUI's requirements in this
    interpreter, torchvision included.)"""
    if COMFYUI_PATH not in sys.path:
        sys.path.append(COMFYUI_PATH)
    if "comfy.model_management" not in sys.modules:
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
    import comfy.ops
    from comfy.ldm.flux.model import Flux, FluxParams
    return Flux, FluxParams, comfy.ops.disable_weight_init


@pytest.fixture(scope="module")
def fixture():
    return pd.load_fixture(pd.FLUX_FIXTURE)


@pytest.fixture(scope="module")
def flux(fixture):
    """The fixture's FLUX weights (official key names, as FLUX.1 files store them) in ComfyUI's Flux, built as
    ComfyUI's model detection builds FLUX.1 in each version: 0.33 added FluxParams.txt_ids_dims ([] for
    FLUX.1) and names the RMSNorm scales `.weight`, renaming a file's `_norm.scale` keys when it loads it."""
    _, meta = fixture
    sd = pd.state_dict_for(pd.flux_layout())
    assert pd.checksum(sd) == pytest.approx(json.loads(meta["flux_checksum"]), rel=1e-12), \
        "devkit/parity_data.py changed: rerun scripts/make_pulid_fixtures.py"
    flux_cls, params_cls, ops = import_comfy_flux()
    p = dict(pd.FLUX_PARAMS)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(params_cls)}:
        p["txt_ids_dims"] = []
    model = flux_cls(operations=ops, out_channels=p["in_channels"], patch_size=2, dtype=torch.float32, **p).eval()
    if any(k.endswith("_norm.weight") for k in model.state_dict()):
        sd = {k[:-len("scale")] + "weight" if k.endswith("_norm.scale") else k: v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)
    return model.requires_grad_(False)


@pytest.fixture(scope="module")
def pulid(tmp_path_factory):
    path = tmp_path_factory.mktemp("pulid") / "pulid_parity.safetensors"
    save_file(pd.state_dict_for(expected_layout(pd.PULID_CFG)), str(path))
    return load_pulid_flux(str(path))


def cfg_batch(tensors):
    """One model call holding the negative chunk then the positive chunk, as ComfyUI's sampler batches them."""
    b = pd.BATCH
    return dict(
        x=torch.cat([tensors["x"], tensors["x"]]),
        timestep=torch.tensor(pd.TIMESTEPS).repeat(2),
        context=torch.cat([tensors["context_neg"], tensors["context_pos"]]),
        y=torch.cat([tensors["y_neg"], tensors["y_pos"]]),
        guidance=torch.full((2 * b,), pd.GUIDANCE),
    )


def options(patches=None):
    opts = {"cond_or_uncond": [1, 0], "sigmas": torch.tensor(pd.TIMESTEPS),
            "sample_sigmas": torch.tensor([1.0, 0.9, 0.6, 0.3, 0.0])}
    if patches is not None:
        injections = tuple({i: None for patch in patches.values() for i in patch.injections})
        opts["patches_replace"] = {"dit": patches}
        opts["wrappers"] = {"diffusion_model": {"face_migration_pulid": [PulidCallWrapper(injections)]}}
    return opts


def pulid_patches(model, fingerprint, tensors):
    identity = PulidIdentity(tensors["id_cond"], tensors["id_uncond"], fingerprint)
    injection = Injection(model, identity, pd.ID_WEIGHT, StepRange(0, 1000))
    return {(f"{kind}_block", block): PulidBlockPatch(kind, ca, (injection,))
            for kind, block, ca in block_patches(pd.FLUX_PARAMS["depth"], pd.FLUX_PARAMS["depth_single_blocks"])}


def test_plain_comfyui_flux_matches_official(flux, fixture):
    tensors, _ = fixture
    out = flux(**cfg_batch(tensors), transformer_options=options())
    b = pd.BATCH
    assert rel_err(out[:b], tensors["out.neg_plain"]) < FLUX_RTOL
    assert rel_err(out[b:], tensors["out.pos_plain"]) < FLUX_RTOL


def test_injected_comfyui_flux_matches_official_pulid(flux, pulid, fixture):
    tensors, _ = fixture
    model, fingerprint = pulid
    out = flux(**cfg_batch(tensors), transformer_options=options(pulid_patches(model, fingerprint, tensors)))
    b = pd.BATCH
    neg, pos = rel_err(out[:b], tensors["out.neg_id"]), rel_err(out[b:], tensors["out.pos_id"])
    print(f"FLUX forward with PuLID, relative max error vs official: negative {neg:.2e}, positive {pos:.2e}")
    assert neg < FLUX_RTOL and pos < FLUX_RTOL
    # The identity changes the output far beyond that error, so the comparison is not vacuous.
    assert rel_err(tensors["out.pos_id"], tensors["out.pos_plain"]) > 0.05


def test_patch_leaves_caller_options_unchanged(flux, pulid, fixture):
    tensors, _ = fixture
    model, fingerprint = pulid
    opts = options(pulid_patches(model, fingerprint, tensors))
    keys = set(opts)
    flux(**cfg_batch(tensors), transformer_options=opts)
    assert set(opts) == keys  # the call plan travels in a copy made by the wrapper


@pytest.mark.parametrize("flux_dtype", [torch.float16, torch.bfloat16])
def test_bf16_pulid_file_computes_in_the_flux_dtype(flux, fixture, tmp_path, flux_dtype):
    """The official file is bf16. Loaded as the node loads it (comfy.ops.manual_cast) and run inside ComfyUI's
    FLUX in fp16 or bf16, the cross-attention computes in the FLUX dtype and stays close to the fp32 result."""
    import comfy.ops
    tensors, _ = fixture
    path = tmp_path / "pulid_bf16.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in pd.state_dict_for(expected_layout(pd.PULID_CFG)).items()}, str(path))
    model, fingerprint = load_pulid_flux(str(path), ops=comfy.ops.manual_cast)
    seen = []
    for ca in model.pulid_ca:
        ca.to_q.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].dtype))
    reference = flux(**cfg_batch(tensors), transformer_options=options(pulid_patches(model, fingerprint, tensors)))
    assert set(seen) == {torch.float32}
    seen.clear()
    low = copy.deepcopy(flux).to(flux_dtype)
    inputs = {k: v.to(flux_dtype) if v.is_floating_point() else v for k, v in cfg_batch(tensors).items()}
    out = low(**inputs, transformer_options=options(pulid_patches(model, fingerprint, tensors)))
    assert set(seen) == {flux_dtype} and out.dtype == flux_dtype
    # FLUX itself drifts from fp32 in these dtypes; the identity must not add to that drift.
    plain_error = rel_err(low(**inputs, transformer_options=options()).float(), flux(**cfg_batch(tensors),
                                                                                      transformer_options=options()))
    error = rel_err(out.float(), reference)
    print(f"{flux_dtype}: relative max error vs fp32 {error:.3e} with PuLID, {plain_error:.3e} without")
    assert error < 2 * plain_error
