"""BiSeNet face parsing (19 CelebAMask-HQ classes), loading facexlib's `parsing_bisenet.pth`.

Written from the specification (shared research, pulid-spec section 5.4) and the published
architecture: a ResNet18 context path with attention refinement at strides 16 and 32 and a global
context vector, a feature fusion module joining stride-8 features, and three output heads (the main
one and two auxiliary ones used in training), each upsampled bilinearly with align_corners=True to
the input size. Module names follow the weight file's keys.

The official pipeline feeds the 512x512 aligned face crop, RGB in [0, 1], ImageNet-normalised, and
takes the argmax of the main output as the label map. Conv2d layers come from `ops` (torch.nn by
default); BatchNorm2d is always torch.nn (comfy.ops has none; the network runs in fp32).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..catalog import BY_KEY
from .conv_fold import fold_batch_norms
from .facexlib_weights import load_network

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 512  # the official input: the FFHQ-aligned 512x512 crop
RESNET18_BLOCKS = (2, 2, 2, 2)
# CelebAMask-HQ labels PuLID turns white (not part of the face identity): background, ears,
# earring, neck, necklace, cloth, hat.
BACKGROUND_LABELS = (0, 16, 18, 7, 8, 9, 14, 15)


@dataclass(frozen=True)
class BiSeNetConfig:
    num_class: int = 19
    width: int = 64  # ResNet18 stem width; stages are width x 1, 2, 4, 8
    context: int = 128  # attention refinement / context head width
    fuse: int = 256  # feature fusion width (= main head input)
    head: int = 256  # main head hidden width
    aux_head: int = 64  # auxiliary heads hidden width


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, ops):
        super().__init__()
        self.conv = ops.Conv2d(cin, cout, k, 1, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu_(self.bn(self.conv(x)))  # in place on the fresh output (see conv_fold.py)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, ops):
        super().__init__()
        self.conv1 = ops.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = ops.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(ops.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu_(self.bn1(self.conv1(x)))))
        y += x if self.downsample is None else self.downsample(x)
        return F.relu_(y)


class ResNet18(nn.Module):
    """Returns the stage 2, 3 and 4 outputs (strides 8, 16, 32)."""

    def __init__(self, width: int, ops):
        super().__init__()
        self.conv1 = ops.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i, n in enumerate(RESNET18_BLOCKS):
            cout = width * 2 ** i
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(
                *(BasicBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1, ops) for b in range(n))))
            cin = cout

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu_(self.bn1(self.conv1(x))), 3, 2, 1)
        f8 = self.layer2(self.layer1(x))
        f16 = self.layer3(f8)
        return f8, f16, self.layer4(f16)


def _global_mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True)


class AttentionRefinementModule(nn.Module):
    def __init__(self, cin: int, cout: int, ops):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3, ops)
        self.conv_atten = ops.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(_global_mean(feat))))


class ContextPath(nn.Module):
    def __init__(self, cfg: BiSeNetConfig, ops):
        super().__init__()
        w, c = cfg.width, cfg.context
        self.resnet = ResNet18(w, ops)
        self.arm16 = AttentionRefinementModule(4 * w, c, ops)
        self.arm32 = AttentionRefinementModule(8 * w, c, ops)
        self.conv_head32 = ConvBNReLU(c, c, 3, ops)
        self.conv_head16 = ConvBNReLU(c, c, 3, ops)
        self.conv_avg = ConvBNReLU(8 * w, c, 1, ops)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8, f16, f32 = self.resnet(x)
        # The global context vector is added at every stride-32 position (a 1x1 map broadcast).
        up32 = self.conv_head32(F.interpolate(self.arm32(f32) + self.conv_avg(_global_mean(f32)),
                                              size=f16.shape[2:], mode="nearest"))
        up16 = self.conv_head16(F.interpolate(self.arm16(f16) + up32, size=f8.shape[2:], mode="nearest"))
        return f8, up16, up32  # strides 8, 8, 16


class FeatureFusionModule(nn.Module):
    def __init__(self, cin: int, cout: int, ops):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1, ops)
        self.conv1 = ops.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = ops.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu_(self.conv1(_global_mean(feat)))))
        return feat * atten + feat


class BiSeNetOutput(nn.Module):
    def __init__(self, cin: int, mid: int, num_class: int, ops):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, 3, ops)
        self.conv_out = ops.Conv2d(mid, num_class, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    def __init__(self, cfg: BiSeNetConfig = BiSeNetConfig(), ops=nn):
        super().__init__()
        self.cfg = cfg
        self.cp = ContextPath(cfg, ops)
        self.ffm = FeatureFusionModule(2 * cfg.width + cfg.context, cfg.fuse, ops)
        self.conv_out = BiSeNetOutput(cfg.fuse, cfg.head, cfg.num_class, ops)
        self.conv_out16 = BiSeNetOutput(cfg.context, cfg.aux_head, cfg.num_class, ops)
        self.conv_out32 = BiSeNetOutput(cfg.context, cfg.aux_head, cfg.num_class, ops)

    def forward(self, x: torch.Tensor, aux: bool = False):
        """x: (B, 3, H, W) ImageNet-normalised RGB. Returns the main logits (B, num_class, H, W), or with
        aux=True the tuple (main, aux16, aux32) as facexlib's forward does; all upsampled to (H, W)."""
        size = x.shape[2:]
        f8, c8, c16 = self.cp(x)
        up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=True)  # noqa: E731
        out = up(self.conv_out(self.ffm(f8, c8)))
        if not aux:
            return out
        return out, up(self.conv_out16(c8)), up(self.conv_out32(c16))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype)[:, None, None]
    return (images - mean) / std


@torch.no_grad()
def parse_labels(model: BiSeNet, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] (officially the 512x512 aligned crop) -> (B, H, W) int64 labels."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"BiSeNet expects (B, 3, H, W) RGB images, got shape {tuple(images.shape)}")
    p = next(model.parameters())
    x = normalize(images.to(device=p.device, dtype=torch.float32)).to(p.dtype)
    if x.device.type == "cpu":  # channels-last convolutions: faster on the CPU, same labels (see retinaface.py)
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x).argmax(dim=1)


def background_mask(labels: torch.Tensor) -> torch.Tensor:
    """True where a label is one PuLID whitens before EVA-CLIP (BACKGROUND_LABELS)."""
    return torch.isin(labels, torch.tensor(BACKGROUND_LABELS, device=labels.device))


def config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> BiSeNetConfig:
    """Sizes read off a state dict (the defaults for a file that is not BiSeNet at all)."""
    try:
        return BiSeNetConfig(
            num_class=shapes["conv_out.conv_out.weight"][0],
            width=shapes["cp.resnet.conv1.weight"][0],
            context=shapes["cp.arm16.conv.conv.weight"][0],
            fuse=shapes["ffm.convblk.conv.weight"][0],
            head=shapes["conv_out.conv.conv.weight"][0],
            aux_head=shapes["conv_out16.conv.conv.weight"][0],
        )
    except KeyError:
        return BiSeNetConfig()  # the layout check then names what the file is


def load_bisenet(path: str, ops=nn) -> BiSeNet:
    """Build BiSeNet from facexlib's parsing_bisenet.pth, checking every key and shape.
    Returns the fp32 model on the CPU in eval mode, BatchNorms folded into the convolutions (conv_fold.py).
    Raises ModelFileError naming the file and fix."""
    return fold_batch_norms(load_network(path, BY_KEY["bisenet"], config_from_shapes, BiSeNet, ops))
