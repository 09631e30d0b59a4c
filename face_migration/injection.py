"""Injecting PuLID identity into FLUX through ComfyUI's block-patch convention.

ComfyUI calls a `patches_replace["dit"][("double_block" | "single_block", i)]` patch as
`patch(args, {"original_block": fn})`, where `args` holds `img` (and `txt` for double blocks), `vec`,
`pe`, `attn_mask` and `transformer_options`; it expects a dict with `img` (and `txt`) back. A
DIFFUSION_MODEL wrapper is called as `wrapper(executor, x, timestep, context, y, guidance, ref_latents,
control, transformer_options, ...)` for FLUX.1 but `(executor, x, timestep, context, guidance, control,
transformer_options, ...)` for Chroma, so its arguments are read by name through the signature of the model's
own `_forward` (the executor's `original`); a SAMPLER_SAMPLE wrapper is called as `wrapper(executor, guider,
sigmas, extra_args, ...)`. These are plain Python conventions, so this module needs no `comfy` import and is tested
with dicts and tensors.

The maths is the official one: after the chosen blocks, `img += weight * CA(id_tokens, img)` on the
generated image tokens only (never text tokens, never Kontext reference tokens), decided per batch row.

Work is split so the sampling device never waits for the host inside the model:
- `PulidCallWrapper` (once per model call) decides everything on the CPU: which rows of which Apply are
  active, their ID tokens and mask weights (already on the activations' device and in their dtype, cached
  across calls), and how many image tokens the call has. It leaves a `CallPlan` in a copy of
  transformer_options and, for the duration of the call, in a context variable: packs that replace FLUX's
  forward (TeaCache, WaveSpeed's First Block Cache) call the block patches without transformer_options in
  `args` (or with it in the second dict), and the plan must reach the blocks all the same. When no Apply is
  active the plan (with nothing to add) is left in the context variable only.
- `PulidBlockPatch` only adds `weight * CA(tokens, region[rows])` as the plan says, and notes in the plan
  that it did, and that FLUX's blocks ran at all (plain Python counters, no device work).
- `PulidEvaluationWrapper` (once per model evaluation of the sampler) tells the run which step the sampler is
  in when a second-order sampler evaluates its corrector after the step's callback.
- `PulidRunWrapper` (once per sampling run) records on which steps each Apply's CA modules really ran and
  logs it, with a warning for an Apply that never was active and one for an Apply that was planned but never
  reached a block (a cache skipped its window, or another node replaced FLUX's forward).
"""
from __future__ import annotations

import contextvars
import enum
import functools
import inspect
import logging
import math
import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import BatchMismatchError, FaceMigrationError, IncompatibleModelError, InvalidInputError
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
# Step inputs' upper bound: an end_step this high means "to the end of the run".
MAX_STEP = 10000
# What to change when a cache reused FLUX's output on the steps of an Apply's window (the caches' input names).
CACHE_ADVICE = ("Lower the cache's threshold (TeaCache: rel_l1_thresh; EasyCache, LazyCache: reuse_threshold) or "
                "make it start after the window (its start_percent), or move the window to steps the cache computes.")
# Identity strength: 1 = official, 0 = off, negative pushes away from the face (down to -1, its mirror image).
WEIGHT_MIN, WEIGHT_MAX = -1.0, 5.0
# Mask values a resize may push just past [0, 1] (bicubic overshoot); they are clamped, anything further refused.
MASK_SLACK = 1e-3

logger = logging.getLogger(__name__)

# The plan of the model call running in this thread (each thread, e.g. a MultiGPU work unit, has its own).
_CALL_PLAN: contextvars.ContextVar = contextvars.ContextVar("face_migration_pulid_call_plan", default=None)


class UncondMode(str, enum.Enum):
    UNCOND_ID = "uncond ID"  # official: the IDFormer's all-zero output on the negative pass
    SAME_ID = "same ID"
    NO_ID = "no ID"


