"""Runs ComfyUI's FLUX (from the checkout in the working directory) plain and with our PuLID block patches on
the parity fixture's weights and inputs, and saves the outputs for test_flux_parity.py to compare with the
official ones. Started by that test with the checkout's own Python, so each ComfyUI version of the matrix
runs with its own requirements:

    cd /path/to/ComfyUI && /path/to/its/python REPO/tests/integration/flux_parity_run.py REPO OUT.safetensors

ComfyUI's model detection builds FLUX.1 differently across versions (0.33 added FluxParams.txt_ids_dims, []
for FLUX.1, and names the RMSNorm scales `.weight`, renaming a file's `_norm.scale` keys when it loads it);
this builds it the same way."""
import copy
import dataclasses
import json
import os
import sys

import torch
from safetensors.torch import save_file

repo, out_path = sys.argv[1], sys.argv[2]
sys.path.insert(0, repo)
sys.path.append(os.getcwd())  # ComfyUI last: it has its own `tests` package
import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True
import comfy.ops  # noqa: E402
from comfy.ldm.flux.model import Flux, FluxParams  # noqa: E402

from devkit import parity_data as pd  # noqa: E402
from face_migration.injection import (Injection, PulidBlockPatch, PulidCallWrapper, StepRange,  # noqa: E402
                                      block_patches)
from face_migration.pulid.identity import PulidIdentity  # noqa: E402
from face_migration.pulid.weights import expected_layout, load_pulid_flux  # noqa: E402

tensors, meta = pd.load_fixture(pd.FLUX_FIXTURE)
sd = pd.state_dict_for(pd.flux_layout())
params = dict(pd.FLUX_PARAMS)
if "txt_ids_dims" in {f.name for f in dataclasses.fields(FluxParams)}:
    params["txt_ids_dims"] = []
flux = Flux(operations=comfy.ops.disable_weight_init, out_channels=params["in_channels"], patch_size=2,
            dtype=torch.float32, **params).eval()
if any(k.endswith("_norm.weight") for k in flux.state_dict()):
    sd = {k[:-len("scale")] + "weight" if k.endswith("_norm.scale") else k: v for k, v in sd.items()}
flux.load_state_dict(sd, strict=True)
flux.requires_grad_(False)


def cfg_batch(dtype=torch.float32):
    """One model call holding the negative chunk then the positive chunk, as ComfyUI's sampler batches them."""
    batch = dict(x=torch.cat([tensors["x"], tensors["x"]]), timestep=torch.tensor(pd.TIMESTEPS).repeat(2),
                 context=torch.cat([tensors["context_neg"], tensors["context_pos"]]),
                 y=torch.cat([tensors["y_neg"], tensors["y_pos"]]), guidance=torch.full((2 * pd.BATCH,), pd.GUIDANCE))
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}


def options(patches=None):
    opts = {"cond_or_uncond": [1, 0], "sigmas": torch.tensor(pd.TIMESTEPS),
            "sample_sigmas": torch.tensor([1.0, 0.9, 0.6, 0.3, 0.0])}
    if patches is not None:
        injections = tuple({i: None for patch in patches.values() for i in patch.injections})
        opts["patches_replace"] = {"dit": patches}
        opts["wrappers"] = {"diffusion_model": {"face_migration_pulid": [PulidCallWrapper(injections)]}}
    return opts


def pulid_patches(model, fingerprint):
    identity = PulidIdentity(tensors["id_cond"], tensors["id_uncond"], fingerprint)
    injection = Injection(model, identity, pd.ID_WEIGHT, StepRange(0, 1000))
    return {(f"{kind}_block", block): PulidBlockPatch(kind, ca, (injection,))
            for kind, block, ca in block_patches(pd.FLUX_PARAMS["depth"], pd.FLUX_PARAMS["depth_single_blocks"])}


report = {"flux_checksum": pd.checksum(pd.state_dict_for(pd.flux_layout()))}
outputs = {"plain": flux(**cfg_batch(), transformer_options=options())}
pulid_file = os.path.join(os.path.dirname(out_path), "pulid_parity.safetensors")
save_file(pd.state_dict_for(expected_layout(pd.PULID_CFG)), pulid_file)
model, fingerprint = load_pulid_flux(pulid_file)
opts = options(pulid_patches(model, fingerprint))
keys = set(opts)
outputs["pulid"] = flux(**cfg_batch(), transformer_options=opts)
report["caller_options_unchanged"] = set(opts) == keys  # the call plan travels in a copy made by the wrapper

# The official file is bf16: loaded as the node loads it (comfy.ops.manual_cast), inside FLUX in fp16 / bf16.
bf16_file = os.path.join(os.path.dirname(out_path), "pulid_bf16.safetensors")
save_file({k: v.to(torch.bfloat16) for k, v in pd.state_dict_for(expected_layout(pd.PULID_CFG)).items()}, bf16_file)
model, fingerprint = load_pulid_flux(bf16_file, ops=comfy.ops.manual_cast)
seen = []
for ca in model.pulid_ca:
    ca.to_q.register_forward_pre_hook(lambda _, inputs: seen.append(str(inputs[0].dtype)))
outputs["bf16_file_fp32"] = flux(**cfg_batch(), transformer_options=options(pulid_patches(model, fingerprint)))
report["seen.fp32"] = sorted(set(seen))
for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
    seen.clear()
    low = copy.deepcopy(flux).to(dtype)
    out = low(**cfg_batch(dtype), transformer_options=options(pulid_patches(model, fingerprint)))
    report[f"seen.{name}"], report[f"out_dtype.{name}"] = sorted(set(seen)), str(out.dtype)
    outputs[f"bf16_file_{name}"] = out.float()
    outputs[f"plain_{name}"] = low(**cfg_batch(dtype), transformer_options=options()).float()
save_file({k: v.contiguous() for k, v in outputs.items()}, out_path, metadata={"report": json.dumps(report)})
