"""Injecting PuLID identity into FLUX through ComfyUI's block-patch convention.

ComfyUI calls a `patches_replace["dit"][("double_block" | "single_block", i)]` patch as
`patch(args, {"original_block": fn})`, where `args` holds `img` (and `txt` for double blocks), `vec`,
`pe`, `attn_mask` and `transformer_options`; it expects a dict with `img` (and `txt`) back. A
DIFFUSION_MODEL wrapper is called as `wrapper(executor, x, timestep, context, y, guidance, ref_latents,
control, transformer_options, ...)` and a SAMPLER_SAMPLE wrapper as `wrapper(executor, guider, sigmas,
extra_args, ...)`. These are plain Python conventions, so this module needs no `comfy` import and is tested
with dicts and tensors.

The maths is the official one: after the chosen blocks, `img += weight * CA(id_tokens, img)` on the
generated image tokens only (never text tokens, never Kontext reference tokens), decided per batch row.

Work is split so the sampling device never waits for the host inside the model:
- `PulidCallWrapper` (once per model call) decides everything on the CPU: which rows of which Apply are
  active, their ID tokens and mask weights (already on the activations' device and in their dtype, cached
  across calls), and where the generated image's tokens sit. It leaves a `CallPlan` in a copy of
  transformer_options; when no Apply is active it leaves nothing.
- `PulidBlockPatch` only adds `weight * CA(tokens, region[rows])` as the plan says.
- `PulidRunWrapper` (once per sampling run) records on which steps each Apply was active and logs it,
  with a warning for an Apply that never was.
"""
from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import BatchMismatchError, FaceMigrationError, InvalidInputError
from .pulid.identity import PulidIdentity
from .pulid.model import PulidFlux, ca_block_placement

# transformer_options keys: the plan of the current model call, the record of the current sampling run.
PLAN_KEY = "face_migration_pulid_plan"
RUN_KEY = "face_migration_pulid_run"
LOG_PREFIX = "[Face Migration]"
# Device tensors kept per Apply (token rows, mask rows, row indices); a sampling run uses two or three.
MAX_CACHED = 16
# Relative tolerance when matching a call's sigma to the schedule (sigmas pass through fp16/bf16/fp32).
SIGMA_RTOL = 1e-5

logger = logging.getLogger(__name__)


class UncondMode(str, enum.Enum):
    UNCOND_ID = "uncond ID"  # official: the IDFormer's all-zero output on the negative pass
    SAME_ID = "same ID"
    NO_ID = "no ID"


def step_indices(sigmas: torch.Tensor, schedule: torch.Tensor) -> torch.Tensor:
    """The step of the run each sigma belongs to: step i holds the calls with sigma in
    (schedule[i+1], schedule[i]] (a sigma above schedule[0] counts as step 0). CPU, float32."""
    s = sigmas.float().flatten()
    sched = schedule.float().flatten()
    at_or_above = (sched[None, :] >= s[:, None] * (1 - SIGMA_RTOL) - 1e-6).sum(dim=1)
    return (at_or_above - 1).clamp(min=0)


@dataclass(frozen=True)
class CallInfo:
    """CPU facts about one model call, per batch row: sigma, step of the run (None when the sampler gives no
    schedule), negative pass or not, index of the latent image; plus the batch of latents (chunk size)."""
    sigmas: torch.Tensor
    steps: torch.Tensor | None
    is_uncond: torch.Tensor
    latent_index: torch.Tensor
    batch: int
    grid: tuple[int, int]
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def from_options(cls, transformer_options: dict, x: torch.Tensor, grid: tuple[int, int],
                     schedule: torch.Tensor | None) -> "CallInfo":
        """ComfyUI batches chunks (cond/uncond, listed in cond_or_uncond) of the same latents; sigmas holds one
        value per latent or per row. `schedule`: the run's sigmas on the CPU, or None."""
        rows = x.shape[0]
        chunk_kinds = list(transformer_options.get("cond_or_uncond") or [0])
        if rows % len(chunk_kinds):
            raise BatchMismatchError(
                f"PuLID: the model call has {rows} batch rows, which do not split into the {len(chunk_kinds)} "
                f"cond/uncond chunks ComfyUI announced (transformer_options['cond_or_uncond']). Another node "
                f"changes the batch; apply PuLID after it or remove it.")
        chunk = rows // len(chunk_kinds)
        sigmas = transformer_options.get("sigmas")
        # One host read per model call: everything below runs on the CPU.
        sigmas = torch.zeros(1) if sigmas is None else torch.as_tensor(sigmas).detach().flatten().float().cpu()
        if sigmas.numel() == chunk:
            sigmas = sigmas.repeat(len(chunk_kinds))
        elif sigmas.numel() == 1:
            sigmas = sigmas.expand(rows)
        elif sigmas.numel() != rows:
            raise BatchMismatchError(f"PuLID: the model call has {sigmas.numel()} sigmas for {rows} batch rows; "
                                     f"expected 1, {chunk} or {rows}.")
        kinds = torch.tensor(chunk_kinds).repeat_interleave(chunk)
        steps = None if schedule is None else step_indices(sigmas, schedule)
        return cls(sigmas, steps, kinds == 1, torch.arange(rows) % chunk, chunk, grid, x.device, x.dtype)