def reaches(sigmas: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """sigmas >= level, within the tolerance sigmas pass through ComfyUI with (broadcasts)."""
    return sigmas >= level * (1 - SIGMA_RTOL) - 1e-6


def step_indices(sigmas: torch.Tensor, schedule: torch.Tensor, current: int | None = None) -> torch.Tensor:
    """The step of the run each sigma belongs to. By sigma, step i holds the calls with sigma in
    (schedule[i+1], schedule[i]] (a sigma above schedule[0] counts as step 0). When the sampler tells which
    step it is in (`current`, see RunRecord), a call is never counted past it: of repeated sigmas each step
    gets its own, and a corrector called at schedule[i+1] while the sampler is still in step i stays in step i.
    CPU, float32."""
    s = sigmas.float().flatten()
    sched = schedule.float().flatten()
    steps = (reaches(sched[None, :], s[:, None]).sum(dim=1) - 1).clamp(min=0)
    return steps if current is None else steps.clamp(max=current)


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
                     schedule: torch.Tensor | None, current: int | None = None) -> "CallInfo":
        """ComfyUI batches chunks (cond/uncond, listed in cond_or_uncond) of the same latents; sigmas holds one
        value per latent or per row. `schedule`: the run's sigmas on the CPU, or None; `current`: the step the
        sampler is in, or None when it does not say."""
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
        steps = None if schedule is None else step_indices(sigmas, schedule, current)
        return cls(sigmas, steps, kinds == 1, torch.arange(rows) % chunk, chunk, grid, x.device, x.dtype)


@dataclass(frozen=True)
class StepRange:
    """Identity on the run's steps start <= i < end (i counted from 0 in the sigmas the sampler was given, as
    the hosted API's id_timestep_start counts the steps of its run)."""
    start: int
    end: int

    def __post_init__(self):
        if self.end <= self.start:
            raise InvalidInputError(f"Apply PuLID inputs start_step ({self.start}) and end_step ({self.end}): "
                                    f"end_step must be greater than start_step, or the identity never applies. "
                                    f"Raise end_step (10000 = to the end).")

    def active(self, call: CallInfo) -> torch.Tensor:
        if call.steps is None:
            raise FaceMigrationError(
                "PuLID step mode needs the sampler's schedule (transformer_options['sample_sigmas']), which this "
                "sampler does not provide. Set the Apply node's timing to percent mode.")
        return (call.steps >= self.start) & (call.steps < self.end)

    def covers_every_step(self) -> bool:
        return self.start == 0 and self.end >= MAX_STEP

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


@dataclass(frozen=True)
class PercentRange:
    """Identity from `start` to `end` of the model's noise schedule (0 = start, 1 = end), turned into a
    SigmaRange when a sampling run starts, with the model sampling the sampler really uses (as ComfyUI's
    ControlNet does): a ModelSamplingFlux placed after Apply moves the window with the schedule."""
    start: float
    end: float

    def __post_init__(self):
        if not 0 <= self.start < self.end <= 1:
            raise InvalidInputError(f"Apply PuLID inputs start_percent ({self.start}) and end_percent ({self.end}): "
                                    f"expected 0 <= start_percent < end_percent <= 1, or the identity never "
                                    f"applies. Raise end_percent (1 = to the end).")

    def sigmas(self, model_sampling) -> SigmaRange:
        return SigmaRange(high=float(model_sampling.percent_to_sigma(self.start)),
                          low=float(model_sampling.percent_to_sigma(self.end)))

    def __str__(self):
        return f"percent {self.start:g}-{self.end:g}"


