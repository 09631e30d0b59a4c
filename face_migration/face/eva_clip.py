"""EVA02-CLIP-L-14-336 visual tower (the image half of EVA-CLIP that PuLID reads faces with), its
weight loading and its input preprocessing.

Written from the specification (shared research, pulid-spec sections 5.5 and 6): patch embedding, CLS
token and absolute position embedding, pre-norm blocks with sub-LN attention (q and v biases, no k bias,
LayerNorm before the output projection) and 2-D rotary embedding on the patch tokens, SwiGLU MLP with
a LayerNorm on its hidden layer, final LayerNorm on the CLS token and a linear head. All LayerNorms use
eps 1e-6.

`EvaVisionTower.forward` returns the RAW head output [B, embed_dim] (not L2-normalised: the PuLID
pipeline divides it by its norm, as the official code does after the call) and the 5 hidden states
that enter blocks 4, 8, 12, 16 and 20, each [B, 1 + grid**2, width].

Every size is read from the weight shapes (`config_from_shapes`), so a tiny file with the real key
layout builds a tiny tower. Only the head width (64) and RoPE's pre-training grid (16) are not visible
in the shapes; the official model fixes both.

Files accepted (from ComfyUI's models/clip):
- the official `EVA02_CLIP_L_336_psz14_s6B.pt` (the whole CLIP; only its `visual.*` tensors are used),
  read with `torch.load(weights_only=True)`, so no code from the pickle runs;
- a `.safetensors` with the visual tensors, keys with the `visual.` prefix (what `convert-eva` writes:
  the prefix keeps the file recognisable as an EVA-CLIP vision tower) or without it. A safetensors
  holding the whole CLIP works too: only its `visual.*` tensors are used.
RoPE tables (`*.freqs_cos` / `*.freqs_sin`) found in a file are ignored: they are derived, and
recomputed here from the formula exactly as the official loader does.
"""
from __future__ import annotations

import math
import os
import pickle
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from ..catalog import BY_KEY
from ..errors import ModelFileError
from ..model_layout import describe_model, layout_problems
from ..safetensors_file import read_header

MODEL_FILE = BY_KEY["eva02_clip_l_336"]
FOLDER_HINT = MODEL_FILE.display_folder

# Not visible in the weight shapes; fixed by the official EVA02-CLIP-L-14-336 configuration.
HEAD_WIDTH = 64
PT_HW_SEQ_LEN = 16  # RoPE frequencies are interpolated from a 16x16 pre-training grid to the real grid
ROPE_THETA = 10000.0
LN_EPS = 1e-6
# PuLID reads the tokens entering these blocks (official: 0 < idx <= 20 and idx % 4 == 0).
HIDDEN_STATE_BLOCKS = (4, 8, 12, 16, 20)

# OpenAI CLIP normalisation (the EVA visual model has no own mean/std, so EVA-CLIP falls back to these).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

VISUAL_PREFIX = "visual."
_ROPE_BUFFER = re.compile(r"(^|\.)rope\.freqs_(cos|sin)$")
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class EvaVisionConfig:
    width: int = 1024
    layers: int = 24
    mlp_hidden: int = 2730  # int(1024 * 2.6667)
    patch_size: int = 14
    image_size: int = 336
    embed_dim: int = 768  # head output
    head_width: int = HEAD_WIDTH
    pt_hw_seq_len: int = PT_HW_SEQ_LEN

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def problems(self) -> list[str]:
        """What makes this configuration unusable (empty when fine)."""
        out = []
        if self.width % self.head_width:
            out.append(f"width {self.width} is not a multiple of the head width {self.head_width}")
        if self.head_width % 4:
            out.append(f"head width {self.head_width} is not a multiple of 4 (2-D RoPE needs pairs per axis)")
        if self.layers <= HIDDEN_STATE_BLOCKS[-1]:
            out.append(f"{self.layers} blocks, but PuLID reads the input of block {HIDDEN_STATE_BLOCKS[-1]}")
        if self.image_size % self.patch_size:
            out.append(f"image size {self.image_size} is not a multiple of the patch size {self.patch_size}")
        return out


