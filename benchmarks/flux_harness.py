"""What the FLUX benchmarks share: ComfyUI imported in-process, a FLUX model with random weights loaded the
way UNETLoader loads a file, this pack imported as ComfyUI imports it, a random PuLID file loaded and applied
by the node's own functions, sampling through ComfyUI's sampler, and timers placed with module hooks only
(so they measure whatever the engine does without knowing its classes)."""
from __future__ import annotations

import importlib
import sys
import time
import types
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from face_migration.pulid.identity import PulidIdentity  # noqa: E402
from face_migration.pulid.model import PulidConfig  # noqa: E402
from face_migration.pulid.weights import expected_layout  # noqa: E402

HIDDEN, HEADS, MLP_RATIO = 3072, 24, 4.0
CONTEXT_DIM, VEC_DIM, LATENT_CHANNELS = 4096, 768, 16
ID_TOKENS, TOKEN_DIM = 32, 2048
PACKAGE = "face_migration_pack"  # the pack imported in-process under this name, with its relative imports


def import_comfyui(comfyui: Path, cpu: bool) -> None:
    """ComfyUI's modules, with --cpu when asked. Appended to sys.path: its top-level `tests`/`utils` must not
    shadow anything."""
    sys.path.append(str(comfyui))
    import comfy.cli_args
    comfy.cli_args.args.cpu = cpu
    import comfy.model_management  # noqa: F401  (reads the arguments once)


def import_pack():
    """nodes/pulid_nodes.py, imported as a package module as ComfyUI imports a custom node folder."""
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(ROOT)]
    sys.modules[PACKAGE] = package
    importlib.import_module(f"{PACKAGE}.nodes.common").register_model_folders()
    return importlib.import_module(f"{PACKAGE}.nodes.pulid_nodes")