def mask_to_tokens(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B, H, W] (or [H, W]) mask in image space -> [B, h*w, 1] weights on the token grid, any aspect ratio."""
    if mask.ndim == 2:
        mask = mask[None]
    pooled = F.adaptive_avg_pool2d(mask[:, None].float(), grid)
    return pooled.flatten(1)[..., None]


def check_weight(weight: float) -> float:
    if not (math.isfinite(weight) and WEIGHT_MIN <= weight <= WEIGHT_MAX):
        raise InvalidInputError(f"Apply PuLID input 'weight' is {weight}; expected a number from {WEIGHT_MIN:g} to "
                                f"{WEIGHT_MAX:g} (1 = official strength, 0 = off, below 0 pushes the face away from "
                                f"the identity).")
    return float(weight)


def check_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A MASK input as Apply can use it: [M, H, W] float in [0, 1] on the CPU, or a named error. Whether M fits
    the latent batch (1 or one per image) is checked when sampling, where the batch is known."""
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
    low, high = mask.min().item(), mask.max().item()
    if low < -MASK_SLACK or high > 1 + MASK_SLACK:
        raise InvalidInputError(f"Apply PuLID input 'mask' {shape} holds values from {low:g} to {high:g}; expected "
                                f"values in [0, 1] (1 = full identity, 0 = none). Set the strength with 'weight', "
                                f"and clamp or normalise the mask (e.g. ThresholdMask) before Apply.")
    mask = mask.clamp(0, 1)
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
    timing: StepRange | SigmaRange | PercentRange
    uncond_mode: UncondMode = UncondMode.UNCOND_ID
    mask: torch.Tensor | None = None  # [M, H, W] in [0, 1], from check_mask
    _cache: dict = field(default_factory=dict, repr=False)
    _cache_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # MultiGPU threads plan at once
    split_sigma: float | None = field(default=None, repr=False)  # where this Apply's last run left noise

    def __post_init__(self):
        self.weight = check_weight(self.weight)
        self.mask = check_mask(self.mask)

    def __str__(self):
        return f"weight {self.weight:g}, {self.timing}, {self.identity.cond.shape[0]} identit" + \
            ("y" if self.identity.cond.shape[0] == 1 else "ies") + (", masked" if self.mask is not None else "")

    def _cached(self, key, make):
        with self._cache_lock:
            if key not in self._cache:
                if len(self._cache) >= MAX_CACHED:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = make()
            return self._cache[key]

    def _per_image(self, what: str, count: int, call: CallInfo, fix: str) -> None:
        if count not in (1, call.batch):
            images = "1 image" if call.batch == 1 else f"{call.batch} images"
            expected = "1" if call.batch == 1 else f"1 (for every image) or {call.batch} (one per image)"
            raise BatchMismatchError(f"PuLID Apply ({self}): the {what} holds {count} entries but the latent batch "
                                     f"has {images}; expected {expected}. {fix}")

    def plan(self, call: CallInfo, window: StepRange | SigmaRange) -> ActiveInjection | None:
        """This Apply's share of a model call, or None when it does nothing in it; `window`: its timing as this
        sampling run has it (RunRecord.window). CPU only, no device sync."""
        if self.weight == 0:
            return None
        active = window.active(call)
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


@dataclass
class CallPlan:
    """Left for the block patches of one model call. `ran` counts, per Apply, the blocks whose CA modules
    really ran in this call; `reached` says that some block with a PuLID patch ran (filled by the patches).

    Token layout, read from what the blocks see rather than from the call's arguments (a wrapper after Apply
    may add reference latents; 0.33's FluxKVCache drops them from img after the first step): double blocks
    see [image, references] in img; single blocks see [text, image, references], the text length taken from
    transformer_options["img_slice"] where the core gives it (0.33), else from the txt the last double block
    patch saw in this call, else from the call's context."""
    image_tokens: int
    text_tokens: int
    active: dict  # Injection -> ActiveInjection
    ran: dict = field(default_factory=dict)  # Injection -> number of blocks
    reached: bool = False  # set, never read, in the patches: torch.compile guards no value of it

    def image_start(self, kind: str, args: dict, options: dict | None) -> int:
        if kind == "double":
            self.text_tokens = args["txt"].shape[1]
            return 0
        image_slice = (options or {}).get("img_slice")
        return image_slice[0] if image_slice else self.text_tokens


