"""RetinaFace-ResNet50 face detector with 5 landmarks, loading facexlib's `detection_Resnet50_Final.pth`.

Written from the specification (shared research, pulid-spec section 5.2) and the published
architecture: a torchvision-style ResNet50 body (stages 2-4 feed the FPN), a 3-level FPN, one SSH
context module per level and 1x1 class / box / landmark heads with 2 anchors per cell. Module names
follow the weight file's keys. The official alignment runs it on the full-resolution BGR image
minus the per-channel mean (104, 117, 123), keeps scores > 0.97, applies NMS at IoU 0.4 and picks
the face nearest the image centre; `choose_nearest_face` is our fix that picks the face of the person
ArcFace used instead.

NMS uses the plain IoU (box area (x2-x1)*(y2-y1)) because facexlib since 0.2 calls
torchvision.ops.nms; facexlib before September 2021 used a "+1 pixel" area. With face-sized boxes
the two conventions differ by less than 1% in IoU.

Layers come from an `ops` namespace (torch.nn by default) for Conv2d; BatchNorm2d is always
torch.nn because comfy.ops has no BatchNorm2d (the network runs in fp32 as in the official code).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..catalog import BY_KEY
from .conv_fold import fold_batch_norms
from .facexlib_weights import load_network
from .selection import box_iou

MEAN_BGR = (104.0, 117.0, 123.0)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))  # anchor sizes in pixels, per FPN level
STEPS = (8, 16, 32)  # FPN level strides
VARIANCES = (0.1, 0.2)  # centre / size scaling of the box regression
ALIGN_SCORE_THRESHOLD = 0.97  # facexlib's FaceRestoreHelper passes this, not the detector's 0.8 default
NMS_THRESHOLD = 0.4
BOTTLENECK_EXPANSION = 4


@dataclass(frozen=True)
class RetinaFaceConfig:
    width: int = 64  # ResNet stem / first-stage width
    blocks: tuple[int, ...] = (3, 4, 6, 3)  # bottlenecks per ResNet stage
    fpn_channels: int = 256

    @property
    def leaky(self) -> float:
        # The published FPN/SSH use LeakyReLU(0.1) for narrow (<= 64 channel) variants, ReLU otherwise.
        return 0.1 if self.fpn_channels <= 64 else 0.0


@dataclass
class FaceDetections:
    """Detections in image pixel coordinates, highest score first."""
    boxes: np.ndarray  # (N, 4) float32: x1, y1, x2, y2
    scores: np.ndarray  # (N,) float32
    landmarks: np.ndarray  # (N, 5, 2) float32: left eye, right eye, nose, left / right mouth corner
    image_size: tuple[int, int]  # (height, width) of the image they came from

    def __len__(self) -> int:
        return len(self.scores)


def _conv_bn(ops, cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    # Indices 0 (conv) and 1 (bn) match the file's keys (e.g. fpn.output1.0.weight, fpn.output1.1.running_mean).
    return nn.Sequential(ops.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

    def __init__(self, cin: int, width: int, stride: int, ops):
        super().__init__()
        cout = width * BOTTLENECK_EXPANSION
        self.conv1 = ops.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = ops.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = ops.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(ops.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place on buffers this block made (see conv_fold.py: fewer fresh buffers, fewer page faults).
        y = F.relu_(self.bn1(self.conv1(x)))
        y = F.relu_(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        y += x if self.downsample is None else self.downsample(x)
        return F.relu_(y)


class ResNetBody(nn.Module):
    """ResNet50 without its classifier; returns the outputs of stages 2, 3 and 4 (strides 8, 16, 32)."""

    def __init__(self, cfg: RetinaFaceConfig, ops):
        super().__init__()
        self.conv1 = ops.Conv2d(3, cfg.width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.width)
        cin = cfg.width
        for i, n in enumerate(cfg.blocks):
            width = cfg.width * 2 ** i
            stride = 1 if i == 0 else 2
            blocks = []
            for b in range(n):
                blocks.append(Bottleneck(cin, width, stride if b == 0 else 1, ops))
                cin = width * BOTTLENECK_EXPANSION
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))

    def out_channels(self) -> list[int]:
        return [self.layer2[-1].bn3.num_features, self.layer3[-1].bn3.num_features,
                self.layer4[-1].bn3.num_features]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(F.relu_(self.bn1(self.conv1(x))), 3, 2, 1)
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


class FPN(nn.Module):
    def __init__(self, in_channels: list[int], cout: int, leaky: float, ops):
        super().__init__()
        self.leaky = leaky
        self.output1 = _conv_bn(ops, in_channels[0], cout, 1)
        self.output2 = _conv_bn(ops, in_channels[1], cout, 1)
        self.output3 = _conv_bn(ops, in_channels[2], cout, 1)
        self.merge1 = _conv_bn(ops, cout, cout, 3)
        self.merge2 = _conv_bn(ops, cout, cout, 3)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        act = lambda t: F.leaky_relu_(t, self.leaky)  # noqa: E731 (leaky 0 == ReLU; in place on fresh outputs)
        o1, o2, o3 = act(self.output1(feats[0])), act(self.output2(feats[1])), act(self.output3(feats[2]))
        o2 = act(self.merge2(o2.add_(F.interpolate(o3, size=o2.shape[2:], mode="nearest"))))
        o1 = act(self.merge1(o1.add_(F.interpolate(o2, size=o1.shape[2:], mode="nearest"))))
        return [o1, o2, o3]


class SSH(nn.Module):
    """Single-stage context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated."""

    def __init__(self, cin: int, cout: int, leaky: float, ops):
        super().__init__()
        self.leaky = leaky
        self.conv3X3 = _conv_bn(ops, cin, cout // 2, 3)
        self.conv5X5_1 = _conv_bn(ops, cin, cout // 4, 3)
        self.conv5X5_2 = _conv_bn(ops, cout // 4, cout // 4, 3)
        self.conv7X7_2 = _conv_bn(ops, cout // 4, cout // 4, 3)
        self.conv7x7_3 = _conv_bn(ops, cout // 4, cout // 4, 3)  # lower-case x as in the weight file

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = F.leaky_relu_(self.conv5X5_1(x), self.leaky)
        b7 = F.leaky_relu_(self.conv7X7_2(b5), self.leaky)
        return F.relu_(torch.cat([self.conv3X3(x), self.conv5X5_2(b5), self.conv7x7_3(b7)], dim=1))


class _Head(nn.Module):
    """1x1 convolution predicting `per_anchor` values for each anchor; output (B, H*W*anchors, per_anchor)."""

    def __init__(self, cin: int, anchors: int, per_anchor: int, ops):
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = ops.Conv2d(cin, anchors * per_anchor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1x1(x).permute(0, 2, 3, 1)
        return y.reshape(y.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    def __init__(self, cfg: RetinaFaceConfig = RetinaFaceConfig(), ops=nn):
        super().__init__()
        self.cfg = cfg
        c = cfg.fpn_channels
        anchors = len(MIN_SIZES[0])
        self.body = ResNetBody(cfg, ops)
        self.fpn = FPN(self.body.out_channels(), c, cfg.leaky, ops)
        self.ssh1, self.ssh2, self.ssh3 = (SSH(c, c, cfg.leaky, ops) for _ in range(3))
        self.ClassHead = nn.ModuleList(_Head(c, anchors, 2, ops) for _ in STEPS)
        self.BboxHead = nn.ModuleList(_Head(c, anchors, 4, ops) for _ in STEPS)
        self.LandmarkHead = nn.ModuleList(_Head(c, anchors, 10, ops) for _ in STEPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, 3, H, W) BGR pixels minus MEAN_BGR. Returns per prior (ordered level, row, column,
        anchor): box regression (B, P, 4), class probabilities (B, P, 2; column 1 = face) and
        landmark regression (B, P, 10)."""
        levels = self.fpn(self.body(x))
        feats = [self.ssh1(levels[0]), self.ssh2(levels[1]), self.ssh3(levels[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return loc, F.softmax(conf, dim=-1), landms


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """Anchors (P, 4) as (cx, cy, sx, sy) in fractions of the image, in the heads' order. float32."""
    rows = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = ceil(height / step), ceil(width / step)
        i, j, s = torch.meshgrid(torch.arange(fh, dtype=torch.float64), torch.arange(fw, dtype=torch.float64),
                                 torch.tensor(sizes, dtype=torch.float64), indexing="ij")
        rows.append(torch.stack([(j + 0.5) * step / width, (i + 0.5) * step / height,
                                 s / width, s / height], dim=-1).reshape(-1, 4))
    # Computed in float64 then rounded once, like facexlib's Python floats turned into a float32 tensor.
    return torch.cat(rows).float()


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(P, 4) regression -> (P, 4) corners x1, y1, x2, y2 in fractions of the image."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    top_left = centre - size / 2
    return torch.cat([top_left, top_left + size], dim=1)


def decode_landmarks(pre: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(P, 10) regression -> (P, 5, 2) points in fractions of the image."""
    return priors[:, None, :2] + pre.reshape(-1, 5, 2) * VARIANCES[0] * priors[:, None, 2:]


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float = NMS_THRESHOLD) -> torch.Tensor:
    """Greedy NMS: indices kept, highest score first; a box goes when its IoU with a kept one > threshold."""
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        wh = (torch.minimum(boxes[i, 2:], boxes[i + 1:, 2:]) - torch.maximum(boxes[i, :2], boxes[i + 1:, :2])).clamp(min=0)
        inter = wh[:, 0] * wh[:, 1]
        suppressed[i + 1:] |= inter / (area[i] + area[i + 1:] - inter) > threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def to_network_input(image_rgb, device, dtype) -> torch.Tensor:
    """(H, W, 3) RGB image, uint8 or float in 0..255 (numpy or torch) -> (1, 3, H, W) BGR minus mean."""
    t = torch.as_tensor(np.ascontiguousarray(image_rgb) if isinstance(image_rgb, np.ndarray) else image_rgb)
    if t.ndim != 3 or t.shape[2] != 3:
        raise ValueError(f"RetinaFace expects an (H, W, 3) RGB image, got shape {tuple(t.shape)}")
    bgr = t.to(device=device, dtype=torch.float32).flip(-1).permute(2, 0, 1)[None]
    return (bgr - torch.tensor(MEAN_BGR, device=device)[:, None, None]).to(dtype)


def decode_detections(loc: torch.Tensor, conf: torch.Tensor, landms: torch.Tensor, height: int, width: int,
                      conf_threshold: float = ALIGN_SCORE_THRESHOLD,
                      nms_threshold: float = NMS_THRESHOLD) -> FaceDetections:
    """Raw outputs for one image ((P, 4), (P, 2), (P, 10)) -> faces with score > conf_threshold after NMS,
    in pixel coordinates of the (height, width) image the network saw."""
    loc, conf, landms = loc.float().cpu(), conf.float().cpu(), landms.float().cpu()
    priors = prior_boxes(height, width)
    if len(priors) != len(loc):
        raise ValueError(f"{len(loc)} predictions for a {height}x{width} image, which has {len(priors)} priors")
    scores = conf[:, 1]
    idx = torch.nonzero(scores > conf_threshold).flatten()
    scale = torch.tensor([width, height], dtype=torch.float32)
    boxes = decode_boxes(loc[idx], priors[idx]) * scale.repeat(2)
    points = decode_landmarks(landms[idx], priors[idx]) * scale
    keep = nms(boxes, scores[idx], nms_threshold)
    return FaceDetections(boxes[keep].numpy(), scores[idx][keep].numpy(), points[keep].numpy(),
                          (int(height), int(width)))


@torch.no_grad()
def detect_faces(model: RetinaFace, image_rgb, conf_threshold: float = ALIGN_SCORE_THRESHOLD,
                 nms_threshold: float = NMS_THRESHOLD) -> FaceDetections:
    """All faces with score > conf_threshold after NMS, at the image's own resolution (no resize,
    as facexlib's `use_origin_size=True`). The image is RGB; the network gets the BGR it was trained on."""
    p = next(model.parameters())
    x = to_network_input(image_rgb, p.device, p.dtype)
    # Channels-last convolutions are faster on the CPU (oneDNN's native layout; measured in
    # benchmarks/bench_encode_cpu.py --layouts) with the same results; the GPU keeps its own choice.
    loc, conf, landms = model(x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x)
    return decode_detections(loc[0], conf[0], landms[0], x.shape[2], x.shape[3], conf_threshold, nms_threshold)


def choose_center_face(dets: FaceDetections) -> int | None:
    """The official choice (`only_center_face`): the face whose box centre is nearest the image centre."""
    if len(dets) == 0:
        return None
    h, w = dets.image_size
    centres = (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2
    return int(np.argmin(np.linalg.norm(centres - np.array([w / 2, h / 2]), axis=1)))


def choose_nearest_face(dets: FaceDetections, box, min_iou: float = 0.0) -> int | None:
    """The face that best overlaps `box` (e.g. the SCRFD box ArcFace used), so both crops show the
    same person: highest IoU, ties (e.g. no overlap at all) broken by the nearest box centre.
    None when there is no face, or the best IoU is below min_iou. (selection.match_face is the same
    rule without the centre tie-break.)"""
    if len(dets) == 0:
        return None
    iou = box_iou(box, dets.boxes)
    b = np.asarray(box, dtype=np.float64)
    dist = np.linalg.norm((dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2 - (b[:2] + b[2:]) / 2, axis=1)
    best = int(np.lexsort((dist, -iou))[0])
    return best if iou[best] >= min_iou else None


def config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> RetinaFaceConfig:
    """Sizes read off a state dict: stem width, bottlenecks per stage, FPN width."""
    try:
        width = shapes["body.conv1.weight"][0]
        fpn = shapes["fpn.output1.0.weight"][0]
    except KeyError:
        return RetinaFaceConfig()  # not a RetinaFace file: the layout check names what it is
    blocks = tuple(len({k.split(".")[2] for k in shapes if k.startswith(f"body.layer{i}.")}) for i in range(1, 5))
    return RetinaFaceConfig(width=width, blocks=blocks if all(blocks) else RetinaFaceConfig.blocks, fpn_channels=fpn)


def load_retinaface(path: str, ops=nn) -> RetinaFace:
    """Build RetinaFace from facexlib's detection_Resnet50_Final.pth, checking every key and shape.
    Returns the fp32 model on the CPU in eval mode, BatchNorms folded into the convolutions (conv_fold.py).
    Raises ModelFileError naming the file and fix."""
    return fold_batch_norms(load_network(path, BY_KEY["retinaface_resnet50"], config_from_shapes, RetinaFace, ops))