def random_tensor(shape: tuple[int, ...], key: str, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Fan-in scaled uniform weights (activations of order one: no inf, no denormals), norm scales 1."""
    if len(shape) >= 2:
        bound = (3.0 / shape[-1]) ** 0.5
        return torch.empty(shape).uniform_(-bound, bound, generator=gen).to(dtype)
    if key.endswith(".bias"):
        return torch.empty(shape).uniform_(-0.02, 0.02, generator=gen).to(dtype)
    return torch.ones(shape, dtype=dtype)


def flux_state_dict(double: int, single: int, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with the key layout of a FLUX.1-dev file (hidden 3072), `double` + `single` blocks."""
    import comfy.ldm.flux.model as comfy_flux
    import comfy.ops
    meta = comfy_flux.Flux(operations=comfy.ops.disable_weight_init, device="meta", dtype=torch.float32,
                           in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, patch_size=2, vec_in_dim=VEC_DIM,
                           context_in_dim=CONTEXT_DIM, hidden_size=HIDDEN, mlp_ratio=MLP_RATIO, num_heads=HEADS,
                           depth=double, depth_single_blocks=single, axes_dim=[16, 56, 56], theta=10000,
                           qkv_bias=True, guidance_embed=True, **newer_flux_params(comfy_flux))
    gen = torch.Generator().manual_seed(seed)
    return {k: random_tensor(tuple(v.shape), k, gen, dtype) for k, v in meta.state_dict().items()}


def newer_flux_params(comfy_flux) -> dict:
    """FluxParams fields of newer cores without a default, as their model detection sets them for FLUX.1
    (0.33: txt_ids_dims, empty)."""
    import dataclasses
    fields = {f.name for f in dataclasses.fields(comfy_flux.FluxParams)}
    return {"txt_ids_dims": []} if "txt_ids_dims" in fields else {}


def load_flux(state_dict: dict, weight_dtype: torch.dtype | None = None):
    """A ModelPatcher as UNETLoader makes it (weight_dtype as its fp8 option)."""
    import comfy.sd
    options = {} if weight_dtype is None else {"dtype": weight_dtype}
    patcher = comfy.sd.load_diffusion_model_state_dict(state_dict, model_options=options)
    if patcher is None:
        raise RuntimeError("ComfyUI did not recognise the random FLUX state dict")
    return patcher


def pulid_config(num_ca: int) -> PulidConfig:
    """The real CA sizes; the IDFormer (unused while sampling) small."""
    return PulidConfig(encoder_dim=64, encoder_depth=5, num_queries=ID_TOKENS, id_mapping_dim=16, vit_dim=16,
                       vit_mapping_dim=16, token_dim=TOKEN_DIM, flux_hidden=HIDDEN, ca_inner_dim=2048, num_ca=num_ca)


def pulid_state_dict(cfg: PulidConfig, dtype: torch.dtype, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: random_tensor(shape, k, gen, dtype) for k, shape in expected_layout(cfg).items()}


def pulid_handle(pulid_nodes, state_dict: dict, workdir: Path):
    """The PULID model value the loader node makes, from a random file."""
    path = workdir / "pulid_bench.safetensors"
    save_file(state_dict, str(path))
    return pulid_nodes.PulidModelHandle(str(path))


def random_identity(handle, seed: int = 2) -> PulidIdentity:
    gen = torch.Generator().manual_seed(seed)
    cond = torch.randn(1, ID_TOKENS, TOKEN_DIM, generator=gen)
    return PulidIdentity(cond, torch.zeros_like(cond), handle.fingerprint)


def apply(pulid_nodes, model, handle, identity, start_step: int = 0, end_step: int = 10000, mask=None):
    """The Apply node's function with its defaults (steps timing, weight 1, official uncond)."""
    return pulid_nodes.apply_pulid(model, handle, identity, weight=1.0, timing="steps", start_step=start_step,
                                   end_step=end_step, start_percent=0.0, end_percent=1.0, uncond_id="uncond ID",
                                   mask=mask)


class Inputs:
    """A latent and text conditioning for one image, as the FLUX text encoder and EmptySD3LatentImage give."""

    def __init__(self, size: int, text_tokens: int, device: str = "cpu", seed: int = 3):
        gen = torch.Generator().manual_seed(seed)
        self.latent = torch.zeros(1, LATENT_CHANNELS, size // 8, size // 8)
        self.noise = torch.randn(self.latent.shape, generator=gen)
        context = torch.randn(1, text_tokens, CONTEXT_DIM, generator=gen)
        pooled = torch.randn(1, VEC_DIM, generator=gen)
        self.positive = [[context, {"pooled_output": pooled, "guidance": 3.5}]]
        self.negative = [[torch.zeros_like(context), {"pooled_output": torch.zeros_like(pooled), "guidance": 3.5}]]


def sample(model, inputs: Inputs, steps: int, cfg: float, sampler: str = "euler", scheduler: str = "simple"):
    """KSampler's path: comfy.sample.sample (model loading, CFG, wrappers, patches)."""
    import comfy.sample
    return comfy.sample.sample(model, inputs.noise, steps, cfg, sampler, scheduler, inputs.positive,
                               inputs.negative, inputs.latent, disable_pbar=True, seed=0)


class Clock:
    """Seconds per label during the current case; hooks add to whichever clock is running."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def reset(self):
        self.seconds.clear()
        self.calls.clear()


class Timers:
    """Forward hooks on modules; each call's time goes to the running clock under the module's label."""

    def __init__(self):
        self.running = Clock()

    def add(self, modules, label: str) -> None:
        for module in modules:
            starts: list[float] = []
            module.register_forward_pre_hook(lambda _m, _a, starts=starts: starts.append(time.perf_counter()))
            module.register_forward_hook(lambda _m, _a, _o, starts=starts, label=label: self._stop(label, starts))

    def _stop(self, label: str, starts: list[float]) -> None:
        self.running.seconds[label] += time.perf_counter() - starts.pop()
        self.running.calls[label] += 1

    def timing(self, clock: Clock, fn: Callable[[], object]) -> Callable[[], object]:
        """fn run with `clock` running (reset first) and its total time under "total"."""
        def run():
            self.running = clock
            clock.reset()
            start = time.perf_counter()
            out = fn()
            clock.seconds["total"] += time.perf_counter() - start
            return out
        return run


def flux_parts(flux) -> dict[str, list[torch.nn.Module]]:
    """FLUX's own modules, by label: each block kind, and everything else it computes with."""
    parts = {"double": list(flux.double_blocks), "single": list(flux.single_blocks)}
    parts["other"] = [m for name, m in flux.named_children()
                      if name not in ("double_blocks", "single_blocks", "pulid_ca")]
    return parts


def time_flux(timers: Timers, flux) -> None:
    for label, modules in flux_parts(flux).items():
        timers.add(modules, f"flux {label}")