def find_plan(args: dict, extra: dict) -> tuple[CallPlan | None, dict | None]:
    """The plan of the current model call and the transformer_options it came with, however the block patch
    was called: ComfyUI's FLUX passes transformer_options in `args`, WaveSpeed's First Block Cache beside
    original_block in `extra`, and TeaCache in neither (then the call wrapper's context variable holds the
    plan)."""
    for options in (args.get("transformer_options"), extra.get("transformer_options")):
        if options and PLAN_KEY in options:
            return options[PLAN_KEY], options
    return _CALL_PLAN.get(), None


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
        plan, options = find_plan(args, extra)
        if plan is None:
            return out
        plan.reached = True
        mine = [(inj, plan.active[inj]) for inj in self.injections if inj in plan.active]
        if not mine:
            return out
        img = out["img"]
        start = plan.image_start(self.kind, args, options)
        if start + plan.image_tokens > img.shape[1]:
            raise IncompatibleModelError(
                f"PuLID: the {self.kind} block after which CA module {self.ca_index} runs holds {img.shape[1]} "
                f"tokens, fewer than the {start} text and {plan.image_tokens} image tokens of this model call. "
                f"Another node changes FLUX's token layout; put Apply PuLID after it or remove it.")
        region = img[:, start:start + plan.image_tokens]
        residuals = [(a.rows, a.residual(self.ca_index, region)) for _, a in mine]
        for rows, residual in residuals:
            if rows is None:
                region += residual
            else:
                region.index_add_(0, rows, residual)
        for inj, _ in mine:
            plan.ran[inj] = plan.ran.get(inj, 0) + 1
        return out


