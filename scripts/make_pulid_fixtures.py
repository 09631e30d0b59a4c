#!/usr/bin/env python3
"""Regenerate the PuLID parity fixtures from the official code (ToTheBeginning/PuLID) given by path.

    python scripts/make_pulid_fixtures.py --reference /path/to/PuLID

It builds the official IDFormer, PerceiverAttentionCA and FLUX model at the tiny sizes of
devkit/parity_data.py, loads the seeded weights from there, runs them on the seeded inputs and writes

  tests/fixtures/pulid_parity.safetensors       IDFormer cond + uncond (all-zero inputs) output, one CA output
  tests/fixtures/flux_pulid_parity.safetensors  tiny FLUX forward: plain and with pulid_ca / id_weight,
                                                positive pass (cond ID) and negative pass (uncond ID)

Only inputs and outputs are stored; the tests rebuild the weights from the seed. The official code is
imported from the path, run in fp32 on the CPU, and never copied. Needs torch, einops, safetensors.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from einops import rearrange
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from face_migration.pulid.weights import expected_layout  # noqa: E402
from devkit import parity_data as pd  # noqa: E402


def reference_commit(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def official_pulid(enc_mod):
    """The official IDFormer and CA modules at PULID_CFG's sizes, with the seeded weights."""
    c = pd.PULID_CFG
    encoder = enc_mod.IDFormer(dim=c.encoder_dim, depth=c.encoder_depth, dim_head=64, heads=c.encoder_heads,
                               num_id_token=c.num_id_tokens, num_queries=c.num_queries, output_dim=c.token_dim,
                               ff_mult=c.ff_mult)
    cas = torch.nn.ModuleList(
        enc_mod.PerceiverAttentionCA(dim=c.flux_hidden, dim_head=128, heads=c.ca_heads, kv_dim=c.token_dim)
        for _ in range(c.num_ca))
    shapes = {f"pulid_encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    shapes.update({f"pulid_ca.{k}": tuple(v.shape) for k, v in cas.state_dict().items()})
    ours = expected_layout(c)
    if shapes != ours:
        raise SystemExit(f"official layout differs from expected_layout: {sorted(set(shapes) ^ set(ours))[:5]} "
                         f"{[k for k in ours if k in shapes and shapes[k] != ours[k]][:5]}")
    sd = pd.state_dict_for(shapes)
    encoder.load_state_dict({k[len("pulid_encoder."):]: v for k, v in sd.items() if k.startswith("pulid_encoder.")},
                            strict=True)
    cas.load_state_dict({k[len("pulid_ca."):]: v for k, v in sd.items() if k.startswith("pulid_ca.")}, strict=True)
    return encoder.eval(), cas.eval(), pd.checksum(sd)


def pulid_fixture(encoder, cas):
    inputs = pd.pulid_inputs()
    vit = [inputs[f"vit_hidden.{i}"] for i in range(pd.PULID_CFG.num_vit_scales)]
    cond = encoder(inputs["id_vector"], vit)
    uncond = encoder(torch.zeros_like(inputs["id_vector"]), [torch.zeros_like(h) for h in vit])
    ca_out = cas[1](inputs["ca_id_tokens"], inputs["ca_img"])  # called (id, img) as in flux/model.py
    return {**inputs, "out.cond": cond, "out.uncond": uncond, "out.ca_1": ca_out}


def flux_fixture(flux_mod, cas, cond, uncond):
    p = dict(pd.FLUX_PARAMS)
    channels = p.pop("in_channels")
    model = flux_mod.Flux(flux_mod.FluxParams(in_channels=channels * 4, **p)).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = pd.state_dict_for(shapes)
    model.load_state_dict(sd, strict=True)
    model.pulid_ca = cas  # what pipeline_flux.PuLIDPipeline does to the dit
    # Official placement for these block counts (flux/model.py: i % interval == 0, counter ca_idx).
    doubles = [i for i in range(p["depth"]) if i % model.pulid_double_interval == 0]
    singles = [i for i in range(p["depth_single_blocks"]) if i % model.pulid_single_interval == 0]
    assert len(doubles) + len(singles) == len(cas), (doubles, singles)

    inputs = pd.flux_inputs()
    x = inputs["x"]
    b, _, h, w = x.shape
    img = rearrange(x, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)
    img_ids = torch.zeros(h // 2, w // 2, 3)
    img_ids[..., 1] = torch.arange(h // 2)[:, None]
    img_ids[..., 2] = torch.arange(w // 2)[None, :]
    img_ids = img_ids.reshape(1, -1, 3).repeat(b, 1, 1)
    txt_ids = torch.zeros(b, pd.TEXT_TOKENS, 3)
    t = torch.tensor(pd.TIMESTEPS)
    guidance = torch.full((b,), pd.GUIDANCE)

    def run(kind, id_tokens):
        out = model(img=img, img_ids=img_ids, txt=inputs[f"context_{kind}"], txt_ids=txt_ids, timesteps=t,
                    y=inputs[f"y_{kind}"], guidance=guidance, id=id_tokens, id_weight=pd.ID_WEIGHT)
        return rearrange(out, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=h // 2, w=w // 2, ph=2, pw=2)

    outputs = {"out.pos_plain": run("pos", None), "out.pos_id": run("pos", cond),
               "out.neg_plain": run("neg", None), "out.neg_id": run("neg", uncond)}
    meta = {"flux_checksum": pd.checksum(sd), "double_ca_blocks": doubles, "single_ca_blocks": singles}
    return {**inputs, "id_cond": cond, "id_uncond": uncond, **outputs}, meta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, type=Path, help="checkout of ToTheBeginning/PuLID")
    ap.add_argument("--out", type=Path, default=ROOT / pd.FIXTURES)
    args = ap.parse_args()
    ref = args.reference.resolve()
    if not (ref / "pulid" / "encoders_transformer.py").is_file() or not (ref / "flux" / "model.py").is_file():
        ap.error(f"{ref} is not a PuLID checkout (pulid/encoders_transformer.py and flux/model.py expected)")
    sys.path.insert(0, str(ref))
    import flux.model as flux_mod  # noqa: PLC0415 (from the reference checkout)
    import pulid.encoders_transformer as enc_mod  # noqa: PLC0415

    torch.set_grad_enabled(False)
    encoder, cas, pulid_sum = official_pulid(enc_mod)
    pulid_tensors = pulid_fixture(encoder, cas)
    flux_tensors, flux_meta = flux_fixture(flux_mod, cas, pulid_tensors["out.cond"], pulid_tensors["out.uncond"])

    common = {"reference": "ToTheBeginning/PuLID", "reference_commit": reference_commit(ref),
              "torch": torch.__version__, "seed": str(pd.SEED), "pulid_checksum": repr(pulid_sum)}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, tensors, meta in ((pd.PULID_FIXTURE, pulid_tensors, {}), (pd.FLUX_FIXTURE, flux_tensors, flux_meta)):
        path = args.out / name
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
                  metadata={**common, **{k: json.dumps(v) for k, v in meta.items()}})
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    print(f"official CA placement for {pd.FLUX_PARAMS['depth']} double / {pd.FLUX_PARAMS['depth_single_blocks']} "
          f"single blocks: double {flux_meta['double_ca_blocks']}, single {flux_meta['single_ca_blocks']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