@dataclass(frozen=True)
class StepRange:
    """Identity on the run's steps start <= i < end (i counted from 0 in the sigmas the sampler was given, as
    the hosted API's id_timestep_start counts the steps of its run)."""
    start: int
    end: int

    def active(self, call: CallInfo) -> torch.Tensor:
        if call.steps is None:
            raise FaceMigrationError(
                "PuLID step mode needs the sampler's schedule (transformer_options['sample_sigmas']), which this "
                "sampler does not provide. Set the Apply node's timing to percent mode.")
        return (call.steps >= self.start) & (call.steps < self.end)

    def __str__(self):
        return f"steps {self.start}-{self.end}"


@dataclass(frozen=True)
class SigmaRange:
    """Identity while low <= sigma <= high (percent mode: thresholds from the model's percent_to_sigma)."""
    high: float
    low: float

    def active(self, call: CallInfo) -> torch.Tensor:
        return (call.sigmas <= self.high) & (call.sigmas >= self.low)

    def __str__(self):
        return f"sigma {self.high:.4g}..{self.low:.4g}"


def mask_to_tokens(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B, H, W] (or [H, W]) mask in image space -> [B, h*w, 1] weights on the token grid, any aspect ratio."""
    if mask.ndim == 2:
        mask = mask[None]
    pooled = F.adaptive_avg_pool2d(mask[:, None].float(), grid)
    return pooled.flatten(1)[..., None]


def check_weight(weight: float) -> float:
    if not math.isfinite(weight):
        raise InvalidInputError(f"Apply PuLID input 'weight' is {weight}; expected a finite number (1 = official "
                                f"strength, 0 = off).")
    return float(weight)


def check_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A MASK input as Apply can use it: [M, H, W] float on the CPU, or a named error. Whether M fits the
    latent batch (1 or one per image) is checked when sampling, where the batch is known."""
    if mask is None:
        return None
    shape = list(mask.shape)
    if mask.ndim not in (2, 3) or 0 in shape:
        raise InvalidInputError(f"Apply PuLID input 'mask' has shape {shape}; expected [height, width] or "
                                f"[batch, height, width] with no empty dimension. Connect a MASK (e.g. from "
                                f"SolidMask or Load Image's mask), not an image or a latent.")
    mask = mask.detach().float().cpu()
    if not bool(torch.isfinite(mask).all()):
        raise InvalidInputError(f"Apply PuLID input 'mask' {shape} contains NaN or infinite values; expected "
                                f"values in [0, 1]. Check the node that makes the mask.")
    return mask if mask.ndim == 3 else mask[None]


@dataclass(frozen=True)
class ActiveInjection:
    """What a block patch does for one Apply in one model call: rows (None = all), their ID tokens and mask
    weights on the activations' device and dtype, and the weight."""
    ca_modules: torch.nn.ModuleList
    active_rows: tuple[int, ...]  # on the CPU, for the run record
    rows: torch.Tensor | None
    tokens: torch.Tensor
    mask: torch.Tensor | None
    weight: float

    def residual(self, ca_index: int, region: torch.Tensor) -> torch.Tensor:
        x = region if self.rows is None else region[self.rows]
        # comfy.ops layers cast their weights to the input's dtype, so this computes in the activations' dtype
        # (planned from the model input's dtype; .to() is a no-op unless a block changed it).
        out = self.ca_modules[ca_index](self.tokens.to(x.dtype), x) * self.weight
        return out if self.mask is None else out * self.mask.to(x.dtype)