# ---------------------------------------------------------------------------------------------- model

def rope_tables(grid: int, head_dim: int, pt_seq_len: int = PT_HW_SEQ_LEN,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [grid*grid, head_dim] (fp32) of the 2-D rotary embedding of the patch tokens.

    The first half of a head's dims rotates with the patch row, the second half with the column; each
    axis has head_dim/4 frequencies, each used for an interleaved pair of dims. Positions are scaled
    from the real grid to the pre-training grid (pos * pt_seq_len / grid)."""
    axis_dim = head_dim // 2
    freqs = 1.0 / (ROPE_THETA ** (torch.arange(0, axis_dim, 2, device=device, dtype=torch.float32) / axis_dim))
    pos = torch.arange(grid, device=device, dtype=torch.float32) / grid * pt_seq_len
    angles = torch.outer(pos, freqs).repeat_interleave(2, dim=-1)  # [grid, axis_dim]
    rows = angles[:, None, :].expand(grid, grid, axis_dim)
    cols = angles[None, :, :].expand(grid, grid, axis_dim)
    table = torch.cat((rows, cols), dim=-1).reshape(grid * grid, head_dim)
    return table.cos(), table.sin()


def _rope_on_patches(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate tokens 1.. of t [B, heads, 1 + P, D]; the CLS token (0) has no position."""
    cls, patches = t[:, :, :1], t[:, :, 1:]
    # rotate each interleaved pair (x0, x1) -> (-x1, x0)
    rotated = torch.stack((-patches[..., 1::2], patches[..., 0::2]), dim=-1).flatten(-2)
    return torch.cat((cls, patches * cos + rotated * sin), dim=2)


def _like(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # Bare parameters follow the activations, as ComfyUI's manual-cast layers do for their weights.
    return p.to(device=x.device, dtype=x.dtype)


class _Attention(nn.Module):
    def __init__(self, cfg: EvaVisionConfig, ops):
        super().__init__()
        w = cfg.width
        self.heads = cfg.heads
        self.q_proj = ops.Linear(w, w, bias=False)
        self.k_proj = ops.Linear(w, w, bias=False)
        self.v_proj = ops.Linear(w, w, bias=False)
        self.q_bias = nn.Parameter(torch.empty(w))
        self.v_bias = nn.Parameter(torch.empty(w))  # k has no bias in EVA02
        self.inner_attn_ln = ops.LayerNorm(w, eps=LN_EPS)
        self.proj = ops.Linear(w, w)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """cls_only: only the CLS token's output ([B, 1, width]); it still attends to every token."""
        b = x.shape[0]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)

        k = _rope_on_patches(heads(self.k_proj(x)), cos, sin)
        v = heads(self.v_proj(x) + _like(self.v_bias, x))
        queries = x[:, :1] if cls_only else x
        q = heads(self.q_proj(queries) + _like(self.q_bias, x))
        if not cls_only:  # RoPE leaves the CLS token as it is
            q = _rope_on_patches(q, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v)  # default scale = head_dim ** -0.5, as official
        return self.proj(self.inner_attn_ln(out.transpose(1, 2).reshape(b, queries.shape[1], -1)))


class _SwiGLU(nn.Module):
    def __init__(self, cfg: EvaVisionConfig, ops):
        super().__init__()
        self.w1 = ops.Linear(cfg.width, cfg.mlp_hidden)
        self.w2 = ops.Linear(cfg.width, cfg.mlp_hidden)
        self.ffn_ln = ops.LayerNorm(cfg.mlp_hidden, eps=LN_EPS)
        self.w3 = ops.Linear(cfg.mlp_hidden, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class _Block(nn.Module):
    def __init__(self, cfg: EvaVisionConfig, ops):
        super().__init__()
        self.norm1 = ops.LayerNorm(cfg.width, eps=LN_EPS)
        self.attn = _Attention(cfg, ops)
        self.norm2 = ops.LayerNorm(cfg.width, eps=LN_EPS)
        self.mlp = _SwiGLU(cfg, ops)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """cls_only: the CLS token's output alone, [B, 1, width] (attention and MLP are per query token)."""
        x = (x[:, :1] if cls_only else x) + self.attn(self.norm1(x), cos, sin, cls_only)
        return x + self.mlp(self.norm2(x))


class EvaVisionTower(nn.Module):
    """The EVA02-CLIP visual tower. `ops` is a namespace with Linear, LayerNorm and Conv2d classes
    (torch.nn by default; the ComfyUI adapter passes comfy.ops.manual_cast so layers compute in the
    activations' dtype). The caller chooses the compute dtype by the dtype of the pixels it passes."""

    def __init__(self, cfg: EvaVisionConfig, ops=None):
        super().__init__()
        problems = cfg.problems()
        if problems:
            raise ValueError(f"unusable EVA-CLIP configuration {cfg}: {'; '.join(problems)}")
        ops = ops or nn
        self.cfg = cfg
        w = cfg.width
        self.patch_embed = nn.ModuleDict(
            {"proj": ops.Conv2d(3, w, kernel_size=cfg.patch_size, stride=cfg.patch_size)})
        self.cls_token = nn.Parameter(torch.empty(1, 1, w))
        self.pos_embed = nn.Parameter(torch.empty(1, cfg.grid ** 2 + 1, w))
        self.blocks = nn.ModuleList(_Block(cfg, ops) for _ in range(cfg.layers))
        self.norm = ops.LayerNorm(w, eps=LN_EPS)
        self.head = ops.Linear(w, cfg.embed_dim)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """pixels [B, 3, image_size, image_size], already normalised (see `preprocess`).

        Returns (raw head output [B, embed_dim], 5 hidden states [B, 1 + grid**2, width])."""
        size = self.cfg.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(f"EVA-CLIP expects images of shape [B, 3, {size}, {size}], got {list(pixels.shape)}")
        x = self.patch_embed["proj"](pixels).flatten(2).transpose(1, 2)  # row-major patches
        x = torch.cat((_like(self.cls_token, x).expand(x.shape[0], -1, -1), x), dim=1)
        x = x + _like(self.pos_embed, x)
        cos, sin = (t.to(x.dtype) for t in rope_tables(self.cfg.grid, self.cfg.head_width,
                                                       self.cfg.pt_hw_seq_len, x.device))
        hidden = []
        last = len(self.blocks) - 1
        for idx, block in enumerate(self.blocks):
            if idx in HIDDEN_STATE_BLOCKS:
                hidden.append(x)
            # Only the CLS token leaves the last block (the head reads it; the hidden states are block
            # inputs): its patch tokens need no queries and no MLP, ~4 % of the tower's work.
            x = block(x, cos, sin, cls_only=idx == last)
        # LayerNorm is per token, so normalising only the CLS token equals norm(x)[:, 0].
        return self.head(self.norm(x[:, 0])), hidden


def preprocess(images: torch.Tensor, size: int = 336, antialias: bool = False) -> torch.Tensor:
    """[B, 3, S, S] float RGB in [0, 1] -> [B, 3, size, size] fp32 EVA-CLIP input.

    Bicubic resize (torch's a = -0.75, no clamping), then OpenAI CLIP mean/std. antialias=False
    reproduces the official bf16 environment (torchvision 0.15.2, whose tensor resize does not
    antialias); antialias=True reproduces the official fp8 environment (torchvision 0.19.1)."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected square RGB images [B, 3, S, S], got {list(images.shape)}")
    x = images.float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=antialias)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# ------------------------------------------------------------------------------------ layout checks

def expected_layout(cfg: EvaVisionConfig) -> dict[str, tuple[int, ...]]:
    """Every visual key (without the `visual.` prefix, RoPE tables excluded) with its shape."""
    w, h, p = cfg.width, cfg.mlp_hidden, cfg.patch_size
    layout = {
        "cls_token": (1, 1, w),
        "pos_embed": (1, cfg.grid ** 2 + 1, w),
        "patch_embed.proj.weight": (w, 3, p, p),
        "patch_embed.proj.bias": (w,),
    }
    for i in range(cfg.layers):
        b = f"blocks.{i}"
        for name, shape in (
            ("norm1.weight", (w,)), ("norm1.bias", (w,)),
            ("attn.q_bias", (w,)), ("attn.v_bias", (w,)),
            ("attn.q_proj.weight", (w, w)), ("attn.k_proj.weight", (w, w)), ("attn.v_proj.weight", (w, w)),
            ("attn.inner_attn_ln.weight", (w,)), ("attn.inner_attn_ln.bias", (w,)),
            ("attn.proj.weight", (w, w)), ("attn.proj.bias", (w,)),
            ("norm2.weight", (w,)), ("norm2.bias", (w,)),
            ("mlp.w1.weight", (h, w)), ("mlp.w1.bias", (h,)),
            ("mlp.w2.weight", (h, w)), ("mlp.w2.bias", (h,)),
            ("mlp.ffn_ln.weight", (h,)), ("mlp.ffn_ln.bias", (h,)),
            ("mlp.w3.weight", (w, h)), ("mlp.w3.bias", (w,)),
        ):
            layout[f"{b}.{name}"] = shape
    layout.update({"norm.weight": (w,), "norm.bias": (w,), "head.weight": (cfg.embed_dim, w),
                   "head.bias": (cfg.embed_dim,)})
    return layout


def _expected_text(name: str) -> str:
    return (f"Expected the EVA02-CLIP-L-14-336 vision tower: the official {MODEL_FILE.filename} or a "
            f".safetensors made from it with `python -m face_migration convert-eva`, in ComfyUI/{FOLDER_HINT}/. "
            f"{MODEL_FILE.download_hint()}")


def config_from_shapes(shapes: dict[str, tuple[int, ...]], name: str) -> EvaVisionConfig:
    """Read the tower's sizes from visual tensor shapes (keys without the `visual.` prefix)."""
    keys = list(shapes)
    if not {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.q_bias"} <= set(keys):
        raise ModelFileError(f"{name} is not an EVA02-CLIP vision tower: it looks like {describe_model(keys)}. "
                             f"{_expected_text(name)}")
    try:
        width = shapes["cls_token"][-1]
        patch = shapes["patch_embed.proj.weight"][-1]
        grid = math.isqrt(shapes["pos_embed"][1] - 1)
        mlp_hidden = shapes["blocks.0.mlp.w1.weight"][0]
        embed_dim = shapes["head.weight"][0]
    except (KeyError, IndexError) as exc:
        raise ModelFileError(f"{name} is an incomplete EVA02-CLIP vision tower: tensor {exc} is missing or "
                             f"malformed. {_expected_text(name)}") from None
    layers = len({m.group(1) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))})
    return EvaVisionConfig(width=width, layers=layers, mlp_hidden=mlp_hidden, patch_size=patch,
                           image_size=grid * patch, embed_dim=embed_dim)


def check_layout(shapes: dict[str, tuple[int, ...]], cfg: EvaVisionConfig, name: str) -> None:
    """Raise ModelFileError unless shapes is exactly expected_layout(cfg) and cfg is usable."""
    problems = layout_problems(shapes, expected_layout(cfg))
    if shapes.get("pos_embed") and shapes["pos_embed"][1] - 1 != cfg.grid ** 2:
        problems.append(f"pos_embed has {shapes['pos_embed'][1]} positions, not 1 + a square grid")
    problems += cfg.problems()
    if problems:
        raise ModelFileError(f"{name} does not have the EVA02-CLIP-L-14-336 vision layout: {'; '.join(problems)}. "
                             f"{_expected_text(name)}")


# ---------------------------------------------------------------------------------------- file reading

def visual_key_map(keys) -> dict[str, str]:
    """{key without prefix: key in the file} for the visual tensors among a checkpoint's keys.

    A leading `module.` is stripped, like the official loader does. Keys with the `visual.` prefix
    are kept (others, e.g. the text tower, dropped); keys without any `visual.` key are taken as a
    visual-only file. RoPE tables are dropped (derived; recomputed)."""
    unwrapped = {(k[len("module."):] if k.startswith("module.") else k): k for k in keys}
    if any(k.startswith(VISUAL_PREFIX) for k in unwrapped):
        unwrapped = {k[len(VISUAL_PREFIX):]: orig for k, orig in unwrapped.items() if k.startswith(VISUAL_PREFIX)}
    return {k: orig for k, orig in unwrapped.items() if not _ROPE_BUFFER.search(k)}


def visual_tensors(state, name: str) -> dict[str, torch.Tensor]:
    """The visual tensors of a loaded checkpoint, keys without `visual.` (see visual_key_map), after
    unwrapping a top-level `model` / `module` / `state_dict` entry as the official loader does."""
    if isinstance(state, dict):
        for wrapper in ("model", "module", "state_dict"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelFileError(f"{name} does not hold a dict of named tensors but a {type(state).__name__}. "
                             f"{_expected_text(name)}")
    return {k: state[orig] for k, orig in visual_key_map(state).items()}


def check_visual_state_dict(state: dict, name: str) -> dict[str, torch.Tensor]:
    """state (from visual_tensors) after checking that it is exactly an EVA-CLIP vision tower."""
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(shapes) != len(state):
        raise ModelFileError(f"{name} holds entries that are not tensors "
                             f"({', '.join(sorted(set(state) - set(shapes)))[:200]}). {_expected_text(name)}")
    check_layout(shapes, config_from_shapes(shapes, name), name)
    return state


def _file_kind(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    # zip-based torch.save format, or the legacy one (pickle protocol 2, then torch's magic number)
    return "torch" if head.startswith((b"PK\x03\x04", b"\x80\x02\x8a")) else "safetensors"


def _torch_load(path: str, folder_hint: str) -> dict:
    name = os.path.basename(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # Files written by torch < 1.6 (legacy format) cannot be memory-mapped.
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is long; its "Unsupported global: GLOBAL x.y ..." sentence names the culprit
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        reason = f"it refers to {found.group(1)}" if found else "unsupported pickle content"
        raise ModelFileError(
            f"{name} contains Python objects besides tensors, so it cannot be loaded safely "
            f"(torch.load with weights_only=True refused it: {reason}). It is not the official release: "
            f"{MODEL_FILE.download_hint()} The pack never runs code from a model file.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelFileError(f"{name} could not be read as a PyTorch checkpoint ({exc}). The download is "
                             f"probably incomplete: download it again into {folder_hint}. "
                             f"{MODEL_FILE.download_hint()}") from None


def read_visual_state_dict(path: str, folder_hint: str = FOLDER_HINT) -> dict[str, torch.Tensor]:
    """The checked visual tensors of an EVA-CLIP file (.pt / .safetensors), keys without `visual.`."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path} does not exist. {_expected_text(name)}")
    if _file_kind(path) == "torch":
        return check_visual_state_dict(visual_tensors(_torch_load(path, folder_hint), name), name)
    header = read_header(path, folder_hint)  # precise errors for pickles, truncation, bad headers
    key_map = visual_key_map(header)
    shapes = {k: tuple(header[orig]["shape"]) for k, orig in key_map.items()}
    check_layout(shapes, config_from_shapes(shapes, name), name)
    with safe_open(path, framework="pt", device="cpu") as f:
        return {k: f.get_tensor(orig) for k, orig in key_map.items()}


def load_eva_clip(path: str, ops=None, folder_hint: str = FOLDER_HINT) -> EvaVisionTower:
    """Build the tower from a file, checking every key and shape. Returns it on CPU, in eval mode,
    in the file's dtype (a file mixing float dtypes is cast to the dtype of its attention weights)."""
    name = os.path.basename(path)
    state = read_visual_state_dict(path, folder_hint)
    bad = sorted({str(t.dtype) for t in state.values() if t.dtype not in _FLOAT_DTYPES})
    if bad:
        raise ModelFileError(f"{name} stores tensors as {', '.join(bad)}; EVA-CLIP needs fp32, fp16 or bf16. "
                             f"{_expected_text(name)}")
    dtype = state["blocks.0.attn.q_proj.weight"].dtype
    state = {k: v.to(dtype) for k, v in state.items()}
    cfg = config_from_shapes({k: tuple(v.shape) for k, v in state.items()}, name)
    with torch.device("meta"):
        model = EvaVisionTower(cfg, ops)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)

