"""Injecting PuLID identity into FLUX through ComfyUI's block-patch convention.

ComfyUI calls a `patches_replace["dit"][("double_block" | "single_block", i)]` patch as
`patch(args, {"original_block": fn})`, where `args` holds `img` (and `txt` for double blocks), `vec`,
`pe`, `attn_mask` and `transformer_options`; it expects a dict with `img` (and `txt`) back. A
DIFFUSION_MODEL wrapper is called as `wrapper(executor, x, ..., transformer_options, ...)`. Both are
plain Python conventions, so this module needs no `comfy` import and is tested with dicts and tensors.

The maths is the official one: after the chosen blocks, `img += weight * CA(id_tokens, img)` on the
generated image tokens only (never text tokens, never Kontext reference tokens), decided per batch row.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import FaceMigrationError
from .pulid.identity import PulidIdentity
from .pulid.model import PulidFlux, ca_block_placement

# transformer_options key under which the wrapper leaves the token grid of the current call.
CALL_CONTEXT_KEY = "face_migration_pulid"


class UncondMode(str, enum.Enum):
    UNCOND_ID = "uncond ID"  # official: the IDFormer's all-zero output on the negative pass
    SAME_ID = "same ID"
    NO_ID = "no ID"


@dataclass(frozen=True)
class StepRange:
    """Identity on denoising steps start <= i < end (i counted from 0, as the hosted API's id_timestep_start)."""
    start: int
    end: int

    def active(self, sigmas: torch.Tensor, transformer_options: dict) -> torch.Tensor:
        schedule = transformer_options.get("sample_sigmas")
        if schedule is None:
            raise FaceMigrationError(
                "PuLID step mode needs the sampler's schedule (transformer_options['sample_sigmas']), which this "
                "sampler does not provide. Set the Apply node's timing to percent mode.")
        schedule = schedule.to(sigmas.device, torch.float64).flatten()
        # Step i covers sigmas in (schedule[i+1], schedule[i]]; a tolerance absorbs dtype rounding.
        s = sigmas.to(torch.float64)
        steps = (schedule[None, :] >= s[:, None] * (1 - 1e-5) - 1e-9).sum(dim=1) - 1
        return (steps >= self.start) & (steps < self.end)


@dataclass(frozen=True)
class SigmaRange:
    """Identity while low <= sigma <= high (percent mode: thresholds from the model's percent_to_sigma)."""
    high: float
    low: float

    def active(self, sigmas: torch.Tensor, transformer_options: dict) -> torch.Tensor:
        s = sigmas.to(torch.float64)
        return (s <= self.high) & (s >= self.low)


@dataclass
class CallContext:
    """What one diffusion-model call knows about its tokens: the generated image's token grid, and
    the text length, recorded by the double-block patches for the single blocks."""
    grid: tuple[int, int]
    txt_len: int | None = None

    @property
    def image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class RowPlan:
    """Per batch row of a block call: its sigma, whether it belongs to the negative pass, its latent index."""
    sigmas: torch.Tensor
    is_uncond: torch.Tensor
    latent_index: torch.Tensor


def plan_rows(transformer_options: dict, rows: int, device: torch.device) -> RowPlan:
    """ComfyUI batches chunks (cond/uncond, listed in cond_or_uncond) of the same latents; sigmas holds one
    value per latent or per row."""
    chunk_kinds = list(transformer_options.get("cond_or_uncond") or [0])
    if rows % len(chunk_kinds):
        raise FaceMigrationError(f"PuLID: {rows} batch rows do not split into {len(chunk_kinds)} cond/uncond chunks.")
    chunk = rows // len(chunk_kinds)
    sigmas = transformer_options.get("sigmas")
    sigmas = torch.zeros(1) if sigmas is None else torch.as_tensor(sigmas).flatten()
    sigmas = sigmas.to(device)
    if sigmas.numel() == chunk:
        sigmas = sigmas.repeat(len(chunk_kinds))
    elif sigmas.numel() == 1:
        sigmas = sigmas.expand(rows)
    elif sigmas.numel() != rows:
        raise FaceMigrationError(f"PuLID: {sigmas.numel()} sigmas for {rows} batch rows.")
    kinds = torch.tensor(chunk_kinds, device=device).repeat_interleave(chunk)
    return RowPlan(sigmas, kinds == 1, torch.arange(rows, device=device) % chunk)


def mask_to_tokens(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B, H, W] (or [H, W]) mask in image space -> [B, h*w, 1] weights on the token grid, any aspect ratio."""
    if mask.ndim == 2:
        mask = mask[None]
    pooled = F.adaptive_avg_pool2d(mask[:, None].float(), grid)
    return pooled.flatten(1)[..., None]


@dataclass(eq=False)
class Injection:
    """One Apply node: an identity, the CA modules it goes through, and when / where / how strongly."""
    model: PulidFlux
    identity: PulidIdentity
    weight: float
    timing: StepRange | SigmaRange
    uncond_mode: UncondMode = UncondMode.UNCOND_ID
    mask: torch.Tensor | None = None  # [B, H, W] in [0, 1]
    _cache: dict = field(default_factory=dict, repr=False)

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _tokens(self, device, dtype):
        return self._cached(("tokens", device, dtype), lambda: (
            self.identity.cond.to(device, dtype), self.identity.uncond.to(device, dtype)))

    def _mask_rows(self, grid, device, dtype, latent_index):
        tokens = self._cached(("mask", grid, device, dtype),
                              lambda: mask_to_tokens(self.mask, grid).to(device, dtype))
        return tokens[latent_index % tokens.shape[0]]

    def _row_tokens(self, plan: RowPlan, rows: torch.Tensor, device, dtype) -> torch.Tensor:
        cond, uncond = self._tokens(device, dtype)
        n = cond.shape[0]
        chunk = int(plan.latent_index.max()) + 1
        if n not in (1, chunk):
            raise FaceMigrationError(
                f"The face identity holds {n} separate identities but the batch has {chunk} images: use one "
                f"identity (mean of references) or exactly one per image.")
        which = plan.latent_index[rows] % n
        use_uncond = plan.is_uncond[rows] & (self.uncond_mode is UncondMode.UNCOND_ID)
        return torch.where(use_uncond[:, None, None], uncond[which], cond[which])

    def residual(self, ca_index: int, img: torch.Tensor, transformer_options: dict,
                 grid: tuple[int, int] | None):
        """(row indices or None for all rows, weight * CA output for those rows), or None when no row is active."""
        plan = plan_rows(transformer_options, img.shape[0], img.device)
        active = self.timing.active(plan.sigmas, transformer_options)
        if self.uncond_mode is UncondMode.NO_ID:
            active &= ~plan.is_uncond
        if not bool(active.any()):
            return None
        all_rows = bool(active.all())
        rows = torch.arange(img.shape[0], device=img.device) if all_rows else active.nonzero().flatten()
        ca = self.model.pulid_ca[ca_index]
        compute_dtype = ca.to_q.weight.dtype
        x = img if all_rows else img[rows]
        out = ca(self._row_tokens(plan, rows, img.device, compute_dtype), x.to(compute_dtype)).to(img.dtype)
        out = out * self.weight
        if self.mask is not None:
            if grid is None:
                raise FaceMigrationError("PuLID mask: the image token grid is unknown for this call.")
            out = out * self._mask_rows(grid, img.device, img.dtype, plan.latent_index[rows])
        return (None if all_rows else rows), out


class PulidBlockPatch:
    """The patch ComfyUI calls for one FLUX block that is followed by CA module `ca_index`.

    Several Apply nodes on one model share one patch per block (their residuals are all computed from
    the block's output and added together); a foreign patch already on the block is called first."""

    def __init__(self, kind: str, ca_index: int, injections: tuple[Injection, ...], previous=None,
                 managed_models: tuple = ()):
        if kind not in ("double", "single"):
            raise ValueError(kind)
        self.kind = kind
        self.ca_index = ca_index
        self.injections = injections
        self.previous = previous
        self.managed_models = managed_models

    def extended(self, injection: Injection, managed_models: tuple = ()) -> "PulidBlockPatch":
        return PulidBlockPatch(self.kind, self.ca_index, self.injections + (injection,), self.previous,
                               self.managed_models + tuple(m for m in managed_models if m not in self.managed_models))

    # ModelPatcher.clone() deep-copies model_options: share this object (and its tensors) instead.
    def __deepcopy__(self, memo):
        return self

    # Model management hooks: load our weights with the diffusion model; tokens follow lazily.
    def models(self) -> list:
        extra = self.previous.models() if hasattr(self.previous, "models") else []
        return list(self.managed_models) + list(extra)

    def to(self, device_or_dtype):
        if hasattr(self.previous, "to"):
            self.previous = self.previous.to(device_or_dtype)
        return self

    def __call__(self, args: dict, extra: dict) -> dict:
        out = self.previous(args, extra) if self.previous is not None else extra["original_block"](args)
        transformer_options = args.get("transformer_options") or {}
        context: CallContext | None = transformer_options.get(CALL_CONTEXT_KEY)
        img = out["img"]
        if self.kind == "double":
            start = 0
            if context is not None:
                context.txt_len = out["txt"].shape[1]
        else:
            if context is None or context.txt_len is None:
                raise FaceMigrationError("PuLID: the text length is unknown in a single block (no double-block patch ran).")
            start = context.txt_len
        count = context.image_tokens if context is not None else img.shape[1] - start
        region = img[:, start:start + count]
        grid = context.grid if context is not None else None
        results = [r for inj in self.injections
                   if (r := inj.residual(self.ca_index, region, transformer_options, grid)) is not None]
        for rows, residual in results:
            if rows is None:
                region += residual
            else:
                region.index_add_(0, rows, residual)
        return out


class TokenGridWrapper:
    """DIFFUSION_MODEL wrapper: tells the block patches the generated image's token grid for this call,
    through a fresh transformer_options copy (the caller's dict is left as it was)."""

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        x = args[0] if args else kwargs["x"]
        patch = getattr(getattr(executor, "class_obj", None), "patch_size", 2)
        grid = ((x.shape[-2] + patch // 2) // patch, (x.shape[-1] + patch // 2) // patch)
        if isinstance(kwargs.get("transformer_options"), dict):
            kwargs["transformer_options"] = {**kwargs["transformer_options"], CALL_CONTEXT_KEY: CallContext(grid)}
        else:  # passed positionally: the dict that carries our block patches
            args = list(args)
            for i, arg in enumerate(args):
                if isinstance(arg, dict) and "patches_replace" in arg:
                    args[i] = {**arg, CALL_CONTEXT_KEY: CallContext(grid)}
        return executor(*args, **kwargs)


def block_patches(num_double: int, num_single: int) -> list[tuple[str, int, int]]:
    """(kind, block index, CA index) for every block followed by a CA module, in the official order."""
    doubles, singles = ca_block_placement(num_double, num_single)
    placed = [("double", i) for i in doubles] + [("single", i) for i in singles]
    return [(kind, block, ca) for ca, (kind, block) in enumerate(placed)]