@dataclass(eq=False)
class Injection:
    """One Apply node: an identity, the CA modules it goes through, and when / where / how strongly."""
    model: PulidFlux
    identity: PulidIdentity
    weight: float
    timing: StepRange | SigmaRange
    uncond_mode: UncondMode = UncondMode.UNCOND_ID
    mask: torch.Tensor | None = None  # [M, H, W] in [0, 1], from check_mask
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.weight = check_weight(self.weight)
        self.mask = check_mask(self.mask)

    def __str__(self):
        return f"weight {self.weight:g}, {self.timing}, {self.identity.cond.shape[0]} identit" + \
            ("y" if self.identity.cond.shape[0] == 1 else "ies") + (", masked" if self.mask is not None else "")

    def _cached(self, key, make):
        if key not in self._cache:
            if len(self._cache) >= MAX_CACHED:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = make()
        return self._cache[key]

    def _per_image(self, what: str, count: int, call: CallInfo, fix: str) -> None:
        if count not in (1, call.batch):
            raise BatchMismatchError(f"PuLID Apply ({self}): the {what} holds {count} entries but the latent batch "
                                     f"has {call.batch} images; expected 1 or {call.batch}. {fix}")

    def plan(self, call: CallInfo) -> ActiveInjection | None:
        """This Apply's share of a model call, or None when it does nothing in it. CPU only, no device sync."""
        if self.weight == 0:
            return None
        active = self.timing.active(call)
        if self.uncond_mode is UncondMode.NO_ID:
            active = active & ~call.is_uncond
        rows = tuple(active.nonzero().flatten().tolist())
        if not rows:
            return None
        n = self.identity.cond.shape[0]
        self._per_image("face identity", n, call,
                        "Encode Face with combine 'per image' needs one reference photo per image of the batch.")
        latent = call.latent_index[list(rows)]
        use_uncond = call.is_uncond[list(rows)] & (self.uncond_mode is UncondMode.UNCOND_ID)
        token_rows = tuple((latent % n + n * use_uncond).tolist())  # into [cond; uncond]
        device, dtype = call.device, call.dtype
        tokens = self._cached(("tokens", device, dtype, token_rows), lambda: torch.cat(
            [self.identity.cond, self.identity.uncond])[list(token_rows)].to(device, dtype))
        mask = None
        if self.mask is not None:
            m = self.mask.shape[0]
            self._per_image("mask", m, call, "Give one mask, or one per image of the batch.")
            mask_rows = tuple((latent % m).tolist())
            mask = self._cached(("mask", call.grid, device, dtype, mask_rows), lambda: mask_to_tokens(
                self.mask, call.grid)[list(mask_rows)].to(device, dtype))
        all_rows = len(rows) == call.sigmas.shape[0]
        row_index = None if all_rows else self._cached(("rows", device, rows),
                                                      lambda: torch.tensor(rows, device=device))
        return ActiveInjection(self.model.pulid_ca, rows, row_index, tokens, mask, self.weight)


@dataclass(frozen=True)
class CallPlan:
    """Left in transformer_options for the block patches of one model call (only when some Apply is active).
    Token layout: double blocks see [image, references] in img; single blocks see [text, image, references]."""
    image_tokens: int
    reference_tokens: int
    active: dict  # Injection -> ActiveInjection

    def image_start(self, kind: str, total_tokens: int) -> int:
        return 0 if kind == "double" else total_tokens - self.image_tokens - self.reference_tokens


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

    # Model management hooks: load the CA modules with the diffusion model; tokens are planned per call.
    def models(self) -> list:
        extra = self.previous.models() if hasattr(self.previous, "models") else []
        return list(self.managed_models) + list(extra)

    def to(self, device_or_dtype):
        if hasattr(self.previous, "to"):
            self.previous = self.previous.to(device_or_dtype)
        return self

    def __call__(self, args: dict, extra: dict) -> dict:
        out = self.previous(args, extra) if self.previous is not None else extra["original_block"](args)
        plan: CallPlan | None = (args.get("transformer_options") or {}).get(PLAN_KEY)
        if plan is None:
            return out
        mine = [plan.active[inj] for inj in self.injections if inj in plan.active]
        if not mine:
            return out
        img = out["img"]
        start = plan.image_start(self.kind, img.shape[1])
        region = img[:, start:start + plan.image_tokens]
        residuals = [(a.rows, a.residual(self.ca_index, region)) for a in mine]
        for rows, residual in residuals:
            if rows is None:
                region += residual
            else:
                region.index_add_(0, rows, residual)
        return out