def token_count(shape, patch: int) -> tuple[int, int]:
    """The token grid a FLUX.1-family model makes of an input of this shape: its sides padded up to a multiple
    of the patch (FLUX.1 and Chroma: 2 on the latent; Chroma Radiance: 16 on the pixels)."""
    return -(-shape[-2] // patch), -(-shape[-1] // patch)


# FLUX.1's `_forward` parameters (comfy.ldm.flux.model.Flux): they bind a call that comes without the model's
# own method.
FLUX_CALL = inspect.Signature(
    [inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
       for name in ("timestep", "context", "y", "guidance", "ref_latents", "control", "transformer_options")]
    + [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])


@functools.lru_cache(maxsize=32)
def _call_signature(function, is_method: bool) -> inspect.Signature:
    """The parameters a call passes (a method's `self` left out). Cached per function, not per bound method,
    so that no model is kept alive by the cache."""
    signature = inspect.signature(function)
    return signature.replace(parameters=list(signature.parameters.values())[is_method:])


def bind_call(executor, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    """A model call's arguments by name, bound to the signature of the `_forward` the executor ends in (FLUX.1's
    takes y and ref_latents before transformer_options, Chroma's does not)."""
    original = getattr(executor, "original", None)
    function = getattr(original, "__func__", original)
    signature = FLUX_CALL if original is None else _call_signature(function, function is not original)
    try:
        return signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise IncompatibleModelError(
            f"PuLID: a call of the diffusion model does not fit the signature of its _forward ({exc}). Another "
            f"node changes how the model is called; put Apply PuLID after it or remove it.") from None


@dataclass
class RunRecord:
    """One sampling run: its schedule on the CPU and, per Apply, what its CA modules really did: the steps on
    which they ran in every block (`full_steps`) or in some blocks only (`partial_steps`: a cache or another
    pack skipped the rest), the model calls they ran in, the blocks they ran in, and the model calls it was
    planned for. A step can take several model calls (CFG batches split by memory, second-order or restart
    samplers). MultiGPU work units add from several threads.

    The step the sampler is in (`current_step`) follows its callback, which ComfyUI's samplers call right after
    each step's first model evaluation. A second-order sampler evaluates its corrector after that callback, and
    Heun's corrector of step i runs at sigma schedule[i+1], the sigma step i+1 starts at: for the samplers named
    in SAMPLERS_CORRECTING_AFTER_CALLBACK the evaluations after the callback of step i stay in step i until one
    that is not the first and reaches schedule[i+1] (the first evaluation of step i+1)."""
    schedule: torch.Tensor
    model_sampling: object = None  # the model's, as the sampler has it: converts percents to sigmas
    corrects_after_callback: bool = False  # the sampler evaluates a step's correctors after its callback
    current_step: int | None = None  # the step the sampler is in (None: it has not called back)
    windows: dict = field(default_factory=dict)  # Injection -> its StepRange or SigmaRange in this run
    planned_calls: dict = field(default_factory=dict)  # Injection -> model calls it was active in
    ran_calls: dict = field(default_factory=dict)  # Injection -> model calls its CA ran in
    ran_blocks: dict = field(default_factory=dict)  # Injection -> blocks its CA ran after, all calls
    full_steps: dict = field(default_factory=dict)  # Injection -> set of steps
    partial_steps: dict = field(default_factory=dict)  # Injection -> set of steps
    computed_calls: int = 0  # model calls in which FLUX's blocks ran (some PuLID patch was called)
    computed_steps: set = field(default_factory=set)  # their steps
    called_steps: set = field(default_factory=set)  # steps of the model calls that reached the call wrapper
    reported_steps: set = field(default_factory=set)  # steps the sampler called back for
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    _correcting: bool = False  # after a callback, before the next step's first evaluation
    _evaluations: int = 0  # model evaluations since the last callback

    def called_back(self, step: int) -> None:
        """The sampler's callback: step `step` has made its first model evaluation."""
        with self._lock:
            self.reported_steps.add(step)
            self._correcting = self.corrects_after_callback
            self.current_step = step if self._correcting else step + 1
            self._evaluations = 0

    def evaluation(self, sigma: torch.Tensor) -> None:
        """The sampler evaluates the model (once per evaluation, whatever number of model calls it takes)."""
        with self._lock:
            if self._correcting and self._evaluations and self.current_step + 1 < self.schedule.numel():
                # A host read per evaluation after a corrector, on these samplers only.
                if bool(reaches(sigma.detach().float().max().cpu(), self.schedule[self.current_step + 1])):
                    self.current_step, self._correcting = self.current_step + 1, False
            self._evaluations += 1

    def window(self, inj: Injection) -> StepRange | SigmaRange:
        with self._lock:
            if inj not in self.windows:
                self.windows[inj] = inj.timing.sigmas(self.model_sampling)
            return self.windows[inj]

    def add(self, call: CallInfo, injections, active: dict, ran: dict, reached: bool) -> None:
        with self._lock:
            self.called_steps.update(call.steps.tolist() if call.steps is not None else ())
            if reached:
                self.computed_calls += 1
                self.computed_steps.update(call.steps.tolist() if call.steps is not None else ())
            for inj in injections:
                for record in (self.planned_calls, self.ran_calls, self.ran_blocks):
                    record.setdefault(inj, 0)
                full, partial = self.full_steps.setdefault(inj, set()), self.partial_steps.setdefault(inj, set())
                if inj not in active:
                    continue
                self.planned_calls[inj] += 1
                blocks = ran.get(inj, 0)
                if not blocks:
                    continue
                self.ran_calls[inj] += 1
                self.ran_blocks[inj] += blocks
                if call.steps is not None:
                    steps = call.steps[list(active[inj].active_rows)].tolist()
                    (full if blocks >= len(inj.model.pulid_ca) else partial).update(steps)

    def report(self) -> None:
        total = max(self.schedule.numel() - 1, 0)
        for number, inj in enumerate(self.planned_calls, start=1):
            name = f"{LOG_PREFIX} PuLID Apply {number} ({inj})"
            if isinstance(inj.timing, StepRange) and not inj.timing.covers_every_step():
                self._warn_split(name, inj, total)
            if self.ran_calls[inj]:
                partial = sorted(self.partial_steps[inj] - self.full_steps[inj])
                logger.info("%s: identity active on steps %s of this run's %d steps (%d model calls, %d blocks)%s.",
                            name, sorted(self.full_steps[inj]), total, self.ran_calls[inj], self.ran_blocks[inj],
                            f"; on steps {partial} only some of its blocks ran (a cache or another node skipped "
                            f"the others)" if partial else "")
            elif self.planned_calls[inj]:
                self._warn_never_reached(name, inj, total)
            elif inj.weight != 0:
                self._warn_never_active(name, inj, total)

    def _warn_never_active(self, name: str, inj: Injection, total: int) -> None:
        """Never planned: its window holds no step of the run, or the model was not called on the steps it holds
        (LazyCache answers the sampler's evaluation before the model is called)."""
        said = f"{name}: the identity was never active in this sampling run of {total} steps"
        skipped = self._in_window(inj, sorted(self.reported_steps - self.called_steps))
        if skipped:
            logger.warning("%s: the sampler ran steps %s of this Apply's window without calling FLUX, a cache "
                           "answered them with an earlier step's output. %s", said, skipped, CACHE_ADVICE)
        else:
            logger.warning("%s (steps are counted from 0 in the run the sampler was given). Lower start_step or use "
                           "percent timing.", said)

    def _in_window(self, inj: Injection, steps: list) -> list:
        window = self.windows.get(inj, inj.timing)
        if isinstance(window, StepRange):
            return [s for s in steps if window.start <= s < window.end]
        if isinstance(window, SigmaRange):
            return [s for s in steps if window.low <= float(self.schedule[s]) <= window.high]
        return steps  # percents never converted: no model call reached the wrapper

    def _warn_never_reached(self, name: str, inj: Injection, total: int) -> None:
        """Planned, never run. When FLUX's blocks ran in other model calls of the run, the patches work and the
        calls of this window were not computed: a cache reused FLUX's output there (TeaCache skips the blocks,
        EasyCache the model inside Apply's call wrapper). Otherwise the blocks never run with their patches."""
        said = (f"{name}: the identity never reached a FLUX block in this sampling run of {total} steps, though it "
                f"was planned for {self.planned_calls[inj]} model calls")
        if not self.computed_calls:
            logger.warning("%s: another node replaced FLUX's forward and calls its blocks without their patches, or "
                           "skips them all. Put Apply PuLID after that node or remove it.", said)
            return
        where = (f"steps {sorted(self.computed_steps)}" if self.computed_steps
                 else f"{self.computed_calls} other model calls")
        logger.warning("%s: FLUX's blocks were computed on %s only, none of them in this Apply's window: a cache "
                       "reused FLUX's output on the window's steps. %s", said, where, CACHE_ADVICE)

    def _warn_split(self, name: str, inj: Injection, total: int) -> None:
        """Each part of a split schedule counts its steps from 0: a step window other than 'every step' then
        means something else than on one sampler. Said for a run that leaves noise for a later one, and for a
        run that starts where this Apply's last run left off."""
        first, last = float(self.schedule[0]), float(self.schedule[-1])
        continues = inj.split_sigma is not None and math.isclose(first, inj.split_sigma, rel_tol=SIGMA_RTOL)
        inj.split_sigma = last if last > 0 else None
        if last > 0 or continues:
            logger.warning("%s: this sampling run of %d steps (sigma %.4g to %.4g) is part of a split schedule "
                           "(SplitSigmas, KSamplerAdvanced): each part counts its steps from 0, so the step window "
                           "applies to each part on its own, not to the whole schedule. Use percent timing for one "
                           "window over the whole schedule.", name, total, first, last)


def window_in(run: RunRecord | None, inj: Injection) -> StepRange | SigmaRange:
    """An Apply's timing in the current sampling run: percents become sigmas of the model the sampler uses."""
    if not isinstance(inj.timing, PercentRange):
        return inj.timing
    if run is None or run.model_sampling is None:
        raise FaceMigrationError(
            f"PuLID Apply ({inj}): percent timing is converted to sigmas when a sampling run starts, and this model "
            f"call comes from outside one (a node that calls the model without ComfyUI's sampler). Set the Apply "
            f"node's timing to steps mode.")
    return run.window(inj)


class PulidCallWrapper:
    """DIFFUSION_MODEL wrapper: plans every Apply on the model once per call (see the module docstring) and
    passes the plan in a fresh transformer_options copy (the caller's dict is left as it was).

    It holds the Applies itself rather than finding them in the block patches: another pack's patch that
    replaces one of ours (and calls it, or not) must not hide an Apply from the other blocks."""

    def __init__(self, injections: tuple[Injection, ...]):
        self.injections = injections

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        args, kwargs, after = self._plan(executor, args, kwargs)
        try:
            out = executor(*args, **kwargs)
        finally:
            self._record(*after)
        return out

    # Planning and recording are host work with per-step values (sigmas, the step the sampler is in): under
    # torch.compile they run eagerly, so that dynamo neither specialises the model's graphs on them nor compiles
    # again on every step. The model call between them is compiled as usual.
    @torch.compiler.disable
    def _plan(self, executor, args: tuple, kwargs: dict) -> tuple[tuple, dict, tuple]:
        bound = bind_call(executor, args, kwargs)
        options = bound.arguments.get("transformer_options") or {}
        x, context = bound.arguments["x"], bound.arguments.get("context")
        patch = getattr(getattr(executor, "class_obj", None), "patch_size", 2)
        grid = token_count(x.shape, patch)
        run: RunRecord | None = options.get(RUN_KEY)
        schedule = run.schedule if run is not None else options.get("sample_sigmas")
        call = CallInfo.from_options(options, x, grid, None if schedule is None else schedule.detach().cpu(),
                                     run.current_step if run is not None else None)
        active = {inj: a for inj in self.injections if (a := inj.plan(call, window_in(run, inj))) is not None}
        plan = CallPlan(math.prod(grid), 0 if context is None else context.shape[1], active)
        if active:
            bound.arguments["transformer_options"] = {**options, PLAN_KEY: plan}
            args, kwargs = bound.args, bound.kwargs
        # Set even when nothing is active: no outer call's plan is seen inside this one, and the blocks say they ran.
        token = _CALL_PLAN.set(plan)
        return args, kwargs, (token, run, call, active, plan)

    @torch.compiler.disable
    def _record(self, token, run, call, active, plan) -> None:
        _CALL_PLAN.reset(token)
        if run is not None:
            run.add(call, self.injections, active, plan.ran, plan.reached)


# ComfyUI's k-diffusion samplers (0.3.64 and 0.33.0) that evaluate the model again, after the callback that
# follows a step's first evaluation and before the next step (their `sampler_function` names). Not sa_solver:
# its optional PECE evaluation is at the step's own sigma, which the sigma alone attributes.
SAMPLERS_CORRECTING_AFTER_CALLBACK = frozenset(f"sample_{name}" for name in (
    "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "dpm_2_ancestral_RF", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_RF", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "seeds_2", "seeds_3",
    "exp_heun_2_x0", "exp_heun_2_x0_sde"))


class PulidRunWrapper:
    """SAMPLER_SAMPLE wrapper: one RunRecord per sampling run, reported when the run ends. It reads the model
    sampling the guider samples with (percent timing), which sampler runs (the executor's KSAMPLER), and
    follows the steps through the sampler's callback (ComfyUI's samplers call it after each step's first model
    evaluation, with the step's index)."""

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, guider, sigmas, extra_args, callback=None, *args, **kwargs):
        sampling = getattr(getattr(guider, "inner_model", None), "model_sampling", None)
        function = getattr(getattr(executor, "class_obj", None), "sampler_function", None)
        record = RunRecord(sigmas.detach().float().cpu(), sampling,
                           getattr(function, "__name__", None) in SAMPLERS_CORRECTING_AFTER_CALLBACK)
        model_options = dict(extra_args.get("model_options") or {})
        model_options["transformer_options"] = {**model_options.get("transformer_options", {}), RUN_KEY: record}

        def counting_callback(step, *rest, **named):
            if isinstance(step, int):
                record.called_back(step)
            return None if callback is None else callback(step, *rest, **named)
        out = executor(guider, sigmas, {**extra_args, "model_options": model_options}, counting_callback, *args,
                       **kwargs)
        record.report()
        return out


class PulidEvaluationWrapper:
    """CALC_COND_BATCH wrapper: tells the run record that the sampler evaluates the model (one call of
    calc_cond_batch per evaluation, however many model calls its cond/uncond batches take)."""

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, model, conds, x, timestep, model_options, *args, **kwargs):
        run: RunRecord | None = (model_options.get("transformer_options") or {}).get(RUN_KEY)
        if run is not None:
            run.evaluation(timestep)
        return executor(model, conds, x, timestep, model_options, *args, **kwargs)


def block_patches(num_double: int, num_single: int) -> list[tuple[str, int, int]]:
    """(kind, block index, CA index) for every block followed by a CA module, in the official order."""
    doubles, singles = ca_block_placement(num_double, num_single)
    placed = [("double", i) for i in doubles] + [("single", i) for i in singles]
    return [(kind, block, ca) for ca, (kind, block) in enumerate(placed)]