def token_count(shape, patch: int) -> tuple[int, int]:
    """The token grid FLUX makes of a latent of this shape (odd sizes are padded up)."""
    return (shape[-2] + patch // 2) // patch, (shape[-1] + patch // 2) // patch


@dataclass
class RunRecord:
    """One sampling run: its schedule on the CPU and, per Apply, the steps it was active on and in how many
    model calls (a step can take several: CFG batches split by memory, second-order or restart samplers)."""
    schedule: torch.Tensor
    active_steps: dict = field(default_factory=dict)  # Injection -> set of step indices
    active_calls: dict = field(default_factory=dict)  # Injection -> number of model calls

    def add(self, call: CallInfo, injections, active: dict) -> None:
        for inj in injections:
            steps = self.active_steps.setdefault(inj, set())
            self.active_calls.setdefault(inj, 0)
            if inj in active:
                self.active_calls[inj] += 1
                if call.steps is not None:
                    steps.update(call.steps[list(active[inj].active_rows)].tolist())

    def report(self) -> None:
        total = max(self.schedule.numel() - 1, 0)
        for number, (inj, steps) in enumerate(self.active_steps.items(), start=1):
            if self.active_calls[inj]:
                logger.info("%s PuLID Apply %d (%s): identity active on steps %s of this run's %d steps "
                            "(%d model calls).", LOG_PREFIX, number, inj, sorted(steps), total, self.active_calls[inj])
            elif inj.weight != 0:
                logger.warning("%s PuLID Apply %d (%s): the identity was never active in this sampling run of %d "
                               "steps (steps are counted from 0 in the run the sampler was given). Lower start_step "
                               "or use percent timing.", LOG_PREFIX, number, inj, total)


class PulidCallWrapper:
    """DIFFUSION_MODEL wrapper: plans every Apply on the model once per call (see the module docstring) and
    passes the plan in a fresh transformer_options copy (the caller's dict is left as it was).

    It holds the Applies itself rather than finding them in the block patches: another pack's patch that
    replaces one of ours (and calls it, or not) must not hide an Apply from the other blocks."""

    # Positions in Flux.forward(x, timestep, context, y, guidance, ref_latents, control, transformer_options).
    TRANSFORMER_OPTIONS_ARG = 7
    REF_LATENTS_ARG = 5

    def __init__(self, injections: tuple[Injection, ...]):
        self.injections = injections

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        in_kwargs = "transformer_options" in kwargs
        options = kwargs["transformer_options"] if in_kwargs else args[self.TRANSFORMER_OPTIONS_ARG]
        x = args[0] if args else kwargs["x"]
        refs = args[self.REF_LATENTS_ARG] if len(args) > self.REF_LATENTS_ARG else kwargs.get("ref_latents")
        patch = getattr(getattr(executor, "class_obj", None), "patch_size", 2)
        grid = token_count(x.shape, patch)
        run: RunRecord | None = options.get(RUN_KEY)
        schedule = run.schedule if run is not None else options.get("sample_sigmas")
        call = CallInfo.from_options(options, x, grid, None if schedule is None else schedule.detach().cpu())
        active = {inj: a for inj in self.injections if (a := inj.plan(call)) is not None}
        if run is not None:
            run.add(call, self.injections, active)
        if not active:
            return executor(*args, **kwargs)
        references = sum(math.prod(token_count(r.shape, patch)) for r in refs or ())
        options = {**options, PLAN_KEY: CallPlan(math.prod(grid), references, active)}
        if in_kwargs:
            kwargs["transformer_options"] = options
        else:
            args = args[:self.TRANSFORMER_OPTIONS_ARG] + (options,) + args[self.TRANSFORMER_OPTIONS_ARG + 1:]
        return executor(*args, **kwargs)


class PulidRunWrapper:
    """SAMPLER_SAMPLE wrapper: one RunRecord per sampling run, reported when the run ends."""

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, guider, sigmas, extra_args, *args, **kwargs):
        record = RunRecord(sigmas.detach().float().cpu())
        model_options = dict(extra_args.get("model_options") or {})
        model_options["transformer_options"] = {**model_options.get("transformer_options", {}), RUN_KEY: record}
        out = executor(guider, sigmas, {**extra_args, "model_options": model_options}, *args, **kwargs)
        record.report()
        return out


def block_patches(num_double: int, num_single: int) -> list[tuple[str, int, int]]:
    """(kind, block index, CA index) for every block followed by a CA module, in the official order."""
    doubles, singles = ca_block_placement(num_double, num_single)
    placed = [("double", i) for i in doubles] + [("single", i) for i in singles]
    return [(kind, block, ca) for ca, (kind, block) in enumerate(placed)]
